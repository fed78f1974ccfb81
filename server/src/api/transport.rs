//! Server side of the peer transport (`roster.raft.v1.RaftTransport`).

use roster_proto::raft::raft_transport_server::RaftTransport;
use roster_proto::raft::{LocalStatusRequest, RaftPayload, ReadIndexRequest, ReadIndexResponse};
use roster_proto::v1::MemberStatus;
use serde::Serialize;
use tonic::{Request, Response, Status};

use super::route::{Proposal, RouteError};
use super::{deadline, NodeContext};
use crate::raft::codec;

pub struct TransportService {
    ctx: NodeContext,
}

impl TransportService {
    pub fn new(ctx: NodeContext) -> Self {
        Self { ctx }
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, payload: &RaftPayload) -> Result<T, Status> {
    codec::decode(what, &payload.data).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn reply<T: Serialize>(what: &'static str, value: &T) -> Result<Response<RaftPayload>, Status> {
    let data = codec::encode(what, value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftPayload { data }))
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    async fn append_entries(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode("append entries", request.get_ref())?;
        let result = self.ctx.raft.append_entries(rpc).await;
        if result.as_ref().is_ok_and(|r| r.is_success()) {
            self.ctx.note_leader_contact();
        }
        reply("append entries reply", &result)
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode("vote", request.get_ref())?;
        let result = self.ctx.vote(rpc).await;
        reply("vote reply", &result)
    }

    async fn install_snapshot(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode("install snapshot", request.get_ref())?;
        let result = self.ctx.raft.install_snapshot(rpc).await;
        if result.is_ok() {
            self.ctx.note_leader_contact();
        }
        reply("install snapshot reply", &result)
    }

    async fn forward(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let proposal: Proposal = decode("proposal", request.get_ref())?;
        let result: Result<_, RouteError> = self.ctx.propose_local(proposal, deadline).await;
        reply("forward reply", &result)
    }

    async fn read_index(&self, request: Request<ReadIndexRequest>) -> Result<Response<ReadIndexResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        match self.ctx.local_read_index(deadline).await {
            Ok(index) => Ok(Response::new(ReadIndexResponse { index })),
            Err(RouteError::NotLeader { .. }) => Err(Status::failed_precondition("not the leader")),
            Err(e) => Err(e.into()),
        }
    }

    async fn local_status(&self, _request: Request<LocalStatusRequest>) -> Result<Response<MemberStatus>, Status> {
        Ok(Response::new(self.ctx.local_status()))
    }
}
