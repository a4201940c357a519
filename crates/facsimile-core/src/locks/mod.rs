//! Distributed locks on objects, by one of two protocols chosen once from
//! the [`Config`]:
//!
//! - [`FifoLocks`]: Lamport's mutual exclusion over FIFO broadcast, every
//!   request acknowledged by every live member;
//! - [`LogLocks`]: over a totally ordered log, decided by log order, with
//!   leases on the log's clock.
//!
//! Both keep, per object, the queue of requests known here, this replica's
//! own request, and the highest fencing token known ([`Queues`]). Invariant
//! (both): the head of a queue holds the lock, a grant sticks to the head
//! until released, and tokens increase strictly per object. Why each is
//! safe: DESIGN.md, "Locks".

mod fifo;
mod log;

use std::time::Duration;

use rustc_hash::FxHashSet;

use crate::clock::Peers;
use crate::config::Config;
use crate::error::{Error, ReceiveError};
use crate::event::{Event, LockEvent, LockState};
use crate::graph::IdMap;
use crate::membership::Membership;
use crate::op::Op;
use crate::outbox::bare_op_bound;
use crate::outputs::{Events, Outputs};
use crate::value::{Id, ObjectId, PeerIdx};
use crate::wire::{LockQueueState, LogTransfer, UnheardState, WireId, WireOp};

pub(crate) use fifo::FifoLocks;
pub(crate) use log::LogLocks;

/// One request in an object's queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct LockReq {
    pub(crate) stamp: Id,
    /// Known to be granted, with this token.
    pub(crate) held: Option<u64>,
}

/// `ids` in an order every run of this process repeats: tables keyed by
/// ids iterate in an order drawn per process ([`IdKeys`](crate::graph::IdKeys)),
/// and what a replica sends and reports must not follow it.
fn in_order<'a>(ids: impl Iterator<Item = &'a Id>) -> Vec<Id> {
    let mut ids: Vec<Id> = ids.copied().collect();
    ids.sort_unstable_by_key(|&id| order(id));
    ids
}

/// The sort key of [`in_order`].
fn order(id: Id) -> (u64, u32) {
    (id.counter, id.peer.0)
}

/// This replica's own request for an object.
#[derive(Clone, Copy, Debug)]
struct Mine {
    req: Id,
    token: Option<u64>,
    /// Made by the fail-fast form: over FIFO broadcast, withdrawn as
    /// refused when another peer's request turns out to come first.
    fail_fast: bool,
}

/// Requests of departed peers on one object whose grants may have gone
/// unheard (FIFO broadcast): each of them may hold a token above every one
/// known here.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Unheard {
    /// How many.
    pub(crate) count: u64,
    /// The highest request counter among them.
    pub(crate) counter: u64,
}

impl Unheard {
    /// The highest token one of them could hold when `last` is the highest
    /// token known: each took its counter or one above the highest token it
    /// knew, which is `last` or another's of them (DESIGN.md, "Locks").
    fn ceiling(self, last: u64) -> u64 {
        let above = self.count.saturating_sub(1);
        last.saturating_add(self.count)
            .max(self.counter.saturating_add(above))
    }
}

/// Raises the highest token known on `obj` to `token`.
fn raise(last_token: &mut IdMap<u64>, obj: Id, token: u64) {
    let last = last_token.entry(obj).or_insert(0);
    *last = (*last).max(token);
}

/// The lock state both protocols keep.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    queues: IdMap<Vec<LockReq>>,
    mine: IdMap<Mine>,
    /// Highest fencing token known per object.
    last_token: IdMap<u64>,
    /// Per object, until a grant here passes them.
    unheard: IdMap<Unheard>,
}

impl Queues {
    fn head(&self, obj: Id) -> Option<&LockReq> {
        self.queues.get(&obj).and_then(|q| q.first())
    }

    fn state(&self, obj: Id) -> LockState {
        match self.mine.get(&obj) {
            None => LockState::None,
            Some(Mine { token: None, .. }) => LockState::Waiting,
            Some(Mine { token: Some(t), .. }) => LockState::Held(*t),
        }
    }

    /// Whether another peer's request on `obj` comes before this
    /// replica's (before any, when it has none): queues are in grant
    /// order, the head first.
    fn other_ahead(&self, obj: Id) -> bool {
        let mine = self.mine.get(&obj).map(|m| m.req);
        self.queues.get(&obj).is_some_and(|q| {
            q.iter()
                .take_while(|r| Some(r.stamp) != mine)
                .any(|r| r.stamp.peer != PeerIdx::SELF)
        })
    }

    /// `peer`'s request queued on `obj`, if any (at most one: see
    /// [`Locks::check_requests`]).
    fn request_of(&self, obj: Id, peer: PeerIdx) -> Option<Id> {
        self.queues
            .get(&obj)?
            .iter()
            .find(|r| r.stamp.peer == peer)
            .map(|r| r.stamp)
    }

    fn dequeue(&mut self, obj: Id, req: Id) {
        if let Some(q) = self.queues.get_mut(&obj) {
            q.retain(|r| r.stamp != req);
            if q.is_empty() {
                self.queues.remove(&obj);
            }
        }
    }

    fn raise_token(&mut self, obj: Id, token: u64) {
        raise(&mut self.last_token, obj, token);
    }

    /// The token of a grant here, on `obj`, of a request with `counter`:
    /// above every token known and every token an unheard departed
    /// requester could hold, worked out against what is known now (a
    /// release read since the departure may have raised it). It becomes
    /// the highest known, which passes the unheard ones for good.
    fn grant_token(&mut self, obj: Id, counter: u64) -> u64 {
        let last = self.last_token.get(&obj).copied().unwrap_or(0);
        let floor = match self.unheard.remove(&obj) {
            Some(u) => u.ceiling(last),
            None => last,
        };
        let token = counter.max(floor + 1);
        self.last_token.insert(obj, token);
        token
    }

    /// Forgets a departed peer's requests. With `unheard_grants` (FIFO
    /// broadcast), a departed requester whose grant nobody heard of is
    /// recorded, for the next grant here to pass ([`Queues::grant_token`]).
    /// Over a log every grant is known.
    fn drop_peer(&mut self, peer: PeerIdx, unheard_grants: bool) {
        for (obj, q) in self.queues.iter_mut() {
            for r in q.iter().filter(|r| r.stamp.peer == peer) {
                match r.held {
                    Some(token) => raise(&mut self.last_token, *obj, token),
                    None if unheard_grants => {
                        let u = self.unheard.entry(*obj).or_default();
                        u.count += 1;
                        u.counter = u.counter.max(r.stamp.counter);
                    }
                    None => raise(&mut self.last_token, *obj, r.stamp.counter),
                }
            }
            q.retain(|r| r.stamp.peer != peer);
        }
        self.queues.retain(|_, q| !q.is_empty());
    }

    /// Drops every own request, reporting each as lost or withdrawn.
    fn lose_all(&mut self, events: &mut Events) {
        for obj in in_order(self.mine.keys()) {
            let m = self.mine.remove(&obj).expect("listed");
            self.dequeue(obj, m.req);
            events.push(Event::Lock(match m.token {
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

    /// Sends this replica's request for `obj` and records it.
    fn send_request(&mut self, obj: Id, wait: bool, out: &mut Outputs, peers: &Peers) -> Id {
        out.begin();
        let stamp = out.outbox.tick();
        let wobj = out.outbox.wire_id(obj, peers);
        out.outbox.push(match wait {
            true => WireOp::Lock { obj: wobj },
            false => WireOp::TryLock { obj: wobj },
        });
        self.mine.insert(
            obj,
            Mine {
                req: stamp,
                token: None,
                fail_fast: !wait,
            },
        );
        stamp
    }

    /// Sends the release (or withdrawal) of this replica's request `mine`.
    fn send_release(&mut self, obj: Id, mine: Mine, out: &mut Outputs, peers: &Peers) {
        out.begin();
        out.room_for_own(peers, 2, bare_op_bound(out.outbox.format()));
        out.outbox.tick();
        let wobj = out.outbox.wire_id(obj, peers);
        let wreq = out.outbox.wire_id(mine.req, peers);
        out.outbox.push(WireOp::Unlock {
            obj: wobj,
            req: wreq,
            token: mine.token.unwrap_or(0),
        });
    }

    /// The queues and tokens in a transferred state's form.
    fn transfer(&self, id: impl Fn(Id) -> WireId) -> Vec<LockQueueState> {
        let objects: FxHashSet<Id> = self
            .last_token
            .keys()
            .chain(self.queues.keys())
            .copied()
            .collect();
        let mut locks: Vec<LockQueueState> = objects
            .into_iter()
            .map(|obj| {
                let queue = self
                    .queues
                    .get(&obj)
                    .map(|q| q.iter().map(|r| (id(r.stamp), r.held)).collect())
                    .unwrap_or_default();
                (
                    id(obj),
                    queue,
                    self.last_token.get(&obj).copied().unwrap_or(0),
                )
            })
            .collect();
        locks.sort_by_key(|(id, _, _)| (id.p, id.c));
        locks
    }

    /// The unheard departed requesters in a transferred state's form.
    fn transfer_unheard(&self, id: impl Fn(Id) -> WireId) -> Vec<UnheardState> {
        let mut unheard: Vec<UnheardState> = self
            .unheard
            .iter()
            .map(|(&obj, u)| (id(obj), u.count, u.counter))
            .collect();
        unheard.sort_by_key(|(id, _, _)| (id.p, id.c));
        unheard
    }

    /// Takes transferred queues and tokens, without this replica's own
    /// requests (they were dropped with its state).
    fn load(&mut self, mut queues: IdMap<Vec<LockReq>>, tokens: LoadedTokens) {
        for q in queues.values_mut() {
            q.retain(|r| r.stamp.peer != PeerIdx::SELF);
        }
        queues.retain(|_, q| !q.is_empty());
        self.queues = queues;
        self.last_token = tokens.last;
        self.unheard = tokens.unheard;
    }

    #[cfg(feature = "sim")]
    fn debug(&self) -> String {
        format!(
            "queues {:?}\nmine {:?}\nunheard {:?}",
            self.queues, self.mine, self.unheard
        )
    }
}

/// A transferred state's fencing tokens, validated: the highest known per
/// object, and the unheard departed requesters the next grant must pass.
#[derive(Debug, Default)]
pub(crate) struct LoadedTokens {
    pub(crate) last: IdMap<u64>,
    pub(crate) unheard: IdMap<Unheard>,
}

/// Why a local write to a locked object is refused.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Refusal {
    /// A map write or element set: [`Error::NotOwner`].
    NotOwner,
    /// An array method: [`Error::Locked`].
    Locked,
}

/// The lock protocol of a replica.
#[derive(Debug)]
pub(crate) enum Locks {
    Fifo(FifoLocks),
    Log(LogLocks),
}

impl Locks {
    pub(crate) fn new(config: &Config) -> Locks {
        match config.lease {
            Some(lease) => Locks::Log(LogLocks::new(lease, config.max_backlog)),
            None => Locks::Fifo(FifoLocks::new(config.peer_timeout)),
        }
    }

    /// How many locks this replica holds or waits for: each is released
    /// one day.
    pub(crate) fn own_requests(&self) -> usize {
        self.queues().mine.len()
    }

    fn queues(&self) -> &Queues {
        match self {
            Locks::Fifo(l) => &l.q,
            Locks::Log(l) => &l.q,
        }
    }

    fn queues_mut(&mut self) -> &mut Queues {
        match self {
            Locks::Fifo(l) => &mut l.q,
            Locks::Log(l) => &mut l.q,
        }
    }

    /// Forgets everything (a new incarnation).
    pub(crate) fn reset(&mut self) {
        match self {
            Locks::Fifo(l) => *l = FifoLocks::new(l.peer_timeout),
            Locks::Log(l) => *l = LogLocks::new(l.lease, l.max_backlog),
        }
    }

    // ---------------------------------------------------------------- reads

    pub(crate) fn state(&self, obj: ObjectId) -> LockState {
        match self {
            Locks::Log(l) if !l.q.mine.contains_key(&obj.0) && l.refused.contains(&obj.0) => {
                LockState::Refused
            }
            Locks::Fifo(l) if !l.q.mine.contains_key(&obj.0) && l.refused.contains(&obj.0) => {
                LockState::Refused
            }
            _ => self.queues().state(obj.0),
        }
    }

    /// The peer that holds or heads the queue of `obj`, and its token when
    /// a grant is known here.
    /// Every queue known here, in no particular order: the object, its
    /// requests in queue order (the head holds or is next), and the highest
    /// fencing token known for it.
    pub(crate) fn table(&self) -> impl Iterator<Item = (Id, &[LockReq], u64)> + '_ {
        let q = self.queues();
        q.queues.iter().map(|(obj, reqs)| {
            let last = q.last_token.get(obj).copied().unwrap_or(0);
            (*obj, reqs.as_slice(), last)
        })
    }

    pub(crate) fn holder(&self, obj: ObjectId) -> Option<(PeerIdx, Option<u64>)> {
        self.queues()
            .head(obj.0)
            .map(|head| (head.stamp.peer, head.held))
    }

    /// Whether this replica holds any lock.
    pub(crate) fn holds_any(&self) -> bool {
        self.queues().mine.values().any(|m| m.token.is_some())
    }

    /// Refuses a local write to `obj` when another replica holds or heads
    /// its lock queue, or when this replica waits for it.
    pub(crate) fn check_owner(&self, obj: Id, refusal: Refusal) -> Result<(), Error> {
        let q = self.queues();
        let Some(head) = q.head(obj) else {
            return Ok(());
        };
        if q.mine
            .get(&obj)
            .is_some_and(|m| m.token.is_some() && m.req == head.stamp)
        {
            return Ok(());
        }
        let o = ObjectId(obj);
        Err(match refusal {
            Refusal::NotOwner => Error::NotOwner(o),
            Refusal::Locked => Error::Locked(o),
        })
    }

    /// Whether `op`, a write of `writer` read from the peers, must be
    /// refused: over a log, when another peer holds the lock at its
    /// position (every replica refuses it alike); never over FIFO
    /// broadcast, where writes race grants and the holder's writes win by
    /// their stamps.
    #[inline]
    pub(crate) fn refuses(&self, op: &crate::op::Op, writer: PeerIdx) -> bool {
        match self {
            Locks::Fifo(_) => false,
            Locks::Log(l) => op.target().is_some_and(|obj| l.held_by_other(obj, writer)),
        }
    }

    // --------------------------------------------------------- local calls

    /// Asks for the lock on `obj` (present in the document).
    pub(crate) fn request(
        &mut self,
        obj: ObjectId,
        wait: bool,
        out: &mut Outputs,
        peers: &Peers,
        members: &Membership,
    ) -> Result<LockState, Error> {
        if !wait && self.queues().other_ahead(obj.0) {
            return Err(Error::Locked(obj));
        }
        if self.queues().mine.contains_key(&obj.0) {
            // One request per replica: a second call joins it.
            return Ok(self.state(obj));
        }
        match self {
            Locks::Fifo(l) => l.request(obj.0, wait, out, peers, members),
            Locks::Log(l) => l.request(obj.0, wait, out, peers),
        }
        Ok(self.state(obj))
    }

    /// Releases this replica's lock on `obj`, or, with `withdraw`, its
    /// request still waiting too.
    pub(crate) fn release(
        &mut self,
        obj: ObjectId,
        withdraw: bool,
        out: &mut Outputs,
        peers: &Peers,
    ) -> Result<(), Error> {
        self.end(obj, withdraw, false, out, peers)
    }

    /// Ends this replica's request for `obj` as [`Locks::release`] does; a
    /// grant it ends is reported `lost` when its holder did not ask.
    fn end(
        &mut self,
        obj: ObjectId,
        withdraw: bool,
        lost: bool,
        out: &mut Outputs,
        peers: &Peers,
    ) -> Result<(), Error> {
        let q = self.queues_mut();
        let mine = match q.mine.get(&obj.0) {
            Some(m) if withdraw || m.token.is_some() => q.mine.remove(&obj.0),
            _ => None,
        };
        let Some(mine) = mine else {
            return Err(match q.head(obj.0) {
                Some(r) if r.stamp.peer != PeerIdx::SELF => Error::NotOwner(obj),
                _ => Error::NotLocked(obj),
            });
        };
        q.send_release(obj.0, mine, out, peers);
        if let Locks::Fifo(l) = self {
            l.released(obj.0, mine.req);
        }
        out.end();
        out.events.push(Event::Lock(match mine.token {
            Some(token) if lost => LockEvent::Lost { object: obj, token },
            Some(token) => LockEvent::Released { object: obj, token },
            None => LockEvent::Withdrawn { object: obj },
        }));
        // Our leaving the head may let nobody else here in, but a grant of
        // another local request cannot exist: one request per object.
        Ok(())
    }

    /// Withdraws or releases every own request (a sync drops the state
    /// they were made in). A grant ends as lost: its holder did not release
    /// it, and must stop relying on it.
    pub(crate) fn release_all(&mut self, out: &mut Outputs, peers: &Peers) {
        for obj in in_order(self.queues().mine.keys()) {
            let _ = self.end(ObjectId(obj), true, true, out, peers);
        }
    }

    /// Every own request is lost (this replica was evicted).
    pub(crate) fn lose_all(&mut self, events: &mut Events) {
        if let Locks::Fifo(l) = self {
            l.acked.clear();
        }
        self.queues_mut().lose_all(events);
    }

    // -------------------------------------------------------- remote input

    /// Refuses `ops`, a message of `sender` (`from`) being validated, when
    /// it would queue a second request of `sender` on one object beside
    /// the first, or when it releases a request that is not `sender`'s or
    /// announces another peer's grant.
    /// An honest replica has one request at most: it ends one (its
    /// release or withdrawal comes first in its stream, or a log refused
    /// it unqueued) before it makes the next. Each request costs every
    /// receiver its place in an ordered queue and an acknowledgement
    /// listing the members, so a message of many would cost them work and
    /// output out of all proportion to its size. A replica releases only
    /// its own requests (a departed peer's go by its departure, read by
    /// every replica), so a release of another's would free a lock its
    /// holder still relies on, or drop a request from the queue. Likewise
    /// an acknowledgement announces only its sender's own grant: one
    /// announcing another's would move that request among the grants,
    /// ahead of the real holder, and grant it while the holder holds.
    ///
    /// # Errors
    /// [`ReceiveError::Invalid`], before anything changed.
    pub(crate) fn check_requests(
        &self,
        from: u32,
        sender: PeerIdx,
        ops: &[Op],
    ) -> Result<(), ReceiveError> {
        let q = self.queues();
        // Per object the message names: the sender's request as the
        // message leaves it so far.
        let mut pending: IdMap<Option<Id>> = IdMap::default();
        for op in ops {
            match *op {
                Op::Lock { obj, stamp, .. } => {
                    let queued = pending
                        .entry(obj)
                        .or_insert_with(|| q.request_of(obj, sender));
                    if queued.is_some() {
                        return Err(ReceiveError::invalid(
                            from,
                            "a lock request beside one of the same sender's still queued",
                        ));
                    }
                    *queued = Some(stamp);
                }
                Op::Unlock { req, .. } if req.peer != sender => {
                    return Err(ReceiveError::invalid(
                        from,
                        "a release of another peer's lock request",
                    ));
                }
                Op::LockAck {
                    held: Some((held, _)),
                    ..
                } if held.peer != sender => {
                    return Err(ReceiveError::invalid(
                        from,
                        "an acknowledgement announcing another peer's grant",
                    ));
                }
                Op::Unlock { obj, req, .. } => {
                    let queued = pending
                        .entry(obj)
                        .or_insert_with(|| q.request_of(obj, sender));
                    if *queued == Some(req) {
                        *queued = None;
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// A lock request read from `stamp`'s peer.
    pub(crate) fn on_request(
        &mut self,
        obj: Id,
        stamp: Id,
        wait: bool,
        members: &Membership,
        events: &mut Events,
        peers: &Peers,
    ) {
        match self {
            Locks::Fifo(l) => l.on_request(obj, stamp, members, peers),
            Locks::Log(l) => l.on_request(obj, stamp, wait, members, events),
        }
    }

    /// A release read from a peer.
    pub(crate) fn on_unlock(&mut self, obj: Id, req: Id, token: u64, events: &mut Events) {
        match self {
            Locks::Fifo(l) => l.on_unlock(obj, req, token),
            Locks::Log(l) => l.on_unlock(obj, req, events),
        }
    }

    /// An acknowledgement read from `sender` (only the FIFO protocol sends
    /// them; over a log the log decides).
    pub(crate) fn on_ack(
        &mut self,
        sender: PeerIdx,
        obj: Id,
        req: Id,
        held: Option<(Id, u64)>,
        peers: &Peers,
    ) {
        if let Locks::Fifo(l) = self {
            l.on_ack(sender, obj, req, held, peers);
        }
    }

    /// Sends what the protocol owes its peers after input (the FIFO
    /// protocol's acknowledgements), and grants what became grantable.
    #[inline]
    pub(crate) fn settle(
        &mut self,
        ready: bool,
        me: &crate::value::PeerId,
        members: &Membership,
        out: &mut Outputs,
        peers: &Peers,
    ) {
        if let Locks::Fifo(l) = self {
            if ready {
                l.refuse_lost_races(out, peers);
                l.send_acks(me, members, out, peers);
            }
            l.try_grant_all(members, &mut out.events);
        }
    }

    /// Forgets a departed peer's requests and grants what that frees.
    pub(crate) fn drop_peer(
        &mut self,
        peer: PeerIdx,
        members: &Membership,
        log_events: &mut Events,
    ) {
        let unheard_grants = matches!(self, Locks::Fifo(_));
        self.queues_mut().drop_peer(peer, unheard_grants);
        match self {
            Locks::Fifo(l) => l.try_grant_all(members, log_events),
            Locks::Log(l) => l.regrant(log_events),
        }
    }

    /// Drops the requests of the replica a saved state came from, when it
    /// does not live on (over FIFO broadcast a saved replica's requests die
    /// with it; over a log, a snapshot's writer lives on).
    pub(crate) fn drop_saved_requests(&mut self, saved: PeerIdx) {
        if let Locks::Fifo(l) = self {
            for q in l.q.queues.values_mut() {
                q.retain(|req| req.stamp.peer != saved);
            }
            l.q.queues.retain(|_, q| !q.is_empty());
        }
    }

    /// Whether this replica's messages up to `seq` reached everybody it
    /// counts on: over a log, once it read them back; over FIFO broadcast,
    /// once sent.
    pub(crate) fn delivered(&self, seq: u64) -> bool {
        match self {
            Locks::Fifo(_) => true,
            Locks::Log(l) => l.log.echoed >= seq,
        }
    }

    /// How long a member may stay silent before this replica evicts it
    /// (over a log, leases expire by the log's clock instead).
    pub(crate) fn silence_timeout(&self) -> Option<Duration> {
        match self {
            Locks::Fifo(l) => l.peer_timeout,
            Locks::Log(_) => None,
        }
    }

    /// What a stream that cannot continue past an invalid held message
    /// needs: over FIFO broadcast a sync; over a log nothing (every replica
    /// drops the entry alike, and the sender's own message of that number
    /// may still come).
    pub(crate) fn stream_broken(&self, events: &mut Events) {
        if let Locks::Fifo(_) = self {
            events.push(Event::NeedsSync);
        }
    }

    // ------------------------------------------------------ state transfer

    pub(crate) fn transfer(
        &self,
        id: impl Fn(Id) -> WireId + Copy,
    ) -> (Vec<LockQueueState>, Vec<UnheardState>, Option<LogTransfer>) {
        let log = match self {
            Locks::Fifo(_) => None,
            Locks::Log(l) => Some(l.transfer()),
        };
        let q = self.queues();
        (q.transfer(id), q.transfer_unheard(id), log)
    }

    /// Takes a transferred lock state (validated).
    pub(crate) fn load(
        &mut self,
        queues: IdMap<Vec<LockReq>>,
        tokens: LoadedTokens,
        log: Option<log::LoadedLog>,
    ) {
        match self {
            Locks::Fifo(l) => {
                // Requests made before this replica joined still need its
                // acknowledgement.
                l.owed = queues
                    .iter()
                    .flat_map(|(&obj, q)| q.iter().map(move |r| (obj, r.stamp)))
                    .filter(|(_, r)| r.peer != PeerIdx::SELF)
                    .collect();
                l.owed.sort_unstable_by_key(|&(o, r)| (order(o), order(r)));
                l.q.load(queues, tokens);
            }
            Locks::Log(l) => {
                l.q.load(queues, tokens);
                if let Some(log) = log {
                    l.load(log);
                }
            }
        }
    }

    /// The ordered log's protocol, when this replica runs over one.
    pub(crate) fn log(&mut self) -> Option<&mut LogLocks> {
        match self {
            Locks::Fifo(_) => None,
            Locks::Log(l) => Some(l),
        }
    }

    /// [`Locks::log`], to read.
    pub(crate) fn log_ref(&self) -> Option<&LogLocks> {
        match self {
            Locks::Fifo(_) => None,
            Locks::Log(l) => Some(l),
        }
    }

    #[cfg(feature = "sim")]
    pub(crate) fn debug(&self) -> String {
        self.queues().debug()
    }
}

pub(crate) use log::LoadedLog;
