//! Server side of the peer transport (`roster.raft.v1.RaftTransport`).

use std::pin::Pin;

use futures::Stream;
use roster_proto::raft::raft_transport_server::RaftTransport;
use roster_proto::raft::{LocalStatusRequest, RaftPayload, ReadIndexRequest, ReadIndexResponse};
use roster_proto::v1::MemberStatus;
use serde::Serialize;
use tonic::{Request, Response, Status, Streaming};

use super::common::{self, Streams};
use super::route::{Proposal, RouteError};
use super::{deadline, NodeContext};
use crate::raft::codec;

pub struct TransportService {
    ctx: NodeContext,
    streams: Streams,
}

impl TransportService {
    pub fn new(ctx: NodeContext, streams: Streams) -> Self {
        Self { ctx, streams }
    }
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<RaftPayload, Status>> + Send>>;

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, payload: &RaftPayload) -> Result<T, Status> {
    codec::decode(what, &payload.data).map_err(|e| Status::invalid_argument(e.to_string()))
}

fn payload<T: Serialize>(what: &'static str, value: &T) -> Result<RaftPayload, Status> {
    let data = codec::encode(what, value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(RaftPayload { data })
}

fn reply<T: Serialize>(what: &'static str, value: &T) -> Result<Response<RaftPayload>, Status> {
    payload(what, value).map(Response::new)
}

/// Serves one leader's AppendEntries stream: each request is handed to
/// Raft and answered before the next is read, so replies come in request
/// order. The reply stream itself reads the requests (no task or channel in
/// between: a hand-off less each way on every AppendEntries). Ends when the
/// leader closes the stream or breaks it, after a request that cannot be
/// decoded (answered with `INVALID_ARGUMENT`), or when the node stops
/// (answered with `UNAVAILABLE`).
fn serve_appends(
    ctx: NodeContext,
    requests: Streaming<RaftPayload>,
    streams: Streams,
) -> impl Stream<Item = Result<RaftPayload, Status>> + Send + 'static {
    futures::stream::unfold(Some((ctx, requests, streams)), |state| async move {
        let (ctx, mut requests, streams) = state?;
        let request = tokio::select! {
            biased;
            _ = streams.stopped() => return Some((Err(common::shutting_down()), None)),
            request = requests.message() => request,
        };
        let Ok(Some(request)) = request else { return None };
        match decode("append entries", &request) {
            Ok(rpc) => {
                let result = ctx.raft.append_entries(rpc).await;
                if result.as_ref().is_ok_and(|r| r.is_success()) {
                    ctx.note_leader_contact();
                }
                let reply = payload("append entries reply", &result);
                let next = reply.is_ok().then_some((ctx, requests, streams));
                Some((reply, next))
            }
            Err(status) => Some((Err(status), None)),
        }
    })
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
    type AppendEntriesStreamStream = ReplyStream;

    async fn append_entries_stream(
        &self,
        request: Request<Streaming<RaftPayload>>,
    ) -> Result<Response<ReplyStream>, Status> {
        Ok(Response::new(Box::pin(serve_appends(
            self.ctx.clone(),
            request.into_inner(),
            self.streams.clone(),
        ))))
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
