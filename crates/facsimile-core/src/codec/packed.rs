//! The binary form of an operations message of many operations: a node's
//! writes gathered while it was offline, or a large batch.
//!
//! Postcard writes each operation whole: its object id, its key, its value.
//! In a long message most of that repeats, so here each operation opens
//! with one byte holding its kind and which of the last few objects it
//! writes to; a key is written once and then named by its place in the
//! message's key table; an integer value is written as its difference from
//! the previous integer value (counters and timestamps change by little).
//! Operations without a packed form are written as postcard writes them.
//!
//! Decoding is bounded by the input: every operation takes at least one
//! byte, every table entry was read from the input, and nothing recurses.

use rustc_hash::FxHashMap;
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;
use smol_str::SmolStr;

use super::fast::{Reader, id, str, varint, zigzag};
use crate::wire::{Ops, WireId, WireOp, WireOrigin, WireValue};

/// Messages with at least this many operations are packed.
pub(crate) const PACK_FROM: usize = 2;

/// How many recently written objects an operation can name by place.
const RECENT: usize = 7;
/// The most items reserved for ahead of reading them.
const RESERVE: usize = 1024;
/// The object slot meaning "an id follows".
const LITERAL: u8 = 7;

// Operation kinds, the low five bits of an operation's first byte.
const PLAIN: u8 = 0;
const MAP_SET: u8 = 1;
const MAP_DELETE: u8 = 2;
const APPEND: u8 = 3;
const LIST_INSERT: u8 = 4;
const LIST_DELETE: u8 = 5;
const LIST_SET: u8 = 6;

// Value tags.
const NULL: u8 = 0;
const FALSE: u8 = 1;
const TRUE: u8 = 2;
const INT: u8 = 3;
const FLOAT: u8 = 4;
const STR: u8 = 5;
const BYTES: u8 = 6;
const REF: u8 = 7;

// Origin tags.
const HEAD: u8 = 0;
const BACK: u8 = 1;
const AFTER: u8 = 2;

/// What encoder and decoder both track along a message.
#[derive(Default)]
struct Context {
    /// The last objects written to, most recent first.
    recent: SmallVec<[WireId; RECENT]>,
    /// Decoding: every key so far, in order of first use.
    keys: Vec<SmolStr>,
    /// Encoding: each key's place in that table.
    places: FxHashMap<SmolStr, usize>,
    /// The last integer value.
    int: i64,
}

impl Context {
    /// Makes `obj` the most recent object.
    fn touch(&mut self, at: Option<usize>, obj: WireId) {
        match at {
            Some(i) => self.recent[..=i].rotate_right(1),
            None => {
                if self.recent.len() == RECENT {
                    self.recent.pop();
                }
                self.recent.insert(0, obj);
            }
        }
    }
}

/// Serializes an operations list in the packed form, as one byte string.
pub(crate) struct PackedRef<'a>(pub(crate) &'a Ops);

impl Serialize for PackedRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&encode(self.0))
    }
}

/// Deserializes an operations list from the packed form.
pub(crate) struct Packed(pub(crate) Ops);

impl<'de> Deserialize<'de> for Packed {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl Visitor<'_> for Bytes {
            type Value = Packed;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("packed operations")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Packed, E> {
                decode(v).map(Packed).map_err(E::custom)
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

/// Serializes a run of one sender's operations messages (each its tick and
/// operations): in binary, the count of messages, each one's tick and
/// operation count, then all their operations packed together (the key
/// table and recent objects carry over from message to message); in JSON,
/// the messages as they are.
pub(crate) struct RunRef<'a>(pub(crate) &'a [(u64, Ops)]);

impl Serialize for RunRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            return self.0.serialize(s);
        }
        let mut out = Vec::new();
        varint(&mut out, self.0.len() as u64);
        for (tick, ops) in self.0 {
            varint(&mut out, *tick);
            varint(&mut out, ops.len() as u64);
        }
        let all: Vec<WireOp> = self
            .0
            .iter()
            .flat_map(|(_, ops)| ops.iter().cloned())
            .collect();
        out.extend(encode(&all));
        s.serialize_bytes(&out)
    }
}

/// Deserializes what [`RunRef`] serializes.
pub(crate) struct Run(pub(crate) Vec<(u64, Ops)>);

impl<'de> Deserialize<'de> for Run {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Bytes;
        impl Visitor<'_> for Bytes {
            type Value = Run;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a packed run of messages")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Run, E> {
                decode_run(v).map(Run).map_err(E::custom)
            }
        }
        if d.is_human_readable() {
            return Vec::deserialize(d).map(Run);
        }
        d.deserialize_bytes(Bytes)
    }
}

/// Reads a run's binary form.
fn decode_run(bytes: &[u8]) -> Result<Vec<(u64, Ops)>, &'static str> {
    const SHORT: &str = "a run of messages cut short or malformed";
    let mut r = Reader(bytes);
    let n = usize::try_from(r.u64().ok_or(SHORT)?).map_err(|_| SHORT)?;
    // Each message's tick and count take two bytes at least.
    if n > r.0.len() / 2 {
        return Err("more messages in a run than bytes");
    }
    let mut shape = Vec::with_capacity(n);
    for _ in 0..n {
        let tick = r.u64().ok_or(SHORT)?;
        let len = r.u64().ok_or(SHORT)?;
        shape.push((tick, len));
    }
    let all = decode(r.0)?;
    let total = shape
        .iter()
        .try_fold(0u64, |sum, &(_, len)| sum.checked_add(len));
    if total != Some(all.len() as u64) {
        return Err("a run's messages do not add up to its operations");
    }
    let mut all = all.into_iter();
    Ok(shape
        .into_iter()
        .map(|(tick, len)| (tick, all.by_ref().take(len as usize).collect()))
        .collect())
}

/// [`WireOp::NewMap`]'s variant index in postcard's form.
const NEW_MAP_VARIANT: u8 = 1;

/// Writes a [`WireOp::NewMap`] as postcard does (its variant index, then
/// its entries), without going through serde: an object graph sends
/// little else, and serde's calls cost several times the bytes' writing.
fn plain_new_map(out: &mut Vec<u8>, entries: &[(SmolStr, WireValue)]) {
    out.push(NEW_MAP_VARIANT);
    varint(out, entries.len() as u64);
    for (k, v) in entries {
        str(out, k);
        plain_value(out, v);
    }
}

/// Writes a value as postcard does: its variant index, then its contents.
fn plain_value(out: &mut Vec<u8>, v: &WireValue) {
    match v {
        WireValue::Null => out.push(0),
        WireValue::Bool(b) => out.extend_from_slice(&[1, u8::from(*b)]),
        WireValue::Int(i) => {
            out.push(2);
            varint(out, zigzag(*i));
        }
        WireValue::Float(f) => {
            out.push(3);
            out.extend_from_slice(&f.to_le_bytes());
        }
        WireValue::Str(s) => {
            out.push(4);
            str(out, s);
        }
        WireValue::Bytes(b) => {
            out.push(5);
            varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
        WireValue::Ref(w) => {
            out.push(6);
            id(out, *w);
        }
    }
}

/// The packed form of `ops`.
pub(crate) fn encode(ops: &[WireOp]) -> Vec<u8> {
    let mut out = Vec::with_capacity(ops.len() * 6 + 8);
    let mut cx = Context::default();
    varint(&mut out, ops.len() as u64);
    for op in ops {
        encode_op(&mut out, &mut cx, op);
    }
    out
}

/// The packed form of a list of operations written as they are made, so
/// that a large group's operations need not wait in memory (a million
/// took 88 MB as operations, 3 MB packed): [`PackedWriter::finish`] gives
/// what [`encode`] gives for the same operations.
#[derive(Default)]
pub(crate) struct PackedWriter {
    /// The operations after the count.
    out: Vec<u8>,
    cx: Context,
    count: usize,
}

impl std::fmt::Debug for PackedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedWriter")
            .field("count", &self.count)
            .field("bytes", &self.out.len())
            .finish()
    }
}

impl PackedWriter {
    /// Appends one operation.
    #[inline]
    pub(crate) fn push(&mut self, op: &WireOp) {
        encode_op(&mut self.out, &mut self.cx, op);
        self.count += 1;
    }

    /// How many operations were written.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// An upper bound of the bytes [`PackedWriter::finish_bytes`] writes.
    pub(crate) fn byte_len(&self) -> usize {
        self.out.len() + 20
    }

    /// Writes the packed form (the count, then the operations) to `out`
    /// as a byte string (its length first), as serde's `serialize_bytes`
    /// does in postcard.
    pub(crate) fn finish_bytes(&self, out: &mut Vec<u8>) {
        let mut count = Vec::with_capacity(10);
        varint(&mut count, self.count as u64);
        varint(out, (count.len() + self.out.len()) as u64);
        out.reserve(count.len() + self.out.len());
        out.extend_from_slice(&count);
        out.extend_from_slice(&self.out);
    }
}

/// Appends the packed form of one operation.
fn encode_op(out: &mut Vec<u8>, cx: &mut Context, op: &WireOp) {
    let (kind, obj) = match op {
        WireOp::MapSet { obj, .. } => (MAP_SET, obj),
        WireOp::MapDelete { obj, .. } => (MAP_DELETE, obj),
        WireOp::Append { obj, .. } => (APPEND, obj),
        WireOp::ListInsert { obj, .. } => (LIST_INSERT, obj),
        WireOp::ListDelete { obj, .. } => (LIST_DELETE, obj),
        WireOp::ListSet { obj, .. } => (LIST_SET, obj),
        WireOp::NewMap { entries } => {
            out.push(PLAIN);
            plain_new_map(out, entries);
            return;
        }
        _ => {
            out.push(PLAIN);
            let buf = std::mem::take(out);
            *out = postcard::to_extend(op, buf).expect("encoding into a Vec cannot fail");
            return;
        }
    };
    let at = cx.recent.iter().position(|r| r == obj);
    let slot = at.map_or(LITERAL, |i| i as u8);
    out.push(slot << 5 | kind);
    if at.is_none() {
        id(out, *obj);
    }
    cx.touch(at, *obj);
    match op {
        WireOp::MapSet { key, value, .. } => {
            write_key(out, cx, key);
            write_value(out, cx, value);
        }
        WireOp::MapDelete { key, .. } => write_key(out, cx, key),
        WireOp::Append { value, .. } => write_value(out, cx, value),
        WireOp::ListInsert { origin, values, .. } => {
            match origin {
                WireOrigin::Head => out.push(HEAD),
                WireOrigin::Back(n) => {
                    out.push(BACK);
                    varint(out, *n);
                }
                WireOrigin::Id(w) => {
                    out.push(AFTER);
                    id(out, *w);
                }
            }
            varint(out, values.len() as u64);
            for v in values {
                write_value(out, cx, v);
            }
        }
        WireOp::ListDelete { runs, .. } => {
            varint(out, runs.len() as u64);
            for (start, len) in runs {
                id(out, *start);
                varint(out, u64::from(*len));
            }
        }
        WireOp::ListSet { elem, value, .. } => {
            id(out, *elem);
            write_value(out, cx, value);
        }
        _ => unreachable!("only the kinds above have a packed form"),
    }
}

fn write_key(out: &mut Vec<u8>, cx: &mut Context, key: &SmolStr) {
    match cx.places.get(key) {
        Some(&i) => varint(out, i as u64 + 1),
        None => {
            out.push(0);
            str(out, key);
            let next = cx.places.len();
            cx.places.insert(key.clone(), next);
        }
    }
}

fn write_value(out: &mut Vec<u8>, cx: &mut Context, value: &WireValue) {
    match value {
        WireValue::Null => out.push(NULL),
        WireValue::Bool(false) => out.push(FALSE),
        WireValue::Bool(true) => out.push(TRUE),
        WireValue::Int(i) => {
            out.push(INT);
            let d = i.wrapping_sub(cx.int);
            varint(out, zigzag(d));
            cx.int = *i;
        }
        WireValue::Float(f) => {
            out.push(FLOAT);
            out.extend_from_slice(&f.to_le_bytes());
        }
        WireValue::Str(s) => {
            out.push(STR);
            str(out, s);
        }
        WireValue::Bytes(b) => {
            out.push(BYTES);
            varint(out, b.len() as u64);
            out.extend_from_slice(b);
        }
        WireValue::Ref(w) => {
            out.push(REF);
            id(out, *w);
        }
    }
}

/// Reads the packed form; the error says what was wrong.
pub(crate) fn decode(bytes: &[u8]) -> Result<Ops, &'static str> {
    const SHORT: &str = "packed operations cut short or malformed";
    let mut r = Reader(bytes);
    let n = usize::try_from(r.u64().ok_or(SHORT)?).map_err(|_| SHORT)?;
    // Every operation takes at least one byte.
    if n > r.0.len() {
        return Err("more packed operations than bytes");
    }
    // Reserved up to a bound: a hostile count costs no more than its bytes.
    let mut ops = Ops::with_capacity(n.min(RESERVE));
    let mut cx = Context::default();
    for _ in 0..n {
        let head = r.byte().ok_or(SHORT)?;
        let (slot, kind) = (head >> 5, head & 0x1F);
        if kind == PLAIN {
            if slot != 0 {
                return Err("a plain packed operation with an object");
            }
            let (op, rest) =
                postcard::take_from_bytes::<WireOp>(r.0).map_err(|_| "a malformed operation")?;
            r.0 = rest;
            ops.push(op);
            continue;
        }
        if kind > LIST_SET {
            return Err("an unknown packed operation");
        }
        let (at, obj) = match slot {
            LITERAL => (None, read_id(&mut r).ok_or(SHORT)?),
            i => {
                let i = usize::from(i);
                let obj = *cx.recent.get(i).ok_or("a packed object slot not filled")?;
                (Some(i), obj)
            }
        };
        cx.touch(at, obj);
        let op = match kind {
            MAP_SET => WireOp::MapSet {
                obj,
                key: read_key(&mut r, &mut cx)?,
                value: read_value(&mut r, &mut cx)?,
            },
            MAP_DELETE => WireOp::MapDelete {
                obj,
                key: read_key(&mut r, &mut cx)?,
            },
            APPEND => WireOp::Append {
                obj,
                value: read_value(&mut r, &mut cx)?,
            },
            LIST_INSERT => {
                let origin = match r.byte().ok_or(SHORT)? {
                    HEAD => WireOrigin::Head,
                    BACK => WireOrigin::Back(r.u64().ok_or(SHORT)?),
                    AFTER => WireOrigin::Id(read_id(&mut r).ok_or(SHORT)?),
                    _ => return Err("an unknown packed origin"),
                };
                let count = read_count(&mut r)?;
                let mut values = Vec::with_capacity(count.min(RESERVE));
                for _ in 0..count {
                    values.push(read_value(&mut r, &mut cx)?);
                }
                WireOp::ListInsert {
                    obj,
                    origin,
                    values,
                }
            }
            LIST_DELETE => {
                let count = read_count(&mut r)?;
                let mut runs = Vec::with_capacity(count.min(RESERVE));
                for _ in 0..count {
                    let start = read_id(&mut r).ok_or(SHORT)?;
                    runs.push((start, r.u32().ok_or(SHORT)?));
                }
                WireOp::ListDelete { obj, runs }
            }
            _ => WireOp::ListSet {
                obj,
                elem: read_id(&mut r).ok_or(SHORT)?,
                value: read_value(&mut r, &mut cx)?,
            },
        };
        ops.push(op);
    }
    if !r.0.is_empty() {
        return Err("bytes after the packed operations");
    }
    Ok(ops)
}

fn read_id(r: &mut Reader<'_>) -> Option<WireId> {
    Some(WireId {
        p: r.u32()?,
        c: r.u64()?,
    })
}

/// A count of items that each take at least one byte.
fn read_count(r: &mut Reader<'_>) -> Result<usize, &'static str> {
    let n = r.u64().ok_or("a packed count cut short")?;
    match usize::try_from(n) {
        Ok(n) if n <= r.0.len() => Ok(n),
        _ => Err("a packed count larger than the bytes left"),
    }
}

fn read_key(r: &mut Reader<'_>, cx: &mut Context) -> Result<SmolStr, &'static str> {
    match r.u64().ok_or("a packed key cut short")? {
        0 => {
            let key = r.str().ok_or("a packed key cut short or not UTF-8")?;
            cx.keys.push(key.clone());
            Ok(key)
        }
        i => usize::try_from(i - 1)
            .ok()
            .and_then(|i| cx.keys.get(i))
            .cloned()
            .ok_or("a packed key not in the table"),
    }
}

fn read_value(r: &mut Reader<'_>, cx: &mut Context) -> Result<WireValue, &'static str> {
    const SHORT: &str = "a packed value cut short or malformed";
    Ok(match r.byte().ok_or(SHORT)? {
        NULL => WireValue::Null,
        FALSE => WireValue::Bool(false),
        TRUE => WireValue::Bool(true),
        INT => {
            let z = r.u64().ok_or(SHORT)?;
            let d = (z >> 1) as i64 ^ -((z & 1) as i64);
            cx.int = cx.int.wrapping_add(d);
            WireValue::Int(cx.int)
        }
        FLOAT => WireValue::Float(f64::from_le_bytes(
            r.take(8).ok_or(SHORT)?.try_into().map_err(|_| SHORT)?,
        )),
        STR => WireValue::Str(r.str().ok_or(SHORT)?),
        BYTES => {
            let len = read_count(r)?;
            WireValue::Bytes(r.take(len).ok_or(SHORT)?.to_vec())
        }
        REF => WireValue::Ref(read_id(r).ok_or(SHORT)?),
        _ => return Err("an unknown packed value"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Hostname, Tag};
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    #[test]
    fn new_maps_are_written_as_postcard_writes_them() {
        let mut rng = SmallRng::seed_from_u64(11);
        let mut values = vec![
            WireValue::Null,
            WireValue::Bool(false),
            WireValue::Bool(true),
            WireValue::Int(0),
            WireValue::Int(-1),
            WireValue::Int(i64::MIN),
            WireValue::Int(i64::MAX),
            WireValue::Float(-0.5),
            WireValue::Float(f64::NAN),
            WireValue::Str(SmolStr::new("ké".repeat(100))),
            WireValue::Bytes(vec![0, 255, 7]),
            WireValue::Ref(WireId {
                p: u32::MAX,
                c: u64::MAX,
            }),
        ];
        values.extend((0..200).map(|_| random_value(&mut rng)));
        for n in [0, 1, 2, 200] {
            let entries: SmallVec<[(SmolStr, WireValue); 1]> = values
                .iter()
                .take(n)
                .enumerate()
                .map(|(i, v)| (SmolStr::new(format!("k{i}")), v.clone()))
                .collect();
            let mut ours = Vec::new();
            plain_new_map(&mut ours, &entries);
            let theirs = postcard::to_allocvec(&WireOp::NewMap { entries }).unwrap();
            assert_eq!(ours, theirs, "{n} entries");
        }
    }

    fn random_id(rng: &mut SmallRng) -> WireId {
        WireId {
            p: rng.random_range(0..3),
            c: match rng.random_range(0..3) {
                0 => u64::MAX,
                _ => rng.random_range(0..1000),
            },
        }
    }

    fn random_value(rng: &mut SmallRng) -> WireValue {
        match rng.random_range(0..4) {
            0 => WireValue::Ref(random_id(rng)),
            1 => WireValue::Int(rng.random_range(0..10)),
            _ => super::super::fast::tests::random_value(rng),
        }
    }

    fn random_op(rng: &mut SmallRng, objs: &[WireId]) -> WireOp {
        let obj = objs[rng.random_range(0..objs.len())];
        let key = SmolStr::new(["a", "b", "ké", ""][rng.random_range(0..4)]);
        match rng.random_range(0..9) {
            0 => WireOp::MapSet {
                obj,
                key,
                value: random_value(rng),
            },
            1 => WireOp::MapDelete { obj, key },
            2 => WireOp::Append {
                obj,
                value: random_value(rng),
            },
            3 => WireOp::ListInsert {
                obj,
                origin: match rng.random_range(0..3) {
                    0 => WireOrigin::Head,
                    1 => WireOrigin::Back(rng.random_range(1..4)),
                    _ => WireOrigin::Id(random_id(rng)),
                },
                values: (0..rng.random_range(0..4))
                    .map(|_| random_value(rng))
                    .collect(),
            },
            4 => WireOp::ListDelete {
                obj,
                runs: (0..rng.random_range(0..3))
                    .map(|_| (random_id(rng), rng.random_range(1..5)))
                    .collect(),
            },
            5 => WireOp::ListSet {
                obj,
                elem: random_id(rng),
                value: random_value(rng),
            },
            6 => WireOp::Intro {
                tag: Tag(rng.random()),
                hostname: Hostname::of(&crate::PeerId::new("host", 1)),
            },
            7 => WireOp::Tick,
            _ => WireOp::NewMap {
                entries: smallvec::smallvec![(key, random_value(rng))],
            },
        }
    }

    /// Compared as postcard bytes: a NaN is not equal to itself.
    fn bits(ops: &[WireOp]) -> Vec<u8> {
        postcard::to_allocvec(ops).unwrap()
    }

    #[test]
    fn random_operations_round_trip_and_every_cut_is_refused() {
        let mut rng = SmallRng::seed_from_u64(7);
        for round in 0..500 {
            // More objects than the recent table holds, now and then.
            let objs: Vec<WireId> = (0..rng.random_range(1..12))
                .map(|_| random_id(&mut rng))
                .collect();
            let ops: Vec<WireOp> = (0..rng.random_range(0..40))
                .map(|_| random_op(&mut rng, &objs))
                .collect();
            let packed = encode(&ops);
            let back = decode(&packed).unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert_eq!(bits(&back), bits(&ops), "round {round}");
            for cut in 0..packed.len() {
                assert!(decode(&packed[..cut]).is_err(), "round {round}, cut {cut}");
            }
            let mut longer = packed.clone();
            longer.push(0);
            assert!(decode(&longer).is_err(), "round {round}: a trailing byte");
        }
    }

    #[test]
    fn repeated_keys_objects_and_near_integers_take_few_bytes() {
        let obj = WireId { p: 0, c: 3 };
        let ops: Vec<WireOp> = (0..1000)
            .map(|i| WireOp::MapSet {
                obj,
                key: SmolStr::new(format!("k{}", i % 10)),
                value: WireValue::Int(1_000_000_000 + i),
            })
            .collect();
        let packed = encode(&ops);
        // Header, key index, value tag and a one-byte difference.
        assert!(packed.len() < 1000 * 4 + 100, "{} bytes", packed.len());
        assert!(
            packed.len() * 2 < bits(&ops).len(),
            "{} bytes",
            packed.len()
        );
    }

    #[test]
    fn hostile_tables_and_kinds_are_refused() {
        for (bytes, why) in [
            (&[1, 1 | 3 << 5][..], "an object slot not filled"),
            (&[1, 1 | 7 << 5, 0, 1, 5, 0], "a key not in the table"),
            (&[1, 9], "an unknown kind"),
            (&[1, 1 << 5], "a plain operation with an object slot"),
            (&[1, 3 | 7 << 5, 0, 1, 9], "an unknown value tag"),
            (&[1, 4 | 7 << 5, 0, 1, 3], "an unknown origin"),
            (&[200, 1], "more operations than bytes"),
        ] {
            assert!(decode(bytes).is_err(), "{why}");
        }
    }
}
