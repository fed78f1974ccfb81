//! Eager replication: a leader's new entries leave for its followers while
//! its own write of them is still syncing.
//!
//! openraft 0.9 appends to the log inside its core task and waits there for
//! the sync (`RaftCore::append_to_log` awaits the flush callback) before it
//! hands the entries to replication. A write therefore paid the leader's
//! fsync and then a follower's, one after the other (traced with
//! `perf record -e raw_syscalls:*,sched:*` on a one-client put load: the
//! AppendEntries left the leader 180 µs after the client's request, right
//! after the leader's `fdatasync` returned).
//!
//! [`EagerLog`] wraps the log store: when this node leads and appends its own
//! entries, it sends each follower the AppendEntries that openraft will send
//! once the sync is done — same vote, same previous log id, same entries —
//! through the same network. The follower starts its own sync at once; when
//! openraft's AppendEntries comes, the entries are there and the answer
//! follows that sync. Nothing is answered to openraft from these pushes:
//! their replies are dropped, and openraft's replication, commit index and
//! leader lease rest only on its own requests and their replies.
//!
//! Why it is safe: every push is a message the leader of that term could
//! have sent (its own entries, after the entry that precedes them in its own
//! log), and Raft is safe under delayed, duplicated and reordered messages.
//! A follower that has moved to a later term rejects it, as it would a late
//! message. Its commit index is `None`, which commits nothing.
//!
//! Limits: at most one push in flight per follower (an append that finds it
//! busy is not pushed; openraft's replication carries it as before), at most
//! [`MAX_PUSH_ENTRIES`] entries per push, and a follower whose push failed is
//! left alone for a heartbeat.

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
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Entry, LogId, NodeId, Raft, StorageError, TypeConfig, Vote};

/// Appends with more entries than this are left to openraft's replication:
/// under load the batches are large and the sync is shared by many writes.
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
    /// Per follower, how many of openraft's AppendEntries carrying entries
    /// are in flight (see [`EagerNetwork`]).
    replicating: HashMap<NodeId, Arc<AtomicUsize>>,
    /// Each AppendEntries is given this long (openraft's own bound).
    ttl: Duration,
    /// The vote this node leads with; `None` while it does not lead.
    vote: Option<Vote>,
    targets: Vec<Target>,
}

impl<N> Armed<N> {
    /// The in-flight counter of follower `id`, shared by its push worker
    /// and openraft's clients of it.
    fn counter(&mut self, id: NodeId) -> Arc<AtomicUsize> {
        Arc::clone(self.replicating.entry(id).or_default())
    }
}

/// The push worker of one follower.
struct Target {
    id: NodeId,
    addr: String,
    /// No push in flight: the next append may be pushed.
    idle: Arc<AtomicBool>,
    /// openraft's AppendEntries with entries in flight to this follower.
    replicating: Arc<AtomicUsize>,
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
    /// `ttl`. Disarmed until [`Eager::arm`]'s task sees this node lead.
    pub fn new(network: N, ttl: Duration) -> Self {
        Self {
            shared: Arc::new(Mutex::new(Armed {
                network,
                replicating: HashMap::new(),
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

    /// Pushes `entries`, which follow `prev` in this node's log, to every
    /// idle follower — if this node leads with the vote that made them.
    fn offer(&self, prev: Option<LogId>, entries: &[Entry]) {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return;
        };
        if entries.len() > MAX_PUSH_ENTRIES {
            return;
        }
        let armed = self.lock();
        let Some(vote) = armed.vote else {
            return;
        };
        // Only the leader's own entries of the term it leads (a follower's
        // appends, or a former leader's, never match).
        // (The vote is this node's own, committed: see `arm`. One leader
        // per term, so the term identifies the leader's entries.)
        let term = vote.leader_id().get_term();
        if first.log_id.leader_id.term != term || last.log_id.leader_id.term != term {
            return;
        }
        debug_assert_eq!(first.log_id.index, prev.map_or(0, |p| p.index + 1));
        for target in &armed.targets {
            // A follower that openraft is already sending entries to gets
            // these right after (its log sync is busy anyway): pushing
            // would only add messages. Helps when replication is idle,
            // which is when a write waits for the leader's sync.
            if target.replicating.load(Ordering::Acquire) == 0 && target.idle.swap(false, Ordering::AcqRel) {
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
                    let replicating = armed.counter(id);
                    spawn_target(armed.network.clone(), armed.ttl, id, addr, replicating)
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
    pub fn arm(&self, raft: Raft, every: Duration) -> JoinHandle<()>
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
        })
    }
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
        let replicating = self.eager.lock().counter(target);
        EagerClient {
            inner: self.inner.new_client(target, node).await,
            replicating,
        }
    }
}

/// One of openraft's clients, counting its AppendEntries with entries.
pub struct EagerClient<C> {
    inner: C,
    replicating: Arc<AtomicUsize>,
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
        let _counted = (!rpc.entries.is_empty()).then(|| {
            self.replicating.fetch_add(1, Ordering::AcqRel);
            InFlight(&self.replicating)
        });
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
fn spawn_target<N>(mut network: N, ttl: Duration, id: NodeId, addr: String, replicating: Arc<AtomicUsize>) -> Target
where
    N: RaftNetworkFactory<TypeConfig>,
{
    let (requests, mut incoming) = mpsc::unbounded_channel::<AppendEntriesRequest<TypeConfig>>();
    let idle = Arc::new(AtomicBool::new(true));
    let task = tokio::spawn({
        let idle = Arc::clone(&idle);
        let node = BasicNode::new(&addr);
        async move {
            let mut client = network.new_client(id, &node).await;
            while let Some(request) = incoming.recv().await {
                let last = request.entries.last().map(|e| e.log_id);
                let reply = client.append_entries(request, RPCOption::new(ttl)).await;
                tracing::trace!(follower = id, ?last, ?reply, "pushed");
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
        replicating,
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
        // `prev` is the entry right before them in its own log.
        let prev = match self.last {
            Some(prev) if prev.map_or(0, |p| p.index + 1) == first => Some(prev),
            _ => None,
        };
        // A follower may get the entries before this node's own write of
        // them starts: Raft allows it (this node's copy counts toward a
        // commit only once openraft hears it is synced).
        if let Some(prev) = prev {
            self.eager.offer(prev, &entries);
        }
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
    }

    impl Recorder {
        fn new() -> Self {
            Self {
                sent: Arc::default(),
                gate: Arc::new(Semaphore::new(GATE)),
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
            Ok(AppendEntriesResponse::Success)
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
}
