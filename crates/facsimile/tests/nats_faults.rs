//! Faults injected into the NATS transport (the `failpoints` feature). A
//! fail point is set for the whole process: each test holds
//! `fail::FailScenario`, which runs them one at a time.
#![cfg(all(feature = "nats", feature = "failpoints"))]

mod nats_support;

use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use facsimile::net::{self, Connection, NatsOptions};
use facsimile::{LockGuard, MapRef};
use serde_json::json;

use nats_support::*;

/// What the transport logs, kept for the tests to read.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl io::Write for Log {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// How many times the transport said it was held at the fail point
    /// `name`.
    fn held(&self, name: &str) -> usize {
        self.text()
            .lines()
            .filter(|l| l.contains("held at a fail point") && l.contains(name))
            .count()
    }
}

/// The log of the whole process, its subscriber set by the first caller.
fn log() -> &'static Log {
    static LOG: OnceLock<Log> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Log::default();
        let writer = log.clone();
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        log
    })
}

/// NATS settings with a lease longer than any test: a membership ends by
/// a goodbye or a start-over, never by a lapse.
fn long_lease() -> NatsOptions {
    NatsOptions::new().lease(Duration::from_secs(600))
}

/// The map at `path` in `c`'s document.
fn map(c: &Connection, path: &str) -> MapRef {
    c.node().get(path).unwrap().as_map().unwrap().clone()
}

/// Alpha, cut off, writes to `/m` while bravo locks it: the log refuses
/// the write, ordered after a grant alpha had not read, and alpha starts
/// over. Returns bravo's guard.
async fn race_a_grant(partition: &Partition, a: &Connection, b: &Connection) -> LockGuard {
    partition.freeze(true);
    let guard = b.node().lock(map(b, "/m")).await.unwrap();
    map(a, "/m").set("raced", 1).unwrap();
    partition.freeze(false);
    guard
}

/// How many incarnations of alpha `b` counts as members.
fn alphas(b: &Connection) -> usize {
    let peers = b.node().peers();
    peers.iter().filter(|p| p.hostname() == "alpha").count()
}

/// Waits until `b` reads the hello of alpha's new incarnation, beside the
/// old one.
async fn new_incarnation_said_hello(b: &Connection) {
    until("bravo to read alpha's new incarnation's hello", || {
        alphas(b) == 2
    })
    .await;
}

/// Waits until `b` counts no incarnation of alpha a member.
async fn every_alpha_gone(b: &Connection) {
    until("bravo to count every alpha gone", || alphas(b) == 0).await;
}

/// A start-over whose new incarnation fails after its hello is tried again
/// with another one. The one given up says goodbye: otherwise it stays a
/// member until its lease runs out, and every round of reclamation waits
/// for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_over_given_up_after_its_hello_leaves_no_member_behind() {
    let log = log();
    let _scenario = fail::FailScenario::setup();
    // A lease longer than the test: only a goodbye ends a membership.
    let (_server, partition, a, b) =
        alpha_behind_a_partition_with(|| options("orphan").nats(long_lease()), json!({"m": {}}))
            .await;

    fail::cfg("nats-reload-after-hello", "1*return").unwrap();
    // Alpha writes to a map bravo locked before alpha read the grant: the
    // log refuses the write, and alpha starts over.
    let _guard = race_a_grant(&partition, &a, &b).await;
    match a.flush().await {
        Err(net::NetError::WritesLost(1)) => {}
        other => panic!("the refused write was acknowledged: {other:?}"),
    }
    // Written after the new incarnation's hello, which came after the
    // goodbye of the one given up.
    a.node().root_map().unwrap().set("after", 1).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;

    let logged = log.text();
    assert!(
        logged.contains("a fault injected after the hello"),
        "the fault was injected: {logged}"
    );
    let alphas: Vec<_> = b
        .node()
        .peers()
        .into_iter()
        .filter(|p| p.hostname() == "alpha")
        .collect();
    assert_eq!(
        alphas,
        [a.node().peer_id()],
        "bravo counts alpha's current incarnation alone"
    );
}

/// A node that starts over after a refused write judges every write its
/// old incarnation made while the new one joined the log: none is
/// acknowledged that the log refused, and none that stands disappears
/// from the node's reads when the new incarnation takes its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_made_while_a_node_starts_over_are_judged_before_it_takes_their_word() {
    let _ = log();
    let _scenario = fail::FailScenario::setup();
    // A lease longer than the test: the start-over is for a refused write.
    let (_server, partition, a, b) = alpha_behind_a_partition_with(
        || options("judged").nats(long_lease()),
        json!({"m": {}, "n": {}}),
    )
    .await;

    // The new incarnation stops after its hello until the test lets it go.
    fail::cfg("nats-reload-after-hello", "return(hold)").unwrap();
    let _m_guard = race_a_grant(&partition, &a, &b).await;
    new_incarnation_said_hello(&b).await;

    // Granted after that hello, which alpha's old incarnation does not
    // read: a write of it to /n lands after the grant.
    let n = map(&b, "/n");
    let _n_guard = b.node().lock(&n).await.unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let heard = seen.clone();
    let root = a.node().root_map().unwrap();
    let _sub = root.on_key("w", move |ev| {
        heard
            .lock()
            .unwrap()
            .push(ev.new_value().and_then(|v| v.as_i64()));
    });
    let n = map(&a, "/n");
    let raced = n.set("x", 1);
    let stands = root.set("w", 1);
    fail::remove("nats-reload-after-hello");

    // Each write taken is judged: the one to /n is refused by the log, and
    // a flush says so.
    let lost = 1 + u64::from(raced.is_ok());
    match a.flush().await {
        Err(net::NetError::WritesLost(n)) if n == lost => {}
        other => panic!("expected {lost} writes lost (/n/x taken: {raced:?}), got {other:?}"),
    }
    a.flush().await.unwrap();
    assert_eq!(a.rejoins(), 1);
    converged(&[a.node(), b.node()]).await;
    assert_eq!(
        b.node().get("/n/x"),
        None,
        "the log refused the write to /n"
    );
    // A write taken is shown from then on.
    let seen = seen.lock().unwrap().clone();
    match stands {
        Ok(_) => {
            assert_eq!(seen, [Some(1)], "alpha showed /w as {seen:?}");
            assert_eq!(b.node().get("/w").and_then(|v| v.as_i64()), Some(1));
        }
        Err(_) => assert!(seen.is_empty(), "a refused write was shown: {seen:?}"),
    }
}

/// Waits until the document `doc` has a current snapshot.
async fn snapshot_saved(url: &str, doc: &str) {
    let js = async_nats::jetstream::new(async_nats::connect(url).await.unwrap());
    let claims = js
        .get_key_value(format!("FACSIMILE_{doc}_CLAIMS"))
        .await
        .unwrap();
    let deadline = Instant::now() + PATIENCE;
    while claims.entry("current").await.unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for a snapshot"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A joiner never takes the incarnation tag of a peer its snapshot knows
/// (the engine tells a peer's messages by that tag alone): it draws
/// another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_joiner_draws_no_tag_its_snapshot_knows() {
    let _ = log();
    let _scenario = fail::FailScenario::setup();
    let server = Server::start();
    let options = || options("tags").nats(nats().snapshot_every(1));
    let a = join(&server.url(), "alpha", options()).await;
    a.node().set_root(json!({"k": 1})).unwrap();
    a.flush().await.unwrap();
    snapshot_saved(&server.url(), "tags").await;
    let taken = a.node().peer_id().incarnation();
    fail::cfg("node-draw-tag", &format!("1*return({taken})")).unwrap();
    let b = net::connect(&server.url(), "bravo", options())
        .await
        .expect("bravo joins");
    assert_ne!(b.node().peer_id().incarnation(), taken);
    converged(&[a.node(), b.node()]).await;
}

/// A node that starts over never takes the incarnation tag of a peer it
/// knows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_incarnation_draws_no_tag_the_document_knows() {
    let _ = log();
    let _scenario = fail::FailScenario::setup();
    let (_server, partition, a, b) =
        alpha_behind_a_partition_with(|| options("retag").nats(long_lease()), json!({"m": {}}))
            .await;

    let taken = b.node().peer_id().incarnation();
    fail::cfg("node-draw-tag", &format!("1*return({taken})")).unwrap();
    // A write that raced bravo's grant: alpha starts over.
    let guard = race_a_grant(&partition, &a, &b).await;
    match tokio::time::timeout(PATIENCE, a.flush()).await {
        Ok(Err(net::NetError::WritesLost(1))) => {}
        other => panic!("the refused write was not reported alone: {other:?}"),
    }
    assert_eq!(a.rejoins(), 1);
    assert_ne!(a.node().peer_id().incarnation(), taken);
    drop(guard);
    a.node().root_map().unwrap().set("after", 1).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;
    assert_eq!(b.node().peers(), [a.node().peer_id()]);
}

/// Reading the log does not wait for the snapshot claim: a claims bucket
/// that does not answer (its server is gone, the stream's lives) holds up
/// no change, no lock grant and no flush.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_hangs_holds_up_no_reading() {
    let _ = log();
    let _scenario = fail::FailScenario::setup();
    let server = Server::start();
    let options = || options("claim").nats(nats().snapshot_every(1));
    let a = join(&server.url(), "alpha", options()).await;
    a.node().set_root(json!({})).unwrap();
    a.flush().await.unwrap();
    let b = join(&server.url(), "bravo", options()).await;
    // Every claim from here on waits until the test lets it go.
    fail::cfg("nats-claim", "return(hold)").unwrap();
    for k in 0..3 {
        b.node().set_path(&format!("/k{k}"), k).unwrap();
        b.flush().await.unwrap();
        until("alpha to read bravo's write", || {
            a.node().get(&format!("/k{k}")) == Some(facsimile::Value::Int(k))
        })
        .await;
    }
    fail::remove("nats-claim");
    converged(&[a.node(), b.node()]).await;
}

/// A node that leaves while it starts over is not started over: the new
/// incarnation it was bringing up leaves too, and the node stays as it
/// left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_while_it_starts_over_stays_gone() {
    let _ = log();
    let _scenario = fail::FailScenario::setup();
    let (_server, partition, a, b) =
        alpha_behind_a_partition_with(|| options("left").nats(long_lease()), json!({"m": {}}))
            .await;

    fail::cfg("nats-reload-after-hello", "return(hold)").unwrap();
    let _guard = race_a_grant(&partition, &a, &b).await;
    new_incarnation_said_hello(&b).await;
    a.node().leave();
    fail::remove("nats-reload-after-hello");
    every_alpha_gone(&b).await;
    assert_eq!(a.rejoins(), 0);
    let refused = a.node().root_map().unwrap().set("k", 1).unwrap_err();
    assert!(
        matches!(refused.engine(), Some(facsimile::EngineError::Left)),
        "{refused:?}"
    );
}

/// A write the log refused is reported lost also when the node's lease
/// runs out while it starts over for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_write_is_lost_though_the_lease_lapses_while_starting_over() {
    let _ = log();
    let _scenario = fail::FailScenario::setup();
    let (_server, partition, a, b) =
        alpha_behind_a_partition_with(|| options("lapsed"), json!({"m": {}})).await;

    fail::cfg("nats-reload-after-hello", "return(hold)").unwrap();
    let _guard = race_a_grant(&partition, &a, &b).await;
    new_incarnation_said_hello(&b).await;
    // Both alphas' leases run out while the new one waits after its hello.
    partition.freeze(true);
    every_alpha_gone(&b).await;
    partition.freeze(false);
    fail::remove("nats-reload-after-hello");
    match tokio::time::timeout(PATIENCE, a.flush()).await {
        Ok(Err(net::NetError::WritesLost(1))) => {}
        other => panic!("the refused write was not reported lost: {other:?}"),
    }
    a.node().root_map().unwrap().set("after", 1).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;
    assert_eq!(b.node().get("/m/raced"), None);
}

/// A node that left and fell behind the stream's purge does not start
/// over: it reads on from where the stream starts, and what the log
/// refused of its writes is reported once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_left_and_fell_behind_the_purge_reads_on() {
    let _ = log();
    let _scenario = fail::FailScenario::setup();
    let options = || options("behind").nats(long_lease().snapshot_every(2));
    let (server, partition, a, b) = alpha_behind_a_partition_with(options, json!({"m": {}})).await;

    fail::cfg("nats-reload-after-hello", "return(hold)").unwrap();
    let guard = race_a_grant(&partition, &a, &b).await;
    new_incarnation_said_hello(&b).await;
    drop(guard);
    // Bravo saves snapshots and purges the stream past where alpha read.
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let mut stream = js.get_stream("FACSIMILE_behind").await.unwrap();
    let held = stream.info().await.unwrap().state.last_sequence;
    let mut k = 0;
    while stream.info().await.unwrap().state.first_sequence <= held + 1 {
        b.node().set_path("/k", k).unwrap();
        b.flush().await.unwrap();
        k += 1;
        assert!(k < 1000, "the stream was never purged");
    }
    a.node().leave();
    fail::remove("nats-reload-after-hello");
    match tokio::time::timeout(PATIENCE, a.flush()).await {
        Ok(Err(net::NetError::WritesLost(1))) => {}
        other => panic!("the refused write was not reported once: {other:?}"),
    }
    every_alpha_gone(&b).await;
    b.node().set_path("/k", k).unwrap();
    b.flush().await.unwrap();
    match tokio::time::timeout(PATIENCE, a.flush()).await {
        Ok(Ok(())) => {}
        other => panic!("a later flush: {other:?}"),
    }
    assert_eq!(a.rejoins(), 0);
}

/// A node hands over to its new incarnation once it has read back what it
/// sent before the hello: a frame of its queued later (a lock release, a
/// heartbeat), which carries no write, does not hold up the hand-over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_queued_after_the_hello_do_not_hold_up_the_hand_over() {
    let _ = log();
    let _scenario = fail::FailScenario::setup();
    let (_server, partition, a, b) = alpha_behind_a_partition_with(
        || options("chase").nats(long_lease()),
        json!({"m": {}, "n": {}}),
    )
    .await;
    let n = map(&a, "/n");
    let n_guard = a.node().lock(&n).await.unwrap();

    fail::cfg("nats-reload-after-hello", "return(hold)").unwrap();
    let _m_guard = race_a_grant(&partition, &a, &b).await;
    new_incarnation_said_hello(&b).await;
    // The old incarnation queues a release after the hello, which is not
    // published until the new incarnation has taken its place.
    fail::cfg("nats-publish", "return(hold)").unwrap();
    drop(n_guard);
    fail::remove("nats-reload-after-hello");
    until("alpha to start over", || a.rejoins() == 1).await;
    fail::remove("nats-publish");
    match a.flush().await {
        Err(net::NetError::WritesLost(1)) => {}
        other => panic!("the refused write was not reported lost: {other:?}"),
    }
    a.node().root_map().unwrap().set("after", 1).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;
}

/// A write published again after the new incarnation's hello (its first
/// publish failed while the hello was stored) is judged by the old
/// incarnation before the new one takes its place: the log refused it,
/// and a flush says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_published_again_after_the_hello_is_judged() {
    let log = log();
    let _scenario = fail::FailScenario::setup();
    let (_server, partition, a, b) = alpha_behind_a_partition_with(
        || options("again").nats(long_lease()),
        json!({"m": {}, "n": {}}),
    )
    .await;
    let before = log.held("nats-reload-before-hello");
    let after = log.held("nats-reload-after-hello");

    // Alpha starts over for a write that raced a grant, and stops before
    // its new incarnation's hello.
    fail::cfg("nats-reload-before-hello", "return(hold)").unwrap();
    let _m_guard = race_a_grant(&partition, &a, &b).await;
    until("alpha to stop before its hello", || {
        log.held("nats-reload-before-hello") > before
    })
    .await;
    // Granted after what alpha read: alpha's write to /n is refused.
    let n = map(&b, "/n");
    let _n_guard = b.node().lock(&n).await.unwrap();
    fail::cfg("nats-publish", "return(hold)").unwrap();
    let n = map(&a, "/n");
    // Larger than a pack: a message of its own.
    n.set("x", "x".repeat(70 << 10)).unwrap();
    fail::cfg("nats-reload-after-hello", "return(hold)").unwrap();
    fail::remove("nats-reload-before-hello");
    until("alpha to say hello", || {
        log.held("nats-reload-after-hello") > after
    })
    .await;
    // The write's message fails, the hello's after it is stored, and the
    // write is published again after the hello.
    fail::cfg("nats-publish-lost", "1*return").unwrap();
    fail::remove("nats-publish");
    fail::remove("nats-reload-after-hello");
    match a.flush().await {
        Err(net::NetError::WritesLost(2)) => {}
        other => panic!("expected both refused writes lost, got {other:?}"),
    }
    assert_eq!(a.rejoins(), 1);
    converged(&[a.node(), b.node()]).await;
    assert_eq!(b.node().get("/n/x"), None);
}

/// A node that leaves while its new incarnation catches up, before the
/// hello, says no hello from it: the start-over ends there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_before_its_new_incarnations_hello_says_none() {
    let log = log();
    let _scenario = fail::FailScenario::setup();
    let (_server, partition, a, b) =
        alpha_behind_a_partition_with(|| options("nohello").nats(long_lease()), json!({"m": {}}))
            .await;
    let before = log.held("nats-reload-before-hello");
    let after = log.held("nats-reload-after-hello");

    fail::cfg("nats-reload-before-hello", "return(hold)").unwrap();
    let _guard = race_a_grant(&partition, &a, &b).await;
    until("alpha to stop before its hello", || {
        log.held("nats-reload-before-hello") > before
    })
    .await;
    // A hello would stop here, and the start-over with it.
    fail::cfg("nats-reload-after-hello", "return(hold)").unwrap();
    a.node().leave();
    fail::remove("nats-reload-before-hello");
    match tokio::time::timeout(PATIENCE, a.flush()).await {
        Ok(Err(net::NetError::WritesLost(1))) => {}
        other => panic!("the start-over did not end at the leave: {other:?}"),
    }
    assert_eq!(
        log.held("nats-reload-after-hello"),
        after,
        "a hello went out"
    );
    fail::remove("nats-reload-after-hello");
    every_alpha_gone(&b).await;
    assert_eq!(a.rejoins(), 0);
}

/// A claim won once the stream has gone quiet saves its snapshot then,
/// not at the next message read: none may come for a long while (here,
/// with no heartbeats, none at all).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_won_on_a_quiet_stream_saves_its_snapshot() {
    const EVERY: u64 = 4;
    let log = log();
    let _scenario = fail::FailScenario::setup();
    let server = Server::start();
    let options = options("quiet").nats(long_lease().snapshot_every(EVERY));
    let a = join(&server.url(), "alpha", options).await;
    a.node().set_root(json!({"n": 0})).unwrap();
    a.flush().await.unwrap();
    // Alpha claims once the stream holds EVERY messages; the claim waits
    // until the writes are over and read.
    let before = log.held("nats-claim");
    fail::cfg("nats-claim", "return(hold)").unwrap();
    let mut n = 0;
    while log.held("nats-claim") == before {
        assert!(n < 100, "alpha never claimed");
        n += 1;
        a.node().set_path("/n", n).unwrap();
        a.flush().await.unwrap();
    }
    fail::remove("nats-claim");
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let claims = js.get_key_value("FACSIMILE_quiet_CLAIMS").await.unwrap();
    let deadline = Instant::now() + PATIENCE;
    while claims.get("current").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "alpha saves no snapshot");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A fault of the engine itself, applying what the node read from the
/// stream, stops the connection for good: its status says `Failed`, and a
/// flush fails rather than wait for ever for a reader that is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_panic_while_reading_fails_the_connection() {
    let _scenario = fail::FailScenario::setup();
    let server = Server::start();
    let a = join(&server.url(), "alpha", options("faulty")).await;
    a.node().set_root(json!({})).unwrap();
    a.flush().await.unwrap();
    let mut status = a.status();
    fail::cfg("node-apply-ordered", "1*panic(an engine fault)").unwrap();
    a.node().set_path("/k", 1).unwrap();
    let flushed = tokio::time::timeout(PATIENCE, a.flush()).await;
    fail::remove("node-apply-ordered");
    assert!(matches!(flushed, Ok(Err(_))), "the flush: {flushed:?}");
    let failed = tokio::time::timeout(
        PATIENCE,
        status.wait_for(|s| matches!(s, net::Status::Failed(_))),
    )
    .await
    .is_ok_and(|s| s.is_ok());
    assert!(failed, "status {:?}", *status.borrow());
}
