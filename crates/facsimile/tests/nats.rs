//! Documents on a real NATS JetStream server, started by each test (the
//! `nats-server` binary: `$NATS_SERVER`, else on the `PATH`;
//! `scripts/test.sh` installs it).
#![cfg(feature = "nats")]

mod nats_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use facsimile::net;
use facsimile::{Node, Value};
use serde_json::json;

use nats_support::*;

fn root_len(node: &Node) -> usize {
    node.root_map().map_or(0, |m| m.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_converge() {
    let server = Server::start();
    let a = join(&server.url(), "alpha", options("converge")).await;
    a.node().set_root(json!({})).unwrap();
    a.flush().await.unwrap();
    let b = join(&server.url(), "bravo", options("converge")).await;
    let c = join(&server.url(), "charlie", options("converge")).await;
    for (i, conn) in [&a, &b, &c].into_iter().enumerate() {
        let root = conn.node().root_map().unwrap();
        for k in 0..200 {
            root.set(&format!("{i}-{k}"), k).unwrap();
            // Everybody also fights over one key.
            root.set("shared", format!("{i}-{k}")).unwrap();
        }
    }
    for conn in [&a, &b, &c] {
        conn.flush().await.unwrap();
    }
    let nodes = [a.node(), b.node(), c.node()];
    converged(&nodes).await;
    assert_eq!(root_len(a.node()), 601);
    let root = b.node().root_map().unwrap();
    assert_eq!(root.get("2-199"), Some(Value::Int(199)));
    for conn in [a, b, c] {
        conn.close(Duration::from_secs(10)).await.unwrap();
    }
}

/// A listener that panics on what its node reads from the stream stops at
/// the listener: the node reads on (its flushes return, the others' later
/// writes reach it) and its status stays `Connected`. The panic ended the
/// reading task, and flushes waited for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_s_panic_leaves_the_node_reading() {
    let server = Server::start();
    let a = join(&server.url(), "alpha", options("panicky")).await;
    a.node().set_root(json!({})).unwrap();
    a.flush().await.unwrap();
    let b = join(&server.url(), "bravo", options("panicky")).await;
    let panics = Arc::new(AtomicUsize::new(0));
    let count = panics.clone();
    let _sub = b.node().on_change(move |ev| {
        if matches!(ev.origin(), facsimile::Origin::Remote(_)) {
            count.fetch_add(1, Ordering::SeqCst);
            panic!("a listener's bug");
        }
    });
    for k in 0..3i64 {
        a.node().set_path("/k", k).unwrap();
        a.flush().await.unwrap();
        until("bravo to read alpha's write", || {
            b.node().get("/k") == Some(Value::Int(k))
        })
        .await;
    }
    assert!(panics.load(Ordering::SeqCst) >= 3);
    b.node().set_path("/j", 1).unwrap();
    match tokio::time::timeout(PATIENCE, b.flush()).await {
        Ok(Ok(())) => {}
        other => panic!("bravo's flush after the panics: {other:?}"),
    }
    converged(&[a.node(), b.node()]).await;
    assert_eq!(*b.status().borrow(), net::Status::Connected);
}

/// The stream's first and last sequence, read with a client of its own.
async fn stream_bounds(url: &str, doc: &str) -> (u64, u64) {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(format!("FACSIMILE_{doc}")).await.unwrap();
    let state = &stream.info().await.unwrap().state;
    (state.first_sequence, state.last_sequence)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_joiner_catches_up_from_a_snapshot_and_the_stream_is_purged() {
    let server = Server::start();
    // A stream message carries all the frames queued when it is published,
    // so flushing every 50 writes makes at least 200 of them.
    let opts = options("late").nats(nats().snapshot_every(10));
    let a = join(&server.url(), "alpha", opts.clone()).await;
    a.node().set_root(json!({"items": []})).unwrap();
    let root = a.node().root_map().unwrap();
    let items = root.get("items").unwrap().as_array().unwrap().clone();
    for k in 0..10_000i64 {
        if k % 2 == 0 {
            root.set(&format!("k{}", k % 1000), k).unwrap();
        } else {
            items.push(k).unwrap();
        }
        if k % 50 == 49 {
            a.flush().await.unwrap();
        }
    }
    a.flush().await.unwrap();
    // Snapshots were saved and the stream purged behind them.
    until("a purge", || {
        let url = server.url();
        let bounds = std::thread::spawn(move || {
            tokio::runtime::Runtime::new()
                .unwrap()
                .block_on(stream_bounds(&url, "late"))
        })
        .join()
        .unwrap();
        bounds.0 > 1
    })
    .await;
    let d = join(&server.url(), "delta", opts).await;
    // It started from a snapshot, not from the first message.
    converged(&[a.node(), d.node()]).await;
    let joined = d.node().root_map().unwrap();
    assert_eq!(
        joined.get("items").unwrap().as_array().unwrap().len(),
        5_000
    );
    assert_eq!(joined.get("k998"), Some(Value::Int(9_998)));
    // And it keeps up with new writes.
    root.set("after", true).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), d.node()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_server_restart_and_retries_apply_once() {
    let mut server = Server::start();
    let url = server.url();
    // The nodes reconnect at different times after the restart; each has a
    // lease from when the log resumes to be back, which on a busy machine
    // wants more than the other tests' second.
    let opts = options("restart").nats(nats().lease(Duration::from_secs(3)));
    let a = join(&url, "alpha", opts.clone()).await;
    let b = join(&url, "bravo", opts.clone()).await;
    a.node().set_root(json!({"log": []})).unwrap();
    a.flush().await.unwrap();
    let log = a
        .node()
        .root_map()
        .unwrap()
        .get("log")
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    for i in 0..100i64 {
        log.push(i).unwrap();
    }
    a.flush().await.unwrap();
    // Kill the server mid-stream: writes made meanwhile are published
    // again (same message ids) until the restarted server stores them.
    server.kill();
    for i in 100..200i64 {
        log.push(i).unwrap();
    }
    server.run();
    a.flush().await.unwrap();
    for i in 200..300i64 {
        log.push(i).unwrap();
    }
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;
    let seen = b
        .node()
        .root_map()
        .unwrap()
        .get("log")
        .unwrap()
        .as_array()
        .unwrap()
        .clone();
    let values: Vec<i64> = (0..seen.len())
        .map(|i| seen.get(i).unwrap().as_i64().unwrap())
        .collect();
    assert_eq!(
        values,
        (0..300).collect::<Vec<_>>(),
        "every write once, in order"
    );
    // A node joining after the restart reads all of it from the store.
    let c = join(&url, "charlie", opts).await;
    converged(&[a.node(), b.node(), c.node()]).await;
}

/// How many writes each frame of `host`'s carries, in order, in the
/// messages of the document's stream after the message `after`, read with
/// a client of its own. A message's id names its frames (the first, and
/// the last after a `-` when it carries several, each behind its 4-byte
/// length).
async fn writes_per_frame(url: &str, doc: &str, host: &str, after: u64) -> Vec<u64> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream(format!("FACSIMILE_{doc}")).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut writes = Vec::new();
    for seq in after + 1..=last {
        let message = stream.get_raw_message(seq).await.unwrap();
        let id = message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .unwrap()
            .to_string();
        if !id.starts_with(&format!("{host}.")) {
            continue;
        }
        let frames = id.rsplit('.').next().unwrap();
        let mut payload = &message.payload[..];
        let frames: Vec<&[u8]> = match frames.split_once('-') {
            None => vec![payload],
            Some(_) => std::iter::from_fn(|| {
                let (len, rest) = payload.split_first_chunk::<4>()?;
                let (frame, rest) = rest.split_at(u32::from_be_bytes(*len) as usize);
                payload = rest;
                Some(frame)
            })
            .collect(),
        };
        writes.extend(
            frames
                .iter()
                .map(|f| facsimile_core::Envelope::writes_in(f).unwrap()),
        );
    }
    writes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_while_the_server_is_down_are_held_and_go_out_packed() {
    let mut server = Server::start();
    let url = server.url();
    let opts = options("held").nats(nats().lease(Duration::from_secs(3)));
    let a = join(&url, "alpha", opts.clone()).await;
    let b = join(&url, "bravo", opts).await;
    a.node().set_root(json!({"log": []})).unwrap();
    a.flush().await.unwrap();
    let log = a.node().get("/log").unwrap().as_array().unwrap().clone();
    // Connected, each write is a frame of its own. Frames are counted, not
    // the stream's bytes: how many frames go in a stream message depends
    // on how fast the publisher gets its acknowledgements, and under load
    // the connected writes, packed, once took less than twice the bytes
    // of the held ones.
    let before = stream_bounds(&url, "held").await.1;
    for i in 0..500i64 {
        log.push(i).unwrap();
    }
    a.flush().await.unwrap();
    let after_connected = stream_bounds(&url, "held").await.1;
    let connected = writes_per_frame(&url, "held", "alpha", before).await;
    let connected: Vec<_> = connected.into_iter().filter(|&w| w > 0).collect();
    assert_eq!(connected, [1; 500], "one frame a write");
    // With the server down, the writes are held, and go out as one packed
    // frame once the client is back.
    server.kill();
    let mut status = a.status();
    status
        .wait_for(|s| matches!(s, net::Status::Disconnected(_)))
        .await
        .unwrap();
    for i in 500..1000i64 {
        log.push(i).unwrap();
    }
    server.run();
    a.flush().await.unwrap();
    // Heartbeats aside, which carry no write.
    let held = writes_per_frame(&url, "held", "alpha", after_connected).await;
    let held: Vec<_> = held.into_iter().filter(|&w| w > 0).collect();
    assert_eq!(held.len(), 1, "the held writes went out as {held:?}");
    converged(&[a.node(), b.node()]).await;
    let seen = b.node().get("/log").unwrap().as_array().unwrap().clone();
    let values: Vec<i64> = (0..seen.len())
        .map(|i| seen.get(i).unwrap().as_i64().unwrap())
        .collect();
    assert_eq!(
        values,
        (0..1000).collect::<Vec<_>>(),
        "every write once, in order"
    );
    assert_eq!(a.rejoins() + b.rejoins(), 0, "nobody's lease ran out");
}

/// Alpha, cut off behind the partition, writes `/held/x` under its lock
/// on `/held` and lets the lock go: a write that may depend on the lock,
/// never carried over, which the log refuses once alpha's lease runs out.
/// Returns alpha's root.
async fn a_locked_write_cut_off(a: &net::Connection, partition: &Partition) -> facsimile::MapRef {
    let root = a.node().root_map().unwrap();
    root.set("held", json!({})).unwrap();
    a.flush().await.unwrap();
    let held = root.get("held").unwrap().as_map().unwrap().clone();
    let guard = a.node().lock(&held).await.unwrap();
    partition.freeze(true);
    held.set("x", 1).unwrap();
    drop(guard);
    root
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_the_log_refused_after_the_lease_ran_out_are_carried_over_unless_locked() {
    let (_server, partition, a, b) = alpha_behind_a_partition("lapse").await;
    let alpha = a.node().peer_id();
    // Cut off from the server (without knowing it), alpha writes on while
    // bravo's heartbeats carry the log past alpha's lease.
    let root = a_locked_write_cut_off(&a, &partition).await;
    // Made after the lock's: carried over.
    let log = root.get("log").unwrap().as_array().unwrap().clone();
    for i in 0..10i64 {
        log.push(i).unwrap();
    }
    root.set("made", json!({"n": 1})).unwrap();
    let made = root.get("made").unwrap().as_map().unwrap().clone();
    made.set("filled", 2).unwrap();
    let heard = Arc::new(AtomicUsize::new(0));
    let _listening = made.on_key("z", {
        let heard = heard.clone();
        move |_| {
            heard.fetch_add(1, Ordering::SeqCst);
        }
    });
    let flushing = tokio::spawn({
        let a = a.clone();
        async move { a.flush().await }
    });
    lapse(&partition, &b, &alpha).await;
    // Stored by the stream, but after the lapse: refused. The new
    // incarnation made the writes again but the one under the lock, and
    // the flush waited for those.
    match flushing.await.unwrap() {
        Err(net::NetError::WritesLost(n)) => assert_eq!(n, 1, "only the locked write is lost"),
        other => panic!("the refused write under the lock was acknowledged: {other:?}"),
    }
    assert!(a.rejoins() >= 1);
    a.flush().await.expect("the loss is reported once");
    // Handles made before read the new incarnation's objects.
    assert_eq!(made.get("filled"), Some(Value::Int(2)));
    log.push("after").unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;
    let seen = b.node().get("/log").unwrap().as_array().unwrap().clone();
    let want: Vec<Value> = (0..10i64)
        .map(Value::from)
        .chain([Value::from("after")])
        .collect();
    assert_eq!(
        (0..seen.len())
            .map(|i| seen.get(i).unwrap())
            .collect::<Vec<_>>(),
        want
    );
    assert_eq!(b.node().get("/made/n"), Some(Value::Int(1)));
    assert_eq!(b.node().get("/made/filled"), Some(Value::Int(2)));
    assert_eq!(
        b.node().get("/held/x"),
        None,
        "the write under the lock is lost"
    );
    // Listeners on an object made again follow it.
    let made_b = b.node().get("/made").unwrap().as_map().unwrap().clone();
    made_b.set("z", 3).unwrap();
    b.flush().await.unwrap();
    until(
        "alpha's listener on the map made again to hear of it",
        || heard.load(Ordering::SeqCst) == 1,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_refused_writes_are_reported_lost_after_the_lease_ran_out() {
    let (_server, partition, a, b) = alpha_behind_a_partition("quiet-lapse").await;
    let alpha = a.node().peer_id();
    // Cut off with every write acknowledged, alpha only sends heartbeats,
    // which the log refuses once her lease ran out: no write is lost.
    lapse(&partition, &b, &alpha).await;
    until("alpha to start over", || {
        a.rejoins() >= 1 && a.node().is_ready() && a.node().get("/log").is_some()
    })
    .await;
    let log = a.node().get("/log").unwrap().as_array().unwrap().clone();
    for i in 0..5i64 {
        log.push(i).unwrap();
        a.flush()
            .await
            .unwrap_or_else(|e| panic!("the write of {i}, applied, is reported: {e}"));
    }
    converged(&[a.node(), b.node()]).await;
    assert_eq!(
        b.node().get("/log").unwrap().as_array().unwrap().len(),
        5,
        "every acknowledged write is applied"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_that_raced_a_lock_grant_is_reported_lost_once() {
    let (_server, partition, a, b) = alpha_behind_a_partition("race").await;
    // Alpha, cut off for less than a lease, has not read bravo's grant
    // when it writes to the locked map: the log orders its write after
    // the grant, and every reader refuses it.
    partition.freeze(true);
    let root_b = b.node().root_map().unwrap();
    let guard = b.node().lock(&root_b).await.unwrap();
    a.node().root_map().unwrap().set("raced", 1).unwrap();
    let flushing = tokio::spawn({
        let a = a.clone();
        async move { a.flush().await }
    });
    partition.freeze(false);
    match flushing.await.unwrap() {
        Err(net::NetError::WritesLost(n)) => assert_eq!(n, 1, "one write raced the grant"),
        other => panic!("the refused write was acknowledged: {other:?}"),
    }
    assert!(a.rejoins() >= 1, "alpha started over");
    a.flush().await.expect("the loss is reported once");
    root_b.set("after", 2).unwrap();
    b.flush().await.unwrap();
    drop(guard);
    converged(&[a.node(), b.node()]).await;
    let root = b.node().root_map().unwrap();
    assert!(
        !root.contains_key("raced"),
        "a refused write is applied nowhere"
    );
    assert!(root.contains_key("after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_starts_over_never_shows_an_older_document() {
    let (_server, partition, a, b) = alpha_behind_a_partition("monotonic").await;
    let log = b.node().get("/log").unwrap().as_array().unwrap().clone();
    const ITEMS: usize = 20;
    for i in 0..ITEMS {
        log.push(i as i64).unwrap();
    }
    b.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;
    // From here on, alpha shows every item whenever it tells of a change.
    // It has no snapshot to start over from but an empty document, so
    // replaying the log in its place would show every shorter list first.
    let fewest = Arc::new(AtomicUsize::new(usize::MAX));
    let watch = |node: Node, fewest: Arc<AtomicUsize>| {
        move || {
            let len = node
                .get("/log")
                .and_then(|v| v.as_array().map(|l| l.len()))
                .unwrap_or(0);
            fewest.fetch_min(len, Ordering::SeqCst);
        }
    };
    let on_change = watch(a.node().clone(), fewest.clone());
    let on_ready = watch(a.node().clone(), fewest.clone());
    let on_root = watch(a.node().clone(), fewest.clone());
    let subscriptions = [
        a.node().on_change(move |_| on_change()),
        a.node().on_ready(move |_| on_ready()),
        a.node().on_root_changed(move |_| on_root()),
    ];
    let alpha = a.node().peer_id();
    lapse(&partition, &b, &alpha).await;
    until("alpha to start over", || a.rejoins() >= 1).await;
    let len = a.node().get("/log").unwrap().as_array().unwrap().len();
    assert_eq!(len, ITEMS, "alpha starts over where it had read");
    log.push(ITEMS as i64).unwrap();
    b.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;
    drop(subscriptions);
    let fewest = fewest.load(Ordering::SeqCst);
    assert!(
        fewest >= ITEMS,
        "alpha showed {fewest} of the {ITEMS} items it had read while starting over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_holder_loses_its_lock_after_the_lease() {
    let server = Server::start();
    let a = join(&server.url(), "alpha", options("crash")).await;
    a.node().set_root(json!({"n": 0})).unwrap();
    a.flush().await.unwrap();
    let b = join(&server.url(), "bravo", options("crash")).await;
    let root_a = a.node().root_map().unwrap();
    let guard = a.node().lock(&root_a).await.unwrap();
    let first = guard.token();
    let root_b = b.node().root_map().unwrap();
    // Seen without writing: a write made before bravo read the grant would
    // race it, be refused by the log, and be reported lost by bravo's
    // flush below.
    until("bravo to see the lock", || {
        b.node().check_writable(&root_b).is_err()
    })
    .await;
    std::mem::forget(guard);
    // No goodbye: the stream's clock passes alpha's lease.
    a.abort();
    let guard = tokio::time::timeout(PATIENCE, b.node().lock(&root_b))
        .await
        .expect("the lock passes on after the lease")
        .unwrap();
    assert!(guard.token() > first, "fencing tokens increase");
    root_b.set("n", 2).unwrap();
    b.flush().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_contending_in_a_loop_never_overlap() {
    let server = Server::start();
    let a = join(&server.url(), "alpha", options("mutex")).await;
    a.node()
        .set_root(json!({"counter": 0, "holder": null}))
        .unwrap();
    a.flush().await.unwrap();
    let b = join(&server.url(), "bravo", options("mutex")).await;
    let c = join(&server.url(), "charlie", options("mutex")).await;
    const ROUNDS: i64 = 15;
    let mut tasks = Vec::new();
    for conn in [a.clone(), b.clone(), c.clone()] {
        tasks.push(tokio::spawn(async move {
            let node = conn.node().clone();
            let me = node.hostname().to_string();
            let mut tokens = Vec::new();
            for _ in 0..ROUNDS {
                let root = node.root_map().unwrap();
                let guard = node.lock(&root).await.unwrap();
                tokens.push(guard.token());
                // Nobody else is inside: the holder mark is clear.
                assert_eq!(
                    root.get("holder"),
                    Some(Value::Null),
                    "{me} found the lock taken"
                );
                root.set("holder", me.as_str()).unwrap();
                let n = root.get("counter").unwrap().as_i64().unwrap();
                root.set("counter", n + 1).unwrap();
                root.set("holder", Value::Null).unwrap();
                conn.flush().await.unwrap();
                guard.release().unwrap();
            }
            tokens
        }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.extend(t.await.unwrap());
    }
    converged(&[a.node(), b.node(), c.node()]).await;
    let root = a.node().root_map().unwrap();
    assert_eq!(
        root.get("counter"),
        Some(Value::Int(3 * ROUNDS)),
        "no lost update"
    );
    tokens.sort_unstable();
    tokens.dedup();
    assert_eq!(
        tokens.len() as i64,
        3 * ROUNDS,
        "every grant has its own token"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_server_cluster_keeps_going_when_one_stops() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut servers: Vec<Server> = (0..3)
        .map(|i| {
            let config = dir.path().join(format!("n{i}.conf"));
            let others: Vec<u16> = (0..3).filter(|&j| j != i).map(|j| routes[j]).collect();
            let store = dir.path().join(format!("js{i}"));
            std::fs::write(
                &config,
                conf(
                    &format!("n{i}"),
                    ports[i],
                    &store,
                    Some((routes[i], &others)),
                ),
            )
            .unwrap();
            let mut s = Server {
                child: None,
                config,
                port: ports[i],
                _dir: std::sync::Arc::new(tempfile::tempdir().unwrap()),
            };
            s.run();
            s
        })
        .collect();
    let all: Vec<String> = ports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect();
    let opts = options("cluster").nats(nats().stream_replicas(3));
    // The cluster elects its JetStream leader after the servers are up.
    let deadline = Instant::now() + PATIENCE;
    let mut conns = Vec::new();
    for i in 0..3 {
        // Each node prefers its own server and knows the others.
        let mut urls = all.clone();
        urls.rotate_left(i);
        let url = urls.join(",");
        let conn = loop {
            match net::connect(&url, &format!("node{i}"), opts.clone()).await {
                Ok(c) => break c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "cluster not ready: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        conns.push(conn);
    }
    conns[0].node().set_root(json!({})).unwrap();
    conns[0].flush().await.unwrap();
    let nodes: Vec<&Node> = conns.iter().map(|c| c.node()).collect();
    converged(&nodes).await;
    for (i, conn) in conns.iter().enumerate() {
        conn.node()
            .root_map()
            .unwrap()
            .set(&format!("before{i}"), 1)
            .unwrap();
        conn.flush().await.unwrap();
    }
    servers[0].kill();
    for (i, conn) in conns.iter().enumerate() {
        let root = conn.node().root_map().unwrap();
        for k in 0..50 {
            root.set(&format!("after{i}-{k}"), k).unwrap();
        }
    }
    for conn in &conns {
        conn.flush().await.unwrap();
    }
    converged(&nodes).await;
    assert_eq!(root_len(nodes[0]), 3 + 150);
}

#[tokio::test]
async fn thousands_of_writes_queued_at_once_are_all_published() {
    let server = Server::start();
    let a = join(&server.url(), "alpha", options("burst")).await;
    a.node().set_root(json!({})).unwrap();
    a.flush().await.unwrap();
    let root = a.node().root_map().unwrap();
    // More than the client library lets wait for acknowledgement at once.
    for i in 0..6_000i64 {
        root.set(&format!("k{i}"), i).unwrap();
    }
    tokio::time::timeout(PATIENCE, a.flush())
        .await
        .expect("flush returns")
        .unwrap();
    let b = join(&server.url(), "bravo", options("burst")).await;
    converged(&[a.node(), b.node()]).await;
    assert_eq!(root_len(b.node()), 6_000);
}

/// A write of `bytes` bytes at `/big` is refused as too large when made.
fn refused_as_too_large(node: &Node, bytes: usize) {
    let err = node.set_path("/big", "x".repeat(bytes)).unwrap_err();
    assert!(
        matches!(err.engine(), Some(facsimile::EngineError::TooLarge { .. })),
        "{err}"
    );
}

/// A write `from` makes after is acknowledged in time and reaches `to`.
async fn a_write_reaches(from: &net::Connection, to: &net::Connection) {
    from.node().set_path("/n", 1).unwrap();
    tokio::time::timeout(PATIENCE, from.flush())
        .await
        .expect("flush returns")
        .unwrap();
    converged(&[from.node(), to.node()]).await;
    assert_eq!(to.node().get("/n"), Some(Value::Int(1)));
}

/// The server stores messages of at most `max_payload` (1 MiB by
/// default): a larger write is refused when it is made, with nothing
/// changed, where it was applied here and then dropped by the publisher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_larger_than_the_server_stores_is_refused_when_made() {
    let server = Server::start();
    let a = join(&server.url(), "alpha", options("large")).await;
    let b = join(&server.url(), "bravo", options("large")).await;
    a.node().set_root(json!({"n": 0})).unwrap();
    refused_as_too_large(a.node(), 1 << 20);
    assert_eq!(a.node().get("/big"), None);
    a.node().set_path("/fits", "y".repeat(1000 << 10)).unwrap();
    a_write_reaches(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_in_the_stream_are_skipped_by_every_reader() {
    let server = Server::start();
    let a = join(&server.url(), "alpha", options("garbage")).await;
    a.node().set_root(json!({})).unwrap();
    a.flush().await.unwrap();
    // Another publisher on the document's subject: a message that claims to
    // pack three frames but holds one, one whose length runs past its end,
    // and one that is no frame at all.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut short = 5u32.to_be_bytes().to_vec();
    short.extend_from_slice(b"abcde");
    let published: [(&str, Vec<u8>); 3] = [
        ("intruder.00000001.0-2", short),
        ("intruder.00000001.3-4", vec![0xff; 9]),
        ("intruder.00000001.5", b"not a frame".to_vec()),
    ];
    for (id, payload) in published {
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(payload.into())
            .message_id(id);
        js.send_publish("facsimile.garbage", message)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    // Alpha reads past them and writes on; a joiner replays them too.
    let root = a.node().root_map().unwrap();
    for k in 0..100i64 {
        root.set(&format!("k{k}"), k).unwrap();
    }
    a.flush().await.unwrap();
    let b = join(&server.url(), "bravo", options("garbage")).await;
    converged(&[a.node(), b.node()]).await;
    assert_eq!(root_len(b.node()), 100);
}

/// The largest string `node` takes at `path`, down from `from` in steps
/// of 64 bytes: a write as large as its limits allow.
fn largest_write(node: &Node, path: &str, from: usize) -> usize {
    let mut len = from;
    loop {
        match node.set_path(path, "x".repeat(len)) {
            Ok(_) => return len,
            Err(e) if matches!(e.engine(), Some(facsimile::EngineError::TooLarge { .. })) => {
                len -= 64;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

/// Every reader takes what the stream stores, whatever its own frame limit
/// and the length of its hostname (which its own messages' ids carry):
/// a reader that refused a message it stored would never apply another
/// of that sender's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_reads_what_the_stream_stores_whatever_its_own_limits() {
    let server = Server::start();
    // The stream, made by alpha, stores messages of the server's 1 MiB.
    let a = join(&server.url(), "a", options("limits")).await;
    let long = "b".repeat(1000);
    let b = join(&server.url(), &long, options("limits")).await;
    let c = join(&server.url(), "c", options("limits").max_frame(256 << 10)).await;
    a.node().set_root(json!({})).unwrap();
    a.flush().await.unwrap();
    let written = largest_write(a.node(), "/a", 1 << 20);
    assert!(written > 1_040_000, "alpha wrote {written} bytes");
    a.node().set_path("/n", 1).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node(), c.node()]).await;
    // What the others write fits what every reader takes.
    largest_write(b.node(), "/b", 1 << 20);
    let written = largest_write(c.node(), "/c", 1 << 20);
    assert!(written < 256 << 10, "charlie keeps to its own limit");
    b.flush().await.unwrap();
    c.flush().await.unwrap();
    converged(&[a.node(), b.node(), c.node()]).await;
    assert_eq!(b.node().get("/n"), Some(Value::Int(1)));
}

/// A node joining a document whose stream stores smaller messages than
/// its own limit keeps to the stream's: a larger write is refused when
/// made, where it went out and was refused by the server, and the
/// publisher retried it for ever with every later message behind it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_keeps_to_the_limit_of_a_stream_made_with_a_smaller_one() {
    let server = Server::start();
    let a = join(&server.url(), "alpha", options("small").max_frame(64 << 10)).await;
    a.node().set_root(json!({})).unwrap();
    a.flush().await.unwrap();
    let b = join(&server.url(), "bravo", options("small")).await;
    refused_as_too_large(b.node(), 200 << 10);
    a_write_reaches(&b, &a).await;
}

/// A message the stream refuses as too large (its limit was lowered after
/// the node joined) is counted lost, not published again for ever; the
/// node, whose messages now have a gap, starts over, and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_stream_refuses_as_too_large_is_reported_lost() {
    let server = Server::start();
    let a = join(&server.url(), "alpha", options("shrunk")).await;
    let b = join(&server.url(), "bravo", options("shrunk")).await;
    a.node().set_root(json!({})).unwrap();
    a.flush().await.unwrap();
    // An operator lowers the stream's limit.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut stream = js.get_stream("FACSIMILE_shrunk").await.unwrap();
    let mut config = stream.info().await.unwrap().config.clone();
    config.max_message_size = 64 << 10;
    js.update_stream(config).await.unwrap();
    a.node().set_path("/big", "x".repeat(200 << 10)).unwrap();
    match tokio::time::timeout(PATIENCE, a.flush()).await {
        Ok(Err(net::NetError::WritesLost(n))) => assert!(n >= 1, "{n}"),
        other => panic!("the refused write was not reported lost: {other:?}"),
    }
    until("alpha to start over", || {
        a.rejoins() >= 1 && a.node().is_ready() && a.node().root_map().is_some()
    })
    .await;
    a_write_reaches(&a, &b).await;
    assert_eq!(b.node().get("/big"), None);
}

/// Of a message that raced a lock grant, every reader refuses only the
/// writes to the locked object and applies the others: only those are
/// lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_writes_that_raced_a_lock_grant_are_reported_lost() {
    let (_server, partition, a, b) = alpha_behind_a_partition("race-some").await;
    partition.freeze(true);
    let root_b = b.node().root_map().unwrap();
    let guard = b.node().lock(&root_b).await.unwrap();
    // One message: a write to the locked root, one to the list in it.
    let root = a.node().root_map().unwrap();
    let log = a.node().get("/log").unwrap().as_array().unwrap().clone();
    a.node()
        .batch(|| {
            root.set("raced", 1)?;
            log.push(1)
        })
        .unwrap();
    let flushing = tokio::spawn({
        let a = a.clone();
        async move { a.flush().await }
    });
    partition.freeze(false);
    match flushing.await.unwrap() {
        Err(net::NetError::WritesLost(n)) => assert_eq!(n, 1, "one write raced the grant"),
        other => panic!("the refused write was acknowledged: {other:?}"),
    }
    drop(guard);
    converged(&[a.node(), b.node()]).await;
    assert_eq!(b.node().get("/raced"), None);
    assert_eq!(b.node().get("/log/0"), Some(Value::Int(1)));
}

/// A hostname may hold characters a NATS header may not (message ids
/// carry it): they are escaped, and ids stay distinct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostnames_with_line_breaks_connect_and_write() {
    let server = Server::start();
    let a = join(&server.url(), "line\r\nbreak%", options("crlf")).await;
    let b = join(&server.url(), "line%0D%0Abreak%25", options("crlf")).await;
    a.node().set_root(json!({})).unwrap();
    a.flush().await.unwrap();
    // Stored is not yet read: b writes into the map once it has it.
    converged(&[a.node(), b.node()]).await;
    b.node().set_path("/b", 1).unwrap();
    b.flush().await.unwrap();
    a.node().set_path("/a", 2).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;
    assert_eq!(a.node().get("/b"), Some(Value::Int(1)));
}

/// A server that stops answering without closing the connection (its
/// machine gone, or cut off) is left within half a lease (here 0.5 s, 2 s
/// allowed), so that the node can reach the log through another one in
/// time; the client's default pings took three minutes to notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_went_silent_is_noticed_in_time() {
    let (_server, partition, a, b) = alpha_behind_a_partition("silent").await;
    let mut status = a.status();
    partition.freeze(true);
    // Not held: a status held keeps the connection from writing the next.
    let noticed = tokio::time::timeout(
        Duration::from_secs(2),
        status.wait_for(|s| matches!(s, net::Status::Disconnected(_))),
    )
    .await
    .is_ok();
    assert!(noticed, "the silent server was not noticed");
    partition.freeze(false);
    a.node().set_path("/back", 1).unwrap();
    tokio::time::timeout(PATIENCE, a.flush())
        .await
        .expect("flush returns")
        .unwrap();
    converged(&[a.node(), b.node()]).await;
}

/// A caller may hold the status it waited for across an `.await` (the
/// value `wait_for` returns): the connection meanwhile reconnects and
/// publishes, and writes the status once it is let go. Written by the
/// client's event handler, it held up its runtime thread, here the whole
/// of a current-thread runtime, so the node never came back online.
#[test]
fn a_status_held_by_a_caller_holds_up_nothing_else() {
    let mut server = Server::start();
    let url = server.url();
    let (step, steps) = std::sync::mpsc::channel();
    let (restarted, mut on_restart) = tokio::sync::watch::channel(false);
    // Its own thread: a stalled runtime fails the test instead of hanging it.
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let opts = options("held").nats(nats().lease(Duration::from_secs(4)));
            let a = join(&url, "alpha", opts).await;
            a.node().set_root(json!({})).unwrap();
            a.flush().await.unwrap();
            let mut status = a.status();
            step.send("joined").unwrap();
            let held = status
                .wait_for(|s| matches!(s, net::Status::Disconnected(_)))
                .await
                .unwrap();
            step.send("disconnected").unwrap();
            on_restart.wait_for(|r| *r).await.unwrap();
            a.node().set_path("/back", 1).unwrap();
            a.flush().await.unwrap();
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
        let got = steps.recv_timeout(PATIENCE);
        assert_eq!(got, Ok(what), "the node's runtime stalled before {what}");
    };
    expect("joined");
    server.kill();
    expect("disconnected");
    server.run();
    restarted.send_replace(true);
    expect("done");
}

/// A stream of the document's name made by other means, with settings a
/// node cannot adopt, is refused with its own error naming the stream and
/// why, not a generic NATS failure.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_the_node_cannot_adopt_is_refused_with_its_reason() {
    let server = Server::start();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "FACSIMILE_adopt".into(),
        subjects: vec!["elsewhere.adopt".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    match net::connect(&server.url(), "alpha", options("adopt")).await {
        Err(net::NetError::StreamRefused { stream, reason }) => {
            assert_eq!(stream, "FACSIMILE_adopt");
            assert!(reason.contains("facsimile.adopt"), "{reason}");
        }
        other => panic!("the stream was not refused as such: {other:?}"),
    }
}

/// While the stream stores nothing (JetStream unavailable: turned off here
/// on the one server, as a cluster that lost its quorum is), the client
/// stays connected to its server, but the connection reports itself
/// degraded; once the stream stores messages again it is connected, and
/// the write made meanwhile arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_is_degraded_while_the_stream_stores_nothing() {
    let server = Server::start();
    let a = join(&server.url(), "alpha", options("degraded")).await;
    a.node().set_root(json!({})).unwrap();
    a.flush().await.unwrap();
    let mut status = a.status();
    server.set_jetstream(false);
    a.node().set_path("/during", 1).unwrap();
    let degraded = tokio::time::timeout(
        PATIENCE,
        status.wait_for(|s| matches!(s, net::Status::Degraded(_))),
    )
    .await
    .is_ok();
    assert!(degraded, "the status stayed {:?}", *status.borrow());
    server.set_jetstream(true);
    tokio::time::timeout(PATIENCE, status.wait_for(|s| *s == net::Status::Connected))
        .await
        .expect("connected once the stream stores again")
        .unwrap();
    tokio::time::timeout(PATIENCE, a.flush())
        .await
        .expect("flush returns")
        .unwrap();
    let b = join(&server.url(), "bravo", options("degraded")).await;
    converged(&[a.node(), b.node()]).await;
    assert_eq!(b.node().get("/during"), Some(Value::Int(1)));
}

/// Waits until the stream of `doc` starts after the message `seq`.
async fn purged_past(url: &str, doc: &str, seq: u64) {
    let deadline = Instant::now() + PATIENCE;
    while stream_bounds(url, doc).await.0 <= seq {
        assert!(Instant::now() < deadline, "timed out waiting for a purge");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A node cut off until its lease ran out, while the others wrote on and
/// purged the stream behind their snapshots, starts over from a snapshot:
/// what that changed in the objects it had is reported as changes, so that
/// its events, replayed, reproduce its document (as after a sync over the
/// relay), not only that it is ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_replayed_reproduce_the_state_through_a_reload() {
    use nats_support::model::{actual, follow};

    let server = Server::start();
    let partition = Partition::start(server.port).await;
    let opts = options("replayed").nats(nats().snapshot_every(5));
    // Bravo makes every object: alpha's ids stay those of its first
    // incarnation.
    let b = join(&server.url(), "bravo", opts.clone()).await;
    b.node()
        .set_root(json!({"m": {"x": 0, "gone": true}, "l": [0], "old": {"y": 1}}))
        .unwrap();
    b.flush().await.unwrap();
    let a = join(&partition.url(), "alpha", opts).await;
    converged(&[a.node(), b.node()]).await;
    let (model, _subs) = follow(a.node());
    // Cut off long enough that its client gives its connection up, with
    // what the server had sent on it: alpha reads none of what follows.
    let alpha = a.node().peer_id();
    partition.freeze(true);
    until("bravo to see alpha's lease run out", || {
        !b.node().peers().contains(&alpha)
    })
    .await;
    let missed = stream_bounds(&server.url(), "replayed").await.1;
    let root = b.node().root_map().unwrap();
    let m = root.get("m").unwrap().as_map().unwrap().clone();
    let l = root.get("l").unwrap().as_array().unwrap().clone();
    m.delete("gone").unwrap();
    root.delete("old").unwrap();
    root.set("new", json!({"z": [1]})).unwrap();
    for i in 1..=80i64 {
        m.set("x", i).unwrap();
        l.push(i).unwrap();
        b.flush().await.unwrap();
    }
    purged_past(&server.url(), "replayed", missed + 1).await;
    partition.freeze(false);
    until("alpha to start over", || a.rejoins() >= 1).await;
    converged(&[a.node(), b.node()]).await;
    let document = actual(a.node());
    until("alpha's events to reproduce its document", || {
        model.lock().unwrap().render() == document
    })
    .await;
}

/// A node cut off while it saves a snapshot (here as it publishes the
/// entry that makes the stored object whole), whose last bytes land after
/// others saved newer snapshots and purged the stream behind them, never
/// brings its older snapshot back: a joiner starts from the newest one and
/// reads on from there, without a gap to start over from.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_saved_by_a_node_cut_off_midway_never_replaces_a_newer_one() {
    let server = Server::start();
    let partition = Partition::start(server.port).await;
    // Heartbeats every 3 s: bravo saves no snapshot of its own while
    // charlie joins.
    let opts = options("stale").nats(nats().lease(Duration::from_secs(10)).snapshot_every(5));
    let a = join(&partition.url(), "alpha", opts.clone()).await;
    partition.freeze_at("PUB $O.FACSIMILE_stale_SNAPSHOTS.M.");
    let mut frozen = partition.frozen.subscribe();
    a.node().set_root(json!({"n": 0})).unwrap();
    for i in 1..1000i64 {
        a.node().set_path("/n", i).unwrap();
        tokio::select! {
            r = a.flush() => r.unwrap(),
            _ = frozen.wait_for(|f| *f) => break,
        }
    }
    assert!(*frozen.borrow(), "alpha saves a snapshot");
    // Alpha's snapshot covers the log up to here at most.
    let held = stream_bounds(&server.url(), "stale").await.1;

    let b = join(&server.url(), "bravo", opts.clone()).await;
    for i in 0..80i64 {
        b.node().set_path("/n", -i).unwrap();
        b.flush().await.unwrap();
    }
    purged_past(&server.url(), "stale", held + 1).await;
    // The snapshot store's entries from here on, once stored.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut entries = snapshot_entries(&js, "stale").await;
    partition.freeze(false);
    // Alpha's entry lands.
    let alphas = |info: &serde_json::Value| {
        let position = info["metadata"]["log-position"]
            .as_str()
            .and_then(|p| p.parse::<u64>().ok());
        info["deleted"] != json!(true) && position.is_some_and(|p| p >> 16 <= held)
    };
    entry_where(&mut entries, "alpha's snapshot is stored", alphas).await;

    let c = join(&server.url(), "charlie", opts).await;
    assert_eq!(
        c.rejoins(),
        0,
        "charlie loaded a snapshot older than the stream's purge and started over"
    );
    converged(&[b.node(), c.node()]).await;
}

/// A snapshot larger than a slow link carries in the 20 s a read was
/// once given is read whole: a read is given up only when nothing comes
/// for the node's sync timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_snapshot_over_a_slow_link_is_read_whole() {
    let server = Server::start();
    let partition = Partition::start(server.port).await;
    // Nobody's lease runs out while the joiner reads, and its client does
    // not give up on a server whose answers wait behind the snapshot.
    let opts = options("slow").nats(nats().lease(Duration::from_secs(600)).snapshot_every(5));
    let b = join(&server.url(), "bravo", opts.clone()).await;
    b.node().set_root(json!({})).unwrap();
    const LARGE: usize = 30;
    for i in 0..LARGE {
        b.node()
            .set_path(&format!("/k{i}"), "x".repeat(100 << 10))
            .unwrap();
        b.flush().await.unwrap();
    }
    // Enough small writes that the stream keeps none of the large ones.
    for i in 0..80i64 {
        b.node().set_path("/n", i).unwrap();
        b.flush().await.unwrap();
    }
    purged_past(&server.url(), "slow", LARGE as u64 + 2).await;
    // About 3 MB at 128 KiB a second: some 24 s.
    partition.slow(128 << 10);
    let c = join(&partition.url(), "charlie", opts).await;
    assert_eq!(c.rejoins(), 0);
    converged(&[b.node(), c.node()]).await;
    assert_eq!(c.node().get("/n"), Some(Value::Int(79)));
}

/// Two nodes that save snapshots of the same log position (one won the
/// claim, another claimed that position later) each keep to their own:
/// the one whose switch lost never removes the snapshot made current. Here
/// alpha is cut off as it stores its snapshot, bravo claims the same
/// position and makes its own current, and then alpha's lands and its
/// switch fails; a joiner still starts from the current snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_snapshots_of_one_position_leave_the_current_one_whole() {
    const EVERY: u64 = 10;
    let server = Server::start();
    let (to_alpha, to_bravo) = (
        Partition::start(server.port).await,
        Partition::start(server.port).await,
    );
    // No heartbeats meanwhile: the stream holds only what the test writes.
    let opts = options("same").nats(nats().lease(Duration::from_secs(600)).snapshot_every(EVERY));
    let a = join(&to_alpha.url(), "alpha", opts.clone()).await;
    a.node().set_root(json!({"n": 0})).unwrap();
    a.flush().await.unwrap();
    let b = join(&to_bravo.url(), "bravo", opts.clone()).await;
    to_bravo.freeze(true);
    // Alpha claims the message EVERY, its own last write, and is cut off
    // as it stores the snapshot's entry.
    to_alpha.freeze_at("PUB $O.FACSIMILE_same_SNAPSHOTS.M.");
    let mut frozen = to_alpha.frozen.subscribe();
    let mut i = 0;
    while stream_bounds(&server.url(), "same").await.1 < EVERY {
        i += 1;
        a.node().set_path("/n", i).unwrap();
        a.flush().await.unwrap();
    }
    assert_eq!(stream_bounds(&server.url(), "same").await.1, EVERY);
    tokio::time::timeout(PATIENCE, frozen.wait_for(|f| *f))
        .await
        .expect("alpha saves a snapshot")
        .unwrap();

    // Bravo claims the same message (the claim set back, as if alpha had
    // won it long before) and makes its snapshot of it current.
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let claims = js.get_key_value("FACSIMILE_same_CLAIMS").await.unwrap();
    claims.put("snapshot", "0".into()).await.unwrap();
    to_bravo.freeze(false);
    let deadline = Instant::now() + PATIENCE;
    while claims.get("current").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "bravo saves no snapshot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    converged(&[a.node(), b.node()]).await;

    // Alpha's snapshot lands, its switch fails, and it removes a snapshot.
    let mut entries = snapshot_entries(&js, "same").await;
    to_alpha.freeze(false);
    let removed = |info: &serde_json::Value| info["deleted"] == json!(true);
    let what = "alpha removes the snapshot it could not make current";
    entry_where(&mut entries, what, removed).await;

    let c = join(&server.url(), "charlie", opts).await;
    assert_eq!(c.rejoins(), 0);
    converged(&[a.node(), b.node(), c.node()]).await;
    assert_eq!(c.node().get("/n"), Some(Value::Int(i)));
}

/// The entries `doc`'s snapshot store records from now on (an object
/// stored, or removed), as JSON.
async fn snapshot_entries(
    js: &async_nats::jetstream::Context,
    doc: &str,
) -> std::pin::Pin<Box<dyn futures_util::Stream<Item = serde_json::Value> + Send>> {
    use futures_util::StreamExt;
    let store = js
        .get_stream(format!("OBJ_FACSIMILE_{doc}_SNAPSHOTS"))
        .await
        .unwrap();
    let messages = store
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: format!("$O.FACSIMILE_{doc}_SNAPSHOTS.M.>"),
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::New,
            ..Default::default()
        })
        .await
        .unwrap()
        .messages()
        .await
        .unwrap();
    Box::pin(messages.map(|entry| serde_json::from_slice(&entry.unwrap().payload).unwrap()))
}

/// Waits for the next of `entries` that `wanted` accepts.
async fn entry_where(
    entries: &mut std::pin::Pin<Box<dyn futures_util::Stream<Item = serde_json::Value> + Send>>,
    what: &str,
    mut wanted: impl FnMut(&serde_json::Value) -> bool,
) {
    use futures_util::StreamExt;
    let found = async {
        while let Some(info) = entries.next().await {
            if wanted(&info) {
                return;
            }
        }
        panic!("the snapshot store's entries ended");
    };
    tokio::time::timeout(PATIENCE, found).await.expect(what);
}

/// `close` reports a write the log refused, as `flush` does: one that
/// raced another node's lock grant while the node was cut off. (Leaving
/// first, the node read none of its frames back and closed with `Ok`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_reports_a_write_that_raced_a_lock_grant() {
    let (_server, partition, a, b) = alpha_behind_a_partition("close-race").await;
    partition.freeze(true);
    let root_b = b.node().root_map().unwrap();
    let guard = b.node().lock(&root_b).await.unwrap();
    a.node().root_map().unwrap().set("raced", 1).unwrap();
    let closing = tokio::spawn({
        let a = a.clone();
        async move { a.close(PATIENCE).await }
    });
    partition.freeze(false);
    let r = closing.await.unwrap();
    drop(guard);
    assert!(
        matches!(r, Err(net::NetError::WritesLost(1))),
        "close of a node whose write the log refused: {r:?}"
    );
    assert_eq!(b.node().get("/raced"), None, "the write is applied nowhere");
}

/// The same for a write under a lock made while cut off, once the node's
/// lease ran out: refused, and `close` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_reports_writes_refused_after_a_lapse() {
    let (_server, partition, a, b) = alpha_behind_a_partition("close-lapse").await;
    let alpha = a.node().peer_id();
    a_locked_write_cut_off(&a, &partition).await;
    let closing = tokio::spawn({
        let a = a.clone();
        async move { a.close(PATIENCE).await }
    });
    lapse(&partition, &b, &alpha).await;
    let r = closing.await.unwrap();
    assert!(
        matches!(r, Err(net::NetError::WritesLost(_))),
        "close of a node whose locked write the log refused: {r:?}"
    );
    assert_eq!(
        b.node().get("/held/x"),
        None,
        "the write is applied nowhere"
    );
}

/// A flush or a close awaited inside a listener is refused at once: of the
/// listening node's own connection, which hands its messages over under the
/// pump the listener holds, and of another node's, whose pump another
/// thread's listener may hold while it waits for this one's. Nothing is
/// done: outside the listener both connections flush. The scenario runs on
/// a thread of its own, so that a wait for ever fails the test instead of
/// hanging it.
#[test]
fn a_flush_or_close_inside_a_listener_is_refused() {
    use facsimile::net::NetError;

    let server = Server::start();
    let url = server.url();
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let a = join(&url, "alpha", options("in-listener")).await;
            a.node().set_root(json!({"k": 0})).unwrap();
            a.flush().await.unwrap();
            let b = join(&url, "bravo", options("in-listener")).await;
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let (a2, b2) = (a.clone(), b.clone());
            a.node()
                .on_change(move |_| {
                    let own = futures_executor::block_on(a2.flush());
                    let other = futures_executor::block_on(b2.flush());
                    let close = futures_executor::block_on(a2.clone().close(PATIENCE));
                    let _ = tx.send([own, other, close]);
                })
                .detach();
            // Written on a thread of its own, which runs the listener.
            let root = a.node().root_map().unwrap();
            let writer = std::thread::spawn(move || root.set("k", 1));
            let refused = rx.recv().await.expect("the listener returned");
            for r in refused {
                assert!(matches!(r, Err(NetError::InListener)), "{r:?}");
            }
            writer.join().unwrap().unwrap();
            a.flush().await.unwrap();
            b.flush().await.unwrap();
            converged(&[a.node(), b.node()]).await;
        });
        let _ = done.send(());
    });
    outcome
        .recv_timeout(Duration::from_secs(60))
        .expect("a flush in a listener: the scenario panicked (above) or hung for 60 s");
}

/// Messages the stream lost (an operator's purge) that no snapshot covers
/// cannot be read by a joiner: it fails at once with its own error,
/// without publishing anything, rather than starting over and over, each
/// time with a hello and a goodbye, until its sync timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_refuses_a_stream_missing_messages_no_snapshot_covers() {
    let server = Server::start();
    let options = || options("gap").nats(nats().snapshot_every(1_000_000));
    let a = join(&server.url(), "alpha", options()).await;
    a.node().set_root(json!({"k": 1})).unwrap();
    a.flush().await.unwrap();
    a.close(Duration::from_secs(10)).await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    // Alpha's hello goes.
    js.get_stream("FACSIMILE_gap")
        .await
        .unwrap()
        .purge()
        .sequence(2)
        .await
        .unwrap();
    let before = stream_bounds(&server.url(), "gap").await;
    let joined = net::connect(
        &server.url(),
        "bravo",
        options().timeouts(Duration::from_secs(2), Duration::from_secs(3)),
    )
    .await;
    let after = stream_bounds(&server.url(), "gap").await;
    match joined {
        Err(net::NetError::LogGap { stream, .. }) => assert_eq!(stream, "FACSIMILE_gap"),
        other => panic!("the gap was not reported: {other:?}"),
    }
    assert_eq!(
        after,
        before,
        "bravo published {} messages",
        after.1 - before.1
    );
}

/// A message removed from the middle of the stream (an operator's `rmm`)
/// that no snapshot covers cannot be read by a joiner either: it fails
/// with the gap once it reads up to it, rather than starting over and
/// over until its sync timeout. (Its hello went out before.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_refuses_a_stream_missing_a_message_midway() {
    let server = Server::start();
    let options = || options("mid").nats(nats().snapshot_every(1_000_000));
    let a = join(&server.url(), "alpha", options()).await;
    a.node().set_root(json!({"a": 1})).unwrap();
    a.flush().await.unwrap();
    a.node().set_path("/b", 2).unwrap();
    a.flush().await.unwrap();
    // Alpha's write of /b goes, its goodbye after it stays.
    let (_, written) = stream_bounds(&server.url(), "mid").await;
    a.close(Duration::from_secs(10)).await.unwrap();
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    js.get_stream("FACSIMILE_mid")
        .await
        .unwrap()
        .delete_message(written)
        .await
        .unwrap();
    let joined = net::connect(
        &server.url(),
        "bravo",
        options().timeouts(Duration::from_secs(2), Duration::from_secs(3)),
    )
    .await;
    match joined {
        Err(net::NetError::LogGap { stream, from, to }) => {
            assert_eq!(
                (stream.as_str(), from, to),
                ("FACSIMILE_mid", written, written)
            )
        }
        other => panic!("the gap was not reported: {other:?}"),
    }
}

/// Alpha and bravo, bravo behind a partition, once bravo, which read
/// none of them, has read up to messages removed from the middle of the
/// stream (an operator's `rmm`) that no snapshot covers, and says so: its
/// status is `Degraded` with the gap. Returns the message removed.
async fn a_node_behind_a_gap(
    doc: &str,
    every: u64,
) -> (Server, Partition, net::Connection, net::Connection, u64) {
    let server = Server::start();
    let partition = Partition::start(server.port).await;
    let options = || options(doc).nats(nats().lease(Duration::from_secs(3)).snapshot_every(every));
    let a = join(&server.url(), "alpha", options()).await;
    a.node().set_root(json!({"k": 0})).unwrap();
    a.flush().await.unwrap();
    let b = join(&partition.url(), "bravo", options()).await;
    converged(&[a.node(), b.node()]).await;
    // Bravo's client gives its connection up, with what the server had
    // sent on it: it reads none of what follows before it reconnects.
    partition.freeze(true);
    let mut status = b.status();
    status
        .wait_for(|s| matches!(s, net::Status::Disconnected(_)))
        .await
        .unwrap();
    let mut written = Vec::new();
    for k in 1..=3i64 {
        a.node().set_path("/k", k).unwrap();
        a.flush().await.unwrap();
        written.push(stream_bounds(&server.url(), doc).await.1);
    }
    assert!(
        written[2] < every,
        "a snapshot may cover the gap: {written:?}"
    );
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.get_stream(format!("FACSIMILE_{doc}"))
        .await
        .unwrap()
        .delete_message(written[1])
        .await
        .unwrap();
    partition.freeze(false);
    let degraded = tokio::time::timeout(
        PATIENCE,
        status.wait_for(|s| matches!(s, net::Status::Degraded(r) if r.contains("lacks"))),
    )
    .await
    .is_ok_and(|r| r.is_ok());
    assert!(degraded, "bravo's status: {:?}", *b.status().borrow());
    (server, partition, a, b, written[1])
}

/// A running node that meets a gap no snapshot covers says so by its
/// status rather than stay `Connected` while it cannot read on; once it
/// starts over past the gap it is `Connected` again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_node_that_meets_a_gap_says_so() {
    let (_server, _partition, a, b, _) = a_node_behind_a_gap("gapped", 20).await;
    // Alpha writes on until bravo starts over past the gap.
    let mut k = 3;
    while !matches!(*b.status().borrow(), net::Status::Connected) {
        assert!(
            k < 5000,
            "bravo never recovered: {:?}",
            *b.status().borrow()
        );
        k += 1;
        a.node().set_path("/k", k).unwrap();
        a.flush().await.unwrap();
    }
    converged(&[a.node(), b.node()]).await;
    assert_eq!(b.rejoins(), 1);
    b.node().set_path("/j", 1).unwrap();
    b.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;
}

/// The position of the document's current snapshot, as its key names it.
async fn current_snapshot(js: &async_nats::jetstream::Context, doc: &str) -> Option<u64> {
    let claims = js
        .get_key_value(format!("FACSIMILE_{doc}_CLAIMS"))
        .await
        .unwrap();
    let name = claims.get("current").await.unwrap()?;
    let name = std::str::from_utf8(&name).unwrap();
    name.split('-').nth(1).and_then(|p| p.parse().ok())
}

/// A node that cannot read past a gap starts over once a snapshot covers
/// it: it no longer reads beside its new incarnation up to the gap and
/// fails there, again and again, until the stream was purged past where
/// it had read, ten snapshots on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_a_gap_starts_over_once_a_snapshot_covers_it() {
    let (server, _partition, a, b, removed) = a_node_behind_a_gap("covered", 20).await;
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let mut k = 3;
    while current_snapshot(&js, "covered")
        .await
        .is_none_or(|p| p >> 16 <= removed)
    {
        assert!(k < 1000, "alpha saves no snapshot");
        k += 1;
        a.node().set_path("/k", k).unwrap();
        a.flush().await.unwrap();
    }
    until("bravo to start over past the gap", || {
        matches!(*b.status().borrow(), net::Status::Connected)
    })
    .await;
    converged(&[a.node(), b.node()]).await;
    assert_eq!(b.rejoins(), 1);
    b.node().set_path("/j", 1).unwrap();
    b.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;
}

/// A message whose id another publisher forged to carry a node's own
/// prefix (its hostname and incarnation, which the stream shows) with
/// indices the node never sent is not taken for the node's own: the node
/// reads on, and its flushes still wait for its own messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_own_message_id_is_ignored() {
    let server = Server::start();
    let a = join(&server.url(), "alpha", options("forged")).await;
    a.node().set_root(json!({})).unwrap();
    a.flush().await.unwrap();
    let b = join(&server.url(), "bravo", options("forged")).await;
    let prefix = format!("alpha.{:08x}", a.node().peer_id().incarnation());
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    for id in [
        format!("{prefix}.{}", u64::MAX),
        format!("{prefix}.{}", u64::MAX - 1),
        format!("{prefix}.{}-{}", u64::MAX - 1, u64::MAX),
    ] {
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload(vec![0xff].into())
            .message_id(id);
        js.send_publish("facsimile.forged", message)
            .await
            .unwrap()
            .await
            .unwrap();
    }
    b.node().set_path("/k", 1).unwrap();
    b.flush().await.unwrap();
    until("alpha to read past the forged messages", || {
        a.node().get("/k") == Some(Value::Int(1))
    })
    .await;
    a.node().set_path("/j", 2).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;
}

/// A message published under the id of a frame a node queued and has not
/// had stored yet is not taken for the node's own, and the node's own
/// message, which the stream drops as a copy of it, is not acknowledged:
/// the write is reported lost, and the node starts over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_id_taken_before_the_node_published_it_loses_the_write() {
    let (server, partition, a, b) = alpha_behind_a_partition("taken").await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream("FACSIMILE_taken").await.unwrap();
    let last = stream
        .get_last_raw_message_by_subject("facsimile.taken")
        .await
        .unwrap();
    let id = last
        .headers
        .get(async_nats::header::NATS_MESSAGE_ID)
        .unwrap()
        .to_string();
    assert!(id.starts_with("alpha."), "{id}");
    let (prefix, frames) = id.rsplit_once('.').unwrap();
    let next = frames.rsplit('-').next().unwrap().parse::<u64>().unwrap() + 1;
    // Alpha's write waits behind the partition; its id is taken first.
    partition.freeze(true);
    a.node().set_path("/w", 1).unwrap();
    let message = async_nats::jetstream::message::PublishMessage::build()
        .payload(vec![0xff].into())
        .message_id(format!("{prefix}.{next}"));
    js.send_publish("facsimile.taken", message)
        .await
        .unwrap()
        .await
        .unwrap();
    partition.freeze(false);
    match tokio::time::timeout(PATIENCE, a.flush()).await {
        Ok(Err(net::NetError::WritesLost(1))) => {}
        other => panic!("a write no one has was acknowledged: {other:?}"),
    }
    // Its frames after the lost one wait behind it: it starts over.
    until("alpha to start over", || a.rejoins() == 1).await;
    a.node().set_path("/after", 1).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;
    assert_eq!(b.node().get("/w"), None);
}

/// `abort` drops the connection as a crash would: frames still queued
/// then are never published, even while the node is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aborted_connection_publishes_nothing_it_had_queued() {
    let (_server, partition, a, b) = alpha_behind_a_partition("aborted").await;
    let node = a.node().clone();
    let root = node.root_map().unwrap();
    // The first write's publish waits for the partition; the others queue
    // behind it.
    partition.freeze(true);
    const WRITES: usize = 3000;
    for k in 0..WRITES {
        root.set(&format!("k{k}"), k as i64).unwrap();
    }
    a.abort();
    partition.freeze(false);
    let alpha = node.peer_id();
    until("alpha's lease to run out", || {
        !b.node().peers().contains(&alpha)
    })
    .await;
    let last = format!("/k{}", WRITES - 1);
    assert_eq!(
        b.node().get(&last),
        None,
        "alpha published its queue after abort"
    );
    drop(node);
}
