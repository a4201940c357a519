//! Timers in virtual time: failure detection, lock hand-over after an
//! eviction, and reclamation, driven by `LocalNetwork::advance` without
//! sleeping.

use std::task::{Context, Poll};
use std::time::Duration;

use facsimile::{Config, EngineError, LocalNetwork};
use futures_executor::block_on;
use futures_util::FutureExt;
use futures_util::task::noop_waker_ref;
use serde_json::json;

const HEARTBEAT: Duration = Duration::from_millis(100);
const PEER_TIMEOUT: Duration = Duration::from_secs(1);

fn detecting() -> LocalNetwork {
    LocalNetwork::with_config(Config::default().failure_detection(HEARTBEAT, PEER_TIMEOUT))
        .with_virtual_time()
}

/// Quiet nodes that are alive send heartbeats and stay members, however
/// long nothing happens.
#[test]
fn live_quiet_peers_are_never_evicted() {
    let net = detecting();
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!({})).unwrap();
    net.advance(PEER_TIMEOUT * 60);
    assert!(a.peers().contains(&b.peer_id()));
    assert!(b.peers().contains(&a.peer_id()));
}

/// A holder that falls silent is evicted once the peer timeout has passed,
/// not before; its lock goes to the next waiter with a larger fencing
/// token.
#[test]
fn a_silent_holder_is_evicted_and_its_lock_passes_on() {
    let net = detecting();
    let a = net.join("a");
    let b = net.join("b");
    let c = net.join("c");
    a.set_root(json!({"jobs": []})).unwrap();
    let (ja, jb) = (a.root_map().unwrap(), b.root_map().unwrap());
    let held = block_on(a.lock(&ja)).unwrap();
    let mut waiting = b.lock(&jb);
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(waiting.poll_unpin(&mut cx).is_pending());

    // `a` stops sending (a crashed process, a cut link); it still hears
    // the others.
    a.set_sender(|_| {});
    net.advance(PEER_TIMEOUT);
    assert!(
        waiting.poll_unpin(&mut cx).is_pending(),
        "nobody is evicted before the peer timeout"
    );
    assert!(c.peers().contains(&a.peer_id()));

    net.advance(PEER_TIMEOUT);
    let Poll::Ready(Ok(granted)) = waiting.poll_unpin(&mut cx) else {
        panic!("b is granted the lock once a is evicted");
    };
    assert!(granted.token() > held.token(), "fencing tokens increase");
    assert!(!c.peers().contains(&a.peer_id()));
    assert!(!b.peers().contains(&a.peer_id()));
    // The evicted holder heard of its eviction: its guard no longer holds.
    assert!(!held.is_held());
    jb.set("owner", "b").unwrap();
    assert_eq!(
        c.root_map().unwrap().get("owner").unwrap().as_str(),
        Some("b")
    );
}

/// A holder cut off from its peers cannot tell that they evicted it: until
/// it hears from them again, it and the next holder both believe they hold
/// the lock, and only the fencing token tells their writes apart. Once
/// messages flow again, one of them is left holding it.
#[test]
fn a_cut_off_holder_cannot_tell_until_it_hears_again() {
    for seed in 0..50 {
        let net = LocalNetwork::manual_with_config(
            seed,
            Config::default().failure_detection(HEARTBEAT, PEER_TIMEOUT),
        )
        .with_virtual_time();
        let a = net.join("a");
        let b = net.join("b");
        net.run();
        a.set_root(json!({})).unwrap();
        net.run();
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut lock = a.lock(a.root_map().unwrap());
        assert!(lock.poll_unpin(&mut cx).is_pending());
        net.run();
        let Poll::Ready(Ok(first)) = lock.poll_unpin(&mut cx) else {
            panic!("seed {seed}: a is granted the lock");
        };

        // Time passes and nothing is delivered: each side times the other out.
        net.advance(PEER_TIMEOUT * 3);
        assert!(!b.peers().contains(&a.peer_id()));
        let Poll::Ready(Ok(second)) = b.request(b.root_map().unwrap()).poll_unpin(&mut cx) else {
            panic!("seed {seed}: b, alone, is granted the lock at once");
        };
        assert!(first.is_held(), "seed {seed}: a cannot tell");
        assert!(second.token() > first.token());

        net.run();
        assert!(
            first.is_held() != second.is_held(),
            "seed {seed}: once they hear each other, exactly one holds the lock"
        );
    }
}

/// An object removed from the document is reclaimed after reclamation
/// passes; a handle to it then reports it unknown.
#[test]
fn an_unreachable_object_is_reclaimed_after_gc_intervals() {
    let interval = Duration::from_millis(200);
    let net =
        LocalNetwork::with_config(Config::default().gc_interval(interval)).with_virtual_time();
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!({"keep": {"n": 1}, "drop": {"n": 2}}))
        .unwrap();
    let root = b.root_map().unwrap();
    let dropped = root.get("drop").unwrap().as_map().unwrap().clone();
    let kept = root.get("keep").unwrap().as_map().unwrap().clone();
    root.delete("drop").unwrap();
    assert!(dropped.exists(), "nothing is reclaimed between passes");

    net.advance(interval * 10);
    assert!(!dropped.exists());
    let err = dropped.set("n", 3).unwrap_err();
    assert_eq!(
        err.engine(),
        Some(&EngineError::UnknownObject(dropped.id())),
        "{err}"
    );
    assert!(kept.exists());
    assert_eq!(a.snapshot(), b.snapshot());
}

/// The listeners of an object are dropped once it is reclaimed (it never
/// changes again), and their subscriptions say so; a live object's stay.
#[test]
fn listeners_of_a_reclaimed_object_are_dropped() {
    let interval = Duration::from_millis(200);
    let net =
        LocalNetwork::with_config(Config::default().gc_interval(interval)).with_virtual_time();
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!({"keep": {"n": 1}, "drop": {"n": 2}}))
        .unwrap();
    let root = b.root_map().unwrap();
    let dropped = root.get("drop").unwrap().as_map().unwrap().clone();
    let kept = root.get("keep").unwrap().as_map().unwrap().clone();
    let owned = std::sync::Arc::new(());
    let listen = |map: &facsimile::MapRef| {
        let (o, k) = (owned.clone(), owned.clone());
        [
            map.on(move |_| {
                let _ = &o;
            }),
            map.on_key("n", move |_| {
                let _ = &k;
            }),
        ]
    };
    let (on_dropped, on_kept) = (listen(&dropped), listen(&kept));
    assert_eq!(std::sync::Arc::strong_count(&owned), 5);
    root.delete("drop").unwrap();

    net.advance(interval * 10);
    assert!(!dropped.exists());
    assert!(on_dropped.iter().all(|s| !s.is_active()));
    assert!(on_kept.iter().all(|s| s.is_active()));
    assert_eq!(std::sync::Arc::strong_count(&owned), 3);
}

/// Durations too long to add to the clock (`Duration::MAX` for "never")
/// are as good as never: no timer overflows the clock.
#[test]
fn durations_too_long_for_the_clock_mean_never() {
    let forever = Duration::MAX;
    let config = Config::default()
        .gc_interval(forever)
        .sync_timeout(forever)
        .failure_detection(forever, forever);
    let net = LocalNetwork::with_config(config).with_virtual_time();
    net.advance(Duration::from_secs(3600));
    let a = net.join("a");
    a.set_root(json!({"n": 0, "gone": {}})).unwrap();
    net.advance(Duration::from_secs(3600));
    let b = net.join("b");
    net.advance(Duration::from_secs(3600));
    b.set_path("/n", 1).unwrap();
    b.root_map().unwrap().remove("gone").unwrap();
    net.advance(Duration::from_secs(3600));
    assert_eq!(a.get("/n").and_then(|n| n.as_i64()), Some(1));
    assert_eq!(a.peers(), [b.peer_id()]);
}
