//! rosterctl against a real cluster: tables for people, JSON for scripts,
//! and errors as `error: CODE: message` with exit code 1.

use std::time::Duration;

use roster_tests::{rosterctl, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rosterctl_drives_a_real_cluster() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;

    let (code, out, err) = rosterctl(&cluster, &["kv", "put", "app/config", "v1"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revision"), "{out}");

    let (code, out, err) = rosterctl(&cluster, &["--json", "kv", "get", "app/config"]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(json["kvs"][0]["value"], "v1");
    assert_eq!(json["kvs"][0]["version"], 1);
    let rev = json["kvs"][0]["mod_revision"].as_u64().expect("mod_revision");

    // Compare-and-set on the revision just read: succeeds once, then fails.
    let cas = format!("mod(app/config) = {rev}");
    let (code, out, err) = rosterctl(
        &cluster,
        &["--json", "kv", "txn", "--if", &cas, "--then", "put app/config v2"],
    );
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(json["succeeded"], true, "{out}");
    let (code, out, _) = rosterctl(
        &cluster,
        &["--json", "kv", "txn", "--if", &cas, "--then", "put app/config v3"],
    );
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(json["succeeded"], false, "{out}");

    let (code, out, err) = rosterctl(&cluster, &["kv", "range", "app/"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("app/config") && out.contains("v2"), "{out}");

    let (code, out, err) = rosterctl(&cluster, &["status"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("leader"), "{out}");
    assert_eq!(out.lines().filter(|l| l.contains("voter")).count(), 3, "{out}");

    let (code, out, err) = rosterctl(&cluster, &["--json", "member", "list"]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).expect("JSON output");
    assert_eq!(json["leader_id"], leader);

    let (code, out, err) = rosterctl(&cluster, &["kv", "del", "app/config"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains('1'), "{out}");

    // Errors: clear code and message, exit 1.
    let (code, _, err) = rosterctl(&cluster, &["member", "remove", "99"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: NOT_FOUND"), "{err}");
    let big_key = "k".repeat(5000);
    let (code, _, err) = rosterctl(&cluster, &["kv", "put", &big_key, "v"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: INVALID_ARGUMENT"), "{err}");
}
