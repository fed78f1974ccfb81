//! Everything a request handler needs about the local node, shared by all
//! services.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use openraft::error::RaftError;
use openraft::raft::{VoteRequest, VoteResponse};
use roster_env::Clock;

use super::batch::Batcher;
use tokio::time::Instant;

use crate::raft::network::Peers;
use crate::raft::state_machine::StateMachineStore;
use crate::raft::takeover::Takeover;
use crate::raft::{NodeId, Raft, RaftMetrics};

#[derive(Clone)]
pub struct NodeContext {
    pub id: NodeId,
    pub addr: String,
    pub cluster_name: String,
    pub raft: Raft,
    pub state: StateMachineStore,
    pub peers: Peers,
    /// Longest a request may wait for Raft (commit, leader, read index).
    pub request_timeout: Duration,
    /// Upper bound of the election timeout: how long a follower may go
    /// without hearing from a leader before the cluster would elect anew.
    pub election_max: Duration,
    /// Highest committed log index this node knows of.
    pub committed: Arc<AtomicU64>,
    /// The local clock lease deadlines and command stamps are read from
    /// (the real clock in rosterd; a drifting one in the simulator).
    pub clock: Clock,
    /// Where this node's proposals queue to share log entries.
    pub batcher: Batcher,
    contact: Arc<LeaderContact>,
    /// Takes over elections a behind candidate cannot win (not in tests
    /// that build a context by hand).
    takeover: Option<Takeover>,
}

/// When this node last heard from a leader that replicates to it.
struct LeaderContact {
    base: Instant,
    /// Milliseconds since `base` of the last AppendEntries from a leader;
    /// `u64::MAX` when never.
    last_ms: AtomicU64,
}

impl NodeContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        id: NodeId,
        addr: String,
        cluster_name: String,
        raft: Raft,
        state: StateMachineStore,
        peers: Peers,
        request_timeout: Duration,
        election_max: Duration,
        committed: Arc<AtomicU64>,
    ) -> Self {
        Self {
            batcher: Batcher::start(super::route::raft_proposer(raft.clone())),
            id,
            addr,
            cluster_name,
            raft,
            state,
            peers,
            request_timeout,
            election_max,
            committed,
            clock: Clock::real(),
            contact: Arc::new(LeaderContact {
                base: Instant::now(),
                last_ms: AtomicU64::new(u64::MAX),
            }),
            takeover: None,
        }
    }

    /// The same context, taking over elections that a candidate whose log
    /// is behind this node's cannot win ([`Takeover`]).
    #[must_use]
    pub fn with_takeover(mut self, takeover: Takeover) -> Self {
        self.takeover = Some(takeover);
        self
    }

    /// Answers a vote request, as the peer transport does on every node.
    pub async fn vote(&self, rpc: VoteRequest<NodeId>) -> Result<VoteResponse<NodeId>, RaftError<NodeId>> {
        let asked = rpc.clone();
        let result = self.raft.vote(rpc).await;
        if let (Ok(answer), Some(takeover)) = (&result, &self.takeover) {
            takeover.after_vote(&asked, answer, self.since_leader_contact());
        }
        result
    }

    /// The same context on another clock (the simulator's drifting ones).
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// A copy of Raft's latest metrics. Off the hot paths: the copy holds
    /// the membership and per-follower progress; see [`Self::with_metrics`].
    pub fn metrics(&self) -> RaftMetrics {
        self.raft.metrics().borrow().clone()
    }

    /// Reads Raft's latest metrics in place, without copying them.
    pub fn with_metrics<R>(&self, read: impl FnOnce(&RaftMetrics) -> R) -> R {
        read(&self.raft.metrics().borrow())
    }

    /// The current leader, if known.
    pub fn current_leader(&self) -> Option<NodeId> {
        self.with_metrics(|m| m.current_leader)
    }

    /// The address of the leader, when another node leads: a hint for
    /// clients to send their next requests there (`roster-leader`).
    pub fn leader_hint(&self) -> Option<String> {
        self.with_metrics(|m| {
            let leader = m.current_leader.filter(|&l| l != self.id)?;
            m.membership_config
                .membership()
                .get_node(&leader)
                .map(|n| n.addr.clone())
        })
    }

    /// Records that a leader's AppendEntries (heartbeat or entries) arrived.
    pub fn note_leader_contact(&self) {
        let ms = self.contact.base.elapsed().as_millis() as u64;
        self.contact.last_ms.store(ms, Ordering::Relaxed);
    }

    /// [`NodeContext::since_leader_contact`] as a function that outlives
    /// the context (for [`crate::raft::prompt`]).
    pub fn leader_contact_source(&self) -> crate::raft::prompt::SinceContact {
        let contact = Arc::clone(&self.contact);
        Arc::new(move || contact.since())
    }

    /// Time since the leader last reached this node, if ever.
    pub fn since_leader_contact(&self) -> Option<Duration> {
        self.contact.since()
    }
}

impl LeaderContact {
    fn since(&self) -> Option<Duration> {
        let last = self.last_ms.load(Ordering::Relaxed);
        if last == u64::MAX {
            return None;
        }
        let now = self.base.elapsed().as_millis() as u64;
        Some(Duration::from_millis(now.saturating_sub(last)))
    }
}

impl NodeContext {
    /// Whether this node currently sees a leader backed by a quorum: as
    /// leader, a quorum acknowledged it within the election timeout; as
    /// follower or learner, the leader replicated to it within that time.
    /// This is what `/health` and the gRPC health service report.
    pub fn quorum_health(&self) -> Result<NodeId, String> {
        let m = self.metrics();
        let Some(leader) = m.current_leader else {
            return Err("no leader known".into());
        };
        let bound = self.election_max;
        if leader == self.id {
            match m.millis_since_quorum_ack {
                Some(ms) if Duration::from_millis(ms) <= bound => Ok(leader),
                Some(ms) => Err(format!("leader without quorum: last quorum ack {ms} ms ago")),
                None => Err("leader without quorum: no quorum ack yet".into()),
            }
        } else {
            match self.since_leader_contact() {
                Some(d) if d <= bound => Ok(leader),
                Some(d) => Err(format!("leader {leader} last heard {} ms ago", d.as_millis())),
                None => Err(format!("leader {leader} not heard from yet")),
            }
        }
    }

    /// The address of member `id` in the current membership.
    pub fn member_addr(&self, id: NodeId) -> Option<String> {
        self.with_metrics(|m| m.membership_config.membership().get_node(&id).map(|n| n.addr.clone()))
    }
}
