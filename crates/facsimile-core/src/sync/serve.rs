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

/// Bounds the record of each peer's latest sync request; past it the
/// record starts over, and no offer read before then is carried into a
/// joiner's next sync ([`SyncServer::joined`]).
const MAX_REQUESTERS: usize = 4096;

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
    /// until it is heard complete or gone.
    joiners: FxHashMap<u32, Joiner>,
    /// The joiners with an entry, oldest first: the count of entries made
    /// at each one's making.
    order: BTreeMap<u64, u32>,
    /// Entries made so far.
    made: u64,
    /// Sync requests read here so far.
    requests: u64,
    /// For each peer, the count of requests at its latest sync request.
    requested_at: FxHashMap<u32, u64>,
    /// The count of requests when `requested_at` last started over.
    requests_kept_since: u64,
}

/// Whether a syncing member was answered here since its latest sync
/// request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answered {
    No,
    Yes,
}

/// What a replica keeps of one syncing member's sync, as a state carries
/// it to the replica that loads it.
#[derive(Debug)]
pub(crate) struct SyncWait {
    /// The syncing member.
    pub(crate) joiner: PeerIdx,
    /// The members its answer waits for, once its request was read.
    pub(crate) wait: Option<Vec<PeerIdx>>,
    /// The peers whose offer to it was applied.
    pub(crate) offered: Vec<PeerIdx>,
}

#[derive(Debug)]
struct Joiner {
    /// The count of entries at this one's making.
    made: u64,
    /// The members whose offer its answer waits for, once its request is
    /// read here.
    wait: Option<Vec<PeerIdx>>,
    /// For each peer, how many of its offers to the joiner were applied
    /// here since the joiner's latest `Joined` read here (or since this
    /// entry was made).
    offers: FxHashMap<u32, u32>,
    /// The joiner's sync requests read here in that time; `None` when some
    /// may have gone unread (a state this replica loaded covers them).
    requests: Option<u32>,
    /// The count of requests read here when that time began.
    since: u64,
}

impl SyncServer {
    /// This replica syncs itself: drops the fetches waiting for an answer;
    /// the state it loads may cover requests of the joiners it follows.
    pub(crate) fn drop_fetches(&mut self) {
        self.deferred.clear();
        for e in self.joiners.values_mut() {
            e.requests = None;
        }
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
        let (made, since) = (self.made, self.requests);
        self.joiners.entry(joiner.0).or_insert_with(|| Joiner {
            made,
            wait: None,
            offers: FxHashMap::default(),
            requests: Some(0),
            since,
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
        self.requests += 1;
        if self.requested_at.len() >= MAX_REQUESTERS && !self.requested_at.contains_key(&joiner.0) {
            self.requested_at.clear();
            self.requests_kept_since = self.requests;
        }
        self.requested_at.insert(joiner.0, self.requests);
        // Only those already here can have sent what the joiner did not
        // hear; later members reach it directly. Those syncing too: one
        // may have completed, written and crashed before the joiner
        // listened, its `Joined` not read here yet.
        let wait = members.iter().filter(|&m| m != peer).collect();
        let entry = self.joiner(joiner);
        entry.wait = Some(wait);
        entry.requests = entry.requests.map(|n| n.saturating_add(1));
        !self.early.contains(&joiner.0)
    }

    /// This replica, syncing, offered to `joiner` on receipt of its request.
    pub(crate) fn offered_early(&mut self, joiner: Tag) {
        self.early.insert(joiner.0);
    }

    /// This replica's own sync completed, its backlog applied: returns the
    /// joiners still syncing that it is yet to offer to (those its state
    /// lists whose request it did not hear). A joiner whose request the
    /// state covers waits as the state's sender had it wait, with the
    /// offers the sender had applied ([`SyncServer::load`]); when the
    /// state told nothing of it (its sender had dropped its entry), for
    /// every member.
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
    /// and a later sync of its starts over, with the offers to it that
    /// belong to that sync. A member offers once for each sync request it
    /// reads, so a member's offers beyond the number of the joiner's
    /// requests read here were made for the next sync: it read this
    /// `Joined` and a new request before this replica read this `Joined`,
    /// and offers no more for them. Such offers are carried over, unless
    /// the count is unsure: some of the joiner's requests went unread here,
    /// or the member asked for a sync of its own meanwhile (it may then
    /// have offered twice for one request: once synced, to the joiners its
    /// state lists, and again on reading a request its state left out).
    pub(crate) fn joined(&mut self, joiner: Tag, peer: PeerIdx) {
        self.syncing.remove(&peer);
        self.deferred.retain(|&j| j != joiner);
        let carried: FxHashMap<u32, u32> = match self.joiners.get(&joiner.0) {
            Some(Joiner {
                offers,
                requests: Some(n),
                since,
                ..
            }) if *n > 0 && *since >= self.requests_kept_since => offers
                .iter()
                .filter(|&(from, &count)| {
                    count > *n && self.requested_at.get(from).is_none_or(|at| at <= since)
                })
                .map(|(&from, &count)| (from, count - n))
                .collect(),
            _ => FxHashMap::default(),
        };
        self.forget(joiner);
        if !carried.is_empty() {
            self.joiner(joiner).offers = carried;
        }
    }

    /// `joiner` is gone for good: nothing waits for it now, and a fetch of
    /// its is answered at once, to tell it (it stays syncing until its
    /// `Joined`, for that).
    pub(crate) fn departed(&mut self, joiner: Tag) {
        self.forget(joiner);
    }

    /// `from`'s offer to `joiner` was applied here.
    pub(crate) fn offer_seen(&mut self, joiner: Tag, from: Tag) {
        let count = self.joiner(joiner).offers.entry(from.0).or_insert(0);
        *count = count.saturating_add(1);
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
                .all(|&m| !members.is_member(m) || offers.contains_key(&peers.tag(m)));
            match answered {
                true => ready.push(j),
                false => waiting.push(j),
            }
        }
        self.deferred = waiting;
        // The entries stay until the joiners' `Joined`: what they count
        // tells which offers read meanwhile belong to a next sync.
        for &j in &ready {
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

    /// What is kept of each syncing member's sync, for a state transfer,
    /// in order.
    pub(crate) fn waits(&self, peers: &Peers) -> Vec<SyncWait> {
        let sorted = |mut ps: Vec<PeerIdx>| {
            ps.sort_unstable_by_key(|p| p.0);
            ps
        };
        let mut waits: Vec<SyncWait> = (self.syncing.keys())
            .filter_map(|&joiner| {
                let e = self.joiners.get(&peers.tag(joiner))?;
                let offered = e.offers.keys().filter_map(|&t| peers.by_tag(t));
                Some(SyncWait {
                    joiner,
                    wait: e.wait.clone().map(sorted),
                    offered: sorted(offered.collect()),
                })
            })
            .collect();
        waits.sort_unstable_by_key(|w| w.joiner.0);
        waits
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

    /// Takes the syncing members of a transferred state, and what its
    /// sender kept of their syncs: this replica answers them as the sender
    /// would. The offers the sender applied the state covers, and those
    /// made before this replica listened it never reads. Their requests
    /// the state covers are never read here either.
    pub(crate) fn load(&mut self, syncing: Vec<PeerIdx>, waits: Vec<SyncWait>, peers: &Peers) {
        self.syncing = syncing
            .into_iter()
            .filter(|&p| p != PeerIdx::SELF)
            .map(|p| (p, Answered::No))
            .collect();
        let tags: Vec<Tag> = self.syncing.keys().map(|&p| Tag(peers.tag(p))).collect();
        for j in tags {
            self.joiner(j).requests = None;
        }
        for w in waits {
            if !self.syncing.contains_key(&w.joiner) {
                continue;
            }
            let entry = self.joiner(Tag(peers.tag(w.joiner)));
            if entry.wait.is_none() {
                let others = |m: &PeerIdx| *m != PeerIdx::SELF && *m != w.joiner;
                entry.wait = w.wait.map(|ms| ms.into_iter().filter(others).collect());
            }
            for p in w.offered {
                entry.offers.entry(peers.tag(p)).or_insert(1);
            }
        }
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

    /// `j` completes a sync whose request was read here, after the offers
    /// of `b` made here (`offers` of them) and `b`'s own sync requests
    /// (`synced`) of them, read in that order; then asks again and fetches.
    /// Returns whether the fetch is answered without another offer.
    fn next_sync_answered(requests: u32, offers: u32, synced: bool) -> bool {
        let (mut serve, peers, members) = waiting();
        for _ in 1..requests {
            serve.requested(Tag(3), PeerIdx(2), &members);
        }
        serve.offer_seen(Tag(3), Tag(2));
        if synced {
            serve.requested(Tag(2), PeerIdx(1), &members);
        }
        for _ in 1..offers {
            serve.offer_seen(Tag(3), Tag(2));
        }
        serve.joined(Tag(3), PeerIdx(2));
        serve.requested(Tag(3), PeerIdx(2), &members);
        serve.fetched(Tag(3));
        !serve.take_ready(&members, &peers, false).is_empty()
    }

    /// A member offers once for each request it reads: what it offers
    /// beyond that before this replica reads the joiner's `Joined` is for
    /// the joiner's next sync, unless the member synced meanwhile (it may
    /// have offered twice for one request).
    #[test]
    fn offers_beyond_one_a_request_go_to_the_next_sync() {
        assert!(!next_sync_answered(1, 1, false), "1 offer, 1 request");
        assert!(next_sync_answered(1, 2, false), "2 offers, 1 request");
        assert!(!next_sync_answered(2, 2, false), "2 offers, 2 requests");
        assert!(next_sync_answered(2, 3, false), "3 offers, 2 requests");
        assert!(!next_sync_answered(1, 2, true), "synced meanwhile");
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
