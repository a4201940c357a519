//! A relay answers a hello once the document is open, which after a
//! restart means once it is recovered: a client waits for the welcome
//! longer than for the connection itself, and a hello it gave up on does
//! not cost the node its membership.

use std::time::Duration;

use facsimile::net::{self, Status};
use serde_json::json;

use crate::support::*;

/// A welcome held past the connect timeout (as a relay holds it while it
/// recovers the document) is waited for: the connection is up, and the
/// connect timeout bounds only reaching the relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_slower_than_the_connect_timeout_is_waited_for() {
    relay_log();
    let relay = Relay::start(|c| c).await;
    let hole = BlackHole::start(relay.addr).await;
    hole.hold_towards_client();
    let options = options().timeouts(Duration::from_millis(300), Duration::from_secs(20));
    let addr = hole.addr.to_string();
    let connecting =
        tokio::spawn(async move { net::connect(&addr, "dora-slow-welcome", options).await });
    logged(&["client joined", "dora-slow-welcome"]).await;
    // Time passes with the welcome held: past the connect timeout.
    tokio::time::sleep(Duration::from_secs(1)).await;
    hole.restore_towards_client();
    let dora = tokio::time::timeout(Duration::from_secs(30), connecting)
        .await
        .expect("connect returns")
        .unwrap();
    let dora = dora.expect("dora connects once the welcome comes");
    assert_eq!(*dora.status().borrow(), Status::Connected);
}

/// Carol holds a lock when the relay restarts, and her reconnection's
/// welcome is held until she gives up on it (as when the recovery takes
/// longer than she waits): the relay has admitted that hello, and its
/// connection ends before carrying anything. That is no departure of
/// hers: her next connection resumes, as the same incarnation, with the
/// lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hello_given_up_on_after_a_restart_does_not_evict_the_node() {
    let hostname = "carol-gives-up";
    relay_log();
    let mut relay = Relay::start(|c| c).await;
    let hole = BlackHole::start(relay.addr).await;
    // She waits a second for a welcome.
    let options = options().timeouts(Duration::from_secs(10), Duration::from_secs(1));
    let carol = net::connect(&hole.addr.to_string(), hostname, options)
        .await
        .expect("carol connects");
    carol.node().set_root(json!({"jobs": {}})).unwrap();
    let jobs = carol.node().root_map().unwrap();
    let guard = carol
        .node()
        .lock(&jobs)
        .await
        .expect("carol takes the lock");
    carol.flush().await.unwrap();
    let incarnation = carol.node().peer_id().incarnation();

    relay.stop().await;
    disconnected(&carol, "carol's connection ends with the relay").await;
    hole.hold_towards_client();
    relay.start_again().await;
    // A connection of hers the relay admitted ended unheard.
    logged(&["client disconnected", hostname]).await;
    hole.restore_towards_client();

    let mut status = carol.status();
    tokio::time::timeout(
        Duration::from_secs(20),
        status.wait_for(|s| *s == Status::Connected),
    )
    .await
    .expect("carol reconnects")
    .unwrap();
    drop(status);
    tokio::time::timeout(Duration::from_secs(20), carol.flush())
        .await
        .expect("carol's flush returns")
        .expect("nothing of carol's was dropped");
    assert_eq!(
        (carol.rejoins(), carol.node().peer_id().incarnation()),
        (0, incarnation),
        "carol goes on as the same incarnation"
    );
    assert!(guard.is_held(), "carol keeps her lock");
}
