//! Topology calls: managed nodes and groups, and the one consistent view of
//! both with every role's holders.

use tonic::transport::Channel;

use crate::client::Client;
use crate::error::Error;
use crate::proto::topology_client::TopologyClient;
use crate::proto::{
    DeleteGroupRequest, DeleteGroupResponse, DeregisterNodeRequest, DeregisterNodeResponse, GetTopologyRequest,
    GetTopologyResponse, ManagedNode, PutGroupRequest, PutGroupResponse, RegisterNodeRequest, RegisterNodeResponse,
};
use crate::retry::{request, Idempotency};

fn topology(channel: Channel) -> TopologyClient<Channel> {
    TopologyClient::new(channel).max_decoding_message_size(crate::endpoints::MAX_DECODING_MESSAGE_SIZE)
}

impl Client {
    /// Registers (or replaces) a managed node. With `node.lease` set, the
    /// node is alive while that lease lives. A write: deduplicated across
    /// retries.
    pub async fn register_node(&self, node: ManagedNode) -> Result<RegisterNodeResponse, Error> {
        self.register_node_with(RegisterNodeRequest {
            node: Some(node),
            ..Default::default()
        })
        .await
    }

    /// [`Client::register_node`] with every field (e.g. a fence). The client
    /// assigns the request id.
    pub async fn register_node_with(&self, mut req: RegisterNodeRequest) -> Result<RegisterNodeResponse, Error> {
        req.request_id = Some(self.next_request_id());
        self.call("RegisterNode", Idempotency::Safe, move |channel, budget| {
            let req = req.clone();
            async move { topology(channel).register_node(request(req, budget)).await }
        })
        .await
    }

    /// Removes managed node `id`.
    pub async fn deregister_node(&self, id: &str) -> Result<DeregisterNodeResponse, Error> {
        let req = DeregisterNodeRequest {
            id: id.to_owned(),
            fence: None,
            request_id: Some(self.next_request_id()),
        };
        self.call("DeregisterNode", Idempotency::Safe, move |channel, budget| {
            let req = req.clone();
            async move { topology(channel).deregister_node(request(req, budget)).await }
        })
        .await
    }

    /// Creates (`req.create`: `ALREADY_EXISTS` if it exists) or creates or
    /// replaces a group's role specs and members. Without `req.force`, an
    /// update that drops a held role or lowers a capacity below the holder
    /// count fails `FAILED_PRECONDITION`. The client assigns the request id.
    pub async fn put_group(&self, mut req: PutGroupRequest) -> Result<PutGroupResponse, Error> {
        req.request_id = Some(self.next_request_id());
        self.call("PutGroup", Idempotency::Safe, move |channel, budget| {
            let req = req.clone();
            async move { topology(channel).put_group(request(req, budget)).await }
        })
        .await
    }

    /// Deletes group `name` (its grants and candidacies end).
    pub async fn delete_group(&self, name: &str) -> Result<DeleteGroupResponse, Error> {
        let req = DeleteGroupRequest {
            name: name.to_owned(),
            fence: None,
            request_id: Some(self.next_request_id()),
        };
        self.call("DeleteGroup", Idempotency::Safe, move |channel, budget| {
            let req = req.clone();
            async move { topology(channel).delete_group(request(req, budget)).await }
        })
        .await
    }

    /// Nodes, groups and every role's holders, at one revision
    /// (linearizable).
    pub async fn topology(&self) -> Result<GetTopologyResponse, Error> {
        self.topology_with(false).await
    }

    /// [`Client::topology`], optionally served from the answering node's
    /// local state (`serializable`).
    pub async fn topology_with(&self, serializable: bool) -> Result<GetTopologyResponse, Error> {
        self.call("GetTopology", Idempotency::Safe, move |channel, budget| async move {
            topology(channel)
                .get_topology(request(GetTopologyRequest { serializable }, budget))
                .await
        })
        .await
    }
}
