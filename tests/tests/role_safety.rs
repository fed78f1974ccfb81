//! Role safety with real processes and the real client LeaseKeeper: a
//! Roster leader change does not move a role whose holder keeps its lease,
//! and a holder cut off from the cluster stops believing it holds the role
//! before anyone else is granted it (DESIGN.md rules 6 and 8, on one clock).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roster_client::{KeeperOptions, LeaseKeeper};
use roster_proto::v1 as pb;
use roster_proto::v1::election_client::ElectionClient;
use roster_proto::v1::topology_client::TopologyClient;
use roster_tests::proxy::Proxy;
use roster_tests::{channel, client_for, eventually, Cluster};

const WAIT: Duration = Duration::from_secs(20);

async fn create_group(addr: &str) {
    TopologyClient::new(channel(addr).await)
        .put_group(pb::PutGroupRequest {
            name: "db".into(),
            roles: vec![pb::RoleSpec {
                name: "primary".into(),
                capacity: 1,
                ..Default::default()
            }],
            create: true,
            ..Default::default()
        })
        .await
        .expect("create group");
}

/// Campaigns and returns the token once elected, or `None` if queued.
async fn campaign(
    addr: &str,
    name: &str,
    keeper: &LeaseKeeper,
) -> (Option<u64>, tonic::Streaming<pb::CampaignResponse>) {
    let mut stream = ElectionClient::new(channel(addr).await)
        .campaign(pb::CampaignRequest {
            group: "db".into(),
            role: "primary".into(),
            candidate: name.into(),
            lease: keeper.id(),
            priority: 1,
            ..Default::default()
        })
        .await
        .expect("campaign")
        .into_inner();
    let first = stream.message().await.expect("campaign answer").expect("stream open");
    match first.event {
        Some(pb::campaign_response::Event::Elected(token)) => (Some(token), stream),
        Some(pb::campaign_response::Event::Queued(_)) => (None, stream),
        other => panic!("unexpected campaign answer {other:?}"),
    }
}

/// Records every holder list an Observe stream on `addr` reports.
async fn observe(addr: &str) -> Arc<Mutex<Vec<Vec<String>>>> {
    let mut stream = ElectionClient::new(channel(addr).await)
        .observe(pb::ObserveRequest {
            group: "db".into(),
            role: "primary".into(),
        })
        .await
        .expect("observe")
        .into_inner();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        while let Ok(Some(m)) = stream.message().await {
            out.lock()
                .unwrap()
                .push(m.holders.into_iter().map(|h| h.candidate).collect());
        }
    });
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_roster_leader_does_not_move_a_kept_role() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(WAIT).await;
    let survivor = cluster.nodes[&cluster.others(leader)[0]].endpoint();
    create_group(&survivor).await;
    let client = client_for(cluster.endpoints(), Duration::from_secs(5)).await;
    let ttl = Duration::from_secs(4);
    let a = client
        .grant_and_keep(ttl, KeeperOptions::default())
        .await
        .expect("lease a");
    let b = client
        .grant_and_keep(ttl, KeeperOptions::default())
        .await
        .expect("lease b");
    let (token, _a_stream) = campaign(&survivor, "a", &a).await;
    assert!(token.is_some(), "a elected");
    let (queued, _b_stream) = campaign(&survivor, "b", &b).await;
    assert!(queued.is_none(), "b queued");
    let seen = observe(&survivor).await;
    eventually(WAIT, "observer to see a", || async {
        (seen.lock().unwrap().last() == Some(&vec!["a".to_string()])).then_some(())
    })
    .await;

    cluster.kill(leader);
    cluster.wait_for_leader(WAIT).await;
    // Two TTLs with the new leader: the role must stay with a throughout.
    let until = Instant::now() + ttl * 2;
    let mut states = a.subscribe();
    while Instant::now() < until {
        assert!(
            !states.borrow_and_update().is_lost(),
            "a lost its lease across a leader change"
        );
        let _ = tokio::time::timeout_at(until.into(), states.changed()).await;
    }
    let lists = seen.lock().unwrap().clone();
    assert!(
        lists.iter().all(|l| l == &vec!["a".to_string()]),
        "role changed hands: {lists:?}"
    );
    println!("role held by a across a Roster leader kill; observer saw {lists:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_holder_stops_before_the_next_candidate_is_granted() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(WAIT).await;
    let leader_addr = cluster.nodes[&leader].endpoint();
    create_group(&leader_addr).await;
    // a reaches the cluster only through a proxy; b directly.
    let proxy = Proxy::start(cluster.nodes[&leader].grpc).await;
    let a_client = client_for(vec![proxy.addr.to_string()], Duration::from_secs(3)).await;
    let b_client = client_for(cluster.endpoints(), Duration::from_secs(5)).await;
    let ttl = Duration::from_secs(3);
    let a = a_client
        .grant_and_keep(ttl, KeeperOptions::default())
        .await
        .expect("lease a");
    let b = b_client
        .grant_and_keep(ttl, KeeperOptions::default())
        .await
        .expect("lease b");
    let (a_token, _a_stream) = campaign(&proxy.addr.to_string(), "a", &a).await;
    let a_token = a_token.expect("a elected");
    let (queued, mut b_stream) = campaign(&leader_addr, "b", &b).await;
    assert!(queued.is_none());

    let cut_at = Instant::now();
    proxy.cut();
    let a_lost = {
        let a = &a;
        async move {
            a.lost().await;
            Instant::now()
        }
    };
    let b_elected = async {
        loop {
            let m = b_stream.message().await.expect("b stream").expect("b stream open");
            if let Some(pb::campaign_response::Event::Elected(token)) = m.event {
                return (Instant::now(), token);
            }
        }
    };
    let (a_lost_at, (b_at, b_token)) = tokio::time::timeout(ttl * 3, async { tokio::join!(a_lost, b_elected) })
        .await
        .expect("a loses and b is elected");
    println!(
        "cut at 0 ms: a stopped believing at {} ms, b elected at {} ms (token {a_token} -> {b_token}, TTL {} ms)",
        (a_lost_at - cut_at).as_millis(),
        (b_at - cut_at).as_millis(),
        ttl.as_millis()
    );
    assert!(a_lost_at < b_at, "two holders at once: b elected before a noticed");
    assert!(b_token > a_token);
    assert!(
        b_at - cut_at < ttl + Duration::from_secs(1),
        "failover took {:?}",
        b_at - cut_at
    );
}
