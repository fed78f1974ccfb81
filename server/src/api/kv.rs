//! `roster.v1.KV`: put, range, delete and compare-and-set transactions.

use roster_proto::v1 as pb;
use roster_proto::v1::kv_server::Kv;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::convert;
use super::route::{Outcome, Proposal};
use super::{deadline, NodeContext};
use crate::limits;
use crate::state::command::{Command, Op, Response as Applied};

pub struct KvService {
    ctx: NodeContext,
}

impl KvService {
    pub fn new(ctx: NodeContext) -> Self {
        Self { ctx }
    }

    fn header(&self, serializable: bool) -> pb::ResponseHeader {
        pb::ResponseHeader {
            revision: 0,
            raft_term: self.ctx.metrics().current_term,
            member_id: self.ctx.id,
            serializable,
        }
    }

    /// Validates, proposes through the leader, and returns what the state
    /// machine answered.
    async fn write(&self, deadline: Instant, op: Op, request_id: Option<pb::RequestId>) -> Result<Applied, Status> {
        convert::validate(&op)?;
        let command = Command {
            request_id: convert::request_id(request_id),
            stamp_ms: 0,
            op,
        };
        match self.ctx.propose(Proposal::Write(command), deadline).await? {
            Outcome::Write(Applied::Rejected(rejection)) => Err(convert::rejection(rejection)),
            Outcome::Write(applied) => Ok(applied),
            Outcome::Members(_) => Err(Status::internal("unexpected reply to a write")),
        }
    }
}

/// Enforces `limits::MAX_REQUEST_BYTES` on a decoded write request.
fn check_size(req: &impl prost::Message) -> Result<(), Status> {
    let size = req.encoded_len();
    if size > limits::MAX_REQUEST_BYTES {
        return Err(Status::invalid_argument(format!(
            "request is {size} bytes; the limit is {} bytes",
            limits::MAX_REQUEST_BYTES
        )));
    }
    Ok(())
}

fn mismatch() -> Status {
    Status::internal("state machine answered with the wrong kind of result")
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, request: Request<pb::RangeRequest>) -> Result<Response<pb::RangeResponse>, Status> {
        let op = convert::range_op(request.get_ref());
        convert::validate_range(&op)?;
        let serializable = request.get_ref().serializable;
        if !serializable {
            let deadline = deadline::of(&request, self.ctx.request_timeout);
            self.ctx.read_barrier(deadline).await?;
        }
        let result = self.ctx.state.read().state.range(&op);
        Ok(Response::new(convert::range_response(
            result,
            self.header(serializable),
        )))
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let req = request.into_inner();
        check_size(&req)?;
        let request_id = req.request_id;
        let op = Op::Put(convert::put_op(req));
        match self.write(deadline, op, request_id).await? {
            Applied::Put(r) => Ok(Response::new(convert::put_response(r, self.header(false)))),
            _ => Err(mismatch()),
        }
    }

    async fn delete(&self, request: Request<pb::DeleteRequest>) -> Result<Response<pb::DeleteResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let req = request.into_inner();
        check_size(&req)?;
        let request_id = req.request_id;
        let op = Op::Delete(convert::delete_op(req));
        match self.write(deadline, op, request_id).await? {
            Applied::Delete(r) => Ok(Response::new(convert::delete_response(r, self.header(false)))),
            _ => Err(mismatch()),
        }
    }

    async fn txn(&self, request: Request<pb::TxnRequest>) -> Result<Response<pb::TxnResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let req = request.into_inner();
        check_size(&req)?;
        let request_id = req.request_id;
        let op = Op::Txn(convert::txn_op(req)?);
        match self.write(deadline, op, request_id).await? {
            Applied::Txn(r) => Ok(Response::new(convert::txn_response(r, self.header(false)))),
            _ => Err(mismatch()),
        }
    }
}
