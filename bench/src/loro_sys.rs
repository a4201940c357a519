//! [`System`] for loro 1.17.
//!
//! Per-operation path: the edit is made on the root container handle and
//! committed with `LoroDoc::commit`; the update is
//! `export(ExportMode::updates_in_range(..))` over the span of operations
//! this replica made since its previous update. That is the exact encoder
//! `LoroDoc::subscribe_local_update` runs on every commit (the idiomatic live
//! sync path), called directly so its time is measured apart from the edit.
//! `ExportMode::updates(&previous_version)` gives the same bytes for a
//! single writer, but after a replica imports remote changes it would re-send
//! them. The receiver applies with `LoroDoc::import`.
//!
//! Importing a change that is concurrent with the replica's own history
//! replays the history since their common ancestor to compute the state
//! change (`OpLog::try_iter_from_replay_base_causally` dominates a profile),
//! so in `sixteen` each import grows with the concurrent history: it runs at
//! a smaller N (see [`Loro::default_n`]).
//!
//! Catch-up ([`System::reconnect`]): each side sends its encoded oplog
//! version vector, the other answers with `export(ExportMode::updates(&vv))`,
//! every change the remote side lacks.
//!
//! Snapshot: `export(ExportMode::Snapshot)`, imported into a fresh document.
//! loro decodes a snapshot's container states lazily, on first access, so
//! part of its decode time shows up in the read time.

use loro::{
    Container, ContainerTrait, ExportMode, IdSpan, LoroDoc, LoroList, LoroMap, LoroValue,
    ValueOrContainer, VersionVector,
};

use crate::system::{EditTimer, Elements, Entries, Exchange, Op, Root, System, Value, Visit};
use crate::workload::Workload;

/// A loro document and handles to its root containers.
pub struct Loro {
    doc: LoroDoc,
    peer: u64,
    map: LoroMap,
    list: LoroList,
    /// The counter of this replica's first operation not yet sent.
    unsent: i32,
}

impl Loro {
    fn with_doc(peer: u64, doc: LoroDoc) -> Self {
        doc.set_peer_id(peer).expect("loro: invalid peer id");
        Self {
            map: doc.get_map(Root::Map.name()),
            list: doc.get_list(Root::Array.name()),
            unsent: 0,
            peer,
            doc,
        }
    }
}

impl Loro {
    /// Makes `op` and commits it as one change.
    fn local_edit(&self, op: Op<'_>) {
        match op {
            Op::MapSet { key, value } => self.map.insert(key, value),
            Op::ArrayPush { value } => self.list.push(value),
            Op::ArrayInsert { index, value } => self.list.insert(index, value),
            Op::ArrayDelete { index } => self.list.delete(index, 1),
        }
        .expect("loro: edit failed");
        self.doc.commit();
    }

    /// Every change this replica has that the encoded version vector
    /// `remote` lacks.
    fn diff(&self, remote: &[u8]) -> Vec<u8> {
        let vv = VersionVector::decode(remote).expect("loro: undecodable version vector");
        self.doc
            .export(ExportMode::updates(&vv))
            .expect("loro: update export failed")
    }
}

impl System for Loro {
    const NAME: &'static str = "loro";

    fn default_n(workload: Workload) -> usize {
        match workload {
            // 10,000 per replica does not finish in 300 s; 3,000 takes about
            // 60 s on the reference machine.
            Workload::Sixteen => 3_000,
            other => other.default_n(),
        }
    }

    fn new(peer: u64) -> Self {
        Self::with_doc(peer, LoroDoc::new())
    }

    fn load(peer: u64, snapshot: &[u8]) -> Self {
        let doc = LoroDoc::new();
        doc.import(snapshot).expect("loro: snapshot rejected");
        Self::with_doc(peer, doc)
    }

    fn snapshot(&mut self) -> Vec<u8> {
        self.doc
            .export(ExportMode::Snapshot)
            .expect("loro: snapshot export failed")
    }

    type Update = Vec<u8>;

    fn edit(&mut self, op: Op<'_>, timer: &mut EditTimer) -> Vec<u8> {
        self.local_edit(op);
        timer.local();
        let end = self
            .doc
            .oplog_vv()
            .get(&self.peer)
            .copied()
            .unwrap_or_default();
        let span = [IdSpan::new(self.peer, self.unsent, end)];
        let update = self
            .doc
            .export(ExportMode::updates_in_range(&span[..]))
            .expect("loro: update export failed");
        self.unsent = end;
        timer.encode();
        update
    }

    fn apply(&mut self, update: &[u8]) {
        self.doc.import(update).expect("loro: update rejected");
    }

    fn edit_offline(&mut self, op: Op<'_>) {
        self.local_edit(op);
    }

    fn reconnect(a: &mut Self, b: &mut Self) -> Exchange {
        let mut exchange = Exchange::default();
        let vv_a = a.doc.oplog_vv().encode();
        let vv_b = b.doc.oplog_vv().encode();
        exchange.add(vv_a.len());
        exchange.add(vv_b.len());
        let for_b = a.diff(&vv_b);
        let for_a = b.diff(&vv_a);
        exchange.add(for_b.len());
        exchange.add(for_a.len());
        b.apply(&for_b);
        a.apply(&for_a);
        exchange
    }

    fn write_map(&mut self, root: Root, entries: Entries) {
        assert!(!root.is_array(), "the root array is not a map");
        write_entries(&self.doc.get_map(root.name()), entries);
        self.doc.commit();
    }

    fn walk<V: Visit>(&self, root: Root, visitor: &mut V) {
        if root.is_array() {
            walk_list(&self.list, visitor);
        } else {
            walk_map(&self.doc.get_map(root.name()), visitor);
        }
    }
}

fn write_entries(map: &LoroMap, entries: Entries) {
    for (key, value) in entries {
        match value {
            Value::Int(i) => map.insert(&key, i).expect("loro: insert failed"),
            Value::Str(s) => map.insert(&key, s).expect("loro: insert failed"),
            Value::Map(entries) => {
                let child = map
                    .insert_container(&key, LoroMap::new())
                    .expect("loro: insert failed");
                write_entries(&child, entries);
            }
            Value::Array(elements) => {
                let child = map
                    .insert_container(&key, LoroList::new())
                    .expect("loro: insert failed");
                write_elements(&child, elements);
            }
        }
    }
}

fn write_elements(list: &LoroList, elements: Elements) {
    for value in elements {
        match value {
            Value::Int(i) => list.push(i).expect("loro: push failed"),
            Value::Str(s) => list.push(s).expect("loro: push failed"),
            Value::Map(entries) => {
                let child = list
                    .push_container(LoroMap::new())
                    .expect("loro: push failed");
                write_entries(&child, entries);
            }
            Value::Array(elements) => {
                let child = list
                    .push_container(LoroList::new())
                    .expect("loro: push failed");
                write_elements(&child, elements);
            }
        }
    }
}

fn walk_map<V: Visit>(map: &LoroMap, visitor: &mut V) {
    visitor.enter_map();
    map.for_each(|key, value| {
        visitor.key(key);
        walk_value(value, visitor);
    });
    visitor.leave_map();
}

fn walk_list<V: Visit>(list: &LoroList, visitor: &mut V) {
    visitor.enter_array();
    list.for_each(|value| walk_value(value, visitor));
    visitor.leave_array();
}

fn walk_value<V: Visit>(value: ValueOrContainer, visitor: &mut V) {
    match value {
        ValueOrContainer::Value(LoroValue::I64(i)) => visitor.int(i),
        ValueOrContainer::Value(LoroValue::String(s)) => visitor.str(&s),
        ValueOrContainer::Value(other) => visitor.other(&other),
        ValueOrContainer::Container(Container::Map(map)) => walk_map(&map, visitor),
        ValueOrContainer::Container(Container::List(list)) => walk_list(&list, visitor),
        ValueOrContainer::Container(other) => visitor.other(&other.id()),
    }
}
