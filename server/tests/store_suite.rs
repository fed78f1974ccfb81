//! Conformance and durability of rosterd's openraft storage (segment log and
//! snapshot file): the log store and the state machine store, both opened on
//! one `Disk`.
//!
//! - `openraft_storage_suite` runs openraft 0.9's own conformance suite,
//!   on the log store and on the store rosterd gives openraft: the log store
//!   wrapped by eager replication (`raft::eager`).
//! - The crash tests write from a child process (this test binary, re-run on
//!   the ignored test `crash_child`) and kill it with SIGKILL while it writes.
//!   Dropping the stores in-process would prove nothing: the page cache
//!   keeps what was written without a sync.
//! - The rest cover the data-dir identity check, damaged data dirs, and
//!   regressions of storage bugs found while writing these tests.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command as Process, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{BasicNode, EntryPayload, RaftLogReader, RaftSnapshotBuilder};
use roster_server::raft::disk::{DataDirError, Disk};
use roster_server::raft::eager::{Eager, EagerLog};
use roster_server::raft::log_store::LogStore;
use roster_server::raft::network::NetworkFactory;
use roster_server::raft::state_machine::StateMachineStore;
use roster_server::raft::{Entry, LogId, Raft, RaftTiming, StorageError, TypeConfig};
use roster_server::state::command::{Command, Op, PutOp, RangeOp};
use tempfile::TempDir;

const CLUSTER: &str = "store-suite";
const NODE: u64 = 1;

/// Environment of the child process: what it runs, and in which data dir.
const CHILD_MODE: &str = "ROSTER_STORE_SUITE_CHILD";
const CHILD_DIR: &str = "ROSTER_STORE_SUITE_DIR";

type StoreSuite = Suite<TypeConfig, LogStore, StateMachineStore, FileBuilder, TempDir>;

/// Fresh stores on a fresh data dir; the `TempDir` guard lives as long as
/// the suite's test case. `build` runs inside the runtime the suite creates
/// for each case, which `LogStore::new` needs for its flusher task.
struct FileBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for FileBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (disk, fresh) = Disk::open(dir.path(), CLUSTER, 0).expect("open a fresh data dir");
        assert!(fresh);
        let log_store = LogStore::new(disk.clone());
        let sm = StateMachineStore::open(disk)?;
        Ok((dir, log_store, sm))
    }
}

#[test]
fn openraft_storage_suite() {
    StoreSuite::test_all(FileBuilder).unwrap();
}

/// The same, wrapped as rosterd wraps it (never armed: no node leads here).
struct EagerBuilder;

type EagerStore = EagerLog<LogStore, NetworkFactory>;

impl StoreBuilder<TypeConfig, EagerStore, StateMachineStore, TempDir> for EagerBuilder {
    async fn build(&self) -> Result<(TempDir, EagerStore, StateMachineStore), StorageError> {
        let (dir, log_store, sm) = FileBuilder.build().await?;
        let eager = Eager::new(NetworkFactory::default(), Duration::from_millis(100));
        Ok((dir, EagerLog::new(log_store, eager), sm))
    }
}

#[test]
fn openraft_storage_suite_through_eager_replication() {
    Suite::<TypeConfig, EagerStore, StateMachineStore, EagerBuilder, TempDir>::test_all(EagerBuilder).unwrap();
}

// ---------------------------------------------------------------- helpers

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn open_disk(dir: &Path) -> Disk {
    Disk::open(dir, CLUSTER, NODE).unwrap_or_else(|e| panic!("{e}")).0
}

fn log_id(term: u64, index: u64) -> LogId {
    openraft::testing::log_id(term, NODE, index)
}

fn put(key: &str) -> Command {
    Command {
        request_id: None,
        stamp_ms: 0,
        op: Op::Put(PutOp {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..Default::default()
        }),
    }
}

fn put_entry(term: u64, index: u64, key: &str) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(put(key)),
    }
}

fn put_key(entry: &Entry) -> Option<String> {
    match &entry.payload {
        EntryPayload::Normal(Command { op: Op::Put(p), .. }) => Some(String::from_utf8_lossy(&p.key).into_owned()),
        _ => None,
    }
}

async fn entry_at(store: &mut LogStore, index: u64) -> Option<Entry> {
    let mut entries = store.try_get_log_entries(index..=index).await.unwrap();
    assert!(entries.len() <= 1);
    entries.pop()
}

fn has_key(sm: &StateMachineStore, key: &str) -> bool {
    let op = RangeOp {
        key: key.as_bytes().to_vec(),
        ..Default::default()
    };
    !sm.read().state.range(&op).kvs.is_empty()
}

fn raft_config() -> Arc<openraft::Config> {
    let timing = RaftTiming {
        heartbeat: Duration::from_millis(50),
        election_min: Duration::from_millis(150),
        election_max: Duration::from_millis(300),
        ..Default::default()
    };
    Arc::new(timing.openraft_config(CLUSTER).unwrap())
}

/// Runs `work` on its own thread and runtime; fails the test if it has not
/// finished after `limit` (a hang must fail the test, not stall the run).
fn finishes_within(limit: Duration, what: &str, work: impl FnOnce() + Send + 'static) {
    let (done_tx, done_rx) = mpsc::channel();
    let handle = std::thread::spawn(move || {
        work();
        let _ = done_tx.send(());
    });
    match done_rx.recv_timeout(limit) {
        Ok(()) => handle.join().unwrap(),
        // The thread panicked: re-raise its panic.
        Err(mpsc::RecvTimeoutError::Disconnected) => std::panic::resume_unwind(handle.join().unwrap_err()),
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what} did not finish within {limit:?} (hung)"),
    }
}

// ------------------------------------------------------- crash durability

/// Starts `crash_child` in `mode` on `dir`, collects the `ACK ...` lines it
/// prints until `enough` says so, then kills it with SIGKILL and collects the
/// lines it printed before it died. Every returned line was printed after
/// the child saw the write acknowledged.
fn run_child_until_killed(mode: &str, dir: &Path, enough: impl Fn(&[String]) -> bool) -> Vec<String> {
    let mut child = Process::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_child", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_MODE, mode)
        .env(CHILD_DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        // Only whole lines: the kill may cut the last one short.
        while stdout.read_line(&mut line).unwrap_or(0) > 0 && line.ends_with('\n') {
            // The first one shares its line with libtest's "test crash_child ... ".
            if let Some((_, ack)) = line.trim_end().split_once("ACK ") {
                if line_tx.send(ack.to_string()).is_err() {
                    break;
                }
            }
            line.clear();
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut acks = Vec::new();
    while !enough(&acks) {
        let left = deadline.saturating_duration_since(Instant::now());
        match line_rx.recv_timeout(left) {
            Ok(ack) => acks.push(ack),
            Err(e) => {
                let _ = child.kill();
                let status = child.wait().unwrap();
                panic!(
                    "child ({mode}) stopped or stalled after {} acks: {e:?}, {status}",
                    acks.len()
                );
            }
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    acks.extend(line_rx.try_iter());
    acks
}

/// The writer side of the crash tests. Does nothing unless started by one.
#[test]
#[ignore = "child process of the crash tests; they run it"]
fn crash_child() {
    let Ok(mode) = std::env::var(CHILD_MODE) else {
        return;
    };
    let dir = PathBuf::from(std::env::var(CHILD_DIR).unwrap());
    runtime().block_on(async move {
        match mode.as_str() {
            "storage" => {
                let disk = open_disk(&dir);
                let mut store = LogStore::new(disk);
                // openraft's own helper: appends entries 0..=10 one at a time,
                // each through `append` with a callback it waits for, then
                // saves the vote (term 1, node 0).
                StoreSuite::feed_10_logs_vote_self(&mut store).await.unwrap();
                store
                    .save_committed(Some(openraft::testing::log_id(1, 0, 7)))
                    .await
                    .unwrap();
                println!("ACK storage");
            }
            "raft" => {
                let disk = open_disk(&dir);
                let log_store = LogStore::new(disk.clone());
                let sm = StateMachineStore::open(disk).unwrap();
                let raft = Raft::new(NODE, raft_config(), NetworkFactory::default(), log_store, sm)
                    .await
                    .unwrap();
                raft.initialize(BTreeMap::from([(NODE, BasicNode::new("127.0.0.1:1"))]))
                    .await
                    .unwrap();
                raft.wait(Some(Duration::from_secs(20)))
                    .current_leader(NODE, "single node elects itself")
                    .await
                    .unwrap();
                // Concurrent writers, so appends overlap and share flushes.
                for writer in 0..8 {
                    let raft = raft.clone();
                    tokio::spawn(async move {
                        for n in 0.. {
                            let key = format!("k-{writer}-{n}");
                            let resp = raft.client_write(put(&key)).await.unwrap();
                            // Committed on a single node: its log flush has been
                            // reported done (the commit marker need not be).
                            println!("ACK {} {key}", resp.log_id.index);
                        }
                    });
                }
            }
            other => panic!("unknown child mode {other}"),
        }
        // Wait to be killed.
        std::future::pending::<()>().await
    });
}

/// Storage level: entries whose append callback reported success, the vote
/// and the commit marker survive SIGKILL of the process that wrote them.
#[test]
fn acked_appends_and_vote_survive_kill() {
    let dir = tempfile::tempdir().unwrap();
    run_child_until_killed("storage", dir.path(), |acks| !acks.is_empty());

    runtime().block_on(async {
        let (disk, fresh) = Disk::open(dir.path(), CLUSTER, NODE).unwrap_or_else(|e| panic!("{e}"));
        assert!(!fresh);
        let mut store = LogStore::new(disk);
        for index in 0..=10 {
            let entry = entry_at(&mut store, index).await.expect("acked entry lost");
            let term = if index == 0 { 0 } else { 1 };
            assert_eq!(entry.log_id, openraft::testing::log_id(term, 0, index));
        }
        let state = store.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id, Some(openraft::testing::log_id(1, 0, 10)));
        assert_eq!(state.last_purged_log_id, None);
        let vote = store.read_vote().await.unwrap().expect("saved vote lost");
        assert_eq!(vote, openraft::Vote::new(1, 0));
        // The marker, if it reached the disk, is the one saved: it names an
        // entry that is there.
        if let Some(committed) = store.read_committed().await.unwrap() {
            assert_eq!(committed, openraft::testing::log_id(1, 0, 7));
            assert_eq!(entry_at(&mut store, committed.index).await.unwrap().log_id, committed);
        }
    });
}

/// Through openraft: a single node with 8 concurrent writers is killed
/// mid-stream; every write it acknowledged is in the log on reopen, within
/// the durable commit marker, and back in the state machine after restart.
#[test]
fn acked_writes_survive_kill_of_running_node() {
    let dir = tempfile::tempdir().unwrap();
    let acks = run_child_until_killed("raft", dir.path(), |acks| acks.len() >= 300);
    let acked: BTreeMap<u64, String> = acks
        .iter()
        .map(|line| {
            let (index, key) = line.split_once(' ').unwrap();
            (index.parse().unwrap(), key.to_string())
        })
        .collect();
    assert_eq!(acked.len(), acks.len(), "two acks for one log index");
    let max_acked = *acked.keys().last().unwrap();

    runtime().block_on(async {
        let (disk, fresh) = Disk::open(dir.path(), CLUSTER, NODE).unwrap_or_else(|e| panic!("{e}"));
        assert!(!fresh);
        let mut store = LogStore::new(disk.clone());

        let vote = store.read_vote().await.unwrap().expect("vote lost");
        assert_eq!(vote.leader_id().voted_for(), Some(NODE));
        // It led, but resumes as a follower: its own vote comes back
        // uncommitted (see `vote_on_restart`).
        assert!(!vote.is_committed(), "{vote}");

        let state = store.get_log_state().await.unwrap();
        let last = state.last_log_id.expect("log lost");
        assert!(
            last.index >= max_acked,
            "last entry {last} is below acked index {max_acked}"
        );
        assert!(last.leader_id.term <= vote.leader_id().term);
        for (&index, key) in &acked {
            let entry = entry_at(&mut store, index).await;
            let entry = entry.unwrap_or_else(|| panic!("acked entry {index} ({key}) lost"));
            assert_eq!(put_key(&entry).as_deref(), Some(key.as_str()), "entry {index}");
        }

        // The commit marker is not synced on its own: it may lag, but it
        // never names an entry that is not there.
        let committed = store.read_committed().await.unwrap();
        if let Some(committed) = committed {
            assert!(committed <= last, "marker {committed} beyond the last entry {last}");
            assert_eq!(entry_at(&mut store, committed.index).await.unwrap().log_id, committed);
        }

        // Restart openraft on the reopened disk: it rebuilds the state
        // machine up to the marker, wins a new term, and its first entry
        // commits (and applies) everything acknowledged before the kill.
        let sm = StateMachineStore::open(disk).unwrap();
        let raft = Raft::new(NODE, raft_config(), NetworkFactory::default(), store, sm.clone())
            .await
            .unwrap();
        assert!(sm.read().last_applied >= committed);
        let metrics = raft
            .wait(Some(Duration::from_secs(20)))
            .metrics(
                |m| m.current_leader == Some(NODE) && m.last_applied.is_some_and(|a| a.index > max_acked),
                "restarted node leads a new term and applies past the acked writes",
            )
            .await
            .unwrap();
        assert!(metrics.current_term > vote.leader_id().term, "resumed the old term");
        for key in acked.values() {
            assert!(has_key(&sm, key), "acked write {key} missing after restart");
        }
        raft.shutdown().await.unwrap();
    });
}

// ------------------------------------------------------- data dir checks

#[test]
fn reopening_as_another_cluster_or_node_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, fresh) = Disk::open(dir.path(), "alpha", 1).unwrap_or_else(|e| panic!("{e}"));
    assert!(fresh);
    drop(disk);

    for (cluster, node) in [("beta", 1), ("alpha", 2), ("beta", 2)] {
        match Disk::open(dir.path(), cluster, node) {
            Ok(_) => panic!("opened the data dir of alpha/1 as {cluster}/{node}"),
            Err(e @ DataDirError::Foreign { .. }) => {
                let DataDirError::Foreign {
                    ref found_cluster,
                    found_node,
                    ref want_cluster,
                    want_node,
                    ..
                } = e
                else {
                    unreachable!()
                };
                assert_eq!((found_cluster.as_str(), found_node), ("alpha", 1));
                assert_eq!((want_cluster.as_str(), want_node), (cluster, node));
                let message = e.to_string();
                assert!(!message.contains('\n'), "{message}");
                assert!(message.contains("alpha") && message.contains(cluster), "{message}");
            }
            Err(e) => panic!("expected Foreign, got: {e}"),
        }
    }

    // Refusing changed nothing: it still opens as itself.
    let (_disk, fresh) = Disk::open(dir.path(), "alpha", 1).unwrap_or_else(|e| panic!("{e}"));
    assert!(!fresh);
}

/// Deterministic garbage bytes.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A data dir with a few log entries, a vote, a commit marker and a
/// snapshot, closed cleanly; opened twice, so its log has two segments.
fn populated_data_dir(dir: &Path) {
    runtime().block_on(async {
        let disk = open_disk(dir);
        let mut store = LogStore::new(disk.clone());
        StoreSuite::feed_10_logs_vote_self(&mut store).await.unwrap();
        store
            .save_committed(Some(openraft::testing::log_id(1, 0, 5)))
            .await
            .unwrap();
        let mut sm = StateMachineStore::open(disk.clone()).unwrap();
        apply_puts(&mut sm, 1..=3).await;
        sm.build_snapshot().await.unwrap();
        disk.flush().await.unwrap();
    });
    drop(open_disk(dir));
}

/// The log segments of a data dir, oldest first.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join("wal"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

fn assert_refused(dir: &Path, case: &str) {
    match Disk::open(dir, CLUSTER, NODE) {
        Ok((_, fresh)) => panic!("{case}: damaged data dir opened (fresh: {fresh})"),
        Err(e @ (DataDirError::Corrupt { .. } | DataDirError::Open { .. } | DataDirError::Format { .. })) => {
            let message = e.to_string();
            assert!(!message.contains('\n'), "{case}: multi-line error: {message}");
        }
        Err(e) => panic!("{case}: expected Corrupt, Open or Format, got: {e}"),
    }
}

#[test]
fn damaged_data_dir_is_refused_without_panic() {
    let root = tempfile::tempdir().unwrap();
    let case_dir = |name: &str| {
        let dir = root.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    };

    // Every file garbage.
    let dir = case_dir("all-garbage");
    std::fs::write(dir.join("identity"), noise(64, 1)).unwrap();
    std::fs::create_dir(dir.join("wal")).unwrap();
    std::fs::write(dir.join("wal").join("0000000000000001.wal"), noise(1 << 16, 2)).unwrap();
    std::fs::write(dir.join("snapshot"), noise(512, 3)).unwrap();
    assert_refused(&dir, "all-garbage");

    // Data of an older rosterd (sled's files).
    let dir = case_dir("sled-format");
    std::fs::write(dir.join("db"), noise(1 << 12, 4)).unwrap();
    std::fs::write(dir.join("conf"), noise(64, 5)).unwrap();
    match Disk::open(&dir, CLUSTER, NODE) {
        Err(DataDirError::Format { found: 1, .. }) => {}
        Err(e) => panic!("sled-format: expected Format, got: {e}"),
        Ok(_) => panic!("sled-format: opened"),
    }

    // A real data dir whose files were damaged afterwards.
    type Damage = fn(&Path);
    let damages: [(&str, Damage); 6] = [
        ("identity-garbage", |dir| {
            std::fs::write(dir.join("identity"), noise(40, 6)).unwrap()
        }),
        ("identity-emptied", |dir| {
            std::fs::write(dir.join("identity"), b"").unwrap()
        }),
        ("identity-deleted", |dir| {
            std::fs::remove_file(dir.join("identity")).unwrap()
        }),
        ("older-segment-garbage", |dir| {
            let first = &segments(dir)[0];
            let len = std::fs::metadata(first).unwrap().len() as usize;
            std::fs::write(first, noise(len, 7)).unwrap();
        }),
        ("older-segment-flipped-bit", |dir| {
            let first = &segments(dir)[0];
            let mut bytes = std::fs::read(first).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x10;
            std::fs::write(first, bytes).unwrap();
        }),
        ("snapshot-garbage", |dir| {
            let len = std::fs::metadata(dir.join("snapshot")).unwrap().len() as usize;
            std::fs::write(dir.join("snapshot"), noise(len, 8)).unwrap();
        }),
    ];
    for (name, damage) in damages {
        let dir = case_dir(name);
        populated_data_dir(&dir);
        assert!(segments(&dir).len() >= 2, "{name}: expected several segments");
        damage(&dir);
        assert_refused(&dir, name);
    }

    // The data dir is a file.
    let file = root.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();
    assert_refused(&file, "a-file");
}

/// A second process (or handle) on a data dir in use is refused.
#[test]
fn a_data_dir_in_use_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let disk = open_disk(dir.path());
    match Disk::open(dir.path(), CLUSTER, NODE) {
        Err(DataDirError::Open { reason, .. }) => assert!(reason.contains("another process"), "{reason}"),
        Err(e) => panic!("expected Open, got: {e}"),
        Ok(_) => panic!("opened a data dir twice"),
    }
    drop(disk);
    open_disk(dir.path());
}

/// A crash can leave a torn record at the end of the newest segment: it was
/// never reported durable, so it is cut, and everything before it stays.
#[test]
fn torn_tail_is_cut_and_earlier_entries_stay() {
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let mut store = LogStore::new(open_disk(dir.path()));
        StoreSuite::feed_10_logs_vote_self(&mut store).await.unwrap();
    });
    let last = segments(dir.path()).pop().unwrap();
    let mut bytes = std::fs::read(&last).unwrap();
    let whole = bytes.len();
    // Half a record (a length, a checksum and some of the payload) at the
    // end of the segment's preallocated space.
    let torn: Vec<u8> = 200u32.to_le_bytes().into_iter().chain(noise(30, 9)).collect();
    let at = whole
        .checked_sub(torn.len())
        .expect("a segment longer than a torn record");
    bytes[at..].copy_from_slice(&torn);
    std::fs::write(&last, bytes).unwrap();

    for _ in 0..2 {
        // Twice: once cut, the segment is an older one and must read whole.
        runtime().block_on(async {
            let mut store = LogStore::new(open_disk(dir.path()));
            let state = store.get_log_state().await.unwrap();
            assert_eq!(state.last_log_id, Some(openraft::testing::log_id(1, 0, 10)));
            assert_eq!(store.try_get_log_entries(0..).await.unwrap().len(), 11);
        });
        assert!(
            (std::fs::metadata(&last).unwrap().len() as usize) < at,
            "torn tail not cut"
        );
    }
}

/// A purge beyond the local log (after installing a snapshot), then a
/// restart: the log is empty and ends at the purge point; appends continue
/// after it.
#[test]
fn log_state_after_purge_beyond_the_log_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let purged = log_id(3, 20);
    runtime().block_on(async {
        let mut store = LogStore::new(open_disk(dir.path()));
        StoreSuite::feed_10_logs_vote_self(&mut store).await.unwrap();
        store.purge(purged).await.unwrap();
        // Synced by the next vote; a purge needs no sync of its own.
        store.save_vote(&openraft::Vote::new(4, NODE)).await.unwrap();
    });
    runtime().block_on(async {
        let mut store = LogStore::new(open_disk(dir.path()));
        assert!(store.try_get_log_entries(0..).await.unwrap().is_empty());
        let state = store.get_log_state().await.unwrap();
        assert_eq!(
            (state.last_purged_log_id, state.last_log_id),
            (Some(purged), Some(purged))
        );
    });
}

/// Applies puts at `indexes` (term 1).
async fn apply_puts(sm: &mut StateMachineStore, indexes: impl IntoIterator<Item = u64>) {
    let entries: Vec<Entry> = indexes
        .into_iter()
        .map(|i| put_entry(1, i, &format!("key-{i}")))
        .collect();
    sm.apply(entries).await.unwrap();
}

/// openraft builds snapshots in a spawned task while its state machine
/// worker installs one from the leader. A build that read the state before
/// the install and persists after it must not replace the newer, installed
/// snapshot (openraft has already purged the log up to it).
#[test]
fn installed_snapshot_is_not_replaced_by_older_build() {
    let leader_dir = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    runtime().block_on(async {
        let mut leader = StateMachineStore::open(open_disk(leader_dir.path())).unwrap();
        apply_puts(&mut leader, 1..=10).await;
        let newer = leader.build_snapshot().await.unwrap();

        let disk = open_disk(dir.path());
        // Two handles on one disk: `stale` holds the state as the build task
        // read it (up to 4); `follower` installs the leader's snapshot.
        let mut stale = StateMachineStore::open(disk.clone()).unwrap();
        let mut follower = StateMachineStore::open(disk).unwrap();
        apply_puts(&mut stale, 1..=4).await;
        follower.install_snapshot(&newer.meta, newer.snapshot).await.unwrap();

        let older = stale.build_snapshot().await.unwrap();
        assert_eq!(older.meta.last_log_id, Some(log_id(1, 4)));

        let current = follower.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(
            current.meta, newer.meta,
            "the older build replaced the installed snapshot"
        );
        // And so does a restart.
        drop((stale, follower, current));
        let reopened = StateMachineStore::open(open_disk(dir.path())).unwrap();
        assert_eq!(reopened.read().last_applied, Some(log_id(1, 10)));
        assert!(has_key(&reopened, "key-10"));
    });
}

/// `get_current_snapshot` must return metadata and data of the same
/// snapshot while builds persist new ones concurrently.
#[test]
fn current_snapshot_is_consistent_during_builds() {
    let dir = tempfile::tempdir().unwrap();
    finishes_within(Duration::from_secs(120), "snapshot builds", move || {
        runtime().block_on(async move {
            let mut sm = StateMachineStore::open(open_disk(dir.path())).unwrap();
            // What each build produced, by snapshot id.
            let built: Arc<Mutex<HashMap<String, Vec<u8>>>> = Arc::default();
            let builder = {
                let mut sm = sm.clone();
                let built = built.clone();
                tokio::spawn(async move {
                    for i in 1..=150 {
                        apply_puts(&mut sm, [i]).await;
                        let snapshot = sm.build_snapshot().await.unwrap();
                        let data = snapshot.snapshot.into_inner();
                        built.lock().unwrap().insert(snapshot.meta.snapshot_id, data);
                    }
                })
            };
            let mut read = Vec::new();
            while !builder.is_finished() {
                if let Some(snapshot) = sm.get_current_snapshot().await.unwrap() {
                    read.push((snapshot.meta, snapshot.snapshot.into_inner()));
                }
                tokio::task::yield_now().await;
            }
            builder.await.unwrap();
            let built = built.lock().unwrap();
            assert!(!read.is_empty());
            for (meta, data) in &read {
                let expected = built.get(&meta.snapshot_id).expect("read a snapshot nobody built");
                assert!(
                    expected == data,
                    "snapshot {} read with another snapshot's data",
                    meta.snapshot_id
                );
            }
        });
    });
}

/// Several nodes in one process (the simulator, in-process clusters), each
/// writing from its log, `save_vote`, `save_committed` and snapshot builds
/// at once, from several handles. (sled 0.34, the storage before, hung for
/// good once 7 such flushes overlapped in a process.)
#[test]
fn overlapping_flushes_of_three_nodes_do_not_hang() {
    finishes_within(Duration::from_secs(120), "overlapping flushes", || {
        runtime().block_on(async {
            let dirs: Vec<TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
            let mut tasks = tokio::task::JoinSet::new();
            for dir in &dirs {
                let disk = open_disk(dir.path());
                let store = LogStore::new(disk.clone());
                let sm = StateMachineStore::open(disk).unwrap();
                let mut s = store.clone();
                tasks.spawn(async move {
                    for _ in 0..5 {
                        StoreSuite::feed_10_logs_vote_self(&mut s).await.unwrap();
                    }
                });
                let mut s = store.clone();
                tasks.spawn(async move {
                    for term in 1..=30 {
                        s.save_vote(&openraft::Vote::new(term, NODE)).await.unwrap();
                    }
                });
                let mut s = store;
                tasks.spawn(async move {
                    for index in 1..=30 {
                        s.save_committed(Some(log_id(1, index))).await.unwrap();
                    }
                });
                let mut sm = sm;
                tasks.spawn(async move {
                    for i in 1..=30 {
                        apply_puts(&mut sm, [i]).await;
                        sm.build_snapshot().await.unwrap();
                    }
                });
            }
            while let Some(result) = tasks.join_next().await {
                result.unwrap();
            }
        });
    });
}
