//! The workloads, written once against [`Driver`] and [`Conn`] and run
//! unchanged on both systems.
//!
//! Each workload runs on a fresh cluster and yields [`Measurement`]s: one
//! per measured phase (one concurrency level, one lease count, one
//! failover round), each with the CPU accounting of exactly that interval
//! so that a phase disturbed by other processes can be told apart.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use futures::future::join_all;
use indicatif::ProgressBar;
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

use crate::cluster::{Cluster, MEMBERS};
use crate::cpu::{rss_bytes, CpuMeter, CpuUsage};
use crate::driver::{Conn, Driver, KeptLease, System, Tuning};
use crate::stats::Latencies;

/// The workloads of the issue, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// Concurrent writers of 256-byte values.
    Put,
    /// Linearizable and serializable reads of existing keys.
    Get,
    /// Grant leases and keep them alive.
    Lease,
    /// Concurrent clients each renewing its own lease in a closed loop.
    Renew,
    /// Candidates cycling campaign → elected → resign.
    Election,
    /// kill -9 of the cluster's leader under a continuous writer.
    Failover,
    /// The holder of a role dies; time until the next candidate holds it.
    RoleFailover,
    /// Resident memory after many keys and leases.
    Memory,
}

impl Workload {
    /// Every workload, in run order.
    pub const ALL: [Workload; 8] = [
        Workload::Put,
        Workload::Get,
        Workload::Lease,
        Workload::Renew,
        Workload::Election,
        Workload::Failover,
        Workload::RoleFailover,
        Workload::Memory,
    ];

    /// Name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Workload::Put => "put",
            Workload::Get => "get",
            Workload::Lease => "lease",
            Workload::Renew => "renew",
            Workload::Election => "election",
            Workload::Failover => "failover",
            Workload::RoleFailover => "role-failover",
            Workload::Memory => "memory",
        }
    }
}

/// Sizes and durations of the workloads.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    /// Length of each timed phase.
    pub duration: Duration,
    /// Concurrent writers of the put workload, one phase each.
    pub put_clients: Vec<usize>,
    /// Concurrent readers of the get workload.
    pub get_clients: usize,
    /// Keys written before the get workload, read at random.
    pub get_keys: usize,
    /// Leases of the lease workload, one phase each.
    pub lease_counts: Vec<usize>,
    /// TTL of the lease workload's leases.
    pub lease_ttl: Duration,
    /// Renewal interval of every kept lease (the TTL / 3 both clients
    /// default to).
    pub lease_renew: Duration,
    /// Closed-loop renewers of the renew workload, one phase each.
    pub renew_clients: Vec<usize>,
    /// Candidates of the election workload.
    pub candidates: usize,
    /// Leader kills of the failover workload.
    pub failover_rounds: usize,
    /// Lease TTL of the role-failover holder and candidate.
    pub role_ttl: Duration,
    /// Holder deaths of the role-failover workload.
    pub role_rounds: usize,
    /// Keys written by the memory workload.
    pub memory_keys: usize,
    /// Leases kept by the memory workload.
    pub memory_leases: usize,
    /// Value size of every write.
    pub value_size: usize,
    /// Most connections a phase opens for its clients; clients share them
    /// round-robin (N clients on min(N, this) connections).
    pub max_conns: usize,
    /// Kept leases per connection (each lease has its own stream).
    pub leases_per_conn: usize,
}

/// What a phase measured.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    /// E.g. `writes/s`.
    pub metric: String,
    /// E.g. `ms`.
    pub unit: &'static str,
    /// The value.
    pub value: f64,
    /// Whether a higher value is better (throughput) or worse (latency,
    /// CPU, memory).
    pub higher_is_better: bool,
}

fn figure(metric: &str, unit: &'static str, value: f64, higher_is_better: bool) -> Figure {
    Figure {
        metric: metric.to_owned(),
        unit,
        value,
        higher_is_better,
    }
}

/// One measured phase of one workload on one system.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// The system measured.
    pub system: System,
    /// The workload.
    pub workload: Workload,
    /// The phase, e.g. `16 clients`.
    pub phase: String,
    /// Which round of the whole benchmark.
    pub round: usize,
    /// CPU accounting of the phase.
    pub cpu: CpuUsage,
    /// Failed requests during the phase (not counted in throughput).
    pub errors: u64,
    /// The figures.
    pub figures: Vec<Figure>,
}

/// The context one workload runs in.
pub struct Ctx<'a, D: Driver> {
    /// The system's driver.
    pub driver: &'a D,
    /// A fresh cluster of that system.
    pub cluster: &'a mut Cluster,
    /// Sizes and durations.
    pub params: &'a Params,
    /// Round number, copied into every measurement.
    pub round: usize,
    /// Progress display.
    pub progress: &'a ProgressBar,
}

/// Per-attempt timeout of every workload but failover. Generous: the etcd
/// driver does not retry, and on a loaded 2-core machine etcd's own lease
/// grants can take over a second (its "apply request took too long"), which
/// with 1 s failed whole runs in the memory workload's set-up. Latencies are
/// measured, not bounded, so this changes no figure.
const TUNING: Tuning = Tuning {
    attempt_timeout: Duration::from_secs(5),
};

/// The failover writer's attempts are shorter, so a request stuck on the
/// dead leader is abandoned quickly on both systems.
const FAILOVER_TUNING: Tuning = Tuning {
    attempt_timeout: Duration::from_millis(500),
};

/// Runs one workload and returns its measurements.
pub async fn run<D: Driver>(mut ctx: Ctx<'_, D>, workload: Workload) -> Result<Vec<Measurement>> {
    wait_ready(ctx.driver, ctx.cluster).await?;
    let mut out = match workload {
        Workload::Put => put(&ctx).await,
        Workload::Get => get(&ctx).await,
        Workload::Lease => lease(&ctx).await,
        Workload::Renew => renew(&ctx).await,
        Workload::Election => election(&ctx).await,
        Workload::Failover => failover(&mut ctx).await,
        Workload::RoleFailover => role_failover(&ctx).await,
        Workload::Memory => memory(&ctx).await,
    }
    .with_context(|| format!("{} workload on {}", workload.name(), ctx.driver.system().name()))?;
    for m in &mut out {
        m.system = ctx.driver.system();
        m.workload = workload;
        m.round = ctx.round;
    }
    Ok(out)
}

fn measurement(phase: String, cpu: CpuUsage, errors: u64, figures: Vec<Figure>) -> Measurement {
    Measurement {
        // `run` fills in system, workload and round.
        system: System::Roster,
        workload: Workload::Put,
        phase,
        round: 0,
        cpu,
        errors,
        figures,
    }
}

/// Waits until the cluster takes a write and every member knows the leader.
async fn wait_ready<D: Driver>(driver: &D, cluster: &Cluster) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let conn = driver.connect(&cluster.endpoints(), TUNING).await?;
    loop {
        let wrote = conn.put(b"bench/ready".to_vec(), b"1".to_vec()).await.is_ok();
        if wrote && find_leader(driver, cluster).await.is_some() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{} cluster not ready after 30 s; member 1 log:\n{}",
                driver.system().name(),
                cluster.log_tail(0, 20)
            );
        }
        sleep(Duration::from_millis(100)).await;
    }
}

/// The leader every running member agrees on, if they do.
async fn find_leader<D: Driver>(driver: &D, cluster: &Cluster) -> Option<usize> {
    let running: Vec<usize> = (0..MEMBERS).filter(|&m| cluster.is_running(m)).collect();
    let views = join_all(running.iter().map(|&m| driver.leader_seen_by(cluster, m))).await;
    let first = views.first().copied().flatten()?;
    views.iter().all(|v| *v == Some(first)).then_some(first)
}

async fn pool<D: Driver>(driver: &D, cluster: &Cluster, n: usize, tuning: Tuning) -> Result<Vec<D::Conn>> {
    let endpoints = cluster.endpoints();
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        conns.push(driver.connect(&endpoints, tuning).await?);
    }
    Ok(conns)
}

fn value(size: usize) -> Vec<u8> {
    (0..size).map(|i| b'a' + (i % 26) as u8).collect()
}

/// What a closed-loop client task brings back.
#[derive(Default)]
struct Tally {
    lat: Latencies,
    errors: u64,
}

/// Runs `clients` closed-loop tasks over `conns` until `duration` has
/// passed; each calls `op(conn, client, i)` for its i-th request. Returns
/// the merged latencies of successful calls and the error count.
async fn closed_loop<C, F, Fut>(conns: &[C], clients: usize, duration: Duration, op: F) -> Result<Tally>
where
    C: Conn,
    F: Fn(C, usize, u64) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let op = Arc::new(op);
    let deadline = Instant::now() + duration;
    let tasks: Vec<JoinHandle<Tally>> = (0..clients)
        .map(|client| {
            let conn = conns[client % conns.len()].clone();
            let op = Arc::clone(&op);
            tokio::spawn(async move {
                let mut tally = Tally::default();
                let mut i = 0u64;
                while Instant::now() < deadline {
                    let start = Instant::now();
                    match op(conn.clone(), client, i).await {
                        Ok(()) => tally.lat.record(start.elapsed()),
                        Err(_) => tally.errors += 1,
                    }
                    i += 1;
                }
                tally
            })
        })
        .collect();
    let mut total = Tally::default();
    for t in tasks {
        let tally = t.await.context("client task")?;
        total.lat.merge(tally.lat);
        total.errors += tally.errors;
    }
    Ok(total)
}

/// Throughput, latency quantiles and cluster CPU per operation of a
/// closed-loop phase (`ops/s`, `p50`, `p99`, `cluster CPU per op`).
fn closed_loop_figures(ops: &str, op: &str, tally: &mut Tally, cpu: &CpuUsage) -> Vec<Figure> {
    let n = tally.lat.len() as f64;
    vec![
        figure(&format!("{ops}/s"), "/s", n / cpu.wall_s, true),
        figure("p50", "ms", tally.lat.quantile_ms(0.5), false),
        figure("p99", "ms", tally.lat.quantile_ms(0.99), false),
        figure(
            &format!("cluster CPU per {op}"),
            "µs",
            cpu.cluster_s * 1e6 / n.max(1.0),
            false,
        ),
    ]
}

async fn put<D: Driver>(ctx: &Ctx<'_, D>) -> Result<Vec<Measurement>> {
    let p = ctx.params;
    let mut out = Vec::new();
    for &clients in &p.put_clients {
        ctx.progress.set_message(format!("put, {clients} clients"));
        let conns = pool(ctx.driver, ctx.cluster, clients.min(p.max_conns), TUNING).await?;
        let val = Arc::new(value(p.value_size));
        // Warm-up: connect every channel before the clock starts.
        for c in &conns {
            c.put(b"put/warm".to_vec(), val.to_vec()).await?;
        }
        let meter = CpuMeter::start(&ctx.cluster.pids());
        let v = Arc::clone(&val);
        let mut tally = closed_loop(&conns, clients, p.duration, move |conn, client, i| {
            let v = Arc::clone(&v);
            async move {
                conn.put(format!("put/{client:03}/{:04}", i % 1024).into_bytes(), v.to_vec())
                    .await
            }
        })
        .await?;
        let cpu = meter.finish(&ctx.cluster.pids());
        let mut figures = closed_loop_figures("writes", "write", &mut tally, &cpu);
        figures.push(figure("cluster CPU", "cores", cpu.cluster_cores(), false));
        out.push(measurement(format!("{clients} clients"), cpu, tally.errors, figures));
    }
    Ok(out)
}

async fn get<D: Driver>(ctx: &Ctx<'_, D>) -> Result<Vec<Measurement>> {
    let p = ctx.params;
    ctx.progress.set_message(format!("get: writing {} keys", p.get_keys));
    let conns = pool(ctx.driver, ctx.cluster, p.get_clients.min(p.max_conns), TUNING).await?;
    let val = value(p.value_size);
    for start in (0..p.get_keys).step_by(64) {
        let batch =
            (start..(start + 64).min(p.get_keys)).map(|k| conns[k % conns.len()].put(get_key(k as u64), val.clone()));
        for r in join_all(batch).await {
            r?;
        }
    }
    let mut out = Vec::new();
    for serializable in [false, true] {
        let mode = if serializable { "serializable" } else { "linearizable" };
        ctx.progress.set_message(format!("get, {mode}"));
        let meter = CpuMeter::start(&ctx.cluster.pids());
        let keys = p.get_keys as u64;
        let mut tally = closed_loop(&conns, p.get_clients, p.duration, move |conn, client, i| async move {
            let k = (client as u64 * 7919 + i * 104_729) % keys;
            conn.get(get_key(k), serializable).await
        })
        .await?;
        let cpu = meter.finish(&ctx.cluster.pids());
        let figures = closed_loop_figures("reads", "read", &mut tally, &cpu);
        out.push(measurement(
            format!("{mode}, {} clients", p.get_clients),
            cpu,
            tally.errors,
            figures,
        ));
    }
    Ok(out)
}

fn get_key(k: u64) -> Vec<u8> {
    format!("get/{k:06}").into_bytes()
}

/// Leases kept alive, and how long their grants took.
type Granted<C> = (Vec<<C as Conn>::Lease>, Latencies);

/// Grants `count` leases from 64 concurrent tasks and starts keeping each
/// alive; returns the leases and the grant latencies.
async fn grant_and_keep<C: Conn>(
    conns: &[C],
    count: usize,
    ttl: Duration,
    renew: Duration,
    renewals: &Arc<AtomicU64>,
) -> Result<Granted<C>> {
    const WORKERS: usize = 64;
    let workers = WORKERS.min(count.max(1));
    let tasks: Vec<JoinHandle<Result<Granted<C>>>> = (0..workers)
        .map(|w| {
            let conns = conns.to_vec();
            let renewals = Arc::clone(renewals);
            tokio::spawn(async move {
                let mut leases = Vec::new();
                let mut lat = Latencies::default();
                for i in (w..count).step_by(workers) {
                    let conn = &conns[i % conns.len()];
                    let start = Instant::now();
                    let id = conn.lease_grant(ttl).await?;
                    lat.record(start.elapsed());
                    leases.push(conn.keep_lease(id, ttl, renew, Arc::clone(&renewals)).await?);
                }
                Ok((leases, lat))
            })
        })
        .collect();
    let mut leases = Vec::with_capacity(count);
    let mut lat = Latencies::default();
    for t in tasks {
        let (l, g) = t.await.context("lease task")??;
        leases.extend(l);
        lat.merge(g);
    }
    Ok((leases, lat))
}

async fn lease<D: Driver>(ctx: &Ctx<'_, D>) -> Result<Vec<Measurement>> {
    let p = ctx.params;
    let mut out = Vec::new();
    for &count in &p.lease_counts {
        ctx.progress.set_message(format!("lease: granting {count}"));
        let conns = pool(ctx.driver, ctx.cluster, count.div_ceil(p.leases_per_conn), TUNING).await?;
        let renewals = Arc::new(AtomicU64::new(0));
        let meter = CpuMeter::start(&ctx.cluster.pids());
        let (leases, mut grant_lat) = grant_and_keep(&conns, count, p.lease_ttl, p.lease_renew, &renewals).await?;
        let grant_cpu = meter.finish(&ctx.cluster.pids());
        out.push(measurement(
            format!("{count} leases: grant and start keeping"),
            grant_cpu,
            0,
            vec![
                figure("grants/s", "/s", count as f64 / grant_cpu.wall_s, true),
                figure("grant p50", "ms", grant_lat.quantile_ms(0.5), false),
                figure("grant p99", "ms", grant_lat.quantile_ms(0.99), false),
            ],
        ));
        // Let the renewals spread out over a whole interval, then measure
        // the steady state.
        ctx.progress.set_message(format!("lease: keeping {count} alive"));
        sleep(p.lease_renew).await;
        let steady = p.duration.max(p.lease_renew * 2);
        let before = renewals.load(Ordering::Relaxed);
        let meter = CpuMeter::start(&ctx.cluster.pids());
        sleep(steady).await;
        let cpu = meter.finish(&ctx.cluster.pids());
        let renewed = (renewals.load(Ordering::Relaxed) - before) as f64;
        let expected = count as f64 / p.lease_renew.as_secs_f64();
        out.push(measurement(
            format!("{count} leases: steady state"),
            cpu,
            0,
            vec![
                figure("renewals/s", "/s", renewed / cpu.wall_s, true),
                figure("renewals/s expected", "/s", expected, true),
                figure("cluster CPU", "cores", cpu.cluster_cores(), false),
                figure(
                    "cluster CPU per renewal",
                    "µs",
                    cpu.cluster_s * 1e6 / renewed.max(1.0),
                    false,
                ),
            ],
        ));
        drop(leases);
    }
    Ok(out)
}

/// Renewal throughput: each client holds a lease of its own and renews it
/// in a closed loop (renew, wait for the acknowledgement, renew again), the
/// most renewals the cluster can be made to commit and answer. Real
/// clients renew every third of the TTL; this is the load of a renewal
/// storm, e.g. every agent reconnecting at once after a network blip.
async fn renew<D: Driver>(ctx: &Ctx<'_, D>) -> Result<Vec<Measurement>> {
    let p = ctx.params;
    let mut out = Vec::new();
    for &clients in &p.renew_clients {
        ctx.progress.set_message(format!("renew, {clients} clients"));
        let conns = pool(ctx.driver, ctx.cluster, clients.min(p.max_conns), TUNING).await?;
        let mut ids = Vec::with_capacity(clients);
        for client in 0..clients {
            ids.push(conns[client % conns.len()].lease_grant(p.lease_ttl).await?);
        }
        // Warm-up: every connection has renewed once before the clock starts.
        for (c, id) in conns.iter().zip(&ids) {
            c.renew_once(*id).await?;
        }
        let ids = Arc::new(ids);
        let meter = CpuMeter::start(&ctx.cluster.pids());
        let mut tally = closed_loop(&conns, clients, p.duration, move |conn, client, _| {
            let id = ids[client];
            async move { conn.renew_once(id).await }
        })
        .await?;
        let cpu = meter.finish(&ctx.cluster.pids());
        let figures = closed_loop_figures("renewals", "renewal", &mut tally, &cpu);
        out.push(measurement(format!("{clients} clients"), cpu, tally.errors, figures));
    }
    Ok(out)
}

async fn election<D: Driver>(ctx: &Ctx<'_, D>) -> Result<Vec<Measurement>> {
    let p = ctx.params;
    ctx.progress
        .set_message(format!("election, {} candidates", p.candidates));
    let name = "bench-election";
    let conns = pool(ctx.driver, ctx.cluster, p.candidates, TUNING).await?;
    ctx.driver.prepare_election(&conns[0], name).await?;
    let ttl = Duration::from_secs(10);
    let unused = Arc::new(AtomicU64::new(0));
    let mut leases = Vec::new();
    for c in &conns {
        let id = c.lease_grant(ttl).await?;
        leases.push(c.keep_lease(id, ttl, ttl / 3, Arc::clone(&unused)).await?);
    }
    let resigned_at: Arc<Mutex<Option<Instant>>> = Arc::default();
    let handovers: Arc<Mutex<Latencies>> = Arc::default();
    let meter = CpuMeter::start(&ctx.cluster.pids());
    let deadline = Instant::now() + p.duration;
    let tasks: Vec<JoinHandle<Result<()>>> = conns
        .into_iter()
        .zip(leases)
        .enumerate()
        .map(|(i, (conn, lease))| {
            let resigned_at = Arc::clone(&resigned_at);
            let handovers = Arc::clone(&handovers);
            tokio::spawn(async move {
                let candidate = format!("c{i}");
                loop {
                    let held = conn.campaign(name, &candidate, &lease).await?;
                    let elected = Instant::now();
                    if let Some(resign) = lock(&resigned_at).take() {
                        lock(&handovers).record(elected - resign);
                    }
                    if elected >= deadline {
                        conn.resign(held).await?;
                        return Ok(());
                    }
                    *lock(&resigned_at) = Some(Instant::now());
                    conn.resign(held).await?;
                }
            })
        })
        .collect();
    // Every candidate leaves once elected after the deadline; the last
    // ones may wait a little for their turn.
    let joined = timeout(Duration::from_secs(15), async {
        for t in tasks {
            t.await.context("candidate task")??;
        }
        Ok::<(), anyhow::Error>(())
    })
    .await;
    match joined {
        Ok(r) => r?,
        Err(_) => bail!("candidates did not finish within 15 s of the deadline"),
    }
    let cpu = meter.finish(&ctx.cluster.pids());
    let mut lat = std::mem::take(&mut *lock(&handovers));
    Ok(vec![measurement(
        format!("{} candidates", p.candidates),
        cpu,
        0,
        vec![
            figure("handovers/s", "/s", lat.len() as f64 / cpu.wall_s, true),
            figure("resign → next elected p50", "ms", lat.quantile_ms(0.5), false),
            figure("resign → next elected p99", "ms", lat.quantile_ms(0.99), false),
        ],
    )])
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn failover<D: Driver>(ctx: &mut Ctx<'_, D>) -> Result<Vec<Measurement>> {
    let p = ctx.params;
    let conn = ctx.driver.connect(&ctx.cluster.endpoints(), FAILOVER_TUNING).await?;
    // Every acknowledged write as (sent, acknowledged).
    let successes: Arc<Mutex<Vec<(Instant, Instant)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let successes = Arc::clone(&successes);
        let stop = Arc::clone(&stop);
        let val = value(p.value_size);
        tokio::spawn(async move {
            let mut errors = 0u64;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let sent = Instant::now();
                match conn
                    .put(format!("failover/{:04}", i % 1024).into_bytes(), val.clone())
                    .await
                {
                    Ok(()) => lock(&successes).push((sent, Instant::now())),
                    Err(_) => {
                        errors += 1;
                        sleep(Duration::from_millis(10)).await;
                    }
                }
                i += 1;
            }
            errors
        })
    };
    let mut out = Vec::new();
    for round in 0..p.failover_rounds {
        ctx.progress.set_message(format!("failover, round {}", round + 1));
        sleep(Duration::from_millis(1500)).await;
        let leader = poll(Duration::from_secs(30), || find_leader(ctx.driver, ctx.cluster))
            .await
            .ok_or_else(|| anyhow!("no agreed leader before the kill"))?;
        let mut meter = CpuMeter::start(&ctx.cluster.pids());
        let killed = Instant::now();
        ctx.cluster.kill(leader)?;
        let new_leader = poll(Duration::from_secs(30), || async {
            let views = join_all(
                (0..MEMBERS)
                    .filter(|&m| m != leader)
                    .map(|m| ctx.driver.leader_seen_by(ctx.cluster, m)),
            )
            .await;
            views
                .into_iter()
                .flatten()
                .find(|&l| l != leader)
                .map(|_| Instant::now())
        })
        .await
        .ok_or_else(|| anyhow!("no new leader within 30 s"))?;
        // The first write *sent* after the kill that succeeded: a write the
        // old leader committed just before it died can be acknowledged a
        // moment after the kill, and says nothing about the new leader.
        let first_after = poll(Duration::from_secs(30), || async {
            lock(&successes)
                .iter()
                .find(|(sent, _)| *sent > killed)
                .map(|(_, acked)| *acked)
        })
        .await
        .ok_or_else(|| anyhow!("no successful write within 30 s of the kill"))?;
        let last_before = lock(&successes)
            .iter()
            .map(|(_, acked)| *acked)
            .filter(|&t| t <= killed)
            .max();
        let last_before = last_before.ok_or_else(|| anyhow!("no successful write before the kill"))?;
        let cpu = {
            meter.sample(&ctx.cluster.pids());
            meter.finish(&ctx.cluster.pids())
        };
        out.push(measurement(
            "leader killed".to_owned(),
            cpu,
            0,
            vec![
                figure(
                    "unavailable (last write before → first after)",
                    "ms",
                    ms(first_after - last_before),
                    false,
                ),
                figure("kill → new leader reported", "ms", ms(new_leader - killed), false),
            ],
        ));
        // Bring the killed member back and let it catch up before the next
        // round.
        ctx.cluster.restart(leader)?;
        poll(Duration::from_secs(30), || async {
            (ctx.driver.leader_seen_by(ctx.cluster, leader).await.is_some()
                && find_leader(ctx.driver, ctx.cluster).await.is_some())
            .then_some(())
        })
        .await
        .ok_or_else(|| anyhow!("restarted member {} did not rejoin within 30 s", leader + 1))?;
        lock(&successes).clear();
    }
    stop.store(true, Ordering::Relaxed);
    let errors = writer.await.context("writer task")?;
    if let Some(last) = out.last_mut() {
        last.errors = errors;
    }
    Ok(out)
}

/// Calls `probe` every 10 ms until it yields something or `limit` passes.
async fn poll<T, F, Fut>(limit: Duration, mut probe: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = probe().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        sleep(Duration::from_millis(10)).await;
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn role_failover<D: Driver>(ctx: &Ctx<'_, D>) -> Result<Vec<Measurement>> {
    let p = ctx.params;
    let name = "bench-role";
    let holder = ctx.driver.connect(&ctx.cluster.endpoints(), TUNING).await?;
    let next = ctx.driver.connect(&ctx.cluster.endpoints(), TUNING).await?;
    ctx.driver.prepare_election(&holder, name).await?;
    let unused = Arc::new(AtomicU64::new(0));
    let renew = p.role_ttl / 3;
    let mut out = Vec::new();
    for round in 0..p.role_rounds {
        ctx.progress.set_message(format!("role failover, round {}", round + 1));
        let a = holder.lease_grant(p.role_ttl).await?;
        let lease_a = holder.keep_lease(a, p.role_ttl, renew, Arc::clone(&unused)).await?;
        let b = next.lease_grant(p.role_ttl).await?;
        let lease_b = next.keep_lease(b, p.role_ttl, renew, Arc::clone(&unused)).await?;
        let held_a = holder.campaign(name, &format!("a{round}"), &lease_a).await?;
        let waiting = {
            let next = next.clone();
            let candidate = format!("b{round}");
            tokio::spawn(async move {
                let held = next.campaign(name, &candidate, &lease_b).await;
                (held, Instant::now(), lease_b)
            })
        };
        // Let the second candidate queue up.
        sleep(Duration::from_millis(300)).await;
        let meter = CpuMeter::start(&ctx.cluster.pids());
        let last_renewal = lease_a.die_after_next_renewal().await;
        drop(held_a);
        let limit = p.role_ttl * 3 + Duration::from_secs(10);
        let (held_b, elected, lease_b) = timeout(limit, waiting)
            .await
            .map_err(|_| anyhow!("the next candidate was not elected within {limit:?}"))?
            .context("candidate task")?;
        let held_b = held_b?;
        let cpu = meter.finish(&ctx.cluster.pids());
        let takeover = ms(elected - last_renewal);
        out.push(measurement(
            format!("TTL {} s", p.role_ttl.as_secs_f64()),
            cpu,
            0,
            vec![
                figure("last renewal → next holder", "ms", takeover, false),
                figure("beyond the TTL", "ms", takeover - ms(p.role_ttl), false),
            ],
        ));
        next.resign(held_b).await?;
        drop(lease_b);
    }
    Ok(out)
}

async fn memory<D: Driver>(ctx: &Ctx<'_, D>) -> Result<Vec<Measurement>> {
    let p = ctx.params;
    let meter = CpuMeter::start(&ctx.cluster.pids());
    let empty = rss_of(ctx.cluster);
    ctx.progress
        .set_message(format!("memory: writing {} keys", p.memory_keys));
    let conns = pool(ctx.driver, ctx.cluster, p.max_conns, TUNING).await?;
    let val = Arc::new(value(p.value_size));
    let next_key = Arc::new(AtomicU64::new(0));
    let total = p.memory_keys as u64;
    let writers: Vec<JoinHandle<Result<()>>> = (0..64)
        .map(|w| {
            let conn = conns[w % conns.len()].clone();
            let (val, next_key) = (Arc::clone(&val), Arc::clone(&next_key));
            tokio::spawn(async move {
                loop {
                    let k = next_key.fetch_add(1, Ordering::Relaxed);
                    if k >= total {
                        return Ok(());
                    }
                    conn.put(format!("mem/{k:08}").into_bytes(), val.to_vec()).await?;
                }
            })
        })
        .collect();
    for w in writers {
        w.await.context("writer task")??;
    }
    ctx.progress
        .set_message(format!("memory: keeping {} leases", p.memory_leases));
    let lease_conns = pool(
        ctx.driver,
        ctx.cluster,
        p.memory_leases.div_ceil(p.leases_per_conn),
        TUNING,
    )
    .await?;
    let renewals = Arc::new(AtomicU64::new(0));
    let (leases, _) = grant_and_keep(&lease_conns, p.memory_leases, p.lease_ttl, p.lease_renew, &renewals).await?;
    sleep(p.lease_renew).await;
    let full = rss_of(ctx.cluster);
    let cpu = meter.finish(&ctx.cluster.pids());
    drop(leases);
    let mib = |v: &[f64]| crate::stats::median(v) / (1024.0 * 1024.0);
    let max_mib = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max) / (1024.0 * 1024.0);
    Ok(vec![measurement(
        format!("{} keys + {} leases", p.memory_keys, p.memory_leases),
        cpu,
        0,
        vec![
            figure("RSS per node, empty (median)", "MiB", mib(&empty), false),
            figure("RSS per node, loaded (median)", "MiB", mib(&full), false),
            figure("RSS per node, loaded (max)", "MiB", max_mib(&full), false),
        ],
    )])
}

fn rss_of(cluster: &Cluster) -> Vec<f64> {
    cluster
        .pids()
        .into_iter()
        .filter_map(rss_bytes)
        .map(|b| b as f64)
        .collect()
}
