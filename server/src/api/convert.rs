//! Conversions between `roster.v1` messages and state-machine types, with
//! request validation. Everything a client sends passes through here before
//! it can reach the log.

use roster_proto::v1 as pb;
use tonic::Status;

use crate::state::command::{
    Compare, CompareResult, CompareTarget, DeleteOp, DeleteResult, Fence, KeyValue, Op, PutOp, PutResult, RangeOp,
    RangeResult, Rejection, RequestId, TxnAction, TxnActionResult, TxnOp, TxnResult,
};
use crate::state::command::{Failover, GroupMember, NodeRegisterOp, RoleSpec};
use crate::state::validate_op;
use crate::state::{Event, GroupView, HolderInfo, NodeInfo, ReleaseReason, RoleView, WaiterInfo};

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

// ---- coordination: elections, topology, watch events ----

pub fn grant(h: &HolderInfo) -> pb::Grant {
    pb::Grant {
        candidate: h.candidate.clone(),
        lease: h.lease,
        token: h.token,
        granted_revision: h.granted_revision,
    }
}

pub fn waiting(w: &WaiterInfo) -> pb::Waiting {
    pb::Waiting {
        candidate: w.candidate.clone(),
        lease: w.lease,
        priority: w.priority,
        progress: w.progress,
        position: w.position,
    }
}

pub fn role_spec_from(s: pb::RoleSpec) -> Result<RoleSpec, Status> {
    use pb::role_spec::Failover as F;
    let failover = match F::try_from(s.failover) {
        Ok(F::Automatic) => Failover::Automatic,
        Ok(F::Manual) => Failover::Manual,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown failover mode {}",
                s.failover
            )))
        }
    };
    Ok(RoleSpec {
        name: s.name,
        capacity: s.capacity,
        failover,
        handover_delay_ms: s.handover_delay_ms,
        max_lag: s.max_lag,
    })
}

pub fn role_spec(s: &RoleSpec) -> pb::RoleSpec {
    use pb::role_spec::Failover as F;
    pb::RoleSpec {
        name: s.name.clone(),
        capacity: s.capacity,
        failover: match s.failover {
            Failover::Automatic => F::Automatic as i32,
            Failover::Manual => F::Manual as i32,
        },
        handover_delay_ms: s.handover_delay_ms,
        max_lag: s.max_lag,
    }
}

pub fn group_member_from(m: pb::GroupMember) -> GroupMember {
    GroupMember {
        node: m.node,
        priorities: m.priorities.into_iter().collect(),
    }
}

pub fn group_member(m: &GroupMember) -> pb::GroupMember {
    pb::GroupMember {
        node: m.node.clone(),
        priorities: m.priorities.iter().map(|(k, v)| (k.clone(), *v)).collect(),
    }
}

pub fn node_register_op(n: pb::ManagedNode, fence: Option<pb::Fence>) -> NodeRegisterOp {
    NodeRegisterOp {
        id: n.id,
        address: n.address,
        zone: n.zone,
        labels: n.labels.into_iter().collect(),
        lease: n.lease,
        fence: fence.map(self::fence),
    }
}

pub fn managed_node(n: &NodeInfo) -> pb::ManagedNode {
    pb::ManagedNode {
        id: n.id.clone(),
        address: n.address.clone(),
        zone: n.zone.clone(),
        labels: n.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        lease: n.lease,
        alive: n.alive,
    }
}

pub fn role_state(r: &RoleView) -> pb::RoleState {
    pb::RoleState {
        name: r.spec.name.clone(),
        holders: r.holders.iter().map(grant).collect(),
        waiting: r.waiting.iter().map(waiting).collect(),
        blocked_until_ms: r.vacancies.iter().copied().find(|v| *v > 0).unwrap_or(0),
        vacancies: r.vacancies.clone(),
    }
}

pub fn group(g: &GroupView) -> pb::Group {
    pb::Group {
        name: g.name.clone(),
        roles: g.roles.iter().map(|r| role_spec(&r.spec)).collect(),
        members: g.members.iter().map(group_member).collect(),
        state: g.roles.iter().map(role_state).collect(),
    }
}

pub fn release_reason(r: ReleaseReason) -> &'static str {
    match r {
        ReleaseReason::Resigned => "resigned",
        ReleaseReason::LeaseEnded => "lease_ended",
        ReleaseReason::Switchover => "switchover",
        ReleaseReason::GroupChanged => "group_changed",
    }
}

/// A watch event on the wire.
pub fn event(revision: u64, e: &Event) -> pb::Event {
    use pb::event::Event as E;
    let change = |group: &str, role: &str, candidate: &str| pb::RoleChange {
        group: group.to_owned(),
        role: role.to_owned(),
        candidate: candidate.to_owned(),
        ..pb::RoleChange::default()
    };
    let event = match e {
        Event::Put(x) => E::Put(kv(x.clone())),
        Event::Delete(x) => E::Delete(kv(x.clone())),
        Event::LeaseGranted { id, ttl_ms } => E::LeaseGranted(pb::LeaseChange {
            id: *id,
            ttl_ms: *ttl_ms,
        }),
        Event::LeaseEnded { id, .. } => E::LeaseEnded(*id),
        Event::Campaigned { group, role, candidate } => E::Campaigned(change(group, role, candidate)),
        Event::Withdrawn {
            group,
            role,
            candidate,
            reason,
        } => E::Withdrawn(pb::RoleChange {
            reason: release_reason(*reason).to_owned(),
            ..change(group, role, candidate)
        }),
        Event::Granted {
            group,
            role,
            candidate,
            lease,
            token,
        } => E::Granted(pb::RoleChange {
            token: *token,
            lease: *lease,
            ..change(group, role, candidate)
        }),
        Event::Released {
            group,
            role,
            candidate,
            token,
            reason,
        } => E::Released(pb::RoleChange {
            token: *token,
            reason: release_reason(*reason).to_owned(),
            ..change(group, role, candidate)
        }),
        Event::NodeChanged { id } => E::NodeChanged(id.clone()),
        Event::GroupChanged { name } => E::GroupChanged(name.clone()),
    };
    pb::Event {
        revision,
        event: Some(event),
    }
}
