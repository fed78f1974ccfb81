//! Helpers to build compare-and-set transactions.
//!
//! ```
//! use roster_client::prelude::*;
//!
//! // Create `lock` only if it does not exist; otherwise read it.
//! let txn: TxnRequest = TxnBuilder::new()
//!     .when(Compare::absent("lock"))
//!     .then(RequestOp::put("lock", "me"))
//!     .otherwise(RequestOp::get("lock"))
//!     .build();
//! assert_eq!(txn.compare.len(), 1);
//!
//! // Update `config` only if nobody changed it since revision 42.
//! let cas = TxnBuilder::new()
//!     .when(Compare::mod_revision("config", CompareResult::Equal, 42))
//!     .then(RequestOp::put("config", "v2"));
//! # let _ = cas;
//! ```

use crate::proto::compare::{Target, TargetUnion};
use crate::proto::request_op::Request;
use crate::proto::{Compare, DeleteRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};

pub use crate::proto::compare::Result as CompareResult;
pub use crate::proto::compare::Target as CompareTarget;

/// Constructors for [`Compare`] (the generated type cannot carry inherent
/// helpers). Bring into scope with `use roster_client::prelude::*`.
///
/// A key that does not exist has version 0, create and mod revision 0, and
/// never equals any value.
pub trait CompareExt: Sized {
    /// `version(key) <result> version` (writes since creation; 0 if absent).
    fn version(key: impl Into<Vec<u8>>, result: CompareResult, version: u64) -> Self;
    /// `create_revision(key) <result> revision` (0 if absent).
    fn create_revision(key: impl Into<Vec<u8>>, result: CompareResult, revision: u64) -> Self;
    /// `mod_revision(key) <result> revision` (0 if absent).
    fn mod_revision(key: impl Into<Vec<u8>>, result: CompareResult, revision: u64) -> Self;
    /// `value(key) <result> value`, compared bytewise.
    fn value(key: impl Into<Vec<u8>>, result: CompareResult, value: impl Into<Vec<u8>>) -> Self;
    /// Holds when `key` does not exist (`create_revision(key) = 0`).
    fn absent(key: impl Into<Vec<u8>>) -> Self {
        Self::create_revision(key, CompareResult::Equal, 0)
    }
    /// Holds when `key` exists (`create_revision(key) > 0`).
    fn present(key: impl Into<Vec<u8>>) -> Self {
        Self::create_revision(key, CompareResult::Greater, 0)
    }
}

fn compare(key: Vec<u8>, target: Target, result: CompareResult, operand: TargetUnion) -> Compare {
    Compare {
        key,
        target: target as i32,
        result: result as i32,
        target_union: Some(operand),
    }
}

impl CompareExt for Compare {
    fn version(key: impl Into<Vec<u8>>, result: CompareResult, version: u64) -> Self {
        compare(key.into(), Target::Version, result, TargetUnion::Version(version))
    }

    fn create_revision(key: impl Into<Vec<u8>>, result: CompareResult, revision: u64) -> Self {
        compare(
            key.into(),
            Target::CreateRevision,
            result,
            TargetUnion::CreateRevision(revision),
        )
    }

    fn mod_revision(key: impl Into<Vec<u8>>, result: CompareResult, revision: u64) -> Self {
        compare(
            key.into(),
            Target::ModRevision,
            result,
            TargetUnion::ModRevision(revision),
        )
    }

    fn value(key: impl Into<Vec<u8>>, result: CompareResult, value: impl Into<Vec<u8>>) -> Self {
        compare(key.into(), Target::Value, result, TargetUnion::Value(value.into()))
    }
}

/// Constructors for the operations of a transaction branch.
pub trait RequestOpExt: Sized {
    /// Put `key` = `value`.
    fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self;
    /// Read `key`.
    fn get(key: impl Into<Vec<u8>>) -> Self;
    /// Delete `key`.
    fn delete(key: impl Into<Vec<u8>>) -> Self;
    /// Any range read (prefix, limit, keys only, ...).
    fn range(request: RangeRequest) -> Self;
    /// Any put (e.g. with `prev_kv`).
    fn put_request(request: PutRequest) -> Self;
    /// Any delete (e.g. by prefix).
    fn delete_request(request: DeleteRequest) -> Self;
}

impl RequestOpExt for RequestOp {
    fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        Self::put_request(PutRequest {
            key: key.into(),
            value: value.into(),
            ..Default::default()
        })
    }

    fn get(key: impl Into<Vec<u8>>) -> Self {
        Self::range(RangeRequest {
            key: key.into(),
            ..Default::default()
        })
    }

    fn delete(key: impl Into<Vec<u8>>) -> Self {
        Self::delete_request(DeleteRequest {
            key: key.into(),
            ..Default::default()
        })
    }

    fn range(request: RangeRequest) -> Self {
        RequestOp {
            request: Some(Request::Range(request)),
        }
    }

    fn put_request(request: PutRequest) -> Self {
        RequestOp {
            request: Some(Request::Put(request)),
        }
    }

    fn delete_request(request: DeleteRequest) -> Self {
        RequestOp {
            request: Some(Request::Delete(request)),
        }
    }
}

/// Assembles a [`TxnRequest`]: if every `when` compare holds, the `then`
/// operations run, else the `otherwise` operations, atomically at one
/// revision. Pass it (or the built request) to
/// [`Client::txn`](crate::Client::txn).
#[derive(Debug, Clone, Default, PartialEq)]
#[must_use]
pub struct TxnBuilder {
    request: TxnRequest,
}

impl TxnBuilder {
    /// An empty transaction (no compares: the `then` branch runs).
    pub fn new() -> Self {
        Self::default()
    }

    /// Fences the transaction: it runs only while `fence.token` is a
    /// current grant of the role (see [`Fenced`](crate::Fenced)).
    pub fn fence(mut self, fence: crate::proto::Fence) -> Self {
        self.request.fence = Some(fence);
        self
    }

    /// Adds a condition; all conditions must hold.
    pub fn when(mut self, compare: Compare) -> Self {
        self.request.compare.push(compare);
        self
    }

    /// Adds an operation to run when every condition holds.
    pub fn then(mut self, op: RequestOp) -> Self {
        self.request.success.push(op);
        self
    }

    /// Adds an operation to run when some condition fails.
    pub fn otherwise(mut self, op: RequestOp) -> Self {
        self.request.failure.push(op);
        self
    }

    /// The request (without a request id: the client assigns one).
    pub fn build(self) -> TxnRequest {
        self.request
    }
}

impl From<TxnBuilder> for TxnRequest {
    fn from(builder: TxnBuilder) -> Self {
        builder.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compares_carry_matching_target_and_operand() {
        let c = Compare::mod_revision("k", CompareResult::Less, 9);
        assert_eq!(c.key, b"k");
        assert_eq!(c.target(), Target::ModRevision);
        assert_eq!(c.result(), CompareResult::Less);
        assert_eq!(c.target_union, Some(TargetUnion::ModRevision(9)));

        let c = Compare::value(b"k".to_vec(), CompareResult::NotEqual, &b"\xff"[..]);
        assert_eq!(c.target(), Target::Value);
        assert_eq!(c.target_union, Some(TargetUnion::Value(vec![0xff])));

        let c = Compare::absent("k");
        assert_eq!(c.target(), Target::CreateRevision);
        assert_eq!(c.result(), CompareResult::Equal);
        assert_eq!(c.target_union, Some(TargetUnion::CreateRevision(0)));

        let c = Compare::present("k");
        assert_eq!(c.result(), CompareResult::Greater);

        let c = Compare::version("k", CompareResult::Greater, 0);
        assert_eq!(c.target_union, Some(TargetUnion::Version(0)));
    }

    #[test]
    fn builder_fills_branches() {
        let t = TxnBuilder::new()
            .when(Compare::absent("a"))
            .when(Compare::version("b", CompareResult::Equal, 2))
            .then(RequestOp::put("a", "1"))
            .then(RequestOp::delete("b"))
            .otherwise(RequestOp::get("a"))
            .build();
        assert_eq!(t.compare.len(), 2);
        assert_eq!(t.success.len(), 2);
        assert_eq!(t.failure.len(), 1);
        assert!(t.request_id.is_none());
        assert!(matches!(
            &t.success[1].request,
            Some(Request::Delete(DeleteRequest { key, .. })) if key == b"b"
        ));
    }
}
