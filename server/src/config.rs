//! rosterd configuration: command-line flags, optionally on top of a TOML
//! file (`--config`). A flag always wins over the file; the file wins over
//! the defaults.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::limits;
use crate::raft::{NodeId, RaftTiming};

/// Default of `--worker-threads`. Measured with three members and the load
/// generator on two cores (docs/BENCHMARKS.md), one thread against one per
/// core: 20–25 % less cluster CPU per write at 1 client, 13 % less at 16 and
/// 256, and 6–12 % more writes/s, because a request no longer wakes a
/// second thread at each hand-off (client connection, Raft core,
/// replication, state machine).
pub const DEFAULT_WORKER_THREADS: usize = 1;

/// Settings of one node as given (all optional, merged later).
#[derive(Clone, Debug, Default, Deserialize, clap::Args)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct NodeArgs {
    /// TOML file with any of these settings (kebab-case keys).
    #[arg(long, env = "ROSTERD_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// This node's id: a positive integer, unique in the cluster, never reused.
    #[arg(long)]
    pub id: Option<NodeId>,
    /// gRPC address to listen on, for clients and peers.
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Address others reach this node's gRPC at (default: --listen).
    #[arg(long)]
    pub advertise: Option<String>,
    /// HTTP address for /health (and role lookups for load balancers).
    #[arg(long)]
    pub http: Option<SocketAddr>,
    /// Directory for the Raft log, vote and snapshots.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Members that bootstrap a new cluster: `1=host:port,2=host:port,...`.
    /// Used once, when the data dir is new; ignored afterwards.
    #[arg(long)]
    pub initial_cluster: Option<String>,
    /// Join an existing cluster instead of bootstrapping: start empty and
    /// wait to be added (`rosterctl member add`).
    #[arg(long)]
    #[serde(default)]
    pub join: bool,
    /// Name of the cluster; a data dir of another cluster is refused.
    #[arg(long)]
    pub cluster_name: Option<String>,
    /// Leader heartbeat interval in milliseconds.
    #[arg(long)]
    pub heartbeat_ms: Option<u64>,
    /// Lower bound of the randomised election timeout in milliseconds.
    #[arg(long)]
    pub election_min_ms: Option<u64>,
    /// Upper bound of the randomised election timeout in milliseconds.
    #[arg(long)]
    pub election_max_ms: Option<u64>,
    /// Build a snapshot and compact the log every this many entries.
    #[arg(long)]
    pub snapshot_every: Option<u64>,
    /// Longest a client request may wait for a leader or a commit, in ms.
    #[arg(long)]
    pub request_timeout_ms: Option<u64>,
    /// Threads running the node's async work (gRPC, Raft, leases, watches);
    /// 0 means one per CPU core. Default 1: the Raft core is one task, so
    /// more threads mostly move each request between threads; raise it for
    /// many TLS connections or heavy watch fan-out on a large machine. The
    /// log writer and snapshot I/O have threads of their own either way.
    #[arg(long)]
    pub worker_threads: Option<usize>,
}

/// The effective configuration of a node.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub id: NodeId,
    pub listen: SocketAddr,
    pub advertise: String,
    pub http: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub initial_cluster: BTreeMap<NodeId, String>,
    pub join: bool,
    pub cluster_name: String,
    pub timing: RaftTiming,
    pub request_timeout: Duration,
    /// Threads of the async runtime (at least 1; 0 was resolved to the cores).
    pub worker_threads: usize,
}

impl NodeArgs {
    /// Merges flags over the `--config` file over defaults, and validates.
    pub fn resolve(self) -> anyhow::Result<NodeConfig> {
        let file = match &self.config {
            None => NodeArgs::default(),
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).with_context(|| format!("reading config {}", path.display()))?;
                toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?
            }
        };
        let id = self.id.or(file.id).context("--id is required")?;
        if id == 0 || id > limits::MAX_NODE_ID {
            bail!("--id must be between 1 and {}", limits::MAX_NODE_ID);
        }
        let listen = self
            .listen
            .or(file.listen)
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 7400)));
        let advertise = self.advertise.or(file.advertise).unwrap_or_else(|| listen.to_string());
        crate::api::cluster::validate_addr(&advertise).map_err(|e| anyhow::anyhow!("--advertise: {e}"))?;
        let data_dir = self.data_dir.or(file.data_dir).context("--data-dir is required")?;
        let join = self.join || file.join;
        let initial_cluster = match self.initial_cluster.or(file.initial_cluster) {
            Some(text) => parse_initial_cluster(&text)?,
            None if join => BTreeMap::new(),
            None => BTreeMap::from([(id, advertise.clone())]),
        };
        if !join && !initial_cluster.contains_key(&id) {
            bail!("--initial-cluster does not list this node's id {id}");
        }
        let cluster_name = self
            .cluster_name
            .or(file.cluster_name)
            .unwrap_or_else(|| "roster".to_string());
        validate_cluster_name(&cluster_name)?;
        let defaults = RaftTiming::default();
        let ms = Duration::from_millis;
        let timing = RaftTiming {
            heartbeat: self
                .heartbeat_ms
                .or(file.heartbeat_ms)
                .map(ms)
                .unwrap_or(defaults.heartbeat),
            election_min: self
                .election_min_ms
                .or(file.election_min_ms)
                .map(ms)
                .unwrap_or(defaults.election_min),
            election_max: self
                .election_max_ms
                .or(file.election_max_ms)
                .map(ms)
                .unwrap_or(defaults.election_max),
            snapshot_every: self
                .snapshot_every
                .or(file.snapshot_every)
                .unwrap_or(defaults.snapshot_every),
            keep_after_snapshot: defaults.keep_after_snapshot,
        };
        if timing.heartbeat.is_zero()
            || timing.election_min <= timing.heartbeat * 2
            || timing.election_max <= timing.election_min
        {
            bail!("timeouts must satisfy 0 < 2*heartbeat < election-min < election-max");
        }
        if timing.snapshot_every == 0 {
            bail!("--snapshot-every must be positive");
        }
        let timing = RaftTiming {
            keep_after_snapshot: timing.keep_after_snapshot.min(timing.snapshot_every),
            ..timing
        };
        let request_timeout = ms(self.request_timeout_ms.or(file.request_timeout_ms).unwrap_or(5_000));
        if request_timeout < ms(100) {
            bail!("--request-timeout-ms must be at least 100");
        }
        let worker_threads = match self
            .worker_threads
            .or(file.worker_threads)
            .unwrap_or(DEFAULT_WORKER_THREADS)
        {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        }
        .min(limits::MAX_WORKER_THREADS);
        Ok(NodeConfig {
            id,
            listen,
            advertise,
            http: self.http.or(file.http),
            data_dir,
            initial_cluster,
            join,
            cluster_name,
            timing,
            request_timeout,
            worker_threads,
        })
    }
}

/// Parses `1=host:port,2=host:port`.
pub fn parse_initial_cluster(text: &str) -> anyhow::Result<BTreeMap<NodeId, String>> {
    let mut members = BTreeMap::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (id, addr) = part
            .split_once('=')
            .with_context(|| format!("--initial-cluster entry '{part}' is not ID=HOST:PORT"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .with_context(|| format!("--initial-cluster entry '{part}': id is not a number"))?;
        if id == 0 || id > limits::MAX_NODE_ID {
            bail!(
                "--initial-cluster entry '{part}': id must be between 1 and {}",
                limits::MAX_NODE_ID
            );
        }
        let addr = addr.trim().to_string();
        crate::api::cluster::validate_addr(&addr)
            .map_err(|e| anyhow::anyhow!("--initial-cluster entry '{part}': {e}"))?;
        if members.insert(id, addr).is_some() {
            bail!("--initial-cluster lists id {id} twice");
        }
    }
    if members.is_empty() {
        bail!("--initial-cluster is empty");
    }
    Ok(members)
}

/// Cluster names: 1 to 64 characters of `[A-Za-z0-9._-]`.
pub fn validate_cluster_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.len() > limits::MAX_CLUSTER_NAME_BYTES {
        bail!(
            "cluster name must be 1 to {} characters",
            limits::MAX_CLUSTER_NAME_BYTES
        );
    }
    if !name.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c)) {
        bail!("cluster name '{name}' has characters outside [A-Za-z0-9._-]");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Arguments naming a config file with `text` (kept while the dir lives).
    fn file_args(text: &str) -> (tempfile::TempDir, NodeArgs) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rosterd.toml");
        std::fs::write(&path, text).unwrap();
        let args = NodeArgs {
            config: Some(path),
            ..Default::default()
        };
        (dir, args)
    }

    #[test]
    fn initial_cluster_parses_and_rejects_bad_entries() {
        let m = parse_initial_cluster("1=127.0.0.1:7401, 2=127.0.0.1:7402").unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[&2], "127.0.0.1:7402");
        assert!(parse_initial_cluster("1=a:1,1=b:2").is_err());
        assert!(parse_initial_cluster("0=a:1").is_err());
        assert!(parse_initial_cluster("x=a:1").is_err());
        assert!(parse_initial_cluster("1=a").is_err());
        assert!(parse_initial_cluster("").is_err());
    }

    #[test]
    fn flags_override_file() {
        let (_dir, mut args) = file_args("id = 2\ndata-dir = \"/tmp/x\"\nheartbeat-ms = 50\ncluster-name = \"prod\"\n");
        args.heartbeat_ms = Some(70);
        let c = args.resolve().unwrap();
        assert_eq!(c.id, 2);
        assert_eq!(c.cluster_name, "prod");
        assert_eq!(c.timing.heartbeat, Duration::from_millis(70));
        assert_eq!(c.initial_cluster.len(), 1);
        assert_eq!(c.worker_threads, DEFAULT_WORKER_THREADS);
    }

    #[test]
    fn worker_threads_resolve_to_a_usable_count() {
        let with = |n: Option<usize>| {
            NodeArgs {
                id: Some(1),
                data_dir: Some("/tmp/x".into()),
                worker_threads: n,
                ..Default::default()
            }
            .resolve()
            .unwrap()
            .worker_threads
        };
        assert_eq!(with(None), 1);
        assert_eq!(with(Some(3)), 3);
        assert!(with(Some(0)) >= 1);
        assert_eq!(with(Some(100_000)), limits::MAX_WORKER_THREADS);
        let (_dir, args) = file_args("id = 2\ndata-dir = \"/tmp/x\"\nworker-threads = 4\n");
        assert_eq!(args.resolve().unwrap().worker_threads, 4);
    }

    #[test]
    fn unknown_file_keys_are_errors() {
        let (_dir, args) = file_args("id = 2\nhartbeat-ms = 50\n");
        assert!(args.resolve().is_err());
    }

    #[test]
    fn cluster_names_are_checked() {
        assert!(validate_cluster_name("prod-eu.1").is_ok());
        assert!(validate_cluster_name("").is_err());
        assert!(validate_cluster_name("a b").is_err());
    }
}
