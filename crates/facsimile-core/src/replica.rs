//! The replica: one participant's copy of a document, with no IO.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use smol_str::SmolStr;

use crate::clock::Peers;
use crate::codec::{self, WireFormat};
use crate::error::Error;
use crate::gc::Gc;
use crate::graph::list::ListObj;
use crate::graph::map::MapObj;
use crate::graph::{Graph, Obj, ObjData};
use crate::op::Op;
use crate::resend::ResendLog;
use crate::value::{Id, Input, ObjectId, ObjectKind, PeerId, PeerIdx, Prop, Value};
use crate::wire::{Body, Frame, Tag, WireId, WireOp, WireOrigin, WireValue};

/// Settings of a [`Replica`].
#[derive(Clone, Debug)]
pub struct Config {
    pub(crate) format: WireFormat,
    pub(crate) max_message: usize,
    pub(crate) max_backlog: usize,
    pub(crate) resend_log: usize,
    pub(crate) gc_interval: Duration,
    pub(crate) sync_timeout: Duration,
    pub(crate) heartbeat: Duration,
    pub(crate) peer_timeout: Option<Duration>,
    pub(crate) lease: Option<Duration>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            format: WireFormat::Binary,
            max_message: 64 << 20,
            max_backlog: 256 << 20,
            resend_log: 4096,
            gc_interval: Duration::from_secs(1),
            sync_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(1),
            peer_timeout: None,
            lease: None,
        }
    }
}

impl Config {
    /// Encoding of outgoing messages (incoming ones are recognised either
    /// way).
    ///
    /// ```
    /// use facsimile_core::{Config, WireFormat};
    /// let config = Config::default().wire_format(WireFormat::Json);
    /// ```
    pub fn wire_format(mut self, format: WireFormat) -> Self {
        self.format = format;
        self
    }

    /// Largest message accepted, in bytes (default 64 MiB). Larger input is
    /// refused with [`ReceiveError::TooLarge`].
    ///
    /// ```
    /// let config = facsimile_core::Config::default().max_message_size(1 << 20);
    /// ```
    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message = bytes;
        self
    }

    /// Most bytes of messages held back while waiting for a sync or for a
    /// missing predecessor (default 256 MiB).
    ///
    /// ```
    /// let config = facsimile_core::Config::default().max_backlog(16 << 20);
    /// ```
    pub fn max_backlog(mut self, bytes: usize) -> Self {
        self.max_backlog = bytes;
        self
    }

    /// How many of its own recent messages a replica keeps to resend to a
    /// peer that missed them (default 4096).
    ///
    /// ```
    /// let config = facsimile_core::Config::default().resend_log(128);
    /// ```
    pub fn resend_log(mut self, messages: usize) -> Self {
        self.resend_log = messages;
        self
    }

    /// How often unreachable objects are looked for and acknowledgements
    /// sent (default one second).
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = facsimile_core::Config::default().gc_interval(Duration::from_millis(200));
    /// ```
    pub fn gc_interval(mut self, interval: Duration) -> Self {
        self.gc_interval = interval;
        self
    }

    /// How long a joiner waits for the chosen peer's answer before asking
    /// another (default five seconds).
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = facsimile_core::Config::default().sync_timeout(Duration::from_secs(1));
    /// ```
    pub fn sync_timeout(mut self, timeout: Duration) -> Self {
        self.sync_timeout = timeout;
        self
    }

    /// Detects silent peers: send a heartbeat when nothing was sent for
    /// `heartbeat`, and evict a member not heard from for `timeout` (its
    /// locks are freed and it is no longer waited for). Off by default, since
    /// it needs [`Replica::handle_timeout`] to be called regularly.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = facsimile_core::Config::default()
    ///     .failure_detection(Duration::from_millis(500), Duration::from_secs(5));
    /// ```
    pub fn failure_detection(mut self, heartbeat: Duration, timeout: Duration) -> Self {
        self.heartbeat = heartbeat;
        self.peer_timeout = Some(timeout);
        self
    }

    /// Runs over a totally ordered log ([`Replica::handle_ordered`]): locks
    /// are granted by log order with the log position as fencing token, and
    /// a peer whose last message in the log is older than `lease` (by the
    /// log's timestamps) loses its locks and membership. Heartbeats go out
    /// every third of the lease.
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = facsimile_core::Config::default().ordered(Duration::from_secs(3));
    /// ```
    pub fn ordered(mut self, lease: Duration) -> Self {
        self.lease = Some(lease);
        self.heartbeat = lease / 3;
        self
    }
}

/// Where a change came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// This replica's own write.
    Local,
    /// A write received from this peer.
    Remote(PeerId),
}

/// One effective change to one object.
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    /// The changed object.
    pub object: ObjectId,
    /// The changed key or index; `None` when a method changed the object as
    /// a whole (an array method, a batch of element writes).
    pub prop: Option<Prop>,
    /// The value before, where there was one.
    pub old: Option<Value>,
    /// The value after, where there is one.
    pub new: Option<Value>,
    /// Who made the change.
    pub origin: Origin,
}

/// Something the program may want to react to, pulled with
/// [`Replica::poll_event`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// An object changed.
    Change(Change),
    /// The root was replaced.
    RootChanged {
        /// The root before.
        old: Value,
        /// The root now.
        new: Value,
        /// Who replaced it.
        origin: Origin,
    },
    /// A sync completed: the document is complete and every reference
    /// reachable from the root is resolved.
    Ready,
    /// A peer announced itself.
    PeerJoined(PeerId),
    /// A peer said goodbye.
    PeerLeft(PeerId),
    /// The replica lost track of a peer's stream and cannot recover by
    /// retransmission; call [`Replica::sync`]. Over an ordered log: a write
    /// of this replica raced a lock grant and the log refused it; leave and
    /// start over from [`Replica::log_snapshot`].
    NeedsSync,
    /// A lock was granted, released or lost.
    Lock(crate::locks::LockEvent),
    /// The peers evicted this replica (it was silent too long): its locks
    /// are lost and they no longer wait for it. Rejoin with
    /// [`Replica::reincarnate`].
    Evicted,
}

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

/// Per-sender stream state.
#[derive(Debug, Default)]
pub(crate) struct Stream {
    pub(crate) peer: Option<PeerIdx>,
    pub(crate) next_seq: u64,
    /// The sender's last counter applied here.
    pub(crate) lamport: u64,
    /// The sender's dictionary: wire peer index to local peer.
    pub(crate) dict: Vec<PeerIdx>,
    /// Messages that arrived ahead of a gap.
    pub(crate) held: BTreeMap<u64, (Frame, usize)>,
    pub(crate) resend_asked: bool,
}

pub(crate) enum Phase {
    Live,
    Syncing(SyncState),
}

pub(crate) struct SyncState {
    pub(crate) offers: VecDeque<Tag>,
    pub(crate) fetching: Option<(Tag, Duration)>,
    pub(crate) backlog: Vec<(Frame, usize)>,
    pub(crate) backlog_bytes: usize,
    pub(crate) request_deadline: Duration,
}

/// The outgoing stream under construction.
#[derive(Default)]
pub(crate) struct Outbox {
    pub(crate) seq: u64,
    pub(crate) dict: FxHashMap<PeerIdx, u32>,
    pub(crate) ops: Vec<WireOp>,
    pub(crate) lamport: Option<u64>,
    pub(crate) depth: u32,
    pub(crate) queue: VecDeque<Transmit>,
    pub(crate) log: ResendLog,
    /// Encoding buffer, reused between messages.
    pub(crate) scratch: Vec<u8>,
}

/// Lists touched by one message or one local call, for mass change events.
#[derive(Default)]
pub(crate) struct Touched {
    pub(crate) lists: Vec<(Id, TouchKind)>,
}

pub(crate) enum TouchKind {
    /// A single element set; carries what a property event needs.
    Set {
        elem: Id,
        old: Value,
    },
    Mass,
}

/// One participant's copy of a document: applies local writes, turns them
/// into messages, applies messages from peers, and reports changes. It does
/// no IO, reads no clock and spawns nothing.
///
/// # Driving a replica
/// - Inputs: local reads and writes (`map_set`, `list_splice`, ...), incoming
///   bytes ([`Replica::handle_message`]) and the passage of time
///   ([`Replica::handle_timeout`]).
/// - Outputs, to poll after every input, in this order:
///   [`Replica::poll_transmit`] until `None` (send them in order),
///   [`Replica::poll_event`] until `None`, then [`Replica::poll_timeout`] to
///   learn when to call `handle_timeout` next.
///
/// # Example
/// ```
/// use facsimile_core::{Config, Input, PeerId, Replica};
/// use std::time::Duration;
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
    pub(crate) me: PeerId,
    pub(crate) config: Config,
    pub(crate) peers: Peers,
    pub(crate) graph: Graph,
    pub(crate) clock: u64,
    pub(crate) streams: FxHashMap<u32, Stream>,
    pub(crate) out: Outbox,
    pub(crate) pending: FxHashMap<Id, Vec<(PeerIdx, Op)>>,
    pub(crate) pending_count: usize,
    /// Ranges of ids that parked operations will create: `(peer, first, len)`.
    pub(crate) pending_creates: Vec<(PeerIdx, u64, u64)>,
    pub(crate) woken: VecDeque<(PeerIdx, Op)>,
    /// Bytes of messages held behind stream gaps.
    pub(crate) held_bytes: usize,
    /// The last counter of this replica's last sent message.
    pub(crate) sent_lamport: u64,
    /// Peers waiting for a sync answer (see `answer_fetches`).
    pub(crate) deferred_fetches: Vec<Tag>,
    /// Members whose sync request was seen and whose sync has not completed:
    /// they hold nothing a snapshot must cover.
    pub(crate) syncing_peers: rustc_hash::FxHashSet<PeerIdx>,
    /// For each joiner, the members it was requested among (their offers are
    /// awaited before answering it).
    pub(crate) offer_wait: FxHashMap<u32, Vec<PeerIdx>>,
    /// For each joiner, the peers whose offer to it was applied here.
    pub(crate) offers_seen: FxHashMap<u32, rustc_hash::FxHashSet<u32>>,
    pub(crate) events: VecDeque<Event>,
    pub(crate) phase: Phase,
    pub(crate) gc: Gc,
    pub(crate) locks: crate::locks::Locks,
    pub(crate) log: crate::ordered::LogState,
    pub(crate) now: Duration,
    pub(crate) touched: Touched,
    /// The translated operations of the message being applied; kept for
    /// its capacity.
    pub(crate) op_buf: Vec<crate::op::Op>,
    /// Whether change events are recorded (nobody may be listening).
    pub(crate) record_changes: bool,
}

impl Replica {
    /// Creates an empty replica (root `Null`) that announces itself to its
    /// peers with its first transmit.
    pub fn new(me: PeerId, config: Config) -> Self {
        let mut r = Replica {
            peers: Peers::new(me.clone()),
            me,
            config,
            graph: Graph::default(),
            clock: 0,
            streams: FxHashMap::default(),
            out: Outbox::default(),
            pending: FxHashMap::default(),
            pending_count: 0,
            pending_creates: Vec::new(),
            woken: VecDeque::new(),
            held_bytes: 0,
            sent_lamport: 0,
            deferred_fetches: Vec::new(),
            offers_seen: FxHashMap::default(),
            offer_wait: FxHashMap::default(),
            syncing_peers: Default::default(),
            events: VecDeque::new(),
            phase: Phase::Live,
            gc: Gc::default(),
            locks: crate::locks::Locks::default(),
            log: crate::ordered::LogState::default(),
            now: Duration::ZERO,
            touched: Touched::default(),
            op_buf: Vec::new(),
            record_changes: true,
        };
        let hostname = SmolStr::from(r.me.hostname());
        r.send_sequenced(|seq| Body::Hello { seq, hostname });
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

    /// The peer id of a replica's peer index, for ids this replica minted.
    pub(crate) fn tag(&self) -> Tag {
        Tag(self.me.incarnation())
    }

    /// Whether the document is complete (no sync in progress).
    pub fn is_ready(&self) -> bool {
        matches!(self.phase, Phase::Live)
    }

    /// Peers known to be participating (announced and not departed).
    pub fn members(&self) -> Vec<PeerId> {
        let mut m: Vec<PeerId> = self
            .gc
            .members
            .iter()
            .map(|&p| self.peers.get(p).clone())
            .collect();
        m.sort();
        m
    }

    // ---------------------------------------------------------------- reads

    /// The root value.
    pub fn root(&self) -> Value {
        self.graph.root.clone()
    }

    /// The kind of an object, if it is present.
    pub fn kind(&self, obj: ObjectId) -> Option<ObjectKind> {
        self.graph.get(obj.0).map(Obj::kind)
    }

    /// The creator and counter of an object, which name it on every replica.
    pub fn object_origin(&self, obj: ObjectId) -> (PeerId, u64) {
        (self.peers.get(obj.0.peer).clone(), obj.0.counter)
    }

    pub(crate) fn map(&self, obj: ObjectId) -> Result<&MapObj, Error> {
        match self.graph.get(obj.0).map(|o| &o.data) {
            Some(ObjData::Map(m)) => Ok(m),
            Some(ObjData::List(_)) => Err(Error::WrongKind {
                object: obj,
                expected: ObjectKind::Map,
                found: ObjectKind::Array,
            }),
            None => Err(Error::UnknownObject(obj)),
        }
    }

    pub(crate) fn list(&self, obj: ObjectId) -> Result<&ListObj, Error> {
        match self.graph.get(obj.0).map(|o| &o.data) {
            Some(ObjData::List(l)) => Ok(l),
            Some(ObjData::Map(_)) => Err(Error::WrongKind {
                object: obj,
                expected: ObjectKind::Array,
                found: ObjectKind::Map,
            }),
            None => Err(Error::UnknownObject(obj)),
        }
    }

    /// The value of a map key.
    ///
    /// # Errors
    /// [`Error::UnknownObject`] or [`Error::WrongKind`] when `obj` is not a
    /// map here.
    pub fn map_get(&self, obj: ObjectId, key: &str) -> Result<Option<Value>, Error> {
        Ok(self.map(obj)?.get(key).cloned())
    }

    /// Number of keys of a map.
    ///
    /// # Errors
    /// As [`Replica::map_get`].
    pub fn map_len(&self, obj: ObjectId) -> Result<usize, Error> {
        Ok(self.map(obj)?.len())
    }

    /// The entries of a map, in key order.
    ///
    /// # Errors
    /// As [`Replica::map_get`].
    pub fn map_entries(&mut self, obj: ObjectId) -> Result<Vec<(SmolStr, Value)>, Error> {
        let mut out = Vec::with_capacity(self.map_len(obj)?);
        self.map_for_each(obj, |k, v, _| out.push((k.clone(), v.clone())))?;
        Ok(out)
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
        if let Some(ObjData::Map(m)) = self.graph.get_mut(obj.0).map(|o| &mut o.data) {
            m.sort();
        }
        let this = &*self;
        for (k, v) in this.map(obj)?.iter() {
            f(k, v, this);
        }
        Ok(())
    }

    /// The keys of a map, in key order.
    ///
    /// # Errors
    /// As [`Replica::map_get`].
    pub fn map_keys(&mut self, obj: ObjectId) -> Result<Vec<SmolStr>, Error> {
        Ok(self.map_entries(obj)?.into_iter().map(|(k, _)| k).collect())
    }

    /// Length of an array.
    ///
    /// # Errors
    /// [`Error::UnknownObject`] or [`Error::WrongKind`] when `obj` is not an
    /// array here.
    pub fn list_len(&self, obj: ObjectId) -> Result<usize, Error> {
        Ok(self.list(obj)?.len())
    }

    /// The element at `index`, if any.
    ///
    /// # Errors
    /// As [`Replica::list_len`].
    pub fn list_get(&self, obj: ObjectId, index: usize) -> Result<Option<Value>, Error> {
        Ok(self.list(obj)?.get(index).cloned())
    }

    /// A number that changes whenever the array changes, to detect a change
    /// between a read and a write.
    ///
    /// # Errors
    /// As [`Replica::list_len`].
    pub fn list_version(&self, obj: ObjectId) -> Result<u64, Error> {
        Ok(self.list(obj)?.version())
    }

    /// All elements of an array, in order.
    ///
    /// # Errors
    /// As [`Replica::list_len`].
    pub fn list_values(&self, obj: ObjectId) -> Result<Vec<Value>, Error> {
        Ok(self.list(obj)?.values().cloned().collect())
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
        for v in self.list(obj)?.values() {
            f(v, self);
        }
        Ok(())
    }

    // --------------------------------------------------------------- writes

    /// Groups the writes that follow, until the matching
    /// [`Replica::commit`], into one message. Calls nest.
    pub fn begin(&mut self) {
        self.out.depth += 1;
    }

    /// Ends a group opened by [`Replica::begin`]; the outermost one queues
    /// the message.
    pub fn commit(&mut self) {
        self.out.depth = self.out.depth.saturating_sub(1);
        if self.out.depth == 0 {
            self.flush();
        }
    }

    pub(crate) fn writable_now(&self) -> Result<(), Error> {
        self.writable()
    }

    fn writable(&self) -> Result<(), Error> {
        match self.phase {
            Phase::Live => Ok(()),
            Phase::Syncing(_) => Err(Error::Syncing),
        }
    }

    pub(crate) fn tick(&mut self) -> Id {
        self.clock += 1;
        if self.out.lamport.is_none() {
            self.out.lamport = Some(self.clock);
        }
        Id::new(PeerIdx::SELF, self.clock)
    }

    /// Checks that every existing object an input references may be
    /// referenced: it is present, and it has not been unreachable since this
    /// replica last acknowledged its state (see `gc`).
    fn check_input(&mut self, input: &Input) -> Result<(), Error> {
        match input {
            Input::Value(Value::Ref(o)) => self.check_ref(*o),
            Input::Value(_) => Ok(()),
            Input::Map(entries) => entries.iter().try_for_each(|(_, v)| self.check_input(v)),
            Input::Array(items) => items.iter().try_for_each(|v| self.check_input(v)),
        }
    }

    fn check_ref(&mut self, o: ObjectId) -> Result<(), Error> {
        match self.graph.get(o.0) {
            None => Err(Error::UnknownObject(o)),
            Some(obj) if obj.mark == self.gc.mark => Ok(()),
            Some(_) => {
                if self.gc.reachable_now(&self.graph, o.0) {
                    Ok(())
                } else {
                    Err(Error::Detached(o))
                }
            }
        }
    }

    /// Objects a local write just created hang under `target` (`None`: the
    /// root). They are reachable if `target` is known to be (marked at the
    /// latest mark, nothing detached since), which spares the next pass a
    /// mark; otherwise the next pass marks.
    fn created_under(&mut self, target: Option<Id>) {
        if !std::mem::take(&mut self.gc.fresh) {
            return;
        }
        let mark = self.gc.mark;
        let known = !self.gc.dirty
            && target.is_none_or(|t| self.graph.get(t).is_some_and(|o| o.mark == mark));
        self.gc.dirty |= !known;
    }

    /// Creates the objects of an input tree (children first) and returns the
    /// value to store.
    fn materialize(&mut self, input: Input) -> (Value, WireValue) {
        // The write that stores what this creates settles it for
        // reclamation (`created_under`).
        self.gc.fresh |= !matches!(input, Input::Value(_));
        match input {
            Input::Value(v) => {
                let w = self.wire_value(&v);
                (v, w)
            }
            Input::Map(entries) => {
                // A one-entry map (common in object graphs) allocates only
                // its own storage.
                let mut values: SmallVec<[_; 1]> = SmallVec::with_capacity(entries.len());
                let mut wire = SmallVec::with_capacity(entries.len());
                for (k, v) in entries {
                    let (v, w) = self.materialize(v);
                    values.push((k.clone(), v));
                    wire.push((k, w));
                }
                let id = self.tick();
                let mut map = MapObj::with_capacity(values.len());
                for (k, v) in values {
                    map.apply(&k, Some(v), id, &self.peers);
                }
                self.insert_object(id, ObjData::Map(map));
                self.out.ops.push(WireOp::NewMap { entries: wire });
                let o = ObjectId(id);
                (Value::Ref(o), WireValue::Ref(self.wire_id(id)))
            }
            Input::Array(items) => {
                let mut values = Vec::with_capacity(items.len());
                let mut wire = Vec::with_capacity(items.len());
                for v in items {
                    let (v, w) = self.materialize(v);
                    values.push(v);
                    wire.push(w);
                }
                let id = self.tick();
                let n = values.len() as u64;
                self.clock += n;
                let mut list = ListObj::default();
                list.insert(
                    None,
                    Id::new(PeerIdx::SELF, id.counter + 1),
                    values,
                    &self.peers,
                );
                self.insert_object(id, ObjData::List(Box::new(list)));
                self.out.ops.push(WireOp::NewArray { values: wire });
                (Value::Ref(ObjectId(id)), WireValue::Ref(self.wire_id(id)))
            }
        }
    }

    pub(crate) fn insert_object(&mut self, id: Id, data: ObjData) {
        self.graph.objects.insert(
            id,
            Obj {
                data,
                mark: self.gc.mark,
            },
        );
    }

    /// Replaces the root. Returns the new root object when `input` creates
    /// one.
    ///
    /// # Errors
    /// [`Error::Syncing`] during a sync; [`Error::UnknownObject`] or
    /// [`Error::Detached`] for a reference that cannot be stored.
    pub fn set_root(&mut self, input: Input) -> Result<Option<ObjectId>, Error> {
        self.writable()?;
        self.check_input(&input)?;
        if let Input::Value(v) = &input {
            if v.same(&self.graph.root) {
                return Ok(v.as_ref_id());
            }
        }
        self.begin();
        let (value, wire) = self.materialize(input);
        self.created_under(None);
        let stamp = self.tick();
        self.out.ops.push(WireOp::Root { value: wire });
        let old = std::mem::replace(&mut self.graph.root, value.clone());
        self.graph.root_stamp = stamp;
        self.gc.note_detach(&old);
        if self.record_changes {
            self.events.push_back(Event::RootChanged {
                old,
                new: value.clone(),
                origin: Origin::Local,
            });
        }
        self.commit();
        Ok(value.as_ref_id())
    }

    /// Sets a map key. Returns whether anything changed (writing the value
    /// already there sends nothing).
    ///
    /// # Errors
    /// [`Error::Syncing`], [`Error::UnknownObject`], [`Error::WrongKind`],
    /// [`Error::Detached`].
    pub fn map_set(&mut self, obj: ObjectId, key: &str, input: Input) -> Result<bool, Error> {
        self.writable()?;
        let current = self.map(obj)?.get(key);
        self.check_owner(obj.0, false)?;
        if let (Input::Value(v), Some(cur)) = (&input, current) {
            if v.same(cur) {
                return Ok(false);
            }
        }
        self.check_input(&input)?;
        self.begin();
        let (value, wire) = self.materialize(input);
        self.created_under(Some(obj.0));
        let stamp = self.tick();
        let key = SmolStr::from(key);
        let wobj = self.wire_id(obj.0);
        self.out.ops.push(WireOp::MapSet {
            obj: wobj,
            key: key.clone(),
            value: wire,
        });
        self.apply_map_write(obj.0, key, Some(value), stamp, Origin::Local);
        self.commit();
        Ok(true)
    }

    /// Deletes a map key. Returns the value it held.
    ///
    /// # Errors
    /// [`Error::Syncing`], [`Error::UnknownObject`], [`Error::WrongKind`].
    pub fn map_delete(&mut self, obj: ObjectId, key: &str) -> Result<Option<Value>, Error> {
        self.writable()?;
        let Some(old) = self.map(obj)?.get(key).cloned() else {
            return Ok(None);
        };
        self.check_owner(obj.0, false)?;
        self.begin();
        let stamp = self.tick();
        let key = SmolStr::from(key);
        let wobj = self.wire_id(obj.0);
        self.out.ops.push(WireOp::MapDelete {
            obj: wobj,
            key: key.clone(),
        });
        self.apply_map_write(obj.0, key, None, stamp, Origin::Local);
        self.commit();
        Ok(Some(old))
    }

    /// Applies a map write that has passed every check, recording the change.
    pub(crate) fn apply_map_write(
        &mut self,
        obj: Id,
        key: SmolStr,
        value: Option<Value>,
        stamp: Id,
        origin: Origin,
    ) {
        let Some(Obj {
            data: ObjData::Map(m),
            ..
        }) = self.graph.objects.get_mut(&obj)
        else {
            return;
        };
        // A delete leaves a tombstone.
        self.gc.garbage |= value.is_none();
        if let Some(change) = m.apply(&key, value, stamp, &self.peers) {
            if let Some(old) = &change.old {
                self.gc.note_detach(old);
            }
            if !self.record_changes {
                return;
            }
            self.events.push_back(Event::Change(Change {
                object: ObjectId(obj),
                prop: Some(Prop::Key(key)),
                old: change.old,
                new: change.new,
                origin,
            }));
        }
    }

    /// Removes `delete` elements from `start` and inserts `items` there, as
    /// JavaScript's `splice`. Returns the removed values.
    ///
    /// # Errors
    /// [`Error::IndexOutOfBounds`] when `start` is past the end, and the
    /// errors of [`Replica::map_set`].
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
        let len = self.list(obj)?.len();
        self.check_owner(obj.0, true)?;
        if start > len {
            return Err(Error::IndexOutOfBounds {
                object: obj,
                index: start,
                len,
            });
        }
        for item in &items {
            self.check_input(item)?;
        }
        let delete = delete.min(len - start);
        if delete == 0 && items.is_empty() {
            return Ok(Vec::new());
        }
        self.begin();
        let wobj = self.wire_id(obj.0);
        let mut removed = Vec::with_capacity(delete);
        if delete > 0 {
            let list = self.list(obj)?;
            let elems: Vec<Id> = (start..start + delete).map(|i| list.elem_at(i)).collect();
            let runs = self.wire_runs(&elems);
            self.out.ops.push(WireOp::ListDelete { obj: wobj, runs });
            let list = self.list_mut(obj.0);
            for e in elems {
                if let Some((v, _)) = list.delete(e) {
                    removed.push(v);
                }
            }
            for v in &removed {
                self.gc.note_detach(v);
            }
            self.gc.garbage = true;
        }
        if !items.is_empty() {
            let n = items.len();
            let mut items = items.into_iter();
            // One item (a push, a typed character) needs no vectors.
            let single = match n {
                1 => items.next().map(|i| self.materialize(i)),
                _ => None,
            };
            let (values, wire): (Vec<Value>, Vec<WireValue>) = match single {
                Some(_) => Default::default(),
                None => items.map(|i| self.materialize(i)).unzip(),
            };
            self.created_under(Some(obj.0));
            let origin = (start > 0).then(|| self.list(obj).expect("checked").slot_at(start - 1));
            let first = self.tick();
            self.clock += n as u64 - 1;
            let worigin = match origin {
                None => WireOrigin::Head,
                Some(o) if o.peer == PeerIdx::SELF && o.counter < first.counter => {
                    WireOrigin::Back(first.counter - o.counter)
                }
                Some(o) => WireOrigin::Id(self.wire_id(o)),
            };
            let (op, one) = match (single, worigin) {
                (Some((v, value)), WireOrigin::Back(1)) => {
                    (WireOp::Append { obj: wobj, value }, Some(v))
                }
                (Some((v, w)), origin) => (
                    WireOp::ListInsert {
                        obj: wobj,
                        origin,
                        values: vec![w],
                    },
                    Some(v),
                ),
                (None, origin) => (
                    WireOp::ListInsert {
                        obj: wobj,
                        origin,
                        values: wire,
                    },
                    None,
                ),
            };
            self.out.ops.push(op);
            let peers = &self.peers;
            if let Some(ObjData::List(l)) = self.graph.get_mut(obj.0).map(|o| &mut o.data) {
                match one {
                    Some(v) => l.insert(origin, first, std::iter::once(v), peers),
                    None => l.insert(origin, first, values, peers),
                }
            }
        }
        self.touch(obj.0, TouchKind::Mass);
        self.commit();
        Ok(removed)
    }

    /// Sets the element at `index`. Setting at `index == len` appends, and
    /// past the end pads with `Null` first. Returns whether anything changed.
    ///
    /// # Errors
    /// As [`Replica::map_set`].
    pub fn list_set(&mut self, obj: ObjectId, index: usize, input: Input) -> Result<bool, Error> {
        self.writable()?;
        let len = self.list(obj)?.len();
        self.check_owner(obj.0, true)?;
        if index >= len {
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
    /// errors of [`Replica::map_set`].
    pub fn list_set_many(
        &mut self,
        obj: ObjectId,
        writes: Vec<(usize, Input)>,
    ) -> Result<usize, Error> {
        self.writable()?;
        let list = self.list(obj)?;
        self.check_owner(obj.0, true)?;
        let len = list.len();
        let mut effective = Vec::with_capacity(writes.len());
        for (index, input) in writes {
            if index >= len {
                return Err(Error::IndexOutOfBounds {
                    object: obj,
                    index,
                    len,
                });
            }
            let elem = list.elem_at(index);
            if let Input::Value(v) = &input {
                if list.value_of(elem).is_some_and(|cur| cur.same(v)) {
                    continue;
                }
            }
            effective.push((elem, input));
        }
        for (_, input) in &effective {
            self.check_input(input)?;
        }
        if effective.is_empty() {
            return Ok(0);
        }
        self.begin();
        let wobj = self.wire_id(obj.0);
        let count = effective.len();
        for (elem, input) in effective {
            let (value, wire) = self.materialize(input);
            self.created_under(Some(obj.0));
            let stamp = self.tick();
            let welem = self.wire_id(elem);
            self.out.ops.push(WireOp::ListSet {
                obj: wobj,
                elem: welem,
                value: wire,
            });
            let peers = &self.peers;
            let list = match self.graph.get_mut(obj.0).map(|o| &mut o.data) {
                Some(ObjData::List(l)) => l,
                _ => unreachable!("checked"),
            };
            if let Some((old, _)) = list.set(elem, value, stamp, peers) {
                self.gc.note_detach(&old);
                self.touch(obj.0, TouchKind::Set { elem, old });
            }
        }
        self.commit();
        Ok(count)
    }

    /// Reorders an array: afterwards the element at `i` is the one that was
    /// at `order[i]`. Only elements outside the longest run that keeps its
    /// relative order are moved. Returns whether the order changed.
    ///
    /// # Errors
    /// [`Error::BadPermutation`] when `order` is not a permutation of
    /// `0..len`, and [`Error::Syncing`], [`Error::UnknownObject`],
    /// [`Error::WrongKind`].
    pub fn list_reorder(&mut self, obj: ObjectId, order: &[usize]) -> Result<bool, Error> {
        self.writable()?;
        let list = self.list(obj)?;
        self.check_owner(obj.0, true)?;
        let len = list.len();
        let mut seen = vec![false; len];
        if order.len() != len
            || order
                .iter()
                .any(|&i| i >= len || std::mem::replace(&mut seen[i], true))
        {
            return Err(Error::BadPermutation { object: obj, len });
        }
        if order.iter().enumerate().all(|(i, &o)| i == o) {
            return Ok(false);
        }
        let elems: Vec<Id> = list.values_ids();
        let keep = longest_increasing(order);
        self.begin();
        let wobj = self.wire_id(obj.0);
        // Walk the target order; every element not kept is moved right after
        // the element that precedes it in the target.
        let mut prev_slot: Option<Id> = None;
        for (i, &from) in order.iter().enumerate() {
            let elem = elems[from];
            if !keep[i] {
                let slot = self.tick();
                let welem = self.wire_id(elem);
                let worigin = prev_slot.map(|p| self.wire_id(p));
                self.out.ops.push(WireOp::ListMove {
                    obj: wobj,
                    elem: welem,
                    origin: worigin,
                });
                let peers = &self.peers;
                let list = match self.graph.get_mut(obj.0).map(|o| &mut o.data) {
                    Some(ObjData::List(l)) => l,
                    _ => unreachable!("checked"),
                };
                list.move_elem(elem, prev_slot, slot, peers);
                self.gc.garbage = true;
            }
            prev_slot = self.list(obj).expect("checked").position_of(elem);
        }
        self.touch(obj.0, TouchKind::Mass);
        self.commit();
        Ok(true)
    }

    fn list_mut(&mut self, obj: Id) -> &mut ListObj {
        match self.graph.get_mut(obj).map(|o| &mut o.data) {
            Some(ObjData::List(l)) => l,
            _ => unreachable!("caller checked the kind"),
        }
    }

    #[inline]
    pub(crate) fn touch(&mut self, list: Id, kind: TouchKind) {
        if !self.record_changes {
            return;
        }
        match self.touched.lists.iter_mut().find(|(l, _)| *l == list) {
            Some((_, k)) => *k = TouchKind::Mass,
            None => self.touched.lists.push((list, kind)),
        }
    }

    /// Turns the lists touched since the last call into change events.
    pub(crate) fn flush_touched(&mut self, origin: &Origin) {
        if !self.record_changes {
            self.touched.lists.clear();
            return;
        }
        // Drained through a taken buffer, which goes back for the next call.
        let mut touched = std::mem::take(&mut self.touched.lists);
        for (list, kind) in touched.drain(..) {
            let Some(ObjData::List(l)) = self.graph.get(list).map(|o| &o.data) else {
                continue;
            };
            let change = match kind {
                TouchKind::Set { elem, old } => match l.index_of(elem) {
                    Some(index) => Change {
                        object: ObjectId(list),
                        prop: Some(Prop::Index(index)),
                        old: Some(old),
                        new: l.value_of(elem).cloned(),
                        origin: origin.clone(),
                    },
                    None => continue,
                },
                TouchKind::Mass => Change {
                    object: ObjectId(list),
                    prop: None,
                    old: None,
                    new: None,
                    origin: origin.clone(),
                },
            };
            self.events.push_back(Event::Change(change));
        }
        self.touched.lists = touched;
    }

    // ------------------------------------------------------------- outgoing

    /// The wire form of an id in this replica's outgoing stream, introducing
    /// its peer first when needed.
    pub(crate) fn wire_id(&mut self, id: Id) -> WireId {
        if id.peer == PeerIdx::SELF {
            return WireId {
                p: 0,
                c: id.counter,
            };
        }
        let next = self.out.dict.len() as u32 + 1;
        let p = match self.out.dict.get(&id.peer) {
            Some(&p) => p,
            None => {
                self.out.dict.insert(id.peer, next);
                let peer = self.peers.get(id.peer);
                self.out.ops.push(WireOp::Intro {
                    tag: Tag(peer.incarnation()),
                    hostname: peer.hostname().into(),
                });
                next
            }
        };
        WireId { p, c: id.counter }
    }

    pub(crate) fn wire_value(&mut self, v: &Value) -> WireValue {
        match v {
            Value::Null => WireValue::Null,
            Value::Bool(b) => WireValue::Bool(*b),
            Value::Int(i) => WireValue::Int(*i),
            Value::Float(f) => WireValue::Float(*f),
            Value::Str(s) => WireValue::Str(s.clone()),
            Value::Bytes(b) => WireValue::Bytes(b.to_vec()),
            Value::Ref(o) => WireValue::Ref(self.wire_id(o.0)),
        }
    }

    /// Compresses element ids into runs of consecutive counters.
    fn wire_runs(&mut self, elems: &[Id]) -> Vec<(WireId, u32)> {
        let mut runs: Vec<(Id, u32)> = Vec::new();
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
        runs.into_iter()
            .map(|(s, n)| (self.wire_id(s), n))
            .collect()
    }

    /// Closes an open group of local operations, queueing its message.
    pub(crate) fn flush_pending_ops(&mut self) {
        self.out.depth = 0;
        self.flush();
    }

    /// The stream of a peer, if this replica follows it.
    pub(crate) fn peer_stream(&self, peer: PeerIdx) -> Option<&Stream> {
        self.streams.get(&self.peers.tag(peer))
    }

    /// Queues the pending operations as one message.
    fn flush(&mut self) {
        self.flush_touched(&Origin::Local);
        if self.out.ops.is_empty() {
            return;
        }
        let lamport = self.out.lamport.take().unwrap_or_else(|| {
            // A message of deletes only still takes a tick, so every message
            // moves its sender's counter forward.
            self.clock += 1;
            self.clock
        });
        let mut ops = std::mem::take(&mut self.out.ops);
        let tick = lamport - self.sent_lamport;
        self.sent_lamport = self.clock;
        self.gc.changed = true;
        if ops.len() == 1 {
            let op = ops.pop().expect("one operation");
            // Keep the operation buffer's capacity for the next message.
            self.out.ops = ops;
            self.send_sequenced(|seq| match tick {
                1 => Body::Next { seq, op },
                _ => Body::Op { seq, tick, op },
            });
            return;
        }
        // Two or more operations stay in the buffer's allocation, which
        // comes back for the next message.
        let ops = SmallVec::from_vec(ops);
        let frame = self.send_sequenced(|seq| Body::Ops { seq, tick, ops });
        if let Body::Ops { ops, .. } = frame.body {
            self.out.ops = ops.into_vec();
            self.out.ops.clear();
        }
    }

    /// Queues a sequenced message, keeping it for retransmission.
    pub(crate) fn send_sequenced(&mut self, body: impl FnOnce(u64) -> Body) -> Frame {
        self.out.seq += 1;
        let seq = self.out.seq;
        let frame = Frame {
            from: self.tag(),
            body: body(seq),
        };
        codec::encode_into(&frame, self.config.format, &mut self.out.scratch);
        let bytes: Arc<[u8]> = Arc::from(&self.out.scratch[..]);
        self.locks.last_sent = self.now;
        self.out.log.push(seq, &bytes, self.config.resend_log);
        self.out.queue.push_back(Transmit { to: None, bytes });
        frame
    }

    /// Queues a directed message.
    pub(crate) fn send_directed(&mut self, to: Tag, body: Body) {
        let frame = Frame {
            from: self.tag(),
            body,
        };
        let bytes = codec::encode(&frame, self.config.format);
        self.queue_directed(to, bytes);
    }

    /// Queues an encoded directed message.
    pub(crate) fn queue_directed(&mut self, to: Tag, bytes: Vec<u8>) {
        self.out.queue.push_back(Transmit {
            to: Some(to.0),
            bytes: bytes.into(),
        });
    }

    /// The next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.out.queue.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Turns recording of [`Event::Change`] and [`Event::RootChanged`] on or
    /// off (on by default). A program with no change listener saves the work.
    pub fn record_changes(&mut self, on: bool) {
        self.record_changes = on;
    }

    /// Whether a transmit is waiting to be polled.
    pub fn has_transmits(&self) -> bool {
        !self.out.queue.is_empty()
    }

    /// Whether an event is waiting to be polled.
    pub fn has_events(&self) -> bool {
        !self.events.is_empty()
    }

    /// Says goodbye: peers stop waiting for this replica.
    pub fn leave(&mut self) {
        self.flush();
        self.send_sequenced(|seq| Body::Goodbye { seq });
    }
}

impl ListObj {
    /// Element ids in visible order.
    pub(crate) fn values_ids(&self) -> Vec<Id> {
        self.elements().map(|(e, _, _)| e).collect()
    }
}

/// Marks the positions of `order` that form a longest strictly increasing
/// subsequence (those elements keep their relative order and need not move).
fn longest_increasing(order: &[usize]) -> Vec<bool> {
    // Patience sorting with predecessor links: O(n log n).
    let mut tails: Vec<usize> = Vec::new();
    let mut prev = vec![usize::MAX; order.len()];
    for (i, &v) in order.iter().enumerate() {
        let pos = tails.partition_point(|&t| order[t] < v);
        if pos > 0 {
            prev[i] = tails[pos - 1];
        }
        if pos == tails.len() {
            tails.push(i);
        } else {
            tails[pos] = i;
        }
    }
    let mut keep = vec![false; order.len()];
    let mut cur = tails.last().copied().unwrap_or(usize::MAX);
    while cur != usize::MAX {
        keep[cur] = true;
        cur = prev[cur];
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::longest_increasing;

    #[test]
    fn longest_increasing_keeps_a_maximal_sorted_run() {
        assert_eq!(longest_increasing(&[0, 1, 2]), vec![true, true, true]);
        assert_eq!(
            longest_increasing(&[2, 1, 0])
                .iter()
                .filter(|&&k| k)
                .count(),
            1
        );
        let keep = longest_increasing(&[3, 0, 1, 4, 2]);
        assert_eq!(keep, vec![false, true, true, false, true]);
    }
}
