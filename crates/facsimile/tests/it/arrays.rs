//! Array writes computed from a read of the array, outside the node's lock
//! (a reorder, a removal picked by value), and writes whose positions come
//! from the length as of the write: they apply only to what they read (a
//! reorder to the array, a removal to the elements it picked), and a
//! closure or a peer that changes it meanwhile cannot keep them running
//! forever.

use std::cell::Cell;

use facsimile::{ArrayRef, Config, EngineError, Error, LocalNetwork, Value, WireFormat};
use serde_json::json;

use crate::manual_networks;

/// An order whose own computation changes the array (Python's key function
/// appending to the list it sorts) runs a bounded number of times; the
/// array keeps what it wrote and nothing is moved.
#[test]
fn a_reorder_that_changes_its_array_gives_up() {
    for (wire, net) in manual_networks(31) {
        let a = net.join("a");
        let _b = net.join("b");
        a.set_root(json!([3, 1, 2])).unwrap();
        net.run();
        let list = a.root_array().unwrap();
        let runs = Cell::new(0);
        let sorted = list.reorder(|values| {
            runs.set(runs.get() + 1);
            list.push(0).unwrap();
            let mut order: Vec<usize> = (0..values.len()).collect();
            order.sort_by_key(|&i| values[i].as_i64());
            order
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
        assert_eq!(list.len(), 3 + ArrayRef::REORDER_ATTEMPTS, "{wire}");
        assert_eq!(list.get(0), Some(Value::Int(3)), "{wire}: nothing moved");
        let changed = list.sort_by(|x, y| {
            list.push(0).unwrap();
            x.total_cmp(y)
        });
        assert!(matches!(changed, Err(Error::Modified { .. })), "{wire}");
    }
}

/// Writes of another node applied every time the order is computed (a
/// peer faster than the key function) end the reorder with `Modified`, not
/// an endless loop; once they stop, it applies.
#[test]
fn a_reorder_starved_by_remote_writes_gives_up_then_applies() {
    for (wire, net) in manual_networks(32) {
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!([3, 1, 2])).unwrap();
        net.run();
        let list = a.root_array().unwrap();
        let theirs = b.root_array().unwrap();
        let by_value = |values: &[Value]| {
            let mut order: Vec<usize> = (0..values.len()).collect();
            order.sort_by(|&x, &y| values[x].total_cmp(&values[y]));
            order
        };
        let starved = list.reorder(|values| {
            theirs.push(9).unwrap();
            net.run();
            by_value(values)
        });
        assert!(matches!(starved, Err(Error::Modified { .. })), "{wire}");
        list.reorder(by_value).unwrap();
        net.run();
        let expected: Vec<i64> = [1, 2, 3]
            .into_iter()
            .chain([9; ArrayRef::REORDER_ATTEMPTS])
            .collect();
        assert_eq!(list.to_json().unwrap(), json!(expected), "{wire}");
        assert_eq!(a.snapshot(), b.snapshot(), "{wire}");
        // Single attempts tell the caller.
        assert!(
            !list
                .try_reorder(|values| {
                    theirs.unshift([0]).unwrap();
                    net.run();
                    (0..values.len()).rev().collect()
                })
                .unwrap(),
            "{wire}"
        );
        assert_eq!(list.get(0), Some(Value::Int(0)), "{wire}: nothing moved");
    }
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
