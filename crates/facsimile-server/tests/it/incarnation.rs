//! A new node whose random incarnation the document already knows picks
//! another, instead of being taken for the peer of that incarnation.

use std::time::Duration;

use facsimile::net::protocol::ServerHello;
use facsimile::{Value, net};
use serde_json::json;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_with_a_known_incarnation_is_told_to_pick_another() {
    let relay = Relay::start(|c| c).await;
    let alice = tcp_node(&relay, "alice").await;
    alice.node().set_root(json!({"n": 0})).unwrap();
    alice.flush().await.unwrap();
    let taken = alice.node().peer_id().incarnation();

    // Another host, or the same one, drawing alice's incarnation.
    for hostname in ["mallory", "alice"] {
        let mut ws = Dial::Plain(relay.addr).websocket().await.unwrap();
        match say_hello(&mut ws, &hello(hostname, taken, None)).await {
            ServerHello::Welcome {
                evicted, member, ..
            } => assert!(evicted && !member, "{hostname}: told to rejoin"),
            other => panic!("{hostname}: expected a welcome, got {other:?}"),
        }
    }

    // Alice's connection was not taken over: she is still served.
    alice.node().set_path("/n", 1).unwrap();
    alice.flush().await.unwrap();
    assert_eq!(alice.rejoins(), 0);
    let bob = tcp_node(&relay, "bob").await;
    assert_eq!(bob.node().get("/n"), Some(Value::Int(1)));

    // A node whose incarnation departed rejoins as another one.
    let carol = tcp_node(&relay, "carol").await;
    let gone = carol.node().peer_id().incarnation();
    carol.close(Duration::from_secs(10)).await.unwrap();
    let mut ws = Dial::Plain(relay.addr).websocket().await.unwrap();
    match say_hello(&mut ws, &hello("dave", gone, None)).await {
        ServerHello::Welcome { evicted, .. } => assert!(evicted, "a departed incarnation"),
        other => panic!("expected a welcome, got {other:?}"),
    }
}

/// A node that left ([`facsimile::Node::leave`]) without closing its
/// connection stays gone when the connection is made again: the relay
/// counted it gone, and the connection closes instead of starting the
/// node over as a new incarnation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_left_is_not_started_over_by_a_reconnection() {
    let mut relay = Relay::start(|c| c).await;
    let alice = tcp_node(&relay, "alice").await;
    let bob = tcp_node(&relay, "bob").await;
    alice.node().set_root(json!({"n": 0})).unwrap();
    alice.flush().await.unwrap();
    converge(&[alice.node(), bob.node()]).await;

    alice.node().leave();
    alice.flush().await.unwrap();
    let gone = alice.node().peer_id();
    wait_until("bob sees alice gone", Duration::from_secs(10), || {
        !bob.node().peers().contains(&gone)
    })
    .await;

    relay.restart().await;
    let mut status = alice.status();
    let closed = tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| matches!(s, net::Status::Closed)),
    )
    .await
    .is_ok();
    assert!(closed, "alice's connection still {:?}", *status.borrow());
    assert_eq!(alice.rejoins(), 0);
    assert_eq!(alice.node().peer_id(), gone);
    let refused = alice.node().set_path("/n", 1).unwrap_err();
    assert!(
        matches!(refused.engine(), Some(facsimile::EngineError::Left)),
        "{refused}"
    );
    // Nor does the relay count it again.
    bob.node().set_path("/n", 2).unwrap();
    bob.flush().await.unwrap();
    assert!(!bob.node().peers().contains(&gone));
    assert_eq!(alice.node().get("/n"), Some(Value::Int(0)));
}
