//! The Roster driver: every operation through `roster-client`'s public API,
//! as an application would use it.
//!
//! * A [`Conn`] is one [`Client`] (its own channels; it sends to the leader
//!   and follows leader hints by itself, retrying within its deadline).
//! * Leases are kept by the client's [`LeaseKeeper`], one per lease, each
//!   with its own `KeepAlive` stream; an acknowledged renewal shows as a
//!   new deadline on the keeper's state channel, which is what we count.
//! * Elections are `Campaign` streams on a group's `primary` role (capacity
//!   1, automatic failover); resigning hands the role to the next candidate
//!   in the same applied entry.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use roster_client::proto::role_spec::Failover;
use roster_client::proto::{MemberListRequest, PutGroupRequest, RangeRequest, RoleSpec};
use roster_client::{CampaignOptions, Client, ClientConfig, KeeperOptions, LeaseKeeper, RoleGuard};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Conn, Driver, KeptLease, System, Tuning};
use crate::cluster::Cluster;

/// The role every benchmark election campaigns for.
const ROLE: &str = "primary";

/// Drives a Roster cluster.
pub struct RosterDriver;

/// One Roster client.
#[derive(Clone)]
pub struct RosterConn {
    client: Client,
}

/// A lease kept by a [`LeaseKeeper`], plus the task counting its renewals.
pub struct RosterLease {
    keeper: LeaseKeeper,
    counter: JoinHandle<()>,
}

impl Drop for RosterLease {
    fn drop(&mut self) {
        self.counter.abort();
    }
}

/// Generous overall deadline: failover must be measured, not cut short.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

impl Driver for RosterDriver {
    type Conn = RosterConn;

    fn system(&self) -> System {
        System::Roster
    }

    async fn connect(&self, endpoints: &[String], tuning: Tuning) -> Result<RosterConn> {
        // Retry quickly (like the bench's own retry loop for etcd): the
        // defaults (50 ms doubling to 1 s) would add up to a second to a
        // measured failover.
        let config = ClientConfig::new(endpoints.to_vec())
            .request_timeout(REQUEST_TIMEOUT)
            .attempt_timeout(tuning.attempt_timeout)
            .backoff_initial(Duration::from_millis(10))
            .backoff_max(Duration::from_millis(100));
        let client = Client::connect(config).await.context("roster client")?;
        Ok(RosterConn { client })
    }

    async fn leader_seen_by(&self, cluster: &Cluster, member: usize) -> Option<usize> {
        let config = ClientConfig::new([cluster.endpoint(member)])
            .request_timeout(Duration::from_millis(500))
            .connect_timeout(Duration::from_millis(200));
        let client = Client::connect(config).await.ok()?;
        // The member's own view, as etcd's Status gives it: a serializable
        // member list answers from local state. (Roster's Status asks every
        // member too, which is not what is measured here.)
        let list = client
            .member_list_with(MemberListRequest { serializable: true })
            .await
            .ok()?;
        // Member ids are 1-based indices (see cluster.rs).
        let leader = usize::try_from(list.leader_id).ok()?;
        (1..=cluster.endpoints().len()).contains(&leader).then(|| leader - 1)
    }

    async fn prepare_election(&self, conn: &RosterConn, name: &str) -> Result<()> {
        let req = PutGroupRequest {
            name: name.to_owned(),
            roles: vec![RoleSpec {
                name: ROLE.into(),
                capacity: 1,
                failover: Failover::Automatic as i32,
                handover_delay_ms: 0,
                max_lag: None,
            }],
            ..Default::default()
        };
        conn.client
            .put_group(req)
            .await
            .context("creating the election's group")?;
        Ok(())
    }
}

impl Conn for RosterConn {
    type Lease = RosterLease;
    type Held = RoleGuard;

    async fn put(&self, key: Vec<u8>, value: Vec<u8>) -> Result<()> {
        self.client.put(key, value).await?;
        Ok(())
    }

    async fn get(&self, key: Vec<u8>, serializable: bool) -> Result<()> {
        let answer = self
            .client
            .get_with(RangeRequest {
                key,
                serializable,
                ..Default::default()
            })
            .await?;
        if answer.kvs.is_empty() {
            bail!("key not found");
        }
        Ok(())
    }

    async fn lease_grant(&self, ttl: Duration) -> Result<i64> {
        Ok(self.client.lease_grant(ttl).await?.id)
    }

    async fn renew_once(&self, id: i64) -> Result<()> {
        self.client.lease_keep_alive_once(id).await?;
        Ok(())
    }

    async fn keep_lease(
        &self,
        id: i64,
        ttl: Duration,
        renew_every: Duration,
        renewals: Arc<AtomicU64>,
    ) -> Result<RosterLease> {
        let opts = KeeperOptions::default().renew_every(renew_every);
        let keeper = self.client.keep_lease(id, ttl, opts).await?;
        let mut states = keeper.subscribe();
        let counter = tokio::spawn(async move {
            let mut last = states.borrow_and_update().deadline();
            while states.changed().await.is_ok() {
                let now = states.borrow_and_update().deadline();
                if now.is_none() {
                    break;
                }
                if now > last {
                    renewals.fetch_add(1, Ordering::Relaxed);
                    last = now;
                }
            }
        });
        Ok(RosterLease { keeper, counter })
    }

    async fn campaign(&self, election: &str, candidate: &str, lease: &RosterLease) -> Result<RoleGuard> {
        let guard = self
            .client
            .campaign(election, ROLE, candidate, &lease.keeper, CampaignOptions::default())
            .await?;
        Ok(guard)
    }

    async fn resign(&self, held: RoleGuard) -> Result<()> {
        held.resign().await?;
        Ok(())
    }
}

impl KeptLease for RosterLease {
    async fn die_after_next_renewal(self) -> Instant {
        let mut states = self.keeper.subscribe();
        let before = states.borrow_and_update().deadline();
        loop {
            if states.changed().await.is_err() {
                break;
            }
            let now = states.borrow_and_update().deadline();
            if now.is_none() || now > before {
                break;
            }
        }
        let at = Instant::now();
        drop(self);
        at
    }
}
