//! Peer transport: openraft RPCs, write forwarding and read-index requests.
//! AppendEntries runs on its own framed link ([`super::append_link`]); the
//! rest are calls to the internal `roster.raft.v1.RaftTransport` gRPC
//! service on the same port.
//!
//! Payloads are openraft's own message types encoded with postcard; a remote
//! openraft error travels back inside the payload as `Err(..)`, so the caller
//! sees exactly what the remote Raft said.

use std::collections::HashMap;
use std::io;
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
use tokio::net::TcpStream;
use tonic::transport::{Channel, Endpoint};

use super::append_link::{Link, LinkIo};
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
    /// AppendEntries links not in use, by address, each with when it was
    /// last used (see [`Peers::take_idle_link`]).
    idle_links: Arc<Mutex<HashMap<String, Vec<IdleLink>>>>,
    /// How connections are made: TCP unless the simulator substitutes its
    /// in-memory network.
    dial: Option<Dial>,
}

/// A link not in use, and since when.
type IdleLink = (tokio::time::Instant, Link);

/// Idle AppendEntries links kept per peer. Besides each follower's
/// replication, openraft confirms leadership for every linearizable read
/// with an AppendEntries to each follower from a fresh network client;
/// without reuse, each would open (and leave in `TIME_WAIT`) a connection.
const MAX_IDLE_LINKS: usize = 16;
/// An idle link unused this long is closed rather than reused: well inside
/// the follower's own idle timeout, so a reused link is almost never one
/// the follower has already closed.
const IDLE_LINK_MAX_AGE: Duration = Duration::from_secs(20);

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

    /// The most recently used idle link to `addr` that is still fresh.
    fn take_idle_link(&self, addr: &str) -> Option<Link> {
        let mut idle = self.idle_links.lock().unwrap_or_else(|p| p.into_inner());
        let links = idle.get_mut(addr)?;
        while let Some((since, link)) = links.pop() {
            if since.elapsed() < IDLE_LINK_MAX_AGE {
                return Some(link);
            }
        }
        None
    }

    /// Keeps a link whose last exchange completed, for the next client of
    /// `addr` (closes it if enough are kept already).
    fn park_link(&self, addr: &str, link: Link) {
        let mut idle = self.idle_links.lock().unwrap_or_else(|p| p.into_inner());
        let links = idle.entry(addr.to_string()).or_default();
        links.retain(|(since, _)| since.elapsed() < IDLE_LINK_MAX_AGE);
        if links.len() < MAX_IDLE_LINKS {
            links.push((tokio::time::Instant::now(), link));
        }
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
    /// The open AppendEntries link to this peer, if any. openraft sends one
    /// AppendEntries at a time per target (`&mut self`), so the next reply
    /// on the link always answers the request just sent. The link is taken
    /// out for the length of a call and put back only after a complete
    /// exchange: a call that fails, times out or is dropped closes its
    /// link, and no late reply can ever be read as the answer to a later
    /// request. A client dropped between calls leaves its link to the next
    /// client of the peer ([`Peers::park_link`]).
    appends: Option<Link>,
}

fn encode_request<T: Serialize, E: std::error::Error>(req: &T) -> RpcResult<Vec<u8>, E> {
    codec::encode("raft request", req).map_err(|e| RPCError::Network(NetworkError::new(&e)))
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

/// The RPCs sent as unary gRPC calls (AppendEntries has its own link).
#[derive(Clone, Copy)]
enum Rpc {
    Vote,
    InstallSnapshot,
}

/// Why an AppendEntries exchange failed: whether the link could not be
/// made at all (openraft then backs off), or broke once made.
struct LinkFailure {
    connecting: bool,
    error: io::Error,
}

impl PeerNetwork {
    async fn call<Req, Resp, E>(&self, rpc: Rpc, req: &Req, option: &RPCOption) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let data = encode_request(req)?;
        let mut client = self.peers.client(&self.addr).map_err(|e| self.failed(true, &e))?;
        let mut request = tonic::Request::new(RaftPayload { data });
        request.set_timeout(option.hard_ttl());
        let call = async {
            match rpc {
                Rpc::Vote => client.vote(request).await,
                Rpc::InstallSnapshot => client.install_snapshot(request).await,
            }
            .map(tonic::Response::into_inner)
        };
        match tokio::time::timeout(option.hard_ttl(), call).await {
            Err(elapsed) => Err(self.timed_out(elapsed)),
            Ok(Err(status)) => Err(self.failed(status.code() == tonic::Code::Unavailable, &status)),
            Ok(Ok(reply)) => self.answer(&reply.data),
        }
    }

    /// Sends an encoded AppendEntries on this peer's link (an idle one
    /// reused, or a new one, if this client has none) and reads its reply.
    async fn exchange(&mut self, request: &[u8]) -> Result<Vec<u8>, LinkFailure> {
        let connecting = |error| LinkFailure {
            connecting: true,
            error,
        };
        let broken = |error| LinkFailure {
            connecting: false,
            error,
        };
        let (mut link, reused) = match self.appends.take() {
            Some(link) => (link, true),
            None => match self.peers.take_idle_link(&self.addr) {
                Some(link) => (link, true),
                None => (self.open_link().await.map_err(connecting)?, false),
            },
        };
        let reply = match link.exchange(request).await {
            Ok(reply) => reply,
            // The peer may have closed a link made earlier (it restarted,
            // or timed the link out). AppendEntries is idempotent: send it
            // once more on a new link (the old one, and any reply still to
            // come on it, is dropped).
            Err(_) if reused => {
                link = self.open_link().await.map_err(connecting)?;
                link.exchange(request).await.map_err(broken)?
            }
            Err(error) => return Err(broken(error)),
        };
        self.appends = Some(link);
        Ok(reply)
    }

    async fn open_link(&self) -> io::Result<Link> {
        let io: Box<dyn LinkIo> = match &self.peers.dial {
            Some(dial) => Box::new(dial.dial(&self.addr).await?),
            None => {
                let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(self.addr.as_str()))
                    .await
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connecting timed out"))??;
                stream.set_nodelay(true)?;
                Box::new(stream)
            }
        };
        Link::open(io).await
    }

    /// What openraft is told when no answer came in time (noted for the
    /// failure log).
    fn timed_out<E: std::error::Error>(&self, elapsed: tokio::time::error::Elapsed) -> RPCError<NodeId, BasicNode, E> {
        self.peers.note(
            self.target,
            &self.addr,
            Some(&"no answer within the heartbeat interval"),
        );
        RPCError::Network(NetworkError::new(&elapsed))
    }

    /// What openraft is told when a call failed in the transport (noted
    /// for the failure log): `Unreachable` makes it back off before the
    /// next attempt, a `Network` error retries at the next heartbeat.
    fn failed<E, F>(&self, unreachable: bool, failure: &F) -> RPCError<NodeId, BasicNode, E>
    where
        E: std::error::Error,
        F: std::error::Error + 'static,
    {
        self.peers.note(self.target, &self.addr, Some(failure));
        if unreachable {
            RPCError::Unreachable(Unreachable::new(failure))
        } else {
            RPCError::Network(NetworkError::new(failure))
        }
    }

    /// The remote Raft's own answer, decoded.
    fn answer<Resp, E>(&self, reply: &[u8]) -> RpcResult<Resp, E>
    where
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        self.peers.note(self.target, &self.addr, None);
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode("raft response", reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result
            .map_err(|e| RPCError::RemoteError(RemoteError::new_with_node(self.target, BasicNode::new(&self.addr), e)))
    }
}

impl Drop for PeerNetwork {
    fn drop(&mut self) {
        if let Some(link) = self.appends.take() {
            self.peers.park_link(&self.addr, link);
        }
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
        match tokio::time::timeout(option.hard_ttl(), self.exchange(&data)).await {
            Err(elapsed) => Err(self.timed_out(elapsed)),
            Ok(Err(LinkFailure { connecting, error })) => Err(self.failed(connecting, &error)),
            Ok(Ok(reply)) => self.answer(&reply),
        }
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use openraft::Vote;
    use roster_env::dial::{Dialer, Dialing};

    use super::super::append_link::{read_frame, write_frame, PREFACE};
    use super::*;

    /// Dials an in-memory follower that answers every AppendEntries with
    /// success, and closes a connection after `answers_per_link` replies.
    struct Follower {
        dials: Arc<AtomicUsize>,
        answers_per_link: usize,
    }

    impl Dialer for Follower {
        fn dial(&self, _addr: &str) -> Dialing {
            self.dials.fetch_add(1, Ordering::SeqCst);
            let (near, mut far) = tokio::io::duplex(4096);
            let answers = self.answers_per_link;
            tokio::spawn(async move {
                let mut preface = [0u8; PREFACE.len()];
                tokio::io::AsyncReadExt::read_exact(&mut far, &mut preface)
                    .await
                    .unwrap();
                assert_eq!(preface, PREFACE);
                for _ in 0..answers {
                    let Ok(Some(_request)) = read_frame(&mut far).await else {
                        return;
                    };
                    let reply: Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>> =
                        Ok(AppendEntriesResponse::Success);
                    write_frame(&mut far, &codec::encode("reply", &reply).unwrap())
                        .await
                        .unwrap();
                }
            });
            Box::pin(async move { Ok(near) })
        }
    }

    /// A network to one in-memory [`Follower`], and its count of dials.
    fn follower(answers_per_link: usize) -> (Arc<AtomicUsize>, NetworkFactory) {
        let dials = Arc::new(AtomicUsize::new(0));
        let dialer = Follower {
            dials: dials.clone(),
            answers_per_link,
        };
        let factory = NetworkFactory {
            peers: Peers::with_dial(Dial::new(dialer)),
        };
        (dials, factory)
    }

    fn heartbeat() -> AppendEntriesRequest<TypeConfig> {
        AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: None,
            leader_commit: None,
            entries: vec![],
        }
    }

    async fn send(factory: &mut NetworkFactory) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let mut client = factory.new_client(2, &BasicNode::new("follower:1")).await;
        client
            .append_entries(heartbeat(), RPCOption::new(Duration::from_secs(5)))
            .await
    }

    #[tokio::test(start_paused = true)]
    async fn links_of_dropped_clients_are_reused_while_fresh_and_replaced_when_closed() {
        let (dials, mut factory) = follower(3);
        // Clients made for one call each (as openraft's leadership checks
        // are) share one link.
        for _ in 0..3 {
            assert!(matches!(send(&mut factory).await, Ok(AppendEntriesResponse::Success)));
        }
        assert_eq!(dials.load(Ordering::SeqCst), 1, "the idle link was not reused");

        // The follower closed that link after its third answer: the next
        // call finds it closed, and sends again on a new link.
        assert!(matches!(send(&mut factory).await, Ok(AppendEntriesResponse::Success)));
        assert_eq!(dials.load(Ordering::SeqCst), 2, "a closed idle link was not replaced");

        // An idle link past its age is not reused.
        tokio::time::advance(IDLE_LINK_MAX_AGE).await;
        assert!(matches!(send(&mut factory).await, Ok(AppendEntriesResponse::Success)));
        assert_eq!(dials.load(Ordering::SeqCst), 3, "a stale idle link was reused");
    }

    #[tokio::test]
    async fn a_failed_exchange_on_a_new_link_is_not_retried() {
        let (dials, mut factory) = follower(0);
        let err = send(&mut factory).await.expect_err("the follower never answers");
        assert!(matches!(err, RPCError::Network(_)), "{err}");
        assert_eq!(dials.load(Ordering::SeqCst), 1);
    }
}
