//! [`System`] for automerge 0.12.
//!
//! Per-operation path: the edit is made on an `AutoCommit` document and
//! committed with `AutoCommit::commit`, making one change; the update is that
//! change's bytes, `get_last_local_change().raw_bytes()`. The receiver
//! applies them with `AutoCommit::load_incremental`, which accepts change
//! chunks. This is what `save_incremental` produces for a replica that only
//! sends its own edits, without its cursor bookkeeping, and unlike
//! `save_incremental` it never re-sends changes received from others. The
//! sync protocol (`generate_sync_message`) was not used: it exchanges heads
//! and Bloom filters, several round trips' worth of work for one change.
//!
//! Catch-up ([`System::reconnect`]): automerge's sync protocol
//! (`generate_sync_message` / `receive_sync_message` over a fresh
//! `sync::State` per side), messages going back and forth, encoded and
//! decoded, until neither side has anything to send.
//!
//! Snapshot: `AutoCommit::save` (compressed document format) and
//! `AutoCommit::load`.
//!
//! automerge 0.12 applies a change by rewriting its columnar op set, so one
//! remote apply costs time proportional to the document: the incremental
//! workloads run at a smaller N (see [`Automerge::default_n`]).

use automerge::{
    ActorId, AutoCommit, ObjId, ObjType, ROOT, ReadDoc, ScalarValueRef, Value as AmValue, ValueRef,
    sync::{self, SyncDoc},
    transaction::Transactable,
};

use crate::system::{EditTimer, Elements, Entries, Exchange, Op, Root, System, Value, Visit};
use crate::workload::Workload;

/// An automerge document and the ids of its root containers.
pub struct Automerge {
    doc: AutoCommit,
    map: ObjId,
    array: ObjId,
}

fn actor(peer: u64) -> ActorId {
    ActorId::from(peer.to_be_bytes().as_slice())
}

/// The id of the object at key `name` of the document root, if any.
fn root_object(doc: &AutoCommit, name: &str) -> Option<ObjId> {
    match doc.get(ROOT, name).expect("automerge: root read failed") {
        Some((AmValue::Object(_), id)) => Some(id),
        _ => None,
    }
}

impl Automerge {
    /// Makes `op` and commits it as one change.
    fn local_edit(&mut self, op: Op<'_>) {
        let doc = &mut self.doc;
        match op {
            Op::MapSet { key, value } => doc.put(&self.map, key, value),
            Op::ArrayPush { value } => {
                let len = doc.length(&self.array);
                doc.insert(&self.array, len, value)
            }
            Op::ArrayInsert { index, value } => doc.insert(&self.array, index, value),
            Op::ArrayDelete { index } => doc.delete(&self.array, index),
        }
        .expect("automerge: edit failed");
        doc.commit();
    }
}

impl System for Automerge {
    const NAME: &'static str = "automerge";

    fn default_n(workload: Workload) -> usize {
        match workload {
            Workload::MapSet
            | Workload::MapOverwrite
            | Workload::ArrayPush
            | Workload::TwoWriters
            | Workload::SeqStress
            | Workload::SeqChurn
            | Workload::CatchUp => 20_000,
            // Every replica applies 15 x N changes: 1,000 per replica is
            // already 240,000 applies.
            Workload::Sixteen => 1_000,
            other => other.default_n(),
        }
    }

    fn new(peer: u64) -> Self {
        // automerge's root is one map, and two replicas that each created a
        // container under the same key would hold two conflicting objects:
        // the first replica creates them, the others load its snapshot.
        let mut doc = AutoCommit::new().with_actor(actor(peer));
        let map = doc
            .put_object(ROOT, Root::Map.name(), ObjType::Map)
            .expect("automerge: create root map");
        let array = doc
            .put_object(ROOT, Root::Array.name(), ObjType::List)
            .expect("automerge: create root list");
        doc.commit();
        Self { doc, map, array }
    }

    fn load(peer: u64, snapshot: &[u8]) -> Self {
        let doc = AutoCommit::load(snapshot)
            .expect("automerge: snapshot rejected")
            .with_actor(actor(peer));
        let map = root_object(&doc, Root::Map.name()).expect("automerge: no root map");
        let array = root_object(&doc, Root::Array.name()).expect("automerge: no root list");
        Self { doc, map, array }
    }

    fn snapshot(&mut self) -> Vec<u8> {
        self.doc.save()
    }

    type Update = Vec<u8>;

    fn edit(&mut self, op: Op<'_>, timer: &mut EditTimer) -> Vec<u8> {
        self.local_edit(op);
        timer.local();
        let update = self
            .doc
            .get_last_local_change()
            .expect("automerge: no change after commit")
            .raw_bytes()
            .to_vec();
        timer.encode();
        update
    }

    fn apply(&mut self, update: &[u8]) {
        self.doc
            .load_incremental(update)
            .expect("automerge: update rejected");
    }

    fn edit_offline(&mut self, op: Op<'_>) {
        self.local_edit(op);
    }

    fn reconnect(a: &mut Self, b: &mut Self) -> Exchange {
        let mut exchange = Exchange::default();
        let mut state_a = sync::State::new();
        let mut state_b = sync::State::new();
        loop {
            let sent_a = sync_step(a, &mut state_a, b, &mut state_b, &mut exchange);
            let sent_b = sync_step(b, &mut state_b, a, &mut state_a, &mut exchange);
            if !sent_a && !sent_b {
                return exchange;
            }
        }
    }

    fn write_map(&mut self, root: Root, entries: Entries) {
        assert!(!root.is_array(), "the root array is not a map");
        let map = match root_object(&self.doc, root.name()) {
            Some(id) => id,
            None => self
                .doc
                .put_object(ROOT, root.name(), ObjType::Map)
                .expect("automerge: create root map"),
        };
        write_entries(&mut self.doc, &map, entries);
        self.doc.commit();
    }

    fn walk<V: Visit>(&self, root: Root, visitor: &mut V) {
        let id = match root {
            Root::Map => Some(self.map.clone()),
            Root::Array => Some(self.array.clone()),
            Root::Items | Root::Graph => root_object(&self.doc, root.name()),
        };
        match id {
            Some(id) if root.is_array() => walk_list(&self.doc, &id, visitor),
            Some(id) => walk_map(&self.doc, &id, visitor),
            None => {
                visitor.enter_map();
                visitor.leave_map();
            }
        }
    }
}

/// Sends `from`'s next sync message, if it has one, to `to`; returns whether
/// it had one.
fn sync_step(
    from: &mut Automerge,
    from_state: &mut sync::State,
    to: &mut Automerge,
    to_state: &mut sync::State,
    exchange: &mut Exchange,
) -> bool {
    let Some(message) = from.doc.sync().generate_sync_message(from_state) else {
        return false;
    };
    let bytes = message.encode();
    exchange.add(bytes.len());
    let message = sync::Message::decode(&bytes).expect("automerge: undecodable message");
    to.doc
        .sync()
        .receive_sync_message(to_state, message)
        .expect("automerge: sync message rejected");
    true
}

fn write_entries(doc: &mut AutoCommit, map: &ObjId, entries: Entries) {
    for (key, value) in entries {
        match value {
            Value::Int(i) => doc.put(map, key, i).expect("automerge: put failed"),
            Value::Str(s) => doc.put(map, key, s).expect("automerge: put failed"),
            Value::Map(entries) => {
                let child = doc
                    .put_object(map, key, ObjType::Map)
                    .expect("automerge: put failed");
                write_entries(doc, &child, entries);
            }
            Value::Array(elements) => {
                let child = doc
                    .put_object(map, key, ObjType::List)
                    .expect("automerge: put failed");
                write_elements(doc, &child, elements);
            }
        }
    }
}

fn write_elements(doc: &mut AutoCommit, list: &ObjId, elements: Elements) {
    for (index, value) in elements.enumerate() {
        match value {
            Value::Int(i) => doc
                .insert(list, index, i)
                .expect("automerge: insert failed"),
            Value::Str(s) => doc
                .insert(list, index, s)
                .expect("automerge: insert failed"),
            Value::Map(entries) => {
                let child = doc
                    .insert_object(list, index, ObjType::Map)
                    .expect("automerge: insert failed");
                write_entries(doc, &child, entries);
            }
            Value::Array(elements) => {
                let child = doc
                    .insert_object(list, index, ObjType::List)
                    .expect("automerge: insert failed");
                write_elements(doc, &child, elements);
            }
        }
    }
}

fn walk_map<V: Visit>(doc: &AutoCommit, map: &ObjId, visitor: &mut V) {
    visitor.enter_map();
    for item in doc.map_range(map, ..) {
        visitor.key(&item.key);
        walk_value(doc, &item.value, || item.id(), visitor);
    }
    visitor.leave_map();
}

fn walk_list<V: Visit>(doc: &AutoCommit, list: &ObjId, visitor: &mut V) {
    visitor.enter_array();
    for item in doc.list_range(list, ..) {
        walk_value(doc, &item.value, || item.id(), visitor);
    }
    visitor.leave_array();
}

/// Reports one value; `id` is only asked for when the value is an object.
fn walk_value<V: Visit>(
    doc: &AutoCommit,
    value: &ValueRef<'_>,
    id: impl FnOnce() -> ObjId,
    visitor: &mut V,
) {
    match value {
        ValueRef::Scalar(ScalarValueRef::Int(i)) => visitor.int(*i),
        ValueRef::Scalar(ScalarValueRef::Str(s)) => visitor.str(s),
        ValueRef::Scalar(other) => visitor.other(&other),
        ValueRef::Object(ObjType::Map) => walk_map(doc, &id(), visitor),
        ValueRef::Object(ObjType::List) => walk_list(doc, &id(), visitor),
        ValueRef::Object(other) => visitor.other(&other),
    }
}
