//! The one interface every workload is written against.
//!
//! A workload (see `workload.rs`) only ever talks to a [`Driver`] and the
//! [`Conn`]s it opens, so Roster and etcd run the very same code: the same
//! concurrency, the same keys and values, the same clocks around the same
//! calls. What differs is confined to the two implementations, each a thin
//! translation onto its client library (`roster.rs`, `etcd.rs`).

use std::future::Future;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;
use tokio::time::Instant;

use crate::cluster::Cluster;

#[cfg(feature = "etcd")]
pub mod etcd;
pub mod roster;

/// Which coordination service a run measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum System {
    /// Roster, through `roster-client`.
    Roster,
    /// etcd v3, through `etcd-client` (needs the `etcd` feature).
    Etcd,
}

impl System {
    /// The display name used in tables.
    pub fn name(self) -> &'static str {
        match self {
            System::Roster => "Roster",
            System::Etcd => "etcd",
        }
    }
}

/// Timeouts a connection is opened with; the same values for both systems.
#[derive(Debug, Clone, Copy)]
pub struct Tuning {
    /// Bound on one attempt (one RPC) before the caller treats it as failed.
    pub attempt_timeout: Duration,
}

/// One system's way of reaching a running cluster.
pub trait Driver: Send + Sync + 'static {
    /// A client connection (its own gRPC channel or channels).
    type Conn: Conn;

    /// The system this driver speaks to.
    fn system(&self) -> System;

    /// Opens a connection to the cluster's client endpoints.
    fn connect(&self, endpoints: &[String], tuning: Tuning) -> impl Future<Output = Result<Self::Conn>> + Send;

    /// The index of the member that member `member` currently reports as
    /// leader, if it answers at all and knows one.
    fn leader_seen_by(&self, cluster: &Cluster, member: usize) -> impl Future<Output = Option<usize>> + Send;

    /// Creates what an election called `name` needs before anyone campaigns
    /// (Roster: a group with a `primary` role of capacity 1; etcd: nothing,
    /// an election there is just a key prefix).
    fn prepare_election(&self, conn: &Self::Conn, name: &str) -> impl Future<Output = Result<()>> + Send;
}

/// The operations the workloads issue. Every call is one logical request as
/// an application would make it through the system's own client library.
pub trait Conn: Clone + Send + Sync + 'static {
    /// A lease being kept alive by this process.
    type Lease: KeptLease;
    /// Proof of holding an election, given back to resign.
    type Held: Send + 'static;

    /// Writes `value` at `key` (acknowledged once committed).
    fn put(&self, key: Vec<u8>, value: Vec<u8>) -> impl Future<Output = Result<()>> + Send;

    /// Reads `key`, which must exist; linearizable unless `serializable`.
    fn get(&self, key: Vec<u8>, serializable: bool) -> impl Future<Output = Result<()>> + Send;

    /// Grants a lease of `ttl` and returns its id.
    fn lease_grant(&self, ttl: Duration) -> impl Future<Output = Result<i64>> + Send;

    /// Renews lease `id` once, as an application without a keeper would
    /// (etcd's `KeepAliveOnce`): one keepalive stream, one renewal, its
    /// acknowledgement. Fails if the lease is gone.
    fn renew_once(&self, id: i64) -> impl Future<Output = Result<()>> + Send;

    /// Keeps lease `id` (granted with `ttl`) alive, renewing every
    /// `renew_every`; adds one to `renewals` per acknowledged renewal.
    /// Returns once the first renewal has been acknowledged.
    fn keep_lease(
        &self,
        id: i64,
        ttl: Duration,
        renew_every: Duration,
        renewals: Arc<AtomicU64>,
    ) -> impl Future<Output = Result<Self::Lease>> + Send;

    /// Campaigns in election `election` as `candidate` with `lease`, and
    /// returns once elected.
    fn campaign(
        &self,
        election: &str,
        candidate: &str,
        lease: &Self::Lease,
    ) -> impl Future<Output = Result<Self::Held>> + Send;

    /// Gives an election up; the next candidate is elected.
    fn resign(&self, held: Self::Held) -> impl Future<Output = Result<()>> + Send;
}

/// A lease this process keeps alive. Dropping it stops the renewals without
/// revoking the lease, as a crashed process would.
pub trait KeptLease: Send + Sync + 'static {
    /// Waits for the next acknowledged renewal, then stops renewing, as if
    /// the process had died right after it. Returns when that
    /// acknowledgement arrived: the lease ends TTL after about then.
    fn die_after_next_renewal(self) -> impl Future<Output = Instant> + Send;
}
