//! Limit checks on operations, shared by the API layer and the state machine.
//!
//! The API layer calls [`validate_op`] before proposing, so a client gets
//! `INVALID_ARGUMENT` without a log entry. [`State::apply`](super::State::apply)
//! calls it again: an entry that reaches the log anyway (an older or buggy
//! proposer, a hand-made entry) is then rejected the same way on every
//! replica instead of being half applied. Validation is a pure function of the
//! operation, so both calls always agree.
//!
//! Messages name the offending part, the actual size and the limit, e.g.
//! `txn success[2] put: key is 5000 bytes; the limit is 4096`.

use super::command::{Compare, CompareTarget, DeleteOp, Op, PutOp, RangeOp, TxnAction, TxnOp};
use crate::limits;

/// Checks `op` against every limit in [`crate::limits`] that applies to it.
///
/// Keys must be 1 to [`limits::MAX_KEY_BYTES`] bytes, except that a delete or
/// range with `prefix` set may use the empty key to mean "every key". Put
/// values and compared values may be at most [`limits::MAX_VALUE_BYTES`]. A
/// transaction has at most [`limits::MAX_TXN_COMPARES`] compares and at most
/// [`limits::MAX_TXN_OPS`] operations in each branch.
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

fn validate_put(op: &PutOp) -> Result<(), String> {
    check_key(&op.key, false)?;
    check_value("value", &op.value)
}

fn validate_delete(op: &DeleteOp) -> Result<(), String> {
    check_key(&op.key, op.prefix)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::command::CompareResult;

    fn put(key: &[u8], value: &[u8]) -> PutOp {
        PutOp {
            key: key.to_vec(),
            value: value.to_vec(),
            prev_kv: false,
        }
    }

    fn delete(key: &[u8], prefix: bool) -> DeleteOp {
        DeleteOp {
            key: key.to_vec(),
            prefix,
            prev_kv: false,
        }
    }

    fn txn(compare: Vec<Compare>, success: Vec<TxnAction>, failure: Vec<TxnAction>) -> Op {
        Op::Txn(TxnOp {
            compare,
            success,
            failure,
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
}
