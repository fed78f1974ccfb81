//! `roster.v1.KV`: put, range, delete and compare-and-set transactions.

use roster_proto::v1 as pb;
use roster_proto::v1::kv_server::Kv;
use tokio::time::Instant;
use tonic::{Request, Response, Status};

use super::convert;
use super::{common, deadline, NodeContext};
use crate::limits;
use crate::state::command::{Op, Response as Applied};

pub struct KvService {
    ctx: NodeContext,
}

impl KvService {
    pub fn new(ctx: NodeContext) -> Self {
        Self { ctx }
    }

    fn header(&self, serializable: bool) -> pb::ResponseHeader {
        // The revision is filled in from each result.
        common::header(&self.ctx, 0, serializable)
    }

    async fn write(&self, deadline: Instant, op: Op, request_id: Option<pb::RequestId>) -> Result<Applied, Status> {
        common::write(&self.ctx, deadline, op, request_id).await
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
        let body = convert::range_response(result, self.header(serializable));
        // Serializable reads are for spreading load: no hint to move.
        Ok(if serializable {
            Response::new(body)
        } else {
            common::hinted(&self.ctx, body)
        })
    }

    async fn put(&self, request: Request<pb::PutRequest>) -> Result<Response<pb::PutResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let req = request.into_inner();
        check_size(&req)?;
        let request_id = req.request_id;
        let op = Op::Put(convert::put_op(req));
        match self.write(deadline, op, request_id).await? {
            Applied::Put(r) => Ok(common::hinted(&self.ctx, convert::put_response(r, self.header(false)))),
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
            Applied::Delete(r) => Ok(common::hinted(
                &self.ctx,
                convert::delete_response(r, self.header(false)),
            )),
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
            Applied::Txn(r) => Ok(common::hinted(&self.ctx, convert::txn_response(r, self.header(false)))),
            _ => Err(mismatch()),
        }
    }
}
