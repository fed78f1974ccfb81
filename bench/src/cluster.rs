//! Starting, killing and restarting a 3-member cluster of `rosterd` or
//! `etcd` processes on loopback.
//!
//! Every member gets free loopback ports and a data directory under one run
//! directory on the data disk, so both systems sync to the same device.
//! Members are children of this process and die with it: [`Cluster`]'s
//! `Drop` kills them (normal exit, error, panic), a Ctrl-C in the terminal
//! reaches them too (they stay in our process group), and each child asks
//! the kernel for `SIGKILL` should this process die first (`kill -9`).

use std::fs::{self, File};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::driver::System;

/// Raft timing, passed to both systems in their own flags.
#[derive(Debug, Clone, Copy, serde::Serialize)]
pub struct Timing {
    /// Leader heartbeat interval.
    pub heartbeat_ms: u64,
    /// Election timeout; both systems randomise it within [min, max)
    /// (etcd always uses [timeout, 2 × timeout)).
    pub election_min_ms: u64,
    /// Upper bound of the randomised election timeout.
    pub election_max_ms: u64,
}

/// What is needed to start a cluster of one system.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The system's server binary (`rosterd` or `etcd`).
    pub binary: PathBuf,
    /// Raft timing.
    pub timing: Timing,
    /// Directory under which each cluster gets its own run directory.
    pub data_root: PathBuf,
}

struct Member {
    /// Client address, `127.0.0.1:port`.
    endpoint: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
}

/// A running 3-member cluster.
pub struct Cluster {
    system: System,
    binary: PathBuf,
    dir: PathBuf,
    members: Vec<Member>,
}

/// Number of members of every cluster the bench starts.
pub const MEMBERS: usize = 3;

impl Cluster {
    /// Starts all members of a fresh cluster named `name` (a new data
    /// directory under the spec's data root). Does not wait for a leader.
    pub fn start(system: System, spec: &ClusterSpec, name: &str) -> Result<Cluster> {
        let dir = spec.data_root.join(name);
        if dir.exists() {
            fs::remove_dir_all(&dir).with_context(|| format!("removing old run directory {}", dir.display()))?;
        }
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // One call for all ports: nothing holds them between calls.
        let ports = free_ports(2 * MEMBERS)?;
        let (client_ports, peer_ports) = ports.split_at(MEMBERS);
        let members = match system {
            System::Roster => roster_members(&dir, name, spec.timing, client_ports),
            System::Etcd => etcd_members(&dir, name, spec.timing, client_ports, peer_ports),
        };
        let mut cluster = Cluster {
            system,
            binary: spec.binary.clone(),
            dir,
            members,
        };
        for i in 0..MEMBERS {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    /// The system this cluster runs.
    pub fn system(&self) -> System {
        self.system
    }

    /// Client endpoints of all members, `host:port`, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.endpoint.clone()).collect()
    }

    /// Client endpoint of one member.
    pub fn endpoint(&self, member: usize) -> &str {
        &self.members[member].endpoint
    }

    /// Process ids of the members that are running.
    pub fn pids(&self) -> Vec<u32> {
        self.members
            .iter()
            .filter_map(|m| m.child.as_ref().map(Child::id))
            .collect()
    }

    /// Whether member `member` is running (as far as we started it).
    pub fn is_running(&self, member: usize) -> bool {
        self.members[member].child.is_some()
    }

    /// `kill -9` of one member, waiting until it is gone.
    pub fn kill(&mut self, member: usize) -> Result<()> {
        if let Some(mut child) = self.members[member].child.take() {
            child.kill().context("kill -9")?;
            child.wait().context("waiting for the killed member")?;
        }
        Ok(())
    }

    /// Starts a killed member again on its data directory.
    pub fn restart(&mut self, member: usize) -> Result<()> {
        if self.members[member].child.is_some() {
            bail!("member {member} is still running");
        }
        self.spawn(member)
    }

    /// The last lines of a member's log, for error messages.
    pub fn log_tail(&self, member: usize, lines: usize) -> String {
        let text = fs::read_to_string(&self.members[member].log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn spawn(&mut self, i: usize) -> Result<()> {
        let member = &mut self.members[i];
        let log = File::options()
            .create(true)
            .append(true)
            .open(&member.log)
            .with_context(|| format!("opening {}", member.log.display()))?;
        let mut cmd = Command::new(&self.binary);
        cmd.args(&member.args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches only this child.
        // It makes the kernel kill the member if the bench dies (kill -9
        // included) — the main thread starts every member, and it lives
        // as long as the bench.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {} for member {i}", self.binary.display()))?;
        member.child = Some(child);
        Ok(())
    }

    /// Stops every member (`SIGTERM`, then `SIGKILL` after 5 s) and removes
    /// the run directory.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        for m in &mut self.members {
            if let Some(child) = &m.child {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) => break,
                        Ok(None) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20))
                        }
                        _ => {
                            let _ = child.kill();
                            let _ = child.wait();
                            break;
                        }
                    }
                }
            }
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// `n` distinct free loopback ports (bound once and released: another
/// process could take one in between, which then fails the start loudly).
/// `n` loopback ports that are free now and outside the kernel's range of
/// ephemeral ports. Ports from `bind(0)` come from that range, and so do
/// the source ports of every outgoing connection the clusters and clients
/// open: a member (re)started on such a port later can find it taken ("bind:
/// address already in use" failed a full run when an etcd member started).
fn free_ports(n: usize) -> Result<Vec<u16>> {
    let (low, high) = listen_range();
    let span = u32::from(high - low);
    // A start that differs between runs, so two benches side by side (or a
    // crashed run's lingering processes) rarely collide; every candidate is
    // still checked by binding it.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let start = (nanos ^ std::process::id().rotate_left(16)) % span;
    let mut ports = Vec::with_capacity(n);
    for step in 0..span {
        if ports.len() == n {
            break;
        }
        let port = low + ((start + step) % span) as u16;
        if !ports.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            ports.push(port);
        }
    }
    if ports.len() < n {
        bail!("no {n} free loopback ports in {low}..{high}");
    }
    Ok(ports)
}

/// Where listening ports are picked: from 20000 up to the start of the
/// ephemeral range (Linux: `ip_local_port_range`, 32768 by default).
fn listen_range() -> (u16, u16) {
    const LOW: u16 = 20_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32_768);
    if ephemeral_start > LOW + 1_000 {
        (LOW, ephemeral_start)
    } else {
        // An unusual range: stay above it instead.
        (61_000, 65_000)
    }
}

fn roster_members(dir: &Path, name: &str, t: Timing, ports: &[u16]) -> Vec<Member> {
    let initial = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{}=127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let endpoint = format!("127.0.0.1:{port}");
            let data = dir.join(format!("m{}", i + 1));
            let args = vec![
                "--id".into(),
                (i + 1).to_string(),
                "--listen".into(),
                endpoint.clone(),
                "--data-dir".into(),
                data.display().to_string(),
                "--cluster-name".into(),
                name.into(),
                "--initial-cluster".into(),
                initial.clone(),
                "--heartbeat-ms".into(),
                t.heartbeat_ms.to_string(),
                "--election-min-ms".into(),
                t.election_min_ms.to_string(),
                "--election-max-ms".into(),
                t.election_max_ms.to_string(),
                "--log".into(),
                "warn".into(),
            ];
            Member {
                endpoint,
                args,
                log: dir.join(format!("m{}.log", i + 1)),
                child: None,
            }
        })
        .collect()
}

fn etcd_members(dir: &Path, name: &str, t: Timing, client_ports: &[u16], peer_ports: &[u16]) -> Vec<Member> {
    let initial = peer_ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("m{}=http://127.0.0.1:{p}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    client_ports
        .iter()
        .zip(peer_ports)
        .enumerate()
        .map(|(i, (client, peer))| {
            let endpoint = format!("127.0.0.1:{client}");
            let client_url = format!("http://{endpoint}");
            let peer_url = format!("http://127.0.0.1:{peer}");
            let data = dir.join(format!("m{}", i + 1));
            let args = vec![
                format!("--name=m{}", i + 1),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster={initial}"),
                "--initial-cluster-state=new".into(),
                format!("--initial-cluster-token={name}"),
                format!("--heartbeat-interval={}", t.heartbeat_ms),
                // etcd randomises within [timeout, 2 × timeout): the same
                // window as Roster's [min, max) when max = 2 × min.
                format!("--election-timeout={}", t.election_min_ms),
                "--logger=zap".into(),
                "--log-outputs=stderr".into(),
                "--log-level=warn".into(),
            ];
            Member {
                endpoint,
                args,
                log: dir.join(format!("m{}.log", i + 1)),
                child: None,
            }
        })
        .collect()
}
