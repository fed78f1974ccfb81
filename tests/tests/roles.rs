//! Role elections, topology and watch on a real cluster, through the raw
//! generated gRPC clients: failover when a holder's lease ends, Observe,
//! switchover without a gap, priority 0, capacity 2, fencing, the HTTP
//! holder check, GetTopology at one revision, and a watch that resumes
//! across a restart of the node it was connected to.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use roster_proto::v1 as pb;
use roster_proto::v1::election_client::ElectionClient;
use roster_proto::v1::kv_client::KvClient;
use roster_proto::v1::lease_client::LeaseClient;
use roster_proto::v1::topology_client::TopologyClient;
use roster_proto::v1::watch_client::WatchClient;
use roster_tests::{channel, eventually, http_get, Cluster};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

const TTL: Duration = Duration::from_millis(2000);
const WAIT: Duration = Duration::from_secs(15);

/// A lease kept alive by a KeepAlive stream to the leader until dropped.
struct KeptLease {
    id: i64,
    /// Send time of the newest acknowledged renewal.
    last_ack: Arc<Mutex<Instant>>,
    task: JoinHandle<()>,
}

impl KeptLease {
    async fn grant(leader: &str) -> Self {
        let mut leases = LeaseClient::new(channel(leader).await);
        let id = leases
            .grant(pb::LeaseGrantRequest {
                ttl_ms: TTL.as_millis() as u64,
                ..Default::default()
            })
            .await
            .expect("grant")
            .into_inner()
            .id;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let mut answers = leases
            .keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
            .await
            .expect("keepalive stream")
            .into_inner();
        let last_ack = Arc::new(Mutex::new(Instant::now()));
        let acked = last_ack.clone();
        let task = tokio::spawn(async move {
            loop {
                let sent = Instant::now();
                if tx.send(pb::LeaseKeepAliveRequest { id }).await.is_err() {
                    return;
                }
                match answers.message().await {
                    Ok(Some(answer)) if answer.ttl_ms > 0 => *acked.lock().unwrap() = sent,
                    _ => return,
                }
                // The renewal interval, not a synchronisation.
                tokio::time::sleep(Duration::from_millis(400)).await;
            }
        });
        KeptLease { id, last_ack, task }
    }

    /// Stops renewing (drops the KeepAlive stream); returns the send time of
    /// the last acknowledged renewal.
    async fn stop(self) -> Instant {
        self.task.abort();
        let _ = self.task.await;
        let at = *self.last_ack.lock().unwrap();
        at
    }
}

fn candidate(c: &str, lease: i64, priority: u32) -> pb::CampaignRequest {
    pb::CampaignRequest {
        group: "db".into(),
        role: "primary".into(),
        candidate: c.into(),
        lease,
        priority,
        ..Default::default()
    }
}

async fn next_event(stream: &mut Streaming<pb::CampaignResponse>, what: &str) -> pb::campaign_response::Event {
    match tokio::time::timeout(WAIT, stream.message()).await {
        Ok(Ok(Some(m))) => m.event.expect("campaign event"),
        other => panic!("{what}: no campaign message: {other:?}"),
    }
}

fn names(holders: &[pb::Grant]) -> Vec<String> {
    holders.iter().map(|h| h.candidate.clone()).collect()
}

/// Collects every holder list an Observe stream sends.
fn observe(mut stream: Streaming<pb::ObserveResponse>) -> Arc<Mutex<Vec<Vec<pb::Grant>>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let out = seen.clone();
    tokio::spawn(async move {
        while let Ok(Some(m)) = stream.message().await {
            out.lock().unwrap().push(m.holders);
        }
    });
    seen
}

async fn wait_observed(seen: &Arc<Mutex<Vec<Vec<pb::Grant>>>>, want: &[&str], what: &str) {
    eventually(WAIT, what, || async {
        let lists = seen.lock().unwrap();
        (lists.last().map(|l| names(l)) == Some(want.iter().map(|s| s.to_string()).collect())).then_some(())
    })
    .await;
}

async fn fenced_put(kv: &mut KvClient<Channel>, token: u64) -> Result<pb::PutResponse, tonic::Status> {
    kv.put(pb::PutRequest {
        key: b"db/config".to_vec(),
        value: format!("written with {token}").into_bytes(),
        fence: Some(pb::Fence {
            group: "db".into(),
            role: "primary".into(),
            token,
        }),
        ..Default::default()
    })
    .await
    .map(|r| r.into_inner())
}

/// Waits until every node's HTTP holder check answers `code` for `who`.
async fn http_check(cluster: &Cluster, who: &str, code: u16) {
    let path = format!("/v1/holders/db/primary/{who}");
    eventually(WAIT, &format!("GET {path} = {code} on every node"), || async {
        cluster
            .nodes
            .values()
            .all(|n| http_get(n.http, &path).is_some_and(|(c, _)| c == code))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_switchover_priorities_capacity_fencing_and_topology() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let leader_addr = cluster.nodes[&leader].endpoint();
    let follower_addr = cluster.nodes[&cluster.others(leader)[0]].endpoint();
    let mut topology = TopologyClient::new(channel(&follower_addr).await);
    let mut election = ElectionClient::new(channel(&follower_addr).await);
    let mut kv = KvClient::new(channel(&leader_addr).await);

    let role = |name: &str, capacity: u32| pb::RoleSpec {
        name: name.into(),
        capacity,
        ..Default::default()
    };
    topology
        .put_group(pb::PutGroupRequest {
            name: "db".into(),
            roles: vec![role("primary", 1), role("standby", 2)],
            create: true,
            ..Default::default()
        })
        .await
        .expect("create group");
    let err = topology
        .put_group(pb::PutGroupRequest {
            name: "db".into(),
            roles: vec![role("primary", 1)],
            create: true,
            ..Default::default()
        })
        .await
        .expect_err("created twice");
    assert_eq!(err.code(), Code::AlreadyExists, "{err}");

    let a = KeptLease::grant(&leader_addr).await;
    let b = KeptLease::grant(&leader_addr).await;
    let c = KeptLease::grant(&leader_addr).await;
    let d = KeptLease::grant(&leader_addr).await;

    // Validation and unknown names.
    let err = election
        .campaign(pb::CampaignRequest {
            candidate: "Not A Name".into(),
            ..candidate("x", a.id, 1)
        })
        .await
        .expect_err("bad name refused");
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = election
        .campaign(pb::CampaignRequest {
            group: "nope".into(),
            ..candidate("a", a.id, 1)
        })
        .await
        .expect_err("unknown group refused");
    assert_eq!(err.code(), Code::NotFound, "{err}");

    // Observe from the start: no holder yet.
    let observed = observe(
        election
            .observe(pb::ObserveRequest {
                group: "db".into(),
                role: "primary".into(),
            })
            .await
            .expect("observe")
            .into_inner(),
    );
    wait_observed(&observed, &[], "the first observed list (empty)").await;

    // A is elected, B queues behind it, C (priority 0) behind B.
    let mut camp_a = election
        .campaign(candidate("a", a.id, 1))
        .await
        .expect("a")
        .into_inner();
    let pb::campaign_response::Event::Elected(t1) = next_event(&mut camp_a, "a").await else {
        panic!("a not elected")
    };
    let mut camp_b = election
        .campaign(candidate("b", b.id, 1))
        .await
        .expect("b")
        .into_inner();
    assert_eq!(
        next_event(&mut camp_b, "b").await,
        pb::campaign_response::Event::Queued(1)
    );
    let mut camp_c = election
        .campaign(candidate("c", c.id, 0))
        .await
        .expect("c")
        .into_inner();
    assert_eq!(
        next_event(&mut camp_c, "c").await,
        pb::campaign_response::Event::Queued(2)
    );
    // Closing a campaign stream does not resign.
    drop(camp_c);
    wait_observed(&observed, &["a"], "a observed as holder").await;

    // Fencing and the HTTP holder check with A as holder.
    fenced_put(&mut kv, t1).await.expect("fenced put by the holder");
    http_check(&cluster, "a", 200).await;
    http_check(&cluster, "b", 503).await;
    let (code, body) = http_get(cluster.nodes[&leader].http, "/v1/holders/db/primary").expect("http");
    assert_eq!(code, 200, "{body}");
    let json: serde_json::Value = serde_json::from_str(&body).expect("json");
    assert_eq!(json["serializable"], true);
    assert_eq!(json["holders"][0]["candidate"], "a");
    assert_eq!(json["holders"][0]["token"], t1);
    assert_eq!(json["holders"][0]["lease"], a.id);
    let (code, _) = http_get(cluster.nodes[&leader].http, "/v1/holders/db/nope").expect("http");
    assert_eq!(code, 404);

    // A stops renewing: B is elected within TTL + 1 s with a larger token,
    // and A's stream ends with `released`.
    let last_ack = a.stop().await;
    let pb::campaign_response::Event::Elected(t2) = next_event(&mut camp_b, "b elected").await else {
        panic!("b not elected")
    };
    let failover = last_ack.elapsed();
    println!(
        "failover: b elected {} ms after a's last acknowledged renewal (TTL {} ms); tokens {t1} -> {t2}",
        failover.as_millis(),
        TTL.as_millis()
    );
    assert!(t2 > t1, "token {t2} not above {t1}");
    assert!(failover >= TTL, "a's lease ended early: {failover:?}");
    assert!(failover <= TTL + Duration::from_secs(1), "failover took {failover:?}");
    assert_eq!(
        next_event(&mut camp_a, "a released").await,
        pb::campaign_response::Event::Released("lease_ended".into())
    );
    assert!(matches!(
        tokio::time::timeout(WAIT, camp_a.message()).await,
        Ok(Ok(None))
    ));
    wait_observed(&observed, &["b"], "b observed as holder").await;

    // The old token is fenced off; the new one writes.
    let err = fenced_put(&mut kv, t1).await.expect_err("stale token");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    fenced_put(&mut kv, t2).await.expect("fenced put by the new holder");
    http_check(&cluster, "b", 200).await;
    http_check(&cluster, "a", 503).await;

    // Planned switchover B -> D between live candidates: no gap.
    let mut camp_d = election
        .campaign(candidate("d", d.id, 1))
        .await
        .expect("d")
        .into_inner();
    assert_eq!(
        next_event(&mut camp_d, "d").await,
        pb::campaign_response::Event::Queued(1)
    );
    let err = election
        .switchover(pb::SwitchoverRequest {
            group: "db".into(),
            role: "primary".into(),
            to: "c".into(),
            ..Default::default()
        })
        .await
        .expect_err("switchover to priority 0");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err}");
    let switched = election
        .switchover(pb::SwitchoverRequest {
            group: "db".into(),
            role: "primary".into(),
            to: "d".into(),
            ..Default::default()
        })
        .await
        .expect("switchover")
        .into_inner();
    let t3 = switched.granted.expect("grant").token;
    assert_eq!(switched.from, "b");
    assert!(t3 > t2);
    assert_eq!(
        next_event(&mut camp_d, "d elected").await,
        pb::campaign_response::Event::Elected(t3)
    );
    assert_eq!(
        next_event(&mut camp_b, "b released").await,
        pb::campaign_response::Event::Released("switchover".into())
    );
    wait_observed(&observed, &["d"], "d observed as holder").await;

    // Priority 0 is never elected, even with the slot free: B leaves the
    // queue, D resigns, C (priority 0) still waits.
    for who in ["b", "d"] {
        election
            .resign(pb::ResignRequest {
                group: "db".into(),
                role: "primary".into(),
                candidate: who.into(),
                ..Default::default()
            })
            .await
            .expect("resign");
    }
    assert_eq!(
        next_event(&mut camp_d, "d released").await,
        pb::campaign_response::Event::Released("resigned".into())
    );
    wait_observed(&observed, &[], "no holder after resignations").await;
    let holders = election
        .holders(pb::HoldersRequest {
            group: "db".into(),
            role: "primary".into(),
            serializable: false,
        })
        .await
        .expect("holders")
        .into_inner();
    assert!(holders.holders.is_empty(), "{holders:?}");
    assert_eq!(holders.waiting.len(), 1);
    assert_eq!(holders.waiting[0].candidate, "c");
    assert_eq!(holders.waiting[0].priority, 0);

    // Observe saw exactly: nobody, a, b, d, nobody — the failover without
    // a handover delay and the switchover showed no empty list between.
    let lists: Vec<Vec<String>> = observed.lock().unwrap().iter().map(|l| names(l)).collect();
    println!("observed holder lists: {lists:?}");
    let expected: Vec<Vec<String>> = [&[][..], &["a"], &["b"], &["d"], &[]]
        .iter()
        .map(|l| l.iter().map(|s| s.to_string()).collect())
        .collect();
    assert_eq!(lists, expected);

    // Capacity 2: two holders at once; a third waits.
    let standby = |c: &str, lease: i64| pb::CampaignRequest {
        role: "standby".into(),
        ..candidate(c, lease, 1)
    };
    let mut s_b = election.campaign(standby("b", b.id)).await.expect("b").into_inner();
    let mut s_d = election.campaign(standby("d", d.id)).await.expect("d").into_inner();
    let mut s_c = election.campaign(standby("c", c.id)).await.expect("c").into_inner();
    assert!(matches!(
        next_event(&mut s_b, "b standby").await,
        pb::campaign_response::Event::Elected(_)
    ));
    assert!(matches!(
        next_event(&mut s_d, "d standby").await,
        pb::campaign_response::Event::Elected(_)
    ));
    assert_eq!(
        next_event(&mut s_c, "c standby").await,
        pb::campaign_response::Event::Queued(1)
    );

    // GetTopology: nodes, groups and holders at one revision.
    topology
        .register_node(pb::RegisterNodeRequest {
            node: Some(pb::ManagedNode {
                id: "pg-1".into(),
                address: "10.0.0.1:5432".into(),
                zone: "eu-1a".into(),
                lease: b.id,
                ..Default::default()
            }),
            ..Default::default()
        })
        .await
        .expect("register node");
    let view = topology
        .get_topology(pb::GetTopologyRequest { serializable: false })
        .await
        .expect("topology")
        .into_inner();
    let revision = view.header.expect("header").revision;
    assert_eq!(view.nodes.len(), 1);
    assert_eq!(view.nodes[0].id, "pg-1");
    assert!(view.nodes[0].alive);
    assert_eq!(view.groups.len(), 1);
    let group = &view.groups[0];
    assert_eq!(group.name, "db");
    let standby_state = group.state.iter().find(|r| r.name == "standby").expect("standby");
    assert_eq!(names(&standby_state.holders), vec!["b", "d"]);
    assert_eq!(standby_state.waiting.len(), 1);
    let holders = election
        .holders(pb::HoldersRequest {
            group: "db".into(),
            role: "standby".into(),
            serializable: false,
        })
        .await
        .expect("holders")
        .into_inner();
    // Nothing was written in between, so the two reads are at one revision
    // and agree.
    assert_eq!(holders.header.expect("header").revision, revision);
    assert_eq!(holders.holders, standby_state.holders);

    drop((b, c, d));
}

/// Reads watch responses until one carries an event at `through` or beyond;
/// appends `(revision, key)` of each put.
async fn read_watch(stream: &mut Streaming<pb::WatchResponse>, through: u64, seen: &mut Vec<(u64, String)>) {
    while seen.last().is_none_or(|(r, _)| *r < through) {
        let m = match tokio::time::timeout(WAIT, stream.message()).await {
            Ok(Ok(Some(m))) => m,
            other => panic!("watch ended early waiting for revision {through}: {other:?}"),
        };
        assert_eq!(m.compacted_before, 0, "unexpected compaction");
        for e in m.events {
            if let Some(pb::event::Event::Put(kv)) = e.event {
                seen.push((e.revision, String::from_utf8_lossy(&kv.key).into_owned()));
            }
        }
    }
}

async fn watch_from(addr: &str, after: u64, prefix: &str) -> Streaming<pb::WatchResponse> {
    let mut client = WatchClient::new(channel(addr).await);
    let mut stream = client
        .watch(pb::WatchRequest {
            after_revision: after,
            key_prefixes: vec![prefix.as_bytes().to_vec()],
            coordination: false,
        })
        .await
        .expect("watch")
        .into_inner();
    // The first response confirms the watch.
    let created = stream.message().await.expect("created").expect("stream open");
    assert!(created.events.is_empty());
    stream
}

async fn put(kv: &mut KvClient<Channel>, key: &str) -> u64 {
    kv.put(pb::PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..Default::default()
    })
    .await
    .expect("put")
    .into_inner()
    .header
    .expect("header")
    .revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_resumes_after_a_restart_with_every_event_once_in_order() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let watched = cluster.others(leader)[0];
    let watched_addr = cluster.nodes[&watched].endpoint();
    let mut kv = KvClient::new(channel(&cluster.nodes[&leader].endpoint()).await);

    let start = put(&mut kv, "other/start").await;
    let mut expected = Vec::new();
    let mut seen = Vec::new();
    let mut stream = watch_from(&watched_addr, start, "w/").await;
    for i in 0..10 {
        let key = format!("w/{i:02}");
        expected.push((put(&mut kv, &key).await, key));
        put(&mut kv, &format!("other/{i}")).await;
    }
    read_watch(&mut stream, expected.last().unwrap().0, &mut seen).await;

    // Restart the watched node: the stream ends (the node stops cleanly,
    // not held up by the open stream), writes go on meanwhile.
    assert_eq!(cluster.stop(watched), Some(0), "rosterd exited cleanly");
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match stream.message().await {
                Ok(Some(m)) => assert!(m.events.is_empty(), "no events were written"),
                Ok(None) => return None,
                Err(status) => return Some(status.code()),
            }
        }
    })
    .await
    .expect("the stream ended with the node");
    println!("watch stream ended with {ended:?}");
    for i in 10..20 {
        let key = format!("w/{i:02}");
        expected.push((put(&mut kv, &key).await, key));
    }
    cluster.restart(watched);
    let last = seen.last().unwrap().0;
    let mut stream = eventually(WAIT, "the restarted node to serve the watch", || async {
        let mut client = WatchClient::connect(format!("http://{watched_addr}")).await.ok()?;
        let mut stream = client
            .watch(pb::WatchRequest {
                after_revision: last,
                key_prefixes: vec![b"w/".to_vec()],
                coordination: false,
            })
            .await
            .ok()?
            .into_inner();
        stream.message().await.ok()??;
        Some(stream)
    })
    .await;
    for i in 20..25 {
        let key = format!("w/{i:02}");
        expected.push((put(&mut kv, &key).await, key));
    }
    read_watch(&mut stream, expected.last().unwrap().0, &mut seen).await;
    assert_eq!(seen, expected, "every event exactly once, in order");

    // A fresh watch from the start on another node sees the same.
    let mut again = Vec::new();
    let mut other = watch_from(&cluster.nodes[&leader].endpoint(), start, "w/").await;
    read_watch(&mut other, expected.last().unwrap().0, &mut again).await;
    assert_eq!(again, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handover_delay_leaves_a_gap_and_the_watch_shows_the_coordination_events() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let leader_addr = cluster.nodes[&leader].endpoint();
    let mut topology = TopologyClient::new(channel(&leader_addr).await);
    let mut election = ElectionClient::new(channel(&leader_addr).await);
    let delay = Duration::from_millis(1000);
    let created = topology
        .put_group(pb::PutGroupRequest {
            name: "db".into(),
            roles: vec![pb::RoleSpec {
                name: "primary".into(),
                capacity: 1,
                handover_delay_ms: delay.as_millis() as u64,
                ..Default::default()
            }],
            ..Default::default()
        })
        .await
        .expect("create group (PutGroup without create: create or update)")
        .into_inner();
    let from = created.header.expect("header").revision;
    let mut watch = WatchClient::new(channel(&leader_addr).await)
        .watch(pb::WatchRequest {
            after_revision: from,
            key_prefixes: Vec::new(),
            coordination: true,
        })
        .await
        .expect("watch")
        .into_inner();
    let observed = observe(
        election
            .observe(pb::ObserveRequest {
                group: "db".into(),
                role: "primary".into(),
            })
            .await
            .expect("observe")
            .into_inner(),
    );
    let a = KeptLease::grant(&leader_addr).await;
    let b = KeptLease::grant(&leader_addr).await;
    let mut camp_a = election
        .campaign(candidate("a", a.id, 1))
        .await
        .expect("a")
        .into_inner();
    let pb::campaign_response::Event::Elected(t1) = next_event(&mut camp_a, "a").await else {
        panic!("a not elected")
    };
    let mut camp_b = election
        .campaign(candidate("b", b.id, 1))
        .await
        .expect("b")
        .into_inner();
    assert_eq!(
        next_event(&mut camp_b, "b").await,
        pb::campaign_response::Event::Queued(1)
    );
    wait_observed(&observed, &["a"], "a holds").await;
    let (a_id, last_ack) = (a.id, a.stop().await);
    let pb::campaign_response::Event::Elected(t2) = next_event(&mut camp_b, "b elected").await else {
        panic!("b not elected")
    };
    let took = last_ack.elapsed();
    println!(
        "with a {} ms handover delay, b was elected {} ms after a's last renewal (TTL {} ms)",
        delay.as_millis(),
        took.as_millis(),
        TTL.as_millis()
    );
    assert!(took >= TTL + delay, "the handover delay was not kept: {took:?}");
    assert!(t2 > t1);
    wait_observed(&observed, &["b"], "b holds").await;
    let lists: Vec<Vec<String>> = observed.lock().unwrap().iter().map(|l| names(l)).collect();
    assert_eq!(
        lists,
        vec![vec![], vec!["a".to_string()], vec![], vec!["b".to_string()]],
        "the delay shows as an empty holder list"
    );

    // The coordination events, in order: leases granted, campaigns, a's
    // grant; then a's lease ends and its grant is released in one
    // revision; b is granted in a later one (after the delay).
    use pb::event::Event as E;
    let mut events: Vec<(u64, E)> = Vec::new();
    let deadline = Instant::now() + WAIT;
    while !events
        .iter()
        .any(|(_, e)| matches!(e, E::Granted(g) if g.candidate == "b"))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let m = match tokio::time::timeout(left, watch.message()).await {
            Ok(Ok(Some(m))) => m,
            other => panic!("no grant of b on the watch: {other:?}; so far {events:?}"),
        };
        events.extend(m.events.into_iter().map(|e| (e.revision, e.event.expect("event"))));
    }
    let revisions: Vec<u64> = events.iter().map(|(r, _)| *r).collect();
    assert!(revisions.windows(2).all(|w| w[0] <= w[1]), "in order: {revisions:?}");
    let find = |pred: &dyn Fn(&E) -> bool| {
        events
            .iter()
            .position(|(_, e)| pred(e))
            .unwrap_or_else(|| panic!("missing event in {events:?}"))
    };
    let granted_a = find(&|e| matches!(e, E::Granted(g) if g.candidate == "a" && g.token == t1));
    let ended = find(&|e| matches!(e, E::LeaseEnded(id) if *id == a_id));
    let released = find(&|e| matches!(e, E::Released(g) if g.candidate == "a" && g.reason == "lease_ended"));
    let granted_b = find(&|e| matches!(e, E::Granted(g) if g.candidate == "b" && g.token == t2));
    find(&|e| matches!(e, E::LeaseGranted(l) if l.id == a_id));
    find(&|e| matches!(e, E::Campaigned(c) if c.candidate == "b"));
    assert!(granted_a < ended && ended < released && released < granted_b);
    assert_eq!(
        events[ended].0, events[released].0,
        "lease end and release in one revision"
    );
    assert!(
        events[granted_b].0 > events[released].0,
        "the grant waited for the delay"
    );
    drop(b);
}

/// A transaction of 128 puts under `prefix` (128 events in one revision).
async fn put_batch(kv: &mut KvClient<Channel>, prefix: &str, batch: usize, value: &[u8]) -> u64 {
    let success = (0..128)
        .map(|i| pb::RequestOp {
            request: Some(pb::request_op::Request::Put(pb::PutRequest {
                key: format!("{prefix}{batch:04}/{i:03}").into_bytes(),
                value: value.to_vec(),
                ..Default::default()
            })),
        })
        .collect();
    kv.txn(pb::TxnRequest {
        success,
        ..Default::default()
    })
    .await
    .expect("txn")
    .into_inner()
    .header
    .expect("header")
    .revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_history_and_a_slow_watcher_get_the_compacted_answer() {
    let cluster = Cluster::start(3);
    let leader = cluster.wait_for_leader(Duration::from_secs(20)).await;
    let leader_addr = cluster.nodes[&leader].endpoint();
    let follower_addr = cluster.nodes[&cluster.others(leader)[0]].endpoint();
    let mut kv = KvClient::new(channel(&leader_addr).await);
    let first = put(&mut kv, "slow/first").await;

    // A watcher that does not read while more than the retained history
    // (10 000 events) is written: the server queues a bounded amount,
    // then answers `compacted_before`.
    let mut slow = watch_from(&follower_addr, first, "slow/").await;
    let value = vec![b'x'; 1024];
    let mut last = first;
    // 150 × 128 events: the retained history moves about 40 revisions past
    // the first, more than the stream's buffers and HTTP/2 windows hold.
    for batch in 0..150 {
        last = put_batch(&mut kv, "slow/", batch, &value).await;
    }
    let mut seen = 0usize;
    let mut expect_next: Option<u64> = None;
    let compacted = loop {
        let m = match tokio::time::timeout(WAIT, slow.message()).await {
            Ok(Ok(Some(m))) => m,
            other => panic!(
                "slow watch ended without the compacted answer: {other:?}; {seen} events seen, up to {expect_next:?}; last {last}"
            ),
        };
        if m.compacted_before > 0 {
            assert!(m.events.is_empty());
            break m.compacted_before;
        }
        for e in &m.events {
            // Whole revisions of 128 events each, without gaps.
            if let Some(next) = expect_next {
                assert!(e.revision == next || e.revision == next + 1, "gap at {}", e.revision);
            }
            expect_next = Some(e.revision);
            seen += 1;
        }
    };
    println!("slow watcher: {seen} events delivered, then compacted_before = {compacted} (newest revision {last})");
    assert!(compacted > first + 1);
    assert!(seen < 150 * 128, "the slow watcher was not cut off");
    assert!(matches!(tokio::time::timeout(WAIT, slow.message()).await, Ok(Ok(None))));

    // A new watch from before the retained history gets the same answer.
    let mut old = WatchClient::new(channel(&leader_addr).await)
        .watch(pb::WatchRequest {
            after_revision: first,
            key_prefixes: vec![Vec::new()],
            coordination: true,
        })
        .await
        .expect("watch")
        .into_inner();
    let created = old.message().await.expect("created").expect("open");
    assert_eq!(created.compacted_before, 0);
    let answer = old.message().await.expect("answer").expect("open");
    assert!(answer.compacted_before > first + 1, "{answer:?}");
    assert!(old.message().await.expect("clean end").is_none());
    // From the oldest available revision on, it works.
    let mut fresh = watch_from(&leader_addr, answer.compacted_before - 1, "slow/").await;
    let m = fresh.message().await.expect("events").expect("open");
    assert_eq!(m.compacted_before, 0);
    assert_eq!(m.events.first().map(|e| e.revision), Some(answer.compacted_before));
}
