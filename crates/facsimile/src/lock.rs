//! Distributed locks: futures that resolve to a guard, and the guard that
//! releases on drop.
//!
//! A future makes its request when first polled and withdraws it when
//! dropped unresolved; a guard releases in `Drop` unless the lock was
//! already lost. Why at most one node holds a lock, and how tokens grow:
//! DESIGN.md, "Locks" (and "On a totally ordered log" for NATS).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use facsimile_core::{LockState, ObjectId, PeerId, Replica};

use crate::error::{EngineError, Place, Subject, locate, locked, not_owner};
use crate::handle::ObjectRef;
use crate::node::Node;

/// Why a lock operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum LockError {
    /// Another node holds the lock or is ahead in its queue, or another
    /// guard or request of this node holds it or waits for it (fail-fast
    /// [`Node::request`]).
    #[error("{}", Locked(*.object, .place.as_ref(), *.here))]
    Locked {
        /// The object.
        object: ObjectId,
        /// Where it is in the document, when the root reaches it.
        place: Option<Place>,
        /// Whether it is this node's, held by another guard or wanted by
        /// another request of this node (another task or thread).
        here: bool,
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
    /// A sync is in progress ([`Node::request`]; [`Node::lock`] waits).
    #[error("a sync is in progress; lock once the node is ready (on_ready)")]
    Syncing,
    /// The peers evicted this node (it was silent too long); it rejoins
    /// as a new incarnation, without its locks. Ask again
    /// ([`Node::request`]; [`Node::lock`] waits until it rejoined).
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
    /// The lock future was polled inside a listener (or the sender) of a
    /// node: of its own node, or of any other on the same thread. That
    /// node sends nothing until the listener returns, and the grant needs
    /// its acknowledgement (or, over [`LocalNetwork`](crate::LocalNetwork),
    /// the delivery the listener runs in to return), so the wait would
    /// last for ever, and hold up every message of that node. Nothing was
    /// requested; spawn the wait onto a runtime, or request the lock after
    /// the listener returns.
    #[error(
        "a lock cannot be awaited inside a listener (or the sender) of a node: \
         spawn it, or request it after the listener returns"
    )]
    InListener,
    /// Any other refusal of the engine.
    #[error(transparent)]
    Engine(EngineError),
}

impl LockError {
    /// The engine's refusal of a lock operation on `object`, with its place.
    pub(crate) fn from_core(e: EngineError, r: &mut Replica) -> Self {
        use EngineError as E;
        let mut place = |o| locate(r, o);
        match e {
            E::Locked(object) => LockError::Locked {
                object,
                place: place(object),
                here: false,
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

    /// A refusal the lock future finds in the lock's state: held by this
    /// node (by another guard) or refused by the others, or `lost` (the
    /// node left, or took a new incarnation).
    fn in_state(node: &Node, object: ObjectId, lost: bool) -> Self {
        let (place, held, left) = node.read(|r| {
            let held = matches!(r.lock_state(object), LockState::Held(_));
            (locate(r, object), held, r.has_left())
        });
        if lost && left {
            LockError::Engine(EngineError::Left)
        } else if lost {
            LockError::Lost { object, place }
        } else {
            LockError::Locked {
                object,
                place,
                here: held,
            }
        }
    }
}

/// [`LockError::Locked`] in words.
struct Locked<'a>(ObjectId, Option<&'a Place>, bool);

impl fmt::Display for Locked<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.2 {
            true => write!(
                f,
                "{} is locked by another task of this node",
                Subject(self.0, self.1)
            ),
            false => locked(f, Subject(self.0, self.1)),
        }
    }
}

/// [`LockError::NotOwner`] in words.
struct NotOwner<'a>(ObjectId, Option<&'a Place>);

impl fmt::Display for NotOwner<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        not_owner(f, Subject(self.0, self.1))
    }
}

/// Exclusive write permission on one object, held by this node (not on the
/// objects it contains), and by this guard alone within the node: another
/// task's [`Node::lock`] of the object waits until this guard releases it.
///
/// While the guard holds, other nodes' writes to the object fail
/// ([`NotOwner`](crate::EngineError::NotOwner) for a map,
/// [`Locked`](crate::EngineError::Locked) for an array), and this node has
/// seen every write made to it before the grant. Dropping the guard releases
/// the lock, as does [`LockGuard::release`].
///
/// A node evicted by its peers loses its locks, but learns it only when it
/// hears from them again: until then its guard still reports
/// [`is_held`](LockGuard::is_held). A node that leaves ([`Node::leave`])
/// frees its locks at once: its guards report not held from then on.
/// Guard external resources with the [`token`](LockGuard::token), which
/// increases with every grant.
///
/// # Example
/// ```
/// use facsimile::LocalNetwork;
/// use futures_executor::block_on;
/// use serde_json::json;
///
/// let net = LocalNetwork::new();
/// let a = net.join("a");
/// let b = net.join("b");
/// a.set_root(json!({"stock": 3}))?;
/// let (on_a, on_b) = (a.root_map().unwrap(), b.root_map().unwrap());
///
/// {
///     let _guard = block_on(a.lock(&on_a))?;
///     on_a.set("stock", 2)?;
///     assert!(on_b.set("stock", 0).is_err(), "b cannot write while a holds the lock");
/// } // the guard is dropped: the lock is released
/// on_b.set("stock", 0)?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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
    /// grant of the same object, on every node. Pass it to external resources
    /// so that they can refuse a holder that lost the lock without knowing.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use futures_executor::block_on;
    /// use serde_json::json;
    ///
    /// let net = LocalNetwork::new();
    /// let a = net.join("a");
    /// let b = net.join("b");
    /// a.set_root(json!({"stock": 3}))?;
    /// let (on_a, on_b) = (a.root_map().unwrap(), b.root_map().unwrap());
    ///
    /// let first = block_on(a.lock(&on_a))?.token(); // the guard drops at once
    /// let second = block_on(b.lock(&on_b))?.token();
    /// assert!(second > first);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The locked object.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use futures_executor::block_on;
    /// use serde_json::json;
    ///
    /// let net = LocalNetwork::new();
    /// let a = net.join("a");
    /// let b = net.join("b");
    /// a.set_root(json!({"stock": 3}))?;
    /// let (on_a, on_b) = (a.root_map().unwrap(), b.root_map().unwrap());
    ///
    /// let guard = block_on(a.lock(&on_a))?;
    /// assert_eq!(guard.object().id(), on_a.id());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn object(&self) -> &ObjectRef {
        &self.object
    }

    /// Releases the lock now (dropping the guard does the same, ignoring
    /// errors).
    ///
    /// # Errors
    /// [`LockError::NotOwner`] or [`LockError::NotLocked`] when the lock was
    /// lost meanwhile (this node was evicted), and [`LockError::Engine`] for
    /// another refusal of the engine.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use futures_executor::block_on;
    /// use serde_json::json;
    ///
    /// let net = LocalNetwork::new();
    /// let a = net.join("a");
    /// let b = net.join("b");
    /// a.set_root(json!({"stock": 3}))?;
    /// let (on_a, on_b) = (a.root_map().unwrap(), b.root_map().unwrap());
    ///
    /// let guard = block_on(a.lock(&on_a))?;
    /// guard.release()?;
    /// assert_eq!(a.lock_token(&on_a)?, None);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(mut self) -> Result<(), LockError> {
        self.released = true;
        self.node.end_lock(self.object.id(), Some(self.token))
    }

    /// Whether this node still holds the lock: false once it was released,
    /// or lost because this node's peers evicted it and it heard of it,
    /// because the node synced, or because it left ([`Node::leave`]).
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use futures_executor::block_on;
    /// use serde_json::json;
    ///
    /// let net = LocalNetwork::new();
    /// let a = net.join("a");
    /// let b = net.join("b");
    /// a.set_root(json!({"stock": 3}))?;
    /// let (on_a, on_b) = (a.root_map().unwrap(), b.root_map().unwrap());
    ///
    /// let guard = block_on(a.lock(&on_a))?;
    /// assert!(guard.is_held());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn is_held(&self) -> bool {
        matches!(self.node.read(|r| r.lock_state(self.object.id())), LockState::Held(t) if t == self.token)
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // Only this guard's grant: checked as it is released, since a
        // guard of the same grant may have released it meanwhile and the
        // node taken another.
        if !self.released {
            let _ = self.node.end_lock(self.object.id(), Some(self.token));
        }
    }
}

/// A lock being acquired, from [`Node::lock`] or [`Node::request`];
/// resolves to a [`LockGuard`], or to a [`LockError`].
///
/// It works under any executor: it registers its waker and is woken when the
/// lock's state changes. Over [`LocalNetwork`](crate::LocalNetwork), whose
/// messages are delivered before the sending call returns, a plain
/// `block_on` completes, except inside a listener (or the sender) of any
/// node, where it fails at once with [`LockError::InListener`]. A node makes one request per object, which
/// every future of the node waiting on that object shares; each grant
/// goes to one of them, as one guard, and the others wait until that
/// guard releases it, then ask again: a lock excludes the other tasks and
/// threads of its own node as well, and each guard has a token of its
/// own. Dropping the last of them before it resolves withdraws the
/// request, so a timeout on one task's `lock` leaves another task's
/// waiting. A `lock` that joined a fail-fast [`Node::request`] waits on
/// when that request is refused, while the `request` fails.
///
/// # Example
/// ```
/// use std::task::{Context, Poll};
///
/// use facsimile::LocalNetwork;
/// use futures_executor::block_on;
/// use futures_util::FutureExt;
/// use futures_util::task::noop_waker_ref;
/// use serde_json::json;
///
/// let net = LocalNetwork::new();
/// let a = net.join("a");
/// let b = net.join("b");
/// a.set_root(json!({"stock": 3}))?;
/// let (on_a, on_b) = (a.root_map().unwrap(), b.root_map().unwrap());
///
/// let held = block_on(a.lock(&on_a))?;
/// let mut waiting = b.lock(&on_b);
/// let mut cx = Context::from_waker(noop_waker_ref());
/// assert!(waiting.poll_unpin(&mut cx).is_pending());
///
/// drop(held);
/// let Poll::Ready(granted) = waiting.poll_unpin(&mut cx) else {
///     panic!("b is next");
/// };
/// assert!(granted?.is_held());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[must_use = "a lock future does nothing unless polled"]
pub struct LockFuture {
    node: Node,
    object: ObjectRef,
    wait: bool,
    /// Its share in the node's request, from when it made or joined it
    /// until it resolves, and the request's round.
    share: Option<(Arc<()>, u64)>,
    done: bool,
}

impl LockFuture {
    pub(crate) fn new(node: Node, object: ObjectRef, wait: bool) -> Self {
        LockFuture {
            node,
            object,
            wait,
            share: None,
            done: false,
        }
    }

    /// Resolved or dropped: lets go of its share in the node's request,
    /// which is withdrawn if nobody else waits on it (a fail-fast future
    /// of an earlier request may have been the last to hold it).
    fn finish(&mut self) {
        self.done = true;
        if let Some((share, _)) = self.share.take() {
            self.node.withdraw_lock(self.object.id(), share);
        }
    }

    fn guard(&mut self, token: u64) -> LockGuard {
        self.finish();
        LockGuard {
            node: self.node.clone(),
            object: self.object.clone(),
            token,
            released: false,
        }
    }

    fn resolve(&mut self, state: LockState) -> Poll<Result<LockGuard, LockError>> {
        let id = self.object.id();
        match state {
            LockState::Held(token) => Poll::Ready(Ok(self.guard(token))),
            LockState::Waiting => Poll::Pending,
            LockState::Refused => {
                self.finish();
                Poll::Ready(Err(LockError::in_state(&self.node, id, false)))
            }
            LockState::None => {
                self.finish();
                Poll::Ready(Err(LockError::in_state(&self.node, id, true)))
            }
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
            this.finish();
            return Poll::Ready(Err(LockError::ForeignHandle));
        }
        if Node::in_any_pump() {
            // A listener or sender of some node X runs on this thread, and
            // X sends nothing until it returns. The grant needs every live
            // member's acknowledgement, X's too when X is this node or a
            // peer, so the wait cannot complete here: over LocalNetwork
            // the delivery further up this stack also holds back every
            // message sent meanwhile; over ChannelNetwork or a connection
            // the listener may run on the very task that drains X's
            // messages, and if not, X's acknowledgement waits for its pump.
            // A node of another document could be granted, but nothing
            // here tells which document X is in, and the wait would hold
            // up X meanwhile. Polled on another thread (a spawned task),
            // the future waits as usual: the listener returns, X sends.
            this.finish();
            return Poll::Ready(Err(LockError::InListener));
        }
        let mut retried = false;
        // Its share in a request the node is past, kept until it holds one
        // in the next, so that the request it joins is not withdrawn
        // meanwhile; let go of as `finish` does if it holds none.
        let mut previous = None;
        let polled = loop {
            if this.share.is_none() {
                // Registered before the request, so that the next
                // incarnation's arrival (which wakes every lock waiter) is
                // not missed.
                if this.wait {
                    this.node.add_lock_waker(id, cx.waker());
                }
                let made = this.node.lock_request(id, this.wait);
                if let Some((share, _)) = previous.take() {
                    this.node.withdraw_lock(id, share);
                }
                match made {
                    Ok(share) => this.share = Some(share),
                    // Between incarnations (evicted and awaiting the reload
                    // or sync the transport brings, or syncing): a waiting
                    // request is made once the node is ready, rather than
                    // refused.
                    Err(LockError::Evicted | LockError::Syncing) if this.wait => {
                        return Poll::Pending;
                    }
                    Err(e) => {
                        this.finish();
                        return Poll::Ready(Err(e));
                    }
                }
            }
            let round = this.share.as_ref().map_or(0, |(_, round)| *round);
            let state = this.node.poll_lock(id, round, this.wait, cx.waker());
            // The node is past the request this future joined (refused,
            // lost, or its grant taken by another future of the node and
            // released), or a waiting `lock` joined the node's fail-fast
            // `request` and that was refused: it makes or joins the node's
            // next request.
            match state {
                Some(state) if !(this.wait && state == LockState::Refused) => break state,
                _ if !retried => {
                    previous = this.share.take();
                    retried = true;
                }
                // Past the next one too already (another thread moved the
                // node on meanwhile): polled again soon.
                _ => {
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
            }
        };
        this.resolve(polled)
    }
}

impl Drop for LockFuture {
    /// Withdraws the node's request if this was the last future waiting on
    /// it (another task's `lock` of the same object waits on), or releases
    /// the lock when it was granted after the last poll.
    fn drop(&mut self) {
        self.finish();
    }
}

impl Node {
    /// Waits for exclusive write permission on `object` (not on the objects
    /// it contains), for this task alone: while a guard of this node holds
    /// it, another `lock` of it on the node waits for that guard's release
    /// (so a second `lock` of the object by the task holding it waits for
    /// ever, as with a mutex).
    ///
    /// While this node holds it, other nodes' writes to the object fail, and
    /// no write made elsewhere can overwrite one made under it. Requests are
    /// served in the order they were made, ties to the higher hostname; the
    /// guard's [`token`](LockGuard::token) increases with every grant. A peer
    /// that leaves, or is evicted after missing its heartbeats
    /// ([`Config::failure_detection`](crate::Config::failure_detection)), loses
    /// its locks, so nobody waits forever for a dead peer.
    ///
    /// Made while the node syncs, or after its peers evicted it and before
    /// it rejoins, the request waits too: it is made once the node is
    /// ready again (the transport rejoins on its own).
    ///
    /// A lock cannot be awaited inside a listener (or the sender) of any
    /// node, this one or another: that node sends nothing until the
    /// listener returns, and the grant needs its acknowledgement, so the
    /// future fails with [`LockError::InListener`] when polled on that
    /// thread then. Spawn it onto a runtime (a future made in a listener
    /// and polled on another thread works), or request the lock after the
    /// listener returns.
    ///
    /// # Errors
    /// The future resolves to [`LockError::NoSender`] when the node has no
    /// transport, [`LockError::UnknownObject`] when the object is not in the
    /// document, [`LockError::ForeignHandle`] for a handle of another node,
    /// [`LockError::Lost`] when this node was evicted by its peers, or
    /// reloaded, while it waited, [`LockError::InListener`] when polled
    /// inside a listener (or the sender) of any node, and [`LockError::Engine`] with
    /// [`EngineError::Left`] once this node left ([`Node::leave`]), also
    /// for a future that was waiting then.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use futures_executor::block_on;
    /// use serde_json::json;
    ///
    /// let net = LocalNetwork::new();
    /// let a = net.join("a");
    /// let b = net.join("b");
    /// a.set_root(json!({"stock": 3}))?;
    /// let (on_a, on_b) = (a.root_map().unwrap(), b.root_map().unwrap());
    ///
    /// let guard = block_on(a.lock(&on_a))?;
    /// on_a.set("stock", 2)?;
    /// let refused = on_b.set("stock", 0).unwrap_err();
    /// assert!(refused.to_string().starts_with("Object is not owned by current host"));
    /// drop(guard);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock(&self, object: impl Into<ObjectRef>) -> LockFuture {
        LockFuture::new(self.clone(), object.into(), true)
    }

    /// As [`Node::lock`], but fails at once when another node holds the lock
    /// or is queued for it, or a guard or another request of this node
    /// holds it or waits for it, instead of waiting (the original's
    /// `request`).
    ///
    /// # Errors
    /// [`LockError::Locked`] when the lock is taken or wanted elsewhere,
    /// [`LockError::Syncing`] during a sync, [`LockError::Evicted`] after
    /// this node's peers evicted it and before it rejoined, and the errors
    /// of [`Node::lock`].
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, LockError};
    /// use futures_executor::block_on;
    /// use serde_json::json;
    ///
    /// let net = LocalNetwork::new();
    /// let a = net.join("a");
    /// let b = net.join("b");
    /// a.set_root(json!({"stock": 3}))?;
    /// let (on_a, on_b) = (a.root_map().unwrap(), b.root_map().unwrap());
    ///
    /// let _guard = block_on(a.lock(&on_a))?;
    /// let err = block_on(b.request(&on_b)).unwrap_err();
    /// assert!(matches!(err, LockError::Locked { .. }));
    /// assert_eq!(err.to_string(), "the root map is locked by another node");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn request(&self, object: impl Into<ObjectRef>) -> LockFuture {
        LockFuture::new(self.clone(), object.into(), false)
    }

    /// Releases this node's lock on `object`: what [`LockGuard`] does when
    /// dropped, for code that keeps no guard. A request still waiting is
    /// left waiting; dropping its [`LockFuture`] withdraws it.
    ///
    /// # Errors
    /// [`LockError::NotOwner`] when another node holds the lock (or is first
    /// in line for it), [`LockError::NotLocked`] when nobody holds it (this
    /// node's own request may be waiting), [`LockError::ForeignHandle`] for
    /// a handle of another node, and [`LockError::Engine`] for another
    /// refusal of the engine. An error releases nothing.
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, LockError};
    /// use futures_executor::block_on;
    /// use serde_json::json;
    ///
    /// let net = LocalNetwork::new();
    /// let a = net.join("a");
    /// let b = net.join("b");
    /// a.set_root(json!({"stock": 3}))?;
    /// let (on_a, on_b) = (a.root_map().unwrap(), b.root_map().unwrap());
    ///
    /// let err = a.release(&on_a).unwrap_err();
    /// assert!(matches!(err, LockError::NotLocked { .. }));
    /// assert_eq!(err.to_string(), "the root map is not locked");
    ///
    /// let _guard = block_on(a.lock(&on_a))?;
    /// let err = b.release(&on_b).unwrap_err();
    /// assert!(matches!(err, LockError::NotOwner { .. }));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn release(&self, object: impl Into<ObjectRef>) -> Result<(), LockError> {
        self.end_lock(self.own_id(&object.into())?, None)
    }

    /// The fencing token of this node's lock on `object`, or `None` when it
    /// does not hold it (not yet, or no longer).
    ///
    /// # Errors
    /// [`LockError::ForeignHandle`] for a handle of another node: its id
    /// names an unrelated object here, whose lock is not the one asked
    /// about.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use futures_executor::block_on;
    /// use serde_json::json;
    ///
    /// let net = LocalNetwork::new();
    /// let a = net.join("a");
    /// let b = net.join("b");
    /// a.set_root(json!({"stock": 3}))?;
    /// let (on_a, on_b) = (a.root_map().unwrap(), b.root_map().unwrap());
    ///
    /// assert_eq!(a.lock_token(&on_a)?, None);
    /// let guard = block_on(a.lock(&on_a))?;
    /// assert_eq!(a.lock_token(&on_a)?, Some(guard.token()));
    /// assert!(b.lock_token(&on_a).is_err(), "a's handle, asked of b");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_token(&self, object: impl Into<ObjectRef>) -> Result<Option<u64>, LockError> {
        let id = self.own_id(&object.into())?;
        Ok(match self.read(|r| r.lock_state(id)) {
            LockState::Held(t) => Some(t),
            _ => None,
        })
    }

    /// Who holds the lock on `object`, with the fencing token of that
    /// grant, as far as this node knows: `None` when nobody does, or when
    /// its grant is not known here. Another node's grant is known once it
    /// announced it, in its acknowledgement of a later request (any
    /// node's), so this is for monitoring and display, not a check before
    /// a write: the write's own refusal, or the token a service checks, is
    /// the check.
    ///
    /// # Errors
    /// [`LockError::ForeignHandle`] for a handle of another node.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use futures_executor::block_on;
    /// use serde_json::json;
    ///
    /// let net = LocalNetwork::new();
    /// let a = net.join("a");
    /// a.set_root(json!({"stock": 3}))?;
    /// let stock = a.root_map().unwrap();
    /// assert!(a.lock_holder(&stock)?.is_none());
    /// let guard = block_on(a.lock(&stock))?;
    /// let (holder, token) = a.lock_holder(&stock)?.unwrap();
    /// assert_eq!((holder.hostname(), token), ("a", guard.token()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn lock_holder(
        &self,
        object: impl Into<ObjectRef>,
    ) -> Result<Option<(PeerId, u64)>, LockError> {
        let id = self.own_id(&object.into())?;
        Ok(self.read(|r| r.lock_holder_token(id)))
    }

    /// The id of `object` on this node; a handle of another node is
    /// refused, as every write refuses it: its id names an unrelated
    /// object here.
    fn own_id(&self, object: &ObjectRef) -> Result<ObjectId, LockError> {
        match object.node().same_node(self) {
            true => Ok(object.id()),
            false => Err(LockError::ForeignHandle),
        }
    }
}
