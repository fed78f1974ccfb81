//! One simulated run: a cluster of real openraft nodes running Roster's
//! state machine, a client workload, a fault schedule, and the checkers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use roster_server::raft::state_machine::StateMachineStore;
use roster_server::raft::{codec, seed_thread_rng, Entry, NodeId, Raft, RaftMetrics, RaftTiming};
use roster_server::state::{Command, Op, PutOp, RangeOp, RequestId, Response};
use tokio::time::Instant;

use roster_env::{Clock, Dial};
use roster_server::api::common::{StreamLimit, Streams};
use roster_server::api::NodeContext;
use roster_server::node::grpc_router;
use roster_server::raft::network::Peers;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use crate::conn::SimDialer;
use crate::disk::SimDisk;
use crate::net::{Endpoint, Net, NetFactory};
use crate::rng::SimRng;
use crate::trace::{self, fnv1a_new, SharedTrace, Trace};

/// Leader clock at simulated time 0 (what `Command::stamp_ms` counts from).
const EPOCH_MS: u64 = 1_700_000_000_000;
/// Longest a request waits for Raft on a node (rosterd's default).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The address node `id` advertises: what clients dial and what Raft's
/// membership records.
pub fn node_addr(id: NodeId) -> String {
    format!("n{id}:7401")
}

/// How long a client waits for one operation.
const OP_TIMEOUT: Duration = Duration::from_secs(3);
/// After the faults heal: how long the cluster may take to converge.
const HEAL_BOUND: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: usize,
    /// Simulated time of the workload and faults (the heal phase follows).
    pub duration: Duration,
    pub clients: usize,
    pub faults: bool,
    /// Keep every trace line (for `--trace`).
    pub keep_trace: bool,
    /// A bug planted on purpose, to prove the checkers catch it.
    pub bug: Option<Bug>,
}

/// Bugs the simulator can plant, to show that the checkers catch them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The disk reports log appends durable, and saves votes and commit
    /// markers, before syncing them: a crash then loses acknowledged state.
    AckBeforeSync,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            nodes: 3,
            duration: Duration::from_secs(60),
            clients: 3,
            faults: true,
            keep_trace: false,
            bug: None,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub writes_acked: u64,
    pub writes_failed: u64,
    pub reads_ok: u64,
    pub reads_failed: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub max_term: u64,
    pub last_index: u64,
    pub messages_delivered: u64,
    pub messages_dropped: u64,
}

#[derive(Clone, Debug)]
pub struct Violation {
    pub rule: &'static str,
    pub detail: String,
}

#[derive(Debug)]
pub struct SimReport {
    pub seed: u64,
    pub hash: u64,
    pub trace_lines: u64,
    pub simulated: Duration,
    pub wall: Duration,
    pub violations: Vec<Violation>,
    /// Checkers that ran, for the report.
    pub checked: Vec<&'static str>,
    pub stats: Stats,
    /// The last trace lines: up to the first violation if any, else of the run.
    pub tail: Vec<String>,
    pub full_trace: Option<Vec<String>>,
    /// Every completed client operation.
    pub history: Vec<HistoryOp>,
}

pub const RULES: [&str; 6] = [
    "one-leader-per-term",
    "committed-entries-stable",
    "acked-writes-durable",
    "reads-not-stale",
    "replicas-converge",
    "liveness-after-heal",
];

/// One completed client operation (the history a linearizability checker
/// will consume).
#[derive(Clone, Debug)]
pub struct HistoryOp {
    pub client: u64,
    pub invoked_ms: u64,
    pub completed_ms: u64,
    pub key: Vec<u8>,
    /// `Some(value)` for a write.
    pub write: Option<Vec<u8>>,
    /// Revision of the write, or mod revision and value read (`None`: absent).
    pub result: Result<(u64, Option<Vec<u8>>), String>,
}

/// What the checkers have seen so far.
#[derive(Default)]
struct Checker {
    /// term → the node that led it.
    leaders: BTreeMap<u64, NodeId>,
    /// log index → (term, payload fingerprint) of the entry applied there.
    committed: BTreeMap<u64, (u64, u64)>,
    /// key → highest revision of an acknowledged write to it.
    acked_rev: BTreeMap<Vec<u8>, u64>,
    /// Acknowledged writes: key, value, revision.
    acked: Vec<(Vec<u8>, Vec<u8>, u64)>,
    history: Vec<HistoryOp>,
    violations: Vec<Violation>,
    /// The trace tail when the first violation was found.
    first_violation_tail: Vec<String>,
    stats: Stats,
}

struct Shared {
    trace: SharedTrace,
    checker: Mutex<Checker>,
    net: Net,
    stop_clients: AtomicBool,
}

impl Shared {
    fn checker(&self) -> MutexGuard<'_, Checker> {
        self.checker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, who: &str, event: impl AsRef<str>) {
        trace::record(&self.trace, who, event);
    }

    /// Clock drift of node `id` in this run (0 until drift is simulated).
    fn drift_ppm(&self, _id: NodeId) -> i64 {
        0
    }

    fn now_ms(&self) -> u64 {
        self.trace.lock().unwrap_or_else(|p| p.into_inner()).now_ms()
    }

    fn violate(&self, rule: &'static str, detail: String) {
        self.record("CHK", format!("VIOLATION {rule}: {detail}"));
        let mut c = self.checker();
        if c.violations.is_empty() {
            // The events leading to the first violation.
            c.first_violation_tail = self.trace.lock().unwrap_or_else(|p| p.into_inner()).tail();
        }
        c.violations.push(Violation { rule, detail });
    }
}

/// Runs one seed on a fresh single-threaded runtime with paused time and
/// seeded scheduler randomness.
pub fn run(cfg: &SimConfig) -> SimReport {
    let wall = std::time::Instant::now();
    let mut seed_bytes = [0u8; 16];
    seed_bytes[..8].copy_from_slice(&cfg.seed.to_le_bytes());
    seed_bytes[8..].copy_from_slice(&(cfg.nodes as u64).to_le_bytes());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .rng_seed(tokio::runtime::RngSeed::from_bytes(&seed_bytes))
        .build()
        .expect("building the simulation runtime");
    // openraft's election jitter, drawn on this thread.
    seed_thread_rng(Some(SimRng::derive(cfg.seed, 0xe1ec).next_u64()));
    let mut report = rt.block_on(run_cluster(cfg.clone()));
    drop(rt);
    seed_thread_rng(None);
    report.wall = wall.elapsed();
    report
}

struct Cluster {
    cfg: SimConfig,
    timing: RaftTiming,
    raft_config: Arc<openraft::Config>,
    /// Stops each running node's gRPC server.
    stops: Mutex<Vec<Option<watch::Sender<bool>>>>,
    disks: Vec<SimDisk>,
    shared: Arc<Shared>,
}

impl Cluster {
    fn ids(&self) -> Vec<NodeId> {
        (1..=self.cfg.nodes as NodeId).collect()
    }

    /// A fresh local clock for a node (re)starting now: a process restart
    /// reads a new monotonic clock, with this run's drift for the node.
    fn node_clock(&self, id: NodeId) -> Clock {
        let ppm = self.shared.drift_ppm(id);
        Clock::drifting(ppm, EPOCH_MS + self.shared.now_ms())
    }

    /// Starts node `id` on what its disk holds now.
    async fn start(&self, id: NodeId) {
        let disk = &self.disks[(id - 1) as usize];
        let incarnation = disk.incarnation();
        let (log, snapshots) = disk.open();
        let state = StateMachineStore::with_snapshot_store(Arc::new(snapshots)).expect("restoring the snapshot");
        let network = NetFactory {
            net: self.shared.net.clone(),
            from: id,
            incarnation,
        };
        let raft = Raft::new(id, self.raft_config.clone(), network, log, state.clone())
            .await
            .expect("starting raft");
        // The API layer exactly as rosterd builds it, on a drifting clock,
        // forwarding through the simulated network.
        let dial = Dial::new(SimDialer {
            net: self.shared.net.clone(),
            from: id,
        });
        let ctx = NodeContext::new(
            id,
            node_addr(id),
            "sim".into(),
            raft.clone(),
            state.clone(),
            Peers::with_dial(dial),
            REQUEST_TIMEOUT,
            self.timing.election_max,
            Arc::new(AtomicU64::new(0)),
        )
        .with_clock(self.node_clock(id));
        let (incoming, accepted) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(false);
        let streams = Streams::new(StreamLimit::default(), stopped.clone());
        let router = grpc_router(&ctx, streams);
        tokio::spawn(async move {
            let accepted = UnboundedReceiverStream::new(accepted).map(Ok::<_, std::io::Error>);
            let mut stopped = stopped;
            let _ = router
                .serve_with_incoming_shutdown(accepted, async move {
                    let _ = stopped.wait_for(|s| *s).await;
                })
                .await;
        });
        self.stops.lock().unwrap_or_else(|p| p.into_inner())[(id - 1) as usize] = Some(stop);
        self.shared.net.register(
            id,
            Some(Endpoint {
                incarnation,
                raft: raft.clone(),
                state,
                ctx,
                incoming,
            }),
        );
        self.shared
            .record(&format!("n{id}"), format!("start incarnation={incarnation}"));
        tokio::spawn(monitor(self.shared.clone(), disk.clone(), id, incarnation, raft));
    }

    /// Power loss: the node stops at once, unsynced writes (mostly) lost.
    fn crash(&self, id: NodeId) {
        let Some(endpoint) = self.shared.net.endpoint(id) else {
            return;
        };
        self.shared.net.register(id, None);
        self.shared.net.break_conns_of(id);
        if let Some(stop) = self.stops.lock().unwrap_or_else(|p| p.into_inner())[(id - 1) as usize].take() {
            let _ = stop.send(true);
        }
        let report = self.disks[(id - 1) as usize].crash();
        self.shared.checker().stats.crashes += 1;
        self.shared.record(
            "FLT",
            format!(
                "crash n{id}: kept {} of {} unsynced writes",
                report.kept, report.unsynced
            ),
        );
        // Its writes are discarded and its messages go nowhere; stop its tasks.
        tokio::spawn(async move {
            let _ = tokio::time::timeout(Duration::from_secs(10), endpoint.raft.shutdown()).await;
        });
    }
}

/// Follows one node incarnation's metrics: role changes into the trace,
/// and the leader and committed-entry checkers.
async fn monitor(shared: Arc<Shared>, disk: SimDisk, id: NodeId, incarnation: u64, raft: Raft) {
    let who = format!("n{id}");
    let mut rx = raft.metrics();
    let mut last_role: Option<(ServerState, u64, Option<NodeId>)> = None;
    let mut applied_seen: Option<u64> = None;
    loop {
        if disk.incarnation() != incarnation {
            return;
        }
        let m: RaftMetrics = rx.borrow_and_update().clone();
        let role = (m.state, m.current_term, m.current_leader);
        if last_role != Some(role) {
            shared.record(
                &who,
                format!("{:?} term={} leader={:?}", m.state, m.current_term, m.current_leader),
            );
            last_role = Some(role);
        }
        let mut led = Vec::new();
        if m.vote.committed {
            if let Some(leader) = m.vote.leader_id.voted_for {
                led.push((m.vote.leader_id.term, leader));
            }
        }
        if m.state == ServerState::Leader {
            led.push((m.current_term, id));
        }
        for (term, leader) in led {
            let previous = {
                let mut c = shared.checker();
                c.stats.max_term = c.stats.max_term.max(term);
                *c.leaders.entry(term).or_insert(leader)
            };
            if previous != leader {
                shared.violate(
                    "one-leader-per-term",
                    format!("term {term} led by n{previous} and n{leader} (seen by {who})"),
                );
            }
        }
        if let Some(applied) = m.last_applied {
            // The state machine's starting point (a restored snapshot) was
            // checked when it was first applied.
            let from = match applied_seen {
                Some(seen) => seen + 1,
                None => m.snapshot.map(|s| s.index + 1).unwrap_or(0),
            };
            if applied.index >= from {
                for entry in disk.live_entries(from, applied.index) {
                    check_committed(&shared, &who, &entry);
                }
                shared.record(&who, format!("applied {}-{}", applied.leader_id.term, applied.index));
            }
            applied_seen = Some(applied.index);
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

fn check_committed(shared: &Shared, who: &str, entry: &Entry) {
    let fp = fnv1a_new(&codec::encode("entry", &entry.payload).unwrap_or_default());
    let this = (entry.log_id.leader_id.term, fp);
    let previous = {
        let mut c = shared.checker();
        c.stats.last_index = c.stats.last_index.max(entry.log_id.index);
        *c.committed.entry(entry.log_id.index).or_insert(this)
    };
    if previous != this {
        shared.violate(
            "committed-entries-stable",
            format!(
                "index {}: applied as term {} (payload {:016x}) earlier, now {} applies term {} (payload {:016x})",
                entry.log_id.index, previous.0, previous.1, who, this.0, this.1
            ),
        );
    }
}

/// The node that believes it leads with the highest term, if any.
fn find_leader(net: &Net) -> Option<(NodeId, Endpoint)> {
    let s = net.lock();
    let mut best: Option<(u64, NodeId, Endpoint)> = None;
    for (i, e) in s.nodes.iter().enumerate() {
        let Some(e) = e else { continue };
        let m = e.raft.metrics().borrow().clone();
        if m.state == ServerState::Leader && best.as_ref().is_none_or(|b| m.current_term > b.0) {
            best = Some((m.current_term, i as NodeId + 1, e.clone()));
        }
    }
    best.map(|(_, id, e)| (id, e))
}

async fn client(shared: Arc<Shared>, client_id: u64, mut rng: SimRng) {
    let who = format!("c{client_id}");
    let mut sequence = 0u64;
    while !shared.stop_clients.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.range(10, 300))).await;
        let Some((leader, endpoint)) = find_leader(&shared.net) else {
            continue;
        };
        let invoked_ms = shared.now_ms();
        if rng.chance(0.7) {
            sequence += 1;
            let key = if rng.chance(0.3) {
                format!("u/{client_id}/{sequence}")
            } else {
                format!("k{}", rng.below(8))
            }
            .into_bytes();
            let value = format!("c{client_id}:{sequence}").into_bytes();
            let command = Command {
                request_id: Some(RequestId { client_id, sequence }),
                stamp_ms: EPOCH_MS + invoked_ms,
                op: Op::Put(PutOp {
                    key: key.clone(),
                    value: value.clone(),
                    prev_kv: false,
                    lease: 0,
                    fence: None,
                }),
            };
            let result = tokio::time::timeout(OP_TIMEOUT, endpoint.raft.client_write(command)).await;
            let result = match result {
                Ok(Ok(resp)) => match resp.data {
                    Response::Put(put) => Ok((put.revision, resp.log_id.index)),
                    other => Err(format!("unexpected answer {other:?}")),
                },
                Ok(Err(e)) => Err(short(&e.to_string())),
                Err(_) => Err("timeout".to_string()),
            };
            let k = String::from_utf8_lossy(&key).to_string();
            let v = String::from_utf8_lossy(&value).to_string();
            let completed_ms = shared.now_ms();
            match &result {
                Ok((rev, index)) => {
                    shared.record(&who, format!("put {k}={v} via n{leader} -> ok rev={rev} index={index}"));
                    let mut c = shared.checker();
                    c.stats.writes_acked += 1;
                    let max = c.acked_rev.entry(key.clone()).or_default();
                    *max = (*max).max(*rev);
                    c.acked.push((key.clone(), value.clone(), *rev));
                }
                Err(e) => {
                    shared.record(&who, format!("put {k}={v} via n{leader} -> failed: {e}"));
                    shared.checker().stats.writes_failed += 1;
                }
            }
            shared.checker().history.push(HistoryOp {
                client: client_id,
                invoked_ms,
                completed_ms,
                key,
                write: Some(value),
                result: result.map(|(rev, _)| (rev, None)),
            });
        } else {
            let key = format!("k{}", rng.below(8)).into_bytes();
            let k = String::from_utf8_lossy(&key).to_string();
            // Every write acknowledged before the read began must be visible.
            let floor = shared.checker().acked_rev.get(&key).copied().unwrap_or(0);
            let result = match tokio::time::timeout(OP_TIMEOUT, endpoint.raft.ensure_linearizable()).await {
                Ok(Ok(_)) => {
                    let applied = endpoint.state.read();
                    let r = applied.state.range(&RangeOp {
                        key: key.clone(),
                        prefix: false,
                        limit: 0,
                        keys_only: false,
                        count_only: false,
                    });
                    let found = r.kvs.first().map(|kv| (kv.mod_revision, kv.value.clone()));
                    Ok(found)
                }
                Ok(Err(e)) => Err(short(&e.to_string())),
                Err(_) => Err("timeout".to_string()),
            };
            let completed_ms = shared.now_ms();
            match &result {
                Ok(found) => {
                    let (rev, value) = match found {
                        Some((rev, v)) => (*rev, String::from_utf8_lossy(v).to_string()),
                        None => (0, "<absent>".to_string()),
                    };
                    shared.record(&who, format!("get {k} via n{leader} -> {value} rev={rev}"));
                    shared.checker().stats.reads_ok += 1;
                    if rev < floor {
                        shared.violate(
                            "reads-not-stale",
                            format!("{who} read {k} at rev {rev} via n{leader}, but a write at rev {floor} was acknowledged before the read began"),
                        );
                    }
                }
                Err(e) => {
                    shared.record(&who, format!("get {k} via n{leader} -> failed: {e}"));
                    shared.checker().stats.reads_failed += 1;
                }
            }
            shared.checker().history.push(HistoryOp {
                client: client_id,
                invoked_ms,
                completed_ms,
                key,
                write: None,
                result: result.map(|f| match f {
                    Some((rev, v)) => (rev, Some(v)),
                    None => (0, None),
                }),
            });
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

async fn run_cluster(cfg: SimConfig) -> SimReport {
    let trace: SharedTrace = Arc::new(Mutex::new(Trace::new(60, cfg.keep_trace)));
    let start = Instant::now();
    let timing = RaftTiming {
        // Small enough that runs build, send and install snapshots.
        snapshot_every: 300,
        keep_after_snapshot: 50,
        ..RaftTiming::default()
    };
    let raft_config = Arc::new(timing.openraft_config("sim").expect("raft config"));
    let shared = Arc::new(Shared {
        trace: trace.clone(),
        checker: Mutex::new(Checker::default()),
        net: Net::new(cfg.nodes, SimRng::derive(cfg.seed, 0x4e37), trace.clone()),
        stop_clients: AtomicBool::new(false),
    });
    // How slow this run's disks are: the slower, the wider the window in
    // which a crash loses unsynced writes.
    let sync_max_us = [1_000, 5_000, 20_000][SimRng::derive(cfg.seed, 0x5c).below(3) as usize];
    let cluster = Cluster {
        disks: (1..=cfg.nodes as u64)
            .map(|id| {
                SimDisk::new(
                    SimRng::derive(cfg.seed, 0xd15c + id),
                    sync_max_us,
                    cfg.bug == Some(Bug::AckBeforeSync),
                )
            })
            .collect(),
        cfg: cfg.clone(),
        timing: timing.clone(),
        raft_config,
        stops: Mutex::new(vec![None; cfg.nodes]),
        shared: shared.clone(),
    };
    shared.record(
        "SIM",
        format!(
            "seed={} nodes={} duration={:?} clients={} faults={} fsync<={}us bug={:?}",
            cfg.seed, cfg.nodes, cfg.duration, cfg.clients, cfg.faults, sync_max_us, cfg.bug
        ),
    );
    for id in cluster.ids() {
        cluster.start(id).await;
    }
    // As rosterd: every member bootstraps with the same members; the ones
    // reached by another's first are refused harmlessly.
    let members: BTreeMap<NodeId, BasicNode> = cluster
        .ids()
        .into_iter()
        .map(|id| (id, BasicNode::new(node_addr(id))))
        .collect();
    for id in cluster.ids() {
        if let Some(e) = shared.net.endpoint(id) {
            match e.raft.initialize(members.clone()).await {
                Ok(()) | Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
                Err(e) => panic!("initialize: {e}"),
            }
        }
    }

    let clients: Vec<_> = (1..=cfg.clients as u64)
        .map(|c| tokio::spawn(client(shared.clone(), c, SimRng::derive(cfg.seed, 0xc1 + c))))
        .collect();

    // The fault schedule.
    let mut rng = SimRng::derive(cfg.seed, 0xfa17);
    let end = start + cfg.duration;
    let max_down = (cfg.nodes - 1) / 2;
    let mut restarts: BTreeMap<Instant, Vec<NodeId>> = BTreeMap::new();
    let mut next_fault = start + Duration::from_millis(rng.range(1_000, 4_000));
    loop {
        let next_restart = restarts.keys().next().copied();
        let wake = next_restart.map_or(next_fault, |r| r.min(next_fault)).min(end);
        tokio::time::sleep_until(wake).await;
        if Instant::now() >= end {
            break;
        }
        if let Some(at) = next_restart.filter(|r| *r <= Instant::now()) {
            for id in restarts.remove(&at).unwrap_or_default() {
                cluster.start(id).await;
            }
            continue;
        }
        next_fault = Instant::now() + Duration::from_millis(rng.range(500, 4_000));
        if !cfg.faults {
            continue;
        }
        let down: BTreeSet<NodeId> = restarts.values().flatten().copied().collect();
        let ids = cluster.ids();
        match rng.below(7) {
            6 if down.is_empty() => {
                // Power loss of the whole cluster, mostly right after a
                // client got an acknowledgment: the moment at which anything
                // acknowledged but not yet durable would be lost.
                if rng.chance(0.8) {
                    let until = Instant::now() + Duration::from_millis(1_000);
                    let acked = shared.checker().stats.writes_acked;
                    while shared.checker().stats.writes_acked == acked && Instant::now() < until {
                        tokio::time::sleep(Duration::from_micros(rng.range(20, 300))).await;
                    }
                }
                shared.record("FLT", "power loss: every node");
                let back = Instant::now() + Duration::from_millis(rng.range(200, 3_000));
                for id in ids {
                    cluster.crash(id);
                    restarts.entry(back).or_default().push(id);
                }
            }
            0 | 1 if down.len() < max_down => {
                let up: Vec<NodeId> = ids.iter().copied().filter(|i| !down.contains(i)).collect();
                // Prefer the leader now and then: that is where it hurts.
                let victim = match find_leader(&shared.net) {
                    Some((leader, _)) if rng.chance(0.5) => leader,
                    _ => up[rng.below(up.len() as u64) as usize],
                };
                // Mostly crash in the middle of a write: wait (briefly)
                // until the victim has unsynced writes.
                if rng.chance(0.7) {
                    let disk = &cluster.disks[(victim - 1) as usize];
                    let until = Instant::now() + Duration::from_millis(300);
                    while disk.unsynced() == 0 && Instant::now() < until {
                        tokio::time::sleep(Duration::from_micros(rng.range(50, 500))).await;
                    }
                }
                cluster.crash(victim);
                let back = Instant::now() + Duration::from_millis(rng.range(200, 6_000));
                restarts.entry(back).or_default().push(victim);
            }
            2 => {
                let victim = match find_leader(&shared.net) {
                    Some((leader, _)) if rng.chance(0.5) => leader,
                    _ => ids[rng.below(ids.len() as u64) as usize],
                };
                let rest: Vec<NodeId> = ids.iter().copied().filter(|i| *i != victim).collect();
                shared.net.heal();
                shared.net.split(&[victim], &rest);
                shared.checker().stats.partitions += 1;
                shared.record("FLT", format!("isolate n{victim}"));
            }
            3 => {
                let mut shuffled = ids.clone();
                for i in (1..shuffled.len()).rev() {
                    let j = rng.below(i as u64 + 1) as usize;
                    shuffled.swap(i, j);
                }
                let cut = rng.range(1, shuffled.len() as u64 - 1) as usize;
                let (a, b) = shuffled.split_at(cut);
                shared.net.heal();
                shared.net.split(a, b);
                shared.checker().stats.partitions += 1;
                shared.record("FLT", format!("split {a:?} | {b:?}"));
            }
            4 => {
                shared.net.heal();
                shared.record("FLT", "heal links");
            }
            _ => {
                let loss = [0.0, 0.0, 0.01, 0.05, 0.2][rng.below(5) as usize];
                let max_us = [2_000, 5_000, 20_000, 80_000][rng.below(4) as usize];
                {
                    let mut n = shared.net.lock();
                    n.loss = loss;
                    n.delay_max_us = max_us;
                }
                shared.record("FLT", format!("loss={loss} delay=0.2..{}ms", max_us / 1000));
            }
        }
    }

    // Heal: links, loss, crashed nodes; then the clients stop.
    shared.net.heal();
    {
        let mut n = shared.net.lock();
        n.loss = 0.0;
        n.delay_max_us = 5_000;
    }
    shared.record("FLT", "heal everything");
    for id in restarts.into_values().flatten() {
        cluster.start(id).await;
    }
    shared.stop_clients.store(true, Ordering::Relaxed);
    for c in clients {
        let _ = c.await;
    }
    let converged = converge(&cluster).await;
    if converged {
        final_checks(&cluster);
    } else {
        shared.violate(
            "liveness-after-heal",
            format!("no leader with every node caught up within {HEAL_BOUND:?} after the faults healed"),
        );
    }

    let simulated = start.elapsed();
    let mut t = trace.lock().unwrap_or_else(|p| p.into_inner());
    t.record("SIM", "end");
    let mut c = shared.checker();
    {
        let n = shared.net.lock();
        c.stats.messages_delivered = n.delivered;
        c.stats.messages_dropped = n.dropped;
    }
    SimReport {
        seed: cfg.seed,
        hash: t.hash(),
        trace_lines: t.lines(),
        simulated,
        wall: Duration::ZERO,
        violations: c.violations.clone(),
        checked: RULES.to_vec(),
        stats: c.stats.clone(),
        tail: if c.violations.is_empty() {
            t.tail()
        } else {
            std::mem::take(&mut c.first_violation_tail)
        },
        full_trace: t.take_full(),
        history: std::mem::take(&mut c.history),
    }
}

/// Waits until a leader commits a marker write and every node applied it.
async fn converge(cluster: &Cluster) -> bool {
    let shared = &cluster.shared;
    let deadline = Instant::now() + HEAL_BOUND;
    let mut marker: Option<u64> = None;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let Some((leader, endpoint)) = find_leader(&shared.net) else {
            continue;
        };
        let index = match marker {
            Some(i) => i,
            None => {
                let command = Command {
                    request_id: None,
                    stamp_ms: EPOCH_MS + shared.now_ms(),
                    op: Op::Put(PutOp {
                        key: b"sim/marker".to_vec(),
                        value: b"end".to_vec(),
                        prev_kv: false,
                        lease: 0,
                        fence: None,
                    }),
                };
                match tokio::time::timeout(OP_TIMEOUT, endpoint.raft.client_write(command)).await {
                    Ok(Ok(resp)) => {
                        shared.record(
                            "SIM",
                            format!("marker committed at {} via n{leader}", resp.log_id.index),
                        );
                        marker = Some(resp.log_id.index);
                        resp.log_id.index
                    }
                    _ => continue,
                }
            }
        };
        let all = cluster.ids().into_iter().all(|id| {
            shared
                .net
                .endpoint(id)
                .is_some_and(|e| e.raft.metrics().borrow().last_applied.is_some_and(|a| a.index >= index))
        });
        if all {
            shared.record("SIM", "converged");
            return true;
        }
    }
    false
}

fn final_checks(cluster: &Cluster) {
    let shared = &cluster.shared;
    // Replicas at the same applied index hold the same state.
    let mut states = Vec::new();
    for id in cluster.ids() {
        if let Some(e) = shared.net.endpoint(id) {
            let applied = e.state.read();
            states.push((id, applied.last_applied, applied.state.clone()));
        }
    }
    for w in states.windows(2) {
        let (a, b) = (&w[0], &w[1]);
        if a.1 == b.1 && a.2 != b.2 {
            shared.violate(
                "replicas-converge",
                format!(
                    "n{} and n{} applied up to {:?} but hold different states",
                    a.0, b.0, a.1
                ),
            );
        }
    }
    // Every acknowledged write is there (or was overwritten later).
    let acked = shared.checker().acked.clone();
    for (id, _, state) in &states {
        for (key, value, rev) in &acked {
            let r = state.range(&RangeOp {
                key: key.clone(),
                prefix: false,
                limit: 0,
                keys_only: false,
                count_only: false,
            });
            let ok = match r.kvs.first() {
                Some(kv) => kv.mod_revision > *rev || (kv.mod_revision == *rev && kv.value == *value),
                None => false,
            };
            if !ok {
                shared.violate(
                    "acked-writes-durable",
                    format!(
                        "n{id}: write {}={} acknowledged at rev {rev} is missing (found {:?})",
                        String::from_utf8_lossy(key),
                        String::from_utf8_lossy(value),
                        r.kvs
                            .first()
                            .map(|kv| (kv.mod_revision, String::from_utf8_lossy(&kv.value).to_string()))
                    ),
                );
                return;
            }
        }
    }
}
