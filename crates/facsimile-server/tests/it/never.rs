//! Durations a caller gives a relay connection to mean never.
//!
//! On a current-thread runtime: a panic of the connection's task would land
//! on the test's own thread, which [`relay_panics`] does not count against
//! the relay.

use std::time::Duration;

use facsimile::net;
use serde_json::json;

use crate::support::*;

/// No heartbeats (`Duration::MAX` between them): the node connects,
/// writes and flushes, its watch for a silent relay waiting as good as for
/// ever.
#[tokio::test]
async fn a_node_without_heartbeats_connects_and_writes() {
    let relay = Relay::start(|c| c).await;
    let quiet = options().failure_detection(Duration::MAX, None);
    let connected = net::connect(&relay.addr.to_string(), "never-beats", quiet).await;
    let node = connected.expect("a node without heartbeats connects");
    node.node().set_root(json!({"k": 1})).unwrap();
    tokio::time::timeout(Duration::from_secs(20), node.flush())
        .await
        .expect("the flush returns")
        .expect("the write is acknowledged");
}
