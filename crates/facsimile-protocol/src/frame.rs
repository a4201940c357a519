//! The frames of the relay's protocol and their encoding.
//!
//! A connection carries frames: over TCP each behind a 4-byte big-endian
//! length, over WebSocket one binary message each. Both sides refuse frames
//! above their configured limit.
//!
//! 1. The client's first frame is a [`ClientHello`] (postcard): the
//!    document, the shared token, the node's peer id, where it stopped
//!    reading last time ([`Resume`]) and whether it only reads.
//! 2. The relay answers with [`Down::Hello`]: a [`ServerHello::Refused`]
//!    with a reason, after which it closes the connection, or a
//!    [`ServerHello::Welcome`] that tells the client whether it can resume.
//! 3. Then the client sends [`Up`] frames (facsimile messages, to everybody
//!    or to one peer) and the relay sends [`Down`] frames: every broadcast
//!    message in the relay's total order with its position in the
//!    document's log, directed messages, acknowledgements, and a
//!    [`Down::Closing`] notice before it closes a connection for something
//!    the client sent.
//!
//! An acknowledgement `Ack(n)` says that the first `n` frames the client
//! sent on this connection are done: applied and durable on the relay's
//! disk (or delivered, for directed ones). The client keeps every frame
//! until it is acknowledged and sends the rest again on its next connection;
//! the replicas drop what they already applied, so sending twice is safe.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

/// Version of this protocol. A relay serves clients of this version and of
/// every version down to [`OLDEST_PROTOCOL_VERSION`], and refuses others.
///
/// Version 2 added [`ClientHello::read_only`] and [`Down::Closing`].
pub const PROTOCOL_VERSION: u16 = 2;

/// The oldest version a relay of this version still serves.
pub const OLDEST_PROTOCOL_VERSION: u16 = 1;

/// The default largest frame, in bytes, on both sides (16 MiB). A
/// document's state is sent to a joiner in one frame, so documents larger
/// than this need a larger limit on the relay and its clients.
pub const DEFAULT_MAX_FRAME: usize = 16 << 20;

/// How often a relay's client sends a heartbeat, by default, when it has
/// sent nothing else for that long (the Rust client's
/// `ConnectOptions::failure_detection`, the CLI's clients). A relay that
/// evicts a node not heard from for less than a few of these evicts healthy
/// nodes: `facsimile serve` takes a `--peer-timeout` of at least three.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(1);

/// The most bytes a frame adds around the facsimile message it carries:
/// its kind, and a position ([`Down::Message`]) or a tag ([`Up::To`]).
pub const FRAME_OVERHEAD: usize = 1 + MAX_VARINT;

/// The largest facsimile message that frames of at most `max_frame` bytes
/// carry both ways. The relay and its clients give their replicas this
/// limit, so that a write too large for the relay to pass on is refused
/// when it is made rather than sent.
///
/// ```
/// use facsimile_protocol::{DEFAULT_MAX_FRAME, Down, max_message};
/// let message = vec![0; max_message(DEFAULT_MAX_FRAME)];
/// let frame = Down::Message { position: u64::MAX, bytes: message.into() }.encode();
/// assert_eq!(frame.len(), DEFAULT_MAX_FRAME);
/// ```
pub const fn max_message(max_frame: usize) -> usize {
    max_frame.saturating_sub(FRAME_OVERHEAD)
}

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
    /// The client only reads: the relay refuses its writes (a
    /// [`Down::Closing`] frame) instead of ordering them. Version 2; a
    /// version-1 hello is never read-only.
    pub read_only: bool,
}

/// A hello of protocol version 1: [`ClientHello`] without `read_only`.
#[derive(Deserialize)]
struct ClientHelloV1 {
    protocol: u16,
    document: String,
    token: String,
    hostname: String,
    incarnation: u32,
    resume: Option<Resume>,
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
///
/// Fields added since version 2 are appended after the postcard encoding
/// of the others, which decoders of every version read without looking
/// further: older clients skip them, and a newer client reads their
/// absence from an older relay as `None`.
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
        /// The largest frame the relay takes and sends: the client keeps
        /// its messages within [`max_message`] of it, so that a write the
        /// relay could not pass on is refused when it is made. `None` from
        /// a relay that does not say. Appended after the rest.
        #[serde(skip)]
        max_frame: Option<u64>,
        /// With `evicted`: how many frames of the incarnation's last
        /// connection the relay applied. Those its acknowledgement did not
        /// reach (cut off with the connection) are done, not lost. `None`
        /// when the relay does not know (it restarted since) or does not
        /// say. Appended after `max_frame`, which is then present.
        #[serde(skip)]
        taken: Option<u64>,
    },
    /// The client may not proceed; the relay closes the connection.
    Refused {
        /// Why, in words a user can act on.
        reason: String,
    },
}

impl ServerHello {
    fn encode_into(&self, out: &mut BytesMut) {
        out.put_slice(&postcard::to_allocvec(self).expect("a hello always serializes"));
        if let ServerHello::Welcome {
            max_frame: Some(max),
            taken,
            ..
        } = self
        {
            put_varint(out, *max);
            if let Some(taken) = taken {
                put_varint(out, *taken);
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<ServerHello, ProtocolError> {
        let (mut hello, rest) = postcard::take_from_bytes(bytes).map_err(ProtocolError::Hello)?;
        if let ServerHello::Welcome {
            max_frame, taken, ..
        } = &mut hello
        {
            // Each appended field is there or not; bytes after the last
            // known one are fields of a later version.
            let mut rest = rest;
            let mut next = || -> Result<Option<u64>, ProtocolError> {
                if rest.is_empty() {
                    return Ok(None);
                }
                let (v, used) = get_varint(rest)?;
                rest = &rest[used..];
                Ok(Some(v))
            };
            *max_frame = next()?;
            *taken = next()?;
        }
        Ok(hello)
    }
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
    /// The relay refuses what the client sent and closes the connection:
    /// why, in words a user can act on (a write from a read-only client,
    /// say). The client must not send it again. Version 2.
    Closing(String),
}

/// A frame, or a sequence of frames, that breaks the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A frame without even its kind.
    #[error("an empty frame")]
    Empty,
    /// A frame of a kind this side does not know.
    #[error("a frame of unknown kind {0}")]
    UnknownKind(u8),
    /// A frame shorter than its kind needs.
    #[error("a truncated frame of kind {kind} ({len} bytes)")]
    Truncated {
        /// The frame's kind.
        kind: u8,
        /// Its length.
        len: usize,
    },
    /// A hello that does not parse.
    #[error("a malformed hello: {0}")]
    Hello(#[source] postcard::Error),
    /// A position or a count that does not parse: cut short, or above
    /// `u64::MAX`.
    #[error("a malformed number: {0}")]
    Number(#[source] postcard::Error),
    /// A position or a count written with more bytes than it needs (every
    /// encoder writes the shortest form, so only a forger writes another).
    #[error("a number written with more bytes than it needs")]
    OverlongNumber,
    /// Bytes after an acknowledgement's count.
    #[error("trailing bytes after an acknowledgement")]
    Trailing,
    /// A closing notice whose reason is not UTF-8.
    #[error("a closing notice that is not UTF-8")]
    NotUtf8,
    /// A frame larger than this side accepts.
    #[error("a frame larger than the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The relay's first frame is not its hello.
    #[error("a {0} frame where the relay's hello was expected")]
    NotAHello(&'static str),
    /// The peer accepted the connection but answered nothing to the hello
    /// (an HTTP server waits for a request line that never comes).
    #[error("no answer to the hello within {} ms", .0.as_millis())]
    Silent(std::time::Duration),
    /// A hello after the first frame.
    #[error("a second hello")]
    SecondHello,
    /// An acknowledgement that goes back, or covers frames never sent.
    #[error(
        "an acknowledgement of the first {n} frames, with {acked} acknowledged and \
         {outstanding} more sent"
    )]
    Ack {
        /// The frames acknowledged.
        n: u64,
        /// The frames acknowledged before.
        acked: u64,
        /// The frames sent since and not acknowledged.
        outstanding: usize,
    },
}

const UP_BROADCAST: u8 = 0;
const UP_TO: u8 = 1;
const DOWN_HELLO: u8 = 0;
const DOWN_MESSAGE: u8 = 1;
const DOWN_DIRECT: u8 = 2;
const DOWN_ACK: u8 = 3;
const DOWN_CLOSING: u8 = 4;

impl ClientHello {
    /// Encodes the hello.
    pub fn encode(&self) -> Bytes {
        postcard::to_allocvec(self)
            .expect("a hello always serializes")
            .into()
    }

    /// Decodes a hello of any version (a version-1 hello has no
    /// `read_only`); the caller decides which versions it serves.
    ///
    /// # Errors
    /// [`ProtocolError::Hello`] when the frame is not a hello.
    pub fn decode(frame: &[u8]) -> Result<ClientHello, ProtocolError> {
        let (protocol, _) =
            postcard::take_from_bytes::<u16>(frame).map_err(ProtocolError::Hello)?;
        if protocol != 1 {
            return postcard::from_bytes(frame).map_err(ProtocolError::Hello);
        }
        let v1: ClientHelloV1 = postcard::from_bytes(frame).map_err(ProtocolError::Hello)?;
        Ok(ClientHello {
            protocol: v1.protocol,
            document: v1.document,
            token: v1.token,
            hostname: v1.hostname,
            incarnation: v1.incarnation,
            resume: v1.resume,
            read_only: false,
        })
    }
}

impl Up {
    /// The facsimile message the frame carries, whoever it is for.
    pub fn message(&self) -> &Bytes {
        match self {
            Up::Broadcast(m) | Up::To(_, m) => m,
        }
    }

    /// Encodes the frame.
    pub fn encode(&self) -> Bytes {
        let (kind, to, message) = match self {
            Up::Broadcast(b) => (UP_BROADCAST, None, b),
            Up::To(tag, b) => (UP_TO, Some(*tag), b),
        };
        let mut out = Vec::with_capacity(5 + message.len());
        out.push(kind);
        if let Some(tag) = to {
            out.extend_from_slice(&tag.to_le_bytes());
        }
        out.extend_from_slice(message);
        out.into()
    }

    /// How many writes (changes to the document) an encoded up frame's
    /// message carries, whose loss a flush reports
    /// ([`crate::Outbox::counting`]): a lost heartbeat or lock request loses
    /// no write, and a frame that does not decode counts as one (it is not
    /// known to lose nothing).
    pub fn writes_in(frame: &Bytes) -> u64 {
        Up::decode(frame.clone()).map_or(1, |up| {
            facsimile_core::Envelope::writes_in(up.message()).unwrap_or(1)
        })
    }

    /// Whether an encoded up frame's message went out as the node's
    /// incarnation `incarnation` (its frames an eviction of that
    /// incarnation drops: [`crate::Outbox::count_lost_while`]).
    pub fn sent_as(frame: &Bytes, incarnation: u32) -> bool {
        Up::decode(frame.clone()).is_ok_and(|up| {
            facsimile_core::Envelope::peek(up.message()).is_ok_and(|e| e.from == incarnation)
        })
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
            Some(&UP_TO) => Err(ProtocolError::Truncated {
                kind: UP_TO,
                len: frame.len(),
            }),
            Some(&k) => Err(ProtocolError::UnknownKind(k)),
            None => Err(ProtocolError::Empty),
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
                h.encode_into(&mut out);
            }
            Down::Message { position, bytes } => {
                out = BytesMut::with_capacity(1 + MAX_VARINT + bytes.len());
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
                out = BytesMut::with_capacity(1 + MAX_VARINT);
                out.put_u8(DOWN_ACK);
                put_varint(&mut out, *n);
            }
            Down::Closing(reason) => {
                out = BytesMut::with_capacity(1 + reason.len());
                out.put_u8(DOWN_CLOSING);
                out.put_slice(reason.as_bytes());
            }
        }
        out.freeze()
    }

    /// Decodes a frame without copying the message.
    ///
    /// # Errors
    /// [`ProtocolError`] for an unknown kind, a truncated frame or a
    /// malformed number.
    pub fn decode(frame: Bytes) -> Result<Down, ProtocolError> {
        match frame.first() {
            Some(&DOWN_HELLO) => ServerHello::decode(&frame[1..]).map(Down::Hello),
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
                    return Err(ProtocolError::Trailing);
                }
                Ok(Down::Ack(n))
            }
            Some(&DOWN_CLOSING) => std::str::from_utf8(&frame[1..])
                .map(|reason| Down::Closing(reason.to_string()))
                .map_err(|_| ProtocolError::NotUtf8),
            Some(&k) => Err(ProtocolError::UnknownKind(k)),
            None => Err(ProtocolError::Empty),
        }
    }

    /// Whether an encoded frame is a facsimile message for the node
    /// ([`Down::Message`] or [`Down::Direct`]), which changes nothing of
    /// what the client sent: a client may apply a run of them together,
    /// before the frame that follows.
    pub fn is_message(frame: &[u8]) -> bool {
        matches!(frame.first(), Some(&(DOWN_MESSAGE | DOWN_DIRECT)))
    }

    /// The frame's kind, in words.
    pub fn kind(&self) -> &'static str {
        match self {
            Down::Hello(_) => "hello",
            Down::Message { .. } => "message",
            Down::Direct(_) => "directed message",
            Down::Ack(_) => "acknowledgement",
            Down::Closing(_) => "closing notice",
        }
    }
}

/// The longest varint of a `u64`.
const MAX_VARINT: usize = 10;

/// Writes `v` as postcard writes a `u64`: seven bits a byte, low bits
/// first, the shortest form.
fn put_varint(out: &mut BytesMut, v: u64) {
    let mut buf = [0u8; MAX_VARINT];
    let used = postcard::to_slice(&v, &mut buf).expect("a u64 fits ten bytes");
    out.put_slice(used);
}

/// Reads a varint written by [`put_varint`]; returns it and its length.
/// Refuses a longer form than the shortest, so that one number has one
/// encoding.
fn get_varint(b: &[u8]) -> Result<(u64, usize), ProtocolError> {
    let (v, rest) = postcard::take_from_bytes::<u64>(b).map_err(ProtocolError::Number)?;
    let used = b.len() - rest.len();
    let shortest = (64 - v.leading_zeros() as usize).div_ceil(7).max(1);
    if used != shortest {
        return Err(ProtocolError::OverlongNumber);
    }
    Ok((v, used))
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
            read_only: true,
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
                max_frame: None,
                taken: None,
            }),
            Down::Hello(ServerHello::Welcome {
                log: u64::MAX,
                position: 0,
                relay: u32::MAX,
                resumed: false,
                member: true,
                evicted: true,
                max_frame: Some(u64::MAX),
                taken: None,
            }),
            Down::Hello(ServerHello::Welcome {
                log: 4,
                position: 5,
                relay: 6,
                resumed: false,
                member: false,
                evicted: true,
                max_frame: Some(1 << 20),
                taken: Some(3),
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
            Down::Closing("this connection only reads".into()),
            Down::Closing(String::new()),
        ] {
            assert_eq!(Down::decode(down.encode()).unwrap(), down);
        }
    }

    /// A relay of version 2 still reads the hellos of version-1 clients,
    /// which have no `read_only`.
    #[test]
    fn version_one_hellos_are_read() {
        #[derive(Serialize)]
        struct V1<'a>(u16, &'a str, &'a str, &'a str, u32, Option<Resume>);
        let resume = Some(Resume {
            log: 3,
            position: 4,
        });
        let v1 = postcard::to_allocvec(&V1(1, "doc", "t", "bob", 9, resume)).unwrap();
        let hello = ClientHello::decode(&v1).unwrap();
        assert_eq!(
            hello,
            ClientHello {
                protocol: 1,
                document: "doc".into(),
                token: "t".into(),
                hostname: "bob".into(),
                incarnation: 9,
                resume,
                read_only: false,
            }
        );
        // A version-2 hello cut before its last field is not a hello.
        let mut v2 = ClientHello {
            protocol: 2,
            ..hello
        }
        .encode()
        .to_vec();
        v2.pop();
        assert!(ClientHello::decode(&v2).is_err());
    }

    /// The relay's frame limit, appended to the welcome, is skipped by a
    /// client that decodes the welcome of version 2; a welcome with bytes
    /// after it (a later version's fields) still reads.
    #[test]
    fn fields_appended_to_the_welcome_are_skipped_by_older_clients() {
        #[derive(Deserialize, Debug, PartialEq)]
        enum V2 {
            Welcome {
                log: u64,
                position: u64,
                relay: u32,
                resumed: bool,
                member: bool,
                evicted: bool,
            },
        }
        let frame = Down::Hello(ServerHello::Welcome {
            log: 3,
            position: 4,
            relay: 5,
            resumed: true,
            member: true,
            evicted: false,
            max_frame: Some(1 << 20),
            taken: None,
        })
        .encode();
        assert_eq!(frame[0], DOWN_HELLO);
        assert_eq!(
            postcard::from_bytes::<V2>(&frame[1..]).unwrap(),
            V2::Welcome {
                log: 3,
                position: 4,
                relay: 5,
                resumed: true,
                member: true,
                evicted: false,
            }
        );
        let mut later = frame.to_vec();
        later.extend_from_slice(b"\x07more");
        let Down::Hello(ServerHello::Welcome { max_frame, .. }) =
            Down::decode(later.into()).unwrap()
        else {
            panic!("a welcome");
        };
        assert_eq!(max_frame, Some(1 << 20));
        // A limit cut short is an error, not a guess.
        let mut cut = frame.to_vec();
        cut.pop();
        assert!(Down::decode(cut.into()).is_err());
    }

    /// Every prefix of a welcome, and every one-byte change to it, decodes
    /// or is refused without a panic.
    #[test]
    fn a_damaged_welcome_never_panics() {
        let frame = Down::Hello(ServerHello::Welcome {
            log: u64::MAX,
            position: 1 << 40,
            relay: 9,
            resumed: true,
            member: false,
            evicted: false,
            max_frame: Some(16 << 20),
            taken: None,
        })
        .encode();
        for len in 0..frame.len() {
            let _ = Down::decode(frame.slice(..len));
        }
        for at in 0..frame.len() {
            for b in 0..=u8::MAX {
                let mut bad = frame.to_vec();
                bad[at] = b;
                let _ = Down::decode(bad.into());
            }
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
            b"\x04\xff\xfe",
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

    /// The numbers are written as the hand-written encoder of protocol 1
    /// wrote them, so relays and clients of either kind understand each
    /// other.
    #[test]
    fn numbers_keep_their_wire_form() {
        for (n, wire) in [
            (0, &b"\x00"[..]),
            (1, b"\x01"),
            (127, b"\x7f"),
            (128, b"\x80\x01"),
            (300, b"\xac\x02"),
            (1 << 40, b"\x80\x80\x80\x80\x80\x20"),
            (u64::MAX, b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01"),
        ] {
            let frame = Down::Ack(n).encode();
            assert_eq!(&frame[1..], wire, "{n}");
            assert_eq!(Down::decode(frame).unwrap(), Down::Ack(n));
        }
    }

    #[test]
    fn numbers_too_long_or_too_large_are_refused() {
        for (bad, expected) in [
            // The tenth byte holds a single bit of a u64.
            (
                &b"\x03\xff\xff\xff\xff\xff\xff\xff\xff\xff\x02"[..],
                ProtocolError::Number(postcard::Error::DeserializeBadVarint),
            ),
            // Eleven bytes.
            (
                b"\x03\x80\x80\x80\x80\x80\x80\x80\x80\x80\x80\x00",
                ProtocolError::Number(postcard::Error::DeserializeBadVarint),
            ),
            // 0 and 1 with a needless continuation byte.
            (b"\x03\x80\x00", ProtocolError::OverlongNumber),
            (b"\x01\x81\x00message", ProtocolError::OverlongNumber),
            (
                b"\x03\x80",
                ProtocolError::Number(postcard::Error::DeserializeUnexpectedEnd),
            ),
        ] {
            assert_eq!(
                Down::decode(Bytes::copy_from_slice(bad)),
                Err(expected),
                "{bad:?}"
            );
        }
    }
}
