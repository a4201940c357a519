//! Documents open when a client asks for them and close once idle: a relay
//! holds threads and memory only for the documents in use, and loses
//! nothing by closing one.

use std::collections::BTreeSet;
use std::time::Duration;

use facsimile::net::{self, Connection};
use serde_json::json;

use crate::support::*;

/// The relay's threads running document `doc` (named `doc-NAME`, which
/// the system cuts to 15 bytes: keep names to 11).
pub(crate) fn document_threads(doc: &str) -> usize {
    let name = format!("doc-{doc}");
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|comm| comm.trim_end() == name)
        .count()
}

async fn node_of(relay: &Relay, doc: &str, name: &str) -> Connection {
    net::connect(&relay.addr.to_string(), name, options_for(doc))
        .await
        .unwrap_or_else(|e| panic!("{name} connects: {e}"))
}

fn keys(conn: &Connection) -> BTreeSet<String> {
    conn.node().root_map().unwrap().keys().into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_document_closes_and_opens_again_with_everything_written() {
    relay_log();
    let relay = Relay::start(|c| c.close_idle(Some(Duration::from_millis(200)))).await;
    assert_eq!(
        document_threads("idle-once"),
        0,
        "opened only when asked for"
    );
    let alice = node_of(&relay, "idle-once", "alice").await;
    alice.node().set_root(json!({"a": 1})).unwrap();
    alice.flush().await.unwrap();
    assert_eq!(document_threads("idle-once"), 1);

    alice.close(Duration::from_secs(5)).await.unwrap();
    logged(&["closed the document", "idle-once"]).await;
    wait_until(
        "the document's thread ends",
        Duration::from_secs(20),
        || document_threads("idle-once") == 0,
    )
    .await;

    let bob = node_of(&relay, "idle-once", "bob").await;
    assert_eq!(keys(&bob), BTreeSet::from(["a".to_string()]));
    bob.node().root_map().unwrap().set("b", 2).unwrap();
    bob.flush().await.unwrap();
    assert_eq!(document_threads("idle-once"), 1);
    logged(&["document recovered", "idle-once"]).await;
}

/// Clients that come and go while the document keeps closing (it closes as
/// soon as none is left, which two writers leave it at some of their
/// rounds) each find every write acknowledged before them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_arriving_as_their_document_closes_find_every_acknowledged_write() {
    const ROUNDS: usize = 15;
    const WRITERS: usize = 2;
    relay_log();
    let relay = Relay::start(|c| c.close_idle(Some(Duration::ZERO))).await;
    let first = node_of(&relay, "idle-race", "first").await;
    first.node().set_root(json!({})).unwrap();
    first.flush().await.unwrap();
    first.close(Duration::from_secs(5)).await.unwrap();

    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let addr = relay.addr;
        tasks.push(tokio::spawn(async move {
            let mut acked = BTreeSet::new();
            for round in 0..ROUNDS {
                let conn = net::connect(
                    &addr.to_string(),
                    &format!("w{w}r{round}"),
                    options_for("idle-race"),
                )
                .await
                .unwrap();
                let seen = keys(&conn);
                assert!(
                    acked.is_subset(&seen),
                    "writer {w}, round {round}: {:?} acknowledged but not found",
                    acked.difference(&seen).collect::<Vec<_>>()
                );
                let key = format!("w{w}-{round}");
                conn.node().root_map().unwrap().set(&key, 1).unwrap();
                conn.flush().await.unwrap();
                acked.insert(key);
                conn.close(Duration::from_secs(5)).await.unwrap();
            }
            acked
        }));
    }
    let mut acked = BTreeSet::new();
    for t in tasks {
        acked.extend(t.await.unwrap());
    }
    // Closed once the last writer left; the next client opens it again.
    logged(&["closed the document", "idle-race"]).await;
    let last = node_of(&relay, "idle-race", "last").await;
    assert_eq!(keys(&last), acked);
    assert_eq!(acked.len(), ROUNDS * WRITERS);
    let log = relay_log();
    let opened = |l: &&str| l.contains("document recovered") && l.contains("idle-race");
    assert!(log.lines().filter(opened).count() >= 1, "{log}");
    assert_eq!(relay_panics(), 0);
}

/// Without a disk a closed document would be lost: it stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_kept_only_in_memory_stays_open() {
    let relay = Relay::start(|c| c.ephemeral().close_idle(Some(Duration::ZERO))).await;
    let alice = node_of(&relay, "idle-mem", "alice").await;
    alice.node().set_root(json!({"kept": true})).unwrap();
    alice.flush().await.unwrap();
    alice.close(Duration::from_secs(5)).await.unwrap();
    let bob = node_of(&relay, "idle-mem", "bob").await;
    assert_eq!(keys(&bob), BTreeSet::from(["kept".to_string()]));
    assert_eq!(document_threads("idle-mem"), 1);
}
