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

/// A node whose frame limit is exactly the relay's (as the README advises)
/// resumes after missing 100 writes of another node: the catch-up packs
/// those writes into runs that fit the relay's frames, so the relay can
/// send every one and none is above the node's limit. The node converges
/// as the same member, instead of meeting a frame too large on every
/// reconnection until the relay evicts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_s_catch_up_fits_the_relay_s_frame_limit() {
    const MAX_FRAME: usize = 8192;
    relay_log();
    let relay = Relay::start(|c| {
        c.max_frame(MAX_FRAME)
            .failure_detection(Duration::from_secs(1), Duration::from_secs(120))
            .reconnect_grace(Duration::from_secs(120))
    })
    .await;
    let exact = options().max_frame(MAX_FRAME);
    let writer = net::connect(&relay.addr.to_string(), "writer", exact.clone())
        .await
        .unwrap();
    writer.node().set_root(json!({"k": ""})).unwrap();
    writer.flush().await.unwrap();
    let hole = BlackHole::start(relay.addr).await;
    let reader = net::connect(&hole.addr.to_string(), "catching-up-reader", exact)
        .await
        .unwrap();
    let member = reader.node().peer_id();
    converge(&[writer.node(), reader.node()]).await;

    // The reader hears nothing of the writes, then its connection breaks;
    // within the grace it comes back as the same member and resumes.
    hole.black_hole();
    for i in 0..100 {
        let value = format!("{i:03}{}", "x".repeat(500));
        writer.node().set_path("/k", value).unwrap();
    }
    writer.flush().await.unwrap();
    hole.cut();
    hole.restore();
    logged(&["client joined", "catching-up-reader", "resumed=true"]).await;
    let status = reader.status();
    wait_until(
        "the reader to catch up, or stop",
        Duration::from_secs(20),
        || {
            matches!(*status.borrow(), Status::Failed(_))
                || reader.node().snapshot() == writer.node().snapshot()
        },
    )
    .await;
    let now = status.borrow().clone();
    assert!(!matches!(now, Status::Failed(_)), "{now:?}");
    assert_eq!(reader.node().peer_id(), member, "resumed, not rejoined");
}

/// A relay that ends every connection of a node right after its welcome
/// (here, refusing a frame the node sent under its larger limit of
/// before, first again on each connection) does not see the node back
/// after the shortest wait each time: the wait grows until a connection
/// gets something acknowledged. Over two seconds, waits doubling from
/// 20 ms allow six attempts or so; a wait that started over at each
/// welcome allowed one every few tens of milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnections_the_relay_ends_after_its_welcome_back_off() {
    let hostname = "carol-backs-off";
    relay_log();
    let mut relay = Relay::start(|c| c.max_frame(1 << 20)).await;
    let hole = BlackHole::start(relay.addr).await;
    let patient = options().reconnect_backoff(Duration::from_millis(20), Duration::from_secs(60));
    let carol = net::connect(&hole.addr.to_string(), hostname, patient)
        .await
        .expect("carol connects through the proxy");
    carol.node().set_root(json!({})).unwrap();
    carol.flush().await.unwrap();

    // A frame the relay of now takes, which never reaches it.
    hole.black_hole();
    carol
        .node()
        .set_path("/big", "x".repeat(600 << 10))
        .unwrap();
    relay.stop().await;
    relay.start_again_with(|c| c.max_frame(256 << 10)).await;
    hole.cut();
    hole.restore();

    let refusals = || {
        relay_log()
            .lines()
            .filter(|l| l.contains(hostname) && l.contains("bad frame"))
            .count()
    };
    logged(&["bad frame", hostname]).await;
    let first = refusals();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let then = refusals() - first;
    assert!(then <= 10, "{then} connections in two seconds");
}

/// A connection that ends on a frame the relay refused as too large
/// carried a frame all the same: its node heard the welcome (a client
/// sends nothing before it). With no grace, its node is evicted then, and
/// the lock it held goes to the node waiting for it, not one peer timeout
/// after it was last heard.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_ended_by_a_refused_frame_counts_as_heard() {
    let hostname = "carol-refused";
    relay_log();
    let mut relay = Relay::start(|c| {
        c.max_frame(1 << 20)
            .failure_detection(Duration::from_secs(1), Duration::from_secs(120))
    })
    .await;
    let hole = BlackHole::start(relay.addr).await;
    let patient = options().reconnect_backoff(Duration::from_millis(20), Duration::from_secs(60));
    let carol = net::connect(&hole.addr.to_string(), hostname, patient)
        .await
        .expect("carol connects through the proxy");
    carol.node().set_root(json!({"m": {}})).unwrap();
    carol.flush().await.unwrap();
    let m = carol.node().get("/m").unwrap().as_map().unwrap().clone();
    let _guard = carol.node().lock(&m).await.unwrap();
    carol.flush().await.unwrap();

    // A frame the relay of now takes, which never reaches it.
    hole.black_hole();
    carol
        .node()
        .set_path("/big", "x".repeat(600 << 10))
        .unwrap();
    relay.stop().await;
    relay.start_again_with(|c| c.max_frame(256 << 10)).await;
    let dave = tcp_node(&relay, "dave").await;
    hole.cut();
    hole.restore();
    logged(&["bad frame", hostname]).await;

    let m = dave.node().get("/m").unwrap().as_map().unwrap().clone();
    let granted = tokio::time::timeout(Duration::from_secs(30), dave.node().lock(&m)).await;
    assert!(
        matches!(granted, Ok(Ok(_))),
        "dave's lock, with carol's connections ending on refused frames: {granted:?}"
    );
}

/// Writes a node made while its relay was down, packed into a message as
/// large as that relay's frames allowed, reach the relay come back with a
/// smaller frame limit: the client splits them to the limit its welcome
/// announces before sending them, so every write arrives and is
/// acknowledged, instead of the relay refusing the frame (and ending the
/// connection) on every reconnection. Over TCP and over WebSocket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_packed_under_a_larger_frame_limit_reaches_a_smaller_one() {
    const WRITES: usize = 2_000;
    let mut relay = Relay::start(|c| c.max_frame(1 << 20)).await;
    let writers = [
        tcp_node(&relay, "tcp-backlog").await,
        net::connect(&relay.ws_url(), "ws-backlog", options())
            .await
            .unwrap(),
    ];
    writers[0]
        .node()
        .set_root(json!({"tcp": {}, "ws": {}}))
        .unwrap();
    writers[0].flush().await.unwrap();
    converge(&[writers[0].node(), writers[1].node()]).await;
    let members: Vec<_> = writers.iter().map(|w| w.node().peer_id()).collect();

    relay.stop().await;
    for (writer, key) in writers.iter().zip(["tcp", "ws"]) {
        disconnected(writer, "the writer notices the relay is gone").await;
        // Some 200 KiB of writes, held into one message; the document stays
        // small (ten keys), so that a joiner's state fits a small frame.
        let map = writer.node().get(&format!("/{key}")).unwrap();
        let map = map.as_map().unwrap();
        for i in 0..WRITES {
            let value = format!("{i:04}{}", "x".repeat(100));
            map.set(&format!("k{}", i % 10), value).unwrap();
        }
    }
    relay.start_again_with(|c| c.max_frame(16 << 10)).await;
    for writer in &writers {
        let flushed = tokio::time::timeout(Duration::from_secs(30), writer.flush()).await;
        assert!(
            matches!(flushed, Ok(Ok(()))),
            "every write acknowledged: {flushed:?}"
        );
    }
    let reader = tcp_node(&relay, "backlog-reader").await;
    converge(&[writers[0].node(), writers[1].node(), reader.node()]).await;
    let last = format!("{:04}{}", WRITES - 1, "x".repeat(100));
    for key in ["tcp", "ws"] {
        let got = reader.node().get(&format!("/{key}/k9"));
        assert_eq!(got, Some(facsimile::Value::from(last.as_str())), "{key}");
    }
    for (writer, member) in writers.iter().zip(members) {
        assert_eq!(writer.node().peer_id(), member, "resumed, not rejoined");
        assert_eq!(writer.rejoins(), 0);
    }
}
