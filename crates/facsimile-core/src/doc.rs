//! The document: the object graph, its reclamation and the operations that
//! wait for a dependency; local writes become operations here, and remote
//! operations are applied here.
//!
//! Invariants: a local write is checked whole before anything changes (a
//! refused write changes nothing and sends nothing); an operation runs only
//! once everything it names is present, and is dropped when what it names
//! was reclaimed (no live reference can name a reclaimed object:
//! DESIGN.md, "Reclamation: why no reference dangles").

use smallvec::SmallVec;
use smol_str::SmolStr;

use crate::clock::Peers;
use crate::codec::WireFormat;
use crate::error::Error;
use crate::event::{Change, Origin};
use crate::gc::Gc;
use crate::graph::list::{Found, ListObj};
use crate::graph::map::MapObj;
use crate::graph::{Graph, Obj, ObjData};
use crate::op::Op;
use crate::outbox::{OP_OVERHEAD, bare_op_bound, id_runs, input_bound, refs, run_bound};
use crate::outputs::{Outputs, Touch};
use crate::parked::Parked;
use crate::streams::Streams;
use crate::value::{Id, Input, ObjectId, ObjectKind, PeerIdx, Prop, Value};
use crate::wire::{WireId, WireOp, WireOrigin, WireValue};

#[derive(Debug, Default)]
pub(crate) struct Doc {
    graph: Graph,
    gc: Gc,
    parked: Parked,
}

/// Whether what an operation names is here.
enum Dep {
    Ready,
    /// Not arrived yet: wait for this id.
    Wait(Id),
    /// Arrived and reclaimed since: the operation has no visible effect.
    Gone,
}

/// What applying a remote operation needs besides the document: to tell an
/// id not arrived yet from one reclaimed, the counters applied so far.
pub(crate) struct Applied<'a> {
    pub(crate) peers: &'a Peers,
    pub(crate) streams: &'a Streams,
    /// This replica's own clock.
    pub(crate) clock: u64,
}

impl Doc {
    /// Replaces the document with an empty one (a sync starts over), and
    /// returns the one it held. The reclamation state stays: it is the
    /// replica's, not the document's.
    pub(crate) fn clear(&mut self) -> Graph {
        self.parked.clear();
        std::mem::take(&mut self.graph)
    }

    /// What replacing the document `old` by the current one changed in the
    /// objects both hold, as changes made by `origin`: a change of each map
    /// key whose value differs or that only one of them has, and a change
    /// of a whole array whose elements differ. `rename` names an object of
    /// `old` in the current document. What only one of them holds is
    /// reported by the objects that refer to it.
    pub(crate) fn changes_since(
        &self,
        old: &Graph,
        rename: impl Fn(ObjectId) -> ObjectId,
        origin: &Origin,
    ) -> Vec<Change> {
        let value = |v: &Value| match v {
            Value::Ref(o) => Value::Ref(rename(*o)),
            v => v.clone(),
        };
        let change = |object, prop, old, new| Change {
            object,
            prop,
            old,
            new,
            origin: origin.clone(),
        };
        let mut out = Vec::new();
        for (id, was) in old.objects.in_id_order() {
            let object = rename(ObjectId(id));
            let Some(now) = self.graph.get(object.0) else {
                continue;
            };
            match (&was.data, &now.data) {
                (ObjData::Map(was), ObjData::Map(now)) => {
                    for (key, v) in was.iter() {
                        let before = value(v);
                        match now.get(key) {
                            Some(after) if after.same(&before) => {}
                            after => out.push(change(
                                object,
                                Some(Prop::Key(key.clone())),
                                Some(before),
                                after.cloned(),
                            )),
                        }
                    }
                    for (key, after) in now.iter() {
                        if was.get(key).is_none() {
                            let prop = Some(Prop::Key(key.clone()));
                            out.push(change(object, prop, None, Some(after.clone())));
                        }
                    }
                }
                (ObjData::List(was), ObjData::List(now)) => {
                    let same = was.len() == now.len()
                        && was
                            .values()
                            .zip(now.values())
                            .all(|(a, b)| value(&a).same(&b));
                    if !same {
                        out.push(change(object, None, None, None));
                    }
                }
                _ => {}
            }
        }
        out
    }

    /// Replaces the document with a transferred one (validated): `graph`
    /// with objects `unreachable` or `garbage` to reclaim, and the
    /// acknowledgements the sender held. Returns the root before.
    pub(crate) fn load(
        &mut self,
        graph: Graph,
        unreachable: bool,
        garbage: bool,
        acks: Vec<(PeerIdx, Vec<(u32, u64)>)>,
    ) -> Value {
        let old = std::mem::replace(&mut self.graph, graph).root;
        self.gc.load_acks(acks);
        self.gc.dirty |= unreachable;
        self.gc.garbage |= garbage;
        self.gc.frontier_moved();
        old
    }

    /// Forgets every reclamation round and acknowledgement (a new
    /// incarnation).
    pub(crate) fn restart_reclamation(&mut self) {
        self.gc.reset(&mut self.graph);
    }

    /// The frontier moved: the next pass acknowledges it.
    pub(crate) fn frontier_moved(&mut self) {
        self.gc.frontier_moved();
    }

    /// Records a member's acknowledgement of its frontier.
    pub(crate) fn record_ack(&mut self, sender: PeerIdx, frontier: &[(crate::wire::Tag, u64)]) {
        self.gc.record_ack(sender, frontier);
    }

    /// Runs a reclamation pass; returns whether to acknowledge the frontier.
    pub(crate) fn reclaim(&mut self, cx: &crate::gc::PassContext<'_>) -> bool {
        self.gc.pass(&mut self.graph, cx)
    }

    /// Whether no operation waits for a dependency (the applied state is
    /// what the stream positions say).
    pub(crate) fn is_settled(&self) -> bool {
        self.parked.is_empty()
    }

    /// The next parked operation whose dependency arrived.
    pub(crate) fn pop_woken(&mut self) -> Option<(PeerIdx, Op)> {
        self.parked.pop_woken()
    }

    /// Number of objects held, reachable or not.
    pub(crate) fn object_count(&self) -> usize {
        self.graph.objects.len()
    }

    /// The graph, for a state transfer.
    pub(crate) fn graph(&self) -> &Graph {
        &self.graph
    }

    /// The reclamation state, for a state transfer.
    pub(crate) fn gc(&self) -> &Gc {
        &self.gc
    }

    /// The current reclamation mark (transferred objects arrive with the
    /// one before).
    pub(crate) fn mark(&self) -> u32 {
        self.gc.mark
    }

    /// Sorts every map whose keys are out of order (before encoding).
    pub(crate) fn sort_maps(&mut self) {
        self.graph.sort_maps();
    }

    /// The canonical encoding's content.
    pub(crate) fn canonical(&mut self, peers: &Peers) -> crate::wire::Canonical {
        self.graph.canonical(peers)
    }

    // ---------------------------------------------------------------- reads

    pub(crate) fn root(&self) -> &Value {
        &self.graph.root
    }

    pub(crate) fn kind(&self, obj: ObjectId) -> Option<ObjectKind> {
        self.graph.get(obj.0).map(Obj::kind)
    }

    pub(crate) fn map(&self, obj: ObjectId) -> Result<&MapObj, Error> {
        match self.graph.get(obj.0).map(|o| &o.data) {
            Some(ObjData::Map(m)) => Ok(m),
            _ => Err(self.not_a_map(obj)),
        }
    }

    /// Why `obj` is no map.
    #[cold]
    fn not_a_map(&self, obj: ObjectId) -> Error {
        match self.graph.get(obj.0) {
            Some(_) => Error::WrongKind {
                object: obj,
                expected: ObjectKind::Map,
                found: ObjectKind::Array,
            },
            None => Error::UnknownObject(obj),
        }
    }

    /// A map with its keys in order (they are sorted lazily).
    pub(crate) fn sorted_map(&mut self, obj: ObjectId) -> Result<&MapObj, Error> {
        if let Some(ObjData::Map(m)) = self.graph.get_mut(obj.0).map(|o| &mut o.data) {
            m.sort();
        }
        self.map(obj)
    }

    pub(crate) fn list(&self, obj: ObjectId) -> Result<&ListObj, Error> {
        match self.graph.get(obj.0).map(|o| &o.data) {
            Some(ObjData::List(l)) => Ok(l),
            _ => Err(self.not_a_list(obj)),
        }
    }

    /// Why `obj` is no list.
    #[cold]
    fn not_a_list(&self, obj: ObjectId) -> Error {
        match self.graph.get(obj.0) {
            Some(_) => Error::WrongKind {
                object: obj,
                expected: ObjectKind::Array,
                found: ObjectKind::Map,
            },
            None => Error::UnknownObject(obj),
        }
    }

    /// `input` as a value that names no object, when nothing is fresh: a
    /// write of it creates nothing and leaves reclamation as it was, so it
    /// looks its object up once. Otherwise `input` back.
    fn plain(&self, input: Input) -> Result<Value, Input> {
        match input {
            Input::Value(v) if !matches!(v, Value::Ref(_)) && !self.gc.fresh => Ok(v),
            other => Err(other),
        }
    }

    fn list_mut(&mut self, obj: Id) -> &mut ListObj {
        match self.graph.get_mut(obj).map(|o| &mut o.data) {
            Some(ObjData::List(l)) => l,
            _ => unreachable!("caller checked the kind"),
        }
    }

    // --------------------------------------------------------- local writes

    /// Checks that every existing object an input references may be
    /// referenced: it is present, and it has not been unreachable since this
    /// replica last acknowledged its state (see `gc`).
    pub(crate) fn check_input(&self, input: &Input) -> Result<(), Error> {
        // Scalars are checked in place: a tree of small maps is mostly
        // scalars, and a call each cost more than the check.
        let check = |v: &Input| match v {
            Input::Value(Value::Ref(o)) => self.check_ref(*o),
            Input::Value(_) => Ok(()),
            _ => self.check_input(v),
        };
        match input {
            Input::Map(entries) => entries.iter().try_for_each(|(_, v)| check(v)),
            Input::Array(items) => items.iter().try_for_each(check),
            v => check(v),
        }
    }

    fn check_ref(&self, o: ObjectId) -> Result<(), Error> {
        match self.graph.get(o.0) {
            None => Err(Error::UnknownObject(o)),
            Some(obj) if obj.mark == self.gc.mark => Ok(()),
            Some(_) if Gc::reachable_now(&self.graph, o.0) => Ok(()),
            Some(_) => Err(Error::Detached(o)),
        }
    }

    /// Objects a local write just created hang under `target` (`None`: the
    /// root). They are reachable if `target` is known to be (marked at the
    /// latest mark, nothing detached since), which spares the next pass a
    /// mark; otherwise the next pass marks.
    fn created_under(&mut self, target: Option<Id>) {
        if !std::mem::take(&mut self.gc.fresh) {
            return;
        }
        let mark = self.gc.mark;
        let known = !self.gc.dirty
            && target.is_none_or(|t| self.graph.get(t).is_some_and(|o| o.mark == mark));
        self.gc.dirty |= !known;
    }

    /// Creates the objects of an input tree (children first) and returns the
    /// value to store, in local and wire form.
    fn materialize(
        &mut self,
        input: Input,
        out: &mut Outputs,
        peers: &Peers,
    ) -> (Value, WireValue) {
        // The write that stores what this creates settles it for
        // reclamation (`created_under`).
        self.gc.fresh |= !matches!(input, Input::Value(_));
        match input {
            Input::Value(v) => {
                let w = out.outbox.wire_value(&v, peers);
                (v, w)
            }
            Input::Map(entries) => {
                // A one-entry map (common in object graphs) allocates only
                // its own storage.
                let mut values: SmallVec<[_; 1]> = SmallVec::with_capacity(entries.len());
                let mut wire = SmallVec::with_capacity(entries.len());
                for (k, v) in entries {
                    let (v, w) = self.materialize(v, out, peers);
                    values.push((k.clone(), v));
                    wire.push((k, w));
                }
                let id = out.outbox.tick();
                // A new map: each entry is stored as a write would leave
                // it, without reporting a change (a repeated key keeps its
                // first value, as a write of the same stamp would).
                let map = MapObj::from_new(&mut values, id);
                self.insert_object(id, ObjData::Map(map));
                out.outbox.push(WireOp::NewMap { entries: wire });
                (
                    Value::Ref(ObjectId(id)),
                    WireValue::Ref(out.outbox.wire_id(id, peers)),
                )
            }
            Input::Array(items) => {
                let mut values = Vec::with_capacity(items.len());
                let mut wire = Vec::with_capacity(items.len());
                for v in items {
                    let (v, w) = self.materialize(v, out, peers);
                    values.push(v);
                    wire.push(w);
                }
                let id = out.outbox.tick();
                out.outbox.skip(values.len() as u64);
                let mut list = ListObj::default();
                list.insert(None, Id::new(PeerIdx::SELF, id.counter + 1), values, peers);
                self.insert_object(id, ObjData::List(Box::new(list)));
                out.outbox.push(WireOp::NewArray { values: wire });
                (
                    Value::Ref(ObjectId(id)),
                    WireValue::Ref(out.outbox.wire_id(id, peers)),
                )
            }
        }
    }

    fn insert_object(&mut self, id: Id, data: ObjData) {
        self.graph.objects.insert(
            id,
            Obj {
                data,
                mark: self.gc.mark,
            },
        );
    }

    /// Creates the objects of `input` (a map or an array) unattached: a later
    /// write stores it. Returns the new object.
    pub(crate) fn create_object(&mut self, input: Input, out: &mut Outputs, peers: &Peers) -> Id {
        debug_assert!(!matches!(input, Input::Value(_)));
        out.begin();
        let (value, _) = self.materialize(input, out, peers);
        // Not under anything yet: the next pass marks.
        self.gc.fresh = false;
        self.gc.dirty = true;
        out.end();
        value.as_ref_id().map_or(Id::ZERO, |o| o.0)
    }

    /// Replaces the root.
    pub(crate) fn set_root(
        &mut self,
        input: Input,
        out: &mut Outputs,
        peers: &Peers,
    ) -> Result<Option<ObjectId>, Error> {
        self.check_input(&input)?;
        if let Input::Value(v) = &input {
            if v.same(&self.graph.root) {
                return Ok(v.as_ref_id());
            }
        }
        out.begin();
        let (value, wire) = self.materialize(input, out, peers);
        self.created_under(None);
        let stamp = out.outbox.tick();
        out.outbox.push(WireOp::Root { value: wire });
        let old = std::mem::replace(&mut self.graph.root, value.clone());
        self.graph.root_stamp = stamp;
        self.gc.note_detach(&old);
        let id = value.as_ref_id();
        out.events.root_changed(old, value, Origin::Local);
        out.end();
        Ok(id)
    }

    /// Sets a map key, after `owner` allowed writing to it.
    pub(crate) fn map_set(
        &mut self,
        obj: ObjectId,
        key: &str,
        input: Input,
        owner: impl FnOnce() -> Result<(), Error>,
        out: &mut Outputs,
        peers: &Peers,
    ) -> Result<bool, Error> {
        // A scalar (most writes) needs no check and creates nothing: the
        // key is looked up once, for its current value and the write.
        let input = match self.plain(input) {
            Ok(v) => return self.map_set_scalar(obj, key, v, owner, out, peers),
            Err(input) => input,
        };
        let current = self.map(obj)?.get(key);
        owner()?;
        if let (Input::Value(v), Some(cur)) = (&input, current) {
            if v.same(cur) {
                return Ok(false);
            }
        }
        self.check_input(&input)?;
        out.begin();
        self.write_key(obj, key, input, out, peers);
        out.end();
        Ok(true)
    }

    /// [`Doc::map_set`] of a [`Doc::plain`] value: the map and the key are
    /// looked up once.
    fn map_set_scalar(
        &mut self,
        obj: ObjectId,
        key: &str,
        v: Value,
        owner: impl FnOnce() -> Result<(), Error>,
        out: &mut Outputs,
        peers: &Peers,
    ) -> Result<bool, Error> {
        let m = match self.graph.get_mut(obj.0).map(|o| &mut o.data) {
            Some(ObjData::Map(m)) => m,
            _ => return Err(self.not_a_map(obj)),
        };
        owner()?;
        // An absent key is added now, as a placeholder any write beats:
        // nothing below fails, and the write fills it.
        let slot = m.slot(key, || SmolStr::from(key));
        if slot.value().is_some_and(|cur| v.same(cur)) {
            return Ok(false);
        }
        out.begin();
        let wire = out.outbox.wire_value(&v, peers);
        let stamp = out.outbox.tick();
        let wobj = out.outbox.wire_id(obj.0, peers);
        let key = slot.key().clone();
        let change = slot.write(Some(v), stamp, peers);
        record_map_change(
            &mut self.gc,
            &mut out.events,
            obj.0,
            &key,
            change,
            &Origin::Local,
        );
        out.outbox.push(WireOp::MapSet {
            obj: wobj,
            key,
            value: wire,
        });
        out.end();
        Ok(true)
    }

    /// Sets several keys of a map as one change, after `owner` allowed
    /// writing to it. Every value is checked before the first key is
    /// written: a refusal writes nothing. Returns how many keys changed.
    pub(crate) fn map_set_many(
        &mut self,
        obj: ObjectId,
        entries: Vec<(SmolStr, Input)>,
        owner: impl FnOnce() -> Result<(), Error>,
        out: &mut Outputs,
        peers: &Peers,
    ) -> Result<usize, Error> {
        let map = self.map(obj)?;
        owner()?;
        // Checked against the state before the call: the message carries
        // every write at once, so a reference valid when it starts stays
        // valid through it (no reclamation pass runs in between, here or on
        // a receiver).
        // A write that leaves its key as it was is dropped, unless an
        // earlier write of the call changed that key: looked for among the
        // few kept so far, or in a set of their keys made once they are
        // many.
        let mut written: Option<std::collections::HashSet<SmolStr>> = None;
        let mut effective: Vec<(SmolStr, Input)> = Vec::with_capacity(entries.len());
        for (key, input) in entries {
            if let (Input::Value(v), Some(cur)) = (&input, map.get(&key)) {
                if v.same(cur) {
                    let earlier = if effective.len() <= 16 {
                        effective.iter().any(|(k, _)| *k == key)
                    } else {
                        written
                            .get_or_insert_with(|| {
                                effective.iter().map(|(k, _)| k.clone()).collect()
                            })
                            .contains(&key)
                    };
                    if !earlier {
                        continue;
                    }
                }
            }
            if let Some(w) = &mut written {
                w.insert(key.clone());
            }
            effective.push((key, input));
        }
        for (_, input) in &effective {
            self.check_input(input)?;
        }
        if effective.is_empty() {
            return Ok(0);
        }
        out.begin();
        let count = effective.len();
        for (key, input) in effective {
            self.write_key(obj, &key, input, out, peers);
        }
        out.end();
        Ok(count)
    }

    /// Writes a checked value at a key in the open group.
    fn write_key(
        &mut self,
        obj: ObjectId,
        key: &str,
        input: Input,
        out: &mut Outputs,
        peers: &Peers,
    ) {
        let (value, wire) = self.materialize(input, out, peers);
        self.created_under(Some(obj.0));
        let stamp = out.outbox.tick();
        let key = SmolStr::from(key);
        let wobj = out.outbox.wire_id(obj.0, peers);
        out.outbox.push(WireOp::MapSet {
            obj: wobj,
            key: key.clone(),
            value: wire,
        });
        self.apply_map_write(obj.0, key, Some(value), stamp, &Origin::Local, out, peers);
    }

    /// Deletes a map key, after `owner` allowed writing to it.
    pub(crate) fn map_delete(
        &mut self,
        obj: ObjectId,
        key: &str,
        owner: impl FnOnce() -> Result<(), Error>,
        out: &mut Outputs,
        peers: &Peers,
    ) -> Result<Option<Value>, Error> {
        let Some(old) = self.map(obj)?.get(key).cloned() else {
            return Ok(None);
        };
        owner()?;
        out.begin();
        let stamp = out.outbox.tick();
        let key = SmolStr::from(key);
        let wobj = out.outbox.wire_id(obj.0, peers);
        out.outbox.push(WireOp::MapDelete {
            obj: wobj,
            key: key.clone(),
        });
        self.apply_map_write(obj.0, key, None, stamp, &Origin::Local, out, peers);
        out.end();
        Ok(Some(old))
    }

    /// Applies a map write that has passed every check, recording the change.
    /// Gives the key and value back when `obj` is no map here.
    #[allow(clippy::too_many_arguments)]
    fn apply_map_write(
        &mut self,
        obj: Id,
        key: SmolStr,
        value: Option<Value>,
        stamp: Id,
        origin: &Origin,
        out: &mut Outputs,
        peers: &Peers,
    ) -> Option<(SmolStr, Option<Value>)> {
        let Some(Obj {
            data: ObjData::Map(m),
            ..
        }) = self.graph.objects.get_mut(&obj)
        else {
            return Some((key, value));
        };
        // A delete leaves a tombstone.
        self.gc.garbage |= value.is_none();
        let change = m.apply(&key, value, stamp, peers);
        record_map_change(&mut self.gc, &mut out.events, obj, &key, change, origin);
        None
    }

    /// How many runs of consecutive ids the elements a splice at `start`
    /// would delete make ([`splice_bound`]); 0 when it deletes none.
    pub(crate) fn splice_runs(
        &self,
        obj: ObjectId,
        start: usize,
        delete: usize,
    ) -> Result<usize, Error> {
        let list = self.list(obj)?;
        let end = start.saturating_add(delete).min(list.len());
        let elems: Vec<Id> = (start.min(end)..end).map(|i| list.elem_at(i)).collect();
        Ok(id_runs(&elems).len())
    }

    /// Removes `delete` elements from `start` and inserts `items` there,
    /// after `owner` allowed writing to the array.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn list_splice(
        &mut self,
        obj: ObjectId,
        start: usize,
        delete: usize,
        items: SmallVec<[Input; 1]>,
        owner: impl FnOnce() -> Result<(), Error>,
        out: &mut Outputs,
        peers: &Peers,
    ) -> Result<Vec<Value>, Error> {
        if delete == 0 && items.len() == 1 {
            out.fits(
                peers,
                || splice_ids(&items, 0),
                |f| splice_bound(&items, 0, f),
            )?;
            let item = items.into_iter().next().expect("one item");
            return self
                .list_insert_one(obj, Some(start), item, owner, out, peers)
                .map(|()| Vec::new());
        }
        let len = self.list(obj)?.len();
        owner()?;
        insert_position(obj, start, len)?;
        for item in &items {
            self.check_input(item)?;
        }
        let delete = delete.min(len - start);
        if delete == 0 && items.is_empty() {
            return Ok(Vec::new());
        }
        let list = self.list(obj)?;
        let found: SmallVec<[Found; 1]> = (start..start + delete)
            .map(|i| list.elem_found_at(i))
            .collect();
        let elems: SmallVec<[Id; 1]> = found.iter().map(Found::id).collect();
        let runs = id_runs(&elems);
        // The delete's size is known only now: a run for each stretch of
        // consecutive ids, however many elements it spans.
        out.fits(
            peers,
            || splice_ids(&items, runs.len()),
            |f| splice_bound(&items, runs.len(), f),
        )?;
        out.begin();
        let wobj = out.outbox.wire_id(obj.0, peers);
        let mut removed = Vec::with_capacity(delete);
        if delete > 0 {
            let runs = out.outbox.wire_runs(&runs, peers);
            out.outbox.push(WireOp::ListDelete { obj: wobj, runs });
            let list = self.list_mut(obj.0);
            for f in found {
                if let Some(v) = list.delete_found(f) {
                    removed.push(v);
                }
            }
            for v in &removed {
                self.gc.note_detach(v);
            }
            self.gc.garbage = true;
        }
        if !items.is_empty() {
            let n = items.len();
            let mut items = items.into_iter();
            // One item (a push, a typed character) needs no vectors.
            let single = match n {
                1 => items.next().map(|i| self.materialize(i, out, peers)),
                _ => None,
            };
            let (values, wire): (Vec<Value>, Vec<WireValue>) = match single {
                Some(_) => Default::default(),
                None => items.map(|i| self.materialize(i, out, peers)).unzip(),
            };
            self.created_under(Some(obj.0));
            let found =
                (start > 0).then(|| self.list(obj).expect("checked").slot_found_at(start - 1));
            let origin = found.map(|f| f.id());
            let first = out.outbox.tick();
            out.outbox.skip(n as u64 - 1);
            let worigin = wire_origin(origin, first, out, peers);
            let (op, one) = match (single, worigin) {
                (Some((v, value)), WireOrigin::Back(1)) => {
                    (WireOp::Append { obj: wobj, value }, Some(v))
                }
                (Some((v, w)), origin) => (
                    WireOp::ListInsert {
                        obj: wobj,
                        origin,
                        values: vec![w],
                    },
                    Some(v),
                ),
                (None, origin) => (
                    WireOp::ListInsert {
                        obj: wobj,
                        origin,
                        values: wire,
                    },
                    None,
                ),
            };
            out.outbox.push(op);
            let list = self.list_mut(obj.0);
            match one {
                Some(v) => list.insert_found(found, first, std::iter::once(v), peers),
                None => list.insert_found(found, first, values, peers),
            }
        }
        out.events.touch(obj.0, || Touch::Mass);
        out.end();
        Ok(removed)
    }

    /// Inserts one element at `start` (`None`: at the end), after `owner`
    /// allowed writing to the array: a push or a typed character, the most
    /// common write, with one look-up of the array and no vectors.
    pub(crate) fn list_insert_one(
        &mut self,
        obj: ObjectId,
        start: Option<usize>,
        item: Input,
        owner: impl FnOnce() -> Result<(), Error>,
        out: &mut Outputs,
        peers: &Peers,
    ) -> Result<(), Error> {
        let item = match self.plain(item) {
            Ok(v) => return self.list_insert_plain(obj, start, v, owner, out, peers),
            Err(item) => item,
        };
        let list = self.list(obj)?;
        // Creating the item's objects does not change the list: its origin
        // is read now, while the list is at hand.
        let found = one_place(list, obj, start, owner)?;
        let origin = found.as_ref().map(Found::id);
        self.check_input(&item)?;
        out.begin();
        let wobj = out.outbox.wire_id(obj.0, peers);
        let (v, w) = self.materialize(item, out, peers);
        self.created_under(Some(obj.0));
        let first = out.outbox.tick();
        let op = one_insert(wobj, w, wire_origin(origin, first, out, peers));
        out.outbox.push(op);
        self.list_mut(obj.0)
            .insert_placed(found, first, std::iter::once(v), peers);
        out.events.touch(obj.0, || Touch::Mass);
        out.end();
        Ok(())
    }

    /// [`Doc::list_insert_one`] of a [`Doc::plain`] value: the array is
    /// looked up once.
    fn list_insert_plain(
        &mut self,
        obj: ObjectId,
        start: Option<usize>,
        v: Value,
        owner: impl FnOnce() -> Result<(), Error>,
        out: &mut Outputs,
        peers: &Peers,
    ) -> Result<(), Error> {
        let list = match self.graph.get_mut(obj.0).map(|o| &mut o.data) {
            Some(ObjData::List(l)) => l,
            _ => return Err(self.not_a_list(obj)),
        };
        let found = one_place(list, obj, start, owner)?;
        let origin = found.as_ref().map(Found::id);
        out.begin();
        let wobj = out.outbox.wire_id(obj.0, peers);
        let w = out.outbox.wire_value(&v, peers);
        let first = out.outbox.tick();
        let op = one_insert(wobj, w, wire_origin(origin, first, out, peers));
        out.outbox.push(op);
        list.insert_placed(found, first, std::iter::once(v), peers);
        out.events.touch(obj.0, || Touch::Mass);
        out.end();
        Ok(())
    }

    /// Sets several elements in one change, after `owner` allowed writing
    /// to the array. Returns how many changed.
    pub(crate) fn list_set_many(
        &mut self,
        obj: ObjectId,
        writes: Vec<(usize, Input)>,
        owner: impl FnOnce() -> Result<(), Error>,
        out: &mut Outputs,
        peers: &Peers,
    ) -> Result<usize, Error> {
        let list = self.list(obj)?;
        owner()?;
        let len = list.len();
        // A write that leaves its element as it was is dropped, unless an
        // earlier write of the call changed that element: only possible
        // when the indices do not rise, the rare case that keeps a set.
        let rising = writes.windows(2).all(|w| w[0].0 < w[1].0);
        let mut written = std::collections::HashSet::new();
        let mut effective = Vec::with_capacity(writes.len());
        for (index, input) in writes {
            if index >= len {
                return Err(Error::IndexOutOfBounds {
                    object: obj,
                    index,
                    len,
                });
            }
            let elem = list.elem_at(index);
            if let Input::Value(v) = &input {
                if list.value_of(elem).is_some_and(|cur| cur.same(v))
                    && (rising || !written.contains(&index))
                {
                    continue;
                }
            }
            if !rising {
                written.insert(index);
            }
            effective.push((elem, input));
        }
        for (_, input) in &effective {
            self.check_input(input)?;
        }
        if effective.is_empty() {
            return Ok(0);
        }
        out.begin();
        let wobj = out.outbox.wire_id(obj.0, peers);
        let count = effective.len();
        for (elem, input) in effective {
            let (value, wire) = self.materialize(input, out, peers);
            self.created_under(Some(obj.0));
            let stamp = out.outbox.tick();
            let welem = out.outbox.wire_id(elem, peers);
            out.outbox.push(WireOp::ListSet {
                obj: wobj,
                elem: welem,
                value: wire,
            });
            let list = self.list_mut(obj.0);
            if let Some((old, index)) = list.set(elem, value, stamp, peers) {
                let new = list.value_of(elem).unwrap_or_default();
                self.gc.note_detach(&old);
                out.events.touch(obj.0, || Touch::Set { index, old, new });
            }
        }
        out.end();
        Ok(count)
    }

    /// Reorders an array, after `owner` allowed writing to it: afterwards
    /// the element at `i` is the one that was at `order[i]`. Only elements
    /// outside the longest run that keeps its relative order are moved.
    pub(crate) fn list_reorder(
        &mut self,
        obj: ObjectId,
        order: &[usize],
        owner: impl FnOnce() -> Result<(), Error>,
        out: &mut Outputs,
        peers: &Peers,
    ) -> Result<bool, Error> {
        let list = self.list(obj)?;
        owner()?;
        let len = list.len();
        if !is_permutation(order, len) {
            return Err(Error::BadPermutation { object: obj, len });
        }
        if order.iter().enumerate().all(|(i, &o)| i == o) {
            return Ok(false);
        }
        let (elems, values): (Vec<Id>, Vec<Value>) =
            list.elements().map(|(e, v, _)| (e, v)).unzip();
        // A write that changes nothing sends nothing: reversing `[1, 1]`
        // moves elements but leaves every index's value as it was.
        if order
            .iter()
            .enumerate()
            .all(|(i, &o)| values[i].same(&values[o]))
        {
            return Ok(false);
        }
        let keep = longest_increasing(order);
        let moves = keep.iter().filter(|&&k| !k).count();
        out.fits(peers, || 1 + 2 * moves, |f| moves * bare_op_bound(f))?;
        out.begin();
        let wobj = out.outbox.wire_id(obj.0, peers);
        // Walk the target order; every element not kept is moved right after
        // the element that precedes it in the target.
        let mut prev_slot: Option<Id> = None;
        for (i, &from) in order.iter().enumerate() {
            let elem = elems[from];
            if !keep[i] {
                self.push_move(obj.0, wobj, elem, prev_slot, out, peers);
            }
            prev_slot = self.list(obj).expect("checked").position_of(elem);
        }
        out.events.touch(obj.0, || Touch::Mass);
        out.end();
        Ok(true)
    }

    /// Moves the live element `elem` of an array right after the slot
    /// `origin` (to the front for `None`), after `owner` allowed writing
    /// to it: one operation, where a reorder of the whole array would
    /// walk it.
    pub(crate) fn list_move_after(
        &mut self,
        obj: ObjectId,
        elem: Id,
        origin: Option<Id>,
        owner: impl FnOnce() -> Result<(), Error>,
        out: &mut Outputs,
        peers: &Peers,
    ) -> Result<(), Error> {
        self.list(obj)?;
        owner()?;
        out.fits(peers, || 3, bare_op_bound)?;
        out.begin();
        let wobj = out.outbox.wire_id(obj.0, peers);
        self.push_move(obj.0, wobj, elem, origin, out, peers);
        out.events.touch(obj.0, || Touch::Mass);
        out.end();
        Ok(())
    }

    /// Sends and applies one move of `elem` after `origin`.
    fn push_move(
        &mut self,
        obj: Id,
        wobj: WireId,
        elem: Id,
        origin: Option<Id>,
        out: &mut Outputs,
        peers: &Peers,
    ) {
        let slot = out.outbox.tick();
        let welem = out.outbox.wire_id(elem, peers);
        let worigin = origin.map(|p| out.outbox.wire_id(p, peers));
        out.outbox.push(WireOp::ListMove {
            obj: wobj,
            elem: welem,
            origin: worigin,
        });
        self.list_mut(obj).move_elem(elem, origin, slot, peers);
        self.gc.garbage = true;
    }

    // ------------------------------------------------------ remote operations

    /// Applies a document operation of `sender` whose message passed
    /// validation, or parks it until what it names arrives.
    pub(crate) fn apply(
        &mut self,
        sender: PeerIdx,
        op: Op,
        origin: &Origin,
        cx: &Applied<'_>,
        out: &mut Outputs,
    ) {
        // A delete run is split where an element has not arrived, so the
        // present ones take effect now.
        if let Op::ListDelete { obj, start, len } = op {
            return self.apply_delete_run(sender, obj, start, len, origin, cx, out);
        }
        // A map write of a value that names no object (the most common
        // remote map operation) to a map that is here looks it up once,
        // where checking then executing looked it up twice.
        let op = match op {
            Op::MapWrite {
                obj,
                key,
                value,
                stamp,
            } if !matches!(value, Some(Value::Ref(_))) => {
                // As `execute` does; the value needs no reclamation note.
                match self.apply_map_write(obj, key, value, stamp, origin, out, cx.peers) {
                    None => return,
                    Some((key, value)) => Op::MapWrite {
                        obj,
                        key,
                        value,
                        stamp,
                    },
                }
            }
            op => op,
        };
        // An insert of values that name no object (a push, typing: the most
        // common remote operation) whose origin is here looks its list up
        // once, where checking then executing looked it up twice.
        let op = match op {
            Op::ListInsert {
                obj,
                origin: after,
                first,
                values,
            } if !values.iter().any(|v| matches!(v, Value::Ref(_))) => {
                if let Some(ObjData::List(l)) = self.graph.get_mut(obj).map(|o| &mut o.data) {
                    // `None`: the origin is not here; the check's lookup
                    // places the insert.
                    let found = match after {
                        None => Some(None),
                        Some(a) => l.find_slot(a).map(Some),
                    };
                    if let Some(found) = found {
                        let n = values.len() as u64;
                        l.insert_placed(found, first, values, cx.peers);
                        out.events.touch(obj, || Touch::Mass);
                        self.parked.created(first, n);
                        return;
                    }
                }
                Op::ListInsert {
                    obj,
                    origin: after,
                    first,
                    values,
                }
            }
            op => op,
        };
        match self.dep(&op, cx) {
            Dep::Gone => {}
            Dep::Wait(id) => self.parked.park(id, sender, op),
            Dep::Ready => self.execute(op, origin, cx.peers, out),
        }
    }

    /// Whether `id` was created by a message already applied here (so an
    /// absent `id` was reclaimed), as opposed to not having arrived yet.
    fn arrived(&self, id: Id, cx: &Applied<'_>) -> bool {
        let frontier = if id.peer == PeerIdx::SELF {
            cx.clock
        } else {
            cx.streams.lamport_of(id.peer, cx.peers)
        };
        id.counter <= frontier && !self.parked.awaited(id)
    }

    fn status(&self, id: Id, cx: &Applied<'_>) -> Dep {
        if self.arrived(id, cx) {
            Dep::Gone
        } else {
            Dep::Wait(id)
        }
    }

    fn value_dep(&self, v: &Value, cx: &Applied<'_>) -> Dep {
        match v {
            Value::Ref(o) if !self.graph.objects.contains_key(&o.0) => self.status(o.0, cx),
            _ => Dep::Ready,
        }
    }

    fn list_dep(&self, obj: Id, ids: &[Id], values: &[&Value], cx: &Applied<'_>) -> Dep {
        let list = match self.graph.get(obj).map(|o| &o.data) {
            Some(ObjData::List(l)) => l,
            Some(ObjData::Map(_)) => return Dep::Gone,
            None => return self.status(obj, cx),
        };
        for &id in ids {
            if !list.has_slot(id) {
                return self.status(id, cx);
            }
        }
        for v in values {
            match self.value_dep(v, cx) {
                Dep::Ready => {}
                d => return d,
            }
        }
        Dep::Ready
    }

    fn dep(&self, op: &Op, cx: &Applied<'_>) -> Dep {
        match op {
            Op::NewMap { entries, .. } => {
                first_missing(entries.iter().map(|(_, v)| self.value_dep(v, cx)))
            }
            Op::NewArray { values, .. } => {
                first_missing(values.iter().map(|v| self.value_dep(v, cx)))
            }
            Op::Root { value, .. } => self.value_dep(value, cx),
            Op::MapWrite { obj, value, .. } => match self.graph.get(*obj).map(|o| &o.data) {
                Some(ObjData::Map(_)) => {
                    value.as_ref().map_or(Dep::Ready, |v| self.value_dep(v, cx))
                }
                Some(ObjData::List(_)) => Dep::Gone,
                None => self.status(*obj, cx),
            },
            Op::ListInsert {
                obj,
                origin,
                values,
                ..
            } => {
                let refs: Vec<&Value> = values
                    .iter()
                    .filter(|v| matches!(v, Value::Ref(_)))
                    .collect();
                self.list_dep(*obj, origin.as_slice(), &refs, cx)
            }
            Op::ListDelete { obj, start, .. } => self.list_dep(*obj, &[*start], &[], cx),
            Op::ListSet {
                obj, elem, value, ..
            } => self.list_dep(*obj, &[*elem], &[value], cx),
            Op::ListMove {
                obj, elem, origin, ..
            } => {
                let mut ids = vec![*elem];
                ids.extend(origin);
                self.list_dep(*obj, &ids, &[], cx)
            }
            // Locks and membership are not the document's; nothing to wait
            // for.
            Op::Lock { .. } | Op::Unlock { .. } | Op::LockAck { .. } | Op::Evict { .. } => {
                Dep::Ready
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn apply_delete_run(
        &mut self,
        sender: PeerIdx,
        obj: Id,
        start: Id,
        len: u32,
        origin: &Origin,
        cx: &Applied<'_>,
        out: &mut Outputs,
    ) {
        let slots = match self.graph.get(obj).map(|o| &o.data) {
            Some(ObjData::List(l)) => l.slot_count() as u64,
            Some(ObjData::Map(_)) => return,
            None => {
                if let Dep::Wait(id) = self.status(obj, cx) {
                    self.parked
                        .park(id, sender, Op::ListDelete { obj, start, len });
                }
                return;
            }
        };
        // An honest run names elements that are here, or on their way. The
        // ones that arrived but are absent (reclaimed) cannot be many in an
        // honest run: bound the work they cost by the list's slots.
        let mut absent = 0;
        for k in 0..len {
            let elem = Id::new(start.peer, start.counter + u64::from(k));
            let present = matches!(
                self.graph.get(obj).map(|o| &o.data),
                Some(ObjData::List(l)) if l.has_slot(elem)
            );
            let one = Op::ListDelete {
                obj,
                start: elem,
                len: 1,
            };
            if present {
                self.execute(one, origin, cx.peers, out);
            } else if self.parked.awaited(elem) {
                // Arrived in an operation that waits itself; the elements
                // after it may be here already.
                self.parked.park(elem, sender, one);
            } else if !self.arrived(elem, cx) {
                // Not sent yet as far as this replica knows, and neither is
                // anything after it (a peer's counters arrive in order): the
                // rest of the run waits for it as one operation, whatever
                // the list's length here.
                let rest = Op::ListDelete {
                    obj,
                    start: elem,
                    len: len - k,
                };
                self.parked.park(elem, sender, rest);
                return;
            } else {
                absent += 1;
                if absent >= slots.max(1) {
                    return;
                }
            }
        }
    }

    /// Runs a document operation whose dependencies are all present.
    fn execute(&mut self, op: Op, origin: &Origin, peers: &Peers, out: &mut Outputs) {
        match op {
            Op::NewMap { id, mut entries } => {
                if self.graph.objects.contains_key(&id) {
                    return;
                }
                for (_, v) in &entries {
                    self.gc.note_ref(v);
                }
                // As a write of each entry at `id` would leave it.
                let map = MapObj::from_new(&mut entries, id);
                // A concurrent write may leave it unattached: mark.
                self.gc.dirty = true;
                self.insert_object(id, ObjData::Map(map));
                self.parked.created(id, 1);
            }
            Op::NewArray { id, values } => {
                if self.graph.objects.contains_key(&id) {
                    return;
                }
                let n = values.len() as u64;
                for v in &values {
                    self.gc.note_ref(v);
                }
                let mut list = ListObj::default();
                list.insert(None, Id::new(id.peer, id.counter + 1), values, peers);
                self.gc.dirty = true;
                self.insert_object(id, ObjData::List(Box::new(list)));
                self.parked.created(id, 1 + n);
            }
            Op::Root { value, stamp } => {
                if !peers.later(stamp, self.graph.root_stamp) {
                    return;
                }
                self.gc.note_ref(&value);
                self.graph.root_stamp = stamp;
                if self.graph.root.same(&value) {
                    return;
                }
                let old = std::mem::replace(&mut self.graph.root, value.clone());
                self.gc.note_detach(&old);
                // Root replacements are reported whether or not changes are
                // recorded: they are rare, and a transport may track them.
                out.events.push(crate::event::Event::RootChanged {
                    old,
                    new: value,
                    origin: origin.clone(),
                });
            }
            Op::MapWrite {
                obj,
                key,
                value,
                stamp,
            } => {
                if let Some(v) = &value {
                    self.gc.note_ref(v);
                }
                self.apply_map_write(obj, key, value, stamp, origin, out, peers);
            }
            Op::ListInsert {
                obj,
                origin: after,
                first,
                values,
            } => {
                let n = values.len() as u64;
                for v in &values {
                    self.gc.note_ref(v);
                }
                if let Some(ObjData::List(l)) = self.graph.get_mut(obj).map(|o| &mut o.data) {
                    l.insert(after, first, values, peers);
                }
                out.events.touch(obj, || Touch::Mass);
                self.parked.created(first, n);
            }
            Op::ListDelete { obj, start, .. } => {
                if let Some(ObjData::List(l)) = self.graph.get_mut(obj).map(|o| &mut o.data) {
                    if let Some(old) = l.delete(start) {
                        self.gc.garbage = true;
                        self.gc.note_detach(&old);
                        out.events.touch(obj, || Touch::Mass);
                    }
                }
            }
            Op::ListSet {
                obj,
                elem,
                value,
                stamp,
            } => {
                self.gc.note_ref(&value);
                if let Some(ObjData::List(l)) = self.graph.get_mut(obj).map(|o| &mut o.data) {
                    if let Some((old, index)) = l.set(elem, value, stamp, peers) {
                        let new = l.value_of(elem).unwrap_or_default();
                        self.gc.note_detach(&old);
                        out.events.touch(obj, || Touch::Set { index, old, new });
                    }
                }
            }
            Op::ListMove {
                obj,
                elem,
                origin: after,
                slot,
            } => {
                if let Some(ObjData::List(l)) = self.graph.get_mut(obj).map(|o| &mut o.data) {
                    // Whether it wins or not, a move leaves a dead slot.
                    self.gc.garbage = true;
                    if l.move_elem(elem, after, slot, peers) {
                        out.events.touch(obj, || Touch::Mass);
                    }
                }
                self.parked.created(slot, 1);
            }
            Op::Lock { .. } | Op::Unlock { .. } | Op::LockAck { .. } | Op::Evict { .. } => {
                debug_assert!(false, "not a document operation: {op:?}");
            }
        }
    }
}

/// Inspection for tests and the simulation harness.
#[cfg(feature = "sim")]
impl Doc {
    pub(crate) fn check_invariants(&self) {
        let check_value = |v: &Value| {
            if let Value::Ref(o) = v {
                assert!(
                    self.graph.objects.contains_key(&o.0),
                    "dangling reference to {o:?}"
                );
            }
        };
        check_value(&self.graph.root);
        for id in self.graph.reachable() {
            match &self.graph.objects[&id].data {
                ObjData::Map(m) => m.iter().for_each(|(_, v)| check_value(v)),
                ObjData::List(l) => {
                    l.check();
                    assert!(l.is_consistent(), "list {id:?} is incoherent");
                    l.values().for_each(|v| check_value(&v));
                    let mut seen = std::collections::HashSet::new();
                    for (e, _, _) in l.elements() {
                        assert!(seen.insert(e), "element {e:?} appears twice in {id:?}");
                    }
                }
            }
        }
    }

    pub(crate) fn element_ids(&self, obj: ObjectId) -> Vec<Id> {
        match self.graph.get(obj.0).map(|o| &o.data) {
            Some(ObjData::List(l)) => l.elements().map(|(e, _, _)| e).collect(),
            _ => Vec::new(),
        }
    }

    pub(crate) fn reachable_objects(&mut self) -> Vec<ObjectId> {
        self.graph.sort_maps();
        self.graph.reachable().into_iter().map(ObjectId).collect()
    }

    pub(crate) fn hidden_count(&self) -> usize {
        self.graph
            .objects
            .values()
            .map(|o| match &o.data {
                ObjData::Map(m) => m.raw_entries().filter(|(_, e)| e.value.is_none()).count(),
                ObjData::List(l) => l.dead_slots().len(),
            })
            .sum()
    }

    pub(crate) fn debug(&self) -> String {
        format!("{}\n{:#?}", self.parked.debug(), self.gc)
    }

    pub(crate) fn debug_dump(&mut self, peers: &Peers) -> String {
        use crate::wire::{CanonObj, WireId, WireValue};
        use std::fmt::Write;
        let c = self.graph.canonical(peers);
        let id = |w: &WireId| format!("{}:{}", w.p, w.c);
        let val = |v: &WireValue| match v {
            WireValue::Ref(w) => format!("@{}", id(w)),
            v => format!("{v:?}"),
        };
        let mut out = format!(
            "peers {:?}\nroot {} (stamp {:?})\n",
            c.peers,
            val(&c.root),
            c.root_stamp.as_ref().map(id)
        );
        for o in &c.objects {
            match o {
                CanonObj::Map { id: oid, entries } => {
                    let _ = write!(out, "map {} {{", id(oid));
                    for (k, v, s) in entries {
                        let _ = write!(out, " {k}={} ({})", val(v), id(s));
                    }
                    out.push_str(" }\n");
                }
                CanonObj::List { id: oid, elems } => {
                    let _ = write!(out, "list {} [", id(oid));
                    for (e, v, s) in elems {
                        let _ = write!(out, " {}={} ({})", id(e), val(v), id(s));
                    }
                    out.push_str(" ]\n");
                }
            }
        }
        out
    }
}

fn first_missing(deps: impl Iterator<Item = Dep>) -> Dep {
    for d in deps {
        if !matches!(d, Dep::Ready) {
            return d;
        }
    }
    Dep::Ready
}

/// Marks the positions of `order` that form a longest strictly increasing
/// subsequence (those elements keep their relative order and need not move).
fn longest_increasing(order: &[usize]) -> Vec<bool> {
    // Patience sorting with predecessor links: O(n log n).
    let mut tails: Vec<usize> = Vec::new();
    let mut prev = vec![usize::MAX; order.len()];
    for (i, &v) in order.iter().enumerate() {
        let pos = tails.partition_point(|&t| order[t] < v);
        if pos > 0 {
            prev[i] = tails[pos - 1];
        }
        if pos == tails.len() {
            tails.push(i);
        } else {
            tails[pos] = i;
        }
    }
    let mut keep = vec![false; order.len()];
    let mut cur = tails.last().copied().unwrap_or(usize::MAX);
    while cur != usize::MAX {
        keep[cur] = true;
        cur = prev[cur];
    }
    keep
}

/// Where one element inserted at `start` (`None`: at the end) of `list`
/// goes, after `owner` allowed the write: the slot before it, if any.
fn one_place(
    list: &ListObj,
    obj: ObjectId,
    start: Option<usize>,
    owner: impl FnOnce() -> Result<(), Error>,
) -> Result<Option<Found>, Error> {
    let len = list.len();
    let start = start.unwrap_or(len);
    owner()?;
    insert_position(obj, start, len)?;
    Ok((start > 0).then(|| list.slot_found_at(start - 1)))
}

/// The operation that inserts one element, `w`, after `origin`: an
/// append when it follows the element inserted just before it.
fn one_insert(obj: WireId, w: WireValue, origin: WireOrigin) -> WireOp {
    match origin {
        WireOrigin::Back(1) => WireOp::Append { obj, value: w },
        origin => WireOp::ListInsert {
            obj,
            origin,
            values: vec![w],
        },
    }
}

/// How an insert whose first element is `first` names the slot it follows:
/// the sender's own slots by their distance back, which is short.
fn wire_origin(origin: Option<Id>, first: Id, out: &mut Outputs, peers: &Peers) -> WireOrigin {
    match origin {
        None => WireOrigin::Head,
        Some(o) if o.peer == PeerIdx::SELF && o.counter < first.counter => {
            WireOrigin::Back(first.counter - o.counter)
        }
        Some(o) => WireOrigin::Id(out.outbox.wire_id(o, peers)),
    }
}

/// Whether `index` is a place to insert at in a list of `len` elements.
fn insert_position(object: ObjectId, index: usize, len: usize) -> Result<(), Error> {
    match index <= len {
        true => Ok(()),
        false => Err(Error::IndexOutOfBounds { object, index, len }),
    }
}

/// Reports what a map write changed (if anything) and notes a detached
/// object for reclamation.
fn record_map_change(
    gc: &mut Gc,
    events: &mut crate::outputs::Events,
    obj: Id,
    key: &SmolStr,
    change: Option<crate::graph::map::KeyChange<'_>>,
    origin: &Origin,
) {
    let Some(change) = change else {
        return;
    };
    if let Some(old) = &change.old {
        gc.note_detach(old);
    }
    events.change(|| Change {
        object: ObjectId(obj),
        prop: Some(Prop::Key(key.clone())),
        old: change.old,
        new: change.new.cloned(),
        origin: origin.clone(),
    });
}

/// How many ids of other peers a splice inserting `items` and deleting
/// `runs` runs of ids may name.
pub(crate) fn splice_ids(items: &[Input], runs: usize) -> usize {
    2 + items.iter().map(refs).sum::<usize>() + runs
}

/// An upper bound of the bytes of a splice inserting `items` and deleting
/// `runs` runs of ids, in `format`.
pub(crate) fn splice_bound(items: &[Input], runs: usize, format: WireFormat) -> usize {
    let inserted = items
        .iter()
        .fold(OP_OVERHEAD, |n, v| n + input_bound(v, format));
    match runs {
        0 => inserted,
        n => inserted + bare_op_bound(format) + n * run_bound(format),
    }
}

/// Whether `order` holds each of `0..len` exactly once: an order an
/// array's elements can be moved into ([`crate::Replica::list_reorder`]).
///
/// ```
/// assert!(facsimile_core::is_permutation(&[2, 0, 1], 3));
/// assert!(!facsimile_core::is_permutation(&[0, 0, 1], 3));
/// assert!(!facsimile_core::is_permutation(&[0, 1], 3));
/// ```
pub fn is_permutation(order: &[usize], len: usize) -> bool {
    let mut seen = vec![false; len];
    order.len() == len
        && order
            .iter()
            .all(|&i| i < len && !std::mem::replace(&mut seen[i], true))
}

#[cfg(test)]
mod tests {
    use super::longest_increasing;

    #[test]
    fn longest_increasing_keeps_a_maximal_sorted_run() {
        assert_eq!(longest_increasing(&[0, 1, 2]), vec![true, true, true]);
        assert_eq!(
            longest_increasing(&[2, 1, 0])
                .iter()
                .filter(|&&k| k)
                .count(),
            1
        );
        let keep = longest_increasing(&[3, 0, 1, 4, 2]);
        assert_eq!(keep, vec![false, true, true, false, true]);
    }
}
