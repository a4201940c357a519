//! The binary form of the most common message, written and read without
//! serde: one operation (a map set or an append) with a scalar value, in an
//! operations message of one operation. Most of a live document's traffic is this
//! message, and serde's generic machinery cost more than the rest of its
//! decoding.
//!
//! The bytes are exactly postcard's for the same [`Frame`]. Reading accepts
//! only canonical encodings of that shape and leaves everything else, valid
//! or not, to the serde path, so both paths agree on every input (the
//! `decode` fuzz target checks it).

use smallvec::SmallVec;
use smol_str::SmolStr;

use super::VERSION;
use crate::wire::index::body::{NEXT as BODY_NEXT, OP as BODY_OP, PACKED as BODY_PACKED};
use crate::wire::index::op::{APPEND as OP_APPEND, MAP_SET as OP_MAP_SET};
use crate::wire::index::value::{
    BOOL as VALUE_BOOL, FLOAT as VALUE_FLOAT, INT as VALUE_INT, NULL as VALUE_NULL,
    STR as VALUE_STR,
};
use crate::wire::{Frame, Message, Sequenced, Tag, WireId, WireOp, WireValue};

/// Writes `frame` into `out` (emptied first) when it has the fast shape.
/// Returns false, with `out` untouched, otherwise.
pub(super) fn encode(frame: &Frame, out: &mut Vec<u8>) -> bool {
    match &frame.msg {
        Message::Sequenced {
            seq,
            body: Sequenced::Ops { tick, ops },
        } if ops.len() == 1 => encode_op(frame.from, *seq, *tick, &ops[0], out),
        _ => false,
    }
}

/// Writes the operations message `seq` of `from` holding `tick` and the
/// one operation `op` into `out` (emptied first) when it has the fast
/// shape: the bytes [`encode`] writes for that frame. Returns false, with
/// `out` untouched, otherwise.
pub(super) fn encode_op(from: Tag, seq: u64, tick: u64, op: &WireOp, out: &mut Vec<u8>) -> bool {
    let (body, tick) = match tick {
        1 => (BODY_NEXT, None),
        _ => (BODY_OP, Some(tick)),
    };
    let (kind, obj, key, value) = match op {
        WireOp::MapSet { obj, key, value } => (OP_MAP_SET, obj, Some(key), value),
        WireOp::Append { obj, value } => (OP_APPEND, obj, None, value),
        _ => return false,
    };
    let value_kind = match value {
        WireValue::Null => VALUE_NULL,
        WireValue::Bool(_) => VALUE_BOOL,
        WireValue::Int(_) => VALUE_INT,
        WireValue::Float(_) => VALUE_FLOAT,
        WireValue::Str(_) => VALUE_STR,
        _ => return false,
    };
    out.clear();
    out.push(VERSION);
    out.extend_from_slice(&from.0.to_le_bytes());
    varint(out, body.into());
    varint(out, seq);
    if let Some(tick) = tick {
        varint(out, tick);
    }
    varint(out, kind.into());
    id(out, *obj);
    if let Some(key) = key {
        str(out, key);
    }
    varint(out, value_kind.into());
    match value {
        WireValue::Bool(b) => out.push(u8::from(*b)),
        WireValue::Int(i) => varint(out, zigzag(*i)),
        WireValue::Float(f) => out.extend_from_slice(&f.to_le_bytes()),
        WireValue::Str(s) => str(out, s),
        // Null carries nothing; other values were refused above.
        _ => {}
    }
    true
}

/// Writes a packed operations message (`seq`, `tick` and the operations
/// `ops` wrote) as postcard writes the frame that holds them.
pub(super) fn encode_packed(
    from: Tag,
    seq: u64,
    tick: u64,
    ops: &super::packed::PackedWriter,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.push(VERSION);
    out.extend_from_slice(&from.0.to_le_bytes());
    varint(out, BODY_PACKED.into());
    varint(out, seq);
    varint(out, tick);
    ops.finish_bytes(out);
}

#[inline]
pub(super) fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `v` with its sign in the lowest bit, so that small negative numbers
/// are short varints too.
#[inline]
pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
pub(super) fn id(out: &mut Vec<u8>, id: WireId) {
    varint(out, id.p.into());
    varint(out, id.c);
}

#[inline]
pub(super) fn str(out: &mut Vec<u8>, s: &str) {
    varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

/// Reads a whole message of the fast shape. `None` for anything else.
pub(super) fn decode(bytes: &[u8]) -> Option<Frame> {
    let mut r = Reader(bytes);
    if r.byte()? != VERSION {
        return None;
    }
    let from = Tag(u32::from_le_bytes(r.take(4)?.try_into().ok()?));
    let (seq, tick) = match r.u32()? {
        BODY_NEXT => (r.u64()?, 1),
        BODY_OP => (r.u64()?, r.u64()?),
        _ => return None,
    };
    let kind = r.u32()?;
    let obj = WireId {
        p: r.u32()?,
        c: r.u64()?,
    };
    let key = match kind {
        OP_MAP_SET => Some(r.str()?),
        OP_APPEND => None,
        _ => return None,
    };
    let value = match r.u32()? {
        VALUE_NULL => WireValue::Null,
        VALUE_BOOL => match r.byte()? {
            0 => WireValue::Bool(false),
            1 => WireValue::Bool(true),
            _ => return None,
        },
        VALUE_INT => {
            let z = r.u64()?;
            WireValue::Int((z >> 1) as i64 ^ -((z & 1) as i64))
        }
        VALUE_FLOAT => WireValue::Float(f64::from_le_bytes(r.take(8)?.try_into().ok()?)),
        VALUE_STR => WireValue::Str(r.str()?),
        _ => return None,
    };
    if !r.0.is_empty() {
        return None;
    }
    let op = match key {
        Some(key) => WireOp::MapSet { obj, key, value },
        None => WireOp::Append { obj, value },
    };
    Some(Frame {
        from,
        msg: Message::Sequenced {
            seq,
            body: Sequenced::Ops {
                tick,
                ops: SmallVec::from_buf([op]),
            },
        },
    })
}

pub(super) struct Reader<'a>(pub(super) &'a [u8]);

impl<'a> Reader<'a> {
    #[inline]
    pub(super) fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    /// A canonical varint of at most `max` bits: no trailing zero byte, no
    /// bits beyond `max`.
    #[inline]
    fn varint(&mut self, max: u32) -> Option<u64> {
        // Counters, sequence numbers and variants mostly take one byte.
        match self.0.split_first() {
            Some((&b, rest)) if b < 0x80 => {
                self.0 = rest;
                Some(b.into())
            }
            _ => self.long_varint(max),
        }
    }

    /// [`Reader::varint`] past its first byte. Nothing is consumed when it
    /// fails (every caller gives up then).
    fn long_varint(&mut self, max: u32) -> Option<u64> {
        let mut v = 0u64;
        for (i, &b) in self.0.iter().enumerate() {
            let shift = 7 * i as u32;
            let bits = u64::from(b & 0x7F);
            if shift >= max || (max - shift < 7 && bits >> (max - shift) != 0) {
                return None;
            }
            v |= bits << shift;
            if b < 0x80 {
                // A last byte of zero after the first is not canonical.
                if i > 0 && b == 0 {
                    return None;
                }
                self.0 = &self.0[i + 1..];
                return Some(v);
            }
        }
        None
    }

    #[inline]
    pub(super) fn u32(&mut self) -> Option<u32> {
        self.varint(32).map(|v| v as u32)
    }

    #[inline]
    pub(super) fn u64(&mut self) -> Option<u64> {
        self.varint(64)
    }

    pub(super) fn str(&mut self) -> Option<SmolStr> {
        let len = usize::try_from(self.u64()?).ok()?;
        let s = std::str::from_utf8(self.take(len)?).ok()?;
        Some(SmolStr::new(s))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    /// A scalar value, extremes included.
    pub(in crate::codec) fn random_value(rng: &mut SmallRng) -> WireValue {
        match rng.random_range(0..6) {
            0 => WireValue::Null,
            1 => WireValue::Bool(rng.random()),
            2 => WireValue::Int(match rng.random_range(0..4) {
                0 => i64::MIN,
                1 => i64::MAX,
                2 => rng.random_range(-300..300),
                _ => rng.random(),
            }),
            3 => WireValue::Float(f64::from_bits(rng.random())),
            4 => WireValue::Str("ké".repeat(rng.random_range(0..100)).into()),
            _ => WireValue::Bytes(vec![1, 2]),
        }
    }

    fn random_frame(rng: &mut SmallRng) -> Frame {
        let big = |rng: &mut SmallRng| match rng.random_range(0..3) {
            0 => rng.random_range(0..200),
            1 => u64::MAX,
            _ => rng.random(),
        };
        let obj = WireId {
            p: if rng.random() { 0 } else { rng.random() },
            c: big(rng),
        };
        let value = random_value(rng);
        let op = match rng.random_range(0..3) {
            0 => WireOp::Append { obj, value },
            1 => WireOp::MapSet {
                obj,
                key: "k".repeat(rng.random_range(0..40)).into(),
                value,
            },
            _ => WireOp::Lock { obj },
        };
        let seq = big(rng);
        let body = match rng.random_range(0..3) {
            0 => Sequenced::Ops {
                tick: 1,
                ops: SmallVec::from_buf([op]),
            },
            1 => Sequenced::Ops {
                tick: big(rng),
                ops: SmallVec::from_buf([op]),
            },
            _ => Sequenced::Goodbye,
        };
        Frame {
            from: Tag(rng.random()),
            msg: Message::Sequenced { seq, body },
        }
    }

    /// The serde path's reading, as bytes (a NaN is not equal to itself).
    fn slow(bytes: &[u8]) -> Option<Vec<u8>> {
        super::super::decode_serde(bytes, usize::MAX)
            .ok()
            .map(|f| postcard::to_allocvec(&f).unwrap())
    }

    fn fast(bytes: &[u8]) -> Option<Vec<u8>> {
        decode(bytes).map(|f| postcard::to_allocvec(&f).unwrap())
    }

    #[test]
    fn writes_what_postcard_writes_and_reads_it_back() {
        let mut rng = SmallRng::seed_from_u64(7);
        let mut fast_shapes = 0;
        for _ in 0..20_000 {
            let frame = random_frame(&mut rng);
            let mut want = vec![VERSION];
            want = postcard::to_extend(&frame, want).unwrap();
            let mut out = vec![9, 9];
            if encode(&frame, &mut out) {
                fast_shapes += 1;
                assert_eq!(out, want, "{frame:?}");
                assert!(fast(&out).is_some(), "{frame:?}");
                assert_eq!(fast(&out), slow(&out), "{frame:?}");
            } else {
                assert_eq!(out, [9, 9], "a refused shape leaves the buffer alone");
                assert_eq!(decode(&want), None, "{frame:?}");
            }
        }
        assert!(fast_shapes > 5_000, "{fast_shapes}");
    }

    #[test]
    fn reads_nothing_the_serde_path_would_read_differently() {
        // Every frame of the fast shape, corrupted byte by byte: whatever
        // the fast path accepts, the serde path reads alike.
        let mut rng = SmallRng::seed_from_u64(11);
        let mut accepted = 0;
        for _ in 0..2_000 {
            let frame = random_frame(&mut rng);
            let mut bytes = Vec::new();
            if !encode(&frame, &mut bytes) {
                continue;
            }
            for _ in 0..20 {
                let mut b = bytes.clone();
                match rng.random_range(0..3) {
                    0 => {
                        let i = rng.random_range(0..b.len());
                        b[i] = rng.random();
                    }
                    1 => b.truncate(rng.random_range(0..b.len())),
                    _ => b.push(rng.random()),
                }
                if let Some(f) = fast(&b) {
                    accepted += 1;
                    assert_eq!(Some(f), slow(&b), "{b:?}");
                }
            }
        }
        assert!(accepted > 1_000, "{accepted}");
    }

    #[test]
    fn overlong_and_overflowing_varints_are_left_to_serde() {
        // Next, seq 1, Append, obj (0, 2), Int 3, with the seq re-encoded.
        let msg = |seq: &[u8]| {
            let mut b = vec![VERSION, 1, 0, 0, 0, BODY_NEXT as u8];
            b.extend_from_slice(seq);
            b.extend_from_slice(&[OP_APPEND as u8, 0, 2, VALUE_INT as u8, 6]);
            b
        };
        assert!(decode(&msg(&[1])).is_some());
        assert_eq!(decode(&msg(&[0x81, 0x00])), None);
        let mut max = vec![0xFF; 9];
        max.push(0x01);
        assert!(decode(&msg(&max)).is_some());
        let mut over = vec![0xFF; 9];
        over.push(0x02);
        assert_eq!(decode(&msg(&over)), None);
        assert_eq!(slow(&msg(&over)), None);
    }
}
