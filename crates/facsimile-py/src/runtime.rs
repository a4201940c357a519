//! The tokio runtime of connections: one worker thread, `facsimile-io`,
//! runs every connection's tasks and the listeners of remote changes.

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use pyo3::prelude::*;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

/// The runtime, started at first use.
pub(crate) fn get() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("facsimile-io")
            .enable_all()
            .build()
            .expect("the facsimile I/O runtime starts")
    })
}

/// How long a blocking wait keeps the GIL released before it runs the
/// signal handlers (Ctrl-C's KeyboardInterrupt comes within it).
pub(crate) const SIGNALS: Duration = Duration::from_millis(50);

/// Runs `future` on this thread, the GIL released, until it completes or
/// a signal handler raises (Ctrl-C): then the future is dropped, giving up
/// what it waited for, and the handler's exception is returned.
pub(crate) fn block_on<F>(py: Python<'_>, future: F) -> PyResult<F::Output>
where
    F: Future + Send,
    F::Output: Send,
{
    let mut future = std::pin::pin!(future);
    loop {
        // The timer is made inside the runtime, which it needs.
        let step = py.detach(|| {
            get().block_on(async { tokio::time::timeout(SIGNALS, future.as_mut()).await })
        });
        match step {
            Ok(out) => return Ok(out),
            Err(_) => py.check_signals()?,
        }
    }
}

/// Runs `future` on the runtime and returns an asyncio future of the
/// running loop that resolves with its converted output.
pub(crate) fn to_asyncio<T: Send + 'static>(
    py: Python<'_>,
    future: impl Future<Output = PyResult<T>> + Send + 'static,
    convert: impl FnOnce(Python<'_>, T) -> PyResult<Py<PyAny>> + Send + 'static,
) -> PyResult<Py<PyAny>> {
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let fut = event_loop.call_method0("create_future")?;
    let resolve = py.import("facsimile._aio")?.getattr("resolve")?.unbind();
    let (l, f) = (event_loop.unbind(), fut.clone().unbind());
    get().spawn(async move {
        let r = future.await;
        crate::exit::wake(&l, |py| {
            let (ok, value) = match r.and_then(|v| convert(py, v)) {
                Ok(v) => (true, v),
                Err(e) => (false, e.into_value(py).into_any()),
            };
            let args = (f, ok, value).into_pyobject(py)?;
            Ok((resolve, args.unbind()))
        });
    });
    Ok(fut.unbind())
}
