//! Replicas over a totally ordered log (NATS JetStream, a sequencer):
//! locks decided by log order, leases by the log's timestamps.
//!
//! Every replica reads the same messages in the same order, each with its
//! position in the log and the time the log assigned it. That makes every
//! lock decision a function of the log prefix, the same everywhere, with no
//! acknowledgements:
//!
//! - a request joins its object's queue at its position; the head of a queue
//!   holds the lock, and its fencing token is the position of the message
//!   that made it the head;
//! - a fail-fast request finding the queue non-empty at its position is
//!   refused;
//! - a holder's lease is renewed by each of its messages in the log (it sends
//!   heartbeats); when a message arrives whose log time is past a holder's
//!   last message plus the lease, the holder is gone (locks, membership).
//!   A silence of the whole log longer than two heartbeat intervals (two
//!   thirds of a lease) is an outage, not anybody's failure: every lease
//!   restarts when the log resumes, so the nodes have a whole lease to come
//!   back;
//! - a write to an object held by another peer at the write's position is
//!   refused by every replica. A writer that raced a grant (it wrote before
//!   it read the grant) sees its own write refused when it reads it back and
//!   resynchronises, so replicas never diverge.
//!
//! A replica's own messages come back through the log; their lock
//! operations take effect then, and their document operations (applied
//! locally at once) are checked.

use std::time::Duration;

use crate::codec;
use crate::error::ReceiveError;
use crate::locks::LockEvent;
use crate::replica::{Event, Replica};
use crate::value::{Id, ObjectId, PeerIdx};
use crate::wire::{Body, WireId, WireOp};

/// Where the log stands for this replica.
#[derive(Debug, Default, Clone)]
pub(crate) struct LogState {
    /// Position of the message being (or last) applied.
    pub(crate) position: u64,
    /// The lease clock: the log's time, except that a silence of the whole
    /// log longer than half a lease counts as half a lease (live nodes send
    /// heartbeats every third of a lease), and one longer than two thirds of
    /// a lease (the log was unavailable) renews every lease.
    pub(crate) time: Duration,
    /// The log's own timestamp of that message.
    pub(crate) stamp: Duration,
    /// Lease clock of each peer's latest message.
    pub(crate) last_seen: rustc_hash::FxHashMap<PeerIdx, Duration>,
    /// Sequence number of this replica's latest message read back.
    pub(crate) echoed: u64,
    /// The last counter of this replica's latest operations read back.
    pub(crate) echoed_counter: u64,
    /// A write of this replica was refused by the log: its state is not the
    /// log's until it reloads.
    pub(crate) diverged: bool,
}

impl Replica {
    /// Whether locks and liveness follow a totally ordered log
    /// ([`crate::Config::ordered`]).
    pub fn is_ordered(&self) -> bool {
        self.config.lease.is_some()
    }

    /// Gives up this replica before replacing it with one loaded from a log
    /// snapshot: its locks are lost (with [`crate::LockEvent::Lost`] events)
    /// and it says goodbye, so the others stop counting on it.
    pub fn abandon(&mut self) {
        self.lose_all_locks();
        self.leave();
    }

    /// The log position of the last message applied with
    /// [`Replica::handle_ordered`] (a snapshot saved now covers the log up to
    /// here).
    pub fn log_position(&self) -> u64 {
        self.log.position
    }

    /// This replica's state as a snapshot of the log up to
    /// [`Replica::log_position`], for joiners to start from with
    /// [`Replica::from_exported`]. `None` while the state holds anything the
    /// log does not (a message not yet read back, a refused write): try again
    /// after reading further.
    pub fn log_snapshot(&mut self) -> Option<Vec<u8>> {
        let clean = self.is_ordered()
            && self.out.ops.is_empty()
            && self.out.seq == self.log.echoed
            && !self.log.diverged
            && self.is_ready();
        clean.then(|| self.export_state())
    }

    /// Applies the message at `position` of a totally ordered log, stamped
    /// by the log with `time`. Every replica must read the same log in order,
    /// its own messages included (they come back to it). Requires
    /// [`crate::Config::ordered`].
    ///
    /// # Errors
    /// As [`Replica::handle_message`].
    pub fn handle_ordered(
        &mut self,
        bytes: &[u8],
        position: u64,
        time: Duration,
    ) -> Result<(), ReceiveError> {
        if position <= self.log.position && position != 0 {
            // Read again after a reconnect: already applied.
            return Ok(());
        }
        let frame = codec::decode(bytes, self.config.max_message)?;
        self.log.position = position;
        if let Some(lease) = self.config.lease {
            let gap = if self.log.stamp.is_zero() {
                Duration::ZERO
            } else {
                time.saturating_sub(self.log.stamp)
            };
            self.log.time += gap.min(lease / 2);
            if gap > lease * 2 / 3 {
                // Two heartbeat intervals without a message from anyone:
                // the log was unavailable. Nobody could renew, and nodes
                // come back from it at different times: every lease
                // restarts now.
                let now = self.log.time;
                self.log.last_seen.values_mut().for_each(|t| *t = now);
            }
        }
        self.log.stamp = self.log.stamp.max(time);
        let now = self.log.time;
        let sender = if frame.from.0 == self.me.incarnation() {
            Some(PeerIdx::SELF)
        } else {
            self.peers.by_tag(frame.from.0)
        };
        if let Some(p) = sender {
            self.log.last_seen.insert(p, now);
        }
        self.expire(now);
        if frame.from.0 == self.me.incarnation() {
            self.flush_pending_ops();
            if let Some(seq) = frame.body.seq() {
                self.log.echoed = self.log.echoed.max(seq);
            }
            if let Body::Ops { tick, ops, .. } = &frame.body {
                let lamport = self.log.echoed_counter + tick;
                let total: u64 = ops.iter().map(WireOp::counters).sum();
                self.log.echoed_counter = crate::op::last_counter(lamport, total);
                self.own_echo(lamport, ops);
            }
            return Ok(());
        }
        let from = frame.from;
        let r = self.handle_frame(frame, bytes.len());
        if let Some(p) = self.peers.by_tag(from.0) {
            self.log.last_seen.entry(p).or_insert(now);
        }
        r
    }

    /// Peers silent past the lease lose their locks and their membership,
    /// at the same log position on every replica.
    fn expire(&mut self, now: Duration) {
        let Some(lease) = self.config.lease else {
            return;
        };
        let gone: Vec<PeerIdx> = self
            .log
            .last_seen
            .iter()
            .filter(|&(&p, &seen)| {
                now.saturating_sub(seen) > lease
                    && (p == PeerIdx::SELF || !self.gc.departed.contains(&p))
            })
            .map(|(&p, _)| p)
            .collect();
        for p in gone {
            self.log.last_seen.remove(&p);
            if p == PeerIdx::SELF {
                // Our own lease ran out in the log: whatever we wrote after
                // it is refused everywhere.
                self.evicted();
            } else {
                self.depart(p);
            }
            self.ordered_regrant();
        }
    }

    /// Lock and write checks of this replica's own message, read back from
    /// the log.
    fn own_echo(&mut self, lamport: u64, ops: &[WireOp]) {
        let mut counter = lamport;
        let mut refused = false;
        for op in ops {
            let here = counter;
            counter += op.counters();
            match op {
                WireOp::Lock { obj } | WireOp::TryLock { obj } => {
                    if let Some(obj) = self.own_wire_id(obj) {
                        let wait = matches!(op, WireOp::Lock { .. });
                        self.ordered_request(obj, Id::new(PeerIdx::SELF, here), wait);
                    }
                }
                WireOp::Unlock { obj, req, .. } => {
                    if let (Some(obj), Some(req)) = (self.own_wire_id(obj), self.own_wire_id(req)) {
                        self.ordered_unlock(obj, req);
                    }
                }
                WireOp::MapSet { obj, .. }
                | WireOp::MapDelete { obj, .. }
                | WireOp::ListInsert { obj, .. }
                | WireOp::Append { obj, .. }
                | WireOp::ListDelete { obj, .. }
                | WireOp::ListSet { obj, .. }
                | WireOp::ListMove { obj, .. } => {
                    if let Some(obj) = self.own_wire_id(obj) {
                        refused |= self.held_by_other(obj, PeerIdx::SELF);
                    }
                }
                _ => {}
            }
        }
        if refused && !self.log.diverged {
            // This replica applied a write the log refuses: it must start
            // over from a snapshot of the log.
            self.log.diverged = true;
            self.events.push_back(Event::NeedsSync);
        }
    }

    /// An id of this replica's own outgoing stream: its dictionary read
    /// backwards (wire index 0 is itself, the others were introduced in
    /// its earlier messages).
    fn own_wire_id(&self, w: &WireId) -> Option<Id> {
        let peer = match w.p {
            0 => Some(PeerIdx::SELF),
            p => self
                .out
                .dict
                .iter()
                .find(|&(_, &i)| i == p)
                .map(|(&peer, _)| peer),
        };
        peer.map(|p| Id::new(p, w.c))
    }

    /// Whether `obj`'s lock is held by a peer other than `writer`.
    pub(crate) fn held_by_other(&self, obj: Id, writer: PeerIdx) -> bool {
        self.locks
            .queues
            .get(&obj)
            .and_then(|q| q.first())
            .is_some_and(|h| h.held.is_some() && h.stamp.peer != writer)
    }

    /// A request read from the log at the current position.
    pub(crate) fn ordered_request(&mut self, obj: Id, stamp: Id, wait: bool) {
        if stamp.peer != PeerIdx::SELF && self.gc.departed.contains(&stamp.peer) {
            return;
        }
        let queue = self.locks.queues.entry(obj).or_default();
        if queue.iter().any(|r| r.stamp == stamp) {
            return;
        }
        if !wait && !queue.is_empty() {
            // Fail-fast: refused at its position.
            if stamp.peer == PeerIdx::SELF
                && self.locks.mine.get(&obj).is_some_and(|m| m.req == stamp)
            {
                self.locks.mine.remove(&obj);
                self.locks.refused.insert(obj);
                self.events.push_back(Event::Lock(LockEvent::Refused {
                    object: ObjectId(obj),
                }));
            }
            return;
        }
        queue.push(crate::locks::LockReq { stamp, held: None });
        if queue.len() == 1 {
            self.ordered_grant(obj);
        }
    }

    /// A release read from the log.
    pub(crate) fn ordered_unlock(&mut self, obj: Id, req: Id) {
        let was_head = self
            .locks
            .queues
            .get(&obj)
            .and_then(|q| q.first())
            .is_some_and(|h| h.stamp == req);
        self.dequeue(obj, req);
        if was_head {
            self.ordered_grant(obj);
        }
    }

    /// Grants the head of `obj`'s queue, with the current position as token.
    fn ordered_grant(&mut self, obj: Id) {
        let token = self
            .log
            .position
            .max(self.locks.last_token.get(&obj).copied().unwrap_or(0) + 1);
        let Some(head) = self.locks.queues.get_mut(&obj).and_then(|q| q.first_mut()) else {
            return;
        };
        if head.held.is_some() {
            return;
        }
        head.held = Some(token);
        let stamp = head.stamp;
        self.locks.last_token.insert(obj, token);
        if stamp.peer == PeerIdx::SELF {
            if let Some(m) = self.locks.mine.get_mut(&obj) {
                if m.req == stamp {
                    m.token = Some(token);
                    self.events.push_back(Event::Lock(LockEvent::Granted {
                        object: ObjectId(obj),
                        token,
                    }));
                }
            }
        }
    }

    /// Grants every queue whose head is free (after departures).
    pub(crate) fn ordered_regrant(&mut self) {
        let objs: Vec<Id> = self.locks.queues.keys().copied().collect();
        for obj in objs {
            self.ordered_grant(obj);
        }
    }
}
