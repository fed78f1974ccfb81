//! The Raft log and vote in sled, with group commit.
//!
//! `append` writes entries into sled's page cache and hands the completion
//! callback to a single flusher task. The flusher collects every callback
//! waiting at that moment, issues one `flush` (one fsync), and only then
//! reports them done, in order. openraft acknowledges nothing it has not been
//! told is durable, so an entry is never acknowledged before it is on disk,
//! and concurrent writers share fsyncs instead of queueing behind each other.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{AnyError, LogState, OptionalSend, RaftLogReader, StorageIOError};
use tokio::sync::mpsc;

use super::codec;
use super::disk::{log_index_of, log_key, Disk, KEY_COMMITTED, KEY_PURGED, KEY_VOTE};
use super::{Entry, LogId, StorageError, TypeConfig, Vote};

/// Callbacks waiting for the flusher; appends wait when this many are queued.
const FLUSH_QUEUE: usize = 4096;

#[derive(Clone)]
pub struct LogStore {
    disk: Disk,
    flusher: mpsc::Sender<LogFlushed<TypeConfig>>,
}

impl LogStore {
    /// Creates the store and starts its flusher task (on the current tokio
    /// runtime). The task ends when the last clone of the store is dropped.
    pub fn new(disk: Disk) -> Self {
        let (tx, rx) = mpsc::channel(FLUSH_QUEUE);
        tokio::spawn(flusher(disk.clone(), rx));
        Self { disk, flusher: tx }
    }

    fn note_committed(&self, committed: Option<LogId>) {
        let index = committed.map(|c| c.index).unwrap_or(0);
        self.disk
            .committed
            .fetch_max(index, std::sync::atomic::Ordering::Relaxed);
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StorageError> {
        let read_err = |e: &dyn std::error::Error| StorageIOError::read(AnyError::error(format!("{what}: {e}")));
        match self.disk.meta.get(key).map_err(|e| read_err(&e))? {
            None => Ok(None),
            Some(bytes) => Ok(Some(codec::decode(what, &bytes).map_err(|e| read_err(&e))?)),
        }
    }

    fn write_meta<T: serde::Serialize>(&self, key: &[u8], what: &'static str, value: &T) -> Result<(), StorageError> {
        let write_err = |e: &dyn std::error::Error| StorageIOError::write(AnyError::error(format!("{what}: {e}")));
        let bytes = codec::encode(what, value).map_err(|e| write_err(&e))?;
        self.disk.meta.insert(key, bytes).map_err(|e| write_err(&e))?;
        Ok(())
    }
}

async fn flusher(disk: Disk, mut rx: mpsc::Receiver<LogFlushed<TypeConfig>>) {
    let mut batch = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let result = disk.flush().await.map_err(|e| e.to_string());
        for callback in batch.drain(..) {
            callback.log_io_completed(result.clone().map_err(io::Error::other));
        }
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
            Bound::Included(&i) => Bound::Included(log_key(i)),
            Bound::Excluded(&i) => Bound::Excluded(log_key(i)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut entries = Vec::new();
        for item in self.disk.logs.range((Bound::Included(log_key(start)), end)) {
            let (key, value) = item.map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
            let index = log_index_of(&key).unwrap_or_default();
            let entry: Entry = codec::decode("log entry", &value)
                .map_err(|e| StorageIOError::read_log_at_index(index, AnyError::new(&e)))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged_log_id: Option<LogId> = self.read_meta(KEY_PURGED, "last purged log id")?.flatten();
        let last = match self
            .disk
            .logs
            .last()
            .map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?
        {
            None => None,
            Some((_, value)) => {
                let entry: Entry =
                    codec::decode("log entry", &value).map_err(|e| StorageIOError::read_logs(AnyError::new(&e)))?;
                Some(entry.log_id)
            }
        };
        // `purge` records the purge point before it deletes the entries, so
        // after a crash between the two, entries at or below the purge point
        // can remain. If they are all that remains (e.g. a purge up to an
        // installed snapshot beyond the local log), the last entry is below
        // the purge point; openraft requires last_log_id >= last_purged_log_id,
        // so such leftovers must not count as the end of the log.
        let last = match (last, last_purged_log_id) {
            (Some(last), Some(purged)) if last.index <= purged.index => None,
            (last, _) => last,
        };
        Ok(LogState {
            last_log_id: last.or(last_purged_log_id),
            last_purged_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(KEY_VOTE, "vote", vote)?;
        // A vote must be durable before it is answered: otherwise a restarted
        // node could vote twice in one term.
        self.disk
            .flush()
            .await
            .map_err(|e| StorageIOError::write_vote(AnyError::new(&e)))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(KEY_VOTE, "vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // The commit marker must be durable before openraft applies (and so
        // answers clients for) the entries up to it. openraft 0.9 lets a
        // leader that restarts with its committed vote resume leading in the
        // same term without a new blank entry; its linearizable read index is
        // then max(first entry of its term, this marker), and the state
        // machine is rebuilt only up to this marker. A marker older than the
        // last acknowledged write would let reads after the restart miss
        // acknowledged writes (they are in the log, but not yet re-committed).
        // openraft calls this once per commit advance, so the cost is one
        // fsync per commit batch; the flush also covers the entries below it.
        self.note_committed(committed);
        self.write_meta(KEY_COMMITTED, "committed log id", &committed)?;
        self.disk
            .flush()
            .await
            .map_err(|e| StorageIOError::write(AnyError::new(&e)))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed = self
            .read_meta::<Option<LogId>>(KEY_COMMITTED, "committed log id")?
            .flatten();
        self.note_committed(committed);
        Ok(committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes = codec::encode("log entry", &entry)
                .map_err(|e| StorageIOError::write_log_entry(entry.log_id, AnyError::new(&e)))?;
            batch.insert(&log_key(entry.log_id.index), bytes);
        }
        self.disk
            .logs
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        self.flusher
            .send(callback)
            .await
            .map_err(|_| StorageIOError::write_logs(AnyError::error("log flusher stopped")))?;
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = sled::Batch::default();
        for item in self.disk.logs.range(log_key(log_id.index)..) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
            batch.remove(key);
        }
        self.disk
            .logs
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first: if we crash half-way, the remaining
        // entries below it are ignored and purged again next time.
        self.write_meta(KEY_PURGED, "last purged log id", &Some(log_id))?;
        let mut batch = sled::Batch::default();
        for item in self.disk.logs.range(..=log_key(log_id.index)) {
            let (key, _) = item.map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
            batch.remove(key);
        }
        self.disk
            .logs
            .apply_batch(batch)
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        Ok(())
    }
}
