//! Client library for Roster, the Raft-based coordination service.
//!
//! ```no_run
//! use roster_client::prelude::*;
//!
//! # async fn demo() -> Result<(), roster_client::Error> {
//! let client = Client::connect(ClientConfig::new([
//!     "127.0.0.1:7401",
//!     "127.0.0.1:7402",
//!     "127.0.0.1:7403",
//! ]))
//! .await?;
//!
//! client.put("greeting", "hello").await?;
//! let kv = client.get("greeting").await?;
//! assert_eq!(kv.map(|kv| kv.value), Some(b"hello".to_vec()));
//!
//! let swapped = client
//!     .txn(
//!         TxnBuilder::new()
//!             .when(Compare::value("greeting", CompareResult::Equal, "hello"))
//!             .then(RequestOp::put("greeting", "bonjour")),
//!     )
//!     .await?
//!     .succeeded;
//! # let _ = swapped;
//! # Ok(())
//! # }
//! ```
//!
//! # The call contract
//!
//! Every method of [`Client`] follows the same rules, so callers never deal
//! with leaders, failover or retries themselves.
//!
//! **Deadline.** Each call has an overall deadline,
//! [`ClientConfig::request_timeout`] (5 s by default), that covers every
//! attempt and every backoff sleep. A call returns by then, whatever the
//! cluster does: each attempt runs under a local timer and carries the same
//! budget as its gRPC timeout, so the server can give up too. A single
//! attempt is further limited by [`ClientConfig::attempt_timeout`].
//!
//! **Retries.** An attempt that fails with `UNAVAILABLE` (node down,
//! connection refused, no leader, no quorum), `DEADLINE_EXCEEDED` (the
//! attempt's own deadline), or a transport error (connection reset or closed
//! mid-call) is retried:
//!
//! 1. on the leader named by the `roster-leader` metadata of the failure,
//!    if any (at once, the first time; endpoints not in the configuration are
//!    learnt, up to a bound), otherwise on the next endpoint in turn;
//!    endpoints that could not be connected to within the last second (a
//!    node that is down, such as a dead leader the followers still name) are
//!    passed by, and their hints not followed, while another endpoint is
//!    not down;
//! 2. after an exponential backoff with jitter, starting at
//!    [`ClientConfig::backoff_initial`] and doubling up to
//!    [`ClientConfig::backoff_max`], counted from the start of the failed
//!    attempt (an attempt that already took longer, such as a node that
//!    waited for an election before giving up, is followed by the next one at
//!    once); with no wait at all after an attempt that could not connect,
//!    until every endpoint has failed that way in a row;
//! 3. until the deadline. Then the call fails with
//!    [`Error::DeadlineExceeded`], whose [`Error::code`] is the code of the
//!    last failure: a cluster without quorum gives `UNAVAILABLE`, a hung
//!    node `DEADLINE_EXCEEDED`.
//!
//! Any other status (`INVALID_ARGUMENT`, `NOT_FOUND`, `FAILED_PRECONDITION`,
//! `ALREADY_EXISTS`, `OUT_OF_RANGE`, `RESOURCE_EXHAUSTED`, ...) is an answer
//! and returns at once as [`Error::Rpc`]. A failed transaction compare is
//! not an error (`succeeded == false`).
//!
//! The client remembers the endpoint that answered last and starts the next
//! call there, so once the leader is found, writes go straight to it.
//!
//! **Exactly-once writes.** A client picks a random `client_id` when it is
//! created. Each write (`put*`, `delete*`, `txn`) takes the next number of
//! the client's sequence and sends the same
//! [`RequestId`](proto::RequestId)`{client_id, sequence}` on every retry. The
//! server applies a given id at most once and answers a retry with the
//! original result, so a write whose answer was lost (timeout, failover) is
//! safe to retry and is never applied twice. The server accepts ids out of
//! order within a window of 64 sequences: keep fewer than 64 writes in
//! flight per `Client` (clones share one sequence).
//!
//! Membership changes ([`Client::member_add`], ...) have no request id; see
//! [`Client::member_add`] for what a retry of those can report.
//!
//! **Leases.** [`Client::lease_grant`] and [`Client::lease_revoke`] are
//! writes (deduplicated like puts); [`Client::lease_time_to_live`] and
//! [`Client::lease_list`] are reads. To hold a lease, use a
//! [`LeaseKeeper`] ([`Client::grant_and_keep`], [`Client::keep_lease`]): it
//! renews the lease over one `KeepAlive` stream and publishes, through a
//! `tokio::sync::watch` channel, whether the lease is healthy, in jeopardy
//! or lost, with a local deadline that provably precedes the server's
//! expiry (see [`LeaseKeeper`] for the rule and its proof):
//!
//! ```no_run
//! # use std::time::Duration;
//! # use roster_client::prelude::*;
//! # async fn demo(client: Client) -> Result<(), roster_client::Error> {
//! let keeper = client.grant_and_keep(Duration::from_secs(5), KeeperOptions::default()).await?;
//! let work = async {
//!     loop {
//!         if !keeper.is_held() { break; }   // check right before acting as holder
//!         // ... act as holder, passing a fencing token downstream ...
//!         tokio::time::sleep(Duration::from_millis(100)).await;
//!     }
//! };
//! tokio::select! {
//!     reason = keeper.lost() => eprintln!("lease lost: {reason}"),
//!     () = work => {}
//! }
//! # Ok(())
//! # }
//! ```
//!
//! **Roles.** [`Client::campaign`] campaigns for a role of a group with a
//! [`LeaseKeeper`]'s lease and returns a [`RoleGuard`] once elected: its
//! `token()` is the fencing token to pass downstream (`fence()` builds the
//! `Fence` for Roster's own fenced writes), and its `lost()` resolves no later
//! than the lease keeper's local deadline, or when the cluster releases the
//! grant. [`Client::observe`] streams every change of a role's holders;
//! [`Client::watch`] streams every event after a revision and resumes after
//! reconnects without gaps or duplicates; [`Client::topology`] returns nodes,
//! groups and holders at one revision. See `examples/primary_standby.rs`.
//!
//! **Reads** are linearizable unless a request sets `serializable`, in
//! which case the answering node serves its local, possibly stale, state
//! and sets `header.serializable`.
//!
//! # Types
//!
//! Requests and responses are the generated protobuf types, re-exported as
//! [`proto`]. Keys and values are bytes; the helpers accept anything that
//! converts into `Vec<u8>` (`&str`, `String`, `&[u8]`, `Vec<u8>`).

#![warn(missing_docs)]

mod client;
mod cluster;
mod config;
mod election;
mod endpoints;
mod error;
mod kv;
mod lease;
mod lease_keeper;
mod retry;
mod topology;
mod txn;
mod watch;

/// The generated `roster.v1` protobuf types and gRPC stubs.
pub use roster_proto::v1 as proto;

pub use client::Client;
pub use config::{
    ClientConfig, DEFAULT_BACKOFF_INITIAL, DEFAULT_BACKOFF_MAX, DEFAULT_CONNECT_TIMEOUT, DEFAULT_ENDPOINTS,
    DEFAULT_KEEPALIVE_INTERVAL, DEFAULT_REQUEST_TIMEOUT, MIN_TIMEOUT,
};
pub use election::{CampaignCallback, CampaignOptions, CampaignState, Fenced, RoleGuard, RoleLost};
pub use endpoints::parse_endpoint;
pub use error::{code_name, Error, Result};
pub use lease_keeper::{
    JeopardyReason, JeopardyThreshold, KeeperOptions, LeaseKeeper, LeaseState, LostReason, DEFAULT_RHO,
};
pub use retry::LEADER_HINT_METADATA;
pub use txn::{CompareExt, CompareResult, CompareTarget, RequestOpExt, TxnBuilder};
pub use watch::{WatchEvent, WatchOptions};

/// Re-exports `tonic::Code` so callers can match on [`Error::code`] without
/// depending on tonic.
pub use tonic::Code;

/// Everything needed for typical use: `use roster_client::prelude::*;`.
pub mod prelude {
    pub use crate::proto::{Compare, DeleteRequest, KeyValue, PutRequest, RangeRequest, RequestOp, TxnRequest};
    pub use crate::{
        CampaignOptions, CampaignState, Client, ClientConfig, Code, CompareExt, CompareResult, Error, Fenced,
        KeeperOptions, LeaseKeeper, LeaseState, LostReason, RequestOpExt, RoleGuard, RoleLost, TxnBuilder, WatchEvent,
        WatchOptions,
    };
}
