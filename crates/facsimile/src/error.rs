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
    /// The store does not hold what a type expects (typed reads and
    /// updates, [`crate::typed`]). `path` is a JSON pointer from the value
    /// read (empty for the value itself). Nothing was changed.
    #[error("{}: expected {expected}, found {found}", display_path(.path))]
    Type {
        /// Where: a JSON pointer such as `/players/3/score`.
        path: String,
        /// What the type expects (`i64`, `struct Player`, ...).
        expected: String,
        /// What the store holds (`string`, `null`, `a map with 2 keys`, ...).
        found: String,
    },
    /// A typed conversion failed for another reason: a missing field, an
    /// unknown enum variant, an integer the store cannot hold, a map key
    /// that is not a string, or an error of the type's own `Serialize` or
    /// `Deserialize`. Nothing was changed.
    #[error("{}: {message}", display_path(.path))]
    Convert {
        /// Where: a JSON pointer from the value read or written.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A JSON pointer names no place to write: it is malformed, or its
    /// parent is not a map or an array.
    #[error("cannot write at {path:?}: {reason}")]
    Path {
        /// The pointer.
        path: String,
        /// Why.
        reason: String,
    },
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

/// A JSON pointer for messages: the empty pointer (the value itself) reads
/// as `(root)`.
fn display_path(path: &str) -> &str {
    if path.is_empty() { "(root)" } else { path }
}

/// Shorthand for results of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
