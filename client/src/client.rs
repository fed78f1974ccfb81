//! The [`Client`] handle.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roster_env::Clock;
use tonic::transport::Channel;
use tonic::Status;

use crate::config::{ClientConfig, MIN_TIMEOUT};
use crate::endpoints::{ChannelSettings, Endpoints};
use crate::error::Error;
use crate::proto::RequestId;
use crate::retry::{with_retries, Idempotency, RetryPolicy};

/// A handle to a Roster cluster.
///
/// Cheap to clone; clones share connections, the preferred endpoint and the
/// write sequence, and may be used from many tasks at once. See the
/// [crate documentation](crate) for the retry, deduplication and deadline
/// contract every call follows.
#[derive(Clone)]
pub struct Client {
    shared: Arc<Shared>,
    policy: RetryPolicy,
}

struct Shared {
    endpoints: Endpoints,
    client_id: u64,
    /// Sequence of the last write issued; the next write gets `+ 1`.
    sequence: AtomicU64,
    clock: Clock,
}

impl Client {
    /// Validates `config` and prepares a channel to every endpoint.
    ///
    /// Channels connect lazily: this does no network I/O and succeeds while
    /// the cluster is down; the first call connects. Must be called from
    /// within a Tokio runtime.
    pub async fn connect(config: ClientConfig) -> Result<Client, Error> {
        let addrs = config.validate()?;
        let endpoints = Endpoints::new(
            &addrs,
            ChannelSettings {
                connect_timeout: config.connect_timeout,
                keepalive_interval: config.keepalive_interval,
                dial: config.dial.clone(),
            },
        )?;
        let policy = RetryPolicy {
            request_timeout: config.request_timeout,
            attempt_timeout: config.effective_attempt_timeout(),
            backoff_initial: config.backoff_initial,
            backoff_max: config.backoff_max,
        };
        Ok(Client {
            shared: Arc::new(Shared {
                endpoints,
                client_id: config.client_id.unwrap_or_else(random_client_id),
                clock: config.clock.clone(),
                sequence: AtomicU64::new(0),
            }),
            policy,
        })
    }

    /// A handle on the same connections and write sequence whose calls have
    /// a different overall deadline (e.g. a long `member_add`). The
    /// per-attempt deadline is capped to it as well. Values below 10 ms are
    /// raised to 10 ms.
    #[must_use]
    pub fn with_request_timeout(&self, timeout: Duration) -> Client {
        let timeout = timeout.max(MIN_TIMEOUT);
        let mut policy = self.policy;
        // An attempt timeout equal to the old request timeout meant "the
        // whole deadline": keep that meaning.
        policy.attempt_timeout = if policy.attempt_timeout >= policy.request_timeout {
            timeout
        } else {
            policy.attempt_timeout.min(timeout)
        };
        policy.request_timeout = timeout;
        Client {
            shared: Arc::clone(&self.shared),
            policy,
        }
    }

    /// The random id this client stamps on its writes.
    pub fn client_id(&self) -> u64 {
        self.shared.client_id
    }

    /// The local clock lease deadlines are kept on.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// The overall deadline of each call.
    pub fn request_timeout(&self) -> Duration {
        self.policy.request_timeout
    }

    /// The endpoints known to this client (`host:port`): the configured ones,
    /// then any leader learnt from a hint.
    pub fn endpoints(&self) -> Vec<String> {
        self.shared.endpoints.addrs()
    }

    /// The endpoint the next call starts with: the one that answered last.
    pub fn current_endpoint(&self) -> String {
        let endpoints = &self.shared.endpoints;
        endpoints.get(endpoints.preferred()).addr.to_string()
    }

    /// Allocates the id of a new logical write. Every write method calls this
    /// once and reuses the id for all its retries.
    pub(crate) fn next_request_id(&self) -> RequestId {
        RequestId {
            client_id: self.shared.client_id,
            sequence: self.shared.sequence.fetch_add(1, Ordering::Relaxed) + 1,
        }
    }

    /// The endpoint set shared by all clones (for long-lived streams that
    /// pick endpoints themselves).
    pub(crate) fn endpoint_set(&self) -> &Endpoints {
        &self.shared.endpoints
    }

    /// The retry timing of this handle.
    pub(crate) fn policy(&self) -> RetryPolicy {
        self.policy
    }

    /// Runs one call under the retry contract.
    pub(crate) async fn call<T, F, Fut>(
        &self,
        method: &'static str,
        idempotency: Idempotency,
        attempt: F,
    ) -> Result<T, Error>
    where
        F: FnMut(Channel, Duration) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        with_retries(&self.shared.endpoints, self.policy, method, idempotency, attempt).await
    }
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("client_id", &format_args!("{:#018x}", self.shared.client_id))
            .field("endpoints", &self.shared.endpoints.addrs())
            .field("request_timeout", &self.policy.request_timeout)
            .field("attempt_timeout", &self.policy.attempt_timeout)
            .finish_non_exhaustive()
    }
}

/// A random non-zero client id (zero reads as "unset" in protobuf).
fn random_client_id() -> u64 {
    loop {
        let id = roster_env::random::next_u64();
        if id != 0 {
            return id;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ids_and_sequences() {
        let a = Client::connect(ClientConfig::default()).await.unwrap();
        let b = a.clone();
        let first = a.next_request_id();
        let second = b.next_request_id();
        assert_eq!(first.client_id, second.client_id);
        assert_ne!(first.client_id, 0);
        assert_eq!(first.sequence, 1);
        assert_eq!(second.sequence, 2);
        let other = Client::connect(ClientConfig::default()).await.unwrap();
        assert_ne!(other.client_id(), a.client_id());
    }

    #[tokio::test]
    async fn with_request_timeout_shares_state() {
        let a = Client::connect(ClientConfig::default()).await.unwrap();
        let b = a.with_request_timeout(Duration::from_secs(60));
        assert_eq!(b.request_timeout(), Duration::from_secs(60));
        assert_eq!(b.policy.attempt_timeout, Duration::from_secs(60));
        assert_eq!(a.client_id(), b.client_id());
        a.next_request_id();
        assert_eq!(b.next_request_id().sequence, 2);

        let c = Client::connect(ClientConfig::default().attempt_timeout(Duration::from_millis(500)))
            .await
            .unwrap();
        let d = c.with_request_timeout(Duration::from_millis(200));
        assert_eq!(d.policy.attempt_timeout, Duration::from_millis(200));
        let e = c.with_request_timeout(Duration::from_secs(60));
        assert_eq!(e.policy.attempt_timeout, Duration::from_millis(500));
    }

    #[tokio::test]
    async fn connect_rejects_bad_config() {
        let err = Client::connect(ClientConfig::new(["nope"])).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn client_is_send_sync() {
        fn assert_send_sync<T: Send + Sync + Clone + 'static>() {}
        assert_send_sync::<Client>();
    }
}
