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
//! Catch-up ([`System::reconnect`]): each side sends its state vector, the
//! other answers with `encode_state_as_update_v1(&remote_sv)`, the update
//! holding everything the remote side lacks.
//!
//! [`YrsV2`] is the same with yrs's v2 encoding everywhere
//! (`encode_update_v2`, `encode_state_as_update_v2`, `Update::decode_v2`),
//! which compresses runs of similar fields column by column.
//!
//! `Array::insert` and `Array::remove_range` at an index walk the array's
//! blocks from the start, so a local edit at a random index costs O(length):
//! `seq_stress` runs at a smaller N (see [`Yrs::default_n`]).

use yrs::updates::decoder::Decode;
use yrs::updates::encoder::Encode;
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, Doc, Map, MapPrelim, MapRef, Number, Out, ReadTxn,
    StateVector, Transact, TransactionMut, Update,
};

use crate::system::{EditTimer, Elements, Entries, Exchange, Op, Root, System, Value, Visit};
use crate::workload::Workload;

/// yrs with its v1 encoding.
pub type Yrs = YrsDoc<false>;

/// yrs with its v2 encoding.
pub type YrsV2 = YrsDoc<true>;

/// A yrs document and handles to its root containers; `V2` picks the
/// encoding of updates and snapshots.
pub struct YrsDoc<const V2: bool> {
    doc: Doc,
    map: MapRef,
    array: ArrayRef,
    items: MapRef,
    graph: MapRef,
}

impl<const V2: bool> YrsDoc<V2> {
    fn root_map(&self, root: Root) -> &MapRef {
        match root {
            Root::Map => &self.map,
            Root::Items => &self.items,
            Root::Graph => &self.graph,
            Root::Array => panic!("the root array is not a map"),
        }
    }
}

impl<const V2: bool> YrsDoc<V2> {
    fn local_edit(&self, txn: &mut TransactionMut<'_>, op: Op<'_>) {
        match op {
            Op::MapSet { key, value } => {
                self.map.insert(txn, key, value);
            }
            Op::ArrayPush { value } => {
                self.array.push_back(txn, value);
            }
            Op::ArrayInsert { index, value } => {
                self.array.insert(txn, index32(index), value);
            }
            Op::ArrayDelete { index } => self.array.remove(txn, index32(index)),
        }
    }

    /// This replica's state vector, encoded for the wire.
    fn state_vector(&self) -> Vec<u8> {
        let sv = self.doc.transact().state_vector();
        if V2 { sv.encode_v2() } else { sv.encode_v1() }
    }

    /// Everything this replica has that the encoded state vector `remote`
    /// lacks.
    fn diff(&self, remote: &[u8]) -> Vec<u8> {
        let sv = if V2 {
            StateVector::decode_v2(remote)
        } else {
            StateVector::decode_v1(remote)
        }
        .expect("yrs: undecodable state vector");
        let txn = self.doc.transact();
        if V2 {
            txn.encode_state_as_update_v2(&sv)
        } else {
            txn.encode_state_as_update_v1(&sv)
        }
    }
}

impl<const V2: bool> System for YrsDoc<V2> {
    const NAME: &'static str = if V2 { "yrs-v2" } else { "yrs" };

    fn default_n(workload: Workload) -> usize {
        match workload {
            // O(length) per edit: 100,000 does not finish in 300 s, 50,000
            // takes about 85 s on the reference machine.
            Workload::SeqStress | Workload::SeqChurn => 50_000,
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
        let txn = self.doc.transact();
        if V2 {
            txn.encode_state_as_update_v2(&StateVector::default())
        } else {
            txn.encode_state_as_update_v1(&StateVector::default())
        }
    }

    type Update = Vec<u8>;

    fn edit(&mut self, op: Op<'_>, timer: &mut EditTimer) -> Vec<u8> {
        let mut txn = self.doc.transact_mut();
        self.local_edit(&mut txn, op);
        timer.local();
        let update = if V2 {
            txn.encode_update_v2()
        } else {
            txn.encode_update_v1()
        };
        timer.encode();
        drop(txn);
        timer.local();
        update
    }

    fn apply(&mut self, update: &[u8]) {
        let update = if V2 {
            Update::decode_v2(update)
        } else {
            Update::decode_v1(update)
        }
        .expect("yrs: undecodable update");
        self.doc
            .transact_mut()
            .apply_update(update)
            .expect("yrs: update rejected");
    }

    fn edit_offline(&mut self, op: Op<'_>) {
        let mut txn = self.doc.transact_mut();
        self.local_edit(&mut txn, op);
    }

    fn reconnect(a: &mut Self, b: &mut Self) -> Exchange {
        let mut exchange = Exchange::default();
        let sv_a = a.state_vector();
        let sv_b = b.state_vector();
        exchange.add(sv_a.len());
        exchange.add(sv_b.len());
        let for_b = a.diff(&sv_b);
        let for_a = b.diff(&sv_a);
        exchange.add(for_b.len());
        exchange.add(for_a.len());
        b.apply(&for_b);
        a.apply(&for_a);
        exchange
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
