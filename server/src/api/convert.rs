//! Conversions between `roster.v1` messages and state-machine types, with
//! request validation. Everything a client sends passes through here before
//! it can reach the log.

use roster_proto::v1 as pb;
use tonic::Status;

use crate::state::command::{
    Compare, CompareResult, CompareTarget, DeleteOp, DeleteResult, Fence, KeyValue, Op, PutOp, PutResult, RangeOp,
    RangeResult, Rejection, RequestId, TxnAction, TxnActionResult, TxnOp, TxnResult,
};
use crate::state::validate_op;

pub fn request_id(id: Option<pb::RequestId>) -> Option<RequestId> {
    id.map(|r| RequestId {
        client_id: r.client_id,
        sequence: r.sequence,
    })
}

pub fn put_op(req: pb::PutRequest) -> PutOp {
    PutOp {
        key: req.key,
        value: req.value,
        prev_kv: req.prev_kv,
        lease: req.lease,
        fence: req.fence.map(fence),
    }
}

pub fn fence(f: pb::Fence) -> Fence {
    Fence {
        group: f.group,
        role: f.role,
        token: f.token,
    }
}

/// The gRPC status for a command the state machine refused.
pub fn rejection(r: Rejection) -> Status {
    let message = r.to_string();
    match r {
        Rejection::Invalid(_) => Status::invalid_argument(message),
        Rejection::NotFound(_) => Status::not_found(message),
        Rejection::AlreadyExists(_) => Status::already_exists(message),
        Rejection::LimitExceeded(_) => Status::resource_exhausted(message),
        Rejection::StaleRetry { .. } | Rejection::Fenced(_) | Rejection::FailedPrecondition(_) => {
            Status::failed_precondition(message)
        }
    }
}

pub fn delete_op(req: pb::DeleteRequest) -> DeleteOp {
    DeleteOp {
        key: req.key,
        prefix: req.prefix,
        prev_kv: req.prev_kv,
        fence: req.fence.map(fence),
    }
}

pub fn range_op(req: &pb::RangeRequest) -> RangeOp {
    RangeOp {
        key: req.key.clone(),
        prefix: req.prefix,
        limit: req.limit,
        keys_only: req.keys_only,
        count_only: req.count_only,
    }
}

fn compare(c: pb::Compare) -> Result<Compare, Status> {
    use pb::compare::{Result as R, Target as T, TargetUnion as U};
    let target =
        T::try_from(c.target).map_err(|_| Status::invalid_argument(format!("unknown compare target {}", c.target)))?;
    let result = match R::try_from(c.result) {
        Ok(R::Equal) => CompareResult::Equal,
        Ok(R::NotEqual) => CompareResult::NotEqual,
        Ok(R::Greater) => CompareResult::Greater,
        Ok(R::Less) => CompareResult::Less,
        Err(_) => return Err(Status::invalid_argument(format!("unknown compare result {}", c.result))),
    };
    let target = match (target, c.target_union) {
        (T::Version, Some(U::Version(v))) => CompareTarget::Version(v),
        (T::CreateRevision, Some(U::CreateRevision(v))) => CompareTarget::CreateRevision(v),
        (T::ModRevision, Some(U::ModRevision(v))) => CompareTarget::ModRevision(v),
        (T::Value, Some(U::Value(v))) => CompareTarget::Value(v),
        // proto3 drops a zero scalar inside a oneof only if unset; treat a
        // missing number as 0 and a missing value as empty.
        (T::Version, None) => CompareTarget::Version(0),
        (T::CreateRevision, None) => CompareTarget::CreateRevision(0),
        (T::ModRevision, None) => CompareTarget::ModRevision(0),
        (T::Value, None) => CompareTarget::Value(Vec::new()),
        (t, Some(_)) => {
            return Err(Status::invalid_argument(format!(
                "compare target {} does not match the value given",
                t.as_str_name()
            )))
        }
    };
    Ok(Compare {
        key: c.key,
        target,
        result,
    })
}

fn action(op: pb::RequestOp) -> Result<TxnAction, Status> {
    use pb::request_op::Request as R;
    match op.request {
        Some(R::Range(r)) => Ok(TxnAction::Range(range_op(&r))),
        Some(R::Put(p)) => Ok(TxnAction::Put(put_op(p))),
        Some(R::Delete(d)) => Ok(TxnAction::Delete(delete_op(d))),
        None => Err(Status::invalid_argument("transaction operation is empty")),
    }
}

pub fn txn_op(req: pb::TxnRequest) -> Result<TxnOp, Status> {
    Ok(TxnOp {
        compare: req.compare.into_iter().map(compare).collect::<Result<_, _>>()?,
        success: req.success.into_iter().map(action).collect::<Result<_, _>>()?,
        failure: req.failure.into_iter().map(action).collect::<Result<_, _>>()?,
        fence: req.fence.map(fence),
    })
}

/// Validates an op against the documented limits (`INVALID_ARGUMENT`).
pub fn validate(op: &Op) -> Result<(), Status> {
    validate_op(op).map_err(Status::invalid_argument)
}

/// Validates a read (the same key rules as writes).
pub fn validate_range(op: &RangeOp) -> Result<(), Status> {
    let txn = Op::Txn(TxnOp {
        compare: Vec::new(),
        success: vec![TxnAction::Range(op.clone())],
        failure: Vec::new(),
        fence: None,
    });
    validate(&txn)
}

pub fn kv(kv: KeyValue) -> pb::KeyValue {
    pb::KeyValue {
        key: kv.key,
        value: kv.value,
        create_revision: kv.create_revision,
        mod_revision: kv.mod_revision,
        version: kv.version,
        lease: kv.lease,
    }
}

pub fn put_response(r: PutResult, header: pb::ResponseHeader) -> pb::PutResponse {
    pb::PutResponse {
        header: Some(pb::ResponseHeader {
            revision: r.revision,
            ..header
        }),
        prev_kv: r.prev_kv.map(kv),
    }
}

pub fn delete_response(r: DeleteResult, header: pb::ResponseHeader) -> pb::DeleteResponse {
    pb::DeleteResponse {
        header: Some(pb::ResponseHeader {
            revision: r.revision,
            ..header
        }),
        deleted: r.deleted,
        prev_kvs: r.prev_kvs.into_iter().map(kv).collect(),
    }
}

pub fn range_response(r: RangeResult, header: pb::ResponseHeader) -> pb::RangeResponse {
    pb::RangeResponse {
        header: Some(pb::ResponseHeader {
            revision: r.revision,
            ..header
        }),
        kvs: r.kvs.into_iter().map(kv).collect(),
        more: r.more,
        count: r.count,
    }
}

pub fn txn_response(r: TxnResult, header: pb::ResponseHeader) -> pb::TxnResponse {
    use pb::response_op::Response as R;
    let responses = r
        .responses
        .into_iter()
        .map(|a| pb::ResponseOp {
            response: Some(match a {
                TxnActionResult::Range(x) => R::Range(range_response(x, header)),
                TxnActionResult::Put(x) => R::Put(put_response(x, header)),
                TxnActionResult::Delete(x) => R::Delete(delete_response(x, header)),
            }),
        })
        .collect();
    pb::TxnResponse {
        header: Some(pb::ResponseHeader {
            revision: r.revision,
            ..header
        }),
        succeeded: r.succeeded,
        responses,
    }
}
