//! The replica: one participant's copy of a document, with no IO.
//!
//! Every public entry point is here, and each delegates to the component
//! that owns the state it concerns: the document ([`Doc`]), the peers'
//! streams ([`Streams`]), membership ([`Membership`]), the lock protocol
//! ([`Locks`]), the sync handshake ([`Phase`], [`SyncServer`]) and the
//! outputs ([`Outputs`]: messages, events, timers). The private methods
//! below the public ones route a message between components; DESIGN.md's
//! "Map of the code" says which file a kind of change touches.

use std::time::Duration;

use smallvec::SmallVec;
use smol_str::SmolStr;

use crate::clock::Peers;
use crate::codec;
use crate::config::Config;
use crate::doc::{Applied, Doc};
use crate::error::{Error, ReceiveError};
use crate::event::{Event, LockEntry, LockState, Origin, PeerInfo};
use crate::gc::{self, PassContext};
use crate::locks::{Locks, Refusal};
use crate::membership::Membership;
use crate::op::{self, Op};
use crate::outbox::{self, OP_OVERHEAD, Transmit, bare_op_bound, input_bound, key_bound, refs};
use crate::outputs::{Events, Outputs};
use crate::streams::{Position, Stream, Streams};
use crate::sync::transfer::{self, Source, Target, Transferred};
use crate::sync::{Before, Joining, Phase, Retry, SyncServer};
use crate::timers::Timer;
use crate::value::{Id, Input, ObjectId, ObjectKind, PeerId, PeerIdx, Succession, Value};
use crate::wire::{self, Directed, Frame, Hostname, Message, Ops, Sequenced, Tag, WireOp};

mod carry;
pub use carry::CarriedOver;

/// An array element as [`Replica::list_stamped`] read it: which element,
/// and which write gave it its value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ElementStamp {
    elem: Id,
    stamp: Id,
}

/// A write a caller means to make, with what its method takes, for
/// [`Replica::check_room`].
#[derive(Debug, Clone, Copy)]
pub enum Planned<'a> {
    /// [`Replica::set_root`].
    Root(&'a Input),
    /// [`Replica::map_set`]: the map, a key and its value.
    MapSet(ObjectId, &'a str, &'a Input),
    /// [`Replica::map_set_many`]: the map and its entries.
    MapSetMany(ObjectId, &'a [(SmolStr, Input)]),
    /// [`Replica::map_delete`]: the map and a key.
    MapDelete(ObjectId, &'a str),
    /// [`Replica::list_set_many`]: the array and its writes.
    ListSetMany(ObjectId, &'a [(usize, Input)]),
    /// [`Replica::list_splice`]: the array, where, how many elements it
    /// deletes, and what it inserts.
    ListSplice(ObjectId, usize, usize, &'a [Input]),
}

/// An upper bound of the bytes of a map write in `format`.
#[inline]
fn map_set_bound(key: &str, input: &Input, format: codec::WireFormat) -> usize {
    OP_OVERHEAD + key_bound(key, format) + input_bound(input, format)
}

/// The measures of a planned write take `runs`: for a splice, the runs of
/// consecutive ids its delete makes (`Doc::splice_runs`); 0 otherwise.
impl Planned<'_> {
    /// How many ids of other peers the write may name.
    #[inline]
    fn ids(self, runs: usize) -> usize {
        match self {
            Planned::Root(input) => refs(input),
            Planned::MapSet(_, _, input) => 1 + refs(input),
            Planned::MapSetMany(_, entries) => {
                1 + entries.iter().map(|(_, v)| refs(v)).sum::<usize>()
            }
            Planned::MapDelete(..) => 1,
            Planned::ListSetMany(_, writes) => {
                1 + writes.iter().map(|(_, v)| 1 + refs(v)).sum::<usize>()
            }
            Planned::ListSplice(.., items) => crate::doc::splice_ids(items, runs),
        }
    }

    /// How many operations the write certainly makes: none for what
    /// leaves its place as it is (it still reserves its bound).
    fn ops(self, doc: &Doc, runs: usize) -> usize {
        let changes = |now: Option<&Value>, input: &Input| match input {
            Input::Value(v) => !now.is_some_and(|now| now.same(v)),
            _ => true,
        };
        let map = |obj: ObjectId| doc.map(obj).ok();
        match self {
            Planned::Root(input) => usize::from(changes(Some(doc.root()), input)),
            Planned::MapSet(obj, key, input) => {
                usize::from(changes(map(obj).and_then(|m| m.get(key)), input))
            }
            Planned::MapSetMany(obj, entries) => entries
                .iter()
                .filter(|(k, v)| changes(map(obj).and_then(|m| m.get(k)), v))
                .count(),
            Planned::MapDelete(obj, key) => {
                usize::from(map(obj).is_some_and(|m| m.get(key).is_some()))
            }
            Planned::ListSetMany(obj, writes) => {
                let Ok(list) = doc.list(obj) else { return 0 };
                writes
                    .iter()
                    .filter(|(i, v)| changes(list.get(*i).as_ref(), v))
                    .count()
            }
            Planned::ListSplice(.., items) => {
                usize::from(runs > 0) + usize::from(!items.is_empty())
            }
        }
    }

    /// An upper bound of the write's share of a packed message
    /// ([`outbox::input_weight`]).
    fn weight(self, runs: usize) -> usize {
        const BASE: usize = outbox::PLANNED_BASE;
        match self {
            Planned::Root(input) => outbox::input_weight(input),
            Planned::MapSet(_, key, input) => key.len() + outbox::input_weight(input),
            Planned::MapSetMany(_, entries) => entries
                .iter()
                .map(|(k, v)| k.len() + outbox::input_weight(v))
                .sum(),
            Planned::MapDelete(_, key) => BASE + key.len(),
            Planned::ListSetMany(_, writes) => {
                writes.iter().map(|(_, v)| outbox::input_weight(v)).sum()
            }
            Planned::ListSplice(.., items) => {
                let inserted = BASE + items.iter().map(outbox::input_weight).sum::<usize>();
                let deleted = if runs > 0 { BASE + runs * BASE } else { 0 };
                inserted + deleted
            }
        }
    }

    /// An upper bound of the write's bytes in `format`: what its method
    /// reserves in the message.
    #[inline]
    fn bound(self, runs: usize, format: codec::WireFormat) -> usize {
        match self {
            Planned::Root(input) => OP_OVERHEAD + input_bound(input, format),
            Planned::MapSet(_, key, input) => map_set_bound(key, input, format),
            Planned::MapSetMany(_, entries) => entries.iter().fold(0, |n, (k, v)| {
                n + OP_OVERHEAD + key_bound(k, format) + input_bound(v, format)
            }),
            Planned::MapDelete(_, key) => OP_OVERHEAD + key_bound(key, format),
            Planned::ListSetMany(_, writes) => writes
                .iter()
                .fold(0, |n, (_, v)| n + OP_OVERHEAD + input_bound(v, format)),
            Planned::ListSplice(.., items) => crate::doc::splice_bound(items, runs, format),
        }
    }
}

/// One participant's copy of a document: applies local writes, turns them
/// into messages, applies messages from peers, and reports changes. It does
/// no IO, reads no clock and spawns nothing.
///
/// # Driving a replica
/// - Inputs: local reads and writes (`map_set`, `list_splice`, ...), incoming
///   bytes ([`Replica::handle_message`], or [`Replica::handle_ordered`] over
///   a totally ordered log) and the passage of time
///   ([`Replica::handle_timeout`]).
/// - Outputs, to poll after every input, in this order:
///   [`Replica::poll_transmit`] until `None` (send them in order),
///   [`Replica::poll_event`] until `None`, then [`Replica::poll_timeout`] to
///   learn when to call `handle_timeout` next.
///
/// # Example
/// ```
/// use facsimile_core::{Config, Input, PeerId, Replica};
///
/// let mut a = Replica::new(PeerId::new("a", 1), Config::default());
/// let mut b = Replica::new(PeerId::new("b", 2), Config::default());
/// let root = a.set_root(Input::Map(vec![]))?.expect("a map");
/// a.map_set(root, "greeting", "hello".into())?;
/// while let Some(t) = a.poll_transmit() {
///     b.handle_message(&t.bytes)?;
/// }
/// let root_b = b.root().as_ref_id().expect("a map");
/// assert_eq!(b.map_get(root_b, "greeting")?, Some("hello".into()));
/// assert_eq!(a.snapshot(), b.snapshot());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Replica {
    me: PeerId,
    config: Config,
    /// Every peer heard of; stamps name peers by index into it.
    peers: Peers,
    doc: Doc,
    streams: Streams,
    members: Membership,
    locks: Locks,
    /// Whether the document is here or being fetched.
    phase: Phase,
    serve: SyncServer,
    out: Outputs,
    /// The translated operations of the message being applied; kept for
    /// its capacity.
    op_buf: Vec<Op>,
    /// The clock when this replica last stopped holding a lock: its writes
    /// up to this counter may depend on a lock, and are never carried over
    /// ([`Replica::carry_over`]).
    locked_through: u64,
    /// This incarnation said goodbye ([`Replica::leave`]): its peers drop
    /// whatever it sends from then on, so it takes no more writes, lock
    /// requests or evictions, and ignores what it receives.
    left: bool,
    /// A successor is taking this replica's place ([`Replica::hand_over`]):
    /// writes and lock requests wait for it.
    handing_over: bool,
}

impl Replica {
    /// Creates an empty replica (root `Null`) that announces itself to its
    /// peers with its first transmit.
    ///
    /// # Panics
    /// When `me`'s hostname is longer than [`MAX_HOSTNAME`](crate::MAX_HOSTNAME)
    /// bytes: its peers would refuse every message it sends.
    pub fn new(me: PeerId, config: Config) -> Self {
        assert!(
            me.hostname().len() <= crate::MAX_HOSTNAME,
            "a hostname is at most {} bytes of UTF-8",
            crate::MAX_HOSTNAME
        );
        let mut out = Outputs::new(Tag(me.incarnation()), &config);
        // The first reclamation pass is due at once.
        out.timers.set(Timer::Gc, Duration::ZERO);
        let mut r = Replica {
            peers: Peers::new(me.clone()),
            locks: Locks::new(&config),
            me,
            config,
            doc: Doc::default(),
            streams: Streams::default(),
            members: Membership::default(),
            phase: Phase::Live,
            serve: SyncServer::default(),
            out,
            op_buf: Vec::new(),
            locked_through: 0,
            left: false,
            handing_over: false,
        };
        let hostname = Hostname::of(&r.me);
        if r.config.observer {
            r.out.send(Sequenced::Observe {
                hostname: hostname.clone(),
            });
        }
        r.out.send(Sequenced::Hello { hostname });
        r
    }

    /// The settings this replica runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// This replica's peer id.
    pub fn peer_id(&self) -> &PeerId {
        &self.me
    }

    /// Whether the document is complete (no sync in progress).
    pub fn is_ready(&self) -> bool {
        matches!(self.phase, Phase::Live)
    }

    /// Whether this incarnation left the document ([`Replica::leave`]).
    pub fn has_left(&self) -> bool {
        self.left
    }

    /// Whether the peers evicted this incarnation ([`Event::Evicted`]),
    /// until it takes a new one ([`Replica::reincarnate`]).
    pub fn is_evicted(&self) -> bool {
        self.members.is_evicted()
    }

    /// Peers known to be participating (announced and not departed).
    pub fn members(&self) -> Vec<PeerId> {
        let mut m: Vec<PeerId> = self
            .members
            .iter()
            .map(|p| self.peers.get(p).clone())
            .collect();
        m.sort();
        m
    }

    /// The members with their streams' positions here and when each was
    /// last heard from, sorted by peer.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let mut m: Vec<PeerInfo> = self
            .members
            .iter()
            .map(|p| {
                let stream = self.streams.of_peer(p, &self.peers);
                PeerInfo {
                    peer: self.peers.get(p).clone(),
                    applied: stream.map_or(0, |s| s.next_seq.saturating_sub(1)),
                    held: stream.map_or(0, Stream::held),
                    last_heard: self.members.last_heard(p),
                }
            })
            .collect();
        m.sort_by(|a, b| a.peer.cmp(&b.peer));
        m
    }

    /// Every lock queue known here (held, granted or waited for), sorted
    /// by object.
    pub fn lock_table(&self) -> Vec<LockEntry> {
        let mut t: Vec<_> = self.locks.table().collect();
        // By creation stamp: the same order on every replica.
        t.sort_by(|a, b| {
            a.0.counter
                .cmp(&b.0.counter)
                .then_with(|| self.peers.get(a.0.peer).cmp(self.peers.get(b.0.peer)))
        });
        t.into_iter()
            .map(|(obj, reqs, last_token)| LockEntry {
                object: ObjectId(obj),
                queue: reqs
                    .iter()
                    .map(|r| (self.peers.get(r.stamp.peer).clone(), r.held))
                    .collect(),
                last_token,
            })
            .collect()
    }

    // ---------------------------------------------------------------- reads

    /// The root value.
    pub fn root(&self) -> Value {
        self.doc.root().clone()
    }

    /// The kind of an object, if it is present.
    pub fn kind(&self, obj: ObjectId) -> Option<ObjectKind> {
        self.doc.kind(obj)
    }

    /// The creator and counter of an object, which name it on every replica.
    pub fn object_origin(&self, obj: ObjectId) -> (PeerId, u64) {
        (self.peers.get(obj.0.peer).clone(), obj.0.counter)
    }

    /// The value of a map key.
    ///
    /// # Errors
    /// [`Error::UnknownObject`] or [`Error::WrongKind`] when `obj` is not a
    /// map here.
    pub fn map_get(&self, obj: ObjectId, key: &str) -> Result<Option<Value>, Error> {
        Ok(self.doc.map(obj)?.get(key).cloned())
    }

    /// Number of keys of a map.
    ///
    /// # Errors
    /// As [`Replica::map_get`].
    pub fn map_len(&self, obj: ObjectId) -> Result<usize, Error> {
        Ok(self.doc.map(obj)?.len())
    }

    /// The entries of a map, in key order.
    ///
    /// # Errors
    /// As [`Replica::map_get`].
    pub fn map_entries(&mut self, obj: ObjectId) -> Result<Vec<(SmolStr, Value)>, Error> {
        let map = self.doc.sorted_map(obj)?;
        Ok(map.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// What `f` makes of each entry of a map, in key order, given this
    /// replica (to look up what a value refers to): [`Replica::map_for_each`]
    /// into a vector, sized with the same look-up of the map.
    ///
    /// # Errors
    /// As [`Replica::map_get`].
    pub fn map_collect<T>(
        &mut self,
        obj: ObjectId,
        mut f: impl FnMut(&SmolStr, &Value, &Replica) -> T,
    ) -> Result<Vec<T>, Error> {
        // Nearly always sorted already: one lookup then.
        let this = &*self;
        let map = this.doc.map(obj)?;
        if map.is_sorted() {
            let mut out = Vec::with_capacity(map.len());
            for (k, v) in map.iter() {
                out.push(f(k, v, this));
            }
            return Ok(out);
        }
        self.doc.sorted_map(obj)?;
        let this = &*self;
        Ok(this
            .doc
            .map(obj)?
            .iter()
            .map(|(k, v)| f(k, v, this))
            .collect())
    }

    /// Calls `f` with each entry of a map, in key order, and this replica
    /// (to look up what a value refers to): a read that copies nothing.
    ///
    /// # Errors
    /// As [`Replica::map_get`].
    pub fn map_for_each(
        &mut self,
        obj: ObjectId,
        mut f: impl FnMut(&SmolStr, &Value, &Replica),
    ) -> Result<(), Error> {
        // A vector of `()` allocates nothing.
        self.map_collect(obj, |k, v, r| f(k, v, r)).map(drop)
    }

    /// The keys of a map, in key order.
    ///
    /// # Errors
    /// As [`Replica::map_get`].
    pub fn map_keys(&mut self, obj: ObjectId) -> Result<Vec<SmolStr>, Error> {
        let map = self.doc.sorted_map(obj)?;
        Ok(map.iter().map(|(k, _)| k.clone()).collect())
    }

    /// Length of an array.
    ///
    /// # Errors
    /// [`Error::UnknownObject`] or [`Error::WrongKind`] when `obj` is not an
    /// array here.
    pub fn list_len(&self, obj: ObjectId) -> Result<usize, Error> {
        Ok(self.doc.list(obj)?.len())
    }

    /// The element at `index`, if any.
    ///
    /// # Errors
    /// As [`Replica::list_len`].
    pub fn list_get(&self, obj: ObjectId, index: usize) -> Result<Option<Value>, Error> {
        Ok(self.doc.list(obj)?.get(index))
    }

    /// A number that changes whenever the array changes, to detect a change
    /// between a read and a write.
    ///
    /// # Errors
    /// As [`Replica::list_len`].
    pub fn list_version(&self, obj: ObjectId) -> Result<u64, Error> {
        Ok(self.doc.list(obj)?.version())
    }

    /// All elements of an array, in order.
    ///
    /// # Errors
    /// As [`Replica::list_len`].
    pub fn list_values(&self, obj: ObjectId) -> Result<Vec<Value>, Error> {
        Ok(self.doc.list(obj)?.values().collect())
    }

    /// All elements of an array, in order, each with its [`ElementStamp`]:
    /// a read whose positions [`Replica::list_positions`] finds again
    /// after other writes moved them.
    ///
    /// # Errors
    /// As [`Replica::list_len`].
    pub fn list_stamped(&self, obj: ObjectId) -> Result<Vec<(Value, ElementStamp)>, Error> {
        let list = self.doc.list(obj)?;
        Ok(list
            .elements()
            .map(|(elem, value, stamp)| (value, ElementStamp { elem, stamp }))
            .collect())
    }

    /// Where the elements `stamps` are now, in the order given, or `None`
    /// when one of them left the array or had its value written since it
    /// was read: a removal picked from a read applies to the elements it
    /// picked however the others changed meanwhile.
    ///
    /// # Errors
    /// As [`Replica::list_len`].
    pub fn list_positions(
        &self,
        obj: ObjectId,
        stamps: &[ElementStamp],
    ) -> Result<Option<Vec<usize>>, Error> {
        let list = self.doc.list(obj)?;
        Ok(stamps
            .iter()
            .map(|s| {
                let unchanged = list.value_stamp_of(s.elem) == Some(s.stamp);
                unchanged.then(|| list.index_of(s.elem)).flatten()
            })
            .collect())
    }

    /// Calls `f` with each element of an array, in order, and this replica
    /// (to look up what a value refers to): a read that copies nothing.
    ///
    /// # Errors
    /// As [`Replica::list_len`].
    pub fn list_for_each(
        &self,
        obj: ObjectId,
        mut f: impl FnMut(&Value, &Replica),
    ) -> Result<(), Error> {
        self.doc.list(obj)?.values().for_each(|v| f(&v, self));
        Ok(())
    }

    /// Number of objects held: the reachable ones, and unreachable ones until
    /// they are reclaimed.
    pub fn object_count(&self) -> usize {
        self.doc.object_count()
    }

    /// The canonical encoding of the document: identical on every replica
    /// that received the same messages, with nothing node-local in it.
    pub fn snapshot(&mut self) -> Vec<u8> {
        codec::encode_plain(&self.doc.canonical(&self.peers))
    }

    // --------------------------------------------------------------- writes

    /// Groups the writes that follow, until the matching
    /// [`Replica::commit`], into one message. Calls nest.
    pub fn begin(&mut self) {
        self.out.begin();
    }

    /// Ends a group opened by [`Replica::begin`]; the outermost one queues
    /// the message.
    pub fn commit(&mut self) {
        self.out.end();
    }

    /// Whether a group opened by [`Replica::begin`] is still open. An input
    /// (a message, [`Replica::handle_timeout`]) closes it first and opens
    /// it again after: the writes made before it go as one message, the
    /// rest as another. A caller that wants the group's writes in one
    /// message runs timers after the commit.
    pub fn in_group(&self) -> bool {
        self.out.outbox.in_group()
    }

    /// Says whether this replica's messages reach anybody now (its
    /// transport is connected). While they do not, the writes made are
    /// gathered into as few messages as possible, packed (a key written
    /// once, values as differences), instead of one message each: a
    /// reconnection then sends a compacted backlog. Each gathered message
    /// goes out when it reaches a size limit (a quarter of
    /// [`Config::max_message_size`], at most 4 MiB), before anything
    /// remote is applied or anything else is sent, on
    /// [`Replica::send_held`], and when the replica is online again. Local
    /// change events are not held. Over a totally ordered log
    /// ([`Replica::is_ordered`]) held writes take their place in the log
    /// when they go out: a lock granted meanwhile, or this replica's lease
    /// lapsing meanwhile, refuses them as any write that came late.
    ///
    /// ```
    /// use facsimile_core::{Config, Input, PeerId, Replica};
    ///
    /// let mut a = Replica::new(PeerId::new("a", 1), Config::default());
    /// let root = a.set_root(Input::Map(vec![])).unwrap().unwrap();
    /// while a.poll_transmit().is_some() {}
    /// a.set_online(false);
    /// for i in 0..100 {
    ///     a.map_set(root, "counter", Input::from(i)).unwrap();
    /// }
    /// assert!(a.poll_transmit().is_none(), "held while offline");
    /// a.set_online(true);
    /// let backlog = a.poll_transmit().expect("one message for the 100 writes");
    /// assert!(backlog.bytes.len() < 5 * 100, "about 4 bytes a write");
    /// assert!(a.poll_transmit().is_none());
    /// ```
    pub fn set_online(&mut self, online: bool) {
        if online {
            self.out.outbox.hold(None);
            self.send_held();
        } else {
            let limit = (self.config.max_message / 4).clamp(4 << 10, 4 << 20);
            self.out.outbox.hold(Some(limit));
        }
    }

    /// Limits the messages this replica's writes make to `bytes`, or to
    /// [`crate::Config::max_message_size`] if that is less: for a transport
    /// that carries less than the configured limit (a relay whose frame
    /// limit says so in its welcome). What it accepts is unchanged.
    ///
    /// ```
    /// use facsimile_core::{Config, Error, Input, PeerId, Replica};
    /// let mut r = Replica::new(PeerId::new("a", 1), Config::default());
    /// r.set_root(Input::Map(vec![])).unwrap();
    /// let root = r.root().as_ref_id().unwrap();
    /// r.limit_sent_messages(1024);
    /// let err = r.map_set(root, "s", Input::from("x".repeat(2000))).unwrap_err();
    /// assert!(matches!(err, Error::TooLarge { limit: 1024, .. }));
    /// ```
    pub fn limit_sent_messages(&mut self, bytes: usize) {
        self.out
            .outbox
            .set_max_message(bytes.min(self.config.max_message));
    }

    /// For a transport whose limit fell below what some of this replica's
    /// messages take (a relay that came back with a smaller frame limit,
    /// announced in its welcome): splits `messages`, this replica's latest
    /// sequenced messages, which the transport holds and has delivered to
    /// nobody, so that each operations message above `max` bytes (a
    /// backlog gathered offline, [`Replica::set_online`]) goes as several
    /// of at most `max` bytes, as far as its operations allow (one write
    /// larger than `max` stays whole). Each part applies as the operations
    /// it carries did in the whole. The messages are numbered again from
    /// the first's position and replace the old ones for retransmission;
    /// the transport sends what this returns in place of `messages`.
    ///
    /// `None`, with nothing changed, when `messages` are not this
    /// replica's messages from some position to its last (a message it
    /// queued since is not among them), when none is above `max`, or over
    /// an ordered log ([`Replica::is_ordered`]), where the positions of
    /// this replica's messages decide its locks.
    ///
    /// ```
    /// use facsimile_core::{Config, Input, PeerId, Replica};
    ///
    /// let mut a = Replica::new(PeerId::new("a", 1), Config::default());
    /// let mut b = Replica::new(PeerId::new("b", 2), Config::default());
    /// let root = a.set_root(Input::Map(vec![])).unwrap().unwrap();
    /// while let Some(t) = a.poll_transmit() {
    ///     b.handle_message(&t.bytes)?;
    /// }
    /// a.set_online(false);
    /// for i in 0..1000 {
    ///     a.map_set(root, &format!("k{}", i % 10), Input::from(format!("{i:0100}"))).unwrap();
    /// }
    /// a.set_online(true);
    /// let backlog = a.poll_transmit().expect("one message for the 1000 writes");
    /// assert!(backlog.bytes.len() > 100_000);
    /// let parts = a.resplit_unsent(&[&backlog.bytes[..]], 16 << 10).expect("split");
    /// assert!(parts.len() > 1 && parts.iter().all(|p| p.len() <= 16 << 10));
    /// for part in &parts {
    ///     b.handle_message(part)?;
    /// }
    /// assert_eq!(b.snapshot(), a.snapshot());
    /// # Ok::<(), facsimile_core::ReceiveError>(())
    /// ```
    pub fn resplit_unsent(
        &mut self,
        messages: &[&[u8]],
        max: usize,
    ) -> Option<Vec<std::sync::Arc<[u8]>>> {
        if self.is_ordered() {
            return None;
        }
        self.out.outbox.split_unsent(messages, max)
    }

    /// Whether writes made while offline ([`Replica::set_online`]) wait to
    /// be sent.
    pub fn has_held(&self) -> bool {
        !self.out.outbox.is_idle() && !self.out.outbox.in_group()
    }

    /// Sends the writes held while offline ([`Replica::set_online`]) now,
    /// as one message, and goes on holding (a flush that must wait for
    /// them). Inside a group, they go out when the group closes.
    pub fn send_held(&mut self) {
        if !self.out.outbox.in_group() {
            self.out.flush_now();
        }
    }

    /// Replaces the root. Returns the new root object when `input` creates
    /// one.
    ///
    /// # Errors
    /// [`Error::Syncing`] during a sync; [`Error::UnknownObject`] or
    /// [`Error::Detached`] for a reference that cannot be stored;
    /// [`Error::TooLarge`] when its message could exceed
    /// [`crate::Config::max_message_size`].
    pub fn set_root(&mut self, input: Input) -> Result<Option<ObjectId>, Error> {
        self.writable()?;
        self.fits_planned(Planned::Root(&input))?;
        self.doc.set_root(input, &mut self.out, &self.peers)
    }

    /// Sets a map key. Returns whether anything changed (writing the value
    /// already there sends nothing).
    ///
    /// # Errors
    /// [`Error::Syncing`], [`Error::UnknownObject`], [`Error::WrongKind`],
    /// [`Error::Detached`], and [`Error::NotOwner`] while another replica
    /// holds the map's lock; [`Error::TooLarge`] when its message could exceed
    /// [`crate::Config::max_message_size`].
    pub fn map_set(&mut self, obj: ObjectId, key: &str, input: Input) -> Result<bool, Error> {
        self.writable()?;
        // As `fits_planned`, spelt out: the hottest write.
        self.fits(|| 1 + refs(&input), |f| map_set_bound(key, &input, f))?;
        let owner = || self.locks.check_owner(obj.0, Refusal::NotOwner);
        self.doc
            .map_set(obj, key, input, owner, &mut self.out, &self.peers)
    }

    /// Sets several keys of a map as one change and one message (the
    /// JavaScript `Object.assign`). Every value is checked before the first
    /// key is written, so a refused call writes nothing. Returns how many
    /// keys changed (a key given the value it has counts only if an earlier
    /// entry of the call changed it).
    ///
    /// # Errors
    /// As [`Replica::map_set`].
    pub fn map_set_many(
        &mut self,
        obj: ObjectId,
        entries: Vec<(SmolStr, Input)>,
    ) -> Result<usize, Error> {
        self.writable()?;
        self.fits_planned(Planned::MapSetMany(obj, &entries))?;
        let owner = || self.locks.check_owner(obj.0, Refusal::NotOwner);
        self.doc
            .map_set_many(obj, entries, owner, &mut self.out, &self.peers)
    }

    /// Deletes a map key. Returns the value it held.
    ///
    /// # Errors
    /// [`Error::Syncing`], [`Error::UnknownObject`], [`Error::WrongKind`],
    /// [`Error::NotOwner`], [`Error::TooLarge`].
    pub fn map_delete(&mut self, obj: ObjectId, key: &str) -> Result<Option<Value>, Error> {
        self.writable()?;
        self.fits_planned(Planned::MapDelete(obj, key))?;
        let owner = || self.locks.check_owner(obj.0, Refusal::NotOwner);
        self.doc
            .map_delete(obj, key, owner, &mut self.out, &self.peers)
    }

    /// Removes `delete` elements from `start` and inserts `items` there, as
    /// JavaScript's `splice`. Returns the removed values.
    ///
    /// # Errors
    /// [`Error::IndexOutOfBounds`] when `start` is past the end,
    /// [`Error::Locked`] while another replica holds the array's lock, and
    /// the errors of [`Replica::map_set`].
    pub fn list_splice(
        &mut self,
        obj: ObjectId,
        start: usize,
        delete: usize,
        items: impl IntoIterator<Item = Input>,
    ) -> Result<Vec<Value>, Error> {
        // One item (a push, a typed character) is kept inline.
        let items: SmallVec<[Input; 1]> = items.into_iter().collect();
        self.writable()?;
        let owner = || self.locks.check_owner(obj.0, Refusal::Locked);
        self.doc
            .list_splice(obj, start, delete, items, owner, &mut self.out, &self.peers)
    }

    /// Appends one element to an array: [`Replica::list_splice`] at the
    /// end, without reading the length first.
    ///
    /// # Errors
    /// As [`Replica::list_splice`].
    pub fn list_push(&mut self, obj: ObjectId, item: Input) -> Result<(), Error> {
        self.writable()?;
        self.fits(|| 2 + refs(&item), |f| OP_OVERHEAD + input_bound(&item, f))?;
        let owner = || self.locks.check_owner(obj.0, Refusal::Locked);
        self.doc
            .list_insert_one(obj, None, item, owner, &mut self.out, &self.peers)
    }

    /// Sets the element at `index`. Setting at `index == len` appends, and
    /// past the end pads with `Null` first. Returns whether anything changed.
    ///
    /// # Errors
    /// As [`Replica::list_splice`], but a lock held elsewhere refuses it as
    /// a write, [`Error::NotOwner`] (as JavaScript's `arr[i] = x` is), not
    /// as an array method.
    pub fn list_set(&mut self, obj: ObjectId, index: usize, input: Input) -> Result<bool, Error> {
        self.writable()?;
        let len = self.doc.list(obj)?.len();
        self.locks.check_owner(obj.0, Refusal::NotOwner)?;
        if index >= len {
            // Refused before the padding is made when its `Null`s alone
            // are more than a message takes.
            let limit = self.out.outbox.max_message();
            let null = input_bound(&Input::Value(Value::Null), self.out.outbox.format());
            let size = (index - len).saturating_mul(null);
            if size > limit {
                return Err(Error::TooLarge { size, limit });
            }
            let mut items: Vec<Input> = (len..index).map(|_| Input::Value(Value::Null)).collect();
            items.push(input);
            self.list_splice(obj, len, 0, items)?;
            return Ok(true);
        }
        let n = self.list_set_many(obj, vec![(index, input)])?;
        Ok(n > 0)
    }

    /// Sets several elements in one change (`fill`, `copy_within`). Returns
    /// how many changed.
    ///
    /// # Errors
    /// [`Error::IndexOutOfBounds`] for an index at or past the end, and the
    /// errors of [`Replica::list_splice`].
    pub fn list_set_many(
        &mut self,
        obj: ObjectId,
        writes: Vec<(usize, Input)>,
    ) -> Result<usize, Error> {
        self.writable()?;
        self.fits_planned(Planned::ListSetMany(obj, &writes))?;
        let owner = || self.locks.check_owner(obj.0, Refusal::Locked);
        self.doc
            .list_set_many(obj, writes, owner, &mut self.out, &self.peers)
    }

    /// Reorders an array: afterwards the element at `i` is the one that was
    /// at `order[i]`. Only elements outside the longest run that keeps its
    /// relative order are moved. Returns whether the order changed.
    ///
    /// # Errors
    /// [`Error::BadPermutation`] when `order` is not a permutation of
    /// `0..len`, and [`Error::Syncing`], [`Error::UnknownObject`],
    /// [`Error::WrongKind`], [`Error::Locked`], and [`Error::TooLarge`] when
    /// its moves could make a message over the limit.
    pub fn list_reorder(&mut self, obj: ObjectId, order: &[usize]) -> Result<bool, Error> {
        self.writable()?;
        let owner = || self.locks.check_owner(obj.0, Refusal::Locked);
        self.doc
            .list_reorder(obj, order, owner, &mut self.out, &self.peers)
    }

    /// Moves the live element `elem` of `obj` right after the slot
    /// `origin` (to the front for `None`), as one operation.
    pub(crate) fn list_move_after(
        &mut self,
        obj: ObjectId,
        elem: Id,
        origin: Option<Id>,
    ) -> Result<(), Error> {
        self.writable()?;
        let owner = || self.locks.check_owner(obj.0, Refusal::Locked);
        self.doc
            .list_move_after(obj, elem, origin, owner, &mut self.out, &self.peers)
    }

    // ---------------------------------------------------------------- locks

    /// The state of this replica's lock on `obj`.
    pub fn lock_state(&self, obj: ObjectId) -> LockState {
        self.locks.state(obj)
    }

    /// The peer that holds or heads the queue of `obj`, as far as this
    /// replica knows.
    pub fn lock_holder(&self, obj: ObjectId) -> Option<PeerId> {
        let (peer, _) = self.locks.holder(obj)?;
        Some(self.peers.get(peer).clone())
    }

    /// The holder of `obj`'s lock and its token, when a grant is known here.
    pub fn lock_holder_token(&self, obj: ObjectId) -> Option<(PeerId, u64)> {
        let (peer, token) = self.locks.holder(obj)?;
        Some((self.peers.get(peer).clone(), token?))
    }

    /// Whether a local write to `obj` would be refused by a lock.
    ///
    /// # Errors
    /// [`Error::NotOwner`] when another replica holds or heads the lock,
    /// [`Error::Left`] after [`Replica::leave`].
    pub fn check_writable(&self, obj: ObjectId) -> Result<(), Error> {
        if self.left {
            return Err(Error::Left);
        }
        self.locks.check_owner(obj.0, Refusal::NotOwner)
    }

    /// Asks for the lock on `obj`. With `wait` false, fails at once with
    /// [`Error::Locked`] when another replica holds it or is queued for it.
    /// The grant is reported by [`crate::LockEvent::Granted`] (and by
    /// [`Replica::lock_state`]).
    ///
    /// # Errors
    /// [`Error::Locked`], [`Error::UnknownObject`], [`Error::Syncing`],
    /// [`Error::Evicted`], [`Error::Left`] after [`Replica::leave`], and
    /// [`Error::TooLarge`] when the open group has no room left for the
    /// request.
    pub fn lock(&mut self, obj: ObjectId, wait: bool) -> Result<LockState, Error> {
        self.writable()?;
        if self.members.is_evicted() {
            return Err(Error::Evicted);
        }
        if self.doc.kind(obj).is_none() {
            return Err(Error::UnknownObject(obj));
        }
        // The request and, one day, its release.
        self.fits(|| 1, |f| 2 * bare_op_bound(f))?;
        self.locks
            .request(obj, wait, &mut self.out, &self.peers, &self.members)
    }

    /// Releases this replica's lock on `obj`, or withdraws its request
    /// still waiting: what dropping a guard or a pending lock does.
    ///
    /// # Errors
    /// [`Error::NotOwner`] when another replica holds or heads the lock and
    /// this one has no request; [`Error::NotLocked`] when nobody does.
    pub fn unlock(&mut self, obj: ObjectId) -> Result<(), Error> {
        self.note_locks();
        self.locks.release(obj, true, &mut self.out, &self.peers)
    }

    /// Releases this replica's lock on `obj`. A request still waiting is
    /// left as it is ([`Replica::unlock`] withdraws it).
    ///
    /// # Errors
    /// [`Error::NotOwner`] when another replica holds or heads the lock;
    /// [`Error::NotLocked`] when nobody does (this replica's own request
    /// may be waiting for its acknowledgements).
    pub fn release(&mut self, obj: ObjectId) -> Result<(), Error> {
        self.note_locks();
        self.locks.release(obj, false, &mut self.out, &self.peers)
    }

    // -------------------------------------------------------------- outputs

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.outbox.poll()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.out.events.poll()
    }

    /// When [`Replica::handle_timeout`] should next be called (never
    /// after [`Replica::leave`]).
    pub fn poll_timeout(&self) -> Option<Duration> {
        if self.left {
            return None;
        }
        self.out.timers.next_timeout()
    }

    /// Whether a transmit is waiting to be polled.
    pub fn has_transmits(&self) -> bool {
        self.out.outbox.has_transmits()
    }

    /// Whether an event is waiting to be polled.
    pub fn has_events(&self) -> bool {
        !self.out.events.is_empty()
    }

    /// Turns recording of [`Event::Change`] and [`Event::RootChanged`] on or
    /// off (on by default). A program with no change listener saves the work.
    pub fn record_changes(&mut self, on: bool) {
        self.out.events.set_recording(on);
    }

    // --------------------------------------------------------------- inputs

    /// Applies one incoming message.
    ///
    /// Messages of one sender must be passed in that sender's order; how
    /// senders interleave does not matter. Duplicates are ignored. A message
    /// that arrives ahead of a missing predecessor is held and the sender is
    /// asked to resend. After [`Replica::leave`] every message is ignored.
    ///
    /// # Errors
    /// A [`ReceiveError`] when the bytes are not a valid message; the replica
    /// is unchanged and keeps working.
    pub fn handle_message(&mut self, bytes: &[u8]) -> Result<(), ReceiveError> {
        if self.left {
            return Ok(());
        }
        let frame = codec::decode(bytes, self.config.max_message)?;
        let depth = self.out.outbox.depth();
        let r = self.handle_frame(frame, bytes.len());
        self.out.outbox.reopen(depth);
        r
    }

    /// Applies the message at `position` of a totally ordered log, stamped
    /// by the log with `time`. Every replica must read the same log in order,
    /// its own messages included (they come back to it). Meant for replicas
    /// made with [`Config::ordered`]; any other replica takes it as
    /// [`Replica::handle_message`] would.
    ///
    /// # Errors
    /// As [`Replica::handle_message`].
    pub fn handle_ordered(
        &mut self,
        bytes: &[u8],
        position: u64,
        time: Duration,
    ) -> Result<(), ReceiveError> {
        if self.left {
            return Ok(());
        }
        let Some(log) = self.locks.log() else {
            return self.handle_message(bytes);
        };
        if log.was_read(position) {
            // Read again after a reconnect: already applied.
            return Ok(());
        }
        let frame = codec::decode(bytes, self.config.max_message)?;
        let depth = self.out.outbox.depth();
        let r = self.read_from_log(frame, bytes.len(), position, time);
        self.out.outbox.reopen(depth);
        r
    }

    /// Over an ordered log: whether this replica must start over from a
    /// snapshot of the log, as [`Event::NeedsSync`] or [`Event::Evicted`]
    /// reported: the log refused a write it applied, or its lease ran out.
    /// What it reads on is not the log's state. `false` for a replica that
    /// is not ordered.
    pub fn must_reload(&self) -> bool {
        self.locks
            .log_ref()
            .is_some_and(|log| log.diverged() || self.members.is_evicted())
    }

    /// Over an ordered log: how many of this replica's writes the log
    /// refused, each a write to an object another replica held at the
    /// write's position. Every replica refuses that write and applies the
    /// rest of its message; this one applied it and must reload, which
    /// loses it. `0` for a replica that is not ordered.
    pub fn refused_writes(&self) -> u64 {
        self.locks.log_ref().map_or(0, |log| log.refused_writes())
    }

    /// Over an ordered log: whether this replica has read its own first
    /// message (its hello) back. From that position on, every replica
    /// counts it among the members whose acknowledgements its reclamation
    /// waits for, so a write judged on this replica's state from then on
    /// cannot name an object or element a round completed elsewhere has
    /// collected. Before it, a round may complete without this replica, so
    /// a new incarnation should take its node's place, and carry writes
    /// over ([`Replica::carry_over`]), only once this holds. `false` for a
    /// replica that is not ordered.
    pub fn joined_log(&self) -> bool {
        self.locks.log_ref().is_some() && self.locks.delivered(1)
    }

    /// Lets time pass: runs the timers that are due (sync retries,
    /// reclamation, heartbeats) and failure detection.
    pub fn handle_timeout(&mut self, now: Duration) {
        let depth = self.out.outbox.depth();
        self.run_timers(now);
        self.out.outbox.reopen(depth);
    }

    /// [`Replica::handle_timeout`], the caller's group aside.
    fn run_timers(&mut self, now: Duration) {
        self.out.now = now;
        if self.left {
            // Whatever a timer would send, the peers drop.
            return;
        }
        // Held operations stay held: whatever a timer sends that must
        // follow them (an acknowledgement, a state) sends them first.
        self.out.close_groups();
        if self.out.timers.expired(Timer::Sync, now) {
            self.retry_sync(now);
        }
        if self.is_ready() && self.out.timers.expired(Timer::Gc, now) {
            self.reclaim();
            self.out
                .timers
                .set(Timer::Gc, now + self.config.gc_interval);
        }
        if self.out.timers.expired(Timer::Heartbeat, now) {
            self.out.begin();
            self.out.outbox.tick();
            self.out.outbox.push(WireOp::Tick);
            self.out.end();
        }
        // Re-armed by the check, when a member may turn silent.
        self.out.timers.expired(Timer::Silence, now);
        self.evict_silent(now);
        if self.is_ready() {
            // A joiner may have been waiting for an evicted peer's offer.
            self.answer_fetches();
        }
    }

    // -------------------------------------------------- joining and leaving

    /// Drops the local document and asks the peers for theirs. Writes are
    /// refused until the sync completes ([`Event::Ready`]). After
    /// [`Replica::leave`] it does nothing: no peer would answer.
    pub fn sync(&mut self) {
        if self.left {
            return;
        }
        self.out.close_all();
        // Requests cannot survive the state they were made in: withdraw
        // them, so that nobody waits for this replica.
        self.note_locks();
        self.locks.release_all(&mut self.out, &self.peers);
        self.out.close_all();
        let dropped = self.doc.clear();
        self.streams.clear();
        self.serve.drop_fetches();
        // Reclamation waits for the document; its deadline is kept. The
        // document of a sync that had begun is the one it dropped.
        let (gc_deadline, before) = match &mut self.phase {
            Phase::Joining(j) => (j.gc_deadline, j.before.take()),
            Phase::Live => {
                let before = self.out.events.recording().then(|| Before {
                    graph: dropped,
                    successions: Vec::new(),
                });
                (self.out.timers.stop(Timer::Gc), before)
            }
        };
        let mut joining = Joining::new(gc_deadline);
        joining.before = before;
        if let Phase::Joining(old) = &mut self.phase {
            joining.keep_senders(old);
        }
        // Whoever this replica knows and has not heard ask for a sync of
        // its own (or, live, heard complete it) holds the document; a peer
        // it knows nothing of may sync since before it listened.
        joining.trust(
            (self.peers.iter())
                .filter(|&(p, _)| p != PeerIdx::SELF && !self.serve.is_syncing(p))
                .map(|(_, id)| Tag(id.incarnation())),
        );
        self.phase = Phase::Joining(Box::new(joining));
        let deadline = self.out.now + self.config.sync_timeout;
        self.out.timers.set(Timer::Sync, deadline);
        self.send_sync_request();
    }

    /// Asks for a sync, an observer saying so first: a peer that joined
    /// since its hello would count it as a member otherwise.
    fn send_sync_request(&mut self) {
        let hostname = Hostname::of(&self.me);
        if self.config.observer {
            self.out.send(Sequenced::Observe {
                hostname: hostname.clone(),
            });
        }
        self.out.send(Sequenced::SyncRequest { hostname });
    }

    /// Says goodbye: peers stop waiting for this replica, free its locks
    /// and drop whatever it sends from then on. So it drops its own locks
    /// and requests at once ([`crate::LockEvent::Lost`] for a held lock,
    /// [`crate::LockEvent::Withdrawn`] for a request), and from then on
    /// refuses writes and lock requests with [`Error::Left`], evicts
    /// nobody, does not sync, runs no timer and ignores every message: its
    /// document stays as it was, for reads. Only a new incarnation
    /// ([`Replica::reincarnate`], [`Replica::successor`]) takes part
    /// again. Leaving again does nothing.
    pub fn leave(&mut self) {
        if self.left {
            return;
        }
        self.note_locks();
        self.locks.lose_all(&mut self.out.events);
        self.out.flush();
        self.out.send(Sequenced::Goodbye);
        self.left = true;
    }

    /// Declares `peer` gone (its transport reported it lost): its locks are
    /// freed and nobody waits for it, on every replica. An observer
    /// ([`Config::observer`]) evicts nobody, nor does a replica that left
    /// ([`Replica::leave`]): its peers would drop the eviction.
    pub fn evict(&mut self, peer: &PeerId) {
        if self.config.observer || self.left {
            return;
        }
        let Ok(p) = self.peers.intern(peer) else {
            return;
        };
        if p == PeerIdx::SELF || self.members.is_departed(p) {
            return;
        }
        self.out.close_all();
        self.out.begin();
        self.send_eviction(p);
        self.out.end();
        if self.is_ready() {
            // A joiner may have been waiting for its offer.
            self.answer_fetches();
        }
    }

    /// [`Replica::evict`] of every member of `hostname` (only the
    /// incarnation `incarnation`, when given), for a transport that knows
    /// its peers by hostname. Returns how many members that was (none
    /// after [`Replica::leave`]).
    ///
    /// ```
    /// use facsimile_core::{Config, PeerId, Replica};
    /// let mut a = Replica::new(PeerId::new("a", 1), Config::default());
    /// let mut b = Replica::new(PeerId::new("b", 2), Config::default());
    /// while let Some(t) = b.poll_transmit() {
    ///     a.handle_message(&t.bytes)?;
    /// }
    /// assert_eq!(a.evict_host("b", Some(3)), 0);
    /// assert_eq!(a.evict_host("b", None), 1);
    /// assert!(a.members().is_empty());
    /// # Ok::<(), facsimile_core::ReceiveError>(())
    /// ```
    pub fn evict_host(&mut self, hostname: &str, incarnation: Option<u32>) -> usize {
        if self.left {
            return 0;
        }
        let gone: Vec<PeerId> = self
            .members()
            .into_iter()
            .filter(|p| p.hostname() == hostname)
            .filter(|p| incarnation.is_none_or(|i| p.incarnation() == i))
            .collect();
        for peer in &gone {
            self.evict(peer);
        }
        gone.len()
    }

    /// Whether `tag` names a peer this replica has heard of (a member, one
    /// gone, or this replica): a new incarnation should pick another, or
    /// it would be taken for that peer.
    ///
    /// ```
    /// use facsimile_core::{Config, PeerId, Replica};
    /// let mut a = Replica::new(PeerId::new("a", 1), Config::default());
    /// let mut b = Replica::new(PeerId::new("b", 2), Config::default());
    /// while let Some(t) = b.poll_transmit() {
    ///     a.handle_message(&t.bytes)?;
    /// }
    /// assert!(a.knows_tag(1) && a.knows_tag(2) && !a.knows_tag(3));
    /// # Ok::<(), facsimile_core::ReceiveError>(())
    /// ```
    pub fn knows_tag(&self, tag: u32) -> bool {
        tag == self.me.incarnation() || self.peers.by_tag(tag).is_some()
    }

    /// Starts over as a new incarnation of the same host, then syncs: what
    /// a replica does after its peers evicted it ([`Event::Evicted`]). Object
    /// ids obtained before read through the returned [`Succession`]
    /// ([`ObjectId::after`]). The locks of the previous incarnation end with
    /// it, as an eviction ends them: each held one is reported
    /// [`crate::LockEvent::Lost`] and each request still waiting
    /// [`crate::LockEvent::Withdrawn`] (unless an eviction did already),
    /// with the objects named as the new incarnation names them.
    pub fn reincarnate(&mut self, incarnation: u32) -> Succession {
        self.out.close_all();
        // The incarnation's locks and requests end with it, reported as an
        // eviction reports them (unless one was read, and did).
        self.note_locks();
        let mut ended = Events::default();
        self.locks.lose_all(&mut ended);
        // A new peer, which has not left.
        self.left = false;
        self.handing_over = false;
        let me = PeerId::new(self.me.hostname(), incarnation);
        let (peers, succession) = self.successor_peers(&me);
        self.peers = peers;
        self.me = me;
        // The new incarnation's stream, membership, locks and reclamation
        // start afresh; the clock goes on, so that ids never repeat.
        self.out.outbox.restart(Tag(incarnation));
        self.doc.restart_reclamation();
        self.members.reset();
        self.locks.reset();
        // Named as the successor names them, as every event from now on.
        while let Some(mut e) = ended.poll() {
            if let Event::Lock(l) = &mut e {
                l.rename(|o| o.after(&succession));
            }
            self.out.events.push(e);
        }
        if let Phase::Joining(j) = &mut self.phase {
            j.gc_deadline = None;
        }
        self.out.timers.set(Timer::Gc, Duration::ZERO);
        self.sync();
        if let Phase::Joining(j) = &mut self.phase {
            if let Some(before) = &mut j.before {
                before.successions.push(succession);
            }
        }
        succession
    }

    /// A new incarnation `me` to take this replica's place, loaded from a
    /// saved state ([`Replica::export_state`], [`Replica::log_snapshot`]) or
    /// empty, with this replica's settings (its limit of what it sends
    /// included: [`Replica::limit_sent_messages`]). Object ids this replica handed
    /// out stay valid through the [`Succession`] ([`ObjectId::after`]), and
    /// the successor's counters continue above this one's.
    ///
    /// # Errors
    /// A [`ReceiveError`] when the bytes are not a valid saved state.
    pub fn successor(
        &self,
        me: PeerId,
        saved: Option<&[u8]>,
    ) -> Result<(Replica, Succession), ReceiveError> {
        let mut r = Replica::new(me.clone(), self.config.clone());
        let (peers, succession) = self.successor_peers(&me);
        r.peers = peers;
        r.out.outbox.continue_from(self.out.outbox.clock());
        r.out.outbox.set_max_message(self.out.outbox.max_message());
        let r = match saved {
            Some(bytes) => Replica::load_exported(r, bytes)?,
            None => r,
        };
        Ok((r, succession))
    }

    /// Moves `succession` (from [`Replica::successor`] of `previous`) up to
    /// everything `previous` made since, for a successor that was brought
    /// up to date before taking `previous`'s place: the ids `previous`
    /// handed out meanwhile stay its own, and this replica's counters
    /// continue above them.
    pub fn extend_succession(&mut self, previous: &Replica, succession: &mut Succession) {
        succession.boundary = succession.boundary.max(previous.out.outbox.clock());
        self.out.outbox.continue_from(succession.boundary);
    }

    /// Saves everything needed to continue this document later: the
    /// document with its metadata, every stream position, lock queues and
    /// acknowledgements. For persistence (the relay keeps one on disk).
    pub fn export_state(&mut self) -> Vec<u8> {
        self.out.close_all();
        self.doc.sort_maps();
        transfer::export(self.transfer_source())
    }

    /// [`Replica::export_state`] in the first format (version byte 1), which
    /// loaders still read.
    #[cfg(test)]
    pub(crate) fn export_state_first_format(&mut self) -> Vec<u8> {
        self.out.close_all();
        self.doc.sort_maps();
        transfer::export_first_format(self.transfer_source())
    }

    /// Starts a replica from a state saved with [`Replica::export_state`],
    /// as a new incarnation `me` (the saved replica's identity becomes an
    /// ordinary peer; evict it with [`Replica::evict`] so nobody waits for
    /// it). The replica is ready at once.
    ///
    /// # Errors
    /// A [`ReceiveError`] when the bytes are not a valid saved state.
    pub fn from_exported(
        me: PeerId,
        config: Config,
        bytes: &[u8],
    ) -> Result<Replica, ReceiveError> {
        Replica::load_exported(Replica::new(me, config), bytes)
    }

    /// The incarnation tags of every peer a state saved with
    /// [`Replica::export_state`] has heard of (members, peers gone, and the
    /// replica that saved it), read without loading the state. A new
    /// incarnation loaded from it must draw another: the engine tells a
    /// peer's messages by its tag alone.
    ///
    /// ```
    /// use facsimile_core::{Config, PeerId, Replica};
    /// let mut a = Replica::new(PeerId::new("a", 7), Config::default());
    /// assert_eq!(Replica::saved_tags(&a.export_state())?, [7]);
    /// # Ok::<(), facsimile_core::ReceiveError>(())
    /// ```
    ///
    /// # Errors
    /// A [`ReceiveError`] when the bytes do not start as a saved state.
    pub fn saved_tags(bytes: &[u8]) -> Result<Vec<u32>, ReceiveError> {
        transfer::saved_tags(bytes)
    }

    // ---------------------------------------------------------- ordered log

    /// Whether locks and liveness follow a totally ordered log
    /// ([`Config::ordered`]).
    pub fn is_ordered(&self) -> bool {
        matches!(self.locks, Locks::Log(_))
    }

    /// The log position of the last message applied with
    /// [`Replica::handle_ordered`] (a snapshot saved now covers the log up to
    /// here).
    pub fn log_position(&self) -> u64 {
        self.locks.log_ref().map_or(0, |l| l.position())
    }

    /// This replica's state as a snapshot of the log up to
    /// [`Replica::log_position`], for joiners to start from with
    /// [`Replica::from_exported`]. `None` while the state holds anything the
    /// log does not (a message not yet read back, a refused write): try again
    /// after reading further.
    pub fn log_snapshot(&mut self) -> Option<Vec<u8>> {
        let clean = self.is_ready()
            && self
                .locks
                .log_ref()
                .is_some_and(|l| l.is_clean(&self.out.outbox));
        clean.then(|| self.export_state())
    }

    /// Refuses writes and lock requests ([`Error::Syncing`]) while `on`:
    /// over an ordered log, for a replica whose successor is joining the
    /// log to take its place. A write made then would land in the log
    /// after the successor's hello; to judge it (a lock granted meanwhile
    /// refuses it), this replica would have to read on to it, and the
    /// successor, taking its place before reading it, would not show it.
    /// Turned off again if the successor is given up.
    pub fn hand_over(&mut self, on: bool) {
        self.handing_over = on;
    }

    /// Gives up this replica before replacing it with one loaded from a log
    /// snapshot: its locks are lost (with [`crate::LockEvent::Lost`] events)
    /// and it says goodbye, so the others stop counting on it.
    pub fn abandon(&mut self) {
        self.leave();
    }

    /// Records, for a successor taking `previous`'s place
    /// ([`Replica::successor`]), what its document holds that `previous`
    /// showed otherwise, as a sync that replaces a document does: a change
    /// of each map key whose value differs and of each array whose elements
    /// differ, in the objects both hold, and the root's replacement if it
    /// differs. `rename` names an object of `previous` here (through the
    /// [`Succession`], [`ObjectId::after`]). The changes come from the log,
    /// not from this replica: their origin is `previous`, which they
    /// replace. Nothing is recorded while changes are not.
    pub fn record_changes_since(
        &mut self,
        previous: &Replica,
        rename: impl Fn(ObjectId) -> ObjectId,
    ) {
        if !self.out.events.recording() {
            return;
        }
        let origin = Origin::Remote(previous.peer_id().clone());
        for change in self
            .doc
            .changes_since(previous.doc.graph(), &rename, &origin)
        {
            self.out.events.change(|| change);
        }
        let old_root = match previous.doc.root() {
            Value::Ref(o) => Value::Ref(rename(*o)),
            v => v.clone(),
        };
        let new_root = self.doc.root();
        if !old_root.same(new_root) {
            let new_root = new_root.clone();
            self.out.events.root_changed(old_root, new_root, origin);
        }
    }
}

// The private methods below route input between the components.
impl Replica {
    fn tag(&self) -> Tag {
        Tag(self.me.incarnation())
    }

    /// Whether `tag` is a peer known here or, while this replica syncs,
    /// one whose messages wait to be read. A peer's first message (its
    /// announcement) comes before any request of its.
    fn heard_from(&self, tag: Tag) -> bool {
        self.peers.by_tag(tag.0).is_some()
            || matches!(&self.phase, Phase::Joining(j) if j.holds_from(tag))
    }

    /// Records that the writes made so far may depend on a lock, if this
    /// replica holds one (it is about to stop holding it).
    fn note_locks(&mut self) {
        if self.locks.holds_any() {
            self.locked_through = self.out.outbox.clock();
        }
    }

    /// Refuses a write whose message could be larger than peers accept
    /// ([`Config::max_message_size`]), before it changes anything:
    /// [`Outputs::fits`] with this replica's peers.
    #[inline]
    fn fits(
        &mut self,
        ids: impl FnOnce() -> usize,
        bound: impl FnOnce(codec::WireFormat) -> usize,
    ) -> Result<(), Error> {
        self.out.fits(&self.peers, ids, bound)
    }

    /// [`Replica::fits`] for a write as [`Replica::check_room`] plans it:
    /// inlined into each write, so that its match falls away.
    #[inline(always)]
    fn fits_planned(&mut self, write: Planned<'_>) -> Result<(), Error> {
        debug_assert!(
            !matches!(write, Planned::ListSplice(..)),
            "a splice reserves its room itself, once it knows its runs"
        );
        self.out
            .fits(&self.peers, || write.ids(0), |f| write.bound(0, f))
    }

    /// Whether the writes of `plan`, made in order in one group
    /// ([`Replica::begin`]), all fit in its message: when this says yes,
    /// none of them is refused as [`Error::TooLarge`]. For a caller that
    /// must make several writes or none.
    ///
    /// # Errors
    /// [`Error::TooLarge`] when they may not all fit, [`Error::Syncing`]
    /// during a sync, and [`Error::UnknownObject`] or
    /// [`Error::WrongKind`] for a splice of what is not an array.
    ///
    /// ```
    /// use facsimile_core::{Config, Error, Input, Planned, PeerId, Replica};
    /// let mut r = Replica::new(PeerId::new("a", 1), Config::default().max_message_size(4096));
    /// r.set_root(Input::Map(vec![])).unwrap();
    /// let text = Input::from("x".repeat(1500));
    /// let root = r.root().as_ref_id().unwrap();
    /// assert!(r.check_room([Planned::MapSet(root, "a", &text)]).is_ok());
    /// let three = ["a", "b", "c"].map(|k| Planned::MapSet(root, k, &text));
    /// assert!(matches!(r.check_room(three), Err(Error::TooLarge { .. })));
    /// ```
    pub fn check_room<'a>(
        &mut self,
        plan: impl IntoIterator<Item = Planned<'a>>,
    ) -> Result<(), Error> {
        self.writable()?;
        let format = self.out.outbox.format();
        // Each write's check counts what its group holds before it: the
        // bounds of the writes before, or once the group is packed
        // (`packs`), their encoded bytes, which their weights bound.
        let (mut bounds, mut early, mut weights, mut largest, mut ops, mut ids) =
            (0usize, 0, 0usize, 0, 0, 0usize);
        for write in plan {
            // A delete's runs of ids, read once: every measure below takes them.
            let runs = match write {
                Planned::ListSplice(obj, start, delete, _) => {
                    self.doc.splice_runs(obj, start, delete)?
                }
                _ => 0,
            };
            let named = write.ids(runs);
            ids = ids.saturating_add(named);
            // Each write's own check charges the introductions it could
            // make; a packed message holds each peer's once.
            let intros = self.out.outbox.intros_bound(&self.peers, || named);
            let bound = write.bound(runs, format).saturating_add(intros);
            bounds = bounds.saturating_add(bound);
            if ops < outbox::STREAM_FROM {
                early = bounds;
            }
            weights = weights.saturating_add(write.weight(runs));
            largest = largest.max(bound);
            ops = ops.saturating_add(write.ops(&self.doc, runs));
        }
        let bytes = if outbox::packs(&self.out.outbox, ops) {
            let intros = self.out.outbox.intros_bound(&self.peers, || ids);
            bounds.min(early.max(weights.saturating_add(intros).saturating_add(largest)))
        } else {
            bounds
        };
        self.out.outbox.check_room(bytes)
    }

    /// Whether writes are taken now. A write keeps room in its message for
    /// the releases of this replica's locks: a release is never refused.
    #[inline]
    fn writable(&mut self) -> Result<(), Error> {
        if self.config.observer {
            return Err(Error::Observer);
        }
        if self.left {
            return Err(Error::Left);
        }
        if self.handing_over {
            return Err(Error::Syncing);
        }
        match self.phase {
            Phase::Live if self.locks.log_ref().is_none() || self.joined_log() => {}
            _ => return Err(Error::Syncing),
        }
        let release = bare_op_bound(self.out.outbox.format());
        self.out
            .outbox
            .keep_for_releases(self.locks.own_requests() * release);
        Ok(())
    }

    /// Applies a decoded message of `size` encoded bytes.
    fn handle_frame(&mut self, frame: Frame, size: usize) -> Result<(), ReceiveError> {
        let (from, me) = (frame.from, self.tag());
        if from == me {
            // Our own message, echoed by a broadcast transport.
            return Ok(());
        }
        // Operations of an open local group must not straddle a remote
        // message: their counters would no longer be consecutive.
        self.out.close_all();
        if let Message::Sequenced {
            body: Sequenced::SyncRequest { .. },
            ..
        } = &frame.msg
        {
            // Its sender dropped the streams it followed: what was resent
            // to it may be due again. Taken on arrival, held or not: a
            // request to resend it sends after it comes after it.
            self.out.outbox.forget_resent(from);
        }
        match frame.msg {
            Message::Directed { to, body } if to == me => self.handle_directed(from, body),
            Message::Directed { .. } => Ok(()),
            Message::Sequenced {
                seq,
                body: Sequenced::Run { messages },
            } => self.handle_run(from, seq, messages, size),
            Message::Sequenced { seq, body } => match &mut self.phase {
                Phase::Joining(join) => {
                    if join.heard(from, &body, me) {
                        let deadline = self.out.now + self.config.sync_timeout;
                        self.out.timers.set(Timer::Sync, deadline);
                        self.out.send_to(from, Directed::SyncFetch);
                    }
                    // Another joiner's answerer may wait for this replica's
                    // offer, and this one's for that joiner's: offered now,
                    // neither waits for the other to complete. Everything
                    // sent from here on, that joiner hears.
                    if matches!(body, Sequenced::SyncRequest { .. }) && !self.config.observer {
                        self.serve.offered_early(from);
                        self.out.send(Sequenced::SyncOffer { joiner: from });
                    }
                    join.hold(from, seq, body, size, self.config.max_backlog)
                }
                Phase::Live => self.handle_sequenced(from, seq, body, size),
            },
        }
    }

    /// Takes a run of `from`'s messages apart: the first is taken as if it
    /// came alone (refused, it changes nothing), the others as messages
    /// that arrived ahead of it and waited (one refused in order breaks the
    /// stream, and the rest of the run is dropped).
    fn handle_run(
        &mut self,
        from: Tag,
        seq: u64,
        messages: Vec<(u64, Ops)>,
        size: usize,
    ) -> Result<(), ReceiveError> {
        let n = messages.len() as u64;
        if n == 0 || seq.checked_add(n - 1).is_none() {
            return Err(ReceiveError::invalid(
                from.0,
                "a run of no messages or past u64",
            ));
        }
        let size = size / messages.len();
        for (i, (tick, ops)) in messages.into_iter().enumerate() {
            let frame = Frame {
                from,
                msg: Message::Sequenced {
                    seq: seq + i as u64,
                    body: Sequenced::Ops { tick, ops },
                },
            };
            match self.handle_frame(frame, size) {
                Err(e) if i == 0 => return Err(e),
                Err(_) => {
                    self.locks.stream_broken(&mut self.out.events);
                    break;
                }
                Ok(()) => {}
            }
        }
        Ok(())
    }

    fn handle_sequenced(
        &mut self,
        from: Tag,
        seq: u64,
        body: Sequenced,
        size: usize,
    ) -> Result<(), ReceiveError> {
        let (position, opened) = self.streams.position(from, seq);
        let result = match position {
            Position::Duplicate => {
                // Covered by a loaded state, with what its sender sent
                // before: as good as applied here.
                if let Sequenced::SyncOffer { joiner } = body {
                    self.serve.offer_seen(joiner, from);
                }
                Ok(())
            }
            Position::Ahead => self
                .streams
                .hold(from, seq, body, size, self.config.max_backlog)
                .map(|ask| {
                    if let Some(from_seq) = ask {
                        self.out.send_to(from, Directed::Resend { from_seq });
                    }
                }),
            Position::Next => self.process_sequenced(from, body).map(|()| {
                self.advance(from);
                self.answer_fetches();
            }),
        };
        if opened {
            self.streams.drop_stray(from);
        }
        result
    }

    /// Moves a stream past the message just applied and applies what was
    /// held behind it.
    fn advance(&mut self, from: Tag) {
        while let Some(body) = self.streams.advance(from) {
            if self.process_sequenced(from, body).is_err() {
                // Accepted earlier but invalid in order.
                self.locks.stream_broken(&mut self.out.events);
                return;
            }
        }
    }

    /// Applies the next message of `from`'s stream.
    fn process_sequenced(&mut self, from: Tag, body: Sequenced) -> Result<(), ReceiveError> {
        let sender = self.streams.peer(from);
        if let Some(p) = sender {
            self.members.heard(p);
        }
        match body {
            Sequenced::Observe { hostname } => {
                let peer = self
                    .peers
                    .intern(&hostname.peer(from))
                    .map_err(|_| ReceiveError::TagCollision(from.0))?;
                self.streams.bind(from, peer);
                if self.members.observe(peer) {
                    self.doc.frontier_moved();
                }
            }
            Sequenced::Hello { hostname } => {
                self.announce(from, &hostname)?;
                // A welcome admits its sender as a member: an observer
                // sends none. The newcomer learns of its stream from its
                // next message, and asks for it from the start, where
                // `Observe` is (or, gone from the log, syncs).
                if self.is_ready() && !self.config.observer {
                    let (hostname, seq) = (Hostname::of(&self.me), self.out.outbox.seq());
                    self.out.send_to(from, Directed::Welcome { hostname, seq });
                }
            }
            Sequenced::SyncRequest { hostname } => {
                let peer = self.announce(from, &hostname)?;
                let due = self.serve.requested(from, peer, &self.members);
                // A state lists its sender as a member: an observer offers
                // none. A departed joiner is offered to like any other: the
                // state it loads is how it learns of its eviction.
                if due && self.is_ready() && !self.config.observer {
                    self.out.send(Sequenced::SyncOffer { joiner: from });
                }
            }
            Sequenced::Joined => {
                if let Some(p) = sender {
                    self.serve.joined(from, p);
                }
            }
            Sequenced::SyncOffer { joiner } => self.serve.offer_seen(joiner, from),
            body => {
                let sender = sender.ok_or_else(|| {
                    ReceiveError::invalid(from.0, "message before the sender's hello")
                })?;
                if self.members.is_departed(sender) {
                    // Evicted (or gone): whatever it sends now is refused,
                    // its writes under lost locks included. It rejoins as a
                    // new incarnation.
                    if let Sequenced::Ops { tick, ops } = &body {
                        self.check_counter_eviction(from, sender, *tick, ops);
                    }
                    return Ok(());
                }
                match body {
                    Sequenced::Ops { tick, ops } => self.handle_ops(from, sender, tick, ops)?,
                    Sequenced::GcAck { frontier, members } => {
                        self.doc.record_ack(sender, &frontier);
                        for (tag, hostname) in members {
                            if tag == self.tag() {
                                continue;
                            }
                            if let Ok(p) = self.peers.intern(&hostname.peer(tag)) {
                                self.members.admit_quietly(p);
                            }
                        }
                    }
                    Sequenced::Goodbye => self.depart(sender),
                    // Taken apart on arrival (`handle_run`).
                    Sequenced::Run { .. } => {
                        return Err(ReceiveError::invalid(from.0, "a run inside a run"));
                    }
                    // Handled above: they need no announced sender.
                    Sequenced::Hello { .. }
                    | Sequenced::Observe { .. }
                    | Sequenced::SyncRequest { .. }
                    | Sequenced::Joined
                    | Sequenced::SyncOffer { .. } => {}
                }
            }
        }
        Ok(())
    }

    /// Registers a peer that announced itself.
    fn announce(&mut self, tag: Tag, hostname: &Hostname) -> Result<PeerIdx, ReceiveError> {
        let peer = self
            .peers
            .intern(&hostname.peer(tag))
            .map_err(|_| ReceiveError::TagCollision(tag.0))?;
        self.streams.bind(tag, peer);
        if self.members.admit(peer, &self.peers, &mut self.out.events) {
            self.doc.frontier_moved();
        }
        Ok(peer)
    }

    fn handle_directed(&mut self, from: Tag, body: Directed) -> Result<(), ReceiveError> {
        match body {
            Directed::SyncFetch => {
                // Only a peer whose sync request was read here and whose
                // sync has not completed fetches; a departed one too, as
                // the state is how it learns of its eviction. For anyone
                // else a fetch of a few bytes would cost the whole state,
                // and for the joiner too once answered: one answer a
                // request.
                let asked = self
                    .peers
                    .by_tag(from.0)
                    .is_some_and(|p| self.serve.awaits_answer(p));
                if self.is_ready() && asked {
                    self.serve.fetched(from);
                    self.answer_fetches();
                } else if !self.is_ready() {
                    // Syncing, it offered on hearing the request: it keeps
                    // the fetch until its own sync completes.
                    self.serve.fetched(from);
                }
            }
            Directed::SyncAnswer { .. } | Directed::SyncSaved { .. } => {
                let Phase::Joining(join) = &self.phase else {
                    return Ok(());
                };
                if !join.expects(from) {
                    return Ok(());
                }
                let target = self.transfer_target();
                let t = match body {
                    Directed::SyncAnswer { state } => {
                        transfer::decode_answer(from, *state, &target)?
                    }
                    Directed::SyncSaved { bytes } => {
                        transfer::decode_saved_answer(from, &bytes, &target)?
                    }
                    _ => unreachable!("matched above"),
                };
                // Taken once the answer is known good: a bad one leaves
                // the sync waiting for another, which reports against it.
                let before = match &mut self.phase {
                    Phase::Joining(join) => join.before.take(),
                    Phase::Live => None,
                };
                let departed = self.commit_transfer(t, before);
                if let Phase::Joining(join) = std::mem::replace(&mut self.phase, Phase::Live) {
                    self.out.timers.stop(Timer::Sync);
                    let gc = join.gc_deadline.unwrap_or(Duration::ZERO);
                    self.out.timers.set(Timer::Gc, gc);
                    for (from, seq, body, size) in join.into_backlog() {
                        // Errors in the backlog concern their own senders only.
                        let _ = self.handle_sequenced(from, seq, body, size);
                    }
                }
                self.out.events.push(Event::Ready);
                // Sent also when evicted: the peers count this replica as
                // syncing until they read it.
                self.out.send(Sequenced::Joined);
                // The joiners the state lists as syncing whose request this
                // replica did not hear: their answerers may wait for its
                // offer.
                for joiner in self.serve.completed(&self.members, &self.peers) {
                    if !self.config.observer {
                        self.out.send(Sequenced::SyncOffer { joiner });
                    }
                }
                self.locks
                    .settle(true, &self.me, &self.members, &mut self.out, &self.peers);
                if departed {
                    // Evicted while it synced, or before: it has the
                    // document, but its peers drop whatever it sends.
                    self.evicted();
                }
                // The fetches kept while it synced.
                self.answer_fetches();
            }
            Directed::Welcome { hostname, seq } => {
                if let Phase::Joining(join) = &mut self.phase {
                    // Whoever welcomes a newcomer holds the document.
                    if join.welcomed(from) {
                        let deadline = self.out.now + self.config.sync_timeout;
                        self.out.timers.set(Timer::Sync, deadline);
                        self.out.send_to(from, Directed::SyncFetch);
                    }
                    return Ok(());
                }
                // A bad announcement is refused before anything changes.
                let peer = self.announce(from, &hostname)?;
                // A peer that was there before this replica started: follow
                // its stream from the start, as far as its log reaches.
                if let Some(from_seq) = self.streams.welcome(from, peer, seq) {
                    self.out.send_to(from, Directed::Resend { from_seq });
                }
            }
            // Only for a peer heard from (a member, an observer, one gone
            // that must still read its eviction; while this replica syncs,
            // one whose announcement waits in the backlog): a request of a
            // few bytes may cost the whole resend log.
            Directed::Resend { from_seq } if self.heard_from(from) => {
                self.out.outbox.resend(from, from_seq)
            }
            Directed::Resend { .. } => {}
            Directed::ResendGone => self.out.events.push(Event::NeedsSync),
        }
        Ok(())
    }

    /// Validates and applies an operations message of `sender`.
    fn handle_ops(
        &mut self,
        from: Tag,
        sender: PeerIdx,
        tick: u64,
        wire_ops: Ops,
    ) -> Result<(), ReceiveError> {
        if self.members.is_observer(sender) {
            if let Some(what) = wire_ops.iter().find_map(crate::envelope::what) {
                let reason = format!("{what} from a peer that only observes");
                return Err(ReceiveError::invalid(from.0, reason));
            }
        }
        // Looked up once, mutably, for both passes.
        let Some(stream) = self.streams.get_mut(from) else {
            return Ok(());
        };
        let mut ops = std::mem::take(&mut self.op_buf);
        ops.clear();
        // Pass 1: validate and translate without touching any state.
        let t = op::translate(from, sender, stream, &self.peers, tick, wire_ops, &mut ops)?;
        self.locks.check_requests(from.0, sender, &ops)?;
        // Pass 2: commit. Nothing below can fail.
        for p in &t.new_peers {
            let _ = self.peers.intern(p);
        }
        stream.dict.extend(t.intros);
        stream.lamport = t.last;
        self.out.outbox.observe(t.last);
        let origin = Origin::Remote(self.peers.get(sender).clone());
        for op in ops.drain(..) {
            self.apply_remote(sender, op, &origin);
        }
        self.op_buf = ops;
        self.out.events.flush_touched(&origin);
        self.doc.frontier_moved();
        self.run_woken();
        let ready = self.is_ready();
        self.locks
            .settle(ready, &self.me, &self.members, &mut self.out, &self.peers);
        Ok(())
    }

    /// Applies one operation of `sender` whose message passed validation.
    fn apply_remote(&mut self, sender: PeerIdx, op: Op, origin: &Origin) {
        if self.locks.refuses(&op, sender) {
            return;
        }
        match op {
            Op::Lock { obj, stamp, wait } => self.locks.on_request(
                obj,
                stamp,
                wait,
                &self.members,
                &mut self.out.events,
                &self.peers,
            ),
            Op::Unlock { obj, req, token } => {
                self.locks.on_unlock(obj, req, token, &mut self.out.events)
            }
            Op::LockAck {
                obj,
                req,
                held,
                members,
            } => {
                for m in members {
                    if m == self.me {
                        continue;
                    }
                    if let Ok(p) = self.peers.intern(&m) {
                        if self.members.admit(p, &self.peers, &mut self.out.events) {
                            self.doc.frontier_moved();
                        }
                    }
                }
                self.locks.on_ack(sender, obj, req, held, &self.peers);
            }
            Op::Evict { peer } => {
                if peer == self.me {
                    self.evicted();
                } else if let Ok(p) = self.peers.intern(&peer) {
                    self.depart(p);
                }
            }
            op => {
                let cx = Applied {
                    peers: &self.peers,
                    streams: &self.streams,
                    clock: self.out.outbox.clock(),
                };
                self.doc.apply(sender, op, origin, &cx, &mut self.out);
            }
        }
    }

    /// Applies operations whose dependency arrived, each as its own change.
    fn run_woken(&mut self) {
        while let Some((sender, op)) = self.doc.pop_woken() {
            let origin = Origin::Remote(self.peers.get(sender).clone());
            self.apply_remote(sender, op, &origin);
            self.out.events.flush_touched(&origin);
        }
    }

    /// A peer this replica evicted evicted it too: the earlier eviction
    /// stands, so this replica yields if the peer's came first.
    fn check_counter_eviction(&mut self, from: Tag, sender: PeerIdx, tick: u64, ops: &[WireOp]) {
        let Some(stream) = self.streams.get_mut(from) else {
            return;
        };
        let Ok((first, last)) = op::counters(from, stream, tick, ops) else {
            return;
        };
        // Moved past the refused message, so that the next one decodes.
        stream.lamport = last;
        let Some(mine) = self.members.eviction_of(sender) else {
            return;
        };
        let mut counter = first;
        for op in ops {
            if let WireOp::Evict { peer, .. } = op {
                if *peer == self.tag() && self.peers.later(mine, Id::new(sender, counter)) {
                    self.evicted();
                    return;
                }
            }
            counter += op.counters();
        }
    }

    /// This replica learned that its peers evicted it.
    fn evicted(&mut self) {
        if self.members.evict_self() {
            self.note_locks();
            self.locks.lose_all(&mut self.out.events);
            self.out.events.push(Event::Evicted);
        }
    }

    /// Marks a peer as gone for good: not a member, not waited for, its
    /// locks freed.
    fn depart(&mut self, peer: PeerIdx) {
        if peer == PeerIdx::SELF {
            return;
        }
        self.streams.departed(Tag(self.peers.tag(peer)));
        self.members.depart(peer, &self.peers, &mut self.out.events);
        self.locks
            .drop_peer(peer, &self.members, &mut self.out.events);
        self.serve.departed(Tag(self.peers.tag(peer)));
        // A departed incarnation never asks again: its next one has a tag
        // of its own.
        self.out.outbox.forget_resent(Tag(self.peers.tag(peer)));
    }

    /// Queues the eviction of `p` in the open group and lets it go.
    fn send_eviction(&mut self, p: PeerIdx) {
        let stamp = self.out.outbox.tick();
        self.members.evicting(p, stamp);
        let peer = self.peers.get(p);
        self.out.outbox.push(WireOp::Evict {
            peer: Tag(peer.incarnation()),
            hostname: Hostname::of(peer),
        });
        self.depart(p);
    }

    /// Evicts the members silent for too long, when failure detection is on.
    fn evict_silent(&mut self, now: Duration) {
        let Some(timeout) = self.locks.silence_timeout() else {
            return;
        };
        if !self.is_ready() {
            // Membership is incomplete until the sync answer arrives.
            self.members.stamp_heard(now);
            return;
        }
        let silent = self.members.silent(now, timeout);
        // An observer keeps when each member was last heard (its
        // inspector shows it) but evicts nobody.
        if !silent.is_empty() && !self.config.observer {
            self.out.begin();
            for m in silent {
                self.send_eviction(m);
            }
            self.out.end();
        }
        // Silent means silent for more than the timeout: check just after.
        if let Some(at) = self.members.next_silence(timeout) {
            self.out
                .timers
                .set(Timer::Silence, at + Duration::from_millis(1));
        }
    }

    /// A joiner's sync timer fired: fetch from the next peer that offered,
    /// or ask everyone again.
    fn retry_sync(&mut self, now: Duration) {
        let Phase::Joining(join) = &mut self.phase else {
            return;
        };
        match join.retry() {
            Retry::Fetch(next) => self.out.send_to(next, Directed::SyncFetch),
            Retry::Request => self.send_sync_request(),
        }
        self.out
            .timers
            .set(Timer::Sync, now + self.config.sync_timeout);
    }

    /// Serves sync fetches once no operation waits: a waiting operation is
    /// counted in the stream positions but not in the state, so a snapshot
    /// taken now would lose it.
    #[inline]
    fn answer_fetches(&mut self) {
        // Checked inline: a fetch is rare, and this runs on every message.
        if self.doc.is_settled() && self.serve.has_fetches() {
            self.answer_fetches_now();
        }
    }

    fn answer_fetches_now(&mut self) {
        // The state holds every local write: the joiner must not get them
        // again in a later message.
        self.out.close_all();
        let in_order = self.config.relay;
        for to in self.serve.take_ready(&self.members, &self.peers, in_order) {
            if let Some(p) = self.peers.by_tag(to.0) {
                self.members.admit_quietly(p);
            }
            self.doc.sort_maps();
            match self.out.outbox.format() {
                codec::WireFormat::Binary => {
                    let bytes = transfer::export(self.transfer_source()).into();
                    self.out.send_to(to, Directed::SyncSaved { bytes });
                }
                // A JSON stream stays readable: the state as wire types.
                codec::WireFormat::Json => {
                    let state = transfer::view(self.transfer_source());
                    let bytes = codec::encode(
                        &wire::answer_frame(self.tag(), to, &state),
                        codec::WireFormat::Json,
                    );
                    self.out.outbox.send_encoded(to, bytes);
                }
            }
        }
    }

    /// Marks and reclaims what is due, and acknowledges the frontier to the
    /// members.
    fn reclaim(&mut self) {
        if self.out.outbox.take_moved() {
            self.doc.frontier_moved();
        }
        let (streams, sent) = (&self.streams, self.out.outbox.sent_lamport());
        // A round's frontier covers every operation applied here, the held
        // ones too: what a held write deleted or detached must not be
        // reclaimed before the peers have it (until then they may name it,
        // as an origin or a reference).
        let applied = self.out.outbox.applied_lamport();
        let locks = &self.locks;
        let cx = PassContext {
            peers: &self.peers,
            members: &self.members,
            frontier: &|| gc::frontier(streams, applied),
            // A parked operation arrived but has not taken effect; it may
            // name what the round would reclaim. (A sender not announced
            // yet has nothing held here: `Streams::hold`.)
            settled: self.doc.is_settled(),
            own_seq: self.out.outbox.applied_seq(),
            delivered: &|seq| locks.delivered(seq),
        };
        if !self.doc.reclaim(&cx) {
            return;
        }
        let frontier = gc::frontier(&self.streams, sent)
            .into_iter()
            .map(|(p, c)| (Tag(self.peers.tag(p)), c))
            .collect();
        // The full list every time: a member that arrived later must learn
        // of every peer it has to wait for.
        let members = self
            .members
            .iter()
            .map(|m| {
                let p = self.peers.get(m);
                (Tag(p.incarnation()), Hostname::of(p))
            })
            .collect();
        self.out.send(Sequenced::GcAck { frontier, members });
    }

    /// Applies a message read from an ordered log at `position`, stamped by
    /// the log with `time`.
    fn read_from_log(
        &mut self,
        frame: Frame,
        size: usize,
        position: u64,
        time: Duration,
    ) -> Result<(), ReceiveError> {
        let own = frame.from == self.tag();
        let sender = match own {
            true => Some(PeerIdx::SELF),
            false => self.peers.by_tag(frame.from.0),
        };
        let Some(log) = self.locks.log() else {
            return self.handle_frame(frame, size);
        };
        let now = log.advance(position, time);
        if let Some(p) = sender {
            log.saw(p, now);
        }
        self.expire(now);
        if own {
            self.out.close_all();
            if self.members.is_evicted() {
                // Refused by every replica, as everything this one sent
                // after its lease ran out: left to be carried over.
                return Ok(());
            }
            return self.read_back(frame, size);
        }
        let from = frame.from;
        let r = self.handle_frame(frame, size);
        if let (Some(p), Some(log)) = (self.peers.by_tag(from.0), self.locks.log()) {
            log.saw_first(p, now);
        }
        r
    }

    /// Takes this replica's own message, read back from the log, as its
    /// peers take it (`LogLocks::read_back`).
    fn read_back(&mut self, frame: Frame, size: usize) -> Result<(), ReceiveError> {
        let (Message::Sequenced { seq, body }, Some(log)) = (frame.msg, self.locks.log()) else {
            return Ok(());
        };
        let (outbox, members, events) = (&self.out.outbox, &self.members, &mut self.out.events);
        let mut read = |seq, ops, size| log.read_back(seq, ops, size, outbox, members, events);
        let r = match body {
            // A run is its messages one after another, as a peer takes it.
            Sequenced::Run { messages } => {
                let n = messages.len() as u64;
                if n == 0 || seq.checked_add(n - 1).is_none() {
                    return Err(ReceiveError::invalid(
                        frame.from.0,
                        "a run of no messages or past u64",
                    ));
                }
                let size = size / messages.len();
                (seq..)
                    .zip(messages)
                    .try_for_each(|(seq, ops)| read(seq, Some(ops), size))
            }
            Sequenced::Ops { tick, ops } => read(seq, Some((tick, ops)), size),
            _ => read(seq, None, size),
        };
        // What the log has, in order, is not kept to be carried over.
        self.out.outbox.forget_sent(log.echoed().0);
        r
    }

    /// Peers silent past the lease in the log lose their locks and their
    /// membership, at the same log position on every replica.
    fn expire(&mut self, now: Duration) {
        let Some(log) = self.locks.log() else {
            return;
        };
        for p in log.expired(now, &self.members) {
            if p == PeerIdx::SELF {
                // Our own lease ran out in the log: whatever we wrote after
                // it is refused everywhere.
                self.evicted();
            } else {
                self.depart(p);
            }
            if let Some(log) = self.locks.log() {
                log.regrant(&mut self.out.events);
            }
        }
    }

    /// A peer table for a new incarnation `me` taking this replica's place:
    /// every other peer keeps its index, this one's identity comes last.
    fn successor_peers(&self, me: &PeerId) -> (Peers, Succession) {
        let mut peers = Peers::new(me.clone());
        for (_, p) in self.peers.iter().skip(1) {
            let _ = peers.intern(p);
        }
        let previous = match peers.intern(&self.me) {
            Ok(p) | Err(p) => p,
        };
        let succession = Succession {
            boundary: self.out.outbox.clock(),
            previous,
        };
        (peers, succession)
    }

    fn load_exported(mut r: Replica, bytes: &[u8]) -> Result<Replica, ReceiveError> {
        let t = transfer::decode_saved_bytes(bytes, &r.transfer_target())?;
        let from = t.from;
        let departed = r.commit_transfer(t, None);
        if let Some(saved) = r.peers.by_tag(from.0) {
            r.locks.drop_saved_requests(saved);
        }
        r.out.events.clear();
        r.out.events.push(Event::Ready);
        if departed {
            // An identity the document evicted: a new one must be picked.
            r.evicted();
        }
        Ok(r)
    }

    /// What a state transfer of this replica reads (its maps sorted first).
    fn transfer_source(&self) -> Source<'_> {
        Source {
            peers: &self.peers,
            streams: &self.streams,
            outbox: &self.out.outbox,
            graph: self.doc.graph(),
            members: &self.members,
            gc: self.doc.gc(),
            locks: &self.locks,
            serve: &self.serve,
        }
    }

    fn transfer_target(&self) -> Target<'_> {
        Target {
            peers: &self.peers,
            me: self.tag(),
            mark: self.doc.mark(),
        }
    }

    /// Replaces this replica's document and what goes with it by a
    /// validated transferred state, reporting what that changed in the
    /// objects of the document `before` (the one a sync dropped) that are
    /// still there. Returns whether the state counts this replica among
    /// the departed: its peers evicted it, and the eviction in their
    /// streams is covered by the state, never to be read here.
    #[must_use]
    fn commit_transfer(&mut self, t: Transferred, before: Option<Before>) -> bool {
        for id in &t.fresh {
            let _ = self.peers.intern(id);
        }
        self.out.outbox.observe(t.max_counter);
        let old_root = self.doc.load(t.graph, t.unreachable, t.garbage, t.acks);
        self.streams.load(t.streams);
        let departed = t.departed.contains(&PeerIdx::SELF);
        for d in t.departed {
            self.members.depart_quietly(d);
        }
        for m in t.members {
            self.members.admit_quietly(m);
        }
        self.locks.load(t.queues, t.last_token, t.log);
        self.serve.load(t.syncing, t.waits, &self.peers);
        let origin = Origin::Remote(self.peers.get(t.origin).clone());
        if let Some(before) = before.filter(|_| self.out.events.recording()) {
            let rename = |o: ObjectId| before.successions.iter().fold(o, |o, s| o.after(s));
            for change in self.doc.changes_since(&before.graph, rename, &origin) {
                self.out.events.change(|| change);
            }
        }
        let new_root = self.doc.root();
        if !old_root.same(new_root) {
            let new_root = new_root.clone();
            self.out.events.root_changed(old_root, new_root, origin);
        }
        departed
    }
}

/// Inspection for tests and the simulation harness.
#[cfg(feature = "sim")]
impl Replica {
    /// Panics if an internal invariant is broken: a reference from the
    /// reachable document to an absent object, or an incoherent list.
    pub fn check_invariants(&self) {
        self.doc.check_invariants();
    }

    /// The global names of an array's elements, in order.
    pub fn element_names(&self, obj: ObjectId) -> Vec<crate::sim::ElemName> {
        self.doc
            .element_ids(obj)
            .into_iter()
            .map(|e| (self.peers.get(e.peer).clone(), e.counter))
            .collect()
    }

    /// Objects reachable from the root, in canonical order.
    pub fn reachable_objects(&mut self) -> Vec<ObjectId> {
        self.doc.reachable_objects()
    }

    /// Map tombstones and dead list slots held.
    pub fn hidden_count(&self) -> usize {
        self.doc.hidden_count()
    }

    /// A readable rendering of the lock state, for failure messages.
    pub fn debug_locks(&self) -> String {
        let heard: Vec<_> = self
            .members
            .iter()
            .map(|m| (m, self.streams.lamport_of(m, &self.peers)))
            .collect();
        format!(
            "{}\n{}\nheard {heard:?}",
            self.locks.debug(),
            self.members.debug()
        )
    }

    /// A readable rendering of the reclamation state, for failure messages.
    pub fn debug_gc(&self) -> String {
        format!(
            "streams {:#?}\nfrontier {:?}\n{}\npeers {:?}",
            self.streams.debug(),
            gc::frontier(&self.streams, self.out.outbox.sent_lamport()),
            self.doc.debug(),
            self.peers.iter().collect::<Vec<_>>()
        )
    }

    /// A readable rendering of the document, for failure messages.
    pub fn debug_dump(&mut self) -> String {
        self.doc.debug_dump(&self.peers)
    }
}

/// Internals the unit tests of other modules reach.
#[cfg(test)]
impl Replica {
    /// The answer to a sync fetch from `to`, encoded.
    pub(crate) fn sync_answer(&mut self, to: Tag, format: codec::WireFormat) -> Vec<u8> {
        self.doc.sort_maps();
        let state = transfer::view(self.transfer_source());
        codec::encode(&wire::answer_frame(self.tag(), to, &state), format)
    }

    /// How many peers the outbox keeps a record of resends for.
    pub(crate) fn resent_records(&self) -> usize {
        self.out.outbox.resent_records()
    }

    /// Loads a transferred state as a sync answer from its first peer.
    pub(crate) fn load_answer(&mut self, state: wire::TransferState) -> Result<(), ReceiveError> {
        let from = state.peers[0].0;
        let t = transfer::decode_answer(from, state, &self.transfer_target())?;
        if self.commit_transfer(t, None) {
            self.evicted();
        }
        Ok(())
    }
}
