//! Proposal batching: writes that arrive while earlier ones are being
//! committed share one log entry.
//!
//! Why: every log entry costs the leader's Raft core a message, a log
//! record, a replication slot and an apply step, whatever its size. Under
//! load those per-entry costs, not the disk or the network, bound how many
//! writes a second the cluster commits: with 256 writers the core spent
//! about 8 ms between two AppendEntries to a follower working through its
//! queue of one-write entries. A [`Batcher`] keeps at most [`IN_FLIGHT`]
//! proposals in Raft; whatever queues up behind them goes into the next
//! proposal as one [`Op::Batch`] entry, applied command by command (each
//! with its own revision, deduplication and answer, exactly as if they had
//! been separate entries in that order).
//!
//! A lone write is proposed at once as a plain entry: batching adds no wait
//! and no bytes when there is nothing to batch. Batches grow with load, up
//! to [`MAX_BATCH_COMMANDS`] commands and about [`MAX_BATCH_BYTES`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tokio::time::Instant;

use super::route::RouteError;
use crate::state::command::{Command, CompareTarget, Op, Response, TxnAction};

/// Proposals in Raft at once. Two keep the leader's log append of the next
/// batch overlapping the replication of the previous one.
pub const IN_FLIGHT: usize = 2;
/// Most commands in one batch entry.
pub const MAX_BATCH_COMMANDS: usize = 1024;
/// A batch stops growing once its commands' payloads reach this size; one
/// large write (up to the request limit) always travels alone.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;
/// Writes waiting for a proposal; further ones wait to be queued.
const QUEUE: usize = 4 * MAX_BATCH_COMMANDS;

/// What the batcher's proposals go through: the local Raft in rosterd, a
/// fake in tests.
pub type ProposeFn =
    Arc<dyn Fn(Command) -> Pin<Box<dyn Future<Output = Result<Response, RouteError>> + Send>> + Send + Sync>;

type Reply = oneshot::Sender<Result<Response, RouteError>>;
/// A queued command, the deadline of its caller, and where its answer goes.
type Queued = (Command, Instant, Reply);

/// Queues commands for the batching task. Cloning shares the queue.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Queued>,
    in_flight: Arc<Semaphore>,
    propose: ProposeFn,
}

impl Batcher {
    /// Starts the batching task on the current runtime; it ends when every
    /// `Batcher` clone is dropped.
    pub fn start(propose: ProposeFn) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        let in_flight = Arc::new(Semaphore::new(IN_FLIGHT));
        tokio::spawn(run(rx, Arc::clone(&in_flight), Arc::clone(&propose)));
        Self { tx, in_flight, propose }
    }

    /// Proposes `command` (alone or in a batch) and returns its own answer,
    /// waiting until `deadline` at most. Neither the deadline nor dropping
    /// this future withdraws a command already proposed: it may still
    /// commit (as any timed-out write may).
    pub async fn propose(&self, command: Command, deadline: Instant) -> Result<Response, RouteError> {
        // Nothing queued and room in the pipeline: propose from this task,
        // saving the hand-offs to the batching task and back. (A permit is
        // free only when the batching task is not waiting for one.)
        if self.tx.capacity() == QUEUE {
            if let Ok(permit) = Arc::clone(&self.in_flight).try_acquire_owned() {
                let answer = bounded(deadline, (self.propose)(command)).await;
                drop(permit);
                return answer;
            }
        }
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((command, deadline, reply))
            .await
            .map_err(|_| RouteError::ShuttingDown)?;
        answer.await.map_err(|_| RouteError::ShuttingDown)?
    }
}

async fn run(mut rx: mpsc::Receiver<Queued>, in_flight: Arc<Semaphore>, propose: ProposeFn) {
    // A command that did not fit the previous batch starts the next one.
    let mut carried: Option<Queued> = None;
    loop {
        let first = match carried.take() {
            Some(first) => first,
            None => match rx.recv().await {
                Some(first) => first,
                None => return,
            },
        };
        // Whatever arrives while this waits joins the batch below.
        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
            return;
        };
        if abandoned(&first) {
            continue;
        }
        let mut bytes = payload_bytes(&first.0);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS && bytes < MAX_BATCH_BYTES {
            let Ok(next) = rx.try_recv() else { break };
            if abandoned(&next) {
                continue;
            }
            let size = payload_bytes(&next.0);
            if bytes + size > MAX_BATCH_BYTES {
                carried = Some(next);
                break;
            }
            bytes += size;
            batch.push(next);
        }
        let propose = Arc::clone(&propose);
        tokio::spawn(async move {
            submit(&propose, batch).await;
            drop(permit);
        });
    }
}

/// Whether the caller of a queued command has stopped waiting (its
/// deadline passed): it is then never proposed. Commands queue while the
/// pipeline is stuck, e.g. on a leader cut off from its quorum; proposing
/// them when this node leads again, maybe many seconds later, would apply
/// writes nobody waits for any more (a lease keeper's renewal from before a
/// client died, found by the simulator: 3 nodes, seeds 131 and 156, a dead
/// client's lease renewed 12 s after its death).
fn abandoned((_, _, reply): &Queued) -> bool {
    reply.is_closed()
}

/// `proposal`, given up at `deadline`. A proposal must not hold its place
/// in the pipeline for ever: openraft may leave a write unanswered while
/// leadership comes and goes (found by the simulator: 5 nodes seed 8, 3
/// nodes seed 679; both pipeline places were held by such writes, and the
/// leader committed nothing more for the rest of the run).
async fn bounded(
    deadline: Instant,
    proposal: impl Future<Output = Result<Response, RouteError>>,
) -> Result<Response, RouteError> {
    tokio::time::timeout_at(deadline, proposal).await.unwrap_or_else(|_| {
        Err(RouteError::Timeout(
            "not committed before the deadline; outcome unknown, retry with the same request id".into(),
        ))
    })
}

/// Proposes `batch` as one entry and hands each command its answer.
async fn submit(propose: &ProposeFn, mut batch: Vec<Queued>) {
    if batch.len() == 1 {
        let (command, deadline, reply) = batch.pop().expect("one command");
        let _ = reply.send(bounded(deadline, propose(command)).await);
        return;
    }
    // The batch is waited for as long as its most patient caller waits.
    let deadline = batch.iter().map(|(_, d, _)| *d).max().expect("a batch has commands");
    let (commands, replies): (Vec<Command>, Vec<Reply>) = batch.into_iter().map(|(c, _, r)| (c, r)).unzip();
    let count = commands.len();
    let entry = Command {
        request_id: None,
        stamp_ms: commands.iter().map(|c| c.stamp_ms).max().unwrap_or(0),
        op: Op::Batch(commands),
    };
    match bounded(deadline, propose(entry)).await {
        Ok(Response::Batch(answers)) if answers.len() == count => {
            for (reply, answer) in replies.into_iter().zip(answers) {
                let _ = reply.send(Ok(answer));
            }
        }
        Ok(other) => {
            let error = RouteError::Internal(format!(
                "a batch of {count} commands was answered with {}",
                summary(&other)
            ));
            for reply in replies {
                let _ = reply.send(Err(error.clone()));
            }
        }
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(e.clone()));
            }
        }
    }
}

fn summary(response: &Response) -> String {
    match response {
        Response::Batch(answers) => format!("{} answers", answers.len()),
        other => format!("{other:?}"),
    }
}

/// The bulk of a command's encoded size: its keys and values. Small fixed
/// fields are ignored; the byte budget is a soft bound on entry size.
fn payload_bytes(command: &Command) -> usize {
    const FIXED: usize = 64;
    FIXED
        + match &command.op {
            Op::Put(p) => p.key.len() + p.value.len(),
            Op::Delete(d) => d.key.len(),
            Op::Txn(t) => {
                let compares: usize = t
                    .compare
                    .iter()
                    .map(|c| {
                        c.key.len()
                            + match &c.target {
                                CompareTarget::Value(v) => v.len(),
                                _ => 8,
                            }
                    })
                    .sum();
                let actions: usize = t
                    .success
                    .iter()
                    .chain(&t.failure)
                    .map(|a| match a {
                        TxnAction::Put(p) => p.key.len() + p.value.len() + FIXED,
                        TxnAction::Delete(d) => d.key.len() + FIXED,
                        TxnAction::Range(r) => r.key.len() + FIXED,
                    })
                    .sum();
                compares + actions
            }
            Op::LeaseRenew(r) => 8 * r.ids.len(),
            Op::LeaseCheckpoint(c) => 16 * c.leases.len(),
            Op::LeaseExpire(e) => 16 * e.leases.len(),
            Op::Batch(commands) => commands.iter().map(payload_bytes).sum(),
            _ => 512,
        }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::state::command::{Ack, PutOp, Rejection};

    fn put(key: &str, value_bytes: usize) -> Command {
        Command {
            request_id: None,
            stamp_ms: 7,
            op: Op::Put(PutOp {
                key: key.as_bytes().to_vec(),
                value: vec![b'v'; value_bytes],
                ..Default::default()
            }),
        }
    }

    fn key_of(command: &Command) -> String {
        match &command.op {
            Op::Put(p) => String::from_utf8(p.key.clone()).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// A fake Raft: records each proposed entry, answers each command with
    /// an `Ack` whose revision is its position overall, after `gate` opens.
    fn recorder(entries: Arc<Mutex<Vec<Vec<String>>>>, gate: Arc<Semaphore>) -> ProposeFn {
        let next = Arc::new(Mutex::new(0u64));
        Arc::new(move |entry: Command| {
            let entries = Arc::clone(&entries);
            let gate = Arc::clone(&gate);
            let next = Arc::clone(&next);
            Box::pin(async move {
                let keys: Vec<String> = match &entry.op {
                    Op::Batch(commands) => commands.iter().map(key_of).collect(),
                    _ => vec![key_of(&entry)],
                };
                entries.lock().unwrap().push(keys.clone());
                gate.acquire().await.unwrap().forget();
                let mut answer = |_: &String| {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    Response::GroupCreate(Ack { revision: *n })
                };
                Ok(match &entry.op {
                    Op::Batch(_) => Response::Batch(keys.iter().map(&mut answer).collect()),
                    _ => answer(&keys[0]),
                })
            })
        })
    }

    type Call = tokio::task::JoinHandle<Result<Response, RouteError>>;

    fn far() -> Instant {
        Instant::now() + std::time::Duration::from_secs(3600)
    }

    /// A batcher over [`recorder`], whose proposals wait for `gate`.
    struct Harness {
        entries: Arc<Mutex<Vec<Vec<String>>>>,
        gate: Arc<Semaphore>,
        batcher: Batcher,
    }

    impl Harness {
        fn new(permits: usize) -> Harness {
            let entries: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();
            let gate = Arc::new(Semaphore::new(permits));
            let batcher = Batcher::start(recorder(Arc::clone(&entries), Arc::clone(&gate)));
            Harness { entries, gate, batcher }
        }

        /// Proposes a put of `key` from a task of its own.
        fn send(&self, key: &str, value_bytes: usize) -> Call {
            let (b, command) = (self.batcher.clone(), put(key, value_bytes));
            tokio::spawn(async move { b.propose(command, far()).await })
        }

        /// The same, returning once the put is in Raft (there was room in
        /// the pipeline).
        async fn send_proposed(&self, key: &str, value_bytes: usize) -> Call {
            let before = self.entries().len();
            let call = self.send(key, value_bytes);
            while self.entries().len() == before {
                tokio::task::yield_now().await;
            }
            call
        }

        /// Fills the pipeline with [`IN_FLIGHT`] lone puts, keys `{prefix}0`...
        async fn fill_pipeline(&self, prefix: &str) -> Vec<Call> {
            let mut calls = Vec::new();
            for i in 0..IN_FLIGHT {
                calls.push(self.send_proposed(&format!("{prefix}{i}"), 1).await);
            }
            calls
        }

        /// Waits until `n` commands wait for a proposal: the batching task
        /// holds the first while it waits for room in the pipeline, the
        /// rest are in its queue.
        async fn queued(&self, n: usize) {
            while QUEUE - self.batcher.tx.capacity() < n - 1 {
                tokio::task::yield_now().await;
            }
        }

        fn entries(&self) -> Vec<Vec<String>> {
            self.entries.lock().unwrap().clone()
        }
    }

    #[tokio::test]
    async fn a_lone_write_is_a_plain_entry() {
        let h = Harness::new(100);
        let answer = h.batcher.propose(put("a", 1), far()).await.unwrap();
        assert_eq!(answer, Response::GroupCreate(Ack { revision: 1 }));
        assert_eq!(h.entries(), vec![vec!["a".to_string()]]);
    }

    #[tokio::test]
    async fn writes_queued_behind_full_pipeline_share_an_entry_and_get_their_own_answers() {
        let h = Harness::new(0);
        // Fill the pipeline with IN_FLIGHT lone writes, then queue ten more.
        let mut calls = h.fill_pipeline("k0").await;
        for i in IN_FLIGHT..IN_FLIGHT + 10 {
            calls.push(h.send(&format!("k{i:02}"), 1));
        }
        h.queued(10).await;
        // Let everything through; wait for every answer.
        h.gate.add_permits(1_000);
        let mut revisions = Vec::new();
        for call in calls {
            match call.await.unwrap().unwrap() {
                Response::GroupCreate(Ack { revision }) => revisions.push(revision),
                other => panic!("unexpected {other:?}"),
            }
        }
        let entries = h.entries();
        assert_eq!(entries.len(), IN_FLIGHT + 1, "{entries:?}");
        assert!(entries[..IN_FLIGHT].iter().all(|e| e.len() == 1));
        let batched: Vec<String> = (IN_FLIGHT..IN_FLIGHT + 10).map(|i| format!("k{i:02}")).collect();
        assert_eq!(entries[IN_FLIGHT], batched, "in arrival order");
        // Every caller got a distinct answer: the one for its own command.
        revisions.sort_unstable();
        revisions.dedup();
        assert_eq!(revisions.len(), IN_FLIGHT + 10);
    }

    #[tokio::test]
    async fn the_byte_budget_splits_batches_and_a_large_write_travels_alone() {
        let h = Harness::new(0);
        let sizes = [1, 1, 600_000, 600_000, 10, 10, 2_000_000, 10];
        let mut calls = Vec::new();
        for (i, size) in sizes.into_iter().enumerate() {
            calls.push(if i < IN_FLIGHT {
                h.send_proposed(&format!("k{i}"), size).await
            } else {
                h.send(&format!("k{i}"), size)
            });
        }
        h.queued(sizes.len() - IN_FLIGHT).await;
        h.gate.add_permits(1_000);
        for call in calls {
            call.await.unwrap().unwrap();
        }
        let entries = h.entries();
        let shape: Vec<usize> = entries.iter().map(Vec::len).collect();
        // k0, k1 alone (pipeline), then k2 (600 kB; k3 would pass 1 MiB),
        // k3 + k4 + k5, k6 (2 MB) alone, k7.
        assert_eq!(shape, vec![1, 1, 1, 3, 1, 1], "{entries:?}");
        assert_eq!(entries[3], vec!["k3", "k4", "k5"]);
    }

    #[tokio::test]
    async fn writes_whose_callers_gave_up_are_never_proposed() {
        let h = Harness::new(0);
        let stuck = h.fill_pipeline("s").await;
        // Five writes queue behind the stuck pipeline; their callers give up.
        let gave_up: Vec<Call> = (0..5).map(|i| h.send(&format!("gone{i}"), 1)).collect();
        h.queued(5).await;
        for call in gave_up {
            call.abort();
            assert!(call.await.unwrap_err().is_cancelled());
        }
        let kept = h.send("kept", 1);
        h.queued(6).await;
        h.gate.add_permits(1_000);
        kept.await.unwrap().unwrap();
        for call in stuck {
            call.await.unwrap().unwrap();
        }
        assert_eq!(h.entries(), vec![vec!["s0"], vec!["s1"], vec!["kept"]]);
    }

    #[tokio::test]
    async fn a_proposal_never_answered_gives_up_its_place_at_its_deadline() {
        // A fake Raft that never answers an entry holding a "hang" key.
        let propose: ProposeFn = Arc::new(|entry: Command| {
            Box::pin(async move {
                let keys: Vec<String> = match &entry.op {
                    Op::Batch(commands) => commands.iter().map(key_of).collect(),
                    _ => vec![key_of(&entry)],
                };
                if keys.iter().any(|k| k.starts_with("hang")) {
                    std::future::pending::<()>().await;
                }
                Ok(Response::Tick(Ack { revision: 1 }))
            })
        });
        let batcher = Batcher::start(propose);
        let start = Instant::now();
        let call = |key: &str, after: u64| {
            let (b, command) = (batcher.clone(), put(key, 1));
            let deadline = start + std::time::Duration::from_millis(after);
            tokio::spawn(async move { b.propose(command, deadline).await })
        };
        // hang0 and hang1 fill the pipeline (100 ms); hang2 and hang3
        // queue, then go as one batch never answered either (200 ms).
        let hung = [
            call("hang0", 100),
            call("hang1", 100),
            call("hang2", 200),
            call("hang3", 200),
        ];
        for h in hung {
            assert!(matches!(h.await.unwrap(), Err(RouteError::Timeout(_))));
        }
        // Both places are free again: a new write is proposed and answered.
        let ok = call("ok", 3_600_000);
        let answer = tokio::time::timeout(std::time::Duration::from_secs(10), ok)
            .await
            .expect("the pipeline was freed")
            .unwrap();
        assert_eq!(answer.unwrap(), Response::Tick(Ack { revision: 1 }));
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_writes() {
        let propose: ProposeFn =
            Arc::new(|_| Box::pin(async { Err::<Response, _>(RouteError::Timeout("not committed".into())) }));
        let batcher = Batcher::start(propose);
        let answers =
            futures::future::join_all((0..20).map(|i| batcher.propose(put(&format!("k{i}"), 1), far()))).await;
        assert!(answers.iter().all(|a| matches!(a, Err(RouteError::Timeout(_)))));
        let wrong: ProposeFn =
            Arc::new(|_| Box::pin(async { Ok(Response::Rejected(Rejection::Invalid("no".into()))) }));
        let batcher = Batcher::start(wrong);
        let answer = batcher.propose(put("a", 1), far()).await.unwrap();
        assert!(
            matches!(answer, Response::Rejected(_)),
            "a lone write's answer is passed on as is"
        );
    }
}
