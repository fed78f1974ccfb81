//! [`LeaseKeeper`]: keeps a lease alive and tells, safely, whether it is
//! still held (DESIGN.md safety rule 6). The rule and its proof are in the
//! docs of [`LeaseKeeper`].

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use roster_env::Clock;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use crate::client::Client;
use crate::error::{code_name, Error};
use crate::lease::lease;
use crate::proto::{LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseRevokeResponse};
use crate::retry::{leader_hint, never_sent, request, with_causes, Idempotency, Pacer};

/// Default maximum clock-rate drift ρ: 1 %.
pub const DEFAULT_RHO: f64 = 0.01;

/// TTLs are capped at this for deadline arithmetic (the server's limit is
/// far lower), so a bogus answer cannot overflow an `Instant`.
const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);

/// Renewals queued on one stream before it counts as stalled.
const RENEWAL_QUEUE: usize = 16;

/// Shortest renewal interval, so a tiny TTL cannot turn into a busy loop.
const MIN_RENEW_EVERY: Duration = Duration::from_millis(1);

/// When a lease counts as "deadline near" ([`JeopardyReason::DeadlineNear`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum JeopardyThreshold {
    /// Once the time left before the local deadline is at most this
    /// fraction (0 to 1) of the TTL the server last returned.
    FractionOfTtl(f64),
    /// Once the time left before the local deadline is at most this.
    Remaining(Duration),
}

impl Default for JeopardyThreshold {
    /// A third of the TTL.
    fn default() -> Self {
        JeopardyThreshold::FractionOfTtl(1.0 / 3.0)
    }
}

/// How a [`LeaseKeeper`] renews and judges its lease.
///
/// ```
/// use std::time::Duration;
/// use roster_client::KeeperOptions;
///
/// let opts = KeeperOptions { rho: 0.02, ..Default::default() }.renew_every(Duration::from_millis(500));
/// assert_eq!(opts.renew_every, Some(Duration::from_millis(500)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeeperOptions {
    /// Maximum clock-rate drift between any two clocks involved, as a
    /// fraction (`0.01` = 1 %). The local deadline is
    /// `send instant + TTL * (1 - 2 * rho)`. Must be in `[0, 0.5)`. Default
    /// [`DEFAULT_RHO`].
    pub rho: f64,
    /// Interval between renewals. `None` (the default): a third of the TTL
    /// the server last returned. Must be shorter than `TTL * (1 - 2 rho)`.
    pub renew_every: Option<Duration>,
    /// When the approaching deadline alone puts the lease in jeopardy.
    /// Default: a third of the TTL before the deadline. (A failed renewal
    /// puts it in jeopardy at once, whatever this says.)
    pub jeopardy_after: JeopardyThreshold,
    /// How long a renewal may stay unacknowledged before the stream counts
    /// as failed and is re-opened on the next endpoint (a node that accepts
    /// renewals but cannot commit them: deposed, partitioned, paused).
    /// `None` (the default): the renewal interval.
    pub renewal_timeout: Option<Duration>,
}

impl Default for KeeperOptions {
    fn default() -> Self {
        KeeperOptions {
            rho: DEFAULT_RHO,
            renew_every: None,
            jeopardy_after: JeopardyThreshold::default(),
            renewal_timeout: None,
        }
    }
}

impl KeeperOptions {
    /// Sets [`KeeperOptions::rho`].
    #[must_use]
    pub fn rho(mut self, rho: f64) -> Self {
        self.rho = rho;
        self
    }

    /// Sets [`KeeperOptions::renew_every`].
    #[must_use]
    pub fn renew_every(mut self, interval: Duration) -> Self {
        self.renew_every = Some(interval);
        self
    }

    /// Sets [`KeeperOptions::jeopardy_after`].
    #[must_use]
    pub fn jeopardy_after(mut self, threshold: JeopardyThreshold) -> Self {
        self.jeopardy_after = threshold;
        self
    }

    /// Sets [`KeeperOptions::renewal_timeout`].
    #[must_use]
    pub fn renewal_timeout(mut self, timeout: Duration) -> Self {
        self.renewal_timeout = Some(timeout);
        self
    }

    /// `ttl * (1 - 2 rho)`: how long after a renewal is sent the lease is
    /// still held, by the local clock, once that renewal is acknowledged.
    pub fn safe_ttl(&self, ttl: Duration) -> Duration {
        ttl.min(MAX_TTL).mul_f64(1.0 - 2.0 * self.rho)
    }

    /// Checks every field against the expected `ttl`.
    fn validate(&self, ttl: Duration) -> Result<(), Error> {
        let invalid = |what: String| Err(Error::InvalidConfig(format!("keeper options: {what}")));
        if !self.rho.is_finite() || !(0.0..0.5).contains(&self.rho) {
            return invalid(format!("rho must be in [0, 0.5), got {}", self.rho));
        }
        if ttl.is_zero() {
            return invalid("the TTL must be greater than zero".into());
        }
        let safe = self.safe_ttl(ttl);
        if let Some(every) = self.renew_every {
            if every.is_zero() || every >= safe {
                return invalid(format!(
                    "renew_every must be greater than zero and shorter than TTL * (1 - 2 rho) = {safe:?}, got {every:?}"
                ));
            }
        }
        if self.renewal_timeout.is_some_and(|t| t.is_zero() || t > MAX_TTL) {
            return invalid(format!(
                "renewal_timeout must be greater than zero and at most {MAX_TTL:?}, got {:?}",
                self.renewal_timeout
            ));
        }
        if let JeopardyThreshold::Remaining(d) = self.jeopardy_after {
            if d > MAX_TTL {
                return invalid(format!("the jeopardy margin must be at most {MAX_TTL:?}, got {d:?}"));
            }
        }
        if let JeopardyThreshold::FractionOfTtl(f) = self.jeopardy_after {
            if !f.is_finite() || !(0.0..=1.0).contains(&f) {
                return invalid(format!("the jeopardy fraction must be in [0, 1], got {f}"));
            }
        }
        Ok(())
    }
}

/// What the keeper believes about its lease. Published through a
/// [`tokio::sync::watch`] channel ([`LeaseKeeper::subscribe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Renewals are acknowledged and the deadline is not near. The lease is
    /// held until `deadline` (local monotonic clock).
    Healthy {
        /// The local deadline: the lease must be treated as lost from this
        /// instant on.
        deadline: Instant,
    },
    /// Still held until `deadline`, but renewals are failing or the
    /// deadline is near: finish or hand over protected work.
    Jeopardy {
        /// The local deadline, as in [`LeaseState::Healthy`].
        deadline: Instant,
        /// Why the lease is in jeopardy.
        reason: JeopardyReason,
    },
    /// Not held, for good: the keeper has stopped renewing and this state
    /// never changes again.
    Lost {
        /// Why the lease was lost.
        reason: LostReason,
    },
}

impl LeaseState {
    /// True for [`LeaseState::Lost`].
    pub fn is_lost(&self) -> bool {
        matches!(self, LeaseState::Lost { .. })
    }

    /// True for [`LeaseState::Healthy`].
    pub fn is_healthy(&self) -> bool {
        matches!(self, LeaseState::Healthy { .. })
    }

    /// True for [`LeaseState::Jeopardy`].
    pub fn is_jeopardy(&self) -> bool {
        matches!(self, LeaseState::Jeopardy { .. })
    }

    /// The local deadline, unless lost.
    pub fn deadline(&self) -> Option<Instant> {
        match self {
            LeaseState::Healthy { deadline } | LeaseState::Jeopardy { deadline, .. } => Some(*deadline),
            LeaseState::Lost { .. } => None,
        }
    }

    /// Whether the lease may be acted on at `now`: not lost and `now` before
    /// the deadline. Exact even when the state was read before the timer
    /// that flips it to `Lost` had a chance to run.
    pub fn is_held_at(&self, now: Instant) -> bool {
        self.deadline().is_some_and(|deadline| now < deadline)
    }
}

impl fmt::Display for LeaseState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let left = |deadline: &Instant| deadline.saturating_duration_since(Instant::now());
        match self {
            LeaseState::Healthy { deadline } => write!(f, "healthy ({:?} left)", left(deadline)),
            LeaseState::Jeopardy { deadline, reason } => {
                write!(f, "jeopardy: {reason} ({:?} left)", left(deadline))
            }
            LeaseState::Lost { reason } => write!(f, "lost: {reason}"),
        }
    }
}

/// Why a lease is in [`LeaseState::Jeopardy`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum JeopardyReason {
    /// The deadline is within [`KeeperOptions::jeopardy_after`].
    DeadlineNear,
    /// Renewals are failing: the stream could not be opened, broke, or a
    /// renewal was not acknowledged in time. Cleared by the next
    /// acknowledgement.
    RenewalFailed {
        /// Code of the last failure.
        code: Code,
        /// Its message.
        message: String,
    },
}

impl fmt::Display for JeopardyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JeopardyReason::DeadlineNear => f.write_str("deadline near"),
            JeopardyReason::RenewalFailed { code, message } => {
                write!(f, "renewal failed: {}: {message}", code_name(*code))
            }
        }
    }
}

/// Why a lease is [`LeaseState::Lost`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum LostReason {
    /// The local deadline passed without a newer acknowledged renewal.
    Expired,
    /// The server says the lease no longer exists (a renewal answered with
    /// TTL 0, or `NOT_FOUND`).
    NotFound,
    /// Revoked through [`LeaseKeeper::revoke`].
    Revoked,
    /// The [`LeaseKeeper`] was dropped: nothing renews the lease any more.
    Stopped,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LostReason::Expired => "local deadline passed",
            LostReason::NotFound => "the lease no longer exists",
            LostReason::Revoked => "revoked",
            LostReason::Stopped => "keeper stopped",
        })
    }
}

/// Sets the state unless it is already `Lost` (which is terminal). Returns
/// whether the state is `Lost` afterwards.
fn publish(state: &watch::Sender<LeaseState>, new: LeaseState) -> bool {
    let mut lost = false;
    state.send_if_modified(|current| {
        if current.is_lost() {
            lost = true;
            return false;
        }
        lost = new.is_lost();
        if *current == new {
            return false;
        }
        *current = new;
        true
    });
    lost
}

/// Resolves once `state` is lost: when it says so, or at its deadline by a
/// timer of its own (which then publishes `Lost { Expired }`).
pub(crate) async fn lost_of(state: &watch::Sender<LeaseState>, clock: &Clock) -> LostReason {
    let mut rx = state.subscribe();
    loop {
        let deadline = match &*rx.borrow_and_update() {
            LeaseState::Lost { reason } => return reason.clone(),
            LeaseState::Healthy { deadline } | LeaseState::Jeopardy { deadline, .. } => *deadline,
        };
        tokio::select! {
            biased;
            _ = clock.sleep_until(deadline) => {
                publish(state, LeaseState::Lost { reason: LostReason::Expired });
            }
            changed = rx.changed() => {
                if changed.is_err() {
                    return LostReason::Stopped;
                }
            }
        }
    }
}

/// Keeps one lease alive with a background task and publishes whether it is
/// held. Created by [`Client::keep_lease`] or [`Client::grant_and_keep`].
///
/// The task keeps one `KeepAlive` stream open, sends a renewal every
/// [`KeeperOptions::renew_every`], and moves the local deadline as
/// acknowledgements arrive (see below). A broken stream is re-opened at
/// once on the leader a `roster-leader` hint names, otherwise on the next
/// endpoint after a backoff, like every call of the client. A renewal not
/// acknowledged within [`KeeperOptions::renewal_timeout`] counts as a
/// failure: the stream is re-opened on the next endpoint.
///
/// Dropping the keeper stops the task, closes the stream and sets the state
/// to `Lost { Stopped }` for every subscriber. The lease itself then expires
/// on the server after its TTL; use [`LeaseKeeper::revoke`] to end it at
/// once.
///
/// # The guarantee
///
/// The keeper computes a **local deadline** for the lease and treats the
/// lease as lost from that instant on:
///
/// ```text
/// deadline = send_instant(R) + TTL(R) * (1 - 2ρ)
/// ```
///
/// where `R` is the newest renewal the server has acknowledged,
/// `send_instant(R)` is the client's monotonic clock read *before* `R` was
/// handed to the transport, `TTL(R)` is the TTL in the server's answer to
/// `R`, and `ρ` is [`KeeperOptions::rho`], the maximum clock-rate drift
/// (default 1 %). The first "renewal" is the grant itself
/// ([`Client::grant_and_keep`], timed from the start of the grant call) or
/// a confirming renewal ([`Client::keep_lease`]).
///
/// Assume, as the server guarantees (rules 4 and 5):
///
/// 1. a renewal is acknowledged only after it is committed, and it cannot be
///    committed before it was sent: `commit(R) ≥ send(R)` in real time;
/// 2. the cluster never ends the lease before `TTL(R)` has passed on its
///    clock since `commit(R)` (across leader changes too), and the role the
///    lease protects passes to another client only in the committed entry
///    that ends the lease;
/// 3. every clock involved runs at a rate within `[1 - ρ, 1 + ρ]` of real
///    time.
///
/// Then the server's TTL lasts at least `TTL / (1 + ρ)` of real time, while
/// the client's `TTL (1 - 2ρ)` lasts at most `TTL (1 - 2ρ) / (1 - ρ)`, and
/// `(1 - 2ρ)(1 + ρ) = 1 - ρ - 2ρ² ≤ 1 - ρ`. So in real time
///
/// ```text
/// client deadline ≤ send(R) + TTL/(1+ρ) ≤ commit(R) + TTL/(1+ρ) ≤ server expiry
/// ```
///
/// and any other client is granted the role only after that expiry. Hence **at no
/// instant of real time do two clients both believe they hold the same
/// lease-protected role.** Acknowledgements that arrive late, out of order
/// or from a deposed leader cannot break this: each one only vouches for the
/// renewal it answers (matched by position on the ordered stream), and a
/// deadline is never moved backwards nor revived once passed.
/// [`LeaseKeeper::revoke`] makes the state `Lost` before the revocation is
/// sent, so the lease is given up locally before it can end on the server.
///
/// What the caller must do for the guarantee to carry over to its actions:
///
/// * Check [`LeaseKeeper::is_held`] (or [`LeaseState::is_held_at`]) right
///   before each action taken as holder. The state flips to
///   [`LeaseState::Lost`] by a timer at the deadline, but a process that was
///   paused (GC, `SIGSTOP`, an overloaded runtime) may resume after the
///   deadline before that timer task has run; `is_held` compares the
///   deadline with the clock directly. For writes to other systems, pass a
///   fencing token too: a check followed by a write is still a race against
///   a pause in between.
/// * Run on a host whose monotonic clock advances with real time. Tokio's
///   `Instant` is `CLOCK_MONOTONIC` on Linux, which stops while the system
///   is suspended: a lease holder must not run on a host that suspends.
///
/// # States
///
/// [`LeaseState::Healthy`] → [`LeaseState::Jeopardy`] (renewals failing,
/// deadline near) → [`LeaseState::Lost`], and back from jeopardy to healthy
/// when a renewal is acknowledged. `Lost` is terminal: the keeper stops
/// renewing and never leaves it, even if the server answers afterwards.
pub struct LeaseKeeper {
    id: i64,
    client: Client,
    state: Arc<watch::Sender<LeaseState>>,
    task: JoinHandle<()>,
}

impl LeaseKeeper {
    /// The lease id.
    pub fn id(&self) -> i64 {
        self.id
    }

    /// The current state.
    pub fn state(&self) -> LeaseState {
        self.state.borrow().clone()
    }

    /// A receiver of every state change (its current value is the current
    /// state). Outlives the keeper: after a drop it reads `Lost`.
    pub fn subscribe(&self) -> watch::Receiver<LeaseState> {
        self.state.subscribe()
    }

    /// The local deadline, unless lost.
    pub fn deadline(&self) -> Option<Instant> {
        self.state.borrow().deadline()
    }

    /// Whether the lease may be acted on now. Check this right before each
    /// action taken as holder; see [`LeaseState::is_held_at`].
    pub fn is_held(&self) -> bool {
        self.state.borrow().is_held_at(self.client.clock().now())
    }

    /// Resolves once the lease is lost (at once if it already is), with the
    /// reason.
    ///
    /// Independently of the background task, this future also arms its own
    /// timer on the current deadline, so it resolves at the deadline even
    /// if that task is starved.
    pub async fn lost(&self) -> LostReason {
        lost_of(&self.state, self.client.clock()).await
    }

    /// A handle on the keeper's state for the crate (role guards): it reads
    /// the same deadline and never extends it.
    pub(crate) fn state_handle(&self) -> Arc<watch::Sender<LeaseState>> {
        Arc::clone(&self.state)
    }

    /// Gives the lease up: stops acting as holder (the state becomes
    /// `Lost { Revoked }`, before anything is sent), stops renewing, then
    /// revokes the lease on the server, which ends everything attached to
    /// it at once.
    ///
    /// The state is `Lost` even if the revocation fails; the lease then
    /// expires on the server after its TTL. If the lease was already lost,
    /// the reason stays as it was and the revocation is still sent.
    pub async fn revoke(&self) -> Result<LeaseRevokeResponse, Error> {
        publish(
            &self.state,
            LeaseState::Lost {
                reason: LostReason::Revoked,
            },
        );
        self.task.abort();
        self.client.lease_revoke(self.id).await
    }
}

impl Drop for LeaseKeeper {
    fn drop(&mut self) {
        publish(
            &self.state,
            LeaseState::Lost {
                reason: LostReason::Stopped,
            },
        );
        self.task.abort();
    }
}

impl fmt::Debug for LeaseKeeper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaseKeeper")
            .field("id", &self.id)
            .field("state", &*self.state.borrow())
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Grants a lease of `ttl` and keeps it alive (see [`LeaseKeeper`]).
    ///
    /// The first deadline is `start + TTL * (1 - 2 rho)`, where `start` is
    /// read before the grant call's first attempt (the grant cannot be
    /// committed earlier) and `TTL` is the one the server granted.
    ///
    /// If the grant call took so long that this deadline has already passed
    /// (retries during a failover), the lease is first renewed as by
    /// [`Client::keep_lease`], so the keeper never starts out lost.
    ///
    /// Fails like [`Client::lease_grant`], or with `INVALID_ARGUMENT` for
    /// bad options (checked before anything is granted).
    pub async fn grant_and_keep(&self, ttl: Duration, opts: KeeperOptions) -> Result<LeaseKeeper, Error> {
        opts.validate(ttl)?;
        let start = self.clock().now();
        let granted = self.lease_grant(ttl).await?;
        let granted_ttl = Duration::from_millis(granted.ttl_ms);
        if granted_ttl.is_zero() {
            return Err(Error::Rpc {
                endpoint: self.current_endpoint(),
                status: Status::internal(format!("lease {} was granted with TTL 0", granted.id)),
            });
        }
        if self.clock().now() >= start + opts.safe_ttl(granted_ttl) {
            // The grant took so long (retries, failover) that it vouches for
            // nothing any more; a keeper must not start out lost, so ask for
            // a fresh acknowledgement instead.
            return self.keep_lease(granted.id, granted_ttl, opts).await;
        }
        Ok(self.start_keeper(granted.id, granted_ttl, start, opts))
    }

    /// Keeps an existing lease `id` alive (see [`LeaseKeeper`]).
    ///
    /// Before returning it renews the lease once, under the usual retry and
    /// deadline contract, so the keeper starts with a deadline vouched for
    /// by the server: `send instant of that renewal + TTL * (1 - 2 rho)`.
    /// `ttl` is the TTL the lease was granted with; it is used to check the
    /// options (the deadline uses the TTL the server returns).
    ///
    /// Fails with `NOT_FOUND` if the lease no longer exists, with the error
    /// of the renewal if it cannot be acknowledged within the client's
    /// deadline, or with `INVALID_ARGUMENT` for bad options.
    pub async fn keep_lease(&self, id: i64, ttl: Duration, opts: KeeperOptions) -> Result<LeaseKeeper, Error> {
        opts.validate(ttl)?;
        let (sent, ttl) = self.renew_once_timed(id).await?;
        Ok(self.start_keeper(id, ttl, sent, opts))
    }

    /// Renews lease `id` once and returns the TTL it was renewed for, as
    /// etcd's `KeepAliveOnce`: one `KeepAlive` stream, one renewal,
    /// acknowledged only once committed, under the usual retry and deadline
    /// contract. Fails with `NOT_FOUND` if the lease no longer exists.
    ///
    /// This vouches for nothing by itself: an application that acts as a
    /// lease holder should use a [`LeaseKeeper`], which computes a safe
    /// local deadline from each acknowledgement. This call is for scripts
    /// and tools that only need the lease to live on.
    pub async fn lease_keep_alive_once(&self, id: i64) -> Result<Duration, Error> {
        Ok(self.renew_once_timed(id).await?.1)
    }

    /// One acknowledged renewal of lease `id`: when its request was handed
    /// to the transport (read before it could leave) and the TTL answered.
    async fn renew_once_timed(&self, id: i64) -> Result<(Instant, Duration), Error> {
        let clock = self.clock().clone();
        let (sent, ack) = self
            .call("LeaseKeepAlive", Idempotency::Safe, move |channel, budget| {
                let clock = clock.clone();
                async move {
                    let sent = clock.now();
                    // One renewal and the end of the request side together:
                    // the server answers it and then ends the stream.
                    let mut stream = lease(channel)
                        .keep_alive(request(tokio_stream::once(LeaseKeepAliveRequest { id }), budget))
                        .await?
                        .into_inner();
                    let ack = stream.message().await?.ok_or_else(|| {
                        Status::unavailable("keepalive stream closed before acknowledging the renewal")
                    })?;
                    // The stream's end usually arrives with the answer: take
                    // it if it is here, so the stream closes instead of being
                    // reset (a reset costs both ends frames and bookkeeping).
                    // Never wait for it: the renewal is already acknowledged.
                    let _ = stream.message().now_or_never();
                    Ok(tonic::Response::new((sent, ack)))
                }
            })
            .await?;
        if ack.id != id {
            return Err(Error::Rpc {
                endpoint: self.current_endpoint(),
                status: Status::internal(format!("renewal of lease {id} acknowledged for lease {}", ack.id)),
            });
        }
        if ack.ttl_ms == 0 {
            return Err(Error::Rpc {
                endpoint: self.current_endpoint(),
                status: Status::not_found(format!("lease {id} not found")),
            });
        }
        Ok((sent, Duration::from_millis(ack.ttl_ms)))
    }

    /// Spawns the keeper task for a lease whose TTL `ttl` was vouched for by
    /// a request sent at `sent`.
    fn start_keeper(&self, id: i64, ttl: Duration, sent: Instant, opts: KeeperOptions) -> LeaseKeeper {
        let tracker = Tracker::new(id, ttl, sent, opts);
        let state = Arc::new(watch::Sender::new(tracker.state(self.clock().now())));
        let policy = self.policy();
        let task = Task {
            client: self.clone(),
            state: Arc::clone(&state),
            tracker,
            pacer: Pacer::new(self.endpoint_set(), policy.backoff_initial, policy.backoff_max),
            // Open the stream at once.
            conn: Conn::Idle { at: self.clock().now() },
        };
        LeaseKeeper {
            id,
            client: self.clone(),
            state,
            task: tokio::spawn(task.run()),
        }
    }
}

/// The pure part of the keeper: deadline and state, with time passed in.
#[derive(Debug, Clone)]
struct Tracker {
    id: i64,
    opts: KeeperOptions,
    /// TTL of the newest acknowledgement.
    ttl: Duration,
    /// The local deadline; never moves backwards.
    deadline: Instant,
    /// The failure since the last acknowledgement, if any.
    failure: Option<(Code, String)>,
    lost: Option<LostReason>,
}

impl Tracker {
    fn new(id: i64, ttl: Duration, sent: Instant, opts: KeeperOptions) -> Self {
        let ttl = ttl.min(MAX_TTL);
        Tracker {
            id,
            opts,
            ttl,
            deadline: sent + opts.safe_ttl(ttl),
            failure: None,
            lost: None,
        }
    }

    /// A renewal sent at `sent` was acknowledged with `ttl` (non-zero).
    fn acknowledged(&mut self, sent: Instant, ttl: Duration) {
        if self.lost.is_some() {
            return;
        }
        let ttl = ttl.min(MAX_TTL);
        self.ttl = ttl;
        self.deadline = self.deadline.max(sent + self.opts.safe_ttl(ttl));
        self.failure = None;
    }

    fn failed(&mut self, status: &Status) {
        self.failure = Some((status.code(), status.message().to_owned()));
    }

    fn lose(&mut self, reason: LostReason) {
        self.lost.get_or_insert(reason);
    }

    /// How long before the deadline the lease is in jeopardy.
    fn margin(&self) -> Duration {
        match self.opts.jeopardy_after {
            JeopardyThreshold::FractionOfTtl(f) => self.ttl.mul_f64(f),
            JeopardyThreshold::Remaining(d) => d,
        }
    }

    /// When the deadline becomes near (`None` if that is before any
    /// representable instant).
    fn jeopardy_at(&self) -> Option<Instant> {
        self.deadline.checked_sub(self.margin())
    }

    fn renew_every(&self) -> Duration {
        self.opts.renew_every.unwrap_or(self.ttl / 3).max(MIN_RENEW_EVERY)
    }

    fn renewal_timeout(&self) -> Duration {
        self.opts.renewal_timeout.unwrap_or_else(|| self.renew_every())
    }

    fn state(&self, now: Instant) -> LeaseState {
        if let Some(reason) = &self.lost {
            return LeaseState::Lost { reason: reason.clone() };
        }
        if now >= self.deadline {
            return LeaseState::Lost {
                reason: LostReason::Expired,
            };
        }
        let deadline = self.deadline;
        if let Some((code, message)) = &self.failure {
            return LeaseState::Jeopardy {
                deadline,
                reason: JeopardyReason::RenewalFailed {
                    code: *code,
                    message: message.clone(),
                },
            };
        }
        if deadline.saturating_duration_since(now) <= self.margin() {
            return LeaseState::Jeopardy {
                deadline,
                reason: JeopardyReason::DeadlineNear,
            };
        }
        LeaseState::Healthy { deadline }
    }
}

type OpenFuture =
    Pin<Box<dyn Future<Output = Result<tonic::Response<Streaming<LeaseKeepAliveResponse>>, Status>> + Send>>;

/// The keepalive stream.
enum Conn {
    /// No stream; (re)open it at `at`.
    Idle {
        at: Instant,
    },
    Active(Box<Active>),
}

struct Active {
    endpoint: Arc<str>,
    /// Renewals to send.
    tx: mpsc::Sender<LeaseKeepAliveRequest>,
    /// Send instants of the renewals not yet acknowledged on this stream,
    /// oldest first. The stream is ordered, so the next acknowledgement
    /// answers the front one.
    inflight: VecDeque<Instant>,
    next_renewal: Instant,
    phase: Phase,
}

enum Phase {
    /// Waiting for the response headers; the first renewal is queued.
    Opening(OpenFuture),
    Open(Box<Streaming<LeaseKeepAliveResponse>>),
}

/// What woke the keeper task up on the stream's side.
enum Event {
    Reopen,
    Opened(Box<Streaming<LeaseKeepAliveResponse>>),
    Failed(Status),
    Ack(LeaseKeepAliveResponse),
    RenewDue,
    AckOverdue,
}

/// Waits for the next stream event. Cancel-safe: all state stays in `conn`.
async fn next_event(conn: &mut Conn, renewal_timeout: Duration, clock: &Clock) -> Event {
    let active = match conn {
        Conn::Idle { at } => {
            clock.sleep_until(*at).await;
            return Event::Reopen;
        }
        Conn::Active(active) => active,
    };
    let ack_by = active.inflight.front().map(|sent| *sent + renewal_timeout);
    let overdue = async move {
        match ack_by {
            Some(at) => clock.sleep_until(at).await,
            None => std::future::pending().await,
        }
    };
    match &mut active.phase {
        Phase::Opening(open) => tokio::select! {
            biased;
            opened = open => match opened {
                Ok(response) => Event::Opened(Box::new(response.into_inner())),
                Err(status) => Event::Failed(status),
            },
            () = overdue => Event::AckOverdue,
        },
        Phase::Open(stream) => {
            let next_renewal = active.next_renewal;
            tokio::select! {
                biased;
                message = stream.message() => match message {
                    Ok(Some(ack)) => Event::Ack(ack),
                    Ok(None) => Event::Failed(Status::unavailable("keepalive stream closed by the server")),
                    Err(status) => Event::Failed(status),
                },
                () = overdue => Event::AckOverdue,
                () = clock.sleep_until(next_renewal) => Event::RenewDue,
            }
        }
    }
}

/// The background task of a [`LeaseKeeper`].
struct Task {
    client: Client,
    state: Arc<watch::Sender<LeaseState>>,
    tracker: Tracker,
    /// Endpoint of the current or next stream, and the wait before it.
    pacer: Pacer,
    conn: Conn,
}

impl Task {
    async fn run(mut self) {
        let mut watcher = self.state.subscribe();
        let clock = self.client.clock().clone();
        loop {
            // One clock reading for the state and the jeopardy timer, so a
            // threshold crossed in between cannot be missed.
            let now = clock.now();
            if publish(&self.state, self.tracker.state(now)) {
                tracing::debug!(lease = self.tracker.id, state = ?*self.state.borrow(), "lease keeper stops");
                return;
            }
            let deadline = self.tracker.deadline;
            let near_at = self.tracker.jeopardy_at().filter(|at| *at > now);
            let renewal_timeout = self.tracker.renewal_timeout();
            let event = tokio::select! {
                biased;
                // The deadline wins every tie: no acknowledgement processed
                // after it can revive the lease.
                () = clock.sleep_until(deadline) => {
                    self.tracker.lose(LostReason::Expired);
                    continue;
                }
                _ = watcher.wait_for(LeaseState::is_lost) => continue,
                () = clock.sleep_until(near_at.unwrap_or(now)), if near_at.is_some() => continue,
                event = next_event(&mut self.conn, renewal_timeout, &clock) => event,
            };
            if clock.now() >= self.tracker.deadline {
                self.tracker.lose(LostReason::Expired);
                continue;
            }
            self.handle(event);
        }
    }

    fn handle(&mut self, event: Event) {
        match event {
            Event::Reopen => self.open(),
            Event::Opened(stream) => {
                if let Conn::Active(active) = &mut self.conn {
                    tracing::debug!(lease = self.tracker.id, endpoint = %active.endpoint, "keepalive stream open");
                    active.phase = Phase::Open(stream);
                }
            }
            Event::Failed(status) => self.failed(status, true),
            Event::AckOverdue => {
                let timeout = self.tracker.renewal_timeout();
                self.failed(
                    Status::deadline_exceeded(format!("renewal not acknowledged within {timeout:?}")),
                    false,
                );
            }
            Event::RenewDue => self.renew(),
            Event::Ack(ack) => self.acknowledged(ack),
        }
    }

    /// Opens a stream to `target` with the first renewal already queued.
    fn open(&mut self) {
        let node = self.client.endpoint_set().get(self.pacer.target());
        let (tx, rx) = mpsc::channel(RENEWAL_QUEUE);
        // Read the clock before the renewal can possibly leave.
        let sent = self.client.clock().now();
        // Cannot fail: the queue is new and `rx` alive.
        let _ = tx.try_send(LeaseKeepAliveRequest { id: self.tracker.id });
        let mut stub = lease(node.channel.clone());
        let open: OpenFuture = Box::pin(async move { stub.keep_alive(ReceiverStream::new(rx)).await });
        tracing::debug!(lease = self.tracker.id, endpoint = %node.addr, "opening keepalive stream");
        self.conn = Conn::Active(Box::new(Active {
            endpoint: node.addr,
            tx,
            inflight: VecDeque::from([sent]),
            next_renewal: sent + self.tracker.renew_every(),
            phase: Phase::Opening(open),
        }));
    }

    fn renew(&mut self) {
        let every = self.tracker.renew_every();
        let id = self.tracker.id;
        let Conn::Active(active) = &mut self.conn else {
            return;
        };
        let sent = self.client.clock().now();
        match active.tx.try_send(LeaseKeepAliveRequest { id }) {
            Ok(()) => {
                active.inflight.push_back(sent);
                active.next_renewal = sent + every;
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.failed(Status::unavailable("keepalive stream stalled"), false);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.failed(Status::unavailable("keepalive stream closed"), false);
            }
        }
    }

    fn acknowledged(&mut self, ack: LeaseKeepAliveResponse) {
        let id = self.tracker.id;
        let Conn::Active(active) = &mut self.conn else {
            return;
        };
        let sent = active.inflight.pop_front();
        if ack.id != id {
            let message = format!("acknowledgement for lease {} on the stream of lease {id}", ack.id);
            return self.failed(Status::internal(message), false);
        }
        if ack.ttl_ms == 0 {
            tracing::info!(lease = id, "server says the lease no longer exists");
            return self.tracker.lose(LostReason::NotFound);
        }
        let Some(sent) = sent else {
            return self.failed(Status::internal("acknowledgement without a pending renewal"), false);
        };
        self.tracker.acknowledged(sent, Duration::from_millis(ack.ttl_ms));
        self.pacer.succeeded();
        self.client.endpoint_set().mark_good(self.pacer.target());
    }

    /// The stream failed: drop it (and its in-flight renewals) and schedule
    /// the next one, as the retry loop does ([`Pacer`]): on the hinted leader
    /// at once, or on the next endpoint that is not down, after a backoff
    /// unless this one could not even be connected to.
    fn failed(&mut self, status: Status, follow_hint: bool) {
        let connected = !never_sent(&status);
        let status = with_causes(status);
        let endpoints = self.client.endpoint_set();
        let endpoint = endpoints.get(self.pacer.target()).addr;
        if status.code() == Code::NotFound {
            tracing::info!(lease = self.tracker.id, %endpoint, message = status.message(), "lease not found");
            return self.tracker.lose(LostReason::NotFound);
        }
        let hinted = if follow_hint {
            leader_hint(&status).and_then(|hint| endpoints.resolve_hint(hint))
        } else {
            None
        };
        let now = self.client.clock().now();
        tracing::debug!(
            lease = self.tracker.id,
            %endpoint,
            code = code_name(status.code()),
            message = status.message(),
            "keepalive stream failed"
        );
        // The backoff counts from the failure here, not from when the
        // stream opened: a stream serves many renewals.
        let next = self.pacer.failed(endpoints, connected, hinted, Duration::ZERO);
        // A hop to the leader is not a failed renewal.
        if !next.to_hinted_leader {
            self.tracker.failed(&status);
        }
        self.conn = Conn::Idle { at: now + next.delay };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(3);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn deadline_is_send_instant_plus_shrunk_ttl() {
        let t0 = Instant::now();
        let opts = KeeperOptions::default();
        assert_eq!(opts.safe_ttl(TTL), ms(2_940));
        let mut tracker = Tracker::new(7, TTL, t0, opts);
        assert_eq!(tracker.deadline, t0 + ms(2_940));
        // A renewal sent at +1 s and acknowledged whenever: deadline from
        // its send instant.
        tracker.acknowledged(t0 + ms(1_000), TTL);
        assert_eq!(tracker.deadline, t0 + ms(3_940));
        // An older renewal acknowledged late never moves it back.
        tracker.acknowledged(t0 + ms(500), TTL);
        assert_eq!(tracker.deadline, t0 + ms(3_940));
        // The server's TTL is the one used.
        tracker.acknowledged(t0 + ms(1_200), Duration::from_secs(10));
        assert_eq!(tracker.deadline, t0 + ms(1_200 + 9_800));
        assert_eq!(tracker.ttl, Duration::from_secs(10));
    }

    #[test]
    fn states_over_time() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(7, TTL, t0, KeeperOptions::default());
        let deadline = t0 + ms(2_940);
        assert_eq!(tracker.state(t0), LeaseState::Healthy { deadline });
        // Margin: a third of 3 s before the deadline.
        assert_eq!(tracker.jeopardy_at(), Some(deadline - ms(1_000)));
        assert!(tracker.state(deadline - ms(1_001)).is_healthy());
        assert_eq!(
            tracker.state(deadline - ms(1_000)),
            LeaseState::Jeopardy {
                deadline,
                reason: JeopardyReason::DeadlineNear
            }
        );
        assert_eq!(
            tracker.state(deadline),
            LeaseState::Lost {
                reason: LostReason::Expired
            }
        );
        assert!(tracker.state(deadline - ms(1)).is_held_at(deadline - ms(1)));
        assert!(!tracker.state(deadline - ms(1)).is_held_at(deadline));

        tracker.failed(&Status::unavailable("no leader"));
        assert_eq!(
            tracker.state(t0),
            LeaseState::Jeopardy {
                deadline,
                reason: JeopardyReason::RenewalFailed {
                    code: Code::Unavailable,
                    message: "no leader".into()
                }
            }
        );
        tracker.acknowledged(t0 + ms(10), TTL);
        assert!(tracker.state(t0 + ms(20)).is_healthy());
    }

    #[test]
    fn lost_is_terminal() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(7, TTL, t0, KeeperOptions::default());
        tracker.lose(LostReason::NotFound);
        tracker.lose(LostReason::Expired);
        tracker.acknowledged(t0, TTL);
        assert_eq!(
            tracker.state(t0),
            LeaseState::Lost {
                reason: LostReason::NotFound
            }
        );

        let (tx, rx) = watch::channel(LeaseState::Healthy { deadline: t0 });
        assert!(!publish(
            &tx,
            LeaseState::Jeopardy {
                deadline: t0,
                reason: JeopardyReason::DeadlineNear
            }
        ));
        assert!(publish(
            &tx,
            LeaseState::Lost {
                reason: LostReason::Revoked
            }
        ));
        assert!(publish(&tx, LeaseState::Healthy { deadline: t0 + TTL }));
        assert!(publish(
            &tx,
            LeaseState::Lost {
                reason: LostReason::Stopped
            }
        ));
        assert_eq!(
            *rx.borrow(),
            LeaseState::Lost {
                reason: LostReason::Revoked
            }
        );
    }

    #[test]
    fn jeopardy_thresholds_and_defaults() {
        let t0 = Instant::now();
        let opts = KeeperOptions::default().jeopardy_after(JeopardyThreshold::Remaining(ms(200)));
        let tracker = Tracker::new(7, TTL, t0, opts);
        assert_eq!(tracker.jeopardy_at(), Some(t0 + ms(2_740)));
        assert_eq!(tracker.renew_every(), Duration::from_secs(1));
        assert_eq!(tracker.renewal_timeout(), Duration::from_secs(1));
        let tracker = Tracker::new(
            7,
            TTL,
            t0,
            KeeperOptions::default().renew_every(ms(300)).renewal_timeout(ms(900)),
        );
        assert_eq!(tracker.renew_every(), ms(300));
        assert_eq!(tracker.renewal_timeout(), ms(900));
    }

    #[test]
    fn bogus_ttls_do_not_overflow() {
        let t0 = Instant::now();
        let mut tracker = Tracker::new(7, TTL, t0, KeeperOptions::default());
        tracker.acknowledged(t0, Duration::from_millis(u64::MAX));
        assert!(tracker.deadline > t0 + TTL);
    }

    #[test]
    fn keeper_is_send_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<LeaseKeeper>();
        assert_send_sync::<LeaseState>();
    }

    #[test]
    fn option_validation() {
        let ok = KeeperOptions::default();
        assert!(ok.validate(TTL).is_ok());
        for bad in [
            ok.rho(-0.1),
            ok.rho(0.5),
            ok.rho(f64::NAN),
            ok.renew_every(Duration::ZERO),
            ok.renew_every(ms(2_940)),
            ok.renewal_timeout(Duration::ZERO),
            ok.jeopardy_after(JeopardyThreshold::FractionOfTtl(1.5)),
        ] {
            let err = bad.validate(TTL).expect_err(&format!("{bad:?}"));
            assert_eq!(err.code(), Code::InvalidArgument);
        }
        assert!(ok.validate(Duration::ZERO).is_err());
        assert!(ok.renew_every(ms(2_939)).validate(TTL).is_ok());
    }
}
