//! Role elections: [`Client::campaign`] and the [`RoleGuard`] it returns,
//! plus resign, progress, holders, observe, switchover and promote.
//!
//! # Holding a role safely
//!
//! A role grant lives as long as the candidate's lease (DESIGN.md rules 6–8).
//! The guard therefore judges "still held" from two sources:
//!
//! * the [`LeaseKeeper`]'s state and local deadline — the guard reads the
//!   very same state and never extends it, so [`RoleGuard::lost`] fires no
//!   later than the keeper's deadline, by a timer of its own;
//! * the server's campaign stream, which says `released` when the grant ends
//!   for another reason (resign, switchover, group change). When the stream
//!   breaks, the guard asks `Holders` (linearizable) whether it is still
//!   among the holders with the same token and lease, and re-opens the
//!   stream (campaigning again with the same candidate and lease is
//!   idempotent). A release that happens while the stream is down is only
//!   noticed then; pass the fencing token ([`RoleGuard::fence`]) with every
//!   protected write so that such a write never lands.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::transport::Channel;
use tonic::{Status, Streaming};

use crate::client::Client;
use crate::error::Error;
use crate::lease_keeper::{lost_of, LeaseKeeper, LeaseState, LostReason};
use crate::proto::campaign_response::Event as CampaignEvent;
use crate::proto::election_client::ElectionClient;
use crate::proto::{
    CampaignRequest, CampaignResponse, DeleteRequest, Fence, Grant, HoldersRequest, HoldersResponse, ObserveRequest,
    ObserveResponse, ProgressRequest, ProgressResponse, PromoteRequest, PromoteResponse, PutRequest, ResignRequest,
    ResignResponse, SwitchoverRequest, SwitchoverResponse, TxnRequest,
};
use crate::retry::{is_retryable, request, Backoff, Idempotency};
use crate::txn::TxnBuilder;

pub(crate) fn election(channel: Channel) -> ElectionClient<Channel> {
    ElectionClient::new(channel)
}

/// Where a campaign stands, as the server reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignState {
    /// Waiting, at this 1-based position of the queue.
    Queued(u32),
    /// Granted, with this fencing token.
    Elected(u64),
}

impl fmt::Display for CampaignState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CampaignState::Queued(p) => write!(f, "queued at position {p}"),
            CampaignState::Elected(t) => write!(f, "elected with token {t}"),
        }
    }
}

/// A callback told of every [`CampaignState`] the server reports.
pub type CampaignCallback = Arc<dyn Fn(CampaignState) + Send + Sync>;

/// Options of [`Client::campaign`].
#[derive(Clone)]
pub struct CampaignOptions {
    /// Higher is preferred; 0 is never elected. A group member's configured
    /// priority for the role overrides it. Default 1.
    pub priority: u32,
    /// E.g. a replication position: among eligible candidates of the highest
    /// priority, the most advanced is elected. Default 0.
    pub progress: u64,
    /// Called with every queue position and with the election.
    pub on_state: Option<CampaignCallback>,
}

impl Default for CampaignOptions {
    fn default() -> Self {
        CampaignOptions {
            priority: 1,
            progress: 0,
            on_state: None,
        }
    }
}

impl fmt::Debug for CampaignOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CampaignOptions")
            .field("priority", &self.priority)
            .field("progress", &self.progress)
            .field("on_state", &self.on_state.is_some())
            .finish()
    }
}

impl CampaignOptions {
    /// Sets [`CampaignOptions::priority`].
    #[must_use]
    pub fn priority(mut self, priority: u32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets [`CampaignOptions::progress`].
    #[must_use]
    pub fn progress(mut self, progress: u64) -> Self {
        self.progress = progress;
        self
    }

    /// Sets [`CampaignOptions::on_state`].
    #[must_use]
    pub fn on_state(mut self, f: impl Fn(CampaignState) + Send + Sync + 'static) -> Self {
        self.on_state = Some(Arc::new(f));
        self
    }
}

/// Why a [`RoleGuard`] no longer holds its role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleLost {
    /// The lease that protects the grant is lost (locally: see
    /// [`LeaseKeeper`]).
    Lease(LostReason),
    /// The server ended the grant (`resigned`, `lease_ended`, `switchover`,
    /// `group_changed`, ...), or a check after a reconnect found that the
    /// candidate no longer holds the role with this token and lease.
    Released(String),
}

impl fmt::Display for RoleLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoleLost::Lease(reason) => write!(f, "lease lost: {reason}"),
            RoleLost::Released(reason) => write!(f, "released: {reason}"),
        }
    }
}

/// What a candidate campaigns as.
#[derive(Debug, Clone)]
struct Candidacy {
    group: String,
    role: String,
    candidate: String,
    lease: i64,
    priority: u32,
    /// The newest progress reported, re-sent on every re-campaign.
    progress: Arc<AtomicU64>,
}

impl Candidacy {
    fn request(&self, client: &Client) -> CampaignRequest {
        CampaignRequest {
            group: self.group.clone(),
            role: self.role.clone(),
            candidate: self.candidate.clone(),
            lease: self.lease,
            priority: self.priority,
            progress: self.progress.load(Ordering::Relaxed),
            request_id: Some(client.next_request_id()),
        }
    }
}

/// A role held by this client, returned by [`Client::campaign`].
///
/// Check [`RoleGuard::is_held`] right before each action taken as holder,
/// pass [`RoleGuard::fence`] with protected writes, and stop acting as
/// holder when [`RoleGuard::lost`] resolves.
///
/// Dropping the guard stops following the grant but does **not** resign:
/// the grant lives as long as the lease. Use [`RoleGuard::resign`], or
/// revoke the lease.
pub struct RoleGuard {
    client: Client,
    candidacy: Candidacy,
    token: u64,
    lease: Arc<watch::Sender<LeaseState>>,
    released: watch::Receiver<Option<String>>,
    released_tx: Arc<watch::Sender<Option<String>>>,
    task: JoinHandle<()>,
}

impl fmt::Debug for RoleGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleGuard")
            .field("group", &self.candidacy.group)
            .field("role", &self.candidacy.role)
            .field("candidate", &self.candidacy.candidate)
            .field("token", &self.token)
            .field("lease", &self.candidacy.lease)
            .field("released", &*self.released.borrow())
            .finish_non_exhaustive()
    }
}

impl RoleGuard {
    /// The fencing token of the grant (strictly increasing per role).
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The lease the grant hangs on.
    pub fn lease_id(&self) -> i64 {
        self.candidacy.lease
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.candidacy.group
    }

    /// The role.
    pub fn role(&self) -> &str {
        &self.candidacy.role
    }

    /// The candidate name.
    pub fn candidate(&self) -> &str {
        &self.candidacy.candidate
    }

    /// The fence to attach to writes made as holder (see [`Fenced`]).
    pub fn fence(&self) -> Fence {
        Fence {
            group: self.candidacy.group.clone(),
            role: self.candidacy.role.clone(),
            token: self.token,
        }
    }

    /// Whether the role may be acted on now: the lease is held (its local
    /// deadline not passed) and the server has not released the grant.
    pub fn is_held(&self) -> bool {
        self.released.borrow().is_none() && self.lease.borrow().is_held_at(self.client.clock().now())
    }

    /// Why the role is lost, if it is.
    pub fn lost_reason(&self) -> Option<RoleLost> {
        if let Some(reason) = &*self.released.borrow() {
            return Some(RoleLost::Released(reason.clone()));
        }
        match &*self.lease.borrow() {
            LeaseState::Lost { reason } => Some(RoleLost::Lease(reason.clone())),
            state if !state.is_held_at(self.client.clock().now()) => Some(RoleLost::Lease(LostReason::Expired)),
            _ => None,
        }
    }

    /// Resolves when the role is lost: the lease is lost (at the latest at
    /// the keeper's local deadline, by a timer of this future), the server
    /// released the grant, or a check after a reconnect found the candidate
    /// no longer among the holders. At once if already lost.
    pub async fn lost(&self) -> RoleLost {
        let mut released = self.released.clone();
        tokio::select! {
            biased;
            reason = lost_of(&self.lease, self.client.clock()) => RoleLost::Lease(reason),
            reason = released.wait_for(Option::is_some) => match reason {
                Ok(reason) => RoleLost::Released(reason.clone().unwrap_or_default()),
                // The sender lives in `self`: cannot happen.
                Err(_) => RoleLost::Released("stopped".into()),
            },
        }
    }

    /// Reports the candidate's progress (also used on re-campaigns).
    pub async fn report_progress(&self, progress: u64) -> Result<ProgressResponse, Error> {
        self.candidacy.progress.store(progress, Ordering::Relaxed);
        let c = &self.candidacy;
        self.client
            .report_progress(&c.group, &c.role, &c.candidate, progress)
            .await
    }

    /// Gives the role up: stops acting as holder (`is_held` turns false
    /// before anything is sent), then resigns on the server, which grants
    /// the role to the next eligible candidate in the same entry.
    pub async fn resign(self) -> Result<ResignResponse, Error> {
        self.released_tx.send_if_modified(|r| {
            if r.is_none() {
                *r = Some("resigned".into());
                true
            } else {
                false
            }
        });
        self.task.abort();
        let c = &self.candidacy;
        self.client.resign(&c.group, &c.role, &c.candidate).await
    }
}

impl Drop for RoleGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Attaches a [`Fence`] to a write, so it lands only while the fence's
/// token is a current grant (else `FAILED_PRECONDITION`, nothing changed).
///
/// ```
/// use roster_client::prelude::*;
/// use roster_client::proto::Fence;
/// use roster_client::Fenced;
///
/// let fence = Fence { group: "orders-db".into(), role: "primary".into(), token: 42 };
/// let put = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() }.fenced(fence);
/// assert_eq!(put.fence.unwrap().token, 42);
/// ```
pub trait Fenced: Sized {
    /// The same write, fenced.
    #[must_use]
    fn fenced(self, fence: Fence) -> Self;
}

impl Fenced for PutRequest {
    fn fenced(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }
}

impl Fenced for DeleteRequest {
    fn fenced(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }
}

impl Fenced for TxnRequest {
    fn fenced(mut self, fence: Fence) -> Self {
        self.fence = Some(fence);
        self
    }
}

impl Fenced for TxnBuilder {
    fn fenced(self, fence: Fence) -> Self {
        self.fence(fence)
    }
}

/// An error made locally (no server answered it).
fn local_error(client: &Client, status: Status) -> Error {
    Error::Rpc {
        endpoint: client.current_endpoint(),
        status,
    }
}

/// Whether a failed call is worth repeating on a long-lived stream.
pub(crate) fn worth_retrying(e: &Error) -> bool {
    match e {
        Error::DeadlineExceeded { .. } => true,
        Error::Rpc { status, .. } => is_retryable(status),
        _ => false,
    }
}

/// What one campaign stream led to.
enum Step {
    Elected(u64, Box<Streaming<CampaignResponse>>),
    /// Campaign again (the stream ended or broke, or a switchover put us back in the queue).
    Again(Option<Status>),
}

fn notify(opts: &CampaignOptions, state: CampaignState) {
    if let Some(f) = &opts.on_state {
        f(state);
    }
}

impl Client {
    /// Opens a campaign stream (with retries to get it started; the stream
    /// itself has no deadline).
    async fn open_campaign(&self, candidacy: &Candidacy) -> Result<Streaming<CampaignResponse>, Error> {
        let req = candidacy.request(self);
        self.call("Campaign", Idempotency::Safe, move |channel, _budget| {
            let req = req.clone();
            async move { election(channel).campaign(tonic::Request::new(req)).await }
        })
        .await
    }

    /// Campaigns for `role` of `group` as `candidate`, with the lease kept by
    /// `keeper`, and resolves once elected, with a [`RoleGuard`].
    ///
    /// Queue positions are reported to [`CampaignOptions::on_state`]. A
    /// broken stream (`UNAVAILABLE`, transport errors, a node shutting down)
    /// is re-opened transparently: campaigning again with the same candidate
    /// and lease is idempotent on the server. Cancel by dropping the
    /// future; the candidacy then stays queued until the lease ends or
    /// [`Client::resign`] withdraws it.
    ///
    /// Fails with `FAILED_PRECONDITION` when the lease is lost or the
    /// candidacy is ended by the server (withdrawn: lease ended, group
    /// changed, resigned), and with the server's answer for a request it
    /// refuses (`NOT_FOUND` for an unknown group or role, ...).
    pub async fn campaign(
        &self,
        group: impl Into<String>,
        role: impl Into<String>,
        candidate: impl Into<String>,
        keeper: &LeaseKeeper,
        opts: CampaignOptions,
    ) -> Result<RoleGuard, Error> {
        let candidacy = Candidacy {
            group: group.into(),
            role: role.into(),
            candidate: candidate.into(),
            lease: keeper.id(),
            priority: opts.priority,
            progress: Arc::new(AtomicU64::new(opts.progress)),
        };
        let lease = keeper.state_handle();
        let policy = self.policy();
        let mut backoff = Backoff::new(policy.backoff_initial, policy.backoff_max);
        loop {
            let attempt = self.campaign_once(&candidacy, &opts);
            let step = tokio::select! {
                biased;
                reason = lost_of(&lease, self.clock()) => {
                    return Err(local_error(self, Status::failed_precondition(format!(
                        "lease {:x} lost while campaigning for {:?} of {:?}: {reason}",
                        candidacy.lease, candidacy.role, candidacy.group
                    ))));
                }
                step = attempt => step?,
            };
            match step {
                Step::Elected(token, stream) => {
                    let (released_tx, released) = watch::channel(None);
                    let released_tx = Arc::new(released_tx);
                    let follower = Follower {
                        client: self.clone(),
                        candidacy: candidacy.clone(),
                        token,
                        released: Arc::clone(&released_tx),
                    };
                    let task = tokio::spawn(follower.run(stream));
                    return Ok(RoleGuard {
                        client: self.clone(),
                        candidacy,
                        token,
                        lease,
                        released,
                        released_tx,
                        task,
                    });
                }
                Step::Again(failure) => {
                    if let Some(status) = failure {
                        tracing::debug!(code = ?status.code(), message = status.message(), "campaign stream broke; campaigning again");
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
    }

    async fn campaign_once(&self, candidacy: &Candidacy, opts: &CampaignOptions) -> Result<Step, Error> {
        let mut stream = match self.open_campaign(candidacy).await {
            Ok(stream) => stream,
            Err(e) if worth_retrying(&e) => {
                return Ok(Step::Again(Some(
                    e.status().cloned().unwrap_or_else(|| Status::unavailable("")),
                )))
            }
            Err(e) => return Err(e),
        };
        loop {
            match stream.message().await {
                Ok(Some(msg)) => match msg.event {
                    Some(CampaignEvent::Queued(position)) => notify(opts, CampaignState::Queued(position)),
                    Some(CampaignEvent::Elected(token)) => {
                        notify(opts, CampaignState::Elected(token));
                        return Ok(Step::Elected(token, Box::new(stream)));
                    }
                    Some(CampaignEvent::Released(reason)) if reason == "switchover" => return Ok(Step::Again(None)),
                    Some(CampaignEvent::Released(reason)) => {
                        return Err(local_error(
                            self,
                            Status::failed_precondition(format!(
                                "the candidacy of {:?} for {:?} of {:?} ended: {reason}",
                                candidacy.candidate, candidacy.role, candidacy.group
                            )),
                        ))
                    }
                    None => {}
                },
                Ok(None) => return Ok(Step::Again(Some(Status::unavailable("campaign stream ended")))),
                Err(status) if is_retryable(&status) => return Ok(Step::Again(Some(status))),
                Err(status) => {
                    return Err(Error::Rpc {
                        endpoint: self.current_endpoint(),
                        status,
                    })
                }
            }
        }
    }

    /// Withdraws `candidate` from `role` of `group`: releases its grant
    /// (the next eligible candidate is granted in the same entry) or takes
    /// it out of the queue. A write: deduplicated across retries.
    pub async fn resign(&self, group: &str, role: &str, candidate: &str) -> Result<ResignResponse, Error> {
        let req = ResignRequest {
            group: group.to_owned(),
            role: role.to_owned(),
            candidate: candidate.to_owned(),
            request_id: Some(self.next_request_id()),
        };
        self.call("Resign", Idempotency::Safe, move |channel, budget| {
            let req = req.clone();
            async move { election(channel).resign(request(req, budget)).await }
        })
        .await
    }

    /// Reports a candidate's progress (e.g. its replication position).
    pub async fn report_progress(
        &self,
        group: &str,
        role: &str,
        candidate: &str,
        progress: u64,
    ) -> Result<ProgressResponse, Error> {
        let req = ProgressRequest {
            group: group.to_owned(),
            role: role.to_owned(),
            candidate: candidate.to_owned(),
            progress,
        };
        self.call("Progress", Idempotency::Safe, move |channel, budget| {
            let req = req.clone();
            async move { election(channel).progress(request(req, budget)).await }
        })
        .await
    }

    /// The holders and the waiting queue of `role` of `group`
    /// (linearizable).
    pub async fn holders(&self, group: &str, role: &str) -> Result<HoldersResponse, Error> {
        self.holders_with(HoldersRequest {
            group: group.to_owned(),
            role: role.to_owned(),
            serializable: false,
        })
        .await
    }

    /// [`Client::holders`] with every option (`serializable`).
    pub async fn holders_with(&self, req: HoldersRequest) -> Result<HoldersResponse, Error> {
        self.call("Holders", Idempotency::Safe, move |channel, budget| {
            let req = req.clone();
            async move { election(channel).holders(request(req, budget)).await }
        })
        .await
    }

    /// Hands `role` of `group` to the waiting candidate `to`, releasing
    /// `from` (default: the oldest grant) back to the queue, in one entry.
    pub async fn switchover(
        &self,
        group: &str,
        role: &str,
        to: &str,
        from: Option<&str>,
    ) -> Result<SwitchoverResponse, Error> {
        let req = SwitchoverRequest {
            group: group.to_owned(),
            role: role.to_owned(),
            to: to.to_owned(),
            from: from.unwrap_or_default().to_owned(),
            request_id: Some(self.next_request_id()),
        };
        self.call("Switchover", Idempotency::Safe, move |channel, budget| {
            let req = req.clone();
            async move { election(channel).switchover(request(req, budget)).await }
        })
        .await
    }

    /// Fills a free slot of a manual-failover role (or one whose handover
    /// delay is over) with the waiting candidate `candidate`.
    pub async fn promote(&self, group: &str, role: &str, candidate: &str) -> Result<PromoteResponse, Error> {
        let req = PromoteRequest {
            group: group.to_owned(),
            role: role.to_owned(),
            candidate: candidate.to_owned(),
            request_id: Some(self.next_request_id()),
        };
        self.call("Promote", Idempotency::Safe, move |channel, budget| {
            let req = req.clone();
            async move { election(channel).promote(request(req, budget)).await }
        })
        .await
    }

    /// Every change of the holders of `role` of `group`, starting with the
    /// current list (empty: no holder).
    ///
    /// A broken stream is re-opened (any node, with backoff) and then
    /// starts again with the current holders, so the last item is always
    /// current; intermediate lists may be missed across a reconnect. Ends
    /// with an error the server gives as an answer (`NOT_FOUND` when the
    /// role does not exist or is deleted). Dropping the stream stops it.
    pub fn observe(
        &self,
        group: &str,
        role: &str,
    ) -> Pin<Box<dyn Stream<Item = Result<Vec<Grant>, Error>> + Send + 'static>> {
        let (tx, rx) = mpsc::channel(16);
        let client = self.clone();
        let req = ObserveRequest {
            group: group.to_owned(),
            role: role.to_owned(),
        };
        tokio::spawn(async move {
            tokio::select! {
                () = observe_loop(client, req, &tx) => {}
                () = tx.closed() => {}
            }
        });
        Box::pin(ReceiverStream::new(rx))
    }
}

async fn observe_loop(client: Client, req: ObserveRequest, tx: &mpsc::Sender<Result<Vec<Grant>, Error>>) {
    let policy = client.policy();
    let mut backoff = Backoff::new(policy.backoff_initial, policy.backoff_max);
    loop {
        let r = req.clone();
        let opened = client
            .call("Observe", Idempotency::Safe, move |channel, _budget| {
                let r = r.clone();
                async move { election(channel).observe(tonic::Request::new(r)).await }
            })
            .await;
        let mut stream: Streaming<ObserveResponse> = match opened {
            Ok(stream) => stream,
            Err(e) if worth_retrying(&e) => {
                tracing::debug!(error = %e, "observe: cannot open the stream; retrying");
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        loop {
            match stream.message().await {
                Ok(Some(msg)) => {
                    backoff = Backoff::new(policy.backoff_initial, policy.backoff_max);
                    if tx.send(Ok(msg.holders)).await.is_err() {
                        return;
                    }
                }
                Ok(None) => break,
                Err(status) if is_retryable(&status) => {
                    tracing::debug!(code = ?status.code(), message = status.message(), "observe stream broke");
                    break;
                }
                Err(status) => {
                    let _ = tx
                        .send(Err(Error::Rpc {
                            endpoint: client.current_endpoint(),
                            status,
                        }))
                        .await;
                    return;
                }
            }
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

/// Follows a grant after the election: reads the campaign stream, and on a
/// break verifies with `Holders` and re-campaigns.
struct Follower {
    client: Client,
    candidacy: Candidacy,
    token: u64,
    released: Arc<watch::Sender<Option<String>>>,
}

impl Follower {
    fn release(&self, reason: String) {
        tracing::debug!(reason, "role released");
        self.released.send_if_modified(|r| {
            if r.is_none() {
                *r = Some(reason);
                true
            } else {
                false
            }
        });
    }

    async fn run(self, stream: Box<Streaming<CampaignResponse>>) {
        let policy = self.client.policy();
        let mut backoff = Backoff::new(policy.backoff_initial, policy.backoff_max);
        let mut stream = Some(stream);
        loop {
            if let Some(s) = stream.as_mut() {
                match s.message().await {
                    Ok(Some(msg)) => match msg.event {
                        Some(CampaignEvent::Elected(t)) if t == self.token => {}
                        Some(CampaignEvent::Elected(t)) => {
                            return self.release(format!("elected again with another token ({t})"))
                        }
                        Some(CampaignEvent::Queued(p)) => {
                            return self.release(format!("back in the queue at position {p}"))
                        }
                        Some(CampaignEvent::Released(reason)) => return self.release(reason),
                        None => {}
                    },
                    Ok(None) => stream = None,
                    Err(status) if is_retryable(&status) => {
                        tracing::debug!(code = ?status.code(), message = status.message(), "campaign stream broke");
                        stream = None;
                    }
                    Err(status) => {
                        return self.release(format!(
                            "campaign stream failed: {}: {}",
                            crate::code_name(status.code()),
                            status.message()
                        ))
                    }
                }
                continue;
            }
            // Reconnect: first make sure we still hold the role, so that
            // campaigning again cannot put us back in the queue unnoticed.
            let c = &self.candidacy;
            match self.client.holders(&c.group, &c.role).await {
                Ok(h) => {
                    let ours = h
                        .holders
                        .iter()
                        .any(|g| g.candidate == c.candidate && g.token == self.token && g.lease == c.lease);
                    if !ours {
                        return self.release("no longer among the holders".into());
                    }
                }
                Err(e) if worth_retrying(&e) => {
                    tokio::time::sleep(backoff.next_delay()).await;
                    continue;
                }
                Err(e) => return self.release(format!("checking the holders failed: {e}")),
            }
            match self.client.open_campaign(c).await {
                Ok(s) => {
                    backoff = Backoff::new(policy.backoff_initial, policy.backoff_max);
                    stream = Some(Box::new(s));
                }
                Err(e) if worth_retrying(&e) => tokio::time::sleep(backoff.next_delay()).await,
                Err(e) => return self.release(format!("campaigning again failed: {e}")),
            }
        }
    }
}
