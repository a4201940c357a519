//! Locks through the `Node` API: SPEC §6 scenarios 9 (locked part), 13 and
//! 14, and guard behaviour.

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use facsimile::{
    EngineError, Error, LocalNetwork, LockError, LockEvent, LockGuard, MapRef, Node, Value,
};
use futures_executor::block_on;
use futures_util::FutureExt;
use futures_util::task::noop_waker_ref;
use serde_json::json;

use crate::{granted, manual_networks, networks};

/// Scenario 9 (locked part): under a lock, `push`, `pop`, `reverse` and
/// `sort` replicate as operations: each call is one message and one mass
/// change on the other node.
#[test]
fn s09_array_methods_under_a_lock() {
    for (wire, net) in manual_networks(9) {
        let a = net.join("a");
        let b = net.join("b");
        net.run();
        a.set_root(json!([3, 1, 2])).unwrap();
        net.run();
        let arr = b.root_array().unwrap();
        let guard = granted(&net, b.lock(&arr), wire);
        let changes = Arc::new(Mutex::new(Vec::new()));
        let seen = changes.clone();
        a.on_change(move |e| seen.lock().unwrap().push(e.prop().is_none()))
            .detach();
        // One message each, delivered before the next call.
        let one = |what: &str| {
            assert_eq!(net.in_flight(), 1, "{wire}: {what} is one message");
            net.run();
        };
        arr.push(5).unwrap();
        one("push");
        assert_eq!(arr.pop().unwrap(), Some(Value::Int(5)));
        one("pop");
        arr.push(4).unwrap();
        one("push");
        arr.reverse().unwrap();
        one("reverse");
        assert_eq!(a.root().to_json().unwrap(), json!([4, 2, 1, 3]), "{wire}");
        arr.sort_by(|x, y| x.as_i64().cmp(&y.as_i64())).unwrap();
        one("sort");
        assert_eq!(a.root().to_json().unwrap(), json!([1, 2, 3, 4]), "{wire}");
        assert_eq!(
            *changes.lock().unwrap(),
            [true; 5],
            "{wire}: one mass change each"
        );
        drop(guard);
        net.run();
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}

/// Scenario 13: a lock is granted and writes under it replicate; while it
/// is held the other node's request fails, its write fails with
/// `NotOwner`, its release fails with `NotOwner`, its array method fails
/// with `Locked` and its element set with `NotOwner`; releasing an unlocked
/// object fails with `NotLocked`.
#[test]
fn s13_lock_rules() {
    for (wire, net) in networks() {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!({"m": {"x": 0}, "l": [1]})).unwrap();
        let (ma, la) = {
            let r = a.root_map().unwrap();
            (
                r.get("m").unwrap().as_map().unwrap().clone(),
                r.get("l").unwrap().as_array().unwrap().clone(),
            )
        };
        let (mb, lb) = {
            let r = b.root_map().unwrap();
            (
                r.get("m").unwrap().as_map().unwrap().clone(),
                r.get("l").unwrap().as_array().unwrap().clone(),
            )
        };
        let r = b.release(&mb);
        assert!(
            matches!(r, Err(LockError::NotLocked { object, .. }) if object == mb.id()),
            "{wire}: {r:?}"
        );

        let gm = block_on(a.lock(&ma)).unwrap();
        let gl = block_on(a.lock(&la)).unwrap();
        ma.set("x", 1).unwrap();
        la.push(2).unwrap();
        assert_eq!(
            mb.get("x"),
            Some(Value::Int(1)),
            "{wire}: writes under a lock replicate"
        );
        assert_eq!(lb.to_vec().unwrap(), vec![Value::Int(1), Value::Int(2)]);

        let err = block_on(b.request(&mb)).unwrap_err();
        assert!(
            matches!(err, LockError::Locked { object, .. } if object == mb.id()),
            "{wire}: {err:?}"
        );
        let err = mb.set("x", 99).unwrap_err();
        assert_eq!(
            err.engine(),
            Some(&EngineError::NotOwner(mb.id())),
            "{wire}"
        );
        assert!(
            err.to_string()
                .contains("Object is not owned by current host")
        );
        let r = b.release(&mb);
        assert!(
            matches!(r, Err(LockError::NotOwner { object, .. }) if object == mb.id()),
            "{wire}: {r:?}"
        );
        assert_eq!(
            lb.push(3).unwrap_err().engine(),
            Some(&EngineError::Locked(lb.id())),
            "{wire}"
        );
        // An element set is a write, refused as in JavaScript (`arr[i] = x`).
        for index in [0, 2] {
            assert_eq!(
                lb.set(index, 5).unwrap_err().engine(),
                Some(&EngineError::NotOwner(lb.id())),
                "{wire}: set at {index}"
            );
        }
        assert_eq!(
            mb.get("x"),
            Some(Value::Int(1)),
            "{wire}: refused writes change nothing"
        );

        gm.release().unwrap();
        drop(gl);
        mb.set("x", 2).unwrap();
        lb.push(3).unwrap();
        assert_eq!(ma.get("x"), Some(Value::Int(2)), "{wire}");
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}

/// `release` releases only a lock held: while this node's request waits
/// behind another node's lock it fails with `NotOwner` and the request
/// stays, to be granted when the holder lets go (dropping the waiting
/// future is what withdraws it).
#[test]
fn release_leaves_a_waiting_request_waiting() {
    for (wire, net) in networks() {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!({"m": {}})).unwrap();
        let ma = a.get("/m").unwrap().as_map().unwrap().clone();
        let mb = b.get("/m").unwrap().as_map().unwrap().clone();
        let held = block_on(a.lock(&ma)).unwrap();
        let mut waiting = b.lock(&mb);
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(waiting.poll_unpin(&mut cx).is_pending(), "{wire}");
        let r = b.release(&mb);
        assert!(
            matches!(r, Err(LockError::NotOwner { object, .. }) if object == mb.id()),
            "{wire}: {r:?}"
        );
        drop(held);
        net.run();
        let Poll::Ready(Ok(granted)) = waiting.poll_unpin(&mut cx) else {
            panic!("{wire}: the request still waited and is granted");
        };
        assert_eq!(b.lock_token(&mb).unwrap(), Some(granted.token()), "{wire}");
    }
}

/// `release` on a node that does not hold the lock: `NotOwner` once another
/// node's request heads the queue there (granted or still waiting for
/// acknowledgements, which this node cannot tell apart), `NotLocked` while
/// nobody's does; nothing changes either way.
#[test]
fn release_by_a_node_that_does_not_hold_the_lock() {
    for (wire, net) in manual_networks(15) {
        let a = net.join("a");
        let b = net.join("b");
        net.run();
        a.set_root(json!({"m": {}})).unwrap();
        net.run();
        let ma = a.get("/m").unwrap().as_map().unwrap().clone();
        let mb = b.get("/m").unwrap().as_map().unwrap().clone();
        let not_locked = |r: Result<(), LockError>| matches!(r, Err(LockError::NotLocked { .. }));
        let not_owner = |r: Result<(), LockError>| matches!(r, Err(LockError::NotOwner { .. }));
        assert!(not_locked(a.release(&ma)), "{wire}: nobody asked");
        let mut locking = b.lock(&mb);
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(locking.poll_unpin(&mut cx).is_pending(), "{wire}");
        // a has b's request, b not yet a's acknowledgement.
        assert!(net.deliver_one(), "{wire}");
        let refused = ma.set("k", 1).unwrap_err();
        assert!(
            matches!(refused.engine(), Some(EngineError::NotOwner(_))),
            "{wire}: b heads a's queue"
        );
        assert!(
            locking.poll_unpin(&mut cx).is_pending(),
            "{wire}: not granted yet"
        );
        assert!(not_owner(a.release(&ma)), "{wire}: b heads a's queue");
        assert!(not_locked(b.release(&mb)), "{wire}: b's own request waits");
        assert_eq!(
            net.in_flight(),
            1,
            "{wire}: only a's acknowledgement is sent"
        );
        net.run();
        let Poll::Ready(Ok(guard)) = locking.poll_unpin(&mut cx) else {
            panic!("{wire}: granted");
        };
        assert!(not_owner(a.release(&ma)), "{wire}: b holds it");
        guard.release().unwrap();
        net.run();
        assert!(not_locked(a.release(&ma)), "{wire}: released");
        ma.set("k", 1).unwrap();
    }
}

/// An id names an object only on its own node: a handle of another node
/// may carry the id of an unrelated object here. Every lock call refuses
/// it, as `lock` and every write do, instead of acting on that object
/// (`release` freed this node's lock on it).
#[test]
fn lock_calls_refuse_a_handle_of_another_node() {
    for (wire, net) in manual_networks(16) {
        let a = net.join("a");
        let b = net.join("b");
        net.run();
        a.set_root(json!({})).unwrap();
        net.run();
        let (ra, rb) = (a.root_map().unwrap(), b.root_map().unwrap());
        ra.set("p", json!({})).unwrap();
        rb.set("q", json!({})).unwrap();
        net.run();
        let p_on_a = ra.get("p").unwrap().as_map().unwrap().clone();
        let q_on_b = rb.get("q").unwrap().as_map().unwrap().clone();
        assert_eq!(p_on_a.id(), q_on_b.id(), "{wire}: one id, two objects");
        let guard = granted(&net, a.lock(&p_on_a), wire);
        let foreign = |r: Option<LockError>| matches!(r, Some(LockError::ForeignHandle));
        assert!(foreign(a.release(&q_on_b).err()), "{wire}: release");
        assert!(foreign(a.lock_token(&q_on_b).err()), "{wire}: lock_token");
        assert!(foreign(a.lock_holder(&q_on_b).err()), "{wire}: lock_holder");
        assert!(
            matches!(a.check_writable(&q_on_b), Err(Error::ForeignHandle(h)) if h == "b"),
            "{wire}: check_writable"
        );
        net.run();
        assert!(guard.is_held(), "{wire}: a's lock on p is still held");
        assert_eq!(
            a.lock_token(&p_on_a).unwrap(),
            Some(guard.token()),
            "{wire}"
        );
        a.check_writable(&p_on_a).unwrap();
        assert!(
            b.check_writable(rb.get("p").unwrap().as_map().unwrap().clone())
                .is_err()
        );
    }
}

/// What a write refusal adds, for the case of this node's own request.
const PENDING: &str =
    "(or this node's own request for it is not granted yet: its writes wait for the grant)";

/// A node's own request for a lock, not granted yet, refuses the node's own
/// writes too (DESIGN.md), and the refusal says so.
#[test]
fn a_write_refused_for_the_node_s_own_pending_request_says_so() {
    for (wire, net) in manual_networks(17) {
        let a = net.join("a");
        let b = net.join("b");
        net.run();
        a.set_root(json!({"k": 0})).unwrap();
        net.run();
        let ra = a.root_map().unwrap();
        let mut locking = a.lock(&ra);
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(locking.poll_unpin(&mut cx).is_pending(), "{wire}");
        let err = ra.set("k", 1).unwrap_err();
        assert!(
            matches!(err.engine(), Some(EngineError::NotOwner(_))),
            "{wire}"
        );
        assert!(err.to_string().ends_with(PENDING), "{wire}: {err}");
        net.run();
        let Poll::Ready(Ok(_guard)) = locking.poll_unpin(&mut cx) else {
            panic!("{wire}: granted");
        };
        ra.set("k", 1).unwrap();
        drop(b);
    }
}

/// Scenario 14: two nodes lock at once; the higher hostname gets it first,
/// the other next, and both writes land.
#[test]
fn s14_concurrent_locks_go_to_the_higher_hostname_first() {
    for (seed, (wire, net)) in
        (0..20).flat_map(|seed| manual_networks(seed).into_iter().map(move |n| (seed, n)))
    {
        let low = net.join("alpha");
        let high = net.join("bravo");
        net.run();
        low.set_root(json!({"log": []})).unwrap();
        net.run();
        let log_low = low
            .root_map()
            .unwrap()
            .get("log")
            .unwrap()
            .as_array()
            .unwrap()
            .clone();
        let log_high = high
            .root_map()
            .unwrap()
            .get("log")
            .unwrap()
            .as_array()
            .unwrap()
            .clone();
        let order = Arc::new(Mutex::new(Vec::new()));
        for node in [&low, &high] {
            let o = order.clone();
            let name = node.hostname().to_string();
            node.on_lock(move |e| {
                if let LockEvent::Granted { token, .. } = e {
                    o.lock().unwrap().push((name.clone(), *token));
                }
            })
            .detach();
        }
        // Both ask at the same logical time, before hearing each other.
        let mut fl = low.lock(&log_low);
        let mut fh = high.lock(&log_high);
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(fl.poll_unpin(&mut cx).is_pending());
        assert!(fh.poll_unpin(&mut cx).is_pending());
        net.run();
        let Poll::Ready(Ok(gh)) = fh.poll_unpin(&mut cx) else {
            panic!("{wire}, seed {seed}: bravo, the higher hostname, goes first");
        };
        assert!(fl.poll_unpin(&mut cx).is_pending(), "{wire}, seed {seed}");
        log_high.push("bravo").unwrap();
        drop(gh);
        net.run();
        let Poll::Ready(Ok(gl)) = fl.poll_unpin(&mut cx) else {
            panic!("{wire}, seed {seed}: alpha goes next");
        };
        log_low.push("alpha").unwrap();
        drop(gl);
        net.run();
        for node in [&low, &high] {
            assert_eq!(
                node.root().to_json().unwrap(),
                json!({"log": ["bravo", "alpha"]}),
                "{wire}, seed {seed}"
            );
        }
        let order = order.lock().unwrap();
        assert_eq!(
            order.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>(),
            ["bravo", "alpha"]
        );
        assert!(
            order[1].1 > order[0].1,
            "{wire}, seed {seed}: fencing tokens increase"
        );
    }
}

/// Two fail-fast requests made at once, before either node hears of the
/// other: the one served first (the higher hostname) is granted, the other
/// fails with `Locked` rather than waiting, and nobody is left queued.
#[test]
fn concurrent_requests_grant_one_and_refuse_the_other() {
    for seed in 0..20 {
        for (wire, net) in manual_networks(seed) {
            let low = net.join("alpha");
            let high = net.join("bravo");
            net.run();
            low.set_root(json!({"n": 0})).unwrap();
            net.run();
            let (rl, rh) = (low.root_map().unwrap(), high.root_map().unwrap());
            let mut fl = low.request(&rl);
            let mut fh = high.request(&rh);
            let mut cx = Context::from_waker(noop_waker_ref());
            assert!(fl.poll_unpin(&mut cx).is_pending(), "seed {seed} {wire}");
            assert!(fh.poll_unpin(&mut cx).is_pending(), "seed {seed} {wire}");
            net.run();
            let Poll::Ready(Ok(gh)) = fh.poll_unpin(&mut cx) else {
                panic!("seed {seed} {wire}: bravo, the higher hostname, is granted");
            };
            let Poll::Ready(Err(err)) = fl.poll_unpin(&mut cx) else {
                panic!("seed {seed} {wire}: alpha's request fails, not waits");
            };
            assert!(
                matches!(err, LockError::Locked { .. }),
                "seed {seed} {wire}: {err}"
            );
            rh.set("n", 1).unwrap();
            drop(gh);
            net.run();
            // Nobody waits: alpha's next request is granted.
            let mut again = low.request(&rl);
            let mut polled = again.poll_unpin(&mut cx);
            if polled.is_pending() {
                net.run();
                polled = again.poll_unpin(&mut cx);
            }
            let Poll::Ready(Ok(g)) = polled else {
                panic!("seed {seed} {wire}: alpha's second request is granted");
            };
            rl.set("n", 2).unwrap();
            drop(g);
            net.run();
            assert_eq!(low.snapshot(), high.snapshot(), "seed {seed} {wire}");
        }
    }
}

#[test]
fn a_dropped_lock_future_withdraws_its_request() {
    let net = LocalNetwork::new();
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!({})).unwrap();
    let ra = a.root_map().unwrap();
    let rb = b.root_map().unwrap();
    let guard = block_on(a.lock(&ra)).unwrap();
    let mut waiting = b.lock(&rb);
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(waiting.poll_unpin(&mut cx).is_pending());
    drop(waiting);
    drop(guard);
    // Nobody waits: a third party can take it at once.
    let c = net.join("c");
    c.sync();
    let rc = c.root_map().unwrap();
    let g = block_on(c.request(&rc)).unwrap();
    assert!(g.is_held());
}

/// A grant that arrives after the future's last poll, the future then
/// dropped (a `select!` that took another branch, a timeout): nobody has a
/// guard, so the lock goes back rather than stay this node's for good.
#[test]
fn a_lock_granted_after_its_future_last_polled_is_released_when_it_drops() {
    for (wire, net) in networks() {
        let (a, b, ra, rb, held) = a_holds_the_root(&net);
        let mut waiting = b.lock(&rb);
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(waiting.poll_unpin(&mut cx).is_pending(), "{wire}");
        drop(held);
        assert!(
            b.lock_token(&rb).unwrap().is_some(),
            "{wire}: b was granted the lock"
        );
        drop(waiting);
        assert_eq!(
            b.lock_token(&rb).unwrap(),
            None,
            "{wire}: b kept a lock nobody holds"
        );
        let again = block_on(a.request(&ra)).unwrap();
        assert!(again.is_held(), "{wire}");

        // A guard of the same grant keeps it: the drop of another future of
        // the node that shared the request releases nothing.
        let mut first = b.lock(&rb);
        let mut second = b.lock(&rb);
        assert!(first.poll_unpin(&mut cx).is_pending(), "{wire}");
        assert!(second.poll_unpin(&mut cx).is_pending(), "{wire}");
        drop(again);
        let Poll::Ready(guard) = first.poll_unpin(&mut cx) else {
            panic!("{wire}: b was not granted the lock");
        };
        let guard = guard.unwrap();
        drop(second);
        assert_eq!(b.lock_token(&rb).unwrap(), Some(guard.token()), "{wire}");
        let err = block_on(a.request(&ra)).unwrap_err();
        assert!(matches!(err, LockError::Locked { .. }), "{wire}: {err}");
        drop(guard);
        assert!(block_on(a.request(&ra)).unwrap().is_held(), "{wire}");
    }
}

/// A waiting `lock` that joins this node's fail-fast `request` waits on
/// when the request loses its race: the `request` fails, the `lock` is
/// granted after the winner releases. With two such `lock`s, the one that
/// makes the next request may time out (dropped) and the other waits on.
#[test]
fn a_lock_that_joined_a_refused_request_waits_on() {
    for seed in 0..8 {
        for (wire, net) in manual_networks(seed) {
            let b = net.join("b");
            let z = net.join("z");
            let y = net.join("y");
            b.set_root(json!({})).unwrap();
            net.run();
            let (rb, rz) = (b.root_map().unwrap(), z.root_map().unwrap());
            let ry = y.root_map().unwrap();
            // Ahead of b's request: an earlier counter, or the same one and
            // the higher hostname.
            b.root_map().unwrap().set("tick", 1).unwrap();
            let mut winning = z.lock(&rz);
            let mut cx = Context::from_waker(noop_waker_ref());
            assert!(winning.poll_unpin(&mut cx).is_pending(), "{wire}");
            let mut trying = b.request(&rb);
            assert!(trying.poll_unpin(&mut cx).is_pending(), "{wire}");
            let mut waiting = b.lock(&rb);
            assert!(waiting.poll_unpin(&mut cx).is_pending(), "{wire}");
            let mut impatient = b.lock(&rb);
            assert!(impatient.poll_unpin(&mut cx).is_pending(), "{wire}");
            net.run();
            let Poll::Ready(Ok(held)) = winning.poll_unpin(&mut cx) else {
                panic!("{wire} seed {seed}: z is granted the lock");
            };
            // Either kind of future may be polled first after the refusal.
            // The impatient one makes b's next request, then gives up; y
            // asks after it: b's request stays ahead of y's for the lock
            // that still waits.
            if seed % 2 == 0 {
                let Poll::Ready(Err(err)) = trying.poll_unpin(&mut cx) else {
                    panic!("{wire} seed {seed}: the request lost its race");
                };
                assert!(matches!(err, LockError::Locked { .. }), "{wire}: {err}");
            }
            assert!(
                impatient.poll_unpin(&mut cx).is_pending(),
                "{wire} seed {seed}"
            );
            drop(impatient);
            net.run();
            let mut later = y.lock(&ry);
            assert!(later.poll_unpin(&mut cx).is_pending(), "{wire} seed {seed}");
            net.run();
            if seed % 2 == 1 {
                let Poll::Ready(Err(err)) = trying.poll_unpin(&mut cx) else {
                    panic!("{wire} seed {seed}: the request lost its race");
                };
                assert!(matches!(err, LockError::Locked { .. }), "{wire}: {err}");
            }
            drop(trying);
            assert!(
                waiting.poll_unpin(&mut cx).is_pending(),
                "{wire} seed {seed}"
            );
            drop(held);
            net.run();
            assert!(
                later.poll_unpin(&mut cx).is_pending(),
                "{wire} seed {seed}: b is ahead of y"
            );
            let Poll::Ready(Ok(guard)) = waiting.poll_unpin(&mut cx) else {
                panic!("{wire} seed {seed}: b waited on and is granted the lock");
            };
            assert!(guard.is_held(), "{wire}");
        }
    }
}

/// A fail-fast `request` that outlives a `lock` of the node that made the
/// next request and was dropped: when the `request` fails, nobody waits
/// on that request, and it is withdrawn rather than left to be granted to
/// nobody.
#[test]
fn a_request_left_by_every_future_is_withdrawn() {
    for (wire, net) in manual_networks(5) {
        let b = net.join("b");
        let z = net.join("z");
        let y = net.join("y");
        b.set_root(json!({})).unwrap();
        net.run();
        let (rb, rz, ry) = (
            b.root_map().unwrap(),
            z.root_map().unwrap(),
            y.root_map().unwrap(),
        );
        b.root_map().unwrap().set("tick", 1).unwrap();
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut winning = z.lock(&rz);
        assert!(winning.poll_unpin(&mut cx).is_pending(), "{wire}");
        let mut trying = b.request(&rb);
        assert!(trying.poll_unpin(&mut cx).is_pending(), "{wire}");
        net.run();
        let Poll::Ready(Ok(held)) = winning.poll_unpin(&mut cx) else {
            panic!("{wire}: z is granted the lock");
        };
        // After the refusal, a lock makes b's next request, then gives up.
        let mut impatient = b.lock(&rb);
        assert!(impatient.poll_unpin(&mut cx).is_pending(), "{wire}");
        drop(impatient);
        let Poll::Ready(Err(err)) = trying.poll_unpin(&mut cx) else {
            panic!("{wire}: the request fails");
        };
        assert!(matches!(err, LockError::Locked { .. }), "{wire}: {err}");
        drop(trying);
        drop(held);
        net.run();
        assert_eq!(
            b.lock_token(&rb).unwrap(),
            None,
            "{wire}: b holds a lock nobody asked for"
        );
        let guard = granted(&net, y.lock(&ry), wire);
        assert!(guard.is_held(), "{wire}");
    }
}

/// Two `lock`s of one node share its request; the one polled first takes
/// the grant and releases it before the other is polled: the other makes
/// the node's next request and is granted, rather than failing as if the
/// node had been evicted.
#[test]
fn a_lock_whose_shared_grant_was_released_before_it_looked_asks_again() {
    for (wire, net) in manual_networks(6) {
        let b = net.join("b");
        let z = net.join("z");
        b.set_root(json!({})).unwrap();
        net.run();
        let (rb, rz) = (b.root_map().unwrap(), z.root_map().unwrap());
        let held = granted(&net, z.lock(&rz), wire);
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut first = b.lock(&rb);
        let mut second = b.lock(&rb);
        assert!(first.poll_unpin(&mut cx).is_pending(), "{wire}");
        assert!(second.poll_unpin(&mut cx).is_pending(), "{wire}");
        drop(held);
        net.run();
        let Poll::Ready(Ok(guard)) = first.poll_unpin(&mut cx) else {
            panic!("{wire}: b is granted the lock");
        };
        let token = guard.token();
        drop(guard);
        net.run();
        let granted_again = match second.poll_unpin(&mut cx) {
            Poll::Ready(r) => r,
            Poll::Pending => {
                net.run();
                match second.poll_unpin(&mut cx) {
                    Poll::Ready(r) => r,
                    Poll::Pending => panic!("{wire}: b's next request is granted"),
                }
            }
        };
        let again = granted_again.unwrap_or_else(|e| panic!("{wire}: {e}"));
        assert!(again.token() > token, "{wire}: a grant of its own");
    }
}

/// A guard releases only its own grant: once the node released it (as
/// code that keeps no guard does) and took another, the older guard's
/// `release` says `NotLocked` and leaves the new grant alone.
#[test]
fn a_guard_releases_only_its_own_grant() {
    for (wire, net) in networks() {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!({})).unwrap();
        let (ra, rb) = (a.root_map().unwrap(), b.root_map().unwrap());
        let first = block_on(a.lock(&ra)).unwrap();
        a.release(&ra).unwrap();
        assert!(!first.is_held(), "{wire}");
        let newer = block_on(a.lock(&ra)).unwrap();
        assert!(newer.token() > first.token(), "{wire}");
        let err = first.release().unwrap_err();
        assert!(matches!(err, LockError::NotLocked { .. }), "{wire}: {err}");
        assert!(newer.is_held(), "{wire}: the newer grant stays");
        let refused = block_on(b.request(&rb)).unwrap_err();
        assert!(
            matches!(refused, LockError::Locked { here: false, .. }),
            "{wire}: {refused}"
        );
        drop(newer);
        assert!(block_on(b.request(&rb)).unwrap().is_held(), "{wire}");
    }
}

/// Gives a guard of `a`'s lock on the root to what `hand_over` makes of it,
/// then runs what that returns (which drops it) on another thread: the
/// guard must release, without deadlocking on the node's state.
fn a_guard_dropped_by(
    what: &str,
    hand_over: impl FnOnce(&LocalNetwork, &Node, LockGuard) -> Box<dyn FnOnce() + Send>,
) {
    let net = LocalNetwork::new();
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!({})).unwrap();
    let guard = block_on(a.lock(a.root_map().unwrap())).unwrap();
    let drop_it = hand_over(&net, &a, guard);
    let (done, dropped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop_it();
        let _ = done.send(());
    });
    dropped
        .recv_timeout(std::time::Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("{what} does not deadlock"));
    assert_eq!(a.lock_token(a.root_map().unwrap()).unwrap(), None, "{what}");
    assert!(
        block_on(b.request(b.root_map().unwrap()))
            .unwrap()
            .is_held(),
        "{what}"
    );
}

/// A listener's closure may own a guard: dropping its subscription drops
/// the closure outside the node's state, and the guard releases.
#[test]
fn dropping_a_subscription_whose_listener_owns_a_guard_releases_it() {
    a_guard_dropped_by("unsubscribing", |_, a, guard| {
        let sub = a.on_change(move |_| {
            let _ = &guard;
        });
        Box::new(move || drop(sub))
    });
}

/// A fail-fast `request` made while the node's own `lock` waits fails at
/// once, as another task's request is ahead of it, and leaves the `lock`
/// waiting; it is then granted.
#[test]
fn a_request_made_while_the_node_s_lock_waits_fails_at_once() {
    for (wire, net) in manual_networks(7) {
        let (a, _z, ra) = a_and_z(&net);
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut waiting = a.lock(&ra);
        assert!(waiting.poll_unpin(&mut cx).is_pending(), "{wire}");
        let Poll::Ready(Err(err)) = a.request(&ra).poll_unpin(&mut cx) else {
            panic!("{wire}: the request fails at once");
        };
        assert!(
            matches!(err, LockError::Locked { here: true, .. }),
            "{wire}: {err}"
        );
        assert_eq!(
            err.to_string(),
            "the root map is locked by another task of this node"
        );
        net.run();
        let Poll::Ready(Ok(held)) = waiting.poll_unpin(&mut cx) else {
            panic!("{wire}: the lock is granted");
        };
        assert!(held.is_held(), "{wire}");
    }
}

/// Nodes `a` and `z` (the higher hostname, first in line at a tie) on
/// `net`, with an empty root map a wrote, and a's handle of it.
fn a_and_z(net: &LocalNetwork) -> (Node, Node, MapRef) {
    let a = net.join("a");
    let z = net.join("z");
    a.set_root(json!({})).unwrap();
    net.run();
    let ra = a.root_map().unwrap();
    (a, z, ra)
}

/// A lock waiting when its node syncs (which drops its requests) waits on
/// and asks again once the node is ready, rather than failing as if the
/// node had been evicted.
#[test]
fn a_lock_waiting_through_a_sync_asks_again_after_it() {
    for (wire, net) in manual_networks(8) {
        let (a, z, ra) = a_and_z(&net);
        let held = granted(&net, z.lock(z.root_map().unwrap()), wire);
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut waiting = a.lock(&ra);
        assert!(waiting.poll_unpin(&mut cx).is_pending(), "{wire}");
        a.sync();
        assert!(
            waiting.poll_unpin(&mut cx).is_pending(),
            "{wire}: waits through the sync"
        );
        net.run();
        assert!(a.is_ready(), "{wire}");
        assert!(
            waiting.poll_unpin(&mut cx).is_pending(),
            "{wire}: asked again"
        );
        drop(held);
        net.run();
        let Poll::Ready(Ok(guard)) = waiting.poll_unpin(&mut cx) else {
            panic!("{wire}: granted after the sync");
        };
        assert!(guard.is_held(), "{wire}");
    }
}

/// A sync drops the state a held lock was granted in: the holder hears
/// that it lost the lock (it did not release it), its guard says so, and
/// the next node in line is granted it.
#[test]
fn a_lock_held_through_a_sync_is_lost() {
    for (wire, net) in manual_networks(8) {
        let (a, z, ra) = a_and_z(&net);
        let guard = granted(&net, a.lock(&ra), wire);
        let ended = Arc::new(Mutex::new(Vec::new()));
        let seen = ended.clone();
        a.on_lock(move |e| seen.lock().unwrap().push(e.clone()))
            .detach();
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut next = z.lock(z.root_map().unwrap());
        assert!(next.poll_unpin(&mut cx).is_pending(), "{wire}");
        net.run();
        a.sync();
        net.run();
        assert!(a.is_ready(), "{wire}");
        let token = guard.token();
        assert_eq!(
            *ended.lock().unwrap(),
            [LockEvent::Lost {
                object: ra.id(),
                token
            }],
            "{wire}"
        );
        assert!(!guard.is_held(), "{wire}");
        assert!(
            matches!(next.poll_unpin(&mut cx), Poll::Ready(Ok(_))),
            "{wire}: the next in line is granted"
        );
        assert!(
            matches!(
                guard.release(),
                Err(LockError::NotOwner { .. } | LockError::NotLocked { .. })
            ),
            "{wire}: nothing to release"
        );
    }
}

/// A sender replaced is dropped outside the node's state: one that owned
/// a guard of the node releases it rather than deadlock.
#[test]
fn a_replaced_sender_that_owns_a_guard_releases_it() {
    a_guard_dropped_by("replacing a sender", |net, a, guard| {
        let (net, a) = (net.clone(), a.clone());
        Box::new(move || {
            a.set_sender(move |_| {
                let _ = &guard;
            });
            // Back on the network, dropping the sender that owns the guard.
            net.attach(&a);
        })
    });
}

/// A lock waiting when its node is evicted fails with `Lost`, on an
/// object the node created itself too (its id changes with the node's
/// incarnation), and the node can lock it again once it has rejoined.
#[test]
fn a_lock_waiting_through_its_node_s_eviction_is_lost() {
    for (wire, net) in networks() {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!({"jobs": []})).unwrap();
        let held = block_on(b.lock(b.root_map().unwrap())).unwrap();
        let ra = a.root_map().unwrap();
        let mut waiting = a.lock(&ra);
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(waiting.poll_unpin(&mut cx).is_pending(), "{wire}");
        b.evict(&a.peer_id());
        let Poll::Ready(Err(err)) = waiting.poll_unpin(&mut cx) else {
            panic!("{wire}: the waiting lock ends with the eviction");
        };
        assert!(matches!(err, LockError::Lost { .. }), "{wire}: {err}");
        assert!(a.is_ready(), "{wire}: a rejoined");
        drop(held);
        let again = block_on(a.lock(a.root_map().unwrap())).unwrap();
        assert!(again.is_held(), "{wire}");
    }
}

/// Two nodes of `net`, `a` holding the lock on the root map: the nodes,
/// their root handles and a's guard.
fn a_holds_the_root(net: &LocalNetwork) -> (Node, Node, MapRef, MapRef, LockGuard) {
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!({})).unwrap();
    let (ra, rb) = (a.root_map().unwrap(), b.root_map().unwrap());
    let held = block_on(a.lock(&ra)).unwrap();
    (a, b, ra, rb, held)
}

/// `request` fails at once while this node waits behind another one, and
/// leaves the waiting `lock` as it was.
#[test]
fn a_request_while_this_node_waits_behind_another_fails_at_once() {
    for (wire, net) in networks() {
        let (_a, b, _ra, rb, held) = a_holds_the_root(&net);
        let mut waiting = b.lock(&rb);
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(waiting.poll_unpin(&mut cx).is_pending(), "{wire}");
        let Poll::Ready(Err(err)) = b.request(&rb).poll_unpin(&mut cx) else {
            panic!("{wire}: the request fails at once");
        };
        assert!(matches!(err, LockError::Locked { .. }), "{wire}: {err}");
        assert!(waiting.poll_unpin(&mut cx).is_pending(), "{wire}");
        drop(held);
        let Poll::Ready(granted) = waiting.poll_unpin(&mut cx) else {
            panic!("{wire}: b is next");
        };
        let granted = granted.unwrap();
        // Holding it, b refuses another request of its own.
        let err = block_on(b.request(&rb)).unwrap_err();
        assert!(
            matches!(err, LockError::Locked { here: true, .. }),
            "{wire}: {err}"
        );
        assert!(granted.is_held(), "{wire}");
    }
}

/// Two tasks of one node wait for the same lock (one request, shared):
/// dropping one future, as a timeout does, leaves the other waiting.
#[test]
fn dropping_one_of_two_waiting_futures_keeps_the_request() {
    for (wire, net) in networks() {
        let (a, b, ra, rb, held) = a_holds_the_root(&net);
        let mut cx = Context::from_waker(noop_waker_ref());
        let mut first = b.lock(&rb);
        let mut second = b.lock(&rb);
        assert!(first.poll_unpin(&mut cx).is_pending(), "{wire}");
        assert!(second.poll_unpin(&mut cx).is_pending(), "{wire}");
        drop(first);
        drop(held);
        let Poll::Ready(granted) = second.poll_unpin(&mut cx) else {
            panic!("{wire}: the second future still waits and is granted");
        };
        let granted = granted.unwrap();
        assert!(granted.is_held(), "{wire}");
        // When the last one drops, the request is withdrawn: nobody waits.
        let mut first = a.lock(&ra);
        let mut second = a.lock(&ra);
        assert!(first.poll_unpin(&mut cx).is_pending(), "{wire}");
        assert!(second.poll_unpin(&mut cx).is_pending(), "{wire}");
        drop(first);
        drop(second);
        drop(granted);
        assert_eq!(a.lock_token(&ra).unwrap(), None, "{wire}");
        let c = net.join("c");
        c.sync();
        assert!(block_on(c.request(c.root_map().unwrap())).is_ok(), "{wire}");
    }
}

/// A peer that dies holding a lock, on a transport that finds it gone
/// (no heartbeats configured): once the transport reports it through
/// `Node::evict`, every node frees its lock, the next request is granted
/// with a larger fencing token, and nobody counts it a member any more.
#[test]
fn a_peer_reported_gone_by_its_transport_loses_its_lock_everywhere() {
    for (wire, net) in networks() {
        let a = net.join("a");
        let b = net.join("b");
        let c = net.join("c");
        a.set_root(json!({"n": 0})).unwrap();
        let held = block_on(b.lock(b.root_map().unwrap())).unwrap();
        let dead_token = held.token();
        std::mem::forget(held);
        let gone = b.peer_id();
        drop(b);

        let (ra, rc) = (a.root_map().unwrap(), c.root_map().unwrap());
        let mut waiting = a.lock(&ra);
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(waiting.poll_unpin(&mut cx).is_pending(), "{wire}");
        assert!(rc.set("n", 1).is_err(), "{wire}: b still holds it");
        // Unknown peers and the node itself are ignored.
        a.evict(&facsimile::PeerId::new("nobody", 7));
        a.evict(&a.peer_id());
        assert!(waiting.poll_unpin(&mut cx).is_pending(), "{wire}");

        a.evict(&gone);
        let Poll::Ready(granted) = waiting.poll_unpin(&mut cx) else {
            panic!("{wire}: a's lock is granted once b is gone");
        };
        let guard = granted.unwrap();
        assert!(
            guard.token() > dead_token,
            "{wire}: fencing tokens increase"
        );
        ra.set("n", 2).unwrap();
        let refused = rc.set("n", 3).unwrap_err();
        assert!(
            matches!(refused.engine(), Some(EngineError::NotOwner(_))),
            "{wire}: c sees a's lock, not b's"
        );
        for node in [&a, &c] {
            assert!(!node.peers().contains(&gone), "{wire}");
        }
        drop(guard);
        rc.set("n", 3).unwrap();
        assert_eq!(a.snapshot(), c.snapshot(), "{wire}");
    }
}

/// A node its peers evicted while it is alive starts over as a new
/// incarnation and is ready again once its sync is answered: the network
/// delivers an answer addressed to the new incarnation, and drops what was
/// addressed to the old one.
#[test]
fn an_evicted_node_that_is_alive_becomes_ready_again() {
    let nets = networks().into_iter().chain(manual_networks(3)).enumerate();
    for (i, (wire, net)) in nets {
        let manual = i >= 2;
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!({"n": 0})).unwrap();
        net.run();
        let before = b.peer_id();
        a.evict(&before);
        net.run();
        assert_ne!(
            b.peer_id(),
            before,
            "{wire} manual {manual}: b started over"
        );
        assert!(b.is_ready(), "{wire} manual {manual}: b is ready again");
        let rb = b.root_map().unwrap();
        let guard = match manual {
            true => granted(&net, b.lock(&rb), wire),
            false => block_on(b.lock(&rb)).unwrap(),
        };
        rb.set("n", 1).unwrap();
        drop(guard);
        net.run();
        assert_eq!(
            a.root_map().unwrap().get("n"),
            Some(Value::Int(1)),
            "{wire}"
        );
        assert_eq!(a.snapshot(), b.snapshot(), "{wire} manual {manual}");
    }
}

/// Lock refusals name the object by its path from the root, and fall back
/// to its id when the root does not reach it.
#[test]
fn lock_errors_name_paths() {
    let net = LocalNetwork::new();
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!({"teams": {"red": {"score": 0}}, "items": [1]}))
        .unwrap();
    let red_a = a.get("/teams/red").unwrap().as_map().unwrap().clone();
    let items_a = a.get("/items").unwrap().as_array().unwrap().clone();
    let red_b = b.get("/teams/red").unwrap().as_map().unwrap().clone();
    let items_b = b.get("/items").unwrap().as_array().unwrap().clone();

    assert_eq!(
        b.release(&red_b).unwrap_err().to_string(),
        "the map at /teams/red is not locked"
    );
    let _red = block_on(a.lock(&red_a)).unwrap();
    let _items = block_on(a.lock(&items_a)).unwrap();
    assert_eq!(
        red_b.set("score", 1).unwrap_err().to_string(),
        format!(
            "Object is not owned by current host: another node holds the lock on the map at /teams/red {PENDING}"
        )
    );
    assert_eq!(
        b.release(&red_b).unwrap_err().to_string(),
        "Object is not owned by current host: another node holds the lock on the map at /teams/red"
    );
    assert_eq!(
        items_b.push(2).unwrap_err().to_string(),
        "the array at /items is locked by another node"
    );
    assert_eq!(
        block_on(b.request(&items_b)).unwrap_err().to_string(),
        "the array at /items is locked by another node"
    );
    // Out of the document's tree: named by id.
    let teams = a.get("/teams").unwrap().as_map().unwrap().clone();
    teams.delete("red").unwrap();
    let err = red_b.set("score", 1).unwrap_err();
    assert_eq!(err.place(), None);
    assert_eq!(
        err.to_string(),
        format!(
            "Object is not owned by current host: another node holds the lock on object {:?} {PENDING}",
            red_b.id()
        )
    );
}

/// A totally ordered log shared by nodes in ordered mode, delivered by
/// hand with the timestamps a test chooses (what NATS does in `net`).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<Vec<u8>>>>);

impl Log {
    fn node(&self, hostname: &str, lease: std::time::Duration) -> facsimile::Node {
        let node =
            facsimile::Node::with_config(hostname, facsimile::Config::default().ordered(lease));
        let log = self.clone();
        node.set_sender(move |out| log.0.lock().unwrap().push(out.as_bytes().to_vec()));
        node
    }

    /// Nodes "a" and "b" on a new log, each having read its own hello back
    /// (stamped `time`), so that they take writes; and how far each read.
    fn pair(
        lease: std::time::Duration,
        time: std::time::Duration,
    ) -> (Log, facsimile::Node, facsimile::Node, usize, usize) {
        let log = Log::default();
        let a = log.node("a", lease);
        let b = log.node("b", lease);
        let (mut at_a, mut at_b) = (0, 0);
        log.deliver(&a, &mut at_a, time);
        log.deliver(&b, &mut at_b, time);
        (log, a, b, at_a, at_b)
    }

    /// Delivers the messages from `*next` on to `node`, stamped `time`.
    fn deliver(&self, node: &facsimile::Node, next: &mut usize, time: std::time::Duration) {
        loop {
            let Some(bytes) = self.0.lock().unwrap().get(*next).cloned() else {
                return;
            };
            *next += 1;
            let _ = node.receive_ordered(&bytes, (*next as u64) << 16, time);
        }
    }
}

/// A waker that remembers it was woken.
struct Flag(std::sync::atomic::AtomicBool);

impl futures_util::task::ArcWake for Flag {
    fn wake_by_ref(flag: &Arc<Self>) {
        flag.0.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Over an ordered log, a node whose lease ran out is evicted until its
/// transport reloads it from a snapshot (a moment over NATS). A waiting
/// `lock` made meanwhile waits for the next incarnation and is granted to
/// it, instead of failing at once with `Evicted` (which made a client that
/// asks again spin through hundreds of failed acquisitions); `request`
/// still fails at once.
#[test]
fn a_lock_made_while_evicted_waits_for_the_reload_and_is_granted() {
    use std::time::Duration;
    let lease = Duration::from_secs(60);
    let t0 = Duration::from_secs(1_000);
    let (log, a, b, mut at_a, mut at_b) = Log::pair(lease, t0);
    b.set_root(json!({"k": {}})).unwrap();
    log.deliver(&a, &mut at_a, t0);
    a.root_map().unwrap().set("a", 1).unwrap();
    log.deliver(&a, &mut at_a, t0);
    log.deliver(&b, &mut at_b, t0);
    let k = a
        .root_map()
        .unwrap()
        .get("k")
        .unwrap()
        .as_map()
        .unwrap()
        .clone();

    // The log runs on with b's writes while a is silent, until a's lease
    // has run out. (The lease is long next to the test, so that a's own
    // heartbeats, on the machine's clock, never come due.)
    let mut late = t0;
    for i in 0..4 {
        late += lease / 3;
        b.root_map().unwrap().set("later", i).unwrap();
        log.deliver(&b, &mut at_b, late);
        log.deliver(&a, &mut at_a, late);
    }
    assert!(a.needs_reload());

    let flag = Arc::new(Flag(false.into()));
    let waker = futures_util::task::waker(flag.clone());
    let mut cx = Context::from_waker(&waker);
    let refused = block_on(a.request(&k));
    assert!(matches!(refused, Err(LockError::Evicted)), "{refused:?}");
    let mut waiting = a.lock(&k);
    assert!(waiting.poll_unpin(&mut cx).is_pending());

    // The transport reloads a from the newest snapshot and reads on.
    let snapshot = b.log_snapshot().unwrap();
    at_a = at_b;
    a.reload(Some(&snapshot)).unwrap();
    assert!(flag.0.swap(false, std::sync::atomic::Ordering::SeqCst));
    // The new incarnation takes requests once it has read its hello back.
    assert!(waiting.poll_unpin(&mut cx).is_pending());
    log.deliver(&a, &mut at_a, late);
    assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
    assert!(waiting.poll_unpin(&mut cx).is_pending());
    log.deliver(&a, &mut at_a, late);
    log.deliver(&b, &mut at_b, late);
    let Poll::Ready(granted) = waiting.poll_unpin(&mut cx) else {
        panic!("the request of a's new incarnation is first in the log");
    };
    let guard = granted.unwrap();
    assert!(guard.is_held());
    assert_eq!(
        b.lock_token(b.root_map().unwrap().get("k").unwrap().as_map().unwrap())
            .unwrap(),
        None
    );
}

/// Over an ordered log, a node reloaded after its lease ran out carries
/// the writes the log refused over once its new incarnation has read its
/// own first message back, and not before: judged earlier, a carried write
/// could store what the others reclaimed while no round waited for it.
#[test]
fn a_reload_after_a_lapse_carries_writes_over_once_the_node_reads_its_hello_back() {
    use std::time::Duration;
    let lease = Duration::from_secs(60);
    let t0 = Duration::from_secs(1_000);
    let (log, a, b, mut at_a, mut at_b) = Log::pair(lease, t0);
    b.set_root(json!({"k": 0})).unwrap();
    log.deliver(&a, &mut at_a, t0);
    log.deliver(&b, &mut at_b, t0);

    // b writes on while a is silent, past a's lease; then a writes, and
    // the log stores that after the lapse.
    let mut late = t0;
    for i in 1..=4 {
        late += lease / 3;
        b.root_map().unwrap().set("k", i).unwrap();
        log.deliver(&b, &mut at_b, late);
        log.deliver(&a, &mut at_a, late);
    }
    assert!(a.needs_reload());
    a.root_map().unwrap().set("x", 1).unwrap();
    log.deliver(&a, &mut at_a, late);
    log.deliver(&b, &mut at_b, late);
    assert_eq!(b.root_map().unwrap().get("x"), None, "refused");

    let snapshot = b.log_snapshot().unwrap();
    at_a = at_b;
    a.reload(Some(&snapshot)).unwrap();
    // Its hello is in the log, not read back yet: nothing carried.
    assert_eq!(a.root_map().unwrap().get("x"), None);
    log.deliver(&a, &mut at_a, late);
    assert_eq!(a.root_map().unwrap().get("x"), Some(Value::Int(1)));
    log.deliver(&b, &mut at_b, late);
    log.deliver(&a, &mut at_a, late);
    assert_eq!(b.root_map().unwrap().get("x"), Some(Value::Int(1)));
    assert_eq!(a.snapshot(), b.snapshot());
}

/// A guard holds its node's lock alone: a second `lock` on the node that
/// holds it waits until the first guard releases it, then is a grant of
/// its own (a token of its own), and a `request` meanwhile fails at once.
#[test]
fn a_second_lock_on_the_holding_node_waits_for_the_first_guard() {
    let net = LocalNetwork::new();
    let (a, b, ra, rb, first) = a_holds_the_root(&net);
    let mut cx = Context::from_waker(noop_waker_ref());
    let mut second = a.lock(&ra);
    assert!(
        second.poll_unpin(&mut cx).is_pending(),
        "the first guard holds it"
    );
    let mut third = a.lock(&ra);
    assert!(third.poll_unpin(&mut cx).is_pending());
    let err = block_on(a.request(&ra)).unwrap_err();
    assert!(matches!(err, LockError::Locked { here: true, .. }), "{err}");
    assert!(first.is_held());
    let mut by_b = b.lock(&rb);
    assert!(by_b.poll_unpin(&mut cx).is_pending());
    drop(first);
    // b asked before the second guard's node asked again: b is next.
    let Poll::Ready(Ok(held_by_b)) = by_b.poll_unpin(&mut cx) else {
        panic!("b is granted the lock");
    };
    assert!(second.poll_unpin(&mut cx).is_pending());
    drop(held_by_b);
    let Poll::Ready(Ok(second)) = second.poll_unpin(&mut cx) else {
        panic!("the second lock is granted");
    };
    assert!(
        third.poll_unpin(&mut cx).is_pending(),
        "one guard at a time"
    );
    let token = second.token();
    drop(second);
    let Poll::Ready(Ok(third)) = third.poll_unpin(&mut cx) else {
        panic!("the third lock is granted");
    };
    assert!(third.token() > token, "a grant of its own");
}

/// Threads of one node that read and write an object under its lock lose
/// no update: each guard holds the lock alone.
#[test]
fn threads_of_one_node_take_its_lock_in_turn() {
    const THREADS: i64 = 4;
    const EACH: i64 = 25;
    let net = LocalNetwork::new();
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!({"stock": THREADS * EACH})).unwrap();
    let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let threads: Vec<_> = (0..THREADS)
        .map(|_| {
            let (a, inside) = (a.clone(), inside.clone());
            std::thread::spawn(move || {
                let root = a.root_map().unwrap();
                for _ in 0..EACH {
                    let guard = block_on(a.lock(&root)).unwrap();
                    assert_eq!(inside.fetch_add(1, std::sync::atomic::Ordering::SeqCst), 0);
                    let stock = root.get("stock").unwrap().as_i64().unwrap();
                    std::thread::yield_now();
                    root.set("stock", stock - 1).unwrap();
                    inside.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    drop(guard);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(a.root().to_json().unwrap(), json!({"stock": 0}));
    assert_eq!(a.snapshot(), b.snapshot());
}

/// Every node can tell who holds a lock once the grant is announced: the
/// holder at once, the others when the holder acknowledges a later
/// request; nobody after the release.
#[test]
fn every_node_tells_the_holder_and_its_token() {
    for (wire, net) in manual_networks(61) {
        let a = net.join("a");
        let b = net.join("b");
        let c = net.join("c");
        a.set_root(json!({"stock": 3})).unwrap();
        net.run();
        let on = |n: &Node| n.root_map().unwrap();
        let guard = granted(&net, b.lock(on(&b)), wire);
        assert_eq!(
            b.lock_holder(on(&b))
                .unwrap()
                .map(|(p, t)| (p.hostname().to_owned(), t)),
            Some(("b".to_owned(), guard.token())),
            "{wire}"
        );
        // c asks: b's acknowledgement names its grant to every node.
        let mut waiting = c.lock(on(&c));
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(waiting.poll_unpin(&mut cx).is_pending(), "{wire}");
        net.run();
        for n in [&a, &c] {
            let (holder, token) = n.lock_holder(on(n)).unwrap().expect("a holder is known");
            assert_eq!((holder.hostname(), token), ("b", guard.token()), "{wire}");
        }
        guard.release().unwrap();
        drop(waiting);
        net.run();
        assert!(a.lock_holder(on(&a)).unwrap().is_none(), "{wire}");
    }
}

/// A node that only observes (`Config::observer`) and then stalls holds
/// up no lock grant, where a member that stalls does: nobody counts an
/// observer as a member. It refuses its own writes and lock requests.
#[test]
fn a_stalled_observer_holds_up_no_lock() {
    for (wire, net) in manual_networks(62) {
        let format = match wire {
            "json" => facsimile::WireFormat::Json,
            _ => facsimile::WireFormat::Binary,
        };
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!({"stock": 3})).unwrap();
        net.run();
        let config = facsimile::Config::default().wire_format(format);
        let o = Node::with_config("o", config.clone().observer());
        let m = Node::with_config("m", config);
        for n in [&o, &m] {
            net.attach(n);
            n.sync();
            net.run();
        }
        assert_eq!(o.get("/stock"), Some(Value::Int(3)), "{wire}");
        let hosts = |n: &Node| {
            let mut h: Vec<String> = n.peers().iter().map(|p| p.hostname().to_owned()).collect();
            h.sort();
            h
        };
        assert_eq!(hosts(&a), ["b", "m"], "{wire}: the observer is no member");
        let stock = o.root_map().unwrap();
        let refused = stock.set("stock", 4).unwrap_err();
        assert!(
            matches!(refused.engine(), Some(EngineError::Observer)),
            "{wire}: {refused}"
        );
        let refused = block_on(o.lock(&stock)).unwrap_err();
        assert!(
            matches!(refused, LockError::Engine(EngineError::Observer)),
            "{wire}: {refused}"
        );

        drop(o); // stalls for good, without a goodbye
        let guard = granted(&net, a.lock(a.root_map().unwrap()), wire);
        guard.release().unwrap();
        net.run();

        drop(m); // a member stalls: the next grant waits for it
        let mut waiting = b.lock(b.root_map().unwrap());
        let mut cx = Context::from_waker(noop_waker_ref());
        assert!(waiting.poll_unpin(&mut cx).is_pending(), "{wire}");
        net.run();
        assert!(
            waiting.poll_unpin(&mut cx).is_pending(),
            "{wire}: waits for m"
        );
    }
}

/// Nodes that join after an observer never count it as a member: one that
/// syncs takes no state from it (a state lists its sender as a member),
/// and one that says hello gets no welcome from it, also when the
/// observer's resend log no longer holds its first message.
#[test]
fn nodes_that_join_later_never_count_an_observer() {
    for seed in 0..12 {
        for (wire, net) in manual_networks(70 + seed) {
            let format = match wire {
                "json" => facsimile::WireFormat::Json,
                _ => facsimile::WireFormat::Binary,
            };
            let config = facsimile::Config::default().wire_format(format);
            let o = Node::with_config("o", config.clone().observer().resend_log(1));
            net.attach(&o);
            let a = net.join("a");
            net.run();
            a.set_root(json!({"n": 0})).unwrap();
            for i in 0..5 {
                a.root_map().unwrap().set("n", i).unwrap();
                net.run();
            }
            let synced = net.join("synced");
            synced.sync();
            net.run();
            let hello = net.join("hello");
            net.run();
            a.root_map().unwrap().set("n", 9).unwrap();
            net.run();
            for n in [&a, &synced, &hello] {
                let hosts: Vec<String> =
                    n.peers().iter().map(|p| p.hostname().to_owned()).collect();
                assert!(
                    !hosts.iter().any(|h| h == "o"),
                    "{wire} seed {seed}: {} counts the observer: {hosts:?}",
                    n.hostname()
                );
            }
            assert_eq!(synced.get("/n"), Some(Value::Int(9)), "{wire} seed {seed}");
        }
    }
}

/// A node that left gives up its locks at once (its guard no longer holds,
/// its waiting future fails, a peer gets the lock), refuses writes, lock
/// requests and evictions, and keeps its copy as it was for reads; a
/// reload (a new incarnation) takes part again.
#[test]
fn a_node_that_left_frees_its_locks_and_refuses_writes() {
    let net = LocalNetwork::new();
    let (a, b, c) = (net.join("a"), net.join("b"), net.join("c"));
    a.set_root(json!({"k": 0, "list": []})).unwrap();
    let (root_a, root_b) = (a.root_map().unwrap(), b.root_map().unwrap());
    let list_a = a.get("/list").unwrap().as_array().unwrap().clone();
    let list_b = b.get("/list").unwrap().as_array().unwrap().clone();
    let guard = block_on(a.lock(&root_a)).unwrap();
    let held_by_b = block_on(b.lock(&list_b)).unwrap();
    let mut waiting = a.lock(&list_a);
    let mut cx = Context::from_waker(noop_waker_ref());
    assert!(waiting.poll_unpin(&mut cx).is_pending());
    let left = |e: &Error| matches!(e.engine(), Some(EngineError::Left));
    let lock_left = |e: &LockError| matches!(e, LockError::Engine(EngineError::Left));

    a.leave();
    assert!(!guard.is_held(), "a's guard holds after leave");
    assert_eq!(a.lock_token(&root_a), Ok(None));
    match waiting.poll_unpin(&mut cx) {
        Poll::Ready(Err(e)) => assert!(lock_left(&e), "{e:?}"),
        other => panic!(
            "a's waiting lock after leave: {:?}",
            other.map(|r| r.is_ok())
        ),
    }
    let on_b = block_on(b.lock(&root_b)).unwrap();
    assert!(on_b.is_held());

    // Refused: writes, lock requests, the write check.
    let refused = root_a.set("k", 1).unwrap_err();
    assert!(left(&refused), "{refused:?}");
    assert!(left(&list_a.push(1).unwrap_err()));
    assert!(left(&a.set_root(1).unwrap_err()));
    assert!(left(&a.check_writable(&root_a).unwrap_err()));
    let refused = block_on(a.lock(&list_a)).unwrap_err();
    assert!(lock_left(&refused), "{refused:?}");
    assert!(lock_left(&block_on(a.request(&root_a)).unwrap_err()));
    // An eviction from a that left evicts nobody.
    assert_eq!(a.evict_host("c"), 0);
    assert!(b.peers().iter().any(|p| p.hostname() == "c"));
    drop(guard);
    drop(held_by_b);

    // a's copy stays as it was when it left; the others go on without it.
    root_b.set("k", 2).unwrap();
    assert_eq!(a.get("/k"), Some(Value::Int(0)));
    assert_eq!(c.get("/k"), Some(Value::Int(2)));
    assert!(!b.peers().iter().any(|p| p.hostname() == "a"));
    a.sync();
    assert_eq!(a.get("/k"), Some(Value::Int(0)));
    a.leave();
    drop(on_b);

    // A new incarnation, loaded from a peer's state, takes part again.
    a.reload(Some(&b.export_state())).unwrap();
    root_a.set("k", 3).unwrap();
    assert_eq!(b.get("/k"), Some(Value::Int(3)));
    let again = block_on(a.lock(&root_a)).unwrap();
    assert!(again.is_held());
}
