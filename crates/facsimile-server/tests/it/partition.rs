//! A member whose link silently goes down (no FIN, writes that end up
//! blocking) must not hold up the document: joiners are served, and live
//! members' writes keep flowing.

use std::time::Duration;

use facsimile::net;
use serde_json::json;

use crate::support::*;

/// Eviction by missed heartbeats comes much later than anything below
/// waits: only serving that does not depend on the silent member passes.
const PEER_TIMEOUT: Duration = Duration::from_secs(120);

/// A member connected through `hole`, synced and known to the relay.
async fn member_behind(hole: &BlackHole, name: &str) -> net::Connection {
    let conn = net::connect(&hole.addr.to_string(), name, options())
        .await
        .unwrap_or_else(|e| panic!("{name} connects through the proxy: {e}"));
    conn.flush().await.unwrap();
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_node_joins_while_a_member_is_black_holed() {
    let relay = Relay::start(|c| c.failure_detection(Duration::from_secs(1), PEER_TIMEOUT)).await;
    let alice = tcp_node(&relay, "alice").await;
    alice.node().set_root(json!({"n": 0, "shared": {}})).unwrap();
    alice.flush().await.unwrap();
    let hole = BlackHole::start(relay.addr).await;
    let carol = member_behind(&hole, "carol").await;
    carol.node().root_map().unwrap().set("carol", true).unwrap();
    carol.flush().await.unwrap();
    let bob = tcp_node(&relay, "bob").await;
    converge(&[alice.node(), bob.node(), carol.node()]).await;

    hole.black_hole();
    // Carol keeps writing into the void; alice's writes still reach bob.
    carol.node().root_map().unwrap().set("lost", 1).unwrap();
    for i in 1..=20 {
        alice.node().root_map().unwrap().set("n", i).unwrap();
    }
    alice.flush().await.unwrap();
    let b_root = bob.node().root_map().unwrap();
    wait_until("bob to see alice's writes", Duration::from_secs(10), || {
        b_root.get("n") == Some(20.into())
    })
    .await;

    // A new node gets the document long before carol could be evicted.
    let dave = net::connect(
        &relay.addr.to_string(),
        "dave",
        options().timeouts(Duration::from_secs(10), Duration::from_secs(10)),
    )
    .await
    .expect("dave joins while carol is black-holed");
    assert_eq!(dave.node().get("/n"), Some(20.into()));
    assert_eq!(dave.node().get("/carol"), Some(true.into()));
    assert_eq!(dave.node().get("/lost"), None);
    assert_eq!(dave.node().snapshot(), alice.node().snapshot());

    // And the new node takes part: its write reaches the others.
    dave.node().root_map().unwrap().set("dave", true).unwrap();
    dave.flush().await.unwrap();
    converge(&[alice.node(), bob.node(), dave.node()]).await;
    drop(carol);
}
