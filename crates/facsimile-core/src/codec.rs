//! Wire encodings: a compact binary envelope by default, JSON for debugging.
//!
//! Binary: one version byte, then the message in postcard (varint integers,
//! length-prefixed strings). JSON: the same message as a JSON object whose
//! first field, `v`, is the version (one without it is of version 1); it
//! starts with `{`, which no binary version byte is, so a receiver accepts
//! either without being told which.

use crate::error::ReceiveError;
use crate::wire::Frame;

mod fast;
pub(crate) mod packed;

/// The binary wire version this build speaks.
pub const VERSION: u8 = 1;

/// How outgoing messages are encoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WireFormat {
    /// Compact binary (the default).
    #[default]
    Binary,
    /// JSON, for reading messages while debugging.
    Json,
}

/// Encodes a [`Frame`], or a type that serializes as one.
pub(crate) fn encode<F: serde::Serialize>(frame: &F, format: WireFormat) -> Vec<u8> {
    match format {
        WireFormat::Binary => {
            let mut out = Vec::with_capacity(32);
            out.push(VERSION);
            out = postcard::to_extend(frame, out).expect("encoding into a Vec cannot fail");
            out
        }
        WireFormat::Json => serde_json::to_vec(frame).expect("wire types always serialize"),
    }
}

/// Encodes into `out`, replacing its contents (its capacity is reused).
pub(crate) fn encode_into(frame: &Frame, format: WireFormat, out: &mut Vec<u8>) {
    out.clear();
    match format {
        WireFormat::Binary => {
            if fast::encode(frame, out) {
                return;
            }
            out.push(VERSION);
            let buf = std::mem::take(out);
            *out = postcard::to_extend(frame, buf).expect("encoding into a Vec cannot fail");
        }
        WireFormat::Json => {
            serde_json::to_writer(&mut *out, frame).expect("wire types always serialize")
        }
    }
}

/// Encodes into `out` (cleared first) the operations message `seq` of
/// `from` holding `tick` and the one operation `op`, as [`encode_into`]
/// encodes that frame, when the fast path takes it (a map set or an
/// append of a scalar, in binary). Returns false, with `out` untouched,
/// otherwise.
pub(crate) fn encode_one_into(
    from: crate::wire::Tag,
    seq: u64,
    tick: u64,
    op: &crate::wire::WireOp,
    format: WireFormat,
    out: &mut Vec<u8>,
) -> bool {
    format == WireFormat::Binary && fast::encode_op(from, seq, tick, op, out)
}

/// Encodes into `out` (cleared first) the binary operations message
/// `seq` of `from` holding `tick` and the operations `ops` wrote: the bytes
/// [`encode_into`] gives for the same frame with its operations listed.
pub(crate) fn encode_packed_into(
    from: crate::wire::Tag,
    seq: u64,
    tick: u64,
    ops: &packed::PackedWriter,
    out: &mut Vec<u8>,
) {
    fast::encode_packed(from, seq, tick, ops, out);
}

pub(crate) fn decode(bytes: &[u8], max: usize) -> Result<Frame, ReceiveError> {
    if bytes.len() <= max {
        if let Some(frame) = fast::decode(bytes) {
            return Ok(frame);
        }
    }
    decode_serde(bytes, max)
}

/// Panics unless whatever the fast path reads from `bytes`, the serde path
/// reads alike.
#[cfg(feature = "sim")]
pub(crate) fn check_paths_agree(bytes: &[u8]) {
    if let Some(fast) = fast::decode(bytes) {
        let slow = decode_serde(bytes, usize::MAX).expect("the serde path reads it too");
        // Compared as bytes: a NaN is not equal to itself.
        let bits = |f: &Frame| postcard::to_allocvec(f).expect("wire types always serialize");
        assert_eq!(bits(&fast), bits(&slow), "the decoding paths disagree");
    }
}

/// [`decode`] through serde alone: what the fast path must agree with.
pub(crate) fn decode_serde(bytes: &[u8], max: usize) -> Result<Frame, ReceiveError> {
    let frame = deserialize(bytes, max)?;
    crate::wire::check_limits(&frame)
        .map_err(|reason| ReceiveError::invalid(frame.from.0, reason))?;
    Ok(frame)
}

fn deserialize(bytes: &[u8], max: usize) -> Result<Frame, ReceiveError> {
    if bytes.len() > max {
        return Err(ReceiveError::TooLarge {
            size: bytes.len(),
            max,
        });
    }
    match bytes.first() {
        None => Err(ReceiveError::Empty),
        Some(b'{') => serde_json::from_slice(bytes).map_err(|e| {
            // A later version's message need not parse as this one's: its
            // version decides the error.
            match crate::wire::json_version(bytes) {
                Some(v) if v != u64::from(VERSION) => {
                    ReceiveError::UnsupportedVersion(u8::try_from(v).unwrap_or(u8::MAX))
                }
                _ => ReceiveError::Malformed(e.to_string()),
            }
        }),
        Some(&VERSION) => {
            let (frame, rest) = postcard::take_from_bytes::<Frame>(&bytes[1..])
                .map_err(|e| ReceiveError::Malformed(e.to_string()))?;
            if !rest.is_empty() {
                return Err(ReceiveError::Malformed(format!(
                    "{} trailing bytes after the message",
                    rest.len()
                )));
            }
            Ok(frame)
        }
        Some(&v) => Err(ReceiveError::UnsupportedVersion(v)),
    }
}

/// Encodes a value that is not a message (canonical snapshots).
pub(crate) fn encode_plain<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut out = vec![VERSION];
    out = postcard::to_extend(value, out).expect("encoding into a Vec cannot fail");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::*;

    fn sample() -> Frame {
        Frame {
            from: Tag(0xdead_beef),
            msg: Message::Sequenced {
                seq: 3,
                body: Sequenced::Ops {
                    tick: 40,
                    ops: smallvec::smallvec![
                        WireOp::Intro {
                            tag: Tag(7),
                            hostname: Hostname::of(&crate::PeerId::new("b", 7)),
                        },
                        WireOp::MapSet {
                            obj: WireId { p: 1, c: 2 },
                            key: "k".into(),
                            value: WireValue::Bytes(vec![1, 2, 3]),
                        },
                    ],
                },
            },
        }
    }

    #[test]
    fn one_operation_messages_take_the_short_forms() {
        let op = WireOp::Append {
            obj: WireId { p: 0, c: 2 },
            value: WireValue::Int(5),
        };
        let from = Tag(1);
        for (tick, body) in [(9, index::body::OP), (1, index::body::NEXT)] {
            let frame = Frame {
                from,
                msg: Message::Sequenced {
                    seq: 4,
                    body: Sequenced::Ops {
                        tick,
                        ops: smallvec::smallvec![op.clone()],
                    },
                },
            };
            let binary = encode(&frame, WireFormat::Binary);
            assert_eq!(u32::from(binary[5]), body, "tick {tick}");
            for format in [WireFormat::Binary, WireFormat::Json] {
                let bytes = encode(&frame, format);
                assert_eq!(decode(&bytes, 1 << 20).unwrap(), frame);
                assert_eq!(decode_serde(&bytes, 1 << 20).unwrap(), frame);
            }
        }
    }

    #[test]
    fn binary_and_json_round_trip() {
        for format in [WireFormat::Binary, WireFormat::Json] {
            let bytes = encode(&sample(), format);
            assert_eq!(decode(&bytes, 1 << 20).unwrap(), sample());
        }
    }

    #[test]
    fn bad_envelopes_are_typed_errors() {
        assert_eq!(decode(&[], 10), Err(ReceiveError::Empty));
        assert_eq!(
            decode(&[9, 1], 10),
            Err(ReceiveError::UnsupportedVersion(9))
        );
        assert!(matches!(
            decode(&[0; 11], 10),
            Err(ReceiveError::TooLarge { .. })
        ));
        let mut bytes = encode(&sample(), WireFormat::Binary);
        bytes.truncate(bytes.len() - 1);
        assert!(matches!(
            decode(&bytes, 1 << 20),
            Err(ReceiveError::Malformed(_))
        ));
        let mut bytes = encode(&sample(), WireFormat::Binary);
        bytes.push(0);
        assert!(matches!(
            decode(&bytes, 1 << 20),
            Err(ReceiveError::Malformed(_))
        ));
    }

    #[test]
    fn a_huge_length_header_does_not_allocate() {
        // An Ops message claiming 2^62 operations and then a gigabyte string.
        let mut bytes = vec![VERSION, 1, 0, 0, 0, 1, 1, 1];
        bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f]);
        bytes.extend_from_slice(&[4, 0, 0, 0, 0x80, 0x80, 0x80, 0x80, 0x04]);
        assert!(matches!(
            decode(&bytes, 1 << 20),
            Err(ReceiveError::Malformed(_))
        ));
    }
    /// Operations encoded as they come give the bytes of the message
    /// holding them, and read back as them.
    #[test]
    fn streamed_packed_operations_match_the_frame() {
        let mut ops: crate::wire::Ops = smallvec::SmallVec::new();
        for i in 0..300u64 {
            ops.push(match i % 5 {
                0 => WireOp::NewMap {
                    entries: smallvec::smallvec![("v".into(), WireValue::Int(i as i64))],
                },
                1 => WireOp::MapSet {
                    obj: WireId { p: 0, c: i % 9 },
                    key: format!("c{}", i % 13).into(),
                    value: WireValue::Ref(WireId { p: 0, c: i - 1 }),
                },
                2 => WireOp::Intro {
                    tag: Tag(i as u32),
                    hostname: Hostname::of(&crate::PeerId::new("b", i as u32)),
                },
                3 => WireOp::Append {
                    obj: WireId { p: 1, c: 2 },
                    value: WireValue::Str("s".into()),
                },
                _ => WireOp::MapDelete {
                    obj: WireId { p: 0, c: 3 },
                    key: "c1".into(),
                },
            });
        }
        let mut writer = packed::PackedWriter::default();
        for op in &ops {
            writer.push(op);
        }
        assert_eq!(writer.len(), ops.len());
        let mut streamed = Vec::new();
        encode_packed_into(Tag(0xdead_beef), 300, 77, &writer, &mut streamed);
        let frame = Frame {
            from: Tag(0xdead_beef),
            msg: Message::Sequenced {
                seq: 300,
                body: Sequenced::Ops { tick: 77, ops },
            },
        };
        let mut whole = Vec::new();
        encode_into(&frame, WireFormat::Binary, &mut whole);
        assert_eq!(streamed, whole);
        assert_eq!(decode(&streamed, usize::MAX), Ok(frame));
    }
}
