//! Carrying over the writes a replica lost when its lease ran out on an
//! ordered log: its successor makes again, as its own writes, those that
//! depended on no lock and whose references are still there.
//!
//! Why only those (DESIGN.md, "On a totally ordered log"): a lock the
//! replica held was freed at the lapse and may have been granted since, so
//! its writes made while or before holding one may have been computed from
//! a locked state the new holder has changed; and a re-made write is an
//! ordinary local write of the successor, so it may name only what a local
//! write may name there (a present map, an element or slot that is live, an
//! object not detached), or the others, whose reclamation rounds completed
//! without the lapsed replica, could have collected it.

use rustc_hash::{FxHashMap, FxHashSet};
use smallvec::SmallVec;

use super::Replica;
use crate::codec;
use crate::op::{self, Op};
use crate::streams::Stream;
use crate::value::{Id, Input, ObjectId, PeerIdx, Succession, Value};
use crate::wire::{Message, Sequenced, Tag, WireOp};

/// What [`Replica::carry_over`] did with the writes its predecessor lost:
/// how many operations it made again and how many are lost, and the new
/// ids of the objects those writes had created.
///
/// An operation is one change: a key set or deleted, the root replaced, a
/// run of elements inserted or deleted, an element set or moved. Creating
/// an object is part of the write that stores it.
#[derive(Clone, Debug, Default)]
pub struct CarriedOver {
    carried: u64,
    lost: u64,
    /// Objects the lost writes created, by their id through the
    /// succession, and their new ids.
    renamed: FxHashMap<ObjectId, ObjectId>,
}

impl CarriedOver {
    /// Operations made again as this replica's own writes.
    pub fn carried(&self) -> u64 {
        self.carried
    }

    /// Operations lost: made while or before holding a lock, or naming
    /// what is no longer there.
    pub fn lost(&self) -> u64 {
        self.lost
    }

    /// The current id of an object the predecessor handed out, given as
    /// read through the succession ([`ObjectId::after`]): an object its
    /// lost writes created was created again with a new id.
    pub fn rename(&self, id: ObjectId) -> ObjectId {
        self.renamed.get(&id).copied().unwrap_or(id)
    }

    /// The objects created again: each id through the succession, and the
    /// new one.
    pub fn renamed(&self) -> impl Iterator<Item = (ObjectId, ObjectId)> + '_ {
        self.renamed.iter().map(|(&a, &b)| (a, b))
    }
}

/// What translating the predecessor's ids needs.
struct Carry {
    succession: Succession,
    /// The predecessor's own ids above this counter were made by the
    /// writes it lost.
    lost_from: u64,
    /// The predecessor's ids made by lost writes (objects, elements, move
    /// slots) that were made again, and their new ids.
    renamed: FxHashMap<Id, Id>,
    /// Objects reachable here when carrying over began, and those it
    /// created: the objects a carried write may change.
    live: FxHashSet<Id>,
}

impl Replica {
    /// Makes again, as this replica's own writes, the writes `previous` lost
    /// when its lease ran out on an ordered log, for a successor taking its
    /// place ([`Replica::successor`], brought up to where `previous` had
    /// read and on until it read its own first message back
    /// ([`Replica::joined_log`]), with [`Replica::extend_succession`]
    /// applied to `succession`). The writes are judged on this replica's
    /// state: before it joined the log, a round of reclamation completed
    /// elsewhere without it may have collected what they name.
    ///
    /// Lost are the writes of every message of `previous` that it had not
    /// read back from the log: the log refuses them all. Of those, a write
    /// is made again when `previous` held no lock when it made it nor at
    /// any time after, and when what it names is still there: the map or
    /// array it changes and the objects it stores (reachable), the element
    /// or slot an insert or a move follows (visible), the element it sets,
    /// moves or deletes (live). Objects the lost writes created are created
    /// again with new ids, and the later lost writes that name them name
    /// the new ones ([`CarriedOver::rename`]). A write to an object another
    /// peer holds the lock on is lost, as a local write would be refused. A
    /// key set or an element set that another peer's write with a later
    /// stamp superseded meanwhile counts as carried over without being
    /// made again: it would have lost. The writes go out in messages
    /// grouped as they were; change events record them as local changes.
    ///
    /// Does nothing (and returns no count) unless `previous` is ordered
    /// and its lease ran out: after a refused write or a purge, the log
    /// accepted its other messages, and they reach this replica by
    /// reading on.
    ///
    /// # Panics
    /// When this replica has not read its own first message back from the
    /// log yet ([`Replica::joined_log`]) and there are writes to carry.
    pub fn carry_over(&mut self, previous: &mut Replica, succession: &Succession) -> CarriedOver {
        let mut done = CarriedOver::default();
        if !previous.members.is_evicted() {
            return done;
        }
        // An open group's operations are lost writes too.
        previous.out.close_all();
        let previous = &*previous;
        let Some(log) = previous.locks.log_ref() else {
            return done;
        };
        assert!(
            self.joined_log(),
            "carry_over before the successor read its own first message back"
        );
        let (echoed, mut lamport) = log.echoed();
        // An ordered replica keeps them until it reads them back.
        let Some(sent) = previous.out.outbox.sent_since(echoed + 1) else {
            return done;
        };
        // Writes up to here may depend on a lock, held then or later.
        let locked_through = match previous.locks.holds_any() {
            true => previous.out.outbox.clock(),
            false => previous.locked_through,
        };
        let mut cx = Carry {
            succession: *succession,
            lost_from: lamport,
            renamed: FxHashMap::default(),
            live: self.doc.graph().reachable().into_iter().collect(),
        };
        let dict = previous.out.outbox.dictionary();
        let from = Tag(previous.me.incarnation());
        let mut ops = Vec::new();
        for bytes in sent {
            let Ok(frame) = codec::decode(&bytes, usize::MAX) else {
                continue;
            };
            let Message::Sequenced {
                body: Sequenced::Ops { tick, ops: wire },
                ..
            } = frame.msg
            else {
                continue;
            };
            let counters = op_counters(lamport + tick, &wire);
            let stream = Stream::at(PeerIdx::SELF, 0, lamport, dict.clone());
            ops.clear();
            let Ok(t) = op::translate(
                from,
                PeerIdx::SELF,
                &stream,
                &previous.peers,
                tick,
                wire,
                &mut ops,
            ) else {
                // Its own message: it decodes. Were it not to, its writes
                // are lost, unknown how many.
                done.lost += 1;
                continue;
            };
            lamport = t.last;
            self.begin();
            for (op, counter) in ops.drain(..).zip(counters) {
                let counted = match &op {
                    // Locks went with the lapse; nothing to count.
                    Op::Lock { .. } | Op::Unlock { .. } | Op::LockAck { .. } | Op::Evict { .. } => {
                        continue;
                    }
                    Op::NewMap { .. } | Op::NewArray { .. } => false,
                    _ => true,
                };
                let made = counter > locked_through && self.remake(op, previous, &mut cx);
                if counted {
                    match made {
                        true => done.carried += 1,
                        false => done.lost += 1,
                    }
                }
            }
            self.commit();
        }
        for (old, new) in cx.renamed {
            // Objects only, not elements or slots.
            if cx.live.contains(&new) {
                let old = ObjectId(old).after(&cx.succession);
                done.renamed.insert(old, ObjectId(new));
            }
        }
        done
    }

    /// Makes `op` of `previous` again as a local write; whether it was.
    fn remake(&mut self, op: Op, previous: &Replica, cx: &mut Carry) -> bool {
        match op {
            Op::NewMap { id, entries } => {
                let mut input = Vec::with_capacity(entries.len());
                for (k, v) in entries {
                    let Some(v) = self.carried_value(v, previous, cx) else {
                        return false;
                    };
                    input.push((k, Input::Value(v)));
                }
                self.create(id, Input::Map(input), cx)
            }
            Op::NewArray { id, values } => {
                let n = values.len() as u64;
                let Some(values) = self.carried_values(values, previous, cx) else {
                    return false;
                };
                if !self.create(id, Input::Array(values.into_vec()), cx) {
                    return false;
                }
                let new = cx.renamed[&id];
                for i in 1..=n {
                    cx.renamed.insert(
                        Id::new(id.peer, id.counter + i),
                        Id::new(new.peer, new.counter + i),
                    );
                }
                true
            }
            Op::Root { value, .. } => self
                .carried_value(value, previous, cx)
                .is_some_and(|v| self.set_root(Input::Value(v)).is_ok()),
            Op::MapWrite {
                obj,
                key,
                value,
                stamp,
            } => {
                let Some(obj) = self.carried_target(obj, previous, cx) else {
                    return false;
                };
                // Another peer wrote the key meanwhile, later than this
                // write: it would have lost, as it does now.
                let now = self.doc.map(obj).ok().and_then(|m| m.stamp_of(&key));
                if self.superseded(now, stamp, cx) {
                    return true;
                }
                match value {
                    Some(v) => self
                        .carried_value(v, previous, cx)
                        .is_some_and(|v| self.map_set(obj, &key, Input::Value(v)).is_ok()),
                    None => self.map_delete(obj, &key).is_ok(),
                }
            }
            Op::ListInsert {
                obj,
                origin,
                first,
                values,
            } => {
                let Some(obj) = self.carried_target(obj, previous, cx) else {
                    return false;
                };
                let at = match origin {
                    None => Some(0),
                    Some(o) => self
                        .carried_id(o, previous, cx)
                        .and_then(|o| self.doc.list(obj).ok()?.visible_slot_index(o))
                        .map(|i| i + 1),
                };
                let Some(at) = at else {
                    return false;
                };
                let n = values.len();
                let Some(values) = self.carried_values(values, previous, cx) else {
                    return false;
                };
                if self.list_splice(obj, at, 0, values).is_err() {
                    return false;
                }
                // The newest stamp goes right after its origin.
                let Ok(list) = self.doc.list(obj) else {
                    return false;
                };
                for k in 0..n {
                    let old = Id::new(first.peer, first.counter + k as u64);
                    cx.renamed.insert(old, list.elem_at(at + k));
                }
                true
            }
            Op::ListDelete { obj, start, len } => {
                let Some(obj) = self.carried_target(obj, previous, cx) else {
                    return false;
                };
                for k in 0..u64::from(len) {
                    let old = Id::new(start.peer, start.counter + k);
                    // Gone already (or never made again): nothing to delete.
                    let Some(i) = self
                        .carried_id(old, previous, cx)
                        .and_then(|e| self.doc.list(obj).ok()?.index_of(e))
                    else {
                        continue;
                    };
                    if self.list_splice(obj, i, 1, std::iter::empty()).is_err() {
                        return false;
                    }
                }
                true
            }
            Op::ListSet {
                obj,
                elem,
                value,
                stamp,
            } => {
                let Some((obj, e, i)) = self.carried_elem(obj, elem, previous, cx) else {
                    return false;
                };
                let Ok(list) = self.doc.list(obj) else {
                    return false;
                };
                // As for a map key: a later set by another peer stands.
                if self.superseded(list.value_stamp_of(e), stamp, cx) {
                    return true;
                }
                self.carried_value(value, previous, cx)
                    .is_some_and(|v| self.list_set_many(obj, vec![(i, Input::Value(v))]).is_ok())
            }
            Op::ListMove {
                obj,
                elem,
                origin,
                slot,
            } => {
                let Some((obj, e, from)) = self.carried_elem(obj, elem, previous, cx) else {
                    return false;
                };
                let Ok(list) = self.doc.list(obj) else {
                    return false;
                };
                // The slot to move after, here, and the index that puts
                // the element at (counted without it).
                let (after, to) = match origin {
                    None => (None, 0),
                    Some(o) => {
                        let Some((o, at)) = self
                            .carried_id(o, previous, cx)
                            .and_then(|o| Some((o, list.visible_slot_index(o)?)))
                        else {
                            return false;
                        };
                        (Some(o), if at < from { at + 1 } else { at })
                    }
                };
                if to != from && self.list_move_after(obj, e, after).is_err() {
                    return false;
                }
                if let Some(at) = self.doc.list(obj).ok().and_then(|l| l.position_of(e)) {
                    cx.renamed.insert(slot, at);
                }
                true
            }
            Op::Lock { .. } | Op::Unlock { .. } | Op::LockAck { .. } | Op::Evict { .. } => false,
        }
    }

    /// Whether a value stamped `now` here wins over the predecessor's write
    /// stamped `was`: another peer's later write (a stamp of this
    /// replica's is a write carried over just before).
    fn superseded(&self, now: Option<Id>, was: Id, cx: &Carry) -> bool {
        let was = ObjectId(was).after(&cx.succession).0;
        now.is_some_and(|now| now.peer != PeerIdx::SELF && self.peers.later(now, was))
    }

    /// Creates again the object `id` of the predecessor.
    fn create(&mut self, id: Id, input: Input, cx: &mut Carry) -> bool {
        if self.doc.check_input(&input).is_err() {
            return false;
        }
        let new = self.doc.create_object(input, &mut self.out, &self.peers);
        cx.renamed.insert(id, new);
        cx.live.insert(new);
        true
    }

    /// The id here of the predecessor's `id`, if it is known here.
    fn carried_id(&self, id: Id, previous: &Replica, cx: &Carry) -> Option<Id> {
        if id.peer == PeerIdx::SELF {
            if id.counter > cx.lost_from {
                return cx.renamed.get(&id).copied();
            }
            return Some(ObjectId(id).after(&cx.succession).0);
        }
        // Every other peer keeps its index in a successor; checked.
        let peer = previous.peers.get(id.peer);
        let here = self.peers.by_tag(peer.incarnation())?;
        (self.peers.get(here) == peer).then_some(Id::new(here, id.counter))
    }

    /// The object here a carried write may change: the predecessor's `obj`,
    /// reachable (or created by the carried writes).
    fn carried_target(&self, obj: Id, previous: &Replica, cx: &Carry) -> Option<ObjectId> {
        let obj = self.carried_id(obj, previous, cx)?;
        cx.live.contains(&obj).then_some(ObjectId(obj))
    }

    /// A live element a carried write names, with its list and its index.
    fn carried_elem(
        &self,
        obj: Id,
        elem: Id,
        previous: &Replica,
        cx: &Carry,
    ) -> Option<(ObjectId, Id, usize)> {
        let obj = self.carried_target(obj, previous, cx)?;
        let e = self.carried_id(elem, previous, cx)?;
        let i = self.doc.list(obj).ok()?.index_of(e)?;
        Some((obj, e, i))
    }

    /// A value of the predecessor as a value here; `None` when it refers to
    /// an object not reachable here (nor created by a carried write).
    fn carried_value(&self, v: Value, previous: &Replica, cx: &Carry) -> Option<Value> {
        match v {
            Value::Ref(o) => {
                // Reachable: an unreachable object here may be reclaimed
                // on the others already (a loaded one passes the
                // `Detached` check until this replica marks).
                let o = self.carried_id(o.0, previous, cx)?;
                cx.live.contains(&o).then_some(Value::Ref(ObjectId(o)))
            }
            v => Some(v),
        }
    }

    fn carried_values(
        &self,
        values: impl IntoIterator<Item = Value>,
        previous: &Replica,
        cx: &Carry,
    ) -> Option<SmallVec<[Input; 1]>> {
        values
            .into_iter()
            .map(|v| self.carried_value(v, previous, cx).map(Input::Value))
            .collect()
    }
}

/// The counter of each operation [`op::translate`] makes of `wire`, whose
/// first counter is `first`: a delete takes none (it has the next one), and
/// a delete of several runs makes one operation per run.
fn op_counters(first: u64, wire: &[WireOp]) -> Vec<u64> {
    let mut counters = Vec::with_capacity(wire.len());
    let mut here = first;
    for w in wire {
        match w {
            WireOp::Intro { .. } | WireOp::Tick => {}
            WireOp::ListDelete { runs, .. } => {
                counters.extend(std::iter::repeat_n(here, runs.len()));
            }
            _ => counters.push(here),
        }
        here += w.counters();
    }
    counters
}
