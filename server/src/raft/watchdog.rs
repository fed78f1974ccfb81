//! Notices when openraft's core stops on its own.
//!
//! openraft ends its core task on a fatal error — a log write that failed
//! (a full or broken disk), a storage error while applying, an internal
//! assertion — and from then on every call answers `Fatal`. The process
//! around it would otherwise keep running: listening, answering every
//! request `UNAVAILABLE`, counted as up by a supervisor that would have
//! restarted it. [`core_failure`] resolves when that happens, with the
//! reason, so `rosterd` can exit non-zero (as etcd does when its WAL cannot
//! be written) and the simulator can report it.
//!
//! It waits on the server metrics channel, whose sender the core owns and
//! drops when it ends; that channel changes only with the node's role,
//! leader or membership, so the wait costs nothing per write.

use openraft::error::Fatal;

use super::{NodeId, Raft};

/// Resolves once `raft`'s core has stopped: `Some(why)` if it stopped on its
/// own (a fatal error), `None` if it was asked to ([`Raft::shutdown`]).
pub async fn core_failure(raft: &Raft) -> Option<Fatal<NodeId>> {
    let mut server = raft.server_metrics();
    while server.changed().await.is_ok() {}
    // The core is gone; any call reports how its task ended.
    match raft.is_initialized().await {
        Err(Fatal::Stopped) => None,
        Err(why) => Some(why),
        // Unreachable while the channel's only sender lives in the core;
        // reported rather than assumed.
        Ok(_) => Some(Fatal::Panicked),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
    use openraft::{BasicNode, OptionalSend};

    use super::super::disk::Disk;
    use super::super::log_store::LogStore;
    use super::super::network::{NetworkFactory, Peers};
    use super::super::state_machine::StateMachineStore;
    use super::super::{eager, Entry, LogId, RaftTiming, StorageError, TypeConfig, Vote};
    use super::*;
    use crate::state::{Command, Op, PutOp};

    /// The real log store, whose appends fail once `broken` is set (a disk
    /// that filled up or died).
    struct Breakable {
        inner: LogStore,
        broken: Arc<AtomicBool>,
    }

    impl RaftLogReader<TypeConfig> for Breakable {
        async fn try_get_log_entries<RB>(&mut self, range: RB) -> Result<Vec<Entry>, StorageError>
        where
            RB: std::ops::RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend,
        {
            self.inner.try_get_log_entries(range).await
        }
    }

    impl RaftLogStorage<TypeConfig> for Breakable {
        type LogReader = <LogStore as RaftLogStorage<TypeConfig>>::LogReader;

        async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
            self.inner.get_log_state().await
        }

        async fn get_log_reader(&mut self) -> Self::LogReader {
            self.inner.get_log_reader().await
        }

        async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
            self.inner.save_vote(vote).await
        }

        async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
            self.inner.read_vote().await
        }

        async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
        where
            I: IntoIterator<Item = Entry> + OptionalSend,
            I::IntoIter: OptionalSend,
        {
            if self.broken.load(Ordering::SeqCst) {
                callback.log_io_completed(Err(io::Error::other("no space left on the test's disk")));
                return Ok(());
            }
            self.inner.append(entries, callback).await
        }

        async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
            self.inner.truncate(log_id).await
        }

        async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
            self.inner.purge(log_id).await
        }
    }

    /// A single-node cluster on a fresh data dir, leading, and the switch
    /// that breaks its log.
    async fn single_node(dir: &std::path::Path) -> (Raft, Arc<AtomicBool>) {
        let (disk, _) = Disk::open(dir, "watchdog", 1).unwrap();
        let state = StateMachineStore::open(disk.clone()).unwrap();
        let timing = RaftTiming::default();
        let broken = Arc::new(AtomicBool::new(false));
        let log = Breakable {
            inner: LogStore::new(disk),
            broken: broken.clone(),
        };
        let network = NetworkFactory {
            peers: Peers::default(),
        };
        let config = Arc::new(timing.openraft_config("watchdog").unwrap());
        let raft = eager::start_raft(1, config, network, log, state, timing.heartbeat)
            .await
            .unwrap();
        raft.initialize(BTreeMap::from([(1, BasicNode::new("127.0.0.1:1"))]))
            .await
            .unwrap();
        raft.wait(Some(Duration::from_secs(10)))
            .current_leader(1, "leading")
            .await
            .unwrap();
        (raft, broken)
    }

    fn put() -> Command {
        Command {
            request_id: None,
            stamp_ms: 0,
            op: Op::Put(PutOp {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                prev_kv: false,
                lease: 0,
                fence: None,
            }),
        }
    }

    const WITHIN: Duration = Duration::from_secs(10);

    #[tokio::test]
    async fn a_requested_shutdown_is_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (raft, _) = single_node(dir.path()).await;
        raft.client_write(put()).await.unwrap();
        let watching = tokio::spawn({
            let raft = raft.clone();
            async move { core_failure(&raft).await }
        });
        raft.shutdown().await.unwrap();
        let seen = tokio::time::timeout(WITHIN, watching).await.unwrap().unwrap();
        assert!(seen.is_none(), "{seen:?}");
    }

    #[tokio::test]
    async fn a_failed_log_write_stops_the_core_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (raft, broken) = single_node(dir.path()).await;
        raft.client_write(put()).await.unwrap();
        let watching = tokio::spawn({
            let raft = raft.clone();
            async move { core_failure(&raft).await }
        });
        broken.store(true, Ordering::SeqCst);
        assert!(
            raft.client_write(put()).await.is_err(),
            "a write the log failed to keep"
        );
        let seen = tokio::time::timeout(WITHIN, watching).await.unwrap().unwrap();
        match seen {
            Some(Fatal::StorageError(e)) => {
                assert!(e.to_string().contains("no space left on the test's disk"), "{e}");
            }
            other => panic!("expected the log's error, got {other:?}"),
        }
    }
}
