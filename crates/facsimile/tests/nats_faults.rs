//! Faults injected into the NATS transport (the `failpoints` feature). A
//! fail point is set for the whole process, so this binary holds one test.
#![cfg(all(feature = "nats", feature = "failpoints"))]

mod nats_support;

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use facsimile::net::{self, NatsOptions};
use serde_json::json;

use nats_support::*;

/// What the transport logs, kept for the test to read.
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

/// A start-over whose new incarnation fails after its hello is tried again
/// with another one. The one given up says goodbye: otherwise it stays a
/// member until its lease runs out, and every round of reclamation waits
/// for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_over_given_up_after_its_hello_leaves_no_member_behind() {
    let log = Log::default();
    let writer = log.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();
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
