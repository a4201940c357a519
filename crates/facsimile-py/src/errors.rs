//! The engine's errors as Python exceptions, one class per meaning of the
//! Rust errors (`facsimile::Error`, `LockError`, `net::NetError`), all
//! under `FacsimileError`. An index past the end is Python's own
//! `IndexError`, so that sequence idioms (`for`, `try: l[i]`) behave.

use facsimile::net::NetError as RustNetError;
use facsimile::{EngineError, Error, LockError};
use pyo3::exceptions::{PyException, PyIndexError};
use pyo3::prelude::*;
use pyo3::{PyErr, create_exception};

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
    UnknownObjectError,
    FacsimileError,
    "The object is not in this node's document (never received, or reclaimed)."
);
create_exception!(
    facsimile,
    WrongKindError,
    FacsimileError,
    "A map was used as an array, or the reverse."
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
    TooLargeError,
    FacsimileError,
    "The write's message would be larger than the peers or the transport accept; nothing changed."
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
    ReceiveError,
    FacsimileError,
    "An incoming message was refused; the node is unchanged."
);
create_exception!(
    facsimile,
    TypeMismatchError,
    FacsimileError,
    "The store does not hold what a typed read or update expects."
);
create_exception!(
    facsimile,
    NetError,
    FacsimileError,
    "Connecting to a relay or NATS failed, or the connection did."
);
create_exception!(
    facsimile,
    ConnectError,
    NetError,
    "The relay or NATS server could not be reached, or refused the connection."
);
create_exception!(
    facsimile,
    ClosedError,
    NetError,
    "The connection is closed."
);
create_exception!(
    facsimile,
    WritesLostError,
    NetError,
    "Unacknowledged writes were dropped (the node was evicted, or the log refused them)."
);
create_exception!(
    facsimile,
    NetTimeoutError,
    NetError,
    "Something took longer than its timeout."
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
        | RustNetError::NotARelay { .. } => ConnectError::new_err(msg),
        RustNetError::Closed => ClosedError::new_err(msg),
        RustNetError::WritesLost(_) => WritesLostError::new_err(msg),
        RustNetError::Timeout { .. } => NetTimeoutError::new_err(msg),
        RustNetError::HostnameTooLong { .. } => pyo3::exceptions::PyValueError::new_err(msg),
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
    m.add("UnknownObjectError", py.get_type::<UnknownObjectError>())?;
    m.add("WrongKindError", py.get_type::<WrongKindError>())?;
    m.add("DetachedError", py.get_type::<DetachedError>())?;
    m.add("SyncingError", py.get_type::<SyncingError>())?;
    m.add("EvictedError", py.get_type::<EvictedError>())?;
    m.add("TooLargeError", py.get_type::<TooLargeError>())?;
    m.add("LockLostError", py.get_type::<LockLostError>())?;
    m.add("ForeignHandleError", py.get_type::<ForeignHandleError>())?;
    m.add("CycleError", py.get_type::<CycleError>())?;
    m.add("ReceiveError", py.get_type::<ReceiveError>())?;
    m.add("TypeMismatchError", py.get_type::<TypeMismatchError>())?;
    m.add("NetError", py.get_type::<NetError>())?;
    m.add("ConnectError", py.get_type::<ConnectError>())?;
    m.add("ClosedError", py.get_type::<ClosedError>())?;
    m.add("WritesLostError", py.get_type::<WritesLostError>())?;
    m.add("NetTimeoutError", py.get_type::<NetTimeoutError>())?;
    Ok(())
}
