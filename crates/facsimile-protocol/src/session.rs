//! A relay client's side of the protocol, without I/O: what to say first,
//! what the relay's welcome means for the node and its unacknowledged
//! frames, and what each later frame asks of the node.
//!
//! The Rust client (`facsimile::net`) and the WebAssembly client (the
//! JavaScript package's `Facsimile.connect`) both drive a [`Session`], so
//! they cannot disagree on the protocol: the conformance tests run the same
//! frame sequences through both.

use bytes::Bytes;

use crate::frame::{ClientHello, Down, PROTOCOL_VERSION, ProtocolError, Resume, ServerHello, Up};
use crate::outbox::Outbox;

/// One node's relay session across its connections: the hello's fields and
/// where the node stopped reading. The node's frames wait in an [`Outbox`]
/// that the caller owns (and may share with whatever waits for
/// acknowledgements); every call that needs it takes it.
#[derive(Clone, Debug)]
pub struct Session {
    document: String,
    token: String,
    read_only: bool,
    resume: Option<Resume>,
    /// The relay's incarnation, from its last welcome.
    relay: Option<u32>,
    relay_max_frame: Option<usize>,
}

/// What a relay's welcome asks of the node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Admission {
    /// The first connection: the node syncs to get the document.
    Joined,
    /// The relay sends everything after where the node stopped reading;
    /// the unacknowledged frames go out again first.
    Resumed,
    /// The relay cannot tell what the node missed: the node syncs again
    /// (its unacknowledged frames still go out; replicas drop duplicates).
    Sync,
    /// The relay no longer knows the node (it was evicted, or the relay's
    /// data were lost): the frames it never acknowledged are dropped, and
    /// the node rejoins as a new incarnation with a fresh copy.
    Rejoin {
        /// How many of the dropped frames carried writes not counted lost
        /// before ([`Outbox::drop_all`]): those writes are lost.
        dropped: u64,
        /// How many unacknowledged frames the relay said it had applied
        /// before the eviction (`taken` in its welcome): done, not
        /// dropped.
        applied: u64,
    },
}

/// Why a connection's first frame did not admit the node.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The relay refused the node, with its reason; retrying the same hello
    /// fails the same way.
    #[error("the relay refused the connection: {0}")]
    Refused(String),
    /// The first frame is not a relay's hello: something else listens
    /// there.
    #[error("not a facsimile relay: {0}")]
    NotARelay(#[source] ProtocolError),
}

/// What a frame from the relay, after its welcome, asks of the node.
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub enum Incoming {
    /// A message for the node to receive.
    Message(Bytes),
    /// Some of the node's frames were acknowledged ([`Outbox::done`] moved).
    Acked,
    /// The relay refuses something the node sent and closes the
    /// connection, for this reason. Connecting again would send it again:
    /// the session is over.
    Closing(String),
}

impl Session {
    /// A session for `document`, with the relay's shared `token` (empty
    /// when it has none).
    pub fn new(document: impl Into<String>, token: impl Into<String>) -> Session {
        Session {
            document: document.into(),
            token: token.into(),
            read_only: false,
            resume: None,
            relay: None,
            relay_max_frame: None,
        }
    }

    /// Joins read-only: the relay refuses the node's writes.
    pub fn read_only(mut self, read_only: bool) -> Session {
        self.read_only = read_only;
        self
    }

    /// Whether the session joins read-only.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// The document's name.
    pub fn document(&self) -> &str {
        &self.document
    }

    /// Where the node stopped reading: the log's identity and the last
    /// position received (none before the first welcome).
    pub fn resume(&self) -> Option<Resume> {
        self.resume
    }

    /// The relay's incarnation, once welcomed: directed messages for the
    /// relay's replica go to it.
    pub fn relay(&self) -> Option<u32> {
        self.relay
    }

    /// The largest frame the relay takes and sends, as its latest welcome
    /// said (`None` before it, or from a relay that does not say).
    pub fn relay_max_frame(&self) -> Option<usize> {
        self.relay_max_frame
    }

    /// The first frame of a connection, for the node of this hostname and
    /// incarnation: it asks to resume where the last connection stopped
    /// reading.
    pub fn hello(&self, hostname: &str, incarnation: u32) -> Bytes {
        ClientHello {
            protocol: PROTOCOL_VERSION,
            document: self.document.clone(),
            token: self.token.clone(),
            hostname: hostname.to_string(),
            incarnation,
            resume: self.resume,
            read_only: self.read_only,
        }
        .encode()
    }

    /// Reads the relay's answer to the hello (a connection's first frame)
    /// and readies `outbox` for the connection: its unacknowledged frames
    /// go out again first, or, when the node must rejoin, are dropped.
    ///
    /// # Errors
    /// [`HelloError::Refused`] with the relay's reason, or
    /// [`HelloError::NotARelay`] when the frame is not a relay's hello.
    /// `outbox` is unchanged then.
    pub fn welcome(&mut self, frame: Bytes, outbox: &mut Outbox) -> Result<Admission, HelloError> {
        let (log, position, relay, resumed, member, evicted, max_frame, taken) =
            match Down::decode(frame).map_err(HelloError::NotARelay)? {
                Down::Hello(ServerHello::Welcome {
                    log,
                    position,
                    relay,
                    resumed,
                    member,
                    evicted,
                    max_frame,
                    taken,
                }) => (
                    log, position, relay, resumed, member, evicted, max_frame, taken,
                ),
                Down::Hello(ServerHello::Refused { reason }) => {
                    return Err(HelloError::Refused(reason));
                }
                other => {
                    return Err(HelloError::NotARelay(ProtocolError::NotAHello(
                        other.kind(),
                    )));
                }
            };
        let first = self.resume.is_none();
        self.relay = Some(relay);
        self.relay_max_frame = max_frame.map(|m| usize::try_from(m).unwrap_or(usize::MAX));
        // The relay no longer knows this incarnation: the frames it has not
        // acknowledged would be refused.
        let rejoin = evicted || (!first && !resumed && !member);
        if !resumed {
            self.resume = Some(Resume { log, position });
        }
        if rejoin {
            // Applied before the eviction, their acknowledgement cut off
            // with the connection: done, not lost.
            let applied = taken
                .filter(|_| evicted)
                .map_or(0, |taken| outbox.ack_at_most(taken));
            return Ok(Admission::Rejoin {
                dropped: outbox.drop_all(),
                applied,
            });
        }
        outbox.requeue_unacked();
        Ok(if first {
            Admission::Joined
        } else if resumed {
            Admission::Resumed
        } else {
            Admission::Sync
        })
    }

    /// Reads a frame from the relay after its welcome.
    ///
    /// # Errors
    /// [`ProtocolError`] when the frame breaks the protocol (the connection
    /// should be dropped, and made again): it does not parse, is a second
    /// hello, or acknowledges frames never sent.
    pub fn receive(
        &mut self,
        frame: Bytes,
        outbox: &mut Outbox,
    ) -> Result<Incoming, ProtocolError> {
        match Down::decode(frame)? {
            Down::Message { position, bytes } => {
                if let Some(r) = self.resume.as_mut() {
                    r.position = r.position.max(position);
                }
                Ok(Incoming::Message(bytes))
            }
            Down::Direct(bytes) => Ok(Incoming::Message(bytes)),
            Down::Ack(n) => {
                outbox.ack_up_to(n)?;
                Ok(Incoming::Acked)
            }
            Down::Closing(reason) => {
                outbox.close();
                Ok(Incoming::Closing(reason))
            }
            Down::Hello(_) => Err(ProtocolError::SecondHello),
        }
    }

    /// Queues a message of the node: for every other node, or for the node
    /// of incarnation `to` only. `false` once the outbox is closed.
    pub fn send(outbox: &mut Outbox, to: Option<u32>, message: &[u8]) -> bool {
        let up = match to {
            None => Up::Broadcast(Bytes::copy_from_slice(message)),
            Some(tag) => Up::To(tag, Bytes::copy_from_slice(message)),
        };
        outbox.enqueue(up.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn welcome(resumed: bool, member: bool, evicted: bool) -> Bytes {
        evicted_welcome(resumed, member, evicted, None)
    }

    fn evicted_welcome(resumed: bool, member: bool, evicted: bool, taken: Option<u64>) -> Bytes {
        Down::Hello(ServerHello::Welcome {
            log: 5,
            position: 10,
            relay: 77,
            resumed,
            member,
            evicted,
            max_frame: Some(4096),
            taken,
        })
        .encode()
    }

    fn sent(outbox: &mut Outbox) -> Vec<Bytes> {
        let mut batch = Vec::new();
        outbox.take_batch(usize::MAX, &mut batch);
        batch
    }

    #[test]
    fn a_session_resumes_where_it_stopped_reading() {
        let mut s = Session::new("doc", "t");
        let mut out = Outbox::default();
        let hello = ClientHello::decode(&s.hello("ann", 3)).unwrap();
        assert_eq!((hello.resume, hello.read_only), (None, false));
        assert_eq!(
            s.welcome(welcome(false, false, false), &mut out),
            Ok(Admission::Joined)
        );
        assert_eq!(s.relay(), Some(77));
        assert_eq!(s.relay_max_frame(), Some(4096));
        assert!(Session::send(&mut out, None, b"a"));
        assert!(Session::send(&mut out, Some(77), b"b"));
        assert_eq!(sent(&mut out).len(), 2);
        let m = Down::Message {
            position: 12,
            bytes: Bytes::from_static(b"m"),
        };
        assert_eq!(
            s.receive(m.encode(), &mut out),
            Ok(Incoming::Message(Bytes::from_static(b"m")))
        );
        assert_eq!(
            s.receive(Down::Ack(1).encode(), &mut out),
            Ok(Incoming::Acked)
        );
        assert_eq!(out.done(), 1);
        // The next connection asks to resume after 12 and sends "b" again.
        let hello = ClientHello::decode(&s.hello("ann", 3)).unwrap();
        assert_eq!(
            hello.resume,
            Some(Resume {
                log: 5,
                position: 12
            })
        );
        assert_eq!(
            s.welcome(welcome(true, true, false), &mut out),
            Ok(Admission::Resumed)
        );
        assert_eq!(
            sent(&mut out),
            [Up::To(77, Bytes::from_static(b"b")).encode()]
        );
    }

    #[test]
    fn a_relay_that_forgot_the_node_makes_it_rejoin_and_drop_its_frames() {
        let mut s = Session::new("doc", "");
        let mut out = Outbox::default();
        let _ = s.welcome(welcome(false, false, false), &mut out);
        assert!(Session::send(&mut out, None, b"a"));
        assert_eq!(
            s.welcome(welcome(false, false, true), &mut out),
            Ok(Admission::Rejoin {
                dropped: 1,
                applied: 0
            })
        );
        assert_eq!((out.done(), out.dropped()), (1, 1));
        // Not resumed but still a member: sync, keep the frames.
        assert!(Session::send(&mut out, None, b"b"));
        assert_eq!(
            s.welcome(welcome(false, true, false), &mut out),
            Ok(Admission::Sync)
        );
        assert_eq!(sent(&mut out).len(), 1);
        // Not resumed and not a member: rejoin.
        assert_eq!(
            s.welcome(welcome(false, false, false), &mut out),
            Ok(Admission::Rejoin {
                dropped: 1,
                applied: 0
            })
        );
    }

    /// An evicted node's frames that the relay says it applied (their
    /// acknowledgement cut off with the connection) are done; only the
    /// rest are dropped. A count beyond what was sent, or one that an
    /// acknowledgement already covered, changes nothing more.
    #[test]
    fn frames_the_relay_applied_before_an_eviction_are_done_not_dropped() {
        for (taken, done, dropped) in [
            (None, 1, 3),
            (Some(0), 1, 3),
            (Some(1), 1, 3),
            (Some(3), 3, 1),
            (Some(9), 4, 0),
        ] {
            let mut s = Session::new("doc", "");
            let mut out = Outbox::counting(|_| 1);
            let _ = s.welcome(welcome(false, false, false), &mut out);
            for m in [b"a", b"b", b"c", b"d"] {
                assert!(Session::send(&mut out, None, m));
            }
            assert_eq!(sent(&mut out).len(), 4);
            assert_eq!(
                s.receive(Down::Ack(1).encode(), &mut out),
                Ok(Incoming::Acked)
            );
            assert_eq!(
                s.welcome(evicted_welcome(false, false, true, taken), &mut out),
                Ok(Admission::Rejoin {
                    dropped,
                    applied: done - 1
                }),
                "{taken:?}"
            );
            assert_eq!(
                (out.done(), out.dropped()),
                (done + dropped, dropped),
                "{taken:?}"
            );
        }
    }

    #[test]
    fn refusals_and_strangers_leave_the_outbox_alone() {
        let mut s = Session::new("doc", "").read_only(true);
        assert!(ClientHello::decode(&s.hello("r", 1)).unwrap().read_only);
        let mut out = Outbox::default();
        assert!(Session::send(&mut out, None, b"a"));
        let refused = Down::Hello(ServerHello::Refused {
            reason: "wrong token".into(),
        });
        assert_eq!(
            s.welcome(refused.encode(), &mut out),
            Err(HelloError::Refused("wrong token".into()))
        );
        assert_eq!(
            s.welcome(Down::Ack(0).encode(), &mut out),
            Err(HelloError::NotARelay(ProtocolError::NotAHello(
                "acknowledgement"
            )))
        );
        assert!(matches!(
            s.welcome(Bytes::from_static(b"HTTP/1.1 400"), &mut out),
            Err(HelloError::NotARelay(_))
        ));
        assert_eq!((out.queued(), out.done()), (1, 0));
        assert_eq!(s.resume(), None);
    }

    #[test]
    fn a_closing_notice_ends_the_session() {
        let mut s = Session::new("doc", "");
        let mut out = Outbox::default();
        let _ = s.welcome(welcome(false, false, false), &mut out);
        assert_eq!(
            s.receive(Down::Closing("read-only".into()).encode(), &mut out),
            Ok(Incoming::Closing("read-only".into()))
        );
        assert!(!Session::send(&mut out, None, b"a"));
        assert_eq!(
            s.receive(welcome(true, true, false), &mut out),
            Err(ProtocolError::SecondHello)
        );
        assert!(s.receive(Down::Ack(1).encode(), &mut out).is_err());
    }
}
