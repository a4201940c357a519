//! `ChannelNetwork`: nodes on tokio tasks joined by channels.
#![cfg(feature = "channels")]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use facsimile::{ArrayRef, ChannelNetwork, Config, EngineError, Value};
use serde_json::json;

/// Writers on tasks of a multi-threaded runtime, each on its own node,
/// interleaved by the scheduler: once the network settles every replica is
/// byte-identical and holds every push.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writers_on_tasks_converge() {
    const NODES: usize = 4;
    const WRITES: usize = 200;
    let net = ChannelNetwork::new();
    let nodes: Vec<_> = (0..NODES).map(|i| net.join(&format!("n{i}"))).collect();
    nodes[0]
        .set_root(json!({"log": [], "last": {}}))
        .expect("root");
    net.settled().await;
    let tasks: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let node = node.clone();
            tokio::spawn(async move {
                let root = node.root_map().expect("synced");
                let log = root.get("log").and_then(|v| v.as_array().cloned());
                let last = root.get("last").and_then(|v| v.as_map().cloned());
                let (log, last) = (log.expect("log"), last.expect("last"));
                for k in 0..WRITES {
                    log.push(format!("{i}:{k}")).expect("push");
                    last.set(&format!("k{}", k % 7), (i * WRITES + k) as i64)
                        .expect("set");
                    if k % 16 == 0 {
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("writer");
    }
    net.settled().await;
    let first = nodes[0].snapshot();
    for (i, node) in nodes.iter().enumerate() {
        assert_eq!(node.snapshot(), first, "node {i}");
    }
    let log = nodes[0].root_map().unwrap().get("log").unwrap();
    assert_eq!(log.as_array().unwrap().len(), NODES * WRITES);
}

/// Runs `calls` on a's root array `[0, 0, 0, 0]` on a blocking task while
/// b pushes and pops on another (messages a's task applies between the
/// calls' reads and writes); once both stopped and the network settled,
/// the replicas are equal. Returns what `calls` returned and a's array.
async fn against_churn<R: Send + 'static>(
    calls: impl FnOnce(ArrayRef) -> R + Send + 'static,
) -> (R, ArrayRef) {
    let net = ChannelNetwork::new();
    let (a, b) = (net.join("a"), net.join("b"));
    a.set_root(json!([0, 0, 0, 0])).expect("root");
    net.settled().await;
    let stop = Arc::new(AtomicBool::new(false));
    let churn = tokio::task::spawn_blocking({
        let (b, stop) = (b.clone(), stop.clone());
        move || {
            let list = b.root_array().expect("synced");
            while !stop.load(Ordering::Relaxed) {
                list.push(1).expect("push");
                list.pop().expect("pop");
            }
        }
    });
    let list = a.root_array().expect("root");
    let calls = tokio::task::spawn_blocking({
        let list = list.clone();
        move || calls(list)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    churn.await.expect("churn");
    let r = calls.expect("every call ends");
    net.settled().await;
    assert_eq!(a.snapshot(), b.snapshot());
    (r, list)
}

/// `fill`, `copy_within` and `extend` take the array's length as of their
/// own write: a message applied between a read of it and the write (here,
/// another node's push or pop, applied by the node's task on another
/// thread) would make them fail with an index past the end, or write at
/// shifted places.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_methods_take_the_length_as_of_their_write() {
    against_churn(|list| {
        for i in 0..10_000 {
            let done = match i % 3 {
                0 => list.fill(i as i64, ..),
                1 => list.copy_within(1.., 0),
                _ => list.extend([i as i64]).and_then(|()| list.pop().map(drop)),
            };
            done.unwrap_or_else(|e| panic!("call {i}: {e}"));
        }
    })
    .await;
}

/// `replace` sets an element that exists as of its own write: an index
/// read before, with another node pushing and popping meanwhile, never
/// turns it into an append (as `set`, which pads, would).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assignment_at_an_index_read_before_never_appends() {
    let (missed, list) = against_churn(|list| {
        let mut missed = 0;
        for i in 0..10_000 {
            let last = list.len() - 1;
            match list.replace(last, i as i64) {
                Ok(_) => {}
                Err(e) if matches!(e.engine(), Some(EngineError::IndexOutOfBounds { .. })) => {
                    missed += 1
                }
                Err(e) => panic!("call {i}: {e}"),
            }
        }
        missed
    })
    .await;
    assert_eq!(
        list.len(),
        4,
        "no assignment appended ({missed} found no element)"
    );
}

/// `replace_many` sets all its elements or none: with another node
/// pushing and popping at the end, an assignment of the first and the
/// last element (the last as read before) that finds no last element sets
/// not the first either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slice_assignment_is_whole_or_refused() {
    let (refused, _) = against_churn(|list| {
        let mut refused = 0;
        for i in 0..10_000 {
            // Never 0, which the first element holds before any call: a
            // refused first call would look half done.
            let v = i + 1;
            let last = list.len() - 1;
            match list.replace_many([(0, v), (last, v)]) {
                Ok(()) => {}
                Err(e) if matches!(e.engine(), Some(EngineError::IndexOutOfBounds { .. })) => {
                    refused += 1;
                    assert_ne!(list.get(0), Some(Value::Int(v)), "call {i}: half done");
                }
                Err(e) => panic!("call {i}: {e}"),
            }
        }
        refused
    })
    .await;
    println!("{refused} of 10000 calls found no last element");
}

/// A late joiner syncs through the network; `settled` does not wait for a
/// dropped node; a lock holder that falls silent is evicted by the
/// heartbeats its peers' tasks run (no call into them), and the lock
/// passes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timers_run_on_the_tasks_and_evict_a_silent_holder() {
    // A timeout well above any stall of a loaded machine: live nodes are
    // never taken for silent.
    let config =
        Config::default().failure_detection(Duration::from_millis(100), Duration::from_secs(2));
    let net = ChannelNetwork::with_config(config);
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!({"n": 0})).unwrap();
    net.settled().await;

    let late = net.join("late");
    late.sync();
    net.settled().await;
    assert!(late.is_ready());
    assert_eq!(late.root_map().unwrap().get("n"), Some(Value::Int(0)));

    // A node dropped counts as gone: `settled` does not wait for it.
    let short = net.join("short");
    drop(short);
    a.root_map().unwrap().set("n", 0).unwrap();
    net.settled().await;

    // b takes the lock, then falls silent, as a crashed process does.
    let held = b.lock(b.root_map().unwrap()).await.unwrap();
    let dead_token = held.token();
    b.set_sender(|_| {});
    net.settled().await;

    let granted = tokio::time::timeout(Duration::from_secs(30), a.lock(a.root_map().unwrap()))
        .await
        .expect("the dropped holder is evicted within the timeout")
        .unwrap();
    assert!(granted.token() > dead_token);
    a.root_map().unwrap().set("n", 1).unwrap();
    drop(granted);
    net.settled().await;
    assert_eq!(late.root_map().unwrap().get("n"), Some(Value::Int(1)));
    assert_eq!(a.snapshot(), late.snapshot());
    drop(held);
}

/// A node its peers evicted while it is alive starts over as a new
/// incarnation: the network delivers the answer to its sync, addressed to
/// that incarnation, and it is ready again, writes and locks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_node_that_is_alive_becomes_ready_again() {
    let net = ChannelNetwork::new();
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!({"n": 0})).expect("root");
    net.settled().await;
    let before = b.peer_id();
    a.evict(&before);
    net.settled().await;
    assert_ne!(b.peer_id(), before, "b started over");
    assert!(b.is_ready(), "b synced as its new incarnation");
    let guard = b.lock(b.root_map().unwrap()).await.expect("b locks");
    b.root_map().unwrap().set("n", 1).expect("b writes");
    drop(guard);
    net.settled().await;
    assert_eq!(a.root_map().unwrap().get("n"), Some(Value::Int(1)));
    assert_eq!(a.snapshot(), b.snapshot());
}

/// A listener of a, run on the task that applies what reaches a, that
/// waits on a lock of b is refused at once: b's request waits in a's
/// channel, which that very task drains, and the grant needs a's
/// acknowledgement. A lock of b spawned from the listener is granted.
/// On a runtime of a thread of its own, so that a wait for ever fails the
/// test instead of hanging it.
#[test]
fn a_lock_awaited_inside_a_listener_of_another_node_fails() {
    use facsimile::{LockError, Prop};

    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let net = ChannelNetwork::new();
            let a = net.join("a");
            let b = net.join("b");
            b.set_root(json!({"k": 0, "m": 0})).expect("root");
            net.settled().await;
            let (refused_tx, mut refused) = tokio::sync::mpsc::unbounded_channel();
            let (spawned_tx, mut spawned) = tokio::sync::mpsc::unbounded_channel();
            let b2 = b.clone();
            a.on_change(move |ev| {
                let root = b2.root_map().expect("root");
                match ev.prop() {
                    Some(Prop::Key(k)) if k == "k" => {
                        let locked = futures_executor::block_on(b2.lock(&root));
                        let _ = refused_tx.send(locked.map(|g| g.is_held()));
                    }
                    Some(Prop::Key(k)) if k == "m" => {
                        let locking = b2.lock(&root);
                        let _ = spawned_tx.send(tokio::spawn(async move {
                            locking.await.map(|g| g.is_held())
                        }));
                    }
                    _ => {}
                }
            })
            .detach();

            b.root_map().unwrap().set("k", 1).expect("write");
            let refused = refused.recv().await.expect("the listener returned");
            assert_eq!(refused, Err(LockError::InListener));
            let guard = b.lock(b.root_map().unwrap()).await.expect("b locks");
            drop(guard);

            b.root_map().unwrap().set("m", 1).expect("write");
            let spawned = spawned.recv().await.expect("the listener returned");
            assert_eq!(spawned.await.expect("joined"), Ok(true));
        });
        let _ = done.send(());
    });
    outcome
        .recv_timeout(Duration::from_secs(20))
        .expect("a lock awaited in a listener: the scenario panicked (above) or hung for 20 s");
}

/// A listener that panics on what its node receives does not stop the
/// member: the network still settles, and the node goes on applying what
/// reaches it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_listener_does_not_stop_its_member() {
    let net = ChannelNetwork::new();
    let a = net.join("a");
    let b = net.join("b");
    b.set_root(json!({"n": 0})).expect("root");
    tokio::time::timeout(Duration::from_secs(20), net.settled())
        .await
        .expect("settled");
    let _sub = a.on_change(|_| panic!("listener"));
    let root = b.root_map().expect("synced");
    root.set("n", 1).expect("set");
    tokio::time::timeout(Duration::from_secs(20), net.settled())
        .await
        .expect("settled after the panic");
    root.set("n", 2).expect("set");
    tokio::time::timeout(Duration::from_secs(20), net.settled())
        .await
        .expect("settled again");
    assert_eq!(a.snapshot(), b.snapshot());
    let got = a.root_map().and_then(|m| m.get("n"));
    assert_eq!(got, Some(Value::Int(2)));
}
