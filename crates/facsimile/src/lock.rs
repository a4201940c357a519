//! Distributed locks: futures that resolve to a guard, and the guard that
//! releases on drop.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use facsimile_core::{LockState, ObjectId, Replica};

use crate::error::{EngineError, Place, Subject, locate, locked, not_owner};
use crate::handle::ObjectRef;
use crate::node::Node;

/// Why a lock operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another node holds the lock or is ahead in its queue (fail-fast
    /// [`Node::request`]).
    #[error("{}", Locked(*.object, .place.as_ref()))]
    Locked {
        /// The object.
        object: ObjectId,
        /// Where it is in the document, when the root reaches it.
        place: Option<Place>,
    },
    /// Another node holds the lock ([`Node::release`] of a lock this node
    /// does not hold).
    #[error("{}", NotOwner(*.object, .place.as_ref()))]
    NotOwner {
        /// The object.
        object: ObjectId,
        /// Where it is in the document, when the root reaches it.
        place: Option<Place>,
    },
    /// Nobody holds the lock.
    #[error("{} is not locked", Subject(*.object, .place.as_ref()))]
    NotLocked {
        /// The object.
        object: ObjectId,
        /// Where it is in the document, when the root reaches it.
        place: Option<Place>,
    },
    /// The object is not in this node's document: it was never received,
    /// or it was reclaimed after it became unreachable from the root.
    #[error("object {0:?} is not in this document")]
    UnknownObject(ObjectId),
    /// The handle belongs to another node.
    #[error("a handle of another node was passed to this node")]
    ForeignHandle,
    /// The node has no transport.
    #[error("this node has no transport: call set_sender (or join a network) before locking")]
    NoSender,
    /// A sync is in progress.
    #[error("a sync is in progress; lock once the node is ready (on_ready)")]
    Syncing,
    /// The peers evicted this node (it was silent too long); it rejoins
    /// as a new incarnation, without its locks. Ask again.
    #[error("this node was evicted by its peers and rejoins without its locks; ask again")]
    Evicted,
    /// The request was dropped while it waited: this node was evicted by
    /// its peers, or reloaded, and rejoined as a new incarnation.
    #[error(
        "the request for the lock on {} was lost (this node was evicted, or reloaded)",
        Subject(*.object, .place.as_ref())
    )]
    Lost {
        /// The object.
        object: ObjectId,
        /// Where it is in the document, when the root reaches it.
        place: Option<Place>,
    },
    /// Any other refusal of the engine.
    #[error(transparent)]
    Engine(EngineError),
}

impl LockError {
    /// The engine's refusal of a lock operation on `object`, with its place.
    fn from_core(e: EngineError, r: &mut Replica) -> Self {
        use EngineError as E;
        let mut place = |o| locate(r, o);
        match e {
            E::Locked(object) => LockError::Locked {
                object,
                place: place(object),
            },
            E::NotOwner(object) => LockError::NotOwner {
                object,
                place: place(object),
            },
            E::NotLocked(object) => LockError::NotLocked {
                object,
                place: place(object),
            },
            E::UnknownObject(o) => LockError::UnknownObject(o),
            E::Syncing => LockError::Syncing,
            E::Evicted => LockError::Evicted,
            other => LockError::Engine(other),
        }
    }

    /// A refusal the lock future finds in the lock's state.
    fn in_state(node: &Node, object: ObjectId, lost: bool) -> Self {
        let place = node.read(|r| locate(r, object));
        if lost {
            LockError::Lost { object, place }
        } else {
            LockError::Locked { object, place }
        }
    }
}

/// [`LockError::Locked`] in words.
struct Locked<'a>(ObjectId, Option<&'a Place>);

impl fmt::Display for Locked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        locked(f, Subject(self.0, self.1))
    }
}

/// [`LockError::NotOwner`] in words.
struct NotOwner<'a>(ObjectId, Option<&'a Place>);

impl fmt::Display for NotOwner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        not_owner(f, Subject(self.0, self.1))
    }
}

/// Exclusive write permission on one object (not on the objects it
/// contains). Dropping the guard releases the lock.
#[must_use = "dropping a LockGuard releases the lock at once"]
#[derive(Debug)]
pub struct LockGuard {
    node: Node,
    object: ObjectRef,
    token: u64,
    released: bool,
}

impl LockGuard {
    /// The fencing token of this grant: it increases strictly with every
    /// grant of the same object, for use with external resources.
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The locked object.
    pub fn object(&self) -> &ObjectRef {
        &self.object
    }

    /// Releases the lock now.
    ///
    /// # Errors
    /// [`LockError::NotOwner`] or [`LockError::NotLocked`] if the lock was
    /// already lost.
    pub fn release(mut self) -> Result<(), LockError> {
        self.released = true;
        self.node.unlock(self.object.id())
    }

    /// Whether this node still holds the lock.
    pub fn is_held(&self) -> bool {
        matches!(self.node.read(|r| r.lock_state(self.object.id())), LockState::Held(t) if t == self.token)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if !self.released && self.is_held() {
            let _ = self.node.unlock(self.object.id());
        }
    }
}

/// A lock being acquired; resolves to a [`LockGuard`]. Works under any
/// executor; over [`crate::LocalNetwork`] a plain `block_on` completes.
/// Dropping it before it resolves withdraws the request.
#[must_use = "a lock future does nothing unless polled"]
pub struct LockFuture {
    node: Node,
    object: ObjectRef,
    wait: bool,
    started: bool,
    done: bool,
}

impl LockFuture {
    pub(crate) fn new(node: Node, object: ObjectRef, wait: bool) -> Self {
        LockFuture {
            node,
            object,
            wait,
            started: false,
            done: false,
        }
    }

    fn guard(&mut self, token: u64) -> LockGuard {
        self.done = true;
        LockGuard {
            node: self.node.clone(),
            object: self.object.clone(),
            token,
            released: false,
        }
    }
}

impl Future for LockFuture {
    type Output = Result<LockGuard, LockError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.done {
            panic!("LockFuture polled after completion");
        }
        let id = this.object.id();
        if !this.object.node().same_node(&this.node) {
            this.done = true;
            return Poll::Ready(Err(LockError::ForeignHandle));
        }
        if !this.started {
            this.started = true;
            let wait = this.wait;
            let r = this.node.lock_request(id, wait);
            if let Err(e) = r {
                this.done = true;
                return Poll::Ready(Err(e));
            }
        }
        match this.node.poll_lock(id, cx.waker()) {
            LockState::Held(token) => Poll::Ready(Ok(this.guard(token))),
            LockState::Waiting => Poll::Pending,
            LockState::Refused => {
                this.done = true;
                Poll::Ready(Err(LockError::in_state(&this.node, id, false)))
            }
            LockState::None => {
                this.done = true;
                Poll::Ready(Err(LockError::in_state(&this.node, id, true)))
            }
        }
    }
}

impl Drop for LockFuture {
    fn drop(&mut self) {
        if self.started && !self.done {
            let id = self.object.id();
            if self.node.read(|r| r.lock_state(id)) == LockState::Waiting {
                let _ = self.node.unlock(self.object.id());
            }
        }
    }
}

impl Node {
    /// Waits for exclusive write permission on `object`. While this node
    /// holds it, other nodes' writes to the object fail; requests are served
    /// in request order (ties to the higher hostname).
    ///
    /// The future fails with [`LockError::NoSender`], [`LockError::Syncing`]
    /// or [`LockError::UnknownObject`], or [`LockError::Lost`] if this node
    /// is evicted while waiting.
    pub fn lock(&self, object: impl Into<ObjectRef>) -> LockFuture {
        LockFuture::new(self.clone(), object.into(), true)
    }

    /// As [`Node::lock`], but fails at once with [`LockError::Locked`] when
    /// another node holds the lock or is queued for it.
    pub fn request(&self, object: impl Into<ObjectRef>) -> LockFuture {
        LockFuture::new(self.clone(), object.into(), false)
    }

    /// Releases this node's lock on `object` (or withdraws its request).
    ///
    /// # Errors
    /// [`LockError::NotOwner`] when another node holds it and
    /// [`LockError::NotLocked`] when nobody does.
    pub fn release(&self, object: impl Into<ObjectRef>) -> Result<(), LockError> {
        self.unlock(object.into().id())
    }

    /// Whether this node holds the lock on `object`, and its token.
    pub fn lock_token(&self, object: impl Into<ObjectRef>) -> Option<u64> {
        let id = object.into().id();
        match self.read(|r| r.lock_state(id)) {
            LockState::Held(t) => Some(t),
            _ => None,
        }
    }

    fn unlock(&self, id: ObjectId) -> Result<(), LockError> {
        self.apply(|r| r.unlock(id).map_err(|e| LockError::from_core(e, r)))
    }

    fn lock_request(&self, id: ObjectId, wait: bool) -> Result<(), LockError> {
        self.try_write(|r| r.lock(id, wait).map_err(|e| LockError::from_core(e, r)))
            .ok_or(LockError::NoSender)?
            .map(|_| ())
    }
}
