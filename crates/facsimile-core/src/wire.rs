//! Wire messages: the one schema of what replicas send each other, encoded
//! by [`crate::codec`].
//!
//! Every message names its sender by tag (the sender's incarnation). A
//! sender's *sequenced* messages ([`Sequenced`]: hello, operations,
//! acknowledgements, goodbye, the sync handshake's broadcasts) form one
//! stream numbered from 1: receivers apply them in that order, drop
//! duplicates and ask for retransmission on a gap. *Directed* messages
//! ([`Directed`]: the sync answer, retransmission) name one recipient;
//! everybody else ignores them.
//!
//! Inside operations, ids are `(peer, counter)` pairs whose peer is an index
//! into the sender's dictionary: 0 is the sender, `k` the `k`-th peer the
//! sender introduced with [`WireOp::Intro`]. Dictionaries grow along the
//! stream, so a receiver always learns an entry before it is used.
//!
//! Counters: an operations message carries the Lamport counter of its first
//! operation; each operation consumes counters in order (see
//! [`WireOp::counters`]) and the things it creates are named by them. No
//! message type is recursive, so decoding needs no depth limit.
//!
//! The layout on the wire is one flat enum (`Flat`, below) whose variant
//! order is the binary format; [`index`] names the variant numbers the
//! hand-written readers need, and its test checks them against postcard.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;
use smol_str::SmolStr;

use crate::codec::packed::{PACK_FROM, Packed, PackedRef, Run, RunRef};
use crate::value::{Id, PeerId, Value};

/// A peer's tag: its incarnation. Four fixed bytes in binary, a hex string in
/// JSON.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, PartialOrd, Ord)]
pub(crate) struct Tag(pub(crate) u32);

impl Serialize for Tag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&format!("{:08x}", self.0))
        } else {
            self.0.to_le_bytes().serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            u32::from_str_radix(&s, 16)
                .map(Tag)
                .map_err(serde::de::Error::custom)
        } else {
            <[u8; 4]>::deserialize(d).map(|b| Tag(u32::from_le_bytes(b)))
        }
    }
}

/// A peer's hostname as it travels. At most [`Hostname::MAX`] bytes: every
/// message is checked by [`check_limits`] as it is decoded, and a
/// transferred state's peer table as it is validated, so no handler meets a
/// longer one.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
#[serde(transparent)]
pub(crate) struct Hostname(SmolStr);

impl Hostname {
    /// The longest hostname accepted, in bytes.
    pub(crate) const MAX: usize = crate::MAX_HOSTNAME;

    /// Its length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// The hostname's text.
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }

    /// The hostname of a known peer (checked when it arrived).
    pub(crate) fn of(peer: &PeerId) -> Hostname {
        Hostname(peer.hostname().into())
    }

    /// The peer with this hostname and `tag`.
    pub(crate) fn peer(&self, tag: Tag) -> PeerId {
        PeerId::new(self.0.as_str(), tag.0)
    }

    /// Refuses a hostname past the limit.
    pub(crate) fn check(&self) -> Result<(), &'static str> {
        match self.0.len() <= Hostname::MAX {
            true => Ok(()),
            false => Err("hostname longer than 1024 bytes"),
        }
    }
}

/// Checks the limits a decoded message must keep that its types cannot
/// express (hostname lengths); the error names what was wrong.
pub(crate) fn check_limits(frame: &Frame) -> Result<(), &'static str> {
    let ops_hostnames = |ops: &Ops| {
        ops.iter().try_for_each(|op| match op {
            WireOp::Intro { hostname, .. } | WireOp::Evict { hostname, .. } => hostname.check(),
            WireOp::LockAck { members, .. } => members.iter().try_for_each(|(_, h)| h.check()),
            _ => Ok(()),
        })
    };
    match &frame.msg {
        Message::Sequenced { body, .. } => match body {
            Sequenced::Hello { hostname }
            | Sequenced::SyncRequest { hostname }
            | Sequenced::Observe { hostname } => hostname.check(),
            Sequenced::Ops { ops, .. } => ops_hostnames(ops),
            Sequenced::Run { messages } => {
                messages.iter().try_for_each(|(_, ops)| ops_hostnames(ops))
            }
            Sequenced::GcAck { members, .. } => members.iter().try_for_each(|(_, h)| h.check()),
            Sequenced::Goodbye | Sequenced::Joined | Sequenced::SyncOffer { .. } => Ok(()),
        },
        Message::Directed { body, .. } => match body {
            Directed::Welcome { hostname, .. } => hostname.check(),
            // A state's peer table is checked when the state is validated.
            Directed::SyncAnswer { .. }
            | Directed::SyncSaved { .. }
            | Directed::SyncFetch
            | Directed::Resend { .. }
            | Directed::ResendGone => Ok(()),
        },
    }
}

/// Floats keep every bit in both encodings. JSON has no NaN or infinities
/// (serde_json writes them as `null`, which no receiver would accept), so
/// there they are strings: `"inf"`, `"-inf"`, and `"NaN:"` with the bits.
mod json_float {
    use serde::{Deserializer, Serializer, de};

    pub(crate) fn serialize<S: Serializer>(f: &f64, s: S) -> Result<S::Ok, S::Error> {
        match *f {
            f if f.is_finite() || !s.is_human_readable() => s.serialize_f64(f),
            f64::INFINITY => s.serialize_str("inf"),
            f64::NEG_INFINITY => s.serialize_str("-inf"),
            f => s.serialize_str(&format!("NaN:{:016x}", f.to_bits())),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        if !d.is_human_readable() {
            return <f64 as serde::Deserialize>::deserialize(d);
        }
        struct Float;
        impl de::Visitor<'_> for Float {
            type Value = f64;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a number, \"inf\", \"-inf\" or \"NaN:\" and 16 hex digits")
            }
            fn visit_f64<E>(self, v: f64) -> Result<f64, E> {
                Ok(v)
            }
            fn visit_i64<E>(self, v: i64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_u64<E>(self, v: u64) -> Result<f64, E> {
                Ok(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<f64, E> {
                let nan = |bits| u64::from_str_radix(bits, 16).ok().map(f64::from_bits);
                match v {
                    "inf" => Ok(f64::INFINITY),
                    "-inf" => Ok(f64::NEG_INFINITY),
                    _ => v
                        .strip_prefix("NaN:")
                        .filter(|bits| bits.len() == 16)
                        .and_then(nan)
                        .filter(|f| f.is_nan())
                        .ok_or_else(|| E::invalid_value(de::Unexpected::Str(v), &self)),
                }
            }
        }
        d.deserialize_any(Float)
    }
}

/// An id on the wire: a peer (dictionary or table index) and a counter.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default, Serialize, Deserialize)]
pub(crate) struct WireId {
    pub(crate) p: u32,
    pub(crate) c: u64,
}

/// A value on the wire.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum WireValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(#[serde(with = "json_float")] f64),
    Str(SmolStr),
    Bytes(#[serde(with = "serde_bytes")] Vec<u8>),
    Ref(WireId),
}

impl WireValue {
    /// The wire form of `v`, naming a referenced object with `id`: the one
    /// conversion every encoder (messages, transfers, snapshots) uses.
    #[inline]
    pub(crate) fn from_value(v: &Value, id: impl FnOnce(Id) -> WireId) -> WireValue {
        match v {
            Value::Null => WireValue::Null,
            Value::Bool(b) => WireValue::Bool(*b),
            Value::Int(i) => WireValue::Int(*i),
            Value::Float(f) => WireValue::Float(*f),
            Value::Str(s) => WireValue::Str(s.clone()),
            Value::Bytes(b) => WireValue::Bytes(b.to_vec()),
            Value::Ref(o) => WireValue::Ref(id(o.0)),
        }
    }

    /// The value this wire value stands for, resolving a reference with
    /// `id`: the one conversion every decoder uses.
    #[inline]
    pub(crate) fn into_value<E>(
        self,
        id: impl FnOnce(WireId) -> Result<Id, E>,
    ) -> Result<Value, E> {
        Ok(match self {
            WireValue::Null => Value::Null,
            WireValue::Bool(b) => Value::Bool(b),
            WireValue::Int(i) => Value::Int(i),
            WireValue::Float(f) => Value::Float(f),
            WireValue::Str(s) => Value::Str(s),
            WireValue::Bytes(b) => Value::Bytes(b.into()),
            WireValue::Ref(w) => Value::Ref(crate::value::ObjectId(id(w)?)),
        })
    }
}

/// One operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum WireOp {
    /// Adds a peer to the sender's dictionary.
    Intro { tag: Tag, hostname: Hostname },
    /// Creates a map with these entries, stamped with the map's id. A
    /// one-entry map (common in object graphs) needs no allocation.
    NewMap {
        entries: SmallVec<[(SmolStr, WireValue); 1]>,
    },
    /// Creates an array holding these values; element `i` is named by the
    /// array's counter plus `1 + i`.
    NewArray { values: Vec<WireValue> },
    /// Replaces the root.
    Root { value: WireValue },
    /// Sets a map key.
    MapSet {
        obj: WireId,
        key: SmolStr,
        value: WireValue,
    },
    /// Deletes a map key.
    MapDelete { obj: WireId, key: SmolStr },
    /// Inserts elements after `origin` (`None`: at the head), each after the
    /// previous one.
    ListInsert {
        obj: WireId,
        origin: WireOrigin,
        values: Vec<WireValue>,
    },
    /// Deletes elements: runs of `len` consecutive counters from `start`.
    ListDelete {
        obj: WireId,
        runs: Vec<(WireId, u32)>,
    },
    /// Sets an element's value.
    ListSet {
        obj: WireId,
        elem: WireId,
        value: WireValue,
    },
    /// Moves an element to a new slot after `origin`.
    ListMove {
        obj: WireId,
        elem: WireId,
        origin: Option<WireId>,
    },
    /// Asks for the lock on `obj`; the request is named by this op's stamp.
    Lock { obj: WireId },
    /// Asks for the lock on `obj` unless somebody holds or waits for it
    /// (decided at its log position on an ordered log).
    TryLock { obj: WireId },
    /// Releases (token > 0) or withdraws (token 0) the request `req`.
    Unlock {
        obj: WireId,
        req: WireId,
        token: u64,
    },
    /// Acknowledges the request `req` on `obj`: whether the sender holds
    /// the lock itself (its request and token) and the members it knows
    /// that its earlier acknowledgements did not name.
    LockAck {
        obj: WireId,
        req: WireId,
        held: Option<(WireId, u64)>,
        members: Vec<(Tag, Hostname)>,
    },
    /// The sender no longer waits for `peer`, which stopped answering.
    Evict { peer: Tag, hostname: Hostname },
    /// Nothing but a tick of the sender's clock (a heartbeat).
    Tick,
    /// [`WireOp::ListInsert`] of one value right after the sender's element
    /// of the previous counter (`origin` [`WireOrigin::Back`]`(1)`): a push
    /// after the sender's own push, three bytes shorter.
    Append { obj: WireId, value: WireValue },
}

impl WireOp {
    /// How many Lamport counters this operation consumes.
    pub(crate) fn counters(&self) -> u64 {
        match self {
            WireOp::Intro { .. } | WireOp::ListDelete { .. } => 0,
            WireOp::NewArray { values } => 1 + values.len() as u64,
            WireOp::ListInsert { values, .. } => values.len() as u64,
            WireOp::NewMap { .. }
            | WireOp::Root { .. }
            | WireOp::MapSet { .. }
            | WireOp::MapDelete { .. }
            | WireOp::ListSet { .. }
            | WireOp::ListMove { .. }
            | WireOp::Lock { .. }
            | WireOp::TryLock { .. }
            | WireOp::Unlock { .. }
            | WireOp::LockAck { .. }
            | WireOp::Evict { .. }
            | WireOp::Tick
            | WireOp::Append { .. } => 1,
        }
    }

    /// The object a document operation writes to (`None` for the others).
    pub(crate) fn target(&self) -> Option<&WireId> {
        match self {
            WireOp::MapSet { obj, .. }
            | WireOp::MapDelete { obj, .. }
            | WireOp::ListInsert { obj, .. }
            | WireOp::Append { obj, .. }
            | WireOp::ListDelete { obj, .. }
            | WireOp::ListSet { obj, .. }
            | WireOp::ListMove { obj, .. } => Some(obj),
            _ => None,
        }
    }
}

/// The operations of one message, applied as one change.
pub(crate) type Ops = SmallVec<[WireOp; 1]>;

/// One message.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Frame {
    pub(crate) from: Tag,
    pub(crate) msg: Message,
}

/// A message is part of its sender's stream, or for one recipient.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Message {
    /// The `seq`-th message of the sender's stream, for every peer.
    Sequenced { seq: u64, body: Sequenced },
    /// A message for the peer `to` only.
    Directed { to: Tag, body: Directed },
}

/// The messages of a sender's stream.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Sequenced {
    /// First message of a peer that did not ask for a sync.
    Hello { hostname: Hostname },
    /// Sent by an observer (`Config::observer`) first and before each
    /// sync request: its peers never count it as a member, so none waits
    /// for it (for a lock, for reclamation), and refuse what it writes.
    Observe { hostname: Hostname },
    /// A group of operations, applied as one change. `tick` is the first
    /// operation's counter minus the last counter of the sender's previous
    /// operations message (at least 1): one byte where an absolute counter
    /// takes three or more. One operation (most messages) travels in a
    /// shorter form, a byte shorter still when `tick` is 1 (every message of
    /// a lone writer).
    Ops { tick: u64, ops: Ops },
    /// Consecutive operations messages of the sender, from this message's
    /// position in its stream on (each its tick and operations), in one:
    /// what a relay replays to a node that resumes. Each is taken as if it
    /// came alone.
    Run { messages: Vec<(u64, Ops)> },
    /// The sender acknowledges having applied everything up to `frontier`
    /// (per peer, the last counter) and lists the members it knows.
    GcAck {
        frontier: Vec<(Tag, u64)>,
        members: Vec<(Tag, Hostname)>,
    },
    /// The sender leaves for good.
    Goodbye,
    /// The sender dropped its state and asks for the document.
    SyncRequest { hostname: Hostname },
    /// The sender's sync completed.
    Joined,
    /// The sender saw `joiner`'s sync request and can serve it. Sequenced:
    /// whoever receives it has every earlier message of the sender, which
    /// is what a snapshot for the joiner must cover.
    SyncOffer { joiner: Tag },
}

/// Messages for one peer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Directed {
    /// The recipient is chosen to serve the sync.
    SyncFetch,
    /// The document, as of the sender's state.
    SyncAnswer { state: Box<TransferState> },
    /// [`Directed::SyncAnswer`] as a saved state (`Replica::export_state`'s
    /// bytes, version byte first): what a binary answer carries, a fraction
    /// of the size (map keys written once per shape, runs of list values in
    /// columns), decoded object by object as it is built.
    SyncSaved { bytes: serde_bytes::ByteBuf },
    /// The answer to a hello, so that a peer that started later learns of
    /// the sender and can ask for its messages.
    Welcome { hostname: Hostname, seq: u64 },
    /// Resend your sequenced messages from `from_seq` on.
    Resend { from_seq: u64 },
    /// The messages asked for are no longer kept.
    ResendGone,
}

/// The variant numbers of the binary format that the hand-written readers
/// and writers use (the envelope, the fast codec): serde numbers variants by
/// declaration order, so these follow `Flat`, [`WireOp`] and [`WireValue`];
/// the test below checks each against postcard.
pub(crate) mod index {
    /// Message bodies: the whole table (the test checks every one), of
    /// which the readers need a few.
    #[allow(dead_code)]
    pub(crate) mod body {
        pub(crate) const HELLO: u32 = 0;
        pub(crate) const OPS: u32 = 1;
        pub(crate) const GC_ACK: u32 = 2;
        pub(crate) const GOODBYE: u32 = 3;
        pub(crate) const SYNC_REQUEST: u32 = 4;
        pub(crate) const JOINED: u32 = 5;
        pub(crate) const SYNC_OFFER: u32 = 6;
        pub(crate) const SYNC_FETCH: u32 = 7;
        pub(crate) const SYNC_ANSWER: u32 = 8;
        pub(crate) const WELCOME: u32 = 9;
        pub(crate) const RESEND: u32 = 10;
        pub(crate) const RESEND_GONE: u32 = 11;
        pub(crate) const OP: u32 = 12;
        pub(crate) const NEXT: u32 = 13;
        pub(crate) const PACKED: u32 = 14;
        pub(crate) const SYNC_SAVED: u32 = 15;
        pub(crate) const RUN: u32 = 16;
        pub(crate) const OBSERVE: u32 = 17;
        /// The highest body variant.
        pub(crate) const LAST: u32 = OBSERVE;

        /// Whether a body names a recipient (its first field) rather than a
        /// stream position.
        pub(crate) fn is_directed(body: u32) -> bool {
            (SYNC_FETCH..=RESEND_GONE).contains(&body) || body == SYNC_SAVED
        }
    }

    /// Operations.
    pub(crate) mod op {
        pub(crate) const MAP_SET: u32 = 4;
        pub(crate) const APPEND: u32 = 16;
    }

    /// Values.
    pub(crate) mod value {
        pub(crate) const NULL: u32 = 0;
        pub(crate) const BOOL: u32 = 1;
        pub(crate) const INT: u32 = 2;
        pub(crate) const FLOAT: u32 = 3;
        pub(crate) const STR: u32 = 4;
    }
}

/// The layout of a message on the wire: a flat enum whose variant order is
/// the binary format ([`index::body`]). Generic over the fields that own
/// data, so that one layout serializes borrowed fields (and a sync answer
/// straight from the graph) and deserializes owned ones.
#[derive(Serialize, Deserialize)]
enum Flat<H, O, A, F, M, S, P = (), V = (), R = ()> {
    Hello { seq: u64, hostname: H },
    Ops { seq: u64, tick: u64, ops: O },
    GcAck { seq: u64, frontier: F, members: M },
    Goodbye { seq: u64 },
    SyncRequest { seq: u64, hostname: H },
    Joined { seq: u64 },
    SyncOffer { seq: u64, joiner: Tag },
    SyncFetch { to: Tag },
    SyncAnswer { to: Tag, state: S },
    Welcome { to: Tag, hostname: H, seq: u64 },
    Resend { to: Tag, from_seq: u64 },
    ResendGone { to: Tag },
    Op { seq: u64, tick: u64, op: A },
    Next { seq: u64, op: A },
    Packed { seq: u64, tick: u64, ops: P },
    SyncSaved { to: Tag, state: V },
    Run { seq: u64, messages: R },
    Observe { seq: u64, hostname: H },
}

/// A message on the wire. In JSON it carries the wire version as a field of
/// its own, `v`, written first (in binary the version is the byte before
/// it).
#[derive(Deserialize)]
struct FlatFrame<B> {
    from: Tag,
    body: B,
}

impl<B: Serialize> Serialize for FlatFrame<B> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let json = s.is_human_readable();
        let mut out = s.serialize_struct("FlatFrame", 2 + usize::from(json))?;
        if json {
            out.serialize_field("v", &crate::codec::VERSION)?;
        }
        out.serialize_field("from", &self.from)?;
        out.serialize_field("body", &self.body)?;
        out.end()
    }
}

/// [`FlatFrame`] as JSON reads it: a message without `v` is of version 1,
/// written before JSON carried it.
#[derive(Deserialize)]
struct JsonFrame<B> {
    #[serde(default)]
    v: Option<u64>,
    from: Tag,
    body: B,
}

/// The wire version a JSON message names, read with nothing else of it;
/// `None` when it names none or is not a JSON object.
pub(crate) fn json_version(bytes: &[u8]) -> Option<u64> {
    #[derive(Deserialize)]
    struct Version {
        v: Option<u64>,
    }
    serde_json::from_slice::<Version>(bytes).ok()?.v
}

type FlatRef<'a> = Flat<
    &'a Hostname,
    &'a Ops,
    &'a WireOp,
    &'a Vec<(Tag, u64)>,
    &'a Vec<(Tag, Hostname)>,
    &'a TransferState,
    PackedRef<'a>,
    &'a serde_bytes::ByteBuf,
    RunRef<'a>,
>;

type FlatOwned = Flat<
    Hostname,
    Ops,
    WireOp,
    Vec<(Tag, u64)>,
    Vec<(Tag, Hostname)>,
    Box<TransferState>,
    Packed,
    serde_bytes::ByteBuf,
    Run,
>;

impl Serialize for Frame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let pack = !s.is_human_readable();
        let body: FlatRef<'_> = match &self.msg {
            Message::Sequenced { seq, body } => {
                let seq = *seq;
                match body {
                    Sequenced::Hello { hostname } => Flat::Hello { seq, hostname },
                    Sequenced::Observe { hostname } => Flat::Observe { seq, hostname },
                    Sequenced::Ops { tick: 1, ops } if ops.len() == 1 => {
                        Flat::Next { seq, op: &ops[0] }
                    }
                    Sequenced::Ops { tick, ops } if ops.len() == 1 => Flat::Op {
                        seq,
                        tick: *tick,
                        op: &ops[0],
                    },
                    Sequenced::Ops { tick, ops } if pack && ops.len() >= PACK_FROM => {
                        Flat::Packed {
                            seq,
                            tick: *tick,
                            ops: PackedRef(ops),
                        }
                    }
                    Sequenced::Ops { tick, ops } => Flat::Ops {
                        seq,
                        tick: *tick,
                        ops,
                    },
                    Sequenced::Run { messages } => Flat::Run {
                        seq,
                        messages: RunRef(messages),
                    },
                    Sequenced::GcAck { frontier, members } => Flat::GcAck {
                        seq,
                        frontier,
                        members,
                    },
                    Sequenced::Goodbye => Flat::Goodbye { seq },
                    Sequenced::SyncRequest { hostname } => Flat::SyncRequest { seq, hostname },
                    Sequenced::Joined => Flat::Joined { seq },
                    Sequenced::SyncOffer { joiner } => Flat::SyncOffer {
                        seq,
                        joiner: *joiner,
                    },
                }
            }
            Message::Directed { to, body } => {
                let to = *to;
                match body {
                    Directed::SyncFetch => Flat::SyncFetch { to },
                    Directed::SyncAnswer { state } => Flat::SyncAnswer { to, state },
                    Directed::SyncSaved { bytes } => Flat::SyncSaved { to, state: bytes },
                    Directed::Welcome { hostname, seq } => Flat::Welcome {
                        to,
                        hostname,
                        seq: *seq,
                    },
                    Directed::Resend { from_seq } => Flat::Resend {
                        to,
                        from_seq: *from_seq,
                    },
                    Directed::ResendGone => Flat::ResendGone { to },
                }
            }
        };
        FlatFrame {
            from: self.from,
            body,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let flat = if d.is_human_readable() {
            let JsonFrame { v, from, body } = JsonFrame::<FlatOwned>::deserialize(d)?;
            if let Some(v) = v.filter(|&v| v != u64::from(crate::codec::VERSION)) {
                return Err(serde::de::Error::custom(format_args!(
                    "unsupported wire version {v}"
                )));
            }
            FlatFrame { from, body }
        } else {
            FlatFrame::<FlatOwned>::deserialize(d)?
        };
        let seq = |seq, body| Message::Sequenced { seq, body };
        let to = |to, body| Message::Directed { to, body };
        let msg = match flat.body {
            Flat::Hello { seq: s, hostname } => seq(s, Sequenced::Hello { hostname }),
            Flat::Observe { seq: s, hostname } => seq(s, Sequenced::Observe { hostname }),
            Flat::Ops { seq: s, tick, ops } => seq(s, Sequenced::Ops { tick, ops }),
            Flat::Packed {
                seq: s,
                tick,
                ops: Packed(ops),
            } => seq(s, Sequenced::Ops { tick, ops }),
            Flat::Op { seq: s, tick, op } => seq(
                s,
                Sequenced::Ops {
                    tick,
                    ops: SmallVec::from_buf([op]),
                },
            ),
            Flat::Next { seq: s, op } => seq(
                s,
                Sequenced::Ops {
                    tick: 1,
                    ops: SmallVec::from_buf([op]),
                },
            ),
            Flat::Run {
                seq: s,
                messages: Run(messages),
            } => seq(s, Sequenced::Run { messages }),
            Flat::GcAck {
                seq: s,
                frontier,
                members,
            } => seq(s, Sequenced::GcAck { frontier, members }),
            Flat::Goodbye { seq: s } => seq(s, Sequenced::Goodbye),
            Flat::SyncRequest { seq: s, hostname } => seq(s, Sequenced::SyncRequest { hostname }),
            Flat::Joined { seq: s } => seq(s, Sequenced::Joined),
            Flat::SyncOffer { seq: s, joiner } => seq(s, Sequenced::SyncOffer { joiner }),
            Flat::SyncFetch { to: t } => to(t, Directed::SyncFetch),
            Flat::SyncAnswer { to: t, state } => to(t, Directed::SyncAnswer { state }),
            Flat::SyncSaved { to: t, state } => to(t, Directed::SyncSaved { bytes: state }),
            Flat::Welcome {
                to: t,
                hostname,
                seq,
            } => to(t, Directed::Welcome { hostname, seq }),
            Flat::Resend { to: t, from_seq } => to(t, Directed::Resend { from_seq }),
            Flat::ResendGone { to: t } => to(t, Directed::ResendGone),
        };
        Ok(Frame {
            from: flat.from,
            msg,
        })
    }
}

/// Serializes exactly as a [`Frame`] carrying [`Directed::SyncAnswer`] from
/// `from` to `to`, with a state of any serializable form (a view of the
/// sender's graph, so that a large document is never copied into wire
/// types first).
pub(crate) fn answer_frame<S: Serialize>(from: Tag, to: Tag, state: &S) -> impl Serialize + '_ {
    FlatFrame {
        from,
        body: Flat::<(), (), (), (), (), &S>::SyncAnswer { to, state },
    }
}

/// Where a list insert goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum WireOrigin {
    /// At the head.
    Head,
    /// After the sender's own element this many counters before the
    /// insert's first (a push after the sender's previous push: one byte).
    Back(u64),
    /// After this element.
    Id(WireId),
}

/// Full replica state for a joiner. Ids index `peers`.
///
/// `O` holds the objects: decoded wire types by default, a view of the
/// sender's graph when encoding (so a large state is never copied into wire
/// types first).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct TransferState<O = Vec<ObjState>> {
    pub(crate) peers: Vec<(Tag, Hostname)>,
    pub(crate) streams: Vec<StreamState>,
    pub(crate) root: WireValue,
    pub(crate) root_stamp: Option<WireId>,
    pub(crate) objects: O,
    pub(crate) members: Vec<u32>,
    /// Acknowledged frontiers the answerer holds (its own included): they
    /// belong to the streams the joiner continues from.
    pub(crate) acks: Vec<(u32, Vec<(Tag, u64)>)>,
    /// Per object: its lock queue (request, token when granted) and the
    /// highest token known.
    pub(crate) locks: Vec<LockQueueState>,
    /// Members still syncing, as the answerer knows.
    pub(crate) syncing: Vec<u32>,
    /// On an ordered log: the position covered and each member's latest log
    /// time in milliseconds (its lease).
    pub(crate) log: Option<LogTransfer>,
    /// Peers that left or were evicted: a joiner must not take them for
    /// members when a later acknowledgement lists them (its sender had
    /// not yet read their departure).
    pub(crate) departed: Vec<u32>,
    /// Per object: departed requesters whose grants may have gone unheard,
    /// which the next grant must pass (how many, and their highest request
    /// counter). Since saved state version 5.
    #[serde(default)]
    pub(crate) unheard: Vec<UnheardState>,
    /// Per syncing member whose sync the answerer follows: the members its
    /// answer waits for and those whose offer to it the state covers, so
    /// that the joiner answers it as the answerer would (the offers made
    /// before it listened, it never reads). Since saved state version 6.
    #[serde(default)]
    pub(crate) waits: Vec<SyncWaitState>,
}

/// One object's lock queue in a transferred state: the object, its
/// requests (with the token of a known grant) and the highest token known.
pub(crate) type LockQueueState = (WireId, Vec<(WireId, Option<u64>)>, u64);

/// One object's unheard departed requesters in a transferred state: the
/// object, how many, and their highest request counter.
pub(crate) type UnheardState = (WireId, u64, u64);

/// One syncing member's sync as its answerer follows it: the member, the
/// members its answer waits for (once its request was read), and those
/// whose offer to it was applied.
pub(crate) type SyncWaitState = (u32, Option<Vec<u32>>, Vec<u32>);

/// Where the answerer stands in one sender's stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct StreamState {
    pub(crate) peer: u32,
    pub(crate) next_seq: u64,
    pub(crate) lamport: u64,
    pub(crate) dict: Vec<u32>,
}

/// One object in a transferred state. Ids that follow from their context
/// are left out (`None`), which most are: objects come in id order and many
/// were created one after the other, a map's entries written when it was
/// created carry the map's own stamp, and an array's slots mostly have
/// consecutive ids. An object's `id` is `None` when it is the previous
/// object's id plus one.
///
/// `E` and `S` hold a map's entries and a list's slots: decoded wire types
/// by default, views of the sender's objects when encoding.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum ObjState<E = Vec<EntryState>, S = Vec<SlotState>> {
    Map { id: Option<WireId>, entries: E },
    List { id: Option<WireId>, slots: S },
}

/// A map entry in a transferred state: key, value (`None`: a tombstone) and
/// stamp (`None`: the map's id).
pub(crate) type EntryState = (SmolStr, Option<WireValue>, Option<WireId>);

/// A list slot; its `id` is `None` when it is the previous slot's id plus
/// one (for the first slot, the list's id plus one).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum SlotState {
    Home {
        id: Option<WireId>,
        value: WireValue,
        deleted: bool,
        away: bool,
        /// Value stamp, position and position stamp, when not the defaults.
        extra: Option<(WireId, WireId, WireId)>,
    },
    Moved {
        id: Option<WireId>,
        elem: WireId,
        live: bool,
    },
    /// [`SlotState::Home`] of a live element at its home with the insert's
    /// stamps (most elements): three bytes shorter.
    Live {
        id: Option<WireId>,
        value: WireValue,
    },
}

/// The canonical document encoding: root and reachable objects in
/// depth-first order, visible content only, peers sorted. Equal on every
/// replica that received the same messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Canonical {
    pub(crate) peers: Vec<(Tag, Hostname)>,
    pub(crate) root: WireValue,
    pub(crate) root_stamp: Option<WireId>,
    pub(crate) objects: Vec<CanonObj>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum CanonObj {
    Map {
        id: WireId,
        entries: Vec<(SmolStr, WireValue, WireId)>,
    },
    List {
        id: WireId,
        elems: Vec<(WireId, WireValue, WireId)>,
    },
}

/// Where an ordered log stood for a replica's state transfer; times in
/// nanoseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct LogTransfer {
    /// The position covered.
    pub(crate) position: u64,
    /// The lease clock.
    pub(crate) clock: u64,
    /// The log's own timestamp of the last message.
    pub(crate) stamp: u64,
    /// Each member's latest message on the lease clock.
    pub(crate) seen: Vec<(u32, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The variant number postcard writes first for `value`.
    fn first_varint<T: Serialize>(value: &T) -> u32 {
        let bytes = postcard::to_allocvec(value).unwrap();
        postcard::take_from_bytes::<u32>(&bytes).unwrap().0
    }

    #[test]
    fn the_variant_numbers_are_postcards() {
        use index::body::*;
        let hostname = Hostname("h".into());
        let h = || &hostname;
        let ops = Ops::new();
        let ops = &ops;
        let op = &WireOp::Tick;
        let v: &Vec<(Tag, u64)> = &Vec::new();
        let m: &Vec<(Tag, Hostname)> = &Vec::new();
        let t = Tag(1);
        let bodies: Vec<(u32, Flat<_, _, _, _, _, ()>)> = vec![
            (
                HELLO,
                Flat::Hello {
                    seq: 1,
                    hostname: h(),
                },
            ),
            (
                OPS,
                Flat::Ops {
                    seq: 1,
                    tick: 1,
                    ops,
                },
            ),
            (
                GC_ACK,
                Flat::GcAck {
                    seq: 1,
                    frontier: v,
                    members: m,
                },
            ),
            (GOODBYE, Flat::Goodbye { seq: 1 }),
            (
                SYNC_REQUEST,
                Flat::SyncRequest {
                    seq: 1,
                    hostname: h(),
                },
            ),
            (JOINED, Flat::Joined { seq: 1 }),
            (SYNC_OFFER, Flat::SyncOffer { seq: 1, joiner: t }),
            (SYNC_FETCH, Flat::SyncFetch { to: t }),
            (SYNC_ANSWER, Flat::SyncAnswer { to: t, state: () }),
            (
                WELCOME,
                Flat::Welcome {
                    to: t,
                    hostname: h(),
                    seq: 1,
                },
            ),
            (RESEND, Flat::Resend { to: t, from_seq: 1 }),
            (RESEND_GONE, Flat::ResendGone { to: t }),
            (
                OP,
                Flat::Op {
                    seq: 1,
                    tick: 1,
                    op,
                },
            ),
            (NEXT, Flat::Next { seq: 1, op }),
            (
                PACKED,
                Flat::Packed {
                    seq: 1,
                    tick: 1,
                    ops: (),
                },
            ),
            (SYNC_SAVED, Flat::SyncSaved { to: t, state: () }),
            (
                RUN,
                Flat::Run {
                    seq: 1,
                    messages: (),
                },
            ),
            (
                OBSERVE,
                Flat::Observe {
                    seq: 1,
                    hostname: h(),
                },
            ),
        ];
        for (i, (want, body)) in bodies.iter().enumerate() {
            assert_eq!(first_varint(body), *want, "body {i}");
            assert_eq!(
                is_directed(*want),
                matches!(
                    body,
                    Flat::SyncFetch { .. }
                        | Flat::SyncAnswer { .. }
                        | Flat::SyncSaved { .. }
                        | Flat::Welcome { .. }
                        | Flat::Resend { .. }
                        | Flat::ResendGone { .. }
                )
            );
        }
        let obj = WireId { p: 0, c: 1 };
        let value = WireValue::Null;
        assert_eq!(
            first_varint(&WireOp::MapSet {
                obj,
                key: "k".into(),
                value: value.clone()
            }),
            index::op::MAP_SET
        );
        assert_eq!(
            first_varint(&WireOp::Append { obj, value }),
            index::op::APPEND
        );
        for (want, value) in [
            (index::value::NULL, WireValue::Null),
            (index::value::BOOL, WireValue::Bool(true)),
            (index::value::INT, WireValue::Int(1)),
            (index::value::FLOAT, WireValue::Float(1.0)),
            (index::value::STR, WireValue::Str("s".into())),
        ] {
            assert_eq!(first_varint(&value), want, "{value:?}");
        }
    }

    #[test]
    fn a_long_hostname_breaks_the_limits() {
        let hostname = |n| Hostname("h".repeat(n).into());
        assert_eq!(hostname(Hostname::MAX).check(), Ok(()));
        assert!(hostname(Hostname::MAX + 1).check().is_err());
        let frame = |hostname| Frame {
            from: Tag(1),
            msg: Message::Directed {
                to: Tag(2),
                body: Directed::Welcome { hostname, seq: 1 },
            },
        };
        assert_eq!(check_limits(&frame(hostname(3))), Ok(()));
        assert!(check_limits(&frame(hostname(Hostname::MAX + 1))).is_err());
    }
}
