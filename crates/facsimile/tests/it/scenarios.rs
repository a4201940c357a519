//! The original's test suite, restated (SPEC §6, scenarios 1–12), each run
//! with the binary and the JSON wire encoding.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use facsimile::{Config, EngineError, Error, Input, LocalNetwork, Node, Prop, Value};
use serde_json::json;

use crate::{granted, manual_networks, networks};

/// Scenario 1: a node with no transport refuses a store write with a clear
/// error.
#[test]
fn s01_no_transport_refuses_writes() {
    let node = Node::new("lonely");
    let err = node.set_root(1).unwrap_err();
    assert_eq!(err, Error::NoSender);
    assert!(err.to_string().contains("set_sender"), "{err}");
    assert!(node.root().is_null());
    // Once a transport exists, writes work.
    node.set_sender(|_| {});
    node.set_root(1).unwrap();
    assert_eq!(node.root(), Value::Int(1));
}

/// Scenario 2: the root may be a number; the other node sees the number.
#[test]
fn s02_root_may_be_a_number() {
    for (wire, net) in networks() {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(3).unwrap();
        assert_eq!(b.root(), Value::Int(3), "{wire}");
        a.set_root(2.5).unwrap();
        assert_eq!(b.root(), Value::Float(2.5), "{wire}");
    }
}

/// Scenario 3: the root may be a map, an array (stays an array), nested
/// maps and arrays.
#[test]
fn s03_maps_arrays_and_nesting() {
    for (wire, net) in networks() {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!({"x": 1})).unwrap();
        assert_eq!(b.root().to_json().unwrap(), json!({"x": 1}), "{wire}");
        a.set_root(json!([1, 2, 3])).unwrap();
        assert!(
            b.root().as_array().is_some(),
            "{wire}: an array stays an array"
        );
        assert_eq!(b.root().to_json().unwrap(), json!([1, 2, 3]));
        let doc = json!({"a": {"b": [1, {"c": [true, null, "s"]}, []]}, "d": {}});
        a.set_root(doc.clone()).unwrap();
        assert_eq!(b.root().to_json().unwrap(), doc, "{wire}");
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}

/// Scenario 4: a map that references itself arrives as a cycle.
#[test]
fn s04_self_reference_arrives_as_a_cycle() {
    for (wire, net) in networks() {
        let a = net.join("a");
        let b = net.join("b");
        let root = a.set_root(json!({"name": "loop"})).unwrap();
        let root = root.as_map().unwrap();
        root.set("self", root).unwrap();
        let rb = b.root_map().unwrap();
        let inner = rb.get("self").unwrap();
        assert_eq!(
            inner.as_map(),
            Some(&rb),
            "{wire}: the same object, not a copy"
        );
        assert_eq!(
            inner.as_map().unwrap().get("name"),
            Some(Value::from("loop"))
        );
        assert!(matches!(b.root().to_json(), Err(Error::Cycle(_))), "{wire}");
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}

/// As JSON with references, every object is written once: a cycle and a
/// second place of a shared object name the first place as a pointer.
#[test]
fn json_with_references_writes_each_object_once() {
    let net = LocalNetwork::new();
    let node = net.join("a");
    let root = node.set_root(json!({"a": {"x": 1}, "list": [0]})).unwrap();
    let root = root.as_map().unwrap();
    let a = root.get("a").unwrap();
    let list = root.get("list").unwrap();
    list.as_array().unwrap().push(a.clone()).unwrap();
    a.as_map().unwrap().set("up", root).unwrap();
    a.as_map().unwrap().set("k~/", list.clone()).unwrap();
    assert_eq!(
        node.root().to_json_with_refs("").unwrap(),
        json!({
            "a": {"k~/": [0, {"$ref": "/a"}], "up": {"$ref": ""}, "x": 1},
            "list": {"$ref": "/a/k~0~1"},
        })
    );
    assert_eq!(
        list.to_json_with_refs("/list").unwrap(),
        json!([0, {"k~/": {"$ref": "/list"}, "up": {"a": {"$ref": "/list/1"}, "list": {"$ref": "/list"}}, "x": 1}])
    );
    assert!(matches!(node.root().to_json(), Err(Error::Cycle(_))));

    // Shared without a cycle: copied at each place by `to_json`, written
    // once by `to_json_with_refs`, however many ways it is shared. Forty
    // levels of two references each would be 2^40 copies.
    let node = net.join("b");
    node.set_root(json!({"leaf": 1})).unwrap();
    for _ in 0..40 {
        let below = node.root();
        node.set_root(json!({})).unwrap();
        let top = node.root_map().unwrap();
        top.set("l", below.clone()).unwrap();
        top.set("r", below).unwrap();
    }
    let j = node.root().to_json_with_refs("").unwrap();
    assert_eq!(j["r"], json!({"$ref": "/l"}));
    assert_eq!(j.to_string().matches("$ref").count(), 40);

    // A stored key `$ref` is written with one more `$`, so that only a
    // reference has that key; `to_json` writes keys as they are.
    let node = net.join("c");
    node.set_root(json!({"$ref": "/x", "$$ref": 1, "ref": 2, "$refs": 3, "$": 4}))
        .unwrap();
    let root = node.root_map().unwrap();
    root.set("me", node.root()).unwrap();
    assert_eq!(
        node.root().to_json_with_refs("").unwrap(),
        json!({"$$ref": "/x", "$$$ref": 1, "ref": 2, "$refs": 3, "$": 4, "me": {"$ref": ""}})
    );
    root.delete("me").unwrap();
    assert_eq!(
        node.root().to_json().unwrap(),
        json!({"$ref": "/x", "$$ref": 1, "ref": 2, "$refs": 3, "$": 4})
    );
}

/// A document nested deeper than JSON readers go is refused as JSON, by
/// kind and with its place, rather than overflowing the stack.
#[test]
fn json_of_a_document_nested_too_deep_is_refused() {
    let node = LocalNetwork::new().join("a");
    let mut m = node.set_root(json!({})).unwrap().as_map().unwrap().clone();
    for _ in 0..facsimile::MAX_JSON_DEPTH + 10 {
        m.set("c", json!({})).unwrap();
        m = m.get("c").unwrap().as_map().unwrap().clone();
    }
    for r in [node.root().to_json(), node.root().to_json_with_refs("")] {
        let Err(Error::Convert { path, .. }) = r else {
            panic!("refused as too deep: {r:?}");
        };
        assert_eq!(path, "/c".repeat(facsimile::MAX_JSON_DEPTH));
    }
    let shallow = node.get(&"/c".repeat(11)).unwrap();
    assert!(shallow.to_json().is_ok(), "at the limit");
}

/// Scenario 5: a node created after the state exists calls `sync()` and
/// gets it all.
#[test]
fn s05_late_node_syncs() {
    for (wire, net) in networks() {
        let a = net.join("a");
        let b = net.join("b");
        let root = a
            .set_root(json!({"list": [1, 2, 3], "m": {"k": "v"}}))
            .unwrap();
        let root = root.as_map().unwrap();
        root.set("shared", root.get("m").unwrap()).unwrap();
        b.root_map()
            .unwrap()
            .get("list")
            .unwrap()
            .as_array()
            .unwrap()
            .push(4)
            .unwrap();

        let late = net.join("late");
        late.sync();
        assert!(late.is_ready(), "{wire}");
        assert_eq!(
            late.root().to_json().unwrap(),
            a.root().to_json().unwrap(),
            "{wire}"
        );
        let lr = late.root_map().unwrap();
        assert_eq!(
            lr.get("shared").unwrap().as_map(),
            lr.get("m").unwrap().as_map(),
            "{wire}: sharing survives"
        );
        assert_eq!(late.snapshot(), a.snapshot(), "{wire}");
        // And it keeps up afterwards.
        lr.set("after", true).unwrap();
        assert_eq!(a.root_map().unwrap().get("after"), Some(Value::Bool(true)));
        assert_eq!(late.snapshot(), b.snapshot(), "{wire}");
    }
}

/// Scenario 6: set, delete and add keys; the other node ends with the same
/// map.
#[test]
fn s06_set_delete_add() {
    for (wire, net) in networks() {
        let a = net.join("a");
        let b = net.join("b");
        let m = a.set_root(json!({"x": 1, "y": 2})).unwrap();
        let m = m.as_map().unwrap();
        m.set("x", 10).unwrap();
        assert!(m.delete("y").unwrap());
        assert!(!m.delete("y").unwrap());
        m.set("z", "new").unwrap();
        assert_eq!(
            b.root().to_json().unwrap(),
            json!({"x": 10, "z": "new"}),
            "{wire}"
        );
        assert_eq!(b.root_map().unwrap().keys(), vec!["x", "z"]);
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}

/// Scenario 7: two nodes write the same key at once; the higher hostname's
/// value wins on both.
#[test]
fn s07_concurrent_write_higher_hostname_wins() {
    for seed in 0..20 {
        for (wire, net) in manual_networks(seed) {
            let low = net.join("alpha");
            let high = net.join("bravo");
            net.run();
            low.set_root(json!({})).unwrap();
            net.run();
            // Both write at the same logical time without seeing each other.
            low.root_map().unwrap().set("k", "from alpha").unwrap();
            high.root_map().unwrap().set("k", "from bravo").unwrap();
            net.run();
            for node in [&low, &high] {
                assert_eq!(
                    node.root_map().unwrap().get("k"),
                    Some(Value::from("from bravo")),
                    "{wire} seed {seed} on {}",
                    node.hostname()
                );
            }
            assert_eq!(low.snapshot(), high.snapshot());
        }
    }
}

/// Scenario 8: assigning several keys at once arrives whole.
#[test]
fn s08_assign_arrives_whole() {
    for (wire, net) in networks() {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!({})).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let rb = b.root_map().unwrap();
        let (s, r) = (seen.clone(), rb.clone());
        // Inside the first event, every key of the assignment is already there.
        let _sub = rb.on(move |_| s.lock().unwrap().push(r.keys()));
        let sent = Arc::new(Mutex::new(0));
        let counter = sent.clone();
        let tap = b.on_change(move |_| *counter.lock().unwrap() += 1);
        a.root_map()
            .unwrap()
            .assign([
                ("p", Input::from(1)),
                ("q", Input::from(2)),
                ("r", Input::from(3)),
            ])
            .unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3, "{wire}: one event per key");
        assert!(
            seen.iter().all(|keys| keys == &["p", "q", "r"]),
            "{wire}: {seen:?}"
        );
        assert_eq!(*sent.lock().unwrap(), 3);
        drop(tap);
    }
}

/// A refused assignment writes nothing: no key changes, nothing is sent,
/// no event fires. Here the refusal is a reference to a removed object,
/// first still present but unreachable since the last reclamation pass
/// (`Detached`), then reclaimed (`UnknownObject`), after a key that would
/// have been written first in the given order.
#[test]
fn a_refused_assign_writes_nothing() {
    let interval = Duration::from_millis(100);
    let net = LocalNetwork::manual_with_config(3, Config::default().gc_interval(interval))
        .with_virtual_time();
    let a = net.join("a");
    let b = net.join("b");
    net.run();
    let root = a.set_root(json!({"x": 0, "gone": {"n": 1}})).unwrap();
    let root = root.as_map().unwrap().clone();
    net.run();
    let gone = root.get("gone").unwrap();
    root.delete("gone").unwrap();
    net.run();
    let events = Arc::new(Mutex::new(0));
    let count = events.clone();
    let _sub = a.on_change(move |_| *count.lock().unwrap() += 1);

    let refused = |what: fn(&EngineError) -> bool| {
        let before = (a.snapshot(), net.in_flight(), *events.lock().unwrap());
        let err = root
            .assign([
                ("x", Input::from(1)),
                ("y", Input::from(&gone)),
                ("z", Input::from(2)),
            ])
            .unwrap_err();
        assert!(err.engine().is_some_and(what), "{err}");
        let after = (a.snapshot(), net.in_flight(), *events.lock().unwrap());
        assert_eq!(before, after, "{err}: nothing changed, sent or reported");
        assert_eq!(root.get("x"), Some(Value::Int(0)));
    };

    // A pass marks what is reachable; `b` has not acknowledged it, so
    // nothing is reclaimed yet.
    net.advance(interval * 2);
    assert!(gone.as_map().unwrap().exists());
    refused(|e| matches!(e, EngineError::Detached(_)));

    while gone.as_map().unwrap().exists() {
        net.run();
        net.advance(interval);
    }
    refused(|e| matches!(e, EngineError::UnknownObject(_)));
    net.run();
    assert_eq!(a.snapshot(), b.snapshot());
}

/// An assignment holding references gives the same result as writing its
/// keys in order: a key given twice keeps its last value.
#[test]
fn assign_with_references_matches_writes_in_order() {
    for (wire, net) in networks() {
        let a = net.join("a");
        let b = net.join("b");
        let root = a.set_root(json!({"m": {"n": 1}})).unwrap();
        let root = root.as_map().unwrap().clone();
        let m = root.get("m").unwrap();
        root.assign([
            ("k", Input::from(1)),
            ("k", Input::from(&m)),
            ("j", Input::from(&m)),
            ("j", Input::from(2)),
            ("l", Input::map([("inner", &m)])),
        ])
        .unwrap();
        assert_eq!(root.get("k"), Some(m.clone()), "{wire}");
        assert_eq!(root.get("j"), Some(Value::Int(2)), "{wire}");
        assert_eq!(a.get("/l/inner"), Some(m.clone()), "{wire}");
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}

/// Scenario 9 (unlocked part): `push` and `pop` replicate with the right
/// result.
#[test]
fn s09_push_pop_replicate() {
    for (wire, net) in networks() {
        let a = net.join("a");
        let b = net.join("b");
        let arr = a.set_root(json!([1, 2])).unwrap();
        let arr = arr.as_array().unwrap();
        arr.push(3).unwrap();
        assert_eq!(arr.pop().unwrap(), Some(Value::Int(3)));
        assert_eq!(arr.pop().unwrap(), Some(Value::Int(2)));
        arr.push("x").unwrap();
        let on_b = b.root_array().unwrap();
        assert_eq!(
            on_b.to_vec().unwrap(),
            vec![Value::Int(1), Value::from("x")],
            "{wire}"
        );
        assert_eq!(on_b.pop().unwrap(), Some(Value::from("x")));
        assert_eq!(arr.to_vec().unwrap(), vec![Value::Int(1)], "{wire}");
    }
}

/// Scenario 10: `root_changed` fires on both nodes for each root
/// assignment, in order.
#[test]
fn s10_root_changed_in_order() {
    for (wire, net) in networks() {
        let a = net.join("a");
        let b = net.join("b");
        let logs: Vec<Arc<Mutex<Vec<serde_json::Value>>>> =
            (0..2).map(|_| Arc::default()).collect();
        let subs: Vec<_> = [&a, &b]
            .iter()
            .zip(&logs)
            .map(|(n, log)| {
                let log = log.clone();
                n.on_root_changed(move |c| {
                    log.lock().unwrap().push(c.new_value().to_json().unwrap())
                })
            })
            .collect();
        a.set_root(1).unwrap();
        b.set_root(json!({"two": 2})).unwrap();
        a.set_root(json!([3])).unwrap();
        a.set_root(json!([3])).unwrap(); // a new array: a new root
        let want = vec![json!(1), json!({"two": 2}), json!([3]), json!([3])];
        for log in &logs {
            assert_eq!(*log.lock().unwrap(), want, "{wire}");
        }
        drop(subs);
    }
}

/// Scenario 11: `ready` fires after `sync()` on a nested array-of-arrays
/// root.
#[test]
fn s11_ready_after_sync_on_nested_arrays() {
    for (wire, net) in networks() {
        let a = net.join("a");
        a.set_root(json!([[1, [2, [3, []]]], [], [[4]]])).unwrap();
        let late = net.join("late");
        let ready = Arc::new(Mutex::new(Vec::new()));
        let r = ready.clone();
        let _sub = late.on_ready(move |root| r.lock().unwrap().push(root.to_json().unwrap()));
        late.sync();
        assert_eq!(
            *ready.lock().unwrap(),
            vec![json!([[1, [2, [3, []]]], [], [[4]]])],
            "{wire}"
        );
    }
}

/// Scenario 12: global, per-object and per-property events fire exactly
/// once for set and delete, with the right target and property; not for
/// no-op writes, not for other properties; removed listeners never fire.
#[test]
fn s12_listeners() {
    for (wire, net) in networks() {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!({"k": 1, "other": 1})).unwrap();
        for node in [&a, &b] {
            let root = node.root_map().unwrap();
            let global = Arc::new(Mutex::new(Vec::new()));
            let object = Arc::new(Mutex::new(Vec::new()));
            let prop = Arc::new(Mutex::new(Vec::new()));
            let removed = Arc::new(Mutex::new(0));
            let g = global.clone();
            let _g = node
                .on_change(move |e| g.lock().unwrap().push((e.target().id(), e.prop().cloned())));
            let o = object.clone();
            let _o = root.on(move |e| {
                o.lock().unwrap().push((
                    e.prop().cloned(),
                    e.new_value().cloned(),
                    e.old_value().cloned(),
                ))
            });
            let p = prop.clone();
            let _p = root.on_key("k", move |e| p.lock().unwrap().push(e.new_value().cloned()));
            let rm = removed.clone();
            let gone = root.on_key("k", move |_| *rm.lock().unwrap() += 1);
            node.off(&gone);
            let rm = removed.clone();
            let dropped = root.on(move |_| *rm.lock().unwrap() += 1);
            drop(dropped);

            let writer = a.root_map().unwrap();
            writer.set("k", 2).unwrap();
            writer.set("k", 2).unwrap(); // no-op: nothing fires
            writer.delete("k").unwrap();
            writer.delete("k").unwrap(); // no-op
            writer.set("other", 5).unwrap();

            let key = |k: &str| Some(Prop::Key(k.into()));
            assert_eq!(
                *global.lock().unwrap(),
                vec![
                    (root.id(), key("k")),
                    (root.id(), key("k")),
                    (root.id(), key("other"))
                ],
                "{wire} on {}",
                node.hostname()
            );
            assert_eq!(
                *object.lock().unwrap(),
                vec![
                    (key("k"), Some(Value::Int(2)), Some(Value::Int(1))),
                    (key("k"), None, Some(Value::Int(2))),
                    (key("other"), Some(Value::Int(5)), Some(Value::Int(1))),
                ],
                "{wire}"
            );
            assert_eq!(
                *prop.lock().unwrap(),
                vec![Some(Value::Int(2)), None],
                "{wire}"
            );
            assert_eq!(
                *removed.lock().unwrap(),
                0,
                "{wire}: removed listeners never fire"
            );
            writer.set("k", 1).unwrap();
            writer.set("other", 1).unwrap();
        }
    }
}

/// The longest hostname peers accept makes a node like any other; a longer
/// one, which peers would refuse in every message, is refused where the
/// node is made.
#[test]
fn a_hostname_is_at_most_what_peers_accept() {
    let longest = "h".repeat(facsimile::MAX_HOSTNAME);
    for (wire, net) in networks() {
        let a = net.join(&longest);
        let b = net.join("b");
        a.set_root(json!({"x": 1})).unwrap();
        assert_eq!(b.root().to_json().unwrap(), json!({"x": 1}), "{wire}");
    }
    let longer = longest + "h";
    let made = std::panic::catch_unwind(|| Node::new(&longer));
    let message = made.unwrap_err();
    assert!(
        message
            .downcast_ref::<String>()
            .is_some_and(|m| m.contains("a hostname is at most 1024 bytes")),
        "{message:?}"
    );
    #[cfg(feature = "tcp")]
    {
        let refused = futures_executor::block_on(facsimile::net::connect(
            "127.0.0.1:1",
            &longer,
            facsimile::net::ConnectOptions::new("doc"),
        ));
        assert!(
            matches!(
                refused,
                Err(facsimile::net::NetError::HostnameTooLong { len: 1025 })
            ),
            "{:?}",
            refused.err()
        );
    }
}

/// A write that changes nothing sends nothing (SPEC 2.2): a key or an
/// element set to the value it holds, a delete of a key that is not there,
/// a path set to its value, a reversal or sort that leaves every index's
/// value as it was.
#[test]
fn a_write_that_changes_nothing_sends_nothing() {
    for (wire, net) in manual_networks(12) {
        let a = net.join("a");
        let _b = net.join("b");
        a.set_root(json!({"k": 1, "l": [1, 2], "m": {"s": "x"}, "p": [3, 1, 3], "q": [7, 7]}))
            .unwrap();
        net.run();
        let changes = Arc::new(Mutex::new(0));
        let seen = changes.clone();
        let _sub = a.on_change(move |_| *seen.lock().unwrap() += 1);
        let root = a.root_map().unwrap();
        let list = root.get("l").unwrap().as_array().unwrap().clone();
        root.set("k", 1).unwrap();
        assert!(!root.delete("absent").unwrap(), "{wire}");
        list.set(0, 1).unwrap();
        a.set_path("/m/s", "x").unwrap();
        let palindrome = root.get("p").unwrap().as_array().unwrap().clone();
        palindrome.reverse().unwrap();
        let same = root.get("q").unwrap().as_array().unwrap().clone();
        same.reverse().unwrap();
        same.sort().unwrap();
        assert_eq!(net.in_flight(), 0, "{wire}: nothing sent");
        assert_eq!(*changes.lock().unwrap(), 0, "{wire}: nothing heard");
        assert_eq!(palindrome.to_json().unwrap(), json!([3, 1, 3]), "{wire}");
        root.set("k", 2).unwrap();
        assert_eq!(net.in_flight(), 1, "{wire}: a change is sent");
    }
}

/// Writes of one call to the same element take effect in order: a later
/// one that puts back the value before the call is not dropped as a
/// no-op. The same for a map's keys.
#[test]
fn a_later_write_of_one_call_to_the_same_place_wins() {
    for (wire, net) in manual_networks(14) {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!({"l": [1, 2], "m": {"k": 1}})).unwrap();
        net.run();
        let list = a.get("/l").unwrap().as_array().unwrap().clone();
        list.replace_many([(0, 5), (1, 2), (0, 1)]).unwrap();
        let map = a.get("/m").unwrap().as_map().unwrap().clone();
        let mut entries: Vec<(String, i64)> = (0..20).map(|i| (format!("x{i}"), i)).collect();
        entries.extend([("k".into(), 5), ("k".into(), 1)]);
        map.assign(entries).unwrap();
        net.run();
        for node in [&a, &b] {
            assert_eq!(node.get("/l/0"), Some(Value::Int(1)), "{wire}");
            assert_eq!(node.get("/m/k"), Some(Value::Int(1)), "{wire}");
        }
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}

/// An index far past the end is refused as too large a write, before its
/// padding is made, and changes nothing; a range up to `usize::MAX` is
/// clamped to the array.
#[test]
fn an_index_far_past_the_end_is_refused_and_a_range_to_the_top_is_clamped() {
    let node = LocalNetwork::new().join("a");
    node.set_root(json!([1, 2])).unwrap();
    let list = node.root_array().unwrap();
    for index in [usize::MAX, 1 << 40, (64 << 20) + 3, (64 << 20) / 8] {
        let err = list.set(index, 3).unwrap_err();
        assert!(
            matches!(err.engine(), Some(EngineError::TooLarge { .. })),
            "{index}: {err}"
        );
    }
    assert_eq!(list.to_json().unwrap(), json!([1, 2]));
    list.fill(0, ..=usize::MAX).unwrap();
    assert_eq!(list.to_json().unwrap(), json!([0, 0]));
    list.fill(
        7,
        (
            std::ops::Bound::Excluded(usize::MAX),
            std::ops::Bound::Unbounded,
        ),
    )
    .unwrap();
    assert_eq!(list.to_json().unwrap(), json!([0, 0]));
}

#[test]
fn fill_with_an_object_stores_one_object_referenced_from_every_index() {
    for (wire, net) in manual_networks(13) {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!([0, 0, 0, 0])).unwrap();
        net.run();
        let changes = Arc::new(Mutex::new(Vec::new()));
        let seen = changes.clone();
        let _sub = b.on_change(move |e| seen.lock().unwrap().push(e.prop().cloned()));
        let list = a.root_array().unwrap();
        list.fill(json!({"k": 1}), 1..).unwrap();
        assert_eq!(net.in_flight(), 1, "{wire}: one message");
        net.run();
        let items = b.root_array().unwrap();
        assert_eq!(
            items.to_json().unwrap(),
            json!([0, {"k": 1}, {"k": 1}, {"k": 1}])
        );
        let first = items.get(1).unwrap().as_map().unwrap().clone();
        for i in 2..4 {
            assert_eq!(
                items.get(i).unwrap().as_map(),
                Some(&first),
                "{wire}: index {i}"
            );
        }
        assert_eq!(changes.lock().unwrap().len(), 1, "{wire}: one change");
        // A write through one index shows through all.
        first.set("k", 2).unwrap();
        net.run();
        assert_eq!(
            list.to_json().unwrap(),
            json!([0, {"k": 2}, {"k": 2}, {"k": 2}])
        );
        // Refused as the method it is while another node holds the lock,
        // and nothing changes.
        let guard = granted(&net, b.lock(&items), wire);
        let err = list.fill(json!({"k": 3}), ..).unwrap_err();
        assert!(
            matches!(err.engine(), Some(EngineError::Locked(_))),
            "{wire}: {err}"
        );
        assert_eq!(net.in_flight(), 0, "{wire}: nothing sent");
        drop(guard);
        net.run();
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}

/// The messages a node sent and nobody received yet.
type Outbox = Arc<Mutex<Vec<Vec<u8>>>>;

/// Two nodes wired by hand: each one's messages are kept in its outbox
/// until the test hands them to the other.
fn wired() -> (Node, Node, Outbox, Outbox) {
    let (a, b) = (Node::new("a"), Node::new("b"));
    let (from_a, from_b) = (
        Arc::new(Mutex::new(Vec::new())),
        Arc::new(Mutex::new(Vec::new())),
    );
    let log = from_a.clone();
    a.set_sender(move |m| log.lock().unwrap().push(m.as_bytes().to_vec()));
    let log = from_b.clone();
    b.set_sender(move |m| log.lock().unwrap().push(m.as_bytes().to_vec()));
    (a, b, from_a, from_b)
}

/// Hands `node` every message in `outbox`.
fn hand(node: &Node, outbox: &Mutex<Vec<Vec<u8>>>) {
    for m in std::mem::take(&mut *outbox.lock().unwrap()) {
        node.receive(&m).unwrap();
    }
}

/// A peer's message received in the middle of a batch splits it in two:
/// what was written before leaves as one message, the rest as another (the
/// group was closed for good, every later write one message of its own).
#[test]
fn a_message_received_mid_batch_splits_it_in_two() {
    let (a, b, from_a, from_b) = wired();
    a.set_root(json!({})).unwrap();
    hand(&b, &from_a);
    hand(&a, &from_b);
    b.root_map().unwrap().set("x", 1).unwrap();
    let root = a.root_map().unwrap();
    from_a.lock().unwrap().clear();
    a.batch(|| {
        root.set("k1", 1)?;
        root.set("k2", 2)?;
        hand(&a, &from_b);
        root.set("k3", 3)?;
        root.set("k4", 4)
    })
    .unwrap();
    assert_eq!(from_a.lock().unwrap().len(), 2, "before and after b's");
    hand(&b, &from_a);
    assert_eq!(a.snapshot(), b.snapshot());
    assert_eq!(
        b.root().to_json().unwrap(),
        json!({"x": 1, "k1": 1, "k2": 2, "k3": 3, "k4": 4})
    );
}

/// A batch whose closure panics, caught by the caller, closes its group:
/// the writes made before and after go out (they were held back for good).
#[test]
fn a_batch_that_panics_closes_its_group() {
    let net = LocalNetwork::new();
    let (a, b) = (net.join("a"), net.join("b"));
    a.set_root(json!({"k": 0})).unwrap();
    let root = a.root_map().unwrap();
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        a.batch(|| -> facsimile::Result<()> {
            root.set("k", 1)?;
            panic!("in the batch")
        })
    }));
    assert!(caught.is_err());
    root.set("j", 2).unwrap();
    assert_eq!(b.root().to_json().unwrap(), json!({"k": 1, "j": 2}));
    assert_eq!(a.snapshot(), b.snapshot());
}
