//! Lease calls and the `LeaseKeeper`, against in-process fake `Lease`
//! servers on 127.0.0.1 (no rosterd needed).
//!
//! Real time with short TTLs (a few hundred ms): the fake servers use real
//! sockets, and tokio's paused clock would jump over network waits. Every
//! bound that safety depends on (never lost late by the deadline rule, never
//! a deadline later than the send-time rule allows) is checked exactly;
//! only "how soon after" checks have a tolerance, for a loaded machine.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roster_client::proto::lease_server::{Lease, LeaseServer};
use roster_client::proto::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseListRequest,
    LeaseListResponse, LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, ResponseHeader,
};
use roster_client::{
    Client, ClientConfig, Code, JeopardyReason, KeeperOptions, LeaseKeeper, LeaseState, LostReason,
    LEADER_HINT_METADATA,
};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Request, Response, Status, Streaming};

/// Tolerance for "happens soon after": scheduling on a loaded 2-core
/// machine. Never used for a safety bound.
const SLACK: Duration = Duration::from_millis(150);

/// The safe fraction of the TTL with the default ρ = 1 %.
fn safe(ttl: Duration) -> Duration {
    ttl.mul_f64(1.0 - 2.0 * 0.01)
}

// ---------------------------------------------------------------------------
// The fake server

/// How the fake answers renewals; read at every renewal, so changing it
/// affects open streams.
#[derive(Debug, Clone)]
enum Mode {
    /// Acknowledge each renewal, `delay` after it was received, in order.
    Ack { delay: Duration },
    /// Receive renewals, never answer.
    Hang,
    /// Answer with TTL 0: the lease is gone.
    Gone,
    /// `UNAVAILABLE` naming `hint` as the leader: when a stream opens, or
    /// on the next renewal of an open stream (ending it).
    Refuse { hint: String },
}

enum Reply {
    Ack {
        received: Instant,
        id: i64,
        delay: Duration,
    },
    Gone {
        id: i64,
    },
    Refuse {
        hint: String,
    },
}

#[derive(Debug)]
struct Node {
    member_id: u64,
    mode: Mutex<Mode>,
    /// TTL of the answers, ms (set by grants).
    ttl_ms: AtomicU64,
    /// Receive instant of every renewal.
    renewals: Mutex<Vec<Instant>>,
    /// Receive instants of the renewals acknowledged, in order.
    acked: Mutex<Vec<Instant>>,
    opened: AtomicUsize,
    refused: AtomicUsize,
    /// Streams whose request side ended (the client closed or reset it).
    closed: AtomicUsize,
    /// `UNAVAILABLE` with this leader hint for unary calls.
    refuse_unary: Mutex<Option<String>>,
    grants: Mutex<Vec<LeaseGrantRequest>>,
    revokes: Mutex<Vec<LeaseRevokeRequest>>,
    /// A keeper's state, read when a revoke arrives.
    watched: Mutex<Option<watch::Receiver<LeaseState>>>,
    lost_when_revoked: Mutex<Vec<bool>>,
}

impl Node {
    fn new(member_id: u64, mode: Mode) -> Arc<Node> {
        Arc::new(Node {
            member_id,
            mode: Mutex::new(mode),
            ttl_ms: AtomicU64::new(1_000),
            renewals: Mutex::default(),
            acked: Mutex::default(),
            opened: AtomicUsize::new(0),
            refused: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
            refuse_unary: Mutex::default(),
            grants: Mutex::default(),
            revokes: Mutex::default(),
            watched: Mutex::default(),
            lost_when_revoked: Mutex::default(),
        })
    }

    fn serving() -> Arc<Node> {
        Node::new(1, Mode::Ack { delay: Duration::ZERO })
    }

    fn set_mode(&self, mode: Mode) {
        *self.mode.lock().unwrap() = mode;
    }

    fn mode(&self) -> Mode {
        self.mode.lock().unwrap().clone()
    }

    fn renewals(&self) -> usize {
        self.renewals.lock().unwrap().len()
    }

    fn acked(&self) -> Vec<Instant> {
        self.acked.lock().unwrap().clone()
    }

    fn header(&self) -> Option<ResponseHeader> {
        Some(ResponseHeader {
            revision: 1,
            raft_term: 1,
            member_id: self.member_id,
            serializable: false,
        })
    }

    fn check_unary(&self) -> Result<(), Status> {
        match self.refuse_unary.lock().unwrap().clone() {
            Some(hint) => Err(refusal(&hint)),
            None => Ok(()),
        }
    }
}

fn refusal(hint: &str) -> Status {
    let mut status = Status::unavailable("not the leader");
    status
        .metadata_mut()
        .insert(LEADER_HINT_METADATA, hint.parse().unwrap());
    status
}

#[derive(Clone)]
struct Fake(Arc<Node>);

#[tonic::async_trait]
impl Lease for Fake {
    async fn grant(&self, req: Request<LeaseGrantRequest>) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = req.into_inner();
        self.0.grants.lock().unwrap().push(req);
        self.0.check_unary()?;
        self.0.ttl_ms.store(req.ttl_ms, Ordering::SeqCst);
        Ok(Response::new(LeaseGrantResponse {
            header: self.0.header(),
            id: if req.id == 0 { 1_000 } else { req.id },
            ttl_ms: req.ttl_ms,
        }))
    }

    async fn revoke(&self, req: Request<LeaseRevokeRequest>) -> Result<Response<LeaseRevokeResponse>, Status> {
        let lost = self.0.watched.lock().unwrap().as_ref().map(|rx| rx.borrow().is_lost());
        if let Some(lost) = lost {
            self.0.lost_when_revoked.lock().unwrap().push(lost);
        }
        self.0.revokes.lock().unwrap().push(req.into_inner());
        self.0.check_unary()?;
        Ok(Response::new(LeaseRevokeResponse {
            header: self.0.header(),
        }))
    }

    type KeepAliveStream = ReceiverStream<Result<LeaseKeepAliveResponse, Status>>;

    async fn keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        let node = Arc::clone(&self.0);
        if let Mode::Refuse { hint } = node.mode() {
            node.refused.fetch_add(1, Ordering::SeqCst);
            return Err(refusal(&hint));
        }
        node.opened.fetch_add(1, Ordering::SeqCst);
        let mut inbound = req.into_inner();
        let (out, out_rx) = mpsc::channel(64);
        let (replies, mut replies_rx) = mpsc::unbounded_channel();

        // Reader: records renewals and decides each reply from the mode.
        let reader_node = Arc::clone(&node);
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(renewal)) => {
                        let received = Instant::now();
                        reader_node.renewals.lock().unwrap().push(received);
                        let reply = match reader_node.mode() {
                            Mode::Ack { delay } => Reply::Ack {
                                received,
                                id: renewal.id,
                                delay,
                            },
                            Mode::Gone => Reply::Gone { id: renewal.id },
                            Mode::Refuse { hint } => Reply::Refuse { hint },
                            Mode::Hang => continue,
                        };
                        let _ = replies.send(reply);
                    }
                    Ok(None) | Err(_) => {
                        reader_node.closed.fetch_add(1, Ordering::SeqCst);
                        return;
                    }
                }
            }
        });

        // Writer: answers in order, each ack `delay` after its renewal came.
        tokio::spawn(async move {
            while let Some(reply) = replies_rx.recv().await {
                let message = match reply {
                    Reply::Ack { received, id, delay } => {
                        sleep_until(received + delay).await;
                        node.acked.lock().unwrap().push(received);
                        Ok(LeaseKeepAliveResponse {
                            header: node.header(),
                            id,
                            ttl_ms: node.ttl_ms.load(Ordering::SeqCst),
                        })
                    }
                    Reply::Gone { id } => Ok(LeaseKeepAliveResponse {
                        header: node.header(),
                        id,
                        ttl_ms: 0,
                    }),
                    Reply::Refuse { hint } => {
                        node.refused.fetch_add(1, Ordering::SeqCst);
                        Err(refusal(&hint))
                    }
                };
                let last = message.is_err();
                if out.send(message).await.is_err() || last {
                    return;
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(out_rx)))
    }

    async fn time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        self.0.check_unary()?;
        let req = req.into_inner();
        Ok(Response::new(LeaseTimeToLiveResponse {
            header: self.0.header(),
            id: req.id,
            granted_ttl_ms: 5_000,
            remaining_ms: 4_000,
            keys: if req.keys { vec![b"k".to_vec()] } else { vec![] },
        }))
    }

    async fn list(&self, _req: Request<LeaseListRequest>) -> Result<Response<LeaseListResponse>, Status> {
        self.0.check_unary()?;
        Ok(Response::new(LeaseListResponse {
            header: self.0.header(),
            leases: vec![LeaseStatus {
                id: 1_000,
                ttl_ms: 5_000,
                remaining_ms: 4_000,
                attached_keys: 1,
            }],
        }))
    }
}

/// Serves `node` on a fresh port; returns its `host:port`.
async fn serve(node: &Arc<Node>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(LeaseServer::new(Fake(Arc::clone(node))))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    addr
}

async fn client(endpoints: &[&str]) -> Client {
    Client::connect(
        ClientConfig::new(endpoints.iter().copied())
            .request_timeout(Duration::from_secs(3))
            .backoff_initial(Duration::from_millis(10))
            .backoff_max(Duration::from_millis(50)),
    )
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------
// Helpers

type Log = Arc<Mutex<Vec<(Instant, LeaseState)>>>;

/// Records every state the receiver sees, with the instant it saw it.
fn record(mut rx: watch::Receiver<LeaseState>) -> Log {
    let log: Log = Arc::default();
    let sink = Arc::clone(&log);
    tokio::spawn(async move {
        loop {
            let state = rx.borrow_and_update().clone();
            sink.lock().unwrap().push((Instant::now(), state));
            if rx.changed().await.is_err() {
                return;
            }
        }
    });
    log
}

fn states(log: &Log) -> Vec<(Instant, LeaseState)> {
    log.lock().unwrap().clone()
}

fn last_is_lost(log: &Log) -> bool {
    log.lock().unwrap().last().is_some_and(|(_, s)| s.is_lost())
}

/// Waits until `cond` holds, up to `limit`.
async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for: {what}");
        sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_lost(keeper: &LeaseKeeper, limit: Duration) -> LostReason {
    timeout(limit, keeper.lost())
        .await
        .expect("lease should be lost by now")
}

fn assert_all_healthy(log: &[(Instant, LeaseState)]) {
    for (_, state) in log {
        assert!(
            state.is_healthy(),
            "expected only healthy states, got {state:?} in {log:#?}"
        );
    }
}

// ---------------------------------------------------------------------------
// Keeper tests

#[tokio::test]
async fn stays_healthy_while_the_server_acknowledges() {
    let node = Node::serving();
    let addr = serve(&node).await;
    let c = client(&[&addr]).await;
    let ttl = Duration::from_millis(1_500);

    let start = Instant::now();
    let keeper = c.grant_and_keep(ttl, KeeperOptions::default()).await.unwrap();
    let log = record(keeper.subscribe());
    assert_eq!(keeper.id(), 1_000);
    assert!(keeper.is_held());
    sleep(Duration::from_millis(2_000)).await;

    let log = states(&log);
    assert_all_healthy(&log);
    let deadlines: Vec<Instant> = log.iter().filter_map(|(_, s)| s.deadline()).collect();
    assert!(deadlines.windows(2).all(|w| w[0] < w[1]), "deadlines only move forward");
    // Renewals every ttl/3 = 500 ms: about four in 2 s.
    assert!(node.renewals() >= 3, "{} renewals", node.renewals());
    assert!(keeper.deadline().unwrap() > start + Duration::from_millis(2_000));
    assert!(keeper.is_held());
    assert_eq!(node.opened.load(Ordering::SeqCst), 1, "one stream for all renewals");
}

#[tokio::test]
async fn deadline_counts_from_the_send_time_of_the_acked_renewal() {
    let delay = Duration::from_millis(250);
    let renew_every = Duration::from_millis(400);
    let node = Node::new(1, Mode::Ack { delay });
    let addr = serve(&node).await;
    let c = client(&[&addr]).await;
    // A TTL and renewal timeout far above the renewal period: a busy machine
    // may slow renewals down but must not put the lease in jeopardy.
    let ttl = Duration::from_secs(4);
    let opts = KeeperOptions::default()
        .renew_every(renew_every)
        .renewal_timeout(Duration::from_secs(2));

    let keeper = c.grant_and_keep(ttl, opts).await.unwrap();
    let first = keeper.deadline().unwrap();
    let log = record(keeper.subscribe());
    let renewed = |log: &Log| -> Vec<(Instant, Instant)> {
        states(log)
            .iter()
            .filter_map(|(seen, s)| s.deadline().map(|d| (*seen, d)))
            .filter(|(_, d)| *d > first)
            .collect()
    };
    eventually(Duration::from_secs(10), "two renewed deadlines", || {
        renewed(&log).len() >= 2
    })
    .await;

    let acked = node.acked();
    let renewed = renewed(&log);
    for (seen, deadline) in renewed {
        let sent = deadline - safe(ttl);
        // The deadline is anchored on a renewal the server received (and
        // acknowledged) no earlier than it was sent, and less than one
        // renewal period before (so on that very renewal) ...
        assert!(
            acked.iter().any(|r| *r >= sent && *r - sent < renew_every),
            "deadline {deadline:?} (sent {sent:?}) matches no acked renewal {acked:?}"
        );
        // ... and not on the arrival of the acknowledgement, which came at
        // least `delay` later.
        assert!(
            deadline + delay <= seen + safe(ttl),
            "deadline {deadline:?} seen at {seen:?} counts from the receive time"
        );
    }
    assert!(keeper.state().is_healthy(), "{:?}", keeper.state());
}

#[tokio::test]
async fn hung_server_means_jeopardy_then_lost_at_the_deadline() {
    let node = Node::serving();
    let addr = serve(&node).await;
    let c = client(&[&addr]).await;
    let ttl = Duration::from_millis(600);

    let keeper = c.grant_and_keep(ttl, KeeperOptions::default()).await.unwrap();
    let log = record(keeper.subscribe());
    sleep(Duration::from_millis(450)).await;
    node.set_mode(Mode::Hang);

    // Nobody awaits `lost()` (which has a timer of its own): the keeper's
    // timer alone flips the state, with no network event to wake it.
    eventually(Duration::from_secs(3), "lost", || last_is_lost(&log)).await;
    assert!(!keeper.is_held());
    assert_eq!(
        keeper.state(),
        LeaseState::Lost {
            reason: LostReason::Expired
        }
    );
    let lost_now = timeout(Duration::from_millis(20), keeper.lost()).await.unwrap();
    assert_eq!(lost_now, LostReason::Expired);

    let log = states(&log);
    let (lost_at, lost) = log.last().unwrap().clone();
    assert_eq!(
        lost,
        LeaseState::Lost {
            reason: LostReason::Expired
        }
    );
    let (_, before) = &log[log.len() - 2];
    assert!(before.is_jeopardy(), "jeopardy comes before lost: {log:#?}");
    let deadline = before.deadline().unwrap();
    // Never late by the deadline; soon after it although nothing happened
    // on the network.
    assert!(lost_at >= deadline, "lost {lost_at:?} before the deadline {deadline:?}");
    assert!(
        lost_at - deadline < SLACK,
        "lost {:?} after the deadline",
        lost_at - deadline
    );

    // The deadline is the send instant of the last acknowledged renewal
    // plus TTL (1 - 2ρ): the server received that renewal at or after it.
    let last_acked = *node.acked().last().expect("some renewals were acked");
    let sent = deadline - safe(ttl);
    assert!(last_acked >= sent, "deadline later than the send-time rule allows");
    assert!(last_acked - sent < SLACK, "{:?}", last_acked - sent);
    // The keeper went on trying while in jeopardy.
    assert!(node.renewals() > node.acked().len());
}

#[tokio::test]
async fn lost_exactly_at_the_deadline_by_the_paused_clock() {
    let node = Node::serving();
    let addr = serve(&node).await;
    let c = client(&[&addr]).await;
    let ttl = Duration::from_secs(2);
    let keeper = c.grant_and_keep(ttl, KeeperOptions::default()).await.unwrap();
    eventually(Duration::from_secs(2), "an ack", || !node.acked().is_empty()).await;
    node.set_mode(Mode::Hang);
    sleep(Duration::from_millis(20)).await; // let acks in flight land
    let log = record(keeper.subscribe());

    // From here the clock only moves when every task is idle, straight to
    // the next timer: the flip to lost happens at the deadline's instant.
    tokio::time::pause();
    eventually(Duration::from_secs(10), "lost", || last_is_lost(&log)).await;

    let log = states(&log);
    let (lost_at, lost) = log.last().unwrap().clone();
    assert_eq!(
        lost,
        LeaseState::Lost {
            reason: LostReason::Expired
        }
    );
    let deadline = log[log.len() - 2].1.deadline().unwrap();
    assert!(lost_at >= deadline);
    // Timers fire on a millisecond tick at or after their instant.
    assert!(
        lost_at - deadline < Duration::from_millis(2),
        "{:?} late",
        lost_at - deadline
    );
    // Jeopardy (deadline near) came a third of the TTL before.
    let near = log
        .iter()
        .find(|(_, s)| {
            *s == LeaseState::Jeopardy {
                deadline,
                reason: JeopardyReason::DeadlineNear,
            }
        })
        .map(|(at, _)| *at);
    if let Some(near) = near {
        assert!(
            deadline - near >= ttl / 3 - Duration::from_millis(1),
            "{:?}",
            deadline - near
        );
    }
    assert!(log.iter().any(|(_, s)| s.is_jeopardy()), "{log:#?}");
}

#[tokio::test]
async fn ttl_zero_means_lost_at_once() {
    let node = Node::serving();
    let addr = serve(&node).await;
    let c = client(&[&addr]).await;
    let opts = KeeperOptions::default().renew_every(Duration::from_millis(100));

    let keeper = c.grant_and_keep(Duration::from_secs(3), opts).await.unwrap();
    sleep(Duration::from_millis(150)).await;
    let deadline = keeper.deadline().unwrap();
    node.set_mode(Mode::Gone);
    let start = Instant::now();

    assert_eq!(wait_lost(&keeper, Duration::from_secs(1)).await, LostReason::NotFound);
    assert!(Instant::now() - start < Duration::from_millis(100) + SLACK);
    assert!(
        Instant::now() + Duration::from_secs(2) < deadline,
        "long before the deadline"
    );
    assert!(!keeper.is_held());
    // lost() resolves at once when already lost.
    let again = timeout(Duration::from_millis(20), keeper.lost()).await.unwrap();
    assert_eq!(again, LostReason::NotFound);
}

#[tokio::test]
async fn follows_the_leader_hint_when_the_stream_is_refused() {
    let a = Node::serving();
    let b = Node::new(2, Mode::Ack { delay: Duration::ZERO });
    let (a_addr, b_addr) = (serve(&a).await, serve(&b).await);
    a.set_mode(Mode::Refuse { hint: b_addr.clone() });
    // Only A is configured: B is learnt from the hint.
    let c = client(&[&a_addr]).await;
    let opts = KeeperOptions::default().renew_every(Duration::from_millis(100));

    let keeper = c.grant_and_keep(Duration::from_millis(900), opts).await.unwrap();
    let log = record(keeper.subscribe());
    sleep(Duration::from_millis(600)).await;

    assert_all_healthy(&states(&log));
    assert_eq!(
        a.refused.load(Ordering::SeqCst),
        1,
        "refused once, then straight to the leader"
    );
    assert!(b.acked().len() >= 4, "{} acks from B", b.acked().len());
    assert_eq!(c.current_endpoint(), b_addr);
}

#[tokio::test]
async fn follows_the_leader_hint_when_an_open_stream_is_ended() {
    let a = Node::serving();
    let b = Node::new(2, Mode::Ack { delay: Duration::ZERO });
    let (a_addr, b_addr) = (serve(&a).await, serve(&b).await);
    let c = client(&[&a_addr, &b_addr]).await;
    let opts = KeeperOptions::default().renew_every(Duration::from_millis(100));

    let keeper = c.grant_and_keep(Duration::from_millis(900), opts).await.unwrap();
    let log = record(keeper.subscribe());
    eventually(Duration::from_secs(1), "A acks", || a.acked().len() >= 2).await;
    // A is deposed: it ends the open stream on the next renewal, naming B.
    a.set_mode(Mode::Refuse { hint: b_addr.clone() });
    eventually(Duration::from_secs(1), "B acks", || b.acked().len() >= 3).await;

    assert_all_healthy(&states(&log));
    assert_eq!(a.opened.load(Ordering::SeqCst), 1);
    assert_eq!(a.refused.load(Ordering::SeqCst), 1);
    assert_eq!(b.opened.load(Ordering::SeqCst), 1);
    assert!(keeper.is_held());
}

#[tokio::test]
async fn a_node_that_never_acknowledges_is_left_for_the_next() {
    // A accepts renewals but cannot commit them (a deposed or partitioned
    // leader that has not noticed); B works.
    let a = Node::serving();
    let b = Node::new(2, Mode::Ack { delay: Duration::ZERO });
    let (a_addr, b_addr) = (serve(&a).await, serve(&b).await);
    let c = client(&[&a_addr, &b_addr]).await;
    let opts = KeeperOptions::default()
        .renew_every(Duration::from_millis(200))
        .renewal_timeout(Duration::from_millis(200));

    let keeper = c.grant_and_keep(Duration::from_millis(1_500), opts).await.unwrap();
    let log = record(keeper.subscribe());
    a.set_mode(Mode::Hang);
    eventually(Duration::from_secs(2), "B acks", || b.acked().len() >= 2).await;
    eventually(Duration::from_secs(1), "healthy again", || keeper.state().is_healthy()).await;

    let log = states(&log);
    assert!(
        log.iter().any(|(_, s)| matches!(
            s,
            LeaseState::Jeopardy {
                reason: JeopardyReason::RenewalFailed {
                    code: Code::DeadlineExceeded,
                    ..
                },
                ..
            }
        )),
        "an unacknowledged renewal is a failed renewal: {log:#?}"
    );
    assert!(log.iter().all(|(_, s)| !s.is_lost()));
    assert_eq!(c.current_endpoint(), b_addr);
}

#[tokio::test]
async fn lost_is_terminal_even_if_the_server_answers_again() {
    let node = Node::serving();
    let addr = serve(&node).await;
    let c = client(&[&addr]).await;
    let opts = KeeperOptions::default().renew_every(Duration::from_millis(50));

    let keeper = c.grant_and_keep(Duration::from_millis(400), opts).await.unwrap();
    let log = record(keeper.subscribe());
    node.set_mode(Mode::Hang);
    assert_eq!(wait_lost(&keeper, Duration::from_secs(2)).await, LostReason::Expired);
    node.set_mode(Mode::Ack { delay: Duration::ZERO });
    // The stream is closed once lost; no renewal follows.
    eventually(Duration::from_secs(1), "stream closed", || {
        node.closed.load(Ordering::SeqCst) == node.opened.load(Ordering::SeqCst)
    })
    .await;
    let renewals = node.renewals();
    sleep(Duration::from_millis(400)).await;

    assert_eq!(node.renewals(), renewals, "no renewal after lost");
    assert_eq!(
        keeper.state(),
        LeaseState::Lost {
            reason: LostReason::Expired
        }
    );
    assert!(!keeper.is_held());
    let log = states(&log);
    let first_lost = log.iter().position(|(_, s)| s.is_lost()).unwrap();
    assert_eq!(first_lost, log.len() - 1, "nothing after lost: {log:#?}");
}

#[tokio::test]
async fn revoke_gives_up_before_revoking() {
    let node = Node::serving();
    let addr = serve(&node).await;
    let c = client(&[&addr]).await;

    let keeper = c
        .grant_and_keep(Duration::from_millis(900), KeeperOptions::default())
        .await
        .unwrap();
    *node.watched.lock().unwrap() = Some(keeper.subscribe());
    let rx = keeper.subscribe();
    sleep(Duration::from_millis(100)).await;

    keeper.revoke().await.unwrap();
    assert_eq!(
        keeper.state(),
        LeaseState::Lost {
            reason: LostReason::Revoked
        }
    );
    assert_eq!(
        *rx.borrow(),
        LeaseState::Lost {
            reason: LostReason::Revoked
        }
    );
    assert_eq!(
        *node.lost_when_revoked.lock().unwrap(),
        vec![true],
        "lost before the revoke was sent"
    );
    let revokes = node.revokes.lock().unwrap().clone();
    assert_eq!(revokes.len(), 1);
    assert_eq!(revokes[0].id, keeper.id());
    let grant_id = node.grants.lock().unwrap()[0].request_id.unwrap();
    let revoke_id = revokes[0].request_id.expect("revoke carries a request id");
    assert_eq!(revoke_id.client_id, c.client_id());
    assert_eq!(revoke_id.sequence, grant_id.sequence + 1);
    eventually(Duration::from_secs(1), "stream closed", || {
        node.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    assert_eq!(keeper.lost().await, LostReason::Revoked);
}

#[tokio::test]
async fn dropping_the_keeper_stops_renewing() {
    let node = Node::serving();
    let addr = serve(&node).await;
    let c = client(&[&addr]).await;
    let opts = KeeperOptions::default().renew_every(Duration::from_millis(50));

    let keeper = c.grant_and_keep(Duration::from_millis(900), opts).await.unwrap();
    let mut rx = keeper.subscribe();
    eventually(Duration::from_secs(1), "renewals", || node.acked().len() >= 2).await;
    assert_eq!(node.closed.load(Ordering::SeqCst), 0);

    drop(keeper);
    eventually(Duration::from_secs(1), "the server sees the stream close", || {
        node.closed.load(Ordering::SeqCst) == 1
    })
    .await;
    let renewals = node.renewals();
    sleep(Duration::from_millis(200)).await;
    assert_eq!(node.renewals(), renewals, "no renewal after drop");
    // Subscribers outlive the keeper and read lost.
    assert_eq!(
        *rx.borrow_and_update(),
        LeaseState::Lost {
            reason: LostReason::Stopped
        }
    );
}

#[tokio::test]
async fn keep_lease_confirms_an_existing_lease_first() {
    let node = Node::serving();
    let addr = serve(&node).await;
    let c = client(&[&addr]).await;
    let ttl = Duration::from_millis(900);
    // The server answers with its own TTL, which is the one that counts.
    let server_ttl = Duration::from_millis(1_200);
    node.ttl_ms.store(1_200, Ordering::SeqCst);

    let before = Instant::now();
    let keeper = c.keep_lease(77, ttl, KeeperOptions::default()).await.unwrap();
    let after = Instant::now();
    assert_eq!(keeper.id(), 77);
    // Read before the keeper task first runs (single-threaded runtime).
    let deadline = keeper.deadline().unwrap();
    assert!(deadline >= before + safe(server_ttl), "{:?}", deadline - before);
    assert!(deadline <= after + safe(server_ttl), "{:?}", deadline - after);
    assert!(keeper.state().is_healthy());
    eventually(Duration::from_secs(1), "keeper stream", || {
        node.opened.load(Ordering::SeqCst) == 2
    })
    .await;
    drop(keeper);

    // A lease the server no longer has.
    node.set_mode(Mode::Gone);
    let err = c.keep_lease(78, ttl, KeeperOptions::default()).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");

    // Bad options: refused before anything is sent.
    let grants = node.grants.lock().unwrap().len();
    let err = c
        .grant_and_keep(ttl, KeeperOptions::default().rho(0.6))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = c
        .keep_lease(79, ttl, KeeperOptions::default().renew_every(ttl))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(node.grants.lock().unwrap().len(), grants);
}

// ---------------------------------------------------------------------------
// Unary lease calls

#[tokio::test]
async fn lease_calls_are_retried_with_their_request_id() {
    let a = Node::serving();
    let b = Node::new(2, Mode::Ack { delay: Duration::ZERO });
    let (a_addr, b_addr) = (serve(&a).await, serve(&b).await);
    *a.refuse_unary.lock().unwrap() = Some(b_addr.clone());
    let c = client(&[&a_addr]).await;

    let granted = c.lease_grant(Duration::from_secs(5)).await.unwrap();
    assert_eq!(granted.header.unwrap().member_id, 2);
    assert_eq!((granted.id, granted.ttl_ms), (1_000, 5_000));
    let to_a = a.grants.lock().unwrap()[0]
        .request_id
        .expect("grant carries a request id");
    let to_b = b.grants.lock().unwrap()[0].request_id.unwrap();
    assert_eq!(to_a, to_b, "a retry reuses the request id");
    assert_eq!((to_a.client_id, to_a.sequence), (c.client_id(), 1));
    assert_eq!(c.current_endpoint(), b_addr);

    let chosen = c.lease_grant_with_id(42, Duration::from_millis(2_500)).await.unwrap();
    assert_eq!((chosen.id, chosen.ttl_ms), (42, 2_500));
    assert_eq!(b.grants.lock().unwrap()[1].request_id.unwrap().sequence, 2);

    c.lease_revoke(42).await.unwrap();
    let revoke = b.revokes.lock().unwrap()[0];
    assert_eq!(revoke.id, 42);
    assert_eq!(revoke.request_id.unwrap().sequence, 3);

    let ttl = c.lease_time_to_live(42, true).await.unwrap();
    assert_eq!((ttl.id, ttl.granted_ttl_ms, ttl.keys.len()), (42, 5_000, 1));
    let ttl = c.lease_time_to_live(42, false).await.unwrap();
    assert!(ttl.keys.is_empty());
    let list = c.lease_list().await.unwrap();
    assert_eq!(list.leases.len(), 1);
}
