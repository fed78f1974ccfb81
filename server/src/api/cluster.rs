//! `roster.v1.Cluster`: status of every member and live membership changes.

use std::sync::atomic::Ordering;
use std::time::Duration;

use openraft::ServerState;
use roster_proto::raft::LocalStatusRequest;
use roster_proto::v1::cluster_server::Cluster;
use roster_proto::v1::{
    Member, MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberStatus, StatusRequest, StatusResponse,
};
use tonic::{Request, Response, Status};

use super::route::{MemberInfo, Outcome, Proposal};
use super::{deadline, NodeContext};
use crate::limits;

/// How long `Status` waits for each member's own answer.
const MEMBER_STATUS_TIMEOUT: Duration = Duration::from_millis(800);

pub struct ClusterService {
    ctx: NodeContext,
}

impl ClusterService {
    pub fn new(ctx: NodeContext) -> Self {
        Self { ctx }
    }
}

fn to_proto(members: Vec<MemberInfo>) -> Vec<Member> {
    members
        .into_iter()
        .map(|m| Member {
            id: m.id,
            addr: m.addr,
            voter: m.voter,
        })
        .collect()
}

fn members_of(outcome: Outcome) -> Result<Vec<Member>, Status> {
    match outcome {
        Outcome::Members(m) => Ok(to_proto(m)),
        Outcome::Write(_) => Err(Status::internal("unexpected reply to a membership change")),
    }
}

fn validate_id(id: u64) -> Result<(), Status> {
    if id == 0 || id > limits::MAX_NODE_ID {
        return Err(Status::invalid_argument(format!(
            "member id must be between 1 and {}; got {id}",
            limits::MAX_NODE_ID
        )));
    }
    Ok(())
}

/// Checks a `host:port` member address.
pub fn validate_addr(addr: &str) -> Result<(), String> {
    if addr.is_empty() || addr.len() > limits::MAX_ADDR_BYTES {
        return Err(format!(
            "member address must be 1 to {} bytes; got {}",
            limits::MAX_ADDR_BYTES,
            addr.len()
        ));
    }
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("member address '{addr}' is not host:port"));
    };
    if host.is_empty() || port.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
        return Err(format!(
            "member address '{addr}' is not host:port with a port from 1 to 65535"
        ));
    }
    if !addr.chars().all(|c| c.is_ascii_alphanumeric() || ".-:[]_".contains(c)) {
        return Err(format!(
            "member address '{addr}' has characters outside [A-Za-z0-9.-:[]_]"
        ));
    }
    Ok(())
}

impl NodeContext {
    /// This node's own view, as reported in `Status`.
    pub fn local_status(&self) -> MemberStatus {
        let m = self.metrics();
        let state = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let voter = m.membership_config.voter_ids().any(|v| v == self.id);
        MemberStatus {
            id: self.id,
            addr: self.addr.clone(),
            voter,
            reachable: true,
            error: String::new(),
            state: state.to_string(),
            term: m.current_term,
            leader_id: m.current_leader.unwrap_or(0),
            last_log_index: m.last_log_index.unwrap_or(0),
            commit_index: self.committed.load(Ordering::Relaxed),
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            revision: self.state.read().state.revision(),
            matched_index: 0,
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn status(&self, _request: Request<StatusRequest>) -> Result<Response<StatusResponse>, Status> {
        let ctx = &self.ctx;
        let metrics = ctx.metrics();
        let matched = metrics.replication.clone().unwrap_or_default();
        let asks = ctx.members().into_iter().map(|member| async move {
            let mut status = if member.id == ctx.id {
                ctx.local_status()
            } else {
                ask_member(ctx, &member).await
            };
            status.voter = member.voter;
            status.addr = member.addr;
            status
        });
        let mut members = futures::future::join_all(asks).await;
        for status in &mut members {
            if let Some(Some(log_id)) = matched.get(&status.id) {
                status.matched_index = log_id.index;
            }
        }
        Ok(Response::new(StatusResponse {
            cluster_name: ctx.cluster_name.clone(),
            leader_id: metrics.current_leader.unwrap_or(0),
            term: metrics.current_term,
            answered_by: ctx.id,
            members,
        }))
    }

    async fn member_list(&self, request: Request<MemberListRequest>) -> Result<Response<MemberListResponse>, Status> {
        if !request.get_ref().serializable {
            let deadline = deadline::of(&request, self.ctx.request_timeout);
            self.ctx.read_barrier(deadline).await?;
        }
        Ok(Response::new(MemberListResponse {
            members: to_proto(self.ctx.members()),
            leader_id: self.ctx.metrics().current_leader.unwrap_or(0),
        }))
    }

    async fn member_add(&self, request: Request<MemberAddRequest>) -> Result<Response<MemberAddResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let MemberAddRequest { id, addr } = request.into_inner();
        validate_id(id)?;
        validate_addr(&addr).map_err(Status::invalid_argument)?;
        let outcome = self.ctx.propose(Proposal::AddLearner { id, addr }, deadline).await?;
        Ok(Response::new(MemberAddResponse {
            members: members_of(outcome)?,
        }))
    }

    async fn member_promote(
        &self,
        request: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let id = request.into_inner().id;
        validate_id(id)?;
        let outcome = self.ctx.propose(Proposal::Promote { id }, deadline).await?;
        Ok(Response::new(MemberPromoteResponse {
            members: members_of(outcome)?,
        }))
    }

    async fn member_remove(
        &self,
        request: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let id = request.into_inner().id;
        validate_id(id)?;
        let outcome = self.ctx.propose(Proposal::Remove { id }, deadline).await?;
        Ok(Response::new(MemberRemoveResponse {
            members: members_of(outcome)?,
        }))
    }
}

async fn ask_member(ctx: &NodeContext, member: &MemberInfo) -> MemberStatus {
    let unreachable = |error: String| MemberStatus {
        id: member.id,
        addr: member.addr.clone(),
        voter: member.voter,
        reachable: false,
        error,
        ..Default::default()
    };
    let mut client = match ctx.peers.client(&member.addr) {
        Ok(client) => client,
        Err(e) => return unreachable(e.message().to_string()),
    };
    let mut request = Request::new(LocalStatusRequest {});
    request.set_timeout(MEMBER_STATUS_TIMEOUT);
    match tokio::time::timeout(MEMBER_STATUS_TIMEOUT, client.local_status(request)).await {
        Err(_) => unreachable(format!("no answer within {} ms", MEMBER_STATUS_TIMEOUT.as_millis())),
        Ok(Err(status)) => unreachable(status.message().to_string()),
        Ok(Ok(reply)) => reply.into_inner(),
    }
}
