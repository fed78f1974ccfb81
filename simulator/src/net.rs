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
use roster_server::raft::state_machine::StateMachineStore;
use roster_server::raft::{NodeId, Raft, TypeConfig};
use tokio::time::Instant;

use crate::rng::SimRng;
use crate::trace::{self, SharedTrace};

/// A running node as the network (and the clients) see it.
#[derive(Clone)]
pub struct Endpoint {
    pub incarnation: u64,
    pub raft: Raft,
    pub state: StateMachineStore,
}

pub struct NetState {
    rng: SimRng,
    /// Index `id - 1`; `None` while crashed.
    pub nodes: Vec<Option<Endpoint>>,
    /// Directed cut links `(from, to)`.
    cut: BTreeSet<(NodeId, NodeId)>,
    pub loss: f64,
    pub delay_min_us: u64,
    pub delay_max_us: u64,
    pub delivered: u64,
    pub dropped: u64,
}

#[derive(Clone)]
pub struct Net {
    state: Arc<Mutex<NetState>>,
    trace: SharedTrace,
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
                loss: 0.0,
                delay_min_us: 200,
                delay_max_us: 5_000,
                delivered: 0,
                dropped: 0,
            })),
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
    }

    pub fn heal(&self) {
        self.lock().cut.clear();
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

    /// Runs one RPC: request over the network, `deliver` on the target,
    /// reply over the network, all before openraft's deadline.
    async fn rpc<Resp, E, F, Fut>(&self, what: String, ttl: Duration, deliver: F) -> RpcResult<Resp, E>
    where
        E: std::error::Error,
        F: FnOnce(Raft) -> Fut,
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
        if Instant::now() >= deadline
            || !self
                .net
                .arrives(self.from, self.incarnation, self.target, target.incarnation)
        {
            tokio::time::sleep_until(deadline).await;
            return timeout_err("request lost");
        }
        trace::record(&self.net.trace, &self.who(), format!("-> n{} {what}", self.target));
        let result = match tokio::time::timeout_at(deadline, deliver(target.raft.clone())).await {
            Ok(r) => r,
            Err(_) => return timeout_err("no answer before the deadline"),
        };
        let Some(back) = self.net.reply_delay() else {
            tokio::time::sleep_until(deadline).await;
            return timeout_err("reply lost");
        };
        tokio::time::sleep(back).await;
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
        self.rpc(
            what,
            option.hard_ttl(),
            |raft| async move { raft.append_entries(rpc).await },
        )
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
        self.rpc(what, option.hard_ttl(), |raft| async move {
            raft.install_snapshot(rpc).await
        })
        .await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        let what = format!(
            "vote term={} last={:?}",
            rpc.vote.leader_id.term,
            rpc.last_log_id.map(|l| (l.leader_id.term, l.index))
        );
        self.rpc(what, option.hard_ttl(), |raft| async move { raft.vote(rpc).await })
            .await
    }
}
