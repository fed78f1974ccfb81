//! CPU accounting for one run: how much the cluster, the load generator and
//! everything else on the machine used.
//!
//! On a shared 2-core machine a throughput figure means little unless we
//! know who else was using the cores. So each run records, from procfs:
//!
//! * the cluster: utime + stime of its member processes
//!   (`/proc/PID/stat`), remembered per pid at every sample so a member
//!   that is killed mid-run still counts up to its last sample;
//! * the bench itself: utime + stime of this process (`/proc/self/stat`);
//! * everything else: the machine's busy time (`/proc/stat`, all but idle
//!   and iowait) minus those two.
//!
//! A run where "everything else" kept more than [`BUSY_OTHER_CORES`] of a
//! core busy on average is flagged; the report prefers unflagged runs.

use std::collections::HashMap;
use std::fs;
use std::time::Instant;

use serde::Serialize;

/// Average cores used by other processes above which a run is flagged.
pub const BUSY_OTHER_CORES: f64 = 0.25;

/// CPU used during one run, in seconds of CPU time.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct CpuUsage {
    /// Wall time of the run.
    pub wall_s: f64,
    /// Summed over the cluster's members.
    pub cluster_s: f64,
    /// The bench process (the load generator and its client libraries).
    pub bench_s: f64,
    /// Everything else on the machine.
    pub other_s: f64,
}

impl CpuUsage {
    /// Average cores the cluster kept busy.
    pub fn cluster_cores(&self) -> f64 {
        self.cluster_s / self.wall_s.max(1e-9)
    }

    /// Average cores the bench kept busy.
    pub fn bench_cores(&self) -> f64 {
        self.bench_s / self.wall_s.max(1e-9)
    }

    /// Average cores everything else kept busy.
    pub fn other_cores(&self) -> f64 {
        self.other_s / self.wall_s.max(1e-9)
    }

    /// Whether other processes were busy enough to distort this run.
    pub fn disturbed(&self) -> bool {
        self.other_cores() > BUSY_OTHER_CORES
    }
}

/// Measures one run: create it at the start, [`CpuMeter::sample`] the
/// cluster's pids whenever they may change, [`CpuMeter::finish`] at the end.
pub struct CpuMeter {
    started: Instant,
    tick: f64,
    busy0: u64,
    self0: u64,
    /// Ticks per cluster pid: (at the start or first sight, latest).
    members: HashMap<u32, (u64, u64)>,
}

impl CpuMeter {
    /// Starts measuring, with the cluster's current members.
    pub fn start(pids: &[u32]) -> CpuMeter {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let mut meter = CpuMeter {
            started: Instant::now(),
            tick: 1.0 / if hz > 0 { hz as f64 } else { 100.0 },
            busy0: machine_busy_ticks(),
            self0: process_ticks("self").unwrap_or(0),
            members: HashMap::new(),
        };
        meter.sample(pids);
        meter
    }

    /// Records the members' current CPU time. Call it before killing a
    /// member, and after starting one (its CPU from then on counts).
    pub fn sample(&mut self, pids: &[u32]) {
        for &pid in pids {
            if let Some(ticks) = process_ticks(&pid.to_string()) {
                self.members.entry(pid).or_insert((ticks, ticks)).1 = ticks;
            }
        }
    }

    /// Ends the run.
    pub fn finish(mut self, pids: &[u32]) -> CpuUsage {
        self.sample(pids);
        let cluster: u64 = self.members.values().map(|(first, last)| last - first).sum();
        let own = process_ticks("self").unwrap_or(self.self0) - self.self0;
        let busy = machine_busy_ticks().saturating_sub(self.busy0);
        let other = busy.saturating_sub(cluster + own);
        CpuUsage {
            wall_s: self.started.elapsed().as_secs_f64(),
            cluster_s: cluster as f64 * self.tick,
            bench_s: own as f64 * self.tick,
            other_s: other as f64 * self.tick,
        }
    }
}

/// utime + stime of `/proc/<pid>/stat`, in clock ticks.
fn process_ticks(pid: &str) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: parse after its ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 and 15 of the line; `rest` starts at field 3.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Busy clock ticks of the whole machine since boot: the first line of
/// `/proc/stat` minus idle and iowait (guest time is already inside user).
fn machine_busy_ticks() -> u64 {
    let Ok(stat) = fs::read_to_string("/proc/stat") else {
        return 0;
    };
    let Some(line) = stat.lines().next() else {
        return 0;
    };
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal guest guest_nice
    values.iter().take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4).map(|(_, v)| v).sum()
}

/// Resident memory of a process, from `VmRSS` in `/proc/PID/status`, in
/// bytes.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        assert!(process_ticks("self").is_some());
        assert!(machine_busy_ticks() > 0);
        assert!(rss_bytes(std::process::id()).unwrap() > 0);
    }

    #[test]
    fn meter_counts_own_work() {
        let meter = CpuMeter::start(&[]);
        let mut x = 0u64;
        let until = Instant::now() + std::time::Duration::from_millis(100);
        while Instant::now() < until {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let usage = meter.finish(&[]);
        assert!(x > 0);
        assert!(usage.wall_s >= 0.1);
        assert!(usage.bench_s > 0.0);
    }
}
