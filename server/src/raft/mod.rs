//! openraft wiring: the type configuration, durable storage (a segment log
//! and a snapshot file), and the peer transport (tonic, and a framed link
//! for AppendEntries).
//!
//! Everything here sits behind openraft's traits (`RaftLogStorage`,
//! `RaftStateMachine`, `RaftNetworkFactory`), so the simulator can swap the
//! disk and the network and keep the rest.

// openraft's traits fix the error types (`StorageError`, `RPCError`); our
// helpers return them as they are rather than boxing at every call.
#![allow(clippy::result_large_err)]

pub mod append_link;
pub mod codec;
pub mod disk;
pub mod eager;
pub mod files;
pub mod log_store;
pub mod network;
pub mod prompt;
pub mod snapshot_file;
pub mod state_machine;
pub mod takeover;
pub mod unstick;
pub mod wal;
pub mod watchdog;

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
///
/// The election settings mean what they mean in etcd and the Raft paper: a
/// follower that stops hearing from its leader starts an election after a
/// random timeout in `[election_min, election_max)` from the last message it
/// received. [`RaftTiming::openraft_config`] explains how that is mapped
/// onto openraft, whose parameters of the same names mean something else.
#[derive(Clone, Debug)]
pub struct RaftTiming {
    /// Interval of the leader's heartbeats (AppendEntries when idle).
    pub heartbeat: Duration,
    /// Earliest moment, after the last message from the leader, at which a
    /// follower starts an election.
    pub election_min: Duration,
    /// Latest such moment (exclusive).
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
    ///
    /// # Election timing
    ///
    /// openraft 0.9 does not use `election_timeout_min..max` the way Raft
    /// does. From its two values it derives (`engine/engine_config.rs`):
    ///
    /// * `election_timeout`, drawn once per process from `[min, max)`;
    /// * `leader_lease = max`: a follower whose vote is committed (it knows a
    ///   leader) rejects vote requests until `leader_lease` after the last
    ///   message from that leader (`Engine::handle_vote_req`);
    ///
    /// and such a follower campaigns only `leader_lease + election_timeout`
    /// after that last message (`RaftCore::handle_tick_election`): a
    /// candidate, or a follower that has only voted, waits
    /// `election_timeout` alone. Passing Roster's 1000–2000 ms straight
    /// through made the first election after a leader's death start 3–4 s
    /// after its last heartbeat, twice etcd's 1–2 s.
    ///
    /// So openraft gets `max = b` and `min = a` (see
    /// [`RaftTiming::openraft_election_timeouts`]), and the first election
    /// starts within `[a + b, 2b)` of the last heartbeat
    /// ([`RaftTiming::first_election_window`]), checked every
    /// `1.5 × heartbeat` (openraft's tick; etcd's is one heartbeat). The
    /// values are chosen so that:
    ///
    /// * `a ≥ 2 × heartbeat`: `[a, b)` is also how often a candidate retries
    ///   an election that failed (a split vote), and an election needs a
    ///   round trip plus a vote fsync on each side; the heartbeat is the
    ///   operator's bound on a round trip (etcd's guidance), so a retry never
    ///   comes sooner than two of them;
    /// * `a + b = election_min` and `2b ≤ election_max`: the window lies in
    ///   the configured range and starts where it starts, so a dead leader
    ///   is replaced as early as the operator allowed;
    /// * the window is three heartbeats wide (two of openraft's ticks) where
    ///   the range allows: `b = (election_min + 3 × heartbeat) / 2`. With the
    ///   defaults that is `a = 350`, `b = 650`: a first election within
    ///   [1000, 1300) ms and retries every [350, 650) ms. A wider window only
    ///   delays the replacement of a dead leader (the expected first
    ///   campaign is the earliest of the survivors' draws); it was six
    ///   heartbeats wide (`b = 800`) while members ticked in step and two
    ///   followers whose timeouts fell in one tick split the vote. Since
    ///   [`stagger_start`] gives each node its own tick phase, a tie needs
    ///   two campaigns within the few milliseconds a vote request takes,
    ///   about one leader death in a hundred with 300 ms. Where the range is
    ///   too tight for that (`election_min < 7 × heartbeat`) the window
    ///   narrows to two heartbeats (`b = election_min − 2 × heartbeat`, down
    ///   to `election_min = 6 × heartbeat`); below that, `b = election_max /
    ///   2` instead and the window ends at the range's end and starts at
    ///   `election_min` or `b + 2 × heartbeat`, whichever is later;
    /// * `heartbeat < a < b` (openraft's `validate`), taking precedence over
    ///   the above for settings too tight to allow them.
    ///
    /// The leader lease is then `b`, at least `heartbeat + 2` ms and with the
    /// defaults six and a half heartbeats: a live leader
    /// refreshes it long before it runs out, so a node that comes back from a
    /// partition with a higher term still cannot win votes from followers of
    /// a working leader. It runs out `a > heartbeat` before the first
    /// election starts, so the other followers, whose last message from the
    /// dead leader came at about the same time, grant that election. (The
    /// lease only guards against disruption; reads confirm leadership with
    /// a quorum, not with it.) openraft also delays the next election of a
    /// node that saw a longer log by `2 × max`, now about `election_max`.
    pub fn openraft_config(&self, cluster_name: &str) -> anyhow::Result<openraft::Config> {
        let (election_timeout_min, election_timeout_max) = self.openraft_election_timeouts();
        let config = openraft::Config {
            cluster_name: cluster_name.to_string(),
            heartbeat_interval: self.heartbeat.as_millis() as u64,
            election_timeout_min,
            election_timeout_max,
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

    /// openraft's `(election_timeout_min, election_timeout_max)` in
    /// milliseconds, `(a, b)` in [`RaftTiming::openraft_config`].
    pub fn openraft_election_timeouts(&self) -> (u64, u64) {
        let heartbeat = self.heartbeat.as_millis() as u64;
        let election_min = self.election_min.as_millis() as u64;
        let election_max = self.election_max.as_millis() as u64;
        // The lease: the first election window [a + b, 2b) starts at
        // election_min and is three heartbeats wide, or as wide as a ≥ 2
        // heartbeats allows if that is still two heartbeats; room for
        // heartbeat < a < b.
        let b = if election_min >= 6 * heartbeat {
            (election_max / 2)
                .min(election_min - 2 * heartbeat)
                .min((election_min + 3 * heartbeat) / 2)
        } else {
            election_max / 2
        }
        .max(heartbeat + 2);
        let a = election_min
            .saturating_sub(b)
            .max(2 * heartbeat)
            .min(b - 1)
            .max(heartbeat + 1);
        (a, b)
    }

    /// When a follower that knows a leader starts its first election after
    /// the last message from that leader, as configured for openraft:
    /// `leader_lease + [election_timeout_min, election_timeout_max)`, before
    /// openraft's tick granularity (`1.5 × heartbeat`) is added.
    pub fn first_election_window(&self) -> std::ops::Range<Duration> {
        let (a, b) = self.openraft_election_timeouts();
        Duration::from_millis(b + a)..Duration::from_millis(b + b)
    }
}

/// Waits a random fraction of openraft's election tick before a node's
/// Raft starts.
///
/// openraft 0.9 checks its election timer on ticks of `1.5 × heartbeat`
/// that start with `Raft::new` and keep their phase for the life of the
/// process. Members started together (`rosterd dev`, a fleet brought up at
/// once, the benchmark) tick in step, so two followers whose timeouts fall
/// in the same tick interval start their elections within a millisecond of
/// each other and split the vote; with the default window four ticks wide
/// that is about one leader death in four, each costing a retry (0.75 s in
/// the failover benchmark that found it). A random start phase per node
/// makes such ties as rare as two clocks agreeing to the round trip.
pub async fn stagger_start(timing: &RaftTiming) {
    let tick_ms = (timing.heartbeat.as_millis() as u64).saturating_mul(3) / 2;
    let wait = roster_env::random::in_range(0, tick_ms.saturating_sub(1));
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(heartbeat: u64, election_min: u64, election_max: u64) -> RaftTiming {
        RaftTiming {
            heartbeat: Duration::from_millis(heartbeat),
            election_min: Duration::from_millis(election_min),
            election_max: Duration::from_millis(election_max),
            ..RaftTiming::default()
        }
    }

    /// The window openraft 0.9 itself implies for a config: a follower with a
    /// committed vote campaigns `leader_lease + election_timeout` after the
    /// last message, `leader_lease = election_timeout_max` and
    /// `election_timeout` in `[election_timeout_min, election_timeout_max)`.
    fn implied_window(config: &openraft::Config) -> (u64, u64) {
        let lease = config.election_timeout_max;
        (lease + config.election_timeout_min, lease + config.election_timeout_max)
    }

    #[test]
    fn defaults_campaign_within_the_election_range() {
        let t = RaftTiming::default();
        let config = t.openraft_config("c").unwrap();
        assert_eq!((config.election_timeout_min, config.election_timeout_max), (350, 650));
        assert_eq!(config.heartbeat_interval, 100);
        // First election after the leader's last heartbeat: 1000..1300 ms,
        // inside the configured 1000..2000 ms and starting where it starts
        // (it was 3000..4000 ms when the settings were passed through).
        assert_eq!(implied_window(&config), (1000, 1300));
        let w = t.first_election_window();
        assert_eq!((w.start.as_millis(), w.end.as_millis()), (1000, 1300));
    }

    #[test]
    fn other_settings() {
        // (heartbeat, election min, max) -> openraft (min, max), window.
        let cases = [
            // The integration tests' settings.
            ((50, 500, 1000), (175, 325), (500, 650)),
            // The store suite's.
            ((50, 150, 300), (100, 150), (250, 300)),
            // Three heartbeats wide wherever the range has room.
            ((100, 1500, 2000), (600, 900), (1500, 1800)),
            ((10, 900, 1000), (435, 465), (900, 930)),
            // Room for two heartbeats only.
            ((100, 650, 2000), (200, 450), (650, 900)),
            // A narrow range: the window is the range itself.
            ((100, 1500, 1700), (650, 850), (1500, 1700)),
            // Odd bounds round down by a millisecond at most.
            ((100, 1000, 1001), (499, 500), (999, 1000)),
            // As tight as the config checks allow (election min just above
            // two heartbeats): openraft's own rules win.
            ((100, 201, 202), (101, 102), (203, 204)),
        ];
        for ((hb, lo, hi), openraft, window) in cases {
            let t = timing(hb, lo, hi);
            let config = t.openraft_config("c").unwrap_or_else(|e| panic!("{hb}/{lo}/{hi}: {e}"));
            assert_eq!(
                (config.election_timeout_min, config.election_timeout_max),
                openraft,
                "{hb}/{lo}/{hi}"
            );
            assert_eq!(implied_window(&config), window, "{hb}/{lo}/{hi}");
        }
    }

    /// Every setting `rosterd` accepts (`0 < 2 × heartbeat < election_min <
    /// election_max`, see config.rs) gives a config openraft accepts, whose
    /// lease outlasts a heartbeat and runs out before the first election,
    /// and whose first election falls inside the configured range wherever
    /// that range leaves room for it.
    #[test]
    fn every_accepted_setting_maps_sensibly() {
        let mut checked = 0;
        for hb in [1u64, 2, 5, 10, 33, 50, 100, 250] {
            let mut mins: Vec<u64> = vec![
                2 * hb + 1,
                2 * hb + 2,
                3 * hb,
                4 * hb + 7,
                10 * hb,
                10 * hb + 1,
                25 * hb,
            ];
            mins.dedup();
            for lo in mins {
                for hi in [lo + 1, lo + 2, lo + hb, 2 * lo - 1, 2 * lo, 2 * lo + 1, 3 * lo, 10 * lo] {
                    if hi <= lo {
                        continue;
                    }
                    let t = timing(hb, lo, hi);
                    let config = t.openraft_config("c").unwrap_or_else(|e| panic!("{hb}/{lo}/{hi}: {e}"));
                    let (a, b) = (config.election_timeout_min, config.election_timeout_max);
                    let ctx = format!("heartbeat {hb}, election {lo}..{hi}: openraft {a}..{b}");
                    assert!(hb < a && a < b, "{ctx}");
                    // The lease outlasts a heartbeat and runs out before
                    // the first election (by more than a heartbeat).
                    let lease = b;
                    let (start, end) = implied_window(&config);
                    assert!(lease > hb + 1, "{ctx}");
                    assert!(start > lease + hb, "{ctx}");
                    assert!(start < end, "{ctx}");
                    // Failed elections are retried no sooner than two
                    // heartbeats, where the lease leaves room for it.
                    if b > 2 * hb {
                        assert!(a >= 2 * hb, "{ctx}");
                    }
                    if lo >= 6 * hb {
                        // Room for a window two heartbeats wide that starts
                        // at the configured start: it does, to the
                        // millisecond, and ends inside the range.
                        assert!(start <= lo && start + 1 >= lo, "{ctx}");
                        assert!(end <= hi, "{ctx}");
                        assert!(end - start >= (2 * hb).min(hi - lo - 1), "{ctx}");
                        assert!(end - start <= 3 * hb + 1, "{ctx}");
                    } else if hi >= 2 * (2 * hb + 1) {
                        // Room for a > 2 heartbeats: the window ends at the
                        // configured end, to the millisecond, and starts at
                        // the configured start or at lease + 2 heartbeats.
                        assert!(end <= hi && end + 1 >= hi, "{ctx}");
                        assert!(start + 1 >= lo, "{ctx}");
                        assert!(start <= lo.max(lease + 2 * hb), "{ctx}");
                    }
                    // Never after the configured end, unless openraft's
                    // rules (heartbeat < a < b) leave no choice.
                    assert!(end <= hi.max(2 * (hb + 2)), "{ctx}");
                    checked += 1;
                }
            }
        }
        assert!(checked > 300, "{checked}");
    }
}
