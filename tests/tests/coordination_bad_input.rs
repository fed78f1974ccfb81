//! Bad coordination requests get clear gRPC errors and the cluster keeps
//! serving.

use std::time::Duration;

use roster_proto::v1 as pb;
use roster_proto::v1::election_client::ElectionClient;
use roster_proto::v1::kv_client::KvClient;
use roster_proto::v1::lease_client::LeaseClient;
use roster_proto::v1::topology_client::TopologyClient;
use roster_tests::Cluster;
use tonic::transport::Channel;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_coordination_requests_get_clear_errors() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let channel = Channel::from_shared(format!("http://{}", cluster.nodes[&leader].endpoint()))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    let mut leases = LeaseClient::new(channel.clone());
    let mut topology = TopologyClient::new(channel.clone());
    let mut election = ElectionClient::new(channel.clone());
    let mut kv = KvClient::new(channel);

    let check = |what: &str, result: Result<(), tonic::Status>, want: Code| {
        let err = result.expect_err(what);
        assert_eq!(err.code(), want, "{what}: {err:?}");
        assert!(!err.message().is_empty(), "{what}: empty message");
        println!("{what}: {:?}: {}", err.code(), err.message());
    };

    for ttl_ms in [0, 1999, 86_400_001] {
        let r = leases
            .grant(pb::LeaseGrantRequest {
                ttl_ms,
                ..Default::default()
            })
            .await
            .map(|_| ());
        check(&format!("lease TTL {ttl_ms} ms"), r, Code::InvalidArgument);
    }
    let r = leases
        .revoke(pb::LeaseRevokeRequest {
            id: 424242,
            ..Default::default()
        })
        .await
        .map(|_| ());
    check("revoke an unknown lease", r, Code::NotFound);
    let r = kv
        .put(pb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 424242,
            ..Default::default()
        })
        .await
        .map(|_| ());
    check("put with an unknown lease", r, Code::NotFound);

    let spec = |name: &str, capacity: u32| pb::RoleSpec {
        name: name.into(),
        capacity,
        ..Default::default()
    };
    let group = |name: &str, roles: Vec<pb::RoleSpec>| pb::PutGroupRequest {
        name: name.into(),
        roles,
        create: true,
        ..Default::default()
    };
    let r = topology
        .put_group(group("db", vec![spec("primary", 0)]))
        .await
        .map(|_| ());
    check("capacity 0", r, Code::InvalidArgument);
    let r = topology
        .put_group(group("db", vec![spec("primary", 17)]))
        .await
        .map(|_| ());
    check("capacity 17", r, Code::InvalidArgument);
    let r = topology
        .put_group(group("Bad Name", vec![spec("primary", 1)]))
        .await
        .map(|_| ());
    check("group name with spaces", r, Code::InvalidArgument);
    let r = topology
        .put_group(group(&"g".repeat(64), vec![spec("primary", 1)]))
        .await
        .map(|_| ());
    check("group name of 64 characters", r, Code::InvalidArgument);
    topology
        .put_group(group("db", vec![spec("primary", 1)]))
        .await
        .expect("valid group");

    let lease = leases
        .grant(pb::LeaseGrantRequest {
            ttl_ms: 10_000,
            ..Default::default()
        })
        .await
        .expect("grant")
        .into_inner()
        .id;
    let campaign = |group: &str, role: &str, lease: i64| pb::CampaignRequest {
        group: group.into(),
        role: role.into(),
        candidate: "c1".into(),
        lease,
        priority: 1,
        ..Default::default()
    };
    let r = election.campaign(campaign("nope", "primary", lease)).await.map(|_| ());
    check("campaign in an unknown group", r, Code::NotFound);
    let r = election.campaign(campaign("db", "nope", lease)).await.map(|_| ());
    check("campaign for an unknown role", r, Code::NotFound);
    let r = election.campaign(campaign("db", "primary", 424242)).await.map(|_| ());
    check("campaign with an unknown lease", r, Code::NotFound);
    let r = election
        .resign(pb::ResignRequest {
            group: "db".into(),
            role: "primary".into(),
            candidate: "nobody".into(),
            ..Default::default()
        })
        .await
        .map(|_| ());
    check("resign an unknown candidate", r, Code::NotFound);
    let r = kv
        .put(pb::PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            fence: Some(pb::Fence {
                group: "db".into(),
                role: "primary".into(),
                token: 999_999,
            }),
            ..Default::default()
        })
        .await
        .map(|_| ());
    check("fenced put with a token nobody holds", r, Code::FailedPrecondition);

    // Still serving.
    kv.put(pb::PutRequest {
        key: b"still".to_vec(),
        value: b"ok".to_vec(),
        ..Default::default()
    })
    .await
    .expect("put after bad input");
}
