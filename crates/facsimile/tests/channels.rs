//! `ChannelNetwork`: nodes on tokio tasks joined by channels.
#![cfg(feature = "channels")]

use std::time::Duration;

use facsimile::{ChannelNetwork, Config, Value};
use serde_json::json;

/// Writers on tasks of a multi-threaded runtime, each on its own node,
/// interleaved by the scheduler: once the network settles every replica is
/// byte-identical and holds every push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_tasks_converge() {
    const NODES: usize = 4;
    const WRITES: usize = 200;
    let net = ChannelNetwork::new();
    let nodes: Vec<_> = (0..NODES).map(|i| net.join(&format!("n{i}"))).collect();
    nodes[0]
        .set_root(json!({"log": [], "last": {}}))
        .expect("root");
    net.settled().await;
    let tasks: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let node = node.clone();
            tokio::spawn(async move {
                let root = node.root_map().expect("synced");
                let log = root.get("log").and_then(|v| v.as_array().cloned());
                let last = root.get("last").and_then(|v| v.as_map().cloned());
                let (log, last) = (log.expect("log"), last.expect("last"));
                for k in 0..WRITES {
                    log.push(format!("{i}:{k}")).expect("push");
                    last.set(&format!("k{}", k % 7), (i * WRITES + k) as i64)
                        .expect("set");
                    if k % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    net.settled().await;
    let first = nodes[0].snapshot();
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node.snapshot(), first, "node {i}");
    }
    let log = nodes[0].root_map().unwrap().get("log").unwrap();
    assert_eq!(log.as_array().unwrap().len(), NODES * WRITES);
}

/// A late joiner syncs through the network; `settled` does not wait for a
/// dropped node; a lock holder that falls silent is evicted by the
/// heartbeats its peers' tasks run (no call into them), and the lock
/// passes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_run_on_the_tasks_and_evict_a_silent_holder() {
    // A timeout well above any stall of a loaded machine: live nodes are
    // never taken for silent.
    let config =
        Config::default().failure_detection(Duration::from_millis(100), Duration::from_secs(2));
    let net = ChannelNetwork::with_config(config);
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!({"n": 0})).unwrap();
    net.settled().await;

    let late = net.join("late");
    late.sync();
    net.settled().await;
    assert!(late.is_ready());
    assert_eq!(late.root_map().unwrap().get("n"), Some(Value::Int(0)));

    // A node dropped counts as gone: `settled` does not wait for it.
    let short = net.join("short");
    drop(short);
    a.root_map().unwrap().set("n", 0).unwrap();
    net.settled().await;

    // b takes the lock, then falls silent, as a crashed process does.
    let held = b.lock(b.root_map().unwrap()).await.unwrap();
    let dead_token = held.token();
    b.set_sender(|_| {});
    net.settled().await;

    let granted = tokio::time::timeout(Duration::from_secs(30), a.lock(a.root_map().unwrap()))
        .await
        .expect("the dropped holder is evicted within the timeout")
        .unwrap();
    assert!(granted.token() > dead_token);
    a.root_map().unwrap().set("n", 1).unwrap();
    drop(granted);
    net.settled().await;
    assert_eq!(late.root_map().unwrap().get("n"), Some(Value::Int(1)));
    assert_eq!(a.snapshot(), late.snapshot());
    drop(held);
}
