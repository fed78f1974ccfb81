//! `roster.v1.Topology`: register and deregister managed nodes, create,
//! update and delete groups, and read the whole topology — nodes, groups and
//! every role's holders — as one consistent view at one revision (read
//! under a single lock of the applied state).

use roster_proto::v1 as pb;
use roster_proto::v1::topology_server::Topology;
use tonic::{Request, Response, Status};

use super::common;
use super::{convert, deadline, NodeContext};
use crate::state::command::{GroupCreateOp, GroupDeleteOp, GroupUpdateOp, NodeDeregisterOp, NodeRegisterOp, Op};
use crate::state::Response as Applied;

pub struct TopologyService {
    ctx: NodeContext,
}

impl TopologyService {
    pub fn new(ctx: NodeContext) -> Self {
        Self { ctx }
    }

    fn ack(&self, applied: Applied) -> Result<pb::ResponseHeader, Status> {
        match applied {
            Applied::NodeRegister(a)
            | Applied::NodeDeregister(a)
            | Applied::GroupCreate(a)
            | Applied::GroupUpdate(a)
            | Applied::GroupDelete(a) => Ok(common::header(&self.ctx, a.revision, false)),
            other => Err(common::mismatch(&other)),
        }
    }
}

/// Enforces the request size limit, as the KV service does.
fn check_size(req: &impl prost::Message) -> Result<(), Status> {
    let size = req.encoded_len();
    if size > crate::limits::MAX_REQUEST_BYTES {
        return Err(Status::invalid_argument(format!(
            "request is {size} bytes; the limit is {} bytes",
            crate::limits::MAX_REQUEST_BYTES
        )));
    }
    Ok(())
}

#[tonic::async_trait]
impl Topology for TopologyService {
    async fn register_node(
        &self,
        request: Request<pb::RegisterNodeRequest>,
    ) -> Result<Response<pb::RegisterNodeResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let req = request.into_inner();
        check_size(&req)?;
        let Some(node) = req.node else {
            return Err(Status::invalid_argument("node is missing"));
        };
        let op: NodeRegisterOp = convert::node_register_op(node, req.fence);
        let applied = common::write(&self.ctx, deadline, Op::NodeRegister(op), req.request_id).await?;
        Ok(Response::new(pb::RegisterNodeResponse {
            header: Some(self.ack(applied)?),
        }))
    }

    async fn deregister_node(
        &self,
        request: Request<pb::DeregisterNodeRequest>,
    ) -> Result<Response<pb::DeregisterNodeResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let req = request.into_inner();
        let op = Op::NodeDeregister(NodeDeregisterOp {
            id: req.id,
            fence: req.fence.map(convert::fence),
        });
        let applied = common::write(&self.ctx, deadline, op, req.request_id).await?;
        Ok(Response::new(pb::DeregisterNodeResponse {
            header: Some(self.ack(applied)?),
        }))
    }

    async fn put_group(&self, request: Request<pb::PutGroupRequest>) -> Result<Response<pb::PutGroupResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let req = request.into_inner();
        check_size(&req)?;
        let roles = req
            .roles
            .into_iter()
            .map(convert::role_spec_from)
            .collect::<Result<Vec<_>, _>>()?;
        let members = req.members.into_iter().map(convert::group_member_from).collect();
        let fence = req.fence.map(convert::fence);
        let op = if req.create {
            if req.force {
                return Err(Status::invalid_argument("force applies to an update, not to create"));
            }
            Op::GroupCreate(GroupCreateOp {
                name: req.name,
                roles,
                members,
                fence,
            })
        } else {
            Op::GroupUpdate(GroupUpdateOp {
                name: req.name,
                roles,
                members,
                force: req.force,
                fence,
            })
        };
        let applied = common::write(&self.ctx, deadline, op, req.request_id).await?;
        Ok(Response::new(pb::PutGroupResponse {
            header: Some(self.ack(applied)?),
        }))
    }

    async fn delete_group(
        &self,
        request: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let req = request.into_inner();
        let op = Op::GroupDelete(GroupDeleteOp {
            name: req.name,
            fence: req.fence.map(convert::fence),
        });
        let applied = common::write(&self.ctx, deadline, op, req.request_id).await?;
        Ok(Response::new(pb::DeleteGroupResponse {
            header: Some(self.ack(applied)?),
        }))
    }

    async fn get_topology(
        &self,
        request: Request<pb::GetTopologyRequest>,
    ) -> Result<Response<pb::GetTopologyResponse>, Status> {
        let serializable = request.get_ref().serializable;
        if !serializable {
            let deadline = deadline::of(&request, self.ctx.request_timeout);
            self.ctx.read_barrier(deadline).await?;
        }
        // One lock, one revision: nodes, groups and holders agree.
        let view = self.ctx.state.read().state.topology();
        Ok(Response::new(pb::GetTopologyResponse {
            header: Some(common::header(&self.ctx, view.revision, serializable)),
            nodes: view.nodes.iter().map(convert::managed_node).collect(),
            groups: view.groups.iter().map(convert::group).collect(),
        }))
    }
}
