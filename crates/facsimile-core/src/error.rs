//! Typed errors, one enum per failure domain.

use crate::value::{ObjectId, ObjectKind};

/// Why a local read or write was refused. A refused write changes nothing
/// and sends nothing.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The object is not in this replica: it was never received, or it was
    /// reclaimed after it became unreachable from the root.
    #[error(
        "object {0:?} is not in this document (never received, or reclaimed after it was removed)"
    )]
    UnknownObject(ObjectId),
    /// The object is a map where an array was expected, or the reverse.
    #[error("object {object:?} is a {found:?}, not a {expected:?}")]
    WrongKind {
        /// The object.
        object: ObjectId,
        /// The kind the operation needs.
        expected: ObjectKind,
        /// The kind the object has.
        found: ObjectKind,
    },
    /// An array index past the end.
    #[error("index {index} is out of bounds for array {object:?} of length {len}")]
    IndexOutOfBounds {
        /// The array.
        object: ObjectId,
        /// The index asked for.
        index: usize,
        /// The array's length.
        len: usize,
    },
    /// A reference to an object that was removed from the document and may
    /// already be reclaimed on other replicas. Insert an object at its new
    /// place before removing it from the old one, or insert a copy.
    #[error(
        "object {0:?} was removed from the document and cannot be referenced again; \
         insert it at its new place before removing it, or insert a copy"
    )]
    Detached(ObjectId),
    /// A `sync` is in progress; the document is replaced when it completes.
    /// Over an ordered log, also a replica that has not read its own first
    /// message back yet ([`crate::Replica::joined_log`]), and one whose
    /// successor is joining the log to take its place
    /// ([`crate::Replica::hand_over`]).
    #[error("a sync is in progress; write after the document is ready")]
    Syncing,
    /// Another replica holds (or is about to hold) the lock on the object,
    /// or this replica's own request for it is not granted yet: a replica
    /// writes an object it asked to lock only once granted.
    #[error(
        "Object is not owned by current host: another node holds the lock on {0:?} \
         (or this node's own request for it is not granted yet: its writes wait for the grant)"
    )]
    NotOwner(ObjectId),
    /// The array is locked by another replica (array methods), or a
    /// fail-fast lock request found the lock taken.
    #[error("object {0:?} is locked by another node")]
    Locked(ObjectId),
    /// The peers evicted this replica after it was silent too long; it must
    /// rejoin (`reincarnate`) before it can lock again.
    #[error(
        "this node was evicted by its peers after being silent too long; it must rejoin before locking"
    )]
    Evicted,
    /// This replica only observes ([`crate::Config::observer`]): it may
    /// not write, lock or evict.
    #[error("this node only observes the document: it may not write, lock or evict")]
    Observer,
    /// This replica left the document ([`crate::Replica::leave`]): its
    /// peers drop whatever it sends, so it may not write, lock or evict.
    /// Its document can still be read, as it was when it left.
    #[error(
        "this node left the document: it may read its last state, not write or lock; \
         make a new node to take part again"
    )]
    Left,
    /// Nobody holds the lock on the object.
    #[error("object {0:?} is not locked")]
    NotLocked(ObjectId),
    /// The write's message could be larger than peers accept
    /// ([`crate::Config::max_message_size`]; over a relay or NATS, what
    /// the transport carries). Inside a group ([`crate::Replica::begin`]),
    /// the group's message so far counts.
    #[error(
        "this write makes a message of up to {size} bytes, more than the limit of {limit} bytes; \
         write it in parts, or raise the limit on every node and the transport"
    )]
    TooLarge {
        /// An upper bound of the message's size with this write.
        size: usize,
        /// The largest message peers accept.
        limit: usize,
    },
    /// A permutation passed to a reorder is not a permutation of the array.
    #[error("not a permutation of the {len} elements of array {object:?}")]
    BadPermutation {
        /// The array.
        object: ObjectId,
        /// Its length.
        len: usize,
    },
}

/// Why an incoming message was refused. A refused message changes nothing;
/// the replica keeps working.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiveError {
    /// The message is larger than the configured limit.
    #[error("message of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The configured limit.
        max: usize,
    },
    /// The message is empty.
    #[error("empty message")]
    Empty,
    /// The envelope names a format version this build does not speak.
    #[error("unsupported wire version {0} (this build speaks version {supported})", supported = crate::codec::VERSION)]
    UnsupportedVersion(u8),
    /// The bytes do not decode as a message.
    #[error("malformed message: {0}")]
    Malformed(String),
    /// The message decodes but breaks a protocol rule (an id from the future,
    /// a peer the sender never introduced, a count beyond a limit...).
    #[error("invalid message from {from:08x}: {reason}")]
    Invalid {
        /// The sender's tag.
        from: u32,
        /// What was wrong.
        reason: String,
    },
    /// Two different peers use the same tag.
    #[error("peer tag {0:08x} is used by two different peers")]
    TagCollision(u32),
    /// Too much is waiting for missing predecessors; the message was dropped.
    /// The replica resynchronises to recover.
    #[error("too many messages are waiting for missing predecessors ({0} bytes buffered)")]
    BacklogFull(usize),
}

impl ReceiveError {
    pub(crate) fn invalid(from: u32, reason: impl Into<String>) -> Self {
        ReceiveError::Invalid {
            from,
            reason: reason.into(),
        }
    }
}
