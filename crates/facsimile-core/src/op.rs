//! Operations received from peers: validation, translation to local ids,
//! dependency tracking and application.
//!
//! A message is validated whole before anything is applied, so a refused
//! message changes nothing. Operations are commutative once their
//! dependencies (the objects, elements and slots they name) are present; an
//! operation whose dependency has not arrived yet waits for it, keyed by the
//! missing id, and runs when the id is created. A dependency whose creating
//! message was already applied but which is absent was reclaimed; operations
//! on it have no visible effect and are dropped (see `gc` for why no live
//! reference can name a reclaimed object).

use smallvec::SmallVec;
use smol_str::SmolStr;

use crate::error::ReceiveError;
use crate::graph::ObjData;
use crate::graph::list::ListObj;
use crate::graph::map::MapObj;
use crate::replica::{Origin, Replica, TouchKind};
use crate::value::{Id, ObjectId, PeerId, PeerIdx, Value};
use crate::wire::{Tag, WireId, WireOp, WireOrigin, WireValue};

/// Largest counter accepted; keeps counter arithmetic far from overflow.
pub(crate) const MAX_COUNTER: u64 = 1 << 62;

/// An operation in local terms.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    NewMap {
        id: Id,
        entries: Vec<(SmolStr, Value)>,
    },
    NewArray {
        id: Id,
        values: Vec<Value>,
    },
    Root {
        value: Value,
        stamp: Id,
    },
    MapWrite {
        obj: Id,
        key: SmolStr,
        value: Option<Value>,
        stamp: Id,
    },
    ListInsert {
        obj: Id,
        origin: Option<Id>,
        first: Id,
        /// Inline when one (a push, a typed character).
        values: SmallVec<[Value; 1]>,
    },
    ListDelete {
        obj: Id,
        start: Id,
        len: u32,
    },
    ListSet {
        obj: Id,
        elem: Id,
        value: Value,
        stamp: Id,
    },
    ListMove {
        obj: Id,
        elem: Id,
        origin: Option<Id>,
        slot: Id,
    },
    Lock {
        obj: Id,
        stamp: Id,
        wait: bool,
    },
    Unlock {
        obj: Id,
        req: Id,
        token: u64,
    },
    LockAck {
        obj: Id,
        req: Id,
        held: Option<(Id, u64)>,
        members: Vec<PeerId>,
    },
    Evict {
        peer: PeerId,
    },
}

enum Dep {
    Ready,
    Wait(Id),
    Gone,
}

/// Translates one sender's wire ids while a message is validated.
struct Translator<'a> {
    from: u32,
    dict: &'a [PeerIdx],
    /// Peers introduced by this message so far.
    intros: Vec<PeerIdx>,
    /// The counter the current operation starts at.
    counter: u64,
}

impl Translator<'_> {
    fn peer(&self, p: u32) -> Result<PeerIdx, ReceiveError> {
        let p = p as usize;
        if p == 0 {
            // Index 0 is the sender, resolved by the caller.
            return Err(ReceiveError::invalid(self.from, "internal: sender index"));
        }
        self.dict
            .get(p - 1)
            .or_else(|| self.intros.get(p - 1 - self.dict.len()))
            .copied()
            .ok_or_else(|| {
                ReceiveError::invalid(self.from, format!("peer index {p} was never introduced"))
            })
    }

    /// The sender's id `d` counters before `here` ([`WireOrigin::Back`]).
    fn back(&self, sender: PeerIdx, here: u64, d: u64) -> Result<Id, ReceiveError> {
        let c = here
            .checked_sub(d)
            .filter(|_| d > 0)
            .ok_or_else(|| ReceiveError::invalid(self.from, "insert origin out of range"))?;
        self.id(sender, WireId { p: 0, c })
    }

    fn id(&self, sender: PeerIdx, w: WireId) -> Result<Id, ReceiveError> {
        if w.c == 0 || w.c > MAX_COUNTER {
            return Err(ReceiveError::invalid(
                self.from,
                format!("counter {} out of range", w.c),
            ));
        }
        if w.p == 0 {
            if w.c >= self.counter {
                return Err(ReceiveError::invalid(
                    self.from,
                    format!("id {} names the sender's future", w.c),
                ));
            }
            return Ok(Id::new(sender, w.c));
        }
        Ok(Id::new(self.peer(w.p)?, w.c))
    }

    fn value(&self, sender: PeerIdx, w: WireValue) -> Result<Value, ReceiveError> {
        Ok(match w {
            WireValue::Null => Value::Null,
            WireValue::Bool(b) => Value::Bool(b),
            WireValue::Int(i) => Value::Int(i),
            WireValue::Float(f) => Value::Float(f),
            WireValue::Str(s) => Value::Str(s),
            WireValue::Bytes(b) => Value::Bytes(b.into()),
            WireValue::Ref(id) => Value::Ref(ObjectId(self.id(sender, id)?)),
        })
    }
}

/// The last counter of a message whose operations take `total` counters
/// from `first` on (a message of deletes only still takes `first`).
pub(crate) fn last_counter(first: u64, total: u64) -> u64 {
    first + total.saturating_sub(1)
}

impl Replica {
    /// Validates and applies an operations message from the stream of
    /// `tag`, whose peer is `sender`.
    /// The first counter of an operations message that moves its
    /// sender's counter by `tick`, checked against overflow.
    /// Returns the first and the last counter.
    fn message_counters(
        &self,
        tag: Tag,
        tick: u64,
        ops: &[WireOp],
    ) -> Result<(u64, u64), ReceiveError> {
        let stream = self.streams.get(&tag.0).expect("caller holds the stream");
        if tick == 0 {
            return Err(ReceiveError::invalid(
                tag.0,
                format!("counter does not follow {}", stream.lamport),
            ));
        }
        let lamport = stream.lamport.saturating_add(tick);
        let total: u64 = ops.iter().map(WireOp::counters).sum();
        if lamport > MAX_COUNTER || lamport.saturating_add(total) > MAX_COUNTER {
            return Err(ReceiveError::invalid(tag.0, "counters overflow"));
        }
        Ok((lamport, last_counter(lamport, total)))
    }

    /// The first counter of a refused operations message, moving the
    /// sender's counter past it so that its next message decodes.
    pub(crate) fn ops_counters(
        &mut self,
        tag: Tag,
        tick: u64,
        ops: &[WireOp],
    ) -> Result<u64, ReceiveError> {
        let (lamport, last) = self.message_counters(tag, tick, ops)?;
        if let Some(s) = self.streams.get_mut(&tag.0) {
            s.lamport = last;
        }
        Ok(lamport)
    }

    pub(crate) fn handle_ops(
        &mut self,
        tag: Tag,
        sender: PeerIdx,
        tick: u64,
        wire_ops: SmallVec<[WireOp; 1]>,
    ) -> Result<(), ReceiveError> {
        let (lamport, last) = self.message_counters(tag, tick, &wire_ops)?;
        let stream = self.streams.get(&tag.0).expect("caller holds the stream");
        // Pass 1: validate and translate without touching any state.
        let mut t = Translator {
            from: tag.0,
            dict: &stream.dict,
            intros: Vec::new(),
            counter: lamport,
        };
        let mut new_peers: Vec<PeerId> = Vec::new();
        let mut ops = std::mem::take(&mut self.op_buf);
        ops.clear();
        for w in wire_ops {
            let here = t.counter;
            t.counter += w.counters();
            let stamp = Id::new(sender, here);
            // Ids created by this op may be named by later ops only.
            let op = match w {
                WireOp::Intro {
                    tag: ptag,
                    hostname,
                } => {
                    if hostname.len() > 1024 {
                        return Err(ReceiveError::invalid(
                            tag.0,
                            "hostname longer than 1024 bytes",
                        ));
                    }
                    let id = PeerId::new(hostname.as_str(), ptag.0);
                    let idx = match self.peers.by_tag(ptag.0) {
                        Some(idx) if *self.peers.get(idx) == id => idx,
                        Some(_) => return Err(ReceiveError::TagCollision(ptag.0)),
                        None => {
                            // Interned after validation; reserve the index now.
                            if let Some(pos) = new_peers.iter().position(|p| *p == id) {
                                PeerIdx((self.peers.len() + pos) as u32)
                            } else if new_peers.iter().any(|p| p.incarnation() == ptag.0) {
                                return Err(ReceiveError::TagCollision(ptag.0));
                            } else {
                                new_peers.push(id);
                                PeerIdx((self.peers.len() + new_peers.len() - 1) as u32)
                            }
                        }
                    };
                    t.intros.push(idx);
                    continue;
                }
                WireOp::NewMap { entries } => {
                    t.counter = here;
                    let entries = entries
                        .into_iter()
                        .map(|(k, v)| Ok((k, t.value(sender, v)?)))
                        .collect::<Result<_, ReceiveError>>()?;
                    t.counter = here + 1;
                    Op::NewMap { id: stamp, entries }
                }
                WireOp::NewArray { values } => {
                    let n = values.len() as u64;
                    t.counter = here;
                    let values = values
                        .into_iter()
                        .map(|v| t.value(sender, v))
                        .collect::<Result<_, ReceiveError>>()?;
                    t.counter = here + 1 + n;
                    Op::NewArray { id: stamp, values }
                }
                WireOp::Root { value } => {
                    t.counter = here;
                    let value = t.value(sender, value)?;
                    t.counter = here + 1;
                    Op::Root { value, stamp }
                }
                WireOp::MapSet { obj, key, value } => {
                    t.counter = here;
                    let obj = t.id(sender, obj)?;
                    let value = t.value(sender, value)?;
                    t.counter = here + 1;
                    Op::MapWrite {
                        obj,
                        key,
                        value: Some(value),
                        stamp,
                    }
                }
                WireOp::MapDelete { obj, key } => {
                    t.counter = here;
                    let obj = t.id(sender, obj)?;
                    t.counter = here + 1;
                    Op::MapWrite {
                        obj,
                        key,
                        value: None,
                        stamp,
                    }
                }
                WireOp::Append { obj, value } => {
                    t.counter = here;
                    let obj = t.id(sender, obj)?;
                    let origin = t.back(sender, here, 1)?;
                    let value = t.value(sender, value)?;
                    t.counter = here + 1;
                    Op::ListInsert {
                        obj,
                        origin: Some(origin),
                        first: stamp,
                        values: smallvec::smallvec![value],
                    }
                }
                WireOp::ListInsert {
                    obj,
                    origin,
                    values,
                } => {
                    if values.is_empty() {
                        return Err(ReceiveError::invalid(tag.0, "empty insert"));
                    }
                    let n = values.len() as u64;
                    t.counter = here;
                    let obj = t.id(sender, obj)?;
                    let origin = match origin {
                        WireOrigin::Head => None,
                        WireOrigin::Back(d) => Some(t.back(sender, here, d)?),
                        WireOrigin::Id(o) => Some(t.id(sender, o)?),
                    };
                    let values = values
                        .into_iter()
                        .map(|v| t.value(sender, v))
                        .collect::<Result<_, ReceiveError>>()?;
                    t.counter = here + n;
                    Op::ListInsert {
                        obj,
                        origin,
                        first: stamp,
                        values,
                    }
                }
                WireOp::ListDelete { obj, runs } => {
                    let obj = t.id(sender, obj)?;
                    for (start, len) in runs {
                        let start = t.id(sender, start)?;
                        let end = start.counter.saturating_add(u64::from(len));
                        if len == 0 || end > MAX_COUNTER || (start.peer == sender && end > here) {
                            return Err(ReceiveError::invalid(tag.0, "bad delete run"));
                        }
                        ops.push(Op::ListDelete { obj, start, len });
                    }
                    continue;
                }
                WireOp::ListSet { obj, elem, value } => {
                    t.counter = here;
                    let obj = t.id(sender, obj)?;
                    let elem = t.id(sender, elem)?;
                    let value = t.value(sender, value)?;
                    t.counter = here + 1;
                    Op::ListSet {
                        obj,
                        elem,
                        value,
                        stamp,
                    }
                }
                WireOp::ListMove { obj, elem, origin } => {
                    t.counter = here;
                    let obj = t.id(sender, obj)?;
                    let elem = t.id(sender, elem)?;
                    let origin = origin.map(|o| t.id(sender, o)).transpose()?;
                    t.counter = here + 1;
                    Op::ListMove {
                        obj,
                        elem,
                        origin,
                        slot: stamp,
                    }
                }
                WireOp::Lock { obj } | WireOp::TryLock { obj } => {
                    let wait = matches!(w, WireOp::Lock { .. });
                    t.counter = here;
                    let obj = t.id(sender, obj)?;
                    t.counter = here + 1;
                    Op::Lock { obj, stamp, wait }
                }
                WireOp::Unlock { obj, req, token } => {
                    // Tokens are raised counters: far below the top of the
                    // range, so that raising one can never overflow.
                    if token > MAX_COUNTER {
                        return Err(ReceiveError::invalid(tag.0, "fencing token out of range"));
                    }
                    t.counter = here;
                    let obj = t.id(sender, obj)?;
                    let req = t.id(sender, req)?;
                    t.counter = here + 1;
                    Op::Unlock { obj, req, token }
                }
                WireOp::LockAck {
                    obj,
                    req,
                    held,
                    members,
                } => {
                    t.counter = here;
                    let obj = t.id(sender, obj)?;
                    let req = t.id(sender, req)?;
                    if held.is_some_and(|(_, tok)| tok > MAX_COUNTER) {
                        return Err(ReceiveError::invalid(tag.0, "fencing token out of range"));
                    }
                    let held = held
                        .map(|(r, tok)| Ok::<_, ReceiveError>((t.id(sender, r)?, tok)))
                        .transpose()?;
                    t.counter = here + 1;
                    let members = members
                        .into_iter()
                        .map(|(tag, h)| {
                            if h.len() > 1024 {
                                return Err(ReceiveError::invalid(
                                    tag.0,
                                    "hostname longer than 1024 bytes",
                                ));
                            }
                            Ok(PeerId::new(h.as_str(), tag.0))
                        })
                        .collect::<Result<Vec<_>, _>>()?;
                    Op::LockAck {
                        obj,
                        req,
                        held,
                        members,
                    }
                }
                WireOp::Evict { peer, hostname } => {
                    if hostname.len() > 1024 {
                        return Err(ReceiveError::invalid(
                            tag.0,
                            "hostname longer than 1024 bytes",
                        ));
                    }
                    Op::Evict {
                        peer: PeerId::new(hostname.as_str(), peer.0),
                    }
                }
                WireOp::Tick => continue,
            };
            ops.push(op);
        }
        // Pass 2: commit. Nothing below can fail.
        let intros = t.intros;
        for p in &new_peers {
            self.peers.intern(p).expect("collisions were checked");
        }
        let stream = self
            .streams
            .get_mut(&tag.0)
            .expect("caller holds the stream");
        stream.dict.extend(intros);
        stream.lamport = last;
        self.clock = self.clock.max(last);
        let origin = Origin::Remote(self.peers.get(sender).clone());
        for op in ops.drain(..) {
            self.apply_remote(sender, op, &origin);
        }
        self.op_buf = ops;
        self.flush_touched(&origin);
        self.gc.changed = true;
        self.run_woken();
        self.send_lock_acks();
        self.try_grant_all();
        Ok(())
    }

    /// Whether `id` was created by a message already applied here (so an
    /// absent `id` was reclaimed), as opposed to not having arrived yet.
    fn arrived(&self, id: Id) -> bool {
        let frontier = if id.peer == PeerIdx::SELF {
            self.clock
        } else {
            match self.peer_stream(id.peer) {
                Some(s) => s.lamport,
                None => 0,
            }
        };
        id.counter <= frontier && !self.awaited(id)
    }

    /// Whether a waiting operation will create `id`.
    fn awaited(&self, id: Id) -> bool {
        self.pending_creates
            .iter()
            .any(|&(p, start, len)| p == id.peer && id.counter >= start && id.counter < start + len)
    }

    fn status(&self, id: Id) -> Dep {
        if self.arrived(id) {
            Dep::Gone
        } else {
            Dep::Wait(id)
        }
    }

    fn value_dep(&self, v: &Value) -> Dep {
        match v {
            Value::Ref(o) if !self.graph.objects.contains_key(&o.0) => self.status(o.0),
            _ => Dep::Ready,
        }
    }

    fn list_dep(&self, obj: Id, ids: &[Id], values: &[&Value]) -> Dep {
        let list = match self.graph.get(obj).map(|o| &o.data) {
            Some(ObjData::List(l)) => l,
            Some(ObjData::Map(_)) => return Dep::Gone,
            None => return self.status(obj),
        };
        for &id in ids {
            if !list.has_slot(id) {
                return self.status(id);
            }
        }
        for v in values {
            match self.value_dep(v) {
                Dep::Ready => {}
                d => return d,
            }
        }
        Dep::Ready
    }

    fn dep(&self, op: &Op) -> Dep {
        match op {
            Op::NewMap { entries, .. } => {
                first_missing(entries.iter().map(|(_, v)| self.value_dep(v)))
            }
            Op::NewArray { values, .. } => first_missing(values.iter().map(|v| self.value_dep(v))),
            Op::Root { value, .. } => self.value_dep(value),
            Op::MapWrite { obj, value, .. } => match self.graph.get(*obj).map(|o| &o.data) {
                Some(ObjData::Map(_)) => value.as_ref().map_or(Dep::Ready, |v| self.value_dep(v)),
                Some(ObjData::List(_)) => Dep::Gone,
                None => self.status(*obj),
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
                self.list_dep(*obj, origin.as_slice(), &refs)
            }
            Op::ListDelete { obj, start, .. } => self.list_dep(*obj, &[*start], &[]),
            Op::ListSet {
                obj, elem, value, ..
            } => self.list_dep(*obj, &[*elem], &[value]),
            Op::ListMove {
                obj, elem, origin, ..
            } => {
                let mut ids = vec![*elem];
                ids.extend(origin);
                self.list_dep(*obj, &ids, &[])
            }
            // Lock queues are keyed by id and need no object present.
            Op::Lock { .. } | Op::Unlock { .. } | Op::LockAck { .. } | Op::Evict { .. } => {
                Dep::Ready
            }
        }
    }

    /// Applies an operation whose message passed validation, or parks it
    /// until its dependency arrives.
    pub(crate) fn apply_remote(&mut self, sender: PeerIdx, op: Op, origin: &Origin) {
        // A delete run is split where an element has not arrived, so the
        // present ones take effect now.
        if self.is_ordered() && self.refused_by_lock(&op, sender) {
            // Written to an object another peer holds at this log position.
            return;
        }
        if let Op::ListDelete { obj, start, len } = op {
            return self.apply_delete_run(sender, obj, start, len, origin);
        }
        match self.dep(&op) {
            Dep::Gone => {}
            Dep::Wait(id) => self.park(id, sender, op),
            Dep::Ready => self.execute(op, origin),
        }
    }

    fn apply_delete_run(&mut self, sender: PeerIdx, obj: Id, start: Id, len: u32, origin: &Origin) {
        let slots = match self.graph.get(obj).map(|o| &o.data) {
            Some(ObjData::List(l)) => l.slot_count() as u64,
            Some(ObjData::Map(_)) => return,
            None => {
                if let Dep::Wait(id) = self.status(obj) {
                    self.park(id, sender, Op::ListDelete { obj, start, len });
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
            if present {
                self.execute(
                    Op::ListDelete {
                        obj,
                        start: elem,
                        len: 1,
                    },
                    origin,
                );
            } else if self.awaited(elem) {
                // Arrived in an operation that waits itself; the elements
                // after it may be here already.
                self.park(
                    elem,
                    sender,
                    Op::ListDelete {
                        obj,
                        start: elem,
                        len: 1,
                    },
                );
            } else if !self.arrived(elem) {
                // Not sent yet as far as this replica knows, and neither is
                // anything after it (a peer's counters arrive in order): the
                // rest of the run waits for it as one operation, whatever
                // the list's length here.
                self.park(
                    elem,
                    sender,
                    Op::ListDelete {
                        obj,
                        start: elem,
                        len: len - k,
                    },
                );
                return;
            } else {
                absent += 1;
                if absent >= slots.max(1) {
                    return;
                }
            }
        }
    }

    fn park(&mut self, id: Id, sender: PeerIdx, op: Op) {
        match &op {
            Op::NewMap { id, .. } => self.pending_creates.push((id.peer, id.counter, 1)),
            Op::NewArray { id, values } => {
                self.pending_creates
                    .push((id.peer, id.counter, 1 + values.len() as u64))
            }
            Op::ListInsert { first, values, .. } => {
                self.pending_creates
                    .push((first.peer, first.counter, values.len() as u64))
            }
            Op::ListMove { slot, .. } => self.pending_creates.push((slot.peer, slot.counter, 1)),
            _ => {}
        }
        self.pending_count += 1;
        self.pending.entry(id).or_default().push((sender, op));
    }

    /// Runs an operation whose dependencies are all present.
    fn execute(&mut self, op: Op, origin: &Origin) {
        let sender = match origin {
            Origin::Remote(p) => self.peers.by_tag(p.incarnation()).unwrap_or(PeerIdx::SELF),
            Origin::Local => PeerIdx::SELF,
        };
        match op {
            Op::NewMap { id, entries } => {
                if self.graph.objects.contains_key(&id) {
                    return;
                }
                let mut map = MapObj::with_capacity(entries.len());
                for (k, v) in entries {
                    self.gc.note_ref(&v);
                    map.apply(&k, Some(v), id, &self.peers);
                }
                // A concurrent write may leave it unattached: mark.
                self.gc.dirty = true;
                self.insert_object(id, ObjData::Map(map));
                self.created(id, 1);
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
                list.insert(None, Id::new(id.peer, id.counter + 1), values, &self.peers);
                self.gc.dirty = true;
                self.insert_object(id, ObjData::List(Box::new(list)));
                self.created(id, 1 + n);
            }
            Op::Root { value, stamp } => {
                if !self.peers.later(stamp, self.graph.root_stamp) {
                    return;
                }
                self.gc.note_ref(&value);
                self.graph.root_stamp = stamp;
                if self.graph.root.same(&value) {
                    return;
                }
                let old = std::mem::replace(&mut self.graph.root, value.clone());
                self.gc.note_detach(&old);
                self.events.push_back(crate::replica::Event::RootChanged {
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
                self.apply_map_write(obj, key, value, stamp, origin.clone());
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
                let peers = &self.peers;
                if let Some(ObjData::List(l)) = self.graph.get_mut(obj).map(|o| &mut o.data) {
                    l.insert(after, first, values, peers);
                }
                self.touch(obj, TouchKind::Mass);
                self.created(first, n);
            }
            Op::ListDelete { obj, start, .. } => {
                if let Some(ObjData::List(l)) = self.graph.get_mut(obj).map(|o| &mut o.data) {
                    if let Some((old, _)) = l.delete(start) {
                        self.gc.garbage = true;
                        self.gc.note_detach(&old);
                        self.touch(obj, TouchKind::Mass);
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
                let peers = &self.peers;
                if let Some(ObjData::List(l)) = self.graph.get_mut(obj).map(|o| &mut o.data) {
                    if let Some((old, _)) = l.set(elem, value, stamp, peers) {
                        self.gc.note_detach(&old);
                        self.touch(obj, TouchKind::Set { elem, old });
                    }
                }
            }
            Op::ListMove {
                obj,
                elem,
                origin: after,
                slot,
            } => {
                let peers = &self.peers;
                if let Some(ObjData::List(l)) = self.graph.get_mut(obj).map(|o| &mut o.data) {
                    // Whether it wins or not, a move leaves a dead slot.
                    self.gc.garbage = true;
                    if l.move_elem(elem, after, slot, peers) {
                        self.touch(obj, TouchKind::Mass);
                    }
                }
                self.created(slot, 1);
            }
            Op::Lock { obj, stamp, wait } => self.on_lock_request(obj, stamp, wait),
            Op::Unlock { obj, req, token } => self.on_unlock(obj, req, token),
            Op::LockAck {
                obj,
                req,
                held,
                members,
            } => {
                for m in members {
                    if m == self.me {
                        continue;
                    }
                    if let Ok(p) = self.peers.intern(&m) {
                        if !self.gc.departed.contains(&p) && self.gc.members.insert(p) {
                            self.gc.changed = true;
                            self.events.push_back(crate::replica::Event::PeerJoined(m));
                        }
                    }
                }
                self.on_lock_ack(sender, obj, req, held);
            }
            Op::Evict { peer } => {
                if peer == self.me {
                    self.evicted();
                } else if let Ok(p) = self.peers.intern(&peer) {
                    self.depart(p);
                }
            }
        }
    }

    /// Records that ids `first..first + n` now exist, waking what waited.
    fn created(&mut self, first: Id, n: u64) {
        if !self.pending_creates.is_empty() {
            self.pending_creates
                .retain(|&(p, start, _)| !(p == first.peer && start == first.counter));
        }
        if self.pending.is_empty() {
            return;
        }
        for k in 0..n {
            let id = Id::new(first.peer, first.counter + k);
            if let Some(waiting) = self.pending.remove(&id) {
                self.pending_count -= waiting.len();
                self.woken.extend(waiting);
            }
        }
    }

    /// Applies operations whose dependency arrived, each as its own change.
    pub(crate) fn run_woken(&mut self) {
        while let Some((sender, op)) = self.woken.pop_front() {
            let origin = Origin::Remote(self.peers.get(sender).clone());
            self.apply_remote(sender, op, &origin);
            self.flush_touched(&origin);
        }
    }
}

impl Replica {
    /// On an ordered log, whether `op` writes an object held by a peer
    /// other than its sender.
    fn refused_by_lock(&self, op: &Op, sender: PeerIdx) -> bool {
        let obj = match op {
            Op::MapWrite { obj, .. }
            | Op::ListInsert { obj, .. }
            | Op::ListDelete { obj, .. }
            | Op::ListSet { obj, .. }
            | Op::ListMove { obj, .. } => *obj,
            _ => return false,
        };
        self.held_by_other(obj, sender)
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
