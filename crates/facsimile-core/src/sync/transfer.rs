//! The state a joiner continues from, as it travels: encoded straight from
//! the graph (a large document is never copied into wire types first), and
//! validated whole before any of it is used, so a refused state changes
//! nothing.

use std::cell::Cell;
use std::time::Duration;

use rustc_hash::FxHashMap;
use serde::ser::SerializeSeq;
use serde::{Serialize, Serializer};
use smol_str::SmolStr;

use crate::clock::Peers;
use crate::error::ReceiveError;
use crate::gc::{Gc, sorted_ack};
use crate::graph::list::{ElemExtra, ListObj, Slot, SlotKind};
use crate::graph::map::{MapEntry, MapObj};
use crate::graph::{Graph, IdMap, Obj, ObjData, Objects};
use crate::locks::{LoadedLog, LoadedTokens, LockReq, Locks, Unheard};
use crate::membership::Membership;
use crate::op::MAX_COUNTER;
use crate::outbox::Outbox;
use crate::streams::{Stream, Streams};
use crate::sync::{SyncServer, SyncWait, saved};
use crate::value::{Id, PeerId, PeerIdx, Value};
use crate::wire::{
    Hostname, ObjState, SlotState, StreamState, Tag, TransferState, WireId, WireValue,
};

/// A local id as the sender's own table names it (its peer by index).
fn own_id(id: Id) -> WireId {
    WireId {
        p: id.peer.0,
        c: id.counter,
    }
}

fn own_value(v: &Value) -> WireValue {
    WireValue::from_value(v, own_id)
}

/// What a state transfer is made of: the parts of the replica it reads.
pub(crate) struct Source<'a> {
    pub(crate) peers: &'a Peers,
    pub(crate) streams: &'a Streams,
    pub(crate) outbox: &'a Outbox,
    /// With its maps sorted.
    pub(crate) graph: &'a Graph,
    pub(crate) members: &'a Membership,
    pub(crate) gc: &'a Gc,
    pub(crate) locks: &'a Locks,
    pub(crate) serve: &'a SyncServer,
}

/// Everything a joiner needs to continue from a replica's state, as a view
/// that serializes straight from the graph.
pub(crate) fn view(src: Source<'_>) -> TransferState<ObjectsView<'_>> {
    let table: Vec<(Tag, Hostname)> = src
        .peers
        .iter()
        .map(|(_, p)| (Tag(p.incarnation()), Hostname::of(p)))
        .collect();
    let mut streams: Vec<StreamState> = src
        .streams
        .iter()
        .filter_map(|(_, s)| {
            Some(StreamState {
                peer: s.peer?.0,
                next_seq: s.next_seq,
                lamport: s.lamport,
                dict: s.dict.iter().map(|p| p.0).collect(),
            })
        })
        .collect();
    // This replica's own stream, as a receiver of it stands now.
    streams.push(StreamState {
        peer: PeerIdx::SELF.0,
        next_seq: src.outbox.seq() + 1,
        lamport: src.outbox.sent_lamport(),
        dict: src.outbox.dictionary().iter().map(|p| p.0).collect(),
    });
    streams.sort_by_key(|s| s.peer);
    let objects = src.graph.objects.in_id_order();
    let mut members: Vec<u32> = src.members.iter().map(|p| p.0).collect();
    members.push(PeerIdx::SELF.0);
    members.sort();
    let mut departed: Vec<u32> = src.members.departed().map(|p| p.0).collect();
    departed.sort();
    let own: FxHashMap<u32, u64> = crate::gc::frontier(src.streams, src.outbox.sent_lamport())
        .into_iter()
        .map(|(p, c)| (src.peers.tag(p), c))
        .collect();
    let mut acks: Vec<(u32, Vec<(Tag, u64)>)> = src.gc.acks().map(|(m, a)| (m.0, a)).collect();
    acks.push((PeerIdx::SELF.0, sorted_ack(&own)));
    acks.sort();
    let (locks, unheard, log) = src.locks.transfer(own_id);
    TransferState {
        peers: table,
        streams,
        root: own_value(&src.graph.root),
        root_stamp: (src.graph.root_stamp.counter > 0).then(|| own_id(src.graph.root_stamp)),
        objects: ObjectsView(objects),
        members,
        acks,
        locks,
        syncing: src.serve.syncing().map(|p| p.0).collect(),
        log,
        departed,
        unheard,
        waits: src
            .serve
            .waits(src.peers)
            .into_iter()
            .map(|w| {
                let indices = |ps: Vec<PeerIdx>| ps.into_iter().map(|p| p.0).collect();
                (w.joiner.0, w.wait.map(indices), indices(w.offered))
            })
            .collect(),
    }
}

/// A transferred state, validated, in this replica's terms: ready to
/// commit. Peers not known here yet (`fresh`) take the next indices of the
/// peer table, in order, when it is committed.
pub(crate) struct Transferred {
    /// The sender.
    pub(crate) from: Tag,
    /// Its index (the origin of the changes the transfer makes).
    pub(crate) origin: PeerIdx,
    pub(crate) fresh: Vec<PeerId>,
    pub(crate) graph: Graph,
    /// Whether some object is unreachable.
    pub(crate) unreachable: bool,
    /// Whether there are tombstones or dead slots to reclaim.
    pub(crate) garbage: bool,
    pub(crate) streams: FxHashMap<u32, Stream>,
    /// The highest counter the streams cover, or an id of ours holds.
    pub(crate) max_counter: u64,
    pub(crate) members: Vec<PeerIdx>,
    pub(crate) acks: Vec<(PeerIdx, Vec<(u32, u64)>)>,
    pub(crate) queues: IdMap<Vec<LockReq>>,
    /// The highest fencing token known per object, and the departed
    /// requesters the next grant must pass.
    pub(crate) last_token: LoadedTokens,
    pub(crate) log: Option<LoadedLog>,
    pub(crate) syncing: Vec<PeerIdx>,
    /// What the sender kept of syncing members' syncs.
    pub(crate) waits: Vec<SyncWait>,
    pub(crate) departed: Vec<PeerIdx>,
}

/// The replica this state is loaded into, as far as validation needs it.
pub(crate) struct Target<'a> {
    pub(crate) peers: &'a Peers,
    /// Its own tag: its stream in the state is not followed.
    pub(crate) me: Tag,
    /// Its current reclamation mark.
    pub(crate) mark: u32,
}

/// Validates a state received in a sync answer from `from`.
pub(crate) fn decode_answer(
    from: Tag,
    mut state: TransferState,
    target: &Target<'_>,
) -> Result<Transferred, ReceiveError> {
    let (table, fresh) = peer_table(target.peers, from, &state.peers)?;
    let objects = std::mem::take(&mut state.objects);
    let dec = TableDec::new(&table, from.0);
    let mut builder = GraphBuilder::new(dec, target.mark, objects.len());
    for obj in objects {
        builder.add(obj)?;
    }
    let built = builder.finish();
    validate(from, &table, fresh, built, state, target)
}

/// Validates a saved state (`Replica::export_state`'s bytes) in any
/// format this build reads: 1 (postcard throughout) to [`saved::VERSION`].
pub(crate) fn decode_saved_bytes(
    bytes: &[u8],
    target: &Target<'_>,
) -> Result<Transferred, ReceiveError> {
    match bytes.split_first() {
        Some((&v, rest)) if (crate::codec::VERSION..=saved::VERSION).contains(&v) => {
            decode_saved(v, rest, target)
        }
        Some((&v, _)) => Err(ReceiveError::UnsupportedVersion(v)),
        None => Err(ReceiveError::Empty),
    }
}

/// The incarnation tags of every peer in a saved state's table, read
/// without the rest of it.
pub(crate) fn saved_tags(bytes: &[u8]) -> Result<Vec<u32>, ReceiveError> {
    match bytes.split_first() {
        Some((&v, rest)) if (crate::codec::VERSION..=saved::VERSION).contains(&v) => {
            // The peer table comes first in every format.
            let (peers, _): (Vec<(Tag, Hostname)>, _) = postcard::take_from_bytes(rest)
                .map_err(|e| ReceiveError::Malformed(e.to_string()))?;
            Ok(peers.into_iter().map(|(tag, _)| tag.0).collect())
        }
        Some((&v, _)) => Err(ReceiveError::UnsupportedVersion(v)),
        None => Err(ReceiveError::Empty),
    }
}

/// Validates a state received from `from` as a saved state
/// ([`crate::wire::Directed::SyncSaved`]), which `from` itself must have
/// made.
pub(crate) fn decode_saved_answer(
    from: Tag,
    bytes: &[u8],
    target: &Target<'_>,
) -> Result<Transferred, ReceiveError> {
    let t = decode_saved_bytes(bytes, target)?;
    if t.from != from {
        return Err(ReceiveError::Malformed(
            "a sync answer saved by another peer than its sender".into(),
        ));
    }
    Ok(t)
}

/// Saves a replica's state: the version byte [`saved::VERSION`], the
/// fields of [`TransferState`] in postcard, except the objects, written by
/// [`saved::write_objects`].
pub(crate) fn export(src: Source<'_>) -> Vec<u8> {
    let state = view(src);
    let out = export_with(saved::VERSION, &state, |objects, out| {
        saved::write_objects(&objects.0, out)
    });
    let out = put(out, &state.departed);
    let out = put(out, &state.unheard);
    put(out, &state.waits)
}

/// [`export`] in the first format (version byte 1): postcard throughout,
/// and no departed peers.
#[cfg(test)]
pub(crate) fn export_first_format(src: Source<'_>) -> Vec<u8> {
    let state = view(src);
    export_with(crate::codec::VERSION, &state, |objects, out| {
        *out = put(std::mem::take(out), objects)
    })
}

/// The version byte and the fields of `state` in order up to its log,
/// the objects written by `objects`.
fn export_with(
    version: u8,
    state: &TransferState<ObjectsView<'_>>,
    objects: impl FnOnce(&ObjectsView<'_>, &mut Vec<u8>),
) -> Vec<u8> {
    let mut out = vec![version];
    out = put(out, &state.peers);
    out = put(out, &state.streams);
    out = put(out, &state.root);
    out = put(out, &state.root_stamp);
    objects(&state.objects, &mut out);
    out = put(out, &state.members);
    out = put(out, &state.acks);
    out = put(out, &state.locks);
    out = put(out, &state.syncing);
    put(out, &state.log)
}

fn put<T: Serialize>(out: Vec<u8>, value: &T) -> Vec<u8> {
    postcard::to_extend(value, out).expect("encoding into a Vec cannot fail")
}

/// Validates a state saved by `export_state` (after its version byte,
/// `version`: 1 for the first format, postcard throughout; 2 with the
/// objects in [`saved`]'s format; 3 adds the departed peers, 5 the
/// unheard departed lock requesters, 6 the syncing members' waits),
/// building each object as soon as it
/// is decoded instead of decoding the whole state first.
fn decode_saved(
    version: u8,
    mut bytes: &[u8],
    target: &Target<'_>,
) -> Result<Transferred, ReceiveError> {
    fn take<'b, T: serde::Deserialize<'b>>(bytes: &mut &'b [u8]) -> Result<T, ReceiveError> {
        let (value, rest) =
            postcard::take_from_bytes(bytes).map_err(|e| ReceiveError::Malformed(e.to_string()))?;
        *bytes = rest;
        Ok(value)
    }
    // The fields of `TransferState`, in order.
    let b = &mut bytes;
    let peers: Vec<(Tag, Hostname)> = take(b)?;
    let from = peers.first().map_or(Tag(0), |(t, _)| *t);
    let (table, fresh) = peer_table(target.peers, from, &peers)?;
    let streams = take(b)?;
    let root = take(b)?;
    let root_stamp = take(b)?;
    let dec = TableDec::new(&table, from.0);
    let builder = if version >= 2 {
        let (mut reader, count) = saved::ObjectReader::new(b, version)?;
        // Every object takes at least two bytes: a hostile count cannot
        // reserve more than the input could fill.
        let capacity = usize::try_from(count).map_or(0, |c| c.min(reader.rest().len() / 2));
        let mut builder = GraphBuilder::new(dec, target.mark, capacity);
        for _ in 0..count {
            let spare = builder.add(reader.next_object()?)?;
            reader.recycle(spare);
        }
        *b = reader.rest();
        builder
    } else {
        let count: usize = take(b)?;
        let mut builder = GraphBuilder::new(dec, target.mark, count.min(b.len() / 2));
        for _ in 0..count {
            builder.add(take(b)?)?;
        }
        builder
    };
    let members = take(b)?;
    let acks = take(b)?;
    let locks = take(b)?;
    let syncing = take(b)?;
    let log = take(b)?;
    let departed = if version >= 3 { take(b)? } else { Vec::new() };
    let unheard = if version >= 5 { take(b)? } else { Vec::new() };
    let waits = if version >= 6 { take(b)? } else { Vec::new() };
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
        departed,
        unheard,
        waits,
    };
    let built = builder.finish();
    validate(from, &table, fresh, built, state, target)
}

/// The replica's index for each peer of a transferred table (which must
/// start with `from`), and the peers it does not know yet: they are
/// interned only when the state is committed.
fn peer_table(
    peers: &Peers,
    from: Tag,
    table: &[(Tag, Hostname)],
) -> Result<(Vec<PeerIdx>, Vec<PeerId>), ReceiveError> {
    // The answerer's table starts with the answerer (its own index 0),
    // which is also the origin of the changes the transfer makes.
    if table.first().map(|(tag, _)| *tag) != Some(from) {
        return Err(ReceiveError::invalid(
            from.0,
            "the peer table does not start with the sender",
        ));
    }
    // Intern the table only after checking it cannot collide.
    let mut fresh: Vec<PeerId> = Vec::new();
    for (tag, hostname) in table {
        hostname
            .check()
            .map_err(|reason| ReceiveError::invalid(from.0, reason))?;
        let id = hostname.peer(*tag);
        match peers.by_tag(tag.0) {
            Some(p) if *peers.get(p) != id => {
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
    let mut next = peers.len() as u32;
    let indices = table
        .iter()
        .map(|(tag, _)| {
            peers.by_tag(tag.0).unwrap_or_else(|| {
                next += 1;
                PeerIdx(next - 1)
            })
        })
        .collect();
    Ok((indices, fresh))
}

/// Validates the rest of a transferred state whose objects are `built`
/// already (its own `objects` are not read).
fn validate(
    from: Tag,
    table: &[PeerIdx],
    fresh: Vec<PeerId>,
    built: Built,
    state: TransferState,
    target: &Target<'_>,
) -> Result<Transferred, ReceiveError> {
    let bad = |reason: &str| ReceiveError::invalid(from.0, reason);
    let dec = TableDec::new(table, from.0);
    let own = built.own;
    let lookup = |i: u32, what: &str| table.get(i as usize).copied().ok_or_else(|| bad(what));
    let mut graph = Graph {
        root: dec.value(state.root)?,
        root_stamp: state
            .root_stamp
            .map(|s| dec.id(s))
            .transpose()?
            .unwrap_or(Id::ZERO),
        objects: built.objects,
    };
    // `Ready` promises that every reference reachable from the root
    // resolves; an honest state never holds a dangling one. Objects arrive
    // with the previous mark; marking gives the reachable ones the current
    // one, as a local mark would.
    let (reachable, dangling) = graph.mark_reachable(target.mark);
    if dangling {
        return Err(bad("a reference to an object the state does not carry"));
    }
    let unreachable = reachable < graph.objects.len();
    let mut streams: FxHashMap<u32, Stream> = FxHashMap::default();
    for s in state.streams {
        let peer = lookup(s.peer, "stream of an unknown peer")?;
        if s.lamport > MAX_COUNTER || s.next_seq > MAX_COUNTER {
            return Err(bad("stream position out of range"));
        }
        let dict = s
            .dict
            .iter()
            .map(|&d| lookup(d, "dictionary entry unknown"))
            .collect::<Result<Vec<_>, _>>()?;
        let tag = state.peers[s.peer as usize].0;
        if tag == target.me {
            continue;
        }
        streams.insert(tag.0, Stream::at(peer, s.next_seq, s.lamport, dict));
    }
    let members: Vec<PeerIdx> = state
        .members
        .iter()
        .map(|&m| lookup(m, "unknown member"))
        .collect::<Result<_, _>>()?;
    let mut acks = Vec::with_capacity(state.acks.len());
    for (m, ack) in &state.acks {
        let m = lookup(*m, "ack of an unknown member")?;
        acks.push((m, ack.iter().map(|&(t, c)| (t.0, c)).collect::<Vec<_>>()));
    }
    let mut queues = IdMap::default();
    let mut last_token = IdMap::default();
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
                Ok(LockReq {
                    stamp: dec.id(s)?,
                    held,
                })
            })
            .collect::<Result<Vec<_>, ReceiveError>>()?;
        // A peer has at most one request an object, as receivers hold it
        // to in its messages (`Locks::check_requests`).
        let mut requesters: Vec<PeerIdx> = queue.iter().map(|r| r.stamp.peer).collect();
        requesters.sort_unstable();
        if requesters.windows(2).any(|w| w[0] == w[1]) {
            return Err(bad("two lock requests of one peer on one object"));
        }
        if !queue.is_empty() {
            queues.insert(obj, queue);
        }
        last_token.insert(obj, token);
    }
    let mut unheard = IdMap::default();
    for (obj, count, counter) in state.unheard {
        if count == 0 || count > MAX_COUNTER || counter > MAX_COUNTER {
            return Err(bad("unheard lock requests out of range"));
        }
        unheard.insert(dec.id(obj)?, Unheard { count, counter });
    }
    let last_token = LoadedTokens {
        last: last_token,
        unheard,
    };
    let log = match state.log {
        Some(l) => Some(LoadedLog {
            position: l.position,
            time: Duration::from_nanos(l.clock),
            stamp: Duration::from_nanos(l.stamp),
            seen: l
                .seen
                .iter()
                .map(|&(p, t)| {
                    Ok((
                        lookup(p, "unknown peer in the log state")?,
                        Duration::from_nanos(t),
                    ))
                })
                .collect::<Result<Vec<_>, ReceiveError>>()?,
        }),
        None => None,
    };
    // Over a log a requester loses its locks when its lease runs out: one
    // without a lease would hold for ever. An honest state leases every
    // peer it queues (a request renews its maker's lease, and an expiry
    // drops the requests with it).
    if let Some(l) = &log {
        let leased = |p: PeerIdx| p == PeerIdx::SELF || l.seen.iter().any(|&(s, _)| s == p);
        if !queues.values().flatten().all(|r| leased(r.stamp.peer)) {
            return Err(bad("a lock request of a peer without a lease"));
        }
    }
    let syncing: Vec<PeerIdx> = state
        .syncing
        .iter()
        .map(|&m| lookup(m, "unknown syncing member"))
        .collect::<Result<_, _>>()?;
    let departed: Vec<PeerIdx> = state
        .departed
        .iter()
        .map(|&m| lookup(m, "unknown departed peer"))
        .collect::<Result<_, _>>()?;
    let peers_of = |ps: &[u32], what: &str| -> Result<Vec<PeerIdx>, ReceiveError> {
        ps.iter().map(|&p| lookup(p, what)).collect()
    };
    let waits: Vec<SyncWait> = state
        .waits
        .iter()
        .map(|(joiner, wait, offered)| {
            Ok(SyncWait {
                joiner: lookup(*joiner, "unknown syncing member")?,
                wait: wait
                    .as_deref()
                    .map(|w| peers_of(w, "unknown awaited member"))
                    .transpose()?,
                offered: peers_of(offered, "unknown offering peer")?,
            })
        })
        .collect::<Result<_, ReceiveError>>()?;
    if departed.iter().any(|d| members.contains(d)) {
        return Err(bad("a peer both a member and departed"));
    }
    let max_counter = streams
        .values()
        .map(|s| s.lamport)
        .chain([own, dec.own.get()])
        .max()
        .unwrap_or(0);
    Ok(Transferred {
        from,
        origin: table[0],
        fresh,
        graph,
        unreachable,
        garbage: built.garbage,
        streams,
        max_counter,
        members,
        acks,
        queues,
        last_token,
        log,
        syncing,
        waits,
        departed,
    })
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
        (None, Some(p)) if p.counter < MAX_COUNTER => {
            let id = Id::new(p.peer, p.counter + 1);
            dec.note(id);
            id
        }
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
    /// The highest counter of this replica's own ids met. A state may hold
    /// ids of ours beyond our clock (a forged message a peer took as ours):
    /// our next ids must not repeat them, or two slots share an id.
    own: Cell<u64>,
}

impl<'a> TableDec<'a> {
    fn new(table: &'a [PeerIdx], from: u32) -> Self {
        TableDec {
            table,
            from,
            own: Cell::new(0),
        }
    }

    fn note(&self, id: Id) {
        if id.peer == PeerIdx::SELF {
            self.own.set(self.own.get().max(id.counter));
        }
    }

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
        let id = Id::new(peer, w.c);
        self.note(id);
        Ok(id)
    }

    fn value(&self, w: WireValue) -> Result<Value, ReceiveError> {
        w.into_value(|id| self.id(id))
    }
}

/// Objects of a transferred state in the graph's form, and whether they hold
/// tombstones or dead slots to reclaim.
struct Built {
    objects: Objects,
    garbage: bool,
    /// As [`TableDec::own`].
    own: u64,
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
    /// A list's slots on their way into it, kept for the next list.
    slots: Vec<(Slot, Option<ElemExtra>)>,
}

impl<'a> GraphBuilder<'a> {
    fn new(dec: TableDec<'a>, mark: u32, capacity: usize) -> Self {
        GraphBuilder {
            dec,
            built: Built {
                objects: Objects::with_capacity(capacity),
                garbage: false,
                own: 0,
            },
            prev: None,
            mark: mark.wrapping_sub(1),
            slots: Vec::new(),
        }
    }

    fn finish(mut self) -> Built {
        self.built.own = self.dec.own.get();
        self.built
    }

    /// Builds `obj`; hands back its entries or slots vector, emptied, for
    /// reuse.
    fn add(&mut self, obj: ObjState) -> Result<ObjState, ReceiveError> {
        let bad = |reason: &str| ReceiveError::invalid(self.dec.from, reason);
        let (id, data, spare) = match obj {
            ObjState::Map { id, mut entries } => {
                let id = next_id(&self.dec, &mut self.prev, id)?;
                let mut pairs: Vec<(SmolStr, MapEntry)> = Vec::with_capacity(entries.len());
                // Saved states list keys in order: such a map is built
                // whole, with no lookup per key.
                let mut sorted = true;
                for (key, value, stamp) in entries.drain(..) {
                    self.built.garbage |= value.is_none();
                    let entry = MapEntry {
                        value: value.map(|v| self.dec.value(v)).transpose()?,
                        stamp: stamp.map_or(Ok(id), |s| self.dec.id(s))?,
                    };
                    sorted &= pairs
                        .last()
                        .is_none_or(|(k, _)| k.as_bytes() < key.as_bytes());
                    pairs.push((key, entry));
                }
                let map = if sorted {
                    MapObj::from_sorted(pairs)
                } else {
                    let mut map = MapObj::with_capacity(pairs.len());
                    for (key, entry) in pairs {
                        if !map.restore(key, entry) {
                            return Err(bad("a map key appears twice"));
                        }
                    }
                    map
                };
                (id, ObjData::Map(map), ObjState::Map { id: None, entries })
            }
            ObjState::List { id, mut slots } => {
                let id = next_id(&self.dec, &mut self.prev, id)?;
                let mut out = std::mem::take(&mut self.slots);
                out.clear();
                out.reserve(slots.len());
                let mut prev = Some(id);
                let mut slot_id = |w| next_id(&self.dec, &mut prev, w);
                // Whether every slot is a live element at home with no
                // state of its own (as pushes leave them): such a list is
                // consistent by construction, with nothing to check.
                let mut plain = true;
                for s in slots.drain(..) {
                    plain &= matches!(
                        s,
                        SlotState::Live { .. }
                            | SlotState::Home {
                                deleted: false,
                                away: false,
                                extra: None,
                                ..
                            }
                    );
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
                let list = ListObj::from_slots(out.drain(..));
                self.slots = out;
                let list = list.ok_or_else(|| bad("a list slot appears twice"))?;
                if !plain && !list.is_consistent() {
                    return Err(bad("inconsistent list state"));
                }
                self.built.garbage |= list.slot_count() > list.len();
                (
                    id,
                    ObjData::List(Box::new(list)),
                    ObjState::List { id: None, slots },
                )
            }
        };
        let obj = Obj {
            data,
            mark: self.mark,
        };
        if self.built.objects.insert(id, obj).is_some() {
            return Err(bad("an object appears twice"));
        }
        Ok(spare)
    }
}

/// A replica's objects in id order, serialized as the `objects` of a
/// [`TransferState`] straight from the graph.
pub(crate) struct ObjectsView<'a>(Vec<(Id, &'a Obj)>);

impl Serialize for ObjectsView<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        let mut prev = None;
        for &(id, obj) in &self.0 {
            let oid = (!follows(&mut prev, id)).then(|| own_id(id));
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
        let entries = self.map.raw_entries();
        let mut seq = s.serialize_seq(Some(entries.len()))?;
        for (key, e) in entries {
            let value = e.value.as_ref().map(own_value);
            let stamp = (e.stamp != self.id).then(|| own_id(e.stamp));
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
        let mut seq = s.serialize_seq(Some(self.list.slot_count()))?;
        let mut prev = Some(self.id);
        for (slot, extra) in self.list.slots() {
            let id = (!follows(&mut prev, slot.id)).then(|| own_id(slot.id));
            let state = match &slot.kind {
                SlotKind::Home {
                    value,
                    deleted: false,
                    away: false,
                } if extra.is_none() => SlotState::Live {
                    id,
                    value: own_value(value),
                },
                SlotKind::Home {
                    value,
                    deleted,
                    away,
                } => SlotState::Home {
                    id,
                    value: own_value(value),
                    deleted: *deleted,
                    away: *away,
                    extra: extra
                        .map(|e| (own_id(e.value_stamp), own_id(e.pos), own_id(e.pos_stamp))),
                },
                SlotKind::Moved { elem, live } => SlotState::Moved {
                    id,
                    elem: own_id(*elem),
                    live: *live,
                },
            };
            seq.serialize_element(&state)?;
        }
        seq.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{self, WireFormat};
    use crate::value::Input;
    use crate::{Config, Replica};

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

    /// A replica holding the shapes the benchmark workloads make, written
    /// by two peers: a map of many keys set one by one, keys overwritten, an
    /// array of pushed integers and strings, nested maps and arrays, a graph
    /// of small maps, and the second peer's writes into the first's objects.
    fn workload_replica() -> Replica {
        let mut a = busy_replica();
        let int = |i: i64| Input::Value(Value::Int(i));
        let map = a.set_root(Input::Map(vec![])).unwrap().unwrap();
        for (name, input) in [
            ("map", Input::Map(vec![])),
            ("array", Input::Array(vec![])),
            ("strs", Input::Array(vec![])),
        ] {
            a.map_set(map, name, input).unwrap();
        }
        let get = |r: &Replica, key: &str| {
            let Value::Ref(map) = r.root() else {
                panic!("a root map")
            };
            match r.map_get(map, key).unwrap() {
                Some(Value::Ref(o)) => o,
                other => panic!("{key}: {other:?}"),
            }
        };
        let (m, arr, strs) = (get(&a, "map"), get(&a, "array"), get(&a, "strs"));
        for i in 0..300 {
            a.map_set(m, &format!("k{i}"), int(i)).unwrap();
            a.map_set(m, &format!("hot{}", i % 7), int(-i * 1000))
                .unwrap();
            a.list_splice(arr, i as usize, 0, vec![int(i * 3 - 100)])
                .unwrap();
            a.list_splice(
                strs,
                i as usize,
                0,
                vec![Input::Value(Value::Str(format!("s{i}").into()))],
            )
            .unwrap();
        }
        let nested = (0..20)
            .map(|i| {
                let fields = (0..6).map(|j| match j % 2 {
                    0 => (format!("f{j}").into(), int(i * 100 + j)),
                    _ => (
                        format!("f{j}").into(),
                        Input::Value(Value::Str(format!("v{i}-{j}").into())),
                    ),
                });
                let tags = Input::Array((0..5).map(|k| int(i * 100 + 50 + k)).collect());
                let item = fields.chain([("tags".into(), tags)]).collect();
                (format!("item{i}").into(), Input::Map(item))
            })
            .collect();
        a.map_set(map, "items", Input::Map(nested)).unwrap();
        let graph = (0..30)
            .map(|j| {
                (
                    format!("c{j}").into(),
                    Input::Map(vec![("v".into(), int(j))]),
                )
            })
            .collect();
        a.map_set(map, "graph", Input::Map(graph)).unwrap();
        let mut b = Replica::from_exported(
            PeerId::new("other", 5),
            Config::default(),
            &a.export_state(),
        )
        .unwrap();
        let (m, arr, strs) = (get(&b, "map"), get(&b, "array"), get(&b, "strs"));
        for i in 0..50 {
            b.map_set(
                m,
                &format!("k{}", i * 5),
                Input::Value(Value::Float(i as f64 / 3.0)),
            )
            .unwrap();
            b.list_splice(
                arr,
                (i * 7) as usize,
                1,
                vec![int(i), Input::Value(Value::Null)],
            )
            .unwrap();
        }
        b.map_delete(m, "k1").unwrap();
        b.list_splice(
            strs,
            10,
            0,
            vec![
                Input::Value(Value::Bytes(vec![9, 8].into())),
                Input::Map(vec![]),
            ],
        )
        .unwrap();
        b
    }

    /// A name, a saved state and how to build the replica that saved it.
    type Fixture = (&'static str, &'static [u8], fn() -> Replica);

    /// States saved by the first format (version byte 1), from
    /// `busy_replica` and `workload_replica` before the format changed.
    const V1_FIXTURES: [Fixture; 2] = [
        (
            "busy",
            include_bytes!("../../tests/fixtures/state-v1-busy.bin"),
            busy_replica,
        ),
        (
            "workloads",
            include_bytes!("../../tests/fixtures/state-v1-workloads.bin"),
            workload_replica,
        ),
    ];

    /// States saved by the third format (version byte 3, no shapes), from
    /// the same replicas.
    const V3_FIXTURES: [Fixture; 2] = [
        (
            "busy",
            include_bytes!("../../tests/fixtures/state-v3-busy.bin"),
            busy_replica,
        ),
        (
            "workloads",
            include_bytes!("../../tests/fixtures/state-v3-workloads.bin"),
            workload_replica,
        ),
    ];

    #[test]
    fn a_state_saved_in_an_earlier_format_loads_as_the_current_one() {
        for (version, (name, old, build)) in [(1, V1_FIXTURES), (3, V3_FIXTURES)]
            .into_iter()
            .flat_map(|(v, fixtures)| fixtures.map(|f| (v, f)))
        {
            assert_eq!(old[0], version, "{name}");
            let me = || PeerId::new("joiner", 9);
            let mut fresh = build();
            let mut from_old = Replica::from_exported(me(), Config::default(), old).unwrap();
            let mut from_new =
                Replica::from_exported(me(), Config::default(), &fresh.export_state()).unwrap();
            assert_eq!(from_old.export_state(), from_new.export_state(), "{name}");
            assert_eq!(from_old.snapshot(), fresh.snapshot(), "{name}");
        }
    }

    #[test]
    fn a_saved_state_of_every_form_round_trips() {
        for (name, _, build) in V1_FIXTURES {
            let mut r = build();
            let saved = r.export_state();
            assert_eq!(saved[0], saved::VERSION);
            let first = r.export_state_first_format();
            assert!(
                saved.len() < first.len(),
                "{name}: {} >= {}",
                saved.len(),
                first.len()
            );
            let me = || PeerId::new("joiner", 9);
            let mut loaded = Replica::from_exported(me(), Config::default(), &saved).unwrap();
            let mut loaded_first = Replica::from_exported(me(), Config::default(), &first).unwrap();
            assert_eq!(loaded.snapshot(), r.snapshot(), "{name}");
            assert_eq!(loaded.export_state(), loaded_first.export_state(), "{name}");
        }
    }

    #[test]
    fn a_corrupted_saved_state_is_refused_or_loads_whole() {
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        let saved = workload_replica().export_state();
        let mut rng = SmallRng::seed_from_u64(5);
        let load = |bytes: &[u8], tag| {
            Replica::from_exported(PeerId::new("j", tag), Config::default(), bytes)
        };
        let (mut refused, mut loaded) = (0, 0);
        for _ in 0..3_000 {
            let mut bytes = saved.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(1..bytes.len());
                bytes[i] = rng.random();
            }
            match load(&bytes, 9) {
                Err(_) => refused += 1,
                // What loads saves and loads again to the same document.
                Ok(mut r) => {
                    loaded += 1;
                    let mut again = load(&r.export_state(), 10).expect("a saved state loads");
                    assert!(again.snapshot() == r.snapshot());
                }
            }
        }
        assert!(
            refused > 100 && loaded > 100,
            "{refused} refused, {loaded} loaded"
        );
    }

    #[test]
    fn a_sync_answer_encodes_as_the_derived_frame() {
        for format in [WireFormat::Binary, WireFormat::Json] {
            let mut r = busy_replica();
            let bytes = r.sync_answer(Tag(7), format);
            let frame = codec::decode(&bytes, usize::MAX).expect("an answer decodes");
            assert!(matches!(
                frame.msg,
                crate::wire::Message::Directed {
                    to: Tag(7),
                    body: crate::wire::Directed::SyncAnswer { .. }
                }
            ));
            assert_eq!(codec::encode(&frame, format), bytes, "{format:?}");
        }
    }

    /// A binary joiner's answer is the saved state, a fraction of the wire
    /// types' size, and the joiner ends with the answerer's document.
    #[test]
    fn a_binary_answer_carries_the_saved_state() {
        let mut net = crate::sim::Sim::new(3, 1);
        let int = |i: i64| Input::Value(Value::Int(i));
        let root = net
            .replica(0)
            .set_root(Input::Map(vec![]))
            .unwrap()
            .unwrap();
        for i in 0..200 {
            let child = Input::Map(vec![
                ("n".into(), int(i)),
                ("list".into(), Input::Array(vec![int(i)])),
            ]);
            net.replica(0)
                .map_set(root, &format!("c{i}"), child)
                .unwrap();
        }
        net.run();
        let j = net.add("joiner");
        let jt = net.tag(j);
        net.with(j, Replica::sync);
        let (_, answer) = net
            .run_until(|_, t| t.to == Some(jt) && t.bytes.len() > 1000)
            .expect("an answer");
        let frame = codec::decode(&answer.bytes, usize::MAX).unwrap();
        let crate::wire::Message::Directed {
            body: crate::wire::Directed::SyncSaved { bytes },
            ..
        } = frame.msg
        else {
            panic!("not a saved state");
        };
        let wire_types = net
            .replica(0)
            .sync_answer(Tag(jt), WireFormat::Binary)
            .len();
        assert!(
            bytes.len() * 2 < wire_types,
            "{} bytes against {wire_types}",
            bytes.len()
        );
        net.replica(j).handle_message(&answer.bytes).unwrap();
        net.run();
        net.assert_converged();
    }

    #[test]
    fn a_saved_state_loads_as_its_decoded_form_does() {
        let mut r = busy_replica();
        let saved = r.export_state();
        let me = || PeerId::new("joiner", 9);
        let mut streamed = Replica::from_exported(me(), Config::default(), &saved).unwrap();
        let state = answer_of(&mut r);
        let mut decoded = Replica::new(me(), Config::default());
        decoded.load_answer(state).unwrap();
        assert_eq!(streamed.export_state(), decoded.export_state());
        assert_eq!(streamed.snapshot(), r.snapshot());
    }

    /// A departed requester whose grant may have gone unheard travels with
    /// a saved state, and on from the replica that loads it: the next grant
    /// anywhere it lands must pass it.
    /// `hosts` (`z`, then `y`, then any others) where `z` holds the lock
    /// on the root and `y` waits behind it.
    fn z_holds_y_waits(hosts: &[&str]) -> crate::sim::Sim {
        let hosts = hosts.iter().map(|&h| (h, Config::default()));
        let mut net = crate::sim::Sim::with_hosts(1, hosts);
        net.with(0, |r| r.set_root(Input::Map(vec![])).unwrap());
        net.run();
        for i in 0..2 {
            let o = net.replica(i).root().as_ref_id().unwrap();
            net.with(i, |r| r.lock(o, true)).unwrap();
        }
        net.run();
        net
    }

    /// `r`'s answer to a sync, decoded.
    fn answer_of(r: &mut Replica) -> TransferState {
        let answer = codec::decode(&r.sync_answer(Tag(7), WireFormat::Binary), usize::MAX).unwrap();
        let crate::wire::Message::Directed {
            body: crate::wire::Directed::SyncAnswer { state },
            ..
        } = answer.msg
        else {
            panic!("not a sync answer");
        };
        *state
    }

    #[test]
    fn an_unheard_departed_requester_travels_with_the_state() {
        let mut net = z_holds_y_waits(&["z", "y", "a"]);
        // y waits behind z: a cannot know whether y was granted before it
        // went.
        let y = net.replica(1).peer_id().clone();
        net.replica(2).evict(&y);
        let unheard = |saved: &[u8]| {
            let peers = Peers::new(PeerId::new("reader", 77));
            let target = Target {
                peers: &peers,
                me: Tag(77),
                mark: 0,
            };
            let t = decode_saved_bytes(saved, &target).unwrap();
            t.last_token.unheard.values().copied().collect::<Vec<_>>()
        };
        let saved = net.replica(2).export_state();
        let recorded = unheard(&saved);
        assert_eq!(recorded.len(), 1, "{recorded:?}");
        assert_eq!(recorded[0].count, 1);
        assert!(recorded[0].counter > 0);
        let mut loaded =
            Replica::from_exported(PeerId::new("j", 9), Config::default(), &saved).unwrap();
        assert_eq!(unheard(&loaded.export_state()), recorded);
    }

    /// A state whose lock queue holds two requests of one peer on one
    /// object is refused whole: an honest one never does, and every
    /// receiver refuses a message that would make it so.
    #[test]
    fn a_state_with_two_requests_of_one_peer_on_an_object_is_refused() {
        let mut net = z_holds_y_waits(&["z", "y"]);
        let state = answer_of(net.replica(0));
        let load = |state: TransferState| {
            Replica::new(PeerId::new("joiner", 9), Config::default()).load_answer(state)
        };
        assert!(load(state.clone()).is_ok(), "the state as sent");
        let mut twice = state;
        let queue = &mut twice.locks[0].1;
        assert_eq!(queue.len(), 2, "z holds, y waits");
        let mut again = queue[1];
        again.0.c += 1;
        queue.push(again);
        assert!(matches!(load(twice), Err(ReceiveError::Invalid { .. })));
    }

    /// Over a log, a state that queues a request of a peer it holds no
    /// lease of is refused whole: that request would never lapse.
    #[test]
    fn a_log_state_with_a_request_of_a_peer_without_a_lease_is_refused() {
        fn run(rs: &mut [Replica], entries: &mut Vec<Vec<u8>>, read: &mut [usize]) {
            loop {
                for r in rs.iter_mut() {
                    entries
                        .extend(std::iter::from_fn(|| r.poll_transmit()).map(|t| t.bytes.to_vec()));
                }
                let mut any = false;
                for (r, at) in rs.iter_mut().zip(read.iter_mut()) {
                    while *at < entries.len() {
                        *at += 1;
                        r.handle_ordered(&entries[*at - 1], *at as u64, Duration::from_secs(10))
                            .unwrap();
                        any = true;
                    }
                }
                if !any {
                    return;
                }
            }
        }
        let c = Config::default().ordered(Duration::from_secs(3));
        let mut rs = [
            Replica::new(PeerId::new("z", 1), c.clone()),
            Replica::new(PeerId::new("y", 2), c.clone()),
        ];
        let (mut entries, mut read) = (Vec::new(), [0, 0]);
        run(&mut rs, &mut entries, &mut read);
        rs[0].set_root(Input::Map(vec![])).unwrap();
        run(&mut rs, &mut entries, &mut read);
        for i in 0..2 {
            let o = rs[i].root().as_ref_id().unwrap();
            rs[i].lock(o, true).unwrap();
            run(&mut rs, &mut entries, &mut read);
        }
        let state = answer_of(&mut rs[0]);
        let load =
            |state: TransferState| Replica::new(PeerId::new("j", 9), c.clone()).load_answer(state);
        assert_eq!(state.locks[0].1.len(), 2, "z holds, y waits");
        assert!(load(state.clone()).is_ok(), "the state as sent");
        let mut unleased = state;
        let y = unleased.locks[0].1[1].0.p;
        let log = unleased.log.as_mut().expect("a log state");
        log.seen.retain(|&(p, _)| p != y);
        assert!(matches!(load(unleased), Err(ReceiveError::Invalid { .. })));
    }

    #[test]
    fn a_cut_or_padded_saved_state_is_refused() {
        let load =
            |bytes: &[u8]| Replica::from_exported(PeerId::new("j", 9), Config::default(), bytes);
        for mut r in [busy_replica(), workload_replica()] {
            for saved in [r.export_state(), r.export_state_first_format()] {
                for cut in 0..saved.len() {
                    assert!(load(&saved[..cut]).is_err(), "cut at {cut}");
                }
                let mut padded = saved.clone();
                padded.push(0);
                assert!(matches!(load(&padded), Err(ReceiveError::Malformed(_))));
            }
        }
    }
}
