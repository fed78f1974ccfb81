//! `rosterctl hold` and the coordination commands against a real cluster:
//! failover between two supervised commands when the holder dies.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use roster_tests::{binary, client_for, eventually, rosterctl, Cluster};

/// `rosterctl hold GROUP primary` whose command appends "NAME TOKEN" to
/// `file` every 100 ms; stderr goes to `log`.
fn hold(cluster: &Cluster, group: &str, name: &str, ttl: &str, file: &Path, log: &Path) -> Child {
    let script = format!(
        "while true; do echo \"{name} $ROSTER_TOKEN\" >> '{}'; sleep 0.1; done",
        file.display()
    );
    Command::new(binary("rosterctl"))
        .env("ROSTER_ENDPOINTS", cluster.endpoints().join(","))
        .args([
            "hold",
            group,
            "primary",
            "--candidate",
            name,
            "--ttl",
            ttl,
            "--grace",
            "1s",
        ])
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).expect("log file"))
        .spawn()
        .expect("spawn rosterctl hold")
}

fn lines_of(file: &Path, name: &str) -> Vec<u64> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix(&format!("{name} ")))
        .filter_map(|t| t.trim().parse().ok())
        .collect()
}

async fn holder(client: &roster_client::Client, group: &str) -> Option<(String, u64, Vec<String>)> {
    let h = client.holders(group, "primary").await.ok()?;
    let waiting = h.waiting.iter().map(|w| w.candidate.clone()).collect();
    h.holders.first().map(|g| (g.candidate.clone(), g.token, waiting))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_fails_over_when_the_holder_is_killed() {
    let cluster = Cluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = client_for(cluster.endpoints(), Duration::from_secs(5)).await;
    let (code, _, err) = rosterctl(&cluster, &["group", "create", "db", "--role", "primary"]);
    assert_eq!(code, 0, "{err}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("out");
    let ttl = Duration::from_secs(3);
    let mut a = hold(&cluster, "db", "a", "3s", &file, &dir.path().join("a.log"));
    let (_, token_a, _) = eventually(Duration::from_secs(15), "a holds db/primary", || async {
        holder(&client, "db").await.filter(|(c, _, _)| c == "a")
    })
    .await;
    let mut b = hold(&cluster, "db", "b", "3s", &file, &dir.path().join("b.log"));
    eventually(Duration::from_secs(15), "b waits for db/primary", || async {
        holder(&client, "db")
            .await
            .filter(|(_, _, w)| w.contains(&"b".to_string()))
    })
    .await;
    eventually(Duration::from_secs(5), "a's command writes with its token", || async {
        lines_of(&file, "a").contains(&token_a).then_some(())
    })
    .await;
    assert!(lines_of(&file, "b").is_empty(), "b must not run while a holds the role");

    let (code, out, err) = rosterctl(&cluster, &["role", "holders", "db", "primary"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains('a') && out.contains("WAITING"), "{out}");

    // kill -9 a's rosterctl: its lease expires and b takes over.
    let killed = Instant::now();
    a.kill().unwrap();
    a.wait().unwrap();
    let (_, token_b, _) = eventually(ttl + Duration::from_secs(3), "b holds db/primary", || async {
        holder(&client, "db").await.filter(|(c, _, _)| c == "b")
    })
    .await;
    let took = killed.elapsed();
    assert!(
        took <= ttl + Duration::from_secs(1),
        "failover took {took:?} (TTL {ttl:?})"
    );
    assert!(token_b > token_a, "tokens must increase: {token_a} then {token_b}");
    eventually(Duration::from_secs(5), "b's command writes with its token", || async {
        lines_of(&file, "b").contains(&token_b).then_some(())
    })
    .await;

    // a's command was stopped (it died with its supervisor): no more lines.
    let before = lines_of(&file, "a").len();
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        lines_of(&file, "a").len(),
        before,
        "a's command still runs after its role was lost"
    );
    assert!(lines_of(&file, "a").iter().all(|t| *t == token_a));

    // SIGTERM to b's rosterctl: stops the command, resigns at once.
    unsafe {
        libc::kill(b.id() as i32, libc::SIGTERM);
    }
    let status = b.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(dir.path().join("b.log")).unwrap()
    );
    let h = client.holders("db", "primary").await.unwrap();
    assert!(h.holders.is_empty(), "{h:?}");
    let log = std::fs::read_to_string(dir.path().join("b.log")).unwrap();
    assert!(log.contains("ACQUIRED") && log.contains("resigned"), "{log}");
    let before = lines_of(&file, "b").len();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        lines_of(&file, "b").len(),
        before,
        "b's command still runs after resigning"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_exits_with_the_command_status_and_cli_basics() {
    let cluster = Cluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let (code, out, err) = rosterctl(
        &cluster,
        &[
            "group",
            "create",
            "svc",
            "--role",
            "primary:capacity=1",
            "--member",
            "n1:primary=5",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("created"), "{out}");
    let (code, _, err) = rosterctl(&cluster, &["group", "create", "svc", "--role", "primary"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: ALREADY_EXISTS"), "{err}");

    let (code, _, err) = rosterctl(
        &cluster,
        &[
            "hold",
            "svc",
            "primary",
            "--candidate",
            "x",
            "--ttl",
            "3s",
            "--",
            "sh",
            "-c",
            "test -n \"$ROSTER_TOKEN\" && exit 3",
        ],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("ACQUIRED") && err.contains("exited on its own"), "{err}");
    let client = client_for(cluster.endpoints(), Duration::from_secs(5)).await;
    assert!(client.holders("svc", "primary").await.unwrap().holders.is_empty());

    let (code, out, err) = rosterctl(&cluster, &["--json", "lease", "grant", "5s"]);
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = json["id_hex"].as_str().unwrap().to_owned();
    let (code, out, err) = rosterctl(&cluster, &["lease", "list"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&id), "{out}");
    let (code, _, err) = rosterctl(&cluster, &["lease", "revoke", &id]);
    assert_eq!(code, 0, "{err}");

    let (code, out, err) = rosterctl(&cluster, &["topology", "show"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("svc") && out.contains("primary"), "{out}");
    let (code, _, err) = rosterctl(&cluster, &["role", "holders", "nope", "primary"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("error: NOT_FOUND"), "{err}");
}
