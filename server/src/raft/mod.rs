//! openraft wiring: the type configuration, durable storage (a segment log
//! and a snapshot file), and the peer transport over tonic.
//!
//! Everything here sits behind openraft's traits (`RaftLogStorage`,
//! `RaftStateMachine`, `RaftNetworkFactory`), so the simulator can swap the
//! disk and the network and keep the rest.

// openraft's traits fix the error types (`StorageError`, `RPCError`); our
// helpers return them as they are rather than boxing at every call.
#![allow(clippy::result_large_err)]

pub mod codec;
pub mod disk;
pub mod files;
pub mod log_store;
pub mod network;
pub mod snapshot_file;
pub mod state_machine;
pub mod unstick;
pub mod wal;

use std::io::Cursor;
use std::time::Duration;

use crate::state::command::{Command, Response};

openraft::declare_raft_types!(
    /// Roster's openraft type configuration.
    pub TypeConfig:
        D = Command,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = RosterRuntime,
);

pub type NodeId = u64;
pub type Raft = openraft::Raft<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type Vote = openraft::Vote<NodeId>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, openraft::BasicNode>;

/// openraft's tokio runtime, except for where its randomness comes from.
///
/// openraft draws its one random number, the election timeout, from
/// `AsyncRuntime::thread_rng`. Here that is [`roster_env::random::ThreadRng`]: the OS-seeded
/// `rand::thread_rng` (exactly what `openraft::TokioRuntime` uses) unless
/// the current thread was given a seed with [`seed_thread_rng`], which only
/// the deterministic simulator does. Everything else delegates to
/// `openraft::TokioRuntime`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RosterRuntime;

type Tokio = openraft::TokioRuntime;

impl openraft::AsyncRuntime for RosterRuntime {
    type JoinError = <Tokio as openraft::AsyncRuntime>::JoinError;
    type JoinHandle<T: openraft::OptionalSend + 'static> = <Tokio as openraft::AsyncRuntime>::JoinHandle<T>;
    type Sleep = <Tokio as openraft::AsyncRuntime>::Sleep;
    type Instant = <Tokio as openraft::AsyncRuntime>::Instant;
    type TimeoutError = <Tokio as openraft::AsyncRuntime>::TimeoutError;
    type Timeout<R, T: std::future::Future<Output = R> + openraft::OptionalSend> =
        <Tokio as openraft::AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = roster_env::random::ThreadRng;
    type OneshotSender<T: openraft::OptionalSend> = <Tokio as openraft::AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <Tokio as openraft::AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: openraft::OptionalSend> = <Tokio as openraft::AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: std::future::Future + openraft::OptionalSend + 'static,
        T::Output: openraft::OptionalSend + 'static,
    {
        Tokio::spawn(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        Tokio::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        Tokio::sleep_until(deadline)
    }

    fn timeout<R, F: std::future::Future<Output = R> + openraft::OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout(duration, future)
    }

    fn timeout_at<R, F: std::future::Future<Output = R> + openraft::OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Tokio::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        Tokio::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        roster_env::random::ThreadRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: openraft::OptionalSend,
    {
        Tokio::oneshot()
    }
}

/// The vote a restarted node resumes with: the stored one, except that a
/// vote for itself is no longer marked committed.
///
/// openraft 0.9 restarts a node whose stored vote is its own committed one
/// as leader of the same term, without a new blank entry; its read index is
/// then max(its first entry of that term, the stored commit marker). The
/// marker is not synced on its own (see [`wal`]), so after a crash it can be
/// older than writes already acknowledged, and linearizable reads would miss
/// them. With the vote uncommitted the node starts as a follower and can
/// lead again only by winning a new term, whose blank entry, once committed,
/// covers every acknowledged write. The vote still binds the node to its
/// term: it grants no other candidate a vote in it.
pub fn vote_on_restart(vote: Vote, me: NodeId) -> Vote {
    if vote.is_committed() && vote.leader_id().voted_for() == Some(me) {
        Vote::new(vote.leader_id().get_term(), me)
    } else {
        vote
    }
}

/// Seeds (`Some`) or unseeds (`None`) the randomness openraft draws on this
/// thread (election timeouts), and everything else drawn from
/// [`roster_env::random`]. For the deterministic simulator, which runs a
/// whole cluster on one thread; rosterd never calls it.
pub fn seed_thread_rng(seed: Option<u64>) {
    roster_env::random::seed_thread(seed);
}

/// Raft timing and log-compaction settings of one node.
#[derive(Clone, Debug)]
pub struct RaftTiming {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// Build a snapshot (and compact the log) after this many entries.
    pub snapshot_every: u64,
    /// Entries kept in the log after a snapshot, so that briefly lagging
    /// followers catch up from the log instead of a full snapshot.
    pub keep_after_snapshot: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(100),
            election_min: Duration::from_millis(1000),
            election_max: Duration::from_millis(2000),
            snapshot_every: 10_000,
            keep_after_snapshot: 1_000,
        }
    }
}

impl RaftTiming {
    /// The openraft configuration for these settings, validated.
    pub fn openraft_config(&self, cluster_name: &str) -> anyhow::Result<openraft::Config> {
        let config = openraft::Config {
            cluster_name: cluster_name.to_string(),
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            election_timeout_min: self.election_min.as_millis() as u64,
            election_timeout_max: self.election_max.as_millis() as u64,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every),
            max_in_snapshot_log_to_keep: self.keep_after_snapshot,
            // Replication batches: large enough for throughput, small enough
            // that one AppendEntries stays well under the transport limit.
            max_payload_entries: 512,
            install_snapshot_timeout: 5_000,
            ..Default::default()
        };
        Ok(config.validate()?)
    }
}
