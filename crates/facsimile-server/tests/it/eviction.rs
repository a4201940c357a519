//! A node evicted while it could not hear the relay (paused, or its link
//! down long enough for the peer timeout) comes back: a flush reports as
//! lost exactly the writes that were dropped, never one that was applied.

use std::time::Duration;

use facsimile::net::{self, NetError};
use facsimile::{ArrayRef, Value};
use serde_json::json;

use crate::support::*;

fn list(conn: &net::Connection) -> Option<ArrayRef> {
    conn.node().get("/l")?.as_array().cloned()
}

/// A relay that evicts a node silent for 3 s, or whose connection broke
/// `grace` ago; alice on it directly, with `root`; carol (`hostname`)
/// through a proxy that can cut her off, both with the document.
async fn alice_and_carol_behind_a_proxy(
    root: serde_json::Value,
    hostname: &str,
    grace: Duration,
) -> (Relay, net::Connection, BlackHole, net::Connection) {
    relay_log();
    let relay = Relay::start(|c| {
        c.failure_detection(Duration::from_millis(500), Duration::from_secs(3))
            .reconnect_grace(grace)
    })
    .await;
    let alice = tcp_node(&relay, "alice").await;
    alice.node().set_root(root).unwrap();
    alice.flush().await.unwrap();
    let hole = BlackHole::start(relay.addr).await;
    let carol = net::connect(&hole.addr.to_string(), hostname, options())
        .await
        .expect("carol connects through the proxy");
    carol.flush().await.unwrap();
    converge(&[alice.node(), carol.node()]).await;
    (relay, alice, hole, carol)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reported_lost_after_an_eviction_are_exactly_the_dropped_ones() {
    evicted_then_writes(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_while_rejoining_are_reported_lost_only_if_dropped() {
    evicted_then_writes(true).await;
}

/// Carol is evicted while she cannot hear, comes back and writes 20 times,
/// flushing each write: `at_once`, while she learns of her eviction and
/// rejoins, else once she has rejoined.
async fn evicted_then_writes(at_once: bool) {
    let (_relay, alice, hole, carol) =
        alice_and_carol_behind_a_proxy(json!({"l": [], "k": {}}), "carol-evicted", Duration::ZERO)
            .await;
    let evicted = carol.node().peer_id().incarnation();

    // Carol cannot hear nor be heard: the relay evicts her and cuts her
    // connection, after sending her the eviction (held by the proxy).
    hole.black_hole();
    // A lock request nobody hears: dropped with the old incarnation, it
    // fails its future, and is no write of hers that a flush reports.
    let k = carol.node().get("/k").unwrap().as_map().unwrap().clone();
    let node = carol.node().clone();
    let wanted = tokio::spawn(async move { node.lock(&k).await.map(|g| g.token()) });
    logged(&["disconnecting client", "carol-evicted"]).await;
    // She reads what the relay sent before it cut her off, as a paused
    // process that resumes does (the eviction, unless the cut came first),
    // until the connection ends; then the link is back.
    hole.restore_towards_client();
    disconnected(&carol, "carol's connection ends").await;
    hole.restore();

    // Back as a new incarnation with the document, she writes, flushing
    // each write. Only her heartbeats were dropped: none of her writes.
    if !at_once {
        wait_until("carol to rejoin", Duration::from_secs(20), || {
            let n = carol.node();
            n.peer_id().incarnation() != evicted && n.is_ready() && list(&carol).is_some()
        })
        .await;
    }
    let mut acked = Vec::new();
    let mut lost = Vec::new();
    let mut i = 0;
    while acked.len() + lost.len() < 20 {
        // While she starts over, the document is away until it syncs.
        let Some(l) = list(&carol) else {
            tokio::task::yield_now().await;
            continue;
        };
        i += 1;
        if l.push(i).is_err() {
            continue;
        }
        match carol.flush().await {
            Ok(()) => acked.push(i),
            Err(NetError::WritesLost(_)) => lost.push(i),
            Err(e) => panic!("flush of {i}: {e}"),
        }
    }
    assert!(carol.rejoins() >= 1, "carol started over");
    assert!(wanted.await.unwrap().is_err(), "the lock request failed");
    converge(&[alice.node(), carol.node()]).await;
    let seen: Vec<i64> = list(&alice)
        .unwrap()
        .to_vec()
        .unwrap()
        .iter()
        .filter_map(Value::as_i64)
        .collect();
    let wrongly_lost: Vec<_> = lost.iter().filter(|i| seen.contains(i)).collect();
    let missing: Vec<_> = acked.iter().filter(|i| !seen.contains(i)).collect();
    assert!(
        wrongly_lost.is_empty() && missing.is_empty(),
        "reported lost yet applied: {wrongly_lost:?}; acknowledged yet missing: {missing:?} \
         (lost {lost:?}, acknowledged {acked:?}, document {seen:?})"
    );
    if !at_once {
        assert_eq!(lost, [0i64; 0], "no write was dropped");
    }
}

/// Carol's write reaches the relay, which applies it, but its
/// acknowledgement does not reach her; then she cannot be heard either, and
/// the relay evicts her and cuts the connection, the acknowledgement with
/// it. Back, she learns from the welcome what the relay had applied: her
/// flush succeeds instead of reporting the write lost, and it is there
/// once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_applied_before_an_eviction_whose_acknowledgement_was_cut_off_is_not_reported_lost()
{
    applied_then_cut_off(Cut::Evicted).await;
}

/// As above, but her connection ends before the relay evicts her: the
/// relay sees it close and evicts her at once (no reconnection grace).
/// The count of what it applied is taken when the connection ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_applied_before_the_connection_ended_is_not_reported_lost_after_the_eviction() {
    applied_then_cut_off(Cut::ConnectionEndedFirst).await;
}

/// As the first, but the relay restarts before she is back: the count of
/// what it applied was logged with the eviction.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_applied_before_an_eviction_is_not_reported_lost_after_a_relay_restart() {
    applied_then_cut_off(Cut::EvictedThenRelayRestarted).await;
}

/// How carol's connection ends once her write was applied.
#[derive(PartialEq)]
enum Cut {
    /// The relay evicts her, then cuts her off.
    Evicted,
    /// Her connection ends, and the relay evicts her.
    ConnectionEndedFirst,
    /// As `Evicted`, then the relay restarts.
    EvictedThenRelayRestarted,
}

async fn applied_then_cut_off(cut: Cut) {
    let hostname = match cut {
        Cut::Evicted => "carol-unheard",
        Cut::ConnectionEndedFirst => "carol-closed",
        Cut::EvictedThenRelayRestarted => "carol-restarted",
    };
    let (mut relay, alice, hole, carol) =
        alice_and_carol_behind_a_proxy(json!({"l": []}), hostname, Duration::ZERO).await;
    let evicted = carol.node().peer_id().incarnation();

    hole.hold_towards_client();
    list(&carol).unwrap().push(7).unwrap();
    wait_until("alice to see the write", Duration::from_secs(20), || {
        list(&alice).is_some_and(|l| l.to_json().unwrap() == json!([7]))
    })
    .await;
    // Unheard now as well (her new connections reach nobody until the
    // relay has evicted her).
    hole.black_hole();
    if cut == Cut::ConnectionEndedFirst {
        hole.cut();
        logged(&["peer evicted", hostname, "disconnected"]).await;
    } else {
        // Evicted, then the connection is cut with what the proxy held.
        logged(&["disconnecting client", hostname]).await;
        hole.cut();
    }
    if cut == Cut::EvictedThenRelayRestarted {
        relay.restart().await;
    }
    hole.restore();

    tokio::time::timeout(Duration::from_secs(30), carol.flush())
        .await
        .expect("carol's flush ends")
        .expect("the applied write is not reported lost");
    // The welcome completes the write just before the node starts over.
    wait_until("carol to start over", Duration::from_secs(20), || {
        carol.node().peer_id().incarnation() != evicted
    })
    .await;
    converge(&[alice.node(), carol.node()]).await;
    assert_eq!(list(&alice).unwrap().to_json().unwrap(), json!([7]));
}

/// The count of applied frames belongs to one connection. Carol's first
/// connection ends (counted) and she is back within the grace on a new one,
/// whose write the relay never gets; the relay restarts and evicts her for
/// silence. Back, she must count that write lost: the first connection's
/// count, had the relay kept it, would have taken it for applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_count_of_an_earlier_connection_does_not_take_a_dropped_write_for_applied() {
    let hostname = "carol-twice";
    let (mut relay, alice, hole, carol) =
        alice_and_carol_behind_a_proxy(json!({"l": []}), hostname, Duration::from_secs(2)).await;
    let evicted = carol.node().peer_id().incarnation();
    list(&carol).unwrap().push(1).unwrap();
    carol.flush().await.unwrap();

    hole.black_hole();
    hole.cut();
    disconnected(&carol, "carol's first connection ends").await;
    hole.restore();
    list(&carol).unwrap().push(2).unwrap();
    carol
        .flush()
        .await
        .expect("back within the grace, as a member");
    assert_eq!(carol.node().peer_id().incarnation(), evicted);

    // A write the relay never gets, then a restart, and carol is evicted
    // for silence.
    hole.black_hole();
    list(&carol).unwrap().push(3).unwrap();
    relay.restart().await;
    logged(&["peer evicted", hostname, "missed heartbeats"]).await;
    hole.cut();
    hole.restore();

    let flushed = tokio::time::timeout(Duration::from_secs(30), carol.flush())
        .await
        .expect("carol's flush ends");
    assert!(
        matches!(flushed, Err(NetError::WritesLost(1))),
        "the dropped write is reported lost: {flushed:?}"
    );
    wait_until("carol to start over", Duration::from_secs(20), || {
        carol.node().peer_id().incarnation() != evicted
    })
    .await;
    converge(&[alice.node(), carol.node()]).await;
    assert_eq!(list(&alice).unwrap().to_json().unwrap(), json!([1, 2]));
}

/// Carol, evicted while she could not hear, takes the document again when
/// she rejoins: her listeners of an object she had hear what changed in it
/// meanwhile, not only that the root was replaced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_rejoins_hears_what_changed_in_its_objects_meanwhile() {
    let (_relay, alice, hole, carol) =
        alice_and_carol_behind_a_proxy(json!({"k": {"x": 1}}), "carol-hears", Duration::ZERO).await;
    let k = carol.node().get("/k").unwrap().as_map().unwrap().clone();
    let heard = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let into = heard.clone();
    let _sub = k.on(move |e| {
        let change = (format!("{:?}", e.prop()), e.new_value().cloned());
        into.lock().unwrap().push(change);
    });
    hole.black_hole();
    logged(&["disconnecting client", "carol-hears"]).await;
    let on_alice = alice.node().get("/k").unwrap().as_map().unwrap().clone();
    on_alice.set("x", 2).unwrap();
    alice.flush().await.unwrap();
    hole.restore_towards_client();
    disconnected(&carol, "carol's connection ends").await;
    hole.restore();
    // Rejoined first: she may learn her eviction from a state she fetched
    // as the evicted incarnation, which holds x = 2 until she starts over.
    wait_until(
        "carol rejoins and reads x = 2",
        Duration::from_secs(30),
        || carol.rejoins() >= 1 && carol.node().get("/k/x") == Some(Value::Int(2)),
    )
    .await;
    let heard = heard.lock().unwrap().clone();
    assert!(
        heard.contains(&(
            format!("{:?}", Some(facsimile::Prop::Key("x".into()))),
            Some(Value::Int(2))
        )),
        "{heard:?}"
    );
}

/// A node evicted for its silence is reported once, when it is evicted: a
/// relay that reopens the document replays the eviction from its log,
/// and does not report it again as a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_eviction_is_not_reported_again() {
    const HOST: &str = "silent-then-replayed";
    const DOC: &str = "replayed-evictions";
    let count = || {
        relay_log()
            .lines()
            .filter(|l| l.contains(HOST) && l.contains("missed heartbeats"))
            .count()
    };
    let mut relay = Relay::start(|c| {
        c.failure_detection(Duration::from_millis(100), Duration::from_millis(500))
    })
    .await;
    // A node that sends no heartbeat in time is evicted for it.
    let silent = options_for(DOC).failure_detection(Duration::from_secs(3600), None);
    let node = net::connect(&relay.addr.to_string(), HOST, silent)
        .await
        .unwrap();
    node.node().set_root(json!({"k": 1})).unwrap();
    node.flush().await.unwrap();
    logged(&["peer evicted", HOST, "missed heartbeats"]).await;
    drop(node);
    relay.stop().await;
    let reported = count();

    relay.start_again().await;
    let _opener = net::connect(&relay.addr.to_string(), "opener", options_for(DOC))
        .await
        .unwrap();
    logged(&["document recovered", DOC]).await;
    assert_eq!(count(), reported, "the replayed eviction is reported again");
}

/// Carol is evicted by a peer while she stays connected: the relay keeps
/// her connection, and she starts over on it as a new incarnation, whose
/// writes the relay takes. When that connection breaks, she comes back as
/// the new incarnation, within the grace: the write she made meanwhile is
/// sent again and applied, not dropped as the evicted incarnation's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_evicted_while_connected_comes_back_as_its_new_incarnation() {
    let (_relay, alice, hole, carol) = alice_and_carol_behind_a_proxy(
        json!({"l": []}),
        "carol-evicted-by-alice",
        Duration::from_secs(5),
    )
    .await;
    let evicted = carol.node().peer_id().incarnation();
    alice.node().evict(&carol.node().peer_id());
    wait_until("carol to start over", Duration::from_secs(20), || {
        let n = carol.node();
        n.peer_id().incarnation() != evicted && n.is_ready() && list(&carol).is_some()
    })
    .await;
    list(&carol).unwrap().push("x").unwrap();
    carol.flush().await.expect("the new incarnation's write");

    hole.black_hole();
    hole.cut();
    disconnected(&carol, "carol's connection ends").await;
    list(&carol).unwrap().push("y").unwrap();
    hole.restore();

    let flushed = tokio::time::timeout(Duration::from_secs(30), carol.flush())
        .await
        .expect("carol's flush ends");
    assert!(
        matches!(flushed, Ok(())),
        "the write made offline is applied: {flushed:?} (rejoins {})",
        carol.rejoins()
    );
    assert_eq!(carol.rejoins(), 1, "carol started over once");
    converge(&[alice.node(), carol.node()]).await;
    assert_eq!(list(&alice).unwrap().to_json().unwrap(), json!(["x", "y"]));
}

/// How many frames the relay has taken from the connection of `hostname`
/// on the default document, as its inspector tells.
async fn frames_in(relay: &Relay, hostname: &str) -> u64 {
    let request = "GET /inspect/default/status?token=test-token HTTP/1.1\r\n\
                   Host: localhost\r\nConnection: close\r\n\r\n";
    let response = crate::websocket::http(relay, request).await;
    let (_, body) = response.split_once("\r\n\r\n").expect("a body");
    let status: serde_json::Value = serde_json::from_str(body).unwrap();
    status["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["hostname"] == hostname)
        .and_then(|c| c["framesIn"].as_u64())
        .unwrap_or_else(|| panic!("{hostname} is connected: {status}"))
}

/// Alice evicts Carol, who stays connected and does not hear of it yet:
/// the write she makes meanwhile, as the evicted incarnation, the relay
/// drops (and acknowledges). Once she hears of the eviction she starts
/// over, and her flush reports that write lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_dropped_as_the_evicted_incarnation_of_a_connected_node_is_reported_lost() {
    let hostname = "carol-unaware";
    relay_log();
    let relay = Relay::start(|c| c).await;
    let alice = tcp_node(&relay, "alice").await;
    alice.node().set_root(json!({"l": []})).unwrap();
    alice.flush().await.unwrap();
    let hole = BlackHole::start(relay.addr).await;
    // No heartbeats: the relay counts her frames, which are her writes.
    let quiet = options().failure_detection(Duration::from_secs(3600), None);
    let carol = net::connect(&hole.addr.to_string(), hostname, quiet)
        .await
        .expect("carol connects through the proxy");
    carol.flush().await.unwrap();
    converge(&[alice.node(), carol.node()]).await;
    let evicted = carol.node().peer_id().incarnation();

    hole.hold_towards_client();
    alice.node().evict(&carol.node().peer_id());
    alice.flush().await.unwrap();
    let before = frames_in(&relay, hostname).await;
    list(&carol).unwrap().push("w").unwrap();
    let started = std::time::Instant::now();
    while frames_in(&relay, hostname).await == before {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the relay takes carol's write"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    hole.restore_towards_client();

    let flushed = tokio::time::timeout(Duration::from_secs(30), carol.flush())
        .await
        .expect("carol's flush ends");
    assert!(
        matches!(flushed, Err(NetError::WritesLost(1))),
        "the dropped write is reported lost: {flushed:?}"
    );
    assert_ne!(carol.node().peer_id().incarnation(), evicted);
    assert_eq!(carol.rejoins(), 1);
    converge(&[alice.node(), carol.node()]).await;
    assert_eq!(list(&alice).unwrap().to_json().unwrap(), json!([]));
}

/// Carol syncs, and Alice evicts her before her fetch reaches the relay:
/// the relay still passes the sync of a departed sender (the state it
/// fetches is how it learns of its eviction), so she is answered, learns
/// it, and comes back as a new incarnation instead of syncing for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_evicted_during_its_sync_comes_back_as_a_new_incarnation() {
    let hostname = "carol-syncing";
    relay_log();
    let relay = Relay::start(|c| c).await;
    let alice = tcp_node(&relay, "alice").await;
    alice.node().set_root(json!({"l": []})).unwrap();
    alice.flush().await.unwrap();
    let hole = BlackHole::start(relay.addr).await;
    // No heartbeats: the relay counts her frames, her sync request first.
    let quiet = options().failure_detection(Duration::from_secs(3600), None);
    let carol = net::connect(&hole.addr.to_string(), hostname, quiet)
        .await
        .expect("carol connects through the proxy");
    carol.flush().await.unwrap();
    converge(&[alice.node(), carol.node()]).await;
    let evicted = carol.node().peer_id().incarnation();

    hole.hold_towards_client();
    let before = frames_in(&relay, hostname).await;
    carol.node().sync();
    let started = std::time::Instant::now();
    while frames_in(&relay, hostname).await == before {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the relay takes carol's sync request"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    alice.node().evict(&carol.node().peer_id());
    alice.flush().await.unwrap();
    hole.restore_towards_client();

    wait_until("carol to come back", Duration::from_secs(20), || {
        let n = carol.node();
        n.peer_id().incarnation() != evicted && n.is_ready() && list(&carol).is_some()
    })
    .await;
    assert_eq!(carol.rejoins(), 1, "carol started over once");
    list(&carol).unwrap().push("x").unwrap();
    carol.flush().await.expect("the new incarnation's write");
    converge(&[alice.node(), carol.node()]).await;
    assert_eq!(list(&alice).unwrap().to_json().unwrap(), json!(["x"]));
}
