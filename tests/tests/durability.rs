//! Nothing acknowledged is lost: across a full stop and restart of every
//! node, and across kill -9 of every node in the middle of writes.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use roster_client::proto::RangeRequest;
use roster_tests::{client_for, eventually, Cluster};

async fn all_keys(client: &roster_client::Client, prefix: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let r = client
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            prefix: true,
            ..Default::default()
        })
        .await
        .expect("range");
    assert!(!r.more);
    r.kvs.into_iter().map(|kv| (kv.key, kv.value)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_and_restarting_every_node_keeps_every_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = client_for(cluster.endpoints(), Duration::from_secs(5)).await;
    let mut expected = BTreeMap::new();
    for i in 0..200 {
        let (k, v) = (format!("d/{i:03}"), format!("value-{i}"));
        client.put(k.clone(), v.clone()).await.expect("put");
        expected.insert(k.into_bytes(), v.into_bytes());
    }
    client.delete("d/007").await.expect("delete");
    expected.remove(b"d/007".as_slice());

    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    for id in &ids {
        assert_eq!(cluster.stop(*id), Some(0), "clean exit on SIGTERM");
    }
    for id in &ids {
        cluster.restart(*id);
    }
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = client_for(cluster.endpoints(), Duration::from_secs(5)).await;
    assert_eq!(all_keys(&client, "d/").await, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_loses_nothing_acknowledged() {
    let mut cluster = Cluster::start(3);
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = client_for(cluster.endpoints(), Duration::from_secs(2)).await;
    let acked: Arc<Mutex<BTreeMap<Vec<u8>, Vec<u8>>>> = Arc::default();

    // Four writers; every acknowledged write is recorded.
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let (client, acked) = (client.clone(), acked.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let (k, v) = (format!("c/{w}/{i:05}"), format!("{w}-{i}"));
                    match client.put(k.clone(), v.clone()).await {
                        Ok(_) => {
                            acked.lock().unwrap().insert(k.into_bytes(), v.into_bytes());
                        }
                        // The cluster is being killed: stop writing.
                        Err(_) => return,
                    }
                }
            })
        })
        .collect();
    eventually(Duration::from_secs(20), "some acknowledged writes", || async {
        (acked.lock().unwrap().len() >= 100).then_some(())
    })
    .await;
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    for id in &ids {
        cluster.kill(*id);
    }
    for w in writers {
        w.await.expect("writer");
    }
    let acked = acked.lock().unwrap().clone();

    for id in &ids {
        cluster.restart(*id);
    }
    cluster.wait_for_leader(Duration::from_secs(20)).await;
    let client = client_for(cluster.endpoints(), Duration::from_secs(5)).await;
    let stored = all_keys(&client, "c/").await;
    let missing: Vec<_> = acked.keys().filter(|k| !stored.contains_key(*k)).collect();
    if let Some(key) = missing.first() {
        // Post-mortem: which node holds the key, at what revision.
        for id in &ids {
            let c = client_for(vec![cluster.nodes[id].endpoint()], Duration::from_secs(5)).await;
            let local = c
                .range(RangeRequest {
                    key: key.to_vec(),
                    serializable: true,
                    ..Default::default()
                })
                .await;
            eprintln!("node {id}: {local:?}");
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged writes lost, e.g. {:?}",
        missing.len(),
        missing.first()
    );
    for (k, v) in &acked {
        assert_eq!(stored.get(k), Some(v));
    }
    println!("{} acknowledged writes survived kill -9 of every node", acked.len());
}
