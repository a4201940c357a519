//! Replicas over a totally ordered log: every replica reads the same log
//! (its own messages included) at its own pace. Locks are decided by log
//! position, leases expire by the log's timestamps, no write made elsewhere
//! changes what a holder wrote, and replicas converge.

use std::collections::HashMap;
use std::time::Duration;

use facsimile_core::sim::run_seeds;
use facsimile_core::{
    Config, Error, Event, Input, LockEvent, LockState, ObjectId, PeerId, ReceiveError, Replica,
    Value, WireFormat,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::support;

const LEASE: Duration = Duration::from_secs(3);

/// A shared log and replicas reading it.
struct Log {
    entries: Vec<(Vec<u8>, Duration)>,
    replicas: Vec<Replica>,
    cursors: Vec<usize>,
    online: Vec<bool>,
    events: Vec<Vec<Event>>,
    now: Duration,
    /// The newest log snapshot and the log entries it covers.
    snapshot: Option<(Vec<u8>, usize)>,
    incarnations: u32,
    last_token: u64,
    config: Config,
}

impl Log {
    fn new(n: usize, seed: u64) -> Self {
        Log::with_config(n, seed, config())
    }

    fn with_config(n: usize, seed: u64, config: Config) -> Self {
        let mut log = Log {
            entries: Vec::new(),
            replicas: Vec::new(),
            cursors: Vec::new(),
            online: Vec::new(),
            events: Vec::new(),
            now: Duration::ZERO,
            snapshot: None,
            incarnations: (seed as u32) * 64,
            last_token: 0,
            config,
        };
        for i in 0..n {
            let me = log.me(i);
            log.add(Replica::new(me, log.config.clone()), 0);
        }
        // Each writes once it has read its own hello back.
        log.run();
        log
    }

    fn me(&mut self, i: usize) -> PeerId {
        self.incarnations += 1;
        PeerId::new(format!("r{i}"), self.incarnations)
    }

    fn add(&mut self, r: Replica, cursor: usize) -> usize {
        self.replicas.push(r);
        self.cursors.push(cursor);
        self.online.push(true);
        self.events.push(Vec::new());
        let i = self.replicas.len() - 1;
        self.publish(i);
        i
    }

    /// Replica `i` saves a snapshot of the log if its state allows.
    fn save_snapshot(&mut self, i: usize) {
        if self.online[i] {
            if let Some(bytes) = self.replicas[i].log_snapshot() {
                assert_eq!(self.replicas[i].log_position(), self.cursors[i] as u64);
                self.snapshot = Some((bytes, self.cursors[i]));
            }
        }
    }

    /// Checks the replicas' events; a replica whose write the log refused
    /// reloads.
    fn handle_events(&mut self, seed: u64) {
        let mut reload = Vec::new();
        for (i, events) in self.events.iter_mut().enumerate() {
            for e in events.drain(..) {
                match e {
                    Event::Lock(LockEvent::Granted { token, .. }) => {
                        assert!(
                            token > self.last_token,
                            "seed {seed}: token {token} after {}",
                            self.last_token
                        );
                        self.last_token = token;
                    }
                    // The log refused a write that raced a grant.
                    Event::NeedsSync => reload.push(i),
                    Event::Evicted => panic!("seed {seed}: a live replica lost its lease"),
                    _ => {}
                }
            }
        }
        for i in reload {
            self.reload(i);
        }
    }

    /// A new replica from the newest snapshot, reading the log from there.
    fn load_snapshot(&mut self, i: usize) -> (Replica, usize) {
        let (bytes, cursor) = self.snapshot.clone().expect("a snapshot");
        let me = self.me(i);
        let r = Replica::from_exported(me, self.config.clone(), &bytes).unwrap();
        (r, cursor)
    }

    /// Replica `i` leaves and comes back as a new incarnation loaded from
    /// the newest snapshot (what a replica does when the log refused one of
    /// its writes).
    fn reload(&mut self, i: usize) {
        self.replicas[i].leave();
        self.publish(i);
        let (r, cursor) = self.load_snapshot(i);
        self.replicas[i] = r;
        self.cursors[i] = cursor;
        self.events[i].clear();
        self.publish(i);
    }

    /// Appends what replica `i` sent to the log.
    fn publish(&mut self, i: usize) {
        let sent = self.take_sent(i);
        if self.online[i] {
            self.place(sent);
        }
    }

    /// Everything replica `i` has queued to send, as log entries to place.
    fn take_sent(&mut self, i: usize) -> Vec<Vec<u8>> {
        let sent = std::iter::from_fn(|| self.replicas[i].poll_transmit())
            .map(|t| t.bytes.to_vec())
            .collect();
        while let Some(e) = self.replicas[i].poll_event() {
            self.events[i].push(e);
        }
        sent
    }

    /// Appends `entries` to the log, now.
    fn place(&mut self, entries: impl IntoIterator<Item = Vec<u8>>) {
        let now = self.now;
        self.entries
            .extend(entries.into_iter().map(|bytes| (bytes, now)));
    }

    /// Replica `i` reads the next log entry. False when it is up to date.
    fn read(&mut self, i: usize) -> bool {
        let c = self.cursors[i];
        if c >= self.entries.len() || !self.online[i] {
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

    fn advance(&mut self, d: Duration) {
        self.now += d;
        for i in 0..self.replicas.len() {
            if self.online[i] {
                let now = self.now;
                self.replicas[i].handle_timeout(now);
                self.publish(i);
            }
        }
    }
}

fn config() -> Config {
    Config::default().ordered(LEASE)
}

fn object(r: &Replica) -> Option<ObjectId> {
    r.root().as_ref_id()
}

/// Every online replica that read the same prefix sees the same holder.
fn check_agreement(log: &mut Log, seed: u64) {
    let mut views: HashMap<usize, Option<String>> = HashMap::new();
    for i in 0..log.replicas.len() {
        if !log.online[i] {
            continue;
        }
        let r = &log.replicas[i];
        let Some(o) = object(r) else { continue };
        let holder = r.lock_holder_token(o).map(|(p, t)| format!("{p:?}@{t}"));
        if let Some(prev) = views.insert(log.cursors[i], holder.clone()) {
            assert_eq!(
                prev, holder,
                "seed {seed}: replicas at one log position disagree on the holder"
            );
        }
    }
}

/// Per holder: the token of its grant and the value of `k` as its own
/// writes left it. While it holds the lock, no other replica's write may
/// change it there (the log refuses them).
type Held = HashMap<usize, (u64, Option<Value>)>;

/// Checks that every holder's `k` is what its own writes left, and starts
/// watching replicas granted since the last look.
fn check_holders(log: &mut Log, held: &mut Held, seed: u64) {
    for i in 0..log.replicas.len() {
        let r = &log.replicas[i];
        let (Some(o), true) = (object(r), log.online[i]) else {
            held.remove(&i);
            continue;
        };
        let LockState::Held(token) = r.lock_state(o) else {
            held.remove(&i);
            continue;
        };
        let k = r.map_get(o, "k").unwrap();
        match held.get(&i) {
            Some((t, seen)) if *t == token => assert_eq!(
                k, *seen,
                "seed {seed}: r{i} saw another's write to the object it holds"
            ),
            _ => {
                held.insert(i, (token, k));
            }
        }
    }
}

/// Replica `i` wrote `k`: if it holds the lock, what it wrote is what the
/// object must hold until it lets go.
fn wrote(log: &Log, held: &mut Held, i: usize) {
    let r = &log.replicas[i];
    if let (Some(o), Some((token, seen))) = (object(r), held.get_mut(&i)) {
        if r.lock_state(o) == LockState::Held(*token) {
            *seen = r.map_get(o, "k").unwrap();
        }
    }
}

fn scenario(seed: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut log = Log::new(4, seed);
    let mut held = Held::new();
    log.replicas[0].set_root(Input::Map(vec![])).unwrap();
    log.publish(0);
    log.run();
    log.save_snapshot(0);
    let mut crashed = 0;
    for step in 0..200 {
        let i = rng.random_range(0..log.replicas.len());
        if log.online[i] && log.replicas[i].is_ready() {
            if let Some(o) = object(&log.replicas[i]) {
                let r = &mut log.replicas[i];
                match rng.random_range(0..20) {
                    0..=4 => {
                        let _ = r.lock(o, true);
                    }
                    // Syncing: reloaded, it has not read its hello back yet.
                    5..=6 => match r.lock(o, false) {
                        Ok(_) | Err(Error::Locked(_) | Error::Syncing) => {}
                        Err(e) => panic!("seed {seed}: {e}"),
                    },
                    7..=10 => {
                        let _ = r.unlock(o);
                    }
                    11 => match r.map_delete(o, "k") {
                        Ok(_) => wrote(&log, &mut held, i),
                        Err(Error::NotOwner(_) | Error::Syncing) => {}
                        Err(e) => panic!("seed {seed}: {e}"),
                    },
                    12..=17 => match r.map_set(o, "k", Input::from(step as i64)) {
                        Ok(_) => wrote(&log, &mut held, i),
                        Err(Error::NotOwner(_) | Error::Syncing) => {}
                        Err(e) => panic!("seed {seed}: {e}"),
                    },
                    18 if crashed == 0 => {
                        crashed += 1;
                        log.online[i] = false;
                    }
                    _ => {}
                }
            }
            log.publish(i);
        }
        // Replicas read at random paces.
        for _ in 0..rng.random_range(0..6) {
            let j = rng.random_range(0..log.replicas.len());
            log.read(j);
        }
        check_agreement(&mut log, seed);
        check_holders(&mut log, &mut held, seed);
        let j = rng.random_range(0..log.replicas.len());
        log.save_snapshot(j);
        if step == 100 {
            // A late joiner starts from the newest snapshot.
            let n = log.replicas.len();
            let (r, cursor) = log.load_snapshot(n);
            log.add(r, cursor);
        }
        if step % 10 == 9 {
            log.advance(LEASE / 4);
        }
        log.handle_events(seed);
    }
    // Quiet: holders release, waiters get their turn, a crashed holder's
    // lease runs out by the log's clock.
    for _ in 0..100 {
        log.run();
        log.handle_events(seed);
        let mut busy = false;
        for i in 0..log.replicas.len() {
            if !log.online[i] {
                continue;
            }
            let r = &mut log.replicas[i];
            let Some(o) = object(r) else { continue };
            match r.lock_state(o) {
                LockState::Held(_) => {
                    r.unlock(o).unwrap();
                    busy = true;
                }
                LockState::Waiting => busy = true,
                _ => {}
            }
            log.publish(i);
        }
        if !busy {
            break;
        }
        log.advance(LEASE / 4);
    }
    for i in (0..log.replicas.len()).filter(|&i| log.online[i]) {
        let r = &log.replicas[i];
        if let Some(o) = object(r) {
            assert!(
                matches!(r.lock_state(o), LockState::None | LockState::Refused),
                "seed {seed}: r{i} still waits or holds once quiet"
            );
        }
    }
    log.run();
    let snaps: Vec<Vec<u8>> = (0..log.replicas.len())
        .filter(|&i| log.online[i])
        .map(|i| log.replicas[i].snapshot())
        .collect();
    if std::env::var("DBG").is_ok() {
        for (i, r) in log.replicas.iter_mut().enumerate() {
            eprintln!(
                "r{i} online {} cursor {}\n{}",
                log.online[i],
                log.cursors[i],
                r.debug_dump()
            );
        }
    }
    assert!(
        snaps.windows(2).all(|w| w[0] == w[1]),
        "seed {seed}: replicas diverged"
    );
}

#[test]
fn locks_by_log_order_over_1000_seeds() {
    run_seeds(0..1000, scenario);
}

#[test]
fn fencing_token_is_the_log_position_and_leases_expire_by_log_time() {
    let mut log = Log::new(2, 7);
    log.replicas[0].set_root(Input::Map(vec![])).unwrap();
    log.publish(0);
    log.run();
    let o0 = object(&log.replicas[0]).unwrap();
    let o1 = object(&log.replicas[1]).unwrap();
    log.replicas[0].lock(o0, true).unwrap();
    log.publish(0);
    let position = log.entries.len() as u64;
    log.run();
    assert_eq!(log.replicas[0].lock_state(o0), LockState::Held(position));
    // Fail-fast is refused at its position.
    assert_eq!(log.replicas[1].lock(o1, false), Err(Error::Locked(o1)));
    log.replicas[1].lock(o1, true).unwrap();
    log.publish(1);
    log.run();
    assert_eq!(log.replicas[1].lock_state(o1), LockState::Waiting);
    // The holder dies; the other keeps writing heartbeats into the log; the
    // lease runs out by the log's clock and the lock passes on.
    log.online[0] = false;
    for _ in 0..20 {
        log.advance(LEASE / 4);
        log.run();
    }
    let LockState::Held(token) = log.replicas[1].lock_state(o1) else {
        panic!("the lock should pass on after the lease");
    };
    assert!(token > position);
    log.replicas[1].map_set(o1, "k", Input::from(1)).unwrap();
}

/// Two replicas on a log whose clock starts above zero, as a real log's
/// does; replica 0 holds the lock on the root. Returns the root and the
/// lock's token.
fn root_held_by_replica_0(seed: u64) -> (Log, ObjectId, u64) {
    let mut log = Log::new(2, seed);
    log.now = LEASE;
    log.replicas[0].set_root(Input::Map(vec![])).unwrap();
    log.publish(0);
    log.run();
    let root = object(&log.replicas[0]).unwrap();
    log.replicas[0].lock(root, true).unwrap();
    log.publish(0);
    log.run();
    let LockState::Held(token) = log.replicas[0].lock_state(root) else {
        panic!("granted");
    };
    (log, root, token)
}

/// Replica 0 sets a root map holding a map `c`, and every replica reads
/// it. Returns the root.
fn root_with_child(log: &mut Log) -> ObjectId {
    let child = Input::Map(vec![("c".into(), Input::Map(vec![]))]);
    log.replicas[0].set_root(child).unwrap();
    log.publish(0);
    log.run();
    object(&log.replicas[0]).unwrap()
}

/// Nobody was evicted, left or had to start over.
fn nobody_left(log: &Log) {
    for events in &log.events {
        assert!(
            !events
                .iter()
                .any(|e| matches!(e, Event::Evicted | Event::PeerLeft(_) | Event::NeedsSync))
        );
    }
}

#[test]
fn a_log_outage_longer_than_the_lease_takes_no_lock_away() {
    let (mut log, o0, token) = root_held_by_replica_0(11);
    // Nothing reaches the log for ten leases (it was down); then both
    // nodes' heartbeats arrive again.
    log.now += LEASE * 10;
    for _ in 0..8 {
        log.advance(LEASE / 4);
        log.run();
    }
    assert_eq!(log.replicas[0].lock_state(o0), LockState::Held(token));
    nobody_left(&log);
    // A holder that really stops still loses it, by the log's clock.
    log.online[0] = false;
    let o1 = object(&log.replicas[1]).unwrap();
    log.replicas[1].lock(o1, true).unwrap();
    log.publish(1);
    for _ in 0..20 {
        log.advance(LEASE / 4);
        log.run();
    }
    assert!(matches!(log.replicas[1].lock_state(o1), LockState::Held(t) if t > token));
}

#[test]
fn after_a_log_outage_every_node_has_a_whole_lease_to_come_back() {
    let (mut log, o0, token) = root_held_by_replica_0(13);
    // The log is down for ten leases. Replica 1 reconnects first and
    // heartbeats for most of a lease before replica 0 is back.
    log.now += LEASE * 10;
    log.online[0] = false;
    let before = log.entries.len();
    for _ in 0..3 {
        log.advance(LEASE / 3);
        log.run();
    }
    assert!(log.entries.len() >= before + 3, "replica 1's heartbeats");
    log.online[0] = true;
    log.replicas[0].map_set(o0, "back", Input::from(1)).unwrap();
    log.publish(0);
    for _ in 0..8 {
        log.advance(LEASE / 4);
        log.run();
    }
    assert_eq!(log.replicas[0].lock_state(o0), LockState::Held(token));
    nobody_left(&log);
    let o1 = object(&log.replicas[1]).unwrap();
    assert_eq!(log.replicas[1].map_get(o1, "back"), Ok(Some(Value::Int(1))));
}

#[test]
fn an_ordered_replica_is_woken_for_each_heartbeat() {
    // A lease short enough that heartbeats are due before anything else.
    let lease = Duration::from_secs(1);
    let mut r = Replica::new(PeerId::new("r", 1), Config::default().ordered(lease));
    let hello = r.poll_transmit().expect("a hello");
    r.handle_ordered(&hello.bytes, 1, Duration::from_secs(9))
        .unwrap();
    r.set_root(Input::Map(vec![])).unwrap();
    let mut now = Duration::from_secs(10);
    for _ in 0..5 {
        r.handle_timeout(now);
        while r.poll_transmit().is_some() {}
        let at = r.poll_timeout().expect("a timer is set");
        assert!(
            at <= now + lease / 3,
            "next wake-up {:?} after the last, heartbeats are due every {:?}",
            at - now,
            lease / 3
        );
        now = at;
    }
}

#[test]
fn an_entry_invalid_in_order_sends_nobody_to_start_over() {
    // Over a log a reload reads the same entries again: an entry that only
    // fails once its sender's earlier messages are in must be dropped, not
    // answered with a reload (each reload would meet it again).
    let mut log = Log::with_config(2, 23, config().wire_format(WireFormat::Json));
    log.now = LEASE;
    log.replicas[0].set_root(Input::Map(vec![])).unwrap();
    log.publish(0);
    log.run();
    let root = object(&log.replicas[1]).unwrap();
    let last_sent = |log: &mut Log| {
        let mut last = None;
        while let Some(t) = log.replicas[1].poll_transmit() {
            last = Some(t.bytes.to_vec());
        }
        last.unwrap()
    };
    log.replicas[1].map_set(root, "x", Input::from(1)).unwrap();
    let first = last_sent(&mut log);
    log.replicas[1].map_set(root, "y", Input::from(2)).unwrap();
    let second = last_sent(&mut log);
    // A forged copy of bravo's second message, naming an id from bravo's
    // future, reaches the log before bravo's messages do.
    let forged = support::edit_json(&second, |v| {
        v["body"]["Ops"]["ops"][0]["MapSet"]["value"] =
            serde_json::json!({"Ref": {"p": 0, "c": 1_000_000}});
    });
    log.place([forged, first, second]);
    log.run();
    for events in &log.events {
        for e in events {
            assert!(!matches!(e, Event::NeedsSync | Event::Evicted), "{e:?}");
        }
    }
    let a_root = object(&log.replicas[0]).unwrap();
    assert_eq!(
        log.replicas[0].map_get(a_root, "y"),
        Ok(Some(Value::Int(2)))
    );
    assert_eq!(log.replicas[0].snapshot(), log.replicas[1].snapshot());
}

#[test]
fn a_replica_that_has_not_read_its_writes_back_reclaims_nothing_they_orphaned() {
    let mut log = Log::new(3, 19);
    log.now = LEASE;
    // Replica 1 writes before reading anything; replica 2 reads that.
    log.replicas[1].set_root(Input::Array(vec![])).unwrap();
    log.publish(1);
    while log.read(2) {}
    let array = object(&log.replicas[2]).unwrap();
    // Replica 1 orphans the array, and its timers run while it has read
    // nothing of the log (it knows no other member yet).
    log.replicas[1].set_root(Input::from(true)).unwrap();
    log.publish(1);
    log.advance(LEASE * 10);
    // Replica 2, which has not read that yet, stores the array.
    let nested = Input::Array(vec![Input::Value(Value::Ref(array))]);
    log.replicas[2]
        .set_root(Input::Array(vec![nested]))
        .unwrap();
    log.publish(2);
    for _ in 0..8 {
        log.run();
        log.advance(LEASE / 4);
    }
    log.run();
    let first = log.replicas[0].snapshot();
    for r in &mut log.replicas {
        assert!(
            r.snapshot() == first,
            "replicas diverged:\n{}",
            r.debug_dump()
        );
    }
}

#[test]
fn a_slot_deleted_by_a_held_write_stays_an_origin_until_the_log_has_the_delete() {
    let mut log = Log::new(3, 23);
    log.now = LEASE;
    log.replicas[0]
        .set_root(Input::Array(vec![
            Input::from(1),
            Input::from(2),
            Input::from(3),
        ]))
        .unwrap();
    log.publish(0);
    let array = object(&log.replicas[0]).unwrap();
    // Replica 0 is offline (its heartbeats are held), reads the log and
    // learns that everybody has all it sent.
    log.replicas[0].set_online(false);
    log.run();
    log.advance(LEASE * 8);
    log.run();
    // Replica 2 appends after the last element; replica 0, which has not
    // read that, deletes the last two elements, held.
    let theirs = object(&log.replicas[2]).unwrap();
    log.replicas[2]
        .list_splice(theirs, 3, 0, vec![Input::from(4)])
        .unwrap();
    log.publish(2);
    log.replicas[0]
        .list_splice(array, 1, 2, Vec::new())
        .unwrap();
    log.publish(0);
    assert!(log.replicas[0].has_held());
    // Replica 0's reclamation runs before it reads the append: its members
    // acknowledged everything it sent, not the held delete.
    log.advance(LEASE * 8);
    log.replicas[0].set_online(true);
    log.publish(0);
    for _ in 0..8 {
        log.run();
        log.advance(LEASE / 4);
    }
    log.run();
    log.handle_events(23);
    let first = log.replicas[0].snapshot();
    for r in &mut log.replicas {
        assert!(
            r.snapshot() == first,
            "replicas diverged:\n{}",
            r.debug_dump()
        );
    }
    assert_eq!(
        log.replicas[0].list_values(array),
        Ok(vec![Value::Int(1), Value::Int(4)])
    );
}

/// Replica 0 asks for the lock on the root; every replica must then agree
/// it holds it, replica 0 included, at the same token, and the replicas
/// converge.
fn replica_0_locks_and_all_agree(log: &mut Log) {
    let root = object(&log.replicas[0]).unwrap();
    log.replicas[0].lock(root, true).unwrap();
    log.publish(0);
    log.run();
    let me = log.replicas[0].peer_id().clone();
    let theirs = object(&log.replicas[1]).unwrap();
    let Some((holder, token)) = log.replicas[1].lock_holder_token(theirs) else {
        panic!("replica 1 sees no holder");
    };
    assert_eq!(holder, me, "replica 1 grants replica 0");
    assert_eq!(
        log.replicas[0].lock_state(root),
        LockState::Held(token),
        "replica 0 must see the grant its peers see"
    );
    log.replicas[0]
        .map_set(root, "held", Input::from(1))
        .unwrap();
    log.publish(0);
    log.run();
    nobody_left(log);
    assert_eq!(
        log.replicas[1].map_get(theirs, "held"),
        Ok(Some(Value::Int(1)))
    );
    assert_eq!(log.replicas[0].snapshot(), log.replicas[1].snapshot());
}

#[test]
fn an_own_message_read_back_twice_is_applied_once() {
    // A publish whose acknowledgement was lost is retried after the
    // stream's deduplication window: the log holds it twice.
    let mut log = Log::new(2, 29);
    log.now = LEASE;
    log.replicas[0].set_root(Input::Map(vec![])).unwrap();
    log.publish(0);
    log.run();
    let root = object(&log.replicas[0]).unwrap();
    log.replicas[0].map_set(root, "x", Input::from(1)).unwrap();
    let sent = log.take_sent(0);
    log.place(sent.clone());
    log.run();
    let theirs = object(&log.replicas[1]).unwrap();
    log.replicas[1]
        .map_set(theirs, "y", Input::from(2))
        .unwrap();
    log.publish(1);
    log.place(sent);
    log.run();
    replica_0_locks_and_all_agree(&mut log);
}

#[test]
fn an_own_message_read_back_early_is_applied_after_the_one_before() {
    // A publish retried after a reconnection lands behind the next one.
    let mut log = Log::new(2, 31);
    log.now = LEASE;
    log.replicas[0].set_root(Input::Map(vec![])).unwrap();
    log.publish(0);
    log.run();
    let root = object(&log.replicas[0]).unwrap();
    log.replicas[0].map_set(root, "x", Input::from(1)).unwrap();
    let first = log.take_sent(0);
    log.replicas[0].map_set(root, "y", Input::from(2)).unwrap();
    let second = log.take_sent(0);
    log.place(second.into_iter().chain(first));
    log.run();
    replica_0_locks_and_all_agree(&mut log);
}

#[test]
fn an_own_write_read_back_early_is_judged_where_the_peers_apply_it() {
    // Replica 0's write to the root reaches the log before its earlier
    // write to a child, and a grant of the root to replica 1 comes between
    // them: the peers hold the root write until the child write comes,
    // after the grant, and refuse it there. So must replica 0 (it starts
    // over), or it keeps a write no peer has.
    let mut log = Log::new(2, 37);
    log.now = LEASE;
    let root = root_with_child(&mut log);
    let Ok(Some(Value::Ref(child))) = log.replicas[0].map_get(root, "c") else {
        panic!("a child map");
    };
    log.replicas[0].map_set(child, "x", Input::from(1)).unwrap();
    let first = log.take_sent(0);
    log.replicas[0].map_set(root, "y", Input::from(2)).unwrap();
    let second = log.take_sent(0);
    log.place(second);
    let theirs = object(&log.replicas[1]).unwrap();
    log.replicas[1].lock(theirs, true).unwrap();
    log.publish(1);
    log.place(first);
    // Replica 0 reads these three entries before anything the peers send
    // about them (a resend asked for).
    while log.read(0) {}
    assert!(
        log.events[0].contains(&Event::NeedsSync),
        "replica 0 must learn that the log refused its write"
    );
    while log.read(1) {}
    assert!(matches!(
        log.replicas[1].lock_state(theirs),
        LockState::Held(_)
    ));
    assert_eq!(log.replicas[1].map_get(theirs, "y"), Ok(None));
}

#[test]
fn a_new_incarnation_keeps_to_what_its_transport_carries() {
    // The transport's limit (a NATS stream's) binds the replica that takes
    // this one's place too.
    let mut r = Replica::new(PeerId::new("r", 1), config());
    r.limit_sent_messages(4096);
    let (mut next, _) = r.successor(PeerId::new("r", 2), None).unwrap();
    let hello = next.poll_transmit().expect("a hello");
    next.handle_ordered(&hello.bytes, 1, LEASE).unwrap();
    let root = next.set_root(Input::Map(vec![])).unwrap().unwrap();
    let err = next
        .map_set(root, "s", Input::from("x".repeat(8000)))
        .unwrap_err();
    assert!(matches!(err, Error::TooLarge { limit: 4096, .. }), "{err}");
}

#[test]
fn a_release_of_another_peer_s_request_is_refused_by_every_replica() {
    // Replica 2 forges the release of replica 0's lock, which replica 1
    // waits for: applied, it would grant replica 1 while replica 0 holds.
    let mut log = Log::with_config(3, 41, config().wire_format(WireFormat::Json));
    log.now = LEASE;
    let root = root_with_child(&mut log);
    // The root map's counter, then the root's assignment, then the request.
    let (_, root_counter) = log.replicas[0].object_origin(root);
    let request = root_counter + 2;
    log.replicas[0].lock(root, true).unwrap();
    log.publish(0);
    log.run();
    let LockState::Held(token) = log.replicas[0].lock_state(root) else {
        panic!("replica 0 holds the lock");
    };
    let theirs = object(&log.replicas[1]).unwrap();
    log.replicas[1].lock(theirs, true).unwrap();
    log.publish(1);
    log.run();
    assert_eq!(log.replicas[1].lock_state(theirs), LockState::Waiting);
    // Replica 2's write to the child names replica 0's objects (its first
    // peer); the forgery puts a release of replica 0's request in its place.
    let mallory = object(&log.replicas[2]).unwrap();
    let Ok(Some(Value::Ref(c))) = log.replicas[2].map_get(mallory, "c") else {
        panic!("a child map");
    };
    log.replicas[2].map_set(c, "x", Input::from(1)).unwrap();
    let write = log.take_sent(2);
    let [write] = write.as_slice() else {
        panic!("one message");
    };
    let forged = support::edit_json(write, |v| {
        let ops = v["body"]["Ops"]["ops"].as_array_mut().unwrap();
        let op = ops.iter_mut().find(|o| o.get("MapSet").is_some()).unwrap();
        *op = serde_json::json!({"Unlock": {
            "obj": {"p": 1, "c": root_counter},
            "req": {"p": 1, "c": request},
            "token": token,
        }});
    });
    let tables = |log: &Log| [0, 1].map(|i| log.replicas[i].lock_table());
    let before = tables(&log);
    log.place([forged.clone()]);
    let position = log.entries.len() as u64;
    for i in [0, 1] {
        let r = log.replicas[i].handle_ordered(&forged, position, log.now);
        assert!(
            matches!(r, Err(ReceiveError::Invalid { .. })),
            "replica {i}: {r:?}"
        );
        log.cursors[i] += 1;
    }
    assert_eq!(tables(&log), before, "a refused release changed a queue");
    assert_eq!(log.replicas[0].lock_state(root), LockState::Held(token));
    assert_eq!(log.replicas[1].lock_state(theirs), LockState::Waiting);
    // The sender's own message of that number still comes, and applies.
    log.place([write.clone()]);
    log.run();
    assert_eq!(
        log.replicas[1].lock_holder_token(theirs),
        Some((log.replicas[0].peer_id().clone(), token))
    );
    // Replica 0's own release names the request the forgery named.
    log.replicas[0].unlock(root).unwrap();
    let release = log.take_sent(0);
    let v: serde_json::Value =
        serde_json::from_slice(&support::edit_json(&release[0], |_| {})).expect("a JSON message");
    assert_eq!(v["body"]["Ops"]["ops"][0]["Unlock"]["req"]["c"], request);
    log.place(release);
    log.run();
    assert!(matches!(log.replicas[1].lock_state(theirs), LockState::Held(t) if t > token));
    nobody_left(&log);
    assert_eq!(log.replicas[0].snapshot(), log.replicas[1].snapshot());
}
