//! Locks over a totally ordered log (NATS JetStream, a sequencer): decided by
//! log order, with leases on the log's clock.
//!
//! Every replica reads the same messages in the same order, each with its
//! position and the time the log assigned it, so every decision is a
//! function of the log prefix, the same everywhere, with no
//! acknowledgements: the head of a queue holds the lock, with the position
//! that made it the head as its token; a fail-fast request finding the
//! queue non-empty is refused; a holder whose last message is older than
//! its lease is gone; a write to an object another peer holds at the
//! write's position is refused by every replica (a writer that raced a
//! grant sees its own write refused when it reads it back, and reloads).
//! Why this is safe, and how outages of the log are told from failures:
//! DESIGN.md, "On a totally ordered log".

use std::collections::BTreeMap;
use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};

use super::{LockReq, Queues};
use crate::clock::Peers;
use crate::error::ReceiveError;
use crate::event::{Event, LockEvent};
use crate::membership::Membership;
use crate::op::last_counter;
use crate::outbox::Outbox;
use crate::outputs::{Events, Outputs};
use crate::value::{Id, ObjectId, PeerIdx};
use crate::wire::{LogTransfer, Ops, WireOp};

#[derive(Debug)]
pub(crate) struct LogLocks {
    pub(super) q: Queues,
    /// Own fail-fast requests refused at their position, until the next
    /// request for the object.
    pub(super) refused: FxHashSet<Id>,
    pub(super) log: LogState,
    pub(super) lease: Duration,
    /// The most bytes of own messages held while read ahead of an earlier
    /// one ([`crate::Config::max_backlog`], as for a peer's).
    pub(super) max_backlog: usize,
}

/// Where the log stands for this replica.
#[derive(Debug, Default, Clone)]
pub(super) struct LogState {
    /// Position of the message being (or last) applied.
    position: u64,
    /// The lease clock: the log's time, except that a silence of the whole
    /// log longer than half a lease counts as half a lease (live nodes send
    /// heartbeats every third of a lease), and one longer than two thirds of
    /// a lease (the log was unavailable) renews every lease.
    time: Duration,
    /// The log's own timestamp of that message.
    stamp: Duration,
    /// Lease clock of each peer's latest message.
    last_seen: FxHashMap<PeerIdx, Duration>,
    /// Sequence number of this replica's latest message read back, all
    /// those before it read back too.
    pub(super) echoed: u64,
    /// The last counter of this replica's latest operations read back.
    echoed_counter: u64,
    /// Own messages read back ahead of an earlier one not read back yet, by
    /// sequence number: each with its operations (if it carries any) and
    /// its size.
    early: BTreeMap<u64, (Option<(u64, Ops)>, usize)>,
    /// The bytes of `early`.
    early_bytes: usize,
    /// A write of this replica was refused by the log: its state is not the
    /// log's until it reloads.
    diverged: bool,
    /// How many of this replica's writes the log refused.
    refused_writes: u64,
}

/// A transferred log state, validated, in local terms.
#[derive(Debug)]
pub(crate) struct LoadedLog {
    pub(crate) position: u64,
    pub(crate) time: Duration,
    pub(crate) stamp: Duration,
    pub(crate) seen: Vec<(PeerIdx, Duration)>,
}

fn nanos(t: &Duration) -> u64 {
    u64::try_from(t.as_nanos()).unwrap_or(u64::MAX)
}

impl LogLocks {
    pub(super) fn new(lease: Duration, max_backlog: usize) -> LogLocks {
        LogLocks {
            q: Queues::default(),
            refused: FxHashSet::default(),
            log: LogState::default(),
            lease,
            max_backlog,
        }
    }

    /// The position of the last message applied.
    pub(crate) fn position(&self) -> u64 {
        self.log.position
    }

    /// Whether the message at `position` was applied already (read again
    /// after a reconnect).
    pub(crate) fn was_read(&self, position: u64) -> bool {
        position <= self.log.position && position != 0
    }

    /// Moves to the message at `position`, stamped by the log with `time`;
    /// returns the lease clock.
    pub(crate) fn advance(&mut self, position: u64, time: Duration) -> Duration {
        let log = &mut self.log;
        log.position = position;
        let gap = match log.stamp.is_zero() {
            true => Duration::ZERO,
            false => time.saturating_sub(log.stamp),
        };
        log.time += gap.min(self.lease / 2);
        if gap > self.lease * 2 / 3 {
            // Two heartbeat intervals without a message from anyone: the
            // log was unavailable. Nobody could renew, and nodes come back
            // from it at different times: every lease restarts now.
            let now = log.time;
            log.last_seen.values_mut().for_each(|t| *t = now);
        }
        log.stamp = log.stamp.max(time);
        log.time
    }

    /// `peer` wrote at lease clock `now` (renewing its lease).
    pub(crate) fn saw(&mut self, peer: PeerIdx, now: Duration) {
        self.log.last_seen.insert(peer, now);
    }

    /// `peer` is known from `now` on if it was not before (a peer that just
    /// announced itself starts its lease).
    pub(crate) fn saw_first(&mut self, peer: PeerIdx, now: Duration) {
        self.log.last_seen.entry(peer).or_insert(now);
    }

    /// The peers (this replica included) whose lease ran out at `now`; they
    /// are forgotten here, and lose their locks and membership at the same
    /// position on every replica.
    pub(crate) fn expired(&mut self, now: Duration, members: &Membership) -> Vec<PeerIdx> {
        let gone: Vec<PeerIdx> = self
            .log
            .last_seen
            .iter()
            .filter(|&(&p, &seen)| {
                now.saturating_sub(seen) > self.lease
                    && (p == PeerIdx::SELF || !members.is_departed(p))
            })
            .map(|(&p, _)| p)
            .collect();
        for p in &gone {
            self.log.last_seen.remove(p);
        }
        gone
    }

    /// This replica's own message `seq`, of `size` bytes, read back from
    /// the log with its operations if it carries any (`tick`, `ops`). Taken
    /// as every peer takes the messages of this replica's stream, so that
    /// stamps and lock checks come out the same here as there: a message
    /// read before (a publish retried past the log's deduplication) is
    /// dropped, and one read ahead of an earlier one (a retry that landed
    /// behind it) is held, within [`crate::Config::max_backlog`] bytes,
    /// until that one is read, and applied after it, at its position.
    ///
    /// # Errors
    /// [`ReceiveError::BacklogFull`] when holding it would exceed that; it
    /// is dropped, as a peer drops it.
    pub(crate) fn read_back(
        &mut self,
        seq: u64,
        ops: Option<(u64, Ops)>,
        size: usize,
        outbox: &Outbox,
        members: &Membership,
        events: &mut Events,
    ) -> Result<(), ReceiveError> {
        let log = &mut self.log;
        if seq <= log.echoed || log.early.contains_key(&seq) {
            return Ok(());
        }
        if seq > log.echoed + 1 {
            if log.early_bytes + size > self.max_backlog {
                return Err(ReceiveError::BacklogFull(log.early_bytes));
            }
            log.early_bytes += size;
            log.early.insert(seq, (ops, size));
            return Ok(());
        }
        self.echo(seq, ops.as_ref(), outbox, members, events);
        while let Some((ops, size)) = self.log.early.remove(&(self.log.echoed + 1)) {
            self.log.early_bytes -= size;
            self.echo(self.log.echoed + 1, ops.as_ref(), outbox, members, events);
        }
        Ok(())
    }

    /// Lock and write checks of this replica's own message `seq`, the next
    /// of its stream, read back from the log (with its operations, moving
    /// the counter by `tick`).
    fn echo(
        &mut self,
        seq: u64,
        ops: Option<&(u64, Ops)>,
        outbox: &Outbox,
        members: &Membership,
        events: &mut Events,
    ) {
        debug_assert_eq!(seq, self.log.echoed + 1, "own messages are echoed in order");
        self.log.echoed = seq;
        let Some((tick, ops)) = ops else {
            return;
        };
        let first = self.log.echoed_counter + tick;
        let total: u64 = ops.iter().map(WireOp::counters).sum();
        self.log.echoed_counter = last_counter(first, total);
        let mut counter = first;
        let mut refused = 0;
        for op in ops {
            let here = counter;
            counter += op.counters();
            match op {
                WireOp::Lock { obj } | WireOp::TryLock { obj } => {
                    if let Some(obj) = outbox.resolve(obj) {
                        let wait = matches!(op, WireOp::Lock { .. });
                        self.on_request(obj, Id::new(PeerIdx::SELF, here), wait, members, events);
                    }
                }
                WireOp::Unlock { obj, req, .. } => {
                    if let (Some(obj), Some(req)) = (outbox.resolve(obj), outbox.resolve(req)) {
                        self.on_unlock(obj, req, events);
                    }
                }
                op => {
                    // Every replica refuses this one operation, and applies
                    // the others of the message.
                    if let Some(obj) = op.target().and_then(|w| outbox.resolve(w)) {
                        refused += u64::from(self.held_by_other(obj, PeerIdx::SELF));
                    }
                }
            }
        }
        self.log.refused_writes += refused;
        if refused > 0 && !self.log.diverged {
            // This replica applied a write the log refuses: it must start
            // over from a snapshot of the log.
            self.log.diverged = true;
            events.push(Event::NeedsSync);
        }
    }

    /// How many of this replica's writes the log refused (each a write to
    /// an object another replica held at its position).
    pub(crate) fn refused_writes(&self) -> u64 {
        self.log.refused_writes
    }

    /// Whether the log refused a write this replica applied: its state is
    /// not the log's until it reloads.
    pub(crate) fn diverged(&self) -> bool {
        self.log.diverged
    }

    /// The sequence number of this replica's latest message read back, and
    /// the last counter of its latest operations read back.
    pub(crate) fn echoed(&self) -> (u64, u64) {
        (self.log.echoed, self.log.echoed_counter)
    }

    /// Whether this replica's state is exactly the log's up to its position
    /// (nothing sent and not read back, no refused write), so that a
    /// snapshot of it serves joiners.
    pub(crate) fn is_clean(&self, outbox: &Outbox) -> bool {
        outbox.is_idle() && outbox.seq() == self.log.echoed && !self.log.diverged
    }

    /// Whether `obj`'s lock is held by a peer other than `writer`.
    pub(super) fn held_by_other(&self, obj: Id, writer: PeerIdx) -> bool {
        self.q
            .head(obj)
            .is_some_and(|h| h.held.is_some() && h.stamp.peer != writer)
    }

    /// Sends this replica's request; it takes its place when it comes back
    /// through the log.
    pub(super) fn request(&mut self, obj: Id, wait: bool, out: &mut Outputs, peers: &Peers) {
        self.refused.remove(&obj);
        self.q.send_request(obj, wait, out, peers);
        out.end();
    }

    /// A request read from the log at the current position.
    pub(super) fn on_request(
        &mut self,
        obj: Id,
        stamp: Id,
        wait: bool,
        members: &Membership,
        events: &mut Events,
    ) {
        if stamp.peer != PeerIdx::SELF && members.is_departed(stamp.peer) {
            return;
        }
        let queue = self.q.queues.entry(obj).or_default();
        if queue.iter().any(|r| r.stamp == stamp) {
            return;
        }
        if !wait && !queue.is_empty() {
            // Fail-fast: refused at its position.
            if stamp.peer == PeerIdx::SELF && self.q.mine.get(&obj).is_some_and(|m| m.req == stamp)
            {
                self.q.mine.remove(&obj);
                self.refused.insert(obj);
                events.push(Event::Lock(LockEvent::Refused {
                    object: ObjectId(obj),
                }));
            }
            return;
        }
        queue.push(LockReq { stamp, held: None });
        if queue.len() == 1 {
            self.grant(obj, events);
        }
    }

    /// A release read from the log.
    pub(super) fn on_unlock(&mut self, obj: Id, req: Id, events: &mut Events) {
        let was_head = self.q.head(obj).is_some_and(|h| h.stamp == req);
        self.q.dequeue(obj, req);
        if was_head {
            self.grant(obj, events);
        }
    }

    /// Grants the head of `obj`'s queue, with the current position as token.
    fn grant(&mut self, obj: Id, events: &mut Events) {
        let token = self
            .log
            .position
            .max(self.q.last_token.get(&obj).copied().unwrap_or(0) + 1);
        let Some(head) = self.q.queues.get_mut(&obj).and_then(|q| q.first_mut()) else {
            return;
        };
        if head.held.is_some() {
            return;
        }
        head.held = Some(token);
        let stamp = head.stamp;
        self.q.last_token.insert(obj, token);
        if stamp.peer == PeerIdx::SELF {
            if let Some(m) = self.q.mine.get_mut(&obj) {
                if m.req == stamp {
                    m.token = Some(token);
                    events.push(Event::Lock(LockEvent::Granted {
                        object: ObjectId(obj),
                        token,
                    }));
                }
            }
        }
    }

    /// Grants every queue whose head is free (after departures).
    pub(crate) fn regrant(&mut self, events: &mut Events) {
        for obj in super::in_order(self.q.queues.keys()) {
            self.grant(obj, events);
        }
    }

    pub(super) fn transfer(&self) -> LogTransfer {
        let mut seen: Vec<(u32, u64)> = self
            .log
            .last_seen
            .iter()
            .map(|(p, t)| (p.0, nanos(t)))
            .collect();
        seen.sort();
        LogTransfer {
            position: self.log.position,
            clock: nanos(&self.log.time),
            stamp: nanos(&self.log.stamp),
            seen,
        }
    }

    pub(super) fn load(&mut self, l: LoadedLog) {
        self.log.position = l.position;
        self.log.time = l.time;
        self.log.stamp = l.stamp;
        self.log.last_seen = l.seen.into_iter().collect();
    }
}
