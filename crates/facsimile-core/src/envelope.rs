//! A message's envelope — sender, recipient, stream position — read without
//! applying the message, for transports that route, authenticate or
//! account for messages (the relay binds each connection to the tags it
//! sends from, and evicts them when the connection drops).

use crate::codec::{self, VERSION};
use crate::error::ReceiveError;
use crate::wire::{Directed, Frame, Message, Ops, Sequenced, Tag, WireOp, index};

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
    /// A joiner's sync request or fetch. A transport that drops a
    /// departed sender's messages passes these: the state a departed
    /// joiner fetches is how it learns of its eviction (DESIGN.md, "Late
    /// joiners").
    pub syncs: bool,
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
                let syncs = matches!(
                    frame.msg,
                    Message::Sequenced {
                        body: Sequenced::SyncRequest { .. },
                        ..
                    } | Message::Directed {
                        body: Directed::SyncFetch,
                        ..
                    }
                );
                let (to, seq) = match frame.msg {
                    Message::Sequenced { seq, .. } => (None, Some(seq)),
                    Message::Directed { to, .. } => (Some(to.0), None),
                };
                Ok(Envelope {
                    from: frame.from.0,
                    to,
                    seq,
                    syncs,
                })
            }
            Some(&VERSION) => {
                // The sender, the body's variant, and its first field: the
                // recipient of a directed body, the position of the others.
                let malformed = |e: postcard::Error| ReceiveError::Malformed(e.to_string());
                let (from, rest) =
                    postcard::take_from_bytes::<Tag>(&bytes[1..]).map_err(malformed)?;
                let (body, rest) = postcard::take_from_bytes::<u32>(rest).map_err(malformed)?;
                let (to, seq) = match body {
                    b if index::body::is_directed(b) => {
                        let (to, _) = postcard::take_from_bytes::<Tag>(rest).map_err(malformed)?;
                        (Some(to.0), None)
                    }
                    b if b <= index::body::LAST => {
                        let (seq, _) = postcard::take_from_bytes::<u64>(rest).map_err(malformed)?;
                        (None, Some(seq))
                    }
                    b => {
                        return Err(ReceiveError::Malformed(format!("unknown message kind {b}")));
                    }
                };
                Ok(Envelope {
                    from: from.0,
                    to,
                    seq,
                    syncs: body == index::body::SYNC_REQUEST || body == index::body::SYNC_FETCH,
                })
            }
            Some(&v) => Err(ReceiveError::UnsupportedVersion(v)),
        }
    }

    /// What an encoded message writes, if anything: `Some` with the first
    /// writing operation it carries, in words (`"a change to the
    /// document"`, `"a lock request"`, `"a lock release"`, `"an
    /// eviction"`), or `None` for what a node sends while it only reads
    /// (its hello, sync requests, offers and answers, acknowledgements of
    /// reclamation and of other nodes' lock requests, heartbeats, entries
    /// of its dictionary, goodbye, retransmission requests). For transports
    /// that admit read-only connections; the message is decoded whole.
    ///
    /// # Errors
    /// As [`crate::Replica::handle_message`] for a message that does not
    /// decode.
    ///
    /// # Example
    /// ```
    /// use facsimile_core::{Config, Envelope, Input, PeerId, Replica};
    ///
    /// let mut a = Replica::new(PeerId::new("a", 7), Config::default());
    /// let hello = a.poll_transmit().expect("a replica announces itself");
    /// assert_eq!(Envelope::writes(&hello.bytes)?, None);
    /// a.set_root(Input::from(3)).unwrap();
    /// let write = a.poll_transmit().expect("the write");
    /// assert_eq!(Envelope::writes(&write.bytes)?, Some("a change to the document"));
    /// # Ok::<(), facsimile_core::ReceiveError>(())
    /// ```
    pub fn writes(bytes: &[u8]) -> Result<Option<&'static str>, ReceiveError> {
        Ok(ops_of(bytes)?.and_then(|ops| ops.iter().find_map(what)))
    }

    /// How many writes a message carries: its operations that change the
    /// document, an object a write creates not counted apart (a write of a
    /// nested value counts once), each write of a packed backlog counted.
    /// For transports that report the writes a node lost. Lock requests,
    /// releases and evictions are not writes: a lost lock request fails
    /// the request's future, and a lost release or eviction of a node that
    /// was evicted loses nothing, as its eviction frees its locks. The
    /// message is decoded whole.
    ///
    /// # Errors
    /// As [`crate::Replica::handle_message`] for a message that does not
    /// decode.
    ///
    /// # Example
    /// ```
    /// use facsimile_core::{Config, Envelope, Input, PeerId, Replica};
    ///
    /// let mut a = Replica::new(PeerId::new("a", 7), Config::default());
    /// let hello = a.poll_transmit().expect("a replica announces itself");
    /// assert_eq!(Envelope::writes_in(&hello.bytes)?, 0);
    /// a.set_root(Input::Map(vec![("n".into(), Input::Map(vec![]))])).unwrap();
    /// let write = a.poll_transmit().expect("the write");
    /// assert_eq!(Envelope::writes_in(&write.bytes)?, 1);
    /// // Three writes made offline, sent as one message.
    /// a.set_online(false);
    /// let root = a.root().as_ref_id().unwrap();
    /// for i in 0..3 {
    ///     a.map_set(root, "n", Input::from(i)).unwrap();
    /// }
    /// a.set_online(true);
    /// let backlog = a.poll_transmit().expect("the backlog");
    /// assert_eq!(Envelope::writes_in(&backlog.bytes)?, 3);
    /// # Ok::<(), facsimile_core::ReceiveError>(())
    /// ```
    pub fn writes_in(bytes: &[u8]) -> Result<u64, ReceiveError> {
        let Some(ops) = ops_of(bytes)? else {
            return Ok(0);
        };
        let writes = ops.iter().filter(|op| {
            what(op) == Some(CHANGE)
                && !matches!(op, WireOp::NewMap { .. } | WireOp::NewArray { .. })
        });
        Ok(writes.count() as u64)
    }

    /// Packs the longest run of binary operations messages at the start of
    /// `messages` that one sender sent one after the other (consecutive
    /// positions in its stream) into one message of at most about `max`
    /// bytes: the operations packed together (a key written once, integers
    /// as differences), each message's place kept. For a relay that replays
    /// what a resuming node missed. Returns how many messages it covers and
    /// the packed message, or `None` when they are better sent as they are
    /// (a run of one, or no smaller packed); it covers at least one
    /// message unless there are none. A receiver takes a packed run
    /// as its messages one after another
    /// ([`crate::Replica::handle_message`]). `None` with a count means:
    /// send that many messages as they are.
    ///
    /// # Example
    /// ```
    /// use facsimile_core::{Config, Envelope, Input, PeerId, Replica};
    ///
    /// let mut a = Replica::new(PeerId::new("a", 1), Config::default());
    /// let mut b = Replica::new(PeerId::new("b", 2), Config::default());
    /// b.handle_message(&a.poll_transmit().expect("a's hello").bytes)?;
    /// let mut sent = Vec::new();
    /// let root = a.set_root(Input::Map(vec![])).unwrap().unwrap();
    /// for i in 0..100 {
    ///     a.map_set(root, "counter", Input::from(i)).unwrap();
    /// }
    /// while let Some(t) = a.poll_transmit() {
    ///     sent.push(t.bytes.to_vec());
    /// }
    /// let messages: Vec<&[u8]> = sent.iter().map(|m| &m[..]).collect();
    /// let (covered, packed) = Envelope::pack_run(&messages, 1 << 20);
    /// assert_eq!(covered, sent.len());
    /// let packed = packed.expect("smaller packed");
    /// let alone: usize = sent.iter().map(Vec::len).sum();
    /// assert!(packed.len() * 2 < alone);
    /// b.handle_message(&packed)?;
    /// assert_eq!(b.snapshot(), a.snapshot());
    /// # Ok::<(), facsimile_core::ReceiveError>(())
    /// ```
    pub fn pack_run(messages: &[&[u8]], max: usize) -> (usize, Option<Vec<u8>>) {
        let ops = |bytes: &[u8]| match bytes.first() {
            Some(&VERSION) => match codec::decode(bytes, usize::MAX) {
                Ok(Frame {
                    from,
                    msg:
                        Message::Sequenced {
                            seq,
                            body: Sequenced::Ops { tick, ops },
                        },
                }) => Some((from, seq, tick, ops)),
                _ => None,
            },
            _ => None,
        };
        let Some((from, first, tick, head)) = messages.first().and_then(|m| ops(m)) else {
            return (messages.len().min(1), None);
        };
        let mut run = vec![(tick, head)];
        let mut size = messages[0].len();
        for bytes in &messages[1..] {
            size += bytes.len();
            if size > max {
                break;
            }
            match ops(bytes) {
                Some((f, seq, tick, ops)) if f == from && seq == first + run.len() as u64 => {
                    run.push((tick, ops));
                }
                _ => break,
            }
        }
        let covered = run.len();
        if covered < 2 {
            return (1, None);
        }
        let alone: usize = messages[..covered].iter().map(|m| m.len()).sum();
        let frame = Frame {
            from,
            msg: Message::Sequenced {
                seq: first,
                body: Sequenced::Run { messages: run },
            },
        };
        let packed = codec::encode(&frame, codec::WireFormat::Binary);
        (covered, (packed.len() < alone).then_some(packed))
    }
}

/// What [`Envelope::writes`] calls an operation that changes the document.
const CHANGE: &str = "a change to the document";

/// The operations an encoded message carries (`None` for a message that
/// carries none), decoded whole.
fn ops_of(bytes: &[u8]) -> Result<Option<Ops>, ReceiveError> {
    let frame = codec::decode(bytes, usize::MAX)?;
    Ok(match frame.msg {
        Message::Sequenced {
            body: Sequenced::Ops { ops, .. },
            ..
        } => Some(ops),
        Message::Sequenced {
            body: Sequenced::Run { messages },
            ..
        } => Some(messages.into_iter().flat_map(|(_, ops)| ops).collect()),
        _ => None,
    })
}

/// What an operation does, as [`Envelope::writes`] names it; `None` for the
/// bookkeeping every node sends (hellos, acknowledgements, heartbeats).
pub(crate) fn what(op: &WireOp) -> Option<&'static str> {
    match op {
        WireOp::Intro { .. } | WireOp::LockAck { .. } | WireOp::Tick => None,
        WireOp::Lock { .. } | WireOp::TryLock { .. } => Some("a lock request"),
        WireOp::Unlock { .. } => Some("a lock release"),
        WireOp::Evict { .. } => Some("an eviction"),
        _ => Some(CHANGE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{WireFormat, encode};
    use crate::wire::{Directed, Frame, Hostname, Sequenced, WireOp};
    use crate::{Config, PeerId, Replica};

    /// `a`'s hello and the messages of `n` writes of `a`.
    fn writes(n: i64) -> (Replica, Vec<u8>, Vec<Vec<u8>>) {
        let mut a = Replica::new(PeerId::new("a", 1), Config::default());
        let hello = a.poll_transmit().unwrap().bytes.to_vec();
        let root = a.set_root(crate::Input::Map(vec![])).unwrap().unwrap();
        for i in 0..n {
            let list = crate::Input::Array(vec![i.into()]);
            a.map_set(root, &format!("k{}", i % 7), list).unwrap();
        }
        let mut sent = Vec::new();
        while let Some(t) = a.poll_transmit() {
            sent.push(t.bytes.to_vec());
        }
        (a, hello, sent)
    }

    /// A resuming node's run starts at what it had read: what it already
    /// applied is skipped, the rest applies.
    #[test]
    fn a_run_over_messages_already_applied_applies_the_rest() {
        let (mut a, hello, sent) = writes(200);
        let mut b = Replica::new(PeerId::new("b", 2), Config::default());
        b.handle_message(&hello).unwrap();
        for m in &sent[..60] {
            b.handle_message(m).unwrap();
        }
        let messages: Vec<&[u8]> = sent.iter().map(|m| &m[..]).collect();
        let (n, run) = Envelope::pack_run(&messages, usize::MAX);
        assert_eq!(n, sent.len());
        let run = run.expect("packed smaller");
        let alone: usize = sent.iter().map(Vec::len).sum();
        assert!(run.len() * 3 < alone * 2, "{} against {alone}", run.len());
        b.handle_message(&run).unwrap();
        assert_eq!(b.snapshot(), a.snapshot());
        // Again: all duplicates.
        b.handle_message(&run).unwrap();
        assert_eq!(b.snapshot(), a.snapshot());
    }

    /// A run whose first message is refused changes nothing; runs stop at
    /// another sender's message and at the size limit.
    #[test]
    fn a_refused_run_changes_nothing_and_runs_keep_to_one_sender() {
        let (a, hello, sent) = writes(50);
        let unknown = WireOp::MapSet {
            obj: crate::wire::WireId { p: 0, c: 999 },
            key: "k".into(),
            value: crate::wire::WireValue::Null,
        };
        let run = |messages: Vec<(u64, Ops)>| {
            let frame = Frame {
                from: Tag(a.peer_id().incarnation()),
                msg: Message::Sequenced {
                    seq: 2,
                    body: Sequenced::Run { messages },
                },
            };
            encode(&frame, WireFormat::Binary)
        };
        let fresh = || {
            let mut b = Replica::new(PeerId::new("b", 2), Config::default());
            b.handle_message(&hello).unwrap();
            while b.poll_transmit().is_some() {}
            while b.poll_event().is_some() {}
            b
        };
        // Its first message refused, a run is refused and changes nothing.
        let mut b = fresh();
        let before = b.snapshot();
        let bad = run(vec![
            (1, smallvec::smallvec![unknown.clone()]),
            (1, smallvec::smallvec![WireOp::Tick]),
        ]);
        assert!(b.handle_message(&bad).is_err());
        assert_eq!(b.snapshot(), before);
        assert!(!b.has_transmits());
        // A later one refused breaks the stream, as a message that waited
        // and turned out invalid in order does.
        let mut b = fresh();
        let late = run(vec![
            (1, smallvec::smallvec![WireOp::Tick]),
            (1, smallvec::smallvec![unknown]),
        ]);
        b.handle_message(&late).unwrap();
        assert!(std::iter::from_fn(|| b.poll_event()).any(|e| e == crate::Event::NeedsSync));

        let messages: Vec<&[u8]> = sent.iter().map(|m| &m[..]).collect();

        let (_, _, other) = writes(1);
        let mut mixed = messages.clone();
        mixed.insert(10, &other[0][..]);
        assert_eq!(Envelope::pack_run(&mixed, usize::MAX).0, 10);
        let limit = messages[..5].iter().map(|m| m.len()).sum();
        assert_eq!(Envelope::pack_run(&messages, limit).0, 5);
        // A message out of its stream's order ends a run.
        let skipped = [messages[0], messages[2]];
        assert_eq!(Envelope::pack_run(&skipped, usize::MAX), (1, None));
    }

    fn every_message() -> Vec<Message> {
        let saved = Replica::new(PeerId::new("a", 1), Config::default()).export_state();
        let state = postcard::from_bytes(&saved[1..]).unwrap();
        let hostname = || Hostname::of(&PeerId::new("h", 1));
        let to = Tag(0x0102_0304);
        let seq = |seq, body| Message::Sequenced { seq, body };
        let directed = |body| Message::Directed { to, body };
        vec![
            seq(
                1,
                Sequenced::Hello {
                    hostname: hostname(),
                },
            ),
            seq(
                300,
                Sequenced::Ops {
                    tick: 9,
                    ops: smallvec::smallvec![],
                },
            ),
            seq(
                70_000,
                Sequenced::Ops {
                    tick: 3,
                    ops: smallvec::smallvec![WireOp::Tick],
                },
            ),
            seq(
                8,
                Sequenced::Ops {
                    tick: 1,
                    ops: smallvec::smallvec![WireOp::Tick],
                },
            ),
            seq(
                11,
                Sequenced::Run {
                    messages: vec![
                        (1, smallvec::smallvec![WireOp::Tick]),
                        (2, smallvec::smallvec![]),
                        (1, smallvec::smallvec![WireOp::Tick, WireOp::Tick]),
                    ],
                },
            ),
            seq(
                3,
                Sequenced::GcAck {
                    frontier: vec![],
                    members: vec![],
                },
            ),
            seq(4, Sequenced::Goodbye),
            seq(
                5,
                Sequenced::SyncRequest {
                    hostname: hostname(),
                },
            ),
            seq(u64::MAX, Sequenced::Joined),
            seq(
                6,
                Sequenced::Observe {
                    hostname: hostname(),
                },
            ),
            seq(7, Sequenced::SyncOffer { joiner: Tag(9) }),
            directed(Directed::SyncFetch),
            directed(Directed::SyncAnswer {
                state: Box::new(state),
            }),
            directed(Directed::SyncSaved {
                bytes: vec![4, 0, 1, 2].into(),
            }),
            directed(Directed::Welcome {
                hostname: hostname(),
                seq: 2,
            }),
            directed(Directed::Resend { from_seq: 1 }),
            directed(Directed::ResendGone),
        ]
    }

    #[test]
    fn the_envelope_of_every_message_kind_matches_its_full_decoding() {
        for msg in every_message() {
            let (to, seq) = match &msg {
                Message::Sequenced { seq, .. } => (None, Some(*seq)),
                Message::Directed { to, .. } => (Some(to.0), None),
            };
            let frame = Frame {
                from: Tag(0xdead_beef),
                msg,
            };
            for format in [WireFormat::Binary, WireFormat::Json] {
                let bytes = encode(&frame, format);
                let env = Envelope::peek(&bytes).unwrap();
                assert_eq!(env.from, 0xdead_beef, "{format:?} {:?}", frame.msg);
                assert_eq!(env.to, to, "{:?}", frame.msg);
                assert_eq!(env.seq, seq, "{:?}", frame.msg);
            }
        }
    }

    /// A node that only reads sends nothing that counts as a write, even
    /// while another node locks and writes; the writer's messages do.
    #[test]
    fn only_writes_and_lock_requests_count_as_writes() {
        let mut writer = Replica::new(PeerId::new("writer", 1), Config::default());
        let mut reader = Replica::new(PeerId::new("reader", 2), Config::default());
        let mut kinds = Vec::new();
        let mut exchange = |writer: &mut Replica, reader: &mut Replica| {
            for _ in 0..4 {
                while let Some(t) = writer.poll_transmit() {
                    kinds.push(("writer", Envelope::writes(&t.bytes).unwrap()));
                    let _ = reader.handle_message(&t.bytes);
                }
                while let Some(t) = reader.poll_transmit() {
                    assert_eq!(
                        Envelope::writes(&t.bytes).unwrap(),
                        None,
                        "a reader's message"
                    );
                    let _ = writer.handle_message(&t.bytes);
                }
            }
        };
        exchange(&mut writer, &mut reader);
        let root = writer.set_root(crate::Input::Map(vec![])).unwrap().unwrap();
        exchange(&mut writer, &mut reader);
        reader.sync();
        exchange(&mut writer, &mut reader);
        writer.lock(root, true).unwrap();
        exchange(&mut writer, &mut reader);
        // Granted once the reader acknowledged the request.
        assert_eq!(writer.lock_holder(root), Some(PeerId::new("writer", 1)));
        writer.map_set(root, "k", crate::Input::from(1)).unwrap();
        exchange(&mut writer, &mut reader);
        assert_eq!(reader.snapshot(), writer.snapshot());
        for expected in ["a change to the document", "a lock request"] {
            assert!(
                kinds.contains(&("writer", Some(expected))),
                "{expected}: {kinds:?}"
            );
        }
        assert_eq!(Envelope::writes(&[]), Err(ReceiveError::Empty));
    }

    /// A peer that said it only observes is no member, and a write it
    /// sends all the same is refused and changes nothing.
    #[test]
    fn an_observer_is_no_member_and_its_writes_are_refused() {
        let mut o = Replica::new(PeerId::new("o", 1), Config::default().observer());
        let mut b = Replica::new(PeerId::new("b", 2), Config::default());
        let mut sent = 0;
        while let Some(t) = o.poll_transmit() {
            b.handle_message(&t.bytes).unwrap();
            sent += 1;
        }
        assert_eq!(sent, 2, "its word that it observes, then its hello");
        assert!(b.peers().is_empty());
        let write = Frame {
            from: Tag(1),
            msg: Message::Sequenced {
                seq: 3,
                body: Sequenced::Ops {
                    tick: 1,
                    ops: smallvec::smallvec![WireOp::Root {
                        value: crate::wire::WireValue::Int(1),
                    }],
                },
            },
        };
        let before = b.snapshot();
        let refused = b.handle_message(&encode(&write, WireFormat::Binary));
        assert!(
            matches!(&refused, Err(ReceiveError::Invalid { reason, .. }) if reason.contains("observes")),
            "{refused:?}"
        );
        assert_eq!(b.snapshot(), before);
        assert!(matches!(
            o.set_root(crate::Input::from(1)),
            Err(crate::Error::Observer)
        ));
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
