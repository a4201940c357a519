//! Errors of store operations.

use facsimile_core::{ObjectId, ObjectKind, ReceiveError};

/// Why a store operation was refused. A refused write changes nothing and
/// sends nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node has no transport: call [`crate::Node::set_sender`] (or join a
    /// network) before writing.
    #[error("this node has no transport: call set_sender (or join a network) before writing")]
    NoSender,
    /// The object is not in this node's document: it was never received, or
    /// it was reclaimed after it became unreachable from the root.
    #[error(
        "object {0:?} is not in this document (never received, or reclaimed after it was removed)"
    )]
    UnknownObject(ObjectId),
    /// A map where an array was expected, or the reverse.
    #[error("object {object:?} is a {found:?}, not a {expected:?}")]
    WrongKind {
        /// The object.
        object: ObjectId,
        /// The kind the operation needs.
        expected: ObjectKind,
        /// The kind it has.
        found: ObjectKind,
    },
    /// An array index past the end.
    #[error("index {index} is out of bounds for an array of length {len}")]
    IndexOutOfBounds {
        /// The index asked for.
        index: usize,
        /// The array's length.
        len: usize,
    },
    /// A reference to an object that was removed from the document. Insert
    /// an object at its new place before removing it from the old one, or
    /// insert a copy.
    #[error(
        "object {0:?} was removed from the document and cannot be referenced again; \
         insert it at its new place before removing it, or insert a copy"
    )]
    Detached(ObjectId),
    /// A sync is in progress; write once the node is ready.
    #[error("a sync is in progress; write once the node is ready (on_ready)")]
    Syncing,
    /// A handle of another node was passed to this node.
    #[error(
        "a handle of node {0} was passed to another node; read its value and write that instead"
    )]
    ForeignHandle(String),
    /// A deep conversion met a cycle.
    #[error("the value contains a cycle through object {0:?} and cannot become a tree")]
    Cycle(ObjectId),
    /// Another node holds the lock on the object (map writes).
    #[error("Object is not owned by current host (another node holds the lock on {0:?})")]
    NotOwner(ObjectId),
    /// The array is locked by another node (array methods).
    #[error("array {0:?} is locked by another node")]
    Locked(ObjectId),
    /// Any other refusal of the engine.
    #[error("{0}")]
    Refused(String),
    /// An incoming message was refused; the node is unchanged.
    #[error(transparent)]
    Receive(#[from] ReceiveError),
}

impl From<facsimile_core::Error> for Error {
    fn from(e: facsimile_core::Error) -> Self {
        use facsimile_core::Error as E;
        match e {
            E::UnknownObject(o) => Error::UnknownObject(o),
            E::WrongKind {
                object,
                expected,
                found,
            } => Error::WrongKind {
                object,
                expected,
                found,
            },
            E::IndexOutOfBounds { index, len, .. } => Error::IndexOutOfBounds { index, len },
            E::Detached(o) => Error::Detached(o),
            E::Syncing => Error::Syncing,
            E::NotOwner(o) => Error::NotOwner(o),
            E::Locked(o) => Error::Locked(o),
            // Permutations are built by this crate; a mismatch means the
            // array changed underneath, reported as a bounds error.
            E::BadPermutation { len, .. } => Error::IndexOutOfBounds { index: len, len },
            other => Error::Refused(other.to_string()),
        }
    }
}

/// Shorthand for results of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
