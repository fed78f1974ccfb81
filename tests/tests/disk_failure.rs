//! A member whose disk fails exits, non-zero and saying why, instead of
//! staying up unable to serve; the others go on, and nothing acknowledged
//! is lost. The failure here is a full disk: the member's data dir is a
//! small tmpfs (in a mount namespace of its own), and 1 MiB writes fill it
//! until the log cannot start its next segment.

use std::collections::BTreeMap;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use roster_tests::{client_for, eventually, Cluster, Options};

/// The log preallocates its segments whole (64 MiB); the data dir has room
/// for the first and a little more, not for a second.
const DISK_BYTES: u64 = 72 * 1024 * 1024;
const VALUE_BYTES: usize = 1024 * 1024;
/// Well past the disk's size: the member must have failed by then.
const MAX_WRITES: usize = 150;

fn value(i: usize) -> Vec<u8> {
    (0..VALUE_BYTES).map(|b| (b.wrapping_mul(31) ^ i) as u8).collect()
}

/// Writes 1 MiB values until node `victim` exits by itself; returns how it
/// exited and the writes acknowledged.
async fn fill_until_exit(cluster: &mut Cluster, victim: u64) -> (ExitStatus, BTreeMap<String, usize>) {
    let client = client_for(cluster.endpoints(), Duration::from_secs(5)).await;
    let mut acked = BTreeMap::new();
    for i in 0..MAX_WRITES {
        let key = format!("fill/{i:04}");
        // An error is an unknown outcome (the leader may be the one
        // failing): not counted as acknowledged, and the next write goes on.
        if client.put(key.clone(), value(i)).await.is_ok() {
            acked.insert(key, i);
        }
        if let Some(status) = cluster.exited(victim) {
            return (status, acked);
        }
    }
    // The last writes may still be reaching it: give it a moment to fail.
    let status = eventually(Duration::from_secs(20), "the node with the full disk to exit", || {
        let status = cluster.exited(victim);
        async move { status }
    })
    .await;
    (status, acked)
}

/// Pauses whoever leads until node `id` is elected.
async fn make_leader(cluster: &Cluster, id: u64) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
        if leader == id {
            return;
        }
        assert!(Instant::now() < deadline, "node {id} was never elected");
        cluster.pause(leader);
        eventually(
            Duration::from_secs(20),
            "a leader while the old one is paused",
            || async {
                let status = cluster.status_of(id).await?;
                (status.leader_id != 0 && status.leader_id != leader).then_some(())
            },
        )
        .await;
        cluster.resume(leader);
    }
}

async fn disk_fills_up(victim_leads: bool) {
    let victim = 1;
    let mut cluster = Cluster::start_with_disks(3, Options::default(), &[(victim, DISK_BYTES)]);
    if victim_leads {
        make_leader(&cluster, victim).await;
    } else {
        let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
        if leader == victim {
            // Pause it until another is elected, then let it follow.
            cluster.pause(victim);
            let other = cluster.others(victim)[0];
            eventually(Duration::from_secs(20), "another leader", || async {
                let status = cluster.status_of(other).await?;
                (status.leader_id != 0 && status.leader_id != victim).then_some(())
            })
            .await;
            cluster.resume(victim);
        }
    }

    let (status, acked) = fill_until_exit(&mut cluster, victim).await;
    assert_eq!(
        status.code(),
        Some(1),
        "exit status of the node whose disk filled: {status}"
    );
    let log = cluster.log_tail(victim, 200);
    assert!(
        log.contains("writing the log failed") && log.contains("rosterd: error: the Raft core stopped"),
        "the node says why it exits:\n{log}"
    );
    assert!(
        acked.len() >= 40,
        "only {} writes acknowledged before the disk filled",
        acked.len()
    );

    // The other two go on: a leader, new writes, and every acknowledged
    // write still there.
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    assert_ne!(leader, victim);
    let client = client_for(cluster.running_endpoints(), Duration::from_secs(5)).await;
    client
        .put("after", "still writable")
        .await
        .expect("write after the failure");
    for (key, i) in &acked {
        let kv = client
            .get(key.clone())
            .await
            .expect("read")
            .expect("acknowledged key present");
        assert!(kv.value == value(*i), "{key} holds what was written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_disk_fills_exits_and_the_cluster_fails_over() {
    disk_fills_up(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_disk_fills_exits_and_the_cluster_goes_on() {
    disk_fills_up(false).await;
}
