//! The Python package `facsimile` (module `facsimile._facsimile`): the
//! engine's nodes, proxies, locks and connections for Python, through the
//! `facsimile` crate. No replication logic is written in Python; see the
//! package's docs in `python/facsimile/__init__.py` and DESIGN.md, "Python".

mod convert;
mod errors;
mod exit;
mod lock;
mod node;
mod proxy;
mod runtime;

use pyo3::prelude::*;

#[pymodule]
fn _facsimile(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<node::Facsimile>()?;
    m.add_class::<node::Change>()?;
    m.add_class::<proxy::MapProxy>()?;
    m.add_class::<proxy::ListProxy>()?;
    m.add_class::<lock::LockGuard>()?;
    m.add_class::<lock::PendingLock>()?;
    m.add_function(wrap_pyfunction!(node::connect, m)?)?;
    m.add_function(wrap_pyfunction!(node::connect_async, m)?)?;
    m.add_function(wrap_pyfunction!(node::_engines_alive, m)?)?;
    errors::register(m)?;
    exit::register(m)?;
    Ok(())
}
