//! `rosterd`: run one Roster node, or a local three-node cluster with `dev`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use roster_server::config::{NodeArgs, NodeConfig};
use roster_server::node::RunningNode;
use roster_server::raft::RaftTiming;

/// Default log filter. openraft logs every failed replication attempt (each
/// heartbeat while a peer is down); rosterd logs failing peers itself, at
/// most every 10 s, so openraft's per-attempt lines are left out.
const DEFAULT_LOG: &str =
    "info,openraft=error,openraft::replication=off,openraft::engine::handler::replication_handler=off";

#[derive(Parser)]
#[command(
    name = "rosterd",
    version,
    about = "Roster: Raft-replicated leader election and role assignment"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    node: NodeArgs,
    /// Log filter (also RUST_LOG), e.g. `info` or `roster_server=debug`.
    #[arg(
        long,
        global = true,
        default_value = DEFAULT_LOG,
        env = "ROSTER_LOG"
    )]
    log: String,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local three-node cluster on loopback, for trying Roster out.
    Dev {
        /// gRPC port of node 1; nodes 2 and 3 use the next two ports, and
        /// HTTP uses the same ports plus 80.
        #[arg(long, default_value_t = 7401)]
        base_port: u16,
        /// Keep data here (default: a temporary directory removed on exit).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| cli.log.clone());
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let result = match cli.command {
        None => cli.node.resolve().and_then(|config| {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(config.worker_threads);
            runtime(builder)?.block_on(run(config))
        }),
        // Three nodes in one process: a thread per core.
        Some(Command::Dev { base_port, data_dir }) => {
            runtime(tokio::runtime::Builder::new_multi_thread()).and_then(|rt| rt.block_on(dev(base_port, data_dir)))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rosterd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime(mut builder: tokio::runtime::Builder) -> anyhow::Result<tokio::runtime::Runtime> {
    builder.enable_all().build().context("cannot start the runtime")
}

async fn run(config: NodeConfig) -> anyhow::Result<()> {
    let node = RunningNode::start(config).await?;
    tokio::select! {
        signal = wait_for_signal() => {
            signal?;
            tracing::info!("shutting down");
            node.shutdown().await
        }
        why = node.failed() => {
            tracing::error!(error = %why, "the Raft core stopped; exiting so that this node can be restarted");
            stop_after_failure(vec![node]).await;
            Err(anyhow::anyhow!("the Raft core stopped: {why}"))
        }
    }
}

/// How long a node whose Raft core stopped may take to stop serving before
/// the process exits anyway.
const STOP_AFTER_FAILURE: Duration = Duration::from_secs(10);

/// Best effort after a fatal error: stop serving (clients see the
/// connection end rather than a listener that answers nothing) and flush
/// what can be flushed, within [`STOP_AFTER_FAILURE`].
async fn stop_after_failure(nodes: Vec<RunningNode>) {
    let stopping = async {
        for node in nodes {
            if let Err(e) = node.shutdown().await {
                tracing::warn!("while stopping after the failure: {e:#}");
            }
        }
    };
    if tokio::time::timeout(STOP_AFTER_FAILURE, stopping).await.is_err() {
        tracing::warn!("stopping took over {STOP_AFTER_FAILURE:?}; exiting anyway");
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

async fn dev(base_port: u16, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let temp;
    let root = match data_dir {
        Some(dir) => dir,
        None => {
            temp = tempfile_dir()?;
            temp.0.clone()
        }
    };
    let grpc = |i: u16| SocketAddr::from(([127, 0, 0, 1], base_port + i));
    let http = |i: u16| SocketAddr::from(([127, 0, 0, 1], base_port + 80 + i));
    let members: BTreeMap<u64, String> = (0..3).map(|i| (u64::from(i) + 1, grpc(i).to_string())).collect();
    let mut nodes = Vec::new();
    for i in 0..3u16 {
        let id = u64::from(i) + 1;
        let config = NodeConfig {
            id,
            listen: grpc(i),
            advertise: grpc(i).to_string(),
            http: Some(http(i)),
            data_dir: root.join(format!("node{id}")),
            initial_cluster: members.clone(),
            // Bootstrapped below, once every node listens.
            join: true,
            cluster_name: "roster-dev".into(),
            timing: RaftTiming::default(),
            request_timeout: std::time::Duration::from_secs(5),
            // Unused: the runtime is built once, above, for all three.
            worker_threads: 1,
        };
        nodes.push(
            RunningNode::start(config)
                .await
                .with_context(|| format!("starting node {id}"))?,
        );
    }
    nodes[0].bootstrap_if_new(&members).await?;
    let endpoints: Vec<String> = (0..3).map(|i| grpc(i).to_string()).collect();
    println!("Roster dev cluster (3 nodes) is up. Data: {}", root.display());
    for (i, node) in nodes.iter().enumerate() {
        println!(
            "  node {}: grpc {}  http http://{}/health",
            i + 1,
            node.grpc_addr(),
            node.http_addr().map(|a| a.to_string()).unwrap_or_default()
        );
    }
    println!("\n  export ROSTER_ENDPOINTS={}", endpoints.join(","));
    println!("  rosterctl status\n\nCtrl-C stops the cluster.");
    let failure = {
        let failed = futures::future::select_all(nodes.iter().map(|node| Box::pin(node.failed())));
        tokio::select! {
            signal = wait_for_signal() => { signal?; None }
            (why, index, _) = failed => Some((why, index + 1)),
        }
    };
    if let Some((why, node)) = failure {
        tracing::error!(node, error = %why, "a node's Raft core stopped; stopping the dev cluster");
        stop_after_failure(nodes).await;
        return Err(anyhow::anyhow!("node {node}: the Raft core stopped: {why}"));
    }
    for node in nodes {
        node.shutdown().await?;
    }
    Ok(())
}

/// A temporary directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> anyhow::Result<TempDir> {
    let dir = std::env::temp_dir().join(format!("roster-dev-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(TempDir(dir))
}
