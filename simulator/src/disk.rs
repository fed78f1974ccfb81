//! A simulated disk behind openraft's `RaftLogStorage` and the state
//! machine's [`SnapshotStore`], with crash semantics.
//!
//! Every write lands in the *live* view (what reads see) and in a journal of
//! unsynced operations. A simulated fsync (a seeded delay on the paused tokio
//! clock) makes every operation journaled before it started durable. The log
//! store reports an append done only after such a sync covers it, and
//! `save_vote` and snapshot saves return only after theirs, exactly like
//! rosterd's store; the commit marker, as there, waits for the next sync. A crash keeps the durable state plus a
//! random prefix of the unsynced journal (a torn tail, as a real disk may
//! have written some of it), bumps the incarnation, and silently discards
//! whatever the crashed incarnation still does.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{LogState, OptionalSend, RaftLogReader};
use roster_server::raft::state_machine::{SnapshotSave, SnapshotStore};
use roster_server::raft::{vote_on_restart, Entry, LogId, NodeId, SnapshotMeta, StorageError, TypeConfig, Vote};
use tokio::sync::mpsc;

use crate::rng::SimRng;

/// What a disk holds.
#[derive(Clone, Debug, Default)]
pub struct Persisted {
    pub log: BTreeMap<u64, Entry>,
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
    pub snapshot: Option<(SnapshotMeta, Vec<u8>)>,
}

/// How long an fsync stall lasts.
const STALL_MIN_US: u64 = 20_000;
const STALL_MAX_US: u64 = 250_000;

#[derive(Clone, Debug)]
enum Write {
    Append(Vec<Entry>),
    Truncate(u64),
    Purge(LogId),
    Vote(Vote),
    Committed(Option<LogId>),
    Snapshot(SnapshotMeta, Vec<u8>),
}

impl Persisted {
    fn apply(&mut self, write: &Write) {
        match write {
            Write::Append(entries) => {
                for e in entries {
                    self.log.insert(e.log_id.index, e.clone());
                }
            }
            Write::Truncate(from) => {
                self.log.split_off(from);
            }
            Write::Purge(upto) => {
                self.purged = Some(*upto);
                self.log = self.log.split_off(&(upto.index + 1));
            }
            Write::Vote(v) => self.vote = Some(*v),
            Write::Committed(c) => self.committed = *c,
            Write::Snapshot(meta, data) => self.snapshot = Some((meta.clone(), data.clone())),
        }
    }
}

pub struct DiskState {
    live: Persisted,
    durable: Persisted,
    journal: VecDeque<Write>,
    /// Sequence number of `journal[0]`.
    journal_base: u64,
    /// Bumped by each crash; handles of older incarnations write nothing.
    incarnation: u64,
    rng: SimRng,
    sync_min_us: u64,
    sync_max_us: u64,
    /// The chance that one fsync stalls (0 unless a slow-disk fault is on).
    stall_chance: f64,
    /// Planted bug: report writes durable before their sync.
    ack_before_sync: bool,
}

impl DiskState {
    fn write(&mut self, w: Write) {
        self.live.apply(&w);
        self.journal.push_back(w);
    }

    fn end_seq(&self) -> u64 {
        self.journal_base + self.journal.len() as u64
    }

    fn sync_to(&mut self, seq: u64) {
        while self.journal_base < seq {
            let Some(w) = self.journal.pop_front() else { break };
            self.durable.apply(&w);
            self.journal_base += 1;
        }
    }

    /// How long the next fsync takes: mostly within the disk's range, now
    /// and then (under a slow-disk fault) a stall: real disks stall for
    /// tens to hundreds of milliseconds under write-back pressure, which is
    /// why etcd warns of slow fdatasync. A stall keeps many writes unsynced
    /// at once, the window in which anything acknowledged too early is lost.
    fn sync_delay(&mut self) -> Duration {
        let us = if self.stall_chance > 0.0 && self.rng.chance(self.stall_chance) {
            self.rng.range(STALL_MIN_US, STALL_MAX_US)
        } else {
            self.rng.range(self.sync_min_us, self.sync_max_us)
        };
        Duration::from_micros(us)
    }
}

/// One node's disk; survives crashes of the node.
#[derive(Clone)]
pub struct SimDisk {
    state: Arc<Mutex<DiskState>>,
}

/// What a crash did to the unsynced writes.
#[derive(Debug, Clone, Copy)]
pub struct CrashReport {
    pub unsynced: usize,
    pub kept: usize,
    /// The last log index the node had written, and the last it still has.
    pub last_before: Option<u64>,
    pub last_after: Option<u64>,
}

impl SimDisk {
    /// A disk whose syncs take `sync_min_us..=sync_max_us`. With
    /// `ack_before_sync` (a planted bug, to prove the checkers), appends are
    /// reported durable, and votes saved, before the sync.
    pub fn new(mut rng: SimRng, sync_max_us: u64, ack_before_sync: bool) -> Self {
        let _ = rng.next_u64();
        Self {
            state: Arc::new(Mutex::new(DiskState {
                live: Persisted::default(),
                durable: Persisted::default(),
                journal: VecDeque::new(),
                journal_base: 0,
                incarnation: 0,
                rng,
                sync_min_us: 50,
                sync_max_us: sync_max_us.max(50),
                stall_chance: 0.0,
                ack_before_sync,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn incarnation(&self) -> u64 {
        self.lock().incarnation
    }

    /// The power goes out: unsynced writes are lost, except (half the time)
    /// a random prefix.
    pub fn crash(&self) -> CrashReport {
        let mut s = self.lock();
        let last_before = s.live.log.keys().next_back().copied();
        let unsynced = s.journal.len();
        // Half the time the whole unsynced tail is gone (the page cache
        // never reached the platter); otherwise a random prefix of it made
        // it (a torn tail).
        let kept = if s.rng.chance(0.5) {
            0
        } else {
            s.rng.below(unsynced as u64 + 1) as usize
        };
        let end = s.journal_base + kept as u64;
        s.sync_to(end);
        s.journal.clear();
        s.journal_base = end;
        s.live = s.durable.clone();
        s.incarnation += 1;
        CrashReport {
            unsynced,
            kept,
            last_before,
            last_after: s.live.log.keys().next_back().copied(),
        }
    }

    /// Writes not yet synced.
    pub fn unsynced(&self) -> usize {
        self.lock().journal.len()
    }

    /// Log appends not yet synced.
    pub fn unsynced_appends(&self) -> usize {
        self.lock()
            .journal
            .iter()
            .filter(|w| matches!(w, Write::Append(_)))
            .count()
    }

    /// Changes how slow the disk is from now on: fsyncs take up to
    /// `sync_max_us`, and each stalls with `stall_chance`.
    pub fn set_speed(&self, sync_max_us: u64, stall_chance: f64) {
        let mut s = self.lock();
        s.sync_max_us = sync_max_us.max(s.sync_min_us);
        s.stall_chance = stall_chance;
    }

    /// A copy of what is durable now.
    pub fn durable(&self) -> Persisted {
        self.lock().durable.clone()
    }

    /// Entries of the live log in `range` (for the checkers).
    pub fn live_entries(&self, from: u64, to_inclusive: u64) -> Vec<Entry> {
        self.lock()
            .live
            .log
            .range(from..=to_inclusive)
            .map(|(_, e)| e.clone())
            .collect()
    }

    /// The log store and the snapshot store of the current incarnation.
    /// Starts the log flusher task on the current runtime.
    pub fn open(&self, node_id: NodeId) -> (SimLogStore, SimSnapshots) {
        let incarnation = self.incarnation();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(flusher(self.clone(), incarnation, rx));
        (
            SimLogStore {
                disk: self.clone(),
                incarnation,
                node_id,
                flusher: tx,
            },
            SimSnapshots {
                disk: self.clone(),
                incarnation,
            },
        )
    }

    /// Applies `w` if `incarnation` is current (a crashed one writes nothing).
    fn write(&self, incarnation: u64, w: Write) {
        let mut s = self.lock();
        if s.incarnation == incarnation {
            s.write(w);
        }
    }

    fn acks_before_sync(&self) -> bool {
        self.lock().ack_before_sync
    }

    /// A simulated fsync by `incarnation`, covering everything written before it.
    async fn sync(&self, incarnation: u64) {
        let (seq, delay) = {
            let mut s = self.lock();
            (s.end_seq(), s.sync_delay())
        };
        tokio::time::sleep(delay).await;
        let mut s = self.lock();
        if s.incarnation == incarnation {
            s.sync_to(seq);
        }
    }
}

/// Group commit, as rosterd's log writer: one sync for every callback
/// waiting at that moment, then the callbacks in order.
async fn flusher(disk: SimDisk, incarnation: u64, mut rx: mpsc::UnboundedReceiver<LogFlushed<TypeConfig>>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        if disk.acks_before_sync() {
            for callback in batch.drain(..) {
                callback.log_io_completed(Ok::<(), io::Error>(()));
            }
        }
        disk.sync(incarnation).await;
        if disk.incarnation() != incarnation {
            // Crashed: the node is gone; nothing is reported.
            return;
        }
        for callback in batch.drain(..) {
            callback.log_io_completed(Ok::<(), io::Error>(()));
        }
    }
}

#[derive(Clone)]
pub struct SimLogStore {
    disk: SimDisk,
    incarnation: u64,
    node_id: NodeId,
    flusher: mpsc::UnboundedSender<LogFlushed<TypeConfig>>,
}

impl RaftLogReader<TypeConfig> for SimLogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let s = self.disk.lock();
        let start = match range.start_bound() {
            Bound::Included(&i) => Bound::Included(i),
            Bound::Excluded(&i) => Bound::Excluded(i),
            Bound::Unbounded => Bound::Unbounded,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => Bound::Included(i),
            Bound::Excluded(&i) => Bound::Excluded(i),
            Bound::Unbounded => Bound::Unbounded,
        };
        Ok(s.live.log.range((start, end)).map(|(_, e)| e.clone()).collect())
    }
}

impl RaftLogStorage<TypeConfig> for SimLogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let s = self.disk.lock();
        let purged = s.live.purged;
        let last = s.live.log.values().next_back().map(|e| e.log_id);
        let last = match (last, purged) {
            (Some(last), Some(p)) if last.index <= p.index => None,
            (last, _) => last,
        };
        Ok(LogState {
            last_log_id: last.or(purged),
            last_purged_log_id: purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.disk.write(self.incarnation, Write::Vote(*vote));
        if !self.disk.acks_before_sync() {
            self.disk.sync(self.incarnation).await;
        }
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.disk.lock().live.vote.map(|v| vote_on_restart(v, self.node_id)))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // As rosterd's log: durable with the next sync, not on its own.
        self.disk.write(self.incarnation, Write::Committed(committed));
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.disk.lock().live.committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.disk
            .write(self.incarnation, Write::Append(entries.into_iter().collect()));
        // A send fails only when the flusher ended after a crash: then the
        // node is gone and nothing needs reporting.
        let _ = self.flusher.send(callback);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.disk.write(self.incarnation, Write::Truncate(log_id.index));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.disk.write(self.incarnation, Write::Purge(log_id));
        Ok(())
    }
}

/// The state machine's snapshot on the simulated disk.
pub struct SimSnapshots {
    disk: SimDisk,
    incarnation: u64,
}

impl SnapshotStore for SimSnapshots {
    fn load_data(&self) -> Result<Option<Vec<u8>>, StorageError> {
        Ok(self.disk.lock().live.snapshot.as_ref().map(|(_, d)| d.clone()))
    }

    fn load(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, StorageError> {
        Ok(self.disk.lock().live.snapshot.clone())
    }

    fn save<'a>(&'a self, meta: &'a SnapshotMeta, data: &'a [u8]) -> SnapshotSave<'a> {
        Box::pin(async move {
            {
                let mut s = self.disk.lock();
                if s.incarnation != self.incarnation {
                    return Ok(());
                }
                if let Some((stored, _)) = &s.live.snapshot {
                    if stored.last_log_id > meta.last_log_id {
                        return Ok(());
                    }
                }
                s.write(Write::Snapshot(meta.clone(), data.to_vec()));
            }
            self.disk.sync(self.incarnation).await;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn crash_loses_only_unsynced_writes() {
        let disk = SimDisk::new(SimRng::new(1), 2_000, false);
        let (mut log, _snap) = disk.open(1);
        let vote = Vote::new(3, 1);
        log.save_vote(&vote).await.unwrap();
        assert_eq!(disk.durable().vote, Some(vote));
        // Unsynced: no flush has run yet.
        disk.write(0, Write::Append(vec![entry(3, 1), entry(3, 2)]));
        disk.write(0, Write::Committed(Some(entry(3, 2).log_id)));
        assert!(disk.durable().log.is_empty());
        let report = disk.crash();
        assert_eq!(report.unsynced, 2);
        let after = disk.durable();
        assert_eq!(after.vote, Some(vote));
        // A prefix survives: never the commit marker without the entries.
        assert_eq!(after.log.len(), if report.kept >= 1 { 2 } else { 0 });
        assert_eq!(after.committed.is_some(), report.kept == 2);
        // The old incarnation writes nothing any more.
        log.save_vote(&Vote::new(9, 1)).await.unwrap();
        assert_eq!(disk.durable().vote, Some(vote));
        assert_eq!(disk.incarnation(), 1);
    }
}
