//! The simulated network: openraft RPCs delivered in-process to the target
//! node's `Raft`, with seeded delay and loss, directed link cuts
//! (partitions) and crashed nodes.
//!
//! An RPC to a crashed node fails quickly as `Unreachable` (connection
//! refused). A request or reply that is lost or crosses a cut link is never
//! answered: the caller sees a timeout at openraft's own deadline for the
//! RPC, as with a real network. Independent delays reorder messages.

// openraft's `RaftNetwork` fixes the error type (`RPCError`); helpers return
// it as it is, as the server's transport does.
#![allow(clippy::result_large_err)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::BasicNode;
use roster_server::api::NodeContext;
use roster_server::raft::state_machine::StateMachineStore;
use roster_server::raft::{codec, NodeId, Raft, TypeConfig};
use tokio::io::DuplexStream;
use tokio::sync::{mpsc, Notify};
use tokio::task::AbortHandle;
use tokio::time::Instant;

pub use crate::conn::ConnectFate;
use crate::rng::SimRng;
use crate::trace::{self, SharedTrace};

/// Who is at one end of a message or connection: nodes are `1..=n`,
/// clients [`CLIENT_BASE`]` + c`.
pub type PartyId = u64;
/// Party ids of clients start above every node id.
pub const CLIENT_BASE: PartyId = 100;

/// A running node as the network (and the clients) see it.
#[derive(Clone)]
pub struct Endpoint {
    pub incarnation: u64,
    pub raft: Raft,
    pub state: StateMachineStore,
    pub ctx: NodeContext,
    /// Where accepted connections go: the node's tonic server.
    pub incoming: mpsc::UnboundedSender<DuplexStream>,
}

/// One open connection, `from` → node `to`, and its relay.
struct Conn {
    from: PartyId,
    to: PartyId,
    relay: AbortHandle,
}

pub struct NetState {
    rng: SimRng,
    /// Index `id - 1`; `None` while crashed.
    pub nodes: Vec<Option<Endpoint>>,
    /// Directed cut links `(from, to)`, between nodes or a client and a node.
    cut: BTreeSet<(PartyId, PartyId)>,
    /// Paused parties: what they send or are sent waits until they resume.
    paused: BTreeSet<PartyId>,
    conns: Vec<Conn>,
    pub loss: f64,
    /// Chance that a Raft message is delivered a second time, later.
    pub dup: f64,
    pub delay_min_us: u64,
    pub delay_max_us: u64,
    pub delivered: u64,
    pub dropped: u64,
}

#[derive(Clone)]
pub struct Net {
    state: Arc<Mutex<NetState>>,
    /// Wakes whatever waits for a party to resume.
    resumed: Arc<Notify>,
    pub(crate) trace: SharedTrace,
}

enum Fate {
    /// Connection refused after this delay.
    Refused(Duration),
    /// Never answered.
    Lost,
    Deliver(Duration),
}

impl NetState {
    fn delay(&mut self) -> Duration {
        let (lo, hi) = (self.delay_min_us, self.delay_max_us);
        Duration::from_micros(self.rng.range(lo, hi))
    }
}

impl Net {
    pub fn new(nodes: usize, rng: SimRng, trace: SharedTrace) -> Self {
        Self {
            state: Arc::new(Mutex::new(NetState {
                rng,
                nodes: vec![None; nodes],
                cut: BTreeSet::new(),
                paused: BTreeSet::new(),
                conns: Vec::new(),
                loss: 0.0,
                dup: 0.0,
                delay_min_us: 200,
                delay_max_us: 5_000,
                delivered: 0,
                dropped: 0,
            })),
            resumed: Arc::new(Notify::new()),
            trace,
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn register(&self, id: NodeId, endpoint: Option<Endpoint>) {
        self.lock().nodes[(id - 1) as usize] = endpoint;
    }

    pub fn endpoint(&self, id: NodeId) -> Option<Endpoint> {
        self.lock().nodes[(id - 1) as usize].clone()
    }

    /// Cuts every link between the groups `a` and `b`, both ways.
    pub fn split(&self, a: &[NodeId], b: &[NodeId]) {
        let mut s = self.lock();
        for &x in a {
            for &y in b {
                s.cut.insert((x, y));
                s.cut.insert((y, x));
            }
        }
        drop(s);
        self.break_cut_conns();
    }

    pub fn heal(&self) {
        self.lock().cut.clear();
    }

    /// Cuts the link `from` → `to` only (a one-way partition: `to` still
    /// reaches `from`).
    pub fn cut_one_way(&self, from: NodeId, to: NodeId) {
        self.lock().cut.insert((from, to));
        self.break_cut_conns();
    }

    /// If this message is to be duplicated: after how long the copy arrives.
    fn duplicate_after(&self) -> Option<Duration> {
        let mut s = self.lock();
        let dup = s.dup;
        if dup > 0.0 && s.rng.chance(dup) {
            let d = s.delay() * 2;
            return Some(d);
        }
        None
    }

    /// Cuts the links between client party `client` and `nodes`, both ways.
    pub fn cut_client(&self, client: PartyId, nodes: &[NodeId]) {
        let mut s = self.lock();
        for &n in nodes {
            s.cut.insert((client, n));
            s.cut.insert((n, client));
        }
        drop(s);
        self.break_cut_conns();
    }

    /// Closes every connection that crosses a cut link (as TCP connections
    /// across a partition eventually break).
    pub fn break_cut_conns(&self) {
        let mut s = self.lock();
        let cut = s.cut.clone();
        s.conns.retain(|c| {
            let crossing = cut.contains(&(c.from, c.to)) || cut.contains(&(c.to, c.from));
            if crossing {
                c.relay.abort();
            }
            !crossing && !c.relay.is_finished()
        });
    }

    /// Closes every connection from or to `party` (it crashed).
    pub fn break_conns_of(&self, party: PartyId) {
        self.lock().conns.retain(|c| {
            let hit = c.from == party || c.to == party;
            if hit {
                c.relay.abort();
            }
            !hit && !c.relay.is_finished()
        });
    }

    pub fn pause(&self, party: PartyId) {
        self.lock().paused.insert(party);
    }

    pub fn resume(&self, party: PartyId) {
        self.lock().paused.remove(&party);
        self.resumed.notify_waiters();
    }

    pub fn resume_all(&self) {
        self.lock().paused.clear();
        self.resumed.notify_waiters();
    }

    /// Waits while either end is paused.
    pub async fn wait_unpaused(&self, a: PartyId, b: PartyId) {
        loop {
            let resumed = self.resumed.notified();
            {
                let s = self.lock();
                if !s.paused.contains(&a) && !s.paused.contains(&b) {
                    return;
                }
            }
            resumed.await;
        }
    }

    /// What a new connection `from` → node `to` meets.
    pub fn connect_fate(&self, from: PartyId, to: NodeId) -> ConnectFate {
        let mut s = self.lock();
        if s.cut.contains(&(from, to)) || s.cut.contains(&(to, from)) {
            return ConnectFate::Lost;
        }
        let up = to >= 1 && to as usize <= s.nodes.len() && s.nodes[(to - 1) as usize].is_some();
        let d = s.delay();
        if up {
            ConnectFate::Connect(d)
        } else {
            ConnectFate::Refused(d)
        }
    }

    /// The accepting end of node `to`, if it is up and reachable.
    pub fn accept(&self, from: PartyId, to: NodeId) -> Option<mpsc::UnboundedSender<DuplexStream>> {
        let s = self.lock();
        if s.cut.contains(&(from, to)) || s.cut.contains(&(to, from)) {
            return None;
        }
        s.nodes.get((to - 1) as usize)?.as_ref().map(|e| e.incoming.clone())
    }

    pub fn track_conn(&self, from: PartyId, to: NodeId, relay: AbortHandle) {
        self.lock().conns.push(Conn { from, to, relay });
    }

    /// Delay of one chunk on a connection.
    pub fn stream_delay(&self) -> Duration {
        self.lock().delay()
    }

    fn alive(s: &NetState, id: NodeId, incarnation: u64) -> Option<Endpoint> {
        s.nodes[(id - 1) as usize]
            .as_ref()
            .filter(|e| e.incarnation == incarnation)
            .cloned()
    }

    fn current(s: &NetState, id: NodeId) -> Option<Endpoint> {
        s.nodes[(id - 1) as usize].clone()
    }

    /// Decides what happens to a message `from` → `to` sent now.
    fn fate(&self, from: NodeId, from_inc: u64, to: NodeId) -> (Fate, Option<Endpoint>) {
        let mut s = self.lock();
        if Self::alive(&s, from, from_inc).is_none() {
            // The sender crashed: its messages go nowhere.
            return (Fate::Lost, None);
        }
        let Some(target) = Self::current(&s, to) else {
            let d = s.delay();
            return (Fate::Refused(d), None);
        };
        let loss = s.loss;
        if s.cut.contains(&(from, to)) || s.rng.chance(loss) {
            s.dropped += 1;
            return (Fate::Lost, None);
        }
        let d = s.delay();
        (Fate::Deliver(d), Some(target))
    }

    /// Whether a message `from` → `to` still arrives (neither end crashed
    /// since, link not cut since).
    fn arrives(&self, from: NodeId, from_inc: u64, to: NodeId, to_inc: u64) -> bool {
        let mut s = self.lock();
        let ok = Self::alive(&s, from, from_inc).is_some()
            && Self::alive(&s, to, to_inc).is_some()
            && !s.cut.contains(&(from, to));
        if ok {
            s.delivered += 1;
        } else {
            s.dropped += 1;
        }
        ok
    }

    fn reply_delay(&self) -> Option<Duration> {
        let mut s = self.lock();
        let loss = s.loss;
        if s.rng.chance(loss) {
            s.dropped += 1;
            return None;
        }
        Some(s.delay())
    }
}

/// One openraft instance's view of the network.
#[derive(Clone)]
pub struct NetFactory {
    pub net: Net,
    pub from: NodeId,
    pub incarnation: u64,
}

impl RaftNetworkFactory<TypeConfig> for NetFactory {
    type Network = NetClient;

    async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> Self::Network {
        NetClient {
            net: self.net.clone(),
            from: self.from,
            incarnation: self.incarnation,
            target,
        }
    }
}

pub struct NetClient {
    net: Net,
    from: NodeId,
    incarnation: u64,
    target: NodeId,
}

/// A message as the other side would decode it: through the same postcard
/// encoding the real peer transport uses (so an unencodable message, or one
/// that decodes differently, breaks the run here too).
fn wire<T: serde::Serialize + serde::de::DeserializeOwned>(value: &T) -> T {
    let bytes = codec::encode("sim message", value).expect("a Raft message encodes");
    codec::decode("sim message", &bytes).expect("a Raft message decodes")
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

fn timeout_err<T, E: std::error::Error>(what: &str) -> RpcResult<T, E> {
    Err(RPCError::Network(NetworkError::new(&std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        what.to_string(),
    ))))
}

impl NetClient {
    fn who(&self) -> String {
        format!("n{}", self.from)
    }

    /// Now and then the network delivers a message twice: the copy arrives
    /// later (if the target is still up and the link not cut) and its
    /// answer goes nowhere. Raft must not care.
    fn maybe_duplicate<F, Fut>(&self, what: &str, deliver: F)
    where
        F: FnOnce(Endpoint) -> Fut + Send + 'static,
        Fut: std::future::Future + Send + 'static,
    {
        let Some(after) = self.net.duplicate_after() else {
            return;
        };
        let (net, from, incarnation, target) = (self.net.clone(), self.from, self.incarnation, self.target);
        let what = format!("-> n{target} duplicate of {what}");
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(endpoint) = net.endpoint(target) else { return };
            if !net.arrives(from, incarnation, target, endpoint.incarnation) {
                return;
            }
            trace::record(&net.trace, &format!("n{from}"), what);
            let _ = deliver(endpoint).await;
        });
    }

    /// Runs one RPC: request over the network, `deliver` on the target,
    /// reply over the network, all before openraft's deadline.
    async fn rpc<Resp, E, F, Fut>(&self, what: String, ttl: Duration, deliver: F) -> RpcResult<Resp, E>
    where
        E: std::error::Error,
        F: FnOnce(Endpoint) -> Fut,
        Fut: std::future::Future<Output = Result<Resp, RaftError<NodeId, E>>>,
    {
        let deadline = Instant::now() + ttl;
        let (fate, target) = self.net.fate(self.from, self.incarnation, self.target);
        let (delay, target) = match (fate, target) {
            (Fate::Refused(d), _) => {
                tokio::time::sleep(d).await;
                return Err(RPCError::Unreachable(Unreachable::new(&std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    format!("n{} is down", self.target),
                ))));
            }
            (Fate::Deliver(d), Some(target)) => (d, target),
            _ => {
                tokio::time::sleep_until(deadline).await;
                return timeout_err("request lost");
            }
        };
        tokio::time::sleep(delay).await;
        self.net.wait_unpaused(self.from, self.target).await;
        if Instant::now() >= deadline
            || !self
                .net
                .arrives(self.from, self.incarnation, self.target, target.incarnation)
        {
            tokio::time::sleep_until(deadline).await;
            return timeout_err("request lost");
        }
        trace::record(&self.net.trace, &self.who(), format!("-> n{} {what}", self.target));
        let result = match tokio::time::timeout_at(deadline, deliver(target.clone())).await {
            Ok(r) => r,
            Err(_) => return timeout_err("no answer before the deadline"),
        };
        let Some(back) = self.net.reply_delay() else {
            tokio::time::sleep_until(deadline).await;
            return timeout_err("reply lost");
        };
        tokio::time::sleep(back).await;
        self.net.wait_unpaused(self.target, self.from).await;
        if Instant::now() >= deadline
            || !self
                .net
                .arrives(self.target, target.incarnation, self.from, self.incarnation)
        {
            tokio::time::sleep_until(deadline).await;
            return timeout_err("reply lost");
        }
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for NetClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let what = format!(
            "append {} prev={:?} n={} commit={:?}",
            rpc.vote.leader_id.term,
            rpc.prev_log_id.map(|l| l.index),
            rpc.entries.len(),
            rpc.leader_commit.map(|l| l.index)
        );
        self.rpc(what, option.hard_ttl(), |target| async move {
            // What the transport service does on a real node.
            target.ctx.note_leader_contact();
            target.raft.append_entries(rpc).await
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        let what = format!(
            "snapshot {} upto={:?} offset={} len={} done={}",
            rpc.vote.leader_id.term,
            rpc.meta.last_log_id.map(|l| l.index),
            rpc.offset,
            rpc.data.len(),
            rpc.done
        );
        let rpc: InstallSnapshotRequest<TypeConfig> = wire(&rpc);
        let copy = rpc.clone();
        self.maybe_duplicate(&what, |target| async move { target.raft.install_snapshot(copy).await });
        self.rpc(what, option.hard_ttl(), |target| async move {
            target.raft.install_snapshot(rpc).await.map(|r| wire(&r))
        })
        .await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        let what = format!(
            "vote term={} last={:?}",
            rpc.vote.leader_id.term,
            rpc.last_log_id.map(|l| (l.leader_id.term, l.index))
        );
        self.rpc(
            what,
            option.hard_ttl(),
            // What the transport service does on a real node.
            |target| async move { target.ctx.vote(rpc).await },
        )
        .await
    }
}
