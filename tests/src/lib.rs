//! Harness for integration tests that run real `rosterd` processes on
//! loopback.
//!
//! Every wait polls with a deadline; nothing sleeps to synchronise. Each
//! node's stderr goes to a log file in the cluster's temporary directory,
//! and the tail of every log is printed when a [`Cluster`] is dropped during
//! a panic, so a failing test shows what the servers said.

pub mod proxy;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roster_proto::v1::cluster_client::ClusterClient;
use roster_proto::v1::{StatusRequest, StatusResponse};

/// Path of a binary built from this workspace (`rosterd`, `rosterctl`),
/// next to the test executable's `deps/` directory.
pub fn binary(name: &str) -> PathBuf {
    if let Ok(path) = std::env::var(format!("{}_BIN", name.to_uppercase())) {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found; build the binaries first: cargo build --workspace --bins",
        path.display()
    );
    path
}

/// A free loopback port (bound then released; the kernel does not hand it
/// out again at once). Never the same port twice in one test process: the
/// kernel may reuse a just-released port, and two nodes of one cluster must
/// not collide.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
        let port = listener.local_addr().expect("local addr").port();
        if !given.contains(&port) {
            given.push(port);
            return port;
        }
    }
}

/// Polls `check` until it returns `Some`, or panics with `what` after
/// `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Settings shared by every node of a test cluster.
#[derive(Clone, Debug)]
pub struct Options {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
    pub snapshot_every: u64,
    pub request_timeout_ms: u64,
}

impl Default for Options {
    fn default() -> Self {
        // Faster than production defaults so tests finish quickly, with the
        // same ratios (election timeout 10-20 heartbeats).
        Self {
            heartbeat_ms: 50,
            election_min_ms: 500,
            election_max_ms: 1000,
            snapshot_every: 10_000,
            request_timeout_ms: 3_000,
        }
    }
}

pub struct Node {
    pub id: u64,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
    join: bool,
    /// Size of the private tmpfs the node's data dir is, if it runs on one
    /// (see [`Cluster::start_with_disks`]).
    disk_bytes: Option<u64>,
}

impl Node {
    pub fn endpoint(&self) -> String {
        self.grpc.to_string()
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }
}

/// A cluster of rosterd processes in a temporary directory.
pub struct Cluster {
    pub name: String,
    pub options: Options,
    pub nodes: BTreeMap<u64, Node>,
    initial: String,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n) bootstrapping one cluster.
    pub fn start(n: u64) -> Self {
        Self::start_with(n, Options::default())
    }

    pub fn start_with(n: u64, options: Options) -> Self {
        Self::start_with_disks(n, options, &[])
    }

    /// Like [`Cluster::start_with`], with the data dir of each node named in
    /// `disks` on a tmpfs of the given size, mounted in a mount namespace of
    /// the node's own (`unshare --mount --map-root-user`: root, or a kernel
    /// that allows unprivileged user namespaces), so it can run out of
    /// space. The tmpfs, and with it the node's data, is gone once the
    /// process exits: such a node cannot be restarted.
    pub fn start_with_disks(n: u64, options: Options, disks: &[(u64, u64)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut nodes = BTreeMap::new();
        for id in 1..=n {
            let mut node = Self::new_node(dir.path(), id, false);
            node.disk_bytes = disks.iter().find(|(d, _)| *d == id).map(|(_, bytes)| *bytes);
            nodes.insert(id, node);
        }
        let initial = nodes
            .values()
            .map(|n| format!("{}={}", n.id, n.grpc))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            name: "test".into(),
            options,
            nodes,
            initial,
            dir,
        };
        let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        for id in ids {
            cluster.spawn(id);
        }
        cluster
    }

    fn new_node(dir: &Path, id: u64, join: bool) -> Node {
        Node {
            id,
            grpc: SocketAddr::from(([127, 0, 0, 1], free_port())),
            http: SocketAddr::from(([127, 0, 0, 1], free_port())),
            data_dir: dir.join(format!("node{id}")),
            log: dir.join(format!("node{id}.log")),
            child: None,
            join,
            disk_bytes: None,
        }
    }

    /// Command line of node `id`, as the test would start it.
    pub fn command(&self, id: u64) -> Command {
        let node = &self.nodes[&id];
        let o = &self.options;
        let mut cmd = Command::new(binary("rosterd"));
        cmd.arg("--id")
            .arg(id.to_string())
            .arg("--listen")
            .arg(node.grpc.to_string())
            .arg("--http")
            .arg(node.http.to_string())
            .arg("--data-dir")
            .arg(&node.data_dir)
            .arg("--cluster-name")
            .arg(&self.name)
            .arg("--heartbeat-ms")
            .arg(o.heartbeat_ms.to_string())
            .arg("--election-min-ms")
            .arg(o.election_min_ms.to_string())
            .arg("--election-max-ms")
            .arg(o.election_max_ms.to_string())
            .arg("--snapshot-every")
            .arg(o.snapshot_every.to_string())
            .arg("--request-timeout-ms")
            .arg(o.request_timeout_ms.to_string());
        if node.join {
            cmd.arg("--join");
        } else {
            cmd.arg("--initial-cluster").arg(&self.initial);
        }
        cmd.env("ROSTER_LOG", "info,openraft=warn").stdin(Stdio::null());
        cmd
    }

    fn spawn(&mut self, id: u64) {
        let mut cmd = self.command(id);
        let node = self.nodes.get_mut(&id).expect("known node");
        assert!(node.child.is_none(), "node {id} already running");
        if let Some(bytes) = node.disk_bytes {
            cmd = on_tmpfs(cmd, &node.data_dir, bytes);
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open node log");
        let child = cmd
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn rosterd");
        node.child = Some(child);
    }

    /// Starts a node that is not running (after `kill`, `stop` or `wipe`).
    pub fn restart(&mut self, id: u64) {
        self.spawn(id);
    }

    /// The exit status of node `id` if its process has ended by itself (it
    /// is then no longer running), `None` while it runs.
    pub fn exited(&mut self, id: u64) -> Option<std::process::ExitStatus> {
        let node = self.nodes.get_mut(&id).expect("known node");
        let status = node.child.as_mut()?.try_wait().expect("waiting on rosterd")?;
        node.child = None;
        Some(status)
    }

    /// Kills node `id` with SIGKILL and reaps it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes node `id` with SIGSTOP: its process keeps its sockets and
    /// state but runs nothing until [`Cluster::resume`] (a stalled VM or a
    /// long GC pause, as its peers see it).
    pub fn pause(&self, id: u64) {
        self.signal(id, libc::SIGSTOP);
    }

    /// Lets a paused node run again (SIGCONT).
    pub fn resume(&self, id: u64) {
        self.signal(id, libc::SIGCONT);
    }

    fn signal(&self, id: u64, signal: i32) {
        let child = self.nodes[&id].child.as_ref().expect("a running node");
        // SAFETY: sending a signal to a child process we own and have not
        // reaped.
        unsafe {
            libc::kill(child.id() as i32, signal);
        }
    }

    /// Stops node `id` with SIGTERM and waits (up to 10 s) for a clean exit.
    /// Returns the exit status code.
    pub fn stop(&mut self, id: u64) -> Option<i32> {
        let mut child = self.nodes.get_mut(&id).and_then(|n| n.child.take())?;
        // SAFETY: sending a signal to a child process we own.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {id} did not exit within 10 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills node `id` and deletes its data directory. It restarts with
    /// `--join` (an empty member waiting to be added).
    pub fn wipe(&mut self, id: u64) {
        self.kill(id);
        let node = self.nodes.get_mut(&id).expect("known node");
        let _ = std::fs::remove_dir_all(&node.data_dir);
        node.join = true;
    }

    /// Creates node `id` (not yet a member) started with `--join`.
    pub fn spawn_joiner(&mut self, id: u64) -> String {
        let node = Self::new_node(self.dir.path(), id, true);
        let addr = node.endpoint();
        self.nodes.insert(id, node);
        self.spawn(id);
        addr
    }

    /// Forgets node `id` after killing it (for shrinking the cluster).
    pub fn forget(&mut self, id: u64) {
        self.kill(id);
        self.nodes.remove(&id);
    }

    pub fn endpoints(&self) -> Vec<String> {
        self.nodes.values().map(Node::endpoint).collect()
    }

    pub fn running_endpoints(&self) -> Vec<String> {
        self.nodes
            .values()
            .filter(|n| n.is_running())
            .map(Node::endpoint)
            .collect()
    }

    /// `Status` as answered by node `id`, if it answers within 1 s.
    pub async fn status_of(&self, id: u64) -> Option<StatusResponse> {
        let url = format!("http://{}", self.nodes.get(&id)?.grpc);
        let fut = async {
            let mut client = ClusterClient::connect(url).await.ok()?;
            client.status(StatusRequest {}).await.ok().map(|r| r.into_inner())
        };
        tokio::time::timeout(Duration::from_secs(1), fut).await.ok().flatten()
    }

    /// Waits until every running node reports the same leader (which must
    /// itself be running) and returns it.
    pub async fn wait_for_leader(&self, timeout: Duration) -> u64 {
        eventually(timeout, "a leader all running nodes agree on", || async {
            let mut leader = None;
            for node in self.nodes.values().filter(|n| n.is_running()) {
                let status = self.status_of(node.id).await?;
                let me = status.members.iter().find(|m| m.id == node.id)?;
                if status.leader_id == 0 || leader.is_some_and(|l| l != status.leader_id) || !me.reachable {
                    return None;
                }
                leader = Some(status.leader_id);
            }
            let leader = leader?;
            self.nodes.get(&leader).filter(|n| n.is_running()).map(|_| leader)
        })
        .await
    }

    /// The running nodes other than `id`.
    pub fn others(&self, id: u64) -> Vec<u64> {
        self.nodes
            .values()
            .filter(|n| n.id != id && n.is_running())
            .map(|n| n.id)
            .collect()
    }

    /// The last `lines` lines of node `id`'s log.
    pub fn log_tail(&self, id: u64, lines: usize) -> String {
        let text = self
            .nodes
            .get(&id)
            .and_then(|n| std::fs::read_to_string(&n.log).ok())
            .unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in &ids {
            self.kill(*id);
        }
        if panicking {
            for id in &ids {
                eprintln!("----- rosterd node {id} log (tail) -----\n{}", self.log_tail(*id, 60));
            }
            // Keep the data dirs and full logs of a failed test for a post-mortem.
            if let Ok(placeholder) = tempfile::tempdir() {
                let kept = std::mem::replace(&mut self.dir, placeholder).keep();
                eprintln!("cluster data and logs kept in {}", kept.display());
            }
        }
    }
}

/// `cmd` run with `data_dir` a fresh tmpfs of `bytes` bytes, in a mount
/// namespace of its own (the mount is private to the process and goes away
/// with it). The wrapper `exec`s the command: the child's pid is rosterd's.
fn on_tmpfs(cmd: Command, data_dir: &Path, bytes: u64) -> Command {
    std::fs::create_dir_all(data_dir).expect("create the mount point");
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["--mount", "--map-root-user", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o "size=$2" roster-test "$1" && shift 2 && exec "$@""#)
        .arg("sh")
        .arg(data_dir)
        .arg(bytes.to_string())
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapped.env(key, value),
            None => wrapped.env_remove(key),
        };
    }
    wrapped.stdin(Stdio::null());
    wrapped
}

/// A client for `endpoints` with the given overall deadline per call.
pub async fn client_for(endpoints: Vec<String>, timeout: Duration) -> roster_client::Client {
    let config = roster_client::ClientConfig::new(endpoints)
        .request_timeout(timeout)
        .attempt_timeout(Duration::from_millis(1500).min(timeout))
        .backoff_max(Duration::from_millis(200));
    roster_client::Client::connect(config).await.expect("client config")
}

/// HTTP GET on loopback, returning the status code and body (no client
/// library needed for a one-line request).
pub fn http_get(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default().to_string();
    Some((code, body))
}

/// A connected gRPC channel to `addr` (`host:port`), for the generated
/// clients.
pub async fn channel(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

/// Runs `rosterctl --timeout 5s ARGS` against `cluster`; returns the exit
/// code, stdout and stderr.
pub fn rosterctl(cluster: &Cluster, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary("rosterctl"))
        .env("ROSTER_ENDPOINTS", cluster.endpoints().join(","))
        .args(["--timeout", "5s"])
        .args(args)
        .output()
        .expect("run rosterctl");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
