//! A node whose replica takes a new incarnation (reloaded from a saved
//! state, or rejoined after an eviction) keeps its handles and listeners.

use std::sync::{Arc, Mutex};

use facsimile::{LocalNetwork, Value};
use serde_json::json;

#[test]
fn handles_and_listeners_survive_a_reload() {
    let net = LocalNetwork::new();
    let a = net.join("alpha");
    let b = net.join("bravo");
    a.set_root(json!({"mine": {"n": 1}, "list": [1, 2]}))
        .unwrap();
    let root = a.root_map().unwrap();
    let mine = root.get("mine").unwrap().as_map().unwrap().clone();
    let list = root.get("list").unwrap().as_array().unwrap().clone();
    // An object bravo created, held by alpha.
    b.root_map()
        .unwrap()
        .set("theirs", json!({"m": 1}))
        .unwrap();
    let theirs = root.get("theirs").unwrap().as_map().unwrap().clone();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let _sub = mine.on_key("n", move |ev| {
        log.lock().unwrap().push(ev.new_value().cloned())
    });

    let saved = a.export_state();
    let before = a.peer_id();
    a.reload(Some(&saved)).unwrap();
    assert_ne!(a.peer_id().incarnation(), before.incarnation());

    // Every handle taken before names the same object.
    assert_eq!(mine.get("n"), Some(Value::Int(1)));
    assert_eq!(theirs.get("m"), Some(Value::Int(1)));
    assert_eq!(list.len(), 2);
    assert_eq!(root.get("mine").unwrap().as_map(), Some(&mine));
    // Writes through them replicate, and listeners keep firing.
    mine.set("n", 2).unwrap();
    list.push(3).unwrap();
    theirs.set("m", 2).unwrap();
    b.root_map()
        .unwrap()
        .get("mine")
        .unwrap()
        .as_map()
        .unwrap()
        .set("n", 3)
        .unwrap();
    assert_eq!(
        *seen.lock().unwrap(),
        vec![Some(Value::Int(2)), Some(Value::Int(3))]
    );
    assert_eq!(a.snapshot(), b.snapshot());
    let b_list = b.root_map().unwrap().get("list").unwrap();
    assert_eq!(b_list.as_array().unwrap().len(), 3);
}

/// A node whose sync is answered with a state that lists it as evicted
/// starts over at once: its `on_ready` listeners hear only the complete
/// document of the incarnation it goes on as, never the root of the one
/// it is dropping.
#[test]
fn on_ready_is_not_called_for_an_incarnation_evicted_at_load() {
    for seed in 0..8 {
        let net = LocalNetwork::manual(seed);
        let a = net.join("alpha");
        let b = net.join("bravo");
        a.set_root(json!({"n": 1})).unwrap();
        net.run();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (log, b2) = (seen.clone(), b.clone());
        let _sub = b.on_ready(move |root| {
            log.lock()
                .unwrap()
                .push((b2.is_ready(), root.to_json().ok()));
        });
        b.sync();
        a.evict(&b.peer_id());
        net.run();
        let seen = seen.lock().unwrap();
        assert!(!seen.is_empty(), "seed {seed}: never ready again");
        for (ready, root) in seen.iter() {
            assert!(*ready, "seed {seed}: called while syncing again: {seen:?}");
            assert_eq!(root, &Some(json!({"n": 1})), "seed {seed}");
        }
        assert!(b.is_ready(), "seed {seed}");
    }
}
