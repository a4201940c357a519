//! The relay's wire protocol, shared by [`super::connect`] and the
//! `facsimile-server` crate. You need it only to write another client or
//! relay.
//!
//! A connection carries length-delimited frames (a 4-byte big-endian length,
//! then the frame; both sides refuse frames above their configured limit).
//!
//! 1. The client's first frame is a [`ClientHello`] (postcard): the
//!    document, the shared token, the node's peer id and where it stopped
//!    reading last time ([`Resume`]).
//! 2. The relay answers with [`Down::Hello`]: a [`ServerHello::Refused`]
//!    with a reason, after which it closes the connection, or a
//!    [`ServerHello::Welcome`] that tells the client whether it can resume.
//! 3. Then the client sends [`Up`] frames (facsimile messages, to everybody
//!    or to one peer) and the relay sends [`Down`] frames: every broadcast
//!    message in the relay's total order with its position in the
//!    document's log, directed messages, and acknowledgements.
//!
//! An acknowledgement `Ack(n)` says that the first `n` frames the client
//! sent on this connection are done: applied and durable on the relay's
//! disk (or delivered, for directed ones). The client keeps every frame
//! until it is acknowledged and sends the rest again on its next connection;
//! the replicas drop what they already applied, so sending twice is safe.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Version of this protocol; a relay refuses clients of another version.
pub const PROTOCOL_VERSION: u16 = 1;

/// The default largest frame, in bytes, on both sides (16 MiB). A
/// document's state is sent to a joiner in one frame, so documents larger
/// than this need a larger limit on the relay and its clients.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// The client's first frame.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientHello {
    /// [`PROTOCOL_VERSION`].
    pub protocol: u16,
    /// The document to join (the relay serves several).
    pub document: String,
    /// The shared token (empty when the relay has none).
    pub token: String,
    /// The node's hostname.
    pub hostname: String,
    /// The node's incarnation (its tag on the wire).
    pub incarnation: u32,
    /// Where the client stopped reading on its previous connection.
    pub resume: Option<Resume>,
}

/// Where a reconnecting client stopped reading: the relay's log and the
/// last position received from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The log's identity ([`ServerHello::Welcome`]'s `log`).
    pub log: u64,
    /// The last position received.
    pub position: u64,
}

/// The relay's answer to a [`ClientHello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerHello {
    /// The client may proceed.
    Welcome {
        /// The identity of the document's log (new when its data were lost).
        log: u64,
        /// The position after which this connection's messages start: the
        /// relay sends every later message (a client that did not resume
        /// gets the state up to here from its sync).
        position: u64,
        /// The relay's own incarnation: directed messages for it are
        /// addressed to this tag.
        relay: u32,
        /// The relay sends everything after the client's resume position:
        /// nothing was missed.
        resumed: bool,
        /// The relay's replica counts the client's incarnation as a member.
        member: bool,
        /// The client's incarnation was declared gone (it disconnected, or
        /// was silent too long): its unacknowledged messages are refused
        /// and it must rejoin as a new incarnation.
        evicted: bool,
    },
    /// The client may not proceed; the relay closes the connection.
    Refused {
        /// Why, in words a user can act on.
        reason: String,
    },
}

/// A frame from the client after its hello.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Up {
    /// A message for every other node.
    Broadcast(Bytes),
    /// A message for the node of this tag only.
    To(u32, Bytes),
}

/// A frame from the relay.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Down {
    /// The answer to the client's hello (first frame only).
    Hello(ServerHello),
    /// A broadcast message and its position in the document's log.
    Message {
        /// Position in the total order (increasing, not contiguous for one
        /// client: its own messages are not sent back).
        position: u64,
        /// The facsimile message.
        bytes: Bytes,
    },
    /// A message for this client only.
    Direct(Bytes),
    /// The first `n` frames the client sent on this connection are done.
    Ack(u64),
}

/// A frame that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed relay protocol frame: {0}")]
pub struct ProtocolError(pub String);

const UP_BROADCAST: u8 = 0;
const UP_TO: u8 = 1;
const DOWN_HELLO: u8 = 0;
const DOWN_MESSAGE: u8 = 1;
const DOWN_DIRECT: u8 = 2;
const DOWN_ACK: u8 = 3;

impl ClientHello {
    /// Encodes the hello.
    pub fn encode(&self) -> Bytes {
        postcard::to_allocvec(self)
            .expect("a hello always serializes")
            .into()
    }

    /// Decodes a hello.
    ///
    /// # Errors
    /// [`ProtocolError`] when the frame is not a hello.
    pub fn decode(frame: &[u8]) -> Result<ClientHello, ProtocolError> {
        postcard::from_bytes(frame).map_err(|e| ProtocolError(format!("hello: {e}")))
    }
}

impl Up {
    /// Encodes the frame.
    pub fn encode(&self) -> Bytes {
        let mut out;
        match self {
            Up::Broadcast(b) => {
                out = BytesMut::with_capacity(1 + b.len());
                out.put_u8(UP_BROADCAST);
                out.put_slice(b);
            }
            Up::To(tag, b) => {
                out = BytesMut::with_capacity(5 + b.len());
                out.put_u8(UP_TO);
                out.put_u32_le(*tag);
                out.put_slice(b);
            }
        }
        out.freeze()
    }

    /// Decodes a frame without copying the message.
    ///
    /// # Errors
    /// [`ProtocolError`] for an unknown kind or a truncated frame.
    pub fn decode(frame: Bytes) -> Result<Up, ProtocolError> {
        match frame.first() {
            Some(&UP_BROADCAST) => Ok(Up::Broadcast(frame.slice(1..))),
            Some(&UP_TO) if frame.len() >= 5 => {
                let tag = u32::from_le_bytes(frame[1..5].try_into().expect("four bytes"));
                Ok(Up::To(tag, frame.slice(5..)))
            }
            Some(&k) => Err(ProtocolError(format!(
                "unknown or truncated client frame (kind {k}, {} bytes)",
                frame.len()
            ))),
            None => Err(ProtocolError("empty client frame".into())),
        }
    }
}

impl Down {
    /// Encodes the frame.
    pub fn encode(&self) -> Bytes {
        let mut out;
        match self {
            Down::Hello(h) => {
                out = BytesMut::new();
                out.put_u8(DOWN_HELLO);
                out.put_slice(&postcard::to_allocvec(h).expect("a hello always serializes"));
            }
            Down::Message { position, bytes } => {
                out = BytesMut::with_capacity(11 + bytes.len());
                out.put_u8(DOWN_MESSAGE);
                put_varint(&mut out, *position);
                out.put_slice(bytes);
            }
            Down::Direct(bytes) => {
                out = BytesMut::with_capacity(1 + bytes.len());
                out.put_u8(DOWN_DIRECT);
                out.put_slice(bytes);
            }
            Down::Ack(n) => {
                out = BytesMut::with_capacity(11);
                out.put_u8(DOWN_ACK);
                put_varint(&mut out, *n);
            }
        }
        out.freeze()
    }

    /// Decodes a frame without copying the message.
    ///
    /// # Errors
    /// [`ProtocolError`] for an unknown kind or a truncated frame.
    pub fn decode(frame: Bytes) -> Result<Down, ProtocolError> {
        match frame.first() {
            Some(&DOWN_HELLO) => postcard::from_bytes(&frame[1..])
                .map(Down::Hello)
                .map_err(|e| ProtocolError(format!("relay hello: {e}"))),
            Some(&DOWN_MESSAGE) => {
                let (position, used) = get_varint(&frame[1..])?;
                Ok(Down::Message {
                    position,
                    bytes: frame.slice(1 + used..),
                })
            }
            Some(&DOWN_DIRECT) => Ok(Down::Direct(frame.slice(1..))),
            Some(&DOWN_ACK) => {
                let (n, used) = get_varint(&frame[1..])?;
                if 1 + used != frame.len() {
                    return Err(ProtocolError("trailing bytes after an ack".into()));
                }
                Ok(Down::Ack(n))
            }
            Some(&k) => Err(ProtocolError(format!("unknown relay frame kind {k}"))),
            None => Err(ProtocolError("empty relay frame".into())),
        }
    }
}

fn put_varint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn get_varint(b: &[u8]) -> Result<(u64, usize), ProtocolError> {
    let mut v: u64 = 0;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok((v, i + 1));
        }
    }
    Err(ProtocolError("truncated or overlong varint".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let hello = ClientHello {
            protocol: PROTOCOL_VERSION,
            document: "doc".into(),
            token: "secret".into(),
            hostname: "alice".into(),
            incarnation: 0xdead_beef,
            resume: Some(Resume {
                log: 7,
                position: 1 << 40,
            }),
        };
        assert_eq!(ClientHello::decode(&hello.encode()).unwrap(), hello);
        for up in [
            Up::Broadcast(Bytes::from_static(b"\x01abc")),
            Up::To(42, Bytes::from_static(b"xyz")),
            Up::Broadcast(Bytes::new()),
        ] {
            assert_eq!(Up::decode(up.encode()).unwrap(), up);
        }
        for down in [
            Down::Hello(ServerHello::Refused {
                reason: "no".into(),
            }),
            Down::Hello(ServerHello::Welcome {
                log: 1,
                position: 9,
                relay: 2,
                resumed: true,
                member: false,
                evicted: false,
            }),
            Down::Message {
                position: u64::MAX,
                bytes: Bytes::from_static(b"m"),
            },
            Down::Message {
                position: 0,
                bytes: Bytes::new(),
            },
            Down::Direct(Bytes::from_static(b"d")),
            Down::Ack(300),
        ] {
            assert_eq!(Down::decode(down.encode()).unwrap(), down);
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            b"\x09",
            b"\x03\xff",
            b"\x03\x01\x00",
            b"\x01\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\x00\xff\xff",
        ] {
            assert!(
                Down::decode(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
        for bad in [&b""[..], b"\x07abc", b"\x01\x02"] {
            assert!(Up::decode(Bytes::copy_from_slice(bad)).is_err(), "{bad:?}");
        }
        assert!(ClientHello::decode(b"\xff\xff\xff").is_err());
    }
}
