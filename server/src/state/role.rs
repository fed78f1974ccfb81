//! One role of a group: its holders, its waiting queue, and the rule that
//! picks the next holder.
//!
//! # Safety
//!
//! This is where two primaries would come from, so the rules are few and
//! checked by `State::check_invariants` after every change in the tests:
//!
//! - At most `capacity` holders, ever: a slot is granted only while
//!   `holders + vacancies < capacity`, and a release happens in the same
//!   entry as (and before) any grant that reuses the slot.
//! - Every grant gets a fresh fencing token, strictly greater than every
//!   token issued before by any role ([`next_token`]), so a downstream
//!   resource that remembers the highest token it saw rejects every earlier
//!   holder.
//! - A holder holds through a live lease; when the lease ends, the grant ends
//!   in the same entry (`State` does that).
//!
//! # The election rule
//!
//! Whenever a slot is free, among the waiting candidates:
//! 1. only those with an effective priority above 0 are eligible (a group
//!    member's configured priority for the role overrides the campaign's);
//! 2. with `max_lag` set, those whose progress is more than `max_lag` behind
//!    the most advanced eligible candidate are passed over;
//! 3. the highest priority wins, then the most progress, then the earliest
//!    arrival (then the name, so that ties are broken identically
//!    everywhere).
//!
//! Step 2 comes before step 3 on purpose: the most advanced eligible
//! candidate always survives it, so a slot is never left empty while an
//! eligible candidate waits. When the highest-priority candidates all lag,
//! the best candidate of a lower priority within `max_lag` is elected rather
//! than none (a lagging primary would lose the writes it lags by). When some
//! highest-priority candidate is within `max_lag`, this is exactly "highest
//! priority, then exclude laggers, then most progress, then arrival".

use std::cmp::Reverse;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::command::{Failover, RoleSpec};

/// Member node id → role name → configured priority.
pub(super) type Members = BTreeMap<String, BTreeMap<String, u32>>;

/// A campaign: waiting, or inside a [`Holder`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Candidate {
    pub(super) lease: i64,
    /// As campaigned; see [`effective_priority`].
    pub(super) priority: u32,
    pub(super) progress: u64,
    /// Revision at which it (last) joined the waiting queue.
    pub(super) arrival: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Holder {
    pub(super) candidate: Candidate,
    pub(super) token: u64,
    pub(super) granted_revision: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Role {
    pub(super) spec: RoleSpec,
    pub(super) holders: BTreeMap<String, Holder>,
    pub(super) waiting: BTreeMap<String, Candidate>,
    /// Slots that were held and lost and are not open to automatic election
    /// yet, as the leader time (ms) until which each stays empty (0: no
    /// time). Ascending. In an automatic role a vacancy lasts until its
    /// time (a handover delay); in a manual role until `Promote` fills it.
    pub(super) vacancies: Vec<u64>,
}

/// The priority that counts: the member's configured one for the role if
/// the candidate is a member with one, else what it campaigned with.
pub(super) fn effective_priority(members: &Members, role: &str, candidate: &str, campaigned: u32) -> u32 {
    members
        .get(candidate)
        .and_then(|priorities| priorities.get(role))
        .copied()
        .unwrap_or(campaigned)
}

/// The token for a grant made by the entry at revision `at`, after
/// `last_token` was the highest ever issued: greater than every earlier
/// token and at least the revision (so that a token also tells at which
/// revision, at the latest, it was issued). `None` only at `u64::MAX`.
pub(super) fn next_token(last_token: u64, at: u64) -> Option<u64> {
    last_token.checked_add(1).map(|next| next.max(at))
}

impl Role {
    pub(super) fn new(spec: RoleSpec) -> Role {
        Role {
            spec,
            holders: BTreeMap::new(),
            waiting: BTreeMap::new(),
            vacancies: Vec::new(),
        }
    }

    pub(super) fn name(&self) -> &str {
        &self.spec.name
    }

    pub(super) fn candidate_count(&self) -> usize {
        self.holders.len() + self.waiting.len()
    }

    /// Slots open to election now.
    pub(super) fn free_slots(&self) -> usize {
        (self.spec.capacity as usize).saturating_sub(self.holders.len() + self.vacancies.len())
    }

    pub(super) fn effective(&self, members: &Members, name: &str, c: &Candidate) -> u32 {
        effective_priority(members, self.name(), name, c.priority)
    }

    /// The waiting queue in order: effective priority (highest first), then
    /// arrival, then name. Ineligible (priority 0) candidates come last.
    pub(super) fn queue<'a>(&'a self, members: &Members) -> Vec<(&'a String, &'a Candidate, u32)> {
        let mut queue: Vec<_> = self
            .waiting
            .iter()
            .map(|(name, c)| (name, c, self.effective(members, name, c)))
            .collect();
        queue.sort_by_key(|(name, c, priority)| (Reverse(*priority), c.arrival, *name));
        queue
    }

    /// 1-based position of a waiting candidate in [`Role::queue`].
    pub(super) fn position(&self, members: &Members, candidate: &str) -> Option<u32> {
        self.queue(members)
            .iter()
            .position(|(name, _, _)| name.as_str() == candidate)
            .map(|i| u32::try_from(i + 1).unwrap_or(u32::MAX))
    }

    /// Whether `candidate` waits with an effective priority above 0.
    pub(super) fn is_eligible(&self, members: &Members, candidate: &str) -> bool {
        self.waiting
            .get(candidate)
            .is_some_and(|c| self.effective(members, candidate, c) > 0)
    }

    /// The candidate the election rule (module docs) picks for a free slot.
    pub(super) fn pick(&self, members: &Members) -> Option<String> {
        let eligible: Vec<(&String, &Candidate, u32)> = self
            .waiting
            .iter()
            .map(|(name, c)| (name, c, self.effective(members, name, c)))
            .filter(|(_, _, priority)| *priority > 0)
            .collect();
        let most_advanced = eligible.iter().map(|(_, c, _)| c.progress).max()?;
        let floor = self.spec.max_lag.map_or(0, |lag| most_advanced.saturating_sub(lag));
        eligible
            .into_iter()
            .filter(|(_, c, _)| c.progress >= floor)
            .max_by_key(|(name, c, priority)| (*priority, c.progress, Reverse(c.arrival), Reverse(*name)))
            .map(|(name, _, _)| name.clone())
    }

    /// The holder a switchover replaces by default: the oldest grant.
    pub(super) fn oldest_holder(&self) -> Option<String> {
        self.holders
            .iter()
            .min_by_key(|(_, h)| h.token)
            .map(|(name, _)| name.clone())
    }

    /// The holders released first when capacity drops: the newest grants.
    pub(super) fn newest_holders(&self, n: usize) -> Vec<String> {
        let mut by_token: Vec<(&String, u64)> = self.holders.iter().map(|(name, h)| (name, h.token)).collect();
        by_token.sort_by_key(|(_, token)| Reverse(*token));
        by_token.into_iter().take(n).map(|(name, _)| name.clone()).collect()
    }

    /// Moves a waiting candidate into a slot. The caller checked that a slot
    /// is free and issued `token`.
    pub(super) fn grant(&mut self, candidate: &str, token: u64, at: u64) -> Option<&Holder> {
        let c = self.waiting.remove(candidate)?;
        self.holders.insert(
            candidate.to_owned(),
            Holder {
                candidate: c,
                token,
                granted_revision: at,
            },
        );
        self.holders.get(candidate)
    }

    /// Ends a grant whose holder is gone (lease end, resign). The slot is
    /// then free, or held back as a vacancy: for a manual role always (until
    /// `Promote`), and after a lease *expiry* with a handover delay until
    /// `stamp_ms + delay`.
    pub(super) fn release(&mut self, candidate: &str, expired: bool, stamp_ms: u64) -> Option<Holder> {
        let holder = self.remove_holder(candidate)?;
        let delay = if expired { self.spec.handover_delay_ms } else { 0 };
        let until = if delay > 0 { stamp_ms.saturating_add(delay) } else { 0 };
        if self.spec.failover == Failover::Manual || until > 0 {
            self.add_vacancy(until);
        }
        Some(holder)
    }

    /// Ends a grant whose slot is reused or removed in the same entry
    /// (switchover, capacity drop): no vacancy.
    pub(super) fn remove_holder(&mut self, candidate: &str) -> Option<Holder> {
        self.holders.remove(candidate)
    }

    /// Puts a released holder back in the waiting queue, arriving at `at`.
    pub(super) fn requeue(&mut self, candidate: &str, holder: Holder, at: u64) {
        let mut c = holder.candidate;
        c.arrival = at;
        self.waiting.insert(candidate.to_owned(), c);
    }

    fn add_vacancy(&mut self, until: u64) {
        let i = self.vacancies.partition_point(|v| *v <= until);
        self.vacancies.insert(i, until);
    }

    /// Drops the vacancies an automatic role no longer holds back at
    /// `stamp_ms` (their delay is over); manual vacancies stay. Returns
    /// whether any went.
    pub(super) fn expire_vacancies(&mut self, stamp_ms: u64) -> bool {
        if self.spec.failover == Failover::Manual {
            return false;
        }
        let before = self.vacancies.len();
        self.vacancies.retain(|until| *until > stamp_ms);
        self.vacancies.len() != before
    }

    /// Takes a vacancy whose delay is over at `stamp_ms`, for `Promote`.
    pub(super) fn take_vacancy(&mut self, stamp_ms: u64) -> bool {
        match self.vacancies.iter().position(|until| *until <= stamp_ms) {
            Some(i) => {
                self.vacancies.remove(i);
                true
            }
            None => false,
        }
    }

    /// The earliest time an automatic role's held-back slot opens, if any.
    pub(super) fn next_deadline(&self) -> Option<u64> {
        match self.spec.failover {
            Failover::Automatic => self.vacancies.first().copied(),
            Failover::Manual => None,
        }
    }

    /// Drops vacancies beyond the capacity (the earliest-ending first), after
    /// a capacity change.
    pub(super) fn trim_vacancies(&mut self) {
        let room = (self.spec.capacity as usize).saturating_sub(self.holders.len());
        while self.vacancies.len() > room {
            self.vacancies.remove(0);
        }
    }

    /// Whether an eligible candidate waits while a slot is free: never true
    /// after an entry has applied (the election runs whenever it could be).
    pub(super) fn has_unfilled_slot(&self, members: &Members) -> bool {
        self.free_slots() > 0 && self.pick(members).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(capacity: u32, max_lag: Option<u64>) -> RoleSpec {
        RoleSpec {
            name: "primary".into(),
            capacity,
            max_lag,
            ..RoleSpec::default()
        }
    }

    fn cand(priority: u32, progress: u64, arrival: u64) -> Candidate {
        Candidate {
            lease: 1,
            priority,
            progress,
            arrival,
        }
    }

    fn role(max_lag: Option<u64>, waiting: &[(&str, Candidate)]) -> Role {
        let mut r = Role::new(spec(1, max_lag));
        for (name, c) in waiting {
            r.waiting.insert((*name).to_owned(), c.clone());
        }
        r
    }

    fn none() -> Members {
        Members::new()
    }

    #[test]
    fn priority_zero_is_never_picked() {
        let r = role(None, &[("a", cand(0, 100, 1)), ("b", cand(0, 5, 2))]);
        assert_eq!(r.pick(&none()), None);
        assert!(!r.is_eligible(&none(), "a"));
        assert!(!r.has_unfilled_slot(&none()));
    }

    #[test]
    fn priority_then_progress_then_arrival_then_name() {
        let r = role(
            None,
            &[
                ("a", cand(1, 100, 1)),
                ("b", cand(2, 5, 3)),
                ("c", cand(2, 7, 4)),
                ("d", cand(2, 7, 2)),
            ],
        );
        assert_eq!(r.pick(&none()).as_deref(), Some("d"));
        let r = role(None, &[("x", cand(2, 7, 2)), ("w", cand(2, 7, 2))]);
        assert_eq!(r.pick(&none()).as_deref(), Some("w"));
    }

    #[test]
    fn member_priority_overrides_the_campaign() {
        let r = role(None, &[("a", cand(5, 0, 1)), ("b", cand(1, 0, 2))]);
        let mut members = Members::new();
        members.insert("a".into(), BTreeMap::from([("primary".to_owned(), 0)]));
        assert_eq!(r.pick(&members).as_deref(), Some("b"));
        // A member without an entry for the role keeps its campaign priority.
        members.insert("a".into(), BTreeMap::from([("standby".to_owned(), 0)]));
        assert_eq!(r.pick(&members).as_deref(), Some("a"));
    }

    #[test]
    fn max_lag_excludes_laggers_against_the_most_advanced_eligible() {
        // b (priority 2) lags a (priority 1) by 90 > 10: a wins.
        let r = role(Some(10), &[("a", cand(1, 100, 1)), ("b", cand(2, 10, 2))]);
        assert_eq!(r.pick(&none()).as_deref(), Some("a"));
        // Within the lag, priority still decides.
        let r = role(Some(10), &[("a", cand(1, 100, 1)), ("b", cand(2, 90, 2))]);
        assert_eq!(r.pick(&none()).as_deref(), Some("b"));
        // A priority-0 candidate's progress does not count.
        let r = role(Some(10), &[("a", cand(0, 1000, 1)), ("b", cand(2, 10, 2))]);
        assert_eq!(r.pick(&none()).as_deref(), Some("b"));
        // Some(0): only the most advanced.
        let r = role(Some(0), &[("a", cand(1, 11, 1)), ("b", cand(2, 10, 2))]);
        assert_eq!(r.pick(&none()).as_deref(), Some("a"));
    }

    #[test]
    fn queue_order_and_positions() {
        let r = role(
            None,
            &[
                ("a", cand(0, 0, 1)),
                ("b", cand(1, 0, 3)),
                ("c", cand(3, 0, 5)),
                ("d", cand(1, 0, 2)),
            ],
        );
        let order: Vec<&str> = r.queue(&none()).iter().map(|(n, _, _)| n.as_str()).collect();
        assert_eq!(order, vec!["c", "d", "b", "a"]);
        assert_eq!(r.position(&none(), "b"), Some(3));
        assert_eq!(r.position(&none(), "zz"), None);
    }

    #[test]
    fn tokens_strictly_increase_and_follow_the_revision() {
        assert_eq!(next_token(0, 5), Some(5));
        assert_eq!(next_token(5, 5), Some(6));
        assert_eq!(next_token(9, 7), Some(10));
        assert_eq!(next_token(u64::MAX, 1), None);
    }

    #[test]
    fn vacancies_hold_slots_back() {
        let mut r = role(None, &[("a", cand(1, 0, 1)), ("b", cand(1, 0, 2))]);
        r.spec.handover_delay_ms = 500;
        assert!(r.grant("a", 10, 3).is_some());
        assert_eq!(r.free_slots(), 0);
        // Resign / revoke: no delay.
        assert!(r.release("a", false, 1_000).is_some());
        assert_eq!((r.free_slots(), r.vacancies.len()), (1, 0));
        assert!(r.grant("b", 11, 4).is_some());
        // Expiry: held back until stamp + delay.
        assert!(r.release("b", true, 1_000).is_some());
        assert_eq!((r.free_slots(), r.next_deadline()), (0, Some(1_500)));
        assert!(!r.expire_vacancies(1_499));
        assert!(r.expire_vacancies(1_500));
        assert_eq!(r.free_slots(), 1);
    }

    #[test]
    fn manual_roles_keep_vacancies_until_promote() {
        let mut r = role(None, &[("a", cand(1, 0, 1))]);
        r.spec.failover = Failover::Manual;
        r.spec.handover_delay_ms = 100;
        assert!(r.grant("a", 10, 3).is_some());
        assert!(r.release("a", true, 1_000).is_some());
        assert_eq!(r.vacancies, vec![1_100]);
        assert_eq!(r.next_deadline(), None);
        assert!(!r.expire_vacancies(u64::MAX));
        assert!(!r.take_vacancy(1_099));
        assert!(r.take_vacancy(1_100));
        assert_eq!(r.free_slots(), 1);
    }
}
