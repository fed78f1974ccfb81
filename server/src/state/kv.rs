//! The key-value store: current values only.
//!
//! This is the etcd v3 model without history: every key carries
//! `create_revision`, `mod_revision`, `version` and a lease. The revision
//! itself belongs to the whole state (leases and elections move it too):
//! operations here write at the entry's revision, `Effects::at`, and report
//! what they changed as events; the state moves its revision when an entry
//! emitted any. Old values are not kept (the watch history is a separate,
//! bounded structure).
//!
//! Operations here assume the operation already passed
//! [`validate_op`](super::validate_op) and the state's lease and fence
//! checks; [`Kv::apply_op`] then cannot fail part-way, which is what makes a
//! transaction atomic without a rollback.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::command::{
    Compare, CompareResult, CompareTarget, DeleteOp, DeleteResult, KeyValue, Op, PutOp, PutResult, RangeOp,
    RangeResult, Response, TxnAction, TxnActionResult, TxnOp, TxnResult,
};
use super::events::Event;
use super::Effects;
use crate::limits;

/// One key's value and metadata; the key itself is the map key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Entry {
    pub(super) value: Vec<u8>,
    pub(super) create_revision: u64,
    pub(super) mod_revision: u64,
    pub(super) version: u64,
    pub(super) lease: i64,
}

impl Entry {
    fn to_key_value(&self, key: &[u8], with_value: bool) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: if with_value { self.value.clone() } else { Vec::new() },
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

/// The current pairs.
///
/// A `BTreeMap`, not a hash map: range results come out in key order, and
/// iteration (hence serialization) is identical on every replica.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Kv {
    pub(super) keys: BTreeMap<Vec<u8>, Entry>,
}

impl Kv {
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    /// The lease `key` is attached to (0 for none), if the key exists.
    pub(super) fn lease_of(&self, key: &[u8]) -> Option<i64> {
        self.keys.get(key).map(|e| e.lease)
    }

    /// Executes a validated, checked operation at revision `fx.at`,
    /// appending its events and lease moves to `fx`. Revisions in the
    /// response are left for the caller to fill in: the entry's revision is
    /// known only once the whole entry has run.
    ///
    /// A put always changes the store; a delete if it removed anything; a
    /// transaction if any of its operations did (all its changes share the
    /// entry's revision).
    pub(super) fn apply_op(&mut self, op: &Op, fx: &mut Effects) -> Response {
        match op {
            Op::Put(put) => Response::Put(PutResult {
                revision: 0,
                prev_kv: self.put_at(put, fx),
            }),
            Op::Delete(delete) => {
                let (deleted, prev_kvs) = self.delete(delete, fx);
                Response::Delete(DeleteResult {
                    revision: 0,
                    deleted,
                    prev_kvs,
                })
            }
            Op::Txn(txn) => Response::Txn(self.txn(txn, fx)),
            // Not a KV operation: the state never routes one here.
            _ => Response::None,
        }
    }

    /// Reads the current pairs; `revision` is the store revision to report.
    pub(super) fn range(&self, op: &RangeOp, revision: u64) -> RangeResult {
        self.range_within(op, limits::MAX_RANGE_BYTES, revision)
    }

    /// [`Kv::range`] with the byte budget as a parameter, so tests can reach
    /// the budget without megabytes of data.
    pub(super) fn range_within(&self, op: &RangeOp, max_bytes: usize, revision: u64) -> RangeResult {
        let max_pairs = match op.limit {
            0 => limits::MAX_RANGE_RESULTS,
            n => usize::try_from(n).map_or(limits::MAX_RANGE_RESULTS, |n| n.min(limits::MAX_RANGE_RESULTS)),
        };
        let mut matches = self.matching(&op.key, op.prefix);
        let mut kvs = Vec::new();
        let mut count: u64 = 0;
        let mut bytes: usize = 0;
        if !op.count_only {
            for (key, entry) in matches.by_ref() {
                count += 1;
                let size = key.len() + if op.keys_only { 0 } else { entry.value.len() };
                // The byte budget may be passed by the first pair only: a
                // range that matches something always returns something.
                let over_budget = !kvs.is_empty() && bytes.saturating_add(size) > max_bytes;
                if kvs.len() >= max_pairs || over_budget {
                    break;
                }
                bytes = bytes.saturating_add(size);
                kvs.push(entry.to_key_value(key, !op.keys_only));
            }
        }
        // Whatever the loop did not take still counts as matched.
        count += matches.count() as u64;
        debug_assert!(kvs.len() as u64 <= count);
        RangeResult {
            revision,
            // Like etcd, a count-only range reports `more: false`: it asked
            // for the count, which is complete.
            more: (kvs.len() as u64) < count && !op.count_only,
            count,
            kvs,
        }
    }

    /// The pairs `key` selects, in key order: the key itself, or with
    /// `prefix` every key that starts with it (the empty prefix: all keys).
    fn matching<'a>(&'a self, key: &'a [u8], prefix: bool) -> impl Iterator<Item = (&'a Vec<u8>, &'a Entry)> + 'a {
        let end = if prefix { Bound::Unbounded } else { Bound::Included(key) };
        // `range` panics only for start > end, impossible with these bounds.
        self.keys
            .range::<[u8], _>((Bound::Included(key), end))
            .take_while(move |(k, _)| !prefix || k.starts_with(key))
    }

    /// Writes one pair at revision `fx.at` and returns the previous pair if
    /// asked for. The key takes the put's lease (0: none), and `fx` records
    /// the move from the lease it had.
    fn put_at(&mut self, op: &PutOp, fx: &mut Effects) -> Option<KeyValue> {
        let at = fx.at;
        let (prev, old_lease, kv) = match self.keys.get_mut(op.key.as_slice()) {
            Some(entry) => {
                debug_assert!(at >= entry.mod_revision, "a put must not go back in revisions");
                let prev = op.prev_kv.then(|| entry.to_key_value(&op.key, true));
                let old_lease = entry.lease;
                entry.value.clone_from(&op.value);
                entry.mod_revision = at;
                // Saturating: the version cannot realistically reach u64::MAX,
                // and a put must never panic.
                entry.version = entry.version.saturating_add(1);
                entry.lease = op.lease;
                (prev, old_lease, entry.to_key_value(&op.key, true))
            }
            None => {
                let entry = Entry {
                    value: op.value.clone(),
                    create_revision: at,
                    mod_revision: at,
                    version: 1,
                    lease: op.lease,
                };
                let kv = entry.to_key_value(&op.key, true);
                self.keys.insert(op.key.clone(), entry);
                (None, 0, kv)
            }
        };
        if old_lease != op.lease {
            fx.lease_moves.push((op.key.clone(), old_lease, op.lease));
        }
        fx.events.push(Event::Put(kv));
        prev
    }

    /// Removes every pair the op selects; returns how many, and the removed
    /// pairs if asked for.
    fn delete(&mut self, op: &DeleteOp, fx: &mut Effects) -> (u64, Vec<KeyValue>) {
        let doomed: Vec<Vec<u8>> = self.matching(&op.key, op.prefix).map(|(k, _)| k.clone()).collect();
        let mut prev_kvs = Vec::new();
        let mut deleted: u64 = 0;
        for key in doomed {
            if let Some(prev) = self.remove(&key, fx) {
                deleted += 1;
                if op.prev_kv {
                    prev_kvs.push(prev);
                }
            }
        }
        (deleted, prev_kvs)
    }

    /// Removes one key, recording a delete event and the lease detach.
    pub(super) fn remove(&mut self, key: &[u8], fx: &mut Effects) -> Option<KeyValue> {
        let entry = self.keys.remove(key)?;
        let prev = entry.to_key_value(key, true);
        if entry.lease != 0 {
            fx.lease_moves.push((key.to_vec(), entry.lease, 0));
        }
        fx.events.push(Event::Delete(prev.clone()));
        Some(prev)
    }

    /// Evaluates one compare against the current store.
    pub(super) fn holds(&self, compare: &Compare) -> bool {
        let entry = self.keys.get(compare.key.as_slice());
        let ordering = match &compare.target {
            CompareTarget::Version(v) => entry.map_or(0, |e| e.version).cmp(v),
            CompareTarget::CreateRevision(r) => entry.map_or(0, |e| e.create_revision).cmp(r),
            CompareTarget::ModRevision(r) => entry.map_or(0, |e| e.mod_revision).cmp(r),
            CompareTarget::Value(v) => match entry {
                // A missing key has no value to order: it equals, exceeds and
                // precedes nothing, so only `NotEqual` holds.
                None => return compare.result == CompareResult::NotEqual,
                Some(e) => e.value.as_slice().cmp(v.as_slice()),
            },
        };
        match compare.result {
            CompareResult::Equal => ordering.is_eq(),
            CompareResult::NotEqual => ordering.is_ne(),
            CompareResult::Greater => ordering.is_gt(),
            CompareResult::Less => ordering.is_lt(),
        }
    }

    /// The branch a transaction takes: whether all its compares hold. Every
    /// compare sees the store as it was before the transaction.
    pub(super) fn txn_succeeds(&self, op: &TxnOp) -> bool {
        op.compare.iter().all(|c| self.holds(c))
    }

    /// Runs a transaction whose mutations, if any, all land at revision
    /// `fx.at`.
    fn txn(&mut self, op: &TxnOp, fx: &mut Effects) -> TxnResult {
        let succeeded = self.txn_succeeds(op);
        let actions = if succeeded { &op.success } else { &op.failure };
        let mut responses = Vec::with_capacity(actions.len());
        for action in actions {
            // Each action sees the effects of the earlier ones.
            responses.push(match action {
                TxnAction::Range(range) => TxnActionResult::Range(self.range(range, 0)),
                TxnAction::Put(put) => TxnActionResult::Put(PutResult {
                    revision: 0,
                    prev_kv: self.put_at(put, fx),
                }),
                TxnAction::Delete(delete) => {
                    let (deleted, prev_kvs) = self.delete(delete, fx);
                    TxnActionResult::Delete(DeleteResult {
                        revision: 0,
                        deleted,
                        prev_kvs,
                    })
                }
            });
        }
        TxnResult {
            revision: 0,
            succeeded,
            responses,
        }
    }

    /// Checks what must hold of any store this code produced at store
    /// revision `revision`, for snapshots from elsewhere and for tests.
    /// O(number of keys).
    pub(super) fn check_invariants(&self, revision: u64) -> Result<(), String> {
        for (key, e) in &self.keys {
            let show = || String::from_utf8_lossy(key).into_owned();
            if key.is_empty() || key.len() > limits::MAX_KEY_BYTES {
                return Err(format!("key {:?} is {} bytes", show(), key.len()));
            }
            if e.version == 0 {
                return Err(format!("key {:?} has version 0", show()));
            }
            if e.lease < 0 {
                return Err(format!("key {:?} has lease {}", show(), e.lease));
            }
            if e.create_revision == 0 || e.create_revision > e.mod_revision || e.mod_revision > revision {
                return Err(format!(
                    "key {:?}: create_revision {} / mod_revision {} / store revision {} out of order",
                    show(),
                    e.create_revision,
                    e.mod_revision,
                    revision
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::ops::{Deref, DerefMut};

    use super::*;
    use crate::state::command::Rejection;

    /// The store plus a revision, driven the way `State::apply` drives it
    /// (tests only; shadows the real `Kv` in this module).
    #[derive(Clone, Debug, Default, PartialEq, Eq)]
    pub(super) struct Kv {
        inner: super::Kv,
        pub(super) revision: u64,
    }

    impl Deref for Kv {
        type Target = super::Kv;
        fn deref(&self) -> &super::Kv {
            &self.inner
        }
    }

    impl DerefMut for Kv {
        fn deref_mut(&mut self) -> &mut super::Kv {
            &mut self.inner
        }
    }

    impl Kv {
        pub(super) fn apply_op(&mut self, op: &Op) -> Response {
            let Some(at) = self.revision.checked_add(1) else {
                return Response::Rejected(Rejection::Invalid("revision at u64::MAX".into()));
            };
            let mut fx = Effects::new(at, 0);
            let mut response = self.inner.apply_op(op, &mut fx);
            if !fx.events.is_empty() {
                self.revision = at;
            }
            response.set_revision(self.revision);
            response
        }

        pub(super) fn revision(&self) -> u64 {
            self.revision
        }

        pub(super) fn range(&self, op: &RangeOp) -> RangeResult {
            self.inner.range(op, self.revision)
        }

        fn range_within(&self, op: &RangeOp, max_bytes: usize) -> RangeResult {
            self.inner.range_within(op, max_bytes, self.revision)
        }

        pub(super) fn check_invariants(&self) -> Result<(), String> {
            self.inner.check_invariants(self.revision)
        }
    }

    pub(crate) fn put(key: &[u8], value: &[u8]) -> PutOp {
        PutOp {
            key: key.to_vec(),
            value: value.to_vec(),
            ..PutOp::default()
        }
    }

    pub(crate) fn put_prev(key: &[u8], value: &[u8]) -> PutOp {
        PutOp {
            prev_kv: true,
            ..put(key, value)
        }
    }

    pub(crate) fn delete(key: &[u8], prefix: bool, prev_kv: bool) -> DeleteOp {
        DeleteOp {
            key: key.to_vec(),
            prefix,
            prev_kv,
            fence: None,
        }
    }

    pub(crate) fn get(key: &[u8]) -> RangeOp {
        RangeOp {
            key: key.to_vec(),
            ..RangeOp::default()
        }
    }

    pub(crate) fn prefix(key: &[u8]) -> RangeOp {
        RangeOp {
            key: key.to_vec(),
            prefix: true,
            ..RangeOp::default()
        }
    }

    pub(crate) fn cmp(key: &[u8], target: CompareTarget, result: CompareResult) -> Compare {
        Compare {
            key: key.to_vec(),
            target,
            result,
        }
    }

    fn kv(key: &[u8], value: &[u8], create: u64, modr: u64, version: u64) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: value.to_vec(),
            create_revision: create,
            mod_revision: modr,
            version,
            lease: 0,
        }
    }

    fn do_put(s: &mut Kv, op: PutOp) -> PutResult {
        match s.apply_op(&Op::Put(op)) {
            Response::Put(r) => r,
            other => panic!("expected a put result, got {other:?}"),
        }
    }

    fn do_delete(s: &mut Kv, op: DeleteOp) -> DeleteResult {
        match s.apply_op(&Op::Delete(op)) {
            Response::Delete(r) => r,
            other => panic!("expected a delete result, got {other:?}"),
        }
    }

    fn do_txn(s: &mut Kv, compare: Vec<Compare>, success: Vec<TxnAction>, failure: Vec<TxnAction>) -> TxnResult {
        match s.apply_op(&Op::Txn(TxnOp {
            compare,
            success,
            failure,
            fence: None,
        })) {
            Response::Txn(r) => r,
            other => panic!("expected a txn result, got {other:?}"),
        }
    }

    fn keys_of(r: &RangeResult) -> Vec<Vec<u8>> {
        r.kvs.iter().map(|kv| kv.key.clone()).collect()
    }

    fn store(keys: &[&[u8]]) -> Kv {
        let mut s = Kv::default();
        for k in keys {
            do_put(&mut s, put(k, b"v"));
        }
        s
    }

    fn check(s: &Kv) {
        if let Err(e) = s.check_invariants() {
            panic!("invariant broken: {e}");
        }
    }

    #[test]
    fn empty_store() {
        let s = Kv::default();
        assert_eq!(s.revision(), 0);
        assert_eq!(s.len(), 0);
        let r = s.range(&prefix(b""));
        assert_eq!((r.revision, r.count, r.more, r.kvs.len()), (0, 0, false, 0));
    }

    #[test]
    fn put_bookkeeping() {
        let mut s = Kv::default();
        let r = do_put(&mut s, put_prev(b"a", b"1"));
        assert_eq!(
            r,
            PutResult {
                revision: 1,
                prev_kv: None
            }
        );
        assert_eq!(s.range(&get(b"a")).kvs, vec![kv(b"a", b"1", 1, 1, 1)]);

        assert_eq!(do_put(&mut s, put(b"b", b"x")).revision, 2);

        let r = do_put(&mut s, put_prev(b"a", b"2"));
        assert_eq!(r.revision, 3);
        assert_eq!(r.prev_kv, Some(kv(b"a", b"1", 1, 1, 1)));
        assert_eq!(s.range(&get(b"a")).kvs, vec![kv(b"a", b"2", 1, 3, 2)]);

        // prev_kv not asked for: not returned.
        let r = do_put(&mut s, put(b"a", b"3"));
        assert_eq!(
            r,
            PutResult {
                revision: 4,
                prev_kv: None
            }
        );
        assert_eq!(s.range(&get(b"a")).kvs, vec![kv(b"a", b"3", 1, 4, 3)]);
        // Untouched key keeps its metadata.
        assert_eq!(s.range(&get(b"b")).kvs, vec![kv(b"b", b"x", 2, 2, 1)]);
        assert_eq!(s.revision(), 4);
        assert_eq!(s.len(), 2);
        check(&s);
    }

    #[test]
    fn put_sets_and_clears_the_lease() {
        let mut s = store(&[b"a"]);
        let mut fx = Effects::new(2, 0);
        s.inner.apply_op(
            &Op::Put(PutOp {
                lease: 77,
                ..put(b"a", b"leased")
            }),
            &mut fx,
        );
        assert_eq!(fx.lease_moves, vec![(b"a".to_vec(), 0, 77)]);
        assert_eq!(s.lease_of(b"a"), Some(77));
        // The same lease again: no move.
        let mut fx = Effects::new(3, 0);
        s.inner.apply_op(
            &Op::Put(PutOp {
                lease: 77,
                prev_kv: true,
                ..put(b"a", b"again")
            }),
            &mut fx,
        );
        assert!(fx.lease_moves.is_empty());
        // A put without a lease detaches the key.
        let mut fx = Effects::new(4, 0);
        let r = s.inner.apply_op(&Op::Put(put_prev(b"a", b"plain")), &mut fx);
        assert!(matches!(r, Response::Put(PutResult { prev_kv: Some(ref kv), .. }) if kv.lease == 77));
        assert_eq!(fx.lease_moves, vec![(b"a".to_vec(), 77, 0)]);
        assert_eq!(s.lease_of(b"a"), Some(0));
        // Deleting a leased key detaches it.
        s.inner.apply_op(
            &Op::Put(PutOp {
                lease: 5,
                ..put(b"b", b"")
            }),
            &mut Effects::new(5, 0),
        );
        let mut fx = Effects::new(6, 0);
        s.inner.apply_op(&Op::Delete(delete(b"", true, false)), &mut fx);
        assert_eq!(fx.lease_moves, vec![(b"b".to_vec(), 5, 0)]);
        assert_eq!(fx.events.len(), 2);
    }

    #[test]
    fn events_describe_each_change() {
        let mut s = store(&[b"a"]);
        let mut fx = Effects::new(2, 0);
        s.inner.apply_op(
            &Op::Txn(TxnOp {
                success: vec![
                    TxnAction::Put(put(b"b", b"1")),
                    TxnAction::Range(get(b"b")),
                    TxnAction::Delete(delete(b"a", false, false)),
                    TxnAction::Delete(delete(b"zz", false, false)),
                ],
                ..TxnOp::default()
            }),
            &mut fx,
        );
        assert_eq!(
            fx.events,
            vec![
                Event::Put(kv(b"b", b"1", 2, 2, 1)),
                Event::Delete(kv(b"a", b"v", 1, 1, 1)),
            ]
        );
    }

    #[test]
    fn put_empty_value() {
        let mut s = Kv::default();
        do_put(&mut s, put(b"a", b""));
        let r = s.range(&get(b"a"));
        assert_eq!(r.count, 1);
        assert_eq!(r.kvs, vec![kv(b"a", b"", 1, 1, 1)]);
    }

    #[test]
    fn delete_single_key() {
        let mut s = store(&[b"a", b"b"]);
        let r = do_delete(&mut s, delete(b"a", false, true));
        assert_eq!(r.revision, 3);
        assert_eq!(r.deleted, 1);
        assert_eq!(r.prev_kvs, vec![kv(b"a", b"v", 1, 1, 1)]);
        assert_eq!(s.range(&get(b"a")).count, 0);
        assert_eq!(s.len(), 1);

        // Without prev_kv: count only.
        let r = do_delete(&mut s, delete(b"b", false, false));
        assert_eq!((r.revision, r.deleted, r.prev_kvs.len()), (4, 1, 0));
        check(&s);
    }

    #[test]
    fn delete_of_nothing_keeps_revision() {
        let mut s = store(&[b"a", b"abc"]);
        let r = do_delete(&mut s, delete(b"ab", false, true));
        assert_eq!(
            r,
            DeleteResult {
                revision: 2,
                deleted: 0,
                prev_kvs: vec![]
            }
        );
        let r = do_delete(&mut s, delete(b"b", true, true));
        assert_eq!(
            r,
            DeleteResult {
                revision: 2,
                deleted: 0,
                prev_kvs: vec![]
            }
        );
        assert_eq!(s.revision(), 2);
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn recreate_after_delete_starts_over() {
        let mut s = store(&[b"a"]);
        do_put(&mut s, put(b"a", b"w")); // version 2
        do_delete(&mut s, delete(b"a", false, false)); // rev 3
        do_put(&mut s, put(b"a", b"z")); // rev 4
        assert_eq!(s.range(&get(b"a")).kvs, vec![kv(b"a", b"z", 4, 4, 1)]);
    }

    #[test]
    fn delete_prefix_is_one_revision() {
        let mut s = store(&[b"a", b"ab", b"abc", b"abd", b"b"]);
        let r = do_delete(&mut s, delete(b"ab", true, true));
        assert_eq!(r.revision, 6);
        assert_eq!(r.deleted, 3);
        assert_eq!(
            r.prev_kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
            vec![b"ab".to_vec(), b"abc".to_vec(), b"abd".to_vec()]
        );
        assert_eq!(keys_of(&s.range(&prefix(b""))), vec![b"a".to_vec(), b"b".to_vec()]);
        check(&s);
    }

    #[test]
    fn delete_empty_prefix_removes_everything() {
        let mut s = store(&[b"a", b"b", &[0xff, 0xff]]);
        let r = do_delete(&mut s, delete(b"", true, false));
        assert_eq!((r.revision, r.deleted), (4, 3));
        assert_eq!(s.len(), 0);
        // The revision survives an empty store.
        assert_eq!(s.range(&prefix(b"")).revision, 4);
    }

    #[test]
    fn range_exact_and_prefix_by_bytes() {
        let s = store(&[b"a", b"ab", b"abc", b"ac", b"b", &[0xff], &[0xff, 0x00], &[0xff, 0xff]]);
        assert_eq!(keys_of(&s.range(&get(b"ab"))), vec![b"ab".to_vec()]);
        assert_eq!(s.range(&get(b"zz")).count, 0);
        assert_eq!(keys_of(&s.range(&prefix(b"ab"))), vec![b"ab".to_vec(), b"abc".to_vec()]);
        assert_eq!(
            keys_of(&s.range(&prefix(&[0xff]))),
            vec![vec![0xff], vec![0xff, 0x00], vec![0xff, 0xff]]
        );
        assert_eq!(keys_of(&s.range(&prefix(&[0xff, 0xff]))), vec![vec![0xff, 0xff]]);
        // Key order is bytewise.
        let all = s.range(&prefix(b""));
        assert_eq!(all.count, 8);
        let keys = keys_of(&all);
        let mut sorted = keys.clone();
        sorted.sort();
        assert_eq!(keys, sorted);
        assert_eq!(all.revision, 8);
        // A non-prefix range with the empty key matches nothing (API
        // validation rejects it; the store just answers).
        assert_eq!(s.range(&get(b"")).count, 0);
    }

    #[test]
    fn range_limit_and_more() {
        let s = store(&[b"k1", b"k2", b"k3", b"k4", b"x"]);
        let r = s.range(&RangeOp {
            limit: 2,
            ..prefix(b"k")
        });
        assert_eq!(keys_of(&r), vec![b"k1".to_vec(), b"k2".to_vec()]);
        assert!(r.more);
        assert_eq!(r.count, 4);

        let r = s.range(&RangeOp {
            limit: 4,
            ..prefix(b"k")
        });
        assert_eq!((r.kvs.len(), r.more, r.count), (4, false, 4));

        let r = s.range(&RangeOp {
            limit: 0,
            ..prefix(b"k")
        });
        assert_eq!((r.kvs.len(), r.more, r.count), (4, false, 4));
    }

    #[test]
    fn range_is_capped_at_max_results() {
        let mut s = Kv::default();
        let n = limits::MAX_RANGE_RESULTS + 3;
        for i in 0..n {
            do_put(&mut s, put(format!("k{i:06}").as_bytes(), b""));
        }
        for limit in [0, u32::MAX] {
            let r = s.range(&RangeOp { limit, ..prefix(b"") });
            assert_eq!(r.kvs.len(), limits::MAX_RANGE_RESULTS, "limit {limit}");
            assert!(r.more);
            assert_eq!(r.count, n as u64);
        }
    }

    #[test]
    fn range_byte_budget() {
        let mut s = Kv::default();
        for k in [b"a", b"b", b"c", b"d"] {
            do_put(&mut s, put(k, b"0123456789")); // 11 bytes per pair
        }
        // 30 bytes: two pairs (22) fit, a third (33) would not.
        let r = s.range_within(&prefix(b""), 30);
        assert_eq!(keys_of(&r), vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(r.more);
        assert_eq!(r.count, 4);
        // Exactly at the budget is fine.
        let r = s.range_within(&prefix(b""), 33);
        assert_eq!(r.kvs.len(), 3);
        // A budget smaller than one pair still returns one.
        let r = s.range_within(&prefix(b""), 1);
        assert_eq!((r.kvs.len(), r.more, r.count), (1, true, 4));
        // keys_only counts key bytes only: all four keys fit in 4 bytes.
        let r = s.range_within(
            &RangeOp {
                keys_only: true,
                ..prefix(b"")
            },
            4,
        );
        assert_eq!((r.kvs.len(), r.more), (4, false));
    }

    #[test]
    fn range_real_byte_limit() {
        let mut s = Kv::default();
        let value = vec![7u8; limits::MAX_VALUE_BYTES];
        for k in 0..9u8 {
            do_put(&mut s, put(&[b'a' + k], &value));
        }
        let per_pair = 1 + limits::MAX_VALUE_BYTES;
        let fits = limits::MAX_RANGE_BYTES / per_pair;
        let r = s.range(&prefix(b""));
        assert_eq!(r.kvs.len(), fits);
        assert!(r.more);
        assert_eq!(r.count, 9);
    }

    #[test]
    fn keys_only_and_count_only() {
        let mut s = store(&[b"a", b"b"]);
        do_put(&mut s, put(b"a", b"second"));
        let r = s.range(&RangeOp {
            keys_only: true,
            ..prefix(b"")
        });
        assert_eq!(r.kvs, vec![kv(b"a", b"", 1, 3, 2), kv(b"b", b"", 2, 2, 1)]);
        assert_eq!((r.count, r.more), (2, false));

        let r = s.range(&RangeOp {
            count_only: true,
            ..prefix(b"")
        });
        assert_eq!(
            r,
            RangeResult {
                revision: 3,
                kvs: vec![],
                more: false,
                count: 2
            }
        );

        // count_only wins over keys_only and ignores the limit.
        let r = s.range(&RangeOp {
            count_only: true,
            keys_only: true,
            limit: 1,
            ..prefix(b"")
        });
        assert_eq!((r.kvs.len(), r.count, r.more), (0, 2, false));
    }

    #[test]
    fn compare_each_target_and_result() {
        use CompareResult::*;
        let mut s = Kv::default();
        do_put(&mut s, put(b"other", b"x")); // rev 1
        do_put(&mut s, put(b"k", b"abc")); // rev 2: create 2
        do_put(&mut s, put(b"k", b"abd")); // rev 3: mod 3, version 2
        let cases: Vec<(CompareTarget, [bool; 4])> = vec![
            // [Equal, NotEqual, Greater, Less], stored value on the left.
            (CompareTarget::Version(2), [true, false, false, false]),
            (CompareTarget::Version(1), [false, true, true, false]),
            (CompareTarget::Version(3), [false, true, false, true]),
            (CompareTarget::CreateRevision(2), [true, false, false, false]),
            (CompareTarget::CreateRevision(1), [false, true, true, false]),
            (CompareTarget::CreateRevision(9), [false, true, false, true]),
            (CompareTarget::ModRevision(3), [true, false, false, false]),
            (CompareTarget::ModRevision(2), [false, true, true, false]),
            (CompareTarget::ModRevision(4), [false, true, false, true]),
            (CompareTarget::Value(b"abd".to_vec()), [true, false, false, false]),
            (CompareTarget::Value(b"abc".to_vec()), [false, true, true, false]),
            (CompareTarget::Value(b"abe".to_vec()), [false, true, false, true]),
            // Bytewise lexicographic: a proper prefix is smaller.
            (CompareTarget::Value(b"ab".to_vec()), [false, true, true, false]),
            (CompareTarget::Value(b"abdd".to_vec()), [false, true, false, true]),
            (CompareTarget::Value(vec![]), [false, true, true, false]),
            (CompareTarget::Value(vec![0xff]), [false, true, false, true]),
        ];
        for (target, expected) in cases {
            for (result, want) in [Equal, NotEqual, Greater, Less].into_iter().zip(expected) {
                let c = cmp(b"k", target.clone(), result);
                assert_eq!(s.holds(&c), want, "{c:?}");
                // Through a transaction too.
                let before = s.revision();
                let r = do_txn(&mut s, vec![c], vec![], vec![]);
                assert_eq!(r.succeeded, want);
                assert_eq!(r.revision, before);
            }
        }
    }

    #[test]
    fn compare_missing_key() {
        use CompareResult::*;
        let s = store(&[b"a"]);
        let cases: Vec<(CompareTarget, [bool; 4])> = vec![
            (CompareTarget::Version(0), [true, false, false, false]),
            (CompareTarget::Version(1), [false, true, false, true]),
            (CompareTarget::CreateRevision(0), [true, false, false, false]),
            (CompareTarget::ModRevision(0), [true, false, false, false]),
            (CompareTarget::ModRevision(5), [false, true, false, true]),
            // Nothing orders against a missing value; only NotEqual holds.
            (CompareTarget::Value(vec![]), [false, true, false, false]),
            (CompareTarget::Value(b"v".to_vec()), [false, true, false, false]),
        ];
        for (target, expected) in cases {
            for (result, want) in [Equal, NotEqual, Greater, Less].into_iter().zip(expected) {
                let c = cmp(b"missing", target.clone(), result);
                assert_eq!(s.holds(&c), want, "{c:?}");
            }
        }
        // An existing key with an empty value does equal the empty value.
        let mut s = Kv::default();
        do_put(&mut s, put(b"e", b""));
        assert!(s.holds(&cmp(b"e", CompareTarget::Value(vec![]), Equal)));
    }

    #[test]
    fn txn_branches() {
        let mut s = store(&[b"a"]);
        let yes = cmp(b"a", CompareTarget::Version(1), CompareResult::Equal);
        let no = cmp(b"a", CompareTarget::Version(9), CompareResult::Equal);
        let on_success = vec![TxnAction::Put(put(b"s", b"1"))];
        let on_failure = vec![TxnAction::Put(put(b"f", b"1"))];

        // All compares must hold.
        let r = do_txn(
            &mut s,
            vec![yes.clone(), no.clone()],
            on_success.clone(),
            on_failure.clone(),
        );
        assert!(!r.succeeded);
        assert_eq!((s.range(&get(b"s")).count, s.range(&get(b"f")).count), (0, 1));

        let r = do_txn(&mut s, vec![yes.clone(), yes], on_success.clone(), on_failure.clone());
        assert!(r.succeeded);
        assert_eq!(s.range(&get(b"s")).count, 1);

        // No compares: success.
        let r = do_txn(&mut s, vec![], vec![], on_failure);
        assert!(r.succeeded);
        assert!(r.responses.is_empty());
        check(&s);
    }

    #[test]
    fn txn_is_one_revision() {
        let mut s = store(&[b"a", b"b", b"gone1", b"gone2"]); // rev 4
        let r = do_txn(
            &mut s,
            vec![],
            vec![
                TxnAction::Range(get(b"a")),
                TxnAction::Put(put(b"a", b"1")),
                TxnAction::Put(put_prev(b"a", b"2")),
                TxnAction::Put(put(b"c", b"new")),
                TxnAction::Delete(delete(b"gone", true, false)),
                TxnAction::Delete(delete(b"never", false, false)),
                TxnAction::Range(prefix(b"")),
            ],
            vec![],
        );
        assert_eq!(r.revision, 5);
        assert_eq!(s.revision(), 5);
        // Every result reports the transaction's revision, including the
        // range that ran before the first put and the no-op delete.
        for resp in &r.responses {
            let rev = match resp {
                TxnActionResult::Range(x) => x.revision,
                TxnActionResult::Put(x) => x.revision,
                TxnActionResult::Delete(x) => x.revision,
            };
            assert_eq!(rev, 5, "{resp:?}");
        }
        // Two puts to one key in one txn: version +2, one mod revision.
        assert_eq!(s.range(&get(b"a")).kvs, vec![kv(b"a", b"2", 1, 5, 3)]);
        assert_eq!(s.range(&get(b"c")).kvs, vec![kv(b"c", b"new", 5, 5, 1)]);
        match &r.responses[2] {
            TxnActionResult::Put(p) => assert_eq!(p.prev_kv, Some(kv(b"a", b"1", 1, 5, 2))),
            other => panic!("{other:?}"),
        }
        match &r.responses[4] {
            TxnActionResult::Delete(d) => assert_eq!(d.deleted, 2),
            other => panic!("{other:?}"),
        }
        match &r.responses[6] {
            TxnActionResult::Range(x) => {
                assert_eq!(keys_of(x), vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()])
            }
            other => panic!("{other:?}"),
        }
        check(&s);
    }

    #[test]
    fn txn_ops_see_earlier_ops() {
        let mut s = store(&[b"x"]); // rev 1
        let r = do_txn(
            &mut s,
            vec![],
            vec![
                TxnAction::Put(put(b"a", b"1")),
                TxnAction::Range(get(b"a")),
                TxnAction::Delete(delete(b"a", false, true)),
                TxnAction::Range(get(b"a")),
                TxnAction::Put(put(b"a", b"2")),
                TxnAction::Range(get(b"a")),
                TxnAction::Delete(delete(b"x", false, false)),
                TxnAction::Range(get(b"x")),
            ],
            vec![],
        );
        let ranges: Vec<&RangeResult> = r
            .responses
            .iter()
            .filter_map(|x| match x {
                TxnActionResult::Range(r) => Some(r),
                _ => None,
            })
            .collect();
        assert_eq!(ranges[0].kvs, vec![kv(b"a", b"1", 2, 2, 1)]);
        assert_eq!(ranges[1].count, 0);
        assert_eq!(ranges[2].kvs, vec![kv(b"a", b"2", 2, 2, 1)]);
        assert_eq!(ranges[3].count, 0);
        match &r.responses[2] {
            TxnActionResult::Delete(d) => assert_eq!(d.prev_kvs, vec![kv(b"a", b"1", 2, 2, 1)]),
            other => panic!("{other:?}"),
        }
        assert_eq!(s.revision(), 2);
        check(&s);
    }

    #[test]
    fn compares_see_the_state_before_the_txn() {
        let mut s = Kv::default();
        // "a" is missing before the txn; the success branch creates it. A
        // compare evaluated after the put would fail, so success proves the
        // compares ran first.
        let r = do_txn(
            &mut s,
            vec![cmp(b"a", CompareTarget::Version(0), CompareResult::Equal)],
            vec![TxnAction::Put(put(b"a", b"1"))],
            vec![],
        );
        assert!(r.succeeded);
        assert_eq!(s.range(&get(b"a")).count, 1);
    }

    #[test]
    fn read_only_txn_keeps_revision() {
        let mut s = store(&[b"a"]);
        let r = do_txn(
            &mut s,
            vec![],
            vec![
                TxnAction::Range(get(b"a")),
                TxnAction::Delete(delete(b"missing", false, false)),
                TxnAction::Delete(delete(b"zzz", true, false)),
            ],
            vec![],
        );
        assert_eq!((r.revision, s.revision()), (1, 1));
        for resp in &r.responses {
            match resp {
                TxnActionResult::Range(x) => assert_eq!(x.revision, 1),
                TxnActionResult::Delete(x) => assert_eq!((x.revision, x.deleted), (1, 0)),
                TxnActionResult::Put(_) => unreachable!(),
            }
        }
    }

    #[test]
    fn invariants_catch_bad_stores() {
        let good = store(&[b"a"]);
        check(&good);
        let mut bad = good.clone();
        bad.revision = 0;
        assert!(bad.check_invariants().is_err());
        let mut bad = good.clone();
        if let Some(e) = bad.keys.get_mut(b"a".as_slice()) {
            e.version = 0;
        }
        assert!(bad.check_invariants().is_err());
        let mut bad = good.clone();
        if let Some(e) = bad.keys.get_mut(b"a".as_slice()) {
            e.create_revision = 2;
            e.mod_revision = 1;
        }
        assert!(bad.check_invariants().is_err());
        let mut bad = good;
        let entry = bad.keys[b"a".as_slice()].clone();
        bad.keys.insert(Vec::new(), entry);
        assert!(bad.check_invariants().is_err());
    }
}
