//! Client configuration.

use std::time::Duration;

use roster_env::{Clock, Dial};

use crate::endpoints::parse_endpoint;
use crate::error::Error;

/// The dev cluster that `rosterd` examples and `rosterctl` default to.
pub const DEFAULT_ENDPOINTS: [&str; 3] = ["127.0.0.1:7401", "127.0.0.1:7402", "127.0.0.1:7403"];

/// Default overall deadline of one call, retries included.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Default bound on establishing one TCP/HTTP2 connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default first retry delay.
pub const DEFAULT_BACKOFF_INITIAL: Duration = Duration::from_millis(50);
/// Default upper bound of the retry delay.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Default HTTP/2 keep-alive ping interval.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);

/// Smallest accepted `request_timeout` / `attempt_timeout`: below this an
/// attempt cannot even reach a node on a local network.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);

/// How a [`Client`](crate::Client) reaches the cluster and how long it keeps
/// trying.
///
/// Build it with [`ClientConfig::new`] and the builder-style setters; it is
/// validated by [`Client::connect`](crate::Client::connect).
///
/// ```
/// use std::time::Duration;
/// use roster_client::ClientConfig;
///
/// let config = ClientConfig::new(["127.0.0.1:7401", "http://127.0.0.1:7402"])
///     .request_timeout(Duration::from_secs(2))
///     .attempt_timeout(Duration::from_millis(500));
/// assert_eq!(config.effective_attempt_timeout(), Duration::from_millis(500));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClientConfig {
    /// Addresses of cluster members, `host:port` or `http://host:port`
    /// (plaintext HTTP/2; `https://` is rejected). The order is the initial
    /// order of rotation; the client starts with the first one.
    pub endpoints: Vec<String>,
    /// Overall deadline of one call, including every retry and backoff sleep.
    /// A call never takes (measurably) longer than this. Default 5 s.
    pub request_timeout: Duration,
    /// Bound on establishing a connection to one endpoint. Default 1 s.
    pub connect_timeout: Duration,
    /// Deadline of a single attempt (also sent to the server as the gRPC
    /// timeout). `None` (the default) means `request_timeout`. Lower it to
    /// fail over sooner from a node that accepts requests but does not
    /// answer (paused, partitioned after connecting).
    pub attempt_timeout: Option<Duration>,
    /// Delay before the first retry. Default 50 ms.
    pub backoff_initial: Duration,
    /// Upper bound of the retry delay. Default 1 s.
    pub backoff_max: Duration,
    /// HTTP/2 keep-alive ping interval on idle connections, so that a
    /// connection to a node that vanished (power loss, partition) is noticed
    /// and re-established instead of eating a whole attempt. `None` disables
    /// pings. Default 10 s.
    pub keepalive_interval: Option<Duration>,
    /// The id stamped on this client's writes for deduplication. `None`
    /// (the default): a random one. Two live clients must never share an
    /// id; set it only to make runs reproducible (the simulator does).
    pub client_id: Option<u64>,
    /// The local clock lease deadlines are kept on. Default: the real one.
    /// The simulator gives each client a drifting clock.
    pub clock: Clock,
    /// How connections are opened. `None` (the default): TCP. The simulator
    /// routes them through its in-memory network.
    pub dial: Option<Dial>,
}

impl ClientConfig {
    /// A configuration with the given endpoints and default timeouts.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            attempt_timeout: None,
            backoff_initial: DEFAULT_BACKOFF_INITIAL,
            backoff_max: DEFAULT_BACKOFF_MAX,
            keepalive_interval: Some(DEFAULT_KEEPALIVE_INTERVAL),
            client_id: None,
            clock: Clock::real(),
            dial: None,
        }
    }

    /// Sets the client id (see [`ClientConfig::client_id`]; must not be 0).
    #[must_use]
    pub fn with_client_id(mut self, id: u64) -> Self {
        self.client_id = Some(id);
        self
    }

    /// Sets the clock lease deadlines are kept on.
    #[must_use]
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Opens connections through `dial` instead of TCP.
    #[must_use]
    pub fn with_dial(mut self, dial: Dial) -> Self {
        self.dial = Some(dial);
        self
    }

    /// Sets the overall deadline of one call, retries included.
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the bound on establishing a connection.
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the deadline of a single attempt.
    #[must_use]
    pub fn attempt_timeout(mut self, timeout: Duration) -> Self {
        self.attempt_timeout = Some(timeout);
        self
    }

    /// Sets the first retry delay.
    #[must_use]
    pub fn backoff_initial(mut self, delay: Duration) -> Self {
        self.backoff_initial = delay;
        self
    }

    /// Sets the upper bound of the retry delay.
    #[must_use]
    pub fn backoff_max(mut self, delay: Duration) -> Self {
        self.backoff_max = delay;
        self
    }

    /// Sets (or, with `None`, disables) HTTP/2 keep-alive pings.
    #[must_use]
    pub fn keepalive_interval(mut self, interval: Option<Duration>) -> Self {
        self.keepalive_interval = interval;
        self
    }

    /// The per-attempt deadline actually used: `attempt_timeout`, never more
    /// than `request_timeout`.
    pub fn effective_attempt_timeout(&self) -> Duration {
        self.attempt_timeout
            .unwrap_or(self.request_timeout)
            .min(self.request_timeout)
    }

    /// Checks every field; returns the normalized endpoint addresses
    /// (`host:port`).
    pub(crate) fn validate(&self) -> Result<Vec<String>, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::InvalidConfig("at least one endpoint is required".into()));
        }
        let mut addrs: Vec<String> = Vec::with_capacity(self.endpoints.len());
        for raw in &self.endpoints {
            let addr = parse_endpoint(raw)?;
            if !addrs.contains(&addr) {
                addrs.push(addr);
            }
        }
        if self.request_timeout < MIN_TIMEOUT {
            return Err(Error::InvalidConfig(format!(
                "request_timeout must be at least {MIN_TIMEOUT:?}, got {:?}",
                self.request_timeout
            )));
        }
        if let Some(attempt) = self.attempt_timeout {
            if attempt < MIN_TIMEOUT {
                return Err(Error::InvalidConfig(format!(
                    "attempt_timeout must be at least {MIN_TIMEOUT:?}, got {attempt:?}"
                )));
            }
        }
        if self.connect_timeout.is_zero() {
            return Err(Error::InvalidConfig("connect_timeout must be greater than zero".into()));
        }
        if self.backoff_initial.is_zero() {
            return Err(Error::InvalidConfig("backoff_initial must be greater than zero".into()));
        }
        if self.backoff_max < self.backoff_initial {
            return Err(Error::InvalidConfig(format!(
                "backoff_max ({:?}) must not be below backoff_initial ({:?})",
                self.backoff_max, self.backoff_initial
            )));
        }
        if self.keepalive_interval.is_some_and(|d| d.is_zero()) {
            return Err(Error::InvalidConfig(
                "keepalive_interval must be greater than zero (use None to disable)".into(),
            ));
        }
        if self.client_id == Some(0) {
            return Err(Error::InvalidConfig(
                "client_id must not be 0 (0 reads as unset)".into(),
            ));
        }
        Ok(addrs)
    }
}

impl Default for ClientConfig {
    /// The local dev cluster ([`DEFAULT_ENDPOINTS`]) with default timeouts.
    fn default() -> Self {
        ClientConfig::new(DEFAULT_ENDPOINTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults() {
        let c = ClientConfig::default();
        assert_eq!(c.endpoints.len(), 3);
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.connect_timeout, Duration::from_secs(1));
        assert_eq!(c.effective_attempt_timeout(), Duration::from_secs(5));
        assert_eq!(c.backoff_initial, Duration::from_millis(50));
        assert_eq!(c.backoff_max, Duration::from_secs(1));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn attempt_timeout_never_exceeds_request_timeout() {
        let c = ClientConfig::default()
            .request_timeout(Duration::from_secs(1))
            .attempt_timeout(Duration::from_secs(3));
        assert_eq!(c.effective_attempt_timeout(), Duration::from_secs(1));
    }

    #[test]
    fn validation_errors() {
        let empty: [&str; 0] = [];
        assert!(ClientConfig::new(empty).validate().is_err());
        assert!(ClientConfig::default()
            .request_timeout(Duration::ZERO)
            .validate()
            .is_err());
        assert!(ClientConfig::default()
            .backoff_initial(Duration::from_secs(2))
            .validate()
            .is_err());
        assert!(ClientConfig::new(["https://a:1"]).validate().is_err());
        let err = ClientConfig::new(["nohost"]).validate().unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn duplicate_endpoints_collapse() {
        let addrs = ClientConfig::new(["a:1", "http://a:1", "b:2"]).validate().unwrap();
        assert_eq!(addrs, vec!["a:1".to_string(), "b:2".to_string()]);
    }
}
