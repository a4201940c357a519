//! The interpreter's exit. The engine calls into Python (listeners, a
//! node's `send`, asyncio wake-ups) from threads the interpreter may stop
//! at any moment once it finalizes: the `facsimile-io` thread, which
//! Python did not start (attaching it then panics, "the Python interpreter
//! is not initialized"), and daemon threads, which CPython ends where they
//! stand when they next take the GIL (through the Rust frames of a
//! listener's call, which aborts the process).
//!
//! So the exit starts before finalization: an `atexit` hook, registered as
//! the module loads (it runs after the hooks registered later, a user's
//! that closes a node included), refuses every later callback and waits,
//! the GIL released, for those running to return. What the engine
//! delivers from then on changes the store without telling Python.

use std::cell::Cell;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// How long the exit waits for the callbacks running to return: one that
/// does not (it waits for something that will not come) is left to
/// CPython's fate for running threads.
const PATIENCE: Duration = Duration::from_secs(2);

struct Gate {
    exiting: bool,
    /// Callbacks running, on every thread.
    running: usize,
}

static GATE: Mutex<Gate> = Mutex::new(Gate {
    exiting: false,
    running: 0,
});
static RETURNED: Condvar = Condvar::new();

thread_local! {
    /// Callbacks running on this thread: the exit does not wait for those
    /// of the thread that runs it.
    static RUNNING_HERE: Cell<usize> = const { Cell::new(0) };
}

fn gate() -> MutexGuard<'static, Gate> {
    GATE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Counts a callback running until dropped.
struct Running;

impl Drop for Running {
    fn drop(&mut self) {
        RUNNING_HERE.with(|n| n.set(n.get() - 1));
        let mut g = gate();
        g.running -= 1;
        if g.exiting {
            RETURNED.notify_all();
        }
    }
}

/// Runs `f` attached to Python for a callback of the engine's, on any
/// thread; None, without calling it, once the interpreter exits.
pub(crate) fn callback<R>(f: impl FnOnce(Python<'_>) -> R) -> Option<R> {
    {
        let mut g = gate();
        if g.exiting {
            return None;
        }
        g.running += 1;
    }
    RUNNING_HERE.with(|n| n.set(n.get() + 1));
    let _running = Running;
    // Interpreters finalized without `atexit` (embedders): refused there.
    Python::try_attach(f)
}

/// The `atexit` hook: refuses callbacks from now on and waits up to
/// [`PATIENCE`] for those running on other threads to return.
#[pyfunction]
pub(crate) fn _at_exit(py: Python<'_>) {
    let here = RUNNING_HERE.with(Cell::get);
    py.detach(|| {
        let deadline = Instant::now() + PATIENCE;
        let mut g = gate();
        g.exiting = true;
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
