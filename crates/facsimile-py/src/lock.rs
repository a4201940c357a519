//! Locks: a pending request that a thread waits on (the GIL released) or
//! that asyncio polls, and the guard a grant gives.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::Thread;
use std::time::{Duration, Instant};

use facsimile::{LockFuture, Node};
use pyo3::PyTraverseError;
use pyo3::exceptions::PyRuntimeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use crate::errors;
use crate::node::{Facsimile, Sent, refuse_on_io_thread, send_error_unraisable, take_interrupt};
use crate::proxy::object_of;
use crate::runtime;

/// How often a waiting thread runs the node's timers: a node without a
/// connection has no task to run them, and a lock can wait on a peer's
/// eviction by failure detection.
const TICK: Duration = Duration::from_millis(50);

struct ThreadWaker(Thread);

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Wakes an asyncio task: schedules `callback` on its loop.
struct LoopWaker {
    event_loop: Py<PyAny>,
    callback: Py<PyAny>,
}

impl Wake for LoopWaker {
    fn wake(self: Arc<Self>) {
        crate::exit::wake(&self.event_loop, |py| {
            Ok((self.callback.clone_ref(py), PyTuple::empty(py).unbind()))
        });
    }
}

/// A lock request not yet granted. Dropping it withdraws the request.
#[pyclass(module = "facsimile")]
pub(crate) struct PendingLock {
    owner: Py<Facsimile>,
    object: Py<PyAny>,
    future: Option<LockFuture>,
}

impl PendingLock {
    pub(crate) fn new(
        owner: &Bound<'_, Facsimile>,
        obj: &Bound<'_, PyAny>,
        wait: bool,
    ) -> PyResult<PendingLock> {
        owner.get().check_open()?;
        let o = object_of(obj)?;
        let node = owner.get().node();
        let future = if wait { node.lock(o) } else { node.request(o) };
        Ok(PendingLock {
            owner: owner.clone().unbind(),
            object: obj.clone().unbind(),
            future: Some(future),
        })
    }

    fn guard(&self, py: Python<'_>, g: facsimile::LockGuard) -> PyResult<Py<LockGuard>> {
        Py::new(
            py,
            LockGuard {
                node: self.owner.get().node().clone(),
                object: self.object.clone_ref(py),
                token: g.token(),
                guard: Mutex::new(Some(g)),
            },
        )
    }

    /// Blocks this thread (the GIL released) until the lock is granted,
    /// refused, or `timeout` passes.
    pub(crate) fn wait(
        mut self,
        py: Python<'_>,
        timeout: Option<Duration>,
    ) -> PyResult<Py<LockGuard>> {
        let Some(mut future) = self.future.take() else {
            return Err(PyRuntimeError::new_err("the lock request was already used"));
        };
        let node = self.owner.get().node().clone();
        let first = poll_once(&mut future, &Waker::noop().clone());
        let r = match first {
            Poll::Ready(r) => Some(r),
            Poll::Pending => {
                refuse_on_io_thread("waiting for a lock")?;
                block(py, &mut future, &node, timeout)?
            }
        };
        match r {
            Some(Ok(g)) => self.guard(py, g),
            Some(Err(e)) => Err(errors::lock(e)),
            None => Err(errors::LockTimeoutError::new_err(
                "the lock was not granted in time; the request is withdrawn",
            )),
        }
        .sent()
    }
}

impl Drop for PendingLock {
    fn drop(&mut self) {
        // A request dropped waiting is withdrawn: a message.
        drop(self.future.take());
        send_error_unraisable();
    }
}

fn poll_once(
    future: &mut LockFuture,
    waker: &Waker,
) -> Poll<Result<facsimile::LockGuard, facsimile::LockError>> {
    Pin::new(future).poll(&mut Context::from_waker(waker))
}

/// Waits for the grant, the GIL released, running the node's timers every
/// [`TICK`] and the signal handlers every [`runtime::SIGNALS`]: a handler's
/// exception (Ctrl-C) ends the wait, and dropping the future then
/// withdraws the request.
fn block(
    py: Python<'_>,
    future: &mut LockFuture,
    node: &Node,
    timeout: Option<Duration>,
) -> PyResult<Option<Result<facsimile::LockGuard, facsimile::LockError>>> {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let step = py.detach(|| {
            let signals = Instant::now() + runtime::SIGNALS;
            loop {
                if let Poll::Ready(r) = poll_once(future, &waker) {
                    return Some(Some(r));
                }
                let now = Instant::now();
                let mut wait = TICK.min(signals.saturating_duration_since(now));
                if let Some(d) = deadline {
                    if now >= d {
                        return Some(None);
                    }
                    wait = wait.min(d - now);
                }
                if now >= signals {
                    return None;
                }
                std::thread::park_timeout(wait);
                node.tick();
            }
        });
        match step {
            Some(done) => return Ok(done),
            None => py.check_signals()?,
        }
    }
}

#[pymethods]
impl PendingLock {
    /// Polls the request: the guard once granted, else None, and `callback`
    /// is scheduled on `event_loop` when the lock's state next changes.
    fn poll(
        &mut self,
        py: Python<'_>,
        event_loop: Py<PyAny>,
        callback: Py<PyAny>,
    ) -> PyResult<Option<Py<LockGuard>>> {
        let Some(future) = self.future.as_mut() else {
            return Err(PyRuntimeError::new_err("the lock request was already used"));
        };
        let waker = Waker::from(Arc::new(LoopWaker {
            event_loop,
            callback,
        }));
        match poll_once(future, &waker) {
            Poll::Pending => Ok(None),
            Poll::Ready(r) => {
                self.future = None;
                match r {
                    Ok(g) => Ok(Some(self.guard(py, g)?)),
                    Err(e) => Err(errors::lock(e)),
                }
            }
        }
        .sent()
    }

    /// Withdraws the request if it is still waiting.
    fn cancel(&mut self) {
        // Called as a task is cancelled: what the withdrawal's send raised
        // must not replace the cancellation.
        self.future = None;
        send_error_unraisable();
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.owner)?;
        visit.call(&self.object)
    }
}

/// A granted lock: exclusive write permission on one object until
/// released. A context manager (`with node.lock(obj) as guard:`); leaving
/// the block releases it.
#[pyclass(module = "facsimile", frozen, weakref)]
pub(crate) struct LockGuard {
    node: Node,
    /// The proxy of the locked object.
    #[pyo3(get)]
    object: Py<PyAny>,
    /// The fencing token: it increases with every grant of the object, on
    /// every node.
    #[pyo3(get)]
    token: u64,
    guard: Mutex<Option<facsimile::LockGuard>>,
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // A guard dropped holding its lock releases it: a message.
        drop(
            self.guard
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .take(),
        );
        send_error_unraisable();
    }
}

#[pymethods]
impl LockGuard {
    /// Whether this node still holds the lock (false once released, or
    /// lost because the peers evicted this node).
    #[getter]
    fn held(&self) -> bool {
        self.guard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|g| g.is_held())
    }

    /// Releases the lock. Raises NotOwnerError or NotLockedError when it was
    /// lost meanwhile; releasing twice does nothing.
    fn release(&self) -> PyResult<()> {
        let g = self.guard.lock().unwrap_or_else(|e| e.into_inner()).take();
        match g {
            Some(g) => g.release().map_err(errors::lock),
            None => Ok(()),
        }
        .sent()
    }

    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }

    #[pyo3(signature = (*exc))]
    fn __exit__(&self, exc: &Bound<'_, pyo3::types::PyTuple>) -> PyResult<bool> {
        // A lock lost meanwhile needs no release.
        let g = self.guard.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(g);
        // The block's own exception comes first, but for an interrupt a
        // listener raised as the lock was released (Python makes the
        // block's exception its context).
        if exc.get_item(0).is_ok_and(|t| !t.is_none()) {
            let interrupt = take_interrupt();
            send_error_unraisable();
            return match interrupt {
                Some(i) => Err(i),
                None => Ok(false),
            };
        }
        PyResult::Ok(false).sent()
    }

    fn __repr__(&self) -> String {
        format!(
            "LockGuard(token={}, held={}, node={:?})",
            self.token,
            self.held(),
            self.node.hostname()
        )
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.object)
    }
}
