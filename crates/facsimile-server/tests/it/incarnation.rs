//! A new node whose random incarnation the document already knows picks
//! another, instead of being taken for the peer of that incarnation.

use std::time::Duration;

use facsimile::Value;
use facsimile::net::protocol::ServerHello;
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
