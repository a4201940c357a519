//! Which documents clients can make the relay open: those that exist for
//! a client that only reads, and no more at once than the limit.

use std::time::Duration;

use facsimile::net::{self, Connection, NetError};
use serde_json::json;

use crate::idle::document_threads;
use crate::support::*;

async fn refused(relay: &Relay, options: facsimile::net::ConnectOptions) -> String {
    match net::connect(&relay.addr.to_string(), "client", options).await {
        Err(NetError::Refused(reason)) => reason,
        Err(e) => panic!("not refused but failed: {e}"),
        Ok(_) => panic!("admitted"),
    }
}

async fn writer_of(relay: &Relay, doc: &str) -> Connection {
    let conn = net::connect(&relay.addr.to_string(), "writer", options_for(doc))
        .await
        .unwrap_or_else(|e| panic!("the writer of {doc} connects: {e}"));
    conn.node().set_root(json!({ "doc": doc })).unwrap();
    conn.flush().await.unwrap();
    conn
}

/// A reader naming a document nobody wrote (a typo) is told there is no
/// such document, and leaves no directory and no thread behind; once the
/// document is written, readers read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_of_a_document_that_does_not_exist_creates_nothing() {
    let relay = Relay::start(|c| c).await;
    let reason = refused(&relay, options_for("typo").read_only(true)).await;
    assert!(reason.contains("no such document \"typo\""), "{reason}");
    assert!(!relay.data().join("typo").exists(), "no directory");
    assert_eq!(document_threads("typo"), 0, "no thread");

    let writer = writer_of(&relay, "typo").await;
    let reader = net::connect(
        &relay.addr.to_string(),
        "reader",
        options_for("typo").read_only(true),
    )
    .await
    .unwrap();
    assert_eq!(reader.node().snapshot(), writer.node().snapshot());
}

/// A relay opens at most `max_documents` documents at once: a client
/// asking for one more is refused with the reason (and nothing is made
/// for it) until one of them closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_past_the_limit_are_refused_until_one_closes() {
    relay_log();
    let relay = Relay::start(|c| {
        c.max_documents(2)
            .close_idle(Some(Duration::from_millis(100)))
    })
    .await;
    let first = writer_of(&relay, "cap-one").await;
    let _second = writer_of(&relay, "cap-two").await;
    let reason = refused(&relay, options_for("cap-three")).await;
    assert!(
        reason.contains("2 documents open") && reason.contains("--max-documents"),
        "{reason}"
    );
    assert!(!relay.data().join("cap-three").exists());
    assert_eq!(document_threads("cap-three"), 0);
    // An open document takes its clients as before.
    let again = net::connect(&relay.addr.to_string(), "again", options_for("cap-one"))
        .await
        .unwrap();
    again.close(Duration::from_secs(5)).await.unwrap();

    first.close(Duration::from_secs(5)).await.unwrap();
    logged(&["closed the document", "cap-one"]).await;
    let third = writer_of(&relay, "cap-three").await;
    assert_eq!(third.node().get("/doc"), Some("cap-three".into()));
    assert_eq!(relay_panics(), 0);
}
