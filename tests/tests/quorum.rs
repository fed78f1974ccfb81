//! A five-node cluster tolerates two failures; with three down a write fails
//! with UNAVAILABLE within the client's deadline instead of hanging.

use std::time::{Duration, Instant};

use roster_client::Code;
use roster_tests::{client_for, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_nodes_survive_two_failures_and_fail_fast_without_quorum() {
    let mut cluster = Cluster::start(5);
    let leader = cluster.wait_for_leader(Duration::from_secs(30)).await;

    // Two down, the leader among them.
    let other = cluster.others(leader)[0];
    cluster.kill(leader);
    cluster.kill(other);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = client_for(cluster.running_endpoints(), Duration::from_secs(5)).await;
    for i in 0..20 {
        client.put(format!("q/{i}"), "v").await.expect("write with 2 of 5 down");
    }
    assert_eq!(client.get("q/19").await.expect("read").expect("present").value, b"v");

    // Three down: no quorum.
    let third = cluster.others(0)[0];
    cluster.kill(third);
    let deadline = Duration::from_secs(3);
    let client = client_for(cluster.running_endpoints(), deadline).await;
    let started = Instant::now();
    let err = client
        .put("q/none", "v")
        .await
        .expect_err("no quorum: the write must fail");
    let took = started.elapsed();
    println!("write without quorum failed after {} ms: {err}", took.as_millis());
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(
        took < deadline + Duration::from_millis(500),
        "took {took:?}, deadline {deadline:?}"
    );

    // Linearizable reads fail the same way; serializable reads still answer.
    let started = Instant::now();
    let err = client
        .get("q/1")
        .await
        .expect_err("no quorum: linearizable read must fail");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(started.elapsed() < deadline + Duration::from_millis(500));
    let local = client
        .range(roster_client::proto::RangeRequest {
            key: b"q/1".to_vec(),
            serializable: true,
            ..Default::default()
        })
        .await
        .expect("serializable read without quorum");
    assert_eq!(local.kvs.len(), 1);
}
