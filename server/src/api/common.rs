//! What the coordination services (election, topology, watch) share:
//! proposing one op through the leader, response headers, the per-node
//! limit on streams that follow the applied state, and the node's shutdown
//! signal that ends those streams.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use roster_proto::v1 as pb;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::Status;

use super::convert;
use super::route::{Outcome, Proposal};
use super::NodeContext;
use crate::limits;
use crate::state::command::{Command, Op, Response as Applied};

/// Validates `op` (`INVALID_ARGUMENT`), proposes it through the leader, and
/// returns what the state machine answered; a rejection becomes its status
/// (`NOT_FOUND`, `FAILED_PRECONDITION` for a fence, ...).
pub async fn write(
    ctx: &NodeContext,
    deadline: Instant,
    op: Op,
    request_id: Option<pb::RequestId>,
) -> Result<Applied, Status> {
    convert::validate(&op)?;
    let command = Command {
        request_id: convert::request_id(request_id),
        stamp_ms: 0,
        op,
    };
    match ctx.propose(Proposal::Write(command), deadline).await? {
        Outcome::Write(Applied::Rejected(rejection)) => Err(convert::rejection(rejection)),
        Outcome::Write(applied) => Ok(applied),
        Outcome::Members(_) => Err(Status::internal("unexpected reply to a write")),
    }
}

/// The status for a state-machine answer of the wrong kind.
pub fn mismatch(applied: &Applied) -> Status {
    Status::internal(format!("state machine answered with {applied:?}"))
}

/// `body` as a response that, when another node leads, names the leader in
/// its `roster-leader` metadata: the client then sends its next requests
/// there, saving the forward through this node (two hops per write).
pub fn hinted<T>(ctx: &NodeContext, body: T) -> tonic::Response<T> {
    let mut response = tonic::Response::new(body);
    if let Some(value) = ctx.leader_hint().and_then(|addr| addr.parse().ok()) {
        response.metadata_mut().insert("roster-leader", value);
    }
    response
}

pub fn header(ctx: &NodeContext, revision: u64, serializable: bool) -> pb::ResponseHeader {
    pb::ResponseHeader {
        revision,
        raft_term: ctx.with_metrics(|m| m.current_term),
        member_id: ctx.id,
        serializable,
    }
}

/// Streams that follow the applied state (watch, observe, campaign) open on
/// this node, bounded by [`limits::MAX_WATCHERS`].
#[derive(Clone, Default)]
pub struct StreamLimit {
    open: Arc<AtomicUsize>,
}

/// One open stream; dropping it frees the place.
pub struct StreamSlot {
    open: Arc<AtomicUsize>,
}

impl StreamLimit {
    /// Takes a place, or fails with `RESOURCE_EXHAUSTED`.
    pub fn acquire(&self) -> Result<StreamSlot, Status> {
        let taken = self
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limits::MAX_WATCHERS).then_some(n + 1)
            })
            .is_ok();
        if !taken {
            return Err(Status::resource_exhausted(format!(
                "this node serves {} watch, observe and campaign streams; the limit is {}",
                limits::MAX_WATCHERS,
                limits::MAX_WATCHERS
            )));
        }
        Ok(StreamSlot {
            open: self.open.clone(),
        })
    }

    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Everything a streaming service needs besides the context: the stream
/// limit and the node's stop signal.
#[derive(Clone)]
pub struct Streams {
    pub limit: StreamLimit,
    stop: watch::Receiver<bool>,
}

impl Streams {
    pub fn new(limit: StreamLimit, stop: watch::Receiver<bool>) -> Self {
        Self { limit, stop }
    }

    /// Resolves once the node is stopping (or its stop signal is gone).
    pub async fn stopped(&self) {
        let mut rx = self.stop.clone();
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// The status a stream ends with when its node shuts down.
pub fn shutting_down() -> Status {
    Status::unavailable("node is shutting down; reconnect to another node")
}

/// The response stream of a following stream: what its task sends, until
/// the node stops — then one `UNAVAILABLE` and the end, even if the task is
/// blocked on a slow reader (so a graceful shutdown never waits for one).
/// Dropping the receiver makes the task's next send fail, which ends it.
pub fn until_stopped<T: Send + 'static>(
    rx: mpsc::Receiver<Result<T, Status>>,
    streams: Streams,
) -> impl futures::Stream<Item = Result<T, Status>> + Send + 'static {
    futures::stream::unfold(Some((rx, streams)), |state| async move {
        let (mut rx, streams) = state?;
        tokio::select! {
            biased;
            _ = streams.stopped() => Some((Err(shutting_down()), None)),
            message = rx.recv() => message.map(|m| (m, Some((rx, streams)))),
        }
    })
}

/// Waits, in a following stream's task, until the applied revision moves.
/// Returns false when the stream must end instead: the node is stopping (the
/// client is told `UNAVAILABLE`) or the client went away.
pub async fn wait_for_revision<T>(
    revisions: &mut watch::Receiver<u64>,
    streams: &Streams,
    tx: &mpsc::Sender<Result<T, Status>>,
) -> bool {
    tokio::select! {
        changed = revisions.changed() => {
            if changed.is_err() {
                let _ = tx.send(Err(shutting_down())).await;
                return false;
            }
            true
        }
        _ = streams.stopped() => {
            let _ = tx.send(Err(shutting_down())).await;
            false
        }
        _ = tx.closed() => false,
    }
}
