//! How a gRPC channel reaches an address.
//!
//! `rosterd` (forwarding to the leader, reading the leader's read index) and
//! `roster-client` open lazy tonic channels to `host:port` addresses. In
//! production they dial TCP. The simulator passes a [`Dial`] instead: each
//! connection is an in-memory pipe that it routes through its simulated
//! network, so it can refuse a connection to a crashed node, cut a
//! partitioned one, or stall a paused one, while both ends run the real
//! HTTP/2 and gRPC stack and the real handlers.

use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use tonic::transport::{Channel, Endpoint};

/// The future of one connection attempt.
pub type Dialing = Pin<Box<dyn Future<Output = io::Result<DuplexStream>> + Send>>;

/// Opens byte streams to addresses.
pub trait Dialer: Send + Sync + 'static {
    /// Connects to `addr` (`host:port`, as configured or advertised).
    fn dial(&self, addr: &str) -> Dialing;
}

/// A shared [`Dialer`]. Equal when it is the same dialer.
#[derive(Clone)]
pub struct Dial(Arc<dyn Dialer>);

impl Dial {
    pub fn new(dialer: impl Dialer) -> Self {
        Self(Arc::new(dialer))
    }

    /// Connects to `addr` through this dialer: a raw byte stream, for
    /// protocols other than gRPC (rosterd's AppendEntries link).
    pub fn dial(&self, addr: &str) -> Dialing {
        self.0.dial(addr)
    }

    /// A lazily connecting channel to `addr` through this dialer, with the
    /// endpoint's timeouts and HTTP/2 settings.
    pub fn connect_lazy(&self, endpoint: &Endpoint, addr: &str) -> Channel {
        let dialer = Arc::clone(&self.0);
        let addr: Arc<str> = Arc::from(addr);
        endpoint.connect_with_connector_lazy(tower::service_fn(move |_uri| {
            let connecting = dialer.dial(&addr);
            async move { connecting.await.map(TokioIo::new) }
        }))
    }
}

/// A lazily connecting channel to `addr`: through `dial` if given, else TCP.
pub fn channel(endpoint: &Endpoint, addr: &str, dial: Option<&Dial>) -> Channel {
    match dial {
        Some(d) => d.connect_lazy(endpoint, addr),
        None => endpoint.connect_lazy(),
    }
}

impl fmt::Debug for Dial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dial(custom)")
    }
}

impl PartialEq for Dial {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Dial {}
