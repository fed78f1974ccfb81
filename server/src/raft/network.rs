//! Peer transport: openraft RPCs, write forwarding and read-index requests
//! over the internal `roster.raft.v1.RaftTransport` gRPC service.
//!
//! Payloads are openraft's own message types encoded with postcard; a remote
//! openraft error travels back inside the payload as `Err(..)`, so the caller
//! sees exactly what the remote Raft said.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use roster_env::Dial;
use roster_proto::raft::raft_transport_client::RaftTransportClient;
use roster_proto::raft::RaftPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use super::codec;
use super::{NodeId, TypeConfig};

/// Largest message between peers (snapshot chunks, AppendEntries batches).
pub const MAX_PEER_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// Encoded AppendEntries above this size with more than one entry are split.
const MAX_APPEND_BYTES: usize = 512 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Lazily connected channels to peers, shared by Raft replication and by the
/// API layer's forwarding, keyed by address.
#[derive(Clone, Default)]
pub struct Peers {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// Peers whose RPCs are failing, and when that was last logged.
    failing: Arc<Mutex<HashMap<NodeId, std::time::Instant>>>,
    /// How connections are made: TCP unless the simulator substitutes its
    /// in-memory network.
    dial: Option<Dial>,
}

impl Peers {
    /// Peers reached through `dial` instead of TCP.
    pub fn with_dial(dial: Dial) -> Self {
        Self {
            dial: Some(dial),
            ..Self::default()
        }
    }

    /// A client for the peer at `addr` (`host:port`). Connection happens on
    /// first use and is re-established by tonic after failures.
    pub fn client(&self, addr: &str) -> Result<RaftTransportClient<Channel>, tonic::Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(addr) {
            Some(channel) => channel.clone(),
            None => {
                let endpoint = Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| tonic::Status::invalid_argument(format!("bad peer address {addr}: {e}")))?
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5));
                let channel = roster_env::dial::channel(&endpoint, addr, self.dial.as_ref());
                channels.insert(addr.to_string(), channel.clone());
                channel
            }
        };
        Ok(RaftTransportClient::new(channel)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES))
    }
}

/// How often a peer that keeps failing is logged again.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);

impl Peers {
    /// Logs a failing peer at most once per [`FAILURE_LOG_EVERY`] (openraft
    /// retries every heartbeat; its own per-attempt logs are filtered out by
    /// default), and its recovery once.
    fn note(&self, target: NodeId, addr: &str, failure: Option<&dyn std::fmt::Display>) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        match failure {
            Some(error) => {
                let now = std::time::Instant::now();
                let due = failing
                    .get(&target)
                    .is_none_or(|last| now.duration_since(*last) >= FAILURE_LOG_EVERY);
                if due {
                    failing.insert(target, now);
                    tracing::warn!(peer = target, %addr, "peer unreachable or slow: {error}");
                }
            }
            None => {
                if failing.remove(&target).is_some() {
                    tracing::info!(peer = target, %addr, "peer reachable again");
                }
            }
        }
    }
}

/// Creates one [`PeerNetwork`] per replication target.
#[derive(Clone, Default)]
pub struct NetworkFactory {
    pub peers: Peers,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        PeerNetwork {
            target,
            addr: node.addr.clone(),
            peers: self.peers.clone(),
            appends: None,
        }
    }
}

pub struct PeerNetwork {
    target: NodeId,
    addr: String,
    peers: Peers,
    /// The open AppendEntries stream to this peer, if any. openraft sends
    /// one AppendEntries at a time per target (`&mut self`), so the next
    /// reply on the stream always answers the request just sent. The
    /// stream is taken out for the length of a call and put back only
    /// after a complete exchange: a call that fails, times out or is
    /// dropped closes its stream, and no late reply can ever be read as the
    /// answer to a later request.
    appends: Option<AppendStream>,
}

/// One direction of requests, one of replies, on a single HTTP/2 stream.
struct AppendStream {
    requests: mpsc::Sender<RaftPayload>,
    replies: tonic::Streaming<RaftPayload>,
}

fn encode_request<T: Serialize, E: std::error::Error>(req: &T) -> RpcResult<Vec<u8>, E> {
    codec::encode("raft request", req).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

/// The RPCs sent as unary calls (AppendEntries has its own stream).
#[derive(Clone, Copy)]
enum Rpc {
    Vote,
    InstallSnapshot,
}

impl PeerNetwork {
    async fn call<Req, Resp, E>(&self, rpc: Rpc, req: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = encode_request(req)?;
        self.send(rpc, data, option).await
    }

    async fn send<Resp, E>(&self, rpc: Rpc, data: Vec<u8>, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let mut client = self
            .peers
            .client(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(option.hard_ttl());
        let call = async {
            match rpc {
                Rpc::Vote => client.vote(request).await,
                Rpc::InstallSnapshot => client.install_snapshot(request).await,
            }
            .map(tonic::Response::into_inner)
        };
        let outcome = tokio::time::timeout(option.hard_ttl(), call).await;
        self.answer(outcome)
    }

    /// Sends an encoded AppendEntries on this peer's stream (opened first
    /// if there is none) and reads its reply.
    async fn exchange(&mut self, data: Vec<u8>) -> Result<RaftPayload, tonic::Status> {
        let mut stream = match self.appends.take() {
            Some(stream) => stream,
            None => self.open_appends().await?,
        };
        let closed = || tonic::Status::unavailable("the AppendEntries stream to the peer closed");
        stream.requests.send(RaftPayload { data }).await.map_err(|_| closed())?;
        let reply = stream.replies.message().await?.ok_or_else(closed)?;
        self.appends = Some(stream);
        Ok(reply)
    }

    async fn open_appends(&self) -> Result<AppendStream, tonic::Status> {
        let mut client = self.peers.client(&self.addr)?;
        // One request in flight at a time; see `appends`.
        let (requests, outgoing) = mpsc::channel(1);
        let replies = client
            .append_entries_stream(tokio_stream::wrappers::ReceiverStream::new(outgoing))
            .await?
            .into_inner();
        Ok(AppendStream { requests, replies })
    }

    /// What openraft is told about a call: the transport's outcome mapped
    /// onto its errors (and noted for the failure log), or the remote
    /// Raft's own answer.
    fn answer<Resp, E>(
        &self,
        outcome: Result<Result<RaftPayload, tonic::Status>, tokio::time::error::Elapsed>,
    ) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply = match outcome {
            Err(elapsed) => {
                self.peers.note(
                    self.target,
                    &self.addr,
                    Some(&"no answer within the heartbeat interval"),
                );
                return Err(RPCError::Network(NetworkError::new(&elapsed)));
            }
            Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                self.peers.note(self.target, &self.addr, Some(&status.message()));
                return Err(RPCError::Unreachable(Unreachable::new(&status)));
            }
            Ok(Err(status)) => {
                self.peers.note(self.target, &self.addr, Some(&status.message()));
                return Err(RPCError::Network(NetworkError::new(&status)));
            }
            Ok(Ok(reply)) => {
                self.peers.note(self.target, &self.addr, None);
                reply
            }
        };
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode("raft response", &reply.data).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result
            .map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, BasicNode::new(&self.addr), e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        // openraft gives every AppendEntries one heartbeat interval to
        // complete. A batch of large values would never make it, so ask
        // openraft to split it: it retries with at most `hint` entries.
        let entries = rpc.entries.len() as u64;
        let data = encode_request(&rpc)?;
        if entries > 1 && data.len() > MAX_APPEND_BYTES {
            let hint = (entries * MAX_APPEND_BYTES as u64 / data.len() as u64).max(1);
            return Err(RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(hint)));
        }
        let outcome = tokio::time::timeout(option.hard_ttl(), self.exchange(data)).await;
        self.answer(outcome)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.call(Rpc::InstallSnapshot, &rpc, &option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}
