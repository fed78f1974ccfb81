//! Leases on a real cluster: renewals keep a lease (and its keys) alive;
//! without them it ends within TTL plus a bound, through a committed entry,
//! even while the Roster leader keeps changing.

use std::time::{Duration, Instant};

use roster_proto::v1::lease_client::LeaseClient;
use roster_proto::v1::{LeaseGrantRequest, LeaseKeepAliveRequest, LeaseTimeToLiveRequest, PutRequest};
use roster_tests::{client_for, eventually, Cluster};

async fn lease_client(addr: &str) -> LeaseClient<tonic::transport::Channel> {
    LeaseClient::connect(format!("http://{addr}")).await.expect("connect")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_hold_a_lease_and_its_end_deletes_attached_keys() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let leader_addr = cluster.nodes[&leader].endpoint();
    let mut leases = lease_client(&leader_addr).await;
    let ttl = Duration::from_millis(2000);
    let granted = leases
        .grant(LeaseGrantRequest {
            ttl_ms: ttl.as_millis() as u64,
            ..Default::default()
        })
        .await
        .expect("grant")
        .into_inner();
    assert!(granted.id > 0);
    let kv = client_for(cluster.endpoints(), Duration::from_secs(5)).await;
    kv.put_with(PutRequest {
        key: b"alive/worker-1".to_vec(),
        value: b"up".to_vec(),
        lease: granted.id,
        ..Default::default()
    })
    .await
    .expect("put with lease");

    // Renew every 500 ms for 3 TTLs: the key stays.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut answers = leases
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("keepalive stream")
        .into_inner();
    let mut last_ack = Instant::now();
    let started = Instant::now();
    while started.elapsed() < ttl * 3 {
        tx.send(LeaseKeepAliveRequest { id: granted.id })
            .await
            .expect("send renewal");
        let answer = answers.message().await.expect("answer").expect("stream open");
        assert_eq!(answer.id, granted.id);
        assert_eq!(answer.ttl_ms, ttl.as_millis() as u64, "renewed for the full TTL");
        last_ack = Instant::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        kv.get("alive/worker-1").await.expect("get").is_some(),
        "renewed lease kept its key"
    );

    // Stop renewing: the lease ends and takes the key with it.
    drop(tx);
    let gone = eventually(ttl * 4, "the lease to end and its key to go", || async {
        kv.get("alive/worker-1").await.ok()?.is_none().then(Instant::now)
    })
    .await;
    let after = gone - last_ack;
    println!(
        "lease with TTL {} ms ended {} ms after the last acknowledged renewal",
        ttl.as_millis(),
        after.as_millis()
    );
    assert!(after >= ttl, "ended early: {after:?} < TTL {ttl:?}");
    assert!(after < ttl + Duration::from_millis(1500), "ended late: {after:?}");
    let err = leases
        .time_to_live(LeaseTimeToLiveRequest {
            id: granted.id,
            keys: false,
        })
        .await
        .expect_err("lease gone");
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalive_on_a_follower_points_to_the_leader() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let follower = cluster.others(leader)[0];
    let mut leases = lease_client(&cluster.nodes[&follower].endpoint()).await;
    let (_tx, rx) = tokio::sync::mpsc::channel::<LeaseKeepAliveRequest>(1);
    let err = leases
        .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect_err("a follower does not serve keepalives");
    assert_eq!(err.code(), tonic::Code::Unavailable);
    let hint = err
        .metadata()
        .get("roster-leader")
        .expect("leader hint")
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(hint, cluster.nodes[&leader].endpoint());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_clients_lease_ends_within_the_bound_while_leaders_keep_changing() {
    let mut cluster = Cluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let kv = client_for(cluster.endpoints(), Duration::from_secs(10)).await;
    let ttl = Duration::from_millis(4000);
    // The "client" grants a lease, attaches a key, and dies at once.
    let mut leases = lease_client(&cluster.endpoints()[0]).await;
    let granted = leases
        .grant(LeaseGrantRequest {
            ttl_ms: ttl.as_millis() as u64,
            ..Default::default()
        })
        .await
        .expect("grant")
        .into_inner();
    kv.put_with(PutRequest {
        key: b"dead/client".to_vec(),
        value: b"x".to_vec(),
        lease: granted.id,
        ..Default::default()
    })
    .await
    .expect("put");
    let died = Instant::now();

    // Kill the leader every ~1.5 s (restarting the previous victim), so no
    // leader lives for a whole TTL.
    let mut kills = 0;
    let ended = loop {
        if kv.get("dead/client").await.expect("read").is_none() {
            break died.elapsed();
        }
        assert!(
            died.elapsed() < Duration::from_secs(40),
            "lease outlived 10 TTLs under leader churn"
        );
        let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
        let stopped: Vec<u64> = cluster
            .nodes
            .values()
            .filter(|n| !n.is_running())
            .map(|n| n.id)
            .collect();
        for id in stopped {
            cluster.restart(id);
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        cluster.kill(leader);
        kills += 1;
    };
    // Bound: TTL + per leader change (checkpoint interval 1 s + election up
    // to 1 s + start-up barrier) — generous for a loaded 2-core machine.
    let bound = ttl + Duration::from_secs(3) * kills;
    println!(
        "dead client's lease (TTL {} ms) ended after {} ms with {kills} leader kills",
        ttl.as_millis(),
        ended.as_millis()
    );
    assert!(ended >= ttl, "ended early: {ended:?}");
    assert!(ended <= bound, "ended after {ended:?}, bound {bound:?}");
}
