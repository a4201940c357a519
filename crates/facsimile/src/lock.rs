//! Distributed locks: futures that resolve to a guard, and the guard that
//! releases on drop.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use facsimile_core::{LockState, ObjectId};

use crate::handle::ObjectRef;
use crate::node::Node;

/// Why a lock operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another node holds the lock or is ahead in its queue (fail-fast
    /// `request`; also array methods on an object locked elsewhere).
    #[error("object {0:?} is locked by another node")]
    Locked(ObjectId),
    /// Another node holds the lock.
    #[error("Object is not owned by current host (another node holds the lock on {0:?})")]
    NotOwner(ObjectId),
    /// Nobody holds the lock.
    #[error("object {0:?} is not locked")]
    NotLocked(ObjectId),
    /// The object is not in this node's document.
    #[error("object {0:?} is not in this document")]
    UnknownObject(ObjectId),
    /// The handle belongs to another node.
    #[error("a handle of another node was passed to this node")]
    ForeignHandle,
    /// The node has no transport.
    #[error("this node has no transport: call set_sender (or join a network) before locking")]
    NoSender,
    /// A sync is in progress.
    #[error("a sync is in progress; lock once the node is ready")]
    Syncing,
    /// The lock was lost before or while it was held: the node was evicted
    /// by its peers, or the request was withdrawn.
    #[error("the lock on {0:?} was lost (this node was evicted, or the request withdrawn)")]
    Lost(ObjectId),
}

impl LockError {
    fn from_core(e: facsimile_core::Error, obj: ObjectId) -> Self {
        use facsimile_core::Error as E;
        match e {
            E::Locked(o) => LockError::Locked(o),
            E::NotOwner(o) => LockError::NotOwner(o),
            E::NotLocked(o) => LockError::NotLocked(o),
            E::UnknownObject(o) => LockError::UnknownObject(o),
            E::Syncing => LockError::Syncing,
            _ => LockError::Lost(obj),
        }
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
                Poll::Ready(Err(LockError::Locked(id)))
            }
            LockState::None => {
                this.done = true;
                Poll::Ready(Err(LockError::Lost(id)))
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
        self.apply(|r| r.unlock(id))
            .map_err(|e| LockError::from_core(e, id))
    }

    fn lock_request(&self, id: ObjectId, wait: bool) -> Result<(), LockError> {
        self.try_write(|r| r.lock(id, wait))
            .ok_or(LockError::NoSender)?
            .map(|_| ())
            .map_err(|e| LockError::from_core(e, id))
    }
}
