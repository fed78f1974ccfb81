//! End-to-end runs of the `rosterctl` binary against fake nodes: output,
//! exit codes and error messages.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{dead_endpoint, serve, Mode, Node, SLACK};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `rosterctl` with `args` (and, if given, `stdin`), with a clean
/// environment for the variables it reads.
async fn rosterctl(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rosterctl"))
        .args(args)
        .env_remove("ROSTER_ENDPOINTS")
        .env_remove("ROSTER_TIMEOUT")
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("rosterctl runs");
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input).await.unwrap();
        drop(pipe);
    }
    let out = child.wait_with_output().await.unwrap();
    Run {
        code: out.status.code().expect("exited normally, not by a signal"),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test]
async fn kv_commands_print_tables_and_json() {
    let node = Node::new(1, Mode::Serve);
    let addr = serve(&node).await;

    let r = rosterctl(&["--endpoints", &addr, "kv", "put", "k", "v"], None).await;
    assert_eq!((r.code, r.stdout.as_str()), (0, "OK (revision 7)\n"), "{}", r.stderr);

    let r = rosterctl(&["--endpoints", &addr, "kv", "get", "k"], None).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let lines: Vec<&str> = r.stdout.lines().collect();
    assert!(lines[0].starts_with("KEY") && lines[0].contains("VALUE"));
    assert!(lines[1].starts_with("k  "), "{}", r.stdout);

    let r = rosterctl(&["--endpoints", &addr, "kv", "get", "missing"], None).await;
    assert_eq!(r.stdout, "(no matching keys)\n");

    let r = rosterctl(&["kv", "get", "k", "--json", "--endpoints", &addr], None).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["kvs"][0]["key"], "k");
    assert_eq!(doc["kvs"][0]["value"], "v");
    assert_eq!(doc["header"]["member_id"], 1);

    let r = rosterctl(
        &[
            "--endpoints",
            &addr,
            "kv",
            "txn",
            "--if",
            "create(lock) = 0",
            "--then",
            "put lock me",
        ],
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("SUCCESS"), "{}", r.stdout);

    let r = rosterctl(&["--endpoints", &addr, "kv", "del", "k"], None).await;
    assert_eq!(r.stdout, "deleted 1 key (revision 7)\n");
}

#[tokio::test]
async fn put_reads_the_value_from_stdin() {
    let node = Node::new(1, Mode::Serve);
    let addr = serve(&node).await;
    let r = rosterctl(
        &["--endpoints", &addr, "kv", "put", "blob", "--stdin"],
        Some(b"\x00\xffbinary\n"),
    )
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        node.put_values.lock().unwrap().as_slice(),
        [b"\x00\xffbinary\n".to_vec()]
    );
}

#[tokio::test]
async fn status_and_members() {
    let node = Node::new(1, Mode::Serve);
    let addr = serve(&node).await;

    let r = rosterctl(&["--endpoints", &addr, "status"], None).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stdout
            .starts_with("cluster: fake  leader: 1 (127.0.0.1:7401)  term: 2"),
        "{}",
        r.stdout
    );
    assert!(r
        .stdout
        .contains("unreachable members:\n  9 (127.0.0.1:7409): connection refused"));

    let r = rosterctl(&["--endpoints", &addr, "--json", "member", "list"], None).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let doc: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(doc["leader_id"], 1);
}

#[tokio::test]
async fn endpoints_come_from_the_environment_and_fail_over() {
    let dead = dead_endpoint().await;
    let node = Node::new(1, Mode::Serve);
    let addr = serve(&node).await;
    let out = Command::new(env!("CARGO_BIN_EXE_rosterctl"))
        .args(["kv", "get", "k"])
        .env("ROSTER_ENDPOINTS", format!("{dead},http://{addr}"))
        .env("ROSTER_TIMEOUT", "5s")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(node.calls(), 1);
}

#[tokio::test]
async fn server_errors_exit_1_with_the_code() {
    let node = Node::new(1, Mode::Invalid);
    let addr = serve(&node).await;
    let r = rosterctl(&["--endpoints", &addr, "kv", "put", "k", "v"], None).await;
    assert_eq!(r.code, 1);
    assert_eq!(r.stderr, "error: INVALID_ARGUMENT: key too large\n");
    assert!(r.stdout.is_empty());
}

#[tokio::test]
async fn unavailable_cluster_exits_1_within_the_timeout() {
    let node = Node::new(1, Mode::Unavailable { hint: None });
    let addr = serve(&node).await;
    let dead = dead_endpoint().await;
    let endpoints = format!("{addr},{dead}");
    let started = Instant::now();
    let r = rosterctl(
        &["--endpoints", &endpoints, "--timeout", "1s", "kv", "put", "k", "v"],
        None,
    )
    .await;
    // Process start-up (a debug binary, on a machine busy with other tests)
    // adds to the deadline: allow for it generously, while staying well
    // below the 5 s default that would mean the flag was ignored.
    let took = started.elapsed();
    assert!(took < Duration::from_secs(1) + SLACK * 8, "took {took:?}");
    assert_eq!(r.code, 1);
    assert!(r.stderr.starts_with("error: UNAVAILABLE: "), "{}", r.stderr);
    assert!(node.calls() >= 1, "the live endpoint was asked");
}

#[tokio::test]
async fn usage_errors_exit_2() {
    for args in [
        &["kv", "txn", "--if", "bogus(k) = 1"][..],
        &["--timeout", "soon", "status"],
        &["--endpoints", "https://a:1", "status"],
        &["kv", "txn"],
        &["kv", "del", "", "--prefix"],
        &["kv", "put", "k"], // neither VALUE nor --stdin
        &["member", "remove", "zero"],
    ] {
        let r = rosterctl(args, None).await;
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.starts_with("error: "), "{args:?}: {}", r.stderr);
    }
    let r = rosterctl(&["--help"], None).await;
    assert_eq!(r.code, 0);
}
