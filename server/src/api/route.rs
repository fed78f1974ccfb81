//! Getting a request to the leader: writes and membership changes are
//! proposed locally when this node leads, otherwise forwarded to the leader
//! over the peer transport; linearizable reads confirm a read index with the
//! leader and wait until this node has applied up to it.
//!
//! Every wait is bounded by the request's deadline. A write whose deadline
//! passes before it is known to be committed is answered `UNAVAILABLE` with
//! "outcome unknown": it may still commit, which is why clients retry with
//! the same request id and the state machine deduplicates.

use std::collections::BTreeSet;
use std::sync::Arc;

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers};
use serde::{Deserialize, Serialize};
use tokio::time::{timeout_at, Instant};

use super::batch::ProposeFn;
use super::NodeContext;
use crate::raft::codec;
use crate::raft::{NodeId, Raft};
use crate::state::command::{Command, Response};

const OUTCOME_UNKNOWN: &str = "outcome unknown, retry with the same request id";

/// Most times one request follows a "not leader" answer before giving up.
const MAX_HOPS: usize = 5;

/// What a follower asks the leader to do for it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Proposal {
    Write(Command),
    AddLearner { id: NodeId, addr: String },
    Promote { id: NodeId },
    Remove { id: NodeId },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Outcome {
    Write(Response),
    Members(Vec<MemberInfo>),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub id: NodeId,
    pub addr: String,
    pub voter: bool,
}

/// Why a routed request did not complete. Travels between peers, and maps
/// onto one gRPC status for clients.
#[derive(Clone, Debug, Serialize, Deserialize, thiserror::Error)]
pub enum RouteError {
    #[error("no leader: {0}")]
    NoLeader(String),
    #[error("not the leader (leader is {leader:?})")]
    NotLeader { leader: Option<(NodeId, String)> },
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Precondition(String),
    #[error("{0}")]
    Invalid(String),
    #[error("node is shutting down")]
    ShuttingDown,
    #[error("peer unreachable: {0}")]
    Unreachable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<RouteError> for tonic::Status {
    fn from(e: RouteError) -> Self {
        use tonic::Status;
        let message = e.to_string();
        match e {
            RouteError::NotLeader { leader } => {
                let mut status = Status::unavailable(message);
                if let Some((_, addr)) = leader {
                    if let Ok(v) = addr.parse() {
                        status.metadata_mut().insert("roster-leader", v);
                    }
                }
                status
            }
            RouteError::NoLeader(_)
            | RouteError::Timeout(_)
            | RouteError::ShuttingDown
            | RouteError::Unreachable(_) => Status::unavailable(message),
            RouteError::NotFound(_) => Status::not_found(message),
            RouteError::AlreadyExists(_) => Status::already_exists(message),
            RouteError::Precondition(_) => Status::failed_precondition(message),
            RouteError::Invalid(_) => Status::invalid_argument(message),
            RouteError::Internal(_) => Status::internal(message),
        }
    }
}

fn from_write_error(e: RaftError<NodeId, ClientWriteError<NodeId, BasicNode>>) -> RouteError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => RouteError::NotLeader {
            leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => RouteError::Precondition(c.to_string()),
        RaftError::Fatal(_) => RouteError::ShuttingDown,
    }
}

/// Proposes each entry of a [`super::batch::Batcher`] through `raft`.
pub fn raft_proposer(raft: Raft) -> ProposeFn {
    Arc::new(move |command| {
        let raft = raft.clone();
        Box::pin(async move {
            raft.client_write(command)
                .await
                .map(|written| written.data)
                .map_err(from_write_error)
        })
    })
}

impl NodeContext {
    /// Runs `proposal` on the leader, wherever it is, before `deadline`.
    pub async fn propose(&self, proposal: Proposal, deadline: Instant) -> Result<Outcome, RouteError> {
        let mut last = RouteError::NoLeader("no leader elected yet".into());
        for _ in 0..MAX_HOPS {
            let leader = match self.wait_for_leader(deadline).await {
                Ok(leader) => leader,
                Err(_) => return Err(last),
            };
            let result = if leader == self.id {
                self.propose_local(proposal.clone(), deadline).await
            } else {
                match self.member_addr(leader) {
                    Some(addr) => self.forward(&addr, &proposal, deadline).await,
                    None => Err(RouteError::NoLeader(format!("leader {leader} has no known address"))),
                }
            };
            match result {
                Err(e @ RouteError::NotLeader { .. }) | Err(e @ RouteError::Unreachable(_)) => {
                    // Leadership moved while we were asking; let the local
                    // view catch up (bounded by the deadline) and retry.
                    last = e;
                    self.pause_for_leader_change(leader, deadline).await;
                }
                other => return other,
            }
        }
        Err(last)
    }

    /// Runs `proposal` through the local Raft; fails with `NotLeader` when
    /// this node does not lead. Used directly by the forward handler.
    pub async fn propose_local(&self, proposal: Proposal, deadline: Instant) -> Result<Outcome, RouteError> {
        let timed_out = || {
            RouteError::Timeout(format!(
                "not committed before the deadline (is a quorum up?); {OUTCOME_UNKNOWN}"
            ))
        };
        match proposal {
            Proposal::Write(mut command) => {
                command.stamp_ms = self.clock.wall_ms();
                let response = timeout_at(deadline, self.batcher.propose(command, deadline))
                    .await
                    .map_err(|_| timed_out())??;
                Ok(Outcome::Write(response))
            }
            Proposal::AddLearner { id, addr } => {
                self.ensure_local_leader()?;
                let membership = self.metrics().membership_config.clone();
                if let Some(existing) = membership.membership().get_node(&id) {
                    if existing.addr != addr {
                        return Err(RouteError::AlreadyExists(format!(
                            "member {id} already exists with address {}",
                            existing.addr
                        )));
                    }
                }
                timeout_at(deadline, self.raft.add_learner(id, BasicNode::new(&addr), true))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(from_write_error)?;
                Ok(Outcome::Members(self.members()))
            }
            Proposal::Promote { id } => {
                self.ensure_local_leader()?;
                let membership = self.metrics().membership_config.clone();
                if membership.membership().get_node(&id).is_none() {
                    return Err(RouteError::NotFound(format!("no member with id {id}")));
                }
                if membership.voter_ids().any(|v| v == id) {
                    return Ok(Outcome::Members(self.members()));
                }
                let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
                timeout_at(deadline, self.raft.change_membership(change, false))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(from_write_error)?;
                Ok(Outcome::Members(self.members()))
            }
            Proposal::Remove { id } => {
                self.ensure_local_leader()?;
                let membership = self.metrics().membership_config.clone();
                if membership.membership().get_node(&id).is_none() {
                    return Err(RouteError::NotFound(format!("no member with id {id}")));
                }
                let voters: Vec<NodeId> = membership.voter_ids().collect();
                let change = if voters.contains(&id) {
                    if voters.len() == 1 {
                        return Err(RouteError::Precondition(format!(
                            "member {id} is the last voter; a cluster cannot remove its last voter"
                        )));
                    }
                    ChangeMembers::RemoveVoters(BTreeSet::from([id]))
                } else {
                    ChangeMembers::RemoveNodes(BTreeSet::from([id]))
                };
                timeout_at(deadline, self.raft.change_membership(change, false))
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(from_write_error)?;
                Ok(Outcome::Members(self.members()))
            }
        }
    }

    /// For membership changes: this node leads, in the Leader state, and is
    /// still a voter. A leader that has just committed its own removal keeps
    /// believing it leads for a moment; openraft 0.9 must not be asked to
    /// change membership then (it asserts in debug builds, found by the
    /// simulator: seed 16), so the change goes to the next leader instead.
    fn ensure_local_leader(&self) -> Result<(), RouteError> {
        let m = self.metrics();
        let voter = m.membership_config.membership().voter_ids().any(|v| v == self.id);
        if m.current_leader == Some(self.id) && m.state == openraft::ServerState::Leader && voter {
            Ok(())
        } else if m.current_leader == Some(self.id) {
            Err(RouteError::NotLeader { leader: None })
        } else {
            Err(RouteError::NotLeader {
                leader: m.current_leader.and_then(|l| self.member_addr(l).map(|a| (l, a))),
            })
        }
    }

    /// Current members, voters first, by id.
    pub fn members(&self) -> Vec<MemberInfo> {
        let m = self.metrics().membership_config.clone();
        let voters: BTreeSet<NodeId> = m.voter_ids().collect();
        let mut out: Vec<MemberInfo> = m
            .membership()
            .nodes()
            .map(|(id, node)| MemberInfo {
                id: *id,
                addr: node.addr.clone(),
                voter: voters.contains(id),
            })
            .collect();
        out.sort_by_key(|m| (!m.voter, m.id));
        out
    }

    async fn forward(&self, addr: &str, proposal: &Proposal, deadline: Instant) -> Result<Outcome, RouteError> {
        let data = codec::encode("proposal", proposal).map_err(|e| RouteError::Internal(e.to_string()))?;
        let mut client = self
            .peers
            .client(addr)
            .map_err(|e| RouteError::Unreachable(e.to_string()))?;
        let mut request = tonic::Request::new(roster_proto::raft::RaftPayload { data });
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let reply = match timeout_at(deadline, client.forward(request)).await {
            Err(_) => {
                let message = format!("leader at {addr} did not answer before the deadline");
                return Err(RouteError::Timeout(format!("{message}; {OUTCOME_UNKNOWN}")));
            }
            // The handler itself only fails on a payload it cannot decode;
            // anything else is the connection (the leader died, restarted, or
            // is partitioned): retry, and let deduplication absorb a write
            // that did land.
            Ok(Err(status)) if status.code() == tonic::Code::InvalidArgument => {
                return Err(RouteError::Internal(format!("{addr}: {}", status.message())))
            }
            Ok(Err(status)) => return Err(RouteError::Unreachable(format!("{addr}: {}", status.message()))),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        codec::decode::<Result<Outcome, RouteError>>("forward reply", &reply.data)
            .map_err(|e| RouteError::Internal(e.to_string()))?
    }

    /// After `leader` did not take a request (it is not the leader, or
    /// unreachable): waits until this node's view of the leader moves away
    /// from it (an election began, or another leader reached this node), at
    /// most `election_max / 20` and never past `deadline`. Returning as soon
    /// as the view moves matters after a leader dies: the request then goes
    /// to the new leader as soon as this node hears of it.
    async fn pause_for_leader_change(&self, leader: NodeId, deadline: Instant) {
        let until = (Instant::now() + self.election_max / 20).min(deadline);
        let mut metrics = self.raft.metrics();
        let moved = async {
            loop {
                if metrics.borrow_and_update().current_leader != Some(leader) {
                    return;
                }
                if metrics.changed().await.is_err() {
                    // Shutting down: the next step says so.
                    return;
                }
            }
        };
        let _ = timeout_at(until, moved).await;
    }

    /// Waits until some leader is known, up to `deadline`.
    async fn wait_for_leader(&self, deadline: Instant) -> Result<NodeId, RouteError> {
        let mut metrics = self.raft.metrics();
        let wait = async {
            loop {
                if let Some(leader) = metrics.borrow_and_update().current_leader {
                    return Ok(leader);
                }
                if metrics.changed().await.is_err() {
                    return Err(RouteError::ShuttingDown);
                }
            }
        };
        timeout_at(deadline, wait)
            .await
            .map_err(|_| RouteError::NoLeader("no leader elected before the deadline (is a quorum up?)".into()))?
    }

    /// Makes a following read linearizable: afterwards, this node's applied
    /// state includes every write committed before the call began.
    pub async fn read_barrier(&self, deadline: Instant) -> Result<(), RouteError> {
        let mut last = RouteError::NoLeader("no leader elected yet".into());
        for _ in 0..MAX_HOPS {
            let leader = match self.wait_for_leader(deadline).await {
                Ok(leader) => leader,
                Err(_) => return Err(last),
            };
            if leader != self.id && crate::planted::active(crate::planted::Planted::FollowerLocalReads) {
                return Ok(());
            }
            let index = if leader == self.id {
                self.local_read_index(deadline).await
            } else {
                match self.member_addr(leader) {
                    Some(addr) => self.remote_read_index(&addr, deadline).await,
                    None => Err(RouteError::NoLeader(format!("leader {leader} has no known address"))),
                }
            };
            match index {
                Ok(index) => {
                    return timeout_at(
                        deadline,
                        self.raft.wait(None).applied_index_at_least(Some(index), "read index"),
                    )
                    .await
                    .map_err(|_| RouteError::Timeout("did not catch up with the leader's read index in time".into()))?
                    .map(|_| ())
                    .map_err(|_| RouteError::ShuttingDown);
                }
                Err(e @ RouteError::NotLeader { .. }) | Err(e @ RouteError::Unreachable(_)) => {
                    last = e;
                    self.pause_for_leader_change(leader, deadline).await;
                }
                Err(e) => return Err(e),
            }
        }
        Err(last)
    }

    /// As leader: confirms leadership with a quorum and returns the index a
    /// read must wait for.
    pub async fn local_read_index(&self, deadline: Instant) -> Result<u64, RouteError> {
        let (read_log_id, _applied) = timeout_at(deadline, self.raft.get_read_log_id())
            .await
            .map_err(|_| RouteError::Timeout("leadership not confirmed by a quorum before the deadline".into()))?
            .map_err(|e| match e {
                RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => RouteError::NotLeader {
                    leader: f.leader_id.zip(f.leader_node.map(|n| n.addr)),
                },
                RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => RouteError::NoLeader(q.to_string()),
                RaftError::Fatal(_) => RouteError::ShuttingDown,
            })?;
        Ok(read_log_id.map(|l| l.index).unwrap_or(0))
    }

    async fn remote_read_index(&self, addr: &str, deadline: Instant) -> Result<u64, RouteError> {
        let mut client = self
            .peers
            .client(addr)
            .map_err(|e| RouteError::Unreachable(e.to_string()))?;
        let mut request = tonic::Request::new(roster_proto::raft::ReadIndexRequest {});
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        match timeout_at(deadline, client.read_index(request)).await {
            Err(_) => Err(RouteError::Timeout(format!(
                "leader at {addr} gave no read index in time"
            ))),
            Ok(Err(status)) => match status.code() {
                tonic::Code::FailedPrecondition => Err(RouteError::NotLeader { leader: None }),
                tonic::Code::InvalidArgument | tonic::Code::Internal => {
                    Err(RouteError::Internal(format!("{addr}: {}", status.message())))
                }
                _ => Err(RouteError::Unreachable(format!("{addr}: {}", status.message()))),
            },
            Ok(Ok(reply)) => Ok(reply.into_inner().index),
        }
    }
}
