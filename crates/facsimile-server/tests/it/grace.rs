//! A relay with a reconnection grace: a node whose connection broke stays
//! a member for that long. Back in time, it goes on as before, its writes
//! of meanwhile applied and its locks kept; back too late, it was evicted.

use std::time::Duration;

use facsimile::net;
use facsimile::{LockError, Value};
use serde_json::json;

use crate::support::*;

/// Alice on the relay through a proxy, holding the lock on `/jobs`, and
/// Bob connected directly.
async fn alice_holding_jobs(
    relay: &Relay,
) -> (
    BlackHole,
    net::Connection,
    net::Connection,
    facsimile::LockGuard,
) {
    let hole = BlackHole::start(relay.addr).await;
    let alice = net::connect(&hole.addr.to_string(), "alice", options())
        .await
        .expect("alice connects through the proxy");
    alice.node().set_root(json!({"n": 0, "jobs": {}})).unwrap();
    let jobs = alice.node().get("/jobs").unwrap().as_map().unwrap().clone();
    let guard = tokio::time::timeout(Duration::from_secs(10), alice.node().lock(&jobs))
        .await
        .expect("alice gets the lock")
        .unwrap();
    alice.flush().await.unwrap();
    let bob = tcp_node(relay, "bob").await;
    converge(&[alice.node(), bob.node()]).await;
    (hole, alice, bob, guard)
}

/// A relay with this reconnection grace and a peer timeout well past it.
async fn with_grace(grace: Duration) -> Relay {
    Relay::start(|c| {
        c.failure_detection(Duration::from_millis(500), Duration::from_secs(30))
            .reconnect_grace(grace)
    })
    .await
}

/// Cuts Alice's connection while nothing passes, so that she notices
/// before she can connect again; returns once she has.
async fn cut_off(hole: &BlackHole, alice: &net::Connection) {
    hole.black_hole();
    hole.cut();
    disconnected(alice, "alice notices the connection broke").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_back_within_the_grace_keeps_its_writes_and_its_locks() {
    let relay = with_grace(Duration::from_secs(20)).await;
    let (hole, alice, bob, guard) = alice_holding_jobs(&relay).await;
    let me = alice.node().peer_id();
    cut_off(&hole, &alice).await;
    // Written while the relay cannot hear her: held, then sent again.
    alice.node().set_path("/n", 1).unwrap();
    alice.node().set_path("/jobs/a", "mine").unwrap();
    hole.restore();
    tokio::time::timeout(Duration::from_secs(20), alice.flush())
        .await
        .expect("the relay acknowledges what she wrote while cut off")
        .expect("nothing was lost");
    assert_eq!(alice.node().peer_id(), me, "the same incarnation goes on");
    wait_until("bob to see alice's writes", Duration::from_secs(10), || {
        bob.node().get("/jobs/a") == Some(Value::from("mine"))
    })
    .await;
    assert_eq!(bob.node().get("/n"), Some(Value::Int(1)));
    // Her lock held across the break: Bob is refused, and Alice writes.
    let jobs = bob.node().get("/jobs").unwrap().as_map().unwrap().clone();
    let err = bob.node().request(&jobs).await.unwrap_err();
    assert!(matches!(err, LockError::Locked { .. }), "{err}");
    assert!(guard.is_held());
    alice.node().set_path("/jobs/b", "also").unwrap();
    alice.flush().await.unwrap();
    converge(&[alice.node(), bob.node()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_not_back_within_the_grace_is_evicted_and_its_lock_passes_on() {
    let relay = with_grace(Duration::from_secs(1)).await;
    let (hole, alice, bob, _guard) = alice_holding_jobs(&relay).await;
    let me = alice.node().peer_id();
    cut_off(&hole, &alice).await;
    // Held while she is cut off, they go out as one message, which the
    // relay drops once it evicted her: each of them is reported lost.
    for k in ["a", "b", "c"] {
        alice.node().set_path(&format!("/{k}"), 1).unwrap();
    }
    let jobs = bob.node().get("/jobs").unwrap().as_map().unwrap().clone();
    let granted = tokio::time::timeout(Duration::from_secs(20), bob.node().lock(&jobs))
        .await
        .expect("the lock passes on once the grace ends")
        .unwrap();
    assert!(granted.is_held());
    hole.restore();
    wait_until("alice to rejoin", Duration::from_secs(20), || {
        let n = alice.node();
        n.peer_id() != me && n.is_ready()
    })
    .await;
    match tokio::time::timeout(Duration::from_secs(20), alice.flush()).await {
        Ok(Err(net::NetError::WritesLost(n))) => assert_eq!(n, 3, "one lost for each write"),
        other => panic!("alice's writes made while cut off reported as {other:?}"),
    }
    assert_eq!(alice.node().get("/a"), None);
}
