//! The event trace: one text line per event (`time node event`), hashed with
//! FNV-1a 64 as it is written (`std::hash` is not stable across Rust
//! versions). The same seed and options must give the same hash.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::time::Instant;

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a 64 of `bytes`, continuing from `hash`.
pub fn fnv1a(mut hash: u64, bytes: &[u8]) -> u64 {
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(FNV_PRIME);
    }
    hash
}

pub fn fnv1a_new(bytes: &[u8]) -> u64 {
    fnv1a(FNV_OFFSET, bytes)
}

pub struct Trace {
    start: Instant,
    hash: u64,
    lines: u64,
    tail: VecDeque<String>,
    keep_tail: usize,
    full: Option<Vec<String>>,
}

impl Trace {
    pub fn new(keep_tail: usize, keep_full: bool) -> Self {
        Self {
            start: Instant::now(),
            hash: FNV_OFFSET,
            lines: 0,
            tail: VecDeque::new(),
            keep_tail,
            full: keep_full.then(Vec::new),
        }
    }

    /// Simulated milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    pub fn record(&mut self, who: &str, event: &str) {
        let ms = self.now_ms();
        let line = format!("{:>6}.{:03} {:<4} {}", ms / 1000, ms % 1000, who, event);
        self.hash = fnv1a(self.hash, line.as_bytes());
        self.hash = fnv1a(self.hash, b"\n");
        self.lines += 1;
        // The tail tells the story: faults, roles, client operations,
        // checker verdicts; not every Raft message and applied index (those
        // are in the full trace).
        if event.starts_with("-> n") || event.starts_with("applied ") {
            if let Some(full) = &mut self.full {
                full.push(line);
            }
            return;
        }
        if self.tail.len() == self.keep_tail {
            self.tail.pop_front();
        }
        self.tail.push_back(line.clone());
        if let Some(full) = &mut self.full {
            full.push(line);
        }
    }

    pub fn hash(&self) -> u64 {
        self.hash
    }

    pub fn lines(&self) -> u64 {
        self.lines
    }

    pub fn tail(&self) -> Vec<String> {
        self.tail.iter().cloned().collect()
    }

    pub fn take_full(&mut self) -> Option<Vec<String>> {
        self.full.take()
    }
}

pub type SharedTrace = Arc<Mutex<Trace>>;

/// Records one event on a shared trace.
pub fn record(trace: &SharedTrace, who: &str, event: impl AsRef<str>) {
    trace
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .record(who, event.as_ref());
}
