//! `roster-bench`: runs the same workloads against a Roster cluster and an
//! etcd cluster on this machine and reports medians and Roster/etcd ratios.
//!
//! ```sh
//! scripts/bench                                   # the full benchmark → docs/BENCHMARKS.md
//! roster-bench run --smoke                        # seconds-long run of every workload (CI)
//! roster-bench floor                              # fsync and loopback round trip only
//! ```
//!
//! The etcd driver needs the `etcd` feature (its client crate needs
//! `protoc`); without it only Roster can be measured.

mod cluster;
mod cpu;
mod driver;
mod floor;
mod report;
mod stats;
mod workload;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use crate::cluster::{Cluster, ClusterSpec, Timing};
use crate::driver::roster::RosterDriver;
use crate::driver::{Driver, System};
use crate::report::{Machine, Report, Versions};
use crate::workload::{Ctx, Measurement, Params, Workload};

#[derive(Parser)]
#[command(
    name = "roster-bench",
    version,
    about = "Roster and etcd side by side, same workloads"
)]
struct Cli {
    /// Print the results as JSON on stdout instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run workloads on both systems, alternately, for several rounds.
    Run(Box<RunArgs>),
    /// Measure only this machine's floor: fsync and loopback round trip.
    Floor {
        /// Directory on the disk to measure.
        #[arg(long, default_value = "target/bench-data")]
        data_root: PathBuf,
    },
}

#[derive(Args)]
struct RunArgs {
    /// Rounds; every workload runs once per system per round.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds of each timed phase.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Workloads to run (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    workloads: Vec<Workload>,
    /// Systems to measure (default: Roster, and etcd when built with it).
    #[arg(long, value_enum, value_delimiter = ',')]
    systems: Vec<System>,
    /// A seconds-long run of every workload with tiny sizes (CI).
    #[arg(long)]
    smoke: bool,
    /// Writer counts of the put workload, one phase each (default 1,16,256;
    /// one count is handy under a profiler).
    #[arg(long, value_delimiter = ',')]
    put_clients: Vec<usize>,
    /// Renewer counts of the renew workload, one phase each (default
    /// 1,16,256).
    #[arg(long, value_delimiter = ',')]
    renew_clients: Vec<usize>,
    /// The rosterd binary (default: next to this one).
    #[arg(long)]
    rosterd: Option<PathBuf>,
    /// The etcd binary.
    #[arg(long, default_value = "etcd")]
    etcd: PathBuf,
    /// Directory for the clusters' data directories (on the disk to test).
    #[arg(long, default_value = "target/bench-data")]
    data_root: PathBuf,
    /// Write the Markdown report here (e.g. docs/BENCHMARKS.md).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Also write every measurement as JSON here.
    #[arg(long)]
    json_out: Option<PathBuf>,
    /// Raft heartbeat, both systems.
    #[arg(long, default_value_t = 100)]
    heartbeat_ms: u64,
    /// Lower end of the election timeout, both systems (etcd's
    /// --election-timeout).
    #[arg(long, default_value_t = 1000)]
    election_min_ms: u64,
    /// Upper end of Roster's election timeout; keep it 2 × the lower end,
    /// which is what etcd uses.
    #[arg(long, default_value_t = 2000)]
    election_max_ms: u64,
    /// The command line to print in the report as the way to reproduce it.
    #[arg(long, default_value = "scripts/bench")]
    reproduce: String,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    // Clusters are started from this (the main) thread, which outlives
    // them: their parent-death signal is tied to it (see cluster.rs).
    runtime.block_on(async {
        match cli.command {
            Cmd::Floor { data_root } => {
                let floor = floor::measure(&data_root, 500)?;
                if cli.json {
                    println!("{}", serde_json::to_string_pretty(&floor)?);
                } else {
                    println!(
                        "fsync p50 {:.3} ms p99 {:.3} ms; loopback RTT p50 {:.3} ms p99 {:.3} ms",
                        floor.fsync_p50_ms, floor.fsync_p99_ms, floor.rtt_p50_ms, floor.rtt_p99_ms
                    );
                }
                Ok(())
            }
            Cmd::Run(args) => run(*args, cli.json).await,
        }
    })
}

fn params(args: &RunArgs) -> Params {
    let duration = Duration::from_secs_f64(args.duration_secs);
    if args.smoke {
        return Params {
            duration: duration.min(Duration::from_millis(500)),
            put_clients: vec![1, 16],
            get_clients: 4,
            get_keys: 100,
            lease_counts: vec![50],
            lease_ttl: Duration::from_secs(3),
            lease_renew: Duration::from_secs(1),
            renew_clients: vec![1, 16],
            candidates: 3,
            failover_rounds: 1,
            role_ttl: Duration::from_secs(2),
            role_rounds: 1,
            memory_keys: 500,
            memory_leases: 50,
            value_size: 256,
            max_conns: 16,
            leases_per_conn: 150,
        };
    }
    Params {
        duration,
        put_clients: if args.put_clients.is_empty() {
            vec![1, 16, 256]
        } else {
            args.put_clients.clone()
        },
        get_clients: 16,
        get_keys: 1000,
        lease_counts: vec![1000, 10_000],
        lease_ttl: Duration::from_secs(9),
        lease_renew: Duration::from_secs(3),
        renew_clients: if args.renew_clients.is_empty() {
            vec![1, 16, 256]
        } else {
            args.renew_clients.clone()
        },
        candidates: 3,
        failover_rounds: 3,
        role_ttl: Duration::from_secs(3),
        role_rounds: 3,
        memory_keys: 100_000,
        memory_leases: 10_000,
        value_size: 256,
        max_conns: 16,
        leases_per_conn: 150,
    }
}

async fn run(args: RunArgs, json: bool) -> Result<()> {
    let started = Instant::now();
    let params = params(&args);
    let rounds = if args.smoke { 1 } else { args.rounds.max(1) };
    let workloads = if args.workloads.is_empty() {
        Workload::ALL.to_vec()
    } else {
        args.workloads.clone()
    };
    // Both systems unless asked otherwise: a build without the etcd driver
    // fails below rather than quietly measuring Roster alone.
    let systems = if args.systems.is_empty() {
        vec![System::Roster, System::Etcd]
    } else {
        args.systems.clone()
    };
    if systems.contains(&System::Etcd) && !cfg!(feature = "etcd") {
        bail!(
            "this roster-bench was built without the `etcd` feature: rebuild with --features etcd, \
             or pass --systems roster to measure Roster alone"
        );
    }
    let rosterd = match &args.rosterd {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("rosterd"),
    };
    if systems.contains(&System::Roster) && !rosterd.exists() {
        bail!("{} not found: build rosterd or pass --rosterd", rosterd.display());
    }
    std::fs::create_dir_all(&args.data_root).with_context(|| format!("creating {}", args.data_root.display()))?;
    let data_root = args.data_root.canonicalize()?;
    let timing = Timing {
        heartbeat_ms: args.heartbeat_ms,
        election_min_ms: args.election_min_ms,
        election_max_ms: args.election_max_ms,
    };
    let spec_of = |system| ClusterSpec {
        binary: match system {
            System::Roster => rosterd.clone(),
            System::Etcd => args.etcd.clone(),
        },
        timing,
        data_root: data_root.clone(),
    };

    eprintln!(
        "measuring the floor (fsync, loopback round trip) in {}",
        data_root.display()
    );
    let floor = floor::measure(&data_root, if args.smoke { 50 } else { 500 })?;

    let total = (rounds * workloads.len() * systems.len()) as u64;
    let progress = progress_bar(total);
    let mut measurements: Vec<Measurement> = Vec::new();
    for round in 0..rounds {
        for &workload in &workloads {
            for &system in &systems {
                progress.set_prefix(format!(
                    "round {}/{rounds} {} {}",
                    round + 1,
                    workload.name(),
                    system.name()
                ));
                if progress.is_hidden() {
                    eprintln!("round {}/{rounds}: {} on {}", round + 1, workload.name(), system.name());
                }
                let name = format!("{}-{}-r{}", system.name().to_lowercase(), workload.name(), round + 1);
                let mut cluster = Cluster::start(system, &spec_of(system), &name)?;
                let got = run_one(system, &mut cluster, &params, round, &progress, workload).await;
                let got = got.with_context(|| format!("member logs of the failed run:\n{}", logs(&cluster)))?;
                cluster.stop();
                measurements.extend(got);
                progress.inc(1);
            }
        }
    }
    progress.finish_and_clear();

    let report = Report {
        command: args.reproduce.clone(),
        date: date(),
        wall_s: started.elapsed().as_secs_f64(),
        machine: Machine::probe(&data_root),
        versions: Versions::probe(&args.etcd),
        timing,
        params,
        rounds,
        floor,
        measurements,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        report.print_table();
    }
    if let Some(path) = &args.json_out {
        report.write_json(path)?;
    }
    if let Some(path) = &args.out {
        report.write_markdown(path)?;
        eprintln!("wrote {}", path.display());
    }
    eprintln!("done in {:.0} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Runs one workload with the driver of `system`.
async fn run_one(
    system: System,
    cluster: &mut Cluster,
    params: &Params,
    round: usize,
    progress: &ProgressBar,
    workload: Workload,
) -> Result<Vec<Measurement>> {
    match system {
        System::Roster => run_with(&RosterDriver, cluster, params, round, progress, workload).await,
        #[cfg(feature = "etcd")]
        System::Etcd => {
            let driver = driver::etcd::EtcdDriver::default();
            run_with(&driver, cluster, params, round, progress, workload).await
        }
        #[cfg(not(feature = "etcd"))]
        System::Etcd => bail!("built without the `etcd` feature"),
    }
}

async fn run_with<D: Driver>(
    driver: &D,
    cluster: &mut Cluster,
    params: &Params,
    round: usize,
    progress: &ProgressBar,
    workload: Workload,
) -> Result<Vec<Measurement>> {
    let ctx = Ctx {
        driver,
        cluster,
        params,
        round,
        progress,
    };
    workload::run(ctx, workload).await
}

fn progress_bar(total: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(total);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {prefix}: {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn logs(cluster: &Cluster) -> String {
    (0..cluster::MEMBERS)
        .map(|m| {
            format!(
                "--- {} member {} ---\n{}",
                cluster.system().name(),
                m + 1,
                cluster.log_tail(m, 15)
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn date() -> String {
    std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
