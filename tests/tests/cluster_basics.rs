//! A three-node cluster elects a leader, serves writes sent to any node, and
//! reports its health and status.

use std::time::Duration;

use roster_client::proto::RangeRequest;
use roster_tests::{client_for, eventually, http_get, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elects_a_leader_and_accepts_writes_through_a_follower() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let follower = cluster.others(leader)[0];

    // A client that only knows a follower: the follower forwards the write.
    let client = client_for(vec![cluster.nodes[&follower].endpoint()], Duration::from_secs(5)).await;
    let put = client.put("greeting", "hello").await.expect("put through a follower");
    let header = put.header.expect("header");
    assert_eq!(header.member_id, follower, "answered by the follower it was sent to");
    let revision = header.revision;
    assert!(revision >= 1);

    // Linearizable read on the follower sees it at once (read index).
    let follower_only = client_for(vec![cluster.nodes[&follower].endpoint()], Duration::from_secs(5)).await;
    let range = follower_only
        .range(RangeRequest {
            key: b"greeting".to_vec(),
            ..Default::default()
        })
        .await
        .expect("get on the follower");
    assert_eq!(range.header.expect("header").member_id, follower);
    let got = &range.kvs[0];
    assert_eq!(got.value, b"hello");
    assert_eq!(got.mod_revision, revision);
    assert_eq!(got.version, 1);

    // The follower named the leader (`roster-leader`), so the client's next
    // write goes there directly instead of being forwarded.
    let again = client.put("greeting", "again").await.expect("second put");
    assert_eq!(
        again.header.expect("header").member_id,
        leader,
        "second write not sent to the leader"
    );

    // Every node applies it; serializable reads from each node say so.
    for id in cluster.nodes.keys() {
        let c = client_for(vec![cluster.nodes[id].endpoint()], Duration::from_secs(5)).await;
        let resp = eventually(Duration::from_secs(10), "replication to every node", || {
            let c = c.clone();
            async move {
                let r = c
                    .range(RangeRequest {
                        key: b"greeting".to_vec(),
                        serializable: true,
                        ..Default::default()
                    })
                    .await
                    .ok()?;
                (!r.kvs.is_empty()).then_some(r)
            }
        })
        .await;
        assert!(resp.header.expect("header").serializable);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_health_report_the_cluster() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;

    let status = cluster.status_of(leader).await.expect("status");
    assert_eq!(status.cluster_name, "test");
    assert_eq!(status.leader_id, leader);
    assert_eq!(status.members.len(), 3);
    for m in &status.members {
        assert!(m.reachable, "member {} unreachable: {}", m.id, m.error);
        assert!(m.voter);
        assert!(m.term >= 1);
        assert_eq!(m.leader_id, leader);
    }
    assert_eq!(status.members.iter().filter(|m| m.state == "leader").count(), 1);

    // /health is 200 on every node that sees a leader with a quorum.
    for node in cluster.nodes.values() {
        let (code, body) = eventually(Duration::from_secs(10), "200 from /health", || async {
            http_get(node.http, "/health").filter(|(c, _)| *c == 200)
        })
        .await;
        assert_eq!(code, 200);
        assert!(body.contains("\"ok\""), "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_503_without_a_quorum() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let survivor = cluster.others(leader)[0];
    for id in cluster.others(survivor) {
        cluster.kill(id);
    }
    let http = cluster.nodes[&survivor].http;
    let (code, body) = eventually(Duration::from_secs(15), "503 from /health on a lone node", || async {
        http_get(http, "/health").filter(|(c, _)| *c == 503)
    })
    .await;
    assert_eq!(code, 503);
    assert!(body.contains("unavailable"), "{body}");
}
