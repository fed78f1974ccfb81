//! `roster.v1.Lease`: grant, revoke, keepalive, time-to-live, list.
//!
//! Keepalives are served by the leader only: each renewal on the stream goes
//! to the [`LeaseKeeper`], which answers once the renewal is committed
//! (rule 4). A follower fails the stream with `UNAVAILABLE` and the leader's
//! address in `roster-leader`, and the client reconnects there.

use std::pin::Pin;

use futures::Stream;
use roster_proto::v1 as pb;
use roster_proto::v1::lease_server::Lease;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::lease_keeper::LeaseKeeper;
use super::route::RouteError;
use super::{common, deadline, NodeContext};
use crate::state::command::{LeaseGrantOp, LeaseRevokeOp, Op, Response as Applied};

pub struct LeaseService {
    ctx: NodeContext,
    keeper: LeaseKeeper,
}

impl LeaseService {
    pub fn new(ctx: NodeContext, keeper: LeaseKeeper) -> Self {
        Self { ctx, keeper }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn grant(&self, request: Request<pb::LeaseGrantRequest>) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let req = request.into_inner();
        let op = Op::LeaseGrant(LeaseGrantOp {
            id: req.id,
            ttl_ms: req.ttl_ms,
        });
        match common::write(&self.ctx, deadline, op, req.request_id).await? {
            Applied::LeaseGrant(r) => Ok(Response::new(pb::LeaseGrantResponse {
                header: Some(common::header(&self.ctx, r.revision, false)),
                id: r.id,
                ttl_ms: r.ttl_ms,
            })),
            other => Err(common::mismatch(&other)),
        }
    }

    async fn revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let req = request.into_inner();
        match common::write(
            &self.ctx,
            deadline,
            Op::LeaseRevoke(LeaseRevokeOp { id: req.id }),
            req.request_id,
        )
        .await?
        {
            Applied::LeaseRevoke(ack) => Ok(Response::new(pb::LeaseRevokeResponse {
                header: Some(common::header(&self.ctx, ack.revision, false)),
            })),
            other => Err(common::mismatch(&other)),
        }
    }

    type KeepAliveStream = KeepAliveStream;

    async fn keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::KeepAliveStream>, Status> {
        // Refuse at once on a follower so the client moves to the leader.
        let current = self.ctx.current_leader();
        if current != Some(self.ctx.id) {
            let leader = current.and_then(|l| self.ctx.member_addr(l).map(|a| (l, a)));
            return Err(RouteError::NotLeader { leader }.into());
        }
        let state = (request.into_inner(), self.keeper.clone(), self.ctx.clone());
        // The answers are a stream over the requests, polled by the HTTP/2
        // stream's own task: one renewal at a time per stream, answers in
        // request order (how the client matches them to send times), and no
        // task or channel of its own. A client that half-closes after its
        // last renewal gets that answer and the stream's end in one write.
        // The first failure ends the stream with its status.
        let answers = futures::stream::unfold(Some(state), |state| async move {
            let (mut incoming, keeper, ctx) = state?;
            let req = incoming.next().await?.ok()?;
            match keeper.renew(req.id).await {
                Ok(ttl_ms) => {
                    let answer = pb::LeaseKeepAliveResponse {
                        header: Some(common::header(&ctx, ctx.state.read().state.revision(), false)),
                        id: req.id,
                        ttl_ms,
                    };
                    Some((Ok(answer), Some((incoming, keeper, ctx))))
                }
                Err(e) => Some((Err(Status::from(e)), None)),
            }
        });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        self.ctx.read_barrier(deadline).await?;
        let req = request.into_inner();
        let applied = self.ctx.state.read();
        let Some(info) = applied.state.lease(req.id) else {
            return Err(Status::not_found(format!("lease {} does not exist", req.id)));
        };
        let keys = if req.keys {
            applied.state.lease_keys(req.id).unwrap_or_default()
        } else {
            Vec::new()
        };
        let revision = applied.state.revision();
        drop(applied);
        Ok(Response::new(pb::LeaseTimeToLiveResponse {
            header: Some(common::header(&self.ctx, revision, false)),
            id: info.id,
            granted_ttl_ms: info.ttl_ms,
            remaining_ms: info.remaining_ms,
            keys,
        }))
    }

    async fn list(&self, request: Request<pb::LeaseListRequest>) -> Result<Response<pb::LeaseListResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        self.ctx.read_barrier(deadline).await?;
        let applied = self.ctx.state.read();
        let leases = applied
            .state
            .leases()
            .into_iter()
            .map(|l| pb::LeaseStatus {
                id: l.id,
                ttl_ms: l.ttl_ms,
                remaining_ms: l.remaining_ms,
                attached_keys: l.keys,
            })
            .collect();
        let revision = applied.state.revision();
        drop(applied);
        Ok(Response::new(pb::LeaseListResponse {
            header: Some(common::header(&self.ctx, revision, false)),
            leases,
        }))
    }
}
