//! `roster.v1.Election`: campaign, resign, progress, holders, observe,
//! switchover and promote.
//!
//! Writes go through the leader like every other write (`common::write`).
//! The two streams, `Campaign` (after its write) and `Observe`, follow the
//! answering node's applied state: they wake on the state machine's revision
//! watch and read the watch history (`events_page`) from the last revision
//! they looked at, so they see every grant and release in log order, and
//! compare with the current state once caught up. An observer that falls
//! behind the history resynchronises from the state.
//!
//! Closing a campaign stream does not resign: the lease governs. Streams end
//! with `UNAVAILABLE` when the node shuts down.

use std::pin::Pin;

use futures::Stream;
use roster_proto::v1 as pb;
use roster_proto::v1::election_server::Election;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::common::{self, StreamSlot, Streams};
use super::{convert, deadline, NodeContext};
use crate::limits;
use crate::state::command::{
    CampaignOp, CampaignOutcome, Op, PromoteOp, ReportProgressOp, ResignOp, Response as Applied, SwitchoverOp,
};
use crate::state::{validate_name, Event, State};

/// Messages buffered per campaign or observe stream.
const STREAM_BUFFER: usize = 16;

pub struct ElectionService {
    ctx: NodeContext,
    streams: Streams,
}

impl ElectionService {
    pub fn new(ctx: NodeContext, streams: Streams) -> Self {
        Self { ctx, streams }
    }

    /// The grant with `token` as the local state knows it (for the lease);
    /// else one built from what the write answered.
    fn granted(&self, group: &str, role: &str, candidate: &str, token: u64, revision: u64) -> pb::Grant {
        let local = self
            .ctx
            .state
            .read()
            .state
            .holders(group, role)
            .and_then(|view| view.holders.iter().find(|h| h.token == token).map(convert::grant));
        local.unwrap_or(pb::Grant {
            candidate: candidate.to_owned(),
            lease: 0,
            token,
            granted_revision: revision,
        })
    }
}

type CampaignStream = Pin<Box<dyn Stream<Item = Result<pb::CampaignResponse, Status>> + Send>>;
type ObserveStream = Pin<Box<dyn Stream<Item = Result<pb::ObserveResponse, Status>> + Send>>;

fn check_role(group: &str, role: &str) -> Result<(), Status> {
    validate_name("group", group)
        .and_then(|_| validate_name("role", role))
        .map_err(Status::invalid_argument)
}

#[tonic::async_trait]
impl Election for ElectionService {
    type CampaignStream = CampaignStream;

    async fn campaign(&self, request: Request<pb::CampaignRequest>) -> Result<Response<CampaignStream>, Status> {
        let slot = self.streams.limit.acquire()?;
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let req = request.into_inner();
        let op = Op::Campaign(CampaignOp {
            group: req.group.clone(),
            role: req.role.clone(),
            candidate: req.candidate.clone(),
            lease: req.lease,
            priority: req.priority,
            progress: req.progress,
        });
        let result = match common::write(&self.ctx, deadline, op, req.request_id).await? {
            Applied::Campaign(r) => r,
            other => return Err(common::mismatch(&other)),
        };
        let mut follower = CampaignFollower {
            group: req.group,
            role: req.role,
            candidate: req.candidate,
            start: result.revision,
            after: result.revision,
            elected: None,
            position: None,
        };
        let first = match result.outcome {
            CampaignOutcome::Elected { token } | CampaignOutcome::Holding { token } => {
                follower.elected = Some(token);
                pb::campaign_response::Event::Elected(token)
            }
            CampaignOutcome::Queued { position } => {
                follower.position = Some(position);
                pb::campaign_response::Event::Queued(position)
            }
        };
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let first = pb::CampaignResponse {
            header: Some(common::header(&self.ctx, result.revision, false)),
            event: Some(first),
        };
        // The channel is empty: this cannot wait.
        let _ = tx.try_send(Ok(first));
        tokio::spawn(follower.run(self.ctx.clone(), self.streams.clone(), tx, slot));
        Ok(Response::new(Box::pin(common::until_stopped(rx, self.streams.clone()))))
    }

    async fn resign(&self, request: Request<pb::ResignRequest>) -> Result<Response<pb::ResignResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let req = request.into_inner();
        let op = Op::Resign(ResignOp {
            group: req.group,
            role: req.role,
            candidate: req.candidate,
        });
        match common::write(&self.ctx, deadline, op, req.request_id).await? {
            Applied::Resign(r) => Ok(Response::new(pb::ResignResponse {
                header: Some(common::header(&self.ctx, r.revision, false)),
            })),
            other => Err(common::mismatch(&other)),
        }
    }

    async fn progress(&self, request: Request<pb::ProgressRequest>) -> Result<Response<pb::ProgressResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let req = request.into_inner();
        let op = Op::ReportProgress(ReportProgressOp {
            group: req.group,
            role: req.role,
            candidate: req.candidate,
            progress: req.progress,
        });
        match common::write(&self.ctx, deadline, op, None).await? {
            Applied::ReportProgress(ack) => Ok(Response::new(pb::ProgressResponse {
                header: Some(common::header(&self.ctx, ack.revision, false)),
            })),
            other => Err(common::mismatch(&other)),
        }
    }

    async fn holders(&self, request: Request<pb::HoldersRequest>) -> Result<Response<pb::HoldersResponse>, Status> {
        check_role(&request.get_ref().group, &request.get_ref().role)?;
        let serializable = request.get_ref().serializable;
        if !serializable {
            let deadline = deadline::of(&request, self.ctx.request_timeout);
            self.ctx.read_barrier(deadline).await?;
        }
        let req = request.into_inner();
        let (view, revision) = {
            let applied = self.ctx.state.read();
            (applied.state.holders(&req.group, &req.role), applied.state.revision())
        };
        let Some(view) = view else {
            return Err(Status::not_found(format!(
                "role {:?} of group {:?} does not exist",
                req.role, req.group
            )));
        };
        Ok(Response::new(pb::HoldersResponse {
            header: Some(common::header(&self.ctx, revision, serializable)),
            holders: view.holders.iter().map(convert::grant).collect(),
            waiting: view.waiting.iter().map(convert::waiting).collect(),
        }))
    }

    type ObserveStream = ObserveStream;

    async fn observe(&self, request: Request<pb::ObserveRequest>) -> Result<Response<ObserveStream>, Status> {
        let req = request.into_inner();
        check_role(&req.group, &req.role)?;
        let slot = self.streams.limit.acquire()?;
        let (holders, revision) = {
            let applied = self.ctx.state.read();
            let view = applied.state.holders(&req.group, &req.role);
            (view, applied.state.revision())
        };
        let Some(view) = holders else {
            return Err(Status::not_found(format!(
                "role {:?} of group {:?} does not exist",
                req.role, req.group
            )));
        };
        let holders: Vec<pb::Grant> = view.holders.iter().map(convert::grant).collect();
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let _ = tx.try_send(Ok(pb::ObserveResponse {
            header: Some(common::header(&self.ctx, revision, true)),
            holders: holders.clone(),
        }));
        let observer = Observer {
            group: req.group,
            role: req.role,
            after: revision,
            holders: holders.clone(),
            sent: holders,
        };
        tokio::spawn(observer.run(self.ctx.clone(), self.streams.clone(), tx, slot));
        Ok(Response::new(Box::pin(common::until_stopped(rx, self.streams.clone()))))
    }

    async fn switchover(
        &self,
        request: Request<pb::SwitchoverRequest>,
    ) -> Result<Response<pb::SwitchoverResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let req = request.into_inner();
        let from = (!req.from.is_empty()).then_some(req.from);
        if let Some(from) = &from {
            validate_name("from", from).map_err(Status::invalid_argument)?;
        }
        let op = Op::Switchover(SwitchoverOp {
            group: req.group.clone(),
            role: req.role.clone(),
            to: req.to.clone(),
            from,
        });
        match common::write(&self.ctx, deadline, op, req.request_id).await? {
            Applied::Switchover(r) => Ok(Response::new(pb::SwitchoverResponse {
                header: Some(common::header(&self.ctx, r.revision, false)),
                granted: Some(self.granted(&req.group, &req.role, &req.to, r.token, r.revision)),
                from: r.from,
            })),
            other => Err(common::mismatch(&other)),
        }
    }

    async fn promote(&self, request: Request<pb::PromoteRequest>) -> Result<Response<pb::PromoteResponse>, Status> {
        let deadline = deadline::of(&request, self.ctx.request_timeout);
        let req = request.into_inner();
        let op = Op::Promote(PromoteOp {
            group: req.group.clone(),
            role: req.role.clone(),
            candidate: req.candidate.clone(),
        });
        match common::write(&self.ctx, deadline, op, req.request_id).await? {
            Applied::Promote(r) => Ok(Response::new(pb::PromoteResponse {
                header: Some(common::header(&self.ctx, r.revision, false)),
                granted: Some(self.granted(&req.group, &req.role, &req.candidate, r.token, r.revision)),
            })),
            other => Err(common::mismatch(&other)),
        }
    }
}

/// What one look at the applied state gave a following stream.
struct Step<M> {
    messages: Vec<M>,
    /// The stream is over after these messages (`Ok`: cleanly).
    end: Option<Result<(), Status>>,
    /// Events remain in the history beyond what was read: look again at once.
    more: bool,
}

/// Runs `look` whenever the applied revision moves, sending what it gives,
/// until it ends the stream, the client goes away, or the node stops.
async fn follow<M, F>(ctx: NodeContext, streams: Streams, tx: mpsc::Sender<Result<M, Status>>, mut look: F)
where
    M: Send + 'static,
    F: FnMut(&State) -> Step<M> + Send,
{
    let mut revisions = ctx.state.revision_watch();
    loop {
        // Mark the current revision seen before reading the state, so that a
        // change applied while reading wakes the next wait.
        revisions.borrow_and_update();
        let step = {
            let applied = ctx.state.read();
            look(&applied.state)
        };
        for message in step.messages {
            if tx.send(Ok(message)).await.is_err() {
                return;
            }
        }
        if let Some(end) = step.end {
            if let Err(status) = end {
                let _ = tx.send(Err(status)).await;
            }
            return;
        }
        if step.more {
            continue;
        }
        if !common::wait_for_revision(&mut revisions, &streams, &tx).await {
            return;
        }
    }
}

/// Follows one candidate after its campaign was applied.
struct CampaignFollower {
    group: String,
    role: String,
    candidate: String,
    /// Revision of the campaign's entry: the state before it says nothing.
    start: u64,
    /// Events up to here were looked at.
    after: u64,
    /// Token of the grant reported with `elected`.
    elected: Option<u64>,
    /// Queue position last reported.
    position: Option<u32>,
}

impl CampaignFollower {
    async fn run(
        mut self,
        ctx: NodeContext,
        streams: Streams,
        tx: mpsc::Sender<Result<pb::CampaignResponse, Status>>,
        _slot: StreamSlot,
    ) {
        let header_ctx = ctx.clone();
        follow(ctx, streams, tx, move |state| self.look(&header_ctx, state)).await;
    }

    fn mine(&self, group: &str, role: &str, candidate: &str) -> bool {
        group == self.group && role == self.role && candidate == self.candidate
    }

    fn look(&mut self, ctx: &NodeContext, state: &State) -> Step<pb::CampaignResponse> {
        use pb::campaign_response::Event as E;
        let message = |revision: u64, event: E| pb::CampaignResponse {
            header: Some(common::header(ctx, revision, true)),
            event: Some(event),
        };
        let mut messages = Vec::new();
        let ended = |messages: Vec<pb::CampaignResponse>| Step {
            messages,
            end: Some(Ok(())),
            more: false,
        };
        let mut more = false;
        match state.events_page(self.after, limits::WATCH_PAGE_EVENTS) {
            Ok((events, left)) => {
                more = left;
                for (revision, event) in &events {
                    match event {
                        Event::Granted {
                            group,
                            role,
                            candidate,
                            token,
                            ..
                        } if self.mine(group, role, candidate) && self.elected != Some(*token) => {
                            self.elected = Some(*token);
                            self.position = None;
                            messages.push(message(*revision, E::Elected(*token)));
                        }
                        Event::Released {
                            group,
                            role,
                            candidate,
                            reason,
                            ..
                        }
                        | Event::Withdrawn {
                            group,
                            role,
                            candidate,
                            reason,
                        } if self.mine(group, role, candidate) && *revision > self.start => {
                            let reason = convert::release_reason(*reason).to_owned();
                            messages.push(message(*revision, E::Released(reason)));
                            return ended(messages);
                        }
                        _ => {}
                    }
                }
                if let Some((last, _)) = events.last() {
                    self.after = *last;
                }
            }
            // Behind the history: what matters is the current state.
            Err(_) => self.after = state.revision(),
        }
        if more || state.revision() < self.start {
            return Step {
                messages,
                end: None,
                more,
            };
        }
        // Caught up: compare with the state (covers a resync after
        // compaction, and queue positions, which events do not carry).
        let revision = state.revision();
        let Some(view) = state.holders(&self.group, &self.role) else {
            messages.push(message(revision, E::Released("group_changed".into())));
            return ended(messages);
        };
        if let Some(holder) = view.holders.iter().find(|h| h.candidate == self.candidate) {
            match self.elected {
                None => {
                    self.elected = Some(holder.token);
                    messages.push(message(revision, E::Elected(holder.token)));
                }
                Some(token) if token != holder.token => {
                    // A grant ended and another began while we were behind.
                    messages.push(message(revision, E::Released("ended".into())));
                    return ended(messages);
                }
                Some(_) => {}
            }
        } else if let Some(waiter) = view.waiting.iter().find(|w| w.candidate == self.candidate) {
            if self.elected.is_some() {
                messages.push(message(revision, E::Released("ended".into())));
                return ended(messages);
            }
            if self.position != Some(waiter.position) {
                self.position = Some(waiter.position);
                messages.push(message(revision, E::Queued(waiter.position)));
            }
        } else {
            messages.push(message(revision, E::Released("ended".into())));
            return ended(messages);
        }
        Step {
            messages,
            end: None,
            more: false,
        }
    }
}

/// Follows one role's holder list.
struct Observer {
    group: String,
    role: String,
    after: u64,
    /// The holders as of `after`, oldest grant (lowest token) first.
    holders: Vec<pb::Grant>,
    /// The list last sent.
    sent: Vec<pb::Grant>,
}

fn same_holders(a: &[pb::Grant], b: &[pb::Grant]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.candidate == y.candidate && x.token == y.token)
}

impl Observer {
    async fn run(
        mut self,
        ctx: NodeContext,
        streams: Streams,
        tx: mpsc::Sender<Result<pb::ObserveResponse, Status>>,
        _slot: StreamSlot,
    ) {
        let header_ctx = ctx.clone();
        follow(ctx, streams, tx, move |state| self.look(&header_ctx, state)).await;
    }

    fn mine(&self, group: &str, role: &str) -> bool {
        group == self.group && role == self.role
    }

    fn push_if_changed(&mut self, ctx: &NodeContext, revision: u64, messages: &mut Vec<pb::ObserveResponse>) {
        if !same_holders(&self.holders, &self.sent) {
            self.sent = self.holders.clone();
            messages.push(pb::ObserveResponse {
                header: Some(common::header(ctx, revision, true)),
                holders: self.holders.clone(),
            });
        }
    }

    fn look(&mut self, ctx: &NodeContext, state: &State) -> Step<pb::ObserveResponse> {
        let mut messages = Vec::new();
        let mut more = false;
        match state.events_page(self.after, limits::WATCH_PAGE_EVENTS) {
            Ok((events, left)) => {
                more = left;
                let mut i = 0;
                // One revision at a time: a release and the grant that
                // replaces it in the same entry are one change.
                while i < events.len() {
                    let revision = events[i].0;
                    while i < events.len() && events[i].0 == revision {
                        match &events[i].1 {
                            Event::Granted {
                                group,
                                role,
                                candidate,
                                lease,
                                token,
                            } if self.mine(group, role) => {
                                self.holders.retain(|h| &h.candidate != candidate);
                                self.holders.push(pb::Grant {
                                    candidate: candidate.clone(),
                                    lease: *lease,
                                    token: *token,
                                    granted_revision: revision,
                                });
                                self.holders.sort_by_key(|h| h.token);
                            }
                            Event::Released {
                                group, role, candidate, ..
                            } if self.mine(group, role) => {
                                self.holders.retain(|h| &h.candidate != candidate);
                            }
                            _ => {}
                        }
                        i += 1;
                    }
                    self.after = revision;
                    self.push_if_changed(ctx, revision, &mut messages);
                }
            }
            Err(_) => self.after = state.revision(),
        }
        if more {
            return Step {
                messages,
                end: None,
                more,
            };
        }
        // Caught up: the state is the authority (lease changes, resync).
        let revision = state.revision();
        self.after = self.after.max(revision);
        match state.holders(&self.group, &self.role) {
            Some(view) => {
                self.holders = view.holders.iter().map(convert::grant).collect();
                self.push_if_changed(ctx, revision, &mut messages);
                Step {
                    messages,
                    end: None,
                    more: false,
                }
            }
            None => {
                self.holders.clear();
                self.push_if_changed(ctx, revision, &mut messages);
                Step {
                    messages,
                    end: Some(Err(Status::not_found(format!(
                        "role {:?} of group {:?} was deleted",
                        self.role, self.group
                    )))),
                    more: false,
                }
            }
        }
    }
}
