//! Retry, failover, deduplication ids and deadlines, against in-process fake
//! gRPC servers on 127.0.0.1 (no rosterd needed).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{dead_endpoint, serve, Mode, Node, SLACK};
use roster_client::prelude::*;

async fn client(endpoints: &[&str], timeout: Duration) -> Client {
    Client::connect(
        ClientConfig::new(endpoints.iter().copied())
            .request_timeout(timeout)
            .backoff_initial(Duration::from_millis(10))
            .backoff_max(Duration::from_millis(100)),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn fails_over_from_a_refused_endpoint() {
    let dead = dead_endpoint().await;
    let b = Node::new(2, Mode::Serve);
    let b_addr = serve(&b).await;
    let c = client(&[&dead, &b_addr], Duration::from_secs(5)).await;

    let r = c.put("k", "v").await.unwrap();
    assert_eq!(r.header.unwrap().member_id, 2);
    assert_eq!(b.calls(), 1);
    assert_eq!(c.current_endpoint(), b_addr);
}

#[tokio::test]
async fn retry_after_unavailable_reuses_the_request_id() {
    let a = Node::new(1, Mode::Unavailable { hint: None });
    let b = Node::new(2, Mode::Serve);
    let (a_addr, b_addr) = (serve(&a).await, serve(&b).await);
    let c = client(&[&a_addr, &b_addr], Duration::from_secs(5)).await;

    c.put("k", "v").await.unwrap();
    assert_eq!(a.calls(), 1);
    assert_eq!(b.calls(), 1);
    let sent_to_a = a.ids()[0].expect("put carries a request id");
    let sent_to_b = b.ids()[0].expect("put carries a request id");
    assert_eq!(sent_to_a, sent_to_b, "a retry must reuse the RequestId");
    assert_eq!(sent_to_a.client_id, c.client_id());
    assert_eq!(sent_to_a.sequence, 1);
}

#[tokio::test]
async fn every_retry_on_one_node_carries_the_same_id() {
    let a = Node::new(1, Mode::FailFirst(3));
    let a_addr = serve(&a).await;
    let c = client(&[&a_addr], Duration::from_secs(5)).await;

    c.txn(
        TxnBuilder::new()
            .when(Compare::absent("lock"))
            .then(RequestOp::put("lock", "me")),
    )
    .await
    .unwrap();
    let ids = a.ids();
    assert_eq!(ids.len(), 4, "three failures, then success");
    assert!(ids.iter().all(|id| *id == ids[0] && id.is_some()), "{ids:?}");
}

#[tokio::test]
async fn each_write_gets_the_next_sequence_and_reads_none() {
    let a = Node::new(1, Mode::Serve);
    let a_addr = serve(&a).await;
    let c = client(&[&a_addr], Duration::from_secs(5)).await;

    c.put("a", "1").await.unwrap();
    c.get("a").await.unwrap();
    c.delete("a").await.unwrap();
    c.clone().txn(TxnRequest::default()).await.unwrap();
    c.put_with(PutRequest {
        key: b"b".to_vec(),
        request_id: Some(roster_client::proto::RequestId {
            client_id: 1,
            sequence: 1,
        }),
        ..Default::default()
    })
    .await
    .unwrap();

    let ids = a.ids();
    assert_eq!(ids[1], None, "reads carry no request id");
    let sequences: Vec<u64> = ids.iter().flatten().map(|id| id.sequence).collect();
    assert_eq!(sequences, vec![1, 2, 3, 4]);
    assert!(ids.iter().flatten().all(|id| id.client_id == c.client_id()));
}

#[tokio::test]
async fn concurrent_writes_from_clones_get_distinct_sequences() {
    let a = Node::new(1, Mode::Serve);
    let a_addr = serve(&a).await;
    let c = client(&[&a_addr], Duration::from_secs(5)).await;

    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move { c.put(format!("k{i}"), "v").await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let mut sequences: Vec<u64> = a.ids().iter().flatten().map(|id| id.sequence).collect();
    sequences.sort_unstable();
    assert_eq!(sequences, (1..=20).collect::<Vec<_>>());
}

#[tokio::test]
async fn follows_the_leader_hint_and_sticks_to_it() {
    let b = Node::new(2, Mode::Serve);
    let c_node = Node::new(3, Mode::Serve);
    let (b_addr, c_addr) = (serve(&b).await, serve(&c_node).await);
    let a = Node::new(
        1,
        Mode::Unavailable {
            hint: Some(c_addr.clone()),
        },
    );
    let a_addr = serve(&a).await;
    let c = client(&[&a_addr, &b_addr, &c_addr], Duration::from_secs(5)).await;

    c.put("k", "v").await.unwrap();
    assert_eq!((a.calls(), b.calls(), c_node.calls()), (1, 0, 1));
    // The next call starts at the endpoint that answered.
    c.put("k", "v2").await.unwrap();
    assert_eq!((a.calls(), b.calls(), c_node.calls()), (1, 0, 2));
}

#[tokio::test]
async fn stale_hints_do_not_starve_the_rotation() {
    // A names C, which is down; B is the one that answers.
    let dead_c = dead_endpoint().await;
    let a = Node::new(
        1,
        Mode::Unavailable {
            hint: Some(dead_c.clone()),
        },
    );
    let b = Node::new(2, Mode::Serve);
    let (a_addr, b_addr) = (serve(&a).await, serve(&b).await);
    let c = client(&[&a_addr, &b_addr, &dead_c], Duration::from_secs(5)).await;
    c.put("k", "v").await.unwrap();
    assert_eq!((a.calls(), b.calls()), (1, 1));

    // X and Y name each other; Z answers.
    let x = Node::new(1, Mode::Serve);
    let y = Node::new(2, Mode::Serve);
    let z = Node::new(3, Mode::Serve);
    let (x_addr, y_addr, z_addr) = (serve(&x).await, serve(&y).await, serve(&z).await);
    x.set_mode(Mode::Unavailable {
        hint: Some(y_addr.clone()),
    });
    y.set_mode(Mode::Unavailable {
        hint: Some(x_addr.clone()),
    });
    let c = client(&[&x_addr, &y_addr, &z_addr], Duration::from_secs(5)).await;
    c.put("k", "v").await.unwrap();
    assert_eq!((x.calls(), y.calls(), z.calls()), (1, 1, 1));
}

#[tokio::test]
async fn learns_a_leader_missing_from_the_configuration() {
    let leader = Node::new(3, Mode::Serve);
    let leader_addr = serve(&leader).await;
    let a = Node::new(
        1,
        Mode::Unavailable {
            hint: Some(format!("http://{leader_addr}")),
        },
    );
    let a_addr = serve(&a).await;
    let c = client(&[&a_addr], Duration::from_secs(5)).await;

    c.delete("k").await.unwrap();
    assert_eq!(leader.calls(), 1);
    assert_eq!(c.endpoints(), vec![a_addr, leader_addr.clone()]);
    assert_eq!(c.current_endpoint(), leader_addr);
}

#[tokio::test]
async fn invalid_argument_is_returned_at_once() {
    let a = Node::new(1, Mode::Invalid);
    let b = Node::new(2, Mode::Serve);
    let (a_addr, b_addr) = (serve(&a).await, serve(&b).await);
    let c = client(&[&a_addr, &b_addr], Duration::from_secs(5)).await;

    let err = c.put("k", "v").await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "key too large");
    assert!(matches!(err, Error::Rpc { .. }), "{err:?}");
    assert_eq!(err.endpoint(), Some(a_addr.as_str()));
    assert_eq!((a.calls(), b.calls()), (1, 0));
}

#[tokio::test]
async fn deadline_holds_when_every_node_is_unavailable() {
    let a = Node::new(1, Mode::Unavailable { hint: None });
    let b = Node::new(2, Mode::Unavailable { hint: None });
    let (a_addr, b_addr) = (serve(&a).await, serve(&b).await);
    let deadline = Duration::from_millis(500);
    let c = client(&[&a_addr, &b_addr], deadline).await;

    let started = Instant::now();
    let err = c.put("k", "v").await.unwrap_err();
    let elapsed = started.elapsed();

    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(elapsed < deadline + SLACK, "took {elapsed:?}");
    assert!(
        elapsed >= deadline - Duration::from_millis(100),
        "gave up early after {elapsed:?}"
    );
    match &err {
        Error::DeadlineExceeded { attempts, .. } => assert!(*attempts > 2, "{err}"),
        other => panic!("{other:?}"),
    }
    assert!(a.calls() >= 2 && b.calls() >= 2, "both nodes are tried in turn");
    // The id never changed across all those attempts.
    let mut ids = a.ids();
    ids.extend(b.ids());
    assert!(ids.iter().all(|id| *id == ids[0]));
}

#[tokio::test]
async fn deadline_holds_when_every_node_is_down() {
    let (x, y) = (dead_endpoint().await, dead_endpoint().await);
    let deadline = Duration::from_millis(400);
    let c = client(&[&x, &y], deadline).await;

    let started = Instant::now();
    let err = c.get("k").await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(elapsed < deadline + SLACK, "took {elapsed:?}");
}

#[tokio::test]
async fn deadline_holds_when_a_node_hangs() {
    let a = Node::new(1, Mode::Hang);
    let a_addr = serve(&a).await;
    let deadline = Duration::from_millis(400);
    let c = client(&[&a_addr], deadline).await;

    let started = Instant::now();
    let err = c.put("k", "v").await.unwrap_err();
    let elapsed = started.elapsed();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err}");
    assert!(elapsed < deadline + SLACK, "took {elapsed:?}");
    // The server was told how long the client waits.
    let timeouts = a.grpc_timeouts.lock().unwrap().clone();
    assert!(timeouts[0].is_some(), "grpc-timeout header missing");
}

#[tokio::test]
async fn unavailable_is_reported_even_if_the_last_attempt_hangs() {
    // A says "no quorum" quickly, B hangs: the caller should hear about the
    // quorum, not about B's silence cut short by the deadline.
    let a = Node::new(1, Mode::Unavailable { hint: None });
    let b = Node::new(2, Mode::Hang);
    let (a_addr, b_addr) = (serve(&a).await, serve(&b).await);
    let deadline = Duration::from_millis(400);
    let c = client(&[&a_addr, &b_addr], deadline).await;

    let started = Instant::now();
    let err = c.put("k", "v").await.unwrap_err();
    assert!(started.elapsed() < deadline + SLACK);
    assert_eq!(err.code(), Code::Unavailable, "{err}");
}

#[tokio::test]
async fn attempt_timeout_moves_on_from_a_hung_node() {
    let a = Node::new(1, Mode::Hang);
    let b = Node::new(2, Mode::Serve);
    let (a_addr, b_addr) = (serve(&a).await, serve(&b).await);
    let c = Client::connect(
        ClientConfig::new([a_addr.as_str(), b_addr.as_str()])
            .request_timeout(Duration::from_secs(3))
            .attempt_timeout(Duration::from_millis(200)),
    )
    .await
    .unwrap();

    let started = Instant::now();
    c.put("k", "v").await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(a.ids()[0], b.ids()[0], "the hung attempt and the retry share the id");
}

#[tokio::test]
async fn recovers_when_a_node_comes_back() {
    let a = Node::new(1, Mode::Unavailable { hint: None });
    let a_addr = serve(&a).await;
    let c = client(&[&a_addr], Duration::from_secs(5)).await;
    let node = Arc::clone(&a);
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        node.set_mode(Mode::Serve);
    });
    let kv = c.get("k").await.unwrap().unwrap();
    assert_eq!(kv.value, b"v");
    assert!(a.calls() >= 2);
}

#[tokio::test]
async fn get_of_a_missing_key_is_none() {
    let a = Node::new(1, Mode::Serve);
    let a_addr = serve(&a).await;
    let c = client(&[&a_addr], Duration::from_secs(5)).await;
    assert_eq!(c.get("missing").await.unwrap(), None);
    let r = c.range_prefix("app/").await.unwrap();
    assert_eq!(r.count, 1);
}

#[tokio::test]
async fn cluster_calls_fail_over_too() {
    let a = Node::new(1, Mode::Unavailable { hint: None });
    let b = Node::new(2, Mode::Serve);
    let (a_addr, b_addr) = (serve(&a).await, serve(&b).await);
    let c = client(&[&a_addr, &b_addr], Duration::from_secs(5)).await;

    let status = c.status().await.unwrap();
    assert_eq!(status.answered_by, 2);
    let members = c.member_list().await.unwrap();
    assert_eq!(members.leader_id, 2);
    c.member_promote(4).await.unwrap();
}

#[tokio::test]
async fn non_idempotent_retry_outcome_is_annotated() {
    // The first attempt fails ambiguously, the retry hits NOT_FOUND: the
    // operator must learn that the first attempt may have removed it.
    let a = Node::new(1, Mode::Unavailable { hint: None });
    let b = Node::new(2, Mode::NotFound);
    let (a_addr, b_addr) = (serve(&a).await, serve(&b).await);
    let c = client(&[&a_addr, &b_addr], Duration::from_secs(5)).await;

    let err = c.member_remove(9).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().starts_with("member 9 is not a member"));
    assert!(err.message().contains("may have been applied"), "{err}");

    // A plain NOT_FOUND on the first attempt stays plain.
    let only_b = client(&[&b_addr], Duration::from_secs(5)).await;
    let err = only_b.member_remove(9).await.unwrap_err();
    assert_eq!(err.message(), "member 9 is not a member");
}

#[tokio::test]
async fn longer_deadline_handle_shares_the_sequence() {
    let a = Node::new(1, Mode::Serve);
    let a_addr = serve(&a).await;
    let c = client(&[&a_addr], Duration::from_secs(1)).await;
    let slow = c.with_request_timeout(Duration::from_secs(60));
    c.put("a", "1").await.unwrap();
    slow.put("a", "2").await.unwrap();
    slow.member_add(4, "10.0.0.4:7401").await.unwrap();
    let sequences: Vec<u64> = a.ids().iter().flatten().map(|id| id.sequence).collect();
    assert_eq!(sequences, vec![1, 2]);
}
