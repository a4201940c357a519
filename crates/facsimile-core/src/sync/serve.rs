//! Serving joiners: a fetch is answered with this replica's state once the
//! state covers everything the joiner may have missed.

use std::collections::BTreeMap;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::clock::Peers;
use crate::membership::Membership;
use crate::value::PeerIdx;
use crate::wire::Tag;

/// Bounds the per-joiner bookkeeping a stream of hostile sync requests or
/// offers could grow; honest joiners leave it when heard complete or gone.
const MAX_JOINERS: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct SyncServer {
    /// Joiners whose fetch waits for an answer.
    deferred: Vec<Tag>,
    /// Members whose sync request was seen and whose sync has not completed,
    /// each with whether this replica answered it since that request: a
    /// fetch is answered once per request, as each answer costs the whole
    /// state. A state lists them, so that the replica loading it offers to
    /// them.
    syncing: FxHashMap<PeerIdx, Answered>,
    /// Joiners offered to on receipt of their request while this replica
    /// synced: their requests in its backlog need no second offer.
    early: FxHashSet<u32>,
    /// For each joiner, from its request or the first offer to it read here
    /// until it is heard complete, gone or answered.
    joiners: FxHashMap<u32, Joiner>,
    /// The joiners with an entry, oldest first: the count of entries made
    /// at each one's making.
    order: BTreeMap<u64, u32>,
    /// Entries made so far.
    made: u64,
}

/// Whether a syncing member was answered here since its latest sync
/// request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answered {
    No,
    Yes,
}

#[derive(Debug)]
struct Joiner {
    /// The count of entries at this one's making.
    made: u64,
    /// The members whose offer its answer waits for, once its request is
    /// read here.
    wait: Option<Vec<PeerIdx>>,
    /// The peers whose offer to it was applied here.
    offers: FxHashSet<u32>,
}

impl SyncServer {
    /// Drops the fetches waiting for an answer (this replica syncs itself).
    pub(crate) fn drop_fetches(&mut self) {
        self.deferred.clear();
    }

    /// The entry of `joiner`, made if new. At the bound, the oldest entry
    /// goes first, never one whose fetch waits: the offers seen would be
    /// lost, and the fetch held until the joiner asks again.
    fn joiner(&mut self, joiner: Tag) -> &mut Joiner {
        if !self.joiners.contains_key(&joiner.0) {
            if self.joiners.len() >= MAX_JOINERS {
                let oldest = self
                    .order
                    .values()
                    .find(|&&j| !self.deferred.contains(&Tag(j)))
                    .copied();
                if let Some(j) = oldest {
                    self.forget(Tag(j));
                }
            }
            self.made += 1;
            self.order.insert(self.made, joiner.0);
        }
        let made = self.made;
        self.joiners.entry(joiner.0).or_insert_with(|| Joiner {
            made,
            wait: None,
            offers: FxHashSet::default(),
        })
    }

    fn forget(&mut self, joiner: Tag) {
        if let Some(e) = self.joiners.remove(&joiner.0) {
            self.order.remove(&e.made);
        }
    }

    /// `peer` (tag `joiner`) asked for the document among `members`.
    /// Returns whether this replica is yet to offer to it.
    pub(crate) fn requested(&mut self, joiner: Tag, peer: PeerIdx, members: &Membership) -> bool {
        self.syncing.insert(peer, Answered::No);
        // Only those already here can have sent what the joiner did not
        // hear; later members reach it directly. Those syncing too: one
        // may have completed, written and crashed before the joiner
        // listened, its `Joined` not read here yet.
        let wait = members.iter().filter(|&m| m != peer).collect();
        self.joiner(joiner).wait = Some(wait);
        !self.early.contains(&joiner.0)
    }

    /// This replica, syncing, offered to `joiner` on receipt of its request.
    pub(crate) fn offered_early(&mut self, joiner: Tag) {
        self.early.insert(joiner.0);
    }

    /// This replica's own sync completed, its backlog applied: returns the
    /// joiners still syncing that it is yet to offer to (those its state
    /// lists whose request it did not hear). A joiner whose request the
    /// state covers has no wait here yet: its answer waits for every
    /// member.
    pub(crate) fn completed(&mut self, members: &Membership, peers: &Peers) -> Vec<Tag> {
        let syncing: Vec<(Tag, PeerIdx)> = self
            .syncing
            .keys()
            .map(|&p| (Tag(peers.tag(p)), p))
            .collect();
        // Fetches kept meanwhile count as any other: only a joiner still
        // syncing is answered.
        self.deferred
            .retain(|j| syncing.iter().any(|(s, _)| s == j));
        let mut due = Vec::new();
        for (j, p) in syncing {
            let entry = self.joiner(j);
            if entry.wait.is_none() {
                entry.wait = Some(members.iter().filter(|&m| m != p).collect());
            }
            if !self.early.contains(&j.0) {
                due.push(j);
            }
        }
        self.early.clear();
        due
    }

    /// `peer` (tag `joiner`) completed its sync: nothing waits for it now,
    /// and a later sync of its starts over.
    pub(crate) fn joined(&mut self, joiner: Tag, peer: PeerIdx) {
        self.syncing.remove(&peer);
        self.forget(joiner);
        self.deferred.retain(|&j| j != joiner);
    }

    /// `joiner` is gone for good: nothing waits for it now, and a fetch of
    /// its is answered at once, to tell it (it stays syncing until its
    /// `Joined`, for that).
    pub(crate) fn departed(&mut self, joiner: Tag) {
        self.forget(joiner);
    }

    /// `from`'s offer to `joiner` was applied here.
    pub(crate) fn offer_seen(&mut self, joiner: Tag, from: Tag) {
        self.joiner(joiner).offers.insert(from.0);
    }

    /// `joiner` fetches the document from this replica.
    pub(crate) fn fetched(&mut self, joiner: Tag) {
        if !self.deferred.contains(&joiner) {
            self.deferred.push(joiner);
        }
    }

    pub(crate) fn has_fetches(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// The joiners that can be answered now: every member they were
    /// requested among has offered to them here or left; or all of them,
    /// when `in_order` (this replica applied every broadcast before the
    /// joiner could receive it: a relay). A departed joiner is answered at
    /// once: the state tells it it is gone. A fetch of a joiner with no
    /// wait here (its request not read yet, or forgotten at the bound)
    /// waits for one.
    pub(crate) fn take_ready(
        &mut self,
        members: &Membership,
        peers: &Peers,
        in_order: bool,
    ) -> Vec<Tag> {
        let mut ready = Vec::new();
        let mut waiting = Vec::new();
        for j in std::mem::take(&mut self.deferred) {
            let departed = peers.by_tag(j.0).is_some_and(|p| members.is_departed(p));
            if in_order || departed {
                ready.push(j);
                continue;
            }
            let Some(Joiner {
                wait: Some(wait),
                offers,
                ..
            }) = self.joiners.get(&j.0)
            else {
                waiting.push(j);
                continue;
            };
            let answered = wait
                .iter()
                .all(|&m| !members.is_member(m) || offers.contains(&peers.tag(m)));
            match answered {
                true => ready.push(j),
                false => waiting.push(j),
            }
        }
        self.deferred = waiting;
        for &j in &ready {
            self.forget(j);
            if let Some(a) = peers.by_tag(j.0).and_then(|p| self.syncing.get_mut(&p)) {
                *a = Answered::Yes;
            }
        }
        ready
    }

    /// The members known to be syncing, for a state transfer.
    pub(crate) fn syncing(&self) -> impl Iterator<Item = PeerIdx> + '_ {
        self.syncing.keys().copied()
    }

    /// Whether `peer`'s sync request was read here and its `Joined` not.
    pub(crate) fn is_syncing(&self, peer: PeerIdx) -> bool {
        self.syncing.contains_key(&peer)
    }

    /// Whether a fetch of `peer`'s is to be answered: its sync request was
    /// read here, its `Joined` not, and this replica has not answered it
    /// since. A joiner that lost its answer asks again (its sync timer
    /// sends a new request when no other peer offered), so a repeated
    /// fetch, forged or replayed, costs nothing more.
    pub(crate) fn awaits_answer(&self, peer: PeerIdx) -> bool {
        self.syncing.get(&peer) == Some(&Answered::No)
    }

    /// Takes the syncing members of a transferred state.
    pub(crate) fn load(&mut self, syncing: Vec<PeerIdx>) {
        self.syncing = syncing
            .into_iter()
            .filter(|&p| p != PeerIdx::SELF)
            .map(|p| (p, Answered::No))
            .collect();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::PeerId;

    /// This replica (`s`), members `b` and `j`, and `j`'s fetch waiting
    /// for `b`'s offer.
    fn waiting() -> (SyncServer, Peers, Membership) {
        let mut peers = Peers::new(PeerId::new("s", 1));
        let mut members = Membership::default();
        for (host, tag) in [("b", 2), ("j", 3)] {
            let p = peers.intern(&PeerId::new(host, tag)).unwrap();
            members.admit_quietly(p);
        }
        let mut serve = SyncServer::default();
        assert!(serve.requested(Tag(3), PeerIdx(2), &members));
        serve.fetched(Tag(3));
        assert!(serve.take_ready(&members, &peers, false).is_empty());
        (serve, peers, members)
    }

    /// Many more joiners than the bookkeeping's bound over a document's
    /// life, each offered to and heard complete, their requests read here
    /// when `read`.
    fn others(serve: &mut SyncServer, peers: &mut Peers, members: &Membership, read: bool) {
        for tag in 100..100 + 2 * MAX_JOINERS as u32 {
            let p = peers.intern(&PeerId::new("n", tag)).unwrap();
            serve.offer_seen(Tag(tag), Tag(2));
            if read {
                serve.requested(Tag(tag), p, members);
            }
            serve.joined(Tag(tag), p);
        }
    }

    #[test]
    fn a_waiting_fetch_is_not_answered_before_the_offers_however_many_joined_since() {
        let (mut serve, mut peers, members) = waiting();
        others(&mut serve, &mut peers, &members, true);
        assert_eq!(serve.joiners.len(), 1, "only j's entry is left");
        assert!(serve.take_ready(&members, &peers, false).is_empty());
        serve.offer_seen(Tag(3), Tag(2));
        assert_eq!(serve.take_ready(&members, &peers, false), [Tag(3)]);
    }

    #[test]
    fn an_offer_seen_is_kept_however_many_joined_since() {
        let (mut serve, mut peers, members) = waiting();
        serve.offer_seen(Tag(3), Tag(2));
        others(&mut serve, &mut peers, &members, false);
        assert_eq!(serve.take_ready(&members, &peers, false), [Tag(3)]);
    }

    /// Offers to joiners never heard complete (a hostile stream of them)
    /// stay within the bound, the oldest going first, and the waiting
    /// fetch's entry stays.
    #[test]
    fn the_bound_keeps_a_waiting_fetchs_entry() {
        let (mut serve, peers, members) = waiting();
        for tag in 100..100 + 2 * MAX_JOINERS as u32 {
            serve.offer_seen(Tag(tag), Tag(2));
        }
        assert_eq!(serve.joiners.len(), MAX_JOINERS);
        assert_eq!(serve.order.len(), MAX_JOINERS);
        assert!(serve.take_ready(&members, &peers, false).is_empty());
        serve.offer_seen(Tag(3), Tag(2));
        assert_eq!(serve.take_ready(&members, &peers, false), [Tag(3)]);
    }
}
