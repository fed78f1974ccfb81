//! Takes over an election that the candidate running it cannot win.
//!
//! When a leader dies while entries are in flight, its followers' logs can
//! differ by the last entry or two. If the follower with the *shorter* log
//! times out first, this happens under openraft 0.9 (seen in the failover
//! benchmark: a `kill -9` of the leader under a steady writer, 0.9 s lost):
//!
//! 1. the behind follower `S` votes for itself at term `T + 1` and asks the
//!    others; the follower `L` with the longer log refuses (its log is
//!    newer) without moving to term `T + 1`;
//! 2. `S` learns of the longer log and holds back its next election by two
//!    of openraft's longest election timeouts (so that `L` can win);
//! 3. `L`'s own timer fires later, at its leader lease plus its election
//!    timeout; it campaigns at `T + 1`, which `S` already holds, and is
//!    refused; it wins only at `T + 2`, one more election timeout later.
//!
//! So the cluster waits roughly one extra election timeout for no reason.
//! etcd never sees this: a vote request of a higher term moves its
//! followers to that term at once. The rule here restores the intent of
//! step 2: a voter that refuses a vote because the candidate's log is
//! behind its own — which openraft only does once this voter's leader lease
//! has run out — campaigns at once; if that campaign has not won within
//! one heartbeat (the operator's bound on a round trip), it campaigns once
//! more, above the term the behind candidate took.
//!
//! Safety is Raft's: an election is always safe, and a node only wins with
//! a log at least as new as a majority's. It cannot disturb a working
//! leader: openraft refuses by log only after refusing by lease, and the
//! rule also stands aside while this node heard from a leader within the
//! lease, while it leads, and while a takeover it started is still
//! cooling down (at most one per `election_min`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::raft::{VoteRequest, VoteResponse};
use openraft::ServerState;

use super::{NodeId, Raft, RaftTiming};

/// Watches this node's answers to vote requests; see the module docs.
#[derive(Clone)]
pub struct Takeover {
    raft: Raft,
    /// How long the first campaign may take before the second.
    round_trip: Duration,
    /// openraft's leader lease: no takeover while a leader was heard within it.
    lease: Duration,
    /// Time between the end of one takeover and the start of the next.
    cooldown: Duration,
    busy: Arc<AtomicBool>,
}

impl Takeover {
    pub fn new(raft: Raft, timing: &RaftTiming) -> Self {
        let (_, lease_ms) = timing.openraft_election_timeouts();
        Self {
            raft,
            round_trip: timing.heartbeat,
            lease: Duration::from_millis(lease_ms),
            cooldown: timing.election_min,
            busy: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Called with every answer this node gave to a vote request, and how
    /// long ago a leader last replicated to it (`None`: never).
    pub fn after_vote(&self, req: &VoteRequest<NodeId>, resp: &VoteResponse<NodeId>, since_leader: Option<Duration>) {
        if !should_take_over(req, resp, since_leader, self.lease) {
            return;
        }
        {
            let m = self.raft.metrics();
            let m = m.borrow();
            let voter = m.membership_config.membership().voter_ids().any(|v| v == m.id);
            if !voter || m.state == ServerState::Leader {
                return;
            }
        }
        if self.busy.swap(true, Ordering::AcqRel) {
            return;
        }
        tracing::info!(
            candidate = req.vote.leader_id.voted_for,
            candidate_term = req.vote.leader_id.term,
            candidate_last = ?req.last_log_id,
            our_last = ?resp.last_log_id,
            "a candidate whose log is behind ours is campaigning: taking the election over"
        );
        let this = self.clone();
        tokio::spawn(async move {
            this.campaign().await;
            tokio::time::sleep(this.cooldown).await;
            this.busy.store(false, Ordering::Release);
        });
    }

    async fn campaign(&self) {
        let term = self.raft.metrics().borrow().current_term;
        if self.raft.trigger().elect().await.is_err() {
            return;
        }
        // The first campaign takes the next term, which the behind
        // candidate may hold already (it voted for itself there). A leader
        // of an older term does not count: the metrics may not show the
        // campaign yet, and still name the dead leader (a first version
        // waited on "some leader known" and never campaigned twice).
        let won = self
            .raft
            .wait(Some(self.round_trip))
            .metrics(
                |m| m.current_leader.is_some() && m.current_term > term,
                "takeover: first campaign",
            )
            .await;
        if won.is_ok() {
            return;
        }
        let again = {
            let m = self.raft.metrics();
            let m = m.borrow();
            m.current_leader.is_none() && m.state == ServerState::Candidate && m.current_term <= term + 1
        };
        if again {
            tracing::info!(
                term = term + 2,
                "takeover: first campaign did not win; campaigning above it"
            );
            let _ = self.raft.trigger().elect().await;
        }
    }
}

/// The rule without its side conditions: the vote was refused, our log is
/// newer than the candidate's, the candidate's term is not behind ours, and
/// no leader has replicated to us within the lease.
fn should_take_over(
    req: &VoteRequest<NodeId>,
    resp: &VoteResponse<NodeId>,
    since_leader: Option<Duration>,
    lease: Duration,
) -> bool {
    !resp.vote_granted
        && resp.last_log_id > req.last_log_id
        && req.vote.leader_id.term >= resp.vote.leader_id.term
        && since_leader.is_none_or(|d| d >= lease)
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, LogId, Vote};

    use super::*;

    fn log(term: u64, index: u64) -> Option<LogId<NodeId>> {
        Some(LogId::new(CommittedLeaderId::new(term, 0), index))
    }

    fn request(term: u64, candidate: NodeId, last: Option<LogId<NodeId>>) -> VoteRequest<NodeId> {
        VoteRequest::new(Vote::new(term, candidate), last)
    }

    fn answer(
        term: u64,
        voted_for: NodeId,
        committed: bool,
        granted: bool,
        last: Option<LogId<NodeId>>,
    ) -> VoteResponse<NodeId> {
        let vote = if committed {
            Vote::new_committed(term, voted_for)
        } else {
            Vote::new(term, voted_for)
        };
        VoteResponse::new(vote, last, granted)
    }

    const LEASE: Duration = Duration::from_millis(800);
    const LONG_AGO: Option<Duration> = Some(Duration::from_millis(1200));

    #[test]
    fn a_behind_candidate_of_a_newer_term_triggers_a_takeover() {
        // The benchmark's case: S (2-1027) at term 3, we (2-1028) still at 2.
        let req = request(3, 2, log(2, 1027));
        let resp = answer(2, 1, true, false, log(2, 1028));
        assert!(long_silent(&req, &resp));
        assert!(should_take_over(&req, &resp, None, LEASE), "never heard a leader");
    }

    /// The rule for a leader last heard long ago.
    fn long_silent(req: &VoteRequest<NodeId>, resp: &VoteResponse<NodeId>) -> bool {
        should_take_over(req, resp, LONG_AGO, LEASE)
    }

    #[test]
    fn no_takeover_otherwise() {
        let behind = request(3, 2, log(2, 1027));
        // The vote was granted.
        assert!(!long_silent(&behind, &answer(3, 2, false, true, log(2, 1027))));
        // Refused, but our log is not newer (refused by vote or by lease).
        let even = request(3, 2, log(2, 1028));
        assert!(!long_silent(&even, &answer(3, 3, false, false, log(2, 1028))));
        let ahead = request(3, 2, log(2, 1029));
        assert!(!long_silent(&ahead, &answer(2, 1, true, false, log(2, 1028))));
        // A stale candidate: our term is past its term.
        assert!(!long_silent(&behind, &answer(4, 3, true, false, log(2, 1028))));
        // A leader replicated to us within the lease.
        let recent = Some(Duration::from_millis(300));
        assert!(!should_take_over(
            &behind,
            &answer(2, 1, true, false, log(2, 1028)),
            recent,
            LEASE
        ));
    }
}
