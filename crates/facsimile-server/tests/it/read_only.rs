//! Read-only connections: they mirror the document and see every change;
//! the relay refuses their writes and lock requests with a closing notice,
//! and nothing they sent changes the document. A node that `net::connect`
//! joins read-only only observes: it refuses its writes itself.

use std::time::Duration;

use facsimile::Value;
use facsimile::net::{self, Status};
use serde_json::json;

use crate::support::*;

/// A relay whose document alice (over TCP) wrote.
async fn document(relay: &Relay) -> net::Connection {
    let alice = tcp_node(relay, "alice").await;
    alice
        .node()
        .set_root(json!({"n": 0, "shared": {}}))
        .unwrap();
    alice.flush().await.unwrap();
    alice
}

/// The relay's document, as a node that joins now gets it.
async fn relay_holds(relay: &Relay, n: i64) {
    let late = tcp_node(relay, "late").await;
    assert_eq!(late.node().get("/n"), Some(Value::Int(n)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_websocket_client_reads_and_its_write_is_refused() {
    let relay = Relay::start(|c| c).await;
    let alice = document(&relay).await;
    let reader = WsNode::connect_with(Dial::Plain(relay.addr), "inspector", true).await;
    assert_eq!(reader.node.snapshot(), alice.node().snapshot());
    alice.node().set_path("/n", 1).unwrap();
    alice.flush().await.unwrap();
    wait_until(
        "the reader to see the write",
        Duration::from_secs(10),
        || reader.node.get("/n") == Some(Value::Int(1)),
    )
    .await;

    reader.node.set_path("/n", 99).unwrap();
    let reason = reader.closed_by_relay().await;
    assert!(reason.contains("read-only"), "{reason}");
    assert!(reason.contains("a change to the document"), "{reason}");
    relay_holds(&relay, 1).await;
    assert_eq!(reader.welcomes().count, 1, "it read on one connection");
    // The others carry on.
    alice.node().set_path("/n", 2).unwrap();
    alice.flush().await.unwrap();
    relay_holds(&relay, 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_websocket_client_may_not_lock() {
    let relay = Relay::start(|c| c).await;
    let alice = document(&relay).await;
    let reader = WsNode::connect_with(Dial::Plain(relay.addr), "inspector", true).await;
    let shared = reader
        .node
        .get("/shared")
        .unwrap()
        .as_map()
        .unwrap()
        .clone();
    // The request goes out when the future is first polled; the relay
    // answers it with a closing notice, never a grant.
    let reason = tokio::select! {
        r = reader.node.request(&shared) => panic!("the request was answered: {r:?}"),
        reason = reader.closed_by_relay() => reason,
    };
    assert!(reason.contains("read-only"), "{reason}");
    assert!(reason.contains("a lock request"), "{reason}");
    // Nobody holds or waits for the lock: alice takes it at once.
    let a_shared = alice
        .node()
        .get("/shared")
        .unwrap()
        .as_map()
        .unwrap()
        .clone();
    let guard = tokio::time::timeout(Duration::from_secs(10), alice.node().request(&a_shared))
        .await
        .expect("the lock is free")
        .unwrap();
    drop(guard);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_tcp_client_reads_and_refuses_its_own_write() {
    let relay = Relay::start(|c| c).await;
    let alice = document(&relay).await;
    let reader = net::connect(
        &relay.addr.to_string(),
        "inspector",
        options().read_only(true),
    )
    .await
    .unwrap();
    assert_eq!(reader.node().snapshot(), alice.node().snapshot());
    alice.node().set_path("/n", 1).unwrap();
    alice.flush().await.unwrap();
    wait_until(
        "the reader to see the write",
        Duration::from_secs(10),
        || reader.node().get("/n") == Some(Value::Int(1)),
    )
    .await;

    // The node only observes: it refuses the write itself and sends
    // nothing (the WebSocket tests above send one anyway, from a node
    // that does not observe), and nobody counts it as a member.
    let refused = reader.node().set_path("/n", 99).unwrap_err();
    assert!(
        matches!(refused.engine(), Some(facsimile::EngineError::Observer)),
        "{refused}"
    );
    relay_holds(&relay, 1).await;
    assert!(matches!(*reader.status().borrow(), Status::Connected));
    let peers = alice.node().peers();
    assert!(
        peers.iter().all(|p| p.hostname() != "inspector"),
        "{peers:?}"
    );
}
