//! Turning measurements into medians, Roster/etcd ratios, goal checks, a
//! terminal table, JSON and `docs/BENCHMARKS.md`.
//!
//! Every quoted number is a median over rounds of runs that other
//! processes did not disturb (see `cpu.rs`); when every run of a figure
//! was disturbed, the median of all of them is quoted and marked.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};
use comfy_table::{presets::UTF8_FULL_CONDENSED, Cell, CellAlignment, Table};
use serde::Serialize;

use crate::cluster::Timing;
use crate::cpu::BUSY_OTHER_CORES;
use crate::driver::System;
use crate::floor::Floor;
use crate::stats::median;
use crate::workload::{Measurement, Params, Workload};

/// What the machine is.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `model name` of /proc/cpuinfo.
    pub cpu: String,
    /// Cores available to us.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// Total memory, GiB.
    pub memory_gib: f64,
    /// Where the data directories were.
    pub data_root: String,
}

impl Machine {
    /// Reads procfs.
    pub fn probe(data_root: &Path) -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        let meminfo = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_owned(),
            memory_gib: kib / (1024.0 * 1024.0),
            data_root: data_root.display().to_string(),
        }
    }
}

/// Versions of what was measured.
#[derive(Debug, Clone, Serialize)]
pub struct Versions {
    /// roster-bench's crate version plus the git commit, if known.
    pub roster: String,
    /// `etcd --version`, first line.
    pub etcd: String,
    /// The etcd client crate.
    pub etcd_client: String,
}

impl Versions {
    /// Asks git and etcd.
    pub fn probe(etcd: &Path) -> Versions {
        let first_line = |cmd: &mut Command| {
            cmd.output()
                .ok()
                .filter(|o| o.status.success())
                .and_then(|o| String::from_utf8(o.stdout).ok())
                .and_then(|s| s.lines().next().map(str::to_owned))
        };
        let commit = first_line(Command::new("git").args(["rev-parse", "--short", "HEAD"]));
        Versions {
            roster: format!(
                "{} ({})",
                env!("CARGO_PKG_VERSION"),
                commit.as_deref().unwrap_or("commit unknown")
            ),
            etcd: first_line(Command::new(etcd).arg("--version")).unwrap_or_else(|| "not run".into()),
            etcd_client: "etcd-client 0.21 (tonic 0.14)".into(),
        }
    }
}

/// Everything a benchmark produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The command that reproduces it.
    pub command: String,
    /// When it ran (UTC, from `date`).
    pub date: String,
    /// Wall time of the whole benchmark, seconds.
    pub wall_s: f64,
    /// The machine.
    pub machine: Machine,
    /// Versions.
    pub versions: Versions,
    /// Raft timing given to both systems.
    pub timing: Timing,
    /// Workload sizes.
    pub params: Params,
    /// Rounds run.
    pub rounds: usize,
    /// The machine's floor.
    pub floor: Floor,
    /// Every measured phase.
    pub measurements: Vec<Measurement>,
}

/// A figure summarised over rounds, per system.
#[derive(Debug, Clone)]
struct Row {
    workload: Workload,
    phase: String,
    metric: String,
    unit: &'static str,
    higher_is_better: bool,
    /// Per system: median, runs used, runs total.
    values: BTreeMap<System, Summary>,
}

#[derive(Debug, Clone, Copy)]
struct Summary {
    median: f64,
    used: usize,
    total: usize,
}

impl Report {
    fn rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = Vec::new();
        let mut samples: BTreeMap<(usize, System), (Vec<f64>, Vec<f64>)> = BTreeMap::new();
        for m in &self.measurements {
            for f in &m.figures {
                let index = match rows
                    .iter()
                    .position(|r| r.workload == m.workload && r.phase == m.phase && r.metric == f.metric)
                {
                    Some(i) => i,
                    None => {
                        rows.push(Row {
                            workload: m.workload,
                            phase: m.phase.clone(),
                            metric: f.metric.clone(),
                            unit: f.unit,
                            higher_is_better: f.higher_is_better,
                            values: BTreeMap::new(),
                        });
                        rows.len() - 1
                    }
                };
                let (clean, all) = samples.entry((index, m.system)).or_default();
                all.push(f.value);
                if !m.cpu.disturbed() {
                    clean.push(f.value);
                }
            }
        }
        for ((index, system), (clean, all)) in samples {
            let used = if clean.is_empty() { &all } else { &clean };
            rows[index].values.insert(
                system,
                Summary {
                    median: median(used),
                    used: clean.len(),
                    total: all.len(),
                },
            );
        }
        rows.sort_by_key(|r| r.workload);
        rows
    }

    /// Prints the summary table to stdout.
    pub fn print_table(&self) {
        let mut table = Table::new();
        table.load_preset(UTF8_FULL_CONDENSED);
        table.set_header(["workload", "phase", "metric", "Roster", "etcd", "Roster/etcd", "better"]);
        for r in self.rows() {
            let (roster, etcd) = (r.values.get(&System::Roster), r.values.get(&System::Etcd));
            table.add_row(vec![
                Cell::new(r.workload.name()),
                Cell::new(&r.phase),
                Cell::new(format!("{} ({})", r.metric, r.unit)),
                Cell::new(roster.map_or("-".into(), |s| summary_cell(*s))).set_alignment(CellAlignment::Right),
                Cell::new(etcd.map_or("-".into(), |s| summary_cell(*s))).set_alignment(CellAlignment::Right),
                Cell::new(ratio_cell(roster, etcd)).set_alignment(CellAlignment::Right),
                Cell::new(winner(&r)),
            ]);
        }
        println!("{table}");
        println!(
            "floor: fsync p50 {:.3} ms, loopback RTT p50 {:.3} ms",
            self.floor.fsync_p50_ms, self.floor.rtt_p50_ms
        );
        let disturbed = self.measurements.iter().filter(|m| m.cpu.disturbed()).count();
        println!(
            "{} of {} measured phases disturbed by other processes (> {BUSY_OTHER_CORES} cores)",
            disturbed,
            self.measurements.len()
        );
    }

    /// Writes the JSON form.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self)?;
        fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))
    }

    /// Writes `docs/BENCHMARKS.md`.
    pub fn write_markdown(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(path, self.markdown()).with_context(|| format!("writing {}", path.display()))
    }

    fn markdown(&self) -> String {
        let rows = self.rows();
        let mut md = String::new();
        let w = &mut md;
        let _ = writeln!(w, "# Benchmarks: Roster and etcd side by side\n");
        let _ = writeln!(
            w,
            "Generated by `roster-bench` on {} in {:.0} min. Reproduce with:\n\n```sh\n{}\n```\n",
            self.date,
            self.wall_s / 60.0,
            self.command
        );
        let _ = writeln!(
            w,
            "Every figure is the **median over {} rounds**; the two systems ran alternately \
             (Roster, etcd, Roster, etcd, …), each workload on a fresh 3-member cluster, and only \
             one cluster ran at a time. The ratio column is Roster ÷ etcd; *better* says which \
             system wins the figure. Absolute numbers belong to this machine only — compare the \
             ratios.\n",
            self.rounds
        );
        self.md_machine(w);
        self.md_floor(w, &rows);
        self.md_goals(w, &rows);
        md_results(w, &rows);
        md_method(w);
        self.md_cpu(w);
        md
    }

    fn md_machine(&self, w: &mut String) {
        let m = &self.machine;
        let v = &self.versions;
        let t = &self.timing;
        let _ = writeln!(w, "## Machine, versions, settings\n");
        let _ = writeln!(w, "| | |\n|---|---|");
        let _ = writeln!(w, "| CPU | {} |", m.cpu);
        let _ = writeln!(w, "| cores | {} (shared with other work on this machine) |", m.cores);
        let _ = writeln!(w, "| memory | {:.0} GiB |", m.memory_gib);
        let _ = writeln!(w, "| kernel | {} |", m.kernel);
        let _ = writeln!(w, "| data directories | `{}` (both systems, same disk) |", m.data_root);
        let _ = writeln!(w, "| Roster | rosterd {} , release build |", v.roster);
        let _ = writeln!(w, "| etcd | {} (Debian package) |", v.etcd);
        let _ = writeln!(w, "| clients | roster-client (this repo), {} |", v.etcd_client);
        let _ = writeln!(
            w,
            "| Raft timing | heartbeat {} ms, election timeout {}–{} ms (rosterd `--heartbeat-ms {} \
             --election-min-ms {} --election-max-ms {}`; etcd `--heartbeat-interval {} --election-timeout {}`) |",
            t.heartbeat_ms,
            t.election_min_ms,
            t.election_max_ms,
            t.heartbeat_ms,
            t.election_min_ms,
            t.election_max_ms,
            t.heartbeat_ms,
            t.election_min_ms
        );
        let _ = writeln!(
            w,
            "| threads | each system's default: rosterd one async worker (`--worker-threads 1`) plus its \
             log writer; etcd GOMAXPROCS {} |",
            std::env::var("GOMAXPROCS").unwrap_or_else(|_| "= cores (Go's default)".into())
        );
        let _ = writeln!(
            w,
            "| durability | both fsync every committed entry before acknowledging (rosterd: fdatasync \
             of its append-only log, group commit; etcd: WAL fsync) |"
        );
        let p = &self.params;
        let _ = writeln!(
            w,
            "| workload sizes | {} s per timed phase; put with {:?} clients; get with {} clients over {} keys; \
             leases {:?} (TTL {} s, renewed every {} s); election {} candidates; failover {} kills per round; \
             role failover TTL {} s, {} deaths per round; memory {} keys + {} leases; values {} bytes |\n",
            p.duration.as_secs_f64(),
            p.put_clients,
            p.get_clients,
            p.get_keys,
            p.lease_counts,
            p.lease_ttl.as_secs_f64(),
            p.lease_renew.as_secs_f64(),
            p.candidates,
            p.failover_rounds,
            p.role_ttl.as_secs_f64(),
            p.role_rounds,
            p.memory_keys,
            p.memory_leases,
            p.value_size
        );
    }

    fn md_floor(&self, w: &mut String, rows: &[Row]) {
        let f = &self.floor;
        let _ = writeln!(w, "## The floor of this machine\n");
        let _ = writeln!(
            w,
            "Measured by the bench binary on the data disk: a 256-byte write + `fdatasync` loop (appending \
             inside space allocated ahead, the cheapest durable append), and a 1-byte ping-pong over loopback \
             TCP.\n"
        );
        let _ = writeln!(w, "| | p50 | p99 |\n|---|---:|---:|");
        let _ = writeln!(
            w,
            "| fsync (write + fdatasync) | {:.3} ms | {:.3} ms |",
            f.fsync_p50_ms, f.fsync_p99_ms
        );
        let _ = writeln!(
            w,
            "| loopback TCP round trip | {:.3} ms | {:.3} ms |",
            f.rtt_p50_ms, f.rtt_p99_ms
        );
        let single = |system| {
            rows.iter()
                .find(|r| r.workload == Workload::Put && r.phase == "1 clients" && r.metric == "p50")
                .and_then(|r| r.values.get(&system))
                .map(|s| s.median)
        };
        let _ = writeln!(
            w,
            "\nOne fsync plus one round trip is **{:.3} ms**. Single-client write latency (p50), and how \
             many times that floor it is:\n",
            f.write_floor_ms()
        );
        let _ = writeln!(w, "| system | put p50, 1 client | × floor |\n|---|---:|---:|");
        for system in [System::Roster, System::Etcd] {
            if let Some(v) = single(system) {
                let _ = writeln!(w, "| {} | {:.3} ms | {:.1} |", system.name(), v, v / f.write_floor_ms());
            }
        }
        let _ = writeln!(
            w,
            "\nA Raft commit cannot beat the floor: the leader's fsync and a follower's (round trip + \
             fsync) run in parallel, and the client's own round trip comes on top.\n"
        );
    }

    fn md_goals(&self, w: &mut String, rows: &[Row]) {
        let _ = writeln!(w, "## Goals\n");
        let _ = writeln!(w, "| goal | measured (Roster/etcd) | met? |\n|---|---|---|");
        for goal in goals(rows) {
            let _ = writeln!(w, "| {} | {} | {} |", goal.0, goal.1, goal.2);
        }
        let _ = writeln!(w);
    }

    fn md_cpu(&self, w: &mut String) {
        let _ = writeln!(w, "## CPU accounting of every measured phase\n");
        let _ = writeln!(
            w,
            "Cores kept busy on average during the phase: by the cluster (utime + stime of its members), \
             by the load generator (this process), by the kernel (its threads — journal commits after \
             fsync, block and network workers — and interrupts; mostly work done for the cluster, but the \
             kernel does not say for whom) and by everything else on the machine (/proc/stat busy time \
             minus all of those). Phases where everything else used more than {BUSY_OTHER_CORES} cores are \
             **disturbed** and left out of the medians whenever an undisturbed run of the same figure exists.\n"
        );
        let _ = writeln!(
            w,
            "| round | workload | phase | system | wall s | cluster | bench | kernel | other | errors | disturbed |"
        );
        let _ = writeln!(w, "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---|");
        for m in &self.measurements {
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |",
                m.round + 1,
                m.workload.name(),
                m.phase,
                m.system.name(),
                m.cpu.wall_s,
                m.cpu.cluster_cores(),
                m.cpu.bench_cores(),
                m.cpu.kernel_cores(),
                m.cpu.other_cores(),
                m.errors,
                if m.cpu.disturbed() { "**yes**" } else { "" }
            );
        }
        let disturbed = self.measurements.iter().filter(|m| m.cpu.disturbed()).count();
        let _ = writeln!(w, "\n{disturbed} of {} phases were disturbed.", self.measurements.len());
    }
}

fn md_results(w: &mut String, rows: &[Row]) {
    let _ = writeln!(w, "## Results\n");
    let _ = writeln!(
        w,
        "Medians; `(n/m)` after a value means only n of its m runs were undisturbed (all m were used when \
         n is 0).\n"
    );
    for workload in Workload::ALL {
        let of: Vec<&Row> = rows.iter().filter(|r| r.workload == workload).collect();
        if of.is_empty() {
            continue;
        }
        let _ = writeln!(w, "### {}\n", workload.name());
        let _ = writeln!(w, "| phase | metric | Roster | etcd | Roster/etcd | better |");
        let _ = writeln!(w, "|---|---|---:|---:|---:|---|");
        for r in of {
            let (roster, etcd) = (r.values.get(&System::Roster), r.values.get(&System::Etcd));
            let _ = writeln!(
                w,
                "| {} | {} ({}) | {} | {} | {} | {} |",
                r.phase,
                r.metric,
                r.unit,
                roster.map_or("-".into(), |s| summary_cell(*s)),
                etcd.map_or("-".into(), |s| summary_cell(*s)),
                ratio_cell(roster, etcd),
                winner(r)
            );
        }
        let _ = writeln!(w);
    }
}

fn md_method(w: &mut String) {
    let _ = w.write_str(METHOD);
}

/// What each driver does, so the comparison can be judged.
const METHOD: &str = "## What each driver does

The workloads are written once (`bench/src/workload.rs`) against a small
trait (`bench/src/driver/mod.rs`); the Roster driver calls `roster-client`,
the etcd driver `etcd-client`, each the way an application would.

* **Connections.** A workload with N clients opens min(N, 16) client
  connections and spreads the clients over them round-robin; both systems
  get the same number. A Roster client sends to the leader it learnt (it
  follows leader hints); an etcd client balances over all three members,
  whose followers forward writes to the leader.
* **put.** Closed loop: each client writes a 256-byte value, waits for the
  answer, writes again, over 1,024 keys per client. CPU per write is the
  cluster's CPU (all members) divided by the writes committed.
* **get.** 1,000 keys written first, then 16 clients read them at random,
  linearizable (Roster: read index; etcd: its default linearizable read)
  and serializable (local state of the member asked).
* **lease.** 64 tasks grant the leases (grants/s), then every lease is kept
  alive with its own keepalive stream renewed every TTL/3 — Roster through
  its client's `LeaseKeeper` (one per lease), etcd through `etcd-client`'s
  `lease_keep_alive` stream (one per lease) with a renewal every TTL/3 sent
  by the driver. Streams are spread over one connection per 150 leases on
  both sides. Renewals/s counts acknowledged renewals (Roster: the keeper's
  deadline moving forward; etcd: answers with TTL > 0). Roster commits
  renewals through Raft (batched); etcd answers renewals from the leader
  without a Raft entry (only its checkpoints, off by default in 3.4, would
  be replicated) — a real difference in what a renewal guarantees.
* **renew.** N clients, each with a lease of its own, renew in a closed
  loop (renew, wait for the answer, renew again): one keepalive stream per
  renewal on both sides (Roster: `Client::lease_keep_alive_once`; etcd:
  `etcd-client`'s `lease_keep_alive`, which sends one renewal and reads its
  answer, as Go's `KeepAliveOnce`). The most renewals each system can be
  made to answer, e.g. after every agent reconnects at once.
* **election.** K candidates, each with its own connection and lease, loop
  campaign → elected → resign. Roster: `Campaign` on a group's `primary`
  role (capacity 1); etcd: the v3 election service (`Campaign`, `Resign`).
  The latency is from the moment the holder sends its resign to the moment
  the next candidate's campaign call returns elected.
* **failover.** One client writes continuously (per-attempt timeout 500 ms
  on both; Roster's client retries by itself with 10–100 ms backoff, the
  bench retries etcd after 10 ms) while the bench `kill -9`s the leader.
  Unavailability = first successful write *sent* after the kill − last
  successful write before it (a write the dying leader committed can be
  acknowledged just after the kill and proves nothing); *new leader reported* = time until a surviving member's
  status names a new leader. The killed member is restarted and catches up
  between kills.
* **role-failover.** A holder and a waiting candidate, each with a lease of
  the given TTL renewed every TTL/3. Right after one of its renewals is
  acknowledged the holder stops renewing (as a crashed process), and we
  time from that acknowledgement until the waiting candidate's campaign
  returns elected. A floor is the TTL itself; *beyond the TTL* is the
  detection overhead.
* **memory.** VmRSS of each member (`/proc/PID/status`) on a fresh cluster,
  and again after writing the keys (256-byte values) and while keeping the
  leases alive.

";

fn summary_cell(s: Summary) -> String {
    let v = fmt_value(s.median);
    if s.used == s.total {
        v
    } else {
        format!("{v} ({}/{})", s.used, s.total)
    }
}

fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        "-".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

fn ratio(roster: Option<&Summary>, etcd: Option<&Summary>) -> Option<f64> {
    let (r, e) = (roster?.median, etcd?.median);
    (r.is_finite() && e.is_finite() && e != 0.0).then(|| r / e)
}

fn ratio_cell(roster: Option<&Summary>, etcd: Option<&Summary>) -> String {
    ratio(roster, etcd).map_or("-".into(), |x| format!("{x:.2}"))
}

fn winner(r: &Row) -> &'static str {
    let Some(x) = ratio(r.values.get(&System::Roster), r.values.get(&System::Etcd)) else {
        return "";
    };
    if r.metric.contains("expected") {
        return "";
    }
    let roster_better = if r.higher_is_better { x > 1.0 } else { x < 1.0 };
    if (x - 1.0).abs() < 0.02 {
        "even"
    } else if roster_better {
        "Roster"
    } else {
        "etcd"
    }
}

/// Checks the goals of the benchmark issue: (goal, measured, verdict).
fn goals(rows: &[Row]) -> Vec<(String, String, &'static str)> {
    let find = |w: Workload, phase: &str, metric: &str| {
        rows.iter()
            .find(|r| r.workload == w && r.phase == phase && r.metric == metric)
            .and_then(|r| ratio(r.values.get(&System::Roster), r.values.get(&System::Etcd)))
    };
    let phases = |w: Workload, metric: &str| -> Vec<String> {
        rows.iter()
            .filter(|r| r.workload == w && r.metric == metric)
            .map(|r| r.phase.clone())
            .collect()
    };
    let put_phases = phases(Workload::Put, "writes/s");
    let renew_phases = phases(Workload::Renew, "renewals/s");
    let mut out = Vec::new();
    let verdict = |ok: Option<bool>| match ok {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "not measured",
    };
    let mut check = |goal: String, ratios: Vec<(String, Option<f64>)>, ok: &dyn Fn(f64) -> bool| {
        let measured = ratios
            .iter()
            .map(|(what, x)| format!("{what}: {}", x.map_or("-".into(), |x| format!("{x:.2}"))))
            .collect::<Vec<_>>()
            .join("; ");
        let all: Option<Vec<f64>> = ratios.iter().map(|(_, x)| *x).collect();
        let met = all.filter(|v| !v.is_empty()).map(|v| v.into_iter().all(ok));
        out.push((goal, measured, verdict(met)));
    };
    let clients = |p: &str| p.split(' ').next().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
    for (what, workload, metric, phases) in [
        ("writes/s", Workload::Put, "writes/s", &put_phases),
        (
            "lease renewals/s (closed loop)",
            Workload::Renew,
            "renewals/s",
            &renew_phases,
        ),
    ] {
        let at = |keep: &dyn Fn(usize) -> bool| -> Vec<(String, Option<f64>)> {
            phases
                .iter()
                .filter(|p| keep(clients(p)))
                .map(|p| (p.clone(), find(workload, p, metric)))
                .collect()
        };
        check(format!("{what} ≥ 3× etcd at 1 client"), at(&|n| n == 1), &|x| {
            x >= 3.0
        });
        check(
            format!("{what} ≥ 1.5× etcd at 16+ clients"),
            at(&|n| n >= 16),
            &|x| x >= 1.5,
        );
    }
    check(
        "cluster CPU per write ≤ ½ etcd's".into(),
        put_phases
            .iter()
            .map(|p| (p.clone(), find(Workload::Put, p, "cluster CPU per write")))
            .collect(),
        &|x| x <= 0.5,
    );
    let election_phase = rows
        .iter()
        .find(|r| r.workload == Workload::Election)
        .map(|r| r.phase.clone())
        .unwrap_or_default();
    check(
        "election handover p50 and p99 ≤ ½ etcd's".into(),
        ["resign → next elected p50", "resign → next elected p99"]
            .iter()
            .map(|m| (m.to_string(), find(Workload::Election, &election_phase, m)))
            .collect(),
        &|x| x <= 0.5,
    );
    check(
        "failover windows ≤ etcd's".into(),
        [
            "unavailable (last write before → first after)",
            "kill → new leader reported",
        ]
        .iter()
        .map(|m| (m.to_string(), find(Workload::Failover, "leader killed", m)))
        .collect(),
        &|x| x <= 1.0,
    );
    let memory_phase = rows
        .iter()
        .find(|r| r.workload == Workload::Memory)
        .map(|r| r.phase.clone())
        .unwrap_or_default();
    check(
        "memory ≤ etcd's".into(),
        ["RSS per node, loaded (median)", "RSS per node, loaded (max)"]
            .iter()
            .map(|m| (m.to_string(), find(Workload::Memory, &memory_phase, m)))
            .collect(),
        &|x| x <= 1.0,
    );
    out
}
