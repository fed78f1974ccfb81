//! Leases: the state machine's side of liveness (DESIGN rules 3–5).
//!
//! The state machine never decides that a lease expired: it has no clock.
//! The leader's lease keeper does, from its own timers, and proposes
//! `LeaseExpire`; the lease ends when that entry applies, identically on
//! every replica (rule 3). What the state keeps is what a *new* leader needs
//! to take over safely:
//!
//! - `remaining_ms`: the TTL left as of the newest renewal (a full TTL) or
//!   checkpoint (the leader's count-down). A new leader starts each lease at
//!   this value, so a leader change neither expires a lease early nor lets a
//!   dead client's lease live forever (rule 5).
//! - `renewals`: a count of committed renewals. The leader's expiry and
//!   checkpoint decisions name the count they saw; a renewal that commits in
//!   between wins, because the decision was made on older information.
//! - `granted_revision`: which incarnation of an id this is, so a decision
//!   about a revoked lease never applies to a new lease with the same id.
//!
//! A lease also indexes what is attached to it (keys, campaigns, nodes), so
//! that ending it can remove all of that in the same entry.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::command::{LeaseSeen, Rejection};
use crate::limits;

/// A candidacy, as `(group, role, candidate)`.
pub(super) type CampaignKey = (String, String, String);

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Lease {
    pub(super) ttl_ms: u64,
    pub(super) remaining_ms: u64,
    pub(super) renewals: u64,
    pub(super) granted_revision: u64,
    pub(super) keys: BTreeSet<Vec<u8>>,
    pub(super) campaigns: BTreeSet<CampaignKey>,
    pub(super) nodes: BTreeSet<String>,
}

/// A lease as queries report it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseInfo {
    pub id: i64,
    pub ttl_ms: u64,
    /// TTL left as of the newest committed renewal or checkpoint.
    pub remaining_ms: u64,
    /// Committed renewals since the grant.
    pub renewals: u64,
    /// Revision of the entry that granted it (identifies this incarnation
    /// of the id; the lease keeper names it in `LeaseSeen`).
    pub granted_revision: u64,
    pub keys: u64,
    /// Candidacies (waiting or holding) attached.
    pub campaigns: u64,
    pub nodes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Leases {
    leases: BTreeMap<i64, Lease>,
    /// Where the search for a free id starts; only moves forward (wrapping
    /// to 1 after `i64::MAX`), so state-chosen ids are not reused soon.
    next_id: i64,
}

impl Default for Leases {
    fn default() -> Self {
        Leases {
            leases: BTreeMap::new(),
            next_id: 1,
        }
    }
}

impl Leases {
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.leases.len()
    }

    pub(super) fn get(&self, id: i64) -> Option<&Lease> {
        self.leases.get(&id)
    }

    pub(super) fn contains(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Checks a grant without changing anything: the id to use.
    pub(super) fn check_grant(&self, requested: i64) -> Result<i64, Rejection> {
        if self.leases.len() >= limits::MAX_LEASES {
            return Err(Rejection::LimitExceeded(format!(
                "{} leases exist; the limit is {}",
                self.leases.len(),
                limits::MAX_LEASES
            )));
        }
        if requested != 0 {
            if self.leases.contains_key(&requested) {
                return Err(Rejection::AlreadyExists(format!("lease {requested} exists")));
            }
            return Ok(requested);
        }
        self.free_id()
            .ok_or_else(|| Rejection::LimitExceeded("no free lease id".into()))
    }

    /// The lowest unused id at or after `next_id`, wrapping to 1 once.
    /// With at most `MAX_LEASES` leases there always is one, found within
    /// `MAX_LEASES + 1` probes of the ordered map.
    fn free_id(&self) -> Option<i64> {
        let first_gap = |from: i64| -> Option<i64> {
            let mut candidate = from;
            for &id in self.leases.range(from..).map(|(id, _)| id) {
                if id != candidate {
                    break;
                }
                candidate = candidate.checked_add(1)?;
            }
            Some(candidate)
        };
        first_gap(self.next_id.max(1)).or_else(|| first_gap(1))
    }

    /// Grants a lease checked by [`Leases::check_grant`], at revision `at`.
    pub(super) fn grant(&mut self, id: i64, ttl_ms: u64, at: u64) {
        self.leases.insert(
            id,
            Lease {
                ttl_ms,
                remaining_ms: ttl_ms,
                renewals: 0,
                granted_revision: at,
                keys: BTreeSet::new(),
                campaigns: BTreeSet::new(),
                nodes: BTreeSet::new(),
            },
        );
        if id >= self.next_id {
            self.next_id = id.checked_add(1).unwrap_or(1);
        }
    }

    /// Removes a lease, handing back what was attached for the caller to end.
    pub(super) fn remove(&mut self, id: i64) -> Option<Lease> {
        self.leases.remove(&id)
    }

    /// A committed keepalive per id: a full TTL again. `None` for an id
    /// that does not exist.
    pub(super) fn renew(&mut self, ids: &[i64]) -> Vec<Option<u64>> {
        ids.iter()
            .map(|id| {
                self.leases.get_mut(id).map(|lease| {
                    if !crate::planted::active(crate::planted::Planted::IgnoreRenewalsAfterCheckpoint) {
                        lease.remaining_ms = lease.ttl_ms;
                    }
                    lease.renewals = lease.renewals.saturating_add(1);
                    lease.ttl_ms
                })
            })
            .collect()
    }

    /// Whether the leader's view `seen` still describes the lease: same
    /// incarnation, no renewal committed since.
    pub(super) fn is_current(&self, seen: &LeaseSeen) -> bool {
        self.leases
            .get(&seen.id)
            .is_some_and(|l| l.granted_revision == seen.granted_revision && l.renewals == seen.renewals_seen)
    }

    /// Records the leader's remaining TTLs, each only where it is current
    /// ([`Leases::is_current`]), capped at the TTL.
    pub(super) fn checkpoint(&mut self, items: &[(LeaseSeen, u64)]) {
        for (seen, remaining_ms) in items {
            if self.is_current(seen) {
                if let Some(lease) = self.leases.get_mut(&seen.id) {
                    lease.remaining_ms = (*remaining_ms).min(lease.ttl_ms);
                }
            }
        }
    }

    /// Attaches `key` to lease `id` (which must exist; nothing happens if not).
    pub(super) fn attach_key(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(key.to_vec());
        }
    }

    pub(super) fn detach_key(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }

    pub(super) fn attach_campaign(&mut self, id: i64, campaign: CampaignKey) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.campaigns.insert(campaign);
        }
    }

    pub(super) fn detach_campaign(&mut self, id: i64, campaign: &CampaignKey) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.campaigns.remove(campaign);
        }
    }

    pub(super) fn attach_node(&mut self, id: i64, node: &str) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.nodes.insert(node.to_owned());
        }
    }

    pub(super) fn detach_node(&mut self, id: i64, node: &str) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.nodes.remove(node);
        }
    }

    pub(super) fn info(&self, id: i64) -> Option<LeaseInfo> {
        self.leases.get(&id).map(|l| info(id, l))
    }

    pub(super) fn list(&self) -> Vec<LeaseInfo> {
        self.leases.iter().map(|(id, l)| info(*id, l)).collect()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&i64, &Lease)> {
        self.leases.iter()
    }

    /// Checks what must hold of the leases themselves (the attachments are
    /// checked against the kv and topology by `State::check_invariants`).
    pub(super) fn check_invariants(&self, revision: u64) -> Result<(), String> {
        if self.leases.len() > limits::MAX_LEASES {
            return Err(format!(
                "{} leases; the limit is {}",
                self.leases.len(),
                limits::MAX_LEASES
            ));
        }
        if self.next_id <= 0 {
            return Err(format!("next lease id {} is not positive", self.next_id));
        }
        for (id, l) in &self.leases {
            if *id <= 0 {
                return Err(format!("lease id {id} is not positive"));
            }
            if !(limits::MIN_LEASE_TTL_MS..=limits::MAX_LEASE_TTL_MS).contains(&l.ttl_ms) || l.remaining_ms > l.ttl_ms {
                return Err(format!(
                    "lease {id}: ttl {} ms / remaining {} ms out of range",
                    l.ttl_ms, l.remaining_ms
                ));
            }
            if l.granted_revision == 0 || l.granted_revision > revision {
                return Err(format!(
                    "lease {id} granted at revision {} (store revision {revision})",
                    l.granted_revision
                ));
            }
        }
        Ok(())
    }
}

fn info(id: i64, l: &Lease) -> LeaseInfo {
    LeaseInfo {
        id,
        ttl_ms: l.ttl_ms,
        remaining_ms: l.remaining_ms,
        renewals: l.renewals,
        granted_revision: l.granted_revision,
        keys: l.keys.len() as u64,
        campaigns: l.campaigns.len() as u64,
        nodes: l.nodes.len() as u64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(l: &Leases, id: i64) -> LeaseSeen {
        match l.info(id) {
            Some(i) => LeaseSeen {
                id,
                granted_revision: i.granted_revision,
                renewals_seen: i.renewals,
            },
            None => panic!("no lease {id}"),
        }
    }

    #[test]
    fn ids_are_assigned_in_order_and_skip_taken_ones() {
        let mut l = Leases::default();
        assert_eq!(l.check_grant(0), Ok(1));
        l.grant(1, 5000, 1);
        assert_eq!(l.check_grant(0), Ok(2));
        l.grant(2, 5000, 2);
        l.grant(4, 5000, 3); // explicit: the counter moves past it
        assert_eq!(l.check_grant(0), Ok(5));
        l.grant(5, 5000, 4);
        l.next_id = 3;
        // From 3: 3 is free.
        assert_eq!(l.check_grant(0), Ok(3));
        l.grant(3, 5000, 5);
        // 4 and 5 taken: 6.
        assert_eq!(l.check_grant(0), Ok(6));
        assert_eq!(l.check_grant(3), Err(Rejection::AlreadyExists("lease 3 exists".into())));
        // A revoked id is not handed out again by the counter.
        l.remove(1);
        assert_eq!(l.check_grant(0), Ok(6));
        // Explicit far ids move the counter past them.
        l.grant(100, 5000, 6);
        assert_eq!(l.check_grant(0), Ok(101));
    }

    #[test]
    fn counter_wraps_to_free_low_ids() {
        let mut l = Leases::default();
        l.grant(i64::MAX, 5000, 1);
        assert_eq!(l.next_id, 1);
        assert_eq!(l.check_grant(0), Ok(1));
        l.next_id = i64::MAX;
        assert_eq!(l.check_grant(0), Ok(1));
    }

    #[test]
    fn renew_and_checkpoint_bookkeeping() {
        let mut l = Leases::default();
        l.grant(7, 10_000, 1);
        let before = seen(&l, 7);
        l.checkpoint(&[(before, 4_000)]);
        assert_eq!(l.info(7).map(|i| i.remaining_ms), Some(4_000));
        assert_eq!(l.renew(&[7, 8, 7]), vec![Some(10_000), None, Some(10_000)]);
        let i = l.info(7).unwrap_or_else(|| panic!());
        assert_eq!((i.remaining_ms, i.renewals), (10_000, 2));
        // A checkpoint decided before those renewals is ignored.
        l.checkpoint(&[(before, 1_000)]);
        assert_eq!(l.info(7).map(|i| i.remaining_ms), Some(10_000));
        // A current one applies, capped at the TTL.
        l.checkpoint(&[(seen(&l, 7), 3_000)]);
        assert_eq!(l.info(7).map(|i| i.remaining_ms), Some(3_000));
        l.checkpoint(&[(seen(&l, 7), 99_000)]);
        assert_eq!(l.info(7).map(|i| i.remaining_ms), Some(10_000));
        // Unknown ids are ignored.
        l.checkpoint(&[(
            LeaseSeen {
                id: 9,
                granted_revision: 1,
                renewals_seen: 0,
            },
            1,
        )]);
        assert_eq!(l.len(), 1);
        assert_eq!(l.check_invariants(1), Ok(()));
    }

    #[test]
    fn a_new_incarnation_is_not_current() {
        let mut l = Leases::default();
        l.grant(5, 5000, 1);
        let old = seen(&l, 5);
        assert!(l.is_current(&old));
        l.remove(5);
        l.grant(5, 5000, 9);
        assert!(!l.is_current(&old));
        assert!(l.is_current(&seen(&l, 5)));
    }

    #[test]
    fn invariants_catch_bad_leases() {
        let mut l = Leases::default();
        l.grant(1, 5000, 1);
        assert_eq!(l.check_invariants(1), Ok(()));
        assert!(l.check_invariants(0).is_err());
        let mut bad = l.clone();
        if let Some(x) = bad.leases.get_mut(&1) {
            x.remaining_ms = 6000;
        }
        assert!(bad.check_invariants(1).is_err());
        let mut bad = l;
        bad.next_id = 0;
        assert!(bad.check_invariants(1).is_err());
    }
}
