//! Endpoint addresses, their channels, and which one to try next.
//!
//! The set starts with the configured endpoints and may grow by a few
//! addresses learnt from `roster-leader` hints (a leader the caller did not
//! list). Entries are never removed, so an index stays valid for the life of
//! the client. The "preferred" index is the endpoint that last answered; new
//! calls start there.
//!
//! An endpoint that could not be connected to (its node is down, or cut off)
//! is *down* for [`DOWN_HOLD`], or until it answers: rotation, new calls and
//! leader hints pass it by while some other endpoint is not down, so that a
//! dead node, typically the old leader that the followers keep naming until
//! they elect another, does not cost a connection attempt (up to the connect
//! timeout, when its host is gone) on every turn.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use roster_env::Dial;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::error::Error;

/// How many addresses learnt from leader hints are kept beyond the
/// configured ones (a bound against a misbehaving server).
const MAX_LEARNED_ENDPOINTS: usize = 16;

/// How long an endpoint that could not be connected to is passed by.
pub(crate) const DOWN_HOLD: Duration = Duration::from_secs(1);

/// Largest message the client accepts (a range over many keys can exceed
/// tonic's 4 MiB default).
pub(crate) const MAX_DECODING_MESSAGE_SIZE: usize = 64 * 1024 * 1024;

/// Parses `host:port` or `http://host:port` (a trailing `/` is allowed) and
/// returns the normalized `host:port`.
///
/// IPv6 literals are written in brackets: `[::1]:7401`.
pub fn parse_endpoint(raw: &str) -> Result<String, Error> {
    let invalid = |reason: &str| Error::InvalidEndpoint {
        endpoint: raw.to_owned(),
        reason: reason.to_owned(),
    };
    let s = raw.trim();
    if s.is_empty() {
        return Err(invalid("empty address"));
    }
    let rest = if let Some((scheme, rest)) = s.split_once("://") {
        match scheme.to_ascii_lowercase().as_str() {
            "http" => rest,
            "https" => {
                return Err(invalid(
                    "TLS is not supported; rosterd serves plaintext HTTP/2 (use host:port)",
                ))
            }
            _ => return Err(invalid("unsupported scheme; use host:port or http://host:port")),
        }
    } else {
        s
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains('/') || rest.contains('?') || rest.contains('#') {
        return Err(invalid("a path is not allowed; use host:port"));
    }
    if rest.contains('@') {
        return Err(invalid("user info is not allowed; use host:port"));
    }
    let (host, port) = if let Some(after_bracket) = rest.strip_prefix('[') {
        let (host, tail) = after_bracket
            .split_once(']')
            .ok_or_else(|| invalid("unclosed '[' in IPv6 address"))?;
        let port = tail
            .strip_prefix(':')
            .ok_or_else(|| invalid("missing port (expected [addr]:port)"))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(invalid("invalid IPv6 address"));
        }
        (format!("[{host}]"), port)
    } else {
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| invalid("missing port (expected host:port)"))?;
        if host.contains(':') {
            return Err(invalid("IPv6 addresses must be in brackets: [addr]:port"));
        }
        (host.to_owned(), port)
    };
    if host.is_empty() {
        return Err(invalid("missing host"));
    }
    if host.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid("host contains whitespace"));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| invalid("port must be a number between 1 and 65535"))?;
    if port == 0 {
        return Err(invalid("port must be a number between 1 and 65535"));
    }
    let addr = format!("{host}:{port}");
    // Let tonic have the final word on what it can dial.
    Endpoint::from_shared(format!("http://{addr}")).map_err(|e| invalid(&format!("not a valid URI: {e}")))?;
    Ok(addr)
}

/// Settings used to open a channel to any endpoint.
#[derive(Debug, Clone)]
pub(crate) struct ChannelSettings {
    pub connect_timeout: Duration,
    pub keepalive_interval: Option<Duration>,
    /// TCP unless set (the simulator's in-memory network).
    pub dial: Option<Dial>,
}

/// One endpoint and its (lazily connecting) channel.
#[derive(Clone, Debug)]
pub(crate) struct Node {
    pub addr: Arc<str>,
    pub channel: Channel,
    /// When a connection to it last failed, unless it answered since.
    down_since: Arc<Mutex<Option<Instant>>>,
}

impl Node {
    fn is_down(&self, now: Instant) -> bool {
        let since = *self.down_since.lock().unwrap_or_else(PoisonError::into_inner);
        since.is_some_and(|at| now.saturating_duration_since(at) < DOWN_HOLD)
    }

    fn set_down(&self, since: Option<Instant>) {
        *self.down_since.lock().unwrap_or_else(PoisonError::into_inner) = since;
    }
}

/// The endpoints of a client, shared by all its clones.
#[derive(Debug)]
pub(crate) struct Endpoints {
    nodes: RwLock<Vec<Node>>,
    preferred: AtomicUsize,
    configured: usize,
    settings: ChannelSettings,
}

impl Endpoints {
    /// Opens lazy channels to the given normalized addresses. Must run inside
    /// a Tokio runtime.
    pub fn new(addrs: &[String], settings: ChannelSettings) -> Result<Self, Error> {
        let nodes = addrs
            .iter()
            .map(|addr| open(addr, &settings))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Endpoints {
            configured: nodes.len(),
            nodes: RwLock::new(nodes),
            preferred: AtomicUsize::new(0),
            settings,
        })
    }

    /// Index of the endpoint that answered last.
    pub fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed)
    }

    /// Index of the endpoint a new call starts with: the one that answered
    /// last, unless it is down and another is not.
    pub fn start(&self) -> usize {
        let preferred = self.preferred();
        if self.is_down(preferred) {
            self.next_up(preferred)
        } else {
            preferred
        }
    }

    /// Records that `index` answered, so the next call starts there.
    pub fn mark_good(&self, index: usize) {
        self.preferred.store(index, Ordering::Relaxed);
        self.get(index).set_down(None);
    }

    /// Records that `index` could not be connected to.
    pub fn mark_down(&self, index: usize) {
        self.get(index).set_down(Some(Instant::now()));
    }

    /// Whether `index` could not be connected to within [`DOWN_HOLD`] and
    /// has not answered since.
    pub fn is_down(&self, index: usize) -> bool {
        self.get(index).is_down(Instant::now())
    }

    /// How many endpoints there are (configured and learnt).
    pub fn len(&self) -> usize {
        self.nodes.read().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// The endpoint at `index` (indices are never invalidated).
    pub fn get(&self, index: usize) -> Node {
        let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        nodes[index % nodes.len()].clone()
    }

    /// The first endpoint after `index`, in rotation order, that is not
    /// down; simply the next one when every other one is.
    pub fn next_up(&self, index: usize) -> usize {
        let nodes = self.nodes.read().unwrap_or_else(PoisonError::into_inner);
        let len = nodes.len();
        let now = Instant::now();
        (1..len)
            .map(|step| (index + step) % len)
            .find(|&i| !nodes[i].is_down(now))
            .unwrap_or((index + 1) % len)
    }

    /// All addresses, configured ones first.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|n| n.addr.to_string())
            .collect()
    }

    /// The index of the endpoint a `roster-leader` hint names, adding it if
    /// it is new (up to a bound). `None` when the hint is unusable.
    pub fn resolve_hint(&self, hint: &str) -> Option<usize> {
        let addr = parse_endpoint(hint).ok()?;
        if let Some(i) = self.find(&addr) {
            return Some(i);
        }
        let mut nodes = self.nodes.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(i) = nodes.iter().position(|n| *n.addr == *addr) {
            return Some(i);
        }
        if nodes.len() >= self.configured + MAX_LEARNED_ENDPOINTS {
            tracing::debug!(%addr, "ignoring leader hint: too many learnt endpoints");
            return None;
        }
        let node = open(&addr, &self.settings).ok()?;
        tracing::debug!(%addr, "learnt leader endpoint from hint");
        nodes.push(node);
        Some(nodes.len() - 1)
    }

    fn find(&self, addr: &str) -> Option<usize> {
        self.nodes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .position(|n| *n.addr == *addr)
    }
}

fn open(addr: &str, settings: &ChannelSettings) -> Result<Node, Error> {
    let mut endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| Error::InvalidEndpoint {
            endpoint: addr.to_owned(),
            reason: format!("not a valid URI: {e}"),
        })?
        .connect_timeout(settings.connect_timeout)
        .tcp_nodelay(true);
    if let Some(interval) = settings.keepalive_interval {
        endpoint = endpoint
            .http2_keep_alive_interval(interval)
            .keep_alive_timeout(interval.min(Duration::from_secs(5)))
            .keep_alive_while_idle(true);
    }
    Ok(Node {
        addr: Arc::from(addr),
        channel: roster_env::dial::channel(&endpoint, addr, settings.dial.as_ref()),
        down_since: Arc::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_host_port_forms() {
        assert_eq!(parse_endpoint("127.0.0.1:7401").unwrap(), "127.0.0.1:7401");
        assert_eq!(parse_endpoint(" http://127.0.0.1:7401/ ").unwrap(), "127.0.0.1:7401");
        assert_eq!(parse_endpoint("HTTP://node-1:80").unwrap(), "node-1:80");
        assert_eq!(parse_endpoint("[::1]:7401").unwrap(), "[::1]:7401");
        assert_eq!(parse_endpoint("http://[::1]:7401").unwrap(), "[::1]:7401");
    }

    #[test]
    fn rejects_bad_addresses() {
        for bad in [
            "",
            "   ",
            "host",
            "host:",
            ":7401",
            "host:0",
            "host:70000",
            "host:abc",
            "https://host:1",
            "grpc://host:1",
            "http://host:1/path",
            "::1:7401",
            "[::1]",
            "[zz]:1",
            "user@host:1",
            "ho st:1",
        ] {
            let err = parse_endpoint(bad).expect_err(bad);
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn https_error_explains() {
        let msg = parse_endpoint("https://a:1").unwrap_err().message();
        assert!(msg.contains("TLS"), "{msg}");
    }

    #[tokio::test]
    async fn rotation_and_hints() {
        let settings = ChannelSettings {
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: None,
            dial: None,
        };
        let eps = Endpoints::new(&["a:1".into(), "b:2".into()], settings).unwrap();
        assert_eq!(eps.preferred(), 0);
        assert_eq!(eps.next_up(0), 1);
        assert_eq!(eps.next_up(1), 0);
        assert_eq!(eps.resolve_hint("http://b:2"), Some(1));
        assert_eq!(eps.resolve_hint("c:3"), Some(2));
        assert_eq!(eps.resolve_hint("c:3"), Some(2));
        assert_eq!(eps.resolve_hint("garbage"), None);
        assert_eq!(eps.addrs(), vec!["a:1", "b:2", "c:3"]);
        assert_eq!(eps.next_up(2), 0);
        eps.mark_good(2);
        assert_eq!(eps.preferred(), 2);
        assert_eq!(&*eps.get(2).addr, "c:3");
        for i in 0..100 {
            eps.resolve_hint(&format!("n{i}:1"));
        }
        assert_eq!(eps.addrs().len(), 2 + MAX_LEARNED_ENDPOINTS);
    }

    #[tokio::test(start_paused = true)]
    async fn down_endpoints_are_passed_by_for_a_while() {
        let settings = ChannelSettings {
            connect_timeout: Duration::from_secs(1),
            keepalive_interval: None,
            dial: None,
        };
        let eps = Endpoints::new(&["a:1".into(), "b:2".into(), "c:3".into()], settings).unwrap();
        assert_eq!(eps.len(), 3);
        assert_eq!((eps.next_up(0), eps.start()), (1, 0));
        eps.mark_down(1);
        assert!(eps.is_down(1) && !eps.is_down(0));
        assert_eq!(eps.next_up(0), 2);
        assert_eq!(eps.next_up(2), 0);
        // The preferred endpoint went down: new calls start elsewhere.
        eps.mark_good(1);
        assert!(!eps.is_down(1), "an answer clears the mark");
        eps.mark_down(1);
        assert_eq!((eps.preferred(), eps.start()), (1, 2));
        // Every other endpoint down too: plain rotation.
        eps.mark_down(0);
        eps.mark_down(2);
        assert_eq!(eps.next_up(0), 1);
        assert_eq!(eps.next_up(1), 2);
        assert_eq!(eps.start(), 2);
        // The mark lapses after DOWN_HOLD.
        tokio::time::advance(DOWN_HOLD - Duration::from_millis(1)).await;
        assert!(eps.is_down(1));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!eps.is_down(0) && !eps.is_down(1) && !eps.is_down(2));
        assert_eq!((eps.next_up(0), eps.start()), (1, 1));
    }
}
