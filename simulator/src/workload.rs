//! The client workload: simulated application processes, each a real
//! `roster_client::Client` (the same lease keeper, campaign and retry code an
//! application links), talking gRPC to the nodes through the simulated
//! network, on its own drifting clock.
//!
//! Each actor runs two loops on one client:
//! * **kv**: puts, deletes and linearizable reads of a few shared keys,
//!   recorded as a history for the linearizability checker (every put
//!   writes a value never written before, so the exactly-once check can
//!   find each logical write in the replicated event history);
//! * **role**: grant a lease and keep it, campaign for `g/primary`, and while
//!   it believes it holds the role, write fenced values; then resign, or
//!   let the lease lapse. Now and then the process pauses between checking
//!   that it holds the role and writing (a GC pause at the worst moment),
//!   with its connections stalled: fencing must reject what it writes late.
//!
//! Role exclusivity is judged here, live: whenever an actor learns it was
//! elected, no other actor may still believe it holds the role, where
//! belief is `RoleGuard::is_held()`: the server has not told it otherwise
//! and its local lease deadline has not passed on its own clock.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use roster_client::{CampaignOptions, Client, ClientConfig, KeeperOptions, RoleGuard};
use roster_env::{Clock, Dial};
use roster_proto::v1::{role_spec, PutGroupRequest, PutRequest, RangeRequest, RoleSpec};
use tokio::time::Instant;

use crate::conn::SimDialer;
use crate::net::{Net, PartyId, CLIENT_BASE};
use crate::rng::SimRng;

pub const GROUP: &str = "g";
pub const ROLE: &str = "primary";
/// The key holders write with their fence.
pub const FENCED_KEY: &[u8] = b"fenced/g";
/// Shared keys of the kv loop.
const KV_KEYS: u64 = 4;

/// One kv operation as the client saw it (times in simulated µs).
#[derive(Clone, Debug)]
pub struct KvOp {
    pub client: u64,
    pub invoke_us: u64,
    /// `None`: no answer (timeout, unavailable): it may or may not have
    /// taken effect.
    pub complete_us: Option<u64>,
    pub key: Vec<u8>,
    pub kind: KvKind,
    /// Definitely not applied (refused with an answer): not in the history.
    pub refused: bool,
}

#[derive(Clone, Debug)]
pub enum KvKind {
    Put {
        value: Vec<u8>,
        revision: Option<u64>,
    },
    Delete {
        revision: Option<u64>,
        deleted: Option<u64>,
    },
    Get {
        observed: Option<(Vec<u8>, u64)>,
    },
}

/// An acknowledged fenced write.
#[derive(Clone, Debug)]
pub struct FencedWrite {
    pub client: u64,
    pub token: u64,
    pub revision: u64,
    pub value: Vec<u8>,
}

/// A client process that died while holding a lease.
#[derive(Clone, Debug)]
pub struct DeadLease {
    pub client: u64,
    pub lease: i64,
    pub ttl: Duration,
    pub died_at: Instant,
    /// When the lease was first seen gone on the leader.
    pub ended_at: Option<Instant>,
}

/// What the workload recorded, for the checkers.
#[derive(Default)]
pub struct WorkLog {
    pub kv: Vec<KvOp>,
    pub fenced: Vec<FencedWrite>,
    pub dead: Vec<DeadLease>,
    /// Every election an actor learnt of: (time, client, token).
    pub elections: Vec<(Instant, u64, u64)>,
    pub violations: Vec<(&'static str, String)>,
    /// Current role guards by client, to judge beliefs.
    guards: BTreeMap<u64, Weak<RoleGuard>>,
    pub stale_writes_rejected: u64,
    pub resigns: u64,
    /// Acknowledged writes so far (kv puts and fenced writes).
    pub acks: u64,
    /// When the first violation found live happened, and the trace tail
    /// then.
    pub first_tail: Option<(u64, Vec<String>)>,
}

/// Settings the workload takes from the run.
#[derive(Clone, Debug)]
pub struct WorkConfig {
    pub nodes: usize,
    /// ρ the clients assume (KeeperOptions::rho).
    pub client_rho: f64,
    /// Whether actors pause between checking and writing.
    pub pauses: bool,
    /// Extra leases each actor keeps ([`background_leases`]).
    pub background_leases: usize,
}

/// TTL of the background leases: short, so that few of them bring the
/// leader's keeper to batch renewals with a wait.
pub const BACKGROUND_TTL: Duration = Duration::from_secs(2);

/// Shared between the actors and the run.
pub struct Work {
    pub log: Mutex<WorkLog>,
    pub net: Net,
    pub cfg: WorkConfig,
    start: Instant,
    trace: crate::trace::SharedTrace,
}

impl Work {
    pub fn new(net: Net, cfg: WorkConfig, trace: crate::trace::SharedTrace) -> Arc<Self> {
        Arc::new(Self {
            log: Mutex::new(WorkLog::default()),
            net,
            cfg,
            start: Instant::now(),
            trace,
        })
    }

    pub fn log(&self) -> MutexGuard<'_, WorkLog> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    pub fn record(&self, who: &str, event: impl AsRef<str>) {
        crate::trace::record(&self.trace, who, event);
    }

    /// A client for actor `id`, dialing through the simulated network, on
    /// `clock`.
    pub async fn client(&self, id: u64, clock: Clock) -> Client {
        let addrs: Vec<String> = (1..=self.cfg.nodes as u64).map(crate::sim::node_addr).collect();
        let config = ClientConfig::new(addrs)
            .with_client_id(id)
            .with_clock(clock)
            .with_dial(Dial::new(SimDialer {
                net: self.net.clone(),
                from: CLIENT_BASE + id,
            }))
            .request_timeout(Duration::from_secs(3))
            .attempt_timeout(Duration::from_millis(1_000))
            .connect_timeout(Duration::from_millis(500))
            .keepalive_interval(Some(Duration::from_secs(1)));
        Client::connect(config)
            .await
            .expect("the simulator's client configuration is valid")
    }

    /// Records that `client` now believes it holds the role with `token`,
    /// and checks that nobody else still does.
    fn elected(&self, client: u64, token: u64, guard: &Arc<RoleGuard>) {
        let mut log = self.log();
        log.elections.push((Instant::now(), client, token));
        let mut clash = Vec::new();
        for (other, weak) in &log.guards {
            if *other == client {
                continue;
            }
            if let Some(g) = weak.upgrade() {
                if g.is_held() {
                    clash.push(format!("c{other} (token {})", g.token()));
                }
            }
        }
        log.guards.insert(client, Arc::downgrade(guard));
        if !clash.is_empty() {
            let detail = format!(
                "c{client} elected to {GROUP}/{ROLE} with token {token} while {} still believed it held the role",
                clash.join(", ")
            );
            // Into the story now, with the events that led here.
            let mut trace = self.trace.lock().unwrap_or_else(|p| p.into_inner());
            trace.record("CHK", &format!("VIOLATION role-exclusivity: {detail}"));
            if log.first_tail.is_none() {
                log.first_tail = Some((trace.now_ms(), trace.tail()));
            }
            log.violations.push(("role-exclusivity", detail));
        }
    }

    fn released(&self, client: u64) {
        self.log().guards.remove(&client);
    }

    /// Whether any actor believes it holds the role now.
    pub fn anyone_holds(&self) -> Option<u64> {
        let log = self.log();
        log.guards
            .iter()
            .find(|(_, w)| w.upgrade().is_some_and(|g| g.is_held()))
            .map(|(c, _)| *c)
    }
}

/// Creates the role the actors compete for; retries until a leader takes it.
pub async fn setup(work: &Work) {
    let client = work.client(CLIENT_BASE - 1, Clock::real()).await;
    loop {
        let req = PutGroupRequest {
            name: GROUP.into(),
            roles: vec![RoleSpec {
                name: ROLE.into(),
                capacity: 1,
                failover: role_spec::Failover::Automatic as i32,
                handover_delay_ms: 0,
                max_lag: None,
            }],
            ..Default::default()
        };
        match client.put_group(req).await {
            Ok(_) => {
                work.record("WRK", format!("group {GROUP} with role {ROLE} created"));
                return;
            }
            Err(e) => {
                work.record("WRK", format!("creating the group failed: {}", short(&e.to_string())));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

fn short(s: &str) -> String {
    s.chars().take(100).collect()
}

fn definite_failure(e: &roster_client::Error) -> bool {
    use tonic::Code;
    matches!(
        e.code(),
        Code::InvalidArgument | Code::FailedPrecondition | Code::NotFound | Code::AlreadyExists | Code::OutOfRange
    )
}

/// The kv loop of actor `id`.
pub async fn kv_loop(work: Arc<Work>, id: u64, client: Client, mut rng: SimRng) {
    let who = format!("c{id}");
    let mut seq = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(rng.range(20, 400))).await;
        let key = format!("k{}", rng.below(KV_KEYS)).into_bytes();
        let k = String::from_utf8_lossy(&key).to_string();
        let invoke_us = work.now_us();
        let roll = rng.below(10);
        // A write is in the history from its invocation, as "outcome
        // unknown", so a client killed mid-call leaves it there.
        let pending = |kind: KvKind| {
            let mut log = work.log();
            log.kv.push(KvOp {
                client: id,
                invoke_us,
                complete_us: None,
                key: key.clone(),
                kind,
                refused: false,
            });
            log.kv.len() - 1
        };
        let (kind, complete, slot) = if roll < 5 {
            seq += 1;
            let value = format!("c{id}-{seq}").into_bytes();
            let slot = pending(KvKind::Put {
                value: value.clone(),
                revision: None,
            });
            let result = client.put(key.clone(), value.clone()).await;
            let v = String::from_utf8_lossy(&value).to_string();
            match result {
                Ok(r) => {
                    let rev = r.header.map(|h| h.revision).unwrap_or(0);
                    work.record(&who, format!("put {k}={v} -> rev {rev}"));
                    work.log().acks += 1;
                    (
                        KvKind::Put {
                            value,
                            revision: Some(rev),
                        },
                        Some(work.now_us()),
                        Some(slot),
                    )
                }
                Err(e) if definite_failure(&e) => {
                    work.record(&who, format!("put {k}={v} -> refused: {}", short(&e.to_string())));
                    work.log().kv[slot].refused = true;
                    continue;
                }
                Err(e) => {
                    work.record(&who, format!("put {k}={v} -> unknown: {}", short(&e.to_string())));
                    continue;
                }
            }
        } else if roll < 6 {
            let slot = pending(KvKind::Delete {
                revision: None,
                deleted: None,
            });
            match client.delete(key.clone()).await {
                Ok(r) => {
                    let rev = r.header.map(|h| h.revision).unwrap_or(0);
                    work.record(&who, format!("delete {k} -> rev {rev} deleted {}", r.deleted));
                    (
                        KvKind::Delete {
                            revision: Some(rev),
                            deleted: Some(r.deleted),
                        },
                        Some(work.now_us()),
                        Some(slot),
                    )
                }
                Err(e) if definite_failure(&e) => {
                    work.log().kv[slot].refused = true;
                    continue;
                }
                Err(e) => {
                    work.record(&who, format!("delete {k} -> unknown: {}", short(&e.to_string())));
                    continue;
                }
            }
        } else {
            let req = RangeRequest {
                key: key.clone(),
                ..Default::default()
            };
            match client.range(req).await {
                Ok(r) => {
                    let observed = r.kvs.first().map(|kv| (kv.value.clone(), kv.mod_revision));
                    let shown = observed
                        .as_ref()
                        .map(|(v, rev)| format!("{} @{rev}", String::from_utf8_lossy(v)))
                        .unwrap_or_else(|| "<absent>".into());
                    work.record(&who, format!("get {k} -> {shown}"));
                    (KvKind::Get { observed }, Some(work.now_us()), None)
                }
                Err(e) => {
                    work.record(&who, format!("get {k} -> failed: {}", short(&e.to_string())));
                    continue;
                }
            }
        };
        let done = KvOp {
            client: id,
            invoke_us,
            complete_us: complete,
            key,
            kind,
            refused: false,
        };
        let mut log = work.log();
        match slot {
            Some(i) => log.kv[i] = done,
            None => log.kv.push(done),
        }
    }
}

/// Keeps `work.cfg.background_leases` leases of [`BACKGROUND_TTL`] alive
/// for actor `id`, each with its own keeper (as many processes of one
/// application would), replacing any that is lost (a keeper gives up across
/// a long partition). The load is the point: with enough leases the
/// leader's keeper waits up to 10 ms to batch renewals (`linger_for`), and
/// the role leases, which the checkers follow, renew in those batches. Runs
/// until aborted (the actor's death, which drops the keepers).
pub async fn background_leases(work: Arc<Work>, id: u64, client: Client, mut rng: SimRng) {
    let want = work.cfg.background_leases;
    let who = format!("c{id}");
    let opts = KeeperOptions {
        rho: work.cfg.client_rho,
        ..Default::default()
    };
    let mut keepers = Vec::with_capacity(want);
    let mut full_once = false;
    loop {
        keepers.retain(|k: &roster_client::LeaseKeeper| !k.state().is_lost());
        while keepers.len() < want {
            match client.grant_and_keep(BACKGROUND_TTL, opts).await {
                Ok(keeper) => keepers.push(keeper),
                Err(_) => break,
            }
        }
        if keepers.len() == want && !full_once {
            full_once = true;
            work.record(&who, format!("keeps {want} background leases"));
        }
        tokio::time::sleep(Duration::from_millis(rng.range(200, 600))).await;
    }
}

/// The role loop of actor `id`. Runs until aborted (the actor's death).
pub async fn role_loop(
    work: Arc<Work>,
    id: u64,
    client: Client,
    mut rng: SimRng,
    lease_slot: Arc<Mutex<Option<(i64, Duration)>>>,
) {
    let who = format!("c{id}");
    let mut seq = 0u64;
    loop {
        tokio::time::sleep(Duration::from_millis(rng.range(50, 1_500))).await;
        let ttl = Duration::from_millis(rng.range(2_000, 5_000));
        let opts = KeeperOptions {
            rho: work.cfg.client_rho,
            ..Default::default()
        };
        let keeper = match client.grant_and_keep(ttl, opts).await {
            Ok(k) => k,
            Err(e) => {
                work.record(&who, format!("lease grant failed: {}", short(&e.to_string())));
                continue;
            }
        };
        *lease_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some((keeper.id(), ttl));
        work.record(&who, format!("lease {:x} ttl {}ms", keeper.id(), ttl.as_millis()));
        let candidate = format!("c{id}");
        let campaign = client.campaign(GROUP, ROLE, candidate.clone(), &keeper, CampaignOptions::default());
        let guard = match tokio::time::timeout(Duration::from_secs(rng.range(2, 15)), campaign).await {
            Ok(Ok(g)) => Arc::new(g),
            Ok(Err(e)) => {
                work.record(&who, format!("campaign failed: {}", short(&e.to_string())));
                drop(keeper);
                continue;
            }
            Err(_) => {
                // Gave up waiting: withdraw (best effort) and let go.
                let _ = client.resign(GROUP, ROLE, &candidate).await;
                work.record(&who, "campaign given up");
                drop(keeper);
                continue;
            }
        };
        let token = guard.token();
        work.record(&who, format!("elected token {token}"));
        work.elected(id, token, &guard);
        let hold_until = Instant::now() + Duration::from_millis(rng.range(500, 8_000));
        while Instant::now() < hold_until {
            tokio::time::sleep(Duration::from_millis(rng.range(50, 400))).await;
            if !guard.is_held() {
                work.record(&who, format!("lost token {token}: {:?}", guard.lost_reason()));
                break;
            }
            // A pause right after the check: the write goes out late.
            if work.cfg.pauses && rng.chance(0.05) {
                let pause = Duration::from_millis(rng.range(500, 6_000));
                work.record(
                    &who,
                    format!("paused {}ms after checking token {token}", pause.as_millis()),
                );
                let party: PartyId = CLIENT_BASE + id;
                work.net.pause(party);
                tokio::time::sleep(pause).await;
                work.net.resume(party);
            }
            seq += 1;
            let value = format!("c{id}-t{token}-{seq}").into_bytes();
            let req = PutRequest {
                key: FENCED_KEY.to_vec(),
                value: value.clone(),
                fence: Some(guard.fence()),
                ..Default::default()
            };
            match client.put_with(req).await {
                Ok(r) => {
                    let revision = r.header.map(|h| h.revision).unwrap_or(0);
                    work.record(&who, format!("fenced write t{token}-{seq} -> rev {revision}"));
                    let mut log = work.log();
                    log.acks += 1;
                    log.fenced.push(FencedWrite {
                        client: id,
                        token,
                        revision,
                        value,
                    });
                }
                Err(e) if e.code() == tonic::Code::FailedPrecondition => {
                    work.record(
                        &who,
                        format!("fenced write t{token}-{seq} rejected: {}", short(&e.to_string())),
                    );
                    work.log().stale_writes_rejected += 1;
                }
                Err(e) => work.record(
                    &who,
                    format!("fenced write t{token}-{seq} failed: {}", short(&e.to_string())),
                ),
            }
        }
        work.released(id);
        if rng.chance(0.5) {
            match Arc::try_unwrap(guard) {
                Ok(g) => {
                    let r = g.resign().await;
                    work.log().resigns += 1;
                    work.record(&who, format!("resigned token {token}: {}", r.is_ok()));
                }
                Err(_) => work.record(&who, "guard still shared; dropping"),
            }
        }
        drop(keeper);
        *lease_slot.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}
