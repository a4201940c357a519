//! A client that accepts smaller frames than its relay sends.

use std::time::Duration;

use facsimile::net::{self, NetError, Status};
use serde_json::json;

use crate::support::*;

/// A frame above the client's `max_frame` (within the relay's) stops the
/// client's connection for good, with the reason, instead of a reconnection
/// that would meet the same frame again; its flush fails; the relay and
/// the writer carry on. Over TCP and over WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frame_above_the_client_s_limit_stops_its_connection() {
    let relay = Relay::start(|c| c).await;
    let writer = tcp_node(&relay, "writer").await;
    writer.node().set_root(json!({"big": ""})).unwrap();
    writer.flush().await.unwrap();
    let small = options().max_frame(64 << 10);
    let readers = [
        net::connect(&relay.addr.to_string(), "tcp-reader", small.clone())
            .await
            .unwrap(),
        net::connect(&relay.ws_url(), "ws-reader", small)
            .await
            .unwrap(),
    ];
    writer
        .node()
        .set_path("/big", "x".repeat(100 << 10))
        .unwrap();
    writer.flush().await.unwrap();
    for reader in &readers {
        let mut status = reader.status();
        let stopped = tokio::time::timeout(
            Duration::from_secs(20),
            status.wait_for(|s| !matches!(s, Status::Connected)),
        )
        .await
        .expect("the reader stops")
        .unwrap()
        .clone();
        let Status::Failed(reason) = stopped else {
            panic!("stopped for good, not {stopped:?}");
        };
        assert!(reason.contains("max_frame"), "{reason}");
        reader.node().set_path("/big", "mine").unwrap();
        let flushed = reader.flush().await;
        assert!(
            matches!(flushed, Err(NetError::Closed)),
            "a flush after it stopped fails: {flushed:?}"
        );
    }
    writer.node().set_path("/after", 1).unwrap();
    writer.flush().await.unwrap();
    let late = tcp_node(&relay, "late").await;
    assert_eq!(late.node().get("/after"), Some(facsimile::Value::Int(1)));
}
