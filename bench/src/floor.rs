//! The floor of this machine: what one durable write can cost at least.
//!
//! A committed write in a 3-member Raft cluster needs at least one fsync on
//! the leader's data disk and one round trip to a follower (which fsyncs in
//! parallel), plus the client's own round trip. Measuring an fsync and a
//! loopback round trip here tells how close single-client write latency
//! comes to what the hardware allows.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;

use crate::stats::Latencies;

/// The measured floor.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Floor {
    /// Median of write(256 B) + fdatasync on the data disk, into space
    /// allocated ahead (the cheapest durable append; rosterd's log writes
    /// this way), ms.
    pub fsync_p50_ms: f64,
    /// 99th percentile of the same.
    pub fsync_p99_ms: f64,
    /// Median loopback TCP round trip (1 byte each way, `TCP_NODELAY`), ms.
    pub rtt_p50_ms: f64,
    /// 99th percentile of the same.
    pub rtt_p99_ms: f64,
}

impl Floor {
    /// One fsync plus one round trip: the least a committed write costs.
    pub fn write_floor_ms(&self) -> f64 {
        self.fsync_p50_ms + self.rtt_p50_ms
    }
}

/// Measures both, with `iterations` samples each, writing in `dir`.
pub fn measure(dir: &Path, iterations: usize) -> Result<Floor> {
    let mut fsync = fsync_latencies(dir, iterations)?;
    let mut rtt = rtt_latencies(iterations * 5)?;
    Ok(Floor {
        fsync_p50_ms: fsync.quantile_ms(0.5),
        fsync_p99_ms: fsync.quantile_ms(0.99),
        rtt_p50_ms: rtt.quantile_ms(0.5),
        rtt_p99_ms: rtt.quantile_ms(0.99),
    })
}

/// Appends 256 bytes and `fdatasync`s, like a log append, `n` times, in a
/// file whose blocks are allocated first (as rosterd's log segments are):
/// growing the file would add a journal commit to every sync.
fn fsync_latencies(dir: &Path, n: usize) -> Result<Latencies> {
    use std::os::fd::AsRawFd;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join("fsync-probe");
    let file = File::create(&path).with_context(|| format!("creating {}", path.display()))?;
    let block = [0x5au8; 256];
    let len = libc::off_t::try_from(n * block.len())?;
    // SAFETY: `file` owns an open descriptor for the whole call.
    if unsafe { libc::fallocate(file.as_raw_fd(), 0, 0, len) } != 0 {
        // Not supported here: the probe appends to a growing file instead.
        eprintln!(
            "floor: fallocate unsupported in {}; the fsync probe grows its file",
            dir.display()
        );
    }
    file.sync_all()?;
    let mut lat = Latencies::default();
    for i in 0..n {
        let start = Instant::now();
        file.write_all_at(&block, (i * block.len()) as u64)?;
        file.sync_data()?;
        lat.record(start.elapsed());
    }
    drop(file);
    let _ = fs::remove_file(&path);
    Ok(lat)
}

/// Ping-pongs one byte over loopback TCP `n` times (after a warm-up).
fn rtt_latencies(n: usize) -> Result<Latencies> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding the echo listener")?;
    let addr = listener.local_addr()?;
    let echo = std::thread::spawn(move || -> std::io::Result<()> {
        let (mut s, _) = listener.accept()?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 1];
        while s.read(&mut b)? == 1 {
            s.write_all(&b)?;
        }
        Ok(())
    });
    let mut s = TcpStream::connect(addr).context("connecting to the echo thread")?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut lat = Latencies::default();
    let mut b = [1u8; 1];
    for i in 0..n + 100 {
        let start = Instant::now();
        s.write_all(&b)?;
        s.read_exact(&mut b)?;
        if i >= 100 {
            lat.record(start.elapsed());
        }
    }
    drop(s);
    let _ = echo.join();
    Ok(lat)
}
