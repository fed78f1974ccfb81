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
//! * the kernel: its own threads (journal commits after fsync, block and
//!   network workers — `PF_KTHREAD` in `/proc/PID/stat`) and interrupt time
//!   (`irq` + `softirq` of `/proc/stat`). This is mostly work done on
//!   behalf of the cluster (an fsync costs a journal commit), but the
//!   kernel does not say for whom, so it is reported on its own;
//! * everything else: the machine's busy time (`/proc/stat`, all but idle
//!   and iowait) minus all of the above — other processes, including ones
//!   that start and end within the run (a compiler, say).
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
    /// Kernel threads and interrupts.
    pub kernel_s: f64,
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

    /// Average cores the kernel's threads and interrupts kept busy.
    pub fn kernel_cores(&self) -> f64 {
        self.kernel_s / self.wall_s.max(1e-9)
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
    irq0: u64,
    /// Ticks per kernel thread at the start.
    kthreads0: HashMap<u32, u64>,
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
            busy0: machine_ticks().busy,
            self0: process_ticks("self").unwrap_or(0),
            irq0: machine_ticks().irq,
            kthreads0: kernel_threads(),
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
        let machine = machine_ticks();
        let kthreads: u64 = kernel_threads()
            .into_iter()
            .map(|(pid, t)| t.saturating_sub(self.kthreads0.get(&pid).copied().unwrap_or(t)))
            .sum();
        let kernel = kthreads + machine.irq.saturating_sub(self.irq0);
        let busy = machine.busy.saturating_sub(self.busy0);
        let other = busy.saturating_sub(cluster + own + kernel);
        CpuUsage {
            wall_s: self.started.elapsed().as_secs_f64(),
            cluster_s: cluster as f64 * self.tick,
            bench_s: own as f64 * self.tick,
            kernel_s: kernel as f64 * self.tick,
            other_s: other as f64 * self.tick,
        }
    }
}

/// The fields after the command name of `/proc/<pid>/stat` (field 3 on).
fn stat_fields(pid: &str) -> Option<Vec<u64>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces: parse after its ')'.
    let rest = stat.get(stat.rfind(')')? + 2..)?;
    // Field 3 (the state) is a letter; keep the numbers after it.
    Some(
        rest.split_whitespace()
            .skip(1)
            .map(|f| f.parse().unwrap_or(0))
            .collect(),
    )
}

/// utime + stime (fields 14 and 15) of `/proc/<pid>/stat`, in clock ticks.
fn process_ticks(pid: &str) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some(f.get(10)? + f.get(11)?)
}

/// CPU ticks of every kernel thread, by pid.
fn kernel_threads() -> HashMap<u32, u64> {
    const PF_KTHREAD: u64 = 0x0020_0000;
    let Ok(dir) = fs::read_dir("/proc") else {
        return HashMap::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let f = stat_fields(&pid.to_string())?;
            // Field 9: flags.
            (f.get(6)? & PF_KTHREAD != 0).then(|| (pid, f.get(10).unwrap_or(&0) + f.get(11).unwrap_or(&0)))
        })
        .collect()
}

/// Machine-wide ticks since boot from the first line of `/proc/stat`.
struct MachineTicks {
    /// All but idle and iowait (guest time is already inside user).
    busy: u64,
    /// irq + softirq.
    irq: u64,
}

fn machine_ticks() -> MachineTicks {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let line = stat.lines().next().unwrap_or_default();
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|v| v.parse().ok()).collect();
    let at = |i: usize| v.get(i).copied().unwrap_or(0);
    // user nice system idle iowait irq softirq steal guest guest_nice
    MachineTicks {
        busy: at(0) + at(1) + at(2) + at(5) + at(6) + at(7),
        irq: at(5) + at(6),
    }
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
        assert!(machine_ticks().busy > 0);
        // Kernel threads are not visible everywhere (a PID namespace hides
        // them); reading them must simply not fail.
        let _ = kernel_threads();
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
