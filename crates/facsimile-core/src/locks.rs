//! Distributed locks on objects: Lamport's mutual exclusion over FIFO
//! broadcast, with membership carried by the acknowledgements.
//!
//! - A request is an operation stamped like any other; every replica keeps,
//!   per object, the queue of requests it knows, ordered by stamp.
//! - A replica that receives a request answers with an acknowledgement
//!   operation (so with a later counter), telling whether it holds the lock
//!   itself and which members it knows.
//! - A requester is granted when its request heads its queue, nobody is known
//!   to hold the lock, and it has received from every live member a message
//!   with a counter above its request's. By each sender's order, every
//!   request stamped before its own has arrived by then: mutual exclusion.
//! - A holder releases with an operation; a member that leaves (goodbye,
//!   eviction after missed heartbeats) loses its requests everywhere and is no
//!   longer waited for.
//!
//! The fencing token of a grant is its request's counter, raised above every
//! token known for the object, so tokens increase strictly per object.
//!
//! Membership matters: a member unknown to a requester is not waited for.
//! Acknowledgements list the acker's members so that a requester learns of
//! every peer someone it waits for knows; a holder that did not know of a
//! later request announces its grant in its acknowledgement, and grants stick
//! to the head of every queue until released. See DESIGN.md.

use std::time::Duration;

use rustc_hash::FxHashMap;

use crate::error::Error;
use crate::replica::{Event, Replica};
use crate::value::{Id, ObjectId, PeerIdx};
use crate::wire::{Tag, WireOp};

/// One request in an object's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LockReq {
    pub(crate) stamp: Id,
    /// Known to be granted, with this token.
    pub(crate) held: Option<u64>,
}

/// This replica's own request for an object.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mine {
    pub(crate) req: Id,
    pub(crate) token: Option<u64>,
}

#[derive(Debug, Default)]
pub(crate) struct Locks {
    pub(crate) queues: FxHashMap<Id, Vec<LockReq>>,
    pub(crate) mine: FxHashMap<Id, Mine>,
    /// Highest fencing token known per object.
    pub(crate) last_token: FxHashMap<Id, u64>,
    /// Requests this replica must acknowledge: `(object, request)`.
    pub(crate) owed: Vec<(Id, Id)>,
    /// Who acknowledged each of this replica's requests.
    pub(crate) acked: FxHashMap<Id, rustc_hash::FxHashSet<PeerIdx>>,
    /// The peers evicted this replica; it may not lock until it rejoins.
    pub(crate) evicted: bool,
    /// Own fail-fast requests refused on an ordered log, until the next
    /// request for the object.
    pub(crate) refused: rustc_hash::FxHashSet<Id>,
    /// When this replica evicted each peer (the stamp of its eviction).
    pub(crate) evicted_at: FxHashMap<PeerIdx, Id>,
    /// When each member was last heard from, as of the last time check.
    pub(crate) last_heard: FxHashMap<PeerIdx, Duration>,
    /// Members heard from since the last time check (messages carry no
    /// time; the next check stamps them).
    pub(crate) heard: rustc_hash::FxHashSet<PeerIdx>,
    pub(crate) last_sent: Duration,
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
    /// This replica lost the lock without releasing it (it was evicted by
    /// its peers, or the object is gone).
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

impl Locks {
    /// Orders a queue: known grants first (by token), then by request
    /// counter, ties to the higher peer (the original's "highest host locks
    /// first").
    fn sort(queue: &mut [LockReq], peers: &crate::clock::Peers) {
        queue.sort_by(|a, b| match (a.held, b.held) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (None, None) => a
                .stamp
                .counter
                .cmp(&b.stamp.counter)
                .then_with(|| peers.cmp_peer(b.stamp.peer, a.stamp.peer)),
        });
    }
}

impl Replica {
    /// The state of this replica's lock on `obj`.
    pub fn lock_state(&self, obj: ObjectId) -> LockState {
        match self.locks.mine.get(&obj.0) {
            None if self.locks.refused.contains(&obj.0) => LockState::Refused,
            None => LockState::None,
            Some(Mine { token: None, .. }) => LockState::Waiting,
            Some(Mine { token: Some(t), .. }) => LockState::Held(*t),
        }
    }

    /// The peer that holds or heads the queue of `obj`, as far as this
    /// replica knows.
    pub fn lock_holder(&self, obj: ObjectId) -> Option<crate::PeerId> {
        let head = self.locks.queues.get(&obj.0)?.first()?;
        Some(self.peers.get(head.stamp.peer).clone())
    }

    /// The holder of `obj`'s lock and its token, when a grant is known here.
    pub fn lock_holder_token(&self, obj: ObjectId) -> Option<(crate::PeerId, u64)> {
        let head = self.locks.queues.get(&obj.0)?.first()?;
        Some((self.peers.get(head.stamp.peer).clone(), head.held?))
    }

    /// Refuses a local write to `obj` when another replica holds or heads
    /// its lock queue, or when this replica waits for it.
    pub(crate) fn check_owner(&self, obj: Id, array: bool) -> Result<(), Error> {
        let Some(head) = self.locks.queues.get(&obj).and_then(|q| q.first()) else {
            return Ok(());
        };
        let mine = self
            .locks
            .mine
            .get(&obj)
            .is_some_and(|m| m.token.is_some() && m.req == head.stamp);
        if mine {
            return Ok(());
        }
        let o = ObjectId(obj);
        Err(if array {
            Error::Locked(o)
        } else {
            Error::NotOwner(o)
        })
    }

    /// Whether a local write to `obj` would be refused by a lock.
    ///
    /// # Errors
    /// [`Error::NotOwner`] when another replica holds or heads the lock.
    pub fn check_writable(&self, obj: ObjectId) -> Result<(), Error> {
        self.check_owner(obj.0, false)
    }

    /// Asks for the lock on `obj`. With `wait` false, fails at once with
    /// [`Error::Locked`] when another replica holds it or is queued for it.
    /// The grant is reported by [`LockEvent::Granted`] (and by
    /// [`Replica::lock_state`]).
    ///
    /// # Errors
    /// [`Error::Locked`], [`Error::UnknownObject`], [`Error::Syncing`].
    pub fn lock(&mut self, obj: ObjectId, wait: bool) -> Result<LockState, Error> {
        self.writable_now()?;
        if self.locks.evicted {
            return Err(Error::Evicted);
        }
        if self.graph.get(obj.0).is_none() {
            return Err(Error::UnknownObject(obj));
        }
        if let Some(state) = self.locks.mine.get(&obj.0).map(|_| self.lock_state(obj)) {
            return Ok(state);
        }
        let busy = self
            .locks
            .queues
            .get(&obj.0)
            .is_some_and(|q| q.iter().any(|r| r.stamp.peer != PeerIdx::SELF));
        if !wait && busy {
            return Err(Error::Locked(obj));
        }
        self.locks.refused.remove(&obj.0);
        self.begin();
        let stamp = self.tick();
        let wobj = self.wire_id(obj.0);
        self.out.ops.push(if wait {
            WireOp::Lock { obj: wobj }
        } else {
            WireOp::TryLock { obj: wobj }
        });
        self.locks.mine.insert(
            obj.0,
            Mine {
                req: stamp,
                token: None,
            },
        );
        if !self.is_ordered() {
            // On an ordered log the request takes its place when it comes
            // back through the log.
            self.enqueue(obj.0, LockReq { stamp, held: None });
        }
        self.commit();
        if !self.is_ordered() {
            self.try_grant(obj.0);
        }
        Ok(self.lock_state(obj))
    }

    /// Releases (or withdraws) this replica's request for `obj`.
    ///
    /// # Errors
    /// [`Error::NotOwner`] when another replica holds or heads the lock and
    /// this one has no request; [`Error::NotLocked`] when nobody does.
    pub fn unlock(&mut self, obj: ObjectId) -> Result<(), Error> {
        let Some(mine) = self.locks.mine.remove(&obj.0) else {
            return match self.locks.queues.get(&obj.0).and_then(|q| q.first()) {
                Some(_) => Err(Error::NotOwner(obj)),
                None => Err(Error::NotLocked(obj)),
            };
        };
        self.begin();
        self.tick();
        let wobj = self.wire_id(obj.0);
        let wreq = self.wire_id(mine.req);
        self.out.ops.push(WireOp::Unlock {
            obj: wobj,
            req: wreq,
            token: mine.token.unwrap_or(0),
        });
        if !self.is_ordered() {
            self.dequeue(obj.0, mine.req);
        }
        self.locks.acked.remove(&mine.req);
        self.commit();
        self.events.push_back(Event::Lock(match mine.token {
            Some(token) => LockEvent::Released { object: obj, token },
            None => LockEvent::Withdrawn { object: obj },
        }));
        // Our leaving the head may let nobody else here in, but a grant of
        // another local request cannot exist: one request per object.
        Ok(())
    }

    pub(crate) fn enqueue(&mut self, obj: Id, req: LockReq) {
        let q = self.locks.queues.entry(obj).or_default();
        if q.iter().any(|r| r.stamp == req.stamp) {
            return;
        }
        q.push(req);
        Locks::sort(q, &self.peers);
    }

    pub(crate) fn dequeue(&mut self, obj: Id, req: Id) {
        if let Some(q) = self.locks.queues.get_mut(&obj) {
            q.retain(|r| r.stamp != req);
            if q.is_empty() {
                self.locks.queues.remove(&obj);
            }
        }
    }

    /// Grants this replica's request on `obj` if its turn has come.
    pub(crate) fn try_grant(&mut self, obj: Id) {
        let Some(mine) = self.locks.mine.get(&obj).copied() else {
            return;
        };
        if mine.token.is_some() {
            return;
        }
        let head = self.locks.queues.get(&obj).and_then(|q| q.first()).copied();
        if head.map(|h| h.stamp) != Some(mine.req) {
            return;
        }
        // Every live member must have acknowledged this very request: by its
        // order, whatever it requested earlier has arrived here by then.
        let acks = self.locks.acked.get(&mine.req);
        let acked = self
            .gc
            .members
            .iter()
            .all(|m| acks.is_some_and(|a| a.contains(m)));
        if !acked {
            return;
        }
        let last = self.locks.last_token.get(&obj).copied().unwrap_or(0);
        let token = mine.req.counter.max(last + 1);
        self.locks.last_token.insert(obj, token);
        self.locks.mine.insert(
            obj,
            Mine {
                req: mine.req,
                token: Some(token),
            },
        );
        if let Some(q) = self.locks.queues.get_mut(&obj) {
            q[0].held = Some(token);
        }
        self.events.push_back(Event::Lock(LockEvent::Granted {
            object: ObjectId(obj),
            token,
        }));
    }

    /// Re-examines every own request (after acknowledgements, releases or
    /// departures).
    pub(crate) fn try_grant_all(&mut self) {
        if self.locks.mine.is_empty() {
            return;
        }
        let objs: Vec<Id> = self.locks.mine.keys().copied().collect();
        for obj in objs {
            self.try_grant(obj);
        }
    }

    /// Applies a received lock request.
    pub(crate) fn on_lock_request(&mut self, obj: Id, stamp: Id, wait: bool) {
        if self.is_ordered() {
            return self.ordered_request(obj, stamp, wait);
        }
        if self.gc.departed.contains(&stamp.peer) {
            return;
        }
        self.enqueue(obj, LockReq { stamp, held: None });
        self.locks.owed.push((obj, stamp));
    }

    /// Applies a received release.
    pub(crate) fn on_unlock(&mut self, obj: Id, req: Id, token: u64) {
        if self.is_ordered() {
            return self.ordered_unlock(obj, req);
        }
        self.dequeue(obj, req);
        let last = self.locks.last_token.entry(obj).or_insert(0);
        *last = (*last).max(token);
    }

    /// Applies a received acknowledgement.
    pub(crate) fn on_lock_ack(
        &mut self,
        sender: PeerIdx,
        obj: Id,
        req: Id,
        held: Option<(Id, u64)>,
    ) {
        if req.peer == PeerIdx::SELF && self.locks.mine.get(&obj).is_some_and(|m| m.req == req) {
            self.locks.acked.entry(req).or_default().insert(sender);
        }
        if let Some((req, token)) = held {
            let last = self.locks.last_token.entry(obj).or_insert(0);
            *last = (*last).max(token);
            if let Some(q) = self.locks.queues.get_mut(&obj) {
                if let Some(r) = q.iter_mut().find(|r| r.stamp == req) {
                    r.held = Some(token);
                }
                Locks::sort(q, &self.peers);
            }
        }
    }

    /// Queues the acknowledgements owed for requests received.
    pub(crate) fn send_lock_acks(&mut self) {
        if self.is_ordered() {
            // The log decides; nobody waits for acknowledgements.
            self.locks.owed.clear();
            return;
        }
        if self.locks.owed.is_empty() || !self.is_ready() {
            return;
        }
        let owed = std::mem::take(&mut self.locks.owed);
        let members: Vec<(Tag, smol_str::SmolStr)> = self
            .gc
            .members
            .iter()
            .map(|&m| {
                let p = self.peers.get(m);
                (Tag(p.incarnation()), p.hostname().into())
            })
            .chain(std::iter::once((
                Tag(self.me.incarnation()),
                self.me.hostname().into(),
            )))
            .collect();
        self.begin();
        for (obj, req) in owed {
            let held = self
                .locks
                .mine
                .get(&obj)
                .and_then(|m| m.token.map(|t| (m.req, t)));
            self.tick();
            let wobj = self.wire_id(obj);
            let wreq = self.wire_id(req);
            let held = held.map(|(r, t)| (self.wire_id(r), t));
            self.out.ops.push(WireOp::LockAck {
                obj: wobj,
                req: wreq,
                held,
                members: members.clone(),
            });
        }
        self.commit();
    }

    /// Forgets everything a departed peer asked for or held.
    pub(crate) fn drop_peer_locks(&mut self, peer: PeerIdx) {
        // A departed holder may have used a token nobody heard of; it cannot
        // exceed its request's counter or a token known here, so later
        // grants start above both.
        for (obj, q) in self.locks.queues.iter_mut() {
            for r in q.iter().filter(|r| r.stamp.peer == peer) {
                let last = self.locks.last_token.entry(*obj).or_insert(0);
                *last = (*last).max(r.held.unwrap_or(r.stamp.counter));
            }
            q.retain(|r| r.stamp.peer != peer);
        }
        self.locks.queues.retain(|_, q| !q.is_empty());
        self.locks.last_heard.remove(&peer);
        if self.is_ordered() {
            self.ordered_regrant();
        } else {
            self.try_grant_all();
        }
    }

    /// This replica was evicted by its peers: every lock it held is lost.
    pub(crate) fn lose_all_locks(&mut self) {
        self.locks.acked.clear();
        let mine: Vec<(Id, Mine)> = self.locks.mine.drain().collect();
        for (obj, m) in mine {
            self.dequeue(obj, m.req);
            self.events.push_back(Event::Lock(match m.token {
                Some(token) => LockEvent::Lost {
                    object: ObjectId(obj),
                    token,
                },
                None => LockEvent::Withdrawn {
                    object: ObjectId(obj),
                },
            }));
        }
    }

    /// Heartbeats and failure detection, when configured.
    pub(crate) fn check_liveness(&mut self, now: Duration) {
        let Some(timeout) = self.config.peer_timeout.or(self.config.lease) else {
            return;
        };
        self.heartbeat(now);
        if self.is_ordered() {
            // Leases expire by the log's clock, not this one.
            return;
        }
        for p in std::mem::take(&mut self.locks.heard) {
            self.locks.last_heard.insert(p, now);
        }
        if !self.is_ready() {
            // Membership is incomplete until the sync answer arrives.
            return;
        }
        let members: Vec<PeerIdx> = self.gc.members.iter().copied().collect();
        let mut silent = Vec::new();
        for m in members {
            let heard = *self.locks.last_heard.entry(m).or_insert(now);
            if now.saturating_sub(heard) > timeout {
                silent.push(m);
            }
        }
        if silent.is_empty() {
            return;
        }
        self.begin();
        for m in silent {
            let stamp = self.tick();
            self.locks.evicted_at.insert(m, stamp);
            let peer = self.peers.get(m);
            let (tag, hostname) = (Tag(peer.incarnation()), peer.hostname().into());
            self.out.ops.push(WireOp::Evict {
                peer: tag,
                hostname,
            });
            self.depart(m);
        }
        self.commit();
    }

    /// Whether this replica sends heartbeats: for failure detection, or to
    /// renew its lease in a log.
    pub(crate) fn sends_heartbeats(&self) -> bool {
        self.config.peer_timeout.is_some() || self.config.lease.is_some()
    }

    /// Sends a heartbeat when nothing was sent for a heartbeat interval.
    pub(crate) fn heartbeat(&mut self, now: Duration) {
        if self.sends_heartbeats()
            && now.saturating_sub(self.locks.last_sent) >= self.config.heartbeat
        {
            self.begin();
            self.tick();
            self.out.ops.push(WireOp::Tick);
            self.commit();
        }
    }

    /// A peer this replica evicted evicted it too: the earlier eviction
    /// stands, so this replica yields if the peer's came first.
    pub(crate) fn check_counter_eviction(&mut self, sender: PeerIdx, lamport: u64, ops: &[WireOp]) {
        let Some(&mine) = self.locks.evicted_at.get(&sender) else {
            return;
        };
        let mut counter = lamport;
        for op in ops {
            if let WireOp::Evict { peer, .. } = op {
                if peer.0 == self.me.incarnation()
                    && self.peers.later(mine, Id::new(sender, counter))
                {
                    self.evicted();
                    return;
                }
            }
            counter += op.counters();
        }
    }

    /// This replica learned that its peers evicted it.
    pub(crate) fn evicted(&mut self) {
        if !self.locks.evicted {
            self.locks.evicted = true;
            self.lose_all_locks();
            self.events.push_back(Event::Evicted);
        }
    }

    /// Marks a peer as gone for good: not a member, not waited for.
    pub(crate) fn depart(&mut self, peer: PeerIdx) {
        if peer == PeerIdx::SELF {
            return;
        }
        self.gc.departed.insert(peer);
        if self.gc.members.remove(&peer) {
            self.events
                .push_back(Event::PeerLeft(self.peers.get(peer).clone()));
        }
        self.drop_peer_locks(peer);
    }
}
