//! Change events, listeners and subscriptions.
//!
//! Listener calls are collected under the node's state lock, when the
//! replica reports its changes, and run after the lock is released, in
//! order; a call whose listener was removed meanwhile is skipped (its
//! `alive` flag). The engine records changes only while someone listens
//! (DESIGN.md, "Events").

use std::cell::Cell;
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use facsimile_core::{
    Event as CoreEvent, IdKeys, LockEvent, ObjectId, ObjectKind, Origin, Prop, Replica,
};
use futures_channel::mpsc::{UnboundedReceiver, UnboundedSender};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;

use crate::handle::{ArrayRef, MapRef, ObjectRef};
use crate::node::{Inner, Node};
use crate::value::Value;

/// One effective change to one object, local or remote: what the
/// listeners of [`Node::on_change`], [`MapRef::on`](crate::MapRef::on),
/// [`MapRef::on_key`](crate::MapRef::on_key) and
/// [`ArrayRef::on_index`](crate::ArrayRef::on_index) receive.
///
/// It names the object, the key or index (none for a change of a whole
/// array), the values before and after, and where the change came from.
/// Replaying a node's events onto its earlier state gives its current state.
///
/// # Example
/// ```
/// use std::sync::{Arc, Mutex};
///
/// use facsimile::{LocalNetwork, Origin, Prop, Value};
/// use serde_json::json;
///
/// let net = LocalNetwork::new();
/// let a = net.join("a");
/// let b = net.join("b");
/// a.set_root(json!({"score": 1}))?;
/// let seen = Arc::new(Mutex::new(None));
/// let slot = seen.clone();
/// let _sub = b.on_change(move |ev| *slot.lock().unwrap() = Some(ev.clone()));
/// a.root_map().unwrap().set("score", 2)?;
///
/// let ev = seen.lock().unwrap().take().unwrap();
/// assert_eq!(ev.target().id(), b.root_map().unwrap().id());
/// assert_eq!(ev.prop(), Some(&Prop::Key("score".into())));
/// assert_eq!((ev.old_value(), ev.new_value()), (Some(&Value::Int(1)), Some(&Value::Int(2))));
/// assert_eq!(ev.origin(), &Origin::Remote(a.peer_id()));
/// # Ok::<(), facsimile::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct ChangeEvent {
    pub(crate) target: ObjectRef,
    pub(crate) prop: Option<Prop>,
    pub(crate) new: Option<Value>,
    pub(crate) old: Option<Value>,
    pub(crate) origin: Origin,
}

impl ChangeEvent {
    /// The object that changed.
    pub fn target(&self) -> &ObjectRef {
        &self.target
    }

    /// The key or index that changed; `None` for a mass change (an array
    /// method, a batch of element writes).
    pub fn prop(&self) -> Option<&Prop> {
        self.prop.as_ref()
    }

    /// The value after the change, where there is one.
    pub fn new_value(&self) -> Option<&Value> {
        self.new.as_ref()
    }

    /// The value before the change, where there was one.
    pub fn old_value(&self) -> Option<&Value> {
        self.old.as_ref()
    }

    /// Whether the change was made here or received from a peer.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
}

/// The root replaced, here or on another node: by [`Node::on_root_changed`]
/// and [`Event::RootChanged`].
///
/// # Example
/// ```
/// use std::sync::{Arc, Mutex};
///
/// use facsimile::{LocalNetwork, Origin, Value};
///
/// let net = LocalNetwork::new();
/// let a = net.join("a");
/// let b = net.join("b");
/// a.set_root(1)?;
/// let seen = Arc::new(Mutex::new(None));
/// let log = seen.clone();
/// let _sub = b.on_root_changed(move |c| *log.lock().unwrap() = Some(c.clone()));
/// a.set_root("two")?;
/// let c = seen.lock().unwrap().clone().unwrap();
/// assert_eq!((c.old_value(), c.new_value()), (&Value::Int(1), &Value::from("two")));
/// assert_eq!(c.origin(), &Origin::Remote(a.peer_id()));
/// # Ok::<(), facsimile::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct RootChange {
    new: Value,
    old: Value,
    origin: Origin,
}

impl RootChange {
    /// The root now.
    pub fn new_value(&self) -> &Value {
        &self.new
    }

    /// The root before.
    pub fn old_value(&self) -> &Value {
        &self.old
    }

    /// Whether the root was replaced here or by a peer (which one).
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
}

/// Everything a node reports, as delivered by [`Node::events`].
///
/// # Example
/// ```
/// use facsimile::{Event, LocalNetwork, Value};
/// use futures_executor::block_on;
/// use futures_util::StreamExt;
///
/// let node = LocalNetwork::new().join("a");
/// let mut events = node.events();
/// node.set_root(1)?;
/// match block_on(events.next()) {
///     Some(Event::RootChanged(root)) => assert_eq!(root.new_value(), &Value::Int(1)),
///     other => panic!("{other:?}"),
/// }
/// # Ok::<(), facsimile::Error>(())
/// ```
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Event {
    /// An object changed.
    Change(ChangeEvent),
    /// The root was replaced.
    RootChanged(RootChange),
    /// A sync completed; this is the root.
    Ready(Value),
    /// A lock of this node was granted, released or lost.
    Lock(LockEvent),
}

pub(crate) type ChangeFn = Arc<dyn Fn(&ChangeEvent) + Send + Sync>;
pub(crate) type ValueFn = Arc<dyn Fn(&Value) + Send + Sync>;
pub(crate) type RootFn = Arc<dyn Fn(&RootChange) + Send + Sync>;
pub(crate) type LockFn = Arc<dyn Fn(&LockEvent) + Send + Sync>;

/// What a listener listens to, for [`Node::subscribe`].
pub(crate) enum Listener {
    /// Every change of the document.
    Change(ChangeFn),
    /// Every change of one object.
    Object(ObjectId, ChangeFn),
    /// Changes of one key or index of one object.
    Prop(ObjectId, Prop, ChangeFn),
    /// Root replacements.
    Root(RootFn),
    /// Completed syncs.
    Ready(ValueFn),
    /// This node's lock events.
    Lock(LockFn),
    /// Everything, into an [`EventStream`].
    Stream(UnboundedSender<Event>),
}

struct Sub<F> {
    id: u64,
    alive: Arc<AtomicBool>,
    f: F,
}

/// This node's request for one object's lock, as the lock futures share
/// it: the node makes one request per object.
#[derive(Default)]
struct LockShare {
    /// Held by each future waiting on the request: it is withdrawn only
    /// when the last of them drops.
    futures: Weak<()>,
    /// Which of the node's requests for the object the current one is: a
    /// future of an earlier round knows its request was refused or lost,
    /// and another made since.
    round: u64,
    /// The grant a future last turned into a guard: a grant that arrives
    /// after its futures stopped polling is nobody's, and is released when
    /// the last of them drops.
    claimed: Option<u64>,
}

impl LockShare {
    /// The node is past its current request (released, or dropped by a
    /// sync): its futures make or join the next one.
    fn move_on(&mut self) {
        self.claimed = None;
        self.round += 1;
    }
}

/// Every listener of one node, and the tasks waiting for its locks. The
/// node holds it under its state lock; nothing else reaches into it.
#[derive(Default)]
pub(crate) struct Subs {
    next: u64,
    global: Vec<Sub<ChangeFn>>,
    objects: HashMap<ObjectId, Vec<Sub<ChangeFn>>, IdKeys>,
    props: FxHashMap<(ObjectId, Prop), Vec<Sub<ChangeFn>>>,
    root: Vec<Sub<RootFn>>,
    ready: Vec<Sub<ValueFn>>,
    locks: Vec<Sub<LockFn>>,
    streams: Vec<Sub<UnboundedSender<Event>>>,
    /// Tasks waiting for a lock on an object.
    lock_wakers: HashMap<ObjectId, Vec<Waker>, IdKeys>,
    /// This node's request for each object's lock, as its futures share
    /// it (see [`Subs::join_lock`]).
    lock_shares: HashMap<ObjectId, LockShare, IdKeys>,
}

impl Subs {
    /// Registers a listener; returns its id and the flag that is cleared
    /// when it is removed (a call already collected checks it, so a removed
    /// listener never fires).
    pub(crate) fn add(&mut self, listener: Listener) -> (u64, Arc<AtomicBool>) {
        self.next += 1;
        let id = self.next;
        let alive = Arc::new(AtomicBool::new(true));
        fn sub<F>(id: u64, alive: &Arc<AtomicBool>, f: F) -> Sub<F> {
            Sub {
                id,
                alive: alive.clone(),
                f,
            }
        }
        match listener {
            Listener::Change(f) => self.global.push(sub(id, &alive, f)),
            Listener::Object(obj, f) => self
                .objects
                .entry(obj)
                .or_default()
                .push(sub(id, &alive, f)),
            Listener::Prop(obj, prop, f) => self
                .props
                .entry((obj, prop))
                .or_default()
                .push(sub(id, &alive, f)),
            Listener::Root(f) => self.root.push(sub(id, &alive, f)),
            Listener::Ready(f) => self.ready.push(sub(id, &alive, f)),
            Listener::Lock(f) => self.locks.push(sub(id, &alive, f)),
            Listener::Stream(tx) => self.streams.push(sub(id, &alive, tx)),
        }
        (id, alive)
    }

    /// Removes listener `id`, returned rather than dropped: the caller
    /// drops it once it no longer holds the node's state, as what a
    /// listener owns (a lock guard, say) may take that state when dropped.
    pub(crate) fn remove(&mut self, id: u64) -> Vec<Box<dyn Send>> {
        fn take<F: Send + 'static>(subs: &mut Vec<Sub<F>>, id: u64, out: &mut Vec<Box<dyn Send>>) {
            if let Some(at) = subs.iter().position(|s| s.id == id) {
                out.push(Box::new(subs.remove(at).f));
            }
        }
        let mut out: Vec<Box<dyn Send>> = Vec::new();
        take(&mut self.global, id, &mut out);
        take(&mut self.root, id, &mut out);
        take(&mut self.ready, id, &mut out);
        take(&mut self.locks, id, &mut out);
        take(&mut self.streams, id, &mut out);
        self.objects.retain(|_, v| {
            take(v, id, &mut out);
            !v.is_empty()
        });
        self.props.retain(|_, v| {
            take(v, id, &mut out);
            !v.is_empty()
        });
        out
    }

    /// Removes the listeners of the objects that no longer `exist`: an
    /// object reclaimed never changes again, and its listeners (what they
    /// own with them) would stay for the node's life. Their subscriptions
    /// become inactive. Returned rather than dropped, as by
    /// [`Subs::remove`].
    pub(crate) fn reclaimed(&mut self, exists: impl Fn(ObjectId) -> bool) -> Vec<Box<dyn Send>> {
        fn end(subs: &mut Vec<Sub<ChangeFn>>, out: &mut Vec<Box<dyn Send>>) {
            for s in subs.drain(..) {
                s.alive.store(false, Ordering::Release);
                out.push(Box::new(s.f));
            }
        }
        let mut out: Vec<Box<dyn Send>> = Vec::new();
        self.objects.retain(|&obj, subs| {
            exists(obj) || {
                end(subs, &mut out);
                false
            }
        });
        self.props.retain(|&(obj, _), subs| {
            exists(obj) || {
                end(subs, &mut out);
                false
            }
        });
        out
    }

    /// Whether any listener is registered (lock wakers do not count: they
    /// need no change events).
    pub(crate) fn is_empty(&self) -> bool {
        self.global.is_empty()
            && self.objects.is_empty()
            && self.props.is_empty()
            && self.root.is_empty()
            && self.ready.is_empty()
            && self.locks.is_empty()
            && self.streams.is_empty()
    }

    /// Renames the objects listened to after the replica was succeeded.
    /// `rename` names an id of the old replica in the new one.
    pub(crate) fn succeeded(&mut self, rename: impl Fn(ObjectId) -> ObjectId) {
        self.objects = std::mem::take(&mut self.objects)
            .into_iter()
            .map(|(id, subs)| (rename(id), subs))
            .collect();
        self.props = std::mem::take(&mut self.props)
            .into_iter()
            .map(|((id, prop), subs)| ((rename(id), prop), subs))
            .collect();
        // Lock futures name their object as it is now named too.
        self.lock_shares = std::mem::take(&mut self.lock_shares)
            .into_iter()
            .map(|(id, l)| (rename(id), l))
            .collect();
    }

    /// Wakes `waker` at the next lock event of `obj`.
    pub(crate) fn add_lock_waker(&mut self, obj: ObjectId, waker: &Waker) {
        let list = self.lock_wakers.entry(obj).or_default();
        if !list.iter().any(|w| w.will_wake(waker)) {
            list.push(waker.clone());
        }
    }

    /// A share in this node's request for the lock on `obj`, and its
    /// round; `fresh` when the node has just made a new request rather than
    /// joined the one it had.
    pub(crate) fn join_lock(&mut self, obj: ObjectId, fresh: bool) -> (Arc<()>, u64) {
        if !self.lock_shares.contains_key(&obj) {
            self.lock_shares
                .retain(|_, l| l.futures.strong_count() > 0 || l.claimed.is_some());
        }
        let l = self.lock_shares.entry(obj).or_default();
        if fresh {
            l.round += 1;
        }
        let share = l.futures.upgrade().unwrap_or_else(|| {
            let share = Arc::new(());
            l.futures = Arc::downgrade(&share);
            share
        });
        (share, l.round)
    }

    /// The node dropped every request and grant of its own (a sync): the
    /// futures that waited on them make or join the next ones.
    pub(crate) fn dropped_locks(&mut self) {
        self.lock_shares.values_mut().for_each(LockShare::move_on);
    }

    /// The round of this node's current request for the lock on `obj`.
    pub(crate) fn lock_round(&self, obj: ObjectId) -> u64 {
        self.lock_shares.get(&obj).map_or(0, |l| l.round)
    }

    /// Whether a future of this node still shares its request for `obj`.
    pub(crate) fn lock_wanted(&self, obj: ObjectId) -> bool {
        self.lock_shares
            .get(&obj)
            .is_some_and(|l| l.futures.strong_count() > 0)
    }

    /// Records that a future turned grant `token` of `obj` into a guard.
    pub(crate) fn claim_lock(&mut self, obj: ObjectId, token: u64) {
        self.lock_shares.entry(obj).or_default().claimed = Some(token);
    }

    /// Whether grant `token` of `obj` was turned into a guard.
    pub(crate) fn lock_claimed(&self, obj: ObjectId, token: u64) -> bool {
        self.lock_shares
            .get(&obj)
            .is_some_and(|l| l.claimed == Some(token))
    }

    /// This node released its grant of `obj`'s lock: the futures that
    /// shared the request it answered and did not take their guard yet
    /// make or join the next one ([`Subs::lock_round`]).
    pub(crate) fn released_lock(&mut self, obj: ObjectId) {
        if let Some(l) = self.lock_shares.get_mut(&obj) {
            l.move_on();
        }
    }

    pub(crate) fn wake_locks(&mut self, obj: ObjectId, out: &mut Dispatch) {
        if let Some(list) = self.lock_wakers.remove(&obj) {
            out.calls.extend(list.into_iter().map(Call::Wake));
        }
    }

    pub(crate) fn wake_all_locks(&mut self, out: &mut Dispatch) {
        for (_, list) in self.lock_wakers.drain() {
            out.calls.extend(list.into_iter().map(Call::Wake));
        }
    }

    /// Converts an engine event for `node` and collects the calls of the
    /// listeners it concerns.
    pub(crate) fn route(&self, node: &Node, replica: &Replica, e: CoreEvent, out: &mut Dispatch) {
        match e {
            // Nobody listens for changes: no event to build.
            CoreEvent::Change(_)
                if self.global.is_empty()
                    && self.objects.is_empty()
                    && self.props.is_empty()
                    && self.streams.is_empty() => {}
            CoreEvent::Change(c) => {
                let target = match replica.kind(c.object) {
                    Some(ObjectKind::Array) => {
                        ObjectRef::Array(ArrayRef::new(node.clone(), c.object))
                    }
                    _ => ObjectRef::Map(MapRef::new(node.clone(), c.object)),
                };
                let ev = ChangeEvent {
                    target,
                    prop: c.prop,
                    new: c.new.map(|v| node.value(replica, v)),
                    old: c.old.map(|v| node.value(replica, v)),
                    origin: c.origin,
                };
                self.route_change(ev, out);
            }
            CoreEvent::RootChanged { new, old, origin } => {
                let c = Arc::new(RootChange {
                    new: node.value(replica, new),
                    old: node.value(replica, old),
                    origin,
                });
                for s in &self.root {
                    out.calls
                        .push(Call::Root(s.alive.clone(), s.f.clone(), c.clone()));
                }
                self.route_stream(|| Event::RootChanged((*c).clone()), out);
            }
            CoreEvent::Ready => {
                let v = node.value(replica, replica.root());
                self.route_values(&self.ready, v, Event::Ready, out);
            }
            CoreEvent::Lock(l) => self.route_lock(l, out),
            _ => {}
        }
    }

    fn route_lock(&self, e: LockEvent, out: &mut Dispatch) {
        let e = Arc::new(e);
        for s in &self.locks {
            out.calls
                .push(Call::Lock(s.alive.clone(), s.f.clone(), e.clone()));
        }
        self.route_stream(|| Event::Lock((*e).clone()), out);
    }

    fn route_change(&self, ev: ChangeEvent, out: &mut Dispatch) {
        let obj = ev.target.id();
        // The event is kept once for all its listeners, which name it by
        // its place.
        let at = out.changes.len();
        let mut push = |s: &Sub<ChangeFn>| {
            out.calls
                .push(Call::Change(s.alive.clone(), s.f.clone(), at));
        };
        self.global.iter().for_each(&mut push);
        if let Some(list) = self.objects.get(&obj) {
            list.iter().for_each(&mut push);
        }
        if let Some(prop) = &ev.prop {
            if let Some(list) = self.props.get(&(obj, prop.clone())) {
                list.iter().for_each(&mut push);
            }
        }
        self.route_stream(|| Event::Change(ev.clone()), out);
        out.changes.push(ev);
    }

    fn route_values(
        &self,
        subs: &[Sub<ValueFn>],
        v: Value,
        event: fn(Value) -> Event,
        out: &mut Dispatch,
    ) {
        let v = Arc::new(v);
        for s in subs {
            out.calls
                .push(Call::Value(s.alive.clone(), s.f.clone(), v.clone()));
        }
        self.route_stream(|| event((*v).clone()), out);
    }

    /// Builds the event only when a stream listens.
    fn route_stream(&self, e: impl FnOnce() -> Event, out: &mut Dispatch) {
        if self.streams.is_empty() {
            return;
        }
        let e = e();
        for s in &self.streams {
            out.calls
                .push(Call::Stream(s.alive.clone(), s.f.clone(), e.clone()));
        }
    }
}

enum Call {
    Wake(Waker),
    Lock(Arc<AtomicBool>, LockFn, Arc<LockEvent>),
    /// The event is [`Dispatch::changes`]' at this place.
    Change(Arc<AtomicBool>, ChangeFn, usize),
    Value(Arc<AtomicBool>, ValueFn, Arc<Value>),
    Root(Arc<AtomicBool>, RootFn, Arc<RootChange>),
    Stream(Arc<AtomicBool>, UnboundedSender<Event>, Event),
}

/// Listener calls collected under the lock and run after it is released.
/// One call and one event inline: a message that changes one value, heard
/// by one listener, allocates nothing to report it.
#[derive(Default)]
pub(crate) struct Dispatch {
    calls: SmallVec<[Call; 1]>,
    /// The change events the calls report, each kept once for all its
    /// listeners.
    changes: SmallVec<[ChangeEvent; 1]>,
    /// Listeners removed under the lock, dropped with the dispatch, after
    /// the calls: what they own may take the node's state when dropped.
    dropped: Vec<Box<dyn Send>>,
}

impl Dispatch {
    /// Drops `removed` (listeners) once the calls have run.
    pub(crate) fn drop_later(&mut self, removed: Vec<Box<dyn Send>>) {
        self.dropped.extend(removed);
    }

    /// Runs the calls in order, skipping listeners removed meanwhile. A
    /// listener that panics does not rob the calls after it of theirs (the
    /// other listeners' events, the wake of a lock future): the first
    /// panic goes on once every call has run.
    pub(crate) fn run(self) {
        // Nearly always empty: skip building an iterator over nothing.
        if self.calls.is_empty() {
            return;
        }
        let Dispatch {
            calls,
            changes,
            dropped: _dropped,
        } = self;
        let mut panicked = None;
        for call in calls {
            if let Err(panic) = listener(|| call.run(&changes)) {
                panicked.get_or_insert(panic);
            }
        }
        if let Some(panic) = panicked {
            rethrow(panic);
        }
    }
}

/// Lock wakes run when dropped, after the listener calls before them:
/// also when one of those panics, else the futures they wake would never
/// be polled again.
#[derive(Default)]
pub(crate) struct Wakes(pub(crate) Dispatch);

impl Drop for Wakes {
    fn drop(&mut self) {
        let wakes = std::mem::take(&mut self.0);
        match std::thread::panicking() {
            // A second panic now would abort: it is dropped.
            true => drop(listener(|| wakes.run())),
            false => wakes.run(),
        }
    }
}

type Panic = Box<dyn std::any::Any + Send>;

thread_local! {
    /// Set while a transport's task calls into a node ([`contain`]).
    static CONTAINING: Cell<bool> = const { Cell::new(false) };
    /// The first listener panic [`rethrow`] kept for [`contain`].
    static CONTAINED: Cell<Option<Panic>> = const { Cell::new(None) };
}

/// Runs `f`, a listener or a sender: user code, whose panic is caught
/// here. Inside it, nothing is contained: a panic of another node's
/// listener that it calls reaches `f` as it would on the user's thread.
pub(crate) fn listener<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    let was = CONTAINING.replace(false);
    let r = std::panic::catch_unwind(AssertUnwindSafe(f));
    CONTAINING.set(was);
    r
}

/// What becomes of a listener's panic once the calls after it ran: it goes
/// on to the caller, unless a transport's task made the call ([`contain`]),
/// which must not stop for it; kept for that task to report then.
pub(crate) fn rethrow(panic: Panic) {
    match CONTAINING.get() {
        true => {
            let first = CONTAINED.take();
            CONTAINED.set(Some(first.unwrap_or(panic)));
        }
        false => std::panic::resume_unwind(panic),
    }
}

/// Runs `f`, a transport task's call into a node, with the panics of the
/// node's listeners stopped at the listeners: what the engine was doing
/// completes (the rest of a batch of messages, the timers), and the first
/// such panic is returned. A panic that still leaves `f` is the engine's
/// own (under the state lock, with the replica perhaps half changed): it
/// goes on to the caller.
#[cfg(any(feature = "tcp", feature = "nats", feature = "channels"))]
pub(crate) fn contain<R>(f: impl FnOnce() -> R) -> (R, Option<Panic>) {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            CONTAINING.set(self.0);
            if !self.0 {
                CONTAINED.take();
            }
        }
    }
    let reset = Reset(CONTAINING.replace(true));
    let r = f();
    let panic = CONTAINED.take();
    drop(reset);
    (r, panic)
}

impl Call {
    fn run(self, changes: &[ChangeEvent]) {
        match self {
            Call::Wake(w) => w.wake(),
            Call::Lock(alive, f, e) => {
                if alive.load(Ordering::Acquire) {
                    f(&e)
                }
            }
            Call::Change(alive, f, at) => {
                if alive.load(Ordering::Acquire) {
                    f(&changes[at])
                }
            }
            Call::Value(alive, f, v) => {
                if alive.load(Ordering::Acquire) {
                    f(&v)
                }
            }
            Call::Root(alive, f, c) => {
                if alive.load(Ordering::Acquire) {
                    f(&c)
                }
            }
            Call::Stream(alive, tx, e) => {
                if alive.load(Ordering::Acquire) && tx.unbounded_send(e).is_err() {
                    alive.store(false, Ordering::Release);
                }
            }
        }
    }
}

/// A registered listener, returned by every `on_*` method.
///
/// Dropping it unsubscribes (as does [`Node::off`]);
/// [`Subscription::detach`] keeps the listener for the node's life instead.
/// A listener removed while a change is being reported does not fire for
/// it.
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
/// drop(sub);
/// node.set_root(2)?;
/// assert_eq!(*calls.lock().unwrap(), 1);
/// # Ok::<(), facsimile::Error>(())
/// ```
#[must_use = "dropping a Subscription unsubscribes at once; call .detach() to keep the listener"]
pub struct Subscription {
    node: Weak<Inner>,
    id: u64,
    alive: Arc<AtomicBool>,
    detached: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Subscription({})", self.id)
    }
}

impl Subscription {
    pub(crate) fn new(node: &Node, id: u64, alive: Arc<AtomicBool>) -> Self {
        Subscription {
            node: node.downgrade(),
            id,
            alive,
            detached: false,
        }
    }

    /// Keeps the listener for the life of the node, dropping the handle
    /// that would remove it.
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
    /// node.on_root_changed(move |_| *count.lock().unwrap() += 1).detach();
    /// node.set_root(1)?;
    /// assert_eq!(*calls.lock().unwrap(), 1);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn detach(mut self) {
        self.detached = true;
    }

    /// Whether the listener is still registered: false once removed with
    /// [`Node::off`], once the stream of an [`EventStream`] was dropped, or
    /// once the object it listens to was reclaimed.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// let sub = node.on_change(|_| {});
    /// assert!(sub.is_active());
    /// node.off(&sub);
    /// assert!(!sub.is_active());
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn is_active(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Removes the listener, once: a call already collected for it sees
    /// the cleared flag and does not run.
    pub(crate) fn cancel(&self) {
        if self.alive.swap(false, Ordering::AcqRel) {
            if let Some(node) = Node::upgrade(&self.node) {
                node.unsubscribe(self.id);
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.detached {
            self.cancel();
        }
    }
}

/// An async stream of a node's events, from [`Node::events`]. Dropping
/// it ends its subscription.
///
/// # Example
/// ```
/// use facsimile::{Event, LocalNetwork};
/// use futures_executor::block_on;
/// use futures_util::StreamExt;
///
/// let node = LocalNetwork::new().join("a");
/// let events = node.events();
/// node.set_root(1)?;
/// node.set_root(2)?;
/// drop(node);
/// let all: Vec<Event> = block_on(events.take(2).collect());
/// assert!(all.iter().all(|e| matches!(e, Event::RootChanged(_))));
/// # Ok::<(), facsimile::Error>(())
/// ```
pub struct EventStream {
    rx: UnboundedReceiver<Event>,
    _sub: Subscription,
}

impl EventStream {
    pub(crate) fn new(rx: UnboundedReceiver<Event>, sub: Subscription) -> Self {
        EventStream { rx, _sub: sub }
    }
}

impl futures_core::Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        Pin::new(&mut self.rx).poll_next(cx)
    }
}
