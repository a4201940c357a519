//! Faults injected into the NATS transport (the `failpoints` feature). A
//! fail point is set for the whole process: each test holds
//! `fail::FailScenario`, which runs them one at a time.
#![cfg(all(feature = "nats", feature = "failpoints"))]

mod nats_support;

use std::io;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use facsimile::net::{self, NatsOptions};
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

/// A start-over whose new incarnation fails after its hello is tried again
/// with another one. The one given up says goodbye: otherwise it stays a
/// member until its lease runs out, and every round of reclamation waits
/// for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_over_given_up_after_its_hello_leaves_no_member_behind() {
    let log = log();
    let _scenario = fail::FailScenario::setup();
    let server = Server::start();
    let partition = Partition::start(server.port).await;
    // A lease longer than the test: only a goodbye ends a membership.
    let options = || options("orphan").nats(NatsOptions::new().lease(Duration::from_secs(600)));
    let a = join(&partition.url(), "alpha", options()).await;
    let b = join(&server.url(), "bravo", options()).await;
    a.node().set_root(json!({"m": {}})).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;

    fail::cfg("nats-reload-after-hello", "1*return").unwrap();
    // Alpha writes to a map bravo locked before alpha read the grant: the
    // log refuses the write, and alpha starts over.
    partition.freeze(true);
    let m = b.node().get("/m").unwrap().as_map().unwrap().clone();
    let _guard = b.node().lock(&m).await.unwrap();
    let m = a.node().get("/m").unwrap().as_map().unwrap().clone();
    m.set("raced", 1).unwrap();
    partition.freeze(false);
    match a.flush().await {
        Err(net::NetError::WritesLost(1)) => {}
        other => panic!("the refused write was acknowledged: {other:?}"),
    }
    // Written after the new incarnation's hello, which came after the
    // goodbye of the one given up.
    a.node().root_map().unwrap().set("after", 1).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;

    let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
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
    let server = Server::start();
    let partition = Partition::start(server.port).await;
    // A lease longer than the test: the start-over is for a refused write.
    let options = || options("judged").nats(NatsOptions::new().lease(Duration::from_secs(600)));
    let a = join(&partition.url(), "alpha", options()).await;
    let b = join(&server.url(), "bravo", options()).await;
    a.node().set_root(json!({"m": {}, "n": {}})).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;

    // The new incarnation stops after its hello until the test lets it go.
    fail::cfg("nats-reload-after-hello", "return(hold)").unwrap();
    partition.freeze(true);
    let m = b.node().get("/m").unwrap().as_map().unwrap().clone();
    let _m_guard = b.node().lock(&m).await.unwrap();
    let m = a.node().get("/m").unwrap().as_map().unwrap().clone();
    m.set("raced", 1).unwrap();
    partition.freeze(false);
    until("bravo to read alpha's new incarnation's hello", || {
        let alphas = b.node().peers();
        alphas.iter().filter(|p| p.hostname() == "alpha").count() == 2
    })
    .await;

    // Granted after that hello, which alpha's old incarnation does not
    // read: a write of it to /n lands after the grant.
    let n = b.node().get("/n").unwrap().as_map().unwrap().clone();
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
    let n = a.node().get("/n").unwrap().as_map().unwrap().clone();
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
    let server = Server::start();
    let partition = Partition::start(server.port).await;
    let options = || options("retag").nats(NatsOptions::new().lease(Duration::from_secs(600)));
    let a = join(&partition.url(), "alpha", options()).await;
    let b = join(&server.url(), "bravo", options()).await;
    a.node().set_root(json!({"m": {}})).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;

    let taken = b.node().peer_id().incarnation();
    fail::cfg("node-draw-tag", &format!("1*return({taken})")).unwrap();
    // A write that raced bravo's grant: alpha starts over.
    partition.freeze(true);
    let m = b.node().get("/m").unwrap().as_map().unwrap().clone();
    let guard = b.node().lock(&m).await.unwrap();
    let m = a.node().get("/m").unwrap().as_map().unwrap().clone();
    m.set("raced", 1).unwrap();
    partition.freeze(false);
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
    let server = Server::start();
    let partition = Partition::start(server.port).await;
    let options = || options("left").nats(NatsOptions::new().lease(Duration::from_secs(600)));
    let a = join(&partition.url(), "alpha", options()).await;
    let b = join(&server.url(), "bravo", options()).await;
    a.node().set_root(json!({"m": {}})).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;

    fail::cfg("nats-reload-after-hello", "return(hold)").unwrap();
    partition.freeze(true);
    let m = b.node().get("/m").unwrap().as_map().unwrap().clone();
    let _guard = b.node().lock(&m).await.unwrap();
    let m = a.node().get("/m").unwrap().as_map().unwrap().clone();
    m.set("raced", 1).unwrap();
    partition.freeze(false);
    until("bravo to read alpha's new incarnation's hello", || {
        let peers = b.node().peers();
        peers.iter().filter(|p| p.hostname() == "alpha").count() == 2
    })
    .await;
    a.node().leave();
    fail::remove("nats-reload-after-hello");
    until("bravo to count every alpha gone", || {
        b.node().peers().iter().all(|p| p.hostname() != "alpha")
    })
    .await;
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
    let server = Server::start();
    let partition = Partition::start(server.port).await;
    let a = join(&partition.url(), "alpha", options("lapsed")).await;
    let b = join(&server.url(), "bravo", options("lapsed")).await;
    a.node().set_root(json!({"m": {}})).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;

    fail::cfg("nats-reload-after-hello", "return(hold)").unwrap();
    partition.freeze(true);
    let m = b.node().get("/m").unwrap().as_map().unwrap().clone();
    let _guard = b.node().lock(&m).await.unwrap();
    let m = a.node().get("/m").unwrap().as_map().unwrap().clone();
    m.set("raced", 1).unwrap();
    partition.freeze(false);
    until("bravo to read alpha's new incarnation's hello", || {
        let alphas = b.node().peers();
        alphas.iter().filter(|p| p.hostname() == "alpha").count() == 2
    })
    .await;
    // Both alphas' leases run out while the new one waits after its hello.
    partition.freeze(true);
    until("bravo to count every alpha gone", || {
        b.node().peers().iter().all(|p| p.hostname() != "alpha")
    })
    .await;
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
    let server = Server::start();
    let partition = Partition::start(server.port).await;
    let options = || {
        options("behind").nats(
            NatsOptions::new()
                .lease(Duration::from_secs(600))
                .snapshot_every(2),
        )
    };
    let a = join(&partition.url(), "alpha", options()).await;
    let b = join(&server.url(), "bravo", options()).await;
    a.node().set_root(json!({"m": {}})).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;

    fail::cfg("nats-reload-after-hello", "return(hold)").unwrap();
    partition.freeze(true);
    let m = b.node().get("/m").unwrap().as_map().unwrap().clone();
    let guard = b.node().lock(&m).await.unwrap();
    let m = a.node().get("/m").unwrap().as_map().unwrap().clone();
    m.set("raced", 1).unwrap();
    partition.freeze(false);
    until("bravo to read alpha's new incarnation's hello", || {
        let peers = b.node().peers();
        peers.iter().filter(|p| p.hostname() == "alpha").count() == 2
    })
    .await;
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
    until("bravo to count every alpha gone", || {
        b.node().peers().iter().all(|p| p.hostname() != "alpha")
    })
    .await;
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
    let server = Server::start();
    let partition = Partition::start(server.port).await;
    let options = || options("chase").nats(NatsOptions::new().lease(Duration::from_secs(600)));
    let a = join(&partition.url(), "alpha", options()).await;
    let b = join(&server.url(), "bravo", options()).await;
    a.node().set_root(json!({"m": {}, "n": {}})).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;
    let n = a.node().get("/n").unwrap().as_map().unwrap().clone();
    let n_guard = a.node().lock(&n).await.unwrap();

    fail::cfg("nats-reload-after-hello", "return(hold)").unwrap();
    partition.freeze(true);
    let m = b.node().get("/m").unwrap().as_map().unwrap().clone();
    let _m_guard = b.node().lock(&m).await.unwrap();
    let m = a.node().get("/m").unwrap().as_map().unwrap().clone();
    m.set("raced", 1).unwrap();
    partition.freeze(false);
    until("bravo to read alpha's new incarnation's hello", || {
        let alphas = b.node().peers();
        alphas.iter().filter(|p| p.hostname() == "alpha").count() == 2
    })
    .await;
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
    let server = Server::start();
    let partition = Partition::start(server.port).await;
    let options = || options("again").nats(NatsOptions::new().lease(Duration::from_secs(600)));
    let a = join(&partition.url(), "alpha", options()).await;
    let b = join(&server.url(), "bravo", options()).await;
    a.node().set_root(json!({"m": {}, "n": {}})).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;
    let held = |name: &str| {
        let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        logged
            .lines()
            .filter(|l| l.contains("held at a fail point") && l.contains(name))
            .count()
    };
    let before = held("nats-reload-before-hello");
    let after = held("nats-reload-after-hello");

    // Alpha starts over for a write that raced a grant, and stops before
    // its new incarnation's hello.
    fail::cfg("nats-reload-before-hello", "return(hold)").unwrap();
    partition.freeze(true);
    let m = b.node().get("/m").unwrap().as_map().unwrap().clone();
    let _m_guard = b.node().lock(&m).await.unwrap();
    let m = a.node().get("/m").unwrap().as_map().unwrap().clone();
    m.set("raced", 1).unwrap();
    partition.freeze(false);
    until("alpha to stop before its hello", || {
        held("nats-reload-before-hello") > before
    })
    .await;
    // Granted after what alpha read: alpha's write to /n is refused.
    let n = b.node().get("/n").unwrap().as_map().unwrap().clone();
    let _n_guard = b.node().lock(&n).await.unwrap();
    fail::cfg("nats-publish", "return(hold)").unwrap();
    let n = a.node().get("/n").unwrap().as_map().unwrap().clone();
    // Larger than a pack: a message of its own.
    n.set("x", "x".repeat(70 << 10)).unwrap();
    fail::cfg("nats-reload-after-hello", "return(hold)").unwrap();
    fail::remove("nats-reload-before-hello");
    until("alpha to say hello", || {
        held("nats-reload-after-hello") > after
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
    let server = Server::start();
    let partition = Partition::start(server.port).await;
    let options = || options("nohello").nats(NatsOptions::new().lease(Duration::from_secs(600)));
    let a = join(&partition.url(), "alpha", options()).await;
    let b = join(&server.url(), "bravo", options()).await;
    a.node().set_root(json!({"m": {}})).unwrap();
    a.flush().await.unwrap();
    converged(&[a.node(), b.node()]).await;
    let held = |name: &str| {
        let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        logged
            .lines()
            .filter(|l| l.contains("held at a fail point") && l.contains(name))
            .count()
    };
    let before = held("nats-reload-before-hello");
    let after = held("nats-reload-after-hello");

    fail::cfg("nats-reload-before-hello", "return(hold)").unwrap();
    partition.freeze(true);
    let m = b.node().get("/m").unwrap().as_map().unwrap().clone();
    let _guard = b.node().lock(&m).await.unwrap();
    let m = a.node().get("/m").unwrap().as_map().unwrap().clone();
    m.set("raced", 1).unwrap();
    partition.freeze(false);
    until("alpha to stop before its hello", || {
        held("nats-reload-before-hello") > before
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
    assert_eq!(held("nats-reload-after-hello"), after, "a hello went out");
    fail::remove("nats-reload-after-hello");
    until("bravo to count alpha gone", || {
        b.node().peers().iter().all(|p| p.hostname() != "alpha")
    })
    .await;
    assert_eq!(a.rejoins(), 0);
}
