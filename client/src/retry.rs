//! The retry loop shared by every call: deadline, per-attempt timeout,
//! failure classification, leader following, endpoint rotation and backoff.

use std::error::Error as StdError;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Code, Status};

use crate::endpoints::Endpoints;
use crate::error::{code_name, Error};

/// Metadata key under which a node names the leader's address on an
/// `UNAVAILABLE` answer.
pub const LEADER_HINT_METADATA: &str = "roster-leader";

/// No attempt is started with less time than this left before the overall
/// deadline: it could not complete anyway.
const MIN_ATTEMPT_BUDGET: Duration = Duration::from_millis(5);

/// The timing knobs of the retry loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RetryPolicy {
    pub request_timeout: Duration,
    pub attempt_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

/// Whether repeating a request after an ambiguous failure can change the
/// outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Idempotency {
    /// Reads, and writes deduplicated by their `RequestId`.
    Safe,
    /// Membership changes: a retry of an attempt that was in fact applied
    /// may fail (`NOT_FOUND`, `ALREADY_EXISTS`, ...). Such an answer is
    /// annotated with the earlier failure.
    Unsafe,
}

/// Exponential backoff with jitter: the n-th delay is drawn uniformly from
/// `[d/2, d]` where `d = min(initial * 2^n, max)`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            next: initial.min(max),
            max,
        }
    }

    /// The delay before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        let low = ceiling / 2;
        if ceiling <= low {
            return ceiling;
        }
        let nanos = roster_env::random::in_range(low.as_nanos() as u64, ceiling.as_nanos() as u64);
        Duration::from_nanos(nanos)
    }
}

/// Which endpoint to try next after a failure, and how long to wait first:
/// the rotation, leader hints, failed connections and the backoff, shared
/// by the retry loop and the lease keeper.
///
/// * A leader hint is followed at once, but never twice in a row, and not to
///   an endpoint that is down ([`Endpoints::is_down`]): after a hinted node
///   fails, the rotation moves on, so nodes naming each other cannot spin
///   and every endpoint gets its turn.
/// * Otherwise the rotation moves to the next endpoint that is not down.
/// * No wait after an attempt that could not connect (the request never
///   left), while fewer attempts than there are endpoints have failed that
///   way in a row: the next node may well answer, and nothing was sent.
///   Once every endpoint has refused, the backoff applies again.
/// * Otherwise the backoff, counted from the start of the failed attempt:
///   an attempt that already took that long (a node that waited for a
///   leader before giving up) is followed by the next one at once. Attempts
///   therefore never start closer together than the backoff.
#[derive(Debug, Clone)]
pub(crate) struct Pacer {
    backoff: Backoff,
    initial: Duration,
    max: Duration,
    /// The endpoint of the next attempt.
    target: usize,
    /// Position in the round-robin over all endpoints. Leader hints move
    /// `target` but not the cursor, so a stale hint cannot keep the rotation
    /// from reaching every endpoint.
    cursor: usize,
    jumped_to_hint: bool,
    /// Attempts in a row that could not connect, since the last wait.
    unconnected: usize,
}

impl Pacer {
    /// Starts at the endpoint new calls start with.
    pub fn new(endpoints: &Endpoints, backoff_initial: Duration, backoff_max: Duration) -> Self {
        let target = endpoints.start();
        Pacer {
            backoff: Backoff::new(backoff_initial, backoff_max),
            initial: backoff_initial,
            max: backoff_max,
            target,
            cursor: target,
            jumped_to_hint: false,
            unconnected: 0,
        }
    }

    /// The endpoint of the next attempt.
    pub fn target(&self) -> usize {
        self.target
    }

    /// An attempt succeeded: the backoff starts over.
    pub fn succeeded(&mut self) {
        self.backoff = Backoff::new(self.initial, self.max);
        self.jumped_to_hint = false;
        self.unconnected = 0;
    }

    /// The attempt on [`Pacer::target`] failed after `elapsed`; `connected`
    /// is false when it could not even connect (it is then marked down), and
    /// `hint` is the endpoint its answer named as leader. Moves the target
    /// and says how long to wait before the next attempt.
    pub fn failed(&mut self, endpoints: &Endpoints, connected: bool, hint: Option<usize>, elapsed: Duration) -> Next {
        if connected {
            self.unconnected = 0;
        } else {
            endpoints.mark_down(self.target);
            self.unconnected += 1;
        }
        let hint = hint.filter(|&i| i != self.target && !endpoints.is_down(i));
        if let Some(i) = hint.filter(|_| !self.jumped_to_hint) {
            self.target = i;
            self.jumped_to_hint = true;
            return Next {
                delay: Duration::ZERO,
                to_hinted_leader: true,
            };
        }
        self.cursor = endpoints.next_up(self.cursor);
        if self.cursor == self.target {
            // Skip the endpoint that just failed (unless it is the only one).
            self.cursor = endpoints.next_up(self.cursor);
        }
        self.target = self.cursor;
        self.jumped_to_hint = false;
        let delay = if !connected && self.unconnected < endpoints.len() {
            Duration::ZERO
        } else {
            self.unconnected = 0;
            self.backoff.next_delay().saturating_sub(elapsed)
        };
        Next {
            delay,
            to_hinted_leader: false,
        }
    }
}

/// What [`Pacer::failed`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Next {
    /// Wait this long before the next attempt.
    pub delay: Duration,
    /// The next attempt goes to the leader the failed one was told about.
    pub to_hinted_leader: bool,
}

/// Whether a failed attempt is worth repeating (on this or another node).
///
/// * `UNAVAILABLE` (no leader, no quorum, node down, connection refused),
/// * `DEADLINE_EXCEEDED` (the attempt's own deadline),
/// * `UNKNOWN`, `CANCELLED` or `INTERNAL` raised locally by the transport
///   (connection reset or closed mid-call) rather than sent by a server.
///
/// Everything else is an answer and goes straight back to the caller.
pub(crate) fn is_retryable(status: &Status) -> bool {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded => true,
        Code::Unknown | Code::Cancelled | Code::Internal => is_local_transport_error(status),
        _ => false,
    }
}

/// A status tonic built from a local transport error carries that error as
/// its source; statuses decoded from a server's trailers have none.
fn is_local_transport_error(status: &Status) -> bool {
    StdError::source(status).is_some()
}

/// True when the request certainly never reached a server (the connection
/// could not be established), so even a non-idempotent request can be
/// repeated without doubt.
pub(crate) fn never_sent(status: &Status) -> bool {
    let mut source = StdError::source(status);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// tonic reports an expired gRPC timeout (local or the server's) as
/// `CANCELLED: Timeout expired`; call it what it is.
fn normalize(status: Status, budget: Duration) -> Status {
    if status.code() == Code::Cancelled && status.message() == "Timeout expired" {
        return attempt_timed_out(budget);
    }
    status
}

fn attempt_timed_out(budget: Duration) -> Status {
    Status::deadline_exceeded(format!("no answer within {budget:?}"))
}

/// A status raised locally by tonic says little ("tcp connect error"); the
/// reason is in its source chain ("Connection refused"). Fold the chain into
/// the message, since the source does not survive cloning.
pub(crate) fn with_causes(status: Status) -> Status {
    let mut message = status.message().to_owned();
    let mut source = StdError::source(&status);
    while let Some(err) = source {
        let text = err.to_string();
        if !text.is_empty() && !message.contains(&text) {
            if !message.is_empty() {
                message.push_str(": ");
            }
            message.push_str(&text);
        }
        source = err.source();
    }
    if message == status.message() {
        return status;
    }
    Status::with_metadata(status.code(), message, status.metadata().clone())
}

/// The `roster-leader` hint of a status, if any.
pub(crate) fn leader_hint(status: &Status) -> Option<&str> {
    status
        .metadata()
        .get(LEADER_HINT_METADATA)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Builds the request of one attempt, with the gRPC timeout set.
pub(crate) fn request<T>(message: T, budget: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(budget);
    request
}

/// Runs `attempt` until it succeeds, fails with a non-retryable status, or
/// the overall deadline passes. See the crate documentation for the contract.
///
/// `attempt` gets the channel of the endpoint to try and the time budget of
/// this attempt (to send as the gRPC timeout); it is also cut off by a local
/// timer at that budget.
pub(crate) async fn with_retries<T, F, Fut>(
    endpoints: &Endpoints,
    policy: RetryPolicy,
    method: &'static str,
    idempotency: Idempotency,
    mut attempt: F,
) -> Result<T, Error>
where
    F: FnMut(Channel, Duration) -> Fut,
    Fut: Future<Output = Result<tonic::Response<T>, Status>>,
{
    let deadline = Instant::now() + policy.request_timeout;
    let mut pacer = Pacer::new(endpoints, policy.backoff_initial, policy.backoff_max);
    let mut attempts: u32 = 0;
    // (endpoint, status) of the most telling failure so far.
    let mut last: Option<(String, Status)> = None;
    // First failure after which the request may have been applied.
    let mut ambiguous: Option<(String, Status)> = None;

    loop {
        let started = Instant::now();
        let remaining = deadline.saturating_duration_since(started);
        if remaining < MIN_ATTEMPT_BUDGET {
            break;
        }
        let budget = remaining.min(policy.attempt_timeout);
        let cut_by_deadline = budget < policy.attempt_timeout;
        let target = pacer.target();
        let node = endpoints.get(target);
        attempts += 1;

        let status = match tokio::time::timeout(budget, attempt(node.channel.clone(), budget)).await {
            Ok(Ok(response)) => {
                // A follower that answered by forwarding to the leader names
                // it: start there next time (one hop less per write).
                let next = response
                    .metadata()
                    .get(LEADER_HINT_METADATA)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|hint| endpoints.resolve_hint(hint));
                endpoints.mark_good(next.unwrap_or(target));
                return Ok(response.into_inner());
            }
            Ok(Err(status)) => normalize(status, budget),
            Err(_elapsed) => attempt_timed_out(budget),
        };

        let retryable = is_retryable(&status);
        let sent = !never_sent(&status);
        let status = with_causes(status);

        if !retryable {
            // The node answered: it is alive, start there next time.
            endpoints.mark_good(target);
            let status = match (&ambiguous, idempotency) {
                (Some((ep, earlier)), Idempotency::Unsafe) => annotate(status, ep, earlier),
                _ => status,
            };
            return Err(Error::Rpc {
                endpoint: node.addr.to_string(),
                status,
            });
        }

        tracing::debug!(
            method,
            endpoint = %node.addr,
            attempt = attempts,
            code = code_name(status.code()),
            message = status.message(),
            "attempt failed; will retry"
        );

        if ambiguous.is_none() && sent {
            ambiguous = Some((node.addr.to_string(), status.clone()));
        }

        let hinted = leader_hint(&status).and_then(|hint| endpoints.resolve_hint(hint));
        // An attempt that only ran out of the overall deadline says less than
        // an earlier failure (say, UNAVAILABLE: no quorum): keep the earlier.
        let timed_out = status.code() == Code::DeadlineExceeded;
        if !(cut_by_deadline && timed_out && last.is_some()) {
            last = Some((node.addr.to_string(), status));
        }

        let delay = pacer.failed(endpoints, sent, hinted, started.elapsed()).delay;

        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining <= MIN_ATTEMPT_BUDGET {
            break;
        }
        if !delay.is_zero() {
            tokio::time::sleep(delay.min(remaining - MIN_ATTEMPT_BUDGET)).await;
        }
    }

    let (endpoint, last) = last.unwrap_or_else(|| {
        // Only reachable with a deadline below MIN_ATTEMPT_BUDGET, which
        // configuration validation rejects; still, answer sensibly.
        (
            endpoints.get(pacer.target()).addr.to_string(),
            Status::deadline_exceeded("deadline too short to attempt the request"),
        )
    });
    Err(Error::DeadlineExceeded {
        timeout: policy.request_timeout,
        attempts,
        endpoint,
        last,
    })
}

/// Notes on a final answer of a non-idempotent request that an earlier
/// attempt may already have been applied.
fn annotate(status: Status, endpoint: &str, earlier: &Status) -> Status {
    let message = format!(
        "{} (note: an earlier attempt via {endpoint} failed with {}: {}; it may have been applied)",
        status.message(),
        code_name(earlier.code()),
        earlier.message()
    );
    Status::with_metadata(status.code(), message, status.metadata().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::endpoints::{ChannelSettings, DOWN_HOLD};

    fn endpoints(n: usize) -> Endpoints {
        let addrs: Vec<String> = (1..=n).map(|i| format!("n{i}:7401")).collect();
        let settings = ChannelSettings {
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: None,
            dial: None,
        };
        Endpoints::new(&addrs, settings).unwrap()
    }

    fn refused() -> Status {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "connection refused");
        Status::from_error(Box::new(tonic::ConnectError(Box::new(io))))
    }

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test(start_paused = true)]
    async fn pacer_passes_by_nodes_that_refuse_without_waiting() {
        let eps = endpoints(3);
        let mut p = Pacer::new(&eps, 100 * MS, 1000 * MS);
        assert_eq!(p.target(), 0);
        // n1 refuses: n2 at once, and n1 is down.
        let next = p.failed(&eps, false, None, Duration::ZERO);
        assert_eq!((p.target(), next.delay), (1, Duration::ZERO));
        assert!(eps.is_down(0));
        // n2 answers UNAVAILABLE at once: backoff, and the rotation passes
        // n1 by.
        let next = p.failed(&eps, true, None, Duration::ZERO);
        assert_eq!(p.target(), 2);
        assert!((50 * MS..=100 * MS).contains(&next.delay), "{next:?}");
        let next = p.failed(&eps, true, None, Duration::ZERO);
        assert_eq!(p.target(), 1, "n1 is down: passed by");
        assert!((100 * MS..=200 * MS).contains(&next.delay), "{next:?}");
        // Every node refuses: after as many refusals as endpoints, wait.
        let mut waits = Vec::new();
        for _ in 0..6 {
            waits.push(p.failed(&eps, false, None, Duration::ZERO).delay);
        }
        let nonzero: Vec<usize> = (0..6).filter(|&i| !waits[i].is_zero()).collect();
        assert_eq!(nonzero, vec![2, 5], "{waits:?}");
        assert!((100 * MS..=400 * MS).contains(&waits[2]), "{waits:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_counts_the_backoff_from_the_start_of_the_attempt() {
        let eps = endpoints(3);
        let mut p = Pacer::new(&eps, 100 * MS, 1000 * MS);
        // Took longer than the backoff: no further wait.
        assert_eq!(p.failed(&eps, true, None, 500 * MS).delay, Duration::ZERO);
        // The backoff still grows (second delay in [100, 200] ms), minus
        // what the attempt took.
        let d = p.failed(&eps, true, None, 90 * MS).delay;
        assert!((10 * MS..=110 * MS).contains(&d), "{d:?}");
        p.succeeded();
        let d = p.failed(&eps, true, None, Duration::ZERO).delay;
        assert!((50 * MS..=100 * MS).contains(&d), "after a success: {d:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn pacer_follows_hints_once_and_not_to_nodes_that_are_down() {
        let eps = endpoints(3);
        let mut p = Pacer::new(&eps, 100 * MS, 1000 * MS);
        // n1 names n3: at once.
        let next = p.failed(&eps, true, Some(2), Duration::ZERO);
        assert_eq!(
            (p.target(), next),
            (
                2,
                Next {
                    delay: Duration::ZERO,
                    to_hinted_leader: true
                }
            )
        );
        // n3 names n1: not twice in a row; the rotation goes on from n1.
        let next = p.failed(&eps, true, Some(0), Duration::ZERO);
        assert_eq!(p.target(), 1);
        assert!(!next.to_hinted_leader && !next.delay.is_zero());
        // A hint naming the node itself is no hint.
        let next = p.failed(&eps, true, Some(1), Duration::ZERO);
        assert!(!next.to_hinted_leader);
        assert_eq!(p.target(), 2);
        // n1 is down: a hint naming it is not followed, until the mark
        // lapses.
        eps.mark_down(0);
        let next = p.failed(&eps, true, Some(0), Duration::ZERO);
        assert!(!next.to_hinted_leader);
        assert_eq!(p.target(), 1, "n1 passed by");
        tokio::time::advance(DOWN_HOLD).await;
        let next = p.failed(&eps, true, Some(0), Duration::ZERO);
        assert!(next.to_hinted_leader);
        assert_eq!(p.target(), 0);
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            request_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(1),
            backoff_initial: 100 * MS,
            backoff_max: Duration::from_secs(1),
        }
    }

    /// Runs `with_retries` where attempt `i` (from 0) fails after
    /// `script[i].0` with `script[i].1`, or succeeds once the script is
    /// exhausted; returns when each attempt started.
    async fn starts_of(script: Vec<(Duration, Status)>) -> Vec<Duration> {
        let eps = endpoints(3);
        let t0 = Instant::now();
        let starts = std::sync::Mutex::new(Vec::new());
        let result = with_retries(&eps, policy(), "Put", Idempotency::Safe, |_channel, _budget| {
            let i = {
                let mut starts = starts.lock().unwrap();
                starts.push(t0.elapsed());
                starts.len() - 1
            };
            let step = script.get(i).cloned();
            async move {
                match step {
                    Some((took, status)) => {
                        tokio::time::sleep(took).await;
                        Err(status)
                    }
                    None => Ok(tonic::Response::new(())),
                }
            }
        })
        .await;
        assert!(result.is_ok(), "{result:?}");
        starts.into_inner().unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn retries_after_a_slow_failure_at_once() {
        // A node that waited 600 ms for a leader before giving up: the next
        // attempt starts when it answers, not a backoff later.
        let starts = starts_of(vec![(600 * MS, Status::unavailable("no leader"))]).await;
        assert_eq!(starts, vec![Duration::ZERO, 600 * MS]);
        // One that answers at once: the backoff.
        let starts = starts_of(vec![(Duration::ZERO, Status::unavailable("no leader"))]).await;
        assert!((50 * MS..=100 * MS).contains(&starts[1]), "{starts:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_dead_node_costs_no_backoff() {
        // The old leader refuses connections; the next node is asked at
        // once.
        let starts = starts_of(vec![(Duration::ZERO, refused())]).await;
        assert_eq!(starts, vec![Duration::ZERO, Duration::ZERO]);
        // The whole cluster refuses: one backoff per round of endpoints.
        let script = vec![(Duration::ZERO, refused()); 4];
        let starts = starts_of(script).await;
        assert_eq!(&starts[..3], &[Duration::ZERO; 3]);
        assert!(starts[3] >= 50 * MS, "{starts:?}");
    }

    #[test]
    fn backoff_grows_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let bounds = [(25, 50), (50, 100), (100, 200), (150, 300), (150, 300)];
        for (low, high) in bounds {
            let d = b.next_delay();
            assert!(
                d >= Duration::from_millis(low) && d <= Duration::from_millis(high),
                "{d:?} not in [{low}, {high}] ms"
            );
        }
    }

    #[test]
    fn backoff_never_overflows() {
        let mut b = Backoff::new(Duration::from_millis(1), Duration::MAX);
        for _ in 0..200 {
            b.next_delay();
        }
    }

    #[test]
    fn classification() {
        assert!(is_retryable(&Status::unavailable("no leader")));
        assert!(is_retryable(&Status::deadline_exceeded("slow")));
        // Sent by a server: final answers.
        for status in [
            Status::invalid_argument("bad"),
            Status::not_found("x"),
            Status::failed_precondition("x"),
            Status::already_exists("x"),
            Status::out_of_range("x"),
            Status::internal("server bug"),
            Status::unknown("x"),
            Status::cancelled("x"),
            Status::resource_exhausted("x"),
        ] {
            assert!(!is_retryable(&status), "{status:?}");
        }
        // Raised locally from a transport error: retry.
        let io = std::io::Error::other("connection reset");
        let local = Status::from_error(Box::new(io));
        assert_eq!(local.code(), Code::Unknown);
        assert!(is_retryable(&local));
    }

    #[test]
    fn causes_are_folded_into_the_message() {
        let io = std::io::Error::other("connection reset by peer");
        let s = with_causes(Status::from_error(Box::new(io)));
        assert_eq!(s.message(), "connection reset by peer");
        let plain = with_causes(Status::unavailable("no leader"));
        assert_eq!(plain.message(), "no leader");
    }

    #[test]
    fn tonic_timeouts_become_deadline_exceeded() {
        let s = normalize(Status::cancelled("Timeout expired"), Duration::from_secs(1));
        assert_eq!(s.code(), Code::DeadlineExceeded);
        let s = normalize(Status::cancelled("by peer"), Duration::from_secs(1));
        assert_eq!(s.code(), Code::Cancelled);
    }

    #[test]
    fn leader_hint_is_read_from_metadata() {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert(LEADER_HINT_METADATA, "10.0.0.2:7401".parse().unwrap());
        let s = Status::with_metadata(Code::Unavailable, "not leader", md);
        assert_eq!(leader_hint(&s), Some("10.0.0.2:7401"));
        assert_eq!(leader_hint(&Status::unavailable("x")), None);
    }

    #[test]
    fn annotation_keeps_code_and_metadata() {
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert("x-a", "b".parse().unwrap());
        let s = Status::with_metadata(Code::NotFound, "member 3 not found", md);
        let s = annotate(s, "a:1", &Status::unavailable("connection reset"));
        assert_eq!(s.code(), Code::NotFound);
        assert!(s.message().starts_with("member 3 not found (note:"));
        assert!(s.message().contains("UNAVAILABLE: connection reset"));
        assert!(s.metadata().get("x-a").is_some());
    }
}
