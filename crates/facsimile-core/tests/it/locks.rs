//! Locks under random requests, releases, writes, crashes and joins on five
//! replicas: never two holders, no request waits forever once the system is
//! quiet, fencing tokens strictly increase, a holder sees every write made
//! before its grant and no other replica's write while it holds, and every
//! replica converges.

use std::collections::HashMap;
use std::time::Duration;

use facsimile_core::sim::{Sim, Verdict, run_seeds};
use facsimile_core::{
    Config, Error, Event, Input, LockEvent, LockState, ObjectId, ObjectKind, PeerId, Replica,
    Value, WireFormat,
};
use rand::Rng;

use crate::support;

const HEARTBEAT: Duration = Duration::from_millis(100);
const TIMEOUT: Duration = Duration::from_secs(1);

/// The two lockable objects of the test document on replica `r`, by name.
fn objects(r: &mut Replica) -> Option<[ObjectId; 2]> {
    let root = r.root().as_ref_id()?;
    let m = r.map_get(root, "m").ok()??.as_ref_id()?;
    let a = r.map_get(root, "a").ok()??.as_ref_id()?;
    Some([m, a])
}

/// An object by the id its creator gave it: the same on every replica.
type Name = (PeerId, u64);

/// A write accepted by its replica: the value it put, under `key` in the
/// map or anywhere in the array.
struct Write {
    object: Name,
    key: Option<String>,
    value: i64,
}

/// What an object holds, as a replica shows it.
#[derive(Debug, PartialEq)]
enum Content {
    Map(Vec<(String, Value)>),
    Array(Vec<Value>),
}

fn content(r: &mut Replica, o: ObjectId) -> Content {
    match r.kind(o) {
        Some(ObjectKind::Array) => Content::Array(r.list_values(o).unwrap()),
        // In key order, as a map iterates.
        _ => Content::Map(
            r.map_entries(o)
                .unwrap()
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        ),
    }
}

struct Checker {
    seen: Vec<usize>,
    last_token: HashMap<Name, u64>,
    /// Every write accepted so far, in the order made.
    writes: Vec<Write>,
    /// Per holder and object: the grant's token and the object as the
    /// holder's own writes left it.
    held: HashMap<(usize, Name), (u64, Content)>,
    /// The replica granted last, until the scenario looks.
    granted: Option<usize>,
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

    /// Replica `i` wrote to `o`: if it holds the lock, what it left there
    /// is what the object must hold until it lets go.
    fn wrote(&mut self, sim: &mut Sim, i: usize, o: ObjectId) {
        let r = sim.replica(i);
        if let Some((token, held)) = self.held.get_mut(&(i, r.object_origin(o))) {
            if r.lock_state(o) == LockState::Held(*token) {
                *held = content(r, o);
            }
        }
    }

    /// Replica `i`, granted `o` just now, has every write made to it before.
    fn granted(&mut self, seed: u64, r: &mut Replica, i: usize, o: ObjectId, token: u64) {
        let name = r.object_origin(o);
        let now = content(r, o);
        for w in self.writes.iter().filter(|w| w.object == name) {
            let seen = match (&w.key, &now) {
                (Some(key), Content::Map(entries)) => entries
                    .iter()
                    .any(|(k, v)| k == key && *v == Value::Int(w.value)),
                (None, Content::Array(values)) => values.contains(&Value::Int(w.value)),
                _ => unreachable!("a write matches its object's kind"),
            };
            assert!(
                seen,
                "seed {seed}: replica {i}, granted the lock, misses the write of {} under {:?}",
                w.value, w.key
            );
        }
        self.held.insert((i, name), (token, now));
    }

    /// Checks the grants reported since the last call, that no object has
    /// two holders among live replicas, and that a holder's objects change
    /// only by its own writes.
    fn check(&mut self, sim: &mut Sim) {
        let seed = sim.seed();
        self.seen.resize(sim.len(), 0);
        for i in 0..sim.len() {
            let events: Vec<Event> = sim.node(i).events[self.seen[i]..].to_vec();
            self.seen[i] += events.len();
            for e in events {
                if let Event::Lock(LockEvent::Granted { object, token }) = e {
                    let r = sim.replica(i);
                    let name = r.object_origin(object);
                    let last = self.last_token.entry(name.clone()).or_insert(0);
                    assert!(token > *last, "seed {seed}: token {token} after {last}");
                    *last = token;
                    self.granted(seed, r, i, object, token);
                    self.granted = Some(i);
                }
            }
        }
        self.held.retain(|(i, name), (token, held)| {
            let r = sim.replica(*i);
            let Some(o) =
                objects(r).and_then(|objs| objs.into_iter().find(|&o| r.object_origin(o) == *name))
            else {
                return false;
            };
            if r.lock_state(o) != LockState::Held(*token) {
                return false;
            }
            assert_eq!(
                content(r, o),
                *held,
                "seed {seed}: replica {i} saw another's write while holding the lock"
            );
            true
        });
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

/// Replica `gone`, just granted, goes once its messages have arrived, and
/// one peer's transport reports it at once (one that waits for a lock, if
/// any): that peer reads the eviction while releases, such as the one that
/// granted `gone`, may still be in flight to it. (With its own messages in
/// flight, the eviction would cut its stream unevenly: a limit of FIFO
/// broadcast, DESIGN.md, "Locks".)
fn evict_at_once(sim: &mut Sim, gone: usize) {
    let peer = sim.replica(gone).peer_id().clone();
    sim.deliver_from(gone);
    sim.crash(gone);
    let others = sim.online();
    let waiting = others.iter().copied().find(|&j| {
        let r = sim.replica(j);
        objects(r).is_some_and(|objs| objs.iter().any(|&o| r.lock_state(o) == LockState::Waiting))
    });
    let j = match waiting {
        Some(j) => j,
        None => others[sim.rng().random_range(0..others.len())],
    };
    sim.with(j, |r| r.evict(&peer));
}

fn scenario(seed: u64) {
    let config = Config::default().failure_detection(HEARTBEAT, TIMEOUT);
    let mut sim = Sim::with_config(seed, 5, config);
    let mut checker = Checker {
        seen: Vec::new(),
        last_token: HashMap::new(),
        writes: Vec::new(),
        held: HashMap::new(),
        granted: None,
    };
    sim.with(0, |r| {
        r.set_root(Input::Map(vec![
            ("m".into(), Input::Map(vec![])),
            ("a".into(), Input::Array(vec![])),
        ]))
        .unwrap();
    });
    sim.run();
    let (mut crashed, mut evicted) = (0, 0);
    for step in 0..150 {
        let online = sim.online();
        let i = online[sim.rng().random_range(0..online.len())];
        let action = sim.rng().random_range(0..100);
        let which = sim.rng().random_range(0..2);
        let r = sim.replica(i);
        if let Some(objs) = objects(r).filter(|_| r.is_ready()) {
            let o = objs[which];
            match action {
                0..=19 => {
                    let _ = r.lock(o, true);
                }
                20..=24 => {
                    // Everyone asks at once: requests of one counter, whose
                    // tokens run ahead of their counters.
                    for j in sim.online() {
                        let r = sim.replica(j);
                        if let Some(objs) = objects(r).filter(|_| r.is_ready()) {
                            let _ = r.lock(objs[which], true);
                        }
                    }
                    for j in sim.online() {
                        sim.collect(j);
                    }
                }
                25..=34 => match r.lock(o, false) {
                    Ok(_) | Err(Error::Locked(_)) => {}
                    Err(e) => panic!("seed {seed}: {:?} step {step}: {e}", r.peer_id()),
                },
                35..=59 => {
                    let _ = r.unlock(o);
                }
                60..=89 => {
                    // Every other map write goes to a key of its own, so
                    // that a grant can be checked for each.
                    let value = step as i64;
                    let key = (which == 0).then(|| match step % 2 {
                        0 => "k".to_string(),
                        _ => format!("k{step}"),
                    });
                    let result = match &key {
                        Some(key) => r.map_set(o, key, Input::from(value)).map(|_| ()),
                        None => r.list_splice(o, 0, 0, vec![Input::from(value)]).map(|_| ()),
                    };
                    match result {
                        Ok(()) => {
                            checker.wrote(&mut sim, i, o);
                            // An overwritten value is not looked for.
                            if key.as_deref() != Some("k") {
                                let object = sim.replica(i).object_origin(o);
                                checker.writes.push(Write { object, key, value });
                            }
                        }
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
            let fresh = checker.granted.take();
            if let Some(g) = fresh.filter(|_| evicted < 2 && sim.online().len() > 2) {
                if sim.rng().random_range(0..4) == 0 {
                    evicted += 1;
                    evict_at_once(&mut sim, g);
                    checker.check(&mut sim);
                }
            }
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

/// A departed requester may hold a token nobody heard of: one above the
/// highest it knew. A release read after the departure raises what is known
/// to that token, and the next grant must still pass the departed one's.
#[test]
fn a_departure_read_before_the_previous_release_does_not_repeat_a_token() {
    let c = Config::default();
    let mut sim = Sim::with_hosts(1, [("z", c.clone()), ("y", c.clone()), ("a", c)]);
    sim.with(0, |r| r.set_root(Input::Map(vec![])).unwrap());
    sim.run();
    let o = [0, 1, 2].map(|i| sim.replica(i).root().as_ref_id().unwrap());
    // All three requests take one counter: z, y, a is their order.
    for (i, &o) in o.iter().enumerate() {
        sim.replica(i).lock(o, true).unwrap();
    }
    for i in 0..3 {
        sim.collect(i);
    }
    sim.run();
    let LockState::Held(tz) = sim.replica(0).lock_state(o[0]) else {
        panic!("z heads every queue");
    };
    // z's release reaches y, which is granted and then leaves a's view
    // before the release reaches a.
    sim.intercept(|from, _| match from {
        0 => Verdict::Hold,
        _ => Verdict::Deliver,
    });
    sim.with(0, |r| r.unlock(o[0]).unwrap());
    sim.stop_intercepting();
    let release = sim.held(0).pop_front().unwrap();
    sim.replica(1).handle_message(&release.bytes).unwrap();
    let LockState::Held(ty) = sim.replica(1).lock_state(o[1]) else {
        panic!("y follows z");
    };
    let y = sim.replica(1).peer_id().clone();
    sim.replica(2).evict(&y);
    sim.replica(2).handle_message(&release.bytes).unwrap();
    let LockState::Held(ta) = sim.replica(2).lock_state(o[2]) else {
        panic!("a follows y once y is gone");
    };
    assert!(tz < ty, "y's token {ty} after z's {tz}");
    assert!(ta > ty, "a granted token {ta}, y may hold {ty}");
}

/// A replica asks again for a lock once its previous request is withdrawn,
/// or granted and released, even in the same message: its peers take the
/// new request (only a second one queued beside the first is refused).
#[test]
fn a_request_made_again_after_a_release_or_withdrawal_is_taken() {
    let mut sim = Sim::new(6, 3);
    sim.with(0, |r| r.set_root(Input::Map(vec![])).unwrap());
    sim.run();
    let o = [0, 1, 2].map(|i| sim.replica(i).root().as_ref_id().unwrap());
    sim.with(1, |r| r.lock(o[1], true)).unwrap();
    sim.run();
    // Requested, withdrawn and requested again, in one message, while r1
    // holds the lock.
    sim.with(0, |r| {
        r.begin();
        r.lock(o[0], true).unwrap();
        r.unlock(o[0]).unwrap();
        r.lock(o[0], true).unwrap();
        r.commit();
    });
    sim.run();
    let queue = |sim: &mut Sim, i: usize| -> Vec<String> {
        let table = sim.replica(i).lock_table();
        table
            .iter()
            .flat_map(|e| e.queue.iter().map(|(p, _)| p.hostname().to_string()))
            .collect()
    };
    for i in 0..3 {
        assert_eq!(queue(&mut sim, i), ["r1", "r0"], "replica {i}");
    }
    // Granted, released and requested again, in one message.
    sim.with(1, |r| r.unlock(o[1])).unwrap();
    sim.run();
    let LockState::Held(first) = sim.replica(0).lock_state(o[0]) else {
        panic!("r0 follows r1");
    };
    sim.with(0, |r| {
        r.begin();
        r.unlock(o[0]).unwrap();
        r.lock(o[0], true).unwrap();
        r.commit();
    });
    sim.run();
    let LockState::Held(second) = sim.replica(0).lock_state(o[0]) else {
        panic!("r0 is granted again");
    };
    assert!(second > first);
    for i in 0..3 {
        assert_eq!(queue(&mut sim, i), ["r0"], "replica {i}");
    }
    // And in messages of their own.
    sim.with(0, |r| r.unlock(o[0])).unwrap();
    sim.with(0, |r| r.lock(o[0], true)).unwrap();
    sim.run();
    assert!(matches!(sim.replica(0).lock_state(o[0]), LockState::Held(t) if t > second));
    sim.settle();
    sim.assert_converged();
}

/// Replica `i` locks the root and releases it; returns the hostnames each
/// acknowledgement of its request named, by acknowledger.
fn acknowledged_members(sim: &mut Sim, i: usize) -> Vec<(usize, Vec<String>)> {
    let root = sim[i].root().as_ref_id().expect("a root map");
    sim.replica(i).lock(root, true).unwrap();
    let mut lists = Vec::new();
    while let Some((from, t)) = sim.run_until(|_, t| {
        support::kind_of(&t.bytes).is_some()
            && String::from_utf8_lossy(&t.bytes).contains("LockAck")
    }) {
        let v: serde_json::Value =
            serde_json::from_slice(&support::edit_json(&t.bytes, |_| {})).unwrap();
        for op in v["body"]["Ops"]["ops"].as_array().unwrap() {
            if let Some(members) = op["LockAck"]["members"].as_array() {
                let mut hosts: Vec<String> = members
                    .iter()
                    .map(|m| m[1].as_str().unwrap().to_string())
                    .collect();
                hosts.sort();
                lists.push((from, hosts));
            }
        }
        sim.send(from, t);
    }
    assert!(matches!(sim[i].lock_state(root), LockState::Held(_)));
    sim.replica(i).unlock(root).unwrap();
    sim.run();
    lists.sort();
    lists
}

/// An acknowledgement names only the members its sender's stream has not
/// named yet: every receiver reads the stream whole, or takes a state that
/// covers what it skips. Naming every member in every acknowledgement cost
/// each a tag and a hostname per member: at 16 members with 7-byte
/// hostnames, 192 of a binary acknowledgement's 207 bytes, and 15 of them
/// for each request.
#[test]
fn an_acknowledgement_names_each_member_once_per_stream() {
    let config = Config::default().wire_format(WireFormat::Json);
    let mut sim = Sim::with_config(3, 3, config.clone());
    sim.with(0, |r| {
        r.set_root(Input::Map(vec![])).unwrap();
    });
    sim.run();
    let all = |hosts: &[&str]| hosts.iter().map(|h| h.to_string()).collect::<Vec<_>>();
    assert_eq!(
        acknowledged_members(&mut sim, 0),
        [(1, all(&["r0", "r1", "r2"])), (2, all(&["r0", "r1", "r2"]))]
    );
    // Replica 0 acknowledges for the first time; replica 2 named them all.
    assert_eq!(
        acknowledged_members(&mut sim, 1),
        [(0, all(&["r0", "r1", "r2"])), (2, vec![])]
    );
    // A joiner is named once by every member that knows it, and names
    // every member it knows once itself.
    let j = sim.add_with_config("late", config);
    sim.with(j, Replica::sync);
    sim.run();
    assert!(sim[j].is_ready());
    assert_eq!(
        acknowledged_members(&mut sim, 0),
        [
            (1, all(&["late"])),
            (2, all(&["late"])),
            (j, all(&["late", "r0", "r1", "r2"]))
        ]
    );
    assert_eq!(
        acknowledged_members(&mut sim, 0),
        [(1, vec![]), (2, vec![]), (j, vec![])]
    );
    sim.settle();
    sim.assert_converged();
}
