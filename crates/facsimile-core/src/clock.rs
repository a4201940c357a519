//! The peer table and the total order of stamps.
//!
//! Stamps are Lamport counters paired with a peer. Comparing two stamps
//! compares counters first; on equal counters the peer with the higher
//! hostname wins, then the higher incarnation. In memory a stamp names its
//! peer by a small index into this replica's [`Peers`] table, so comparisons
//! between different peers at equal counters look the peers up (a rare path:
//! equal counters mean concurrent writes).

use std::cmp::Ordering;

use rustc_hash::FxHashMap;

use crate::value::{Id, PeerId, PeerIdx};

/// One known peer.
#[derive(Debug, Clone)]
pub(crate) struct PeerInfo {
    pub(crate) id: PeerId,
}

/// Every peer this replica has heard of, indexed by [`PeerIdx`]. Entries are
/// never removed while the replica lives, because stamps refer to them.
#[derive(Debug, Clone)]
pub(crate) struct Peers {
    infos: Vec<PeerInfo>,
    by_tag: FxHashMap<u32, PeerIdx>,
    /// What introducing every other peer in a stream may take, in bytes
    /// ([`crate::outbox::intro_bound`] of each).
    intros: usize,
    /// The largest [`crate::outbox::intro_bound`] of one peer.
    largest_intro: usize,
}

impl Peers {
    pub(crate) fn new(me: PeerId) -> Self {
        let mut by_tag = FxHashMap::default();
        by_tag.insert(me.incarnation(), PeerIdx::SELF);
        Peers {
            infos: vec![PeerInfo { id: me }],
            by_tag,
            intros: 0,
            largest_intro: 0,
        }
    }

    /// The peer with this wire tag, if known.
    pub(crate) fn by_tag(&self, tag: u32) -> Option<PeerIdx> {
        self.by_tag.get(&tag).copied()
    }

    /// Interns a peer. A tag already bound to another hostname is a
    /// collision, reported as `Err` with the existing index.
    pub(crate) fn intern(&mut self, id: &PeerId) -> Result<PeerIdx, PeerIdx> {
        if let Some(&idx) = self.by_tag.get(&id.incarnation()) {
            return if self.infos[idx.0 as usize].id == *id {
                Ok(idx)
            } else {
                Err(idx)
            };
        }
        let idx = PeerIdx(self.infos.len() as u32);
        let intro = crate::outbox::intro_bound(id.hostname());
        self.intros += intro;
        self.largest_intro = self.largest_intro.max(intro);
        self.infos.push(PeerInfo { id: id.clone() });
        self.by_tag.insert(id.incarnation(), idx);
        Ok(idx)
    }

    pub(crate) fn get(&self, idx: PeerIdx) -> &PeerId {
        &self.infos[idx.0 as usize].id
    }

    pub(crate) fn tag(&self, idx: PeerIdx) -> u32 {
        self.infos[idx.0 as usize].id.incarnation()
    }

    pub(crate) fn len(&self) -> usize {
        self.infos.len()
    }

    /// What introducing every other peer may take in a stream, and one
    /// peer at most, in bytes.
    pub(crate) fn intros(&self) -> (usize, usize) {
        (self.intros, self.largest_intro)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (PeerIdx, &PeerId)> + '_ {
        self.infos
            .iter()
            .enumerate()
            .map(|(i, p)| (PeerIdx(i as u32), &p.id))
    }

    /// Orders two peers: hostname first, then incarnation.
    pub(crate) fn cmp_peer(&self, a: PeerIdx, b: PeerIdx) -> Ordering {
        if a == b {
            return Ordering::Equal;
        }
        let (pa, pb) = (self.get(a), self.get(b));
        pa.hostname()
            .cmp(pb.hostname())
            .then(pa.incarnation().cmp(&pb.incarnation()))
    }

    /// The total order of stamps: counter, then hostname, then incarnation.
    #[inline]
    pub(crate) fn cmp(&self, a: Id, b: Id) -> Ordering {
        match a.counter.cmp(&b.counter) {
            Ordering::Equal => self.cmp_peer(a.peer, b.peer),
            o => o,
        }
    }

    /// Whether `a` is later than `b` in the stamp order.
    #[inline]
    pub(crate) fn later(&self, a: Id, b: Id) -> bool {
        self.cmp(a, b) == Ordering::Greater
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers() -> (Peers, PeerIdx, PeerIdx, PeerIdx) {
        let mut p = Peers::new(PeerId::new("bravo", 7));
        let a = p.intern(&PeerId::new("alpha", 9)).unwrap();
        let c = p.intern(&PeerId::new("bravo", 3)).unwrap();
        (p, PeerIdx::SELF, a, c)
    }

    #[test]
    fn counter_decides_first() {
        let (p, me, alpha, _) = peers();
        assert!(p.later(Id::new(alpha, 5), Id::new(me, 4)));
        assert!(p.later(Id::new(me, 5), Id::new(alpha, 4)));
    }

    #[test]
    fn equal_counters_go_to_the_higher_hostname() {
        let (p, me, alpha, _) = peers();
        assert!(p.later(Id::new(me, 5), Id::new(alpha, 5)));
        assert!(!p.later(Id::new(alpha, 5), Id::new(me, 5)));
    }

    #[test]
    fn equal_hostnames_go_to_the_higher_incarnation() {
        let (p, me, _, bravo3) = peers();
        assert!(p.later(Id::new(me, 5), Id::new(bravo3, 5)));
        assert_eq!(p.cmp(Id::new(me, 5), Id::new(me, 5)), Ordering::Equal);
    }

    #[test]
    fn a_reused_tag_is_a_collision() {
        let (mut p, _, alpha, _) = peers();
        assert_eq!(p.intern(&PeerId::new("alpha", 9)), Ok(alpha));
        assert_eq!(p.intern(&PeerId::new("other", 9)), Err(alpha));
    }

    #[test]
    fn order_is_total_and_antisymmetric() {
        let (p, me, alpha, bravo3) = peers();
        let ids = [me, alpha, bravo3];
        for &x in &ids {
            for &y in &ids {
                for c in 0..3 {
                    let (a, b) = (Id::new(x, c), Id::new(y, 1));
                    assert_eq!(p.cmp(a, b), p.cmp(b, a).reverse());
                }
            }
        }
    }
}
