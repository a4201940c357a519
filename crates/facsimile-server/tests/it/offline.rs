//! Writes made while the relay is out of reach reach it packed: a few
//! messages for the whole backlog, not one per write.

use std::time::Duration;

use facsimile::net::Status;
use serde_json::json;

use crate::support::*;
use crate::websocket::http;

/// The relay's log position and size on disk, from the inspector.
async fn log_of(relay: &Relay) -> (u64, u64) {
    let request = "GET /inspect/default/status?token=test-token HTTP/1.1\r\n\
                   Host: localhost\r\nConnection: close\r\n\r\n";
    let response = http(relay, request).await;
    let (_, body) = response.split_once("\r\n\r\n").expect("a body");
    let s: serde_json::Value = serde_json::from_str(body).unwrap();
    (
        s["position"].as_u64().unwrap(),
        s["logBytes"].as_u64().unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_while_the_relay_is_down_reach_it_as_a_packed_backlog() {
    const WRITES: i64 = 2_000;
    let assets = tempfile::tempdir().unwrap();
    let mut relay = Relay::start(|c| c.inspector_assets(assets.path())).await;
    let alice = tcp_node(&relay, "alice").await;
    let bob = tcp_node(&relay, "bob").await;
    alice.node().set_root(json!({"scores": {}})).unwrap();
    alice.flush().await.unwrap();
    converge(&[alice.node(), bob.node()]).await;
    let (position, bytes) = log_of(&relay).await;

    relay.stop().await;
    let mut status = alice.status();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| matches!(s, Status::Disconnected(_))),
    )
    .await
    .expect("alice notices the relay is gone")
    .unwrap();
    let scores = alice.node().root_map().unwrap().get("scores").unwrap();
    let scores = scores.as_map().unwrap();
    for i in 0..WRITES {
        scores.set(&format!("player{}", i % 50), i).unwrap();
    }
    relay.start_again().await;
    alice.flush().await.unwrap();
    converge(&[alice.node(), bob.node()]).await;

    let bob_scores = bob.node().root_map().unwrap().get("scores").unwrap();
    let bob_scores = bob_scores.as_map().unwrap();
    for p in 0..50 {
        let last = WRITES - 50 + p;
        assert_eq!(
            bob_scores.get(&format!("player{p}")).unwrap().as_i64(),
            Some(last)
        );
    }
    let (position_after, bytes_after) = log_of(&relay).await;
    // One message a write would take 2,000 positions and some 20 bytes a
    // write; packed, the backlog is one message of about 4 bytes a write
    // (the rest: hellos, acknowledgements, heartbeats).
    let (messages, logged) = (position_after - position, bytes_after - bytes);
    assert!(messages < 50, "{messages} messages for {WRITES} writes");
    assert!(
        logged < 6 * WRITES as u64 + 2_000,
        "{logged} bytes logged for {WRITES} writes"
    );
}
