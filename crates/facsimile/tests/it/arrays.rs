//! Array writes computed from a read of the array, outside the node's lock
//! (a reorder, a removal picked by value), and writes whose positions come
//! from the length as of the write: they apply only to what they read (a
//! reorder to the elements it ordered, a removal to the elements it
//! picked), changes to other elements meanwhile do not hold them up, and a
//! closure or a peer that rewrites what they read cannot keep them running
//! forever.

use std::cell::Cell;

use facsimile::{ArrayRef, Config, EngineError, Error, LocalNetwork, Value, WireFormat};
use facsimile_core::sim::run_seeds;
use rand::rngs::SmallRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::manual_networks;

/// An order whose own computation rewrites an element it read (Python's
/// key function writing to the list it sorts) runs a bounded number of
/// times; the array keeps what it wrote and nothing is moved. One that
/// only appends sorts what it read on its first run.
#[test]
fn a_reorder_that_rewrites_what_it_reads_gives_up() {
    for (wire, net) in manual_networks(31) {
        let a = net.join("a");
        let _b = net.join("b");
        a.set_root(json!([3, 1, 2])).unwrap();
        net.run();
        let list = a.root_array().unwrap();
        let runs = Cell::new(0_usize);
        let sorted = list.reorder(|values| {
            runs.set(runs.get() + 1);
            list.set(2, 10 * runs.get() as i64).unwrap();
            by_value(values)
        });
        assert!(
            matches!(
                sorted,
                Err(Error::Modified {
                    attempts: ArrayRef::REORDER_ATTEMPTS
                })
            ),
            "{wire}: {sorted:?}"
        );
        assert_eq!(runs.get(), ArrayRef::REORDER_ATTEMPTS, "{wire}");
        let last = 10 * ArrayRef::REORDER_ATTEMPTS;
        assert_eq!(list.to_json().unwrap(), json!([3, 1, last]), "{wire}");
        let changed = list.sort_by(|x, y| {
            runs.set(runs.get() + 1);
            list.set(0, 10 * runs.get() as i64).unwrap();
            x.total_cmp(y)
        });
        assert!(matches!(changed, Err(Error::Modified { .. })), "{wire}");
        let first = list.get(0).and_then(|v| v.as_i64()).unwrap();
        assert!(first > last as i64, "{wire}");

        runs.set(0);
        list.reorder(|values| {
            runs.set(runs.get() + 1);
            list.push(0).unwrap();
            by_value(values)
        })
        .unwrap();
        assert_eq!(runs.get(), 1, "{wire}: an append does not hold it up");
        assert_eq!(
            list.to_json().unwrap(),
            json!([1, last, first, 0]),
            "{wire}"
        );
    }
}

/// The positions that put `values` in order, by [`Value::total_cmp`].
fn by_value(values: &[Value]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&x, &y| values[x].total_cmp(&values[y]));
    order
}

/// Another node rewriting an element read every time the order is
/// computed (a peer faster than the key function) ends the reorder with
/// `Modified`, not an endless loop; once it stops, it applies.
#[test]
fn a_reorder_starved_by_remote_writes_gives_up_then_applies() {
    for (wire, net) in manual_networks(32) {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!([3, 1, 2])).unwrap();
        net.run();
        let list = a.root_array().unwrap();
        let theirs = b.root_array().unwrap();
        let runs = Cell::new(0_usize);
        let starved = list.reorder(|values| {
            runs.set(runs.get() + 1);
            theirs.set(0, 10 * runs.get() as i64).unwrap();
            net.run();
            by_value(values)
        });
        assert!(matches!(starved, Err(Error::Modified { .. })), "{wire}");
        assert_eq!(runs.get(), ArrayRef::REORDER_ATTEMPTS, "{wire}");
        list.reorder(by_value).unwrap();
        net.run();
        let last = 10 * ArrayRef::REORDER_ATTEMPTS;
        assert_eq!(list.to_json().unwrap(), json!([1, 2, last]), "{wire}");
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
        // Single attempts tell the caller.
        assert!(
            !list
                .try_reorder(|values| {
                    theirs.remove(2).unwrap();
                    net.run();
                    (0..values.len()).rev().collect()
                })
                .unwrap(),
            "{wire}"
        );
        assert_eq!(
            list.to_json().unwrap(),
            json!([1, 2]),
            "{wire}: nothing moved"
        );
    }
}

/// A reorder whose order was computed before another node's inserts and
/// writes elsewhere in the array landed puts the elements it read in
/// order, in the places they hold at the write; the elements inserted
/// meanwhile stay where they are.
#[test]
fn a_reorder_computed_before_remote_inserts_sorts_what_it_read() {
    for (wire, net) in manual_networks(39) {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!([3, 1, 2])).unwrap();
        net.run();
        let list = a.root_array().unwrap();
        let theirs = b.root_array().unwrap();
        let applied = list
            .try_reorder(|values| {
                theirs.insert(1, 0).unwrap();
                theirs.push(50).unwrap();
                theirs.set(4, 60).unwrap(); // an element not read
                net.run();
                by_value(values)
            })
            .unwrap();
        assert!(applied, "{wire}");
        assert_eq!(list.to_json().unwrap(), json!([1, 0, 2, 3, 60]), "{wire}");
        assert_eq!(net.in_flight(), 1, "{wire}: one message");
        net.run();
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}

/// A reorder whose order was computed from a value written or removed
/// meanwhile by another node moves nothing and sends nothing, whatever
/// else changed; inserts alone do not refuse it.
#[test]
fn a_reorder_refused_only_for_an_element_read_written_or_removed() {
    for (wire, net) in manual_networks(40) {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!([3, 1, 2])).unwrap();
        net.run();
        let list = a.root_array().unwrap();
        let theirs = b.root_array().unwrap();
        let reorder_while = |peer_writes: &dyn Fn()| {
            list.try_reorder(|values| {
                peer_writes();
                net.run(); // the peer's writes land now
                by_value(values)
            })
            .unwrap()
        };
        let written = reorder_while(&|| {
            theirs.push(7).unwrap();
            theirs.set(1, 5).unwrap();
        });
        assert!(!written, "{wire}");
        assert_eq!(list.to_json().unwrap(), json!([3, 5, 2, 7]), "{wire}");
        assert_eq!(net.in_flight(), 0, "{wire}: nothing sent");

        let removed = reorder_while(&|| {
            theirs.insert(0, 8).unwrap();
            theirs.remove(2).map(|_| ()).unwrap();
        });
        assert!(!removed, "{wire}");
        assert_eq!(list.to_json().unwrap(), json!([8, 3, 2, 7]), "{wire}");
        assert_eq!(net.in_flight(), 0, "{wire}: nothing sent");

        let inserted = reorder_while(&|| theirs.insert(2, 9).unwrap());
        assert!(inserted, "{wire}");
        assert_eq!(list.to_json().unwrap(), json!([2, 3, 9, 7, 8]), "{wire}");
        net.run();
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}

/// An element read that another node moved meanwhile is still one of the
/// elements read: it takes its place in the order among the places they
/// hold at the write, and an element inserted meanwhile stays where it is.
#[test]
fn a_read_element_moved_meanwhile_takes_its_sorted_place() {
    for (wire, net) in manual_networks(41) {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!([3, 1, 2, 5, 4])).unwrap();
        net.run();
        let list = a.root_array().unwrap();
        let theirs = b.root_array().unwrap();
        let applied = list
            .try_reorder(|values| {
                theirs.insert(0, "new").unwrap();
                // ["new", 3, 1, 2, 5, 4]: 5 to the front.
                theirs.reorder(|_| vec![4, 0, 1, 2, 3, 5]).unwrap();
                net.run();
                assert_eq!(
                    list.to_json().unwrap(),
                    json!([5, "new", 3, 1, 2, 4]),
                    "{wire}"
                );
                by_value(values)
            })
            .unwrap();
        assert!(applied, "{wire}");
        assert_eq!(
            list.to_json().unwrap(),
            json!([1, "new", 2, 3, 4, 5]),
            "{wire}"
        );
        net.run();
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}

/// Random edits by two other nodes land while the order is computed: the
/// reorder is refused, moving nothing and sending nothing, exactly when an
/// element it read was written or removed; otherwise the elements read end
/// in sorted order in the places they hold at the write, every other
/// element keeps its place, and all replicas converge.
#[test]
fn reorders_under_random_remote_edits_sort_what_they_read() {
    run_seeds(0..120, |seed| {
        for (wire, net) in manual_networks(seed) {
            let what = format!("seed {seed}, {wire}");
            let a = net.join("a");
            let others = [net.join("b"), net.join("c")];
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut read: Vec<i64> = (0..rng.random_range(0..10)).collect();
            read.shuffle(&mut rng);
            a.set_root(json!(read)).unwrap();
            net.run();
            let list = a.root_array().unwrap();
            let mut fresh = FRESH;
            let mut before = Vec::new();
            let applied = list
                .try_reorder(|values| {
                    for _ in 0..rng.random_range(0..6) {
                        let on = others[rng.random_range(0..2)].root_array().unwrap();
                        random_edit(&on, &mut rng, &mut fresh);
                    }
                    net.run();
                    before = ints(&list);
                    by_value(values)
                })
                .unwrap();
            let after = ints(&list);
            let all_read = read.iter().all(|v| before.contains(v));
            assert_eq!(applied, all_read, "{what}: {before:?}");
            if applied {
                let copies = net.in_flight();
                assert!(copies <= others.len(), "{what}: one message to each");
                let sorted: Vec<i64> = after.iter().copied().filter(|&v| v < FRESH).collect();
                let mut expected = read.clone();
                expected.sort_unstable();
                assert_eq!(sorted, expected, "{what}: {before:?} -> {after:?}");
                for (i, (&was, &is)) in before.iter().zip(&after).enumerate() {
                    if was >= FRESH {
                        assert_eq!(is, was, "{what}: {i} of {before:?} -> {after:?}");
                    }
                }
            } else {
                assert_eq!(after, before, "{what}: nothing moved");
                assert_eq!(net.in_flight(), 0, "{what}: nothing sent");
            }
            net.run();
            for other in &others {
                assert_eq!(a.snapshot(), other.snapshot(), "{what}");
            }
        }
    });
}

/// Values read in [`reorders_under_random_remote_edits_sort_what_they_read`]
/// are below this, all distinct; every value written meanwhile is new and
/// above it.
const FRESH: i64 = 1000;

/// One edit of another node: mostly inserts, moves and writes of
/// elements not read; sometimes a write or removal of any element.
fn random_edit(list: &ArrayRef, rng: &mut SmallRng, fresh: &mut i64) {
    let len = list.len();
    let mut next = || {
        *fresh += 1;
        *fresh
    };
    match rng.random_range(0..10) {
        0..=2 => list.insert(rng.random_range(0..=len), next()).unwrap(),
        3 => list.push(next()).unwrap(),
        4..=6 if len > 1 => {
            let (from, to) = (rng.random_range(0..len), rng.random_range(0..len));
            let mut order: Vec<usize> = (0..len).collect();
            let moved = order.remove(from);
            order.insert(to, moved);
            list.reorder(|_| order.clone()).unwrap();
        }
        7 if len > 0 => list.set(rng.random_range(0..len), next()).unwrap(),
        8 if len > 0 => list.remove(rng.random_range(0..len)).map(|_| ()).unwrap(),
        _ => {
            let unread: Vec<usize> = (0..len)
                .filter(|&i| list.get(i).and_then(|v| v.as_i64()) > Some(FRESH))
                .collect();
            match unread.choose(rng) {
                Some(&i) => list.set(i, next()).unwrap(),
                None => list.push(next()).unwrap(),
            }
        }
    }
}

/// An array of integers, read.
fn ints(list: &ArrayRef) -> Vec<i64> {
    let values = list.to_vec().unwrap();
    values.iter().map(|v| v.as_i64().unwrap()).collect()
}

/// A removal picked on a read does not land on another element when a
/// peer's writes are applied between the read and the write: an insert
/// elsewhere moves the element picked, which is removed all the same; a
/// write or a removal of the element picked refuses it whole.
#[test]
fn a_removal_picked_before_remote_writes_removes_the_element_picked_or_nothing() {
    for (wire, net) in manual_networks(33) {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!(["p", "q", "target", "r"])).unwrap();
        net.run();
        let list = a.root_array().unwrap();
        let on_b = b.root_array().unwrap();
        let target = |values: &[Value]| -> Vec<usize> {
            let at = values.iter().position(|v| v.as_str() == Some("target"));
            at.into_iter().collect()
        };
        let remove_while = |peer_writes: &dyn Fn()| {
            list.try_remove_picked(|values| {
                let at = target(values);
                peer_writes();
                net.run(); // the peer's writes land now
                at
            })
            .unwrap()
        };
        let raced = remove_while(&|| on_b.insert(0, "new").unwrap());
        assert_eq!(raced, Some(vec![Value::from("target")]), "{wire}");
        assert_eq!(
            list.to_json().unwrap(),
            json!(["new", "p", "q", "r"]),
            "{wire}"
        );

        list.insert(2, "target").unwrap();
        net.run();
        let written = remove_while(&|| on_b.set(2, "target, rewritten").unwrap());
        assert_eq!(written, None, "{wire}");
        let removed = remove_while(&|| on_b.remove(1).map(|_| ()).unwrap());
        assert_eq!(removed, Some(vec![]), "{wire}: none picked");
        let gone = list.try_remove_picked(|values| {
            let at = vec![values.len() - 1];
            on_b.pop().unwrap();
            net.run();
            at
        });
        assert_eq!(gone.unwrap(), None, "{wire}");
        net.run();
        assert_eq!(
            b.root().to_json().unwrap(),
            json!(["new", "target, rewritten", "q"]),
            "{wire}"
        );
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}

/// A list a node took from a sync and took again from another sync between
/// the read and the write holds the element picked under the same identity:
/// that element is removed, not the one at its old position.
#[test]
fn a_removal_picked_before_a_sync_replaced_the_list_removes_the_element_picked() {
    for (wire, net) in manual_networks(34) {
        let b = net.join("b");
        b.set_root(json!(["p", "q", "target", "r"])).unwrap();
        let a = net.join("a");
        net.run();
        a.sync();
        net.run();
        let list = a.root_array().unwrap();
        let raced = list
            .try_remove_picked(|values| {
                let at = values.iter().position(|v| v.as_str() == Some("target"));
                b.root_array().unwrap().insert(0, "new").unwrap();
                a.sync();
                net.run(); // a takes the document again, with the insert
                at.into_iter().collect()
            })
            .unwrap();
        assert_eq!(raced, Some(vec![Value::from("target")]), "{wire}");
        net.run();
        assert_eq!(
            a.root().to_json().unwrap(),
            json!(["new", "p", "q", "r"]),
            "{wire}"
        );
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}

/// Removals of one call are one message, or none when they may not fit it:
/// a refused call removes nothing anywhere.
#[test]
fn picked_removals_are_all_or_nothing() {
    for (wire, net) in manual_networks(34) {
        let a = net.join("a");
        let b = net.join("b");
        let items: Vec<i64> = (0..300).collect();
        a.set_root(json!(items)).unwrap();
        net.run();
        let list = a.root_array().unwrap();
        let every_other = |values: &[Value]| (0..values.len()).step_by(2).collect();
        let removed = list.try_remove_picked(every_other).unwrap().unwrap();
        assert_eq!(removed.len(), 150, "{wire}");
        assert_eq!(removed[1], Value::Int(2), "{wire}");
        assert_eq!(net.in_flight(), 1, "{wire}: one message");
        net.run();
        assert_eq!(b.root_array().unwrap().len(), 150, "{wire}");
        assert_eq!(b.get("/0"), Some(Value::Int(1)), "{wire}");

        let past = list.try_remove_picked(|_| vec![0, 300]).unwrap_err();
        assert!(
            matches!(
                past.engine(),
                Some(EngineError::IndexOutOfBounds { index: 300, .. })
            ),
            "{wire}"
        );
    }
    for format in [WireFormat::Binary, WireFormat::Json] {
        let small = Config::default().max_message_size(1500).wire_format(format);
        let net = LocalNetwork::manual_with_config(35, small);
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!([])).unwrap();
        let list = a.root_array().unwrap();
        for chunk in 0..30 {
            list.extend((0..10).map(|i| chunk * 10 + i)).unwrap();
        }
        net.run();
        let every_other = |values: &[Value]| (0..values.len()).step_by(2).collect();
        let err = list.try_remove_picked(every_other).unwrap_err();
        assert!(
            matches!(err.engine(), Some(EngineError::TooLarge { .. })),
            "{format:?}: {err}"
        );
        assert_eq!(net.in_flight(), 0, "{format:?}: nothing sent");
        assert_eq!(list.len(), 300, "{format:?}: nothing removed");
        assert_eq!(a.snapshot(), b.snapshot(), "{format:?}");
    }
}

/// Writes whose positions come from the length as of the write: a range
/// past the end is refused whole, and a removal by positions is all or
/// nothing, one message, never refused for a change made meanwhile.
#[test]
fn positions_chosen_from_the_length_at_the_write() {
    for (wire, net) in manual_networks(36) {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!([0, 1, 2])).unwrap();
        net.run();
        let list = a.root_array().unwrap();
        // b's writes reach a after a's read of the length: the range
        // names a's last element as of the write.
        let read = list.len();
        b.root_array().unwrap().extend([3, 4]).unwrap();
        net.run();
        let removed = list.splice_with(|len| len - 1..len, ["last"]).unwrap();
        assert_eq!(removed, [Value::Int(4)], "{wire}: read {read}");
        let past = list.splice_with(|len| len..len + 1, [0; 0]).unwrap_err();
        assert!(
            matches!(
                past.engine(),
                Some(EngineError::IndexOutOfBounds {
                    index: 6,
                    len: 5,
                    ..
                })
            ),
            "{wire}: {past}"
        );
        let reversed = list.splice_with(|_| std::ops::Range { start: 2, end: 1 }, [0; 0]);
        assert!(reversed.is_err(), "{wire}");
        assert_eq!(net.in_flight(), 1, "{wire}: only the first write was sent");

        let odd = list
            .remove_many_with(|len| (1..len).step_by(2).collect())
            .unwrap();
        assert_eq!(odd, [Value::Int(1), Value::Int(3)], "{wire}");
        let past = list.remove_many_with(|len| vec![0, len]).unwrap_err();
        assert!(
            matches!(past.engine(), Some(EngineError::IndexOutOfBounds { .. })),
            "{wire}"
        );
        net.run();
        assert_eq!(a.root().to_json().unwrap(), json!([0, 2, "last"]), "{wire}");
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}

/// `repeat` references an object element once per copy, empties the array
/// for 0, and refuses copies that cannot fit a message without making any.
#[test]
fn repeat_references_objects_and_refuses_what_cannot_fit() {
    for (wire, net) in manual_networks(37) {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!([1, {"k": "v"}])).unwrap();
        let list = a.root_array().unwrap();
        list.repeat(3).unwrap();
        net.run();
        let on_b = b.root_array().unwrap();
        assert_eq!(on_b.len(), 6, "{wire}");
        assert_eq!(
            on_b.get(1),
            on_b.get(5),
            "{wire}: one object, referenced thrice"
        );
        assert!(on_b.get(1).unwrap().as_map().is_some(), "{wire}");
        list.repeat(1).unwrap();
        assert_eq!(net.in_flight(), 0, "{wire}: once over sends nothing");

        let huge = list.repeat(usize::MAX).unwrap_err();
        assert!(
            matches!(huge.engine(), Some(EngineError::TooLarge { .. })),
            "{wire}: {huge}"
        );
        assert_eq!(list.len(), 6, "{wire}: nothing appended");
        list.repeat(0).unwrap();
        net.run();
        assert!(on_b.is_empty(), "{wire}");
    }
}

/// `get_or_insert` keeps a value already written, by this node or by a
/// message, and sends nothing then; an absent key is set once.
#[test]
fn get_or_insert_never_overwrites() {
    for (wire, net) in manual_networks(38) {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!({})).unwrap();
        net.run();
        let map = a.root_map().unwrap();
        b.root_map().unwrap().set("k", "from b").unwrap();
        net.run();
        assert_eq!(
            map.get_or_insert("k", "from a").unwrap(),
            Value::from("from b"),
            "{wire}"
        );
        assert_eq!(net.in_flight(), 0, "{wire}: nothing sent");
        let made = map.get_or_insert("list", json!([1])).unwrap();
        assert_eq!(made.as_array().unwrap().len(), 1, "{wire}");
        net.run();
        assert_eq!(b.get("/list/0"), Some(Value::Int(1)), "{wire}");
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
    }
}
