//! Losing the leader, restarting a node, and rebuilding a wiped node.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roster_client::proto::RangeRequest;
use roster_tests::{client_for, eventually, Cluster, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_elects_another_and_writes_resume() {
    let mut cluster = Cluster::start(3);
    let old_leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = client_for(cluster.endpoints(), Duration::from_secs(10)).await;
    client.put("before", "1").await.expect("write before the kill");

    // Write continuously, recording when each write was acknowledged; kill
    // -9 the leader in the middle.
    let acked = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (client, acked, stop) = (client.clone(), acked.clone(), stop.clone());
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                client
                    .put(format!("k{i}"), "v")
                    .await
                    .unwrap_or_else(|e| panic!("write {i} failed after retries: {e}"));
                acked.lock().unwrap().push(Instant::now());
                i += 1;
            }
        })
    };
    let acked_count = || acked.lock().unwrap().len();
    eventually(Duration::from_secs(10), "writes before the kill", || async {
        (acked_count() >= 20).then_some(())
    })
    .await;
    let killed_at = Instant::now();
    cluster.kill(old_leader);
    let new_leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let elected_after = killed_at.elapsed();
    assert_ne!(new_leader, old_leader);
    let after_kill = || acked.lock().unwrap().iter().filter(|t| **t > killed_at).count();
    eventually(Duration::from_secs(20), "writes to resume", || async {
        (after_kill() >= 20).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer did not panic");

    // The unavailability window: the longest gap between two consecutive
    // acknowledgements from just before the kill on.
    let times = acked.lock().unwrap().clone();
    let window = times
        .windows(2)
        .filter(|w| w[1] > killed_at)
        .map(|w| w[1] - w[0])
        .max()
        .expect("writes after the kill");
    println!(
        "leader {old_leader} killed: all nodes agreed on new leader {new_leader} after {} ms; \
         unavailability window (longest gap between acknowledged writes) {} ms; {} writes acknowledged",
        elected_after.as_millis(),
        window.as_millis(),
        times.len()
    );
    // Bound: election timeout max (1 s) + failure detection + client backoff.
    assert!(window < Duration::from_secs(8), "unavailability window {window:?}");
    assert!(client.get("before").await.expect("read").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_restarts_and_catches_up() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let victim = cluster.others(leader)[0];
    cluster.kill(victim);

    let client = client_for(cluster.running_endpoints(), Duration::from_secs(5)).await;
    for i in 0..50 {
        client
            .put(format!("while-down/{i}"), format!("{i}"))
            .await
            .expect("write with one node down");
    }
    cluster.restart(victim);
    wait_for_keys(
        &cluster,
        victim,
        "while-down/",
        50,
        "restarted node to hold all 50 keys",
    )
    .await;
}

/// Waits until node `id` holds `count` keys under `prefix` in its own state
/// (a serializable read answered by that node).
async fn wait_for_keys(cluster: &Cluster, id: u64, prefix: &str, count: u64, what: &str) {
    let node_client = client_for(vec![cluster.nodes[&id].endpoint()], Duration::from_secs(5)).await;
    eventually(Duration::from_secs(20), what, || {
        let c = node_client.clone();
        async move {
            let r = c
                .range(RangeRequest {
                    key: prefix.as_bytes().to_vec(),
                    prefix: true,
                    serializable: true,
                    count_only: true,
                    ..Default::default()
                })
                .await
                .ok()?;
            (r.count == count).then_some(())
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_node_rejoins_through_a_snapshot() {
    let options = Options {
        snapshot_every: 50,
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(3, options);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let victim = cluster.others(leader)[0];
    let client = client_for(cluster.endpoints(), Duration::from_secs(5)).await;
    for i in 0..300 {
        client
            .put(format!("data/{i:04}"), vec![b'x'; 100])
            .await
            .expect("write");
    }

    // Wipe the node, take it out of the membership, and bring it back empty
    // as a new learner: the leader's log no longer starts at 1, so it must
    // send a snapshot.
    cluster.wipe(victim);
    let survivors = client_for(cluster.running_endpoints(), Duration::from_secs(10)).await;
    survivors.member_remove(victim).await.expect("remove the wiped member");
    cluster.restart(victim);
    let addr = cluster.nodes[&victim].endpoint();
    survivors.member_add(victim, addr).await.expect("re-add as learner");
    survivors.member_promote(victim).await.expect("promote to voter");

    let status = eventually(
        Duration::from_secs(20),
        "rejoined node to report a snapshot",
        || async {
            let s = cluster.status_of(victim).await?;
            let me = s.members.iter().find(|m| m.id == victim)?.clone();
            (me.snapshot_index > 0 && me.applied_index >= 300).then_some(me)
        },
    )
    .await;
    assert!(status.voter);
    let victim_client = client_for(vec![cluster.nodes[&victim].endpoint()], Duration::from_secs(5)).await;
    let r = victim_client
        .range(RangeRequest {
            key: b"data/".to_vec(),
            prefix: true,
            serializable: true,
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("serializable read on the rebuilt node");
    assert_eq!(r.count, 300);
}

/// A follower frozen (SIGSTOP) while writes go on leaves the leader's
/// AppendEntries to it unanswered until they time out, which closes the
/// leader's stream to it; once it runs again the leader opens a new stream,
/// the follower catches up, and it counts towards the quorum again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_follower_catches_up_and_counts_again_when_it_resumes() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let victim = cluster.others(leader)[0];
    let leader_client = client_for(vec![cluster.nodes[&leader].endpoint()], Duration::from_secs(5)).await;
    leader_client.put("before", "1").await.expect("write before the pause");

    cluster.pause(victim);
    // Write on for at least ten heartbeats (50 ms in the tests' settings):
    // every AppendEntries to the paused follower in that time goes
    // unanswered past its deadline.
    let paused_at = Instant::now();
    let mut written = 0;
    while written < 50 || paused_at.elapsed() < Duration::from_millis(500) {
        leader_client
            .put(format!("while-paused/{written:04}"), "v")
            .await
            .expect("write with one follower paused");
        written += 1;
    }
    cluster.resume(victim);

    wait_for_keys(
        &cluster,
        victim,
        "while-paused/",
        written,
        "the resumed follower to hold every write",
    )
    .await;

    // The resumed node is part of the quorum again: with the third node
    // paused, writes commit only through it and the leader.
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let third = *cluster
        .others(leader)
        .iter()
        .find(|&&n| n != victim)
        .unwrap_or(&cluster.others(leader)[0]);
    cluster.pause(third);
    let client = client_for(vec![cluster.nodes[&leader].endpoint()], Duration::from_secs(5)).await;
    let result = client.put("with-the-resumed-follower", "1").await;
    cluster.resume(third);
    result.expect("write committed by the leader and the resumed follower");
}
