//! This replica's outgoing stream: its Lamport clock, the operations of the
//! open group, the dictionary of peers introduced so far, the messages
//! queued for the caller and the recent ones kept for resending.
//!
//! Invariant: every operations message moves the clock forward, and the
//! counters of one message's operations are consecutive (see
//! [`crate::wire`]), so an open group is closed before anything remote is
//! applied (DESIGN.md, "Messages and streams").

use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::clock::Peers;
use crate::codec::packed::PackedWriter;
use crate::codec::{self, WireFormat};
use crate::config::Config;
use crate::error::Error;
use crate::resend::ResendLog;
use crate::value::{Id, Input, PeerIdx, Value};
use crate::wire::{
    Directed, Frame, Hostname, Message, Ops, Sequenced, Tag, WireId, WireOp, WireValue,
};

/// An outgoing message. Send `bytes` to every other replica (or only to
/// `to` when set; broadcasting those is harmless), in the order polled.
#[must_use = "a transmit must be sent or the peers never converge"]
#[derive(Clone, Debug)]
pub struct Transmit {
    /// The recipient's tag (its incarnation) when the message is for one peer.
    pub to: Option<u32>,
    /// The encoded message.
    pub bytes: Arc<[u8]>,
}

/// The outgoing stream under construction.
#[derive(Debug)]
pub(crate) struct Outbox {
    tag: Tag,
    format: WireFormat,
    /// How many sent messages the resend log keeps.
    keep: usize,
    /// Over an ordered log, the resend log keeps every message until it
    /// is read back, and this many after.
    keep_read: Option<usize>,
    /// The last sequence number sent.
    seq: u64,
    /// The Lamport clock.
    clock: u64,
    /// The last counter of the last operations message sent.
    sent_lamport: u64,
    /// Peers introduced in this stream: local index to wire index.
    dict: FxHashMap<PeerIdx, u32>,
    /// The sum of [`intro_bound`] over `dict`.
    introduced: usize,
    /// The open group's operations, and the counter of its first.
    ops: Vec<WireOp>,
    /// A large group's operations (in the binary format), encoded as they
    /// come instead of in `ops` (see [`STREAM_FROM`]).
    packed: Option<PackedWriter>,
    first: Option<u64>,
    depth: u32,
    /// While offline: the weight the open operations may reach before
    /// they go out as a message (see [`Outbox::hold`]).
    held: Option<usize>,
    /// The open operations' weight, counted while held.
    weight: usize,
    /// The largest message peers accept ([`Config::max_message_size`]).
    max_message: usize,
    /// Bytes the writes since the last message may take in it, as
    /// reserved by [`Outbox::room`].
    reserved: usize,
    /// Bytes a write leaves free for the releases of the locks this
    /// replica holds or waits for: a release cannot be refused, however
    /// full the open group is. Set before each write
    /// ([`Outbox::keep_for_releases`]).
    for_releases: usize,
    /// An operation was held since [`Outbox::take_fresh_held`].
    fresh: bool,
    /// An operations message went out since [`Outbox::take_moved`].
    moved: bool,
    queue: VecDeque<Transmit>,
    log: ResendLog,
    /// For each peer resent to, the last position resent: a range asked
    /// for again is not resent whole (each answer may be the whole log)
    /// until the peer's next sync request or its departure
    /// ([`Outbox::forget_resent`]).
    resent: FxHashMap<u32, u64>,
    /// Encoding buffer, reused between messages.
    scratch: Vec<u8>,
}

/// The largest operations buffer kept for the next message; a larger one
/// (a batch's) is freed once its message is encoded.
const KEEP_OPS: usize = 1024;

/// The largest encoding buffer kept for the next message.
const KEEP_SCRATCH: usize = 64 << 10;

/// From this many operations on, a group's operations are encoded as they
/// come (into the packed form their message takes) rather than kept: a
/// million-object batch held 88 MB of operations until its message was
/// encoded (3 MB), a seventh of the whole benchmark's page faults.
pub(crate) const STREAM_FROM: usize = 256;

/// An upper bound of an operation's share of a packed message, in bytes:
/// what decides when held operations must go out.
fn weight(op: &WireOp) -> usize {
    const BASE: usize = 32;
    let value = |v: &WireValue| match v {
        WireValue::Str(s) => BASE + s.len(),
        WireValue::Bytes(b) => BASE + b.len(),
        _ => BASE,
    };
    match op {
        WireOp::MapSet { key, value: v, .. } => key.len() + value(v),
        WireOp::MapDelete { key, .. } => BASE + key.len(),
        WireOp::Append { value: v, .. } | WireOp::ListSet { value: v, .. } => value(v),
        WireOp::Root { value: v } => value(v),
        WireOp::ListInsert { values, .. } | WireOp::NewArray { values } => {
            BASE + values.iter().map(value).sum::<usize>()
        }
        WireOp::NewMap { entries } => {
            BASE + entries
                .iter()
                .map(|(k, v)| k.len() + value(v))
                .sum::<usize>()
        }
        WireOp::ListDelete { runs, .. } => BASE + runs.len() * BASE,
        WireOp::Intro { hostname, .. } | WireOp::Evict { hostname, .. } => BASE + hostname.len(),
        WireOp::LockAck { members, .. } => {
            BASE + members.iter().map(|(_, h)| BASE + h.len()).sum::<usize>()
        }
        _ => BASE,
    }
}

/// [`weight`] of the operations that write `input` into a slot: its value
/// there, and the operations of the objects it creates.
pub(crate) fn input_weight(input: &Input) -> usize {
    // `weight`'s allowance, with room for ids of the largest counters
    // from a stream that names more than 127 peers.
    const BASE: usize = PLANNED_BASE;
    match input {
        Input::Value(Value::Str(s)) => BASE + s.len(),
        Input::Value(Value::Bytes(b)) => BASE + b.len(),
        Input::Value(_) => BASE,
        // The reference in the slot, and the new object's operation.
        Input::Map(entries) => {
            2 * BASE
                + entries
                    .iter()
                    .map(|(k, v)| k.len() + input_weight(v))
                    .sum::<usize>()
        }
        Input::Array(items) => 2 * BASE + items.iter().map(input_weight).sum::<usize>(),
    }
}

/// The allowance of an operation of a planned write in a packed message
/// ([`input_weight`]).
pub(crate) const PLANNED_BASE: usize = 40;

/// Whether a group that will hold `more` operations besides those open is
/// packed before it ends ([`STREAM_FROM`]): its writes' checks then count
/// the bytes encoded so far, which [`weight`] bounds, not their bounds.
pub(crate) fn packs(outbox: &Outbox, more: usize) -> bool {
    outbox.packed.is_some()
        || (outbox.format == WireFormat::Binary
            && outbox.ops.len().saturating_add(more) >= STREAM_FROM)
}

/// An upper bound of the bytes of a message around its operations.
const MESSAGE_HEADER: usize = 64;

/// An upper bound of the bytes an operation takes in its message besides
/// the inputs it carries (its kind, object, key framing and ids).
pub(crate) const OP_OVERHEAD: usize = 64;

/// An upper bound of the bytes `input` takes in an operation of `format`,
/// the operations of the objects it creates included: what decides,
/// before anything changes, whether a write fits in a message.
#[inline]
pub(crate) fn input_bound(input: &Input, format: WireFormat) -> usize {
    // Most writes: a scalar, in binary.
    match input {
        Input::Value(v) if format == WireFormat::Binary => {
            16 + match v {
                Value::Str(s) => s.len(),
                Value::Bytes(b) => b.len(),
                _ => 0,
            }
        }
        _ => tree_bound(input, format),
    }
}

/// [`input_bound`] of any input.
fn tree_bound(input: &Input, format: WireFormat) -> usize {
    let scalar = match format {
        WireFormat::Binary => 16,
        WireFormat::Json => 64,
    };
    match input {
        Input::Value(Value::Str(s)) => scalar + text_bound(s, format),
        // JSON writes a byte string's bytes as numbers, at most "255,".
        Input::Value(Value::Bytes(b)) => match format {
            WireFormat::Binary => scalar + b.len(),
            WireFormat::Json => scalar + 4 * b.len(),
        },
        Input::Value(_) => scalar,
        Input::Map(entries) => entries.iter().fold(OP_OVERHEAD + scalar, |n, (k, v)| {
            n + key_bound(k, format) + tree_bound(v, format)
        }),
        Input::Array(items) => items
            .iter()
            .fold(OP_OVERHEAD + scalar, |n, v| n + tree_bound(v, format)),
    }
}

/// An upper bound of the bytes introducing a peer of this hostname takes
/// in a message, in either format.
pub(crate) fn intro_bound(hostname: &str) -> usize {
    48 + text_bound(hostname, WireFormat::Json)
}

/// An upper bound of the bytes an operation with no input takes (a move,
/// a delete's frame), its ids included.
pub(crate) fn bare_op_bound(format: WireFormat) -> usize {
    match format {
        WireFormat::Binary => OP_OVERHEAD,
        WireFormat::Json => 192,
    }
}

/// An upper bound of the bytes a lock's acknowledgement listing
/// `members` takes, its ids included.
pub(crate) fn lock_ack_bound<'a>(
    members: impl IntoIterator<Item = &'a str>,
    format: WireFormat,
) -> usize {
    members.into_iter().fold(bare_op_bound(format), |n, host| {
        n + 24 + text_bound(host, format)
    })
}

/// An upper bound of the bytes one run of a list delete takes.
pub(crate) fn run_bound(format: WireFormat) -> usize {
    match format {
        WireFormat::Binary => 24,
        WireFormat::Json => 64,
    }
}

/// How many operations a write of `input` may refer to ids of other
/// peers in (its references).
pub(crate) fn refs(input: &Input) -> usize {
    match input {
        Input::Value(Value::Ref(_)) => 1,
        Input::Value(_) => 0,
        Input::Map(entries) => entries.iter().map(|(_, v)| refs(v)).sum(),
        Input::Array(items) => items.iter().map(refs).sum(),
    }
}

/// Element ids compressed into runs of consecutive counters (most
/// deletes are one run, kept inline).
pub(crate) fn id_runs(elems: &[Id]) -> SmallVec<[(Id, u32); 1]> {
    let mut runs: SmallVec<[(Id, u32); 1]> = SmallVec::new();
    for &e in elems {
        match runs.last_mut() {
            Some((start, len))
                if start.peer == e.peer && start.counter + u64::from(*len) == e.counter =>
            {
                *len += 1
            }
            _ => runs.push((e, 1)),
        }
    }
    runs
}

/// An upper bound of the bytes a map key takes in an operation.
#[inline]
pub(crate) fn key_bound(key: &str, format: WireFormat) -> usize {
    16 + text_bound(key, format)
}

/// An upper bound of a string's bytes in `format`, its length excluded:
/// JSON escapes quotes and backslashes in two bytes, and control
/// characters in at most six.
#[inline]
fn text_bound(s: &str, format: WireFormat) -> usize {
    match format {
        WireFormat::Binary => s.len(),
        WireFormat::Json => s
            .bytes()
            .map(|b| match b {
                b'"' | b'\\' => 2,
                0..=0x1f => 6,
                _ => 1,
            })
            .sum(),
    }
}

impl Outbox {
    /// The largest message peers accept ([`Config::max_message_size`]).
    pub(crate) fn max_message(&self) -> usize {
        self.max_message
    }

    pub(crate) fn new(tag: Tag, config: &Config) -> Outbox {
        let mut outbox = Outbox::with(tag, config.format, config.resend_log);
        outbox.set_max_message(config.max_message);
        if config.lease.is_some() {
            // Over an ordered log every message is kept until the replica
            // reads it back ([`Outbox::forget_sent`]), so that the writes
            // of those the log refuses can be carried over.
            outbox.keep_read = Some(outbox.keep);
            outbox.keep = usize::MAX;
        }
        outbox
    }

    /// Sets the largest message the writes may make.
    pub(crate) fn set_max_message(&mut self, max: usize) {
        self.max_message = max;
    }

    /// What the operations of one message may take: the largest message
    /// less a header allowance.
    #[inline]
    fn room_limit(&self) -> usize {
        self.max_message.saturating_sub(MESSAGE_HEADER)
    }

    fn with(tag: Tag, format: WireFormat, keep: usize) -> Outbox {
        Outbox {
            tag,
            format,
            keep,
            keep_read: None,
            seq: 0,
            clock: 0,
            sent_lamport: 0,
            dict: FxHashMap::default(),
            introduced: 0,
            ops: Vec::new(),
            packed: None,
            first: None,
            depth: 0,
            held: None,
            weight: 0,
            max_message: usize::MAX,
            reserved: 0,
            for_releases: 0,
            fresh: false,
            moved: false,
            queue: VecDeque::new(),
            log: ResendLog::default(),
            resent: FxHashMap::default(),
            scratch: Vec::new(),
        }
    }

    /// A fresh stream for a new incarnation `tag`: sequence numbers, the
    /// dictionary and the queue start over; the clock goes on, so that ids
    /// never repeat, and so does holding.
    pub(crate) fn restart(&mut self, tag: Tag) {
        *self = Outbox {
            clock: self.clock,
            held: self.held,
            keep_read: self.keep_read,
            max_message: self.max_message,
            ..Outbox::with(tag, self.format, self.keep)
        };
    }

    /// Holds operations messages back (`Some(limit)`) while nobody can
    /// receive them: the writes made meanwhile go out as one message (or
    /// one per `limit` of weight), packed, instead of one message each.
    /// `None` ends holding; the caller flushes what was held.
    pub(crate) fn hold(&mut self, limit: Option<usize>) {
        if limit.is_none() {
            self.weight = 0;
        }
        self.held = limit;
    }

    /// Starts the clock at `clock` (a successor continues its
    /// predecessor's counters).
    pub(crate) fn continue_from(&mut self, clock: u64) {
        self.clock = self.clock.max(clock);
    }

    /// The last sequence number sent.
    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// The Lamport clock.
    pub(crate) fn clock(&self) -> u64 {
        self.clock
    }

    /// Moves the clock up to a counter received.
    #[inline]
    pub(crate) fn observe(&mut self, counter: u64) {
        self.clock = self.clock.max(counter);
    }

    /// The last counter of the last operations message sent (what peers
    /// have of this replica).
    pub(crate) fn sent_lamport(&self) -> u64 {
        self.sent_lamport
    }

    /// The last counter of this replica's operations applied here, held
    /// ones included: a held message of deletes only will take the next
    /// counter. What a reclamation round must see acknowledged, since the
    /// state it marks already has these operations' effects.
    pub(crate) fn applied_lamport(&self) -> u64 {
        match (!self.has_ops(), self.first) {
            (true, _) => self.sent_lamport,
            (false, Some(_)) => self.clock,
            (false, None) => self.clock + 1,
        }
    }

    /// The sequence number of this replica's latest message, a held one
    /// included (it takes the next number: anything else sequenced sends
    /// it first).
    pub(crate) fn applied_seq(&self) -> u64 {
        self.seq + u64::from(self.has_ops())
    }

    /// This stream's dictionary, for a state transfer: for each wire index
    /// from 1 on, the local peer.
    pub(crate) fn dictionary(&self) -> Vec<PeerIdx> {
        let mut dict: Vec<(u32, PeerIdx)> = self.dict.iter().map(|(&p, &i)| (i, p)).collect();
        dict.sort();
        dict.into_iter().map(|(_, p)| p).collect()
    }

    /// An id of this stream read back from the wire: index 0 is this
    /// replica, the others were introduced in its earlier messages.
    pub(crate) fn resolve(&self, w: &WireId) -> Option<Id> {
        let peer = match w.p {
            0 => Some(PeerIdx::SELF),
            p => self
                .dict
                .iter()
                .find(|&(_, &i)| i == p)
                .map(|(&peer, _)| peer),
        };
        peer.map(|p| Id::new(p, w.c))
    }

    // ----------------------------------------------------------- groups

    /// Opens a group of operations (one message); groups nest.
    pub(crate) fn begin(&mut self) {
        self.depth += 1;
    }

    /// Closes a group; true when it was the outermost (its message is due).
    pub(crate) fn end(&mut self) -> bool {
        self.depth = self.depth.saturating_sub(1);
        self.depth == 0
    }

    /// Closes every open group (its message is due).
    pub(crate) fn end_all(&mut self) {
        self.depth = 0;
    }

    /// How many groups are open.
    pub(crate) fn depth(&self) -> u32 {
        self.depth
    }

    /// Opens again the `depth` groups an input closed ([`Outbox::end_all`])
    /// around what it applied: the caller's group goes on, in a message of
    /// its own, rather than leaving each later write as one.
    pub(crate) fn reopen(&mut self, depth: u32) {
        if self.depth == 0 {
            self.depth = depth;
        }
    }

    /// Whether operations were held back since the last call (they count
    /// as sent for the heartbeat).
    pub(crate) fn take_fresh_held(&mut self) -> bool {
        std::mem::take(&mut self.fresh)
    }

    /// Whether a group is open.
    pub(crate) fn in_group(&self) -> bool {
        self.depth > 0
    }

    /// Whether exactly one group is open.
    pub(crate) fn is_outermost(&self) -> bool {
        self.depth == 1
    }

    /// Whether no operation waits for its group to close.
    pub(crate) fn is_idle(&self) -> bool {
        !self.has_ops()
    }

    /// Whether the open group has operations.
    fn has_ops(&self) -> bool {
        !self.ops.is_empty() || self.packed.is_some()
    }

    /// Reserves room for a write of at most `bytes` in the message of the
    /// operations not yet sent, beside the room kept for releases:
    /// `Ok(true)` when it fits there, `Ok(false)` when it fits only in a
    /// message of its own (operations held while offline must go out
    /// first; nothing is reserved then).
    ///
    /// # Errors
    /// [`Error::TooLarge`] when the write fits in no message peers accept,
    /// or not in its open group's.
    #[inline]
    pub(crate) fn room(&mut self, bytes: usize) -> Result<bool, Error> {
        if self.reserve(bytes.saturating_add(self.for_releases), bytes) {
            return Ok(true);
        }
        self.no_room(bytes)
    }

    /// Whether writes of `bytes` in all fit beside the operations not yet
    /// sent, with the room kept for releases, without flushing what the
    /// open group holds ([`Replica::check_room`](crate::Replica::check_room)).
    pub(crate) fn check_room(&self, bytes: usize) -> Result<(), Error> {
        let size = self
            .pending()
            .saturating_add(bytes)
            .saturating_add(self.for_releases);
        if size > self.room_limit() {
            return Err(Error::TooLarge {
                size,
                limit: self.max_message,
            });
        }
        Ok(())
    }

    /// Reserves `bytes` when `needed` bytes fit beside the operations not
    /// yet sent.
    #[inline]
    fn reserve(&mut self, needed: usize, bytes: usize) -> bool {
        let pending = self.pending();
        if pending.saturating_add(needed) > self.room_limit() {
            return false;
        }
        self.reserved = pending + bytes;
        true
    }

    /// [`Outbox::room`] when the write does not fit beside what is open.
    #[cold]
    fn no_room(&self, bytes: usize) -> Result<bool, Error> {
        let needed = bytes.saturating_add(self.for_releases);
        if self.depth == 0 && needed <= self.room_limit() {
            return Ok(false);
        }
        Err(Error::TooLarge {
            size: self.pending().saturating_add(needed),
            limit: self.max_message,
        })
    }

    /// The bytes the operations not yet sent take or have reserved.
    #[inline]
    fn pending(&self) -> usize {
        // Exact once packed: every operation is encoded as it comes.
        match &self.packed {
            None => self.reserved,
            Some(packed) => packed.byte_len(),
        }
    }

    /// Reserves room for an operation of at most `bytes` that this replica
    /// sends whatever the limit says (a lock's release or
    /// acknowledgement): whether it fits beside the operations not yet
    /// sent, the room kept for releases included.
    pub(crate) fn room_for_own(&mut self, bytes: usize) -> bool {
        self.reserve(bytes, bytes)
    }

    /// Keeps `bytes` free in every message a write makes from now on, for
    /// the releases of the locks this replica holds or waits for.
    #[inline]
    pub(crate) fn keep_for_releases(&mut self, bytes: usize) {
        self.for_releases = bytes;
    }

    /// An upper bound of the bytes the introductions of peers a write
    /// may make take: at most one for each of the (at most) `ids()` ids of
    /// other peers it refers to, and none for a peer introduced already.
    #[inline]
    pub(crate) fn intros_bound(&self, peers: &Peers, ids: impl FnOnce() -> usize) -> usize {
        let (all, largest) = peers.intros();
        match all.saturating_sub(self.introduced) {
            0 => 0,
            left => left.min(ids().saturating_mul(largest)),
        }
    }

    /// A new counter for the open group's next operation.
    #[inline]
    pub(crate) fn tick(&mut self) -> Id {
        self.clock += 1;
        if self.first.is_none() {
            self.first = Some(self.clock);
        }
        Id::new(PeerIdx::SELF, self.clock)
    }

    /// Takes `n` more counters for the operation just ticked (the elements
    /// an array insert creates after its first).
    #[inline]
    pub(crate) fn skip(&mut self, n: u64) {
        self.clock += n;
    }

    #[inline]
    pub(crate) fn push(&mut self, op: WireOp) {
        if self.held.is_some() {
            self.weight += weight(&op);
            self.fresh = true;
        }
        self.queue_op(op);
    }

    /// Adds an operation to the open group.
    #[inline]
    fn queue_op(&mut self, op: WireOp) {
        if let Some(packed) = &mut self.packed {
            return packed.push(&op);
        }
        self.ops.push(op);
        if self.ops.len() >= STREAM_FROM && self.format == WireFormat::Binary {
            let mut packed = PackedWriter::default();
            for op in self.ops.drain(..) {
                packed.push(&op);
            }
            self.packed = Some(packed);
        }
    }

    /// The wire form of an id in this stream, introducing its peer first
    /// when needed.
    #[inline]
    pub(crate) fn wire_id(&mut self, id: Id, peers: &Peers) -> WireId {
        if id.peer == PeerIdx::SELF {
            return WireId {
                p: 0,
                c: id.counter,
            };
        }
        let next = self.dict.len() as u32 + 1;
        let p = match self.dict.get(&id.peer) {
            Some(&p) => p,
            None => {
                self.dict.insert(id.peer, next);
                let peer = peers.get(id.peer);
                self.introduced += intro_bound(peer.hostname());
                self.queue_op(WireOp::Intro {
                    tag: Tag(peer.incarnation()),
                    hostname: Hostname::of(peer),
                });
                next
            }
        };
        WireId { p, c: id.counter }
    }

    /// The wire form of a value in this stream.
    #[inline]
    pub(crate) fn wire_value(&mut self, v: &Value, peers: &Peers) -> WireValue {
        WireValue::from_value(v, |id| self.wire_id(id, peers))
    }

    /// Runs of element ids in their wire form.
    pub(crate) fn wire_runs(&mut self, runs: &[(Id, u32)], peers: &Peers) -> Vec<(WireId, u32)> {
        runs.iter()
            .map(|&(s, n)| (self.wire_id(s, peers), n))
            .collect()
    }

    // --------------------------------------------------------- messages

    /// Queues the closed group's operations as one message, unless they are
    /// held and below the limit. Returns whether a message went out.
    pub(crate) fn flush(&mut self) -> bool {
        match self.held {
            Some(limit) if self.weight < limit => false,
            _ => self.flush_now(),
        }
    }

    /// Queues the operations so far as one message, held or not. Returns
    /// whether a message went out.
    pub(crate) fn flush_now(&mut self) -> bool {
        self.weight = 0;
        self.reserved = 0;
        self.fresh = false;
        if !self.has_ops() {
            return false;
        }
        let lamport = self.first.take().unwrap_or_else(|| {
            // A message of deletes only still takes a tick, so every message
            // moves its sender's counter forward.
            self.clock += 1;
            self.clock
        });
        let tick = lamport - self.sent_lamport;
        self.sent_lamport = self.clock;
        self.moved = true;
        if let Some(packed) = self.packed.take() {
            // Encoded already: the frame around them is all that is left.
            self.seq += 1;
            let mut out = std::mem::take(&mut self.scratch);
            codec::encode_packed_into(self.tag, self.seq, tick, &packed, &mut out);
            self.scratch = out;
            self.queue_scratch();
            return true;
        }
        if let [op] = &self.ops[..] {
            // One operation of the fast shape (most writes) is encoded from
            // where it is, without a frame around it.
            if codec::encode_one_into(
                self.tag,
                self.seq + 1,
                tick,
                op,
                self.format,
                &mut self.scratch,
            ) {
                self.seq += 1;
                self.ops.clear();
                self.queue_scratch();
                return true;
            }
        }
        // The operations stay in the buffer's allocation (inline when one),
        // which comes back for the next message.
        let ops = match self.ops.len() {
            1 => SmallVec::from_buf([self.ops.pop().expect("one operation")]),
            _ => SmallVec::from_vec(std::mem::take(&mut self.ops)),
        };
        let frame = self.number(Sequenced::Ops { tick, ops });
        self.transmit(&frame);
        if let Message::Sequenced {
            body: Sequenced::Ops { ops, .. },
            ..
        } = frame.msg
        {
            // A batch's buffer (88 bytes an operation) goes with it.
            if ops.spilled() && ops.capacity() <= KEEP_OPS {
                self.ops = ops.into_vec();
                self.ops.clear();
            }
        }
        true
    }

    /// Splits this stream's latest messages, `messages`, which no peer has
    /// received yet (a transport holds them), so that each operations
    /// message above `max` bytes goes as several of at most `max` bytes,
    /// as far as its operations allow; they are numbered again from the
    /// first's position and kept for retransmission in place of the old
    /// ones. `None`, with nothing changed, when `messages` are not this
    /// stream's messages from some position to the last, or when none is
    /// above `max`.
    pub(crate) fn split_unsent(
        &mut self,
        messages: &[&[u8]],
        max: usize,
    ) -> Option<Vec<Arc<[u8]>>> {
        if messages.iter().all(|m| m.len() <= max) {
            return None;
        }
        let first = self.seq.checked_sub(messages.len() as u64)? + 1;
        let mut bodies = Vec::with_capacity(messages.len());
        for (seq, bytes) in (first..).zip(messages) {
            match codec::decode(bytes, usize::MAX).ok()? {
                Frame {
                    from,
                    msg: Message::Sequenced { seq: s, body },
                } if from == self.tag && s == seq => bodies.push((bytes.len() > max, body)),
                _ => return None,
            }
        }
        let mut split = Vec::with_capacity(bodies.len());
        for (large, body) in bodies {
            match body {
                Sequenced::Ops { tick, ops } if large => {
                    split_ops(self.tag, self.format, tick, ops, max, &mut split)
                }
                body => split.push(body),
            }
        }
        self.log.truncate_from(first);
        self.seq = first - 1;
        let renumbered = split
            .into_iter()
            .map(|body| {
                let frame = self.number(body);
                let bytes: Arc<[u8]> = codec::encode(&frame, self.format).into();
                self.log.push(self.seq, &bytes, self.keep);
                bytes
            })
            .collect();
        Some(renumbered)
    }

    /// Whether an operations message went out since the last call.
    pub(crate) fn take_moved(&mut self) -> bool {
        std::mem::take(&mut self.moved)
    }

    /// Queues a sequenced message, keeping it for retransmission. Held
    /// operations go first: they were made before it (an acknowledgement
    /// must not overtake an operation naming what it lets peers reclaim).
    pub(crate) fn send(&mut self, body: Sequenced) {
        if self.depth == 0 {
            self.flush_now();
        }
        let frame = self.number(body);
        self.transmit(&frame);
    }

    /// The next message of this stream.
    #[inline]
    fn number(&mut self, body: Sequenced) -> Frame {
        self.seq += 1;
        Frame {
            from: self.tag,
            msg: Message::Sequenced {
                seq: self.seq,
                body,
            },
        }
    }

    /// Encodes and queues the latest message of this stream, keeping it for
    /// retransmission.
    fn transmit(&mut self, frame: &Frame) {
        codec::encode_into(frame, self.format, &mut self.scratch);
        self.queue_scratch();
    }

    /// Queues the message encoded in the scratch buffer, keeping it for
    /// retransmission.
    fn queue_scratch(&mut self) {
        let bytes: Arc<[u8]> = Arc::from(&self.scratch[..]);
        if self.scratch.capacity() > KEEP_SCRATCH {
            self.scratch = Vec::new();
        }
        self.log.push(self.seq, &bytes, self.keep);
        self.queue.push_back(Transmit { to: None, bytes });
    }

    /// Over an ordered log: the replica read its messages back up to
    /// `seq`, included; the resend log keeps only its usual number of them.
    pub(crate) fn forget_sent(&mut self, seq: u64) {
        if let Some(keep) = self.keep_read {
            self.log.forget_through(seq, keep);
        }
    }

    /// The sent messages from `from_seq` on, oldest first, if they are
    /// still kept.
    pub(crate) fn sent_since(&self, from_seq: u64) -> Option<Vec<Arc<[u8]>>> {
        if from_seq > self.seq {
            return Some(Vec::new());
        }
        self.log.since(from_seq)
    }

    /// Queues a message for the peer `to`.
    pub(crate) fn send_to(&mut self, to: Tag, body: Directed) {
        let frame = Frame {
            from: self.tag,
            msg: Message::Directed { to, body },
        };
        self.send_encoded(to, codec::encode(&frame, self.format));
    }

    /// Queues an encoded message for the peer `to`.
    pub(crate) fn send_encoded(&mut self, to: Tag, bytes: Vec<u8>) {
        self.queue.push_back(Transmit {
            to: Some(to.0),
            bytes: bytes.into(),
        });
    }

    /// The wire format of this stream.
    pub(crate) fn format(&self) -> WireFormat {
        self.format
    }

    /// Answers a peer's request to resend from `from_seq`: the messages if
    /// the log still has them, a refusal if not. What was resent to that
    /// peer already is on its way, in order (the transport loses nothing),
    /// so only the rest goes: a peer asks again for a range it was sent
    /// only after dropping the streams it followed, which its sync
    /// request tells ([`Outbox::forget_resent`]).
    pub(crate) fn resend(&mut self, to: Tag, from_seq: u64) {
        let from_seq = match self.resent.get(&to.0) {
            Some(&through) => from_seq.max(through + 1),
            None => from_seq,
        };
        if from_seq > self.seq {
            // Asked for what was never sent, or resent already.
            return;
        }
        match self.log.since(from_seq) {
            Some(again) => {
                self.queue.extend(again.into_iter().map(|bytes| Transmit {
                    to: Some(to.0),
                    bytes,
                }));
                self.resent.insert(to.0, self.seq);
            }
            None => self.send_to(to, Directed::ResendGone),
        }
    }

    /// `peer` asked for a sync: it dropped the streams it followed, and
    /// may need again what was resent to it. Or it departed.
    pub(crate) fn forget_resent(&mut self, peer: Tag) {
        self.resent.remove(&peer.0);
    }

    /// How many peers a record of resends is kept for.
    #[cfg(test)]
    pub(crate) fn resent_records(&self) -> usize {
        self.resent.len()
    }

    /// The next message to send.
    pub(crate) fn poll(&mut self) -> Option<Transmit> {
        self.queue.pop_front()
    }

    /// Whether a message waits to be polled.
    pub(crate) fn has_transmits(&self) -> bool {
        !self.queue.is_empty()
    }
}

/// The operations message `tick`, `ops` of the stream `tag` as consecutive
/// messages of at most `max` bytes each, onto `out`: halved until each
/// part fits, or holds one operation that takes a counter. Each part keeps
/// the counters its operations had: an operation that takes none (an
/// introduction, a list delete) goes with the next one that takes some,
/// since a message of such operations only takes a counter of its own,
/// and the ones after the last stay with it. The first part moves the
/// counter by `tick`, as the whole did; each next part starts right after
/// the one before (a tick of 1).
fn split_ops(
    tag: Tag,
    format: WireFormat,
    tick: u64,
    ops: Ops,
    max: usize,
    out: &mut Vec<Sequenced>,
) {
    let ops = ops.into_vec();
    let mut bounds = vec![0];
    if let Some(last) = ops.iter().rposition(|op| op.counters() > 0) {
        bounds.extend((1..=last).filter(|&j| ops[j - 1].counters() > 0));
    }
    bounds.push(ops.len());
    let fits = |part: &[WireOp]| {
        // The largest position and tick, which no real one encodes longer.
        let frame = Frame {
            from: tag,
            msg: Message::Sequenced {
                seq: u64::MAX,
                body: Sequenced::Ops {
                    tick: u64::MAX,
                    ops: part.iter().cloned().collect(),
                },
            },
        };
        codec::encode(&frame, format).len() <= max
    };
    let mut parts = Vec::new();
    halve(
        &bounds,
        &|r: std::ops::Range<usize>| fits(&ops[r]),
        &mut parts,
    );
    for (i, r) in parts.into_iter().enumerate() {
        out.push(Sequenced::Ops {
            tick: if i == 0 { tick } else { 1 },
            ops: ops[r].iter().cloned().collect(),
        });
    }
}

/// The parts of the operations between `bounds`' first and last that
/// [`split_ops`] makes, in order, each between two of `bounds`.
fn halve(
    bounds: &[usize],
    fits: &dyn Fn(std::ops::Range<usize>) -> bool,
    parts: &mut Vec<std::ops::Range<usize>>,
) {
    let whole = bounds[0]..bounds[bounds.len() - 1];
    if bounds.len() <= 2 || fits(whole.clone()) {
        parts.push(whole);
        return;
    }
    let mid = bounds.len() / 2;
    halve(&bounds[..=mid], fits, parts);
    halve(&bounds[mid..], fits, parts);
}

#[cfg(test)]
mod tests {
    use crate::{Config, Input, PeerId, Replica, Value, WireFormat};

    /// Hands every message each replica sends to all the others until
    /// none sends anything.
    fn settle(replicas: &mut [&mut Replica]) {
        loop {
            let mut sent = Vec::new();
            for (i, r) in replicas.iter_mut().enumerate() {
                while let Some(t) = r.poll_transmit() {
                    sent.push((i, t.bytes));
                }
            }
            if sent.is_empty() {
                return;
            }
            for (from, bytes) in sent {
                for (i, r) in replicas.iter_mut().enumerate() {
                    if i != from {
                        r.handle_message(&bytes).unwrap();
                    }
                }
            }
        }
    }

    /// The record of what was resent to a peer goes with the peer: its
    /// next incarnation has another tag, and would never clear it.
    #[test]
    fn a_departed_peer_leaves_no_record_of_resends() {
        let config = Config::default().resend_log(16);
        let mut a = Replica::new(PeerId::new("a", 1), config.clone());
        a.set_root(Input::Array(vec![])).unwrap();
        while a.poll_transmit().is_some() {}
        let mut b = Replica::from_exported(PeerId::new("b", 2), config, &a.export_state()).unwrap();
        settle(&mut [&mut a, &mut b]);
        let list = a.root().as_ref_id().unwrap();
        for i in 0..2 {
            a.list_splice(list, i, 0, [Input::from(i as i64)]).unwrap();
        }
        let sent: Vec<_> = std::iter::from_fn(|| a.poll_transmit()).collect();
        assert_eq!(sent.len(), 2);
        // The first is lost: the second shows the gap, and `b` asks.
        b.handle_message(&sent[1].bytes).unwrap();
        settle(&mut [&mut a, &mut b]);
        let at_b = b.root().as_ref_id().unwrap();
        assert_eq!(b.list_len(at_b).unwrap(), 2, "resent");
        assert_eq!(a.resent_records(), 1);
        b.leave();
        settle(&mut [&mut a, &mut b]);
        assert_eq!(a.resent_records(), 0);
    }

    /// A backlog gathered offline whose operations introduce other peers
    /// (they name their elements) and delete list elements (operations
    /// that take no counter) splits into parts within the limit that apply
    /// as the whole did; the stream goes on after them, numbered on.
    #[test]
    fn a_split_backlog_applies_as_the_whole() {
        for format in [WireFormat::Binary, WireFormat::Json] {
            let config = Config::default().wire_format(format);
            let mut a = Replica::new(PeerId::new("a", 1), config.clone());
            let mut b = Replica::new(PeerId::new("b", 2), config.clone());
            let mut c = Replica::new(PeerId::new("c", 3), config);
            let list = Input::Array((0..20).map(Input::from).collect());
            let root = Input::Map(vec![("l".into(), list), ("m".into(), Input::Map(vec![]))]);
            b.set_root(root).unwrap();
            settle(&mut [&mut a, &mut b, &mut c]);
            // Object ids are each replica's own.
            let ref_of = |r: &Replica, key| {
                let root = r.root().as_ref_id().unwrap();
                match r.map_get(root, key).unwrap() {
                    Some(Value::Ref(id)) => id,
                    other => panic!("{other:?}"),
                }
            };
            let (l, m) = (ref_of(&a, "l"), ref_of(&a, "m"));
            c.list_splice(ref_of(&c, "l"), 10, 0, [Input::from("c")])
                .unwrap();
            settle(&mut [&mut a, &mut b, &mut c]);

            a.set_online(false);
            for i in 0..400_i64 {
                let long = format!("{i:060}");
                match i % 4 {
                    0 => a.list_push(l, Input::from(long)).unwrap(),
                    1 => drop(a.list_splice(l, 0, 1, []).unwrap()),
                    2 => drop(
                        a.map_set(m, &format!("k{}", i % 7), Input::from(long))
                            .unwrap(),
                    ),
                    _ => drop(a.list_splice(l, 1, 0, [Input::from(i)]).unwrap()),
                }
            }
            a.set_online(true);
            let held: Vec<_> = std::iter::from_fn(|| a.poll_transmit())
                .map(|t| t.bytes)
                .collect();
            let held: Vec<&[u8]> = held.iter().map(|m| &m[..]).collect();
            const MAX: usize = 1024;
            assert!(held.iter().any(|m| m.len() > 8 * MAX), "{format:?}");
            // Not the stream's latest messages: left alone.
            let twice = [held[held.len() - 1], held[held.len() - 1]];
            assert!(a.resplit_unsent(&twice, MAX).is_none());
            let parts = a.resplit_unsent(&held, MAX).expect("split");
            assert!(parts.len() > 10, "{format:?}: {} parts", parts.len());
            assert!(parts.iter().all(|p| p.len() <= MAX), "{format:?}");
            // Nothing is above the limit any more: nothing to split.
            let again: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
            assert!(a.resplit_unsent(&again, MAX).is_none());
            for part in &parts {
                b.handle_message(part).unwrap();
                c.handle_message(part).unwrap();
            }
            a.map_set(m, "after", Input::from(1)).unwrap();
            settle(&mut [&mut a, &mut b, &mut c]);
            assert_eq!(b.snapshot(), a.snapshot(), "{format:?}");
            assert_eq!(c.snapshot(), a.snapshot(), "{format:?}");
            let after = b.map_get(ref_of(&b, "m"), "after").unwrap();
            assert_eq!(after, Some(Value::Int(1)));
        }
    }
}
