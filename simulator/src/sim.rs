//! One simulated run: a cluster of real openraft nodes running Roster's
//! state machine, a client workload, a fault schedule, and the checkers.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, ServerState};
use roster_server::raft::state_machine::StateMachineStore;
use roster_server::raft::takeover::Takeover;
use roster_server::raft::watchdog;
use roster_server::raft::{codec, seed_thread_rng, Entry, NodeId, Raft, RaftMetrics, RaftTiming};
use roster_server::state::{Command, Op, PutOp};
use tokio::time::Instant;

use roster_env::{Clock, Dial};
use roster_server::api::common::{StreamLimit, Streams};
use roster_server::api::{listener, NodeContext};
use roster_server::node::grpc_router;
use roster_server::planted::{self, Planted};
use roster_server::raft::eager::start_raft;
use roster_server::raft::network::{NetworkFactory, Peers};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

use roster_client::{WatchEvent, WatchOptions};
use roster_server::api::lease_keeper::CHECKPOINT_EVERY;

use crate::conn::SimDialer;
use crate::disk::SimDisk;
use crate::faults::Fault;
use crate::history::{check_fencing, check_watch, check_writes, fingerprint_pb, History};
use crate::linearizability as lin;
use crate::net::{Endpoint, Net, NetFactory};
use crate::net::{PartyId, CLIENT_BASE};
use crate::rng::SimRng;
use crate::trace::{self, fnv1a_new, SharedTrace, Trace};
use crate::workload::{self, kv_loop, role_loop, DeadLease, KvKind, KvOp, Work, WorkConfig, GROUP, ROLE};

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
    /// Clock-rate drift bound ρ: every node and client clock runs at a rate
    /// within `1 ± rho` of true time; clients assume this ρ.
    pub rho: f64,
    /// Also step clocks by seconds (breaks the drift assumption: expected
    /// to fail, to show what the assumption protects).
    pub clock_jumps: bool,
    /// Extra leases every client keeps alive (see
    /// [`workload::background_leases`]); 0 leaves the run as it was.
    pub background_leases: usize,
    /// Capture the code's own `tracing` logs matching this filter into the
    /// trace (diagnosis; changes the hash).
    pub log: Option<String>,
    /// Apply only the faults with these indices (`None`: all). Faults are
    /// numbered in schedule order; the rest of the schedule does not move
    /// when some are left out. What shrinking varies.
    pub keep_faults: Option<BTreeSet<usize>>,
    /// The kinds of fault this run may inject (`faults = false` is none).
    pub fault_kinds: BTreeSet<Fault>,
    /// How Raft messages travel between nodes.
    pub raft_net: RaftNet,
}

/// How the nodes' Raft messages travel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RaftNet {
    /// In-process messages with seeded delay, loss, duplication and
    /// reordering ([`crate::net`]): the most adversarial network for the
    /// Raft algorithm, but it skips rosterd's transport.
    #[default]
    Messages,
    /// rosterd's own transport (`roster_server::raft::network`: an
    /// AppendEntries link per follower, unary gRPC votes and snapshots,
    /// both through the node's one listener as in rosterd) over
    /// the simulated connections ([`crate::conn`]), so its failure paths —
    /// a connection reset or stalled mid-exchange, a timeout, a reconnect —
    /// run under the faults. Message loss and duplication do not apply
    /// (TCP has neither); cuts, crashes, pauses and delays do.
    Grpc,
}

/// Bugs the simulator can plant, to show that the checkers catch them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    /// The disk reports log appends durable, and saves votes and commit
    /// markers, before syncing them: a crash then loses acknowledged state.
    AckBeforeSync,
    /// Clients keep their lease deadline at the full TTL instead of
    /// `TTL·(1−2ρ)`, while clocks drift.
    NoDriftMargin,
    /// Planted in the server (`roster_server::planted`).
    Server(Planted),
}

impl Bug {
    pub const ALL: [Bug; 7] = [
        Bug::AckBeforeSync,
        Bug::NoDriftMargin,
        Bug::Server(Planted::KeepaliveAckBeforeCommit),
        Bug::Server(Planted::NewLeaderFullTtl),
        Bug::Server(Planted::IgnoreRenewalsAfterCheckpoint),
        Bug::Server(Planted::UncheckedFence),
        Bug::Server(Planted::FollowerLocalReads),
    ];

    /// The `--bug` name.
    pub fn name(self) -> &'static str {
        match self {
            Bug::AckBeforeSync => "ack-before-sync",
            Bug::NoDriftMargin => "no-drift-margin",
            Bug::Server(Planted::KeepaliveAckBeforeCommit) => "keepalive-ack-before-commit",
            Bug::Server(Planted::NewLeaderFullTtl) => "new-leader-full-ttl",
            Bug::Server(Planted::IgnoreRenewalsAfterCheckpoint) => "ignore-renewals-after-checkpoint",
            Bug::Server(Planted::UncheckedFence) => "unchecked-fence",
            Bug::Server(Planted::FollowerLocalReads) => "follower-local-reads",
        }
    }
}

/// Default drift bound of a run.
pub const DEFAULT_RHO: f64 = 0.02;
/// A gap between commits longer than this means no working leader (one
/// commits a checkpoint every second while leases exist).
const STALL_GAP: Duration = Duration::from_millis(1_200);
/// After healing, some candidate must hold the role within this.
const ROLE_BOUND: Duration = Duration::from_secs(20);

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
            rho: DEFAULT_RHO,
            clock_jumps: false,
            background_leases: 0,
            log: None,
            keep_faults: None,
            fault_kinds: Fault::all(),
            raft_net: RaftNet::Messages,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub writes_acked: u64,
    pub writes_unknown: u64,
    pub reads_ok: u64,
    pub elections: u64,
    pub fenced_writes: u64,
    pub stale_writes_rejected: u64,
    pub dead_clients: u64,
    pub watch_events: u64,
    /// Keys whose linearizability check ran out of budget (inconclusive,
    /// reported, never counted as a pass).
    pub linearizability_unknown: u64,
    pub crashes: u64,
    pub partitions: u64,
    pub max_term: u64,
    /// Faults scheduled (applied or left out), numbered `0..faults`.
    pub faults: usize,
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
    /// Every kv operation of the clients.
    pub history: Vec<KvOp>,
}

impl SimReport {
    /// Panics with the violations and the story before the first, if the
    /// run broke any rule (for tests).
    pub fn assert_no_violations(&self) {
        assert!(
            self.violations.is_empty(),
            "seed {}: {:?}\n{}",
            self.seed,
            self.violations,
            self.tail.join("\n")
        );
    }
}

pub const RULES: [&str; 13] = [
    "one-leader-per-term",
    "committed-entries-stable",
    "acked-writes-durable",
    "linearizable-kv",
    "writes-applied-once",
    "role-exclusivity",
    "fencing",
    "dead-lease-bound",
    "watch-no-gaps",
    "replicas-converge",
    "liveness-after-heal",
    "roles-after-heal",
    "raft-core-runs",
];

/// What the checkers have seen so far.
#[derive(Default)]
struct Checker {
    /// term → the node that led it.
    leaders: BTreeMap<u64, NodeId>,
    /// log index → (term, payload fingerprint) of the entry applied there.
    committed: BTreeMap<u64, (u64, u64)>,
    /// (time, highest applied index anywhere, the leader's tenure: term,
    /// node and incarnation, or zeros): sampled every 100 ms, for the
    /// lease-bound checker.
    samples: Vec<(Instant, u64, (u64, NodeId, u64))>,
    /// (lease, log index) of every applied renewal → when it was first
    /// applied.
    renewed: BTreeMap<(i64, u64), Instant>,
    /// When a node took office as leader (also when a restarted leader
    /// resumes its term), for the lease-bound checker.
    tenures: Vec<Instant>,
    /// (node, from, to) of every pause fault, for the lease-bound checker.
    pauses: Vec<(NodeId, Instant, Instant)>,
    history: Vec<KvOp>,
    violations: Vec<Violation>,
    /// The trace tail when the first violation was found.
    first_violation_tail: Vec<String>,
    first_violation_ms: u64,
    stats: Stats,
}

struct Shared {
    trace: SharedTrace,
    checker: Mutex<Checker>,
    net: Net,
    seed: u64,
    rho: f64,
}

impl Shared {
    fn checker(&self) -> MutexGuard<'_, Checker> {
        self.checker.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn record(&self, who: &str, event: impl AsRef<str>) {
        trace::record(&self.trace, who, event);
    }

    /// Clock drift of party `id` in this run: fixed per party, within ±ρ.
    fn drift_ppm(&self, id: PartyId) -> i64 {
        random_ppm(&mut SimRng::derive(self.seed, 0xd41f_0000 + id), self.rho)
    }

    fn now_ms(&self) -> u64 {
        self.trace.lock().unwrap_or_else(|p| p.into_inner()).now_ms()
    }

    fn violate(&self, rule: &'static str, detail: String) {
        self.record("CHK", format!("VIOLATION {rule}: {detail}"));
        let mut c = self.checker();
        if c.violations.is_empty() {
            // The events leading to the first violation.
            let t = self.trace.lock().unwrap_or_else(|p| p.into_inner());
            c.first_violation_tail = t.tail();
            c.first_violation_ms = t.now_ms();
        }
        c.violations.push(Violation { rule, detail });
    }

    /// Violations the workload found live, with the story of the first.
    fn violate_from(&self, found: Vec<(&'static str, String)>, tail: Option<(u64, Vec<String>)>) {
        let mut c = self.checker();
        if let Some((ms, tail)) = tail {
            if c.violations.is_empty() || ms < c.first_violation_ms {
                c.first_violation_tail = tail;
                c.first_violation_ms = ms;
            }
        }
        // Already in the trace when found.
        c.violations
            .extend(found.into_iter().map(|(rule, detail)| Violation { rule, detail }));
    }
}

/// A drift within ±ρ, in parts per million, mostly near the bounds (where
/// it matters).
fn random_ppm(rng: &mut SimRng, rho: f64) -> i64 {
    let max = (rho * 1e6) as i64;
    if max == 0 {
        return 0;
    }
    let magnitude = if rng.chance(0.6) {
        max - rng.below((max / 10).max(1) as u64) as i64
    } else {
        rng.below(max as u64 + 1) as i64
    };
    if rng.chance(0.5) {
        magnitude
    } else {
        -magnitude
    }
}

/// One simulated application process.
struct Actor {
    id: u64,
    clock: Clock,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// The lease its role loop currently keeps.
    lease: Arc<Mutex<Option<(i64, Duration)>>>,
}

async fn spawn_actor(work: &Arc<Work>, shared: &Shared, id: u64) -> Actor {
    let clock = Clock::drifting(shared.drift_ppm(CLIENT_BASE + id), EPOCH_MS + shared.now_ms());
    let client = work.client(id, clock.clone()).await;
    let lease = Arc::new(Mutex::new(None));
    let kv = tokio::spawn(kv_loop(
        work.clone(),
        id,
        client.clone(),
        SimRng::derive(shared.seed, 0x4b00 + id),
    ));
    let role = tokio::spawn(role_loop(
        work.clone(),
        id,
        client.clone(),
        SimRng::derive(shared.seed, 0x801e + id),
        lease.clone(),
    ));
    let mut tasks = vec![kv, role];
    if work.cfg.background_leases > 0 {
        // Only then: a task more changes the schedule of every run.
        tasks.push(tokio::spawn(workload::background_leases(
            work.clone(),
            id,
            client,
            SimRng::derive(shared.seed, 0xba6e + id),
        )));
    }
    shared.record(&format!("c{id}"), format!("start, clock drift {} ppm", clock.ppm()));
    Actor {
        id,
        clock,
        tasks,
        lease,
    }
}

/// What the watcher received.
#[derive(Default)]
struct WatchLog {
    start: Option<u64>,
    seen: Vec<String>,
    /// The watch ended early (compacted history or an error).
    ended: Option<String>,
}

async fn watcher(work: Arc<Work>, log: Arc<Mutex<WatchLog>>) {
    let client = work.client(CLIENT_BASE - 2, Clock::real()).await;
    let mut stream = client.watch(WatchOptions::default().prefix(Vec::new()).coordination(true));
    while let Some(item) = stream.next().await {
        let mut log = log.lock().unwrap_or_else(|p| p.into_inner());
        match item {
            Ok(WatchEvent::Started { revision }) => log.start = Some(revision),
            Ok(WatchEvent::Change(e)) => {
                let fp = fingerprint_pb(&e);
                if !fp.contains(" put k") {
                    work.record("W", &fp);
                }
                log.seen.push(fp);
            }
            Ok(WatchEvent::Compacted { oldest_available }) => {
                log.ended = Some(format!("compacted (oldest {oldest_available})"));
                return;
            }
            Err(e) => {
                log.ended = Some(e.to_string());
                return;
            }
        }
    }
}

/// Samples progress every 100 ms (for the lease bound) and notes when the
/// leases of dead clients end.
async fn sampler(shared: Arc<Shared>, work: Arc<Work>) {
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (mut commit, mut tenure) = (0, (0, 0, 0));
        for (i, e) in shared.net.lock().nodes.iter().enumerate() {
            let Some(e) = e else { continue };
            let m = e.raft.metrics().borrow().clone();
            commit = commit.max(m.last_applied.map_or(0, |l| l.index));
            if m.state == ServerState::Leader && m.current_term >= tenure.0 {
                tenure = (m.current_term, i as NodeId + 1, e.incarnation);
            }
        }
        shared.checker().samples.push((Instant::now(), commit, tenure));
        let leader = find_leader(&shared.net);
        let mut log = work.log();
        for d in log.dead.iter_mut().filter(|d| d.ended_at.is_none()) {
            if let Some((_, e)) = &leader {
                if e.state.read().state.lease(d.lease).is_none() {
                    d.ended_at = Some(Instant::now());
                }
            }
        }
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
    match cfg.bug {
        Some(Bug::Server(bug)) => planted::set(&[bug]),
        _ => planted::set(&[]),
    }
    let mut report = rt.block_on(async {
        let _std_time = crate::std_time::enter();
        let trace: SharedTrace = Arc::new(Mutex::new(Trace::new(60, cfg.keep_trace)));
        let _logs = cfg
            .log
            .as_deref()
            .map(|filter| crate::logs::capture(filter, trace.clone()).expect("the log filter was checked"));
        run_cluster(cfg.clone(), trace).await
    });
    drop(rt);
    seed_thread_rng(None);
    planted::set(&[]);
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
    /// The run's normal fsync time bound (a slow-disk fault raises it for a while).
    sync_max_us: u64,
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
        let (log, snapshots) = disk.open(id);
        let state = StateMachineStore::with_snapshot_store(Arc::new(snapshots)).expect("restoring the snapshot");
        // As rosterd: one set of peer connections for Raft (in `Grpc` mode)
        // and for forwarding, made through the simulated network.
        let peers = Peers::with_dial(Dial::new(SimDialer {
            net: self.shared.net.clone(),
            from: id,
        }));
        // As rosterd: a random tick phase per node.
        roster_server::raft::stagger_start(&self.timing).await;
        // As rosterd: the leader pushes its appends ahead of its own sync.
        let (config, heartbeat) = (self.raft_config.clone(), self.timing.heartbeat);
        let raft = match self.cfg.raft_net {
            RaftNet::Messages => {
                let network = NetFactory {
                    net: self.shared.net.clone(),
                    from: id,
                    incarnation,
                };
                start_raft(id, config, network, log, state.clone(), heartbeat).await
            }
            RaftNet::Grpc => {
                let network = NetworkFactory { peers: peers.clone() };
                start_raft(id, config, network, log, state.clone(), heartbeat).await
            }
        }
        .expect("starting raft");
        // As rosterd: break election lockstep.
        roster_server::raft::unstick::spawn(raft.clone(), &self.timing);
        // The API layer exactly as rosterd builds it, on a drifting clock.
        let ctx = NodeContext::new(
            id,
            node_addr(id),
            "sim".into(),
            raft.clone(),
            state.clone(),
            peers,
            REQUEST_TIMEOUT,
            self.timing.election_max,
            Arc::new(AtomicU64::new(0)),
        )
        .with_clock(self.node_clock(id))
        .with_takeover(Takeover::new(raft.clone(), &self.timing));
        // As rosterd: campaign on time when the leader goes silent.
        roster_server::raft::prompt::spawn(raft.clone(), &self.timing, ctx.leader_contact_source());
        let (incoming, accepted) = mpsc::unbounded_channel();
        let (stop, stopped) = watch::channel(false);
        let streams = Streams::new(StreamLimit::default(), stopped.clone());
        let router = grpc_router(&ctx, streams.clone());
        // As rosterd: AppendEntries links and gRPC share the node's address.
        let accepted = UnboundedReceiverStream::new(accepted).map(Ok::<_, std::io::Error>);
        let accepted = listener::split(accepted, ctx.clone(), streams);
        tokio::spawn(async move {
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
                "crash n{id}: kept {} of {} unsynced writes, last log index {:?} -> {:?}",
                report.kept, report.unsynced, report.last_before, report.last_after
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
            if m.state == ServerState::Leader {
                shared.checker().tenures.push(Instant::now());
            }
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
                    note_renewals(&shared, &entry);
                }
                shared.record(&who, format!("applied {}-{}", applied.leader_id.term, applied.index));
            }
            applied_seen = Some(applied.index);
        }
        if rx.changed().await.is_err() {
            // The core ended: asked to (a crash or the end of the run), or
            // on its own, which no fault the simulator injects should cause.
            if let Some(why) = watchdog::core_failure(&raft).await {
                shared.violate("raft-core-runs", format!("{who}'s Raft core stopped: {why}"));
            }
            return;
        }
    }
}

/// Records when renewals of each lease were first applied anywhere (about
/// when they committed), for the dead-lease bound.
fn note_renewals(shared: &Shared, entry: &Entry) {
    if let openraft::EntryPayload::Normal(command) = &entry.payload {
        let commands = match &command.op {
            Op::Batch(commands) => commands.as_slice(),
            _ => std::slice::from_ref(command),
        };
        for command in commands {
            if let Op::LeaseRenew(renew) = &command.op {
                let now = Instant::now();
                let mut c = shared.checker();
                for id in &renew.ids {
                    let at = c.renewed.entry((*id, entry.log_id.index)).or_insert(now);
                    *at = (*at).min(now);
                }
            }
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

async fn run_cluster(cfg: SimConfig, trace: SharedTrace) -> SimReport {
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
        seed: cfg.seed,
        rho: cfg.rho,
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
        sync_max_us,
        cfg: cfg.clone(),
        timing: timing.clone(),
        raft_config,
        stops: Mutex::new(vec![None; cfg.nodes]),
        shared: shared.clone(),
    };
    shared.record(
        "SIM",
        format!(
            "seed={} nodes={} duration={:?} clients={} faults={} fsync<={}us rho={} jumps={} bug={:?}",
            cfg.seed, cfg.nodes, cfg.duration, cfg.clients, cfg.faults, sync_max_us, cfg.rho, cfg.clock_jumps, cfg.bug
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

    let work = Work::new(
        shared.net.clone(),
        WorkConfig {
            nodes: cfg.nodes,
            client_rho: if cfg.bug == Some(Bug::NoDriftMargin) {
                0.0
            } else {
                cfg.rho
            },
            pauses: cfg.faults && cfg.fault_kinds.contains(&Fault::HolderPause),
            background_leases: cfg.background_leases,
        },
        trace.clone(),
    );
    let watch_log = Arc::new(Mutex::new(WatchLog::default()));
    let watch_task = tokio::spawn(watcher(work.clone(), watch_log.clone()));
    let setup_task = tokio::spawn({
        let work = work.clone();
        async move { workload::setup(&work).await }
    });
    let sampler_task = tokio::spawn(sampler(shared.clone(), work.clone()));
    let mut actors = Vec::new();
    for id in 1..=cfg.clients as u64 {
        actors.push(spawn_actor(&work, &shared, id).await);
    }
    let mut next_actor = cfg.clients as u64 + 1;

    // The fault schedule.
    let mut rng = SimRng::derive(cfg.seed, 0xfa17);
    let end = start + cfg.duration;
    // Members removed by membership faults (re-added later or at healing),
    // and the change in flight.
    let removed: Arc<Mutex<BTreeSet<NodeId>>> = Arc::new(Mutex::new(BTreeSet::new()));
    let mut membership_task: Option<tokio::task::JoinHandle<()>> = None;
    let admin = work.client(CLIENT_BASE - 3, Clock::real()).await;
    let mut restarts: BTreeMap<Instant, Vec<NodeId>> = BTreeMap::new();
    let mut next_fault = start + Duration::from_millis(rng.range(1_000, 4_000));
    let mut faults_drawn = 0usize;
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
        let removed_now: BTreeSet<NodeId> = removed.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let changing = membership_task
            .as_ref()
            .is_some_and(|t: &tokio::task::JoinHandle<()>| !t.is_finished());
        // Crashes allowed: a minority of the current voters.
        let max_down = (cfg.nodes - removed_now.len()).saturating_sub(1) / 2;
        // Each fault has an index and its own random stream, so leaving
        // some out (shrinking, `keep_faults`) changes nothing else about
        // the schedule: times and kinds come from `rng`, drawn every time.
        let kind = rng.below(14);
        let index = faults_drawn;
        faults_drawn += 1;
        if cfg.keep_faults.as_ref().is_some_and(|keep| !keep.contains(&index)) {
            shared.record("FLT", format!("#{index} left out"));
            continue;
        }
        let category = match kind {
            0 | 1 => Some(Fault::Crash),
            2 | 3 => Some(Fault::Partition),
            6 => Some(Fault::PowerLoss),
            7 => Some(Fault::ClientKill),
            8 => Some(Fault::ClientCut),
            9 => Some(Fault::Pause),
            10 => Some(Fault::Clock),
            11 => Some(Fault::OneWay),
            12 => Some(Fault::Bridge),
            13 => Some(Fault::Membership),
            // Healing and network conditions (their parts checked below).
            _ => None,
        };
        if let Some(c) = category.filter(|c| !cfg.fault_kinds.contains(c)) {
            shared.record("FLT", format!("#{index} left out ({c} is off)"));
            continue;
        }
        let mut frng = SimRng::derive(cfg.seed, 0xfa17_0000 + index as u64);
        shared.record("FLT", format!("#{index}:"));
        match kind {
            6 if down.is_empty() => {
                // Power loss of the whole cluster, mostly right after a
                // client got an acknowledgment while a majority of the disks
                // still had unsynced writes: the moment at which anything
                // acknowledged but not yet durable would be lost.
                if frng.chance(0.8) {
                    let until = Instant::now() + Duration::from_millis(1_000);
                    let majority = ids.len() / 2 + 1;
                    let mut acked = work.log().acks;
                    loop {
                        let now_acked = work.log().acks;
                        let unsynced = cluster.disks.iter().filter(|d| d.unsynced_appends() > 0).count();
                        if (now_acked != acked && unsynced >= majority) || Instant::now() >= until {
                            break;
                        }
                        acked = now_acked;
                        tokio::time::sleep(Duration::from_micros(frng.range(20, 300))).await;
                    }
                }
                shared.record("FLT", "power loss: every node");
                let back = Instant::now() + Duration::from_millis(frng.range(200, 3_000));
                for id in ids {
                    cluster.crash(id);
                    restarts.entry(back).or_default().push(id);
                }
            }
            0 | 1 if down.len() < max_down => {
                let up: Vec<NodeId> = ids.iter().copied().filter(|i| !down.contains(i)).collect();
                // Prefer the leader now and then: that is where it hurts.
                let victim = match find_leader(&shared.net) {
                    Some((leader, _)) if frng.chance(0.5) => leader,
                    _ => up[frng.below(up.len() as u64) as usize],
                };
                // Mostly crash in the middle of a write: wait (briefly)
                // until the victim has unsynced writes.
                if frng.chance(0.7) {
                    let disk = &cluster.disks[(victim - 1) as usize];
                    let until = Instant::now() + Duration::from_millis(300);
                    while disk.unsynced() == 0 && Instant::now() < until {
                        tokio::time::sleep(Duration::from_micros(frng.range(50, 500))).await;
                    }
                }
                cluster.crash(victim);
                let back = Instant::now() + Duration::from_millis(frng.range(200, 6_000));
                restarts.entry(back).or_default().push(victim);
            }
            2 => {
                // Mostly the leader: an isolated leader that still answers
                // clients is where lease and read safety are attacked.
                let victim = match find_leader(&shared.net) {
                    Some((leader, _)) if frng.chance(0.8) => leader,
                    _ => ids[frng.below(ids.len() as u64) as usize],
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
                    let j = frng.below(i as u64 + 1) as usize;
                    shuffled.swap(i, j);
                }
                let cut = frng.range(1, shuffled.len() as u64 - 1) as usize;
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
            11 => {
                // One way only: `a` cannot reach `b`, `b` still reaches `a`
                // (the leader half the time, either side).
                let a = match find_leader(&shared.net) {
                    Some((leader, _)) if frng.chance(0.5) => leader,
                    _ => ids[frng.below(ids.len() as u64) as usize],
                };
                let others: Vec<NodeId> = ids.iter().copied().filter(|i| *i != a).collect();
                let b = others[frng.below(others.len() as u64) as usize];
                let (from, to) = if frng.chance(0.5) { (a, b) } else { (b, a) };
                shared.net.heal();
                shared.net.cut_one_way(from, to);
                shared.checker().stats.partitions += 1;
                shared.record("FLT", format!("one-way cut n{from} -> n{to}"));
            }
            12 => {
                // A bridge: two sides that cannot reach each other, and one
                // node that reaches both.
                let mut shuffled = ids.clone();
                for i in (1..shuffled.len()).rev() {
                    let j = frng.below(i as u64 + 1) as usize;
                    shuffled.swap(i, j);
                }
                let bridge = shuffled[0];
                let rest = &shuffled[1..];
                let cut = frng.range(1, rest.len() as u64 - 1).max(1) as usize;
                let (a, b) = rest.split_at(cut.min(rest.len() - 1));
                shared.net.heal();
                shared.net.split(a, b);
                shared.checker().stats.partitions += 1;
                shared.record("FLT", format!("bridge n{bridge} between {a:?} and {b:?}"));
            }
            13 if !changing && down.is_empty() => {
                // A membership change through the real API while faults go
                // on: remove a member (the leader now and then), or add a
                // removed one back (learner, then voter).
                let admin = admin.clone();
                let removed = removed.clone();
                let trace = trace.clone();
                let net = shared.net.clone();
                let back = removed_now.iter().next().copied();
                let victim = match find_leader(&shared.net) {
                    Some((leader, _)) if frng.chance(0.3) => leader,
                    _ => ids[frng.below(ids.len() as u64) as usize],
                };
                shared.record(
                    "FLT",
                    match back {
                        Some(id) => format!("membership: add n{id} back"),
                        None => format!("membership: remove n{victim}"),
                    },
                );
                let n = cfg.nodes;
                membership_task = Some(tokio::spawn(async move {
                    let outcome = match back {
                        Some(id) => readd(&admin, id).await,
                        None => admin.member_remove(victim).await.map(|_| ()).map_err(|e| e.to_string()),
                    };
                    // A failed call may still have changed the membership
                    // (its outcome is unknown): ask the leader.
                    let ids: Vec<NodeId> = (1..=n as NodeId).collect();
                    if let Some(now_removed) = non_voters(&net, &ids) {
                        *removed.lock().unwrap_or_else(|p| p.into_inner()) = now_removed;
                    } else if outcome.is_ok() {
                        let mut removed = removed.lock().unwrap_or_else(|p| p.into_inner());
                        match back {
                            Some(id) => removed.remove(&id),
                            None => removed.insert(victim),
                        };
                    }
                    trace::record(&trace, "FLT", format!("membership change done: {outcome:?}"));
                }));
            }
            0 | 1 | 5 | 6 | 13 => {
                let on = |f: Fault| cfg.fault_kinds.contains(&f);
                let loss = [0.0, 0.0, 0.01, 0.05, 0.2][frng.below(5) as usize];
                let dup = [0.0, 0.0, 0.01, 0.05][frng.below(4) as usize];
                let max_us = [2_000, 5_000, 20_000, 80_000][frng.below(4) as usize];
                let loss = if on(Fault::Loss) { loss } else { 0.0 };
                let dup = if on(Fault::Duplicate) { dup } else { 0.0 };
                let max_us = if on(Fault::Delay) { max_us } else { 5_000 };
                {
                    let mut n = shared.net.lock();
                    n.loss = loss;
                    n.dup = dup;
                    n.delay_max_us = max_us;
                }
                // Disks: mostly the run's normal speed; now and then every
                // disk slower than the network and stalling (a shared host
                // or volume under write-back pressure).
                let (sync_max_us, stall) = [
                    (cluster.sync_max_us, 0.0),
                    (cluster.sync_max_us, 0.0),
                    (20_000, 0.02),
                    (100_000, 0.05),
                ][frng.below(4) as usize];
                let (sync_max_us, stall) = if on(Fault::SlowDisk) {
                    (sync_max_us, stall)
                } else {
                    (cluster.sync_max_us, 0.0)
                };
                for disk in &cluster.disks {
                    disk.set_speed(sync_max_us, stall);
                }
                shared.record(
                    "FLT",
                    format!(
                        "loss={loss} duplicates={dup} delay=0.2..{}ms fsync<={}ms stalls={stall}",
                        max_us / 1000,
                        sync_max_us / 1000
                    ),
                );
            }
            7 => {
                // A client process dies: its lease must end within the bound.
                let victim = frng.below(actors.len() as u64) as usize;
                let actor = actors.swap_remove(victim);
                for t in &actor.tasks {
                    t.abort();
                }
                shared.net.break_conns_of(CLIENT_BASE + actor.id);
                let held = *actor.lease.lock().unwrap_or_else(|p| p.into_inner());
                shared.record(
                    "FLT",
                    format!("kill client c{} (lease {:?})", actor.id, held.map(|h| h.0)),
                );
                if let Some((lease, ttl)) = held {
                    work.log().dead.push(DeadLease {
                        client: actor.id,
                        lease,
                        ttl,
                        died_at: Instant::now(),
                        ended_at: None,
                    });
                }
                actors.push(spawn_actor(&work, &shared, next_actor).await);
                next_actor += 1;
                // Half the time the leader then dies too, while the dead
                // client's lease runs: where a new leader must resume the
                // lease from the committed remaining TTL.
                let crash_ok = cfg.fault_kinds.contains(&Fault::Crash) && down.len() < max_down;
                if let Some((_, ttl)) = held.filter(|_| crash_ok && frng.chance(0.5)) {
                    // Late in the TTL: a new leader that restarted the lease
                    // at full TTL would then keep it well past the bound.
                    let late = (ttl.as_millis() as u64 * 4 / 5).max(1_001);
                    tokio::time::sleep(Duration::from_millis(frng.range(1_000, late))).await;
                    if let Some((leader, _)) = find_leader(&shared.net) {
                        shared.record("FLT", format!("and the leader n{leader} crashes"));
                        cluster.crash(leader);
                        let back = Instant::now() + Duration::from_millis(frng.range(300, 3_000));
                        restarts.entry(back).or_default().push(leader);
                    }
                }
            }
            8 => {
                let actor = &actors[frng.below(actors.len() as u64) as usize];
                shared.net.cut_client(CLIENT_BASE + actor.id, &ids);
                shared.record("FLT", format!("cut client c{} off", actor.id));
            }
            9 => {
                let victim = ids[frng.below(ids.len() as u64) as usize];
                let pause = Duration::from_millis(frng.range(300, 4_000));
                shared.net.pause(victim);
                shared.record("FLT", format!("pause n{victim} for {}ms", pause.as_millis()));
                let now = Instant::now();
                shared.checker().pauses.push((victim, now, now + pause));
                let net = shared.net.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(pause).await;
                    net.resume(victim);
                });
            }
            _ => {
                // Clock faults: a new drift within ρ, or (only in the
                // clock-jump mode) a step of seconds.
                let node = frng.chance(0.5);
                let clock = if node {
                    let id = ids[frng.below(ids.len() as u64) as usize];
                    shared.net.endpoint(id).map(|e| (format!("n{id}"), e.ctx.clock.clone()))
                } else {
                    let a = &actors[frng.below(actors.len() as u64) as usize];
                    Some((format!("c{}", a.id), a.clock.clone()))
                };
                if let Some((who, clock)) = clock {
                    if cfg.clock_jumps {
                        let by = Duration::from_millis(frng.range(1_000, 8_000));
                        let forward = frng.chance(0.5);
                        clock.jump(by, forward);
                        shared.record(
                            "FLT",
                            format!(
                                "clock of {who} jumps {} {}ms",
                                if forward { "forward" } else { "back" },
                                by.as_millis()
                            ),
                        );
                    } else {
                        let ppm = random_ppm(&mut frng, cfg.rho);
                        clock.set_ppm(ppm);
                        shared.record("FLT", format!("clock of {who} now drifts {ppm} ppm"));
                    }
                }
            }
        }
    }

    shared.checker().stats.faults = faults_drawn;
    // Heal: links, loss, crashed nodes; then the clients stop.
    shared.net.heal();
    {
        let mut n = shared.net.lock();
        n.loss = 0.0;
        n.delay_max_us = 5_000;
    }
    shared.net.resume_all();
    {
        let mut n = shared.net.lock();
        n.dup = 0.0;
    }
    shared.record("FLT", "heal everything");
    for id in restarts.into_values().flatten() {
        cluster.start(id).await;
    }
    // Finish the membership change in flight and add removed members back,
    // so that every node can converge.
    if let Some(t) = membership_task.take() {
        let _ = t.await;
    }
    // Whatever the bookkeeping says, the leader's view decides who is back.
    let mut to_readd: BTreeSet<NodeId> = removed.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let until = Instant::now() + HEAL_BOUND;
    while Instant::now() < until {
        if let Some(now_removed) = non_voters(&shared.net, &cluster.ids()) {
            to_readd = now_removed;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for id in to_readd {
        let until = Instant::now() + HEAL_BOUND;
        loop {
            let outcome = readd(&admin, id).await;
            shared.record("SIM", format!("add n{id} back after healing: {outcome:?}"));
            if outcome.is_ok() || Instant::now() >= until {
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let converged = converge(&cluster).await;
    if converged {
        // Roles are reassigned: the clients still campaign.
        let until = Instant::now() + ROLE_BOUND;
        let holder = loop {
            if let Some(c) = work.anyone_holds() {
                break Some(c);
            }
            if Instant::now() >= until {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        match holder {
            Some(c) => shared.record("SIM", format!("c{c} holds {GROUP}/{ROLE} after healing")),
            None => shared.violate(
                "roles-after-heal",
                format!("nobody held {GROUP}/{ROLE} within {ROLE_BOUND:?} after the cluster converged"),
            ),
        }
    }
    for a in &actors {
        for t in &a.tasks {
            t.abort();
        }
    }
    setup_task.abort();
    sampler_task.abort();
    // Let the watcher catch up with the last writes, then stop it.
    tokio::time::sleep(Duration::from_secs(2)).await;
    watch_task.abort();
    if converged {
        final_checks(&cluster);
        workload_checks(&cluster, &work, &watch_log, start);
    } else {
        shared.violate(
            "liveness-after-heal",
            format!("no leader with every node caught up within {HEAL_BOUND:?} after the faults healed"),
        );
    }
    {
        let mut log = work.log();
        let found = std::mem::take(&mut log.violations);
        let tail = log.first_tail.take();
        drop(log);
        shared.violate_from(found, tail);
    }
    {
        let log = work.log();
        let mut c = shared.checker();
        c.stats.writes_acked = log.acks;
        c.stats.writes_unknown = log.kv.iter().filter(|o| o.complete_us.is_none()).count() as u64;
        c.stats.reads_ok = log.kv.iter().filter(|o| matches!(o.kind, KvKind::Get { .. })).count() as u64;
        c.stats.elections = log.elections.len() as u64;
        c.stats.fenced_writes = log.fenced.len() as u64;
        c.stats.stale_writes_rejected = log.stale_writes_rejected;
        c.stats.dead_clients = log.dead.len() as u64;
        c.stats.watch_events = watch_log.lock().unwrap_or_else(|p| p.into_inner()).seen.len() as u64;
        c.history = log.kv.clone();
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

/// Checks on what the workload did, against the replicated history.
fn workload_checks(cluster: &Cluster, work: &Work, watch_log: &Mutex<WatchLog>, start_of_run: Instant) {
    let shared = &cluster.shared;
    // The history from the node that applied the most (the leader may apply
    // a committed entry after a follower did, and the watcher may have been
    // served by that follower).
    let best = shared
        .net
        .lock()
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.as_ref().map(|e| (i as NodeId + 1, e.clone())))
        .max_by_key(|(_, e)| e.state.read().state.revision());
    let Some((leader, e)) = best else {
        return;
    };
    let state = e.state.read();
    let (events, oldest) = match state.state.events_since(0) {
        Ok(ev) => (ev, 1),
        Err(c) => (
            state
                .state
                .events_since(c.oldest_available.saturating_sub(1))
                .unwrap_or_default(),
            c.oldest_available,
        ),
    };
    drop(state);
    shared.record(
        "SIM",
        format!("history from n{leader}: {} events from revision {oldest}", events.len()),
    );
    let h = History {
        events: &events,
        oldest,
    };
    let mut findings = Vec::new();
    {
        let log = work.log();
        findings.extend(check_writes(&h, &log.kv, &log.fenced));
        let ops: Vec<lin::Op> = log
            .kv
            .iter()
            .enumerate()
            .filter(|(_, op)| !op.refused)
            .map(|(id, op)| lin::Op {
                id,
                client: op.client,
                invoke: op.invoke_us,
                complete: op.complete_us,
                key: op.key.clone(),
                kind: match &op.kind {
                    KvKind::Put { value, revision } => lin::OpKind::Put {
                        value: value.clone(),
                        revision: *revision,
                    },
                    KvKind::Delete { revision, deleted } => lin::OpKind::Delete {
                        revision: *revision,
                        deleted: *deleted,
                    },
                    KvKind::Get { observed } => lin::OpKind::Get {
                        observed: observed.clone(),
                    },
                },
            })
            .collect();
        drop(log);
        for (key, verdict) in lin::check(&ops) {
            match verdict {
                lin::Verdict::Ok => {}
                lin::Verdict::Violation(why) => {
                    let text: String = why.to_string().chars().take(3_000).collect();
                    findings.push(("linearizable-kv", text));
                }
                lin::Verdict::Unknown { steps } => {
                    shared.record(
                        "CHK",
                        format!(
                            "linearizability of {} inconclusive after {steps} steps",
                            String::from_utf8_lossy(&key)
                        ),
                    );
                    shared.checker().stats.linearizability_unknown += 1;
                }
            }
        }
    }
    findings.extend(check_fencing(&h));
    {
        let w = watch_log.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(start) = w.start {
            findings.extend(check_watch(&h, start, &w.seen));
        }
        if let Some(why) = &w.ended {
            shared.record("SIM", format!("watch ended early: {why}"));
        }
    }
    // A dead client's lease ends within TTL/(1−ρ), plus, for every leader
    // tenure that began meanwhile, the checkpoint interval and the gap in
    // commits around its start, plus the time the cluster went without
    // commits for longer than STALL_GAP or while its leader was paused,
    // plus 1.5 s (ticks, commits, sampling).
    let samples = shared.checker().samples.clone();
    let tenures = shared.checker().tenures.clone();
    let pauses = shared.checker().pauses.clone();
    let now = Instant::now();
    for d in work.log().dead.iter() {
        let end = d.ended_at.unwrap_or(now);
        // From the death, or from the commit of a renewal it sent before.
        // From the death, or from the commit of a renewal the client sent
        // before dying that committed after it (the lease then rightly lives
        // a TTL from that commit: DESIGN rule 3).
        let last_renewal = shared
            .checker()
            .renewed
            .iter()
            .filter(|((id, _), _)| *id == d.lease)
            .map(|(_, at)| *at)
            .max();
        let from = last_renewal.map_or(d.died_at, |r| r.max(d.died_at));
        let window: Vec<_> = samples.iter().filter(|s| s.0 >= from && s.0 <= end).collect();
        // A leader restarting in its term (openraft resumes it) is a new
        // tenure too: its keeper starts again from the last checkpoint.
        let changes = tenures.iter().filter(|t| **t > from && **t <= end).count() as u32;
        let mut stalled = Duration::ZERO;
        let mut last_progress = from;
        let mut last_commit = window.first().map_or(0, |s| s.1);
        // A working leader commits at least a checkpoint a second: a longer
        // gap is time without one, counted whole. So is a gap in which a
        // tenure began, however short: the election and the new keeper's
        // start-up are time in which nobody ages leases (the keeper's bound
        // per leader change is the checkpoint interval plus that). Elections
        // can end within STALL_GAP of the old leader's last commit. So is a
        // gap in which the leader was paused: DESIGN rule 5 has a leader
        // that notices a stall extend every lease by it (found with many
        // leases: `--background-leases 30` seed 99, a 0.7 s pause of the
        // leader on a slow disk put an expiry 0.15 s over the bound).
        let no_leader = |from: Instant, to: Instant, leader: NodeId| {
            let changed = tenures.iter().any(|t| *t > from && *t <= to);
            let paused = pauses.iter().any(|(n, a, b)| *n == leader && *a < to && *b > from);
            if to - from > STALL_GAP || changed || paused {
                to - from
            } else {
                Duration::ZERO
            }
        };
        let mut last_leader = window.first().map_or(0, |s| s.2 .1);
        for s in &window {
            if s.1 > last_commit {
                stalled += no_leader(last_progress, s.0, last_leader);
                last_progress = s.0;
                last_commit = s.1;
                last_leader = s.2 .1;
            }
        }
        stalled += no_leader(last_progress, end, last_leader);
        let bound =
            d.ttl.div_f64(1.0 - shared.rho) + CHECKPOINT_EVERY * changes + stalled + Duration::from_millis(1_500);
        let took = end - from;
        if took > bound {
            findings.push((
                "dead-lease-bound",
                format!(
                    "lease {:x} of dead client c{} (TTL {:?}) {} {:?} after the client died (or its last renewal committed); bound {:?} ({} leader changes, {:?} without commits)",
                    d.lease,
                    d.client,
                    d.ttl,
                    if d.ended_at.is_some() { "ended" } else { "still alive" },
                    took,
                    bound,
                    changes,
                    stalled
                ) + &format!(
                    "; renewals applied at {:?}",
                    shared
                        .checker()
                        .renewed
                        .iter()
                        .filter(|((id, _), _)| *id == d.lease)
                        .map(|((_, index), at)| (*index, (*at - start_of_run).as_millis()))
                        .collect::<Vec<_>>()
                ),
            ));
        }
    }
    for (rule, detail) in findings {
        shared.violate(rule, detail);
    }
}

/// The nodes among `ids` that are not voters of the newest membership any
/// node knows (by log id): its last configuration, also while a joint one is
/// in place (a change cut short by a leader change stays joint until the
/// next change, which adding a node back is). Not the leader's view: a
/// leader that removed itself may still believe it leads. `None` while no
/// node runs.
fn non_voters(net: &Net, ids: &[NodeId]) -> Option<BTreeSet<NodeId>> {
    let newest = net
        .lock()
        .nodes
        .iter()
        .flatten()
        .map(|e| e.raft.metrics().borrow().membership_config.clone())
        .max_by_key(|m| *m.log_id())?;
    let target = newest
        .membership()
        .get_joint_config()
        .last()
        .cloned()
        .unwrap_or_default();
    Some(ids.iter().copied().filter(|i| !target.contains(i)).collect())
}

/// Adds removed member `id` back: as a learner, then as a voter.
async fn readd(admin: &roster_client::Client, id: NodeId) -> Result<(), String> {
    match admin.member_add(id, node_addr(id)).await {
        Ok(_) => {}
        // Already a learner from an earlier attempt.
        Err(e) if e.code() == tonic::Code::AlreadyExists => {}
        Err(e) => return Err(e.to_string()),
    }
    admin.member_promote(id).await.map(|_| ()).map_err(|e| e.to_string())
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
}
