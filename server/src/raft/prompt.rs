//! Campaigns on time when the leader goes silent.
//!
//! openraft 0.9 checks a follower's election timer only on its ticks, every
//! 1.5 heartbeats (150 ms with the defaults), so a follower campaigns up to
//! a tick after its timeout has run out: 0–150 ms added to every failover.
//! This task checks at the moment itself: while this node is a voting
//! follower that has heard from a leader, it draws a timeout in the
//! election window ([`RaftTiming::first_election_window`], 1000–1300 ms
//! with the defaults) and starts an election when that much time has
//! passed since the last leader contact — once per silence of the leader,
//! and only if its vote has not changed since that contact (no election is
//! under way yet). Every later round is openraft's, which holds back a node
//! that has learnt its log is behind; overriding that made elections
//! longer in five-node partitions (simulator, seed 136 with 5 nodes). It
//! wakes about once per timeout while a leader is heard from.
//!
//! openraft's timer keeps running as before: a node never heard from a
//! leader (a fresh start) is left to it, and candidates retry on it. An
//! election is always safe in Raft; this one only comes earlier than
//! openraft's would have, from the same window, never while a leader is
//! heard from within election_min (past openraft's leader lease, so the
//! other followers can grant the vote).

use std::sync::Arc;
use std::time::Duration;

use openraft::ServerState;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Raft, RaftTiming};

/// Time since the leader last reached this node, if ever (the API layer's
/// record of accepted AppendEntries and snapshots).
pub type SinceContact = Arc<dyn Fn() -> Option<Duration> + Send + Sync>;

/// Starts the task for `raft`; it ends when Raft shuts down.
pub fn spawn(raft: Raft, timing: &RaftTiming, since_contact: SinceContact) -> JoinHandle<()> {
    let window = timing.first_election_window();
    let (from, to) = (window.start.as_millis() as u64, window.end.as_millis() as u64);
    let idle = timing.heartbeat;
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let draw = || Duration::from_millis(roster_env::random::in_range(from, to.saturating_sub(1)));
        let mut timeout = draw();
        let mut vote = metrics.borrow().vote;
        // When this task saw the vote change (at its next check, so never
        // earlier than the change).
        let mut vote_changed: Option<Instant> = None;
        loop {
            let m = metrics.borrow_and_update().clone();
            let now = Instant::now();
            if m.vote != vote {
                vote = m.vote;
                vote_changed = Some(now);
            }
            let voter = m.membership_config.membership().voter_ids().any(|v| v == m.id);
            let wait = match since_contact() {
                Some(since) if voter && m.state == ServerState::Follower => {
                    let contact = now.checked_sub(since).unwrap_or(now);
                    if vote_changed.is_some_and(|changed| changed >= contact) {
                        // An election has run since the leader's last word
                        // (ours or another's): the rest is openraft's, with
                        // its back-off for a node whose log is behind.
                        Some(idle)
                    } else {
                        timeout.checked_sub(since).filter(|left| !left.is_zero())
                    }
                }
                // Leading, campaigning, learning or never led: nothing to do.
                _ => Some(idle),
            };
            match wait {
                // Not woken by metrics (they change with every applied
                // entry): a vote change is seen at the next check, which
                // only makes the wait longer.
                Some(left) => {
                    tokio::time::sleep(left).await;
                    if metrics.has_changed().is_err() {
                        return; // Raft stopped.
                    }
                }
                None => {
                    tracing::debug!(
                        term = m.current_term,
                        timeout_ms = timeout.as_millis() as u64,
                        "leader silent for the election timeout: campaigning"
                    );
                    if raft.trigger().elect().await.is_err() {
                        return;
                    }
                    // Our own vote changes now (the metrics may not show it
                    // yet): one prompt election per silence of the leader.
                    vote_changed = Some(Instant::now());
                    timeout = draw();
                }
            }
        }
    })
}
