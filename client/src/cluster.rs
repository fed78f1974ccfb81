//! Cluster administration calls.

use crate::client::Client;
use crate::error::Error;
use crate::proto::cluster_client::ClusterClient;
use crate::proto::{
    MemberAddRequest, MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, StatusRequest, StatusResponse,
};
use crate::retry::{request, Idempotency};

fn cluster(channel: tonic::transport::Channel) -> ClusterClient<tonic::transport::Channel> {
    ClusterClient::new(channel)
}

impl Client {
    /// Status of every member, as assembled by the answering node (which asks
    /// each member directly with a short deadline). Unreachable members are
    /// listed with `reachable = false` and an `error`.
    pub async fn status(&self) -> Result<StatusResponse, Error> {
        self.call("Status", Idempotency::Safe, |channel, budget| async move {
            cluster(channel).status(request(StatusRequest {}, budget)).await
        })
        .await
    }

    /// The current membership, confirmed by the leader.
    pub async fn member_list(&self) -> Result<MemberListResponse, Error> {
        self.member_list_with(MemberListRequest { serializable: false }).await
    }

    /// The membership with every option (`serializable`: answer from the
    /// node's local state, without confirming leadership).
    pub async fn member_list_with(&self, req: MemberListRequest) -> Result<MemberListResponse, Error> {
        self.call("MemberList", Idempotency::Safe, move |channel, budget| async move {
            cluster(channel).member_list(request(req, budget)).await
        })
        .await
    }

    /// Adds node `id` at `addr` as a learner; returns once it has caught up
    /// with the leader's log, which can take longer than the default
    /// deadline on a large store (see [`Client::with_request_timeout`]).
    ///
    /// Membership changes carry no request id. They are retried like every
    /// call, so if an attempt was applied but its answer lost, the retry may
    /// fail (`ALREADY_EXISTS`, `FAILED_PRECONDITION`); the error message then
    /// says that an earlier attempt may have been applied.
    pub async fn member_add(&self, id: u64, addr: impl Into<String>) -> Result<MemberAddResponse, Error> {
        let req = MemberAddRequest { id, addr: addr.into() };
        self.call("MemberAdd", Idempotency::Unsafe, move |channel, budget| {
            let req = req.clone();
            async move { cluster(channel).member_add(request(req, budget)).await }
        })
        .await
    }

    /// Makes learner `id` a voter. See [`Client::member_add`] on retries.
    pub async fn member_promote(&self, id: u64) -> Result<MemberPromoteResponse, Error> {
        self.call(
            "MemberPromote",
            Idempotency::Unsafe,
            move |channel, budget| async move {
                cluster(channel)
                    .member_promote(request(MemberPromoteRequest { id }, budget))
                    .await
            },
        )
        .await
    }

    /// Removes voter or learner `id`; `NOT_FOUND` if it is not a member. See
    /// [`Client::member_add`] on retries.
    pub async fn member_remove(&self, id: u64) -> Result<MemberRemoveResponse, Error> {
        self.call("MemberRemove", Idempotency::Unsafe, move |channel, budget| async move {
            cluster(channel)
                .member_remove(request(MemberRemoveRequest { id }, budget))
                .await
        })
        .await
    }
}
