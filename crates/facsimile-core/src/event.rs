//! What a replica reports: changes, root replacements, sync completion,
//! membership and lock events, pulled with [`crate::Replica::poll_event`].

use std::time::Duration;

#[allow(unused_imports)] // doc links
use crate::Replica;
use crate::value::{ObjectId, PeerId, Prop, Value};

/// Where a change came from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// This replica's own write.
    Local,
    /// A write received from this peer.
    Remote(PeerId),
}

/// One effective change to one object.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Change {
    /// The changed object.
    pub object: ObjectId,
    /// The changed key or index; `None` when a method changed the object as
    /// a whole (an array method, a batch of element writes).
    pub prop: Option<Prop>,
    /// The value before, where there was one.
    pub old: Option<Value>,
    /// The value after, where there is one.
    pub new: Option<Value>,
    /// Who made the change.
    pub origin: Origin,
}

/// Something the program may want to react to, pulled with
/// [`Replica::poll_event`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Event {
    /// An object changed.
    Change(Change),
    /// The root was replaced.
    RootChanged {
        /// The root before.
        old: Value,
        /// The root now.
        new: Value,
        /// Who replaced it.
        origin: Origin,
    },
    /// A sync completed: the document is complete and every reference
    /// reachable from the root is resolved.
    Ready,
    /// A peer announced itself.
    PeerJoined(PeerId),
    /// A peer said goodbye.
    PeerLeft(PeerId),
    /// The replica lost track of a peer's stream and cannot recover by
    /// retransmission; call [`Replica::sync`]. Over an ordered log: a write
    /// of this replica raced a lock grant and the log refused it; leave and
    /// start over from [`Replica::log_snapshot`].
    NeedsSync,
    /// A lock was granted, released or lost.
    Lock(LockEvent),
    /// The peers evicted this replica (it was silent too long): its locks
    /// are lost and they no longer wait for it. Rejoin with
    /// [`Replica::reincarnate`].
    Evicted,
}

/// A lock event, reported by [`Replica::poll_event`] as [`Event::Lock`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockEvent {
    /// This replica now holds the lock on `object`.
    Granted {
        /// The locked object.
        object: ObjectId,
        /// The fencing token of this grant.
        token: u64,
    },
    /// This replica released the lock.
    Released {
        /// The object.
        object: ObjectId,
        /// The token of the grant that ended.
        token: u64,
    },
    /// This replica lost the lock without releasing it: it was evicted by
    /// its peers, the object is gone, or a sync dropped the state the lock
    /// was granted in (the replica sent its release itself).
    Lost {
        /// The object.
        object: ObjectId,
        /// The token of the grant that ended.
        token: u64,
    },
    /// A request of this replica was withdrawn before it was granted.
    Withdrawn {
        /// The object.
        object: ObjectId,
    },
    /// A fail-fast request found the lock taken at its log position.
    Refused {
        /// The object.
        object: ObjectId,
    },
}

impl LockEvent {
    /// The object the event is about.
    pub fn object(&self) -> ObjectId {
        match self {
            LockEvent::Granted { object, .. }
            | LockEvent::Released { object, .. }
            | LockEvent::Lost { object, .. }
            | LockEvent::Withdrawn { object }
            | LockEvent::Refused { object } => *object,
        }
    }

    /// Renames the object (a replica started over as a new incarnation).
    pub(crate) fn rename(&mut self, f: impl FnOnce(ObjectId) -> ObjectId) {
        match self {
            LockEvent::Granted { object, .. }
            | LockEvent::Released { object, .. }
            | LockEvent::Lost { object, .. }
            | LockEvent::Withdrawn { object }
            | LockEvent::Refused { object } => *object = f(*object),
        }
    }
}

/// A member as this replica sees it, for inspection
/// ([`crate::Replica::peers`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PeerInfo {
    /// The member.
    pub peer: PeerId,
    /// Its stream's position here: how many of its broadcast messages
    /// this replica has applied (a joiner counts those its snapshot
    /// covered).
    pub applied: u64,
    /// Its messages that arrived ahead of a gap, held until the gap is
    /// filled.
    pub held: usize,
    /// When it was last heard from, on the clock the replica is given
    /// (`handle_timeout`'s `now`), as of the last time check; `None` when
    /// failure detection is off or no check has passed since it was first
    /// heard.
    pub last_heard: Option<Duration>,
}

/// One object's lock queue as this replica knows it, for inspection
/// ([`crate::Replica::lock_table`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockEntry {
    /// The locked (or requested) object.
    pub object: ObjectId,
    /// The requests in queue order: the first holds the lock or is next
    /// to; each with its fencing token when its grant is known here (a
    /// grant is known to its holder at once, to others once the holder
    /// acknowledges a later request).
    pub queue: Vec<(PeerId, Option<u64>)>,
    /// The highest fencing token known here for the object; the next grant
    /// gets a higher one.
    pub last_token: u64,
}

/// Whether this replica holds, waits for or has nothing to do with a lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LockState {
    /// No request of this replica.
    None,
    /// Requested, not granted yet.
    Waiting,
    /// Held, with this fencing token.
    Held(u64),
    /// A fail-fast request was refused (on an ordered log, where the
    /// decision comes back through the log).
    Refused,
}
