//! The engine's errors as Python exceptions, one class per meaning of the
//! Rust errors (`facsimile::Error`, `LockError`, `net::NetError`), all
//! under `FacsimileError`, and under the builtin class of their family as
//! well where there is one (`except TimeoutError` catches a timeout). An
//! index past the end is Python's own `IndexError`, so that sequence
//! idioms (`for`, `try: l[i]`) behave.

use facsimile::net::NetError as RustNetError;
use facsimile::{EngineError, Error, LockError};
use pyo3::exceptions::{
    PyConnectionError, PyException, PyIndexError, PyLookupError, PyPermissionError, PyRuntimeError,
    PyTimeoutError, PyTypeError, PyValueError,
};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyTuple, PyType};
use pyo3::{PyErr, PyTypeInfo, create_exception};

create_exception!(
    facsimile,
    FacsimileError,
    PyException,
    "Base class of every error of facsimile."
);
create_exception!(
    facsimile,
    NoTransportError,
    FacsimileError,
    "The node has no transport: assign `send` (or use `connect`) before writing."
);
create_exception!(
    facsimile,
    NotOwnerError,
    FacsimileError,
    "Another node holds the lock on the object written, or released."
);
create_exception!(
    facsimile,
    LockedError,
    FacsimileError,
    "Another node holds or waits for the lock (fail-fast `request`, array methods)."
);
create_exception!(
    facsimile,
    NotLockedError,
    FacsimileError,
    "Nobody holds the lock being released."
);
create_exception!(
    facsimile,
    DetachedError,
    FacsimileError,
    "The object was removed from the document and cannot be referenced again."
);
create_exception!(
    facsimile,
    SyncingError,
    FacsimileError,
    "A sync is in progress; write once the node is ready."
);
create_exception!(
    facsimile,
    EvictedError,
    FacsimileError,
    "The peers evicted this node; it rejoins without its locks."
);
create_exception!(
    facsimile,
    LockLostError,
    FacsimileError,
    "The lock request was lost: this node was evicted or reloaded while it waited."
);
create_exception!(
    facsimile,
    ForeignHandleError,
    FacsimileError,
    "A proxy of another node was stored or locked on this node."
);
create_exception!(
    facsimile,
    CycleError,
    FacsimileError,
    "A tree was asked of a value that contains a cycle."
);
create_exception!(
    facsimile,
    ChangesOverflowError,
    FacsimileError,
    "More changes waited to be read in `node.changes()` than its `maxsize`: those after were not kept, and the iteration ended."
);
create_exception!(
    facsimile,
    NetError,
    FacsimileError,
    "Connecting to a relay or NATS failed, or the connection did."
);
create_exception!(
    facsimile,
    WritesLostError,
    NetError,
    "Unacknowledged writes were dropped (the node was evicted, or the log refused them)."
);

/// An exception class with several bases (pyo3's `create_exception!`
/// takes one): made by `type(name, bases, dict)` once per interpreter.
macro_rules! family_exception {
    ($name:ident($($base:ty),+), $doc:literal) => {
        #[doc = $doc]
        pub(crate) struct $name;

        impl $name {
            pub(crate) fn type_object(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
                static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
                TYPE.get_or_try_init(py, || {
                    make_class(py, stringify!($name), $doc, &[$(<$base>::type_object(py)),+])
                })
                .map(|t| t.bind(py))
            }

            pub(crate) fn new_err(msg: impl Into<String>) -> PyErr {
                let msg = msg.into();
                Python::attach(|py| match Self::type_object(py) {
                    Ok(t) => PyErr::from_type(t.clone(), msg),
                    Err(e) => e,
                })
            }
        }
    };
}

fn make_class(
    py: Python<'_>,
    name: &str,
    doc: &str,
    bases: &[Bound<'_, PyType>],
) -> PyResult<Py<PyType>> {
    let dict = PyDict::new(py);
    dict.set_item("__doc__", doc)?;
    dict.set_item("__module__", "facsimile")?;
    let class = PyType::type_object(py).call1((name, PyTuple::new(py, bases)?, dict))?;
    Ok(class.cast_into::<PyType>()?.unbind())
}

family_exception!(
    UnknownObjectError(FacsimileError, PyLookupError),
    "The object is not in this node's document (never received, or reclaimed)."
);
family_exception!(
    WrongKindError(FacsimileError, PyTypeError),
    "A map was used as an array, or the reverse."
);
family_exception!(
    TooLargeError(FacsimileError, PyValueError),
    "The write's message would be larger than the peers or the transport accept; nothing changed."
);
family_exception!(
    ReceiveError(FacsimileError, PyValueError),
    "An incoming message was refused; the node is unchanged."
);
family_exception!(
    TypeMismatchError(FacsimileError, PyTypeError),
    "The store does not hold what a typed read or update expects."
);
family_exception!(
    ReadOnlyError(FacsimileError, PyPermissionError),
    "The node only observes (made with observer=True, or connected read_only=True): it may not write or lock."
);
family_exception!(
    LockTimeoutError(FacsimileError, PyTimeoutError),
    "A lock was not granted within its timeout; the request is withdrawn."
);
family_exception!(
    ConnectError(NetError, PyConnectionError),
    "The relay or NATS server could not be reached, or refused the connection."
);
family_exception!(
    ClosedError(NetError, PyConnectionError),
    "The node is closed: close() or abort() was called, its connection failed for good, or it left the document (leave())."
);
family_exception!(
    NetTimeoutError(NetError, PyTimeoutError),
    "A connection took longer than its timeout (to connect, to acknowledge)."
);

/// The Rust message names `set_sender`; a Python node assigns `send`.
const NO_TRANSPORT: &str =
    "this node has no transport: assign node.send (or use facsimile.connect) before writing";

/// An engine refusal as the Python exception of the same meaning.
fn engine(e: &EngineError, msg: String) -> PyErr {
    use EngineError as E;
    match e {
        E::UnknownObject(_) => UnknownObjectError::new_err(msg),
        E::WrongKind { .. } => WrongKindError::new_err(msg),
        E::IndexOutOfBounds { .. } => PyIndexError::new_err(msg),
        E::Detached(_) => DetachedError::new_err(msg),
        E::Syncing => SyncingError::new_err(msg),
        E::NotOwner(_) => NotOwnerError::new_err(msg),
        E::Locked(_) => LockedError::new_err(msg),
        E::Evicted => EvictedError::new_err(msg),
        E::NotLocked(_) => NotLockedError::new_err(msg),
        E::TooLarge { .. } => TooLargeError::new_err(msg),
        E::Observer => ReadOnlyError::new_err(msg),
        // The node left: as after close(), its store reads, not writes.
        E::Left => ClosedError::new_err(msg),
        _ => FacsimileError::new_err(msg),
    }
}

/// A store error as a Python exception.
pub(crate) fn store(e: Error) -> PyErr {
    let msg = e.to_string();
    match &e {
        Error::NoSender => NoTransportError::new_err(NO_TRANSPORT),
        Error::Engine { error, .. } => engine(error, msg),
        Error::ForeignHandle(_) => ForeignHandleError::new_err(msg),
        Error::Cycle(_) => CycleError::new_err(msg),
        Error::Type { .. } | Error::Convert { .. } | Error::Path { .. } => {
            TypeMismatchError::new_err(msg)
        }
        Error::Receive(_) => ReceiveError::new_err(msg),
        _ => FacsimileError::new_err(msg),
    }
}

/// A lock error as a Python exception.
pub(crate) fn lock(e: LockError) -> PyErr {
    let msg = e.to_string();
    match &e {
        LockError::Locked { .. } => LockedError::new_err(msg),
        LockError::NotOwner { .. } => NotOwnerError::new_err(msg),
        LockError::NotLocked { .. } => NotLockedError::new_err(msg),
        LockError::UnknownObject(_) => UnknownObjectError::new_err(msg),
        LockError::ForeignHandle => ForeignHandleError::new_err(msg),
        LockError::NoSender => NoTransportError::new_err(NO_TRANSPORT),
        LockError::Syncing => SyncingError::new_err(msg),
        LockError::Evicted => EvictedError::new_err(msg),
        LockError::Lost { .. } => LockLostError::new_err(msg),
        // As `refuse_on_io_thread` refuses the wait before it polls.
        LockError::InListener => PyRuntimeError::new_err(
            "waiting for a lock would block the thread that delivers this node's messages \
             (listeners run on it); use the async form or call it from another thread",
        ),
        LockError::Engine(e) => engine(e, msg),
        _ => FacsimileError::new_err(msg),
    }
}

/// A connection error as a Python exception.
pub(crate) fn net(e: RustNetError) -> PyErr {
    let msg = e.to_string();
    match &e {
        RustNetError::Connect { .. }
        | RustNetError::Refused(_)
        | RustNetError::Tls { .. }
        | RustNetError::NotARelay { .. }
        | RustNetError::Nats { .. }
        | RustNetError::StreamRefused { .. } => ConnectError::new_err(msg),
        RustNetError::Closed => ClosedError::new_err(msg),
        RustNetError::WritesLost(_) => WritesLostError::new_err(msg),
        RustNetError::Timeout { .. } => NetTimeoutError::new_err(msg),
        RustNetError::HostnameTooLong { .. } => PyValueError::new_err(msg),
        _ => NetError::new_err(msg),
    }
}

/// Adds the exception classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("FacsimileError", py.get_type::<FacsimileError>())?;
    m.add("NoTransportError", py.get_type::<NoTransportError>())?;
    m.add("NotOwnerError", py.get_type::<NotOwnerError>())?;
    m.add("LockedError", py.get_type::<LockedError>())?;
    m.add("NotLockedError", py.get_type::<NotLockedError>())?;
    m.add("UnknownObjectError", UnknownObjectError::type_object(py)?)?;
    m.add("WrongKindError", WrongKindError::type_object(py)?)?;
    m.add("DetachedError", py.get_type::<DetachedError>())?;
    m.add("SyncingError", py.get_type::<SyncingError>())?;
    m.add("EvictedError", py.get_type::<EvictedError>())?;
    m.add("TooLargeError", TooLargeError::type_object(py)?)?;
    m.add("LockLostError", py.get_type::<LockLostError>())?;
    m.add("ForeignHandleError", py.get_type::<ForeignHandleError>())?;
    m.add("CycleError", py.get_type::<CycleError>())?;
    m.add(
        "ChangesOverflowError",
        py.get_type::<ChangesOverflowError>(),
    )?;
    m.add("ReceiveError", ReceiveError::type_object(py)?)?;
    m.add("TypeMismatchError", TypeMismatchError::type_object(py)?)?;
    m.add("NetError", py.get_type::<NetError>())?;
    m.add("ConnectError", ConnectError::type_object(py)?)?;
    m.add("ClosedError", ClosedError::type_object(py)?)?;
    m.add("WritesLostError", py.get_type::<WritesLostError>())?;
    m.add("NetTimeoutError", NetTimeoutError::type_object(py)?)?;
    m.add("LockTimeoutError", LockTimeoutError::type_object(py)?)?;
    m.add("ReadOnlyError", ReadOnlyError::type_object(py)?)?;
    Ok(())
}
