//! Lease calls: grant, revoke, time-to-live and list.
//!
//! Keeping a lease alive is the job of [`LeaseKeeper`](crate::LeaseKeeper)
//! ([`Client::keep_lease`], [`Client::grant_and_keep`]).

use std::time::Duration;

use tonic::transport::Channel;

use crate::client::Client;
use crate::error::Error;
use crate::proto::lease_client::LeaseClient;
use crate::proto::{
    LeaseGrantRequest, LeaseGrantResponse, LeaseListRequest, LeaseListResponse, LeaseRevokeRequest,
    LeaseRevokeResponse, LeaseTimeToLiveRequest, LeaseTimeToLiveResponse,
};
use crate::retry::{request, Idempotency};

pub(crate) fn lease(channel: Channel) -> LeaseClient<Channel> {
    LeaseClient::new(channel)
}

/// A TTL in whole milliseconds, as the protocol carries it (rounded down;
/// saturating).
pub(crate) fn ttl_to_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX)
}

impl Client {
    /// Grants a new lease with the given time to live; the cluster chooses
    /// its id. A write: deduplicated across retries, so a retried grant
    /// returns the lease of its first application and never creates two.
    ///
    /// The TTL is sent in whole milliseconds; the server enforces its range
    /// (2 s to 24 h by default) with `INVALID_ARGUMENT`.
    ///
    /// To keep the lease alive and know, safely, whether it is still held,
    /// use [`Client::grant_and_keep`] instead.
    pub async fn lease_grant(&self, ttl: Duration) -> Result<LeaseGrantResponse, Error> {
        self.lease_grant_with_id(0, ttl).await
    }

    /// Grants a lease with a chosen id (`0` lets the cluster choose); see
    /// [`Client::lease_grant`].
    pub async fn lease_grant_with_id(&self, id: i64, ttl: Duration) -> Result<LeaseGrantResponse, Error> {
        let req = LeaseGrantRequest {
            id,
            ttl_ms: ttl_to_ms(ttl),
            request_id: Some(self.next_request_id()),
        };
        self.call("LeaseGrant", Idempotency::Safe, move |channel, budget| async move {
            lease(channel).grant(request(req, budget)).await
        })
        .await
    }

    /// Revokes lease `id`: it ends at once, with everything attached to it
    /// (keys, campaigns, role grants), in one applied entry. A write:
    /// deduplicated across retries.
    ///
    /// To give up a lease kept by a [`LeaseKeeper`](crate::LeaseKeeper), use
    /// [`LeaseKeeper::revoke`](crate::LeaseKeeper::revoke), which stops
    /// acting as holder before the revocation is sent.
    pub async fn lease_revoke(&self, id: i64) -> Result<LeaseRevokeResponse, Error> {
        let req = LeaseRevokeRequest {
            id,
            request_id: Some(self.next_request_id()),
        };
        self.call("LeaseRevoke", Idempotency::Safe, move |channel, budget| async move {
            lease(channel).revoke(request(req, budget)).await
        })
        .await
    }

    /// The granted and remaining TTL of lease `id` (remaining as of the
    /// newest committed renewal or checkpoint), and with `keys` the keys
    /// attached to it.
    ///
    /// This is the server's view, for display. It says nothing safe about
    /// whether a client may still act as holder: for that, see
    /// [`LeaseKeeper`](crate::LeaseKeeper).
    pub async fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLiveResponse, Error> {
        let req = LeaseTimeToLiveRequest { id, keys };
        self.call(
            "LeaseTimeToLive",
            Idempotency::Safe,
            move |channel, budget| async move { lease(channel).time_to_live(request(req, budget)).await },
        )
        .await
    }

    /// Every live lease with its TTLs and number of attached keys.
    pub async fn lease_list(&self) -> Result<LeaseListResponse, Error> {
        self.call("LeaseList", Idempotency::Safe, |channel, budget| async move {
            lease(channel).list(request(LeaseListRequest {}, budget)).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_conversion() {
        assert_eq!(ttl_to_ms(Duration::from_secs(2)), 2_000);
        assert_eq!(ttl_to_ms(Duration::from_micros(2_500)), 2);
        assert_eq!(ttl_to_ms(Duration::MAX), u64::MAX);
    }
}
