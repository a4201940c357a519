//! A message's envelope — sender, recipient, stream position — read without
//! applying the message, for transports that route, authenticate or
//! account for messages (the relay binds each connection to the tags it
//! sends from, and evicts them when the connection drops).

use serde::Deserialize;

use crate::codec::{self, VERSION};
use crate::error::ReceiveError;
use crate::wire::Tag;

/// Who sent a message, to whom, and where it stands in its sender's stream,
/// read without applying it (see [`Envelope::peek`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Envelope {
    /// The sender's tag ([`crate::PeerId::incarnation`]).
    pub from: u32,
    /// The recipient's tag, for a directed message (a sync answer, a
    /// retransmission request); `None` for a broadcast.
    pub to: Option<u32>,
    /// The message's position in its sender's stream, for a sequenced
    /// (broadcast) message.
    pub seq: Option<u64>,
}

/// The head of a binary message: the sender and the first field of each
/// body variant, which is the sequence number or the recipient. Postcard is
/// not self-describing, so the variants must stay in the order of
/// [`crate::wire::Body`]; the tests below check every one.
#[derive(Deserialize)]
struct Head {
    from: Tag,
    body: HeadBody,
}

#[derive(Deserialize)]
enum HeadBody {
    Hello { seq: u64 },
    Ops { seq: u64 },
    GcAck { seq: u64 },
    Goodbye { seq: u64 },
    SyncRequest { seq: u64 },
    Joined { seq: u64 },
    SyncOffer { seq: u64 },
    SyncFetch { to: Tag },
    SyncAnswer { to: Tag },
    Welcome { to: Tag },
    Resend { to: Tag },
    ResendGone { to: Tag },
    Op { seq: u64 },
    Next { seq: u64 },
}

impl Envelope {
    /// Reads the envelope of an encoded message. A binary message is read
    /// only as far as its first field (a few bytes); a JSON one is decoded
    /// whole. Passing the envelope's check does not make a message valid:
    /// [`crate::Replica::handle_message`] still checks everything.
    ///
    /// # Errors
    /// [`ReceiveError::Empty`], [`ReceiveError::UnsupportedVersion`] or
    /// [`ReceiveError::Malformed`] when the bytes do not start like a
    /// message.
    ///
    /// # Example
    /// ```
    /// use facsimile_core::{Config, Envelope, PeerId, Replica};
    ///
    /// let mut a = Replica::new(PeerId::new("a", 7), Config::default());
    /// let hello = a.poll_transmit().expect("a replica announces itself");
    /// let env = Envelope::peek(&hello.bytes)?;
    /// assert_eq!((env.from, env.to, env.seq), (7, None, Some(1)));
    /// # Ok::<(), facsimile_core::ReceiveError>(())
    /// ```
    pub fn peek(bytes: &[u8]) -> Result<Envelope, ReceiveError> {
        match bytes.first() {
            None => Err(ReceiveError::Empty),
            Some(b'{') => {
                let frame = codec::decode(bytes, usize::MAX)?;
                Ok(Envelope {
                    from: frame.from.0,
                    to: frame.body.to().map(|t| t.0),
                    seq: frame.body.seq(),
                })
            }
            Some(&VERSION) => {
                let (head, _) = postcard::take_from_bytes::<Head>(&bytes[1..])
                    .map_err(|e| ReceiveError::Malformed(e.to_string()))?;
                let (to, seq) = match head.body {
                    HeadBody::Hello { seq }
                    | HeadBody::Ops { seq }
                    | HeadBody::Op { seq }
                    | HeadBody::Next { seq }
                    | HeadBody::GcAck { seq }
                    | HeadBody::Goodbye { seq }
                    | HeadBody::SyncRequest { seq }
                    | HeadBody::Joined { seq }
                    | HeadBody::SyncOffer { seq } => (None, Some(seq)),
                    HeadBody::SyncFetch { to }
                    | HeadBody::SyncAnswer { to }
                    | HeadBody::Welcome { to }
                    | HeadBody::Resend { to }
                    | HeadBody::ResendGone { to } => (Some(to.0), None),
                };
                Ok(Envelope {
                    from: head.from.0,
                    to,
                    seq,
                })
            }
            Some(&v) => Err(ReceiveError::UnsupportedVersion(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{WireFormat, encode};
    use crate::wire::{Body, Frame, WireOp};
    use crate::{Config, PeerId, Replica};

    fn every_body() -> Vec<Body> {
        let state = Replica::new(PeerId::new("a", 1), Config::default()).transfer_state();
        let to = Tag(0x0102_0304);
        vec![
            Body::Hello {
                seq: 1,
                hostname: "h".into(),
            },
            Body::Ops {
                seq: 300,
                tick: 9,
                ops: smallvec::smallvec![],
            },
            Body::GcAck {
                seq: 3,
                frontier: vec![],
                members: vec![],
            },
            Body::Goodbye { seq: 4 },
            Body::SyncRequest {
                seq: 5,
                hostname: "h".into(),
            },
            Body::Joined { seq: u64::MAX },
            Body::SyncOffer {
                seq: 7,
                joiner: Tag(9),
            },
            Body::SyncFetch { to },
            Body::SyncAnswer {
                to,
                state: Box::new(state),
            },
            Body::Welcome {
                to,
                hostname: "h".into(),
                seq: 2,
            },
            Body::Resend { to, from_seq: 1 },
            Body::ResendGone { to },
            Body::Op {
                seq: 70_000,
                tick: 3,
                op: WireOp::Tick,
            },
            Body::Next {
                seq: 8,
                op: WireOp::Tick,
            },
        ]
    }

    #[test]
    fn the_envelope_of_every_message_kind_matches_its_full_decoding() {
        for body in every_body() {
            let frame = Frame {
                from: Tag(0xdead_beef),
                body,
            };
            for format in [WireFormat::Binary, WireFormat::Json] {
                let bytes = encode(&frame, format);
                let env = Envelope::peek(&bytes).unwrap();
                assert_eq!(env.from, 0xdead_beef, "{format:?} {:?}", frame.body);
                assert_eq!(env.to, frame.body.to().map(|t| t.0), "{:?}", frame.body);
                assert_eq!(env.seq, frame.body.seq(), "{:?}", frame.body);
            }
        }
    }

    #[test]
    fn garbage_has_no_envelope() {
        assert_eq!(Envelope::peek(&[]), Err(ReceiveError::Empty));
        assert_eq!(
            Envelope::peek(&[42, 0, 0]),
            Err(ReceiveError::UnsupportedVersion(42))
        );
        assert!(matches!(
            Envelope::peek(&[VERSION, 1, 2]),
            Err(ReceiveError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::peek(&[VERSION, 1, 2, 3, 4, 99]),
            Err(ReceiveError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::peek(b"{\"from\":1}"),
            Err(ReceiveError::Malformed(_))
        ));
    }
}
