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
    alice
        .node()
        .set_root(json!({"n": 0, "shared": {}}))
        .unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_member_is_cut_off_once_its_queue_fills_and_its_lock_passes() {
    relay_log();
    let relay = Relay::start(|c| {
        c.failure_detection(Duration::from_secs(1), PEER_TIMEOUT)
            .client_queue(256 << 10)
    })
    .await;
    let alice = tcp_node(&relay, "alice").await;
    alice
        .node()
        .set_root(json!({"shared": {}, "blobs": []}))
        .unwrap();
    alice.flush().await.unwrap();
    let hole = BlackHole::start(relay.addr).await;
    let carol = member_behind(&hole, "carol-queue").await;
    let c_shared = carol
        .node()
        .get("/shared")
        .unwrap()
        .as_map()
        .unwrap()
        .clone();
    let held = tokio::time::timeout(Duration::from_secs(10), carol.node().lock(&c_shared))
        .await
        .expect("carol gets the lock")
        .unwrap();
    carol.flush().await.unwrap();

    hole.black_hole();
    let shared = alice
        .node()
        .get("/shared")
        .unwrap()
        .as_map()
        .unwrap()
        .clone();
    let mut wanted = std::pin::pin!(alice.node().lock(&shared));
    // Alice's writes go on while carol holds the lock; what the relay
    // queues for carol grows until the relay cuts her off as too slow,
    // which evicts her and passes the lock on.
    let blobs = alice
        .node()
        .get("/blobs")
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    let chunk = "x".repeat(64 << 10);
    let mut written = 0usize;
    let guard = loop {
        blobs.push(chunk.as_str()).unwrap();
        written += chunk.len();
        assert!(
            written < 256 << 20,
            "carol was not cut off after {written} bytes"
        );
        alice.flush().await.unwrap();
        if let Some(granted) = futures_util::FutureExt::now_or_never(&mut wanted) {
            break granted.unwrap();
        }
    };
    logged(&["peer evicted", "carol-queue", "cut off: too slow"]).await;
    assert!(guard.token() > held.token(), "fencing tokens increase");
    shared.set("by", "alice").unwrap();
    alice.flush().await.unwrap();

    // A joiner is served and sees everything alice wrote.
    let dave = net::connect(
        &relay.addr.to_string(),
        "dave",
        options().timeouts(Duration::from_secs(10), Duration::from_secs(20)),
    )
    .await
    .expect("dave joins");
    assert_eq!(dave.node().get("/shared/by"), Some("alice".into()));
    assert_eq!(dave.node().snapshot(), alice.node().snapshot());
    drop((held, carol));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_holed_member_is_evicted_for_its_silence_and_its_lock_passes() {
    relay_log();
    // Short enough to wait for, with heartbeats frequent enough that no
    // live node is taken for silent.
    let relay =
        Relay::start(|c| c.failure_detection(Duration::from_millis(100), Duration::from_secs(2)))
            .await;
    let beating = options().failure_detection(Duration::from_millis(100), None);
    let alice = net::connect(&relay.addr.to_string(), "alice", beating.clone())
        .await
        .expect("alice connects");
    alice.node().set_root(json!({"shared": {}})).unwrap();
    alice.flush().await.unwrap();
    let hole = BlackHole::start(relay.addr).await;
    let carol = net::connect(&hole.addr.to_string(), "carol-silent", beating)
        .await
        .expect("carol connects through the proxy");
    let c_shared = carol
        .node()
        .get("/shared")
        .unwrap()
        .as_map()
        .unwrap()
        .clone();
    let held = tokio::time::timeout(Duration::from_secs(10), carol.node().lock(&c_shared))
        .await
        .expect("carol gets the lock")
        .unwrap();
    carol.flush().await.unwrap();

    hole.black_hole();
    let shared = alice
        .node()
        .get("/shared")
        .unwrap()
        .as_map()
        .unwrap()
        .clone();
    let guard = tokio::time::timeout(Duration::from_secs(30), alice.node().lock(&shared))
        .await
        .expect("the lock passes once carol is evicted")
        .unwrap();
    assert!(guard.token() > held.token(), "fencing tokens increase");
    logged(&["peer evicted", "carol-silent", "missed heartbeats"]).await;
    drop((held, carol));
}

/// A node that writes while the relay evicts it (its link is down; it still
/// believes it holds its lock) is told each of those writes was lost, and
/// only those: the relay drops them, as every message of an evicted peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_sent_as_the_relay_evicts_the_node_are_each_counted_lost() {
    relay_log();
    let relay =
        Relay::start(|c| c.failure_detection(Duration::from_millis(100), Duration::from_secs(1)))
            .await;
    let alice = net::connect(
        &relay.addr.to_string(),
        "alice",
        options().failure_detection(Duration::from_millis(100), None),
    )
    .await
    .expect("alice connects");
    alice.node().set_root(json!({"shared": {}})).unwrap();
    alice.flush().await.unwrap();
    let hole = BlackHole::start(relay.addr).await;
    // Carol sends no heartbeats nor reclamation acknowledgements: every
    // message she sends is a write.
    let quiet = Duration::from_secs(3600);
    let carol = net::connect(
        &hole.addr.to_string(),
        "carol-racing",
        options()
            .failure_detection(quiet, None)
            .config(facsimile::Config::default().gc_interval(quiet)),
    )
    .await
    .expect("carol connects through the proxy");
    let shared = carol
        .node()
        .get("/shared")
        .unwrap()
        .as_map()
        .unwrap()
        .clone();
    let held = tokio::time::timeout(Duration::from_secs(10), carol.node().lock(&shared))
        .await
        .expect("carol gets the lock")
        .unwrap();
    shared.set("kept", 1).unwrap();
    carol.flush().await.unwrap();

    hole.black_hole();
    const WRITES: i64 = 5;
    for i in 0..WRITES {
        shared.set("lost", i).unwrap();
    }
    logged(&["peer evicted", "carol-racing", "missed heartbeats"]).await;
    let flushed = carol.flush();
    hole.restore();
    match flushed.await {
        Err(net::NetError::WritesLost(n)) => assert_eq!(n, WRITES as u64),
        other => panic!("carol's lost writes reported as {other:?}"),
    }
    let a_shared = alice
        .node()
        .get("/shared")
        .unwrap()
        .as_map()
        .unwrap()
        .clone();
    wait_until("the lock to pass", Duration::from_secs(10), || {
        a_shared.set("by", "alice").is_ok()
    })
    .await;
    alice.flush().await.unwrap();
    assert_eq!(a_shared.get("kept"), Some(1.into()));
    assert_eq!(a_shared.get("lost"), None);
    drop((held, carol));
}
