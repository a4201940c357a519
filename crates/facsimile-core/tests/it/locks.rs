//! Locks under random requests, releases, writes, crashes and joins on five
//! replicas: never two holders, no request waits forever once the system is
//! quiet, fencing tokens strictly increase, and every replica converges.

use std::collections::HashMap;
use std::time::Duration;

use facsimile_core::sim::{Sim, run_seeds};
use facsimile_core::{
    Config, Error, Event, Input, LockEvent, LockState, ObjectId, PeerId, Replica,
};
use rand::Rng;

const HEARTBEAT: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_secs(1);

/// The two lockable objects of the test document on replica `r`, by name.
fn objects(r: &mut Replica) -> Option<[ObjectId; 2]> {
    let root = r.root().as_ref_id()?;
    let m = r.map_get(root, "m").ok()??.as_ref_id()?;
    let a = r.map_get(root, "a").ok()??.as_ref_id()?;
    Some([m, a])
}

struct Checker {
    seen: Vec<usize>,
    last_token: HashMap<(PeerId, u64), u64>,
}

impl Checker {
    /// Delivers everything, checking after each delivery (grants must be
    /// seen in the order they happen).
    fn run(&mut self, sim: &mut Sim) {
        self.check(sim);
        while sim.step() {
            self.check(sim);
        }
    }

    /// Checks the grants reported since the last call and that no object
    /// has two holders among live replicas.
    fn check(&mut self, sim: &mut Sim) {
        let seed = sim.seed();
        self.seen.resize(sim.len(), 0);
        for i in 0..sim.len() {
            let events: Vec<Event> = sim.node(i).events[self.seen[i]..].to_vec();
            self.seen[i] += events.len();
            for e in events {
                if let Event::Lock(LockEvent::Granted { object, token }) = e {
                    let name = sim.replica(i).object_origin(object);
                    let last = self.last_token.entry(name).or_insert(0);
                    assert!(token > *last, "seed {seed}: token {token} after {last}");
                    *last = token;
                }
            }
        }
        let mut holders: HashMap<(PeerId, u64), usize> = HashMap::new();
        for i in sim.online() {
            let r = sim.replica(i);
            let Some(objs) = objects(r) else { continue };
            for o in objs {
                if let LockState::Held(_) = r.lock_state(o) {
                    if let Some(other) = holders.insert(r.object_origin(o), i) {
                        panic!("seed {seed}: replicas {other} and {i} hold the same lock");
                    }
                }
            }
        }
    }
}

fn scenario(seed: u64) {
    let config = Config::default().failure_detection(HEARTBEAT, TIMEOUT);
    let mut sim = Sim::with_config(seed, 5, config);
    let mut checker = Checker {
        seen: Vec::new(),
        last_token: HashMap::new(),
    };
    sim.with(0, |r| {
        r.set_root(Input::Map(vec![
            ("m".into(), Input::Map(vec![])),
            ("a".into(), Input::Array(vec![])),
        ]))
        .unwrap();
    });
    sim.run();
    let mut crashed = 0;
    for step in 0..150 {
        let online = sim.online();
        let i = online[sim.rng().random_range(0..online.len())];
        let action = sim.rng().random_range(0..100);
        let which = sim.rng().random_range(0..2);
        let r = sim.replica(i);
        if let Some(objs) = objects(r).filter(|_| r.is_ready()) {
            let o = objs[which];
            match action {
                0..=24 => {
                    let _ = r.lock(o, true);
                }
                25..=34 => match r.lock(o, false) {
                    Ok(_) | Err(Error::Locked(_)) => {}
                    Err(e) => panic!("seed {seed}: {:?} step {step}: {e}", r.peer_id()),
                },
                35..=59 => {
                    let _ = r.unlock(o);
                }
                60..=89 => {
                    let result = if which == 0 {
                        r.map_set(o, "k", Input::from(step as i64)).map(|_| ())
                    } else {
                        r.list_splice(o, 0, 0, vec![Input::from(step as i64)])
                            .map(|_| ())
                    };
                    match result {
                        Ok(()) => {}
                        Err(Error::NotOwner(_)) if which == 0 => {}
                        Err(Error::Locked(_)) if which == 1 => {}
                        Err(e) => panic!("seed {seed}: unexpected {e}"),
                    }
                }
                90..=94 if crashed < 2 && online.len() > 2 => {
                    crashed += 1;
                    sim.crash(i);
                }
                95..=99 => {
                    let j = sim.add(&format!("late{step}"));
                    sim.with(j, Replica::sync);
                }
                _ => {}
            }
        }
        sim.collect(i);
        let n = sim.rng().random_range(0..8);
        for _ in 0..n {
            sim.step();
            checker.check(&mut sim);
        }
        if step % 10 == 9 {
            // Deliver everything before time passes, so that only crashed
            // replicas go silent.
            checker.run(&mut sim);
            sim.advance(HEARTBEAT);
        }
        checker.check(&mut sim);
    }
    // Quiet down: holders release, waiters get their turn, until nobody
    // holds or waits. Crashed replicas are evicted after the timeout.
    for _ in 0..200 {
        checker.run(&mut sim);
        let mut busy = false;
        for i in sim.online() {
            let r = sim.replica(i);
            let Some(objs) = objects(r) else { continue };
            for o in objs {
                match r.lock_state(o) {
                    LockState::Held(_) => {
                        r.unlock(o).unwrap();
                        busy = true;
                    }
                    LockState::Waiting => busy = true,
                    LockState::None | LockState::Refused => {}
                }
            }
            sim.collect(i);
        }
        if !busy {
            break;
        }
        sim.advance(HEARTBEAT);
        checker.check(&mut sim);
    }
    let dump: String = sim
        .online()
        .into_iter()
        .map(|i| {
            let r = sim.replica(i);
            format!(
                "--- {i} {:?} ready {}\n{}\n",
                r.peer_id(),
                r.is_ready(),
                r.debug_locks()
            )
        })
        .collect();
    for i in sim.online() {
        let r = sim.replica(i);
        if let Some(objs) = objects(r) {
            for o in objs {
                // A fail-fast request that lost its race ends refused.
                let state = r.lock_state(o);
                if !matches!(state, LockState::None | LockState::Refused) {
                    eprintln!("{dump}");
                    panic!(
                        "seed {seed}: replica {i} still waits ({state:?})\n{}",
                        r.debug_locks()
                    );
                }
            }
        }
    }
    sim.settle();
    sim.assert_converged();
}

#[test]
fn five_replicas_lock_safely_over_500_seeds() {
    run_seeds(0..500, scenario);
}

#[test]
fn a_crashed_holder_loses_its_lock_after_the_timeout() {
    let config = Config::default().failure_detection(HEARTBEAT, TIMEOUT);
    let mut sim = Sim::with_config(1, 3, config);
    sim.with(0, |r| r.set_root(Input::Map(vec![])).unwrap());
    sim.run();
    let o0 = sim.replica(0).root().as_ref_id().unwrap();
    assert!(matches!(
        sim.with(0, |r| r.lock(o0, true)).unwrap(),
        LockState::Waiting
    ));
    sim.run();
    assert!(matches!(sim.replica(0).lock_state(o0), LockState::Held(_)));
    let o1 = sim.replica(1).root().as_ref_id().unwrap();
    assert_eq!(sim.with(1, |r| r.lock(o1, true)), Ok(LockState::Waiting));
    sim.run();
    assert_eq!(sim.replica(1).lock_state(o1), LockState::Waiting);
    assert_eq!(
        sim.replica(1).map_set(o1, "k", 1.into()),
        Err(Error::NotOwner(o1))
    );
    sim.crash(0);
    // Nothing changes before the timeout ...
    for _ in 0..9 {
        sim.advance(HEARTBEAT);
        sim.run();
        assert_eq!(sim.replica(1).lock_state(o1), LockState::Waiting);
    }
    // ... and the waiter gets the lock after it.
    for _ in 0..3 {
        sim.advance(HEARTBEAT);
        sim.run();
    }
    assert!(matches!(sim.replica(1).lock_state(o1), LockState::Held(_)));
    assert!(
        sim.node(1)
            .events
            .iter()
            .any(|e| matches!(e, Event::PeerLeft(p) if p.hostname() == "r0"))
    );
}

/// Eviction follows the configured timeout, not the next heartbeat or
/// reclamation pass: here both are much further apart than the timeout.
#[test]
fn a_silent_member_is_evicted_as_its_timeout_passes() {
    let timeout = Duration::from_secs(2);
    let config = Config::default()
        .failure_detection(Duration::from_secs(30), timeout)
        .gc_interval(Duration::from_secs(30));
    let mut a = Replica::new(PeerId::new("a", 1), config.clone());
    let mut b = Replica::new(PeerId::new("b", 2), config);
    loop {
        let to_b: Vec<_> = std::iter::from_fn(|| a.poll_transmit()).collect();
        let to_a: Vec<_> = std::iter::from_fn(|| b.poll_transmit()).collect();
        if to_a.is_empty() && to_b.is_empty() {
            break;
        }
        for t in to_b {
            b.handle_message(&t.bytes).unwrap();
        }
        for t in to_a {
            a.handle_message(&t.bytes).unwrap();
        }
    }
    // `a` last heard from `b` at its first time check, at 0; `b` says
    // nothing more. Time moves only as far as `a`'s timers ask.
    a.handle_timeout(Duration::ZERO);
    let mut now = Duration::ZERO;
    loop {
        while a.poll_transmit().is_some() {}
        if std::iter::from_fn(|| a.poll_event()).any(|e| matches!(e, Event::PeerLeft(_))) {
            break;
        }
        now = a.poll_timeout().expect("a timer is armed");
        assert!(now <= timeout * 2, "no eviction by {now:?}");
        a.handle_timeout(now);
    }
    assert!(now > timeout, "evicted early, at {now:?}");
    assert!(
        now <= timeout + Duration::from_millis(1),
        "evicted at {now:?}, past the {timeout:?} timeout"
    );
}

#[test]
fn a_holder_that_leaves_frees_its_lock_at_once() {
    let mut sim = Sim::new(2, 3);
    sim.with(0, |r| r.set_root(Input::Map(vec![])).unwrap());
    sim.run();
    let o0 = sim.replica(0).root().as_ref_id().unwrap();
    sim.with(0, |r| r.lock(o0, true)).unwrap();
    sim.run();
    let o1 = sim.replica(1).root().as_ref_id().unwrap();
    sim.with(1, |r| r.lock(o1, true)).unwrap();
    sim.run();
    assert_eq!(sim.replica(1).lock_state(o1), LockState::Waiting);
    sim.with(0, Replica::leave);
    sim.run();
    assert!(matches!(sim.replica(1).lock_state(o1), LockState::Held(_)));
}

#[test]
fn a_partitioned_holder_is_told_and_its_writes_are_refused() {
    let config = Config::default().failure_detection(HEARTBEAT, TIMEOUT);
    let mut sim = Sim::with_config(3, 3, config);
    sim.with(0, |r| r.set_root(Input::Map(vec![])).unwrap());
    sim.run();
    let o = [0, 1, 2].map(|i| sim.replica(i).root().as_ref_id().unwrap());
    sim.with(0, |r| r.lock(o[0], true)).unwrap();
    sim.run();
    assert!(matches!(
        sim.replica(0).lock_state(o[0]),
        LockState::Held(_)
    ));
    sim.with(1, |r| r.lock(o[1], true)).unwrap();
    sim.run();
    // The holder is cut off; it keeps writing under what it thinks is its
    // lock while the others evict it and pass the lock on.
    sim.partition(0, true);
    sim.with(0, |r| {
        r.map_set(o[0], "k", "from the partitioned holder".into())
    })
    .unwrap();
    for _ in 0..15 {
        sim.advance(HEARTBEAT);
        sim.run();
    }
    let LockState::Held(token) = sim.replica(1).lock_state(o[1]) else {
        panic!("the waiter should hold the lock after the timeout");
    };
    sim.with(1, |r| r.map_set(o[1], "k", "from the new holder".into()))
        .unwrap();
    sim.run();
    // The partition heals: the old holder learns it was evicted and lost
    // the lock; its writes are refused everywhere.
    sim.partition(0, false);
    sim.run();
    assert!(
        sim.node(0)
            .events
            .iter()
            .any(|e| matches!(e, Event::Evicted))
    );
    assert!(
        sim.node(0)
            .events
            .iter()
            .any(|e| matches!(e, Event::Lock(LockEvent::Lost { object, .. }) if *object == o[0]))
    );
    assert_eq!(sim.with(0, |r| r.lock(o[0], true)), Err(Error::Evicted));
    for i in [1, 2] {
        assert_eq!(
            sim.replica(i).map_get(o[i], "k").unwrap(),
            Some("from the new holder".into()),
            "replica {i}"
        );
    }
    assert!(token > 0);
    // It rejoins as a new incarnation and gets the shared document.
    sim.with(0, |r| r.reincarnate(0xdead));
    for _ in 0..5 {
        sim.advance(HEARTBEAT);
        sim.run();
    }
    assert!(sim.replica(0).is_ready());
    sim.assert_converged();
}

#[test]
fn nobody_starves_under_continuous_contention() {
    let mut sim = Sim::new(4, 3);
    sim.with(0, |r| r.set_root(Input::Map(vec![])).unwrap());
    sim.run();
    let o = [0, 1, 2].map(|i| sim.replica(i).root().as_ref_id().unwrap());
    let mut grants = [0; 3];
    for _ in 0..300 {
        for i in 0..3 {
            let r = sim.replica(i);
            match r.lock_state(o[i]) {
                LockState::Held(_) => {
                    grants[i] += 1;
                    r.unlock(o[i]).unwrap();
                }
                LockState::None | LockState::Refused => {
                    r.lock(o[i], true).unwrap();
                }
                LockState::Waiting => {}
            }
            sim.collect(i);
        }
        sim.steps(5);
    }
    assert!(
        grants.iter().all(|&g| g >= 10),
        "grants per replica: {grants:?}"
    );
}

#[test]
fn every_replica_shows_the_lock_table_and_when_it_last_heard_each_member() {
    let config = Config::default().failure_detection(HEARTBEAT, TIMEOUT);
    let mut sim = Sim::with_config(3, 3, config);
    sim.with(0, |r| r.set_root(Input::Map(vec![])).unwrap());
    sim.run();
    let root = |sim: &mut Sim, i: usize| sim.replica(i).root().as_ref_id().unwrap();
    let o0 = root(&mut sim, 0);
    sim.with(0, |r| r.lock(o0, true)).unwrap();
    sim.run();
    let LockState::Held(token) = sim.replica(0).lock_state(o0) else {
        panic!("r0 holds the lock");
    };
    let o1 = root(&mut sim, 1);
    sim.with(1, |r| r.lock(o1, true)).unwrap();
    sim.run();
    // r2 only watches: it learns the queue, and r0's token from r0's
    // acknowledgement of r1's request.
    let table = sim.replica(2).lock_table();
    assert_eq!(table.len(), 1);
    assert_eq!(table[0].object, root(&mut sim, 2));
    let queue: Vec<(&str, Option<u64>)> = table[0]
        .queue
        .iter()
        .map(|(p, t)| (p.hostname(), *t))
        .collect();
    assert_eq!(queue, [("r0", Some(token)), ("r1", None)]);
    assert_eq!(table[0].last_token, token);

    sim.advance(HEARTBEAT);
    sim.run();
    let peers = sim.replica(2).peers();
    let names: Vec<&str> = peers.iter().map(|p| p.peer.hostname()).collect();
    assert_eq!(names, ["r0", "r1"]);
    assert!(peers.iter().all(|p| p.last_heard.is_some()), "{peers:?}");
    sim.crash(0);
    for _ in 0..3 {
        sim.advance(HEARTBEAT);
        sim.run();
    }
    let peers = sim.replica(2).peers();
    let heard = |name: &str| {
        peers
            .iter()
            .find(|p| p.peer.hostname() == name)
            .and_then(|p| p.last_heard)
            .unwrap()
    };
    assert!(
        heard("r0") < heard("r1"),
        "a crashed member was heard last before the live one: {peers:?}"
    );
}
