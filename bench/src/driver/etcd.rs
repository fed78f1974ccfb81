//! The etcd driver: every operation through `etcd-client` (v3 API), as an
//! application would use it.
//!
//! * A [`Conn`] is one `etcd_client::Client`: a channel balanced over all
//!   three members (etcd's followers forward writes to the leader
//!   themselves). Each call carries the same per-attempt timeout as
//!   Roster's; `etcd-client` does not retry, so failover is measured with
//!   the bench's own retry loop.
//! * Leases are kept the way `etcd-client` offers: one `LeaseKeepAlive`
//!   stream per lease, on which this driver sends a renewal every
//!   `renew_every` and counts the answers with a positive TTL (the same
//!   per-lease shape as Roster's `LeaseKeeper`).
//! * Elections use etcd's v3 election service (`v3electionpb`, present in
//!   3.4): `Campaign` blocks until elected (sent on a second client without
//!   the per-request timeout), `Resign` deletes the leader key so the next
//!   candidate (lowest create revision) is elected.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use etcd_client::{Client, ConnectOptions, GetOptions, LeaderKey, ResignOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Conn, Driver, KeptLease, System, Tuning};
use crate::cluster::Cluster;

/// Drives an etcd cluster.
#[derive(Default)]
pub struct EtcdDriver {
    /// etcd member ids by member index, learnt from status answers: etcd
    /// reports the leader by member id.
    member_ids: Mutex<HashMap<usize, u64>>,
}

/// One etcd client.
#[derive(Clone)]
pub struct EtcdConn {
    client: Client,
    /// The same endpoints without a per-request timeout, for `Campaign`:
    /// a unary call that blocks until elected (Roster's campaign stream
    /// has no deadline either).
    campaigner: Client,
}

/// A lease kept alive by a renewal task on its own keepalive stream.
pub struct EtcdLease {
    id: i64,
    /// Set to ask the task to stop after the next acknowledged renewal and
    /// report when that was.
    die: Arc<Mutex<Option<oneshot::Sender<Instant>>>>,
    task: JoinHandle<()>,
}

impl Drop for EtcdLease {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Driver for EtcdDriver {
    type Conn = EtcdConn;

    fn system(&self) -> System {
        System::Etcd
    }

    async fn connect(&self, endpoints: &[String], tuning: Tuning) -> Result<EtcdConn> {
        let options = ConnectOptions::new()
            .with_timeout(tuning.attempt_timeout)
            .with_connect_timeout(Duration::from_secs(1));
        let client = Client::connect(endpoints, Some(options)).await.context("etcd client")?;
        let untimed = ConnectOptions::new().with_connect_timeout(Duration::from_secs(1));
        let campaigner = Client::connect(endpoints, Some(untimed)).await.context("etcd client")?;
        Ok(EtcdConn { client, campaigner })
    }

    async fn leader_seen_by(&self, cluster: &Cluster, member: usize) -> Option<usize> {
        let options = ConnectOptions::new()
            .with_timeout(Duration::from_millis(500))
            .with_connect_timeout(Duration::from_millis(200));
        let mut client = Client::connect([cluster.endpoint(member)], Some(options)).await.ok()?;
        let status = client.status().await.ok()?;
        let mut ids = self.member_ids.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(header) = status.header() {
            ids.insert(member, header.member_id());
        }
        let leader = status.leader();
        ids.iter().find(|(_, id)| **id == leader).map(|(index, _)| *index)
    }

    async fn prepare_election(&self, _conn: &EtcdConn, _name: &str) -> Result<()> {
        Ok(())
    }
}

impl Conn for EtcdConn {
    type Lease = EtcdLease;
    type Held = LeaderKey;

    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.client.clone().put(key, value, None).await?;
        Ok(())
    }

    async fn get(&self, key: Vec<u8>, serializable: bool) -> Result<()> {
        let options = serializable.then(|| GetOptions::new().with_serializable());
        let answer = self.client.clone().get(key, options).await?;
        if answer.kvs().is_empty() {
            bail!("key not found");
        }
        Ok(())
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<i64> {
        Ok(self.client.clone().lease_grant(ttl_secs(ttl), None).await?.id())
    }

    async fn renew_once(&self, id: i64) -> Result<()> {
        // `lease_keep_alive` opens a stream, sends one renewal and consumes
        // its answer: exactly one renewal, as Go's `KeepAliveOnce`.
        self.client.clone().lease_keep_alive(id).await?;
        Ok(())
    }

    async fn keep_lease(
        &self,
        id: i64,
        _ttl: Duration,
        renew_every: Duration,
        renewals: Arc<AtomicU64>,
    ) -> Result<EtcdLease> {
        // `lease_keep_alive` sends the first renewal and waits for its
        // answer (failing if the lease is gone), as Roster's `keep_lease`
        // does, before we hand the lease out.
        let (mut keeper, mut stream) = self.client.clone().lease_keep_alive(id).await?;
        let die: Arc<Mutex<Option<oneshot::Sender<Instant>>>> = Arc::default();
        let asked = Arc::clone(&die);
        let client = self.client.clone();
        let task = tokio::spawn(async move {
            loop {
                tokio::time::sleep(renew_every).await;
                let acked = match keeper.keep_alive().await {
                    Ok(()) => matches!(stream.message().await, Ok(Some(answer)) if answer.ttl() > 0),
                    Err(_) => false,
                };
                if acked {
                    renewals.fetch_add(1, Ordering::Relaxed);
                    let stop = asked.lock().unwrap_or_else(|e| e.into_inner()).take();
                    if let Some(stop) = stop {
                        let _ = stop.send(Instant::now());
                        return;
                    }
                } else {
                    // The stream broke (leader change): open a new one.
                    match client.clone().lease_keep_alive(id).await {
                        Ok((k, s)) => (keeper, stream) = (k, s),
                        Err(_) => continue,
                    }
                }
            }
        });
        Ok(EtcdLease { id, die, task })
    }

    async fn campaign(&self, election: &str, candidate: &str, lease: &EtcdLease) -> Result<LeaderKey> {
        let answer = self.campaigner.clone().campaign(election, candidate, lease.id).await?;
        answer
            .leader()
            .cloned()
            .ok_or_else(|| anyhow!("campaign answered without a leader key"))
    }

    async fn resign(&self, held: LeaderKey) -> Result<()> {
        self.client
            .clone()
            .resign(Some(ResignOptions::new().with_leader(held)))
            .await?;
        Ok(())
    }
}

impl KeptLease for EtcdLease {
    async fn die_after_next_renewal(self) -> Instant {
        let (tx, rx) = oneshot::channel();
        *self.die.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let at = rx.await.unwrap_or_else(|_| Instant::now());
        drop(self);
        at
    }
}

/// etcd TTLs are whole seconds; round up so a lease is never shorter than
/// asked.
fn ttl_secs(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis().div_ceil(1000)).unwrap_or(i64::MAX)
}
