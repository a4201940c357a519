//! A replica whose lease ran out on an ordered log while it was cut off
//! starts over from a snapshot, and its successor carries over the writes
//! the log refused that depended on no lock and whose references are still
//! there ([`Replica::carry_over`]); the others are counted lost. Every
//! replica converges.

use std::time::Duration;

use facsimile_core::sim::run_seeds;
use facsimile_core::{
    CarriedOver, Config, Event, Input, LockState, ObjectId, ObjectKind, PeerId, Replica,
    Succession, Value,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

const LEASE: Duration = Duration::from_secs(3);

/// A shared log; replica 0 can be cut off from it (its messages wait).
struct Log {
    entries: Vec<(Vec<u8>, Duration)>,
    replicas: Vec<Replica>,
    cursors: Vec<usize>,
    /// Messages of a cut-off replica, stored once it is back.
    held: Vec<Vec<u8>>,
    cut: bool,
    evicted: bool,
    now: Duration,
    /// A log snapshot and the entries it covers.
    snapshot: Option<(Vec<u8>, usize)>,
    incarnation: u32,
}

impl Log {
    fn new(n: usize) -> Log {
        let mut log = Log {
            entries: Vec::new(),
            replicas: Vec::new(),
            cursors: Vec::new(),
            held: Vec::new(),
            cut: false,
            evicted: false,
            now: LEASE,
            snapshot: None,
            incarnation: 0,
        };
        for i in 0..n {
            let me = log.me(i);
            log.replicas.push(Replica::new(me, config()));
            log.cursors.push(0);
            log.publish(i);
        }
        // Each writes once it has read its own hello back.
        log.run();
        log
    }

    fn me(&mut self, i: usize) -> PeerId {
        self.incarnation += 1;
        PeerId::new(format!("r{i}"), self.incarnation)
    }

    fn publish(&mut self, i: usize) {
        while let Some(t) = self.replicas[i].poll_transmit() {
            match i == 0 && self.cut {
                true => self.held.push(t.bytes.to_vec()),
                false => self.entries.push((t.bytes.to_vec(), self.now)),
            }
        }
        while let Some(e) = self.replicas[i].poll_event() {
            if i == 0 && matches!(e, Event::Evicted) {
                self.evicted = true;
            }
        }
    }

    /// Replica `i` reads the next entry; false when it has read them all,
    /// or it is replica 0 and cut off or evicted (it stops reading then, as
    /// a transport does, and reloads).
    fn read(&mut self, i: usize) -> bool {
        let c = self.cursors[i];
        if c >= self.entries.len() || (i == 0 && (self.cut || self.evicted)) {
            return false;
        }
        let (bytes, time) = self.entries[c].clone();
        self.cursors[i] += 1;
        self.replicas[i]
            .handle_ordered(&bytes, c as u64 + 1, time)
            .unwrap();
        self.publish(i);
        true
    }

    fn run(&mut self) {
        loop {
            let mut any = false;
            for i in 0..self.replicas.len() {
                while self.read(i) {
                    any = true;
                }
            }
            if !any {
                return;
            }
        }
    }

    /// Time passes for the replicas not cut off; they read what they wrote.
    fn advance(&mut self, d: Duration) {
        self.now += d;
        for i in 0..self.replicas.len() {
            if i == 0 && self.cut {
                continue;
            }
            let now = self.now;
            self.replicas[i].handle_timeout(now);
            self.publish(i);
        }
        self.run();
    }

    /// Replica 1 saves a snapshot of the log.
    fn save_snapshot(&mut self) {
        self.run();
        let bytes = self.replicas[1].log_snapshot().expect("a clean state");
        self.snapshot = Some((bytes, self.cursors[1]));
    }

    /// Replica 0 is cut off (paused, partitioned): what it writes waits.
    fn cut_off(&mut self) {
        self.run();
        self.cut = true;
    }

    /// The others go on past replica 0's lease; then replica 0 is back: its
    /// messages reach the log (refused there), and it reads until it finds
    /// its lease ran out.
    fn lapse_and_return(&mut self) {
        for _ in 0..8 {
            self.advance(LEASE / 4);
        }
        self.cut = false;
        for bytes in std::mem::take(&mut self.held) {
            self.entries.push((bytes, self.now));
        }
        self.run();
        assert!(self.evicted, "replica 0's lease ran out");
    }

    /// Replica 0 starts over from the snapshot, reads on to where it had
    /// read, sends its hello and reads on until it reads that back, as the
    /// NATS transport does; then its successor takes its place and carries
    /// its lost writes over.
    fn reload(&mut self) -> (CarriedOver, Succession) {
        let (bytes, from) = self.snapshot.clone().expect("a snapshot");
        let me = self.me(0);
        let (mut next, mut succession) = self.replicas[0].successor(me, Some(&bytes)).unwrap();
        for c in from..self.cursors[0] {
            let (bytes, time) = &self.entries[c];
            next.handle_ordered(bytes, c as u64 + 1, *time).unwrap();
        }
        let hello = next.poll_transmit().expect("a hello");
        self.entries.push((hello.bytes.to_vec(), self.now));
        while !next.joined_log() {
            let c = self.cursors[0];
            let (bytes, time) = &self.entries[c];
            next.handle_ordered(bytes, c as u64 + 1, *time).unwrap();
            self.cursors[0] += 1;
        }
        let mut old = std::mem::replace(&mut self.replicas[0], next);
        self.replicas[0].extend_succession(&old, &mut succession);
        let carried = self.replicas[0].carry_over(&mut old, &succession);
        old.abandon();
        while let Some(t) = old.poll_transmit() {
            self.entries.push((t.bytes.to_vec(), self.now));
        }
        self.evicted = false;
        self.publish(0);
        self.run();
        (carried, succession)
    }

    /// Every replica holds the same document.
    fn converged(&mut self) {
        self.advance(LEASE / 4);
        let first = self.replicas[0].snapshot();
        for i in 1..self.replicas.len() {
            if self.replicas[i].snapshot() != first {
                let dumps: Vec<String> = self.replicas.iter_mut().map(|r| r.debug_dump()).collect();
                panic!("replicas diverged:\n{}", dumps.join("\n"));
            }
        }
    }
}

fn config() -> Config {
    Config::default().ordered(LEASE)
}

fn root(r: &Replica) -> ObjectId {
    r.root().as_ref_id().expect("a root object")
}

fn at(r: &Replica, obj: ObjectId, key: &str) -> ObjectId {
    r.map_get(obj, key).unwrap().unwrap().as_ref_id().unwrap()
}

/// Two replicas on a root map holding a list `["a", "b", "c"]`, a
/// snapshot of that, and replica 0 cut off.
fn setup() -> Log {
    let mut log = Log::new(2);
    log.replicas[0]
        .set_root(Input::from(serde_json::json!({ "list": ["a", "b", "c"] })))
        .unwrap();
    log.publish(0);
    log.run();
    log.save_snapshot();
    log.cut_off();
    log
}

#[test]
fn a_map_write_and_an_insert_after_a_live_element_are_carried_over() {
    let mut log = setup();
    let a = &mut log.replicas[0];
    let (root_a, list_a) = (root(a), at(a, root(a), "list"));
    a.map_set(root_a, "k", Input::from(1)).unwrap();
    // After "a".
    a.list_splice(list_a, 1, 0, [Input::from("x")]).unwrap();
    // After the element just inserted: a lost write's own element.
    a.list_splice(list_a, 2, 0, [Input::from("y")]).unwrap();
    a.list_set(list_a, 3, Input::from("B")).unwrap();
    a.map_delete(root_a, "missing").unwrap();
    log.publish(0);
    log.lapse_and_return();
    let (carried, s) = log.reload();
    assert_eq!((carried.carried(), carried.lost()), (4, 0));
    let (root_a, list_a) = (root_a.after(&s), list_a.after(&s));
    let b = &log.replicas[1];
    let (root_b, list_b) = (root(b), at(b, root(b), "list"));
    assert_eq!(b.map_get(root_b, "k").unwrap(), Some(Value::Int(1)));
    let want: Vec<Value> = ["a", "x", "y", "B", "c"].map(Value::from).to_vec();
    assert_eq!(b.list_values(list_b).unwrap(), want);
    let a = &log.replicas[0];
    assert_eq!(a.map_get(root_a, "k").unwrap(), Some(Value::Int(1)));
    assert_eq!(a.list_values(list_a).unwrap(), want);
    log.converged();
}

#[test]
fn an_insert_after_an_element_deleted_and_reclaimed_meanwhile_is_lost() {
    let mut log = setup();
    let a = &mut log.replicas[0];
    let list_a = at(a, root(a), "list");
    // After "b", which replica 1 deletes meanwhile; and after "c", kept.
    a.list_splice(list_a, 2, 0, [Input::from("x")]).unwrap();
    a.list_splice(list_a, 4, 0, [Input::from("z")]).unwrap();
    log.publish(0);
    let b = &mut log.replicas[1];
    let list_b = at(b, root(b), "list");
    b.list_splice(list_b, 1, 1, []).unwrap();
    log.publish(1);
    let hidden = log.replicas[1].hidden_count();
    log.lapse_and_return();
    // Replica 0 went, and with it the last member that had not
    // acknowledged the delete: replica 1 reclaimed the dead slot.
    assert!(log.replicas[1].hidden_count() < hidden, "reclaimed");
    let (carried, _) = log.reload();
    assert_eq!((carried.carried(), carried.lost()), (1, 1));
    let b = &log.replicas[1];
    let want: Vec<Value> = ["a", "c", "z"].map(Value::from).to_vec();
    assert_eq!(b.list_values(at(b, root(b), "list")).unwrap(), want);
    log.converged();
}

#[test]
fn a_write_storing_an_object_detached_before_the_successor_joined_is_lost() {
    let mut log = setup();
    let a = &mut log.replicas[0];
    let list_a = at(a, root(a), "list");
    // The list again, under a new root.
    let stored = Input::Array(vec![Input::Value(Value::Ref(list_a))]);
    a.set_root(stored).unwrap();
    log.publish(0);
    log.lapse_and_return();
    // Past where replica 0 had read, and before its successor's hello:
    // the old root and its list are detached and, with replica 0 gone and
    // the successor not there yet, reclaimed.
    let b = &mut log.replicas[1];
    let list_b = at(b, root(b), "list");
    b.set_root(Input::from(serde_json::json!({ "other": 1 })))
        .unwrap();
    log.publish(1);
    for _ in 0..4 {
        log.advance(LEASE / 4);
    }
    assert_eq!(log.replicas[1].kind(list_b), None, "reclaimed");
    // Judged where replica 0 had read, the list would still be there, and
    // storing it again would leave replica 1 unable to follow.
    let (carried, _) = log.reload();
    assert_eq!((carried.carried(), carried.lost()), (0, 1));
    let b = &log.replicas[1];
    assert_eq!(b.map_get(root(b), "other").unwrap(), Some(Value::Int(1)));
    log.converged();
}

#[test]
fn writes_made_while_or_before_holding_a_lock_are_lost() {
    let mut log = setup();
    log.cut = false;
    let a = &mut log.replicas[0];
    let (root_a, list_a) = (root(a), at(a, root(a), "list"));
    a.lock(list_a, true).unwrap();
    log.publish(0);
    log.run();
    assert!(matches!(
        log.replicas[0].lock_state(list_a),
        LockState::Held(_)
    ));
    log.cut_off();
    let a = &mut log.replicas[0];
    // Before and while it holds the lock: both may have been computed
    // from the locked state.
    a.map_set(root_a, "held", Input::from(1)).unwrap();
    a.list_splice(list_a, 3, 0, [Input::from("d")]).unwrap();
    log.publish(0);
    log.lapse_and_return();
    let (carried, _) = log.reload();
    assert_eq!((carried.carried(), carried.lost()), (0, 2));
    let b = &log.replicas[1];
    assert_eq!(b.map_get(root(b), "held").unwrap(), None);
    assert_eq!(b.list_len(at(b, root(b), "list")).unwrap(), 3);
    log.converged();
}

#[test]
fn writes_after_a_lock_was_released_are_carried_over_and_those_before_are_lost() {
    let mut log = setup();
    log.cut = false;
    let a = &mut log.replicas[0];
    let (root_a, list_a) = (root(a), at(a, root(a), "list"));
    a.lock(list_a, true).unwrap();
    log.publish(0);
    log.run();
    log.cut_off();
    let a = &mut log.replicas[0];
    a.map_set(root_a, "before", Input::from(1)).unwrap();
    a.unlock(list_a).unwrap();
    a.map_set(root_a, "after", Input::from(2)).unwrap();
    log.publish(0);
    log.lapse_and_return();
    let (carried, _) = log.reload();
    assert_eq!((carried.carried(), carried.lost()), (1, 1));
    let b = &log.replicas[1];
    assert_eq!(b.map_get(root(b), "before").unwrap(), None);
    assert_eq!(b.map_get(root(b), "after").unwrap(), Some(Value::Int(2)));
    log.converged();
}

#[test]
fn objects_the_lost_writes_created_are_created_again_with_new_ids() {
    let mut log = setup();
    let a = &mut log.replicas[0];
    let root_a = root(a);
    a.map_set(root_a, "made", Input::from(serde_json::json!({ "n": 1 })))
        .unwrap();
    let made = at(a, root_a, "made");
    a.map_set(made, "filled", Input::from(2)).unwrap();
    a.map_set(made, "list", Input::Array(vec![])).unwrap();
    let list = at(a, made, "list");
    a.list_splice(list, 0, 0, [Input::from("first"), Input::from("second")])
        .unwrap();
    a.list_splice(list, 0, 1, []).unwrap();
    a.list_reorder(list, &[0]).unwrap();
    log.publish(0);
    log.lapse_and_return();
    let (carried, s) = log.reload();
    // Stored "made", filled it, stored the list, inserted, deleted.
    assert_eq!((carried.carried(), carried.lost()), (5, 0));
    let a = &log.replicas[0];
    let made_now = carried.rename(made.after(&s));
    assert_ne!(made_now, made.after(&s), "a new id");
    assert_eq!(at(a, root(a), "made"), made_now);
    assert_eq!(a.map_get(made_now, "filled").unwrap(), Some(Value::Int(2)));
    let list_now = carried.rename(list.after(&s));
    assert_eq!(
        a.list_values(list_now).unwrap(),
        vec![Value::from("second")]
    );
    let b = &log.replicas[1];
    let made_b = at(b, root(b), "made");
    assert_eq!(b.map_get(made_b, "n").unwrap(), Some(Value::Int(1)));
    assert_eq!(b.map_get(made_b, "filled").unwrap(), Some(Value::Int(2)));
    log.converged();
}

#[test]
fn a_write_to_a_map_deleted_or_locked_meanwhile_is_lost() {
    let mut log = Log::new(2);
    log.replicas[0]
        .set_root(Input::from(
            serde_json::json!({ "gone": {}, "locked": {}, "kept": {} }),
        ))
        .unwrap();
    log.publish(0);
    log.run();
    log.save_snapshot();
    log.cut_off();
    let a = &mut log.replicas[0];
    let root_a = root(a);
    for key in ["gone", "locked", "kept"] {
        let m = at(a, root_a, key);
        a.map_set(m, "k", Input::from(1)).unwrap();
    }
    log.publish(0);
    let b = &mut log.replicas[1];
    let root_b = root(b);
    let locked = at(b, root_b, "locked");
    b.map_delete(root_b, "gone").unwrap();
    b.lock(locked, true).unwrap();
    log.publish(1);
    log.lapse_and_return();
    let (carried, _) = log.reload();
    assert_eq!((carried.carried(), carried.lost()), (1, 2));
    let b = &log.replicas[1];
    assert_eq!(b.map_get(locked, "k").unwrap(), None);
    let kept = at(b, root(b), "kept");
    assert_eq!(b.map_get(kept, "k").unwrap(), Some(Value::Int(1)));
    log.converged();
}

#[test]
fn a_key_keeps_the_last_write_by_stamp_as_if_the_lost_write_had_been_accepted() {
    let mut log = setup();
    let a = &mut log.replicas[0];
    let root_a = root(a);
    // Written twice while cut off: the second write stands.
    a.map_set(root_a, "twice", Input::from(1)).unwrap();
    a.map_set(root_a, "twice", Input::from(2)).unwrap();
    // Written by both; replica 1's write is the later on "theirs", replica
    // 0's on "ours" (a write's stamp follows its writer's clock).
    a.map_set(root_a, "theirs", Input::from("a")).unwrap();
    let list_a = at(a, root_a, "list");
    a.list_set(list_a, 0, Input::from("a0")).unwrap();
    for i in 0..50 {
        a.map_set(root_a, "tick", Input::from(i)).unwrap();
    }
    a.map_set(root_a, "ours", Input::from("a")).unwrap();
    log.publish(0);
    let b = &mut log.replicas[1];
    let root_b = root(b);
    b.map_set(root_b, "ours", Input::from("b")).unwrap();
    for i in 0..100 {
        b.map_set(root_b, "tock", Input::from(i)).unwrap();
    }
    b.map_set(root_b, "theirs", Input::from("b")).unwrap();
    let list_b = at(b, root_b, "list");
    b.list_set(list_b, 0, Input::from("b0")).unwrap();
    log.publish(1);
    log.lapse_and_return();
    let (carried, _) = log.reload();
    assert_eq!((carried.carried(), carried.lost()), (55, 0));
    let b = &log.replicas[1];
    let get = |key| b.map_get(root(b), key).unwrap();
    assert_eq!(get("twice"), Some(Value::Int(2)));
    assert_eq!(get("ours"), Some(Value::from("a")));
    assert_eq!(get("theirs"), Some(Value::from("b")));
    assert_eq!(get("tick"), Some(Value::Int(49)));
    let list_b = at(b, root(b), "list");
    assert_eq!(b.list_get(list_b, 0).unwrap(), Some(Value::from("b0")));
    log.converged();
}

#[test]
fn a_move_after_a_live_element_is_carried_over() {
    let mut log = setup();
    let a = &mut log.replicas[0];
    let list_a = at(a, root(a), "list");
    // ["c", "a", "b"], then "b" first.
    a.list_reorder(list_a, &[2, 0, 1]).unwrap();
    a.list_reorder(list_a, &[2, 0, 1]).unwrap();
    log.publish(0);
    log.lapse_and_return();
    let (carried, _) = log.reload();
    assert_eq!(carried.lost(), 0);
    let b = &log.replicas[1];
    let want: Vec<Value> = ["b", "c", "a"].map(Value::from).to_vec();
    assert_eq!(b.list_values(at(b, root(b), "list")).unwrap(), want);
    log.converged();
}

/// A random write to a random reachable object of `r`: the kinds of
/// writes a lapse may leave unacknowledged. Refused ones are skipped.
fn random_write(r: &mut Replica, rng: &mut SmallRng) {
    let objects = r.reachable_objects();
    let obj = objects[rng.random_range(0..objects.len())];
    let value = |rng: &mut SmallRng, objects: &[ObjectId]| match rng.random_range(0..6) {
        0 => Input::Map(vec![("n".into(), Input::from(1))]),
        1 => Input::Array(vec![Input::from(1), Input::from(2)]),
        2 => Input::Value(Value::Ref(objects[rng.random_range(0..objects.len())])),
        _ => Input::from(rng.random_range(0..100i64)),
    };
    let _ = match r.kind(obj) {
        Some(ObjectKind::Map) => {
            let key = ["a", "b", "c", "d"][rng.random_range(0..4)];
            match rng.random_range(0..4) {
                0 => r.map_delete(obj, key).map(|_| ()),
                _ => r.map_set(obj, key, value(rng, &objects)).map(|_| ()),
            }
        }
        Some(ObjectKind::Array) => {
            let len = r.list_len(obj).unwrap();
            match rng.random_range(0..5) {
                0 if len > 0 => r
                    .list_splice(obj, rng.random_range(0..len), 1, [])
                    .map(|_| ()),
                1 if len > 0 => r
                    .list_set(obj, rng.random_range(0..len), value(rng, &objects))
                    .map(|_| ()),
                2 if len > 1 => {
                    let mut order: Vec<usize> = (0..len).collect();
                    order.swap(0, rng.random_range(1..len));
                    r.list_reorder(obj, &order).map(|_| ())
                }
                _ => {
                    let at = rng.random_range(0..=len);
                    r.list_splice(obj, at, 0, [value(rng, &objects)])
                        .map(|_| ())
                }
            }
        }
        None => Ok(()),
    };
}

/// Random writes on both sides of a lapse, and locks taken on either side
/// (released at random on replica 0's): whatever is carried over, every
/// replica converges with its invariants intact.
fn random_lapse(seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut log = Log::new(2);
    log.replicas[0]
        .set_root(Input::from(
            serde_json::json!({ "m": { "a": 1 }, "l": [1, 2, 3], "x": {} }),
        ))
        .unwrap();
    log.publish(0);
    log.run();
    for _ in 0..rng.random_range(0..20) {
        let i = rng.random_range(0..2);
        random_write(&mut log.replicas[i], &mut rng);
        log.publish(i);
        log.run();
    }
    log.save_snapshot();
    let lock = rng.random_bool(0.3).then(|| {
        let a = &mut log.replicas[0];
        let m = at(a, root(a), "x");
        a.lock(m, true).unwrap();
        log.publish(0);
        log.run();
        m
    });
    log.cut_off();
    if rng.random_bool(0.3) {
        // The other replica takes a lock meanwhile: writes there are lost.
        let b = &mut log.replicas[1];
        let m = at(b, root(b), "m");
        b.lock(m, true).unwrap();
        log.publish(1);
        log.run();
    }
    for _ in 0..rng.random_range(1..30) {
        let i = rng.random_range(0..2);
        random_write(&mut log.replicas[i], &mut rng);
        if let Some(m) = lock.filter(|_| i == 0 && rng.random_bool(0.1)) {
            let _ = log.replicas[0].unlock(m);
        }
        log.publish(i);
        if i == 1 {
            log.run();
        }
    }
    log.lapse_and_return();
    let (carried, _) = log.reload();
    if std::env::var("FACSIMILE_SEED").is_ok() {
        eprintln!("carried {} lost {}", carried.carried(), carried.lost());
    }
    log.converged();
    for r in &log.replicas {
        r.check_invariants();
    }
}

#[test]
fn random_writes_on_both_sides_of_a_lapse_converge_over_1000_seeds() {
    run_seeds(0..1000, random_lapse);
}
