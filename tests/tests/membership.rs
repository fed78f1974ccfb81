//! Live membership changes: grow 3 → 5 and shrink back while a client writes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use roster_client::{proto::RangeRequest, Code};
use roster_tests::{client_for, eventually, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grow_to_five_and_shrink_back_under_writes() {
    let mut cluster = Cluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let admin = client_for(cluster.endpoints(), Duration::from_secs(15)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicU64::new(0));
    let writer = {
        let (client, stop, written) = (
            client_for(cluster.endpoints(), Duration::from_secs(10)).await,
            stop.clone(),
            written.clone(),
        );
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let i = written.load(Ordering::Relaxed);
                client
                    .put(format!("m/{i:06}"), "v")
                    .await
                    .unwrap_or_else(|e| panic!("write {i} failed during membership change: {e}"));
                written.fetch_add(1, Ordering::Relaxed);
            }
        })
    };

    for id in [4, 5] {
        let addr = cluster.spawn_joiner(id);
        let added = admin.member_add(id, addr).await.expect("add learner");
        assert!(added.members.iter().any(|m| m.id == id && !m.voter));
        let promoted = admin.member_promote(id).await.expect("promote");
        assert!(promoted.members.iter().any(|m| m.id == id && m.voter));
    }
    let list = admin.member_list().await.expect("member list");
    assert_eq!(list.members.iter().filter(|m| m.voter).count(), 5);

    // Unknown member: NOT_FOUND.
    let err = admin.member_remove(42).await.expect_err("unknown member");
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let err = admin.member_promote(42).await.expect_err("unknown member");
    assert_eq!(err.code(), Code::NotFound, "{err}");

    // Shrink back: remove the two original followers and... the leader too
    // if it is among 1..=2, which exercises leader step-down.
    for id in [1, 2] {
        admin
            .member_remove(id)
            .await
            .unwrap_or_else(|e| panic!("remove {id}: {e}"));
        cluster.forget(id);
    }
    let list = admin.member_list().await.expect("member list");
    let voters: Vec<u64> = list.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
    assert_eq!(voters, vec![3, 4, 5]);
    cluster.wait_for_leader(Duration::from_secs(20)).await;

    let before = written.load(Ordering::Relaxed);
    eventually(
        Duration::from_secs(20),
        "writes to continue after the shrink",
        || async { (written.load(Ordering::Relaxed) >= before + 20).then_some(()) },
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    writer.await.expect("writer never failed");

    let client = client_for(cluster.endpoints(), Duration::from_secs(5)).await;
    let n = written.load(Ordering::Relaxed);
    let r = client
        .range(RangeRequest {
            key: b"m/".to_vec(),
            prefix: true,
            count_only: true,
            ..Default::default()
        })
        .await
        .expect("count");
    assert_eq!(r.count, n, "every acknowledged write is present");
    println!("{n} writes acknowledged across 3 -> 5 -> 3 membership changes");
}
