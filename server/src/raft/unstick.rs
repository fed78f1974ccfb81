//! Breaks election lockstep.
//!
//! openraft 0.9 draws a node's election timeout once, when the node starts,
//! and keeps it for the life of the process. Two voters whose timeouts
//! differ by less than a network round trip then time out together, each
//! votes for itself, and they split the vote again at every timeout, for
//! ever, whenever they need each other for a quorum (a 3-node cluster with
//! one member down or removed). The simulator found it (seed 138: n2 and n3
//! campaigning in step every 1.5 s for over a minute). etcd avoids it by
//! drawing a new timeout at every election.
//!
//! This task restores that: while this node is a voter that has known no
//! leader for two of openraft's longest election timeouts and has seen
//! elections keep failing (its term moved at least twice), it starts an
//! election itself at a random moment (each check after a fresh random wait
//! in openraft's election timeout range), so two stuck candidates no longer
//! move together;
//! after each such election it waits twice as long before the next. It never
//! acts while a leader is known, so it cannot disturb a working cluster, and
//! an extra election is always safe in Raft. (Without pre-vote, an extra
//! election by a node whose log is behind only delays the node that can
//! win; hence the doubling.)
//!
//! openraft checks its election timer on ticks of 1.5 heartbeats that start
//! with the process, and a candidate retries after its own timeout
//! (`election_timeout_min..max` as mapped by [`RaftTiming::openraft_config`],
//! 200..1000 ms with the defaults): two nodes whose timeouts round up to the
//! same number of ticks, and whose ticks are less than a round trip apart,
//! stay in step. In the simulator, where nodes start together, about one
//! leader crash in fifteen ends in a split vote and one in fifty in
//! lockstep (seeds 1..200, crashes only).

use std::time::Duration;

use openraft::ServerState;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Raft, RaftTiming};

/// Starts the task for `raft`, with its timing. It ends when Raft shuts
/// down.
pub fn spawn(raft: Raft, timing: &RaftTiming) -> JoinHandle<()> {
    // openraft's election timeout range: how often a candidate retries.
    let (retry_min, retry_max) = timing.openraft_election_timeouts();
    // How long elections must have kept failing: two of openraft's longest
    // election timeouts (a candidate retries within one, plus a tick).
    let first_patience = Duration::from_millis(retry_max) * 2;
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        // Since when no leader is known, and the term then.
        let mut leaderless: Option<(Instant, u64)> = None;
        // How long to leave openraft alone after one of our elections;
        // doubles while they do not help (an extra election by a node whose
        // log is behind only delays the one that can win).
        let mut patience = first_patience;
        loop {
            let wait_ms = roster_env::random::in_range(retry_min, retry_max.saturating_sub(1));
            tokio::time::sleep(Duration::from_millis(wait_ms)).await;
            if metrics.has_changed().is_err() {
                return; // Raft stopped.
            }
            let m = metrics.borrow_and_update().clone();
            let voter = m.membership_config.membership().voter_ids().any(|v| v == m.id);
            let electing = matches!(m.state, ServerState::Candidate | ServerState::Follower);
            if m.current_leader.is_some() || !voter || !electing {
                leaderless = None;
                patience = first_patience;
                continue;
            }
            let now = Instant::now();
            let (since, term_then) = *leaderless.get_or_insert((now, m.current_term));
            // The lockstep symptom: elections keep happening (the term moved
            // at least twice) and keep failing, for a while.
            let failing = m.current_term >= term_then + 2;
            if failing && now.duration_since(since) >= patience {
                tracing::info!(
                    term = m.current_term,
                    "elections keep failing for {:?}: starting one at a random moment",
                    now.duration_since(since)
                );
                if raft.trigger().elect().await.is_err() {
                    return;
                }
                leaderless = Some((now, m.current_term + 1));
                patience = (patience * 2).min(first_patience * 8);
            }
        }
    })
}
