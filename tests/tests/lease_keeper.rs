//! roster-client's LeaseKeeper against real rosterd processes: it rides out
//! leader changes, and a holder cut off from the cluster knows it lost its
//! lease before the cluster ends it (safety rule 6, judged on one clock).

use std::time::{Duration, Instant};

use roster_client::proto::PutRequest;
use roster_client::{KeeperOptions, LeaseState};
use roster_tests::proxy::Proxy;
use roster_tests::{client_for, eventually, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_lease_survives_killing_the_roster_leader() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = client_for(cluster.endpoints(), Duration::from_secs(5)).await;
    let ttl = Duration::from_secs(6);
    let keeper = client
        .grant_and_keep(ttl, KeeperOptions::default())
        .await
        .expect("grant and keep");
    let id = keeper.id();
    let mut states = keeper.subscribe();

    cluster.kill(leader);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    // Keep watching for two TTLs: the keeper must never report Lost.
    let until = Instant::now() + ttl * 2;
    let mut jeopardy = false;
    while Instant::now() < until {
        let state = states.borrow_and_update().clone();
        assert!(!state.is_lost(), "lease lost across a leader change: {state}");
        jeopardy |= state.is_jeopardy();
        let _ = tokio::time::timeout_at(until.into(), states.changed()).await;
    }
    assert!(keeper.is_held());
    let ttl_left = client.lease_time_to_live(id, false).await.expect("lease still exists");
    println!(
        "lease {id} kept across a leader kill (jeopardy seen: {jeopardy}); remaining {} ms",
        ttl_left.remaining_ms
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_holder_knows_it_lost_the_lease_before_the_cluster_ends_it() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    // The holder reaches the cluster only through a proxy to the leader.
    let proxy = Proxy::start(cluster.nodes[&leader].grpc).await;
    let holder = client_for(vec![proxy.addr.to_string()], Duration::from_secs(3)).await;
    let ttl = Duration::from_secs(3);
    let keeper = holder
        .grant_and_keep(ttl, KeeperOptions::default())
        .await
        .expect("grant and keep");
    let observer = client_for(cluster.endpoints(), Duration::from_secs(5)).await;
    observer
        .put_with(PutRequest {
            key: b"holder/lock".to_vec(),
            value: b"mine".to_vec(),
            lease: keeper.id(),
            ..Default::default()
        })
        .await
        .expect("put with the lease");
    assert!(matches!(keeper.state(), LeaseState::Healthy { .. }));

    let cut_at = Instant::now();
    proxy.cut();
    keeper.lost().await;
    let lost_at = Instant::now();
    // At the instant the holder stops acting, the cluster still has the
    // lease: its key is still there (read after lost() returned).
    let still_there = observer.get("holder/lock").await.expect("read").is_some();
    assert!(still_there, "the cluster ended the lease before the holder noticed");
    // And the cluster does end it, within TTL plus a bound of the cut.
    let ended = roster_tests::eventually(ttl * 3, "the cluster to end the lease", || async {
        observer.get("holder/lock").await.ok()?.is_none().then(Instant::now)
    })
    .await;
    println!(
        "cut at 0 ms; holder reported lost at {} ms; cluster ended the lease by {} ms (TTL {} ms)",
        (lost_at - cut_at).as_millis(),
        (ended - cut_at).as_millis(),
        ttl.as_millis()
    );
    assert!(lost_at < ended);
    assert!(ended - cut_at < ttl + Duration::from_millis(1500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_once_renews_for_the_full_ttl_and_reports_a_missing_lease() {
    let cluster = Cluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = client_for(cluster.endpoints(), Duration::from_secs(5)).await;
    let ttl = Duration::from_secs(3);
    let id = client.lease_grant(ttl).await.expect("grant").id;

    // Let a good part of the TTL pass (the leader's view), then renew once.
    eventually(ttl * 2, "the lease to run down below 2 s", || async {
        let left = client.lease_time_to_live(id, false).await.ok()?.remaining_ms;
        (left < 2000).then_some(())
    })
    .await;
    let renewed = client.lease_keep_alive_once(id).await.expect("renew once");
    assert_eq!(renewed, ttl, "renewed for the granted TTL");
    let left = client
        .lease_time_to_live(id, false)
        .await
        .expect("time to live")
        .remaining_ms;
    assert!(left > 2000, "the renewal did not move the deadline: {left} ms left");

    client.lease_revoke(id).await.expect("revoke");
    let err = client
        .lease_keep_alive_once(id)
        .await
        .expect_err("a revoked lease cannot be renewed");
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
}
