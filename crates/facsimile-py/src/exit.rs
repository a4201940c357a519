//! The interpreter's exit. The engine calls into Python (listeners, a
//! node's `send`, asyncio wake-ups) from threads the interpreter may stop
//! at any moment once it finalizes: the `facsimile-io` thread, which
//! Python did not start (attaching it then panics, "the Python interpreter
//! is not initialized"), and daemon threads, which CPython ends where they
//! stand when they next take the GIL (through the Rust frames of a
//! callback, which aborts the process).
//!
//! Only the thread that runs the `atexit` hooks finalizes the interpreter,
//! so nothing ends it inside a callback. An `atexit` hook, registered as
//! the module loads (it runs after the hooks registered later, a user's
//! that closes a node included, and before those registered earlier),
//! therefore refuses the listeners and sends of every other thread from
//! then on (a daemon thread's, `facsimile-io`'s: nobody waits for them)
//! and waits briefly, the GIL released, for those running there to
//! return; on its own thread they keep running, so the work of the hooks
//! after it (a write, `close`, `receive`) still sends and notifies. An
//! asyncio wake-up runs on any thread until the interpreter finalizes:
//! a hook's `asyncio.run(node.flush_async())` waits for the one
//! `facsimile-io` makes. The loop resumes that wait only once the waking
//! thread has left the interpreter (`call_soon_threadsafe` releases the
//! GIL as it writes to the loop's pipe, and the hook could otherwise
//! return, and the interpreter finalize, before that thread takes it
//! back). What the engine delivers to a refused callback changes the
//! store without telling Python.

use std::cell::Cell;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, ThreadId};
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyTuple;

/// How long the exit waits for the listeners and sends running on other
/// threads to return. The wait only helps one that returns within it:
/// one that runs on (it waits for something that will not come) is left
/// to CPython's fate for running threads, and waiting longer for it would
/// only delay every such exit. A listener or a send that does its work
/// returns in microseconds; this leaves room for its thread to be
/// scheduled and to take the GIL on a loaded machine.
const PATIENCE: Duration = Duration::from_millis(250);

struct Gate {
    /// The thread that ran the `atexit` hook, once it ran.
    exiting: Option<ThreadId>,
    /// Listeners and sends running, on every thread.
    running: usize,
}

static GATE: Mutex<Gate> = Mutex::new(Gate {
    exiting: None,
    running: 0,
});
static RETURNED: Condvar = Condvar::new();

thread_local! {
    /// Listeners and sends running on this thread: the exit does not wait
    /// for those of the thread that runs it.
    static RUNNING_HERE: Cell<usize> = const { Cell::new(0) };
}

fn gate() -> MutexGuard<'static, Gate> {
    GATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts a listener or a send running until dropped.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING_HERE.with(|n| n.set(n.get() - 1));
        let mut g = gate();
        g.running -= 1;
        if g.exiting.is_some() {
            RETURNED.notify_all();
        }
    }
}

/// Runs `f` attached to Python for a listener or a send, on any thread;
/// None, without calling it, on a thread other than the exiting one once
/// the interpreter exits (from [`_at_exit`] on), and on every thread once
/// it finalizes.
pub(crate) fn callback<R>(f: impl FnOnce(Python<'_>) -> R) -> Option<R> {
    {
        let mut g = gate();
        if g.exiting.is_some_and(|t| t != thread::current().id()) {
            return None;
        }
        g.running += 1;
    }
    RUNNING_HERE.with(|n| n.set(n.get() + 1));
    let _running = Running;
    // Interpreters finalized without `atexit` (embedders): refused there.
    Python::try_attach(f)
}

/// How long a loop waits for the thread that woke it to leave the
/// interpreter: that thread only has to take the GIL back and return.
const LEAVING: Duration = Duration::from_secs(1);

/// Wakes an asyncio loop from any thread: schedules the callback and
/// arguments `make` returns with `call_soon_threadsafe`, to run once this
/// thread has left the interpreter. Refused (nothing is called) once the
/// interpreter finalizes; a closed loop has nobody left to wake.
pub(crate) fn wake(
    event_loop: &Py<PyAny>,
    make: impl FnOnce(Python<'_>) -> PyResult<(Py<PyAny>, Py<PyTuple>)>,
) {
    let left = Arc::new(Left::default());
    // `Py_IsInitialized` is false from finalization on. A wake-up that
    // checks just before and runs into it is the race left: one short
    // call that no wait of the program's is resumed by (this loop's is
    // resumed after it).
    Python::try_attach(|py| {
        let r = make(py).and_then(|(callback, args)| {
            let woken = Woken {
                left: left.clone(),
                callback,
                args,
            };
            event_loop.call_method1(py, "call_soon_threadsafe", (woken,))
        });
        drop(r);
    });
    *left.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
    left.returned.notify_all();
}

/// Set once the thread that woke a loop has left the interpreter.
#[derive(Default)]
struct Left {
    done: Mutex<bool>,
    returned: Condvar,
}

/// What a wake-up schedules on the loop: its callback, run once the
/// waking thread has left the interpreter.
#[pyclass(module = "facsimile", frozen)]
struct Woken {
    left: Arc<Left>,
    callback: Py<PyAny>,
    args: Py<PyTuple>,
}

#[pymethods]
impl Woken {
    fn __call__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        py.detach(|| {
            let done = self.left.done.lock().unwrap_or_else(|e| e.into_inner());
            drop(
                self.left
                    .returned
                    .wait_timeout_while(done, LEAVING, |done| !*done),
            );
        });
        self.callback.call1(py, self.args.bind(py))
    }
}

/// The `atexit` hook: refuses the listeners and sends of other threads
/// from now on and waits up to [`PATIENCE`] for those running there to
/// return.
#[pyfunction]
pub(crate) fn _at_exit(py: Python<'_>) {
    let here = RUNNING_HERE.with(Cell::get);
    let me = thread::current().id();
    py.detach(|| {
        let deadline = Instant::now() + PATIENCE;
        let mut g = gate();
        g.exiting = Some(me);
        while g.running > here {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            g = RETURNED
                .wait_timeout(g, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    });
}

/// Registers [`_at_exit`] with `atexit`.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let hook = wrap_pyfunction!(_at_exit, m)?;
    m.py().import("atexit")?.call_method1("register", (hook,))?;
    Ok(())
}
