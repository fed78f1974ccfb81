//! One running rosterd node: opens the data dir, starts Raft, serves gRPC
//! (clients and peers) and HTTP, bootstraps a new cluster once, and shuts
//! down cleanly.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use openraft::error::{Fatal, InitializeError, RaftError};
use openraft::BasicNode;
use roster_proto::raft::raft_transport_server::RaftTransportServer;
use roster_proto::v1::cluster_server::ClusterServer;
use roster_proto::v1::election_server::ElectionServer;
use roster_proto::v1::kv_server::KvServer;
use roster_proto::v1::lease_server::LeaseServer;
use roster_proto::v1::topology_server::TopologyServer;
use roster_proto::v1::watch_server::WatchServer;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tonic::transport::server::{Router, TcpIncoming};

use crate::api::cluster::ClusterService;
use crate::api::common::{StreamLimit, Streams};
use crate::api::election::ElectionService;
use crate::api::kv::KvService;
use crate::api::lease::LeaseService;
use crate::api::lease_keeper::LeaseKeeper;
use crate::api::topology::TopologyService;
use crate::api::transport::TransportService;
use crate::api::watch::WatchService;
use crate::api::{health, listener, NodeContext};
use crate::config::NodeConfig;
use crate::limits;
use crate::raft::disk::Disk;
use crate::raft::eager;
use crate::raft::log_store::LogStore;
use crate::raft::network::{NetworkFactory, Peers, MAX_PEER_MESSAGE_BYTES};
use crate::raft::state_machine::StateMachineStore;
use crate::raft::takeover::Takeover;
use crate::raft::watchdog;
use crate::raft::NodeId;

pub struct RunningNode {
    ctx: NodeContext,
    disk: Disk,
    grpc_addr: SocketAddr,
    http_addr: Option<SocketAddr>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

/// Every gRPC service a node serves (clients and peers), with its message
/// limits, on `ctx`. rosterd serves it on TCP; the simulator serves the very
/// same router on in-memory connections. Starts the node's lease keeper.
pub fn grpc_router(ctx: &NodeContext, streams: Streams) -> Router {
    tonic::transport::Server::builder()
        .add_service(
            KvServer::new(KvService::new(ctx.clone()))
                .max_decoding_message_size(limits::MAX_TRANSPORT_BYTES)
                .max_encoding_message_size(limits::MAX_RESPONSE_BYTES),
        )
        .add_service(ClusterServer::new(ClusterService::new(ctx.clone())))
        .add_service(LeaseServer::new(LeaseService::new(
            ctx.clone(),
            LeaseKeeper::start(ctx.clone()),
        )))
        .add_service(ElectionServer::new(ElectionService::new(ctx.clone(), streams.clone())))
        .add_service(
            TopologyServer::new(TopologyService::new(ctx.clone()))
                .max_decoding_message_size(limits::MAX_TRANSPORT_BYTES)
                .max_encoding_message_size(limits::MAX_RESPONSE_BYTES),
        )
        .add_service(
            WatchServer::new(WatchService::new(ctx.clone(), streams))
                .max_encoding_message_size(limits::MAX_RESPONSE_BYTES),
        )
        .add_service(
            RaftTransportServer::new(TransportService::new(ctx.clone()))
                .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES),
        )
}

impl RunningNode {
    /// Starts a node. Fails (without side effects beyond creating the data
    /// dir) if the data dir belongs to another cluster, is corrupt, or an
    /// address cannot be bound.
    pub async fn start(config: NodeConfig) -> anyhow::Result<Self> {
        let (disk, _fresh) = Disk::open(&config.data_dir, &config.cluster_name, config.id)?;
        let state = StateMachineStore::open(disk.clone()).map_err(|e| anyhow::anyhow!("restoring snapshot: {e}"))?;
        let raft_config = Arc::new(config.timing.openraft_config(&config.cluster_name)?);
        let peers = Peers::default();
        let network = NetworkFactory { peers: peers.clone() };
        crate::raft::stagger_start(&config.timing).await;
        let raft = eager::start_raft(
            config.id,
            raft_config,
            network,
            LogStore::new(disk.clone()),
            state.clone(),
            config.timing.heartbeat,
        )
        .await
        .context("starting raft")?;
        crate::raft::unstick::spawn(raft.clone(), &config.timing);
        let ctx = NodeContext::new(
            config.id,
            config.advertise.clone(),
            config.cluster_name.clone(),
            raft.clone(),
            state,
            peers,
            config.request_timeout,
            config.timing.election_max,
            disk.committed.clone(),
        )
        .with_takeover(Takeover::new(raft.clone(), &config.timing));
        crate::raft::prompt::spawn(raft.clone(), &config.timing, ctx.leader_contact_source());

        let grpc_listener = health::bind(config.listen).await?;
        let grpc_addr = grpc_listener.local_addr()?;
        let http_listener = match config.http {
            Some(addr) => Some(health::bind(addr).await?),
            None => None,
        };
        let http_addr = http_listener.as_ref().map(|l| l.local_addr()).transpose()?;

        let (stop, _) = watch::channel(false);
        let stopped = |mut rx: watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let mut tasks = Vec::new();

        let (reporter, health_service) = tonic_health::server::health_reporter();
        tasks.push(tokio::spawn({
            let ctx = ctx.clone();
            let every = config.timing.heartbeat;
            let stop = stop.subscribe();
            async move {
                tokio::select! {
                    _ = health::track_grpc_health(ctx, reporter, every) => {}
                    _ = stopped(stop) => {}
                }
                Ok(())
            }
        }));

        // Watch, observe and campaign streams end when `stop` fires, so the
        // graceful shutdown below does not wait on them.
        let streams = Streams::new(StreamLimit::default(), stop.subscribe());
        let grpc = grpc_router(&ctx, streams.clone()).add_service(health_service);
        let accepted = TcpIncoming::from(grpc_listener).with_nodelay(Some(true));
        let incoming = listener::split(accepted, ctx.clone(), streams);
        tasks.push(tokio::spawn({
            let stop = stop.subscribe();
            async move {
                grpc.serve_with_incoming_shutdown(incoming, stopped(stop))
                    .await
                    .context("gRPC server")
            }
        }));
        if let Some(listener) = http_listener {
            tasks.push(tokio::spawn({
                let ctx = ctx.clone();
                let stop = stop.subscribe();
                async move {
                    health::serve_http(listener, ctx, stopped(stop))
                        .await
                        .context("HTTP server")
                }
            }));
        }

        tracing::info!(id = config.id, %grpc_addr, ?http_addr, data_dir = %config.data_dir.display(), "rosterd started");
        let node = Self {
            ctx,
            disk,
            grpc_addr,
            http_addr,
            stop,
            tasks,
        };
        if !config.join {
            node.bootstrap_if_new(&config.initial_cluster).await?;
        }
        Ok(node)
    }

    /// Bootstraps a new cluster of `members` unless this node's Raft state
    /// already exists. Every member of a new cluster may call this with the
    /// same members: the first initialisation to reach a node wins and the
    /// others are refused harmlessly.
    pub async fn bootstrap_if_new(&self, members: &BTreeMap<NodeId, String>) -> anyhow::Result<()> {
        let raft = &self.ctx.raft;
        if raft.is_initialized().await.context("reading raft state")? {
            return Ok(());
        }
        let nodes: BTreeMap<_, _> = members.iter().map(|(id, addr)| (*id, BasicNode::new(addr))).collect();
        match raft.initialize(nodes).await {
            Ok(()) => tracing::info!(?members, "bootstrapped a new cluster"),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => return Err(anyhow::anyhow!("bootstrapping the cluster: {e}")),
        }
        Ok(())
    }

    pub fn context(&self) -> &NodeContext {
        &self.ctx
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }

    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Resolves when this node's Raft core has stopped on a fatal error (a
    /// log write that failed, say), with the reason; never while it runs or
    /// after a requested [`RunningNode::shutdown`]. Such a node can serve
    /// nothing again: `rosterd` exits so that its supervisor restarts it.
    pub async fn failed(&self) -> Fatal<NodeId> {
        match watchdog::core_failure(&self.ctx.raft).await {
            Some(why) => why,
            None => std::future::pending().await,
        }
    }

    /// Stops serving, stops Raft, and flushes the data dir.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.stop.send(true);
        self.ctx
            .raft
            .shutdown()
            .await
            .map_err(|e| anyhow::anyhow!("stopping raft: {e}"))?;
        for task in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!("while stopping: {e:#}"),
                Err(e) => tracing::warn!("while stopping: {e}"),
            }
        }
        self.disk.flush().await.context("flushing the data dir")?;
        Ok(())
    }
}
