//! A listener that panics on a relay node's background task: nobody can
//! catch the panic there, so the task contains it and the connection goes
//! on, as a node goes on after a panic its own caller caught.
//!
//! The tests run on a current-thread runtime: the node's task, and so the
//! panic, runs on the test's own thread, not on a runtime worker, where
//! [`relay_panics`] would count it against the relay.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use facsimile::net::Status;
use facsimile::{Origin, Value};
use serde_json::json;

use crate::support::*;

/// Bob's listener panics on every change from a peer. His connection
/// still carries his writes (his flush returns), he still reads the
/// relay's, and his other listener hears each change.
#[tokio::test]
async fn a_listener_that_panics_on_a_remote_change_leaves_the_connection_working() {
    let relay = Relay::start(|c| c).await;
    let alice = tcp_node(&relay, "alice").await;
    alice.node().set_root(json!({"n": 0})).unwrap();
    alice.flush().await.unwrap();
    let bob = tcp_node(&relay, "bob").await;
    let _bug = bob.node().on_change(|e| {
        if matches!(e.origin(), Origin::Remote(_)) {
            panic!("a listener's bug");
        }
    });
    let heard = Arc::new(Mutex::new(Vec::new()));
    let _other = bob.node().on_change({
        let heard = heard.clone();
        move |e| heard.lock().unwrap().push(e.new_value().cloned())
    });

    alice.node().root_map().unwrap().set("n", 1).unwrap();
    alice.flush().await.unwrap();
    wait_until("bob to read n = 1", Duration::from_secs(20), || {
        bob.node().get("/n") == Some(Value::Int(1))
    })
    .await;
    bob.node().root_map().unwrap().set("m", 5).unwrap();
    let flushed = tokio::time::timeout(Duration::from_secs(20), bob.flush()).await;
    let status = bob.status().borrow().clone();
    assert!(
        matches!(flushed, Ok(Ok(()))) && status == Status::Connected,
        "bob's flush: {flushed:?} (status {status:?})"
    );

    alice.node().root_map().unwrap().set("n", 2).unwrap();
    alice.flush().await.unwrap();
    converge(&[alice.node(), bob.node()]).await;
    assert_eq!(
        bob.node().root().to_json().unwrap(),
        json!({"n": 2, "m": 5})
    );
    assert_eq!(
        *heard.lock().unwrap(),
        [
            Some(Value::Int(1)),
            Some(Value::Int(5)),
            Some(Value::Int(2))
        ],
        "bob's other listener hears alice's changes and his own"
    );
    assert_eq!(*bob.status().borrow(), Status::Connected);
}
