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
//!   peer and counter);
//! - a map: its entry count, then per entry (in key order) a byte holding
//!   the value's kind (bits 0–3, [`kind`]) and how the stamp is given (bits
//!   4–5, [`stamp`]); the key as the length of the prefix it shares with the
//!   previous key of the map, the length of the rest and the rest; the stamp;
//!   the value;
//! - a list: its slot count, then groups of slots, each a varint `g`: `g & 3`
//!   is the group's form ([`group`]) and `g >> 2` its length or flags. Most
//!   slots are live elements at home whose id is the previous slot's plus
//!   one; a run of them is one group with its values in one column: integers
//!   as zigzag varints (or the zigzag differences between neighbours,
//!   whichever is shorter), strings as length and bytes, anything else with
//!   a kind each.
//!
//! The state carries one integer and one reference from value to value,
//! across objects: an integer or a reference may be given as its difference
//! from the previous one (sequential data, such as pushed counters or the
//! children of a map created one after another, then takes a byte). The
//! writer takes whichever form is shorter, so the same state always gives
//! the same bytes.
//!
//! Reading checks every length against the bytes left before reserving
//! anything, and refuses what does not decode with a typed error; ids and
//! values are validated by the builder, as in the first format.

use smol_str::SmolStr;

use crate::error::ReceiveError;
use crate::graph::list::{ListObj, SlotKind};
use crate::graph::map::MapObj;
use crate::graph::{Obj, ObjData};
use crate::value::{Id, Value};
use crate::wire::{EntryState, ObjState, SlotState, WireId, WireValue};

/// The version byte of a saved state in this format (the first format,
/// postcard throughout, has the wire version 1; version 2 had no departed
/// peers).
pub(crate) const VERSION: u8 = 3;

/// How an object's id is given.
const ID_NEXT: u8 = 0;
const ID_DELTA: u8 = 1;
const ID_FULL: u8 = 2;

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
#[inline]
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
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

/// The integer and reference values are given relative to.
#[derive(Default)]
struct Context {
    int: i64,
    reference: WireId,
}

/// Writes the objects (in id order) into `out`.
pub(crate) fn write_objects(objects: &[(Id, &Obj)], out: &mut Vec<u8>) {
    varint(out, objects.len() as u64);
    let mut w = Writer {
        out,
        cx: Context::default(),
        run: Vec::new(),
    };
    let mut prev: Option<Id> = None;
    for &(id, obj) in objects {
        let list = matches!(obj.data, ObjData::List(_));
        let mode = match prev {
            Some(p) if p.peer == id.peer && p.counter.wrapping_add(1) == id.counter => ID_NEXT,
            Some(p) if p.peer == id.peer && p.counter < id.counter => ID_DELTA,
            _ => ID_FULL,
        };
        w.out.push(u8::from(list) | mode << 1);
        match mode {
            ID_DELTA => varint(w.out, id.counter - prev.map_or(0, |p| p.counter)),
            ID_FULL => full_id(w.out, id),
            _ => {}
        }
        prev = Some(id);
        match &obj.data {
            ObjData::Map(map) => w.map(id, map),
            ObjData::List(list) => w.list(id, list),
        }
    }
}

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    cx: Context,
    /// The values of the run being written (reused).
    run: Vec<Value>,
}

impl Writer<'_> {
    fn map(&mut self, id: Id, map: &MapObj) {
        let entries = map.raw_entries();
        varint(self.out, entries.len() as u64);
        let mut prev_key: &[u8] = &[];
        let mut prev_stamp = id;
        for (key, e) in entries {
            let key = key.as_bytes();
            let shared = key.iter().zip(prev_key).take_while(|(a, b)| a == b).count();
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
            let value_pos = self.out.len();
            self.out.push(mode << 4);
            varint(self.out, shared as u64);
            bytes(self.out, &key[shared..]);
            match mode {
                stamp::DELTA => varint(self.out, zigzag(delta)),
                stamp::FULL => full_id(self.out, e.stamp),
                _ => {}
            }
            let kind = match &e.value {
                Some(v) => self.value(v),
                None => kind::TOMBSTONE,
            };
            self.out[value_pos] |= kind;
            prev_key = key;
            prev_stamp = e.stamp;
        }
    }

    /// Writes `v`'s payload and returns its kind.
    fn value(&mut self, v: &Value) -> u8 {
        let out = &mut *self.out;
        match v {
            Value::Null => kind::NULL,
            Value::Bool(false) => kind::FALSE,
            Value::Bool(true) => kind::TRUE,
            &Value::Int(i) => {
                let plain = zigzag(i);
                let delta = zigzag(i.wrapping_sub(self.cx.int));
                self.cx.int = i;
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
                bytes(out, s.as_bytes());
                kind::STR
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
                let prev = std::mem::replace(&mut self.cx.reference, w);
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
                    self.out[at] = self.value(&value);
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
        if run.iter().all(|v| matches!(v, Value::Int(_))) {
            let ints = || {
                run.iter().map(|v| match v {
                    Value::Int(i) => *i,
                    _ => 0,
                })
            };
            let plain: usize = ints().map(|i| varint_len(zigzag(i))).sum();
            let mut last = self.cx.int;
            let deltas: usize = ints()
                .map(|i| varint_len(zigzag(i.wrapping_sub(std::mem::replace(&mut last, i)))))
                .sum();
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
            self.out.push(column::STRS);
            for v in run.iter() {
                if let Value::Str(s) = v {
                    bytes(self.out, s.as_bytes());
                }
            }
        } else {
            self.out.push(column::TAGGED);
            for v in run.iter() {
                let at = self.out.len();
                self.out.push(0);
                self.out[at] = self.value(v);
            }
        }
        run.clear();
    }
}

fn malformed(what: &str) -> ReceiveError {
    ReceiveError::Malformed(format!("saved state: {what}"))
}

/// Reads the objects block of a saved state, one object at a time.
pub(crate) struct ObjectReader<'b> {
    bytes: &'b [u8],
    /// Objects left to read.
    left: u64,
    cx: Context,
    prev: Option<WireId>,
    /// The previous key of the map being read (reused).
    key: Vec<u8>,
}

impl<'b> ObjectReader<'b> {
    /// A reader of the block at the start of `bytes`, with the object count.
    pub(crate) fn new(bytes: &'b [u8]) -> Result<(Self, u64), ReceiveError> {
        let mut r = ObjectReader {
            bytes,
            left: 0,
            cx: Context::default(),
            prev: None,
            key: Vec::new(),
        };
        r.left = r.varint()?;
        let count = r.left;
        Ok((r, count))
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

    fn str(&mut self, len: u64) -> Result<SmolStr, ReceiveError> {
        std::str::from_utf8(self.take(len)?)
            .map(SmolStr::new)
            .map_err(|_| malformed("a string is not UTF-8"))
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
            kind::STR => {
                let n = self.varint()?;
                WireValue::Str(self.str(n)?)
            }
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
        if h >> 3 != 0 {
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

    fn entries(&mut self, map: WireId) -> Result<Vec<EntryState>, ReceiveError> {
        let n = self.count()?;
        let mut entries = Vec::with_capacity(Self::reserve(n));
        let mut prev_stamp = map;
        self.key.clear();
        for _ in 0..n {
            let h = self.byte()?;
            let (value_kind, mode) = (h & 0xf, h >> 4);
            let shared = self.varint()?;
            if shared > self.key.len() as u64 {
                return Err(malformed("a key shares more than the previous key"));
            }
            self.key.truncate(shared as usize);
            let rest = self.varint()?;
            let rest = self.take(rest)?;
            self.key.extend_from_slice(rest);
            let key = std::str::from_utf8(&self.key)
                .map(SmolStr::new)
                .map_err(|_| malformed("a key is not UTF-8"))?;
            let stamp = match mode {
                stamp::MAP => map,
                stamp::NEXT => WireId {
                    p: prev_stamp.p,
                    c: prev_stamp.c.wrapping_add(1),
                },
                stamp::DELTA => WireId {
                    p: prev_stamp.p,
                    c: prev_stamp.c.wrapping_add(unzigzag(self.varint()?) as u64),
                },
                stamp::FULL => self.full_id()?,
                _ => return Err(malformed("an unknown stamp form")),
            };
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
        let mut slots = Vec::with_capacity(Self::reserve(n));
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
                    let n = self.varint()?;
                    live(WireValue::Str(self.str(n)?));
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
        let (mut r, count) = ObjectReader::new(bytes)?;
        (0..count).map(|_| r.next_object()).collect()
    }

    fn v(x: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(&mut out, x);
        out
    }

    #[test]
    fn varints_and_zigzag_round_trip() {
        for x in [0, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            let bytes = v(x);
            assert_eq!(bytes.len(), varint_len(x), "{x}");
            let mut r = ObjectReader::new(&[0]).unwrap().0;
            r.bytes = &bytes;
            assert_eq!(r.varint().unwrap(), x);
        }
        for i in [0, 1, -1, 63, -64, i64::MIN, i64::MAX] {
            assert_eq!(unzigzag(zigzag(i)), i);
        }
        // Eleven bytes, or a tenth byte past 64 bits, overflow.
        let mut r = ObjectReader::new(&[0]).unwrap().0;
        r.bytes = &[0xff; 11];
        assert!(r.varint().is_err());
        r.bytes = &[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02];
        assert!(r.varint().is_err());
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
}
