//! Scenario tests of leases, topology, elections, fencing and the watch
//! history, through [`State::apply`] as the log drives it. Every applied
//! entry is followed by a full invariant check.

use std::collections::BTreeMap;

use super::kv::tests::{delete, get, put};
use super::*;
use crate::limits;

const T0: u64 = 1_700_000_000_000;

/// A state plus a log index and a leader clock.
struct H {
    s: State,
    index: u64,
    now: u64,
}

impl H {
    fn new() -> H {
        H {
            s: State::default(),
            index: 0,
            now: T0,
        }
    }

    fn apply_cmd(&mut self, cmd: &Command) -> Response {
        self.index += 1;
        let r = self.s.apply(self.index, cmd);
        if let Err(e) = self.s.check_invariants() {
            panic!("invariant broken after {cmd:?} → {r:?}: {e}");
        }
        r
    }

    /// Applies `op` without a request id, stamped `now`.
    fn run(&mut self, op: Op) -> Response {
        let cmd = Command {
            request_id: None,
            stamp_ms: self.now,
            op,
        };
        self.apply_cmd(&cmd)
    }

    /// Applies `op`, which must not be rejected.
    fn ok(&mut self, op: Op) -> Response {
        let r = self.run(op.clone());
        if let Response::Rejected(e) = &r {
            panic!("{op:?} rejected: {e}");
        }
        r
    }

    /// Applies `op`, which must be rejected and change nothing.
    fn reject(&mut self, op: Op) -> Rejection {
        let before = self.s.clone();
        match self.run(op.clone()) {
            Response::Rejected(e) => {
                assert_eq!(self.s, before, "rejected {op:?} changed the state");
                e
            }
            other => panic!("{op:?} was not rejected: {other:?}"),
        }
    }

    fn lease(&mut self, ttl_ms: u64) -> i64 {
        match self.ok(Op::LeaseGrant(LeaseGrantOp { id: 0, ttl_ms })) {
            Response::LeaseGrant(g) => g.id,
            other => panic!("{other:?}"),
        }
    }

    fn seen(&self, id: i64) -> LeaseSeen {
        let info = self.s.lease(id).unwrap_or_else(|| panic!("no lease {id}"));
        LeaseSeen {
            id,
            granted_revision: info.granted_revision,
            renewals_seen: info.renewals,
        }
    }

    fn expire(&mut self, ids: &[i64]) -> Vec<i64> {
        let leases = ids.iter().map(|id| self.seen(*id)).collect();
        match self.ok(Op::LeaseExpire(LeaseExpireOp { leases })) {
            Response::LeaseExpire(r) => r.ended,
            other => panic!("{other:?}"),
        }
    }

    fn revoke(&mut self, id: i64) {
        self.ok(Op::LeaseRevoke(LeaseRevokeOp { id }));
    }

    fn campaign(&mut self, group: &str, role: &str, candidate: &str, lease: i64, priority: u32) -> CampaignOutcome {
        self.campaign_at(group, role, candidate, lease, priority, 0)
    }

    fn campaign_at(
        &mut self,
        group: &str,
        role: &str,
        candidate: &str,
        lease: i64,
        priority: u32,
        progress: u64,
    ) -> CampaignOutcome {
        match self.ok(campaign(group, role, candidate, lease, priority, progress)) {
            Response::Campaign(c) => c.outcome,
            other => panic!("{other:?}"),
        }
    }

    /// `(candidate, token)` of each holder, oldest grant first.
    fn holders(&self, group: &str, role: &str) -> Vec<(String, u64)> {
        self.s
            .holders(group, role)
            .map(|v| v.holders.into_iter().map(|h| (h.candidate, h.token)).collect())
            .unwrap_or_default()
    }

    fn holder_names(&self, group: &str, role: &str) -> Vec<String> {
        self.holders(group, role).into_iter().map(|(c, _)| c).collect()
    }

    fn waiting(&self, group: &str, role: &str) -> Vec<String> {
        self.s
            .holders(group, role)
            .map(|v| v.waiting.into_iter().map(|w| w.candidate).collect())
            .unwrap_or_default()
    }

    /// The events of the newest revision.
    fn last_events(&self) -> Vec<Event> {
        self.events_at(self.s.revision())
    }

    fn events_at(&self, revision: u64) -> Vec<Event> {
        match self.s.events_since(revision.saturating_sub(1)) {
            Ok(events) => events
                .into_iter()
                .filter(|(r, _)| *r == revision)
                .map(|(_, e)| e)
                .collect(),
            Err(e) => panic!("{e}"),
        }
    }
}

fn campaign(group: &str, role: &str, candidate: &str, lease: i64, priority: u32, progress: u64) -> Op {
    Op::Campaign(CampaignOp {
        group: group.into(),
        role: role.into(),
        candidate: candidate.into(),
        lease,
        priority,
        progress,
    })
}

fn resign(group: &str, role: &str, candidate: &str) -> Op {
    Op::Resign(ResignOp {
        group: group.into(),
        role: role.into(),
        candidate: candidate.into(),
    })
}

fn spec(name: &str, capacity: u32) -> RoleSpec {
    RoleSpec {
        name: name.into(),
        capacity,
        ..RoleSpec::default()
    }
}

fn create(name: &str, roles: Vec<RoleSpec>) -> Op {
    create_with(name, roles, vec![])
}

fn create_with(name: &str, roles: Vec<RoleSpec>, members: Vec<GroupMember>) -> Op {
    Op::GroupCreate(GroupCreateOp {
        name: name.into(),
        roles,
        members,
        fence: None,
    })
}

fn update(name: &str, roles: Vec<RoleSpec>, force: bool) -> Op {
    Op::GroupUpdate(GroupUpdateOp {
        name: name.into(),
        roles,
        members: vec![],
        force,
        fence: None,
    })
}

fn member(node: &str, role: &str, priority: u32) -> GroupMember {
    GroupMember {
        node: node.into(),
        priorities: BTreeMap::from([(role.to_owned(), priority)]),
    }
}

fn fence(group: &str, role: &str, token: u64) -> Option<Fence> {
    Some(Fence {
        group: group.into(),
        role: role.into(),
        token,
    })
}

fn switchover(group: &str, role: &str, to: &str, from: Option<&str>) -> Op {
    Op::Switchover(SwitchoverOp {
        group: group.into(),
        role: role.into(),
        to: to.into(),
        from: from.map(Into::into),
    })
}

fn promote(group: &str, role: &str, candidate: &str) -> Op {
    Op::Promote(PromoteOp {
        group: group.into(),
        role: role.into(),
        candidate: candidate.into(),
    })
}

fn granted(candidate: &str, token: u64, lease: i64) -> Event {
    Event::Granted {
        group: "db".into(),
        role: "primary".into(),
        candidate: candidate.into(),
        lease,
        token,
    }
}

fn released(candidate: &str, token: u64, reason: ReleaseReason) -> Event {
    Event::Released {
        group: "db".into(),
        role: "primary".into(),
        candidate: candidate.into(),
        token,
        reason,
    }
}

fn elected(o: CampaignOutcome) -> u64 {
    match o {
        CampaignOutcome::Elected { token } => token,
        other => panic!("expected elected, got {other:?}"),
    }
}

/// A state with group `db`, role `primary` of the given capacity.
fn db(capacity: u32) -> H {
    let mut h = H::new();
    h.ok(create("db", vec![spec("primary", capacity)]));
    h
}

// ---- leases ----

#[test]
fn lease_grant_and_revoke() {
    let mut h = H::new();
    let r = h.ok(Op::LeaseGrant(LeaseGrantOp { id: 0, ttl_ms: 5_000 }));
    assert_eq!(
        r,
        Response::LeaseGrant(LeaseGrantResult {
            revision: 1,
            id: 1,
            ttl_ms: 5_000
        })
    );
    assert_eq!(h.last_events(), vec![Event::LeaseGranted { id: 1, ttl_ms: 5_000 }]);
    h.ok(Op::LeaseGrant(LeaseGrantOp { id: 42, ttl_ms: 5_000 }));
    let e = h.reject(Op::LeaseGrant(LeaseGrantOp { id: 42, ttl_ms: 5_000 }));
    assert!(matches!(e, Rejection::AlreadyExists(_)), "{e:?}");
    for ttl_ms in [0, limits::MIN_LEASE_TTL_MS - 1, limits::MAX_LEASE_TTL_MS + 1] {
        let e = h.reject(Op::LeaseGrant(LeaseGrantOp { id: 0, ttl_ms }));
        assert!(matches!(e, Rejection::Invalid(_)), "{e:?}");
    }
    h.ok(Op::LeaseGrant(LeaseGrantOp {
        id: 0,
        ttl_ms: limits::MAX_LEASE_TTL_MS,
    }));
    let info = h.s.lease(42).unwrap_or_else(|| panic!());
    assert_eq!(
        (info.ttl_ms, info.remaining_ms, info.renewals, info.granted_revision),
        (5_000, 5_000, 0, 2)
    );
    assert_eq!(h.s.leases().iter().map(|l| l.id).collect::<Vec<_>>(), vec![1, 42, 43]);

    let rev = h.s.revision();
    assert_eq!(
        h.ok(Op::LeaseRevoke(LeaseRevokeOp { id: 42 })),
        Response::LeaseRevoke(Ack { revision: rev + 1 })
    );
    assert_eq!(
        h.last_events(),
        vec![Event::LeaseEnded {
            id: 42,
            reason: LeaseEndReason::Revoked
        }]
    );
    let e = h.reject(Op::LeaseRevoke(LeaseRevokeOp { id: 42 }));
    assert_eq!(e, Rejection::NotFound("lease 42".into()));
    assert!(h.s.lease(42).is_none());
}

#[test]
fn lease_count_is_limited() {
    let mut h = H::new();
    for i in 0..limits::MAX_LEASES {
        h.index += 1;
        let r = h.s.apply(
            h.index,
            &Command {
                request_id: None,
                stamp_ms: T0,
                op: Op::LeaseGrant(LeaseGrantOp { id: 0, ttl_ms: 2_000 }),
            },
        );
        assert!(matches!(r, Response::LeaseGrant(_)), "{i}: {r:?}");
    }
    let e = h.reject(Op::LeaseGrant(LeaseGrantOp { id: 0, ttl_ms: 2_000 }));
    assert!(matches!(e, Rejection::LimitExceeded(_)), "{e:?}");
    // The history kept only the newest events.
    assert!(h.s.events_since(0).is_err());
}

#[test]
fn renewals_and_checkpoints_are_bookkeeping() {
    let mut h = H::new();
    let a = h.lease(10_000);
    let rev = h.s.revision();
    let stale = h.seen(a);
    h.ok(Op::LeaseCheckpoint(LeaseCheckpointOp {
        leases: vec![(h.seen(a), 6_000)],
    }));
    assert_eq!(h.s.lease(a).map(|l| l.remaining_ms), Some(6_000));
    let r = h.ok(Op::LeaseRenew(LeaseRenewOp { ids: vec![a, 99] }));
    assert_eq!(
        r,
        Response::LeaseRenew(LeaseRenewResult {
            revision: rev,
            ttl_ms: vec![Some(10_000), None]
        })
    );
    let info = h.s.lease(a).unwrap_or_else(|| panic!());
    assert_eq!((info.remaining_ms, info.renewals), (10_000, 1));
    // A checkpoint the leader computed before that renewal committed is
    // ignored: the renewal is newer information.
    h.ok(Op::LeaseCheckpoint(LeaseCheckpointOp {
        leases: vec![(stale, 1_000)],
    }));
    assert_eq!(h.s.lease(a).map(|l| l.remaining_ms), Some(10_000));
    h.ok(Op::LeaseCheckpoint(LeaseCheckpointOp {
        leases: vec![(h.seen(a), 2_500)],
    }));
    assert_eq!(h.s.lease(a).map(|l| l.remaining_ms), Some(2_500));
    // None of it is a watched change.
    assert_eq!(h.s.revision(), rev);
    let e = h.reject(Op::LeaseRenew(LeaseRenewOp {
        ids: vec![a; limits::MAX_LEASE_BATCH + 1],
    }));
    assert!(matches!(e, Rejection::Invalid(_)));
}

#[test]
fn expiry_decided_before_a_renewal_is_ignored() {
    let mut h = H::new();
    let a = h.lease(5_000);
    let decided = h.seen(a);
    h.ok(Op::LeaseRenew(LeaseRenewOp { ids: vec![a] }));
    let rev = h.s.revision();
    let r = h.ok(Op::LeaseExpire(LeaseExpireOp { leases: vec![decided] }));
    assert_eq!(
        r,
        Response::LeaseExpire(LeaseExpireResult {
            revision: rev,
            ended: vec![]
        })
    );
    assert!(h.s.lease(a).is_some());
    assert_eq!(h.s.revision(), rev);
    // The leader's next look, after the renewal, does end it.
    assert_eq!(h.expire(&[a]), vec![a]);
    assert!(h.s.lease(a).is_none());
    assert_eq!(
        h.last_events(),
        vec![Event::LeaseEnded {
            id: a,
            reason: LeaseEndReason::Expired
        }]
    );
}

#[test]
fn expiry_of_a_revoked_id_does_not_end_its_successor() {
    let mut h = H::new();
    h.ok(Op::LeaseGrant(LeaseGrantOp { id: 7, ttl_ms: 5_000 }));
    let decided = h.seen(7);
    h.revoke(7);
    h.ok(Op::LeaseGrant(LeaseGrantOp { id: 7, ttl_ms: 5_000 }));
    h.ok(Op::LeaseExpire(LeaseExpireOp { leases: vec![decided] }));
    assert!(h.s.lease(7).is_some());
    h.ok(Op::LeaseCheckpoint(LeaseCheckpointOp {
        leases: vec![(decided, 1)],
    }));
    assert_eq!(h.s.lease(7).map(|l| l.remaining_ms), Some(5_000));
}

#[test]
fn lease_end_takes_keys_grants_and_node_and_elects_the_next_in_the_same_entry() {
    let mut h = db(1);
    let la = h.lease(5_000);
    let lb = h.lease(5_000);
    h.ok(Op::Put(PutOp {
        lease: la,
        ..put(b"svc/a", b"10.0.0.1")
    }));
    h.ok(Op::Put(put(b"other", b"x")));
    h.ok(Op::NodeRegister(NodeRegisterOp {
        id: "a".into(),
        address: "10.0.0.1:5432".into(),
        lease: la,
        ..NodeRegisterOp::default()
    }));
    let ta = elected(h.campaign("db", "primary", "a", la, 1));
    assert_eq!(
        h.campaign("db", "primary", "b", lb, 1),
        CampaignOutcome::Queued { position: 1 }
    );
    let info = h.s.lease(la).unwrap_or_else(|| panic!());
    assert_eq!((info.keys, info.campaigns, info.nodes), (1, 1, 1));
    let rev = h.s.revision();

    assert_eq!(h.expire(&[la]), vec![la]);
    assert_eq!(h.s.revision(), rev + 1, "one entry, one revision");
    let tb = h.holders("db", "primary")[0].1;
    assert!(tb > ta);
    assert_eq!(h.holder_names("db", "primary"), vec!["b"]);
    let deleted = h.s.range(&get(b"other")).kvs;
    assert_eq!(deleted.len(), 1, "unleased keys stay");
    assert_eq!(h.s.range(&get(b"svc/a")).count, 0);
    let node = h.s.node("a").unwrap_or_else(|| panic!());
    assert_eq!((node.alive, node.lease), (false, 0));
    let events = h.last_events();
    assert_eq!(
        events[0],
        Event::LeaseEnded {
            id: la,
            reason: LeaseEndReason::Expired
        }
    );
    assert!(matches!(&events[1], Event::Delete(kv) if kv.key == b"svc/a" && kv.lease == la));
    assert_eq!(events[2], Event::NodeChanged { id: "a".into() });
    assert_eq!(events[3], released("a", ta, ReleaseReason::LeaseEnded));
    assert_eq!(events[4], granted("b", tb, lb));
    assert_eq!(events.len(), 5);
}

#[test]
fn a_candidate_whose_lease_ends_in_the_same_entry_is_not_elected() {
    let mut h = db(1);
    let la = h.lease(5_000);
    let lb = h.lease(5_000);
    let lc = h.lease(5_000);
    h.campaign("db", "primary", "a", la, 1);
    h.campaign("db", "primary", "b", lb, 9);
    h.campaign("db", "primary", "c", lc, 1);
    assert_eq!(h.expire(&[la, lb]), vec![la, lb]);
    assert_eq!(h.holder_names("db", "primary"), vec!["c"]);
    let grants = h
        .last_events()
        .into_iter()
        .filter(|e| matches!(e, Event::Granted { .. }))
        .count();
    assert_eq!(grants, 1);
}

// ---- KV and leases ----

#[test]
fn puts_attach_and_detach_leases() {
    let mut h = H::new();
    let l = h.lease(5_000);
    let e = h.reject(Op::Put(PutOp {
        lease: 99,
        ..put(b"k", b"v")
    }));
    assert_eq!(e, Rejection::NotFound("lease 99".into()));
    h.ok(Op::Put(PutOp {
        lease: l,
        ..put(b"k", b"v")
    }));
    h.ok(Op::Put(PutOp {
        lease: l,
        ..put(b"gone", b"v")
    }));
    assert_eq!(h.s.lease_keys(l), Some(vec![b"gone".to_vec(), b"k".to_vec()]));
    // A put without the lease detaches; a delete detaches.
    h.ok(Op::Put(put(b"k", b"v2")));
    h.ok(Op::Delete(delete(b"gone", false, false)));
    assert_eq!(h.s.lease(l).map(|i| i.keys), Some(0));
    h.revoke(l);
    assert_eq!(h.s.range(&get(b"k")).kvs[0].value, b"v2");
    assert_eq!(h.last_events().len(), 1);
    // A txn's put on a missing lease rejects the whole txn, but only in the
    // branch that runs.
    let txn = |lease| {
        Op::Txn(TxnOp {
            compare: vec![],
            success: vec![
                TxnAction::Put(put(b"t1", b"")),
                TxnAction::Put(PutOp {
                    lease,
                    ..put(b"t2", b"")
                }),
            ],
            failure: vec![TxnAction::Put(PutOp {
                lease: 12345,
                ..put(b"t3", b"")
            })],
            fence: None,
        })
    };
    assert!(matches!(h.reject(txn(l)), Rejection::NotFound(_)));
    let l2 = h.lease(5_000);
    h.ok(txn(l2));
    assert_eq!(h.s.lease(l2).map(|i| i.keys), Some(1));
}

// ---- elections ----

#[test]
fn campaign_checks_and_queue_positions() {
    let mut h = db(1);
    let l = h.lease(5_000);
    assert!(matches!(
        h.reject(campaign("nope", "primary", "a", l, 1, 0)),
        Rejection::NotFound(_)
    ));
    assert!(matches!(
        h.reject(campaign("db", "nope", "a", l, 1, 0)),
        Rejection::NotFound(_)
    ));
    assert!(matches!(
        h.reject(campaign("db", "primary", "a", 77, 1, 0)),
        Rejection::NotFound(_)
    ));
    assert!(matches!(
        h.reject(campaign("db", "primary", "A", l, 1, 0)),
        Rejection::Invalid(_)
    ));
    let rev = h.s.revision();
    let token = elected(h.campaign("db", "primary", "a", l, 1));
    assert_eq!(token, rev + 1, "the first token is the granting revision");
    assert_eq!(
        h.last_events(),
        vec![
            Event::Campaigned {
                group: "db".into(),
                role: "primary".into(),
                candidate: "a".into()
            },
            granted("a", token, l)
        ]
    );
    assert_eq!(
        h.campaign("db", "primary", "b", l, 1),
        CampaignOutcome::Queued { position: 1 }
    );
    assert_eq!(
        h.campaign("db", "primary", "c", l, 5),
        CampaignOutcome::Queued { position: 1 }
    );
    // Priority 0: last in the queue.
    assert_eq!(
        h.campaign("db", "primary", "d", l, 0),
        CampaignOutcome::Queued { position: 3 }
    );
    assert_eq!(h.waiting("db", "primary"), vec!["c", "b", "d"]);
    let view = h.s.holders("db", "primary").unwrap_or_else(|| panic!());
    assert_eq!(
        view.waiting.iter().map(|w| w.position).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert!(matches!(
        h.reject(resign("db", "primary", "zz")),
        Rejection::NotFound(_)
    ));
}

#[test]
fn re_campaigning_updates_in_place() {
    let mut h = db(1);
    let l1 = h.lease(5_000);
    let l2 = h.lease(5_000);
    let token = elected(h.campaign("db", "primary", "a", l1, 1));
    h.campaign("db", "primary", "b", l1, 1);
    // Same values again: nothing changes, not even the revision.
    let rev = h.s.revision();
    assert_eq!(
        h.campaign("db", "primary", "a", l1, 1),
        CampaignOutcome::Holding { token }
    );
    assert_eq!(
        h.campaign("db", "primary", "b", l1, 1),
        CampaignOutcome::Queued { position: 1 }
    );
    assert_eq!(h.s.revision(), rev);
    // A holder moving to another lease keeps its grant and token.
    assert_eq!(
        h.campaign("db", "primary", "a", l2, 3),
        CampaignOutcome::Holding { token }
    );
    assert_eq!(h.s.revision(), rev + 1);
    assert_eq!(h.s.lease(l1).map(|i| i.campaigns), Some(1));
    assert_eq!(h.s.lease(l2).map(|i| i.campaigns), Some(1));
    // Its old lease ending no longer touches it.
    h.revoke(l1);
    assert_eq!(h.holders("db", "primary"), vec![("a".to_owned(), token)]);
    assert!(h.waiting("db", "primary").is_empty());
}

#[test]
fn priority_zero_is_never_elected() {
    let mut h = db(1);
    let l = h.lease(5_000);
    assert_eq!(
        h.campaign("db", "primary", "a", l, 0),
        CampaignOutcome::Queued { position: 1 }
    );
    assert!(h.holders("db", "primary").is_empty());
    // A switchover or promote to it is refused too.
    assert!(matches!(
        h.reject(promote("db", "primary", "a")),
        Rejection::FailedPrecondition(_)
    ));
    elected(h.campaign("db", "primary", "b", l, 1));
    // Re-campaigning with a priority makes it eligible; a member's configured
    // priority 0 overrides any campaign priority.
    h.ok(Op::GroupUpdate(GroupUpdateOp {
        name: "db".into(),
        roles: vec![spec("primary", 1)],
        members: vec![member("c", "primary", 0)],
        force: false,
        fence: None,
    }));
    h.campaign("db", "primary", "c", l, 100);
    h.ok(resign("db", "primary", "b"));
    assert!(h.holders("db", "primary").is_empty(), "only priority-0 candidates wait");
    assert_eq!(
        h.campaign("db", "primary", "a", l, 2),
        CampaignOutcome::Elected { token: h.s.revision() }
    );
}

#[test]
fn member_priority_overrides_the_campaign() {
    let mut h = H::new();
    h.ok(create_with(
        "db",
        vec![spec("primary", 1)],
        vec![member("n1", "primary", 1), member("n2", "primary", 9)],
    ));
    let l = h.lease(5_000);
    h.campaign("db", "primary", "x", l, 5);
    h.campaign("db", "primary", "n1", l, 100);
    h.campaign("db", "primary", "n2", l, 1);
    let view = h.s.holders("db", "primary").unwrap_or_else(|| panic!());
    assert_eq!(
        view.waiting
            .iter()
            .map(|w| (w.candidate.as_str(), w.priority))
            .collect::<Vec<_>>(),
        vec![("n2", 9), ("n1", 1)]
    );
    assert_eq!(view.holders[0].candidate, "x");
    h.ok(resign("db", "primary", "x"));
    assert_eq!(h.holder_names("db", "primary"), vec!["n2"]);
}

#[test]
fn priority_then_progress_then_arrival() {
    let mut h = db(1);
    let l = h.lease(5_000);
    let lh = h.lease(5_000);
    h.campaign("db", "primary", "holder", lh, 1);
    h.campaign_at("db", "primary", "low", l, 1, 1_000);
    h.campaign_at("db", "primary", "early", l, 2, 50);
    h.campaign_at("db", "primary", "ahead", l, 2, 70);
    h.campaign_at("db", "primary", "late", l, 2, 70);
    h.revoke(lh);
    assert_eq!(h.holder_names("db", "primary"), vec!["ahead"]);
    h.ok(resign("db", "primary", "ahead"));
    assert_eq!(h.holder_names("db", "primary"), vec!["late"]);
    h.ok(resign("db", "primary", "late"));
    assert_eq!(h.holder_names("db", "primary"), vec!["early"]);
    // Progress reports change who is next, without a revision.
    h.campaign_at("db", "primary", "other", l, 2, 0);
    let rev = h.s.revision();
    h.ok(Op::ReportProgress(ReportProgressOp {
        group: "db".into(),
        role: "primary".into(),
        candidate: "other".into(),
        progress: 5_000,
    }));
    assert_eq!(h.s.revision(), rev);
    h.ok(resign("db", "primary", "early"));
    assert_eq!(h.holder_names("db", "primary"), vec!["other"]);
    h.ok(resign("db", "primary", "other"));
    assert_eq!(h.holder_names("db", "primary"), vec!["low"]);
}

#[test]
fn max_lag_passes_over_lagging_candidates() {
    let mut h = H::new();
    h.ok(create(
        "db",
        vec![RoleSpec {
            max_lag: Some(100),
            ..spec("primary", 1)
        }],
    ));
    let l = h.lease(5_000);
    let lh = h.lease(5_000);
    h.campaign("db", "primary", "holder", lh, 1);
    h.campaign_at("db", "primary", "preferred", l, 5, 1_000);
    h.campaign_at("db", "primary", "current", l, 1, 1_500);
    h.campaign_at("db", "primary", "near", l, 1, 1_450);
    // "preferred" lags "current" by 500 > 100; "near" is within the lag.
    h.expire(&[lh]);
    assert_eq!(h.holder_names("db", "primary"), vec!["current"]);
    h.ok(Op::ReportProgress(ReportProgressOp {
        group: "db".into(),
        role: "primary".into(),
        candidate: "preferred".into(),
        progress: 1_460,
    }));
    h.ok(resign("db", "primary", "current"));
    assert_eq!(h.holder_names("db", "primary"), vec!["preferred"]);
}

#[test]
fn capacity_above_one() {
    let mut h = db(3);
    let leases: Vec<i64> = (0..5).map(|_| h.lease(5_000)).collect();
    let mut tokens = Vec::new();
    for (i, l) in leases.iter().enumerate() {
        match h.campaign("db", "primary", &format!("c{i}"), *l, 1) {
            CampaignOutcome::Elected { token } => tokens.push(token),
            CampaignOutcome::Queued { position } => assert_eq!(position as usize, i - 2),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(tokens.len(), 3);
    assert!(tokens.windows(2).all(|w| w[0] < w[1]));
    assert_eq!(h.holder_names("db", "primary"), vec!["c0", "c1", "c2"]);
    // Two holders' leases expire at once: both slots go to the waiting two.
    h.expire(&[leases[0], leases[2]]);
    let now = h.holders("db", "primary");
    assert_eq!(
        now.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        vec!["c1", "c3", "c4"]
    );
    assert!(now[1].1 > tokens[2] && now[2].1 > now[1].1);
    // Switchover without `from` replaces the oldest grant.
    let l = h.lease(5_000);
    h.campaign("db", "primary", "c5", l, 1);
    h.ok(switchover("db", "primary", "c5", None));
    assert_eq!(h.holder_names("db", "primary"), vec!["c3", "c4", "c5"]);
    h.campaign("db", "primary", "c6", l, 1);
    h.ok(switchover("db", "primary", "c6", Some("c4")));
    assert_eq!(h.holder_names("db", "primary"), vec!["c3", "c5", "c6"]);
}

#[test]
fn switchover_has_no_gap_and_no_overlap() {
    let mut h = db(1);
    let la = h.lease(5_000);
    let lb = h.lease(5_000);
    let ta = elected(h.campaign("db", "primary", "a", la, 1));
    h.campaign("db", "primary", "b", lb, 1);
    h.campaign("db", "primary", "z", lb, 0);
    assert!(matches!(
        h.reject(switchover("db", "primary", "a", None)),
        Rejection::FailedPrecondition(_)
    ));
    assert!(matches!(
        h.reject(switchover("db", "primary", "x", None)),
        Rejection::FailedPrecondition(_)
    ));
    assert!(matches!(
        h.reject(switchover("db", "primary", "z", None)),
        Rejection::FailedPrecondition(_)
    ));
    assert!(matches!(
        h.reject(switchover("db", "primary", "b", Some("z"))),
        Rejection::FailedPrecondition(_)
    ));
    let rev = h.s.revision();
    let r = h.ok(switchover("db", "primary", "b", None));
    let Response::Switchover(SwitchoverResult { revision, from, token }) = r else {
        panic!("{r:?}")
    };
    assert_eq!((revision, from.as_str()), (rev + 1, "a"));
    assert!(token > ta);
    // One revision: the release and the grant, nothing in between.
    assert_eq!(
        h.last_events(),
        vec![released("a", ta, ReleaseReason::Switchover), granted("b", token, lb)]
    );
    assert_eq!(h.holders("db", "primary"), vec![("b".to_owned(), token)]);
    // The old holder waits again, behind those already waiting at its priority.
    assert_eq!(h.waiting("db", "primary"), vec!["a", "z"]);
    // Its token is dead for fenced writes; the new one works.
    let e = h.reject(Op::Put(PutOp {
        fence: fence("db", "primary", ta),
        ..put(b"k", b"v")
    }));
    assert!(matches!(e, Rejection::Fenced(_)));
    h.ok(Op::Put(PutOp {
        fence: fence("db", "primary", token),
        ..put(b"k", b"v")
    }));
}

#[test]
fn manual_failover_waits_for_promote() {
    let mut h = H::new();
    h.ok(create(
        "db",
        vec![RoleSpec {
            failover: Failover::Manual,
            ..spec("primary", 1)
        }],
    ));
    let la = h.lease(5_000);
    let lb = h.lease(5_000);
    // The first fill is automatic.
    let ta = elected(h.campaign("db", "primary", "a", la, 1));
    h.campaign("db", "primary", "b", lb, 1);
    assert!(matches!(
        h.reject(promote("db", "primary", "b")),
        Rejection::FailedPrecondition(_)
    ));
    h.expire(&[la]);
    assert!(h.holders("db", "primary").is_empty(), "manual: no automatic failover");
    assert_eq!(h.s.holders("db", "primary").map(|v| v.vacancies), Some(vec![0]));
    assert_eq!(h.s.next_role_deadline_ms(), None);
    h.now += 60_000;
    h.ok(Op::Tick);
    assert!(h.holders("db", "primary").is_empty());
    let r = h.ok(promote("db", "primary", "b"));
    let Response::Promote(PromoteResult { token, .. }) = r else {
        panic!("{r:?}")
    };
    assert!(token > ta);
    assert_eq!(h.holders("db", "primary"), vec![("b".to_owned(), token)]);
    assert_eq!(h.last_events(), vec![granted("b", token, lb)]);
    // A resign also leaves the slot to the operator.
    let lc = h.lease(5_000);
    h.campaign("db", "primary", "c", lc, 1);
    h.ok(resign("db", "primary", "b"));
    assert!(h.holders("db", "primary").is_empty());
    // Switching the role to automatic opens the slot.
    h.ok(update(
        "db",
        vec![RoleSpec {
            failover: Failover::Automatic,
            ..spec("primary", 1)
        }],
        false,
    ));
    assert_eq!(h.holder_names("db", "primary"), vec!["c"]);
}

#[test]
fn handover_delay_blocks_the_slot_then_a_tick_grants_it() {
    let mut h = H::new();
    h.ok(create(
        "db",
        vec![RoleSpec {
            handover_delay_ms: 3_000,
            ..spec("primary", 1)
        }],
    ));
    let la = h.lease(5_000);
    let lb = h.lease(5_000);
    let ta = elected(h.campaign("db", "primary", "a", la, 1));
    h.campaign("db", "primary", "b", lb, 1);
    h.expire(&[la]);
    assert!(h.holders("db", "primary").is_empty());
    let deadline = h.now + 3_000;
    assert_eq!(h.s.next_role_deadline_ms(), Some(deadline));
    assert_eq!(h.s.holders("db", "primary").map(|v| v.vacancies), Some(vec![deadline]));
    // Other entries before the deadline leave it empty.
    h.now = deadline - 1;
    h.ok(Op::Tick);
    h.ok(Op::Put(put(b"k", b"v")));
    h.ok(Op::LeaseRenew(LeaseRenewOp { ids: vec![lb] }));
    assert!(h.holders("db", "primary").is_empty());
    // A manual promote respects the delay too.
    assert!(matches!(
        h.reject(promote("db", "primary", "b")),
        Rejection::FailedPrecondition(_)
    ));
    // The first entry stamped at the deadline grants it, whatever it is.
    h.now = deadline;
    let rev = h.s.revision();
    let r = h.ok(Op::Tick);
    assert_eq!(r, Response::Tick(Ack { revision: rev + 1 }));
    let tb = h.holders("db", "primary")[0].1;
    assert!(tb > ta);
    assert_eq!(h.last_events(), vec![granted("b", tb, lb)]);
    assert_eq!(h.s.next_role_deadline_ms(), None);
    // A tick with nothing due changes nothing.
    let rev = h.s.revision();
    h.ok(Op::Tick);
    assert_eq!(h.s.revision(), rev);

    // Revoke and resign are deliberate: no delay.
    let lc = h.lease(5_000);
    h.campaign("db", "primary", "c", lc, 1);
    h.revoke(lb);
    assert_eq!(h.holder_names("db", "primary"), vec!["c"]);
    let ld = h.lease(5_000);
    h.campaign("db", "primary", "d", ld, 1);
    h.ok(resign("db", "primary", "c"));
    assert_eq!(h.holder_names("db", "primary"), vec!["d"]);

    // A delay that is over when any later entry applies: that entry grants.
    let le = h.lease(5_000);
    h.campaign("db", "primary", "e", le, 1);
    h.expire(&[ld]);
    assert!(h.holders("db", "primary").is_empty());
    h.now += 10_000;
    let r = h.ok(Op::Put(put(b"k2", b"v")));
    assert_eq!(h.holder_names("db", "primary"), vec!["e"]);
    // The put and the grant share the entry's revision.
    assert_eq!(r.revision(), Some(h.s.revision()));
    assert!(matches!(h.last_events()[0], Event::Granted { .. }));
}

#[test]
fn handover_delay_with_nobody_waiting_just_reopens_the_slot() {
    let mut h = H::new();
    h.ok(create(
        "db",
        vec![RoleSpec {
            handover_delay_ms: 1_000,
            ..spec("primary", 1)
        }],
    ));
    let la = h.lease(5_000);
    h.campaign("db", "primary", "a", la, 1);
    h.expire(&[la]);
    h.now += 1_000;
    let rev = h.s.revision();
    h.ok(Op::Tick);
    assert_eq!(h.s.revision(), rev, "no watched change");
    assert_eq!(h.s.next_role_deadline_ms(), None);
    let lb = h.lease(5_000);
    elected(h.campaign("db", "primary", "b", lb, 1));
}

// ---- fencing ----

#[test]
fn fenced_writes_need_a_current_token() {
    let mut h = db(1);
    let la = h.lease(5_000);
    let lb = h.lease(5_000);
    let ta = elected(h.campaign("db", "primary", "a", la, 1));
    h.campaign("db", "primary", "b", lb, 1);
    let fenced_put = |token| {
        Op::Put(PutOp {
            fence: fence("db", "primary", token),
            ..put(b"data", b"by a")
        })
    };
    h.ok(fenced_put(ta));
    h.ok(Op::Delete(DeleteOp {
        fence: fence("db", "primary", ta),
        ..delete(b"data", false, false)
    }));
    h.expire(&[la]);
    let tb = h.holders("db", "primary")[0].1;
    // The deposed holder's writes never land, whatever the op.
    let e = h.reject(fenced_put(ta));
    let Rejection::Fenced(msg) = e else { panic!("{e:?}") };
    assert!(msg.contains(&format!("[{tb}]")), "{msg}");
    h.reject(Op::Delete(DeleteOp {
        fence: fence("db", "primary", ta),
        ..delete(b"", true, false)
    }));
    h.reject(Op::Txn(TxnOp {
        fence: fence("db", "primary", ta),
        ..TxnOp::default()
    }));
    // A fence inside the branch that runs counts; in the other branch not.
    let txn = |fail_token| {
        Op::Txn(TxnOp {
            compare: vec![],
            success: vec![TxnAction::Put(PutOp {
                fence: fence("db", "primary", tb),
                ..put(b"x", b"")
            })],
            failure: vec![TxnAction::Put(PutOp {
                fence: fence("db", "primary", fail_token),
                ..put(b"y", b"")
            })],
            fence: None,
        })
    };
    h.ok(txn(ta));
    let txn_stale = Op::Txn(TxnOp {
        success: vec![
            TxnAction::Put(put(b"z", b"")),
            TxnAction::Delete(DeleteOp {
                fence: fence("db", "primary", ta),
                ..delete(b"x", false, false)
            }),
        ],
        ..TxnOp::default()
    });
    h.reject(txn_stale);
    // Unknown roles and tokens from the future are fenced too.
    h.reject(fenced_put(tb + 1));
    h.reject(Op::Put(PutOp {
        fence: fence("db", "standby", tb),
        ..put(b"k", b"")
    }));
    // Topology ops accept fences.
    h.reject(Op::NodeRegister(NodeRegisterOp {
        id: "n1".into(),
        fence: fence("db", "primary", ta),
        ..NodeRegisterOp::default()
    }));
    h.ok(Op::NodeRegister(NodeRegisterOp {
        id: "n1".into(),
        fence: fence("db", "primary", tb),
        ..NodeRegisterOp::default()
    }));
    h.reject(Op::GroupDelete(GroupDeleteOp {
        name: "db".into(),
        fence: fence("db", "primary", ta),
    }));
    assert_eq!(h.s.range(&get(b"data")).count, 0);
    assert_eq!(h.s.range(&get(b"x")).count, 1);
}

// ---- topology ----

#[test]
fn nodes_register_and_go_not_alive_with_their_lease() {
    let mut h = H::new();
    let register = |id: &str, lease| {
        Op::NodeRegister(NodeRegisterOp {
            id: id.into(),
            address: "10.0.0.1:80".into(),
            zone: "eu-west-1a".into(),
            labels: BTreeMap::from([("rack".to_owned(), "r 12".to_owned())]),
            lease,
            fence: None,
        })
    };
    assert!(matches!(h.reject(register("n1", 5)), Rejection::NotFound(_)));
    assert!(matches!(h.reject(register("N1", 0)), Rejection::Invalid(_)));
    let l = h.lease(5_000);
    h.ok(register("n1", l));
    h.ok(register("n2", 0));
    let rev = h.s.revision();
    h.ok(register("n1", l));
    assert_eq!(h.s.revision(), rev, "an identical registration changes nothing");
    h.revoke(l);
    let n1 = h.s.node("n1").unwrap_or_else(|| panic!());
    assert_eq!((n1.alive, n1.lease, n1.zone.as_str()), (false, 0, "eu-west-1a"));
    assert_eq!(h.s.node("n2").map(|n| n.alive), Some(true));
    let l2 = h.lease(5_000);
    h.ok(register("n1", l2));
    assert_eq!(h.s.node("n1").map(|n| n.alive), Some(true));
    h.ok(Op::NodeDeregister(NodeDeregisterOp {
        id: "n1".into(),
        fence: None,
    }));
    assert_eq!(h.s.lease(l2).map(|i| i.nodes), Some(0));
    assert!(matches!(
        h.reject(Op::NodeDeregister(NodeDeregisterOp {
            id: "n1".into(),
            fence: None
        })),
        Rejection::NotFound(_)
    ));
    let view = h.s.topology();
    assert_eq!(view.revision, h.s.revision());
    assert_eq!(view.nodes.iter().map(|n| n.id.as_str()).collect::<Vec<_>>(), vec!["n2"]);
}

#[test]
fn group_lifecycle() {
    let mut h = db(2);
    assert!(matches!(h.reject(create("db", vec![])), Rejection::AlreadyExists(_)));
    let e = h.reject(create("x", vec![spec("a", 1), spec("a", 2)]));
    assert!(matches!(e, Rejection::Invalid(_)));
    let e = h.reject(create("x", vec![spec("a", limits::MAX_ROLE_CAPACITY + 1)]));
    assert!(matches!(e, Rejection::Invalid(_)));
    let la = h.lease(5_000);
    let lb = h.lease(5_000);
    h.campaign("db", "primary", "a", la, 1);
    h.campaign("db", "primary", "b", lb, 1);
    h.campaign("db", "primary", "c", lb, 1);
    // Unchanged: no revision.
    let rev = h.s.revision();
    h.ok(update("db", vec![spec("primary", 2)], false));
    assert_eq!(h.s.revision(), rev);
    // Lowering capacity below the holders, or dropping a held role, needs force.
    assert!(matches!(
        h.reject(update("db", vec![spec("primary", 1)], false)),
        Rejection::FailedPrecondition(_)
    ));
    assert!(matches!(
        h.reject(update("db", vec![], false)),
        Rejection::FailedPrecondition(_)
    ));
    let tb = h.holders("db", "primary")[1].1;
    h.ok(update("db", vec![spec("primary", 1), spec("standby", 2)], true));
    // The newest grant went back to the queue.
    assert_eq!(h.holder_names("db", "primary"), vec!["a"]);
    assert_eq!(h.waiting("db", "primary"), vec!["c", "b"]);
    assert!(h
        .last_events()
        .contains(&released("b", tb, ReleaseReason::GroupChanged)));
    // Raising it again fills from the queue.
    h.ok(update("db", vec![spec("primary", 3), spec("standby", 2)], false));
    assert_eq!(h.holder_names("db", "primary"), vec!["a", "c", "b"]);
    // Dropping the role with force ends every candidacy.
    h.ok(update("db", vec![spec("standby", 2)], true));
    assert!(h.s.holders("db", "primary").is_none());
    assert_eq!(h.s.lease(la).map(|i| i.campaigns), Some(0));
    // Update creates a missing group; delete releases everything.
    h.ok(update("cache", vec![spec("primary", 1)], false));
    h.campaign("cache", "primary", "a", la, 1);
    h.ok(Op::GroupDelete(GroupDeleteOp {
        name: "cache".into(),
        fence: None,
    }));
    assert!(h.s.group("cache").is_none());
    assert_eq!(h.s.lease(la).map(|i| i.campaigns), Some(0));
    assert!(matches!(
        h.reject(Op::GroupDelete(GroupDeleteOp {
            name: "cache".into(),
            fence: None
        })),
        Rejection::NotFound(_)
    ));
    // A recreated group never reissues an old token.
    let before = h.s.last_token();
    h.ok(create("cache", vec![spec("primary", 1)]));
    let t = elected(h.campaign("cache", "primary", "a", la, 1));
    assert!(t > before);
}

// ---- dedup ----

#[test]
fn retried_coordination_writes_apply_once() {
    let mut h = db(1);
    let l = h.lease(5_000);
    let cmd = |seq, op| Command {
        request_id: Some(RequestId {
            client_id: 7,
            sequence: seq,
        }),
        stamp_ms: T0,
        op,
    };
    let grant = cmd(1, Op::LeaseGrant(LeaseGrantOp { id: 0, ttl_ms: 5_000 }));
    let first = h.apply_cmd(&grant);
    let rev = h.s.revision();
    assert_eq!(h.apply_cmd(&grant), first);
    assert_eq!((h.s.revision(), h.s.leases().len()), (rev, 2));
    let c = cmd(2, campaign("db", "primary", "a", l, 1, 0));
    let first = h.apply_cmd(&c);
    assert!(matches!(
        first,
        Response::Campaign(CampaignResult {
            outcome: CampaignOutcome::Elected { .. },
            ..
        })
    ));
    h.ok(resign("db", "primary", "a"));
    // The retry answers as the first time and does not campaign again.
    assert_eq!(h.apply_cmd(&c), first);
    assert!(h.holders("db", "primary").is_empty());
    // A rejection is remembered too.
    let bad = cmd(3, Op::LeaseRevoke(LeaseRevokeOp { id: 999 }));
    let first = h.apply_cmd(&bad);
    assert!(matches!(first, Response::Rejected(Rejection::NotFound(_))));
    h.ok(Op::LeaseGrant(LeaseGrantOp { id: 999, ttl_ms: 5_000 }));
    assert_eq!(h.apply_cmd(&bad), first);
    assert!(h.s.lease(999).is_some());
}

// ---- revisions, events, snapshots ----

#[test]
fn revision_exhaustion_is_a_rejection() {
    let mut s = State::default();
    s.apply(
        1,
        &Command {
            request_id: None,
            stamp_ms: 0,
            op: Op::Put(put(b"a", b"b")),
        },
    );
    s.revision = u64::MAX;
    let before = s.clone();
    for op in [
        Op::Put(put(b"a", b"b")),
        Op::Delete(delete(b"", true, false)),
        Op::Txn(TxnOp::default()),
        Op::LeaseGrant(LeaseGrantOp { id: 0, ttl_ms: 5_000 }),
        Op::Tick,
    ] {
        let cmd = Command {
            request_id: None,
            stamp_ms: u64::MAX,
            op,
        };
        match s.apply(2, &cmd) {
            Response::Rejected(Rejection::Invalid(msg)) => assert!(msg.contains("u64::MAX")),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(s, before);
}

/// A state that has been through every kind of operation.
fn busy() -> H {
    let mut h = H::new();
    h.ok(create_with(
        "db",
        vec![
            RoleSpec {
                handover_delay_ms: 2_000,
                max_lag: Some(10),
                ..spec("primary", 1)
            },
            RoleSpec {
                failover: Failover::Manual,
                ..spec("standby", 2)
            },
        ],
        vec![member("n1", "primary", 3), member("n2", "primary", 0)],
    ));
    let leases: Vec<i64> = (0..4).map(|_| h.lease(5_000)).collect();
    h.ok(Op::NodeRegister(NodeRegisterOp {
        id: "n1".into(),
        address: "a:1".into(),
        lease: leases[0],
        ..NodeRegisterOp::default()
    }));
    for (i, l) in leases.iter().enumerate() {
        h.campaign_at("db", "primary", &format!("n{i}"), *l, 1, i as u64);
        h.campaign("db", "standby", &format!("n{i}"), *l, 1);
        h.ok(Op::Put(PutOp {
            lease: *l,
            ..put(format!("k{i}").as_bytes(), b"v")
        }));
    }
    h.ok(Op::LeaseRenew(LeaseRenewOp { ids: leases.clone() }));
    h.ok(Op::LeaseCheckpoint(LeaseCheckpointOp {
        leases: vec![(h.seen(leases[1]), 1_234)],
    }));
    h.expire(&[leases[0]]);
    h.ok(resign("db", "standby", "n1"));
    h
}

#[test]
fn events_are_contiguous_and_complete() {
    let h = busy();
    let events = match h.s.events_since(0) {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    };
    // Every revision from 1 to the current one has events, in order.
    let mut expected = 1;
    for (r, _) in &events {
        assert!(*r == expected || *r == expected + 1, "gap before {r}");
        if *r == expected + 1 {
            expected += 1;
        }
    }
    assert_eq!(expected, h.s.revision());
    // Resuming from any revision gives exactly the suffix.
    for after in 0..=h.s.revision() {
        let tail = h.s.events_since(after).unwrap_or_else(|e| panic!("{e}"));
        let want: Vec<_> = events.iter().filter(|(r, _)| *r > after).cloned().collect();
        assert_eq!(tail, want);
    }
}

#[test]
fn watchers_behind_the_history_are_told_to_re_read() {
    let mut h = H::new();
    for i in 0..limits::MAX_HISTORY_EVENTS + 10 {
        h.index += 1;
        h.s.apply(
            h.index,
            &Command {
                request_id: None,
                stamp_ms: T0,
                op: Op::Put(put(format!("k{i}").as_bytes(), b"")),
            },
        );
    }
    let oldest = h.s.oldest_event_revision();
    assert_eq!(oldest, 11);
    assert_eq!(
        h.s.events_since(oldest - 2),
        Err(Compacted {
            requested: oldest - 2,
            oldest_available: oldest
        })
    );
    let events = h.s.events_since(oldest - 1).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(events.len(), limits::MAX_HISTORY_EVENTS);
    assert_eq!(events[0].0, oldest);
    // One revision larger than the whole history: kept whole or not at all.
    let l = h.lease(5_000);
    for i in 0..limits::MAX_HISTORY_EVENTS + 1 {
        h.index += 1;
        h.s.apply(
            h.index,
            &Command {
                request_id: None,
                stamp_ms: T0,
                op: Op::Put(PutOp {
                    lease: l,
                    ..put(format!("k{i}").as_bytes(), b"")
                }),
            },
        );
    }
    h.revoke(l);
    let rev = h.s.revision();
    assert!(h.s.events_since(rev - 1).is_err());
    assert_eq!(h.s.events_since(rev), Ok(vec![]));
    // The leased keys went with the lease; the first loop's others stayed.
    assert_eq!(h.s.key_count(), 9);
}

#[test]
fn snapshot_round_trip_of_everything() {
    let mut a = busy();
    let bytes = a.s.to_snapshot_bytes();
    let back = State::from_snapshot_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, a.s);
    assert_eq!(back.to_snapshot_bytes(), bytes, "encoding is canonical");
    assert_eq!(back.topology(), a.s.topology());
    assert_eq!(back.leases(), a.s.leases());
    assert_eq!(back.events_since(0), a.s.events_since(0));
    assert!(a.s.next_role_deadline_ms().is_some());
    assert_eq!(back.next_role_deadline_ms(), a.s.next_role_deadline_ms());
    // Both continue identically, through the delay, an expiry and a tick.
    let mut b = H {
        s: back,
        index: a.index,
        now: a.now,
    };
    for h in [&mut a, &mut b] {
        h.now += 2_000;
        h.ok(Op::Tick);
        let l = h.s.leases()[0].id;
        h.expire(&[l]);
        h.ok(promote("db", "standby", "n3"));
    }
    assert_eq!(a.s, b.s);
}

#[test]
fn inconsistent_coordination_snapshots_are_refused() {
    let h = busy();
    let refused = |s: &State| {
        let e = State::from_snapshot_bytes(&s.to_snapshot_bytes()).err();
        assert!(matches!(e, Some(SnapshotError::Inconsistent(_))), "{e:?}");
    };
    let mut bad = h.s.clone();
    let id = bad.leases().last().map(|l| l.id).unwrap_or_default();
    bad.leases.remove(id);
    refused(&bad);
    let mut bad = h.s.clone();
    bad.revision -= 1;
    refused(&bad);
}
