//! [`System`] for yrs 0.28, the Rust port of Yjs.
//!
//! Per-operation path: every edit runs in its own `TransactionMut`, and the
//! update is that transaction's `encode_update_v1`, taken just before it
//! commits. It holds exactly the transaction's inserts and deletes, the
//! smallest update yrs makes, and is what `Doc::observe_update_v1` hands a
//! live app on commit. `encode_diff_v1` against the previous state vector was
//! not used: it always carries the document's whole delete set, so its size
//! and cost grow with every delete (`seq_stress`) and every overwrite
//! (`map_overwrite`). The receiver decodes with `Update::decode_v1` and
//! applies with `TransactionMut::apply_update`.
//!
//! Snapshot: `encode_state_as_update_v1` against an empty state vector,
//! applied to a fresh document.
//!
//! `Array::insert` and `Array::remove_range` at an index walk the array's
//! blocks from the start, so a local edit at a random index costs O(length):
//! `seq_stress` runs at a smaller N (see [`Yrs::default_n`]).

use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, Doc, Map, MapPrelim, MapRef, Number, Out, ReadTxn,
    StateVector, Transact, TransactionMut, Update,
};

use crate::system::{EditTimer, Elements, Entries, Op, Root, System, Value, Visit};
use crate::workload::Workload;

/// A yrs document and handles to its root containers.
pub struct Yrs {
    doc: Doc,
    map: MapRef,
    array: ArrayRef,
    items: MapRef,
    graph: MapRef,
}

impl Yrs {
    /// The whole document in yrs's v2 encoding (columnar, run-length
    /// encoded), for size comparisons; [`System::snapshot`] is v1.
    pub fn snapshot_v2(&self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v2(&StateVector::default())
    }

    fn root_map(&self, root: Root) -> &MapRef {
        match root {
            Root::Map => &self.map,
            Root::Items => &self.items,
            Root::Graph => &self.graph,
            Root::Array => panic!("the root array is not a map"),
        }
    }
}

impl System for Yrs {
    const NAME: &'static str = "yrs";

    fn default_n(workload: Workload) -> usize {
        match workload {
            // O(length) per edit: 100,000 does not finish in 300 s, 50,000
            // takes about 85 s on the reference machine.
            Workload::SeqStress => 50_000,
            other => other.default_n(),
        }
    }

    fn new(peer: u64) -> Self {
        let doc = Doc::with_client_id(peer);
        // Root types are identified by name, so every replica creates its
        // own handles and they meet on the first update.
        Self {
            map: doc.get_or_insert_map(Root::Map.name()),
            array: doc.get_or_insert_array(Root::Array.name()),
            items: doc.get_or_insert_map(Root::Items.name()),
            graph: doc.get_or_insert_map(Root::Graph.name()),
            doc,
        }
    }

    fn load(peer: u64, snapshot: &[u8]) -> Self {
        let mut replica = Self::new(peer);
        replica.apply(snapshot);
        replica
    }

    fn snapshot(&mut self) -> Vec<u8> {
        self.doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default())
    }

    type Update = Vec<u8>;

    fn edit(&mut self, op: Op<'_>, timer: &mut EditTimer) -> Vec<u8> {
        let mut txn = self.doc.transact_mut();
        match op {
            Op::MapSet { key, value } => {
                self.map.insert(&mut txn, key, value);
            }
            Op::ArrayPush { value } => {
                self.array.push_back(&mut txn, value);
            }
            Op::ArrayInsert { index, value } => {
                self.array.insert(&mut txn, index32(index), value);
            }
            Op::ArrayDelete { index } => self.array.remove(&mut txn, index32(index)),
        }
        timer.local();
        let update = txn.encode_update_v1();
        timer.encode();
        drop(txn);
        timer.local();
        update
    }

    fn apply(&mut self, update: &[u8]) {
        let update = Update::decode_v1(update).expect("yrs: undecodable update");
        self.doc
            .transact_mut()
            .apply_update(update)
            .expect("yrs: update rejected");
    }

    fn write_map(&mut self, root: Root, entries: Entries) {
        let map = self.root_map(root);
        let mut txn = self.doc.transact_mut();
        write_entries(&mut txn, map, entries);
    }

    fn walk<V: Visit>(&self, root: Root, visitor: &mut V) {
        let txn = self.doc.transact();
        if root.is_array() {
            walk_array(&txn, &self.array, visitor);
        } else {
            walk_map(&txn, self.root_map(root), visitor);
        }
    }
}

fn index32(index: usize) -> u32 {
    u32::try_from(index).expect("yrs indexes arrays with u32")
}

fn write_entries(txn: &mut TransactionMut<'_>, map: &MapRef, entries: Entries) {
    for (key, value) in entries {
        match value {
            Value::Int(i) => {
                map.insert(txn, key, i);
            }
            Value::Str(s) => {
                map.insert(txn, key, s);
            }
            Value::Map(entries) => {
                let child = map.insert(txn, key, MapPrelim::default());
                write_entries(txn, &child, entries);
            }
            Value::Array(elements) => {
                let child = map.insert(txn, key, ArrayPrelim::default());
                write_elements(txn, &child, elements);
            }
        }
    }
}

fn write_elements(txn: &mut TransactionMut<'_>, array: &ArrayRef, elements: Elements) {
    for value in elements {
        match value {
            Value::Int(i) => {
                array.push_back(txn, i);
            }
            Value::Str(s) => {
                array.push_back(txn, s);
            }
            Value::Map(entries) => {
                let child = array.push_back(txn, MapPrelim::default());
                write_entries(txn, &child, entries);
            }
            Value::Array(elements) => {
                let child = array.push_back(txn, ArrayPrelim::default());
                write_elements(txn, &child, elements);
            }
        }
    }
}

fn walk_map<T: ReadTxn, V: Visit>(txn: &T, map: &MapRef, visitor: &mut V) {
    visitor.enter_map();
    for (key, value) in map.iter(txn) {
        visitor.key(key);
        walk_out(txn, value, visitor);
    }
    visitor.leave_map();
}

fn walk_array<T: ReadTxn, V: Visit>(txn: &T, array: &ArrayRef, visitor: &mut V) {
    visitor.enter_array();
    for value in array.iter(txn) {
        walk_out(txn, value, visitor);
    }
    visitor.leave_array();
}

fn walk_out<T: ReadTxn, V: Visit>(txn: &T, value: Out, visitor: &mut V) {
    match value {
        Out::Any(Any::Number(Number::Int(i))) => visitor.int(i),
        Out::Any(Any::String(s)) => visitor.str(&s),
        Out::YMap(map) => walk_map(txn, &map, visitor),
        Out::YArray(array) => walk_array(txn, &array, visitor),
        other => visitor.other(&other),
    }
}
