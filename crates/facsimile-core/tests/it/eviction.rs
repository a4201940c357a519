//! A replica learns that its peers evicted it however it hears of it, and
//! whatever ends an incarnation reports the locks it loses.

use std::time::Duration;

use facsimile_core::sim::Sim;
use facsimile_core::{Config, Error, Event, Input, LockEvent, LockState, ObjectId, Replica};

const HEARTBEAT: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_secs(1);

/// The root map's child `key` on replica `i`.
fn child(sim: &mut Sim, i: usize, key: &str) -> ObjectId {
    let root = sim.replica(i).root().as_ref_id().unwrap();
    let child = sim.replica(i).map_get(root, key).unwrap();
    child.and_then(|v| v.as_ref_id()).unwrap()
}

/// Lets `beats` heartbeats pass, delivering everything after each.
fn beats(sim: &mut Sim, beats: usize) {
    for _ in 0..beats {
        sim.advance(HEARTBEAT);
        sim.run();
    }
}

/// A replica cut off while it syncs is evicted; its eviction is behind
/// the state it loads, so the state must tell it, or it goes on as a
/// member nobody else has: its writes dropped everywhere, its lock
/// requests never acknowledged.
#[test]
fn a_replica_evicted_during_its_sync_learns_it_from_the_state_it_loads() {
    let config = Config::default().failure_detection(HEARTBEAT, TIMEOUT);
    let mut sim = Sim::with_config(3, 3, config);
    sim.with(0, |r| r.set_root(Input::Map(vec![])).unwrap());
    sim.run();
    sim.partition(2, true);
    sim.with(2, Replica::sync);
    beats(&mut sim, 15);
    let gone = sim.replica(2).peer_id().clone();
    for i in [0, 1] {
        assert!(!sim.replica(i).members().contains(&gone), "replica {i}");
    }
    sim.partition(2, false);
    beats(&mut sim, 5);
    assert!(sim.replica(2).is_ready());
    let events = &sim.node(2).events;
    let ready = events.iter().position(|e| matches!(e, Event::Ready));
    let evicted = events.iter().position(|e| matches!(e, Event::Evicted));
    assert!(
        matches!((ready, evicted), (Some(r), Some(e)) if r < e),
        "ready, then evicted: {events:?}"
    );
    let root = sim.replica(2).root().as_ref_id().unwrap();
    assert_eq!(sim.with(2, |r| r.lock(root, true)), Err(Error::Evicted));
    // It starts over as a new incarnation, as a node does on the event,
    // and its writes reach the others again.
    sim.with(2, |r| r.reincarnate(0xdead));
    beats(&mut sim, 5);
    assert!(sim.replica(2).is_ready());
    let root = sim.replica(2).root().as_ref_id().unwrap();
    sim.with(2, |r| r.map_set(root, "k", 1.into())).unwrap();
    assert!(matches!(
        sim.with(2, |r| r.lock(root, true)),
        Ok(LockState::Waiting)
    ));
    beats(&mut sim, 2);
    assert!(matches!(
        sim.replica(2).lock_state(root),
        LockState::Held(_)
    ));
    let r0 = sim.replica(0).root().as_ref_id().unwrap();
    assert_eq!(sim.replica(0).map_get(r0, "k").unwrap(), Some(1.into()));
    sim.assert_converged();
}

/// A replica started from a saved state as an identity the state counts
/// evicted is evicted from the start: its peers would drop what it sends.
#[test]
fn a_replica_loaded_as_an_evicted_identity_is_evicted() {
    let mut sim = Sim::new(4, 2);
    sim.with(0, |r| r.set_root(Input::Map(vec![])).unwrap());
    sim.run();
    let gone = sim.replica(1).peer_id().clone();
    sim.with(0, |r| r.evict(&gone));
    let saved = sim.replica(0).export_state();
    let mut r = Replica::from_exported(gone, Config::default(), &saved).unwrap();
    let events: Vec<Event> = std::iter::from_fn(|| r.poll_event()).collect();
    assert!(
        matches!(events[..], [Event::Ready, Event::Evicted]),
        "{events:?}"
    );
    let root = r.root().as_ref_id().unwrap();
    assert_eq!(r.lock(root, true), Err(Error::Evicted));
}

/// Starting over without having read an eviction (a relay that no longer
/// knows the node asks for it) ends the incarnation's locks as an
/// eviction does: a held lock is reported lost, a waiting request
/// withdrawn.
#[test]
fn a_reincarnation_reports_the_locks_it_drops() {
    let mut sim = Sim::new(5, 2);
    let doc = Input::Map(vec![("m".into(), Input::Map(vec![]))]);
    sim.with(0, |r| r.set_root(doc)).unwrap();
    sim.run();
    let root = sim.replica(0).root().as_ref_id().unwrap();
    let m = child(&mut sim, 0, "m");
    sim.with(0, |r| r.lock(root, true)).unwrap();
    sim.run();
    let LockState::Held(token) = sim.replica(0).lock_state(root) else {
        panic!("held");
    };
    let m1 = child(&mut sim, 1, "m");
    sim.with(1, |r| r.lock(m1, true)).unwrap();
    sim.run();
    // Its own request now waits behind the other's grant.
    sim.with(0, |r| r.lock(m, true)).unwrap();
    sim.run();
    assert_eq!(sim.replica(0).lock_state(m), LockState::Waiting);
    sim.node(0).events.clear();
    let s = sim.with(0, |r| r.reincarnate(0xdead));
    // Named as the new incarnation names them.
    let (root, m) = (root.after(&s), m.after(&s));
    let events = &sim.node(0).events;
    assert!(
        events.contains(&Event::Lock(LockEvent::Lost {
            object: root,
            token
        })),
        "{events:?}"
    );
    assert!(
        events.contains(&Event::Lock(LockEvent::Withdrawn { object: m })),
        "{events:?}"
    );
}
