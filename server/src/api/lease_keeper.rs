//! The leader's lease keeper: batches renewals, checkpoints remaining TTLs,
//! and decides expiry — always through committed entries (DESIGN.md rules
//! 3–5).
//!
//! It runs on every node and does nothing unless this node leads. On taking
//! office it first waits until its state machine has applied everything the
//! previous leaders committed (a read barrier on its own blank entry), then
//! starts each lease at the `remaining_ms` of the newest renewal or
//! checkpoint in the log — never at a full TTL (a dead client's lease would
//! live forever through leader changes) and never at zero (a live client's
//! lease would end early).
//!
//! While leading it keeps a deadline per lease on its monotonic clock:
//! * a renewal is proposed in a batch (one entry carries every renewal that
//!   arrived while the previous batch was being committed, or — when the
//!   leases are many enough for it to pay, [`linger_for`] — within
//!   [`RENEWAL_LINGER`] of the first; or, for clients that renew again as
//!   soon as they are answered, once they are back: [`Regroup`]) and
//!   answered only from the committed entry; the deadline becomes
//!   "now + TTL" when the commit is seen, which is never earlier than the
//!   client's own view;
//! * every [`CHECKPOINT_EVERY`] the remaining TTLs are committed;
//! * a lease whose deadline passed is proposed for expiry with the renewal
//!   count the keeper saw, so a renewal committed meanwhile wins;
//! * if the keeper's own timer fired late by more than [`STALL_BOUND`] (a
//!   paused process, an overloaded machine), every deadline is pushed back by
//!   the stall before anything is expired: the clients could not renew while
//!   the leader was not running.
//!
//! Bound on a dead client's lease: TTL after its last committed renewal,
//! plus one tick and one commit; each leader change can add the time since
//! the last checkpoint plus the election (at most [`CHECKPOINT_EVERY`] +
//! the election timeout + this keeper's start-up barrier). Every leader that
//! stays in office [`FIRST_CHECKPOINT_AFTER`] plus one commit moves the
//! committed remaining TTLs forward, so even fast leader churn cannot keep a
//! dead client's lease alive for ever.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use super::route::{Outcome, Proposal, RouteError};
use super::NodeContext;
use crate::limits;
use crate::state::command::{Command, LeaseCheckpointOp, LeaseExpireOp, LeaseRenewOp, LeaseSeen, Op, Response};

/// How often the keeper looks at deadlines.
pub const TICK: Duration = Duration::from_millis(100);
/// How often remaining TTLs are committed (rule 5).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);
/// The first checkpoint of a new leader comes this soon after it takes
/// office, so that even short-lived leaders move every lease's remaining TTL
/// forward: otherwise leaders that die within a second of election would
/// each restart leases from the same old checkpoint, and a dead client's
/// lease could outlive many TTLs under fast leader churn.
pub const FIRST_CHECKPOINT_AFTER: Duration = Duration::from_millis(200);
/// A tick later than this is a stall: deadlines move back by it.
pub const STALL_BOUND: Duration = Duration::from_millis(500);
/// Renewals queued at once; a keepalive beyond this waits (backpressure).
const QUEUE: usize = 16 * 1024;
/// How long the first queued renewal waits for others before their batch
/// is proposed, when waiting pays (see [`linger_for`]). Renewals trickle in
/// (each client renews a third of its TTL after the last), so without a
/// wait most batches carry one or two and every renewal pays for a Raft
/// entry of its own: replication, an fsync on each member, an apply. Ten
/// milliseconds is nothing against a TTL of seconds (the client counts its
/// deadline from the send time, so the wait never shortens what it
/// believes). Measured: the cluster's CPU per renewal at 10,000 leases fell
/// from 210 µs to 48 µs (docs/BENCHMARKS.md has the current figures). A
/// batch that is full goes at once.
pub const RENEWAL_LINGER: Duration = Duration::from_millis(10);
/// The wait pays only if at least this many more renewals are expected to
/// arrive during it; with fewer, it would only add latency.
const LINGER_PAYS_FROM: f64 = 1.0;
/// Clients renew this many times per TTL by default (roster-client's and
/// etcd's keepalive interval is a third of the TTL).
const RENEWALS_PER_TTL: f64 = 3.0;

/// How long a renewal waits for company, given the TTLs of the leases this
/// leader keeps: [`RENEWAL_LINGER`] when the renewals they are expected to
/// send within it number at least [`LINGER_PAYS_FROM`], else nothing (a
/// handful of leases renew too rarely to share an entry; their renewals go
/// at once, and batch only behind one already in flight). A pure function
/// of the state, so the simulator replays it exactly.
pub fn linger_for(ttls_ms: impl IntoIterator<Item = u64>) -> Duration {
    let per_ms: f64 = ttls_ms
        .into_iter()
        .map(|ttl| RENEWALS_PER_TTL / ttl.max(1) as f64)
        .sum();
    if per_ms * RENEWAL_LINGER.as_millis() as f64 >= LINGER_PAYS_FROM {
        RENEWAL_LINGER
    } else {
        Duration::ZERO
    }
}
/// A batch this large goes without waiting out [`RENEWAL_LINGER`].
const RENEWAL_BATCH_FULL: usize = 1024;
/// Regrouping closed-loop renewers (see [`Regroup`]): a batch waiting for
/// the leases the last batches answered goes once none of them has arrived
/// for this long. Clients that renew as soon as they are answered come back
/// a round trip and their own processing after their answer, one after
/// another as the answers go out; measured with 16 such renewers on the
/// bench machine, about 50 µs apart and the first some 150 µs after the
/// answers.
pub const REGROUP_GAP: Duration = Duration::from_micros(300);
/// And at the latest this long after the last batch's answers.
pub const REGROUP_MAX: Duration = Duration::from_millis(2);

/// Handle to the keeper task.
#[derive(Clone)]
pub struct LeaseKeeper {
    tx: mpsc::Sender<Renewal>,
}

/// Where a renewal's answer goes: the TTL, 0 if the lease is gone.
type Reply = oneshot::Sender<Result<u64, RouteError>>;

struct Renewal {
    id: i64,
    reply: Reply,
}

impl LeaseKeeper {
    /// Starts the keeper task for this node.
    pub fn start(ctx: NodeContext) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(Keeper::new(ctx).run(rx));
        Self { tx }
    }

    /// Renews lease `id` through a committed entry. Answers the TTL it was
    /// renewed for, or 0 if the lease does not exist. Fails with
    /// `NotLeader` when this node does not lead.
    pub async fn renew(&self, id: i64) -> Result<u64, RouteError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Renewal { id, reply })
            .await
            .map_err(|_| RouteError::ShuttingDown)?;
        rx.await.map_err(|_| RouteError::ShuttingDown)?
    }
}

/// What the keeper knows about one lease.
#[derive(Clone, Copy, Debug)]
struct Tracked {
    deadline: Instant,
    granted_revision: u64,
    /// Committed renewals the keeper has accounted for in `deadline`.
    renewals: u64,
    /// An expiry proposal for it is in flight.
    expiring: bool,
}

impl Tracked {
    fn seen(&self, id: i64) -> LeaseSeen {
        LeaseSeen {
            id,
            granted_revision: self.granted_revision,
            renewals_seen: self.renewals,
        }
    }
}

/// Results of proposals, fed back into the keeper loop.
enum Done {
    Renewed {
        batch: Vec<(i64, Vec<Reply>)>,
        result: Result<Vec<Option<u64>>, RouteError>,
    },
    Expired(Result<Vec<i64>, RouteError>, Vec<i64>),
    Ticked,
}

/// Regrouping a closed loop of renewers. With one batch in flight, the
/// renewals that arrive while it commits go in the next. Clients that renew
/// again as soon as they are answered then split into two halves taking
/// turns: each renewal waits for the other half's commit, then for its own
/// (measured: batches of 8 with 16 renewers). So when the renewals queued
/// for the next batch are fewer than the leases the last two batches
/// answered, and the first of them came back right after those answers (a
/// closed loop, not renewals on schedule), the batch waits for the rest
/// while they keep coming ([`REGROUP_GAP`], at most [`REGROUP_MAX`] after
/// the answers): the halves merge into one batch per commit. Renewals on
/// schedule never wait here; the wait only delays when a renewal commits,
/// and the client counts its deadline from when it sent it.
#[derive(Clone, Debug, Default)]
struct Regroup {
    /// Lease ids the last batch answered, ascending.
    last: Vec<i64>,
    /// Leases the last two batches answered between them: those expected
    /// back in a closed loop.
    recent: usize,
    /// When the last batch's answers went out.
    answered_at: Option<Instant>,
    /// When the last renewal arrived.
    arrived_at: Option<Instant>,
    /// Leases the queued batch waits for (0: none).
    expect: usize,
}

impl Regroup {
    fn answered(&mut self, ids: Vec<i64>, now: Instant) {
        self.recent = union_len(&ids, &self.last);
        self.last = ids;
        self.answered_at = Some(now);
    }

    /// A renewal arrived; `first` of the next batch.
    fn arrived(&mut self, now: Instant, first: bool) {
        self.arrived_at = Some(now);
        if first {
            let back_at_once = self
                .answered_at
                .is_some_and(|at| now.saturating_duration_since(at) <= REGROUP_GAP);
            self.expect = if back_at_once { self.recent } else { 0 };
        }
    }

    /// When a batch of `queued` leases stops waiting for the rest (`None`:
    /// it does not wait).
    fn due(&self, queued: usize) -> Option<Instant> {
        if queued >= self.expect {
            return None;
        }
        let answered = self.answered_at?;
        let arrived = self.arrived_at.unwrap_or(answered).max(answered);
        Some((arrived + REGROUP_GAP).min(answered + REGROUP_MAX))
    }
}

/// How many distinct ids two ascending lists hold together.
fn union_len(a: &[i64], b: &[i64]) -> usize {
    let (mut i, mut j, mut n) = (0, 0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
        n += 1;
    }
    n + (a.len() - i) + (b.len() - j)
}

struct Keeper {
    ctx: NodeContext,
    /// Term in which this node leads and has initialised, if any.
    leading: Option<u64>,
    /// Ordered: expiry and checkpoint batches list leases by id, so the
    /// commands proposed are a function of the state (the simulator replays
    /// them byte for byte).
    leases: BTreeMap<i64, Tracked>,
    pending: BTreeMap<i64, Vec<Reply>>,
    /// When the oldest queued renewal arrived (tokio's clock: a delay, not
    /// a lease deadline).
    pending_since: Option<Instant>,
    /// The current wait of a batch, [`linger_for`] the tracked leases.
    linger: Duration,
    /// Who is expected back right after the last batch's answers.
    regroup: Regroup,
    /// A renewal batch is proposed and not yet answered. One at a time:
    /// measured with 16 closed-loop renewers (the bench's `renew` workload,
    /// A/B in one session), one batch in flight carried 7,500–7,800
    /// renewals/s at 137–142 µs of cluster CPU each, four in flight
    /// 6,400–6,900/s at 172–188 µs (no difference at 256 renewers): on a
    /// CPU-bound leader fewer, larger entries beat pipelining. Two in
    /// flight measured no better on a machine that was not CPU bound
    /// either (9.1–9.2k vs 8.9–9.7k renewals/s with one); regrouping the
    /// renewers did ([`Regroup`]).
    renewing: bool,
    ticking: bool,
    last_tick: Instant,
    last_checkpoint: Instant,
    last_revision: u64,
    done_tx: mpsc::UnboundedSender<Done>,
    done_rx: mpsc::UnboundedReceiver<Done>,
}

impl Keeper {
    fn new(ctx: NodeContext) -> Self {
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let now = ctx.clock.now();
        Self {
            ctx,
            leading: None,
            leases: BTreeMap::new(),
            pending: BTreeMap::new(),
            pending_since: None,
            linger: Duration::ZERO,
            regroup: Regroup::default(),
            renewing: false,
            ticking: false,
            last_tick: now,
            last_checkpoint: now,
            last_revision: u64::MAX,
            done_tx,
            done_rx,
        }
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Renewal>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            let linger = self.batch_due();
            tokio::select! {
                renewal = rx.recv() => match renewal {
                    Some(r) => self.queue_renewal(r),
                    None => return,
                },
                Some(done) = self.done_rx.recv() => self.on_done(done),
                _ = tick.tick() => self.on_tick().await,
                _ = tokio::time::sleep_until(linger.unwrap_or_else(Instant::now)), if linger.is_some() => {}
            }
            self.flush_renewals();
        }
    }

    fn not_leader(&self) -> RouteError {
        let m = self.ctx.metrics();
        RouteError::NotLeader {
            leader: m.current_leader.and_then(|l| self.ctx.member_addr(l).map(|a| (l, a))),
        }
    }

    fn queue_renewal(&mut self, r: Renewal) {
        // While taking office the renewal waits (the next tick finishes
        // that); on a node that does not lead it is refused at once.
        if self.leading.is_none() && self.ctx.current_leader() != Some(self.ctx.id) {
            let _ = r.reply.send(Err(self.not_leader()));
            return;
        }
        if crate::planted::active(crate::planted::Planted::KeepaliveAckBeforeCommit) {
            let ttl = self.ctx.state.read().state.lease(r.id).map_or(0, |l| l.ttl_ms);
            let _ = r.reply.send(Ok(ttl));
            let (detached, _) = oneshot::channel();
            self.pending.entry(r.id).or_default().push(detached);
            self.pending_since.get_or_insert_with(Instant::now);
            return;
        }
        self.pending.entry(r.id).or_default().push(r.reply);
        let now = Instant::now();
        self.regroup.arrived(now, self.pending_since.is_none());
        self.pending_since.get_or_insert(now);
    }

    /// When the queued renewals are to be proposed, if they can be: none
    /// in flight and this node in office.
    fn batch_due(&self) -> Option<Instant> {
        if self.renewing || self.leading.is_none() {
            return None;
        }
        if self.pending.len() >= RENEWAL_BATCH_FULL {
            return Some(Instant::now());
        }
        let since = self.pending_since?;
        let lingered = since + self.linger;
        Some(match self.regroup.due(self.pending.len()) {
            Some(regrouped) => regrouped.max(lingered),
            None => lingered,
        })
    }

    /// Proposes the queued renewals as one entry, unless one is in flight
    /// (then they go in the next: natural batching under load).
    fn flush_renewals(&mut self) {
        if self.pending.is_empty() || self.batch_due().is_none_or(|due| due > Instant::now()) {
            return;
        }
        let mut batch = Vec::new();
        while batch.len() < limits::MAX_LEASE_BATCH {
            match self.pending.pop_first() {
                Some(entry) => batch.push(entry),
                None => break,
            }
        }
        if self.pending.is_empty() {
            self.pending_since = None;
        }
        let ids: Vec<i64> = batch.iter().map(|(id, _)| *id).collect();
        self.renewing = true;
        let (ctx, done) = (self.ctx.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let result = propose(&ctx, Op::LeaseRenew(LeaseRenewOp { ids }))
                .await
                .and_then(|r| match r {
                    Response::LeaseRenew(r) => Ok(r.ttl_ms),
                    other => Err(unexpected(&other)),
                });
            let _ = done.send(Done::Renewed { batch, result });
        });
    }

    fn on_done(&mut self, done: Done) {
        let now = self.ctx.clock.now();
        match done {
            Done::Renewed { batch, result } => {
                self.renewing = false;
                match result {
                    Ok(ttls) => {
                        self.regroup
                            .answered(batch.iter().map(|(id, _)| *id).collect(), Instant::now());
                        let applied = self.ctx.state.read();
                        for ((id, replies), ttl) in batch.into_iter().zip(ttls) {
                            match ttl {
                                Some(ttl) => {
                                    if let Some(t) = self.leases.get_mut(&id) {
                                        // The state's count, not `+ 1`: it also
                                        // counts any renewal whose proposal
                                        // failed here but committed anyway.
                                        t.renewals = applied.state.lease(id).map_or(t.renewals + 1, |l| l.renewals);
                                        t.deadline = t.deadline.max(now + Duration::from_millis(ttl));
                                    }
                                    // Not tracked yet (granted a moment ago): the
                                    // next reconcile starts it from the state.
                                }
                                None => {
                                    self.leases.remove(&id);
                                }
                            }
                            for reply in replies {
                                let _ = reply.send(Ok(ttl.unwrap_or(0)));
                            }
                        }
                        drop(applied);
                    }
                    Err(e) => {
                        // The answer failed, the renewal may still have
                        // committed (a timeout): account for it now, so that
                        // expiry is neither refused nor delayed later.
                        let applied = self.ctx.state.read();
                        for (id, replies) in batch {
                            if let (Some(t), Some(l)) = (self.leases.get_mut(&id), applied.state.lease(id)) {
                                if l.granted_revision == t.granted_revision && l.renewals > t.renewals {
                                    t.renewals = l.renewals;
                                    t.deadline = t.deadline.max(now + Duration::from_millis(l.ttl_ms));
                                }
                            }
                            for reply in replies {
                                let _ = reply.send(Err(e.clone()));
                            }
                        }
                    }
                }
            }
            Done::Expired(result, asked) => {
                let ended = result.unwrap_or_default();
                for id in &ended {
                    self.leases.remove(id);
                }
                for id in asked {
                    if let Some(t) = self.leases.get_mut(&id) {
                        t.expiring = false;
                    }
                }
            }
            Done::Ticked => self.ticking = false,
        }
    }

    async fn on_tick(&mut self) {
        let now = self.ctx.clock.now();
        let late = now.saturating_duration_since(self.last_tick + TICK);
        self.last_tick = now;

        let (leads, term) = self.ctx.with_metrics(|m| {
            let leads = m.current_leader == Some(self.ctx.id) && m.state == openraft::ServerState::Leader;
            (leads, m.current_term)
        });
        if !leads {
            self.step_down();
            return;
        }
        if self.leading != Some(term) {
            // A new term of ours: forget the old timers but keep queued
            // renewals; they are proposed once in office.
            self.leading = None;
            self.leases.clear();
            let took = self.take_office(term).await;
            // The wait for office (up to a request timeout, whether or not
            // it succeeds) was the keeper's own, not a stall of the process:
            // the next tick must not read it as one and push every deadline
            // back by it (found by the simulator: 3 nodes, seed 174, after
            // a success; 5 nodes, seed 72, after a failed attempt pushed
            // deadlines back 3.9 s and a dead client's lease outlived its
            // bound).
            self.last_tick = self.ctx.clock.now();
            if !took {
                return;
            }
        }
        if late > STALL_BOUND {
            tracing::warn!(
                stall_ms = late.as_millis() as u64,
                "lease keeper stalled; extending every lease by the stall"
            );
            for t in self.leases.values_mut() {
                t.deadline += late;
            }
        }
        self.reconcile(now);
        self.expire(now);
        let every = if crate::planted::active(crate::planted::Planted::IgnoreRenewalsAfterCheckpoint) {
            // The planted bug's second half: checkpoints are rare (etcd's
            // default interval is minutes), so the stale value matters.
            CHECKPOINT_EVERY * 10
        } else {
            CHECKPOINT_EVERY
        };
        if now.duration_since(self.last_checkpoint) >= every {
            self.last_checkpoint = now;
            self.checkpoint(now);
        }
        self.tick_roles();
    }

    fn step_down(&mut self) {
        if self.leading.take().is_some() {
            tracing::info!("lease keeper: no longer leader");
        }
        self.leases.clear();
        self.last_revision = u64::MAX;
        let err = self.not_leader();
        self.pending_since = None;
        for (_, replies) in std::mem::take(&mut self.pending) {
            for reply in replies {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }

    /// Waits until everything committed before this term is applied, then
    /// starts every lease from its newest committed renewal or checkpoint.
    async fn take_office(&mut self, term: u64) -> bool {
        let deadline = Instant::now() + self.ctx.request_timeout;
        // Everything in this leader's log when it took office: entries of
        // earlier terms that were replicated but not yet committed (a
        // renewal, say) commit with this term's first entry. The read
        // barrier alone may pass before that entry commits; the keeper must
        // start from a state that has applied them, or it would count fewer
        // renewals than the state and every expiry it proposes would be
        // refused (found by the simulator, 3 nodes, seed 172).
        let in_log = self.ctx.with_metrics(|m| m.last_log_index);
        if let Err(e) = self.ctx.read_barrier(deadline).await {
            tracing::warn!("lease keeper: cannot confirm leadership yet: {e}");
            return false;
        }
        let caught_up = tokio::time::timeout_at(
            deadline,
            self.ctx
                .raft
                .wait(None)
                .applied_index_at_least(in_log, "lease keeper taking office"),
        )
        .await;
        if !matches!(caught_up, Ok(Ok(_))) {
            tracing::warn!("lease keeper: this term's first entry is not applied yet");
            return false;
        }
        let now = self.ctx.clock.now();
        self.leading = Some(term);
        self.last_checkpoint = now
            .checked_sub(CHECKPOINT_EVERY - FIRST_CHECKPOINT_AFTER)
            .unwrap_or(now);
        self.last_revision = u64::MAX;
        self.reconcile(now);
        tracing::info!(term, leases = self.leases.len(), "lease keeper: took office");
        true
    }

    /// Brings the tracked set in line with the state: new leases start from
    /// their committed `remaining_ms`, ended ones are dropped. Only runs when
    /// the revision moved (grants, revokes and expiries move it; renewals and
    /// checkpoints, which the keeper itself issues, do not).
    fn reconcile(&mut self, now: Instant) {
        let applied = self.ctx.state.read();
        let revision = applied.state.revision();
        if revision == self.last_revision {
            return;
        }
        self.last_revision = revision;
        let current = applied.state.leases();
        drop(applied);
        let linger = linger_for(current.iter().map(|info| info.ttl_ms));
        if linger != self.linger {
            tracing::debug!(
                wait_ms = linger.as_millis() as u64,
                leases = current.len(),
                "renewal batch wait changed"
            );
            self.linger = linger;
        }
        let mut live = BTreeMap::new();
        for info in current {
            let tracked = match self.leases.get(&info.id) {
                Some(t) if t.granted_revision == info.granted_revision => *t,
                _ => Tracked {
                    deadline: now
                        + Duration::from_millis(if crate::planted::active(crate::planted::Planted::NewLeaderFullTtl) {
                            info.ttl_ms
                        } else {
                            info.remaining_ms
                        }),
                    granted_revision: info.granted_revision,
                    renewals: info.renewals,
                    expiring: false,
                },
            };
            live.insert(info.id, tracked);
        }
        self.leases = live;
    }

    fn expire(&mut self, now: Instant) {
        self.adopt_unseen_renewals(now);
        let due: Vec<LeaseSeen> = self
            .leases
            .iter()
            .filter(|(_, t)| t.deadline <= now && !t.expiring)
            .map(|(id, t)| t.seen(*id))
            .take(limits::MAX_LEASE_BATCH)
            .collect();
        if due.is_empty() {
            return;
        }
        let asked: Vec<i64> = due.iter().map(|s| s.id).collect();
        for id in &asked {
            if let Some(t) = self.leases.get_mut(id) {
                t.expiring = true;
            }
        }
        tracing::info!(leases = ?asked, "lease keeper: expiring");
        let (ctx, done) = (self.ctx.clone(), self.done_tx.clone());
        tokio::spawn(async move {
            let result = propose(&ctx, Op::LeaseExpire(LeaseExpireOp { leases: due }))
                .await
                .and_then(|r| match r {
                    Response::LeaseExpire(r) => Ok(r.ended),
                    other => Err(unexpected(&other)),
                });
            let _ = done.send(Done::Expired(result, asked));
        });
    }

    /// The keeper's renewal count must equal the state's, or every expiry
    /// it proposes is refused ("a renewal won") for ever and the lease of a
    /// dead client never ends (found by the simulator: 5 nodes, seed 92).
    /// They can differ when a batch proposed before this node took office
    /// again is answered after the keeper re-read the state (it was counted
    /// twice: keeper 11, state 10 in that seed), or when a renewal's
    /// proposal failed here (a timeout) but committed anyway. Before
    /// expiring, adopt the state's count; a renewal the keeper never saw
    /// counts as committed now (a full TTL from now: never earlier than any
    /// client could believe). Skipped while a renewal batch is in flight
    /// (its answer accounts for it).
    fn adopt_unseen_renewals(&mut self, now: Instant) {
        if self.renewing {
            return;
        }
        let applied = self.ctx.state.read();
        for (id, t) in self.leases.iter_mut().filter(|(_, t)| t.deadline <= now && !t.expiring) {
            let Some(l) = applied.state.lease(*id) else { continue };
            if l.granted_revision != t.granted_revision || l.renewals == t.renewals {
                continue;
            }
            tracing::info!(
                lease = id,
                state = l.renewals,
                keeper = t.renewals,
                "lease keeper: renewal count differs from the state's; adopting it"
            );
            if l.renewals > t.renewals {
                t.deadline = t.deadline.max(now + Duration::from_millis(l.ttl_ms));
            }
            t.renewals = l.renewals;
        }
    }

    /// Commits every lease's remaining TTL. A lease whose committed renewal
    /// count differs from the keeper's (a renewal applied, its answer not yet
    /// seen here) is skipped: the state would ignore it anyway.
    fn checkpoint(&mut self, now: Instant) {
        let entries: Vec<(LeaseSeen, u64)> = {
            let applied = self.ctx.state.read();
            self.leases
                .iter()
                .filter(|(_, t)| !t.expiring)
                .filter(|(id, t)| applied.state.lease(**id).is_some_and(|l| l.renewals == t.renewals))
                .map(|(id, t)| {
                    (
                        t.seen(*id),
                        t.deadline.saturating_duration_since(now).as_millis() as u64,
                    )
                })
                .collect()
        };
        for chunk in entries.chunks(limits::MAX_LEASE_BATCH) {
            let op = Op::LeaseCheckpoint(LeaseCheckpointOp { leases: chunk.to_vec() });
            let ctx = self.ctx.clone();
            tokio::spawn(async move {
                if let Err(e) = propose(&ctx, op).await {
                    tracing::debug!("lease checkpoint not committed: {e}");
                }
            });
        }
    }

    /// Proposes a `Tick` when a role's handover delay ends, so the waiting
    /// candidate is granted then rather than at the next unrelated write.
    fn tick_roles(&mut self) {
        if self.ticking {
            return;
        }
        let due = self.ctx.state.read().state.next_role_deadline_ms();
        if due.is_some_and(|ms| ms <= self.ctx.clock.wall_ms()) {
            self.ticking = true;
            let (ctx, done) = (self.ctx.clone(), self.done_tx.clone());
            tokio::spawn(async move {
                let _ = propose(&ctx, Op::Tick).await;
                let _ = done.send(Done::Ticked);
            });
        }
    }
}

/// Proposes a leader-internal command on this node (it must lead).
async fn propose(ctx: &NodeContext, op: Op) -> Result<Response, RouteError> {
    let command = Command {
        request_id: None,
        stamp_ms: 0,
        op,
    };
    let deadline = Instant::now() + ctx.request_timeout;
    match ctx.propose_local(Proposal::Write(command), deadline).await? {
        Outcome::Write(response) => Ok(response),
        Outcome::Members(_) => Err(RouteError::Internal("unexpected reply to a lease command".into())),
    }
}

fn unexpected(response: &Response) -> RouteError {
    RouteError::Internal(format!("unexpected answer to a lease command: {response:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn union_len_counts_distinct_ids_of_two_ascending_lists() {
        assert_eq!(union_len(&[], &[]), 0);
        assert_eq!(union_len(&[1, 2, 3], &[]), 3);
        assert_eq!(union_len(&[], &[4]), 1);
        assert_eq!(union_len(&[1, 3, 5], &[2, 3, 6, 7]), 6);
        assert_eq!(union_len(&[1, 2], &[1, 2]), 2);
    }

    #[test]
    fn closed_loop_renewers_are_waited_for_while_they_keep_coming() {
        let t = Instant::now();
        let mut r = Regroup::default();
        r.answered((1..=16).collect(), t);
        // The first is back 150 µs after the answers: a closed loop.
        r.arrived(t + us(150), true);
        assert_eq!(r.expect, 16);
        assert_eq!(r.due(1), Some(t + us(450)));
        // Each arrival extends the wait by the gap...
        for i in 2..=15u64 {
            r.arrived(t + us(150 + 50 * i), false);
            assert_eq!(r.due(i as usize), Some(t + us(150 + 50 * i) + REGROUP_GAP));
        }
        // ...and the batch goes as soon as every lease is back.
        assert_eq!(r.due(16), None);
    }

    #[test]
    fn the_wait_for_closed_loop_renewers_is_bounded() {
        let t = Instant::now();
        let mut r = Regroup::default();
        r.answered((1..=100).collect(), t);
        r.arrived(t + us(100), true);
        // Renewals trickle in 200 µs apart, never all of them.
        for i in 1..=20u64 {
            r.arrived(t + us(100 + 200 * i), false);
        }
        assert_eq!(r.due(21), Some(t + REGROUP_MAX));
    }

    #[test]
    fn renewals_on_schedule_never_wait_to_regroup() {
        let t = Instant::now();
        let mut r = Regroup::default();
        assert_eq!(r.due(1), None, "nothing answered yet");
        r.answered((1..=16).collect(), t);
        // The first renewal comes long after the answers (a third of a TTL
        // later, as a keepalive on schedule): nothing to wait for.
        r.arrived(t + Duration::from_millis(5), true);
        assert_eq!(r.expect, 0);
        assert_eq!(r.due(1), None);
    }

    #[test]
    fn two_halves_taking_turns_merge_into_one_batch() {
        let t = Instant::now();
        let mut r = Regroup::default();
        // Half A (leases 1-8) is in flight; half B (9-16) was just answered
        // and comes back at once, queueing behind A.
        r.answered((1..=8).collect(), t);
        r.answered((9..=16).collect(), t + us(700));
        r.arrived(t + us(800), true);
        assert_eq!(r.expect, 16, "both halves are expected");
        for i in 1..8u64 {
            r.arrived(t + us(800 + 50 * i), false);
        }
        // A commits and is answered: B does not go alone, it waits for A's
        // renewers from A's answers on...
        let a_done = t + us(1500);
        r.answered((1..=8).collect(), a_done);
        assert_eq!(r.due(8), Some(a_done + REGROUP_GAP));
        // ...and goes with them.
        for i in 0..8u64 {
            r.arrived(a_done + us(150 + 50 * i), false);
        }
        assert_eq!(r.due(16), None);
    }

    #[test]
    fn a_renewal_waits_for_company_only_when_company_is_expected() {
        // No leases, or a few: nothing else will arrive within 10 ms.
        assert_eq!(linger_for([]), Duration::ZERO);
        assert_eq!(linger_for([9_000; 16]), Duration::ZERO);
        assert_eq!(
            linger_for([2_000; 60]),
            Duration::ZERO,
            "60 leases of 2 s: 0.9 expected"
        );
        // Enough that at least one more renewal is expected in the wait.
        assert_eq!(
            linger_for([2_000; 67]),
            RENEWAL_LINGER,
            "67 leases of 2 s: 1.005 expected"
        );
        assert_eq!(linger_for([9_000; 1_000]), RENEWAL_LINGER);
        assert_eq!(linger_for([9_000; 10_000]), RENEWAL_LINGER);
        // Short TTLs renew more often; a zero TTL cannot divide by zero.
        assert_eq!(linger_for([0]), RENEWAL_LINGER);
        assert_eq!(linger_for([u64::MAX; 3]), Duration::ZERO);
    }
}
