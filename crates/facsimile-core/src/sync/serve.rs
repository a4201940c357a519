//! Serving joiners: a fetch is answered with this replica's state once the
//! state covers everything the joiner may have missed.

use rustc_hash::{FxHashMap, FxHashSet};

use crate::clock::Peers;
use crate::membership::Membership;
use crate::value::PeerIdx;
use crate::wire::Tag;

/// Bounds the per-joiner bookkeeping a stream of hostile sync requests could
/// grow.
const MAX_JOINERS: usize = 4096;

#[derive(Debug, Default)]
pub(crate) struct SyncServer {
    /// Joiners whose fetch waits for an answer.
    deferred: Vec<Tag>,
    /// Members whose sync request was seen and whose sync has not completed:
    /// they hold nothing a snapshot must cover.
    syncing: FxHashSet<PeerIdx>,
    /// For each joiner, the members it was requested among (their offers are
    /// awaited before answering it).
    offer_wait: FxHashMap<u32, Wait>,
    /// For each joiner, the peers whose offer to it was applied here.
    offers_seen: FxHashMap<u32, FxHashSet<u32>>,
    /// Sync requests applied here, counted to order them.
    requests: u64,
    /// For each member, the count at its latest sync request.
    requested_at: FxHashMap<PeerIdx, u64>,
}

/// The members a joiner's answer waits for.
#[derive(Debug)]
struct Wait {
    /// The count of sync requests at the joiner's own.
    at: u64,
    members: Vec<PeerIdx>,
}

impl SyncServer {
    /// Drops the fetches waiting for an answer (this replica syncs itself).
    pub(crate) fn drop_fetches(&mut self) {
        self.deferred.clear();
    }

    /// `peer` (tag `joiner`) asked for the document among `members`.
    pub(crate) fn requested(&mut self, joiner: Tag, peer: PeerIdx, members: &Membership) {
        self.syncing.insert(peer);
        self.requests += 1;
        if self.requested_at.len() > MAX_JOINERS {
            self.requested_at.clear();
        }
        self.requested_at.insert(peer, self.requests);
        // Only those already here can have sent what the joiner did not
        // hear; later members reach it directly.
        let wait = Wait {
            at: self.requests,
            members: members
                .iter()
                .filter(|&m| m != peer && !self.syncing.contains(&m))
                .collect(),
        };
        if self.offer_wait.len() > MAX_JOINERS {
            self.offer_wait.clear();
        }
        self.offer_wait.insert(joiner.0, wait);
    }

    /// `peer`'s sync completed.
    pub(crate) fn joined(&mut self, peer: PeerIdx) {
        self.syncing.remove(&peer);
    }

    /// `from`'s offer to `joiner` was applied here.
    pub(crate) fn offer_seen(&mut self, joiner: Tag, from: Tag) {
        if self.offers_seen.len() > MAX_JOINERS {
            self.offers_seen.clear();
        }
        self.offers_seen.entry(joiner.0).or_default().insert(from.0);
    }

    /// `joiner` fetches the document from this replica.
    pub(crate) fn fetched(&mut self, joiner: Tag) {
        self.deferred.push(joiner);
    }

    pub(crate) fn has_fetches(&self) -> bool {
        !self.deferred.is_empty()
    }

    /// The joiners that can be answered now: every member they were
    /// requested among has offered to them here, left, is syncing itself
    /// or asked for a sync since; or all of them, when `in_order` (this
    /// replica applied every broadcast before the joiner could receive it:
    /// a relay).
    pub(crate) fn take_ready(
        &mut self,
        members: &Membership,
        peers: &Peers,
        in_order: bool,
    ) -> Vec<Tag> {
        let (ready, waiting): (Vec<Tag>, Vec<Tag>) = std::mem::take(&mut self.deferred)
            .into_iter()
            .partition(|j| {
                if in_order {
                    return true;
                }
                let seen = self.offers_seen.get(&j.0);
                // A member's own sync request after the joiner's came after
                // everything it sent before, as its offer would have: it
                // stands in for the offer, also once that member's sync
                // completed (it never offers to a joiner it heard while
                // syncing).
                let asked_since =
                    |m: PeerIdx, at: u64| self.requested_at.get(&m).is_some_and(|&t| t > at);
                self.offer_wait.get(&j.0).is_none_or(|wait| {
                    wait.members.iter().all(|&m| {
                        !members.is_member(m)
                            || self.syncing.contains(&m)
                            || asked_since(m, wait.at)
                            || seen.is_some_and(|s| s.contains(&peers.tag(m)))
                    })
                })
            });
        self.deferred = waiting;
        for j in &ready {
            self.offers_seen.remove(&j.0);
            self.offer_wait.remove(&j.0);
        }
        ready
    }

    /// The members known to be syncing, for a state transfer.
    pub(crate) fn syncing(&self) -> impl Iterator<Item = PeerIdx> + '_ {
        self.syncing.iter().copied()
    }

    /// Takes the syncing members of a transferred state.
    pub(crate) fn load(&mut self, syncing: Vec<PeerIdx>) {
        self.syncing = syncing
            .into_iter()
            .filter(|&p| p != PeerIdx::SELF)
            .collect();
    }
}
