//! Wire messages: serde types, encoded by [`crate::codec`].
//!
//! Every message names its sender by tag (the sender's incarnation). A
//! sender's *sequenced* messages (hello, operations, acknowledgements,
//! goodbye, sync requests) form one stream numbered from 1: receivers apply
//! them in that order, drop duplicates and ask for retransmission on a gap.
//! *Directed* messages (the sync handshake, retransmission requests) name one
//! recipient; everybody else ignores them.
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

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use smallvec::SmallVec;
use smol_str::SmolStr;

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
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
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

/// One operation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum WireOp {
    /// Adds a peer to the sender's dictionary.
    Intro { tag: Tag, hostname: SmolStr },
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
    /// the lock itself (its request and token) and the members it knows.
    LockAck {
        obj: WireId,
        req: WireId,
        held: Option<(WireId, u64)>,
        members: Vec<(Tag, SmolStr)>,
    },
    /// The sender no longer waits for `peer`, which stopped answering.
    Evict { peer: Tag, hostname: SmolStr },
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
}

/// One message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Frame {
    pub(crate) from: Tag,
    pub(crate) body: Body,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Body {
    /// First message of a peer that did not ask for a sync.
    Hello { seq: u64, hostname: SmolStr },
    /// A group of operations, applied as one change. `tick` is the first
    /// operation's counter minus the last counter of the sender's previous
    /// operations message (at least 1): one byte where an absolute counter
    /// takes three or more.
    Ops {
        seq: u64,
        tick: u64,
        /// Inline when one: most messages carry one operation.
        ops: SmallVec<[WireOp; 1]>,
    },
    /// The sender acknowledges having applied everything up to `frontier`
    /// (per peer, the last counter) and lists the members it knows.
    GcAck {
        seq: u64,
        frontier: Vec<(Tag, u64)>,
        members: Vec<(Tag, SmolStr)>,
    },
    /// The sender leaves for good.
    Goodbye { seq: u64 },
    /// The sender dropped its state and asks for the document.
    SyncRequest { seq: u64, hostname: SmolStr },
    /// The sender's sync completed.
    Joined { seq: u64 },
    /// The sender saw `joiner`'s sync request and can serve it. Broadcast
    /// and sequenced: whoever receives it has every earlier message of the
    /// sender, which is what a snapshot for the joiner must cover.
    SyncOffer { seq: u64, joiner: Tag },
    /// Directed: the recipient is chosen to serve the sync.
    SyncFetch { to: Tag },
    /// Directed: the document, as of the sender's state.
    SyncAnswer { to: Tag, state: Box<TransferState> },
    /// Directed: the answer to a hello, so that a peer that started later
    /// learns of the sender and can ask for its messages.
    Welcome {
        to: Tag,
        hostname: SmolStr,
        seq: u64,
    },
    /// Directed: resend your sequenced messages from `from_seq` on.
    Resend { to: Tag, from_seq: u64 },
    /// Directed: the messages asked for are no longer kept.
    ResendGone { to: Tag },
    /// [`Body::Ops`] with one operation (most messages), a byte shorter.
    /// Decoding turns it into `Ops`.
    Op { seq: u64, tick: u64, op: WireOp },
    /// [`Body::Op`] whose tick is 1 (the sender received nothing that moved
    /// its counter since its previous message: every message of a lone
    /// writer), a byte shorter. Decoding turns it into `Ops`.
    Next { seq: u64, op: WireOp },
}

impl Body {
    /// The stream position of a sequenced message.
    pub(crate) fn seq(&self) -> Option<u64> {
        match self {
            Body::Hello { seq, .. }
            | Body::Ops { seq, .. }
            | Body::Op { seq, .. }
            | Body::Next { seq, .. }
            | Body::GcAck { seq, .. }
            | Body::Goodbye { seq }
            | Body::SyncRequest { seq, .. }
            | Body::Joined { seq }
            | Body::SyncOffer { seq, .. } => Some(*seq),
            _ => None,
        }
    }

    /// The recipient of a directed message.
    pub(crate) fn to(&self) -> Option<Tag> {
        match self {
            Body::SyncFetch { to }
            | Body::SyncAnswer { to, .. }
            | Body::Welcome { to, .. }
            | Body::Resend { to, .. }
            | Body::ResendGone { to } => Some(*to),
            _ => None,
        }
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
    pub(crate) peers: Vec<(Tag, SmolStr)>,
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
}

/// One object's lock queue in a transferred state: the object, its
/// requests (with the token of a known grant) and the highest token known.
pub(crate) type LockQueueState = (WireId, Vec<(WireId, Option<u64>)>, u64);

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
    pub(crate) peers: Vec<(Tag, SmolStr)>,
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
