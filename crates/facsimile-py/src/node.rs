//! `Facsimile`: one node, its proxies, its listeners and its transport.
//!
//! Python objects that the engine's closures need (the sender, listeners)
//! live in one table owned by the node object, which reports them to
//! Python's garbage collector: the closures hold only a weak pointer to
//! the table and an entry's number, so a cycle through a callback (a
//! listener that closes over a proxy of its own node) is collectable; the
//! engine dropping a closure (its object reclaimed) removes its entry.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use facsimile::net::Connection;
use facsimile::{
    ArrayRef, ChangeEvent, Config, MapRef, Node, ObjectId, ObjectRef, Origin, Prop, Subscription,
};
use pyo3::PyTraverseError;
use pyo3::exceptions::{PyException, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyWeakrefReference};

use crate::convert::{Plain, plain_to_py, py_to_plain, to_input, to_py};
use crate::errors;
use crate::exit;
use crate::lock::{LockGuard, PendingLock};
use crate::proxy::{ListProxy, MapProxy};
use crate::runtime;

/// Engine states (a node's replica and listeners) alive: counted by a probe
/// the sender closure owns, which the engine drops with the node's state.
pub(crate) static ENGINES_ALIVE: AtomicUsize = AtomicUsize::new(0);

struct Probe;

impl Probe {
    fn new() -> Probe {
        ENGINES_ALIVE.fetch_add(1, Ordering::AcqRel);
        Probe
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        ENGINES_ALIVE.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a listener listens to, for `off`.
#[derive(Clone, PartialEq)]
pub(crate) enum Topic {
    Node(String),
    Object(ObjectId),
    Prop(ObjectId, Prop),
}

struct Listener {
    topic: Topic,
    callback: Py<PyAny>,
    _sub: Subscription,
}

/// Python objects the engine's closures call: reported to the garbage
/// collector by the node object, and cleared by it.
#[derive(Default)]
struct PyRefs {
    sender: Option<Py<PyAny>>,
    listeners: HashMap<u64, Listener>,
    next: u64,
}

pub(crate) struct Shared {
    pub(crate) node: Node,
    refs: Mutex<PyRefs>,
    /// Proxies handed out, by object, so that one object is one proxy
    /// while the proxy lives (`s.a is s.a`).
    cache: Mutex<Cache>,
    /// The Python node object, weakly: listeners build proxies with it.
    me: Mutex<Option<Py<PyWeakrefReference>>>,
    conn: Mutex<Option<Connection>>,
    /// Set by `close` and `abort`: the node can be read, not written (its
    /// writes would go nowhere).
    closed: AtomicBool,
}

#[derive(Default)]
struct Cache {
    proxies: HashMap<ObjectId, Py<PyWeakrefReference>>,
    sweep_at: usize,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.get_mut().ok().and_then(Option::take) {
            conn.abort();
        }
    }
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// The Python node object, while it lives.
    fn owner<'py>(&self, py: Python<'py>) -> Option<Bound<'py, Facsimile>> {
        let me = locked(&self.me).as_ref()?.clone_ref(py);
        me.bind(py).upgrade_as::<Facsimile>().ok().flatten()
    }

    fn callback(&self, py: Python<'_>, id: u64) -> Option<Py<PyAny>> {
        locked(&self.refs)
            .listeners
            .get(&id)
            .map(|l| l.callback.clone_ref(py))
    }
}

/// One participant: a replica of the document, its transport, its
/// listeners and its locks.
#[pyclass(module = "facsimile", name = "Facsimile", frozen, weakref)]
pub(crate) struct Facsimile {
    pub(crate) shared: Arc<Shared>,
}

impl Facsimile {
    fn create(
        py: Python<'_>,
        node: Node,
        conn: Option<Connection>,
    ) -> PyResult<Bound<'_, Facsimile>> {
        let shared = Arc::new(Shared {
            node,
            refs: Mutex::default(),
            cache: Mutex::default(),
            me: Mutex::default(),
            conn: Mutex::new(conn),
            closed: AtomicBool::new(false),
        });
        let me = Bound::new(py, Facsimile { shared })?;
        let weak = PyWeakrefReference::new(&me)?;
        *locked(&me.get().shared.me) = Some(weak.unbind());
        Ok(me)
    }

    pub(crate) fn node(&self) -> &Node {
        &self.shared.node
    }

    fn proxy<T: pyo3::PyClass + Into<PyClassInitializer<T>>>(
        &self,
        py: Python<'_>,
        id: ObjectId,
        make: impl FnOnce() -> T,
    ) -> PyResult<Py<PyAny>> {
        if let Some(w) = locked(&self.shared.cache).proxies.get(&id) {
            if let Some(p) = w.bind(py).upgrade() {
                return Ok(p.unbind());
            }
        }
        // Created outside the cache's lock: allocating may run the
        // garbage collector, which may drop other proxies.
        let p = Bound::new(py, make())?.into_any();
        let w = PyWeakrefReference::new(&p)?.unbind();
        let mut cache = locked(&self.shared.cache);
        cache.proxies.insert(id, w);
        if cache.proxies.len() > cache.sweep_at {
            cache.proxies.retain(|_, w| w.bind(py).upgrade().is_some());
            cache.sweep_at = (cache.proxies.len() * 2).max(1024);
        }
        Ok(p.unbind())
    }

    pub(crate) fn map_proxy(
        &self,
        py: Python<'_>,
        owner: &Bound<'_, Facsimile>,
        map: MapRef,
    ) -> PyResult<Py<PyAny>> {
        let id = map.id();
        self.proxy(py, id, || MapProxy {
            owner: owner.clone().unbind(),
            map,
        })
    }

    pub(crate) fn list_proxy(
        &self,
        py: Python<'_>,
        owner: &Bound<'_, Facsimile>,
        list: ArrayRef,
    ) -> PyResult<Py<PyAny>> {
        let id = list.id();
        self.proxy(py, id, || ListProxy {
            owner: owner.clone().unbind(),
            list,
        })
    }

    pub(crate) fn object_proxy(
        &self,
        owner: &Bound<'_, Facsimile>,
        o: &ObjectRef,
    ) -> PyResult<Py<PyAny>> {
        let py = owner.py();
        match o {
            ObjectRef::Map(m) => self.map_proxy(py, owner, m.clone()),
            ObjectRef::Array(a) => self.list_proxy(py, owner, a.clone()),
        }
    }

    /// Registers `callback` under `topic`; `subscribe` makes the engine's
    /// subscription from the closure that calls it. Returns the entry's
    /// number, for [`Facsimile::unlisten_entry`].
    pub(crate) fn listen(
        &self,
        topic: Topic,
        callback: Py<PyAny>,
        subscribe: impl FnOnce(Weak<Shared>, u64) -> Subscription,
    ) -> u64 {
        let id = {
            let mut refs = locked(&self.shared.refs);
            refs.next += 1;
            refs.next
        };
        let sub = subscribe(Arc::downgrade(&self.shared), id);
        locked(&self.shared.refs).listeners.insert(
            id,
            Listener {
                topic,
                callback,
                _sub: sub,
            },
        );
        id
    }

    /// Removes the listener `listen` numbered `id`.
    pub(crate) fn unlisten_entry(&self, id: u64) {
        // Dropped outside the table's lock, as in `unlisten`.
        let removed = locked(&self.shared.refs).listeners.remove(&id);
        drop(removed);
    }

    /// Removes the listeners of `topic` that are `callback` (or equal to
    /// it: bound methods are new objects at each access); all of the
    /// topic's when `callback` is None. Returns how many.
    pub(crate) fn unlisten(
        &self,
        py: Python<'_>,
        topic: &Topic,
        callback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let candidates: Vec<(u64, Py<PyAny>)> = locked(&self.shared.refs)
            .listeners
            .iter()
            .filter(|(_, l)| &l.topic == topic)
            .map(|(id, l)| (*id, l.callback.clone_ref(py)))
            .collect();
        let mut gone = Vec::new();
        for (id, cb) in candidates {
            let hit = match callback {
                None => true,
                Some(c) => cb.bind(py).is(c) || cb.bind(py).eq(c)?,
            };
            if hit {
                gone.push(id);
            }
        }
        let removed: Vec<Listener> = {
            let mut refs = locked(&self.shared.refs);
            gone.iter()
                .filter_map(|id| refs.listeners.remove(id))
                .collect()
        };
        let n = removed.len();
        drop(removed);
        Ok(n)
    }

    fn conn(&self) -> PyResult<Connection> {
        self.check_open()?;
        locked(&self.shared.conn).clone().ok_or_else(|| {
            PyRuntimeError::new_err("this node is not connected: use facsimile.connect")
        })
    }

    /// Refuses a write (or a lock) once the node's connection is closed.
    pub(crate) fn check_open(&self) -> PyResult<()> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(errors::ClosedError::new_err(
                "this node is closed (close() or abort()): its store can be read, not written",
            ));
        }
        Ok(())
    }

    /// The connection of a node from `connect`; None for one wired by hand.
    fn connection(&self) -> Option<Connection> {
        locked(&self.shared.conn).clone()
    }

    /// Marks the node closed; false when it was closed already.
    fn mark_closed(&self) -> bool {
        !self.shared.closed.swap(true, Ordering::AcqRel)
    }

    /// `close` of a node wired by hand: `leave`, whose goodbye goes out
    /// through `send`.
    fn close_wired(&self) -> PyResult<()> {
        if self.mark_closed() {
            self.node().leave();
        }
        PyResult::Ok(()).sent()
    }
}

/// A listener's entry in its node's table, owned by the closure the
/// engine holds: when the engine drops the closure (the listener was
/// removed, or the object it listens to reclaimed), the table lets go of
/// the callback.
struct Entry {
    shared: Weak<Shared>,
    id: u64,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        // Dropped outside the table's lock: the callback may run code, and
        // the subscription, inactive already, asks the node.
        let removed = locked(&shared.refs).listeners.remove(&self.id);
        drop(removed);
    }
}

/// Runs a listener's callback with the change. Its exceptions cannot
/// travel back through the engine's delivery: see [`listener_failed`].
pub(crate) fn change_listener(
    weak: Weak<Shared>,
    id: u64,
) -> impl Fn(&ChangeEvent) + Send + Sync + 'static {
    let entry = Entry { shared: weak, id };
    move |ev: &ChangeEvent| {
        let (weak, id) = (&entry.shared, entry.id);
        let Some(shared) = weak.upgrade() else { return };
        let _in = InCallback::enter();
        exit::callback(|py| {
            let Some(cb) = shared.callback(py, id) else {
                return;
            };
            let Some(owner) = shared.owner(py) else {
                return;
            };
            let r = Change::new(&owner, ev).and_then(|c| cb.call1(py, (c,)));
            if let Err(e) = r {
                listener_failed(py, e, cb.bind(py));
            }
        });
    }
}

fn store_listener(
    weak: Weak<Shared>,
    id: u64,
) -> impl Fn(&facsimile::Value) + Send + Sync + 'static {
    let entry = Entry { shared: weak, id };
    move |root: &facsimile::Value| {
        let (weak, id) = (&entry.shared, entry.id);
        let Some(shared) = weak.upgrade() else { return };
        let _in = InCallback::enter();
        exit::callback(|py| {
            let Some(cb) = shared.callback(py, id) else {
                return;
            };
            let Some(owner) = shared.owner(py) else {
                return;
            };
            let r = to_py(&owner, root.clone()).and_then(|v| cb.call1(py, (v,)));
            if let Err(e) = r {
                listener_failed(py, e, cb.bind(py));
            }
        });
    }
}

/// One effective change to one object, local or remote.
#[pyclass(module = "facsimile", frozen, weakref)]
pub(crate) struct Change {
    /// The proxy of the object that changed.
    #[pyo3(get)]
    target: Py<PyAny>,
    /// The key (str) or index (int) that changed; None for a change of a
    /// whole array (a method call).
    #[pyo3(get)]
    key: Py<PyAny>,
    /// The value after the change (None where there is none).
    #[pyo3(get)]
    new: Py<PyAny>,
    /// The value before the change (None where there was none).
    #[pyo3(get)]
    old: Py<PyAny>,
    /// None for a change made on this node, else the hostname of the node
    /// that made it.
    #[pyo3(get)]
    origin: Option<String>,
}

impl Change {
    fn new(owner: &Bound<'_, Facsimile>, ev: &ChangeEvent) -> PyResult<Change> {
        let py = owner.py();
        let value = |v: Option<&facsimile::Value>| match v {
            Some(v) => to_py(owner, v.clone()),
            None => Ok(py.None()),
        };
        Ok(Change {
            target: owner.get().object_proxy(owner, ev.target())?,
            key: match ev.prop() {
                Some(Prop::Key(k)) => k.as_str().into_pyobject(py)?.into_any().unbind(),
                Some(Prop::Index(i)) => i.into_pyobject(py)?.into_any().unbind(),
                _ => py.None(),
            },
            new: value(ev.new_value())?,
            old: value(ev.old_value())?,
            origin: match ev.origin() {
                Origin::Remote(p) => Some(p.hostname().to_owned()),
                _ => None,
            },
        })
    }
}

#[pymethods]
impl Change {
    /// Whether the change was made on this node.
    #[getter]
    fn local(&self) -> bool {
        self.origin.is_none()
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        Ok(format!(
            "Change(key={}, new={}, old={}, origin={:?})",
            self.key.bind(py).repr()?,
            self.new.bind(py).repr()?,
            self.old.bind(py).repr()?,
            self.origin
        ))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.target)?;
        visit.call(&self.key)?;
        visit.call(&self.new)?;
        visit.call(&self.old)
    }
}

thread_local! {
    /// How many of this node's callbacks (listeners, the sender) this
    /// thread is running: they run inside the node's pump, which a wait
    /// would keep from sending or delivering what it waits for.
    static IN_CALLBACK: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

thread_local! {
    /// What this node's `send` raised on this thread, for the call that
    /// made it send to raise ([`Sent::sent`]).
    static SEND_ERROR: std::cell::RefCell<Option<PyErr>> = const { std::cell::RefCell::new(None) };
}

thread_local! {
    /// What a listener raised on this thread that is no `Exception`
    /// (`KeyboardInterrupt`, `SystemExit`), for the call that ran the
    /// listener to raise ([`Sent::sent`]).
    static INTERRUPT: std::cell::RefCell<Option<PyErr>> = const { std::cell::RefCell::new(None) };
}

/// Reports what a listener raised. An `Exception` goes to
/// `sys.unraisablehook`: the change it heard is made, and other listeners
/// still hear it. Anything else (Ctrl-C's `KeyboardInterrupt`,
/// `sys.exit()`'s `SystemExit`) asks the program to stop: it is kept for
/// the call on this thread that ran the listener, which raises it once the
/// change is made and sent, and the other listeners have run. On the
/// thread that delivers a connection's messages no call of the user's
/// runs, and a second one of one call is not kept: those go to the hook.
fn listener_failed(py: Python<'_>, e: PyErr, callback: &Bound<'_, PyAny>) {
    let kept = !e.is_instance_of::<PyException>(py)
        && tokio::runtime::Handle::try_current().is_err()
        && INTERRUPT.with(|s| {
            let mut s = s.borrow_mut();
            s.is_none().then(|| *s = Some(e.clone_ref(py))).is_some()
        });
    if !kept {
        e.write_unraisable(py, Some(callback));
    }
}

/// The interrupt a listener raised on this thread, if any, taken for the
/// call that ran it to raise (not inside a callback: the call running
/// that callback raises it).
pub(crate) fn take_interrupt() -> Option<PyErr> {
    if IN_CALLBACK.with(|c| c.get()) > 0 {
        return None;
    }
    INTERRUPT.with(|s| s.borrow_mut().take())
}

/// Keeps what `send` raised for the call on this thread that made it
/// send, as JavaScript's throws to its caller; on the thread that delivers
/// a connection's messages there is no such call, and a second exception
/// of one call is not kept: those go to `sys.unraisablehook`.
fn send_failed(py: Python<'_>, e: PyErr, send: &Bound<'_, PyAny>) {
    let kept = tokio::runtime::Handle::try_current().is_err()
        && SEND_ERROR.with(|s| {
            let mut s = s.borrow_mut();
            s.is_none().then(|| *s = Some(e.clone_ref(py))).is_some()
        });
    if !kept {
        e.write_unraisable(py, Some(send));
    }
}

/// A result of a call into the node, raising what the node's `send`
/// raised during it instead of returning normally.
pub(crate) trait Sent<T> {
    fn sent(self) -> PyResult<T>;
}

impl<T> Sent<T> for PyResult<T> {
    fn sent(self) -> PyResult<T> {
        // Inside a listener, the error is the call's that runs it.
        if IN_CALLBACK.with(|c| c.get()) > 0 {
            return self;
        }
        if let Some(interrupt) = take_interrupt() {
            // The interrupt comes first: what the call would have raised
            // is its context, what the send raised goes to the hook.
            Python::attach(|py| {
                if let Err(e) = self {
                    let _ = interrupt.value(py).setattr("__context__", e.value(py));
                }
                send_error_unraisable();
            });
            return Err(interrupt);
        }
        match SEND_ERROR.with(|s| s.borrow_mut().take()) {
            Some(e) if self.is_ok() => Err(e),
            // The call's own error comes first; the send's goes to the hook.
            Some(e) => {
                Python::attach(|py| e.write_unraisable(py, None));
                self
            }
            None => self,
        }
    }
}

/// Hands what `send` raised on this thread, and a listener's interrupt
/// ([`listener_failed`]), if any, to `sys.unraisablehook`: for a send made
/// where no call can raise it (a guard or a request dropped), so that no
/// later call raises it instead.
pub(crate) fn send_error_unraisable() {
    if IN_CALLBACK.with(|c| c.get()) > 0 {
        return;
    }
    let send = SEND_ERROR.with(|s| s.borrow_mut().take());
    let interrupt = INTERRUPT.with(|s| s.borrow_mut().take());
    if send.is_some() || interrupt.is_some() {
        Python::attach(|py| {
            for e in send.into_iter().chain(interrupt) {
                e.write_unraisable(py, None);
            }
        });
    }
}

impl<T> Sent<T> for Result<T, facsimile::Error> {
    fn sent(self) -> PyResult<T> {
        self.map_err(errors::store).sent()
    }
}

/// Marks the current thread as running a callback until dropped.
struct InCallback;

impl InCallback {
    fn enter() -> InCallback {
        IN_CALLBACK.with(|c| c.set(c.get() + 1));
        InCallback
    }
}

impl Drop for InCallback {
    fn drop(&mut self) {
        IN_CALLBACK.with(|c| c.set(c.get() - 1));
    }
}

/// Fails instead of blocking where what the caller waits for could only
/// arrive through the blocked thread: in a listener or a sender (they run
/// inside the node's pump), and on the thread that delivers connections'
/// messages.
pub(crate) fn refuse_on_io_thread(what: &str) -> PyResult<()> {
    if IN_CALLBACK.with(|c| c.get()) > 0 || tokio::runtime::Handle::try_current().is_ok() {
        return Err(PyRuntimeError::new_err(format!(
            "{what} would block the thread that delivers this node's messages (listeners run on it); use the async form or call it from another thread"
        )));
    }
    Ok(())
}

/// The longest wait: what an infinite (or longer) timeout becomes where a
/// wait needs one; a clock can add it to now.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// A timeout in seconds; None (no timeout) for None and infinity.
fn duration(seconds: Option<f64>) -> PyResult<Option<Duration>> {
    match seconds {
        Some(s) if s == f64::INFINITY => Ok(None),
        Some(s) if s >= FOREVER.as_secs_f64() => Ok(Some(FOREVER)),
        Some(s) => Duration::try_from_secs_f64(s)
            .map(Some)
            .map_err(|e| PyValueError::new_err(format!("{s} seconds: {e}"))),
        None => Ok(None),
    }
}

/// A timeout where the wait needs one: infinity is [`FOREVER`].
fn bounded(seconds: f64) -> PyResult<Duration> {
    Ok(duration(Some(seconds))?.unwrap_or(FOREVER))
}

#[pymethods]
impl Facsimile {
    /// A node with an empty document (the store is None) and no transport:
    /// assign `send` before writing. The hostname decides ties between
    /// concurrent writes (the higher wins). `failure_detection=(heartbeat,
    /// timeout)` in seconds (each at least a millisecond and finite) evicts
    /// peers silent for `timeout`.
    /// `max_message` is the largest message in bytes the node accepts and
    /// its writes may make (64 MiB by default): a larger write raises
    /// `TooLargeError` and changes nothing. `observer=True` makes a node
    /// that only reads: its writes and locks raise `ReadOnlyError`, and its
    /// peers never wait for it (a stalled watcher holds up no lock).
    #[new]
    #[pyo3(signature = (hostname, *, failure_detection=None, max_message=None, observer=false))]
    fn py_new(
        py: Python<'_>,
        hostname: &str,
        failure_detection: Option<(f64, f64)>,
        max_message: Option<usize>,
        observer: bool,
    ) -> PyResult<Py<Facsimile>> {
        facsimile::net::check_hostname(hostname).map_err(errors::net)?;
        let mut config = Config::default();
        if observer {
            config = config.observer();
        }
        if let Some(bytes) = max_message {
            config = config.max_message_size(bytes);
        }
        if let Some((h, t)) = failure_detection {
            // A heartbeat below the timers' resolution would send one at
            // nearly every call into the node, and such a timeout evict
            // every peer at once.
            if ![h, t].iter().all(|s| *s >= 1e-3 && s.is_finite()) {
                return Err(PyValueError::new_err(format!(
                    "failure_detection=(heartbeat, timeout) takes seconds of at least 0.001 and finite, not ({h}, {t})"
                )));
            }
            config = config.failure_detection(bounded(h)?, bounded(t)?);
        }
        Ok(Facsimile::create(py, Node::with_config(hostname, config), None)?.unbind())
    }

    /// The hostname.
    #[getter]
    fn hostname(&self) -> String {
        self.node().hostname().to_owned()
    }

    /// The root of the document: a primitive, or a proxy of a map or an
    /// array. Assigning plain data copies it in; assigning a proxy of this
    /// node stores a reference.
    #[getter]
    fn store(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        to_py(slf, slf.get().node().root())
    }

    #[setter]
    fn set_store(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_open()?;
        let input = to_input(value)?;
        self.node().set_root(input).map(|_| ()).sent()
    }

    /// The function that sends this node's messages (bytes) to the other
    /// nodes, in order; None until assigned. Messages queued before are
    /// sent when it is assigned. An exception it raises is raised by the
    /// call that made it send (a write, `receive`, `sync`, this
    /// assignment), once the change is made here.
    #[getter]
    fn send(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        locked(&self.shared.refs)
            .sender
            .as_ref()
            .map(|s| s.clone_ref(py))
    }

    #[setter]
    fn set_send(&self, send: Bound<'_, PyAny>) -> PyResult<()> {
        if !send.is_callable() {
            return Err(PyTypeError::new_err(format!(
                "send is called with each message: a callable, not {}",
                send.get_type().name()?
            )));
        }
        let send = send.unbind();
        if locked(&self.shared.conn).is_some() {
            return Err(PyRuntimeError::new_err(
                "a connected node sends through its connection",
            ));
        }
        let first = locked(&self.shared.refs).sender.replace(send).is_none();
        if first {
            let weak = Arc::downgrade(&self.shared);
            let probe = Probe::new();
            self.node().set_sender(move |m| {
                let _ = &probe;
                let Some(shared) = weak.upgrade() else { return };
                let _in = InCallback::enter();
                exit::callback(|py| {
                    let Some(send) = locked(&shared.refs)
                        .sender
                        .as_ref()
                        .map(|s| s.clone_ref(py))
                    else {
                        return;
                    };
                    let bytes = PyBytes::new(py, m.as_bytes());
                    if let Err(e) = send.call1(py, (bytes,)) {
                        send_failed(py, e, send.bind(py));
                    }
                });
            });
        }
        PyResult::Ok(()).sent()
    }

    /// Applies a message from another node: the bytes its `send` was given
    /// (a bytearray or memoryview of them will do).
    ///
    /// Raises ReceiveError for bytes that are not a valid message (the node
    /// is unchanged and keeps working), TypeError for what is not bytes.
    fn receive(&self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let r = if let Ok(b) = data.cast::<PyBytes>() {
            self.node().receive(b.as_bytes())
        } else if data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>() {
            let b = data.py().get_type::<PyBytes>().call1((data,))?;
            self.node().receive(b.cast::<PyBytes>()?.as_bytes())
        } else {
            // Not text, nor a list of numbers: what `send` was given.
            return Err(PyTypeError::new_err(format!(
                "a message is bytes (as send received it), not {}",
                data.get_type().name()?
            )));
        };
        r.sent()
    }

    /// Drops the local document and asks the other nodes for it; exactly
    /// one answers. Listen for "ready" to know when it is complete.
    fn sync(&self) -> PyResult<()> {
        self.check_open()?;
        self.node().sync();
        PyResult::Ok(()).sent()
    }

    /// Whether the document is complete (no sync in progress).
    #[getter]
    fn ready(&self) -> bool {
        self.node().is_ready()
    }

    /// The canonical encoding of the document: two nodes that received the
    /// same messages return identical bytes.
    fn snapshot<'py>(&self, py: Python<'py>) -> Bound<'py, PyBytes> {
        PyBytes::new(py, &self.node().snapshot())
    }

    /// The hostnames of the peers known to participate.
    #[getter]
    fn peers(&self) -> Vec<String> {
        self.node()
            .peers()
            .iter()
            .map(|p| p.hostname().to_owned())
            .collect()
    }

    /// Runs the timers that are due (heartbeats, failure detection,
    /// reclamation). Every call into the node does this too.
    fn tick(&self) -> PyResult<()> {
        self.node().tick();
        PyResult::Ok(()).sent()
    }

    /// Says goodbye: the other nodes stop waiting for this one and its
    /// locks are freed at once (its guards are no longer `held`, its
    /// waiting locks fail). From then on its store can be read, as it was
    /// when it left (it ignores what it receives), and its writes and
    /// locks raise ClosedError.
    fn leave(&self) -> PyResult<()> {
        self.check_open()?;
        self.node().leave();
        PyResult::Ok(()).sent()
    }

    /// Declares the node `hostname` gone, as a transport of your own does
    /// when it finds a peer's connection lost for good: every node frees
    /// its locks and stops waiting for it. Returns how many members that
    /// was (0 for a hostname that is not a member, or this node's own).
    fn evict(&self, hostname: &str) -> PyResult<usize> {
        self.check_open()?;
        PyResult::Ok(self.node().evict_host(hostname)).sent()
    }

    /// The value at a JSON pointer (`"/players/0/score"`), or None.
    fn get(slf: &Bound<'_, Self>, pointer: &str) -> PyResult<Py<PyAny>> {
        match slf.get().node().get(pointer) {
            Some(v) => to_py(slf, v),
            None => Ok(slf.py().None()),
        }
    }

    /// Calls `callback` for each event: "change" (callback(change)),
    /// "root_changed" and "ready" (callback(store)). Listeners run after the
    /// change is applied, in the thread that applied it, and may write.
    /// What a listener raises goes to `sys.unraisablehook`, but for
    /// `KeyboardInterrupt` and `SystemExit`, which the call that ran the
    /// listener raises.
    fn on(&self, event: &str, callback: Py<PyAny>) -> PyResult<()> {
        let node = self.node().clone();
        let topic = Topic::Node(event.to_owned());
        match event {
            "change" => self.listen(topic, callback, |w, id| {
                node.on_change(change_listener(w, id))
            }),
            "root_changed" => self.listen(topic, callback, |w, id| {
                let f = store_listener(w, id);
                node.on_root_changed(move |c| f(c.new_value()))
            }),
            "ready" => self.listen(topic, callback, |w, id| {
                node.on_ready(store_listener(w, id))
            }),
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown event {other:?}: \"change\", \"root_changed\" or \"ready\""
                )));
            }
        };
        Ok(())
    }

    /// Removes a listener (every listener of the event without `callback`).
    /// Returns whether one was removed.
    #[pyo3(signature = (event, callback=None))]
    fn off(
        &self,
        py: Python<'_>,
        event: &str,
        callback: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        Ok(self.unlisten(py, &Topic::Node(event.to_owned()), callback)? > 0)
    }

    /// Waits for exclusive write permission on a proxy's object (not on the
    /// objects it contains) and returns the guard (a context manager; its
    /// `token` is the fencing token). Releases the GIL while it waits.
    /// Raises LockTimeoutError (a TimeoutError) after `timeout` seconds (the
    /// request is withdrawn).
    #[pyo3(signature = (obj, timeout=None))]
    fn lock(
        slf: &Bound<'_, Self>,
        obj: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Py<LockGuard>> {
        PendingLock::new(slf, obj, true)?.wait(slf.py(), duration(timeout)?)
    }

    /// As `lock`, but raises LockedError at once when another node, or
    /// another thread or task of this node, holds the lock or waits for it.
    #[pyo3(signature = (obj, timeout=None))]
    fn request(
        slf: &Bound<'_, Self>,
        obj: &Bound<'_, PyAny>,
        timeout: Option<f64>,
    ) -> PyResult<Py<LockGuard>> {
        PendingLock::new(slf, obj, false)?.wait(slf.py(), duration(timeout)?)
    }

    /// A lock being acquired, for `lock_async`/`request_async`.
    fn _pending_lock(
        slf: &Bound<'_, Self>,
        obj: &Bound<'_, PyAny>,
        wait: bool,
    ) -> PyResult<PendingLock> {
        PendingLock::new(slf, obj, wait)
    }

    /// Releases this node's lock on a proxy's object; a request of this
    /// node's still waiting is left waiting. Raises NotLockedError when
    /// nobody holds it and NotOwnerError when another node does.
    fn release(&self, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_open()?;
        let o = crate::proxy::object_of(obj)?;
        self.node().release(o).map_err(errors::lock).sent()
    }

    /// The fencing token of this node's lock on the object, or None.
    /// Raises ForeignHandleError for a proxy of another node.
    fn lock_token(&self, obj: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
        self.node()
            .lock_token(crate::proxy::object_of(obj)?)
            .map_err(errors::lock)
    }

    /// Reads the store as plain data (JSON's kinds, bytes and every
    /// float), passes it to `f`, and sends the writes that make the store
    /// hold what `f` returns: nothing for what is unchanged, one write per
    /// changed value, one insert per appended element, all in one message.
    /// `f` may run again if a message arrived meanwhile. (`update` in the
    /// package wraps this for dataclasses and pydantic models.)
    fn _update_plain(&self, py: Python<'_>, f: Py<PyAny>) -> PyResult<()> {
        self.check_open()?;
        let r = self.node().update(|v: &mut Plain| -> PyResult<()> {
            let arg = plain_to_py(py, v)?;
            let out = f.call1(py, (arg,))?;
            *v = py_to_plain(out.bind(py), 0)?;
            Ok(())
        });
        r.sent()?
    }

    /// Awaitable form of `lock`: `guard = await node.lock_async(obj)` or
    /// `async with node.lock_async(obj) as guard:`. Cancelling the waiting
    /// task withdraws the request.
    fn lock_async<'py>(
        slf: &Bound<'py, Self>,
        obj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let aio = slf.py().import("facsimile._aio")?;
        aio.getattr("PendingLockAwaitable")?.call1((slf, obj, true))
    }

    /// Awaitable form of `request`: raises LockedError at once when another
    /// node holds or waits for the lock.
    fn request_async<'py>(
        slf: &Bound<'py, Self>,
        obj: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let aio = slf.py().import("facsimile._aio")?;
        aio.getattr("PendingLockAwaitable")?
            .call1((slf, obj, false))
    }

    /// An async iterator of this node's changes, for asyncio code (call it
    /// with a running loop): `async for change in node.changes(): ...`.
    /// At most `maxsize` changes wait to be read (no bound for 0): a change
    /// that finds that many is not kept, nor any after it, and the
    /// iteration raises ChangesOverflowError once it gave those it kept.
    #[pyo3(signature = (*, maxsize=10_000))]
    fn changes<'py>(slf: &Bound<'py, Self>, maxsize: isize) -> PyResult<Bound<'py, PyAny>> {
        slf.py()
            .import("facsimile._aio")?
            .getattr("Changes")?
            .call1((slf, maxsize))
    }

    /// Reads the store as `cls` (a dataclass or a pydantic model; taken
    /// from the annotation of `fn`'s parameter when not given; plain data
    /// without either), calls `fn` on it, and sends only the writes that
    /// make the store hold the result: nothing for unchanged fields, one
    /// write per changed field, one insert per appended element, as one
    /// message. `fn` mutates its argument or returns a new value; it may run
    /// again when a message arrived meanwhile.
    #[pyo3(signature = (f, cls=None))]
    fn update<'py>(
        slf: &Bound<'py, Self>,
        f: &Bound<'py, PyAny>,
        cls: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<()> {
        let typed = slf.py().import("facsimile._typed")?;
        typed.getattr("update")?.call1((slf, f, cls))?;
        Ok(())
    }

    /// Waits until every message this node sent before is acknowledged by
    /// the relay (on its disk) or the log. Connected nodes only; releases
    /// the GIL while it waits.
    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        refuse_on_io_thread("flush()")?;
        let conn = self.conn()?;
        let timeout = duration(timeout)?;
        runtime::block_on(py, async move {
            match timeout {
                Some(t) => tokio::time::timeout(t, conn.flush()).await.unwrap_or(Err(
                    facsimile::net::NetError::Timeout {
                        what: "the relay to acknowledge",
                        after: t,
                    },
                )),
                None => conn.flush().await,
            }
        })?
        .map_err(errors::net)
    }

    /// Coroutine form of `flush`.
    fn flush_async(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let conn = self.conn()?;
        runtime::to_asyncio(
            py,
            async move { conn.flush().await.map_err(errors::net) },
            |py, ()| Ok(py.None()),
        )
    }

    /// Leaves the document (locks freed at once), waits up to `timeout`
    /// seconds for the relay to acknowledge everything and closes the
    /// connection; on a node wired by hand (`send`), it is `leave`. The
    /// store can still be read; writes and locks raise ClosedError. Closing
    /// again does nothing; interrupted (Ctrl-C), it drops the connection at
    /// once, as `abort`.
    #[pyo3(signature = (timeout=5.0))]
    fn close(&self, py: Python<'_>, timeout: f64) -> PyResult<()> {
        let t = bounded(timeout)?;
        let Some(conn) = self.connection() else {
            return self.close_wired();
        };
        refuse_on_io_thread("close()")?;
        if !self.mark_closed() {
            return Ok(());
        }
        match runtime::block_on(py, conn.clone().close(t)) {
            Ok(r) => r.map_err(errors::net),
            Err(interrupted) => {
                conn.abort();
                Err(interrupted)
            }
        }
    }

    /// Coroutine form of `close`.
    #[pyo3(signature = (timeout=5.0))]
    fn close_async(&self, py: Python<'_>, timeout: f64) -> PyResult<Py<PyAny>> {
        let t = bounded(timeout)?;
        let conn = match self.connection() {
            Some(conn) => self.mark_closed().then_some(conn),
            None => {
                self.close_wired()?;
                None
            }
        };
        runtime::to_asyncio(
            py,
            async move {
                match conn {
                    Some(conn) => conn.close(t).await.map_err(errors::net),
                    None => Ok(()),
                }
            },
            |py, ()| Ok(py.None()),
        )
    }

    /// Drops the connection at once, without a goodbye, as a crash would:
    /// the relay evicts the node and frees its locks. A node wired by hand
    /// stops as silently: it sends nothing more (its `send` is dropped) and
    /// ignores what it receives, so its peers wait for it until their
    /// failure detection or `evict` finds it gone. The store can still be
    /// read, as after `close`.
    fn abort(&self) -> PyResult<()> {
        match self.connection() {
            Some(conn) if self.mark_closed() => conn.abort(),
            None if self.mark_closed() => {
                // Dropped first, so that not even the goodbye goes out.
                let send = locked(&self.shared.refs).sender.take();
                self.node().leave();
                drop(send);
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether this node is connected through `facsimile.connect` and not
    /// closed.
    #[getter]
    fn connected(&self) -> bool {
        locked(&self.shared.conn).is_some() && !self.shared.closed.load(Ordering::Acquire)
    }

    fn __repr__(&self) -> String {
        format!("Facsimile({:?})", self.node().hostname())
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        // Never blocks: a table in use is skipped this round.
        if let Ok(refs) = self.shared.refs.try_lock() {
            visit.call(&refs.sender)?;
            for l in refs.listeners.values() {
                visit.call(&l.callback)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        let (sender, listeners) = {
            let mut refs = locked(&self.shared.refs);
            (refs.sender.take(), std::mem::take(&mut refs.listeners))
        };
        drop(sender);
        drop(listeners);
    }
}

/// Connects a new node to the document at `addr` (a relay's `host:port` or
/// `ws://host:port/`, or a `nats://` address) and returns it once the
/// document is there (blocking, the GIL released). `read_only=True` joins a
/// relay's document read-only: the node only observes, its writes and
/// locks raise `ReadOnlyError`, and nobody waits for it.
#[pyfunction]
#[pyo3(signature = (addr, hostname, *, doc="default", token="", timeout=30.0, read_only=false))]
pub(crate) fn connect(
    py: Python<'_>,
    addr: &str,
    hostname: &str,
    doc: &str,
    token: &str,
    timeout: f64,
    read_only: bool,
) -> PyResult<Py<Facsimile>> {
    refuse_on_io_thread("connect()")?;
    let options = options(doc, token, timeout, read_only)?;
    let (addr, hostname) = (addr.to_owned(), hostname.to_owned());
    let conn = runtime::block_on(py, facsimile::net::connect(&addr, &hostname, options))?
        .map_err(errors::net)?;
    let node = conn.node().clone();
    Ok(Facsimile::create(py, node, Some(conn))?.unbind())
}

/// Coroutine form of `connect`.
#[pyfunction]
#[pyo3(signature = (addr, hostname, *, doc="default", token="", timeout=30.0, read_only=false))]
pub(crate) fn connect_async(
    py: Python<'_>,
    addr: &str,
    hostname: &str,
    doc: &str,
    token: &str,
    timeout: f64,
    read_only: bool,
) -> PyResult<Py<PyAny>> {
    let options = options(doc, token, timeout, read_only)?;
    let (addr, hostname) = (addr.to_owned(), hostname.to_owned());
    runtime::to_asyncio(
        py,
        async move {
            facsimile::net::connect(&addr, &hostname, options)
                .await
                .map_err(errors::net)
        },
        |py, conn| {
            let node = conn.node().clone();
            Ok(Facsimile::create(py, node, Some(conn))?.into_any().unbind())
        },
    )
}

fn options(
    doc: &str,
    token: &str,
    timeout: f64,
    read_only: bool,
) -> PyResult<facsimile::net::ConnectOptions> {
    let t = bounded(timeout)?;
    Ok(facsimile::net::ConnectOptions::new(doc)
        .token(token)
        .timeouts(t, t)
        .read_only(read_only))
}

/// How many engine states of nodes with a transport are alive (freed when
/// the last reference to the node goes): for memory tests.
#[pyfunction]
pub(crate) fn _engines_alive() -> usize {
    ENGINES_ALIVE.load(Ordering::Acquire)
}
