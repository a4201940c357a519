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

/// Bob's listener runs on a thread of the user's and holds Bob's pump
/// there, waiting for the test. Bob's relay task still applies what the
/// relay sends and returns: on this single-threaded runtime, a task that
/// waited for that pump would hold up every connection and the relay
/// itself until the listener returned.
#[tokio::test]
async fn a_listener_on_another_thread_does_not_hold_up_the_relay_task() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let relay = Relay::start(|c| c).await;
    let carol = tcp_node(&relay, "carol").await;
    carol.node().set_root(json!({"n": 0})).unwrap();
    carol.flush().await.unwrap();
    let bob = tcp_node(&relay, "bob").await;

    let (entered_tx, entered_rx) = tokio::sync::oneshot::channel();
    let entered = Mutex::new(Some(entered_tx));
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let release_rx = Mutex::new(release_rx);
    let released = Arc::new(AtomicBool::new(false));
    let _slow = bob.node().on_change({
        let released = released.clone();
        move |e| {
            let on_writer = std::thread::current().name() == Some("writer");
            if !on_writer || !matches!(e.origin(), Origin::Local) {
                return;
            }
            let Some(tx) = entered.lock().unwrap().take() else {
                return;
            };
            let _ = tx.send(());
            // Bounded, so that a runtime held up fails the test.
            let got = release_rx
                .lock()
                .unwrap()
                .recv_timeout(Duration::from_secs(30));
            released.store(got.is_ok(), Ordering::Release);
        }
    });
    let writer = std::thread::Builder::new()
        .name("writer".into())
        .spawn({
            let bob = bob.node().clone();
            move || {
                // Until one of these writes' listener call runs here (the
                // relay task may hold the pump at a write).
                for i in 0..100 {
                    bob.root_map().unwrap().set("b", i).unwrap();
                }
            }
        })
        .unwrap();
    entered_rx.await.unwrap();

    carol.node().root_map().unwrap().set("n", 1).unwrap();
    carol.flush().await.unwrap();
    wait_until("bob to read n = 1", Duration::from_secs(20), || {
        bob.node().get("/n") == Some(Value::Int(1))
    })
    .await;
    carol.node().root_map().unwrap().set("n", 2).unwrap();
    let flushed = tokio::time::timeout(Duration::from_secs(20), carol.flush()).await;
    release_tx.send(()).unwrap();
    writer.join().unwrap();
    assert!(
        released.load(Ordering::Acquire),
        "the listener gave up waiting: the runtime stood still (carol's flush: {flushed:?})"
    );
    assert!(matches!(flushed, Ok(Ok(()))), "carol's flush: {flushed:?}");
    converge(&[carol.node(), bob.node()]).await;
}
