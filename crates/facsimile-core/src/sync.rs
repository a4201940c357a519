//! State transfer for joiners, and the canonical snapshot.
//!
//! The handshake: a joiner drops its state and broadcasts a sync request;
//! every live peer answers with a small offer; the joiner fetches the state
//! from the first offerer only, so exactly one peer sends the document. The
//! answer carries, for every sender, the stream position it covers; the
//! joiner applies what it buffered meanwhile beyond those positions, and asks
//! senders to resend anything it missed in between.

use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::ser::{SerializeSeq, SerializeStruct, SerializeStructVariant};
use serde::{Serialize, Serializer};
use smol_str::SmolStr;

use crate::codec;
use crate::error::ReceiveError;
use crate::graph::list::{ElemExtra, ListObj, Slot, SlotKind};
use crate::graph::map::{MapEntry, MapObj};
use crate::graph::{Graph, Obj, ObjData, Objects};
use crate::op::MAX_COUNTER;
use crate::replica::{Config, Event, Origin, Phase, Replica, Stream};
use crate::value::{Id, ObjectId, PeerId, PeerIdx, Succession, Value};
use crate::wire::{
    CanonObj, Canonical, ObjState, SlotState, StreamState, Tag, TransferState, WireId, WireValue,
};

/// Encodes local ids against a table of peers given by index.
struct TableEnc<'a> {
    /// Position of each peer in the encoded table; `None`: the replica's
    /// own table, in its order.
    index: Option<&'a FxHashMap<PeerIdx, u32>>,
}

impl TableEnc<'_> {
    fn id(&self, id: Id) -> WireId {
        WireId {
            p: self.index.map_or(id.peer.0, |index| index[&id.peer]),
            c: id.counter,
        }
    }

    fn value(&self, v: &Value) -> WireValue {
        match v {
            Value::Null => WireValue::Null,
            Value::Bool(b) => WireValue::Bool(*b),
            Value::Int(i) => WireValue::Int(*i),
            Value::Float(f) => WireValue::Float(*f),
            Value::Str(s) => WireValue::Str(s.clone()),
            Value::Bytes(b) => WireValue::Bytes(b.to_vec()),
            Value::Ref(o) => WireValue::Ref(self.id(o.0)),
        }
    }
}

/// Whether `id` is `prev` plus one (ids left out of a transferred state);
/// `id` becomes `prev`.
fn follows(prev: &mut Option<Id>, id: Id) -> bool {
    let follows = prev.is_some_and(|p| p.peer == id.peer && p.counter + 1 == id.counter);
    *prev = Some(id);
    follows
}

/// Resolves an id of a transferred state that may be left out (`None`: the
/// previous id plus one); it becomes the previous id.
fn next_id(
    dec: &TableDec<'_>,
    prev: &mut Option<Id>,
    w: Option<WireId>,
) -> Result<Id, ReceiveError> {
    let id = match (w, *prev) {
        (Some(w), _) => dec.id(w)?,
        (None, Some(p)) if p.counter < MAX_COUNTER => Id::new(p.peer, p.counter + 1),
        (None, _) => {
            return Err(ReceiveError::invalid(
                dec.from,
                "a left-out id follows nothing or leaves the counter range",
            ));
        }
    };
    *prev = Some(id);
    Ok(id)
}

/// Decodes ids of a transferred state against the interned table.
struct TableDec<'a> {
    table: &'a [PeerIdx],
    from: u32,
}

impl TableDec<'_> {
    fn id(&self, w: WireId) -> Result<Id, ReceiveError> {
        let peer = self.table.get(w.p as usize).copied().ok_or_else(|| {
            ReceiveError::invalid(self.from, format!("peer {} not in the table", w.p))
        })?;
        if w.c == 0 || w.c > MAX_COUNTER {
            return Err(ReceiveError::invalid(
                self.from,
                format!("counter {} out of range", w.c),
            ));
        }
        Ok(Id::new(peer, w.c))
    }

    fn value(&self, w: WireValue) -> Result<Value, ReceiveError> {
        Ok(match w {
            WireValue::Null => Value::Null,
            WireValue::Bool(b) => Value::Bool(b),
            WireValue::Int(i) => Value::Int(i),
            WireValue::Float(f) => Value::Float(f),
            WireValue::Str(s) => Value::Str(s),
            WireValue::Bytes(b) => Value::Bytes(b.into()),
            WireValue::Ref(id) => Value::Ref(ObjectId(self.id(id)?)),
        })
    }
}

impl Replica {
    /// The canonical encoding of the document: identical on every replica
    /// that received the same messages, with nothing node-local in it.
    pub fn snapshot(&mut self) -> Vec<u8> {
        codec::encode_plain(&self.canonical())
    }

    pub(crate) fn canonical(&mut self) -> Canonical {
        self.graph.sort_maps();
        let order = self.graph.reachable();
        // Peers appearing in the content, sorted, so indices do not depend on
        // this replica's table.
        let mut used: Vec<PeerIdx> = Vec::new();
        let mut note = |id: Id| used.push(id.peer);
        if self.graph.root_stamp.counter > 0 {
            note(self.graph.root_stamp);
        }
        for &id in &order {
            note(id);
            match &self.graph.objects[&id].data {
                ObjData::Map(m) => {
                    for (_, e) in m.raw_entries() {
                        if e.value.is_some() {
                            note(e.stamp);
                        }
                    }
                }
                ObjData::List(l) => {
                    for (e, _, stamp) in l.elements() {
                        note(e);
                        note(stamp);
                    }
                }
            }
        }
        used.sort_by(|&a, &b| self.peers.cmp_peer(a, b));
        used.dedup();
        let index: FxHashMap<PeerIdx, u32> = used
            .iter()
            .enumerate()
            .map(|(i, &p)| (p, i as u32))
            .collect();
        let enc = TableEnc {
            index: Some(&index),
        };
        let objects = order
            .iter()
            .map(|&id| match &self.graph.objects[&id].data {
                ObjData::Map(m) => CanonObj::Map {
                    id: enc.id(id),
                    entries: m
                        .raw_entries()
                        .filter_map(|(k, e)| {
                            e.value
                                .as_ref()
                                .map(|v| (k.clone(), enc.value(v), enc.id(e.stamp)))
                        })
                        .collect(),
                },
                ObjData::List(l) => CanonObj::List {
                    id: enc.id(id),
                    elems: l
                        .elements()
                        .map(|(e, v, s)| (enc.id(e), enc.value(v), enc.id(s)))
                        .collect(),
                },
            })
            .collect();
        Canonical {
            peers: used
                .iter()
                .map(|&p| {
                    let id = self.peers.get(p);
                    (Tag(id.incarnation()), SmolStr::from(id.hostname()))
                })
                .collect(),
            root: enc.value(&self.graph.root),
            root_stamp: (self.graph.root_stamp.counter > 0).then(|| enc.id(self.graph.root_stamp)),
            objects,
        }
    }

    /// Everything a joiner needs to continue from this replica's state, as a
    /// view that serializes straight from the graph.
    pub(crate) fn transfer_view(&mut self) -> TransferState<ObjectsView<'_>> {
        // Sorted once here rather than by every loader on its first read.
        self.graph.sort_maps();
        let table: Vec<(Tag, SmolStr)> = self
            .peers
            .iter()
            .map(|(_, p)| (Tag(p.incarnation()), SmolStr::from(p.hostname())))
            .collect();
        let enc = TableEnc { index: None };
        let mut streams: Vec<StreamState> = self
            .streams
            .values()
            .filter_map(|s| {
                Some(StreamState {
                    peer: s.peer?.0,
                    next_seq: s.next_seq,
                    lamport: s.lamport,
                    dict: s.dict.iter().map(|p| p.0).collect(),
                })
            })
            .collect();
        // This replica's own stream, as a receiver of it stands now.
        let mut own_dict: Vec<(u32, PeerIdx)> =
            self.out.dict.iter().map(|(&p, &i)| (i, p)).collect();
        own_dict.sort();
        streams.push(StreamState {
            peer: PeerIdx::SELF.0,
            next_seq: self.out.seq + 1,
            lamport: self.sent_lamport,
            dict: own_dict.into_iter().map(|(_, p)| p.0).collect(),
        });
        streams.sort_by_key(|s| s.peer);
        let mut objects: Vec<(Id, &Obj)> =
            self.graph.objects.iter().map(|(&id, o)| (id, o)).collect();
        objects.sort_unstable_by_key(|(id, _)| (id.peer, id.counter));
        let mut members: Vec<u32> = self.gc.members.iter().map(|p| p.0).collect();
        members.push(PeerIdx::SELF.0);
        members.sort();
        let sorted = |ack: &FxHashMap<u32, u64>| {
            let mut a: Vec<(Tag, u64)> = ack.iter().map(|(&t, &c)| (Tag(t), c)).collect();
            a.sort();
            a
        };
        let own: FxHashMap<u32, u64> = self
            .frontier()
            .into_iter()
            .map(|(p, c)| (self.peers.tag(p), c))
            .collect();
        let mut acks: Vec<(u32, Vec<(Tag, u64)>)> = self
            .gc
            .acks
            .iter()
            .map(|(m, ack)| (m.0, sorted(ack)))
            .collect();
        acks.push((PeerIdx::SELF.0, sorted(&own)));
        acks.sort();
        let mut locks: Vec<crate::wire::LockQueueState> = self
            .locks
            .last_token
            .keys()
            .chain(self.locks.queues.keys())
            .copied()
            .collect::<rustc_hash::FxHashSet<Id>>()
            .into_iter()
            .map(|obj| {
                let queue = self
                    .locks
                    .queues
                    .get(&obj)
                    .map(|q| q.iter().map(|r| (enc.id(r.stamp), r.held)).collect())
                    .unwrap_or_default();
                (
                    enc.id(obj),
                    queue,
                    self.locks.last_token.get(&obj).copied().unwrap_or(0),
                )
            })
            .collect();
        locks.sort_by_key(|(id, _, _)| (id.p, id.c));
        TransferState {
            peers: table,
            streams,
            root: enc.value(&self.graph.root),
            root_stamp: (self.graph.root_stamp.counter > 0).then(|| enc.id(self.graph.root_stamp)),
            objects: ObjectsView(objects),
            members,
            acks,
            locks,
            syncing: self.syncing_peers.iter().map(|p| p.0).collect(),
            log: self.is_ordered().then(|| {
                let nanos = |t: &Duration| u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
                let mut seen: Vec<(u32, u64)> = self
                    .log
                    .last_seen
                    .iter()
                    .map(|(p, t)| (p.0, nanos(t)))
                    .collect();
                seen.sort();
                crate::wire::LogTransfer {
                    position: self.log.position,
                    clock: nanos(&self.log.time),
                    stamp: nanos(&self.log.stamp),
                    seen,
                }
            }),
        }
    }

    /// The transferred state in wire types, as a joiner decodes it.
    #[cfg(test)]
    pub(crate) fn transfer_state(&mut self) -> TransferState {
        let bytes = postcard::to_allocvec(&self.transfer_view()).expect("states serialize");
        postcard::from_bytes(&bytes).expect("a transferred state decodes")
    }

    /// Queues the answer to a sync fetch: the document, encoded straight from
    /// the graph.
    pub(crate) fn send_answer(&mut self, to: Tag) {
        let (from, format) = (self.tag(), self.config.format);
        let frame = AnswerFrame {
            from,
            to,
            state: self.transfer_view(),
        };
        let bytes = codec::encode(&frame, format);
        self.queue_directed(to, bytes);
    }

    /// The replica's index for each peer of a transferred table (which must
    /// start with `from`), and the peers it does not know yet: they are
    /// interned only when the state is committed.
    fn peer_table(
        &self,
        from: Tag,
        peers: &[(Tag, SmolStr)],
    ) -> Result<(Vec<PeerIdx>, Vec<PeerId>), ReceiveError> {
        // The answerer's table starts with the answerer (its own index 0),
        // which is also the origin of the changes the transfer makes.
        if peers.first().map(|(tag, _)| *tag) != Some(from) {
            return Err(ReceiveError::invalid(
                from.0,
                "the peer table does not start with the sender",
            ));
        }
        // Intern the table only after checking it cannot collide.
        let mut fresh: Vec<PeerId> = Vec::new();
        for (tag, hostname) in peers {
            let id = PeerId::new(hostname.as_str(), tag.0);
            match self.peers.by_tag(tag.0) {
                Some(p) if *self.peers.get(p) != id => {
                    return Err(ReceiveError::TagCollision(tag.0));
                }
                Some(_) => {}
                None if fresh.iter().any(|f| f.incarnation() == tag.0) => {
                    return Err(ReceiveError::TagCollision(tag.0));
                }
                None => fresh.push(id),
            }
        }
        // Fresh peers will take the next indices, in table order.
        let mut next = self.peers.len() as u32;
        let table = peers
            .iter()
            .map(|(tag, _)| {
                self.peers.by_tag(tag.0).unwrap_or_else(|| {
                    next += 1;
                    PeerIdx(next - 1)
                })
            })
            .collect();
        Ok((table, fresh))
    }

    /// Replaces this replica's document with a transferred state. Validates
    /// everything first; on error nothing changed.
    pub(crate) fn load_transfer(
        &mut self,
        from: Tag,
        mut state: TransferState,
    ) -> Result<(), ReceiveError> {
        let (table, fresh) = self.peer_table(from, &state.peers)?;
        let objects = std::mem::take(&mut state.objects);
        let dec = TableDec {
            table: &table,
            from: from.0,
        };
        let mut builder = GraphBuilder::new(dec, self.gc.mark, objects.len());
        for obj in objects {
            builder.add(obj)?;
        }
        self.commit_transfer(from, &table, fresh, builder.built, state)
    }

    /// [`Replica::load_transfer`] for a state saved by
    /// [`Replica::export_state`] (postcard, after the version byte), which
    /// builds each object as soon as it is decoded instead of decoding the
    /// whole state first. Returns the saved replica's tag.
    fn load_saved(&mut self, mut bytes: &[u8]) -> Result<Tag, ReceiveError> {
        fn take<'b, T: serde::Deserialize<'b>>(bytes: &mut &'b [u8]) -> Result<T, ReceiveError> {
            let (value, rest) = postcard::take_from_bytes(bytes)
                .map_err(|e| ReceiveError::Malformed(e.to_string()))?;
            *bytes = rest;
            Ok(value)
        }
        // The fields of `TransferState`, in order.
        let b = &mut bytes;
        let peers: Vec<(Tag, SmolStr)> = take(b)?;
        let from = peers.first().map_or(Tag(0), |(t, _)| *t);
        let (table, fresh) = self.peer_table(from, &peers)?;
        let streams = take(b)?;
        let root = take(b)?;
        let root_stamp = take(b)?;
        let count: usize = take(b)?;
        let dec = TableDec {
            table: &table,
            from: from.0,
        };
        // Every object takes at least two bytes: a hostile count cannot
        // reserve more than the input could fill.
        let mut builder = GraphBuilder::new(dec, self.gc.mark, count.min(b.len() / 2));
        for _ in 0..count {
            builder.add(take(b)?)?;
        }
        let members = take(b)?;
        let acks = take(b)?;
        let locks = take(b)?;
        let syncing = take(b)?;
        let log = take(b)?;
        if !b.is_empty() {
            return Err(ReceiveError::Malformed(
                "bytes after the end of the saved state".into(),
            ));
        }
        let state = TransferState {
            peers,
            streams,
            root,
            root_stamp,
            objects: Vec::new(),
            members,
            acks,
            locks,
            syncing,
            log,
        };
        self.commit_transfer(from, &table, fresh, builder.built, state)?;
        Ok(from)
    }

    /// Validates the rest of a transferred state whose objects are `built`
    /// already (its own `objects` are not read), then replaces this
    /// replica's document with it. On error nothing changed.
    fn commit_transfer(
        &mut self,
        from: Tag,
        table: &[PeerIdx],
        fresh: Vec<PeerId>,
        built: Built,
        state: TransferState,
    ) -> Result<(), ReceiveError> {
        let bad = |reason: &str| ReceiveError::invalid(from.0, reason);
        let dec = TableDec {
            table,
            from: from.0,
        };
        let mut graph = Graph {
            root: dec.value(state.root)?,
            root_stamp: state
                .root_stamp
                .map(|s| dec.id(s))
                .transpose()?
                .unwrap_or(Id::ZERO),
            objects: built.objects,
        };
        let garbage = built.garbage;
        // `Ready` promises that every reference reachable from the root
        // resolves; an honest state never holds a dangling one.
        // Objects arrive with the previous mark; marking gives the reachable
        // ones the current one, as a local mark would.
        let (reachable, dangling) = graph.mark_reachable(self.gc.mark);
        let complete = !dangling;
        let unreachable = reachable < graph.objects.len();
        if !complete {
            return Err(bad("a reference to an object the state does not carry"));
        }
        let mut streams: FxHashMap<u32, Stream> = FxHashMap::default();
        for s in state.streams {
            let peer = *table
                .get(s.peer as usize)
                .ok_or_else(|| bad("stream of an unknown peer"))?;
            if s.lamport > MAX_COUNTER || s.next_seq > MAX_COUNTER {
                return Err(bad("stream position out of range"));
            }
            let dict = s
                .dict
                .iter()
                .map(|&d| {
                    table
                        .get(d as usize)
                        .copied()
                        .ok_or_else(|| bad("dictionary entry unknown"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let tag = state.peers[s.peer as usize].0.0;
            if tag == self.me.incarnation() {
                continue;
            }
            streams.insert(
                tag,
                Stream {
                    peer: Some(peer),
                    next_seq: s.next_seq,
                    lamport: s.lamport,
                    dict,
                    ..Stream::default()
                },
            );
        }
        let members: Vec<PeerIdx> = state
            .members
            .iter()
            .map(|&m| {
                table
                    .get(m as usize)
                    .copied()
                    .ok_or_else(|| bad("unknown member"))
            })
            .collect::<Result<_, _>>()?;
        let mut acks = Vec::with_capacity(state.acks.len());
        for (m, ack) in &state.acks {
            let m = *table
                .get(*m as usize)
                .ok_or_else(|| bad("ack of an unknown member"))?;
            acks.push((m, ack.iter().map(|&(t, c)| (t.0, c)).collect::<Vec<_>>()));
        }
        let mut queues = FxHashMap::default();
        let mut last_token = FxHashMap::default();
        for (obj, queue, token) in state.locks {
            if token > MAX_COUNTER
                || queue
                    .iter()
                    .any(|(_, held)| held.is_some_and(|t| t > MAX_COUNTER))
            {
                return Err(bad("fencing token out of range"));
            }
            let obj = dec.id(obj)?;
            let queue = queue
                .into_iter()
                .map(|(s, held)| {
                    Ok(crate::locks::LockReq {
                        stamp: dec.id(s)?,
                        held,
                    })
                })
                .collect::<Result<Vec<_>, ReceiveError>>()?;
            if !queue.is_empty() {
                queues.insert(obj, queue);
            }
            last_token.insert(obj, token);
        }
        let log = match &state.log {
            Some(l) => Some((
                l,
                l.seen
                    .iter()
                    .map(|&(p, t)| {
                        Ok((
                            *table
                                .get(p as usize)
                                .ok_or_else(|| bad("unknown peer in the log state"))?,
                            Duration::from_nanos(t),
                        ))
                    })
                    .collect::<Result<Vec<_>, ReceiveError>>()?,
            )),
            None => None,
        };
        let syncing: Vec<PeerIdx> = state
            .syncing
            .iter()
            .map(|&m| {
                table
                    .get(m as usize)
                    .copied()
                    .ok_or_else(|| bad("unknown syncing member"))
            })
            .collect::<Result<_, _>>()?;
        // Commit.
        for id in fresh {
            self.peers.intern(&id).expect("checked for collisions");
        }
        let max_counter = streams.values().map(|s| s.lamport).max().unwrap_or(0);
        self.clock = self.clock.max(max_counter);
        let old_root = std::mem::replace(&mut self.graph, graph).root;
        self.streams = streams;
        for m in members {
            if m != PeerIdx::SELF && !self.gc.departed.contains(&m) {
                self.gc.members.insert(m);
            }
        }
        for (m, ack) in acks {
            let known = self.gc.acks.entry(m).or_default();
            for (p, c) in ack {
                let e = known.entry(p).or_insert(0);
                *e = (*e).max(c);
            }
        }
        // This replica's own requests were dropped with its state.
        for q in queues.values_mut() {
            q.retain(|r: &crate::locks::LockReq| r.stamp.peer != PeerIdx::SELF);
        }
        queues.retain(|_, q| !q.is_empty());
        // Requests made before this replica joined still need its
        // acknowledgement.
        self.locks.owed = queues
            .iter()
            .flat_map(|(&obj, q)| q.iter().map(move |r| (obj, r.stamp)))
            .collect();
        self.locks.queues = queues;
        self.locks.last_token = last_token;
        self.syncing_peers = syncing
            .into_iter()
            .filter(|&p| p != PeerIdx::SELF)
            .collect();
        if let Some((l, seen)) = log {
            self.log.position = l.position;
            self.log.time = Duration::from_nanos(l.clock);
            self.log.stamp = Duration::from_nanos(l.stamp);
            self.log.last_seen = seen.into_iter().collect();
        }
        self.gc.dirty |= unreachable;
        self.gc.garbage |= garbage;
        self.gc.changed = true;
        let new_root = self.graph.root.clone();
        if !old_root.same(&new_root) && self.record_changes {
            self.events.push_back(Event::RootChanged {
                old: old_root,
                new: new_root,
                origin: Origin::Remote(self.peers.get(table[0]).clone()),
            });
        }
        Ok(())
    }

    /// Drops the local document and asks the peers for theirs. Writes are
    /// refused until the sync completes ([`Event::Ready`]).
    pub fn sync(&mut self) {
        self.flush_pending_ops();
        // Requests cannot survive the state they were made in: withdraw
        // them, so that nobody waits for this replica.
        let mine: Vec<Id> = self.locks.mine.keys().copied().collect();
        for obj in mine {
            let _ = self.unlock(ObjectId(obj));
        }
        self.flush_pending_ops();
        self.graph = Graph::default();
        self.pending.clear();
        self.pending_count = 0;
        self.pending_creates.clear();
        self.woken.clear();
        self.streams.clear();
        self.held_bytes = 0;
        self.deferred_fetches.clear();
        self.phase = Phase::Syncing(crate::replica::SyncState {
            offers: Default::default(),
            fetching: None,
            backlog: Vec::new(),
            backlog_bytes: 0,
            request_deadline: self.now + self.config.sync_timeout,
        });
        let hostname = SmolStr::from(self.me.hostname());
        self.send_sequenced(|seq| crate::wire::Body::SyncRequest { seq, hostname });
    }
}

impl Replica {
    /// Starts over as a new incarnation of the same host, then syncs: what
    /// a replica does after its peers evicted it ([`Event::Evicted`]). Object
    /// ids obtained before read through the returned [`Succession`]
    /// ([`ObjectId::after`]).
    pub fn reincarnate(&mut self, incarnation: u32) -> Succession {
        self.flush_pending_ops();
        let me = PeerId::new(self.me.hostname(), incarnation);
        let (peers, succession) = self.successor_peers(&me);
        self.peers = peers;
        self.me = me;
        self.out = crate::replica::Outbox::default();
        // The new incarnation's stream starts afresh.
        self.sent_lamport = 0;
        self.gc = crate::gc::Gc::default();
        self.locks = crate::locks::Locks::default();
        self.phase = Phase::Live;
        self.sync();
        succession
    }

    /// A peer table for a new incarnation `me` taking this replica's place:
    /// every other peer keeps its index, this one's identity comes last.
    fn successor_peers(&self, me: &PeerId) -> (crate::clock::Peers, Succession) {
        let mut peers = crate::clock::Peers::new(me.clone());
        for (_, p) in self.peers.iter().skip(1) {
            let _ = peers.intern(p);
        }
        let previous = match peers.intern(&self.me) {
            Ok(p) | Err(p) => p,
        };
        let succession = Succession {
            boundary: self.clock,
            previous,
        };
        (peers, succession)
    }

    /// A new incarnation `me` to take this replica's place, loaded from a
    /// saved state ([`Replica::export_state`], [`Replica::log_snapshot`]) or
    /// empty, with this replica's settings. Object ids this replica handed
    /// out stay valid through the [`Succession`] ([`ObjectId::after`]), and
    /// the successor's counters continue above this one's.
    ///
    /// # Errors
    /// A [`ReceiveError`] when the bytes are not a valid saved state.
    pub fn successor(
        &self,
        me: PeerId,
        saved: Option<&[u8]>,
    ) -> Result<(Replica, Succession), ReceiveError> {
        let mut r = Replica::new(me.clone(), self.config.clone());
        let (peers, succession) = self.successor_peers(&me);
        r.peers = peers;
        r.clock = self.clock;
        let r = match saved {
            Some(bytes) => Replica::load_exported(r, bytes)?,
            None => r,
        };
        Ok((r, succession))
    }
}

impl Replica {
    /// Saves everything needed to continue this document later: the
    /// document with its metadata, every stream position, lock queues and
    /// acknowledgements. For persistence (the relay keeps one on disk).
    pub fn export_state(&mut self) -> Vec<u8> {
        self.flush_pending_ops();
        codec::encode_plain(&self.transfer_view())
    }

    /// Starts a replica from a state saved with [`Replica::export_state`],
    /// as a new incarnation `me` (the saved replica's identity becomes an
    /// ordinary peer; evict it with [`Replica::evict`] so nobody waits for
    /// it). The replica is ready at once.
    ///
    /// # Errors
    /// A [`ReceiveError`] when the bytes are not a valid saved state.
    pub fn from_exported(
        me: PeerId,
        config: Config,
        bytes: &[u8],
    ) -> Result<Replica, ReceiveError> {
        Replica::load_exported(Replica::new(me, config), bytes)
    }

    fn load_exported(mut r: Replica, bytes: &[u8]) -> Result<Replica, ReceiveError> {
        let from = match bytes.split_first() {
            Some((&codec::VERSION, rest)) => r.load_saved(rest)?,
            Some((&v, _)) => return Err(ReceiveError::UnsupportedVersion(v)),
            None => return Err(ReceiveError::Empty),
        };
        // The saved replica's own requests were dropped with it, unless it
        // saved a snapshot of a shared log and lives on.
        let old = r.peers.by_tag(from.0).filter(|_| !r.is_ordered());
        if let Some(old) = old {
            for q in r.locks.queues.values_mut() {
                q.retain(|req| req.stamp.peer != old);
            }
            r.locks.queues.retain(|_, q| !q.is_empty());
        }
        r.events.clear();
        r.events.push_back(Event::Ready);
        Ok(r)
    }

    /// Declares `peer` gone (its transport reported it lost): its locks are
    /// freed and nobody waits for it, on every replica.
    pub fn evict(&mut self, peer: &PeerId) {
        let Ok(p) = self.peers.intern(peer) else {
            return;
        };
        if p == PeerIdx::SELF || self.gc.departed.contains(&p) {
            return;
        }
        self.flush_pending_ops();
        self.begin();
        let stamp = self.tick();
        self.locks.evicted_at.insert(p, stamp);
        self.out.ops.push(crate::wire::WireOp::Evict {
            peer: Tag(peer.incarnation()),
            hostname: peer.hostname().into(),
        });
        self.depart(p);
        self.commit();
    }
}

/// Objects of a transferred state in the graph's form, and whether they hold
/// tombstones or dead slots to reclaim.
struct Built {
    objects: Objects,
    garbage: bool,
}

/// Builds transferred objects one at a time, as they are decoded.
struct GraphBuilder<'a> {
    dec: TableDec<'a>,
    built: Built,
    /// The previous object's id, for ids left out.
    prev: Option<Id>,
    /// The mark objects arrive with: the previous one, so that marking from
    /// the root tells the reachable ones, as a local mark would.
    mark: u32,
}

impl<'a> GraphBuilder<'a> {
    fn new(dec: TableDec<'a>, mark: u32, capacity: usize) -> Self {
        GraphBuilder {
            dec,
            built: Built {
                objects: Objects::with_capacity_and_hasher(capacity, Default::default()),
                garbage: false,
            },
            prev: None,
            mark: mark.wrapping_sub(1),
        }
    }

    fn add(&mut self, obj: ObjState) -> Result<(), ReceiveError> {
        let bad = |reason: &str| ReceiveError::invalid(self.dec.from, reason);
        let (id, data) = match obj {
            ObjState::Map { id, entries } => {
                let id = next_id(&self.dec, &mut self.prev, id)?;
                let mut map = MapObj::with_capacity(entries.len());
                for (key, value, stamp) in entries {
                    self.built.garbage |= value.is_none();
                    let entry = MapEntry {
                        value: value.map(|v| self.dec.value(v)).transpose()?,
                        stamp: stamp.map_or(Ok(id), |s| self.dec.id(s))?,
                    };
                    if !map.restore(key, entry) {
                        return Err(bad("a map key appears twice"));
                    }
                }
                (id, ObjData::Map(map))
            }
            ObjState::List { id, slots } => {
                let id = next_id(&self.dec, &mut self.prev, id)?;
                let mut out = Vec::with_capacity(slots.len());
                let mut prev = Some(id);
                let mut slot_id = |w| next_id(&self.dec, &mut prev, w);
                for s in slots {
                    let (slot, extra) = match s {
                        SlotState::Home {
                            id,
                            value,
                            deleted,
                            away,
                            extra,
                        } => (
                            Slot {
                                id: slot_id(id)?,
                                kind: SlotKind::Home {
                                    value: self.dec.value(value)?,
                                    deleted,
                                    away,
                                },
                            },
                            extra
                                .map(|(v, p, s)| {
                                    Ok::<_, ReceiveError>(ElemExtra {
                                        value_stamp: self.dec.id(v)?,
                                        pos: self.dec.id(p)?,
                                        pos_stamp: self.dec.id(s)?,
                                    })
                                })
                                .transpose()?,
                        ),
                        SlotState::Live { id, value } => (
                            Slot {
                                id: slot_id(id)?,
                                kind: SlotKind::Home {
                                    value: self.dec.value(value)?,
                                    deleted: false,
                                    away: false,
                                },
                            },
                            None,
                        ),
                        SlotState::Moved { id, elem, live } => (
                            Slot {
                                id: slot_id(id)?,
                                kind: SlotKind::Moved {
                                    elem: self.dec.id(elem)?,
                                    live,
                                },
                            },
                            None,
                        ),
                    };
                    out.push((slot, extra));
                }
                let list =
                    ListObj::from_slots(out).ok_or_else(|| bad("a list slot appears twice"))?;
                if !list.is_consistent() {
                    return Err(bad("inconsistent list state"));
                }
                self.built.garbage |= list.slot_count() > list.len();
                (id, ObjData::List(Box::new(list)))
            }
        };
        let obj = Obj {
            data,
            mark: self.mark,
        };
        if self.built.objects.insert(id, obj).is_some() {
            return Err(bad("an object appears twice"));
        }
        Ok(())
    }
}

/// A replica's objects in id order, serialized as the `objects` of a
/// [`TransferState`] straight from the graph.
pub(crate) struct ObjectsView<'a>(Vec<(Id, &'a Obj)>);

impl Serialize for ObjectsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let enc = TableEnc { index: None };
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        let mut prev = None;
        for &(id, obj) in &self.0 {
            let oid = (!follows(&mut prev, id)).then(|| enc.id(id));
            match &obj.data {
                ObjData::Map(map) => seq.serialize_element(&ObjState::<_, ()>::Map {
                    id: oid,
                    entries: EntriesView { map, id },
                })?,
                ObjData::List(list) => seq.serialize_element(&ObjState::<(), _>::List {
                    id: oid,
                    slots: SlotsView { list, id },
                })?,
            }
        }
        seq.end()
    }
}

/// A map's entries, serialized as those of an [`ObjState::Map`].
struct EntriesView<'a> {
    map: &'a MapObj,
    id: Id,
}

impl Serialize for EntriesView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let enc = TableEnc { index: None };
        let entries = self.map.raw_entries();
        let mut seq = s.serialize_seq(Some(entries.len()))?;
        for (key, e) in entries {
            let value = e.value.as_ref().map(|v| enc.value(v));
            let stamp = (e.stamp != self.id).then(|| enc.id(e.stamp));
            seq.serialize_element(&(key, value, stamp))?;
        }
        seq.end()
    }
}

/// A list's slots, serialized as those of an [`ObjState::List`].
struct SlotsView<'a> {
    list: &'a ListObj,
    id: Id,
}

impl Serialize for SlotsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let enc = TableEnc { index: None };
        let mut seq = s.serialize_seq(Some(self.list.slot_count()))?;
        let mut prev = Some(self.id);
        for (slot, extra) in self.list.slots() {
            let id = (!follows(&mut prev, slot.id)).then(|| enc.id(slot.id));
            let state = match &slot.kind {
                SlotKind::Home {
                    value,
                    deleted: false,
                    away: false,
                } if extra.is_none() => SlotState::Live {
                    id,
                    value: enc.value(value),
                },
                SlotKind::Home {
                    value,
                    deleted,
                    away,
                } => SlotState::Home {
                    id,
                    value: enc.value(value),
                    deleted: *deleted,
                    away: *away,
                    extra: extra
                        .map(|e| (enc.id(e.value_stamp), enc.id(e.pos), enc.id(e.pos_stamp))),
                },
                SlotKind::Moved { elem, live } => SlotState::Moved {
                    id,
                    elem: enc.id(*elem),
                    live: *live,
                },
            };
            seq.serialize_element(&state)?;
        }
        seq.end()
    }
}

/// The variant index of [`Body::SyncAnswer`](crate::wire::Body::SyncAnswer).
const SYNC_ANSWER: u32 = 8;

/// Serializes exactly as a [`Frame`](crate::wire::Frame) holding a
/// [`Body::SyncAnswer`](crate::wire::Body::SyncAnswer), with the state
/// serialized from a view of the graph.
struct AnswerFrame<'a> {
    from: Tag,
    to: Tag,
    state: TransferState<ObjectsView<'a>>,
}

impl Serialize for AnswerFrame<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        struct Answer<'b, 'a>(&'b AnswerFrame<'a>);
        impl Serialize for Answer<'_, '_> {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                let mut v = s.serialize_struct_variant("Body", SYNC_ANSWER, "SyncAnswer", 2)?;
                v.serialize_field("to", &self.0.to)?;
                v.serialize_field("state", &self.0.state)?;
                v.end()
            }
        }
        let mut frame = s.serialize_struct("Frame", 2)?;
        frame.serialize_field("from", &self.from)?;
        frame.serialize_field("body", &Answer(self))?;
        frame.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::WireFormat;
    use crate::value::Input;

    /// A replica whose state has every transferred form: tombstones, entries
    /// stamped apart from their map, moved, deleted and rewritten elements,
    /// and every kind of value.
    fn busy_replica() -> Replica {
        let mut r = Replica::new(PeerId::new("busy", 3), Config::default());
        let root = r
            .set_root(Input::Map(vec![
                ("gone".into(), Input::Value(Value::Int(1))),
                ("f".into(), Input::Value(Value::Float(0.5))),
                ("b".into(), Input::Value(Value::Bytes(vec![1, 2].into()))),
                (
                    "list".into(),
                    Input::Array((0..40).map(|i| Input::Value(Value::Int(i))).collect()),
                ),
            ]))
            .unwrap()
            .unwrap();
        r.map_delete(root, "gone").unwrap();
        r.map_set(
            root,
            "later",
            Input::Value(Value::Str("a string longer than inline".into())),
        )
        .unwrap();
        let Some(Value::Ref(list)) = r.map_get(root, "list").unwrap() else {
            panic!("a list");
        };
        r.list_splice(list, 5, 3, vec![Input::Map(vec![])]).unwrap();
        r.list_set(list, 10, Input::Value(Value::Null)).unwrap();
        let mut order: Vec<usize> = (0..r.list_len(list).unwrap()).collect();
        order.swap(0, 20);
        order.rotate_left(3);
        r.list_reorder(list, &order).unwrap();
        r.list_reorder(list, &order).unwrap();
        r
    }

    #[test]
    fn a_sync_answer_encodes_as_the_derived_frame() {
        for format in [WireFormat::Binary, WireFormat::Json] {
            let mut r = busy_replica();
            let answer = AnswerFrame {
                from: r.tag(),
                to: Tag(7),
                state: r.transfer_view(),
            };
            let bytes = codec::encode(&answer, format);
            let frame = codec::decode(&bytes, usize::MAX).expect("an answer decodes");
            assert!(matches!(
                frame.body,
                crate::wire::Body::SyncAnswer { to: Tag(7), .. }
            ));
            assert_eq!(codec::encode(&frame, format), bytes, "{format:?}");
        }
    }

    #[test]
    fn a_saved_state_loads_as_its_decoded_form_does() {
        let mut r = busy_replica();
        let saved = r.export_state();
        let me = || PeerId::new("joiner", 9);
        let mut streamed = Replica::from_exported(me(), Config::default(), &saved).unwrap();
        let state: TransferState = postcard::from_bytes(&saved[1..]).unwrap();
        let mut decoded = Replica::new(me(), Config::default());
        decoded.load_transfer(state.peers[0].0, state).unwrap();
        assert_eq!(streamed.export_state(), decoded.export_state());
        assert_eq!(streamed.snapshot(), r.snapshot());
    }

    #[test]
    fn a_cut_or_padded_saved_state_is_refused() {
        let saved = busy_replica().export_state();
        let load =
            |bytes: &[u8]| Replica::from_exported(PeerId::new("j", 9), Config::default(), bytes);
        for cut in 0..saved.len() {
            assert!(load(&saved[..cut]).is_err(), "cut at {cut}");
        }
        let mut padded = saved.clone();
        padded.push(0);
        assert!(matches!(load(&padded), Err(ReceiveError::Malformed(_))));
    }
}
