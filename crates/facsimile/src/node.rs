//! The node: one participant's replica behind a lock, with its transport
//! hook and its listeners.
//!
//! Invariants: the state lock is never held while a message is handed to
//! the sender or a listener runs; both happen in the pump, one caller at a
//! time, in the order the replica produced them, so each node's messages
//! leave in send order even when listeners write (DESIGN.md, "Events").
//! Timers run on the way in, from the node's clock. Handles, locks and
//! events reach the state only through `Node`'s crate-internal methods.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, TryLockError, Weak};
use std::task::Waker;
use std::time::Duration;

use smallvec::SmallVec;

use facsimile_core::{
    CarriedOver, Config, Event as CoreEvent, LockState, ObjectId, PeerId, Replica, Succession,
    Transmit,
};

use crate::clock::Clock;
use crate::error::{Error, Result, locate};
use crate::events::{
    self, ChangeEvent, Dispatch, EventStream, Listener, RootChange, Subs, Subscription, Wakes,
};
use crate::handle::{ArrayRef, MapRef, ObjectRef};
use crate::lock::LockError;
use crate::value::{Input, Value};

/// An outgoing message: pass [`Outgoing::as_bytes`] to every other node's
/// [`Node::receive`], in the order the sender was called. When
/// [`Outgoing::to`] names a recipient only that node needs it (delivering it
/// to the others is harmless).
#[derive(Clone, Debug)]
pub struct Outgoing(pub(crate) Transmit);

impl Outgoing {
    /// The encoded message.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0.bytes
    }

    /// The encoded message, shared.
    pub fn bytes(&self) -> Arc<[u8]> {
        self.0.bytes.clone()
    }

    /// The recipient's incarnation ([`PeerId::incarnation`]) when the
    /// message is for one node.
    pub fn to(&self) -> Option<u32> {
        self.0.to
    }

    /// Whether the message is for the node whose incarnation is
    /// `incarnation` now ([`Node::incarnation_cell`]): for everyone, or
    /// for that incarnation.
    pub(crate) fn is_for(&self, incarnation: &AtomicU32) -> bool {
        self.0
            .to
            .is_none_or(|t| t == incarnation.load(Ordering::Acquire))
    }
}

pub(crate) type Sender = Arc<dyn Fn(Outgoing) + Send + Sync>;

/// A replica that is to take a node's place ([`Node::install`]).
pub(crate) struct Successor {
    replica: Replica,
    succession: Succession,
}

#[cfg(feature = "nats")]
impl Successor {
    /// As [`Node::receive_ordered`].
    pub(crate) fn receive_ordered(
        &mut self,
        bytes: &[u8],
        position: u64,
        time: Duration,
    ) -> Result<()> {
        self.replica
            .handle_ordered(bytes, position, time)
            .map_err(Error::from)
    }

    /// As [`Node::log_position`].
    pub(crate) fn log_position(&self) -> u64 {
        self.replica.log_position()
    }

    /// Takes what it has queued to send, its hello first.
    pub(crate) fn take_transmits(&mut self) -> Vec<bytes::Bytes> {
        std::iter::from_fn(|| self.replica.poll_transmit())
            .map(|t| bytes::Bytes::copy_from_slice(&t.bytes))
            .collect()
    }

    /// Says goodbye, and takes what it has queued to send, the goodbye
    /// last: a successor that will not take the node's place leaves.
    pub(crate) fn goodbye(&mut self) -> Vec<bytes::Bytes> {
        self.replica.leave();
        self.take_transmits()
    }

    /// Whether it has read its own first message back
    /// ([`Replica::joined_log`]).
    pub(crate) fn joined_log(&self) -> bool {
        self.replica.joined_log()
    }
}

pub(crate) struct State {
    replica: Replica,
    sender: Option<Sender>,
    subs: Subs,
    /// Over an ordered log: the replica must be replaced by one loaded from
    /// a log snapshot (the log refused one of its writes, or its lease ran
    /// out). The transport does it with [`Node::reload`].
    reload_wanted: bool,
    /// The reload is wanted because this node's lease ran out in the log:
    /// everything it wrote after that point was refused.
    lease_lapsed: bool,
    /// After a lapse, the old incarnation, whose refused writes the replica
    /// carries over once it has read its own first message back
    /// ([`Replica::joined_log`]), and the succession between them.
    carry: Option<(Replica, Succession)>,
    /// [`Node::leave`] was called, and no [`Node::reload`] since: a
    /// successor the transport installs leaves too (the replica it
    /// replaces may have left by then only to be replaced).
    left: bool,
}

impl State {
    /// Whether the replica must be replaced by one loaded from a log
    /// snapshot: as its events said, or as it says now, before they are
    /// pumped.
    fn reload_due(&self) -> bool {
        // A node that left stays as it left: starting it over would bring
        // back a member that said goodbye.
        !self.replica.has_left() && (self.reload_wanted || self.replica.must_reload())
    }

    /// Syncs the replica, which drops its lock requests and grants: the
    /// futures that waited on them make or join the next ones.
    fn sync(&mut self) {
        self.replica.sync();
        self.subs.dropped_locks();
    }

    /// Records change events only while somebody listens.
    pub(crate) fn sync_recording(&mut self) {
        let on = !self.subs.is_empty();
        self.replica.record_changes(on);
    }
}

/// The replica behind the node's state lock, for reads
/// ([`Node::replica`]).
pub(crate) struct ReplicaRef<'a>(MutexGuard<'a, State>);

impl std::ops::Deref for ReplicaRef<'_> {
    type Target = Replica;

    fn deref(&self) -> &Replica {
        &self.0.replica
    }
}

/// What one pump round takes out of the state: the sender, the messages
/// to send and the listener calls.
type Drained = (Option<Sender>, SmallVec<[Transmit; 2]>, Dispatch);

thread_local! {
    /// How many pumps, of any nodes, this thread holds: a listener or a
    /// sender running here runs inside them. Whatever those nodes are to
    /// send waits until their pumps are let go, so this thread must not
    /// wait meanwhile for the network or for a pump ([`Node::in_any_pump`]).
    static PUMPING: Cell<usize> = const { Cell::new(0) };
}

/// A node's pump, held by this thread: counted in [`PUMPING`] until it
/// is let go (also when a listener panics).
struct PumpGuard<'a> {
    _pump: MutexGuard<'a, ()>,
}

impl<'a> PumpGuard<'a> {
    fn new(pump: MutexGuard<'a, ()>) -> Self {
        PUMPING.with(|p| p.set(p.get() + 1));
        PumpGuard { _pump: pump }
    }
}

impl Drop for PumpGuard<'_> {
    fn drop(&mut self) {
        PUMPING.with(|p| p.set(p.get() - 1));
    }
}

/// A batch's group ([`Node::batch`]), committed when dropped: also when
/// the batch panics and the caller catches it, else the group would stay
/// open and hold back every later write of the node. The pump is left to
/// the next call then: it runs listeners, which must not run during an
/// unwind.
struct Group<'a>(&'a Node);

impl<'a> Group<'a> {
    fn open(node: &'a Node) -> Self {
        node.state().replica.begin();
        Group(node)
    }
}

impl Drop for Group<'_> {
    fn drop(&mut self) {
        self.0.state().replica.commit();
    }
}

pub(crate) struct Inner {
    pub(crate) state: Mutex<State>,
    /// Held by the one caller that sends transmits and runs callbacks, so
    /// that both happen in order and outside the state lock.
    pump: Mutex<()>,
    clock: Clock,
    peer: PeerId,
    /// The replica took new incarnations (evicted, reloaded): object ids
    /// handed out before read through these, in order, each with the
    /// objects its writes carried over created again.
    successions: RwLock<Vec<(Succession, CarriedOver)>>,
    succeeded: AtomicBool,
    /// The replica's incarnation now, for the in-process networks, which
    /// deliver a message for one incarnation only to a node that is it.
    incarnation: Arc<AtomicU32>,
}

/// One participant: a replica of the document, its transport hook and its
/// listeners. Cheap to clone (all clones are the same node), `Send + Sync`.
///
/// Writes apply at once and are handed to the sender set with
/// [`Node::set_sender`]; messages from other nodes go to
/// [`Node::receive`]. Listeners run after each change is applied, outside
/// every internal lock, so they may read and write the store.
///
/// # Example
/// ```
/// use facsimile::{LocalNetwork, Value};
/// use serde_json::json;
///
/// let net = LocalNetwork::new();
/// let a = net.join("alpha");
/// let b = net.join("bravo");
/// a.set_root(json!({"score": 1}))?;
/// let root = b.root();
/// assert_eq!(root.as_map().unwrap().get("score"), Some(Value::Int(1)));
/// # Ok::<(), facsimile::Error>(())
/// ```
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Node({:?})", self.inner.peer)
    }
}

/// A random incarnation tag that `known` does not hold: the engine tells a
/// peer's messages by its tag alone, so a new incarnation that took a tag
/// the document knows would be taken for that peer (or that peer for it).
fn fresh_tag(known: impl Fn(u32) -> bool) -> u32 {
    loop {
        let tag = drawn_tag();
        if !known(tag) {
            return tag;
        }
    }
}

/// A random incarnation tag; with the `failpoints` feature, the one a test
/// sets (`node-draw-tag`, `return(tag)`).
fn drawn_tag() -> u32 {
    #[cfg(feature = "failpoints")]
    fail::fail_point!("node-draw-tag", |tag| tag
        .and_then(|t| t.parse().ok())
        .unwrap_or_default());
    rand::random()
}

impl Node {
    /// Creates a node with an empty document (root `Null`). The hostname
    /// decides ties between concurrent writes (the higher one wins).
    ///
    /// # Panics
    /// When the hostname is longer than [`MAX_HOSTNAME`](crate::MAX_HOSTNAME)
    /// bytes: peers would refuse every message the node sends.
    pub fn new(hostname: &str) -> Node {
        Node::with_config(hostname, Config::default())
    }

    /// Creates a node with engine settings.
    ///
    /// # Panics
    /// As [`Node::new`].
    pub fn with_config(hostname: &str, config: Config) -> Node {
        Node::with_clock(hostname, config, Clock::new())
    }

    /// Creates a node whose timers read `clock` (a manual one in virtual
    /// time).
    pub(crate) fn with_clock(hostname: &str, config: Config, clock: Clock) -> Node {
        let peer = PeerId::new(hostname, drawn_tag());
        Node::from_replica(Replica::new(peer, config), clock)
    }

    /// Creates a node from a state saved with [`Node::export_state`] (by this
    /// node earlier, or by another node: a snapshot for a joiner that skips
    /// the network handshake). The node is a new incarnation, with a tag the
    /// state does not know; it is ready at once.
    ///
    /// # Errors
    /// [`Error::Receive`] when the bytes are not a valid saved state.
    ///
    /// # Panics
    /// As [`Node::new`].
    pub fn from_exported(hostname: &str, config: Config, bytes: &[u8]) -> Result<Node> {
        let known = Replica::saved_tags(bytes)?;
        let peer = PeerId::new(hostname, fresh_tag(|t| known.contains(&t)));
        let replica = Replica::from_exported(peer, config, bytes)?;
        Ok(Node::from_replica(replica, Clock::new()))
    }

    fn from_replica(mut replica: Replica, clock: Clock) -> Node {
        // Change events are recorded once somebody listens.
        replica.record_changes(false);
        let peer = replica.peer_id().clone();
        let incarnation = Arc::new(AtomicU32::new(peer.incarnation()));
        Node {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    replica,
                    sender: None,
                    subs: Subs::default(),
                    reload_wanted: false,
                    lease_lapsed: false,
                    carry: None,
                    left: false,
                }),
                pump: Mutex::new(()),
                clock,
                peer,
                successions: RwLock::new(Vec::new()),
                succeeded: AtomicBool::new(false),
                incarnation,
            }),
        }
    }

    /// Saves the whole replica (document, stream positions, locks) for
    /// [`Node::from_exported`].
    pub fn export_state(&self) -> Vec<u8> {
        let bytes = self.state().replica.export_state();
        self.pump();
        bytes
    }

    /// The hostname.
    pub fn hostname(&self) -> &str {
        self.inner.peer.hostname()
    }

    /// This node's identity on the wire (a new incarnation after its peers
    /// evicted it).
    pub fn peer_id(&self) -> PeerId {
        self.state().replica.peer_id().clone()
    }

    pub(crate) fn same_node(&self, other: &Node) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    pub(crate) fn downgrade(&self) -> Weak<Inner> {
        Arc::downgrade(&self.inner)
    }

    /// The node behind a weak reference, while any clone of it lives.
    pub(crate) fn upgrade(weak: &Weak<Inner>) -> Option<Node> {
        weak.upgrade().map(|inner| Node { inner })
    }

    /// The current name of an object id this node handed out, possibly
    /// before its replica took a new incarnation.
    pub(crate) fn resolve(&self, id: ObjectId) -> ObjectId {
        if !self.inner.succeeded.load(Ordering::Acquire) {
            return id;
        }
        let successions = self
            .inner
            .successions
            .read()
            .unwrap_or_else(|e| e.into_inner());
        successions
            .iter()
            .fold(id, |id, (s, carried)| carried.rename(id.after(s)))
    }

    /// Records that the replica took a new incarnation (under the state
    /// lock, so that no id is resolved against the wrong replica).
    pub(crate) fn note_succession(&self, st: &mut State, s: Succession, carried: CarriedOver) {
        st.subs.succeeded(|id| carried.rename(id.after(&s)));
        self.inner
            .successions
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((s, carried));
        self.inner.succeeded.store(true, Ordering::Release);
        self.inner
            .incarnation
            .store(st.replica.peer_id().incarnation(), Ordering::Release);
    }

    /// This node's incarnation as it changes: what an in-process network
    /// compares a message's recipient with. Updated before the new
    /// incarnation sends anything, so before anyone can answer it.
    pub(crate) fn incarnation_cell(&self) -> Arc<AtomicU32> {
        self.inner.incarnation.clone()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets the function that sends this node's messages to the others (the
    /// original's overridable `send`). Messages queued before are sent now.
    pub fn set_sender(&self, send: impl Fn(Outgoing) + Send + Sync + 'static) {
        // The old sender is dropped outside the state: what it owns (a
        // lock guard, say) may take that state when dropped.
        let old = self.state().sender.replace(Arc::new(send));
        drop(old);
        self.pump();
    }

    /// Applies a message from another node.
    ///
    /// # Errors
    /// [`Error::Receive`] when the bytes are not a valid message; the node
    /// is unchanged and keeps working. A node that left ([`Node::leave`])
    /// ignores every message.
    pub fn receive(&self, bytes: &[u8]) -> Result<()> {
        let mut st = self.state();
        let r = st.replica.handle_message(bytes);
        self.pump_holding(st);
        r.map_err(Error::from)
    }

    /// [`Node::receive`] of several messages in turn, under one hold of
    /// the node: `refused` is told of each message refused. Returns the
    /// incarnation this node was before, when the messages made it start
    /// over as another (its peers evicted it).
    #[cfg(feature = "tcp")]
    pub(crate) fn receive_all<'a>(
        &self,
        messages: impl IntoIterator<Item = &'a [u8]>,
        mut refused: impl FnMut(Error),
    ) -> Option<u32> {
        let mut st = self.state();
        let was = st.replica.peer_id().incarnation();
        for m in messages {
            #[cfg(all(test, feature = "tcp"))]
            fault::before_message();
            if let Err(e) = st.replica.handle_message(m) {
                refused(e.into());
            }
        }
        self.pump_holding(st);
        // The node starts over as the pump takes the eviction from the
        // replica, which another thread's pump may not have done yet: the
        // caller must know before it goes on (the relay acknowledges the
        // evicted incarnation's frames that it dropped), so that pump is
        // waited for then, and only then: on a runtime's thread, a wait
        // for another thread's listeners holds up every task behind it.
        let (now, pending) = {
            let st = self.state();
            (st.replica.peer_id().incarnation(), st.replica.is_evicted())
        };
        let now = match pending && !Self::in_any_pump() {
            true => {
                self.pump_all();
                self.state().replica.peer_id().incarnation()
            }
            false => now,
        };
        (now != was).then_some(was)
    }

    /// Applies the message at `position` of a totally ordered log (a NATS
    /// JetStream stream, a Kafka partition), stamped by the log with `time`.
    /// For transports over such a log: every node reads the whole log in
    /// order, its own messages included. The node must have been created
    /// with [`Config::ordered`](facsimile_core::Config::ordered).
    ///
    /// # Errors
    /// [`Error::Receive`] when the bytes are not a valid message; the node
    /// is unchanged and keeps working.
    pub fn receive_ordered(&self, bytes: &[u8], position: u64, time: Duration) -> Result<()> {
        let mut st = self.state();
        let mut wake = Wakes::default();
        let r = self.apply_ordered(&mut st, bytes, position, time, &mut wake.0);
        drop(st);
        self.pump();
        drop(wake);
        r
    }

    /// Applies one frame of the log under the state lock; once it has read
    /// its own first message back, the node takes writes, and the lock
    /// requests waiting for that are made (their futures woken by `wake`).
    fn apply_ordered(
        &self,
        st: &mut State,
        bytes: &[u8],
        position: u64,
        time: Duration,
        wake: &mut Dispatch,
    ) -> Result<()> {
        let joined = st.replica.joined_log();
        let r = st.replica.handle_ordered(bytes, position, time);
        if !joined && st.replica.joined_log() {
            self.carry_over(st);
            st.subs.wake_all_locks(wake);
        }
        r.map_err(Error::from)
    }

    /// [`Node::receive_ordered`] of several frames of the log in turn (each
    /// with its position and the log's time), under one hold of the node,
    /// up to the one after which the node needs a reload
    /// ([`Node::needs_reload`]). `refused` is told of each frame refused,
    /// by its position. Returns how many frames were applied, and whether
    /// the node needs a reload.
    #[cfg(feature = "nats")]
    pub(crate) fn receive_ordered_all<'a>(
        &self,
        frames: impl IntoIterator<Item = (&'a [u8], u64, Duration)>,
        mut refused: impl FnMut(u64, Error),
    ) -> (usize, bool) {
        let mut st = self.state();
        let mut wake = Wakes::default();
        let mut applied = 0;
        let mut reload = st.reload_due();
        if !reload {
            for (bytes, position, time) in frames {
                // What a bug in applying a message does, under the state
                // lock.
                #[cfg(feature = "failpoints")]
                fail::fail_point!("node-apply-ordered");
                if let Err(e) = self.apply_ordered(&mut st, bytes, position, time, &mut wake.0) {
                    refused(position, e);
                }
                applied += 1;
                if st.reload_due() {
                    reload = true;
                    break;
                }
            }
        }
        self.pump_holding(st);
        drop(wake);
        (applied, reload)
    }

    /// The log position of the last message applied with
    /// [`Node::receive_ordered`].
    pub fn log_position(&self) -> u64 {
        self.state().replica.log_position()
    }

    /// A snapshot of the log up to [`Node::log_position`], for joiners
    /// (`None` while this node holds a write the log has not returned yet).
    pub fn log_snapshot(&self) -> Option<Vec<u8>> {
        self.state().replica.log_snapshot()
    }

    /// Whether the node must be reloaded from a log snapshot with
    /// [`Node::reload`]: the log refused one of its writes (it raced a lock
    /// grant) or its lease ran out, and it has not left.
    pub fn needs_reload(&self) -> bool {
        self.state().reload_due()
    }

    /// Whether the wanted reload ([`Node::needs_reload`]) is due to this
    /// node's lease running out in the log rather than to one refused
    /// write.
    #[cfg(feature = "nats")]
    pub(crate) fn lease_lapsed(&self) -> bool {
        self.state().lease_lapsed
    }

    /// Replaces this node's replica with a new incarnation loaded from a
    /// log snapshot (from [`Node::log_snapshot`] of any node), or an empty
    /// one to replay the log from its start. The old incarnation says
    /// goodbye and its locks are lost. Read the log on from the snapshot's
    /// position. Listeners stay; `on_ready` listeners are called, and what
    /// the new incarnation holds that this node showed otherwise is
    /// reported as changes, as after [`Node::sync`]. When the
    /// reload is due to this node's lease running out, the writes the log
    /// refused that depended on no lock are made again by the new
    /// incarnation where what they name is still there
    /// ([`Replica::carry_over`]); the others are lost. That happens once the
    /// new incarnation has read its own first message back from the log:
    /// judged any earlier, a carried write could store what the others
    /// reclaimed meanwhile.
    ///
    /// # Errors
    /// [`Error::Receive`] when the snapshot is not valid, and
    /// [`Error::InListener`] when called inside a listener (or the sender)
    /// of any node, where waiting for this node's pump could last for
    /// ever; the node is unchanged.
    pub fn reload(&self, snapshot: Option<&[u8]>) -> Result<()> {
        // The reload takes this node's pump: held by this thread inside a
        // listener of this node, or by another thread whose listener may
        // be waiting in turn for the pump this thread holds.
        if Node::in_any_pump() {
            return Err(Error::InListener);
        }
        let next = self.prepare_reload(snapshot)?;
        // Called for, it brings back a node that left.
        self.state().left = false;
        let _ = self.install(next);
        Ok(())
    }

    /// A new incarnation of this node's replica loaded from a log snapshot,
    /// not in use yet: [`Node::reload`] in two steps, so that the transport
    /// can bring it up to where this node had read before it takes the
    /// node's place ([`Node::install`]), and reads never go back.
    ///
    /// # Errors
    /// [`Error::Receive`] when the snapshot is not valid.
    pub(crate) fn prepare_reload(&self, snapshot: Option<&[u8]>) -> Result<Successor> {
        let st = self.state();
        // A tag neither this replica nor the snapshot knows (the snapshot
        // may be past what this replica read).
        let saved = snapshot.map(Replica::saved_tags).transpose()?;
        let known = |t| st.replica.knows_tag(t) || saved.as_ref().is_some_and(|s| s.contains(&t));
        let me = PeerId::new(self.hostname(), fresh_tag(known));
        let (mut replica, succession) = st.replica.successor(me, snapshot)?;
        // Switched on when it takes this node's place: what it applies
        // before is no change to what this node showed.
        replica.record_changes(false);
        Ok(Successor {
            replica,
            succession,
        })
    }

    /// Puts `next` in the place of this node's replica: the old incarnation
    /// says goodbye and its locks are lost; `on_ready` listeners are called
    /// and what `next` holds that this node showed otherwise is reported as
    /// changes. After a lapse of the lease, `next` makes again the writes the log
    /// refused that it can ([`Replica::carry_over`]): at once if it has read
    /// its own first message back, else when it does
    /// ([`Node::receive_ordered`]). Returns how many operations it made
    /// again and how many are lost, at once; `None` when the node left
    /// ([`Node::leave`]), before or meanwhile: `next` leaves too.
    pub(crate) fn install(&self, next: Successor) -> Option<(u64, u64)> {
        let Successor {
            mut replica,
            mut succession,
        } = next;
        let guard = self.inner.pump.lock().unwrap_or_else(|e| e.into_inner());
        let guard = PumpGuard::new(guard);
        let carried;
        let deferred;
        let left;
        // The goodbye and the lost-lock events of the old incarnation go
        // out before anything of the new one.
        let (sender, transmits, dispatch) = {
            let mut st = self.state();
            left = st.left;
            // Objects the old incarnation made while its successor caught
            // up keep their ids apart from the successor's.
            replica.extend_succession(&st.replica, &mut succession);
            // Made while change events are off: they reapply what this
            // node showed, so they change nothing a listener saw.
            deferred = st.lease_lapsed && !replica.joined_log();
            carried = match st.lease_lapsed && !deferred && !left {
                true => replica.carry_over(&mut st.replica, &succession),
                false => CarriedOver::default(),
            };
            st.replica.abandon();
            self.drain(&mut st)
        };
        if let Some(send) = sender {
            for t in transmits {
                send(Outgoing(t));
            }
        }
        let mut wake = Wakes::default();
        let counts;
        {
            let mut st = self.state();
            // A node that left stays gone: the successor, which said
            // hello, says goodbye (sent by the pump below).
            let left = left || st.left;
            if left {
                replica.leave();
            }
            let old = std::mem::replace(&mut st.replica, replica);
            st.sync_recording();
            // What the new incarnation holds that this node showed
            // otherwise (writes it had not read, its own the log refused)
            // is reported as a sync reports it, so that listeners of the
            // objects that stay do not go stale.
            let rename = |id: ObjectId| carried.rename(id.after(&succession));
            st.replica.record_changes_since(&old, rename);
            // A carry-over still waiting from an earlier lapse is lost:
            // only the incarnation it was for could judge it.
            st.carry = deferred.then_some((old, succession));
            st.reload_wanted = false;
            st.lease_lapsed = false;
            counts = (!left).then(|| (carried.carried(), carried.lost()));
            self.note_succession(&mut st, succession, carried);
            st.subs.wake_all_locks(&mut wake.0);
        }
        drop(guard);
        dispatch.run();
        drop(wake);
        self.pump();
        counts
    }

    /// Carries over the writes the old incarnation lost to a lapse, now
    /// that the replica has read its own first message back.
    fn carry_over(&self, st: &mut State) {
        let Some((mut old, succession)) = st.carry.take() else {
            return;
        };
        // Reported as local changes: the reload reported them undone.
        let carried = st.replica.carry_over(&mut old, &succession);
        st.subs.succeeded(|id| carried.rename(id));
        let mut successions = self
            .inner
            .successions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if let Some((_, last)) = successions.last_mut() {
            *last = carried;
        }
    }

    /// Runs a write on the replica, refusing it without a transport.
    pub(crate) fn write<R>(
        &self,
        f: impl FnOnce(&mut Replica) -> Result<R, facsimile_core::Error>,
    ) -> Result<R> {
        self.try_write(|r| f(r).map_err(|e| Error::engine_in(e, r)))
            .unwrap_or(Err(Error::NoSender))
    }

    /// Runs `f` on the replica if the node has a transport (`None` if it
    /// has none), then sends what it queued: a write whose errors are not
    /// [`Error`]s.
    pub(crate) fn try_write<R>(&self, f: impl FnOnce(&mut Replica) -> R) -> Option<R> {
        let mut st = self.state();
        st.sender.as_ref()?;
        let r = f(&mut st.replica);
        self.pump_holding(st);
        Some(r)
    }

    /// Runs a read on the replica.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&mut Replica) -> R) -> R {
        f(&mut self.state().replica)
    }

    /// The replica, for reads, until the returned guard is dropped: what
    /// the hot reads of handles use (a guard compiles to less than a
    /// closure through [`Node::read`] there, measured at 23 against 30 ns
    /// a `MapRef::get`).
    pub(crate) fn replica(&self) -> ReplicaRef<'_> {
        ReplicaRef(self.state())
    }

    /// Runs a read that the engine may refuse.
    pub(crate) fn try_read<R>(
        &self,
        f: impl FnOnce(&mut Replica) -> Result<R, facsimile_core::Error>,
    ) -> Result<R> {
        self.read(|r| f(r).map_err(|e| Error::engine_in(e, r)))
    }

    /// Wakes `waker` at the next change of the lock on `object`, or when
    /// the node becomes ready or a new incarnation.
    pub(crate) fn add_lock_waker(&self, object: ObjectId, waker: &Waker) {
        self.state().subs.add_lock_waker(object, waker);
    }

    /// Makes or joins this node's request for the lock on `object` and
    /// takes a share in it ([`Subs::join_lock`]), under one hold of the
    /// state, so that the last future dropping meanwhile cannot take a
    /// grant this one is about to claim for nobody's. Returns the share and
    /// the request's round.
    ///
    /// # Errors
    /// [`LockError::NoSender`] without a transport,
    /// [`LockError::Locked`] for a fail-fast request (`!wait`) while
    /// another future or guard of this node waits for or holds the lock,
    /// and the engine's refusals.
    pub(crate) fn lock_request(
        &self,
        object: ObjectId,
        wait: bool,
    ) -> Result<(Arc<()>, u64), LockError> {
        let mut st = self.state();
        if st.sender.is_none() {
            return Err(LockError::NoSender);
        }
        let had = matches!(
            st.replica.lock_state(object),
            LockState::Waiting | LockState::Held(_)
        );
        if had && !wait {
            // The request of another task of this node is ahead.
            let place = locate(&mut st.replica, object);
            return Err(LockError::Locked {
                object,
                place,
                here: true,
            });
        }
        let r = match st.replica.lock(object, wait) {
            Ok(_) => Ok(st.subs.join_lock(object, !had)),
            Err(e) => Err(LockError::from_core(e, &mut st.replica)),
        };
        self.pump_holding(st);
        r
    }

    /// This node's state for the lock on `object`, for a future that
    /// joined the request of `round`; `None` once the node is past that
    /// request (it was refused or lost and another made since, or its grant
    /// was released). While it is [`LockState::Waiting`], `waker` is woken
    /// at the object's next lock event; a grant is recorded as turned into
    /// a guard: both under one hold of the state, so that no event falls in
    /// between. A grant goes to one guard: for the other futures of the
    /// request it is [`LockState::Waiting`] (until that guard releases it
    /// and they ask again), or [`LockState::Refused`] for a fail-fast one
    /// (`!wait`).
    pub(crate) fn poll_lock(
        &self,
        object: ObjectId,
        round: u64,
        wait: bool,
        waker: &Waker,
    ) -> Option<LockState> {
        let mut st = self.state();
        if st.subs.lock_round(object) != round {
            return None;
        }
        let mut state = st.replica.lock_state(object);
        if let LockState::Held(token) = state {
            if st.subs.lock_claimed(object, token) {
                state = match wait {
                    true => LockState::Waiting,
                    false => LockState::Refused,
                };
            }
        }
        match state {
            LockState::Waiting => st.subs.add_lock_waker(object, waker),
            LockState::Held(token) => st.subs.claim_lock(object, token),
            _ => {}
        }
        Some(state)
    }

    /// Gives up `share`, a dropped future's share in the request for the
    /// lock on `object`. When it was the last, withdraws the request still
    /// waiting, and releases a grant that came after the futures stopped
    /// polling and that none turned into a guard: nothing would release it
    /// otherwise.
    pub(crate) fn withdraw_lock(&self, object: ObjectId, share: Arc<()>) {
        let mut st = self.state();
        drop(share);
        if st.subs.lock_wanted(object) {
            return;
        }
        let unclaimed = match st.replica.lock_state(object) {
            LockState::Waiting => true,
            LockState::Held(token) => !st.subs.lock_claimed(object, token),
            _ => false,
        };
        if unclaimed {
            let _ = st.replica.unlock(object);
        }
        self.pump_holding(st);
    }

    /// Releases this node's lock on `object`; with `token`, only that
    /// grant (a guard's: a later one is not its to release), checked in the
    /// same hold of the state as the release. The grant is no longer
    /// anybody's.
    ///
    /// # Errors
    /// [`LockError::NotLocked`] when the grant of `token` is gone, and the
    /// engine's refusals.
    pub(crate) fn end_lock(&self, object: ObjectId, token: Option<u64>) -> Result<(), LockError> {
        let mut st = self.state();
        let r = match (token, st.replica.lock_state(object)) {
            (Some(t), LockState::Held(now)) if now != t => {
                Err(facsimile_core::Error::NotLocked(object))
            }
            _ => st.replica.release(object),
        };
        let r = match r {
            Ok(()) => {
                st.subs.released_lock(object);
                Ok(())
            }
            Err(e) => Err(LockError::from_core(e, &mut st.replica)),
        };
        self.pump_holding(st);
        r
    }

    /// Checks whether the locks allow this node to write `object` now,
    /// without writing.
    ///
    /// # Errors
    /// [`Error::Engine`] with [`NotOwner`](crate::EngineError::NotOwner) while
    /// another node holds or waits for the lock on the object (or this
    /// node's own request for it waits), and [`Error::ForeignHandle`] for a
    /// handle of another node.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use futures_executor::block_on;
    /// use serde_json::json;
    ///
    /// let net = LocalNetwork::new();
    /// let a = net.join("a");
    /// let b = net.join("b");
    /// a.set_root(json!({}))?;
    /// let root = b.root_map().unwrap();
    /// b.check_writable(&root)?;
    /// let _guard = block_on(a.lock(a.root_map().unwrap()))?;
    /// assert!(b.check_writable(&root).is_err());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn check_writable(&self, object: impl Into<ObjectRef>) -> Result<()> {
        let object = object.into();
        if !object.node().same_node(self) {
            return Err(Error::ForeignHandle(object.node().hostname().to_string()));
        }
        let id = object.id();
        self.try_read(|r| r.check_writable(id))
    }

    /// Wraps an engine value for this node.
    pub(crate) fn value(&self, replica: &Replica, v: facsimile_core::Value) -> Value {
        Value::from_core(self, v, |id| replica.kind(id))
    }

    /// Groups every write made inside `f` into one message and one change.
    /// Timers that come due meanwhile wait for the end of `f` (up to one
    /// heartbeat interval, so that a long batch keeps the node alive). A message
    /// from a peer received while `f` runs (on another thread, or by a
    /// listener) ends the group first: what `f` wrote before it leaves as
    /// one message, the rest as another, since one message's operations
    /// take consecutive counters and a remote write moves the counter on.
    ///
    /// # Errors
    /// Whatever `f` returns.
    pub fn batch<R>(&self, f: impl FnOnce() -> Result<R>) -> Result<R> {
        let group = Group::open(self);
        let r = f();
        drop(group);
        self.pump();
        r
    }

    /// Replaces the root, and sends the write. Returns the new root (a handle
    /// when `x` creates an object). Every node's root listeners
    /// ([`Node::on_root_changed`]) are called.
    ///
    /// # Errors
    /// [`Error::NoSender`] when the node has no transport,
    /// [`Error::ForeignHandle`] when `x` holds a handle of another node, and
    /// [`Error::Engine`] with [`Syncing`](crate::EngineError::Syncing) during a
    /// sync, [`UnknownObject`](crate::EngineError::UnknownObject) or
    /// [`Detached`](crate::EngineError::Detached) when `x` refers to an object
    /// no longer in the document.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// let root = node.set_root(json!({"players": []}))?;
    /// assert!(root.as_map().is_some());
    /// node.set_root(42)?;
    /// assert_eq!(node.root().as_i64(), Some(42));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn set_root(&self, x: impl Into<Input>) -> Result<Value> {
        let input = x.into().into_core(self)?;
        // Read before the pump: its listeners, or the replies it brings,
        // may replace the root again.
        self.write(|r| {
            r.set_root(input)?;
            Ok(self.value(r, r.root()))
        })
    }

    /// The root value.
    pub fn root(&self) -> Value {
        let st = self.state();
        self.value(&st.replica, st.replica.root())
    }

    /// The root as a map, if it is one.
    pub fn root_map(&self) -> Option<MapRef> {
        self.root().as_map().cloned()
    }

    /// The root as an array, if it is one.
    pub fn root_array(&self) -> Option<ArrayRef> {
        self.root().as_array().cloned()
    }

    /// Drops the local document and asks the network for it. Exactly one
    /// peer sends it; writes arriving meanwhile are applied after it. Listen
    /// with [`Node::on_ready`] to know when it is complete. Locks the node
    /// holds are released to its peers and reported lost
    /// ([`LockEvent::Lost`](crate::LockEvent::Lost)); requests still
    /// waiting are made again once the node is ready. A node that left
    /// ([`Node::leave`]) does not sync: its document stays as it was.
    pub fn sync(&self) {
        self.state().sync();
        self.pump();
    }

    /// Says whether this node's messages reach anybody now. While they do
    /// not, the writes made are gathered into as few messages as possible,
    /// packed (each key written once, integers as differences), so that a
    /// reconnection sends a compacted backlog rather than one message per
    /// write; they go out when the node is online again, on a flush, or
    /// when one reaches its size limit. Listeners still hear of each write
    /// at once. The relay connection calls this itself when it loses and
    /// regains the relay; a transport of its own (see
    /// [`Node::set_sender`]) calls it when its link goes down and up; so
    /// does the NATS connection when it loses and regains the server (held
    /// writes that reach the log after the node's lease ran out are
    /// refused, and a flush reports them lost).
    ///
    /// # Example
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use facsimile::Node;
    ///
    /// let node = Node::new("laptop");
    /// let sent = Arc::new(Mutex::new(Vec::new()));
    /// let log = sent.clone();
    /// node.set_sender(move |msg| log.lock().unwrap().push(msg.bytes()));
    /// let root = node.set_root(serde_json::json!({}))?.as_map().cloned().unwrap();
    /// sent.lock().unwrap().clear();
    /// node.set_online(false);
    /// for i in 0..1000 {
    ///     root.set(&format!("k{}", i % 10), i)?;
    /// }
    /// assert!(sent.lock().unwrap().is_empty());
    /// node.set_online(true);
    /// let sent = sent.lock().unwrap();
    /// assert_eq!(sent.len(), 1, "one message for the thousand writes");
    /// assert!(sent[0].len() < 5_000);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn set_online(&self, online: bool) {
        self.state().replica.set_online(online);
        self.pump();
    }

    /// Queues the writes held while offline as a message (a flush waits
    /// for them; its [`Node::pump_all`] hands them over), and goes on
    /// holding.
    #[cfg(any(feature = "tcp", feature = "nats"))]
    pub(crate) fn send_held(&self) {
        self.state().replica.send_held();
    }

    /// Refuses writes and makes lock requests wait while a successor joins
    /// the log to take this node's place ([`Replica::hand_over`]); when
    /// turned off (the successor was given up), the lock requests that
    /// waited are made.
    #[cfg(feature = "nats")]
    pub(crate) fn hand_over(&self, on: bool) {
        let mut wake = Dispatch::default();
        {
            let mut st = self.state();
            st.replica.hand_over(on);
            if !on {
                st.subs.wake_all_locks(&mut wake);
            }
        }
        wake.run();
    }

    /// Limits the messages this node's writes make to `bytes`, as its
    /// relay's welcome asks ([`Replica::limit_sent_messages`]).
    #[cfg(feature = "tcp")]
    pub(crate) fn limit_sent_messages(&self, bytes: usize) {
        self.state().replica.limit_sent_messages(bytes);
    }

    /// Whether the document is complete (no sync in progress).
    pub fn is_ready(&self) -> bool {
        self.state().replica.is_ready()
    }

    /// The canonical encoding of the document: two nodes that received the
    /// same messages return identical bytes.
    pub fn snapshot(&self) -> Vec<u8> {
        self.state().replica.snapshot()
    }

    /// Peers known to be participating.
    pub fn peers(&self) -> Vec<PeerId> {
        self.state().replica.members()
    }

    /// Says goodbye: the other nodes stop waiting for this one, free its
    /// locks and drop whatever it sends from then on.
    ///
    /// So the node gives up at once what the others no longer grant it:
    /// its guards report not held ([`LockGuard::is_held`](crate::LockGuard::is_held)),
    /// its lock futures still waiting fail, and from then on its writes,
    /// its lock requests ([`Node::lock`], [`Node::request`]) and
    /// [`Node::check_writable`] are refused with
    /// [`EngineError::Left`](crate::EngineError::Left); [`Node::evict`]
    /// and [`Node::sync`] do nothing. It ignores what it receives from
    /// then on, so its document stays as it was when it left: it can
    /// still be read, exported ([`Node::export_state`]) and listened to,
    /// but it no longer changes. Leaving again does nothing.
    ///
    /// Leaving is for good for this incarnation. To take part again, make
    /// a new node (and [`Node::sync`] it, or start it from
    /// [`Node::from_exported`]), or start this one over from a log
    /// ([`Node::reload`]). A relay connection that is made again after the
    /// relay counted the node gone closes rather than starting it over.
    ///
    /// # Example
    /// ```
    /// use facsimile::{EngineError, LocalNetwork};
    /// use futures_executor::block_on;
    /// use serde_json::json;
    ///
    /// let net = LocalNetwork::new();
    /// let (a, b) = (net.join("a"), net.join("b"));
    /// a.set_root(json!({"k": 0}))?;
    /// let guard = block_on(a.lock(a.root_map().unwrap()))?;
    /// a.leave();
    /// assert!(!guard.is_held());
    /// let refused = a.root_map().unwrap().set("k", 1).unwrap_err();
    /// assert!(matches!(refused.engine(), Some(EngineError::Left)));
    /// // The others got the lock back, and a's copy stays as it was.
    /// let on_b = b.root_map().unwrap();
    /// let _held = block_on(b.lock(&on_b))?;
    /// on_b.set("k", 2)?;
    /// assert_eq!(a.get("/k").and_then(|k| k.as_i64()), Some(0));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn leave(&self) {
        let mut dispatch = Dispatch::default();
        {
            let mut st = self.state();
            st.left = true;
            st.replica.leave();
            // Futures that wait to make their request (during a sync) are
            // woken too: they fail now.
            st.subs.wake_all_locks(&mut dispatch);
        }
        dispatch.run();
        self.pump();
    }

    /// Declares `peer` gone, as a transport does when it finds a peer's
    /// connection lost for good: every node frees its locks and stops
    /// waiting for it (its queued lock requests are dropped and reclamation
    /// no longer counts on it). The relay and NATS transports do this
    /// themselves (by eviction and by lease); a transport of your own calls
    /// it, or turns on heartbeats
    /// ([`Config::failure_detection`](facsimile_core::Config::failure_detection))
    /// to find silent peers. A peer unknown here, already gone, or this
    /// node itself is ignored, and so is every call on a node that left
    /// ([`Node::leave`]): its peers would drop the eviction. An evicted
    /// peer that is in fact alive learns of it and starts over as a new
    /// incarnation.
    ///
    /// # Example
    /// ```
    /// use facsimile::{EngineError, LocalNetwork};
    /// use futures_executor::block_on;
    /// use serde_json::json;
    ///
    /// let net = LocalNetwork::new();
    /// let (a, b) = (net.join("a"), net.join("b"));
    /// a.set_root(json!({"score": 0}))?;
    /// // b takes the lock, then its process dies: the guard never drops.
    /// std::mem::forget(block_on(b.lock(b.root_map().unwrap()))?);
    /// let gone = b.peer_id();
    /// drop(b);
    ///
    /// let root = a.root_map().unwrap();
    /// let refused = root.set("score", 1).unwrap_err();
    /// assert!(matches!(refused.engine(), Some(EngineError::NotOwner(_))));
    /// assert!(a.peers().contains(&gone));
    /// a.evict(&gone);
    /// root.set("score", 1)?;
    /// assert!(!a.peers().contains(&gone));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn evict(&self, peer: &PeerId) {
        self.state().replica.evict(peer);
        self.pump();
    }

    /// [`Node::evict`] of every member of `hostname`, for a transport that
    /// knows its peers by hostname. Returns how many members that was (0
    /// for a hostname that is not a member, or this node's own, and on a
    /// node that left).
    pub fn evict_host(&self, hostname: &str) -> usize {
        let n = self.state().replica.evict_host(hostname, None);
        self.pump();
        n
    }

    /// Runs timers that are due (reclamation, heartbeats, sync retries).
    /// Every call into the node does this too; call it when the node is
    /// otherwise idle. Time is read from a coarse monotonic clock where the
    /// system has one, so a timer runs up to a few milliseconds after it is due
    /// (or from the network's clock in virtual time,
    /// [`LocalNetwork::with_virtual_time`](crate::LocalNetwork::with_virtual_time)).
    pub fn tick(&self) {
        self.pump();
    }

    /// Calls `f` after every change to any object of this node's document,
    /// local or remote, until the returned [`Subscription`] is dropped.
    ///
    /// A change is an effective one: a key whose value changed, one array
    /// method call, one element set; a write that changes nothing reports
    /// nothing. Listeners run after the change is applied, in order, outside
    /// every lock of the node: `f` may read and write the document, and its
    /// writes are sent after the change that called it.
    ///
    /// Nothing the node has to send leaves while a listener runs, so a
    /// listener must not wait for an answer from the network: a lock
    /// future polled inside it, of this node or any other, fails with
    /// [`LockError::InListener`](crate::LockError::InListener) (spawn it,
    /// or request the lock after the listener returns), a connection's
    /// `flush` or `close` (of any node) with `NetError::InListener`, and
    /// [`Node::reload`] (of any node) with [`Error::InListener`]. The
    /// same holds for
    /// every `on_*` listener and for the sender.
    ///
    /// # Example
    /// ```
    /// use std::sync::{Arc, Mutex};
    ///
    /// use facsimile::{LocalNetwork, Prop, Value};
    /// use serde_json::json;
    ///
    /// let net = LocalNetwork::new();
    /// let a = net.join("a");
    /// let b = net.join("b");
    /// a.set_root(json!({"score": 0}))?;
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let _sub = b.on_change(move |ev| {
    ///     log.lock().unwrap().push((ev.prop().cloned(), ev.new_value().cloned()));
    /// });
    /// a.root_map().unwrap().set("score", 1)?;
    /// assert_eq!(*seen.lock().unwrap(), [(Some(Prop::Key("score".into())), Some(Value::Int(1)))]);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn on_change(&self, f: impl Fn(&ChangeEvent) + Send + Sync + 'static) -> Subscription {
        self.subscribe(Listener::Change(Arc::new(f)))
    }

    /// Calls `f` each time the root is replaced, here or on another node,
    /// with the new root, the old one and the origin, until the returned
    /// [`Subscription`] is dropped.
    ///
    /// # Example
    /// ```
    /// use std::sync::{Arc, Mutex};
    ///
    /// use facsimile::{LocalNetwork, Value};
    ///
    /// let net = LocalNetwork::new();
    /// let a = net.join("a");
    /// let b = net.join("b");
    /// let roots = Arc::new(Mutex::new(Vec::new()));
    /// let log = roots.clone();
    /// let _sub = b.on_root_changed(move |c| log.lock().unwrap().push(c.new_value().clone()));
    /// a.set_root(1)?;
    /// a.set_root("two")?;
    /// assert_eq!(*roots.lock().unwrap(), [Value::Int(1), Value::from("two")]);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn on_root_changed(&self, f: impl Fn(&RootChange) + Send + Sync + 'static) -> Subscription {
        self.subscribe(Listener::Root(Arc::new(f)))
    }

    /// Calls `f` for every lock event of this node (granted, released, lost
    /// when its peers evicted it, withdrawn), until the returned
    /// [`Subscription`] is dropped.
    ///
    /// # Example
    /// ```
    /// use std::sync::{Arc, Mutex};
    ///
    /// use facsimile::{LocalNetwork, LockEvent};
    /// use futures_executor::block_on;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// let root = node.set_root(json!({}))?;
    /// let events = Arc::new(Mutex::new(Vec::new()));
    /// let log = events.clone();
    /// let _sub = node.on_lock(move |e| log.lock().unwrap().push(e.clone()));
    /// drop(block_on(node.lock(root.as_map().unwrap()))?);
    /// let events = events.lock().unwrap();
    /// assert!(matches!(events[0], LockEvent::Granted { .. }));
    /// assert!(matches!(events[1], LockEvent::Released { .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn on_lock(
        &self,
        f: impl Fn(&facsimile_core::LockEvent) + Send + Sync + 'static,
    ) -> Subscription {
        self.subscribe(Listener::Lock(Arc::new(f)))
    }

    /// Calls `f` with the root each time a sync completes ([`Node::sync`]):
    /// the document is complete, every reference from the root resolved.
    /// Writes are refused during a sync; start writing from here.
    ///
    /// # Example
    /// ```
    /// use std::sync::{Arc, Mutex};
    ///
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let net = LocalNetwork::new();
    /// let host = net.join("host");
    /// host.set_root(json!([[1], [2]]))?;
    /// let late = net.join("late");
    /// let ready = Arc::new(Mutex::new(None));
    /// let slot = ready.clone();
    /// let _sub = late.on_ready(move |root| *slot.lock().unwrap() = Some(root.clone()));
    /// late.sync();
    /// let root = ready.lock().unwrap().take().unwrap();
    /// assert_eq!(root.to_json()?, json!([[1], [2]]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn on_ready(&self, f: impl Fn(&Value) + Send + Sync + 'static) -> Subscription {
        self.subscribe(Listener::Ready(Arc::new(f)))
    }

    /// An async stream of every event of this node ([`Event`](crate::Event): changes, root
    /// replacements, completed syncs, lock events), for tokio or any other
    /// executor. Dropping the stream ends its subscription; events wait in the
    /// stream, unbounded, until read.
    ///
    /// # Example
    /// ```
    /// use facsimile::{Event, LocalNetwork, Value};
    /// use futures_executor::block_on;
    /// use futures_util::StreamExt;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// let mut events = node.events();
    /// node.set_root(json!({"k": 1}))?;
    /// node.root_map().unwrap().set("k", 2)?;
    /// assert!(matches!(block_on(events.next()), Some(Event::RootChanged(_))));
    /// let Some(Event::Change(change)) = block_on(events.next()) else {
    ///     panic!("a change of k");
    /// };
    /// assert_eq!(change.new_value(), Some(&Value::Int(2)));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn events(&self) -> EventStream {
        let (tx, rx) = futures_channel::mpsc::unbounded();
        EventStream::new(rx, self.subscribe(Listener::Stream(tx)))
    }

    /// Removes a listener: it never fires again, even for a change already
    /// being reported. Dropping the [`Subscription`] does the same.
    ///
    /// # Example
    /// ```
    /// use std::sync::{Arc, Mutex};
    ///
    /// use facsimile::LocalNetwork;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// let calls = Arc::new(Mutex::new(0));
    /// let count = calls.clone();
    /// let sub = node.on_root_changed(move |_| *count.lock().unwrap() += 1);
    /// node.set_root(1)?;
    /// node.off(&sub);
    /// node.set_root(2)?;
    /// assert_eq!(*calls.lock().unwrap(), 1);
    /// assert!(!sub.is_active());
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn off(&self, subscription: &Subscription) {
        subscription.cancel();
    }

    /// Registers a listener; it is removed when the returned subscription
    /// is dropped or cancelled.
    pub(crate) fn subscribe(&self, listener: Listener) -> Subscription {
        let (id, alive) = {
            let mut st = self.state();
            let r = st.subs.add(listener);
            st.sync_recording();
            r
        };
        Subscription::new(self, id, alive)
    }

    /// Removes a listener ([`Subscription::cancel`]).
    pub(crate) fn unsubscribe(&self, id: u64) {
        let removed = {
            let mut st = self.state();
            let removed = st.subs.remove(id);
            st.sync_recording();
            removed
        };
        drop(removed);
    }

    /// Sends queued messages and runs listeners, in order, outside the state
    /// lock. Re-entrant calls (a listener writing) and calls from other
    /// threads leave their work to the caller already pumping.
    pub(crate) fn pump(&self) {
        loop {
            let Some(guard) = self.try_pump() else {
                return;
            };
            self.pump_locked(guard);
            // Work queued by another thread while this one held the pump
            // would otherwise wait for the next call.
            if !self.has_work() {
                return;
            }
        }
    }

    /// The pump, unless another caller holds it. A listener that panicked
    /// inside the pump poisoned it; the pump holds no data, so it is taken
    /// all the same (else nothing would be sent again).
    fn try_pump(&self) -> Option<PumpGuard<'_>> {
        let guard = match self.inner.pump.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(e)) => e.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        Some(PumpGuard::new(guard))
    }

    /// Whether this thread runs a listener or the sender of any node, not
    /// only this one: it holds that node's pump, and what that node is to
    /// send leaves once they return. A wait here for an answer from the
    /// network may need a message of that node (every member acknowledges
    /// a lock request), and would wait for ever; so would a wait for a
    /// pump (a flush, a reload), held by this thread or by another whose
    /// listener waits for this thread's pump in turn.
    pub(crate) fn in_any_pump() -> bool {
        PUMPING.with(|p| p.get() > 0)
    }

    /// Hands every message queued so far to the sender before returning,
    /// waiting for a pump running on another thread if need be. Not for
    /// listeners (they run inside the pump).
    #[cfg(any(feature = "tcp", feature = "nats"))]
    pub(crate) fn pump_all(&self) {
        let guard = self.inner.pump.lock().unwrap_or_else(|e| e.into_inner());
        self.pump_locked(PumpGuard::new(guard));
        self.pump();
    }

    /// Runs `f` on the replica once every message it queued is with the
    /// sender, holding the pump so that none is on its way there
    /// meanwhile: for a transport that replaces messages it holds (a relay
    /// client splitting them to a smaller frame limit). Not for listeners.
    #[cfg(feature = "tcp")]
    pub(crate) fn with_all_sent<R>(&self, f: impl FnOnce(&mut Replica) -> R) -> R {
        let r = loop {
            self.pump_all();
            let pump = self.inner.pump.lock().unwrap_or_else(|e| e.into_inner());
            let _pump = PumpGuard::new(pump);
            let mut st = self.state();
            // Queued by another thread since: sent first.
            if st.sender.is_none() || !st.replica.has_transmits() {
                break f(&mut st.replica);
            }
        };
        // Work another thread left to the pump meanwhile.
        self.pump();
        r
    }

    /// [`Node::pump`] for a caller that holds the state: it drains under
    /// that lock instead of taking it again.
    fn pump_holding(&self, mut st: MutexGuard<'_, State>) {
        let Some(guard) = self.try_pump() else {
            // Whoever pumps looks for this work once it lets go.
            return;
        };
        let drained = self.drain(&mut st);
        drop(st);
        self.deliver(guard, drained);
        if self.has_work() {
            self.pump();
        }
    }

    /// One round of the pump: timers, then what was queued. Whatever the
    /// sender or the listeners queue meanwhile is left to the caller's next
    /// round ([`Node::has_work`]).
    fn pump_locked(&self, guard: PumpGuard<'_>) {
        let drained = self.drain(&mut self.state());
        self.deliver(guard, drained);
    }

    /// Sends what [`Node::drain`] took and runs the listener calls, outside
    /// the state lock, then lets go of the pump.
    fn deliver(&self, guard: PumpGuard<'_>, drained: Drained) {
        let (sender, transmits, dispatch) = drained;
        // The replica has let go of these messages: a sender that panics
        // (over an in-process network, another node's listener did) must
        // not drop the ones after it, which no peer would then ever get.
        // The first panic goes on once all are sent and the listeners ran.
        let mut panicked = None;
        if let Some(send) = sender {
            for t in transmits {
                if let Err(panic) = events::listener(|| send(Outgoing(t))) {
                    panicked.get_or_insert(panic);
                }
            }
        }
        dispatch.run();
        drop(guard);
        if let Some(panic) = panicked {
            events::rethrow(panic);
        }
    }

    /// How long until the replica's next timer is due by the node's clock
    /// (zero when one is due now), for a transport that sleeps until then.
    #[cfg(any(feature = "tcp", feature = "nats", feature = "channels"))]
    pub(crate) fn next_timer(&self) -> Option<Duration> {
        let at = self.state().replica.poll_timeout()?;
        Some(at.saturating_sub(self.inner.clock.now()))
    }

    /// Starts over as a new incarnation and syncs: what a node does when its
    /// peers evicted it. Lock futures waiting on this node fail.
    #[cfg(feature = "tcp")]
    pub(crate) fn rejoin(&self) {
        let mut dispatch = Dispatch::default();
        self.start_over(&mut self.state(), &mut dispatch);
        dispatch.run();
        self.pump();
    }

    /// [`Node::rejoin`] under the state lock, the listener calls left to
    /// the caller.
    fn start_over(&self, st: &mut State, dispatch: &mut Dispatch) {
        // An incarnation the document has not seen: an old one's stream
        // positions and departure would apply to it.
        let incarnation = fresh_tag(|t| st.replica.knows_tag(t));
        let s = st.replica.reincarnate(incarnation);
        self.note_succession(st, s, CarriedOver::default());
        st.subs.wake_all_locks(dispatch);
    }

    fn has_work(&self) -> bool {
        let st = self.state();
        (st.sender.is_some() && st.replica.has_transmits()) || st.replica.has_events()
    }

    /// Runs the replica's timers that are due by the node's clock. Inside
    /// a batch they wait for its commit, up to one heartbeat interval
    /// late: a timer closes the open group (what it sends follows the
    /// writes), which would send the batch in pieces, but a batch that
    /// runs on must not cost the node its membership or its lease.
    /// The listeners of the objects a timer reclaimed are removed, to be
    /// dropped with `dispatch`.
    fn run_timers(&self, st: &mut State, dispatch: &mut Dispatch) {
        let now = self.inner.clock.now();
        let Some(at) = st.replica.poll_timeout() else {
            return;
        };
        let grace = match st.replica.in_group() {
            true => st.replica.config().heartbeat(),
            false => Duration::ZERO,
        };
        if now >= at.saturating_add(grace) {
            // Reclamation runs on a timer, and only removes objects.
            let objects = st.replica.object_count();
            st.replica.handle_timeout(now);
            if st.replica.object_count() < objects {
                let replica = &st.replica;
                dispatch.drop_later(st.subs.reclaimed(|obj| replica.kind(obj).is_some()));
                st.sync_recording();
            }
        }
    }

    /// Runs due timers and takes what is queued: messages to send and
    /// listener calls.
    fn drain(&self, st: &mut State) -> Drained {
        let mut dispatch = Dispatch::default();
        self.run_timers(st, &mut dispatch);
        // Usually one message: kept inline.
        let mut transmits = SmallVec::new();
        if st.sender.is_some() {
            while let Some(t) = st.replica.poll_transmit() {
                transmits.push(t);
            }
        }
        let listening = !st.subs.is_empty();
        // A sync answered with a state that lists this incarnation as
        // departed reports it ready, then evicted: the ready is held until
        // the next event, and dropped if that is the eviction, so that no
        // `on_ready` listener is handed the root of an incarnation already
        // dropped (the next one reports its own).
        let mut ready = None;
        while let Some(e) = st.replica.poll_event() {
            let evicted = matches!(e, CoreEvent::Evicted) && !st.replica.is_ordered();
            if let Some(r) = ready.take()
                && !evicted
                && listening
            {
                st.subs.route(self, &st.replica, r, &mut dispatch);
            }
            match &e {
                CoreEvent::NeedsSync | CoreEvent::Evicted if st.replica.is_ordered() => {
                    // Only a snapshot of the log brings this node back; the
                    // transport loads one.
                    st.reload_wanted = true;
                    st.lease_lapsed |= matches!(e, CoreEvent::Evicted);
                    continue;
                }
                CoreEvent::NeedsSync => {
                    // The node missed messages no peer can resend any more:
                    // the only way back to the shared document is a sync.
                    st.sync();
                    continue;
                }
                CoreEvent::Evicted => {
                    // The peers stopped waiting for this node.
                    self.start_over(st, &mut dispatch);
                    continue;
                }
                CoreEvent::Lock(l) => st.subs.wake_locks(l.object(), &mut dispatch),
                // Requests refused while syncing are made now.
                CoreEvent::Ready => {
                    st.subs.wake_all_locks(&mut dispatch);
                    ready = Some(e);
                    continue;
                }
                _ => {}
            }
            if listening {
                st.subs.route(self, &st.replica, e, &mut dispatch);
            }
        }
        if let Some(r) = ready
            && listening
        {
            st.subs.route(self, &st.replica, r, &mut dispatch);
        }
        // A receive rarely sends: no reference to the sender without need.
        let sender = if transmits.is_empty() {
            None
        } else {
            st.sender.clone()
        };
        (sender, transmits, dispatch)
    }
}

/// A fault of the engine, on demand: what a bug in applying a message
/// does, under the state lock.
#[cfg(all(test, feature = "tcp"))]
pub(crate) mod fault {
    use std::cell::Cell;

    thread_local! {
        /// How many messages [`super::Node::receive_all`] applies before it
        /// panics.
        pub(crate) static PANIC_AFTER: Cell<Option<usize>> = const { Cell::new(None) };
    }

    pub(super) fn before_message() {
        match PANIC_AFTER.get() {
            Some(0) => {
                PANIC_AFTER.set(None);
                panic!("an engine fault");
            }
            Some(n) => PANIC_AFTER.set(Some(n - 1)),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What a node's sender was handed, in order.
    type Sent = Arc<Mutex<Vec<Arc<[u8]>>>>;

    /// A node whose sender keeps the bytes, and its root array.
    fn recording() -> (Node, ArrayRef, Sent) {
        let node = Node::new("alpha");
        let sent = Sent::default();
        let log = sent.clone();
        node.set_sender(move |msg| log.lock().unwrap().push(msg.bytes()));
        let array = node.set_root(serde_json::json!([])).unwrap();
        let array = array.as_array().cloned().unwrap();
        (node, array, sent)
    }

    #[test]
    fn a_node_that_leaves_while_its_successor_catches_up_stays_gone() {
        let config = Config::default().ordered(Duration::from_secs(600));
        let node = Node::with_config("alpha", config);
        node.set_sender(|_| {});
        let next = node.prepare_reload(None).unwrap();
        node.leave();
        let _ = node.install(next);
        let refused = node.set_root(serde_json::json!({"k": 1})).unwrap_err();
        assert!(
            matches!(refused.engine(), Some(crate::EngineError::Left)),
            "{refused:?}"
        );
    }

    #[test]
    fn writes_from_threads_all_leave_in_order() {
        const THREADS: usize = 4;
        const WRITES: usize = 500;
        let (a, array, sent) = recording();
        // A listener that writes: its writes join the same pump.
        let echo = array.clone();
        let _sub = a.on_change(move |_| {
            if echo.len() % 100 == 0 {
                echo.push(-1).unwrap();
            }
        });
        std::thread::scope(|s| {
            for t in 0..THREADS {
                let array = array.clone();
                s.spawn(move || {
                    for i in 0..WRITES {
                        array.push((t * WRITES + i) as i64).unwrap();
                    }
                });
            }
        });
        // Nothing is left queued once every writer returned, and a peer
        // that reads the messages in the order they were sent ends equal.
        let b = Node::new("bravo");
        b.set_sender(|_| {});
        for msg in sent.lock().unwrap().iter() {
            b.receive(msg).unwrap();
        }
        assert!(array.len() >= THREADS * WRITES);
        assert!(!a.has_work());
        assert_eq!(b.snapshot(), a.snapshot());
    }

    #[test]
    fn a_listeners_write_leaves_before_the_write_returns() {
        let (a, array, sent) = recording();
        let echo = array.clone();
        let _sub = a.on_change(move |_| {
            if echo.len() == 1 {
                echo.push(2).unwrap();
            }
        });
        let before = sent.lock().unwrap().len();
        array.push(1).unwrap();
        assert_eq!(sent.lock().unwrap().len(), before + 2);
        assert!(!a.has_work());
    }

    #[test]
    fn a_panicking_listener_lets_go_of_the_pump() {
        let (a, array, sent) = recording();
        let sub = a.on_change(|_| panic!("listener"));
        let r = catch_unwind(AssertUnwindSafe(|| array.push(1)));
        assert!(r.is_err());
        drop(sub);
        let before = sent.lock().unwrap().len();
        array.push(2).unwrap();
        assert!(sent.lock().unwrap().len() > before);
    }

    /// A waker that counts its wakes.
    struct Counting(std::sync::atomic::AtomicUsize);

    impl std::task::Wake for Counting {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::AcqRel);
        }
    }

    #[test]
    fn a_panicking_lock_listener_does_not_skip_the_new_incarnation_s_wakes() {
        let (a, array, _sent) = recording();
        let held = array.clone();
        let guard = futures_executor::block_on(a.lock(&held)).unwrap();
        let other = a.set_root(serde_json::json!({})).unwrap();
        let other = other.as_map().cloned().unwrap();
        let count = Arc::new(Counting(Default::default()));
        a.add_lock_waker(other.id(), &std::task::Waker::from(count.clone()));
        let _sub = a.on_lock(|_| panic!("listener"));
        let r = catch_unwind(AssertUnwindSafe(|| a.reload(None)));
        assert!(r.is_err(), "the listener's panic reaches the caller");
        assert_eq!(count.0.load(Ordering::Acquire), 1);
        drop(guard);
    }

    /// A batch leaves as one message when a timer comes due inside it: the
    /// timer runs once the batch commits.
    #[test]
    fn a_timer_due_inside_a_batch_waits_for_the_commit() {
        let clock = Clock::manual();
        let config =
            Config::default().failure_detection(Duration::from_millis(100), Duration::from_secs(1));
        let a = Node::with_clock("alpha", config, clock.clone());
        let sent = Sent::default();
        let log = sent.clone();
        a.set_sender(move |msg| log.lock().unwrap().push(msg.bytes()));
        let array = a.set_root(serde_json::json!([])).unwrap();
        let array = array.as_array().cloned().unwrap();
        let before = sent.lock().unwrap().len();
        a.batch(|| {
            array.push(1)?;
            // The heartbeat is due, not yet a whole interval late.
            clock.advance(Duration::from_millis(150));
            array.push(2)?;
            array.push(3)
        })
        .unwrap();
        // A peer that reads only the first message after the batch began
        // has both writes.
        let b = Node::new("bravo");
        b.set_sender(|_| {});
        for msg in &sent.lock().unwrap()[..=before] {
            b.receive(msg).unwrap();
        }
        let got = b.root().as_array().map(ArrayRef::len);
        assert_eq!(got, Some(3));

        // A batch that runs a whole interval past the timer sends it.
        let before = sent.lock().unwrap().len();
        a.batch(|| {
            array.push(4)?;
            clock.advance(Duration::from_secs(5));
            array.push(5)?;
            assert!(sent.lock().unwrap().len() > before, "sent before the end");
            array.push(6)
        })
        .unwrap();
    }
}
