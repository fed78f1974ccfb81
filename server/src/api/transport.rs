//! Server side of the peer transport (`roster.raft.v1.RaftTransport`).

use std::time::Duration;

use roster_proto::raft::raft_transport_server::RaftTransport;
use roster_proto::raft::{LocalStatusRequest, RaftPayload, ReadIndexRequest, ReadIndexResponse};
use roster_proto::v1::MemberStatus;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, BufReader};
use tonic::{Request, Response, Status};

use super::common::Streams;
use super::route::{Proposal, RouteError};
use super::{deadline, NodeContext};
use crate::raft::append_link::{read_frame, write_frame, PREFACE};
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

/// How long a link may take to send its preface.
const PREFACE_TIMEOUT: Duration = Duration::from_secs(10);
/// A link silent this long is closed. A leader sends at least a heartbeat
/// every heartbeat interval and closes its links when it steps down; a
/// link that goes quiet without closing lost its leader without a word (a
/// machine gone, a cut cable), and would otherwise hold a task and a socket
/// forever.
const LINK_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Serves one leader's AppendEntries link (`raft::append_link`) on `io`,
/// which starts at the preface: each request is handed to Raft and answered
/// before the next is read, so replies come in request order. Ends when the
/// leader closes the link, when the link breaks or carries something that
/// does not decode (closing it: the leader dials again), or when the node
/// stops.
pub async fn serve_link<IO: AsyncRead + AsyncWrite + Unpin>(ctx: NodeContext, io: IO, streams: Streams) {
    let mut io = BufReader::new(io);
    let served = async {
        let mut preface = [0u8; PREFACE.len()];
        match tokio::time::timeout(PREFACE_TIMEOUT, io.read_exact(&mut preface)).await {
            Ok(Ok(_)) if preface == PREFACE => {}
            Ok(Ok(_)) => return Err(LinkError::Preface),
            Ok(Err(e)) => return Err(e.into()),
            Err(_) => return Err(LinkError::Slow),
        }
        loop {
            let request = match tokio::time::timeout(LINK_IDLE_TIMEOUT, read_frame(&mut io)).await {
                Err(_) => return Err(LinkError::Idle),
                Ok(frame) => match frame? {
                    Some(request) => request,
                    None => return Ok(()),
                },
            };
            let rpc = codec::decode("append entries", &request)?;
            let result = ctx.raft.append_entries(rpc).await;
            if result.as_ref().is_ok_and(|r| r.is_success()) {
                ctx.note_leader_contact();
            }
            let reply = codec::encode("append entries reply", &result)?;
            write_frame(io.get_mut(), &reply).await?;
        }
    };
    tokio::select! {
        biased;
        _ = streams.stopped() => {}
        outcome = served => match outcome {
            Ok(()) => {}
            // The leader went away or gave up on an exchange: routine.
            Err(LinkError::Io(e)) if e.kind() != std::io::ErrorKind::InvalidData => {
                tracing::debug!("AppendEntries link closed: {e}")
            }
            Err(e) => tracing::warn!("AppendEntries link closed: {e}"),
        },
    }
}

/// Why a link was closed by this side.
#[derive(Debug, thiserror::Error)]
enum LinkError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the connection did not start with the AppendEntries link preface (another rosterd version?)")]
    Preface,
    #[error("no preface within {PREFACE_TIMEOUT:?}")]
    Slow,
    #[error("nothing received for {LINK_IDLE_TIMEOUT:?}")]
    Idle,
    #[error("{0}")]
    Codec(#[from] codec::CodecError),
}

#[tonic::async_trait]
impl RaftTransport for TransportService {
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
