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
    use std::sync::Arc;
    use std::time::Duration;

    use openraft::BasicNode;

    use super::super::disk::Disk;
    use super::super::log_store::LogStore;
    use super::super::network::{NetworkFactory, Peers};
    use super::super::state_machine::StateMachineStore;
    use super::super::wal::Wal;
    use super::super::{eager, RaftTiming};
    use super::*;
    use crate::state::{Command, Op, PutOp};

    /// A single-node cluster on a fresh data dir, leading, and its log.
    async fn single_node(dir: &std::path::Path) -> (Raft, Arc<Wal>) {
        let (disk, _) = Disk::open(dir, "watchdog", 1).unwrap();
        let state = StateMachineStore::open(disk.clone()).unwrap();
        let timing = RaftTiming::default();
        let wal = Arc::clone(&disk.wal);
        let network = NetworkFactory {
            peers: Peers::default(),
        };
        let config = Arc::new(timing.openraft_config("watchdog").unwrap());
        let raft = eager::start_raft(1, config, network, LogStore::new(disk), state, timing.heartbeat)
            .await
            .unwrap();
        raft.initialize(BTreeMap::from([(1, BasicNode::new("127.0.0.1:1"))]))
            .await
            .unwrap();
        raft.wait(Some(Duration::from_secs(10)))
            .current_leader(1, "leading")
            .await
            .unwrap();
        (raft, wal)
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

    /// A single node that has committed a write, and a task waiting on its
    /// core with [`core_failure`].
    async fn watched(dir: &std::path::Path) -> (Raft, Arc<Wal>, tokio::task::JoinHandle<Option<Fatal<NodeId>>>) {
        let (raft, wal) = single_node(dir).await;
        raft.client_write(put()).await.unwrap();
        let watching = tokio::spawn({
            let raft = raft.clone();
            async move { core_failure(&raft).await }
        });
        (raft, wal, watching)
    }

    #[tokio::test]
    async fn a_requested_shutdown_is_not_a_failure() {
        let dir = tempfile::tempdir().unwrap();
        let (raft, _, watching) = watched(dir.path()).await;
        raft.shutdown().await.unwrap();
        let seen = tokio::time::timeout(WITHIN, watching).await.unwrap().unwrap();
        assert!(seen.is_none(), "{seen:?}");
    }

    #[tokio::test]
    async fn a_failed_log_write_stops_the_core_and_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let (raft, wal, watching) = watched(dir.path()).await;
        wal.fail("no space left on the test's disk");
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
