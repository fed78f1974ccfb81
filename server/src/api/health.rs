//! Health for load balancers and orchestrators.
//!
//! * HTTP `GET /health`: 200 while this node sees a leader backed by a
//!   quorum, 503 otherwise, with a small JSON body saying why.
//! * The standard gRPC health service (`grpc.health.v1.Health`), kept in
//!   step with the same check every heartbeat interval.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tonic_health::server::HealthReporter;

use super::NodeContext;

/// The HTTP router served on `--http`.
pub fn router(ctx: NodeContext) -> Router {
    Router::new().route("/health", get(health)).with_state(ctx)
}

async fn health(State(ctx): State<NodeContext>) -> (StatusCode, Json<serde_json::Value>) {
    let term = ctx.metrics().current_term;
    match ctx.quorum_health() {
        Ok(leader) => (
            StatusCode::OK,
            Json(json!({"health": "ok", "member_id": ctx.id, "leader_id": leader, "term": term})),
        ),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"health": "unavailable", "member_id": ctx.id, "reason": reason, "term": term})),
        ),
    }
}

/// Serves the HTTP router until `shutdown` resolves.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    ctx: NodeContext,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(ctx))
        .with_graceful_shutdown(shutdown)
        .await
}

/// Keeps the gRPC health service's status equal to [`NodeContext::quorum_health`].
pub async fn track_grpc_health(ctx: NodeContext, reporter: HealthReporter, every: Duration) {
    let mut serving = None;
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        let now = ctx.quorum_health().is_ok();
        if serving != Some(now) {
            serving = Some(now);
            for service in ["", "roster.v1.KV", "roster.v1.Cluster"] {
                if now {
                    reporter
                        .set_service_status(service, tonic_health::ServingStatus::Serving)
                        .await;
                } else {
                    reporter
                        .set_service_status(service, tonic_health::ServingStatus::NotServing)
                        .await;
                }
            }
        }
    }
}

/// Binds a TCP listener, with the address in the error.
pub async fn bind(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))
}
