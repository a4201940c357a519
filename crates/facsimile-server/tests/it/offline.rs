//! While the relay is out of reach: writes made meanwhile reach it packed
//! (a few messages for the whole backlog, not one per write), and a caller
//! holding the status it waited for holds up nothing else.

use std::time::Duration;

use facsimile::net;
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
    disconnected(&alice, "alice notices the relay is gone").await;
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

/// A node that resumes after missing many writes of one other node gets
/// them packed: a few frames for the whole run, which apply to the same
/// document as the messages one by one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resuming_node_gets_what_it_missed_packed() {
    use facsimile::net::protocol::{Down, Resume, ServerHello};
    use facsimile_core::{Config, PeerId, Replica};

    const WRITES: i64 = 2_000;
    let assets = tempfile::tempdir().unwrap();
    let relay = Relay::start(|c| c.inspector_assets(assets.path())).await;
    // The log's identity, from a welcome.
    let mut probe = Dial::Plain(relay.addr).websocket().await.unwrap();
    let log = match say_hello(&mut probe, &hello("probe", 0x5eed, None)).await {
        ServerHello::Welcome { log, .. } => log,
        other => panic!("expected a welcome, got {other:?}"),
    };
    drop(probe);

    let alice = tcp_node(&relay, "alice").await;
    alice.node().set_root(json!({"scores": {}})).unwrap();
    let scores = alice.node().root_map().unwrap().get("scores").unwrap();
    let scores = scores.as_map().unwrap();
    for i in 0..WRITES {
        scores.set(&format!("player{}", i % 50), i).unwrap();
        // One message a write, as a node connected all along sends them.
        alice.flush().await.unwrap();
    }
    let (end, _) = log_of(&relay).await;
    assert!(end > WRITES as u64, "{end} positions for {WRITES} writes");

    // A node that read nothing of it resumes from the log's start.
    let mut ws = Dial::Plain(relay.addr).websocket().await.unwrap();
    let resume = Resume { log, position: 0 };
    match say_hello(&mut ws, &hello("bob", 0xb0b, Some(resume))).await {
        ServerHello::Welcome { resumed, .. } => assert!(resumed, "bob resumes"),
        other => panic!("expected a welcome, got {other:?}"),
    }
    let mut bob = Replica::new(PeerId::new("bob", 0xb0b), Config::default());
    let (mut frames, mut bytes, mut position) = (0, 0, 0);
    while position < end {
        match next_down(&mut ws).await {
            Ok(Down::Message {
                position: p,
                bytes: m,
            }) => {
                assert!(p > position, "positions increase");
                position = p;
                frames += 1;
                bytes += m.len();
                bob.handle_message(&m).unwrap();
            }
            Ok(_) => {}
            Err(close) => panic!("the relay closed the connection: {close:?}"),
        }
    }
    let root = bob.root().as_ref_id().expect("a root map");
    let scores = bob
        .map_get(root, "scores")
        .unwrap()
        .and_then(|v| v.as_ref_id());
    let scores = scores.expect("a scores map");
    for p in 0..50 {
        assert_eq!(
            bob.map_get(scores, &format!("player{p}")).unwrap(),
            Some(facsimile_core::Value::Int(WRITES - 50 + p)),
            "bob has alice's last scores"
        );
    }
    // One frame a message would be over 2,000 frames of some 20 bytes.
    // Packed, a run ends at each message of another sender in the log
    // (more of them the longer the writes take, on a loaded machine):
    // some 10 frames of about 5 bytes a write unloaded, 16 and 7 loaded.
    assert!(frames < 200, "{frames} frames for {end} positions");
    assert!(
        bytes < 10 * WRITES as usize,
        "{bytes} bytes for {WRITES} writes"
    );
}

/// A caller may hold the status it waited for across an `.await` (the
/// value `wait_for` returns): the node meanwhile reconnects to the
/// restarted relay and flushes, and the status is written once it is let
/// go. Written by the client's task, it held up its runtime thread, here
/// the whole of a current-thread runtime, so the node never came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_held_by_a_caller_holds_up_nothing_else() {
    const PATIENCE: Duration = Duration::from_secs(20);
    let mut relay = Relay::start(|c| c).await;
    let addr = relay.addr.to_string();
    let (step, steps) = std::sync::mpsc::channel();
    let (restarted, mut on_restart) = tokio::sync::watch::channel(false);
    // Its own thread and runtime: a stalled runtime fails the test instead
    // of hanging it, and the relay runs on the test's.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let alice = net::connect(&addr, "alice", options()).await.unwrap();
            alice.node().set_root(json!({})).unwrap();
            alice.flush().await.unwrap();
            let mut status = alice.status();
            step.send("joined").unwrap();
            let held = status
                .wait_for(|s| matches!(s, net::Status::Disconnected(_)))
                .await
                .unwrap();
            step.send("disconnected").unwrap();
            on_restart.wait_for(|r| *r).await.unwrap();
            alice.node().set_path("/back", 1).unwrap();
            alice.flush().await.unwrap();
            assert!(matches!(*held, net::Status::Disconnected(_)));
            drop(held);
            status
                .wait_for(|s| *s == net::Status::Connected)
                .await
                .unwrap();
            step.send("done").unwrap();
        });
    });
    let expect = |what| {
        let got = tokio::task::block_in_place(|| steps.recv_timeout(PATIENCE));
        assert_eq!(got, Ok(what), "the node's runtime stalled before {what}");
    };
    expect("joined");
    relay.stop().await;
    expect("disconnected");
    relay.start_again().await;
    restarted.send_replace(true);
    expect("done");
}
