//! The objects of a saved state (`Replica::export_state`, version byte
//! [`VERSION`]), written and read by hand: the bulk of a saved state, laid
//! out so that what follows from its context costs nothing.
//!
//! Every integer is a varint (7 bits a byte, low first); a signed one is
//! zigzag-encoded first. Ids are a peer (an index into the state's peer
//! table) and a counter. The block is an object count, then each object:
//!
//! - a header byte: bit 0 the kind (0 a map, 1 a list), bits 1–2 how its id
//!   is given ([`ID_NEXT`]: the previous object's plus one; [`ID_DELTA`]:
//!   the previous object's peer, its counter plus a varint; [`ID_FULL`]:
//!   peer and counter); for a map, bit 3 ([`SAME_SHAPE`]) and bit 4
//!   ([`SAME_HEADS`]), below;
//! - a map: its *shape* (its keys, in order), then one *head* byte per entry,
//!   then each entry's payload. The shapes form a dictionary: a map whose keys
//!   are the previous map's sets [`SAME_SHAPE`]; otherwise a varint `s`
//!   names shape `s - 1`, or for 0 defines the next one: a key count, then
//!   each key as the length of the prefix it shares with the previous key,
//!   the length of the rest and the rest. A head holds the value's kind (bits
//!   0–3, [`kind`]) and how the stamp is given (bits 4–5, [`stamp`]); a map
//!   whose heads are those of the last map of its shape sets [`SAME_HEADS`]
//!   and leaves them out, provided its payloads take at least a byte per
//!   entry (so that no map yields more entries than it has bytes). A payload
//!   is the stamp when given, then the value;
//! - a list: its slot count, then groups of slots, each a varint `g`: `g & 3`
//!   is the group's form ([`group`]) and `g >> 2` its length or flags. Most
//!   slots are live elements at home whose id is the previous slot's plus
//!   one; a run of them is one group with its values in one column: integers
//!   as zigzag varints (or the zigzag differences between neighbours,
//!   whichever is shorter), strings as length and bytes (or as prefixes
//!   shared with the previous string, whichever is shorter), anything else
//!   with a kind each.
//!
//! The state carries one integer, one reference and one string from value to
//! value, across objects: an integer or a reference may be given as its
//! difference from the previous one (sequential data, such as pushed
//! counters or the children of a map created one after another, then takes a
//! byte), a string as the length of the prefix it shares with the previous
//! string and the rest. The writer takes whichever form is shorter, so the
//! same state always gives the same bytes.
//!
//! Reading checks every length against the bytes left before reserving
//! anything, and refuses what does not decode with a typed error; ids and
//! values are validated by the builder, as in the first format. A shared
//! prefix may be at most [`MAX_SHARE`] times the bytes that give it, so
//! that keys and strings built from prefixes stay within a multiple of the
//! input.
//!
//! Version 3 (still read) had no shapes: each entry carried its head, key
//! (prefix shared with the previous key of the map), stamp and value in
//! turn; and no string prefixes.

use std::hash::{Hash, Hasher};

use rustc_hash::{FxHashMap, FxHasher};
use smol_str::SmolStr;

use crate::error::ReceiveError;
use crate::graph::list::{ListObj, SlotKind};
use crate::graph::map::MapObj;
use crate::graph::{Obj, ObjData};
use crate::value::{Id, Value};
use crate::wire::{EntryState, ObjState, SlotState, WireId, WireValue};

/// The version byte of a saved state in this format (the first format,
/// postcard throughout, has the wire version 1; version 2 had no departed
/// peers, version 3 no shapes and no string prefixes, version 4 no
/// unheard departed lock requesters, version 5 no syncing members' waits).
pub(crate) const VERSION: u8 = 6;

/// How an object's id is given.
const ID_NEXT: u8 = 0;
const ID_DELTA: u8 = 1;
const ID_FULL: u8 = 2;

/// A map's keys are those of the previous map.
const SAME_SHAPE: u8 = 8;
/// A map's heads are those of the last map of its shape.
const SAME_HEADS: u8 = 16;

/// A shared prefix is at most this many times the bytes that give it.
const MAX_SHARE: usize = 32;

/// A value's kind, with a map entry's tombstone.
mod kind {
    pub(super) const TOMBSTONE: u8 = 0;
    pub(super) const NULL: u8 = 1;
    pub(super) const FALSE: u8 = 2;
    pub(super) const TRUE: u8 = 3;
    pub(super) const INT: u8 = 4;
    /// Zigzag difference from the previous integer.
    pub(super) const INT_DELTA: u8 = 5;
    pub(super) const FLOAT: u8 = 6;
    pub(super) const STR: u8 = 7;
    pub(super) const BYTES: u8 = 8;
    pub(super) const REF: u8 = 9;
    /// The previous reference's peer, zigzag difference of the counter.
    pub(super) const REF_DELTA: u8 = 10;
    /// The length of the prefix shared with the previous string, then the
    /// rest's length and bytes (since version 4).
    pub(super) const STR_PREFIX: u8 = 11;
}

/// How a map entry's stamp is given.
mod stamp {
    /// The map's id.
    pub(super) const MAP: u8 = 0;
    /// The previous entry's stamp plus one (the first entry's previous
    /// stamp is the map's id).
    pub(super) const NEXT: u8 = 1;
    /// The previous stamp's peer, zigzag difference of the counter.
    pub(super) const DELTA: u8 = 2;
    pub(super) const FULL: u8 = 3;
}

/// The form of a group of list slots.
mod group {
    /// A run of `g >> 2` live elements at home, the first id the previous
    /// slot's plus one.
    pub(super) const RUN: u64 = 0;
    /// The same, the first id given in full.
    pub(super) const RUN_AT: u64 = 1;
    /// One element at home; flags [`HOME_ID`], [`DELETED`], [`AWAY`],
    /// [`EXTRA`], then its id when given, its value with a kind, and its
    /// value stamp, position and position stamp in full when given.
    pub(super) const HOME: u64 = 2;
    /// One slot an element moved to; flags [`MOVED_ID`], [`LIVE`], then its
    /// id when given and the element's id in full.
    pub(super) const MOVED: u64 = 3;

    pub(super) const HOME_ID: u64 = 1;
    pub(super) const DELETED: u64 = 2;
    pub(super) const AWAY: u64 = 4;
    pub(super) const EXTRA: u64 = 8;
    pub(super) const MOVED_ID: u64 = 1;
    pub(super) const LIVE: u64 = 2;
}

/// The column of a run's values.
mod column {
    pub(super) const TAGGED: u8 = 0;
    pub(super) const INTS: u8 = 1;
    pub(super) const INT_DELTAS: u8 = 2;
    pub(super) const STRS: u8 = 3;
    /// Each string as the prefix it shares with the previous one and the
    /// rest (since version 4).
    pub(super) const STR_PREFIXES: u8 = 4;
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag(z: u64) -> i64 {
    (z >> 1) as i64 ^ -((z & 1) as i64)
}

/// Bytes of `v` as a varint.
// `(bits + 6) / 7` rather than `div_ceil`: a multiply and a shift, without
// the remainder's test (every value written measures its forms; 3% of an
// export of small values).
#[inline]
#[allow(clippy::manual_div_ceil)]
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize + 6) / 7
}

#[inline]
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn full_id(out: &mut Vec<u8>, id: Id) {
    varint(out, id.peer.0.into());
    varint(out, id.counter);
}

fn bytes(out: &mut Vec<u8>, b: &[u8]) {
    varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Bytes of a string or key of `len` bytes given as `shared` bytes of the
/// previous one and the rest.
#[inline]
fn prefixed_len(shared: usize, len: usize) -> usize {
    varint_len(shared as u64) + varint_len((len - shared) as u64) + len - shared
}

/// Whether a prefix of `shared` bytes may be given by `cost` bytes.
#[inline]
fn share_allowed(shared: usize, cost: usize) -> bool {
    shared <= MAX_SHARE * cost
}

/// How many bytes of `s` to give as shared with `prev`: their common
/// prefix, unless [`MAX_SHARE`] forbids it.
fn shared_prefix(prev: &[u8], s: &[u8]) -> usize {
    let shared = s.iter().zip(prev).take_while(|(a, b)| a == b).count();
    match share_allowed(shared, prefixed_len(shared, s.len())) {
        true => shared,
        false => 0,
    }
}

/// Writes `s` as `shared` bytes of the previous string and the rest.
fn prefixed(out: &mut Vec<u8>, s: &[u8], shared: usize) {
    varint(out, shared as u64);
    bytes(out, &s[shared..]);
}

/// The integer, reference and string values are given relative to.
#[derive(Default)]
struct Context {
    int: i64,
    reference: WireId,
    /// The previous string value's bytes.
    string: Vec<u8>,
}

impl Context {
    /// Writes `v`'s payload into `out` and returns its kind.
    fn value(&mut self, out: &mut Vec<u8>, v: &Value) -> u8 {
        match v {
            Value::Null => kind::NULL,
            Value::Bool(false) => kind::FALSE,
            Value::Bool(true) => kind::TRUE,
            &Value::Int(i) => {
                let plain = zigzag(i);
                let delta = zigzag(i.wrapping_sub(self.int));
                self.int = i;
                if varint_len(delta) < varint_len(plain) {
                    varint(out, delta);
                    kind::INT_DELTA
                } else {
                    varint(out, plain);
                    kind::INT
                }
            }
            Value::Float(f) => {
                out.extend_from_slice(&f.to_le_bytes());
                kind::FLOAT
            }
            Value::Str(s) => {
                let s = s.as_bytes();
                let shared = shared_prefix(&self.string, s);
                let kind = if prefixed_len(shared, s.len()) < varint_len(s.len() as u64) + s.len() {
                    prefixed(out, s, shared);
                    kind::STR_PREFIX
                } else {
                    bytes(out, s);
                    kind::STR
                };
                self.string.clear();
                self.string.extend_from_slice(s);
                kind
            }
            Value::Bytes(b) => {
                bytes(out, b);
                kind::BYTES
            }
            Value::Ref(o) => {
                let w = WireId {
                    p: o.0.peer.0,
                    c: o.0.counter,
                };
                let prev = std::mem::replace(&mut self.reference, w);
                let delta = zigzag(w.c.wrapping_sub(prev.c) as i64);
                if prev.p == w.p && varint_len(delta) < varint_len(w.p.into()) + varint_len(w.c) {
                    varint(out, delta);
                    kind::REF_DELTA
                } else {
                    varint(out, w.p.into());
                    varint(out, w.c);
                    kind::REF
                }
            }
        }
    }
}

/// The most shapes of one hash of keys a writer searches. The hash is
/// unkeyed (snapshots are written on every replica alike and a keyed hash
/// costs more), so keys from the network may be chosen to share it.
const SHAPE_CHAIN: usize = 8;

/// Writes the objects (in id order) into `out`.
pub(crate) fn write_objects(objects: &[(Id, &Obj)], out: &mut Vec<u8>) {
    write_objects_hashed(objects, out, keys_hash);
}

/// [`write_objects`], with the hash that files map shapes.
fn write_objects_hashed(objects: &[(Id, &Obj)], out: &mut Vec<u8>, hash: fn(&MapObj) -> u64) {
    varint(out, objects.len() as u64);
    let mut w = Writer {
        out,
        hash,
        cx: Context::default(),
        run: Vec::new(),
        shapes: Vec::new(),
        by_hash: FxHashMap::default(),
        last_shape: None,
        heads: Vec::new(),
        payload: Vec::new(),
    };
    let mut prev: Option<Id> = None;
    for &(id, obj) in objects {
        let list = matches!(obj.data, ObjData::List(_));
        let mode = match prev {
            Some(p) if p.peer == id.peer && p.counter.wrapping_add(1) == id.counter => ID_NEXT,
            Some(p) if p.peer == id.peer && p.counter < id.counter => ID_DELTA,
            _ => ID_FULL,
        };
        let header = w.out.len();
        w.out.push(u8::from(list) | mode << 1);
        match mode {
            ID_DELTA => varint(w.out, id.counter - prev.map_or(0, |p| p.counter)),
            ID_FULL => full_id(w.out, id),
            _ => {}
        }
        prev = Some(id);
        match &obj.data {
            ObjData::Map(map) => {
                let flags = w.map(id, map);
                w.out[header] |= flags;
            }
            ObjData::List(list) => w.list(id, list),
        }
    }
}

/// A shape the writer has defined: a map holding those keys, the heads of
/// the last map of the shape, and the next shape with the same hash.
struct Shape<'a> {
    map: &'a MapObj,
    heads: Option<Vec<u8>>,
    next: Option<u32>,
}

fn keys_hash(map: &MapObj) -> u64 {
    let mut h = FxHasher::default();
    for (key, _) in map.raw_entries() {
        key.as_str().hash(&mut h);
    }
    h.finish()
}

struct Writer<'a, 'o> {
    out: &'o mut Vec<u8>,
    /// The hash of a map's keys.
    hash: fn(&MapObj) -> u64,
    cx: Context,
    /// The values of the run being written (reused).
    run: Vec<Value>,
    shapes: Vec<Shape<'a>>,
    /// The first shape of each hash of keys.
    by_hash: FxHashMap<u64, u32>,
    /// The previous map's shape.
    last_shape: Option<u32>,
    /// A map's heads and payloads as they are written (reused).
    heads: Vec<u8>,
    payload: Vec<u8>,
}

impl<'a> Writer<'a, '_> {
    /// Writes `map` after its header and returns the header's flags.
    fn map(&mut self, id: Id, map: &'a MapObj) -> u8 {
        let mut flags = 0;
        let shape = match self.last_shape {
            Some(s) if self.shapes[s as usize].map.same_keys(map) => {
                flags |= SAME_SHAPE;
                s
            }
            _ => self.shape(map),
        };
        self.last_shape = Some(shape);
        let n = map.raw_entries().len();
        self.heads.clear();
        self.payload.clear();
        let mut prev_stamp = id;
        for (_, e) in map.raw_entries() {
            let (mode, delta) = if e.stamp == id {
                (stamp::MAP, 0)
            } else if e.stamp.peer == prev_stamp.peer {
                let delta = e.stamp.counter.wrapping_sub(prev_stamp.counter) as i64;
                let full = varint_len(e.stamp.peer.0.into()) + varint_len(e.stamp.counter);
                match delta {
                    1 => (stamp::NEXT, 0),
                    d if varint_len(zigzag(d)) <= full => (stamp::DELTA, d),
                    _ => (stamp::FULL, 0),
                }
            } else {
                (stamp::FULL, 0)
            };
            match mode {
                stamp::DELTA => varint(&mut self.payload, zigzag(delta)),
                stamp::FULL => full_id(&mut self.payload, e.stamp),
                _ => {}
            }
            let kind = match &e.value {
                Some(v) => self.cx.value(&mut self.payload, v),
                None => kind::TOMBSTONE,
            };
            self.heads.push(kind | mode << 4);
            prev_stamp = e.stamp;
        }
        let last = &mut self.shapes[shape as usize].heads;
        if last.as_deref() == Some(&self.heads) && self.payload.len() >= n {
            flags |= SAME_HEADS;
        } else {
            self.out.extend_from_slice(&self.heads);
            last.get_or_insert_default().clone_from(&self.heads);
        }
        self.out.extend_from_slice(&self.payload);
        flags
    }

    /// Names `map`'s shape, defining it first when it is new.
    fn shape(&mut self, map: &'a MapObj) -> u32 {
        let hash = (self.hash)(map);
        let mut at = self.by_hash.get(&hash).copied();
        let mut last = None;
        let mut chain = 0;
        while let Some(s) = at {
            if self.shapes[s as usize].map.same_keys(map) {
                varint(self.out, u64::from(s) + 1);
                return s;
            }
            last = Some(s);
            at = self.shapes[s as usize].next;
            chain += 1;
        }
        let s = self.shapes.len() as u32;
        match last {
            // A full chain is keys picked to collide: the shape is
            // defined but not filed, so that no search grows past it.
            Some(_) if chain >= SHAPE_CHAIN => {}
            Some(l) => self.shapes[l as usize].next = Some(s),
            None => {
                self.by_hash.insert(hash, s);
            }
        }
        self.shapes.push(Shape {
            map,
            heads: None,
            next: None,
        });
        varint(self.out, 0);
        varint(self.out, map.raw_entries().len() as u64);
        let mut prev: &[u8] = &[];
        for (key, _) in map.raw_entries() {
            let key = key.as_bytes();
            prefixed(self.out, key, shared_prefix(prev, key));
            prev = key;
        }
        s
    }

    fn list(&mut self, id: Id, list: &ListObj) {
        varint(self.out, list.slot_count() as u64);
        let mut prev = id;
        // The run being gathered: whether its first id is given, and that id.
        let mut run_start: Option<(bool, Id)> = None;
        let mut run = std::mem::take(&mut self.run);
        for (slot, extra) in list.slots() {
            let follows =
                prev.peer == slot.id.peer && prev.counter.wrapping_add(1) == slot.id.counter;
            prev = slot.id;
            match slot.kind {
                SlotKind::Home {
                    value,
                    deleted: false,
                    away: false,
                } if extra.is_none() => {
                    if run_start.is_some() && follows {
                        run.push(value);
                        continue;
                    }
                    self.flush(run_start, &mut run);
                    run_start = Some((!follows, slot.id));
                    run.push(value);
                }
                SlotKind::Home {
                    value,
                    deleted,
                    away,
                } => {
                    self.flush(run_start.take(), &mut run);
                    let flags = u64::from(!follows) * group::HOME_ID
                        + u64::from(deleted) * group::DELETED
                        + u64::from(away) * group::AWAY
                        + u64::from(extra.is_some()) * group::EXTRA;
                    varint(self.out, flags << 2 | group::HOME);
                    if !follows {
                        full_id(self.out, slot.id);
                    }
                    let at = self.out.len();
                    self.out.push(0);
                    self.out[at] = self.cx.value(self.out, &value);
                    if let Some(e) = extra {
                        for id in [e.value_stamp, e.pos, e.pos_stamp] {
                            full_id(self.out, id);
                        }
                    }
                }
                SlotKind::Moved { elem, live } => {
                    self.flush(run_start.take(), &mut run);
                    let flags =
                        u64::from(!follows) * group::MOVED_ID + u64::from(live) * group::LIVE;
                    varint(self.out, flags << 2 | group::MOVED);
                    if !follows {
                        full_id(self.out, slot.id);
                    }
                    full_id(self.out, elem);
                }
            }
        }
        self.flush(run_start, &mut run);
        self.run = run;
    }

    /// Writes the run of live elements gathered in `run` (emptied).
    fn flush(&mut self, start: Option<(bool, Id)>, run: &mut Vec<Value>) {
        let Some((given, first)) = start else {
            return;
        };
        let form = if given { group::RUN_AT } else { group::RUN };
        varint(self.out, (run.len() as u64) << 2 | form);
        if given {
            full_id(self.out, first);
        }
        // Whether the run is all integers, and the bytes of each form, in
        // one pass.
        let (mut plain, mut deltas, mut last) = (0, 0, self.cx.int);
        let all_ints = run.iter().all(|v| match *v {
            Value::Int(i) => {
                plain += varint_len(zigzag(i));
                deltas += varint_len(zigzag(i.wrapping_sub(std::mem::replace(&mut last, i))));
                true
            }
            _ => false,
        });
        if all_ints {
            let ints = || {
                run.iter().map(|v| match v {
                    Value::Int(i) => *i,
                    _ => 0,
                })
            };
            if deltas < plain {
                self.out.push(column::INT_DELTAS);
                let mut last = self.cx.int;
                for i in ints() {
                    varint(
                        self.out,
                        zigzag(i.wrapping_sub(std::mem::replace(&mut last, i))),
                    );
                }
            } else {
                self.out.push(column::INTS);
                ints().for_each(|i| varint(self.out, zigzag(i)));
            }
            self.cx.int = last;
        } else if run.iter().all(|v| matches!(v, Value::Str(_))) {
            let strs = || {
                run.iter().map(|v| match v {
                    Value::Str(s) => s.as_bytes(),
                    _ => &[],
                })
            };
            let plain: usize = strs().map(|s| varint_len(s.len() as u64) + s.len()).sum();
            let mut prev: &[u8] = &self.cx.string;
            let prefixes: usize = strs()
                .map(|s| prefixed_len(shared_prefix(std::mem::replace(&mut prev, s), s), s.len()))
                .sum();
            if prefixes < plain {
                self.out.push(column::STR_PREFIXES);
                let mut prev: &[u8] = &self.cx.string;
                for s in strs() {
                    prefixed(
                        self.out,
                        s,
                        shared_prefix(std::mem::replace(&mut prev, s), s),
                    );
                }
            } else {
                self.out.push(column::STRS);
                strs().for_each(|s| bytes(self.out, s));
            }
            if let Some(last) = strs().next_back() {
                self.cx.string.clear();
                self.cx.string.extend_from_slice(last);
            }
        } else {
            self.out.push(column::TAGGED);
            for v in run.iter() {
                let at = self.out.len();
                self.out.push(0);
                self.out[at] = self.cx.value(self.out, v);
            }
        }
        run.clear();
    }
}

fn malformed(what: &str) -> ReceiveError {
    ReceiveError::Malformed(format!("saved state: {what}"))
}

/// A shape the reader has met: its keys and the heads of its last map
/// (`None` before its first map).
struct ReadShape {
    keys: Vec<SmolStr>,
    heads: Option<Vec<u8>>,
}

/// Reads the objects block of a saved state, one object at a time.
pub(crate) struct ObjectReader<'b> {
    bytes: &'b [u8],
    /// Since version 4: shapes and string prefixes.
    shapes_on: bool,
    /// Objects left to read.
    left: u64,
    cx: Context,
    prev: Option<WireId>,
    /// The previous key of the map being read (reused).
    key: Vec<u8>,
    shapes: Vec<ReadShape>,
    last_shape: Option<usize>,
    /// The heads of the map being read (reused).
    heads: Vec<u8>,
    /// Key bytes versions 2 and 3 may still take from previous keys: they
    /// had no per-key limit on sharing, so a whole state's is bounded.
    shared_budget: u64,
    /// A map's entries vector handed back by [`ObjectReader::recycle`],
    /// for the next map: a load allocates no vector per map.
    spare: Vec<EntryState>,
    /// The same for a list's slots.
    spare_slots: Vec<SlotState>,
}

/// In versions 2 and 3, the key bytes a state may take from previous keys,
/// per byte of the state (and [`SHARED_FLOOR`] more): far more than honest
/// keys share (a key of 200 bytes differing from the previous one in its
/// last byte shares 66 times the 3 bytes it takes), and hostile keys stay
/// within a multiple of the input instead of its square.
const SHARED_PER_BYTE: u64 = 128;
const SHARED_FLOOR: u64 = 1 << 20;

impl<'b> ObjectReader<'b> {
    /// A reader of the block at the start of `bytes`, saved with version
    /// byte `version` (2 or more), with the object count.
    pub(crate) fn new(bytes: &'b [u8], version: u8) -> Result<(Self, u64), ReceiveError> {
        let mut r = ObjectReader {
            bytes,
            shapes_on: version >= 4,
            left: 0,
            cx: Context::default(),
            prev: None,
            key: Vec::new(),
            shapes: Vec::new(),
            last_shape: None,
            heads: Vec::new(),
            shared_budget: (bytes.len() as u64).saturating_mul(SHARED_PER_BYTE) + SHARED_FLOOR,
            spare: Vec::new(),
            spare_slots: Vec::new(),
        };
        r.left = r.varint()?;
        let count = r.left;
        Ok((r, count))
    }

    /// Takes back the entries (or slots) vector of a map (or list) read
    /// before, to hold the next one's.
    pub(crate) fn recycle(&mut self, obj: ObjState) {
        match obj {
            ObjState::Map { entries, .. } => self.spare = entries,
            ObjState::List { slots, .. } => self.spare_slots = slots,
        }
    }

    /// An empty vector for a map's entries, with room for `n`.
    fn entries_vec(&mut self, n: usize) -> Vec<EntryState> {
        let mut v = std::mem::take(&mut self.spare);
        v.clear();
        v.reserve(n);
        v
    }

    /// The bytes after the block, once every object was read.
    pub(crate) fn rest(&self) -> &'b [u8] {
        self.bytes
    }

    fn byte(&mut self) -> Result<u8, ReceiveError> {
        let (&b, rest) = self
            .bytes
            .split_first()
            .ok_or_else(|| malformed("ends early"))?;
        self.bytes = rest;
        Ok(b)
    }

    fn take(&mut self, n: u64) -> Result<&'b [u8], ReceiveError> {
        if n > self.bytes.len() as u64 {
            return Err(malformed("a length past the end"));
        }
        let (head, rest) = self.bytes.split_at(n as usize);
        self.bytes = rest;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u64, ReceiveError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            if shift == 63 && b > 1 {
                break;
            }
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(malformed("a varint overflows"))
    }

    fn u32(&mut self) -> Result<u32, ReceiveError> {
        u32::try_from(self.varint()?).map_err(|_| malformed("a peer index overflows"))
    }

    fn full_id(&mut self) -> Result<WireId, ReceiveError> {
        Ok(WireId {
            p: self.u32()?,
            c: self.varint()?,
        })
    }

    /// A count of items taking at least one byte each: never more than the
    /// bytes left, so that reserving room for them is bounded by the input.
    fn count(&mut self) -> Result<usize, ReceiveError> {
        let n = self.varint()?;
        if n > self.bytes.len() as u64 {
            return Err(malformed("a count past the end"));
        }
        Ok(n as usize)
    }

    /// Room reserved for `n` items before reading them: what a hostile
    /// count can make the reader allocate up front stays small.
    fn reserve(n: usize) -> usize {
        n.min(1 << 16)
    }

    /// Reads a prefix shared with `buf` and the rest into `buf`, which then
    /// holds the whole string.
    fn prefixed(&mut self, buf: &mut Vec<u8>) -> Result<(), ReceiveError> {
        let shared = self.varint()?;
        if shared > buf.len() as u64 {
            return Err(malformed("a prefix longer than the previous string"));
        }
        let rest = self.varint()?;
        let rest = self.take(rest)?;
        let shared = shared as usize;
        if !share_allowed(shared, prefixed_len(shared, shared + rest.len())) {
            return Err(malformed("a prefix longer than its bytes allow"));
        }
        buf.truncate(shared);
        buf.extend_from_slice(rest);
        Ok(())
    }

    fn str(bytes: &[u8]) -> Result<SmolStr, ReceiveError> {
        std::str::from_utf8(bytes)
            .map(SmolStr::new)
            .map_err(|_| malformed("a string is not UTF-8"))
    }

    /// A string value given whole (`prefix` false) or by prefix.
    fn string(&mut self, prefix: bool) -> Result<WireValue, ReceiveError> {
        let mut buf = std::mem::take(&mut self.cx.string);
        let read = match prefix {
            true => self.prefixed(&mut buf),
            false => self.varint().and_then(|n| {
                buf.clear();
                buf.extend_from_slice(self.take(n)?);
                Ok(())
            }),
        };
        let s = read.and_then(|()| Self::str(&buf));
        self.cx.string = buf;
        s.map(WireValue::Str)
    }

    fn value(&mut self, kind: u8) -> Result<WireValue, ReceiveError> {
        Ok(match kind {
            kind::NULL => WireValue::Null,
            kind::FALSE => WireValue::Bool(false),
            kind::TRUE => WireValue::Bool(true),
            kind::INT | kind::INT_DELTA => {
                let z = unzigzag(self.varint()?);
                let i = match kind {
                    kind::INT => z,
                    _ => self.cx.int.wrapping_add(z),
                };
                self.cx.int = i;
                WireValue::Int(i)
            }
            kind::FLOAT => {
                let b = self.take(8)?;
                let mut f = [0; 8];
                f.copy_from_slice(b);
                WireValue::Float(f64::from_le_bytes(f))
            }
            kind::STR => self.string(false)?,
            kind::STR_PREFIX if self.shapes_on => self.string(true)?,
            kind::BYTES => {
                let n = self.varint()?;
                WireValue::Bytes(self.take(n)?.to_vec())
            }
            kind::REF => {
                let w = self.full_id()?;
                self.cx.reference = w;
                WireValue::Ref(w)
            }
            kind::REF_DELTA => {
                let d = unzigzag(self.varint()?);
                let prev = self.cx.reference;
                let w = WireId {
                    p: prev.p,
                    c: prev.c.wrapping_add(d as u64),
                };
                self.cx.reference = w;
                WireValue::Ref(w)
            }
            _ => return Err(malformed("an unknown value kind")),
        })
    }

    /// The next object; its id is `None` when it is the previous one's plus
    /// one.
    pub(crate) fn next_object(&mut self) -> Result<ObjState, ReceiveError> {
        if self.left == 0 {
            return Err(malformed("more objects read than counted"));
        }
        self.left -= 1;
        let h = self.byte()?;
        let flags = match self.shapes_on && h & 1 == 0 {
            true => h >> 5,
            false => h >> 3,
        };
        if flags != 0 {
            return Err(malformed("an unknown object header"));
        }
        let (id, given) = match ((h >> 1) & 3, self.prev) {
            (ID_NEXT, Some(p)) => (
                WireId {
                    p: p.p,
                    c: p.c.wrapping_add(1),
                },
                None,
            ),
            (ID_DELTA, Some(p)) => {
                let w = WireId {
                    p: p.p,
                    c: p.c.wrapping_add(self.varint()?),
                };
                (w, Some(w))
            }
            (ID_FULL, _) => {
                let w = self.full_id()?;
                (w, Some(w))
            }
            _ => return Err(malformed("an object id that follows nothing")),
        };
        self.prev = Some(id);
        Ok(match h & 1 {
            0 if self.shapes_on => ObjState::Map {
                id: given,
                entries: self.shaped_entries(id, h)?,
            },
            0 => ObjState::Map {
                id: given,
                entries: self.entries(id)?,
            },
            _ => ObjState::List {
                id: given,
                slots: self.slots()?,
            },
        })
    }

    /// The stamp of an entry given in `mode`.
    fn stamp(&mut self, mode: u8, map: WireId, prev: WireId) -> Result<WireId, ReceiveError> {
        Ok(match mode {
            stamp::MAP => map,
            stamp::NEXT => WireId {
                p: prev.p,
                c: prev.c.wrapping_add(1),
            },
            stamp::DELTA => WireId {
                p: prev.p,
                c: prev.c.wrapping_add(unzigzag(self.varint()?) as u64),
            },
            stamp::FULL => self.full_id()?,
            _ => return Err(malformed("an unknown stamp form")),
        })
    }

    /// A map's entries in version 4: its shape, its heads, its payloads.
    fn shaped_entries(&mut self, map: WireId, h: u8) -> Result<Vec<EntryState>, ReceiveError> {
        let shape = match h & SAME_SHAPE {
            0 => match self.varint()? {
                0 => self.define_shape()?,
                s => match usize::try_from(s - 1) {
                    Ok(s) if s < self.shapes.len() => s,
                    _ => return Err(malformed("an unknown shape")),
                },
            },
            _ => self
                .last_shape
                .ok_or_else(|| malformed("a map's shape follows no map"))?,
        };
        self.last_shape = Some(shape);
        let n = self.shapes[shape].keys.len();
        let mut heads = std::mem::take(&mut self.heads);
        heads.clear();
        match (h & SAME_HEADS, &self.shapes[shape].heads) {
            (0, _) => heads.extend_from_slice(self.take(n as u64)?),
            (_, Some(last)) => heads.extend_from_slice(last),
            (_, None) => return Err(malformed("a map's heads follow no map of its shape")),
        }
        let start = self.bytes.len();
        let mut entries = self.entries_vec(n);
        let mut prev_stamp = map;
        for (i, &head) in heads.iter().enumerate() {
            let (value_kind, mode) = (head & 0xf, head >> 4);
            let stamp = self.stamp(mode, map, prev_stamp)?;
            prev_stamp = stamp;
            let value = match value_kind {
                kind::TOMBSTONE => None,
                k => Some(self.value(k)?),
            };
            let key = self.shapes[shape].keys[i].clone();
            entries.push((key, value, (mode != stamp::MAP).then_some(stamp)));
        }
        if h & SAME_HEADS != 0 && start - self.bytes.len() < n {
            return Err(malformed("a map of known heads shorter than its entries"));
        }
        let last = self.shapes[shape].heads.get_or_insert_default();
        last.clear();
        last.extend_from_slice(&heads);
        self.heads = heads;
        Ok(entries)
    }

    /// Reads the definition of the next shape; returns its index.
    fn define_shape(&mut self) -> Result<usize, ReceiveError> {
        let n = self.count()?;
        let mut keys = Vec::with_capacity(Self::reserve(n));
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        for _ in 0..n {
            if let Err(e) = self.prefixed(&mut key) {
                self.key = key;
                return Err(e);
            }
            match Self::str(&key) {
                Ok(k) => keys.push(k),
                Err(_) => return Err(malformed("a key is not UTF-8")),
            }
        }
        self.key = key;
        self.shapes.push(ReadShape { keys, heads: None });
        Ok(self.shapes.len() - 1)
    }

    /// A map's entries in versions 2 and 3: each with its head, key, stamp
    /// and value.
    fn entries(&mut self, map: WireId) -> Result<Vec<EntryState>, ReceiveError> {
        let n = self.count()?;
        let mut entries = self.entries_vec(Self::reserve(n));
        let mut prev_stamp = map;
        self.key.clear();
        for _ in 0..n {
            let h = self.byte()?;
            let (value_kind, mode) = (h & 0xf, h >> 4);
            let shared = self.varint()?;
            if shared > self.key.len() as u64 {
                return Err(malformed("a key shares more than the previous key"));
            }
            self.shared_budget = self
                .shared_budget
                .checked_sub(shared)
                .ok_or_else(|| malformed("keys share more than the state's size allows"))?;
            self.key.truncate(shared as usize);
            let rest = self.varint()?;
            let rest = self.take(rest)?;
            self.key.extend_from_slice(rest);
            let key = std::str::from_utf8(&self.key)
                .map(SmolStr::new)
                .map_err(|_| malformed("a key is not UTF-8"))?;
            let stamp = self.stamp(mode, map, prev_stamp)?;
            prev_stamp = stamp;
            let value = match value_kind {
                kind::TOMBSTONE => None,
                k => Some(self.value(k)?),
            };
            entries.push((key, value, (mode != stamp::MAP).then_some(stamp)));
        }
        Ok(entries)
    }

    fn slots(&mut self) -> Result<Vec<SlotState>, ReceiveError> {
        let n = self.count()?;
        let mut slots = std::mem::take(&mut self.spare_slots);
        slots.clear();
        slots.reserve(Self::reserve(n));
        while slots.len() < n {
            let g = self.varint()?;
            let (form, arg) = (g & 3, g >> 2);
            match form {
                group::RUN | group::RUN_AT => {
                    if arg == 0 || arg > (n - slots.len()) as u64 {
                        return Err(malformed("a run of slots past the list's count"));
                    }
                    let first = match form {
                        group::RUN_AT => Some(self.full_id()?),
                        _ => None,
                    };
                    self.run(arg as usize, first, &mut slots)?;
                }
                group::HOME => {
                    if arg >> 4 != 0 {
                        return Err(malformed("unknown slot flags"));
                    }
                    let id = match arg & group::HOME_ID {
                        0 => None,
                        _ => Some(self.full_id()?),
                    };
                    let k = self.byte()?;
                    if k == kind::TOMBSTONE {
                        return Err(malformed("a list element without a value"));
                    }
                    let value = self.value(k)?;
                    let extra = match arg & group::EXTRA {
                        0 => None,
                        _ => Some((self.full_id()?, self.full_id()?, self.full_id()?)),
                    };
                    slots.push(SlotState::Home {
                        id,
                        value,
                        deleted: arg & group::DELETED != 0,
                        away: arg & group::AWAY != 0,
                        extra,
                    });
                }
                _ => {
                    if arg >> 2 != 0 {
                        return Err(malformed("unknown slot flags"));
                    }
                    let id = match arg & group::MOVED_ID {
                        0 => None,
                        _ => Some(self.full_id()?),
                    };
                    slots.push(SlotState::Moved {
                        id,
                        elem: self.full_id()?,
                        live: arg & group::LIVE != 0,
                    });
                }
            }
        }
        Ok(slots)
    }

    /// Reads a run of `len` live elements into `slots`.
    fn run(
        &mut self,
        len: usize,
        first: Option<WireId>,
        slots: &mut Vec<SlotState>,
    ) -> Result<(), ReceiveError> {
        let mut id = first;
        let mut live = |value| {
            slots.push(SlotState::Live {
                id: id.take(),
                value,
            })
        };
        match self.byte()? {
            column::TAGGED => {
                for _ in 0..len {
                    let k = self.byte()?;
                    if k == kind::TOMBSTONE {
                        return Err(malformed("a list element without a value"));
                    }
                    live(self.value(k)?);
                }
            }
            column::INTS => {
                for _ in 0..len {
                    let i = unzigzag(self.varint()?);
                    self.cx.int = i;
                    live(WireValue::Int(i));
                }
            }
            column::INT_DELTAS => {
                for _ in 0..len {
                    let i = self.cx.int.wrapping_add(unzigzag(self.varint()?));
                    self.cx.int = i;
                    live(WireValue::Int(i));
                }
            }
            column::STRS => {
                for _ in 0..len {
                    live(self.string(false)?);
                }
            }
            column::STR_PREFIXES if self.shapes_on => {
                for _ in 0..len {
                    live(self.string(true)?);
                }
            }
            _ => return Err(malformed("an unknown column")),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> Result<Vec<ObjState>, ReceiveError> {
        let (mut r, count) = ObjectReader::new(bytes, 3)?;
        (0..count).map(|_| r.next_object()).collect()
    }

    fn v(x: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(&mut out, x);
        out
    }

    #[test]
    fn varints_and_zigzag_round_trip() {
        let edges = (0..64).flat_map(|s| [(1u64 << s) - 1, 1 << s]);
        for x in [0, 1, 127, 128, 300, 1 << 35, u64::MAX]
            .into_iter()
            .chain(edges)
        {
            let bytes = v(x);
            assert_eq!(bytes.len(), varint_len(x), "{x}");
            let mut r = ObjectReader::new(&[0], VERSION).unwrap().0;
            r.bytes = &bytes;
            assert_eq!(r.varint().unwrap(), x);
        }
        for i in [0, 1, -1, 63, -64, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(i)), i);
        }
        // Eleven bytes, or a tenth byte past 64 bits, overflow.
        let mut r = ObjectReader::new(&[0], VERSION).unwrap().0;
        r.bytes = &[0xff; 11];
        assert!(r.varint().is_err());
        r.bytes = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(r.varint().is_err());
    }

    /// A version-3 map whose first key is `first` bytes long and whose
    /// `n - 1` later keys each share the whole previous key and add a byte.
    fn v3_growing_keys(first: usize, n: u64) -> Vec<u8> {
        let mut b = [vec![1, ID_FULL << 1, 0, 1], v(n)].concat();
        b.extend([kind::NULL, 0]);
        bytes(&mut b, &vec![b'k'; first]);
        for i in 0..n - 1 {
            b.push(kind::NULL);
            varint(&mut b, first as u64 + i);
            bytes(&mut b, b"x");
        }
        b
    }

    #[test]
    fn version_3_keys_share_at_most_a_multiple_of_the_state() {
        let read = |bytes: &[u8]| -> Result<usize, ReceiveError> {
            let (mut r, count) = ObjectReader::new(bytes, 3)?;
            let mut keys = 0;
            for _ in 0..count {
                if let ObjState::Map { entries, .. } = r.next_object()? {
                    keys += entries.iter().map(|(k, ..)| k.len()).sum::<usize>();
                }
            }
            Ok(keys)
        };
        // About 100 KB of state that would spell 40 MB of keys.
        let hostile = v3_growing_keys(2000, 20_000);
        assert!(hostile.len() < 110_000);
        let e = read(&hostile).expect_err("quadratic keys");
        assert!(e.to_string().contains("share"), "{e}");
        // Honest long keys that differ at their end load.
        let mut honest = [vec![1, ID_FULL << 1, 0, 1], v(5_000)].concat();
        for i in 0..5_000u32 {
            let shared = if i == 0 { 0 } else { 196 };
            honest.push(kind::NULL);
            varint(&mut honest, shared as u64);
            let key = format!("{}{i:04}", "p".repeat(196));
            bytes(&mut honest, &key.as_bytes()[shared..]);
        }
        assert_eq!(read(&honest).unwrap(), 200 * 5_000);
    }

    #[test]
    fn hostile_counts_and_lengths_are_refused_before_reserving() {
        let huge = [1u64 << 62, u64::MAX, 1 << 32];
        // A map (full id 0:1) claiming more entries than bytes follow.
        let map = |n: u64| [vec![1, ID_FULL << 1, 0, 1], v(n)].concat();
        // A list (full id 0:1) of three slots, with a run of `n` integers.
        let run = |n: u64| {
            [
                vec![1, 1 | ID_FULL << 1, 0, 1, 3],
                v(n << 2),
                vec![column::INTS, 2, 4, 6],
            ]
            .concat()
        };
        // A map entry whose key's rest is `n` bytes long.
        let key = |n: u64| {
            [
                vec![1, ID_FULL << 1, 0, 1, 1, kind::NULL, 0],
                v(n),
                b"k".to_vec(),
            ]
            .concat()
        };
        // A run of one string `n` bytes long.
        let string = |n: u64| {
            [
                vec![1, 1 | ID_FULL << 1, 0, 1, 1, 1 << 2, column::STRS],
                v(n),
                b"s".to_vec(),
            ]
            .concat()
        };
        assert_eq!(read_all(&map(0)).unwrap().len(), 1);
        assert_eq!(read_all(&run(3)).unwrap().len(), 1);
        assert_eq!(read_all(&key(1)).unwrap().len(), 1);
        assert_eq!(read_all(&string(1)).unwrap().len(), 1);
        for n in huge {
            for bytes in [map(n), run(n), key(n), string(n)] {
                assert!(
                    matches!(read_all(&bytes), Err(ReceiveError::Malformed(_))),
                    "{bytes:?}"
                );
            }
        }
        // A run longer than the list, and an empty run.
        assert!(read_all(&run(4)).is_err());
        assert!(read_all(&run(0)).is_err());
        // More objects counted than there are.
        assert!(read_all(&[v(u64::MAX), map(0)[1..].to_vec()].concat()).is_err());
    }

    #[test]
    fn unknown_forms_are_refused() {
        let object = |h: u8, rest: &[u8]| [vec![1, h, 0, 1], rest.to_vec()].concat();
        // An object id that follows nothing; unknown header bits.
        assert!(read_all(&[1, 0, 0]).is_err());
        assert!(read_all(&object(8 | ID_FULL << 1, &[0])).is_err());
        // A map entry of an unknown value kind, and of an unknown stamp form
        // past the four.
        assert!(read_all(&object(ID_FULL << 1, &[1, 11, 0, 1, b'k'])).is_err());
        assert!(read_all(&object(ID_FULL << 1, &[1, kind::NULL | 4 << 4, 0, 1, b'k'])).is_err());
        // A key sharing more than the previous key has.
        assert!(read_all(&object(ID_FULL << 1, &[1, kind::NULL, 1, 1, b'k'])).is_err());
        // A key that is not UTF-8.
        assert!(read_all(&object(ID_FULL << 1, &[1, kind::NULL, 0, 1, 0xff])).is_err());
        // A list element without a value; an unknown column; unknown flags.
        let list = ID_FULL << 1 | 1;
        assert!(read_all(&object(list, &[1, 1 << 2, column::TAGGED, kind::TOMBSTONE])).is_err());
        assert!(read_all(&object(list, &[1, 1 << 2, 4, 0])).is_err());
        assert!(read_all(&object(list, &[1, (16 << 2) as u8 | 2, kind::NULL])).is_err());
        assert!(read_all(&object(list, &[1, (4 << 2) as u8 | 3, 0, 1])).is_err());
    }

    /// A map of `(key, value)` entries (stamped with the map's id), or a
    /// list of live values.
    type TestObj = Result<Vec<(&'static str, Value)>, Vec<Value>>;

    /// `objs` at ids 0:1, 0:2, … in order (a list's elements after it).
    fn objects(objs: Vec<TestObj>) -> Vec<(Id, Obj)> {
        use crate::graph::list::Slot;
        use crate::graph::map::MapEntry;
        use crate::value::PeerIdx;
        let mut next = 1;
        let mut out = Vec::new();
        for obj in objs {
            let id = Id::new(PeerIdx(0), next);
            let data = match obj {
                Ok(entries) => {
                    let mut map = MapObj::with_capacity(entries.len());
                    for (k, v) in entries {
                        let entry = MapEntry {
                            value: Some(v),
                            stamp: id,
                        };
                        assert!(map.restore(k.into(), entry));
                    }
                    ObjData::Map(map)
                }
                Err(values) => {
                    let slots = (next + 1..)
                        .zip(values)
                        .map(|(counter, value)| {
                            let slot = Slot {
                                id: Id::new(PeerIdx(0), counter),
                                kind: SlotKind::Home {
                                    value,
                                    deleted: false,
                                    away: false,
                                },
                            };
                            (slot, None)
                        })
                        .collect::<Vec<_>>();
                    ObjData::List(Box::new(ListObj::from_slots(slots).unwrap()))
                }
            };
            next += 1 + match &data {
                ObjData::List(list) => list.slot_count() as u64,
                ObjData::Map(_) => 0,
            };
            out.push((id, Obj { data, mark: 0 }));
        }
        out
    }

    fn write(objs: &[(Id, Obj)]) -> Vec<u8> {
        let refs: Vec<(Id, &Obj)> = objs.iter().map(|(id, o)| (*id, o)).collect();
        let mut out = Vec::new();
        write_objects(&refs, &mut out);
        out
    }

    fn read_v4(bytes: &[u8]) -> Result<Vec<ObjState>, ReceiveError> {
        let (mut r, count) = ObjectReader::new(bytes, VERSION)?;
        let objs = (0..count)
            .map(|_| r.next_object())
            .collect::<Result<Vec<_>, _>>()?;
        match r.rest() {
            [] => Ok(objs),
            _ => Err(malformed("bytes left")),
        }
    }

    fn str(s: &str) -> Value {
        Value::Str(s.into())
    }

    #[test]
    fn maps_whose_keys_share_a_hash_are_written_whole() {
        let keyed = |i: usize| {
            Ok(vec![
                ("same", Value::Int(1)),
                (
                    [
                        "k0", "k1", "k2", "k3", "k4", "k5", "k6", "k7", "k8", "k9", "k10", "k11",
                    ][i],
                    Value::Int(2),
                ),
            ])
        };
        // Twelve shapes, then each again: the first eight are found by
        // their hash, the last four defined again.
        let objs = objects((0..12).chain(0..12).map(keyed).collect());
        let refs: Vec<(Id, &Obj)> = objs.iter().map(|(id, o)| (*id, o)).collect();
        let mut colliding = Vec::new();
        write_objects_hashed(&refs, &mut colliding, |_| 0);
        let spread = write(&objs);
        assert_eq!(read_v4(&colliding).unwrap(), read_v4(&spread).unwrap());
        // Each of the four shapes defined again costs its keys and heads
        // (13 or 14 bytes) instead of its index.
        let again = colliding.len() - spread.len();
        assert!((4 * 12..=4 * 15).contains(&again), "{again}");
    }

    #[test]
    fn maps_alike_name_their_shape_and_heads_once() {
        let alike = |i| Ok(vec![("a", Value::Int(i)), ("b", str("x"))]);
        let objs = objects(vec![alike(1), alike(2), Ok(vec![]), alike(3)]);
        let bytes = write(&objs);
        #[rustfmt::skip]
        let want = [
            4,
            // 0:1, a new shape of two keys, its heads, its payloads.
            ID_FULL << 1, 0, 1, 0, 2, 0, 1, b'a', 0, 1, b'b',
            kind::INT, kind::STR, 2, 1, b'x',
            // The same keys and heads (a string equal to the previous one
            // is no shorter by prefix).
            SAME_SHAPE | SAME_HEADS, 4, 1, b'x',
            // An empty map: a new shape of no keys, no heads.
            0, 0, 0,
            // The first shape, by index, and its last heads.
            SAME_HEADS, 1, 6, 1, b'x',
        ];
        assert_eq!(bytes, want);
        let read = read_v4(&bytes).unwrap();
        let entries = |i: usize| match &read[i] {
            ObjState::Map { entries, .. } => entries.clone(),
            ObjState::List { .. } => panic!("a map"),
        };
        let int_and_x = |i| {
            vec![
                (SmolStr::new("a"), Some(WireValue::Int(i)), None),
                (SmolStr::new("b"), Some(WireValue::Str("x".into())), None),
            ]
        };
        assert_eq!(entries(0), int_and_x(1));
        assert_eq!(entries(1), int_and_x(2));
        assert_eq!(entries(2), vec![]);
        assert_eq!(entries(3), int_and_x(3));
    }

    #[test]
    fn strings_are_given_by_the_prefix_they_share_where_shorter() {
        let objs = objects(vec![
            Ok(vec![("s", str("item-10"))]),
            Err(vec![str("item-11"), str("item-12"), str("other")]),
            Err(vec![str("a"), str("b")]),
        ]);
        let bytes = write(&objs);
        #[rustfmt::skip]
        let want = [
            3,
            ID_FULL << 1, 0, 1, 0, 1, 0, 1, b's', kind::STR, 7, b'i', b't', b'e', b'm', b'-', b'1', b'0',
            // A run of three strings: two share six bytes, the last nothing.
            1, 3, 3 << 2, column::STR_PREFIXES,
            6, 1, b'1', 6, 1, b'2', 0, 5, b'o', b't', b'h', b'e', b'r',
            // One-letter strings whole.
            1 | ID_DELTA << 1, 4, 2, 2 << 2, column::STRS, 1, b'a', 1, b'b',
        ];
        assert_eq!(bytes, want);
        let read = read_v4(&bytes).unwrap();
        let ObjState::List { slots, .. } = &read[1] else {
            panic!("a list")
        };
        let values: Vec<_> = slots
            .iter()
            .map(|s| match s {
                SlotState::Live { value, .. } => value.clone(),
                other => panic!("{other:?}"),
            })
            .collect();
        let want: Vec<_> = ["item-11", "item-12", "other"]
            .map(|s| WireValue::Str(s.into()))
            .into();
        assert_eq!(values, want);
        // Version 3 knows no string prefixes.
        let list = write(&objects(vec![Err(vec![str("item-11"), str("item-12")])]));
        assert_eq!(list[6], column::STR_PREFIXES);
        assert!(read_v4(&list).is_ok());
        let (mut r, _) = ObjectReader::new(&list, 3).unwrap();
        assert!(r.next_object().is_err());
    }

    #[test]
    fn hostile_shapes_heads_and_prefixes_are_refused() {
        // A map of one null entry, then `rest` as the second object.
        let two = |rest: &[u8]| {
            [
                &[2, ID_FULL << 1, 0, 1, 0, 1, 0, 1, b'a', kind::NULL][..],
                rest,
            ]
            .concat()
        };
        assert!(read_v4(&two(&[0, 1, kind::NULL])).is_ok());
        assert!(read_v4(&two(&[SAME_SHAPE, kind::NULL])).is_ok());
        // The same heads, but no payload byte for the entry.
        assert!(read_v4(&two(&[SAME_SHAPE | SAME_HEADS])).is_err());
        // A shape that follows no map; an unknown shape; heads that follow
        // no map of the shape; unknown header bits; shape bits on a list.
        assert!(read_v4(&[1, ID_FULL << 1 | SAME_SHAPE, 0, 1]).is_err());
        assert!(read_v4(&two(&[2, kind::NULL])).is_err());
        assert!(
            read_v4(&two(&[
                u64::MAX as u8 | 0x80,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                0xff,
                1
            ]))
            .is_err()
        );
        assert!(read_v4(&[1, ID_FULL << 1 | SAME_HEADS, 0, 1, 0, 0]).is_err());
        assert!(read_v4(&two(&[32, 1, kind::NULL])).is_err());
        assert!(read_v4(&two(&[1 | SAME_SHAPE, 0])).is_err());
        // A shape of more keys than bytes follow; a key sharing more than
        // the previous key holds; a key not UTF-8; an unknown head.
        assert!(read_v4(&[1, ID_FULL << 1, 0, 1, 0, 200, 1, 0, 0]).is_err());
        assert!(read_v4(&[1, ID_FULL << 1, 0, 1, 0, 1, 1, 0, kind::NULL]).is_err());
        assert!(read_v4(&[1, ID_FULL << 1, 0, 1, 0, 1, 0, 1, 0xff, kind::NULL]).is_err());
        assert!(read_v4(&[1, ID_FULL << 1, 0, 1, 0, 1, 0, 1, b'a', 12]).is_err());
        // A string sharing more than the previous string holds, and one
        // sharing more than MAX_SHARE times its bytes.
        let string = |shared: usize, rest: &[u8]| {
            let long = vec![b'x'; 200];
            let mut b = vec![2, ID_FULL << 1, 0, 1, 0, 1, 0, 1, b'a', kind::STR];
            bytes(&mut b, &long);
            b.extend([SAME_SHAPE, kind::STR_PREFIX]);
            varint(&mut b, shared as u64);
            bytes(&mut b, rest);
            b
        };
        assert!(read_v4(&string(64, b"")).is_ok());
        assert!(read_v4(&string(100, b"yy")).is_ok());
        assert!(read_v4(&string(201, b"")).is_err());
        assert!(read_v4(&string(65, b"")).is_err());
    }
}
