//! The tokio runtime of connections: one worker thread, `facsimile-io`,
//! runs every connection's tasks and the listeners of remote changes.

use std::future::Future;
use std::sync::OnceLock;

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
        Python::attach(|py| {
            let (ok, value) = match r.and_then(|v| convert(py, v)) {
                Ok(v) => (true, v),
                Err(e) => (false, e.into_value(py).into_any()),
            };
            // A closed loop has nobody left to tell.
            let _ = l.call_method1(py, "call_soon_threadsafe", (resolve, f, ok, value));
        });
    });
    Ok(fut.unbind())
}
