//! Bad input gets a clear error and loses nothing; a data dir that is not
//! ours is refused at start-up with a one-line reason.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use roster_client::proto::{PutRequest, RequestOp, TxnRequest};
use roster_client::{Code, RequestOpExt};
use roster_tests::{binary, client_for, free_port, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_are_enforced_with_invalid_argument_and_the_cluster_keeps_serving() {
    let cluster = Cluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = client_for(cluster.endpoints(), Duration::from_secs(5)).await;
    client.put("kept", "1").await.expect("put");

    let cases: Vec<(&str, Result<_, roster_client::Error>)> = vec![
        ("empty key", client.put("", "v").await.map(|_| ())),
        ("key over 4 KiB", client.put(vec![b'k'; 4097], "v").await.map(|_| ())),
        (
            "value over 1 MiB",
            client.put("k", vec![0u8; 1024 * 1024 + 1]).await.map(|_| ()),
        ),
        ("empty get key", client.get("").await.map(|_| ())),
        (
            "too many txn ops",
            client
                .txn(TxnRequest {
                    success: (0..129).map(|i| RequestOp::put(format!("t{i}"), "v")).collect(),
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        (
            "empty txn op",
            client
                .txn(TxnRequest {
                    success: vec![RequestOp { request: None }],
                    ..Default::default()
                })
                .await
                .map(|_| ()),
        ),
        ("member id 0", client.member_add(0, "127.0.0.1:1").await.map(|_| ())),
        (
            "member address",
            client.member_add(9, "not an address").await.map(|_| ()),
        ),
    ];
    for (what, result) in cases {
        let err = result.expect_err(what);
        assert_eq!(err.code(), Code::InvalidArgument, "{what}: {err}");
        println!("{what}: {err}");
    }

    // A key of exactly the limit is fine.
    client.put(vec![b'k'; 4096], "v").await.expect("key at the limit");
    client
        .put_with(PutRequest {
            key: b"big".to_vec(),
            value: vec![7u8; 1024 * 1024],
            ..Default::default()
        })
        .await
        .expect("value at the limit");

    // Requests larger than the gRPC limit are refused by the transport.
    let err = client
        .txn(TxnRequest {
            success: (0..4)
                .map(|i| RequestOp::put(format!("h{i}"), vec![0u8; 1024 * 1024]))
                .collect(),
            ..Default::default()
        })
        .await
        .expect_err("request over the size limit");
    assert!(
        matches!(
            err.code(),
            Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted
        ),
        "{err}"
    );

    let err = client.member_remove(77).await.expect_err("unknown member");
    assert_eq!(err.code(), Code::NotFound, "{err}");

    // Nothing was lost and the cluster still serves.
    assert_eq!(client.get("kept").await.expect("get").expect("present").value, b"1");
    client.put("after", "ok").await.expect("put after bad input");
}

/// Runs rosterd with `args` until it exits (it must, within 20 s); returns
/// the exit code and stderr.
fn run_to_exit(args: &[&str]) -> (Option<i32>, String) {
    let mut child = Command::new(binary("rosterd"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn rosterd");
    let deadline = Instant::now() + Duration::from_secs(20);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("rosterd did not exit on a bad data dir");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn node_args(dir: &str, cluster: &str) -> Vec<String> {
    let port = free_port();
    vec![
        "--id".into(),
        "1".into(),
        "--listen".into(),
        format!("127.0.0.1:{port}"),
        "--data-dir".into(),
        dir.into(),
        "--cluster-name".into(),
        cluster.into(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refuses_a_data_dir_of_another_cluster_or_a_corrupt_one() {
    let mut cluster = Cluster::start(1);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    assert_eq!(cluster.stop(1), Some(0));
    let dir = cluster.nodes[&1].data_dir.to_string_lossy().into_owned();

    let args = node_args(&dir, "other-cluster");
    let (code, stderr) = run_to_exit(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("belongs to cluster 'test'"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one-line reason: {stderr}");

    // Corrupt every file in the data dir.
    for entry in walk(std::path::Path::new(&dir)) {
        let len = std::fs::metadata(&entry).map(|m| m.len()).unwrap_or(0).max(64);
        std::fs::write(&entry, vec![0xA5u8; len as usize]).expect("overwrite");
    }
    let args = node_args(&dir, "test");
    let (code, stderr) = run_to_exit(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("data dir"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "one-line reason: {stderr}");
    println!("corrupt data dir: {}", stderr.trim());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

/// What a connection to `addr` gets after sending `bytes`: whether the node
/// closed it (end of stream or reset) within a few seconds.
async fn closed_after(addr: &str, bytes: &[u8]) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(addr).await.expect("connect");
    conn.write_all(bytes).await.expect("send");
    let mut sink = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout_at(deadline, conn.read(&mut sink)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            // HTTP/2 answers garbage with a GOAWAY before closing.
            Ok(Ok(_)) => continue,
        }
    }
}

/// The members' port carries gRPC and the AppendEntries link (a zero byte
/// first, then the rest of the preface, then length-prefixed frames).
/// Garbage on either is closed and disturbs nothing: the same leader keeps
/// serving and writes still commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_peer_port_is_closed_and_the_cluster_keeps_serving() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = client_for(cluster.endpoints(), Duration::from_secs(5)).await;
    client.put("before", "1").await.expect("put");
    let term_before = cluster.status_of(leader).await.expect("status").term;

    const PREFACE: &[u8] = b"\0rsterA1";
    let mut undecodable = PREFACE.to_vec();
    undecodable.extend_from_slice(&8u32.to_be_bytes());
    undecodable.extend_from_slice(&[0xff; 8]);
    let mut oversized = PREFACE.to_vec();
    oversized.extend_from_slice(&u32::MAX.to_be_bytes());
    let cases: [(&str, &[u8]); 4] = [
        ("wrong link preface", b"\0garbage"),
        ("undecodable AppendEntries", &undecodable),
        ("frame over the limit", &oversized),
        ("neither protocol", b"GET / HTTP/1.1\r\n\r\n"),
    ];
    for node in cluster.nodes.values() {
        for (what, bytes) in cases {
            assert!(
                closed_after(&node.endpoint(), bytes).await,
                "node {}: {what}: the connection stayed open",
                node.id
            );
        }
    }

    client.put("after", "2").await.expect("put after the garbage");
    let status = cluster.status_of(leader).await.expect("status");
    assert_eq!(status.leader_id, leader, "the leader changed");
    assert_eq!(status.term, term_before, "an election happened");
    assert!(
        cluster.log_tail(1, 200).contains("AppendEntries link closed"),
        "the refused link was not logged:\n{}",
        cluster.log_tail(1, 40)
    );
}
