//! Limit checks on operations, shared by the API layer and the state machine.
//!
//! The API layer calls [`validate_op`] before proposing, so a client gets
//! `INVALID_ARGUMENT` without a log entry. [`State::apply`](super::State::apply)
//! calls it again: an entry that reaches the log anyway (an older or buggy
//! proposer, a hand-made entry) is then rejected the same way on every
//! replica instead of being half applied. Validation is a pure function of the
//! operation, so both calls always agree. Checks against the state (does the
//! lease exist, is the fence current) come later, in the state machine.
//!
//! Messages name the offending part, the actual size and the limit, e.g.
//! `txn success[2] put: key is 5000 bytes; the limit is 4096`.
//!
//! # Names
//!
//! Node ids, group, role and candidate names, label keys and zones are
//! names: 1 to [`limits::MAX_NAME_BYTES`] characters of `[a-z0-9._-]`,
//! starting with a letter or digit ([`validate_name`]). Lowercase only, so
//! that two names never differ by case alone.

use std::collections::BTreeSet;

use super::command::{
    CampaignOp, Compare, CompareTarget, DeleteOp, Fence, GroupMember, NodeRegisterOp, Op, PutOp, RangeOp, RoleSpec,
    TxnAction, TxnOp,
};
use crate::limits;

/// Checks `op` against every limit in [`crate::limits`] that applies to it.
///
/// KV: keys must be 1 to [`limits::MAX_KEY_BYTES`] bytes, except that a
/// delete or range with `prefix` set may use the empty key to mean "every
/// key". Put values and compared values may be at most
/// [`limits::MAX_VALUE_BYTES`]. A transaction has at most
/// [`limits::MAX_TXN_COMPARES`] compares and at most [`limits::MAX_TXN_OPS`]
/// operations in each branch. A put's lease is 0 or positive.
///
/// Leases: a TTL within [`limits::MIN_LEASE_TTL_MS`] and
/// [`limits::MAX_LEASE_TTL_MS`]; ids positive (0 in a grant: choose one);
/// at most [`limits::MAX_LEASE_BATCH`] leases per leader batch.
///
/// Topology and elections: names as [`validate_name`]; labels, members,
/// roles and capacities within their limits; role and member names unique
/// within a group, and member priorities only for the group's roles.
///
/// # Errors
///
/// A message for the first limit broken, naming the part, its size and the
/// limit; the API layer returns it as `INVALID_ARGUMENT`.
pub fn validate_op(op: &Op) -> Result<(), String> {
    match op {
        Op::Put(put) => validate_put(put).map_err(|e| format!("put: {e}")),
        Op::Delete(delete) => validate_delete(delete).map_err(|e| format!("delete: {e}")),
        Op::Txn(txn) => validate_txn(txn),
        Op::LeaseGrant(grant) => {
            if grant.id < 0 {
                return Err(format!("lease grant: id {} is negative", grant.id));
            }
            check_ttl(grant.ttl_ms).map_err(|e| format!("lease grant: {e}"))
        }
        Op::LeaseRevoke(revoke) => check_lease_id(revoke.id).map_err(|e| format!("lease revoke: {e}")),
        Op::LeaseRenew(renew) => check_batch("lease renew", renew.ids.len()),
        Op::LeaseCheckpoint(checkpoint) => check_batch("lease checkpoint", checkpoint.leases.len()),
        Op::LeaseExpire(expire) => check_batch("lease expire", expire.leases.len()),
        Op::NodeRegister(register) => validate_node(register).map_err(|e| format!("node register: {e}")),
        Op::NodeDeregister(deregister) => validate_name("node id", &deregister.id)
            .and_then(|()| check_fence(deregister.fence.as_ref()))
            .map_err(|e| format!("node deregister: {e}")),
        Op::GroupCreate(create) => validate_group(&create.name, &create.roles, &create.members)
            .and_then(|()| check_fence(create.fence.as_ref()))
            .map_err(|e| format!("group create: {e}")),
        Op::GroupUpdate(update) => validate_group(&update.name, &update.roles, &update.members)
            .and_then(|()| check_fence(update.fence.as_ref()))
            .map_err(|e| format!("group update: {e}")),
        Op::GroupDelete(delete) => validate_name("group", &delete.name)
            .and_then(|()| check_fence(delete.fence.as_ref()))
            .map_err(|e| format!("group delete: {e}")),
        Op::Campaign(campaign) => validate_campaign(campaign).map_err(|e| format!("campaign: {e}")),
        Op::Resign(resign) => {
            check_candidate(&resign.group, &resign.role, &resign.candidate).map_err(|e| format!("resign: {e}"))
        }
        Op::ReportProgress(progress) => {
            check_candidate(&progress.group, &progress.role, &progress.candidate).map_err(|e| format!("progress: {e}"))
        }
        Op::Switchover(switchover) => check_candidate(&switchover.group, &switchover.role, &switchover.to)
            .and_then(|()| switchover.from.as_ref().map_or(Ok(()), |f| validate_name("from", f)))
            .map_err(|e| format!("switchover: {e}")),
        Op::Promote(promote) => {
            check_candidate(&promote.group, &promote.role, &promote.candidate).map_err(|e| format!("promote: {e}"))
        }
        Op::Tick => Ok(()),
        // Only `State::apply` takes a batch apart; one reaching validation
        // is a batch inside a batch.
        Op::Batch(_) => Err("a batch inside a batch".into()),
    }
}

/// Checks a read outside the log against the key limits (same rules as a
/// delete: the empty key is allowed only with `prefix`).
///
/// [`State::range`](super::State::range) itself accepts any `RangeOp` (a key
/// that cannot exist simply matches nothing); this is for the API layer, so
/// that a malformed read is reported instead of silently returning nothing.
///
/// # Errors
///
/// A message naming the key problem, as for [`validate_op`].
pub fn validate_range(op: &RangeOp) -> Result<(), String> {
    check_key(&op.key, op.prefix).map_err(|e| format!("range: {e}"))
}

/// Checks a name (node id, group, role, candidate, label key, zone): 1 to
/// [`limits::MAX_NAME_BYTES`] characters of `[a-z0-9._-]`, the first a
/// letter or digit. `what` names it in the message.
///
/// # Errors
///
/// A message naming the problem.
pub fn validate_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > limits::MAX_NAME_BYTES {
        return Err(format!(
            "{what} {name:?} is {} bytes; a name is 1 to {} bytes",
            name.len(),
            limits::MAX_NAME_BYTES
        ));
    }
    let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.');
    let starts_well = name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !starts_well || !name.chars().all(allowed) {
        return Err(format!(
            "{what} {name:?} is not a name: use a-z, 0-9, '-', '_' and '.', starting with a letter or digit"
        ));
    }
    Ok(())
}

fn validate_put(op: &PutOp) -> Result<(), String> {
    check_key(&op.key, false)?;
    check_value("value", &op.value)?;
    if op.lease < 0 {
        return Err(format!("lease {} is negative", op.lease));
    }
    check_fence(op.fence.as_ref())
}

fn validate_delete(op: &DeleteOp) -> Result<(), String> {
    check_key(&op.key, op.prefix)?;
    check_fence(op.fence.as_ref())
}

fn validate_txn(op: &TxnOp) -> Result<(), String> {
    if op.compare.len() > limits::MAX_TXN_COMPARES {
        return Err(format!(
            "txn has {} compares; the limit is {}",
            op.compare.len(),
            limits::MAX_TXN_COMPARES
        ));
    }
    for (branch, actions) in [("success", &op.success), ("failure", &op.failure)] {
        if actions.len() > limits::MAX_TXN_OPS {
            return Err(format!(
                "txn {branch} branch has {} ops; the limit is {}",
                actions.len(),
                limits::MAX_TXN_OPS
            ));
        }
    }
    check_fence(op.fence.as_ref()).map_err(|e| format!("txn: {e}"))?;
    for (i, compare) in op.compare.iter().enumerate() {
        validate_compare(compare).map_err(|e| format!("txn compare[{i}]: {e}"))?;
    }
    for (branch, actions) in [("success", &op.success), ("failure", &op.failure)] {
        for (i, action) in actions.iter().enumerate() {
            let (kind, checked) = match action {
                TxnAction::Range(range) => ("range", check_key(&range.key, range.prefix)),
                TxnAction::Put(put) => ("put", validate_put(put)),
                TxnAction::Delete(delete) => ("delete", validate_delete(delete)),
            };
            checked.map_err(|e| format!("txn {branch}[{i}] {kind}: {e}"))?;
        }
    }
    Ok(())
}

fn validate_compare(compare: &Compare) -> Result<(), String> {
    check_key(&compare.key, false)?;
    match &compare.target {
        CompareTarget::Value(value) => check_value("compared value", value),
        CompareTarget::Version(_) | CompareTarget::CreateRevision(_) | CompareTarget::ModRevision(_) => Ok(()),
    }
}

/// `prefix`: the key is a prefix, so the empty key (every key) is allowed.
fn check_key(key: &[u8], prefix: bool) -> Result<(), String> {
    if key.is_empty() && !prefix {
        return Err(format!(
            "key is empty; a key must be 1 to {} bytes (the empty key means every key, and only with prefix set)",
            limits::MAX_KEY_BYTES
        ));
    }
    if key.len() > limits::MAX_KEY_BYTES {
        return Err(format!(
            "key is {} bytes; the limit is {}",
            key.len(),
            limits::MAX_KEY_BYTES
        ));
    }
    Ok(())
}

fn check_value(what: &str, value: &[u8]) -> Result<(), String> {
    if value.len() > limits::MAX_VALUE_BYTES {
        return Err(format!(
            "{what} is {} bytes; the limit is {}",
            value.len(),
            limits::MAX_VALUE_BYTES
        ));
    }
    Ok(())
}

fn check_fence(fence: Option<&Fence>) -> Result<(), String> {
    match fence {
        None => Ok(()),
        Some(f) => validate_name("fence group", &f.group).and_then(|()| validate_name("fence role", &f.role)),
    }
}

fn check_ttl(ttl_ms: u64) -> Result<(), String> {
    if !(limits::MIN_LEASE_TTL_MS..=limits::MAX_LEASE_TTL_MS).contains(&ttl_ms) {
        return Err(format!(
            "TTL {ttl_ms} ms is outside {} to {} ms",
            limits::MIN_LEASE_TTL_MS,
            limits::MAX_LEASE_TTL_MS
        ));
    }
    Ok(())
}

fn check_lease_id(id: i64) -> Result<(), String> {
    if id <= 0 {
        return Err(format!("lease id {id} is not positive"));
    }
    Ok(())
}

fn check_batch(what: &str, len: usize) -> Result<(), String> {
    if len > limits::MAX_LEASE_BATCH {
        return Err(format!(
            "{what} names {len} leases; the limit is {}",
            limits::MAX_LEASE_BATCH
        ));
    }
    Ok(())
}

/// Printable text of at most `max` bytes (addresses, label values).
fn check_text(what: &str, text: &str, max: usize) -> Result<(), String> {
    if text.len() > max {
        return Err(format!("{what} is {} bytes; the limit is {max}", text.len()));
    }
    if text.chars().any(char::is_control) {
        return Err(format!("{what} {text:?} contains control characters"));
    }
    Ok(())
}

fn validate_node(op: &NodeRegisterOp) -> Result<(), String> {
    validate_name("node id", &op.id)?;
    check_text("address", &op.address, limits::MAX_NODE_ADDRESS_BYTES)?;
    if !op.zone.is_empty() {
        validate_name("zone", &op.zone)?;
    }
    if op.labels.len() > limits::MAX_LABELS {
        return Err(format!(
            "{} labels; the limit is {}",
            op.labels.len(),
            limits::MAX_LABELS
        ));
    }
    for (k, v) in &op.labels {
        validate_name("label key", k)?;
        check_text(&format!("label {k:?} value"), v, limits::MAX_LABEL_VALUE_BYTES)?;
    }
    if op.lease < 0 {
        return Err(format!("lease {} is negative", op.lease));
    }
    check_fence(op.fence.as_ref())
}

fn validate_role_spec(spec: &RoleSpec) -> Result<(), String> {
    validate_name("role", &spec.name)?;
    if spec.capacity == 0 || spec.capacity > limits::MAX_ROLE_CAPACITY {
        return Err(format!(
            "role {:?} capacity {} is outside 1 to {}",
            spec.name,
            spec.capacity,
            limits::MAX_ROLE_CAPACITY
        ));
    }
    if spec.handover_delay_ms > limits::MAX_HANDOVER_DELAY_MS {
        return Err(format!(
            "role {:?} handover delay {} ms; the limit is {} ms",
            spec.name,
            spec.handover_delay_ms,
            limits::MAX_HANDOVER_DELAY_MS
        ));
    }
    Ok(())
}

fn validate_group(name: &str, roles: &[RoleSpec], members: &[GroupMember]) -> Result<(), String> {
    validate_name("group", name)?;
    if roles.len() > limits::MAX_ROLES_PER_GROUP {
        return Err(format!(
            "{} roles; the limit is {}",
            roles.len(),
            limits::MAX_ROLES_PER_GROUP
        ));
    }
    if members.len() > limits::MAX_GROUP_MEMBERS {
        return Err(format!(
            "{} members; the limit is {}",
            members.len(),
            limits::MAX_GROUP_MEMBERS
        ));
    }
    let mut role_names = BTreeSet::new();
    for spec in roles {
        validate_role_spec(spec)?;
        if !role_names.insert(spec.name.as_str()) {
            return Err(format!("role {:?} is listed twice", spec.name));
        }
    }
    let mut nodes = BTreeSet::new();
    for member in members {
        validate_name("member node", &member.node)?;
        if !nodes.insert(member.node.as_str()) {
            return Err(format!("member {:?} is listed twice", member.node));
        }
        for role in member.priorities.keys() {
            if !role_names.contains(role.as_str()) {
                return Err(format!(
                    "member {:?} has a priority for role {role:?}, which the group does not have",
                    member.node
                ));
            }
        }
    }
    Ok(())
}

fn validate_campaign(op: &CampaignOp) -> Result<(), String> {
    check_candidate(&op.group, &op.role, &op.candidate)?;
    check_lease_id(op.lease)
}

fn check_candidate(group: &str, role: &str, candidate: &str) -> Result<(), String> {
    validate_name("group", group)?;
    validate_name("role", role)?;
    validate_name("candidate", candidate)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::CompareResult;

    fn put(key: &[u8], value: &[u8]) -> PutOp {
        PutOp {
            key: key.to_vec(),
            value: value.to_vec(),
            ..PutOp::default()
        }
    }

    fn delete(key: &[u8], prefix: bool) -> DeleteOp {
        DeleteOp {
            key: key.to_vec(),
            prefix,
            ..DeleteOp::default()
        }
    }

    fn txn(compare: Vec<Compare>, success: Vec<TxnAction>, failure: Vec<TxnAction>) -> Op {
        Op::Txn(TxnOp {
            compare,
            success,
            failure,
            fence: None,
        })
    }

    fn version_eq(key: &[u8]) -> Compare {
        Compare {
            key: key.to_vec(),
            target: CompareTarget::Version(0),
            result: CompareResult::Equal,
        }
    }

    fn err(op: &Op) -> String {
        match validate_op(op) {
            Err(e) => e,
            Ok(()) => panic!("expected {op:?} to be invalid"),
        }
    }

    #[test]
    fn put_key_bounds() {
        assert!(validate_op(&Op::Put(put(b"k", b""))).is_ok());
        assert!(validate_op(&Op::Put(put(&vec![b'k'; limits::MAX_KEY_BYTES], b"v"))).is_ok());

        let e = err(&Op::Put(put(b"", b"v")));
        assert!(e.starts_with("put: key is empty"), "{e}");

        let e = err(&Op::Put(put(&vec![b'k'; limits::MAX_KEY_BYTES + 1], b"v")));
        assert_eq!(
            e,
            format!(
                "put: key is {} bytes; the limit is {}",
                limits::MAX_KEY_BYTES + 1,
                limits::MAX_KEY_BYTES
            )
        );
    }

    #[test]
    fn put_value_bounds() {
        assert!(validate_op(&Op::Put(put(b"k", &vec![0; limits::MAX_VALUE_BYTES]))).is_ok());
        let e = err(&Op::Put(put(b"k", &vec![0; limits::MAX_VALUE_BYTES + 1])));
        assert_eq!(
            e,
            format!(
                "put: value is {} bytes; the limit is {}",
                limits::MAX_VALUE_BYTES + 1,
                limits::MAX_VALUE_BYTES
            )
        );
    }

    #[test]
    fn delete_empty_key_only_with_prefix() {
        assert!(validate_op(&Op::Delete(delete(b"", true))).is_ok());
        assert!(validate_op(&Op::Delete(delete(b"k", false))).is_ok());
        let e = err(&Op::Delete(delete(b"", false)));
        assert!(e.starts_with("delete: key is empty"), "{e}");
        let long = vec![b'p'; limits::MAX_KEY_BYTES + 1];
        let e = err(&Op::Delete(delete(&long, true)));
        assert!(e.contains("key is 4097 bytes; the limit is 4096"), "{e}");
    }

    #[test]
    fn range_key_rules() {
        let ok = RangeOp {
            key: Vec::new(),
            prefix: true,
            ..RangeOp::default()
        };
        assert!(validate_range(&ok).is_ok());
        let e = validate_range(&RangeOp::default()).unwrap_err();
        assert!(e.starts_with("range: key is empty"), "{e}");
        let long = RangeOp {
            key: vec![b'r'; limits::MAX_KEY_BYTES + 1],
            ..RangeOp::default()
        };
        assert!(validate_range(&long).is_err());
    }

    #[test]
    fn txn_compare_count() {
        let at_limit = vec![version_eq(b"k"); limits::MAX_TXN_COMPARES];
        assert!(validate_op(&txn(at_limit, vec![], vec![])).is_ok());
        let over = vec![version_eq(b"k"); limits::MAX_TXN_COMPARES + 1];
        assert_eq!(
            err(&txn(over, vec![], vec![])),
            format!(
                "txn has {} compares; the limit is {}",
                limits::MAX_TXN_COMPARES + 1,
                limits::MAX_TXN_COMPARES
            )
        );
    }

    #[test]
    fn txn_ops_per_branch() {
        let ops = |n| vec![TxnAction::Put(put(b"k", b"v")); n];
        assert!(validate_op(&txn(vec![], ops(limits::MAX_TXN_OPS), ops(limits::MAX_TXN_OPS))).is_ok());
        let e = err(&txn(vec![], ops(limits::MAX_TXN_OPS + 1), vec![]));
        assert_eq!(
            e,
            format!(
                "txn success branch has {} ops; the limit is {}",
                limits::MAX_TXN_OPS + 1,
                limits::MAX_TXN_OPS
            )
        );
        let e = err(&txn(vec![], vec![], ops(limits::MAX_TXN_OPS + 1)));
        assert!(e.starts_with("txn failure branch has"), "{e}");
    }

    #[test]
    fn txn_compare_contents() {
        let empty_key = Compare {
            key: Vec::new(),
            ..version_eq(b"")
        };
        let e = err(&txn(vec![version_eq(b"a"), empty_key], vec![], vec![]));
        assert!(e.starts_with("txn compare[1]: key is empty"), "{e}");

        let big_value = Compare {
            key: b"k".to_vec(),
            target: CompareTarget::Value(vec![0; limits::MAX_VALUE_BYTES + 1]),
            result: CompareResult::Equal,
        };
        let e = err(&txn(vec![big_value], vec![], vec![]));
        assert!(
            e.starts_with("txn compare[0]: compared value is 1048577 bytes; the limit is 1048576"),
            "{e}"
        );
    }

    #[test]
    fn txn_actions_checked_in_both_branches() {
        let good = TxnAction::Put(put(b"k", b"v"));
        let e = err(&txn(vec![], vec![good.clone(), TxnAction::Put(put(b"", b"v"))], vec![]));
        assert!(e.starts_with("txn success[1] put: key is empty"), "{e}");

        let e = err(&txn(
            vec![],
            vec![good.clone()],
            vec![TxnAction::Delete(delete(b"", false))],
        ));
        assert!(e.starts_with("txn failure[0] delete: key is empty"), "{e}");

        let e = err(&txn(vec![], vec![], vec![good, TxnAction::Range(RangeOp::default())]));
        assert!(e.starts_with("txn failure[1] range: key is empty"), "{e}");

        let all = TxnAction::Range(RangeOp {
            prefix: true,
            ..RangeOp::default()
        });
        assert!(validate_op(&txn(vec![], vec![all], vec![])).is_ok());
    }

    // ---- coordination ----

    use crate::state::command::{
        CampaignOp, Failover, GroupCreateOp, GroupMember, LeaseExpireOp, LeaseGrantOp, LeaseRenewOp, LeaseRevokeOp,
        NodeRegisterOp, RoleSpec, SwitchoverOp,
    };

    fn spec(name: &str, capacity: u32) -> RoleSpec {
        RoleSpec {
            name: name.into(),
            capacity,
            failover: Failover::Automatic,
            handover_delay_ms: 0,
            max_lag: None,
        }
    }

    fn group(roles: Vec<RoleSpec>, members: Vec<GroupMember>) -> Op {
        Op::GroupCreate(GroupCreateOp {
            name: "orders-db".into(),
            roles,
            members,
            fence: None,
        })
    }

    #[test]
    fn names() {
        for good in [
            "a",
            "0",
            "orders-db",
            "shard_17.eu",
            &"n".repeat(limits::MAX_NAME_BYTES),
        ] {
            assert_eq!(validate_name("x", good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "-a",
            ".a",
            "_a",
            "A",
            "a b",
            "a/b",
            "é",
            &"n".repeat(limits::MAX_NAME_BYTES + 1),
        ] {
            assert!(validate_name("x", bad).is_err(), "{bad:?}");
        }
        let e = validate_name("node id", "Web1").unwrap_err();
        assert!(e.starts_with("node id \"Web1\" is not a name"), "{e}");
    }

    #[test]
    fn lease_ops() {
        let grant = |id, ttl_ms| Op::LeaseGrant(LeaseGrantOp { id, ttl_ms });
        assert!(validate_op(&grant(0, limits::MIN_LEASE_TTL_MS)).is_ok());
        assert!(validate_op(&grant(5, limits::MAX_LEASE_TTL_MS)).is_ok());
        let e = err(&grant(0, limits::MIN_LEASE_TTL_MS - 1));
        assert_eq!(e, "lease grant: TTL 1999 ms is outside 2000 to 86400000 ms");
        assert!(err(&grant(0, limits::MAX_LEASE_TTL_MS + 1)).contains("outside"));
        assert!(err(&grant(-1, 5_000)).contains("negative"));
        assert!(err(&Op::LeaseRevoke(LeaseRevokeOp { id: 0 })).contains("not positive"));
        let renew = Op::LeaseRenew(LeaseRenewOp {
            ids: vec![1; limits::MAX_LEASE_BATCH + 1],
        });
        assert!(err(&renew).contains("the limit is 10000"));
        let expire = Op::LeaseExpire(LeaseExpireOp {
            leases: vec![Default::default(); limits::MAX_LEASE_BATCH],
        });
        assert!(validate_op(&expire).is_ok());
        let leased = Op::Put(PutOp {
            lease: -3,
            ..put(b"k", b"v")
        });
        assert!(err(&leased).contains("negative"));
    }

    #[test]
    fn node_register() {
        let node = |f: fn(&mut NodeRegisterOp)| {
            let mut op = NodeRegisterOp {
                id: "web-1".into(),
                address: "10.0.0.1:8080".into(),
                zone: "eu-west-1a".into(),
                ..NodeRegisterOp::default()
            };
            op.labels.insert("rack".into(), "r12 row 3".into());
            f(&mut op);
            Op::NodeRegister(op)
        };
        assert!(validate_op(&node(|_| {})).is_ok());
        assert!(validate_op(&node(|n| n.zone.clear())).is_ok());
        assert!(err(&node(|n| n.id = "Web".into())).starts_with("node register: node id"));
        assert!(err(&node(|n| n.zone = "EU".into())).contains("zone"));
        assert!(err(&node(|n| n.address = "a".repeat(limits::MAX_NODE_ADDRESS_BYTES + 1))).contains("address"));
        assert!(err(&node(|n| n.address = "a\nb".into())).contains("control"));
        assert!(err(&node(|n| {
            n.labels.insert("Bad".into(), "v".into());
        }))
        .contains("label key"));
        assert!(err(&node(|n| {
            n.labels
                .insert("k".into(), "v".repeat(limits::MAX_LABEL_VALUE_BYTES + 1));
        }))
        .contains("label \"k\" value"));
        assert!(err(&node(|n| {
            for i in 0..=limits::MAX_LABELS {
                n.labels.insert(format!("l{i}"), String::new());
            }
        }))
        .contains("labels; the limit is 64"));
    }

    #[test]
    fn groups() {
        assert!(validate_op(&group(vec![spec("primary", 1), spec("standby", 16)], vec![])).is_ok());
        assert!(validate_op(&group(vec![], vec![])).is_ok());
        assert!(err(&group(vec![spec("primary", 0)], vec![])).contains("capacity 0 is outside 1 to 16"));
        assert!(err(&group(vec![spec("primary", 17)], vec![])).contains("capacity 17"));
        assert!(err(&group(vec![spec("p", 1), spec("p", 1)], vec![])).contains("listed twice"));
        let many = (0..=limits::MAX_ROLES_PER_GROUP)
            .map(|i| spec(&format!("r{i}"), 1))
            .collect();
        assert!(err(&group(many, vec![])).contains("roles; the limit is 16"));
        let delayed = RoleSpec {
            handover_delay_ms: limits::MAX_HANDOVER_DELAY_MS + 1,
            ..spec("p", 1)
        };
        assert!(err(&group(vec![delayed], vec![])).contains("handover delay"));
        let member = |node: &str, role: &str| GroupMember {
            node: node.into(),
            priorities: [(role.to_owned(), 1)].into_iter().collect(),
        };
        assert!(validate_op(&group(vec![spec("p", 1)], vec![member("n1", "p"), member("n2", "p")])).is_ok());
        assert!(err(&group(vec![spec("p", 1)], vec![member("n1", "p"), member("n1", "p")])).contains("twice"));
        let e = err(&group(vec![spec("p", 1)], vec![member("n1", "q")]));
        assert!(e.contains("which the group does not have"), "{e}");
    }

    #[test]
    fn elections_and_fences() {
        let campaign = |lease, candidate: &str| {
            Op::Campaign(CampaignOp {
                group: "db".into(),
                role: "primary".into(),
                candidate: candidate.into(),
                lease,
                priority: 1,
                progress: 0,
            })
        };
        assert!(validate_op(&campaign(1, "node-1")).is_ok());
        assert!(err(&campaign(0, "node-1")).contains("lease id 0 is not positive"));
        assert!(err(&campaign(1, "Node")).starts_with("campaign: candidate"));
        let switch = Op::Switchover(SwitchoverOp {
            group: "db".into(),
            role: "primary".into(),
            to: "b".into(),
            from: Some("".into()),
        });
        assert!(err(&switch).contains("from"));
        let fenced = |group: &str| {
            Op::Put(PutOp {
                fence: Some(Fence {
                    group: group.into(),
                    role: "primary".into(),
                    token: 3,
                }),
                ..put(b"k", b"v")
            })
        };
        assert!(validate_op(&fenced("db")).is_ok());
        assert!(err(&fenced("DB")).contains("fence group"));
        assert!(validate_op(&Op::Tick).is_ok());
    }
}
