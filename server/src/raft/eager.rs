//! Eager replication: a leader's new entry leaves for its followers while
//! its own write of it is still syncing.
//!
//! openraft 0.9 appends to the log inside its core task and waits there for
//! the sync (`RaftCore::append_to_log` awaits the flush callback) before it
//! hands the entries to replication. A write therefore paid the leader's
//! fsync and then a follower's, one after the other (traced with
//! `perf record -e raw_syscalls:*,sched:*` on a one-client put load: the
//! AppendEntries left the leader 180 µs after the client's request, right
//! after the leader's `fdatasync` returned).
//!
//! [`EagerLog`] wraps the log store: when this node leads and appends one
//! entry of its own while replication to a follower is idle, it sends that
//! follower the AppendEntries openraft will send once the sync is done —
//! same vote, same previous log id, same entries, commit index `None` —
//! through the same network. The follower starts its own sync at once.
//! [`EagerNetwork`] wraps openraft's network: when openraft's AppendEntries
//! carries exactly the pushed entries (same vote, previous log id and last
//! log id), the push's success answers it and it is not sent again; any
//! other answer (a conflict, a later vote, no answer in time) and it goes out
//! as usual. A lone write thus costs a follower one exchange, as before, and
//! the two syncs overlap: 1 client, A/B on one machine, 1250 → 1600 writes/s
//! for the pushes, and 600–630 → 570–580 µs of cluster CPU per write once
//! openraft's request takes the push's answer.
//!
//! Why it is safe: every push is a message the leader of that term could
//! have sent (its own entries, after the entry that precedes them in its own
//! log), and Raft is safe under delayed, duplicated and reordered messages.
//! A follower that has moved to a later term rejects it, as it would a late
//! message. Its commit index is `None`, which commits nothing. A success
//! answers openraft's request truthfully: the follower holds those entries,
//! synced, after that previous entry, under that vote — what openraft's own
//! request would have established. Only the time differs: openraft counts
//! the exchange from when it asked, up to one sync after the follower really
//! heard from the leader. In openraft 0.9 that time feeds nothing but the
//! `millis_since_quorum_ack` metric (the quorum health check, bound by
//! seconds); a follower's own lease timer runs from what it receives.
//! Revisit if openraft starts serving reads on a leader lease.
//!
//! Tried and dropped: holding openraft's commit notice (the empty
//! AppendEntries it sends each follower at every commit) for the next push
//! to carry, which cut a lone write's messages by a third and its CPU by
//! 5–8 %, but made commits slower under the simulator's message delays
//! (dead-lease-bound failures at `--raft-net grpc` seed 295, and seed 35 of
//! 5 nodes); waiting only 10 ms for a push's answer (the same, seeds
//! 198 and 233); and sending the commit notice one way (a frame the
//! follower applies and does not answer, openraft told success at once,
//! only after the same client's last exchange confirmed the notice's
//! previous log id under its vote): clean in every simulator sweep, but no
//! cheaper — A/B at one client 593–615 µs of cluster CPU per write before,
//! 595–638 after, and 2–4 % fewer writes/s (a guess, not traced: with
//! replication idle sooner the second follower gets pushes too, and a
//! third sync joins the two on the shared disk).
//!
//! Limits: at most one push in flight per follower (an append that finds it
//! busy is not pushed; openraft's replication carries it as before), at most
//! [`MAX_PUSH_ENTRIES`] entries per push, a follower whose push failed is
//! left alone for a heartbeat, and openraft's request waits for a push's
//! answer no longer than its own deadline.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{BasicNode, LogState, OptionalSend, RaftLogReader, ServerState};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{Entry, LogId, NodeId, Raft, StorageError, TypeConfig, Vote};

/// Appends with more entries than this are left to openraft's replication.
/// A lone writer appends one entry at a time; under load the batches grow,
/// replication is rarely idle and the leader's sync is shared by many
/// writes, and pushing batches measured no better (2–5 % fewer writes/s at
/// 16 and 256 clients, within noise).
pub const MAX_PUSH_ENTRIES: usize = 1;

/// Sends a leader's freshly appended entries to its followers (see the
/// module docs). Cheap to clone; the log store and the arming task share it.
pub struct Eager<N: RaftNetworkFactory<TypeConfig>> {
    shared: Arc<Mutex<Armed<N>>>,
}

impl<N: RaftNetworkFactory<TypeConfig>> Clone for Eager<N> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// Whom to push to, while this node leads.
struct Armed<N> {
    network: N,
    /// What the pushes and openraft's clients share, per follower.
    followers: HashMap<NodeId, Arc<Follower>>,
    /// Each AppendEntries is given this long (openraft's own bound).
    ttl: Duration,
    /// The vote this node leads with; `None` while it does not lead.
    vote: Option<Vote>,
    targets: Vec<Target>,
}

impl<N> Armed<N> {
    /// The shared state of follower `id`.
    fn follower(&mut self, id: NodeId) -> Arc<Follower> {
        Arc::clone(self.followers.entry(id).or_default())
    }
}

/// What the push worker of a follower and openraft's clients of it share.
#[derive(Default)]
struct Follower {
    /// openraft's AppendEntries with entries in flight to it.
    replicating: AtomicUsize,
    /// The last push, until openraft's AppendEntries for the same entries
    /// takes its answer.
    pushed: Mutex<Option<Pushed>>,
}

/// A push sent (or being sent), and its answer once there: `true` for
/// success.
struct Pushed {
    vote: Vote,
    prev: Option<LogId>,
    last: LogId,
    answer: watch::Receiver<Option<bool>>,
}

impl Follower {
    fn pushed(&self) -> MutexGuard<'_, Option<Pushed>> {
        self.pushed.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The answer to the push of exactly what `rpc` carries, if there was
    /// one (forgetting any other push: openraft has moved past it).
    fn take_push(&self, rpc: &AppendEntriesRequest<TypeConfig>) -> Option<watch::Receiver<Option<bool>>> {
        let last = rpc.entries.last()?.log_id;
        let pushed = self.pushed().take()?;
        (pushed.vote == rpc.vote && pushed.prev == rpc.prev_log_id && pushed.last == last).then_some(pushed.answer)
    }
}

/// The push worker of one follower.
struct Target {
    id: NodeId,
    addr: String,
    /// No push in flight: the next append may be pushed.
    idle: Arc<AtomicBool>,
    shared: Arc<Follower>,
    requests: mpsc::UnboundedSender<AppendEntriesRequest<TypeConfig>>,
    task: JoinHandle<()>,
}

impl Drop for Target {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<N> Eager<N>
where
    N: RaftNetworkFactory<TypeConfig> + Clone,
{
    /// Pushes through clients of `network`, each AppendEntries bounded by
    /// `ttl`. Disarmed until the arming task ([`start_raft`]) sees this node
    /// lead.
    pub fn new(network: N, ttl: Duration) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Armed {
                network,
                followers: HashMap::new(),
                ttl,
                vote: None,
                targets: Vec::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Armed<N>> {
        // Nothing panics while holding it; the data stays consistent.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pushes `entries`, which follow `prev` in this node's log (`None`:
    /// unknown), to every idle follower — if this node leads with the vote
    /// that made them.
    fn offer(&self, prev: Option<Option<LogId>>, entries: &[Entry]) {
        let armed = self.lock();
        let push = match (armed.vote, prev, entries.first(), entries.last()) {
            // Only the leader's own entries of the term it leads (a
            // follower's appends, or a former leader's, never match). The
            // vote is this node's own, committed (see `arm`); one leader
            // per term, so the term identifies the leader's entries.
            (Some(vote), Some(prev), Some(first), Some(last))
                if entries.len() <= MAX_PUSH_ENTRIES
                    && first.log_id.leader_id.term == vote.leader_id().get_term()
                    && last.log_id.leader_id.term == first.log_id.leader_id.term =>
            {
                debug_assert_eq!(first.log_id.index, prev.map_or(0, |p| p.index + 1));
                Some((vote, prev))
            }
            _ => None,
        };
        for target in &armed.targets {
            let follower = &target.shared;
            // A follower that openraft is already sending entries to gets
            // these right after (its log sync is busy anyway): pushing
            // would only add messages. Helps when replication is idle,
            // which is when a write waits for the leader's sync.
            let push = push.filter(|_| {
                follower.replicating.load(Ordering::Acquire) == 0 && target.idle.swap(false, Ordering::AcqRel)
            });
            let Some((vote, prev)) = push else {
                continue;
            };
            let request = AppendEntriesRequest {
                vote,
                prev_log_id: prev,
                leader_commit: None,
                entries: entries.to_vec(),
            };
            if target.requests.send(request).is_err() {
                target.idle.store(true, Ordering::Release);
            }
        }
    }

    /// Leads with `vote` to `followers` (id, address), or stops pushing
    /// (`None`). Keeps the workers of followers that stay.
    fn set(&self, vote: Option<Vote>, followers: Vec<(NodeId, String)>) {
        let mut armed = self.lock();
        armed.vote = vote;
        if vote.is_none() {
            armed.targets.clear();
            return;
        }
        let same = armed.targets.len() == followers.len()
            && armed
                .targets
                .iter()
                .zip(&followers)
                .all(|(t, (id, addr))| t.id == *id && &t.addr == addr);
        if same {
            return;
        }
        let mut targets = Vec::with_capacity(followers.len());
        for (id, addr) in followers {
            let kept = armed.targets.iter().position(|t| t.id == id && t.addr == addr);
            let target = match kept {
                Some(i) => armed.targets.swap_remove(i),
                None => {
                    let shared = armed.follower(id);
                    spawn_target(armed.network.clone(), armed.ttl, id, addr, shared)
                }
            };
            targets.push(target);
        }
        armed.targets = targets;
    }

    /// Starts the task that arms the pushes while `raft` leads and disarms
    /// them when it stops: it reads the metrics every `every` (a heartbeat;
    /// they change with each applied entry, too often to follow). Ends when
    /// Raft shuts down.
    fn arm(&self, raft: Raft, every: Duration)
    where
        N: Send + 'static,
    {
        let eager = self.clone();
        tokio::spawn(async move {
            let metrics = raft.metrics();
            loop {
                let (vote, followers) = {
                    let m = metrics.borrow();
                    if m.state == ServerState::Leader && m.vote.is_committed() {
                        let followers = m
                            .membership_config
                            .nodes()
                            .filter(|(id, _)| **id != m.id)
                            .map(|(id, node)| (*id, node.addr.clone()))
                            .collect();
                        (Some(m.vote), followers)
                    } else {
                        (None, Vec::new())
                    }
                };
                eager.set(vote, followers);
                tokio::time::sleep(every).await;
                if metrics.has_changed().is_err() {
                    eager.set(None, Vec::new());
                    return; // Raft stopped.
                }
            }
        });
    }
}

/// Starts openraft on `log` and `network` with eager replication wired in
/// (both wrapped, and the arming task running), as rosterd and the
/// simulator run it.
pub async fn start_raft<L, N, SM>(
    id: NodeId,
    config: Arc<openraft::Config>,
    network: N,
    log: L,
    state: SM,
    heartbeat: Duration,
) -> Result<Raft, openraft::error::Fatal<NodeId>>
where
    L: RaftLogStorage<TypeConfig>,
    N: RaftNetworkFactory<TypeConfig> + Clone + Send + 'static,
    SM: openraft::storage::RaftStateMachine<TypeConfig>,
{
    let eager = Eager::new(network, heartbeat);
    let log = EagerLog::new(log, eager.clone());
    let raft = Raft::new(id, config, eager.network(), log, state).await?;
    eager.arm(raft.clone(), heartbeat);
    Ok(raft)
}

impl<N> Eager<N>
where
    N: RaftNetworkFactory<TypeConfig> + Clone,
{
    /// The network to give openraft: `network`'s clients, counting the
    /// AppendEntries with entries in flight to each follower.
    pub fn network(&self) -> EagerNetwork<N> {
        EagerNetwork {
            inner: self.lock().network.clone(),
            eager: self.clone(),
        }
    }
}

/// openraft's network, wrapped to tell [`Eager`] when replication to a
/// follower is busy.
pub struct EagerNetwork<N: RaftNetworkFactory<TypeConfig>> {
    inner: N,
    eager: Eager<N>,
}

impl<N> RaftNetworkFactory<TypeConfig> for EagerNetwork<N>
where
    N: RaftNetworkFactory<TypeConfig> + Clone,
{
    type Network = EagerClient<N::Network>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        let follower = self.eager.lock().follower(target);
        EagerClient {
            inner: self.inner.new_client(target, node).await,
            follower,
        }
    }
}

/// One of openraft's clients, counting its AppendEntries with entries.
pub struct EagerClient<C> {
    inner: C,
    follower: Arc<Follower>,
}

/// Counts one AppendEntries in flight for as long as it lives (a call
/// openraft drops on a timeout is uncounted too).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

type RpcResult<T, E = openraft::error::Infallible> = Result<T, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>>;

impl<C: RaftNetwork<TypeConfig>> RaftNetwork<TypeConfig> for EagerClient<C> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        if rpc.entries.is_empty() {
            return self.inner.append_entries(rpc, option).await;
        }
        let follower = &self.follower;
        follower.replicating.fetch_add(1, Ordering::AcqRel);
        let _counted = InFlight(&follower.replicating);
        // The same entries were pushed: the push's success answers this
        // request (see the module docs); anything else, and it is sent.
        if let Some(mut answer) = follower.take_push(&rpc) {
            let answered = tokio::time::timeout(option.hard_ttl(), answer.wait_for(Option::is_some))
                .await
                .is_ok_and(|answer| answer.is_ok_and(|answer| *answer == Some(true)));
            if answered {
                return Ok(AppendEntriesResponse::Success);
            }
        }
        self.inner.append_entries(rpc, option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
        self.inner.install_snapshot(rpc, option).await
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        self.inner.vote(rpc, option).await
    }
}

/// The worker pushing to follower `id`: one AppendEntries at a time; after
/// a failed one it rests for the request's bound before taking the next, so
/// a down follower costs a connection attempt per heartbeat at most.
fn spawn_target<N>(mut network: N, ttl: Duration, id: NodeId, addr: String, shared: Arc<Follower>) -> Target
where
    N: RaftNetworkFactory<TypeConfig>,
{
    let (requests, mut incoming) = mpsc::unbounded_channel::<AppendEntriesRequest<TypeConfig>>();
    let idle = Arc::new(AtomicBool::new(true));
    let task = tokio::spawn({
        let idle = Arc::clone(&idle);
        let shared = Arc::clone(&shared);
        let node = BasicNode::new(&addr);
        async move {
            let mut client = network.new_client(id, &node).await;
            while let Some(request) = incoming.recv().await {
                let Some(last) = request.entries.last().map(|e| e.log_id) else {
                    continue;
                };
                let (answer, answered) = watch::channel(None);
                *shared.pushed() = Some(Pushed {
                    vote: request.vote,
                    prev: request.prev_log_id,
                    last,
                    answer: answered,
                });
                let reply = client.append_entries(request, RPCOption::new(ttl)).await;
                tracing::trace!(follower = id, %last, ?reply, "pushed");
                answer.send_replace(Some(matches!(reply, Ok(AppendEntriesResponse::Success))));
                if reply.is_err() {
                    tokio::time::sleep(ttl).await;
                }
                idle.store(true, Ordering::Release);
            }
        }
    });
    Target {
        id,
        addr,
        idle,
        shared,
        requests,
        task,
    }
}

/// A log store that pushes the leader's appends ahead of openraft's
/// replication (see the module docs); everything else goes to `inner`.
pub struct EagerLog<L, N: RaftNetworkFactory<TypeConfig>> {
    inner: L,
    eager: Eager<N>,
    /// The last log id in the log, when known: the `prev_log_id` of the next
    /// append. Unknown after a truncation until the next append.
    last: Option<Option<LogId>>,
}

impl<L, N> EagerLog<L, N>
where
    N: RaftNetworkFactory<TypeConfig>,
{
    pub fn new(inner: L, eager: Eager<N>) -> Self {
        Self {
            inner,
            eager,
            last: None,
        }
    }
}

impl<L, N> RaftLogReader<TypeConfig> for EagerLog<L, N>
where
    L: RaftLogStorage<TypeConfig>,
    N: RaftNetworkFactory<TypeConfig> + Clone,
{
    async fn try_get_log_entries<RB>(&mut self, range: RB) -> Result<Vec<Entry>, StorageError>
    where
        RB: std::ops::RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend,
    {
        self.inner.try_get_log_entries(range).await
    }
}

impl<L, N> RaftLogStorage<TypeConfig> for EagerLog<L, N>
where
    L: RaftLogStorage<TypeConfig>,
    N: RaftNetworkFactory<TypeConfig> + Clone,
{
    type LogReader = L::LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let state = self.inner.get_log_state().await?;
        self.last = Some(state.last_log_id);
        Ok(state)
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.inner.get_log_reader().await
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.inner.save_vote(vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.inner.read_vote().await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        self.inner.save_committed(committed).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.inner.read_committed().await
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else {
            return self.inner.append(entries, callback).await;
        };
        let first = entries[0].log_id.index;
        // Pushed only when the entries extend the log this node knows, so
        // `prev` is the entry right before them in its own log. A follower
        // may get them before this node's own write of them starts: Raft
        // allows it (this node's copy counts toward a commit only once
        // openraft hears it is synced).
        let prev = self.last.filter(|prev| prev.map_or(0, |p| p.index + 1) == first);
        self.eager.offer(prev, &entries);
        self.last = None;
        self.inner.append(entries, callback).await?;
        self.last = Some(Some(last));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.last = None;
        self.inner.truncate(log_id).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.inner.purge(log_id).await?;
        if let Some(last) = &mut self.last {
            if *last < Some(log_id) {
                *last = Some(log_id);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::storage::RaftLogStorageExt;
    use openraft::{CommittedLeaderId, EntryPayload};
    use tokio::sync::Semaphore;

    use super::super::disk::Disk;
    use super::super::log_store::LogStore;
    use super::*;

    /// An AppendEntries as recorded: to whom, and what.
    type Sent = (NodeId, AppendEntriesRequest<TypeConfig>);

    /// A network whose clients record every AppendEntries and answer
    /// success once `gate` lets them (closed gate: the call hangs).
    #[derive(Clone)]
    struct Recorder {
        sent: Arc<Mutex<Vec<Sent>>>,
        gate: Arc<Semaphore>,
        /// Answer `Conflict` instead of success.
        conflict: Arc<AtomicBool>,
    }

    impl Recorder {
        fn new() -> Self {
            Self {
                sent: Arc::default(),
                gate: Arc::new(Semaphore::new(GATE)),
                conflict: Arc::default(),
            }
        }

        fn sent(&self) -> Vec<Sent> {
            self.sent.lock().unwrap().clone()
        }
    }

    struct RecorderClient {
        target: NodeId,
        net: Recorder,
    }

    impl RaftNetworkFactory<TypeConfig> for Recorder {
        type Network = RecorderClient;

        async fn new_client(&mut self, target: NodeId, _node: &BasicNode) -> RecorderClient {
            RecorderClient {
                target,
                net: self.clone(),
            }
        }
    }

    impl RaftNetwork<TypeConfig> for RecorderClient {
        async fn append_entries(
            &mut self,
            rpc: AppendEntriesRequest<TypeConfig>,
            _option: RPCOption,
        ) -> RpcResult<AppendEntriesResponse<NodeId>> {
            self.net.sent.lock().unwrap().push((self.target, rpc));
            let _permit = self.net.gate.acquire().await.expect("gate open");
            Ok(match self.net.conflict.load(Ordering::SeqCst) {
                true => AppendEntriesResponse::Conflict,
                false => AppendEntriesResponse::Success,
            })
        }

        async fn install_snapshot(
            &mut self,
            _rpc: InstallSnapshotRequest<TypeConfig>,
            _option: RPCOption,
        ) -> RpcResult<InstallSnapshotResponse<NodeId>, InstallSnapshotError> {
            unreachable!("pushes are AppendEntries only")
        }

        async fn vote(&mut self, _rpc: VoteRequest<NodeId>, _option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
            unreachable!("pushes are AppendEntries only")
        }
    }

    fn entry(term: u64, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    const TTL: Duration = Duration::from_millis(100);
    /// Permits of a recorder's gate: all taken, every answer waits.
    const GATE: usize = 1000;

    /// A log store on a fresh data dir, wrapped, that has read its state
    /// as openraft does at start, and the recorder behind its pushes.
    async fn store(dir: &std::path::Path) -> (EagerLog<LogStore, Recorder>, Eager<Recorder>, Recorder) {
        let (disk, _) = Disk::open(dir, "eager", 1).unwrap();
        let net = Recorder::new();
        let eager = Eager::new(net.clone(), TTL);
        let mut log = EagerLog::new(LogStore::new(disk), eager.clone());
        log.get_log_state().await.unwrap();
        (log, eager, net)
    }

    /// Polls until `n` AppendEntries were recorded (the pushers are tasks).
    async fn wait_for(net: &Recorder, n: usize) -> Vec<Sent> {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let sent = net.sent();
                if sent.len() >= n {
                    return sent;
                }
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("expected {n} pushes, got {:?}", net.sent()))
    }

    /// Lets every task that can run, run (a current-thread runtime).
    async fn settle() {
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
    }

    fn followers() -> Vec<(NodeId, String)> {
        vec![(2, "n2:1".into()), (3, "n3:1".into())]
    }

    #[tokio::test]
    async fn a_leaders_append_goes_to_each_follower_as_openraft_would_send_it() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, eager, net) = store(dir.path()).await;
        // Not leading yet: nothing leaves.
        log.blocking_append([entry(1, 0), entry(1, 1)]).await.unwrap();
        eager.set(Some(Vote::new_committed(2, 1)), followers());
        log.blocking_append([entry(2, 2)]).await.unwrap();
        let mut sent = wait_for(&net, 2).await;
        sent.sort_by_key(|(to, _)| *to);
        for ((to, rpc), want) in sent.iter().zip([2, 3]) {
            assert_eq!(*to, want);
            assert_eq!(rpc.vote, Vote::new_committed(2, 1));
            assert_eq!(rpc.prev_log_id, Some(entry(1, 1).log_id));
            assert_eq!(rpc.leader_commit, None, "a push commits nothing");
            assert_eq!(rpc.entries.len(), 1);
            assert_eq!(rpc.entries[0].log_id, entry(2, 2).log_id);
        }

        // Entries of another term (a follower's appends) are not pushed;
        // neither is an append larger than the limit.
        log.blocking_append([entry(3, 3)]).await.unwrap();
        let many: Vec<Entry> = (4..5 + MAX_PUSH_ENTRIES as u64).map(|i| entry(2, i)).collect();
        log.blocking_append(many).await.unwrap();
        settle().await;
        assert_eq!(net.sent().len(), 2);

        // Disarmed (no longer leading): nothing leaves.
        eager.set(None, Vec::new());
        log.blocking_append([entry(2, 5 + MAX_PUSH_ENTRIES as u64)])
            .await
            .unwrap();
        settle().await;
        assert_eq!(net.sent().len(), 2);
    }

    #[tokio::test]
    async fn after_a_truncation_the_previous_entry_is_unknown_until_the_next_append() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, eager, net) = store(dir.path()).await;
        eager.set(Some(Vote::new_committed(1, 1)), vec![(2, "n2:1".into())]);
        for i in 0..3 {
            log.blocking_append([entry(1, i)]).await.unwrap();
            wait_for(&net, i as usize + 1).await;
            settle().await;
        }
        log.truncate(entry(1, 2).log_id).await.unwrap();
        log.blocking_append([entry(1, 2)]).await.unwrap();
        settle().await;
        assert_eq!(net.sent().len(), 3, "pushed with a previous entry it could not know");
        log.blocking_append([entry(1, 3)]).await.unwrap();
        let sent = wait_for(&net, 4).await;
        assert_eq!(sent[3].1.prev_log_id, Some(entry(1, 2).log_id));
        settle().await;
        // A purge past the end leaves the purged id as the previous one.
        log.purge(entry(1, 3).log_id).await.unwrap();
        log.blocking_append([entry(1, 4)]).await.unwrap();
        let sent = wait_for(&net, 5).await;
        assert_eq!(sent[4].1.prev_log_id, Some(entry(1, 3).log_id));
    }

    #[tokio::test]
    async fn a_busy_follower_is_not_pushed_to() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, eager, net) = store(dir.path()).await;
        eager.set(Some(Vote::new_committed(1, 1)), vec![(2, "n2:1".into())]);
        // Hold every answer: the first push stays in flight.
        let held = net.gate.acquire_many(GATE as u32).await.unwrap();
        log.blocking_append([entry(1, 0)]).await.unwrap();
        wait_for(&net, 1).await;
        log.blocking_append([entry(1, 1)]).await.unwrap();
        settle().await;
        assert_eq!(net.sent().len(), 1, "a second push while one is in flight");
        drop(held);
        settle().await;

        // openraft's own AppendEntries with entries in flight to it: no push.
        let mut replication = eager.network().new_client(2, &BasicNode::new("n2:1")).await;
        let held = net.gate.acquire_many(GATE as u32).await.unwrap();
        let rpc = AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: Some(entry(1, 0).log_id),
            leader_commit: None,
            entries: vec![entry(1, 1)],
        };
        let call = tokio::spawn(async move { replication.append_entries(rpc, RPCOption::new(TTL)).await.is_ok() });
        wait_for(&net, 2).await;
        log.blocking_append([entry(1, 2)]).await.unwrap();
        settle().await;
        assert_eq!(net.sent().len(), 2, "pushed while openraft was sending entries");
        drop(held);
        assert!(call.await.unwrap());
        // Replication idle again: the next append is pushed.
        log.blocking_append([entry(1, 3)]).await.unwrap();
        let sent = wait_for(&net, 3).await;
        assert_eq!(sent[2].1.entries[0].log_id, entry(1, 3).log_id);
    }

    /// openraft's AppendEntries as its replication would send it.
    async fn replicate(
        client: &mut EagerClient<RecorderClient>,
        prev: Option<Entry>,
        entries: &[Entry],
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let prev = prev.map(|e| e.log_id);
        let rpc = AppendEntriesRequest {
            vote: Vote::new_committed(1, 1),
            prev_log_id: prev,
            leader_commit: prev,
            entries: entries.to_vec(),
        };
        client.append_entries(rpc, RPCOption::new(TTL)).await
    }

    #[tokio::test]
    async fn openraft_request_for_pushed_entries_is_answered_by_the_push_success() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, eager, net) = store(dir.path()).await;
        eager.set(Some(Vote::new_committed(1, 1)), vec![(2, "n2:1".into())]);
        let mut replication = eager.network().new_client(2, &BasicNode::new("n2:1")).await;

        // Pushed, then asked for by openraft: answered without a second send.
        log.blocking_append([entry(1, 0)]).await.unwrap();
        wait_for(&net, 1).await;
        let answer = replicate(&mut replication, None, &[entry(1, 0)]).await;
        assert!(matches!(answer, Ok(AppendEntriesResponse::Success)), "{answer:?}");
        assert_eq!(net.sent().len(), 1, "the pushed entries were sent again");

        // openraft asks for something else than the push (more entries):
        // sent, and the push is forgotten.
        settle().await;
        log.blocking_append([entry(1, 1)]).await.unwrap();
        wait_for(&net, 2).await;
        let answer = replicate(&mut replication, None, &[entry(1, 0), entry(1, 1)]).await;
        assert!(matches!(answer, Ok(AppendEntriesResponse::Success)), "{answer:?}");
        assert_eq!(net.sent().len(), 3);
        let answer = replicate(&mut replication, Some(entry(1, 0)), &[entry(1, 1)]).await;
        assert!(answer.is_ok());
        assert_eq!(net.sent().len(), 4, "a push answered a request after another one");

        // A push that did not succeed answers nothing: openraft's request
        // goes out (and gets the follower's own answer).
        settle().await;
        net.conflict.store(true, Ordering::SeqCst);
        log.blocking_append([entry(1, 2)]).await.unwrap();
        wait_for(&net, 5).await;
        let answer = replicate(&mut replication, Some(entry(1, 1)), &[entry(1, 2)]).await;
        assert!(matches!(answer, Ok(AppendEntriesResponse::Conflict)), "{answer:?}");
        assert_eq!(net.sent().len(), 6);
    }
}
