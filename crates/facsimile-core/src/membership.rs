//! Who takes part: the members this replica waits for (to reclaim, to grant
//! a lock), the peers gone for good, and when each member was last heard.
//!
//! Invariant: a departed peer never becomes a member again (it rejoins as a
//! new incarnation). Members are the peers that announced themselves, plus
//! those other members name (see DESIGN.md, "Reclamation: why no reference dangles").

use std::time::Duration;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::clock::Peers;
use crate::event::Event;
use crate::outputs::Events;
use crate::value::{Id, PeerIdx};

#[derive(Debug, Default)]
pub(crate) struct Membership {
    members: FxHashSet<PeerIdx>,
    /// Peers that left or were evicted; never members again.
    departed: FxHashSet<PeerIdx>,
    /// Peers that said they only observe: never members, so nobody waits
    /// for them, and what they write is refused.
    observers: FxHashSet<PeerIdx>,
    /// When each member was last heard from, as of the last time check.
    last_heard: FxHashMap<PeerIdx, Duration>,
    /// Members heard from since the last time check (messages carry no
    /// time; the next check stamps them).
    heard: FxHashSet<PeerIdx>,
    /// The peer last added to `heard`: a stream of messages from one peer
    /// adds it once.
    heard_last: Option<PeerIdx>,
    /// When this replica evicted each peer (the stamp of its eviction).
    evicted_at: FxHashMap<PeerIdx, Id>,
    /// The peers evicted this replica; it may not lock until it rejoins.
    evicted: bool,
}

impl Membership {
    /// Forgets everything (a new incarnation starts alone).
    pub(crate) fn reset(&mut self) {
        *self = Membership::default();
    }

    pub(crate) fn is_member(&self, p: PeerIdx) -> bool {
        self.members.contains(&p)
    }

    pub(crate) fn is_departed(&self, p: PeerIdx) -> bool {
        self.departed.contains(&p)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The peers that left or were evicted, in no particular order.
    pub(crate) fn departed(&self) -> impl Iterator<Item = PeerIdx> + '_ {
        self.departed.iter().copied()
    }

    /// Marks `p` gone for good as a state transfer tells (no event: it
    /// was never a member here).
    pub(crate) fn depart_quietly(&mut self, p: PeerIdx) {
        if p != PeerIdx::SELF {
            self.departed.insert(p);
            self.members.remove(&p);
            self.last_heard.remove(&p);
        }
    }

    /// The members, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = PeerIdx> + '_ {
        self.members.iter().copied()
    }

    /// When `p` was last heard from, as of the last time check (`None`
    /// before the first check that followed its first message).
    pub(crate) fn last_heard(&self, p: PeerIdx) -> Option<Duration> {
        self.last_heard.get(&p).copied()
    }

    /// Makes `p` a member unless it departed; reports a newcomer. Returns
    /// whether it is new.
    pub(crate) fn admit(&mut self, p: PeerIdx, peers: &Peers, events: &mut Events) -> bool {
        let new = self.admit_quietly(p);
        if new {
            events.push(Event::PeerJoined(peers.get(p).clone()));
        }
        new
    }

    /// [`Membership::admit`] without an event (members learned from a
    /// state or from another member's list).
    pub(crate) fn admit_quietly(&mut self, p: PeerIdx) -> bool {
        p != PeerIdx::SELF
            && !self.departed.contains(&p)
            && !self.observers.contains(&p)
            && self.members.insert(p)
    }

    /// Records that `p` only observes: it is no member from now on.
    /// Returns whether it was one.
    pub(crate) fn observe(&mut self, p: PeerIdx) -> bool {
        if p == PeerIdx::SELF {
            return false;
        }
        self.observers.insert(p);
        self.last_heard.remove(&p);
        self.members.remove(&p)
    }

    /// Whether `p` said it only observes.
    pub(crate) fn is_observer(&self, p: PeerIdx) -> bool {
        self.observers.contains(&p)
    }

    /// Marks `p` gone for good; reports a member that left. Returns whether
    /// it was a member.
    pub(crate) fn depart(&mut self, p: PeerIdx, peers: &Peers, events: &mut Events) -> bool {
        self.departed.insert(p);
        self.last_heard.remove(&p);
        let was = self.members.remove(&p);
        if was {
            events.push(Event::PeerLeft(peers.get(p).clone()));
        }
        was
    }

    /// Notes that `p` was heard from.
    #[inline]
    pub(crate) fn heard(&mut self, p: PeerIdx) {
        if self.heard_last != Some(p) {
            self.heard.insert(p);
            self.heard_last = Some(p);
        }
    }

    /// Stamps what was heard since the last check with `now`, and returns
    /// the members silent for longer than `timeout`.
    pub(crate) fn silent(&mut self, now: Duration, timeout: Duration) -> Vec<PeerIdx> {
        self.stamp_heard(now);
        let mut silent = Vec::new();
        for &m in &self.members {
            let heard = *self.last_heard.entry(m).or_insert(now);
            if now.saturating_sub(heard) > timeout {
                silent.push(m);
            }
        }
        silent
    }

    /// When the next member turns silent for longer than `timeout`, as of
    /// the last check.
    pub(crate) fn next_silence(&self, timeout: Duration) -> Option<Duration> {
        self.members
            .iter()
            .filter_map(|m| self.last_heard.get(m))
            .min()
            .map(|&heard| heard + timeout)
    }

    /// Stamps what was heard since the last check with `now` (while a
    /// check would be premature).
    pub(crate) fn stamp_heard(&mut self, now: Duration) {
        self.heard_last = None;
        for p in self.heard.drain() {
            self.last_heard.insert(p, now);
        }
    }

    /// Records that this replica evicted `p` at `stamp`.
    pub(crate) fn evicting(&mut self, p: PeerIdx, stamp: Id) {
        self.evicted_at.insert(p, stamp);
    }

    /// When this replica evicted `p`, if it did.
    pub(crate) fn eviction_of(&self, p: PeerIdx) -> Option<Id> {
        self.evicted_at.get(&p).copied()
    }

    /// Whether the peers evicted this replica.
    pub(crate) fn is_evicted(&self) -> bool {
        self.evicted
    }

    /// Records that the peers evicted this replica; true the first time.
    pub(crate) fn evict_self(&mut self) -> bool {
        !std::mem::replace(&mut self.evicted, true)
    }

    /// For failure messages.
    #[cfg(feature = "sim")]
    pub(crate) fn debug(&self) -> String {
        format!("members {:?} departed {:?}", self.members, self.departed)
    }
}
