//! Lamport's mutual exclusion over FIFO broadcast, with membership carried
//! by the acknowledgements.
//!
//! A request is an operation stamped like any other; every replica that
//! reads it acknowledges it with a later operation, telling whether it holds
//! the lock and which members it knows (those its earlier acknowledgements
//! did not name). A requester is granted when its
//! request heads its queue, no grant is known, and every live member
//! acknowledged this very request: by each sender's order, every request
//! stamped earlier has arrived by then. The fencing token is the request's
//! counter raised above every token known for the object. Why this is safe
//! with members joining and leaving: DESIGN.md, "Locks".

use std::cmp::Ordering;
use std::time::Duration;

use rustc_hash::FxHashSet;

use super::{LockReq, Mine, Queues};
use crate::clock::Peers;
use crate::event::{Event, LockEvent};
use crate::graph::IdMap;
use crate::membership::Membership;
use crate::outbox::lock_ack_bound;
use crate::outputs::{Events, Outputs};
use crate::value::{Id, ObjectId, PeerId, PeerIdx};
use crate::wire::{Hostname, Tag, WireOp};

#[derive(Debug)]
pub(crate) struct FifoLocks {
    pub(super) q: Queues,
    /// Requests this replica must acknowledge: `(object, request)`.
    pub(super) owed: Vec<(Id, Id)>,
    /// Who acknowledged each of this replica's requests.
    pub(super) acked: IdMap<FxHashSet<PeerIdx>>,
    /// How long a member may stay silent before it is evicted.
    pub(super) peer_timeout: Option<Duration>,
    /// Objects whose own fail-fast request another peer's came before: it
    /// is withdrawn, as refused, once input is read.
    lost_races: Vec<Id>,
    /// Own fail-fast requests refused so, until the next request.
    pub(super) refused: FxHashSet<Id>,
    /// Tags of the members this replica's acknowledgements have named
    /// already (itself included): each is named once in its stream.
    listed: FxHashSet<u32>,
}

impl FifoLocks {
    pub(super) fn new(peer_timeout: Option<Duration>) -> FifoLocks {
        FifoLocks {
            q: Queues::default(),
            owed: Vec::new(),
            acked: IdMap::default(),
            peer_timeout,
            lost_races: Vec::new(),
            refused: FxHashSet::default(),
            listed: FxHashSet::default(),
        }
    }

    /// The order of a queue: known grants first (by token), then by
    /// request counter, ties to the higher peer (the original's "highest
    /// host locks first").
    fn order(a: &LockReq, b: &LockReq, peers: &Peers) -> Ordering {
        match (a.held, b.held) {
            (Some(x), Some(y)) => x.cmp(&y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => a
                .stamp
                .counter
                .cmp(&b.stamp.counter)
                .then_with(|| peers.cmp_peer(b.stamp.peer, a.stamp.peer)),
        }
    }

    /// Puts `req` in its place in a queue in order.
    fn insert(q: &mut Vec<LockReq>, req: LockReq, peers: &Peers) {
        let at = q.partition_point(|r| Self::order(r, &req, peers) == Ordering::Less);
        if q.get(at).is_some_and(|r| r.stamp == req.stamp) {
            return;
        }
        q.insert(at, req);
    }

    fn enqueue(&mut self, obj: Id, req: LockReq, peers: &Peers) {
        Self::insert(self.q.queues.entry(obj).or_default(), req, peers);
    }

    /// Sends this replica's request and queues it at once.
    pub(super) fn request(
        &mut self,
        obj: Id,
        wait: bool,
        out: &mut Outputs,
        peers: &Peers,
        members: &Membership,
    ) {
        self.refused.remove(&obj);
        let stamp = self.q.send_request(obj, wait, out, peers);
        self.enqueue(obj, LockReq { stamp, held: None }, peers);
        out.end();
        self.try_grant(obj, members, &mut out.events);
    }

    /// This replica released its request `req`.
    pub(super) fn released(&mut self, obj: Id, req: Id) {
        self.q.dequeue(obj, req);
        self.acked.remove(&req);
    }

    /// Grants this replica's request on `obj` if its turn has come.
    fn try_grant(&mut self, obj: Id, members: &Membership, events: &mut Events) {
        let Some(mine) = self.q.mine.get(&obj).copied() else {
            return;
        };
        if mine.token.is_some() || self.q.head(obj).map(|h| h.stamp) != Some(mine.req) {
            return;
        }
        // Every live member must have acknowledged this very request: by its
        // order, whatever it requested earlier has arrived here by then.
        let acks = self.acked.get(&mine.req);
        if !members.iter().all(|m| acks.is_some_and(|a| a.contains(&m))) {
            return;
        }
        let token = self.q.grant_token(obj, mine.req.counter);
        self.q.mine.insert(
            obj,
            Mine {
                token: Some(token),
                ..mine
            },
        );
        if let Some(q) = self.q.queues.get_mut(&obj) {
            q[0].held = Some(token);
        }
        events.push(Event::Lock(LockEvent::Granted {
            object: ObjectId(obj),
            token,
        }));
    }

    /// Re-examines every own request (after acknowledgements, releases or
    /// departures).
    #[inline]
    pub(super) fn try_grant_all(&mut self, members: &Membership, events: &mut Events) {
        // Checked inline: this runs on every message, nearly always with
        // no request of this replica's.
        if !self.q.mine.is_empty() {
            self.grant_all(members, events);
        }
    }

    fn grant_all(&mut self, members: &Membership, events: &mut Events) {
        for obj in super::in_order(self.q.mine.keys()) {
            self.try_grant(obj, members, events);
        }
    }

    /// A request read from a peer: queued, and owed an acknowledgement.
    pub(super) fn on_request(&mut self, obj: Id, stamp: Id, members: &Membership, peers: &Peers) {
        if members.is_departed(stamp.peer) {
            return;
        }
        self.enqueue(obj, LockReq { stamp, held: None }, peers);
        self.owed.push((obj, stamp));
        self.note_race(obj);
    }

    /// Notes a lost race when another peer's request (or grant) now comes
    /// before this replica's waiting fail-fast request on `obj`.
    fn note_race(&mut self, obj: Id) {
        let Some(mine) = self.q.mine.get(&obj) else {
            return;
        };
        if !mine.fail_fast || mine.token.is_some() || self.lost_races.contains(&obj) {
            return;
        }
        if self.q.other_ahead(obj) {
            self.lost_races.push(obj);
        }
    }

    /// Withdraws the fail-fast requests that lost their race, each
    /// reported as refused.
    pub(super) fn refuse_lost_races(&mut self, out: &mut Outputs, peers: &Peers) {
        for obj in std::mem::take(&mut self.lost_races) {
            let Some(mine) = self.q.mine.get(&obj).copied() else {
                continue;
            };
            if mine.token.is_some() {
                continue;
            }
            self.q.mine.remove(&obj);
            self.q.send_release(obj, mine, out, peers);
            out.end();
            self.released(obj, mine.req);
            self.refused.insert(obj);
            out.events.push(Event::Lock(LockEvent::Refused {
                object: ObjectId(obj),
            }));
        }
    }

    /// A release read from a peer.
    pub(super) fn on_unlock(&mut self, obj: Id, req: Id, token: u64) {
        self.q.dequeue(obj, req);
        self.q.raise_token(obj, token);
    }

    /// An acknowledgement read from `sender`.
    pub(super) fn on_ack(
        &mut self,
        sender: PeerIdx,
        obj: Id,
        req: Id,
        held: Option<(Id, u64)>,
        peers: &Peers,
    ) {
        if req.peer == PeerIdx::SELF && self.q.mine.get(&obj).is_some_and(|m| m.req == req) {
            self.acked.entry(req).or_default().insert(sender);
        }
        if let Some((req, token)) = held {
            self.q.raise_token(obj, token);
            if let Some(q) = self.q.queues.get_mut(&obj) {
                // A grant moves its request among the grants.
                if let Some(at) = q
                    .iter()
                    .position(|r| r.stamp == req && r.held != Some(token))
                {
                    let mut r = q.remove(at);
                    r.held = Some(token);
                    Self::insert(q, r, peers);
                }
            }
            self.note_race(obj);
        }
    }

    /// Queues the acknowledgements owed for requests received.
    #[inline]
    pub(super) fn send_acks(
        &mut self,
        me: &PeerId,
        members: &Membership,
        out: &mut Outputs,
        peers: &Peers,
    ) {
        // Checked inline, as in `try_grant_all`.
        if !self.owed.is_empty() {
            self.send_owed(me, members, out, peers);
        }
    }

    fn send_owed(&mut self, me: &PeerId, members: &Membership, out: &mut Outputs, peers: &Peers) {
        let owed = std::mem::take(&mut self.owed);
        // Only the members this stream has not named yet: every receiver
        // reads the stream whole, or takes a state that covers what it
        // skips (membership included), and admission only ever adds, so
        // naming a member again tells nobody anything. Naming them all
        // cost every acknowledgement a hostname per member.
        let mut fresh: Vec<(Tag, Hostname)> = members
            .iter()
            .map(|m| peers.get(m))
            .chain(std::iter::once(me))
            .filter(|p| self.listed.insert(p.incarnation()))
            .map(|p| (Tag(p.incarnation()), Hostname::of(p)))
            .collect();
        let bound = lock_ack_bound(fresh.iter().map(|(_, h)| h.as_str()), out.outbox.format());
        out.begin();
        for (obj, req) in owed {
            // Many acknowledgements listing many long hostnames take more
            // than one message.
            out.room_for_own(peers, 3, bound);
            let held = self
                .q
                .mine
                .get(&obj)
                .and_then(|m| m.token.map(|t| (m.req, t)));
            out.outbox.tick();
            let wobj = out.outbox.wire_id(obj, peers);
            let wreq = out.outbox.wire_id(req, peers);
            let held = held.map(|(r, t)| (out.outbox.wire_id(r, peers), t));
            out.outbox.push(WireOp::LockAck {
                obj: wobj,
                req: wreq,
                held,
                // The first of the batch names them, for all.
                members: std::mem::take(&mut fresh),
            });
        }
        out.end();
    }
}
