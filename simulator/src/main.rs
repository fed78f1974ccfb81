//! roster-sim: run one seed, or sweep a range of seeds.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use roster_simulator::{run, Bug, RaftNet, SimConfig, SimReport};

#[derive(Parser, Debug)]
#[command(name = "roster-sim", about = "Deterministic simulation of a Roster cluster")]
struct Args {
    /// Run this one seed (replayable: same seed and options, same trace hash).
    #[arg(long, conflicts_with = "seeds")]
    seed: Option<u64>,
    /// Sweep seeds A..B (B excluded), e.g. `1..201`.
    #[arg(long)]
    seeds: Option<String>,
    /// Cluster size.
    #[arg(long, default_value_t = 3, value_parser = parse_nodes)]
    nodes: usize,
    /// Simulated time of workload and faults, e.g. 60s, 500ms, 2m.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Concurrent clients.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// No faults at all (same as `--faults none`).
    #[arg(long)]
    no_faults: bool,
    /// The kinds of fault to inject: `all` (default), `none`, or a list such
    /// as `crash,partition,loss` or `all,-membership`. Kinds: crash,
    /// power-loss, partition, one-way, bridge, loss, duplicate, delay,
    /// slow-disk, pause, membership, client-kill, client-cut, holder-pause,
    /// clock.
    #[arg(long, default_value = "all", value_parser = roster_simulator::faults::parse)]
    faults: BTreeSet<roster_simulator::faults::Fault>,
    /// Plant a bug, to see the checkers catch it (see the README for the list).
    #[arg(long, value_parser = parse_bug)]
    bug: Option<Bug>,
    /// Clock-rate drift bound: every clock runs within 1 ± rho of true time.
    #[arg(long, default_value_t = roster_simulator::sim::DEFAULT_RHO, value_parser = parse_rho)]
    rho: f64,
    /// Also step clocks by seconds, beyond the drift bound (expected to fail).
    #[arg(long)]
    clock_jumps: bool,
    /// Every client also keeps this many extra leases of 2 s: enough load
    /// that the leader's lease keeper waits up to 10 ms to batch renewals
    /// (from about 25 per client with the default 3 clients), which the
    /// role leases' renewals then share.
    #[arg(long, default_value_t = 0)]
    background_leases: usize,
    /// How Raft messages travel: `messages` (in-process, with seeded loss,
    /// duplication and reordering) or `grpc` (rosterd's own transport over
    /// the simulated connections: cuts, crashes, pauses and delays).
    #[arg(long, default_value = "messages", value_parser = parse_raft_net)]
    raft_net: RaftNet,
    /// Capture the server's and clients' own logs into the trace, e.g.
    /// `info` or `roster_server::api::lease_keeper=debug` (changes the hash).
    #[arg(long, value_parser = parse_log)]
    log: Option<String>,
    /// Apply only these faults of the schedule (indices as the trace numbers
    /// them, e.g. `3,7,12`, or `none`): replays a shrunk run.
    #[arg(long, value_parser = roster_simulator::shrink::parse_keep)]
    keep_faults: Option<BTreeSet<usize>>,
    /// With --seed: if the run fails, shrink its fault schedule to a
    /// shorter one that still breaks the same rule.
    #[arg(long, requires = "seed")]
    shrink: bool,
    /// Print the sweep's summary as JSON (failing runs are not printed).
    #[arg(long)]
    json: bool,
    /// Write the whole event trace of a single run to this file.
    #[arg(long)]
    trace: Option<std::path::PathBuf>,
}

fn parse_raft_net(s: &str) -> Result<RaftNet, String> {
    match s {
        "messages" => Ok(RaftNet::Messages),
        "grpc" => Ok(RaftNet::Grpc),
        _ => Err(format!("'{s}': expected messages or grpc")),
    }
}

fn parse_bug(s: &str) -> Result<Bug, String> {
    Bug::ALL.iter().copied().find(|b| b.name() == s).ok_or_else(|| {
        let known: Vec<_> = Bug::ALL.iter().map(|b| b.name()).collect();
        format!("unknown bug '{s}' (known: {})", known.join(", "))
    })
}

fn parse_log(s: &str) -> Result<String, String> {
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_string())
        .map_err(|e| format!("bad --log filter '{s}': {e}"))
}

fn parse_rho(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..0.2).contains(&r) => Ok(r),
        _ => Err(format!("--rho must be a number in [0, 0.2), not '{s}'")),
    }
}

fn parse_nodes(s: &str) -> Result<usize, String> {
    match s {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err(format!("--nodes must be 3 or 5, not '{s}'")),
    }
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = num.parse().map_err(|_| format!("bad duration '{s}'"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("bad duration unit in '{s}' (use ms, s or m)")),
    }
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once("..")
        .ok_or_else(|| format!("bad seed range '{s}', expected A..B"))?;
    let a: u64 = a.trim().parse().map_err(|_| format!("bad seed '{a}'"))?;
    let b: u64 = b.trim().parse().map_err(|_| format!("bad seed '{b}'"))?;
    if b <= a {
        return Err(format!("empty seed range '{s}'"));
    }
    Ok((a, b))
}

fn speed(r: &SimReport) -> f64 {
    r.simulated.as_secs_f64() / r.wall.as_secs_f64().max(1e-9)
}

fn print_one(r: &SimReport) {
    // A closed stdout (e.g. `| head`) ends the output, not the process.
    let _ = write_one(&mut std::io::stdout().lock(), r);
}

fn write_one(out: &mut impl Write, r: &SimReport) -> std::io::Result<()> {
    let s = &r.stats;
    writeln!(
        out,
        "seed {}: {}  trace {:016x} ({} lines)",
        r.seed,
        if r.violations.is_empty() { "OK" } else { "VIOLATION" },
        r.hash,
        r.trace_lines
    )?;
    writeln!(
        out,
        "simulated {:.1}s, wall {:.3}s ({:.0}x real time)",
        r.simulated.as_secs_f64(),
        r.wall.as_secs_f64(),
        speed(r)
    )?;
    writeln!(
        out,
        "writes {} acked / {} unknown, reads {}, elections {}, fenced writes {} ({} stale rejected), dead clients {}, watch events {}, linearizability inconclusive for {} keys\ncrashes {}, partitions {}, max term {}, last index {}, messages {} delivered / {} dropped",
        s.writes_acked,
        s.writes_unknown,
        s.reads_ok,
        s.elections,
        s.fenced_writes,
        s.stale_writes_rejected,
        s.dead_clients,
        s.watch_events,
        s.linearizability_unknown,
        s.crashes,
        s.partitions,
        s.max_term,
        s.last_index,
        s.messages_delivered,
        s.messages_dropped
    )?;
    for rule in &r.checked {
        let broken: Vec<_> = r.violations.iter().filter(|v| v.rule == *rule).collect();
        match broken.first() {
            None => writeln!(out, "  ok        {rule}")?,
            Some(v) => writeln!(out, "  VIOLATED  {rule}: {} ({} times)", v.detail, broken.len())?,
        }
    }
    if !r.violations.is_empty() {
        writeln!(
            out,
            "the story up to the first violation (faults, roles, client calls; --trace FILE has every line):"
        )?;
        for line in &r.tail {
            writeln!(out, "  {line}")?;
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    let args = Args::parse();
    let base = SimConfig {
        seed: 0,
        nodes: args.nodes,
        duration: args.duration,
        clients: args.clients,
        faults: !args.no_faults,
        keep_trace: args.trace.is_some(),
        bug: args.bug,
        rho: args.rho,
        clock_jumps: args.clock_jumps,
        background_leases: args.background_leases,
        log: args.log.clone(),
        keep_faults: args.keep_faults.clone(),
        fault_kinds: args.faults.clone(),
        raft_net: args.raft_net,
    };
    match (args.seed, &args.seeds) {
        (Some(seed), _) => {
            let cfg = SimConfig { seed, ..base };
            let mut report = run(&cfg);
            print_one(&report);
            if args.shrink && !report.violations.is_empty() {
                let bar = ProgressBar::new_spinner();
                bar.set_message("shrinking the fault schedule");
                let shrunk = roster_simulator::shrink::shrink(&cfg, report, |faults, fails| {
                    bar.set_message(format!(
                        "shrinking: tried {faults} faults ({})",
                        if fails { "fails" } else { "passes" }
                    ));
                    bar.tick();
                });
                bar.finish_and_clear();
                println!();
                println!(
                    "shrunk: {} of {} faults still break {} ({} runs); replay with --seed {seed} --keep-faults {}",
                    shrunk.keep.len(),
                    shrunk.original,
                    shrunk.rule,
                    shrunk.runs,
                    roster_simulator::shrink::format_keep(&shrunk.keep)
                );
                print_one(&shrunk.report);
                report = shrunk.report;
            }
            if let (Some(path), Some(lines)) = (&args.trace, &report.full_trace) {
                if let Err(e) = std::fs::write(path, lines.join("\n") + "\n") {
                    eprintln!("writing {}: {e}", path.display());
                    return ExitCode::from(2);
                }
            }
            if report.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        (None, Some(range)) => {
            let (a, b) = match parse_range(range) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            let wall = Instant::now();
            let mut simulated = Duration::ZERO;
            let mut failures = Vec::new();
            // Hidden when stderr is not a terminal (CI): the summary below
            // still prints.
            let bar = ProgressBar::new(b - a);
            bar.set_style(
                ProgressStyle::with_template("{bar:30} {pos}/{len} seeds  {msg}  [{elapsed_precise} < {eta}]")
                    .expect("a valid progress template"),
            );
            for seed in a..b {
                let report = run(&SimConfig { seed, ..base.clone() });
                simulated += report.simulated;
                if !report.violations.is_empty() {
                    failures.push(seed);
                    if !args.json {
                        bar.suspend(|| print_one(&report));
                    }
                }
                bar.inc(1);
                let elapsed = wall.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "{} failed, {:.0}x real time",
                    failures.len(),
                    simulated.as_secs_f64() / elapsed
                ));
            }
            bar.finish_and_clear();
            let wall = wall.elapsed().as_secs_f64();
            if args.json {
                let summary = serde_json::json!({
                    "runs": b - a,
                    "failures": failures,
                    "seeds_per_second": (b - a) as f64 / wall,
                    "simulated_seconds": simulated.as_secs_f64(),
                    "wall_seconds": wall,
                    "simulated_per_wall_second": simulated.as_secs_f64() / wall,
                });
                println!("{summary}");
            } else {
                println!(
                    "runs {}, failures {}{}, {:.1} seeds/s, {:.0} simulated s per wall s ({:.1}s simulated in {:.2}s)",
                    b - a,
                    failures.len(),
                    if failures.is_empty() {
                        String::new()
                    } else {
                        format!(" (seeds {failures:?})")
                    },
                    (b - a) as f64 / wall,
                    simulated.as_secs_f64() / wall,
                    simulated.as_secs_f64(),
                    wall
                );
            }
            if failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        (None, None) => {
            eprintln!("give --seed S or --seeds A..B");
            ExitCode::from(2)
        }
    }
}
