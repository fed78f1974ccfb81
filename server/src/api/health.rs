//! Health for load balancers and orchestrators.
//!
//! * HTTP `GET /health`: 200 while this node sees a leader backed by a
//!   quorum, 503 otherwise, with a small JSON body saying why.
//! * The standard gRPC health service (`grpc.health.v1.Health`), kept in
//!   step with the same check every heartbeat interval.
//! * HTTP `GET /v1/holders/{group}/{role}`: who holds a role, as JSON
//!   `{group, role, revision, serializable: true, member_id, holders:
//!   [{candidate, token, lease}]}` (oldest grant first); 404 with a JSON
//!   `error` if the group or role does not exist.
//! * HTTP `GET /v1/holders/{group}/{role}/{candidate}`: 200 while
//!   `candidate` holds the role, 503 otherwise (also for an unknown role):
//!   a load-balancer health check that routes only to the primary.
//!
//! The holder views read this node's *applied* state without a read index
//! (they say `"serializable": true`): cheap enough to poll every second from
//! every backend, and at most as stale as this node's replication. A
//! partitioned follower keeps answering from its last applied state; pair
//! the check with `/health` (or ask several nodes) where that matters. The
//! holder itself learns of its loss from its lease (DESIGN.md rule 6) and
//! its writes are fenced, so a stale 200 cannot cause two writers.

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tonic_health::server::HealthReporter;

use super::NodeContext;

/// The HTTP router served on `--http`.
pub fn router(ctx: NodeContext) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/holders/{group}/{role}", get(holders))
        .route("/v1/holders/{group}/{role}/{candidate}", get(holds))
        .with_state(ctx)
}

async fn holders(
    State(ctx): State<NodeContext>,
    Path((group, role)): Path<(String, String)>,
) -> (StatusCode, Json<serde_json::Value>) {
    let (view, revision) = {
        let applied = ctx.state.read();
        (applied.state.holders(&group, &role), applied.state.revision())
    };
    match view {
        Some(view) => {
            let holders: Vec<serde_json::Value> = view
                .holders
                .iter()
                .map(|h| json!({"candidate": h.candidate, "token": h.token, "lease": h.lease}))
                .collect();
            (
                StatusCode::OK,
                Json(json!({
                    "group": group,
                    "role": role,
                    "revision": revision,
                    "serializable": true,
                    "member_id": ctx.id,
                    "holders": holders,
                })),
            )
        }
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({
                "error": format!("role {role:?} of group {group:?} does not exist"),
                "revision": revision,
                "serializable": true,
                "member_id": ctx.id,
            })),
        ),
    }
}

async fn holds(
    State(ctx): State<NodeContext>,
    Path((group, role, candidate)): Path<(String, String, String)>,
) -> (StatusCode, Json<serde_json::Value>) {
    let (view, revision) = {
        let applied = ctx.state.read();
        (applied.state.holders(&group, &role), applied.state.revision())
    };
    let grant = view
        .as_ref()
        .and_then(|v| v.holders.iter().find(|h| h.candidate == candidate));
    let body = |holder: bool, token: Option<u64>| {
        json!({
            "group": group,
            "role": role,
            "candidate": candidate,
            "holder": holder,
            "token": token,
            "role_exists": view.is_some(),
            "revision": revision,
            "serializable": true,
            "member_id": ctx.id,
        })
    };
    match grant {
        Some(h) => (StatusCode::OK, Json(body(true, Some(h.token)))),
        None => (StatusCode::SERVICE_UNAVAILABLE, Json(body(false, None))),
    }
}

async fn health(State(ctx): State<NodeContext>) -> (StatusCode, Json<serde_json::Value>) {
    let term = ctx.with_metrics(|m| m.current_term);
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
            for service in [
                "",
                "roster.v1.KV",
                "roster.v1.Cluster",
                "roster.v1.Lease",
                "roster.v1.Election",
                "roster.v1.Topology",
                "roster.v1.Watch",
            ] {
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
