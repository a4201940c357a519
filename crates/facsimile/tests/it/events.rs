//! Events are complete and exact: replaying what a node reported onto its
//! earlier state reproduces its final state. Listeners that write converge.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use facsimile::{ArrayRef, Input, LocalNetwork, MapRef, Node, ObjectId, Prop, Value};
use facsimile_core::sim::run_seeds;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// A value in the model: a scalar as JSON, or an object by id.
#[derive(Clone, Debug, PartialEq)]
enum MV {
    Scalar(serde_json::Value),
    Obj(ObjectId),
}

#[derive(Clone, Debug, PartialEq)]
enum MObj {
    Map(BTreeMap<String, MV>),
    List(Vec<MV>),
}

/// What a node's events say its document is.
///
/// One delivery can apply several messages (one held back for another it
/// depends on) before the listeners run, so a listener reads the state
/// after all of them. An object read whole then (new, or an array after a
/// mass change) already holds what the rest of that delivery's events
/// report, and they are skipped for it until [`Model::settle`].
#[derive(Default, Debug)]
struct Model {
    root: Option<MV>,
    objects: HashMap<ObjectId, MObj>,
    fresh: HashSet<ObjectId>,
}

fn scalar(v: &Value) -> MV {
    MV::Scalar(v.to_json().expect("a scalar"))
}

impl Model {
    /// Reads `v` into the model, including objects not seen before.
    fn capture(&mut self, v: &Value) -> MV {
        match v {
            Value::Map(m) => {
                if !self.objects.contains_key(&m.id()) {
                    self.fresh.insert(m.id());
                    self.objects.insert(m.id(), MObj::Map(BTreeMap::new()));
                    let entries = m.entries().unwrap_or_default();
                    let content = entries
                        .iter()
                        .map(|(k, v)| (k.to_string(), self.capture(v)))
                        .collect();
                    self.objects.insert(m.id(), MObj::Map(content));
                }
                MV::Obj(m.id())
            }
            Value::Array(a) => {
                if !self.objects.contains_key(&a.id()) {
                    self.fresh.insert(a.id());
                    self.objects.insert(a.id(), MObj::List(Vec::new()));
                    let values = a.to_vec().unwrap_or_default();
                    let content = values.iter().map(|v| self.capture(v)).collect();
                    self.objects.insert(a.id(), MObj::List(content));
                }
                MV::Obj(a.id())
            }
            v => scalar(v),
        }
    }

    /// The object `old` is named `new` now (its node started over).
    fn rename(&mut self, old: ObjectId, new: ObjectId) {
        let fix = |v: &mut MV| {
            if *v == MV::Obj(old) {
                *v = MV::Obj(new);
            }
        };
        if let Some(content) = self.objects.remove(&old) {
            self.objects.insert(new, content);
        }
        self.root.iter_mut().for_each(fix);
        for content in self.objects.values_mut() {
            match content {
                MObj::Map(m) => m.values_mut().for_each(fix),
                MObj::List(l) => l.iter_mut().for_each(fix),
            }
        }
    }

    /// Ends a delivery or a local call: later events apply to every object.
    fn settle(&mut self) {
        self.fresh.clear();
    }

    /// The model's document as JSON, objects labelled by id (cycles safe).
    fn render(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        let mut stack: Vec<ObjectId> = Vec::new();
        let label = |v: &MV, stack: &mut Vec<ObjectId>| match v {
            MV::Scalar(s) => s.clone(),
            MV::Obj(id) => {
                stack.push(*id);
                json!(format!("{id:?}"))
            }
        };
        let root = self
            .root
            .as_ref()
            .map_or(json!(null), |r| label(r, &mut stack));
        out.insert("root".into(), root);
        while let Some(id) = stack.pop() {
            let key = format!("{id:?}");
            if out.contains_key(&key) {
                continue;
            }
            let content = match self.objects.get(&id) {
                Some(MObj::Map(m)) => {
                    json!(
                        m.iter()
                            .map(|(k, v)| (k.clone(), label(v, &mut stack)))
                            .collect::<serde_json::Map<_, _>>()
                    )
                }
                Some(MObj::List(l)) => {
                    json!(l.iter().map(|v| label(v, &mut stack)).collect::<Vec<_>>())
                }
                None => json!("missing"),
            };
            out.insert(key, content);
        }
        serde_json::Value::Object(out)
    }
}

/// Renders a node's actual document the same way.
fn actual(node: &Node) -> serde_json::Value {
    let mut m = Model::default();
    let root = node.root();
    m.root = Some(m.capture(&root));
    m.render()
}

/// Keeps a model of `node` up to date from its events only.
fn follow(node: &Node) -> (Arc<Mutex<Model>>, Vec<facsimile::Subscription>) {
    let model = Arc::new(Mutex::new(Model::default()));
    {
        let mut m = model.lock().unwrap();
        let root = node.root();
        m.root = Some(m.capture(&root));
    }
    let md = model.clone();
    let changes = node.on_change(move |e| {
        let mut m = md.lock().unwrap();
        let id = e.target().id();
        if m.fresh.contains(&id) {
            return;
        }
        match (e.prop(), e.target().as_array()) {
            (None, Some(a)) => {
                // A mass change: the array's content after the delivery.
                let values = a.to_vec().unwrap_or_default();
                let content = values.iter().map(|v| m.capture(v)).collect();
                m.objects.insert(id, MObj::List(content));
                m.fresh.insert(id);
            }
            (Some(Prop::Key(k)), _) => {
                let new = e.new_value().map(|v| m.capture(v));
                if let Some(MObj::Map(map)) = m.objects.get_mut(&id) {
                    match new {
                        Some(v) => {
                            map.insert(k.to_string(), v);
                        }
                        None => {
                            map.remove(k.as_str());
                        }
                    }
                }
            }
            (Some(Prop::Index(i)), _) => {
                let new = m.capture(e.new_value().expect("an index change has a value"));
                if let Some(MObj::List(list)) = m.objects.get_mut(&id) {
                    list[*i] = new;
                }
            }
            (None, None) => panic!("mass change on a map"),
        }
    });
    let md = model.clone();
    let roots = node.on_root_changed(move |root| {
        let mut m = md.lock().unwrap();
        m.root = Some(m.capture(root.new_value()));
    });
    (model, vec![changes, roots])
}

fn random_input(rng: &mut SmallRng, token: &mut i64, refs: &[Value]) -> Input {
    *token += 1;
    match rng.random_range(0..8) {
        0 => Input::from(json!({"n": *token, "l": [*token]})),
        1 => Input::from(json!([*token, "s"])),
        2 if !refs.is_empty() => Input::from(&refs[rng.random_range(0..refs.len())]),
        3 => Input::from(format!("s{token}")),
        _ => Input::from(*token),
    }
}

fn objects_of(node: &Node) -> Vec<Value> {
    let mut out = Vec::new();
    let mut stack = vec![node.root()];
    let mut seen = std::collections::HashSet::new();
    while let Some(v) = stack.pop() {
        match &v {
            Value::Map(m) if seen.insert(m.id()) => {
                stack.extend(m.entries().unwrap_or_default().into_iter().map(|(_, v)| v));
                out.push(v.clone());
            }
            Value::Array(a) if seen.insert(a.id()) => {
                stack.extend(a.to_vec().unwrap_or_default());
                out.push(v.clone());
            }
            _ => {}
        }
    }
    out
}

fn random_op(node: &Node, rng: &mut SmallRng, token: &mut i64) {
    let objects = objects_of(node);
    if objects.is_empty() || rng.random_range(0..25) == 0 {
        let _ = node.set_root(json!({"a": [], "b": {}}));
        return;
    }
    let obj = &objects[rng.random_range(0..objects.len())];
    let r = match obj {
        Value::Map(m) => map_op(m, rng, token, &objects),
        Value::Array(a) => array_op(a, rng, token, &objects),
        _ => unreachable!(),
    };
    match r {
        Ok(()) => {}
        Err(e) if matches!(e.engine(), Some(facsimile::EngineError::Detached(_))) => {}
        Err(e) => panic!("unexpected error {e}"),
    }
}

fn map_op(
    m: &MapRef,
    rng: &mut SmallRng,
    token: &mut i64,
    refs: &[Value],
) -> facsimile::Result<()> {
    let key = ["a", "b", "c", "d"][rng.random_range(0..4)];
    match rng.random_range(0..4) {
        0 => m.delete(key).map(|_| ()),
        1 => m.set(key, 1), // often a no-op
        _ => m.set(key, random_input(rng, token, refs)),
    }
}

fn array_op(
    a: &ArrayRef,
    rng: &mut SmallRng,
    token: &mut i64,
    refs: &[Value],
) -> facsimile::Result<()> {
    let len = a.len();
    match rng.random_range(0..8) {
        0 => a.push(random_input(rng, token, refs)),
        1 => a.pop().map(|_| ()),
        2 => a.unshift([random_input(rng, token, refs)]),
        3 if len > 0 => a.set(rng.random_range(0..len), random_input(rng, token, refs)),
        4 => a.reverse(),
        5 => a
            .sort_by(|x, y| format!("{x:?}").cmp(&format!("{y:?}")))
            .map(|_| ()),
        6 if len > 0 => {
            let x = match rng.random_bool(0.5) {
                true => Input::from(0),
                false => random_input(rng, token, refs),
            };
            a.fill(x, rng.random_range(0..len)..)
        }
        _ => {
            let start = rng.random_range(0..=len);
            let del = rng.random_range(0..=(len - start).min(2));
            a.splice(start, del, [random_input(rng, token, refs)])
                .map(|_| ())
        }
    }
}

#[test]
fn events_replayed_reproduce_the_state() {
    run_seeds(0..150, |seed| {
        let net = LocalNetwork::manual(seed);
        let nodes: Vec<Node> = ["n0", "n1", "n2"].iter().map(|h| net.join(h)).collect();
        net.run();
        let mut rng = SmallRng::seed_from_u64(seed);
        let mut token = 0;
        nodes[0]
            .set_root(json!({"a": [1, 2], "b": {"x": 1}}))
            .unwrap();
        net.run();
        let followers: Vec<_> = nodes.iter().map(follow).collect();
        let settle = || {
            for (model, _) in &followers {
                model.lock().unwrap().settle();
            }
        };
        settle();
        for _ in 0..80 {
            let n = &nodes[rng.random_range(0..nodes.len())];
            random_op(n, &mut rng, &mut token);
            settle();
            for _ in 0..rng.random_range(0..4) {
                net.deliver_one();
                settle();
            }
        }
        while net.deliver_one() {
            settle();
        }
        for (node, (model, _subs)) in nodes.iter().zip(&followers) {
            let got = model.lock().unwrap().render();
            assert_eq!(
                got,
                actual(node),
                "seed {seed}: events of {} do not reproduce its state",
                node.hostname()
            );
        }
        assert_eq!(nodes[0].snapshot(), nodes[1].snapshot(), "seed {seed}");
        assert_eq!(nodes[0].snapshot(), nodes[2].snapshot(), "seed {seed}");
    });
}

#[test]
fn listeners_that_write_converge() {
    run_seeds(0..50, |seed| {
        let net = LocalNetwork::manual(seed);
        let nodes: Vec<Node> = ["n0", "n1", "n2"].iter().map(|h| net.join(h)).collect();
        net.run();
        nodes[0].set_root(json!({"count": 0, "log": []})).unwrap();
        net.run();
        // Each node echoes every remote change of "count" into its log, and
        // the writer of a change reads and writes the object that fired.
        let subs: Vec<_> = nodes
            .iter()
            .map(|n| {
                let root = n.root_map().unwrap();
                let r = root.clone();
                let host = n.hostname().to_string();
                root.on_key("count", move |e| {
                    if matches!(e.origin(), facsimile::Origin::Remote(_)) {
                        let log = r.get("log").unwrap();
                        log.as_array()
                            .unwrap()
                            .push(format!("{host} saw {:?}", e.new_value()))
                            .unwrap();
                        r.set("last", host.as_str()).unwrap();
                    }
                })
            })
            .collect();
        let mut rng = SmallRng::seed_from_u64(seed);
        for i in 1..20 {
            let n = &nodes[rng.random_range(0..3)];
            n.root_map().unwrap().set("count", i).unwrap();
            for _ in 0..rng.random_range(0..6) {
                net.deliver_one();
            }
        }
        net.run();
        assert_eq!(nodes[0].snapshot(), nodes[1].snapshot(), "seed {seed}");
        assert_eq!(nodes[0].snapshot(), nodes[2].snapshot(), "seed {seed}");
        let log = nodes[0].root_map().unwrap().get("log").unwrap();
        assert!(
            !log.as_array().unwrap().is_empty(),
            "seed {seed}: listeners wrote"
        );
        drop(subs);
    });
}

#[test]
fn a_listener_may_write_the_object_that_fired_in_the_same_node() {
    let net = LocalNetwork::new();
    let a = net.join("a");
    let b = net.join("b");
    let root = a.set_root(json!({"x": 0})).unwrap();
    let root = root.as_map().unwrap().clone();
    let r = root.clone();
    let _sub = root.on_key("x", move |e| {
        if let Some(Value::Int(x)) = e.new_value() {
            if *x < 5 {
                r.set("x", x + 1).unwrap();
            }
        }
    });
    root.set("x", 1).unwrap();
    assert_eq!(root.get("x"), Some(Value::Int(5)));
    assert_eq!(b.root_map().unwrap().get("x"), Some(Value::Int(5)));
    assert_eq!(a.snapshot(), b.snapshot());
}

#[test]
fn the_event_stream_delivers_changes() {
    use futures_util::StreamExt;
    let net = LocalNetwork::new();
    let a = net.join("a");
    let b = net.join("b");
    let mut stream = b.events();
    a.set_root(json!({"k": 1})).unwrap();
    a.root_map().unwrap().set("k", 2).unwrap();
    let events: Vec<facsimile::Event> =
        futures_executor::block_on(stream.by_ref().take(2).collect());
    assert!(matches!(events[0], facsimile::Event::RootChanged(_)));
    match &events[1] {
        facsimile::Event::Change(c) => assert_eq!(c.new_value(), Some(&Value::Int(2))),
        other => panic!("unexpected {other:?}"),
    }
}

/// An index listener hears a write at its index, on the node that made it
/// (`Origin::Local`) and on the others (`Origin::Remote`, naming the
/// writer), with the values before and after; not a write at another
/// index; and nothing once its subscription is dropped.
#[test]
fn index_listeners_hear_local_and_remote_writes_with_their_origin() {
    type Heard = Arc<Mutex<Vec<(facsimile::Origin, Option<Value>, Option<Value>)>>>;
    fn listen(list: &ArrayRef, index: usize) -> (Heard, facsimile::Subscription) {
        let heard: Heard = Arc::default();
        let h = heard.clone();
        let sub = list.on_index(index, move |e| {
            assert_eq!(e.prop(), Some(&Prop::Index(1)));
            h.lock().unwrap().push((
                e.origin().clone(),
                e.old_value().cloned(),
                e.new_value().cloned(),
            ));
        });
        (heard, sub)
    }
    let net = LocalNetwork::new();
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!([0, 0, 0])).unwrap();
    let (on_a, sub_a) = listen(&a.root_array().unwrap(), 1);
    let (on_b, _sub_b) = listen(&b.root_array().unwrap(), 1);
    let list = a.root_array().unwrap();
    list.set(1, 5).unwrap();
    list.set(0, 7).unwrap();
    list.set(2, 7).unwrap();
    let change = (Some(Value::Int(0)), Some(Value::Int(5)));
    assert_eq!(
        *on_a.lock().unwrap(),
        [(facsimile::Origin::Local, change.0.clone(), change.1.clone())]
    );
    assert_eq!(
        *on_b.lock().unwrap(),
        [(
            facsimile::Origin::Remote(a.peer_id()),
            change.0.clone(),
            change.1.clone()
        )]
    );
    drop(sub_a);
    b.root_array().unwrap().set(1, 6).unwrap();
    assert_eq!(on_a.lock().unwrap().len(), 1, "dropped: heard nothing more");
    assert_eq!(
        on_b.lock().unwrap()[1],
        (facsimile::Origin::Local, change.1, Some(Value::Int(6)))
    );
}

/// A root replacement is reported with the root before and after it and
/// who made it: `Local` on the node that replaced it, `Remote` with the
/// writer's id elsewhere, to listeners and to event streams alike.
#[test]
fn root_replacements_carry_the_old_root_and_their_origin() {
    use facsimile::{Event, Origin, RootChange};
    use futures_util::StreamExt;

    let net = LocalNetwork::new();
    let a = net.join("a");
    let b = net.join("b");
    a.set_root(json!({"v": 1})).unwrap();
    let heard = |node: &Node| {
        let seen: Arc<Mutex<Vec<RootChange>>> = Arc::default();
        let log = seen.clone();
        let sub = node.on_root_changed(move |c| log.lock().unwrap().push(c.clone()));
        (seen, sub)
    };
    let (on_a, _sa) = heard(&a);
    let (on_b, _sb) = heard(&b);
    let mut stream = b.events();
    b.set_root("two").unwrap();
    for (seen, origin) in [(on_a, Origin::Remote(b.peer_id())), (on_b, Origin::Local)] {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 1, "{origin:?}");
        let c = &seen[0];
        assert_eq!(c.new_value(), &Value::from("two"));
        let old = c.old_value().as_map().expect("the old root, a map");
        assert_eq!(old.get("v"), Some(Value::Int(1)));
        assert_eq!(c.origin(), &origin);
    }
    let Some(Event::RootChanged(c)) = futures_executor::block_on(stream.next()) else {
        panic!("a root change on the stream");
    };
    assert_eq!(
        (c.new_value(), c.origin()),
        (&Value::from("two"), &Origin::Local)
    );
}

/// A node that starts over (its peers evicted it) takes the document
/// from a peer: what that changes in the objects it had is reported as
/// changes, so that listeners of objects that stay hear of it too.
#[test]
fn events_replayed_reproduce_the_state_through_a_start_over() {
    run_seeds(0..40, |seed| {
        let net = LocalNetwork::manual(seed);
        let a = net.join("a");
        let b = net.join("b");
        net.run();
        a.set_root(json!({"n": 0, "m": {"x": 1, "gone": true}, "l": [1, 2]}))
            .unwrap();
        net.run();
        // An object of b's first incarnation, named anew after it.
        b.root_map().unwrap().set("bm", json!({"y": 1})).unwrap();
        net.run();
        let bm = b.root_map().unwrap().get("bm").unwrap();
        let bm_before = bm.as_map().unwrap().id();
        let (model, _subs) = follow(&b);
        model.lock().unwrap().settle();
        let before = b.peer_id();
        a.evict(&before);
        // Made by a after the eviction and by b before it hears of it:
        // b's are dropped by a, a's reach b in the document it takes.
        let ra = a.root_map().unwrap();
        ra.set("n", 1).unwrap();
        let m = ra.get("m").unwrap();
        let m = m.as_map().unwrap();
        m.set("x", 2).unwrap();
        m.delete("gone").unwrap();
        ra.get("l").unwrap().as_array().unwrap().push(3).unwrap();
        let bm_of_a = ra.get("bm").unwrap();
        bm_of_a.as_map().unwrap().set("y", 2).unwrap();
        b.root_map().unwrap().set("mine", "b's").unwrap();
        // Up to b's start over, which names its own objects anew: the
        // document it takes takes a round trip more.
        while b.peer_id() == before {
            assert!(net.deliver_one(), "seed {seed}: b hears of its eviction");
            model.lock().unwrap().settle();
        }
        let bm_now = bm.as_map().unwrap().id();
        assert_ne!(bm_now, bm_before, "seed {seed}");
        model.lock().unwrap().rename(bm_before, bm_now);
        while net.deliver_one() {
            model.lock().unwrap().settle();
        }
        assert_eq!(
            model.lock().unwrap().render(),
            actual(&b),
            "seed {seed}: b's events do not reproduce its state"
        );
        assert_eq!(a.snapshot(), b.snapshot(), "seed {seed}");
    });
}

/// Runs `scenario` on a thread of its own and returns what it sent, or
/// fails after `within`: a scenario that hangs fails the test instead of
/// hanging it.
fn within<T: Send + 'static>(
    within: std::time::Duration,
    what: &str,
    scenario: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(scenario());
    });
    rx.recv_timeout(within)
        .unwrap_or_else(|_| panic!("{what}: hung for {within:?}"))
}

/// A listener that waits on a lock of its node is refused at once instead
/// of waiting for ever (the request could leave only once the listener
/// returns), and the node keeps sending; a lock future made in a listener
/// and polled on another thread is granted.
#[test]
fn a_lock_awaited_inside_a_listener_fails_and_the_node_keeps_sending() {
    use facsimile::LockError;
    use futures_executor::block_on;

    use std::time::Duration;
    within(
        Duration::from_secs(10),
        "a lock awaited in a listener",
        || {
            let net = LocalNetwork::new();
            let a = net.join("a");
            let b = net.join("b");
            a.set_root(json!({"k": 0, "n": 0, "m": 0})).unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let b2 = b.clone();
            b.on_change(move |ev| {
                let root = b2.root_map().unwrap();
                match ev.prop() {
                    Some(Prop::Key(k)) if k == "k" => {
                        let _ = tx.send(Err(block_on(b2.lock(&root)).map(|_| ())));
                    }
                    Some(Prop::Key(k)) if k == "m" => {
                        // Made here, polled on another thread: granted.
                        let locking = b2.lock(&root);
                        let spawned =
                            std::thread::spawn(move || block_on(locking).map(|g| g.is_held()));
                        let _ = tx.send(Ok(spawned));
                    }
                    _ => {}
                }
            })
            .detach();

            let r = a.root_map().unwrap();
            let writer = std::thread::spawn(move || r.set("k", 1));
            let refused = match rx
                .recv_timeout(Duration::from_secs(3))
                .expect("the listener returned")
            {
                Err(r) => r,
                Ok(_) => unreachable!(),
            };
            assert!(matches!(refused, Err(LockError::InListener)), "{refused:?}");
            writer.join().unwrap().unwrap();
            // b still sends: its write reaches a, and its lock is granted.
            b.root_map().unwrap().set("n", 1).unwrap();
            assert_eq!(a.get("/n"), Some(Value::Int(1)));
            drop(block_on(b.lock(b.root_map().unwrap())).unwrap());

            a.root_map().unwrap().set("m", 1).unwrap();
            let Ok(spawned) = rx
                .recv_timeout(Duration::from_secs(3))
                .expect("the listener returned")
            else {
                unreachable!()
            };
            assert_eq!(spawned.join().unwrap(), Ok(true));
        },
    );
}

/// A listener of a that waits on a lock of b is refused at once too: b's
/// grant needs a's acknowledgement, which leaves only once a's listener
/// returns. a keeps sending, and a lock of b made in a's listener and
/// polled on another thread is granted.
#[test]
fn a_lock_of_another_node_awaited_inside_a_listener_fails() {
    use facsimile::LockError;
    use futures_executor::block_on;

    use std::time::Duration;
    within(
        Duration::from_secs(10),
        "a lock of another node awaited in a listener",
        || {
            let net = LocalNetwork::new();
            let a = net.join("a");
            let b = net.join("b");
            a.set_root(json!({"k": 0, "m": 0})).unwrap();
            let (refused_tx, refused) = std::sync::mpsc::channel();
            let (spawned_tx, spawned) = std::sync::mpsc::channel();
            let b2 = b.clone();
            a.on_change(move |ev| {
                let root = b2.root_map().unwrap();
                match ev.prop() {
                    Some(Prop::Key(k)) if k == "k" => {
                        let _ = refused_tx.send(block_on(b2.lock(&root)).map(|g| g.is_held()));
                    }
                    Some(Prop::Key(k)) if k == "m" => {
                        let locking = b2.lock(&root);
                        let _ = spawned_tx.send(std::thread::spawn(move || {
                            block_on(locking).map(|g| g.is_held())
                        }));
                    }
                    _ => {}
                }
            })
            .detach();

            let r = a.root_map().unwrap();
            let writer = std::thread::spawn(move || r.set("k", 1));
            let refused = refused
                .recv_timeout(Duration::from_secs(3))
                .expect("the listener returned");
            assert_eq!(refused, Err(LockError::InListener));
            writer.join().unwrap().unwrap();
            assert_eq!(b.get("/k"), Some(Value::Int(1)));
            drop(block_on(b.lock(b.root_map().unwrap())).unwrap());

            a.root_map().unwrap().set("m", 1).unwrap();
            let spawned = spawned
                .recv_timeout(Duration::from_secs(3))
                .expect("the listener returned");
            assert_eq!(spawned.join().unwrap(), Ok(true));
        },
    );
}

/// A listener of b, run as c's message is delivered to it, that waits on
/// a lock of a is refused at once: the network sends a's request only once
/// the delivery of c's message, further up the same thread, returns.
#[test]
fn a_lock_awaited_in_a_listener_during_another_node_s_delivery_fails() {
    use facsimile::LockError;
    use futures_executor::block_on;

    use std::time::Duration;
    within(
        Duration::from_secs(10),
        "a lock awaited in a listener during another node's delivery",
        || {
            let net = LocalNetwork::new();
            let (a, b, c) = (net.join("a"), net.join("b"), net.join("c"));
            a.set_root(json!({"k": 0})).unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            let a2 = a.clone();
            b.on_change(move |ev| {
                if matches!(ev.prop(), Some(Prop::Key(k)) if k == "k") {
                    let _ = tx.send(block_on(a2.lock(a2.root_map().unwrap())).map(|g| g.is_held()));
                }
            })
            .detach();

            let r = c.root_map().unwrap();
            let writer = std::thread::spawn(move || r.set("k", 1));
            let refused = rx
                .recv_timeout(Duration::from_secs(3))
                .expect("the listener returned");
            assert_eq!(refused, Err(LockError::InListener));
            writer.join().unwrap().unwrap();
            assert_eq!(a.get("/k"), Some(Value::Int(1)));
            drop(block_on(a.lock(a.root_map().unwrap())).unwrap());
        },
    );
}

/// `Node::reload` inside one of the node's listeners is refused instead of
/// waiting for ever for the pump the listener runs under.
#[test]
fn a_reload_inside_a_listener_is_refused() {
    use std::time::Duration;
    within(Duration::from_secs(10), "a reload in a listener", || {
        let net = LocalNetwork::new();
        let a = net.join("a");
        let _b = net.join("b");
        a.set_root(json!({"k": 0})).unwrap();
        let saved = a.export_state();
        let before = a.peer_id();
        let (tx, rx) = std::sync::mpsc::channel();
        let a2 = a.clone();
        let sub = a.on_change(move |_| {
            let _ = tx.send(a2.reload(Some(&saved)));
        });
        a.root_map().unwrap().set("k", 1).unwrap();
        let refused = rx
            .recv_timeout(Duration::from_secs(3))
            .expect("the listener returned");
        assert_eq!(refused, Err(facsimile::Error::InListener));
        drop(sub);
        assert_eq!(a.peer_id(), before);
        // Outside a listener it reloads.
        a.reload(Some(&a.export_state())).unwrap();
        assert_ne!(a.peer_id(), before);
    });
}

/// A reload of another node inside a listener is refused too: it takes
/// that node's pump, which another thread's listener may hold while it
/// reloads this listener's node in turn. Two threads, each inside a
/// listener of one node, each reloading the other's node, would wait for
/// each other for ever.
#[test]
fn a_reload_of_another_node_inside_a_listener_is_refused() {
    use std::sync::Barrier;
    use std::time::Duration;
    within(
        Duration::from_secs(10),
        "two listeners reloading each other's node",
        || {
            let (one, two) = (LocalNetwork::new(), LocalNetwork::new());
            let (a, b) = (one.join("a"), two.join("b"));
            a.set_root(json!({"k": 0})).unwrap();
            b.set_root(json!({"k": 0})).unwrap();
            let both_inside = Arc::new(Barrier::new(2));
            let (tx, rx) = std::sync::mpsc::channel();
            let reload_in_listener = |node: &Node, other: &Node| {
                let (other, both_inside, tx) = (other.clone(), both_inside.clone(), tx.clone());
                let saved = other.export_state();
                node.on_change(move |_| {
                    both_inside.wait();
                    let _ = tx.send(other.reload(Some(&saved)));
                })
                .detach();
            };
            reload_in_listener(&a, &b);
            reload_in_listener(&b, &a);

            let writers = [&a, &b].map(|n| {
                let root = n.root_map().unwrap();
                std::thread::spawn(move || root.set("k", 1))
            });
            for _ in 0..2 {
                let refused = rx
                    .recv_timeout(Duration::from_secs(3))
                    .expect("the listener returned");
                assert_eq!(refused, Err(facsimile::Error::InListener));
            }
            for w in writers {
                w.join().unwrap().unwrap();
            }
        },
    );
}

/// A listener that panics, its panic caught by the writer, does not stop
/// the network: the members the message had still to reach get it, and
/// every later message is delivered, in each sender's order.
#[test]
fn a_panicking_listener_does_not_stop_the_network() {
    let net = LocalNetwork::new();
    let (a, b, c) = (net.join("a"), net.join("b"), net.join("c"));
    a.set_root(json!({"k": 0})).unwrap();
    let sub = b.on_change(|_| panic!("listener"));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.root_map().unwrap().set("k", 1)
    }));
    assert!(caught.is_err(), "the listener's panic reaches the writer");
    drop(sub);
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = heard.clone();
    c.on_change(move |e| log.lock().unwrap().push(e.new_value().cloned()))
        .detach();
    a.root_map().unwrap().set("k", 2).unwrap();
    assert_eq!(
        *heard.lock().unwrap(),
        [Some(Value::Int(1)), Some(Value::Int(2))],
        "c gets the message it missed, then the next, in order"
    );
    c.root_map().unwrap().set("m", 1).unwrap();
    for n in [&a, &b, &c] {
        assert_eq!(n.root().to_json().unwrap(), json!({"k": 2, "m": 1}));
    }
}

/// The listeners after one that panics still hear the change; then the
/// panic reaches the writer.
#[test]
fn the_listeners_after_a_panicking_one_still_run() {
    let net = LocalNetwork::new();
    let (a, b) = (net.join("a"), net.join("b"));
    a.set_root(json!({"k": 0})).unwrap();
    let _bug = b.on_change(|_| panic!("listener"));
    let heard = Arc::new(Mutex::new(Vec::new()));
    let log = heard.clone();
    let _other = b.on_change(move |e| log.lock().unwrap().push(e.new_value().cloned()));
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.root_map().unwrap().set("k", 1)
    }));
    assert!(caught.is_err(), "the listener's panic reaches the writer");
    assert_eq!(*heard.lock().unwrap(), [Some(Value::Int(1))]);
}

/// A listener of another node that panics while the network delivers one
/// of a round's messages loses none of the round's later ones: here a's
/// goodbye, sent with the writes it held offline.
#[test]
fn a_panicking_listener_loses_no_message_of_its_sender() {
    let net = LocalNetwork::new();
    let (a, b) = (net.join("a"), net.join("b"));
    a.set_root(json!({"k": 0})).unwrap();
    let sub = b.on_change(|_| panic!("listener"));
    a.set_online(false);
    a.root_map().unwrap().set("k", 1).unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| a.leave()));
    assert!(caught.is_err(), "the listener's panic reaches the sender");
    drop(sub);
    assert_eq!(b.root().to_json().unwrap(), json!({"k": 1}));
    assert!(
        !b.peers().contains(&a.peer_id()),
        "b had a's goodbye, sent after the write"
    );
}

/// `set_root` returns what it wrote, even when a listener (here another
/// node's, over the in-process network) replaced the root before it
/// returned.
#[test]
fn set_root_returns_the_root_it_wrote() {
    let net = LocalNetwork::new();
    let (a, b) = (net.join("a"), net.join("b"));
    let b2 = b.clone();
    b.on_root_changed(move |c| {
        if c.new_value().as_map().is_some() {
            b2.set_root(0).unwrap();
        }
    })
    .detach();
    let v = a.set_root(json!({"x": 1})).unwrap();
    let written = v.as_map().expect("the map written");
    assert_eq!(written.to_json().unwrap(), json!({"x": 1}));
    assert_eq!(a.root(), Value::Int(0), "b replaced it since");
    let v = a.set_root(json!([1])).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
}
