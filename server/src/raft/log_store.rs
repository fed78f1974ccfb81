//! openraft's `RaftLogStorage` over the segment log ([`super::wal`]).
//!
//! `append` puts entries in the log's memory (readable at once) and queues
//! them for the writer thread, which reports them durable after the
//! `fdatasync` that covers them: group commit, and nothing acknowledged
//! before it is on disk.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError};

use super::disk::Disk;
use super::wal::Wal;
use super::{vote_on_restart, Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

/// The log store of a data dir; it keeps the dir open (and locked).
#[derive(Clone)]
pub struct LogStore {
    wal: Arc<Wal>,
    node_id: NodeId,
    disk: Disk,
}

impl LogStore {
    pub fn new(disk: Disk) -> Self {
        Self {
            wal: Arc::clone(&disk.wal),
            node_id: disk.identity.node_id,
            disk,
        }
    }

    fn note_committed(&self, committed: Option<LogId>) {
        let index = committed.map(|c| c.index).unwrap_or(0);
        self.disk
            .committed
            .fetch_max(index, std::sync::atomic::Ordering::Relaxed);
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        self.wal
            .entries(start, end)
            .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id = self.wal.purged();
        Ok(LogState {
            last_log_id: self.wal.last_log_id().or(last_purged_log_id),
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        // Durable before it is answered: otherwise a restarted node could
        // vote twice in one term.
        self.wal
            .save_vote(vote)
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        Ok(self.wal.vote().map(|vote| vote_on_restart(vote, self.node_id)))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not synced on its own (see `wal`): a stale marker after a crash only
        // means re-applying less before hearing the commit index again.
        self.note_committed(committed);
        self.wal
            .save_committed(&committed)
            .map_err(|e| StorageIOError::write(AnyError::new(&e)).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed = self.wal.committed();
        self.note_committed(committed);
        Ok(committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        self.wal
            .append(entries.into_iter().collect(), callback)
            .await
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)).into())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wal
            .truncate(log_id.index)
            .await
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wal
            .purge(&log_id)
            .await
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)).into())
    }
}
