//! The leaf of every slot of one list, by slot id.
//!
//! Ids are grouped in pages of [`PAGE`] consecutive counters of one peer,
//! one hash entry per page. A page whose slots lie in at most two leaves,
//! the first holding the lower counters (pushes, typing: runs of
//! consecutive ids, which a leaf boundary may cut), stores the two leaves
//! and where they meet; a page whose slots are spread over more leaves
//! (inserts at scattered places) is an entry of a second table holding a
//! leaf per id, so that a lookup finds its leaf in the entry it hashed to
//! rather than one load later. A presence bit per id says which ids are
//! here, so lookups of absent ids and duplicates need no leaf scan. A list
//! built by appends takes about 1.5 bytes an id; slots inserted at
//! scattered places about 5 to 10, with the table's load (a hash entry per
//! id had taken 35 to 50).
//!
//! The page inserted into last is held out of the table: appends and
//! typing fill one page 32 times in a row, and that way hash only when
//! they move on to the next.

use std::collections::hash_map::Entry;
use std::hash::BuildHasher;

use super::seq::LeafId;
use super::{Bits, IdMap};
use crate::value::Id;

/// Ids per page.
const PAGE: u64 = 32;

/// The batch of removals worth ordering by bucket.
const SWEEP_MIN: usize = 64;

/// A page whose ids lie in at most two leaves.
#[derive(Debug, Clone, Copy)]
struct Page {
    /// The leaf of the ids below `split`.
    low: u32,
    /// The leaf of the ids from `split` on.
    high: u32,
    /// Bit `k`: the id with counter `PAGE * page + k` is here.
    present: u32,
    split: u8,
}

impl Page {
    /// The leaf of offset `k`.
    fn leaf(&self, k: u32) -> LeafId {
        if k < u32::from(self.split) {
            self.low
        } else {
            self.high
        }
    }
}

/// A page whose ids lie in more than two leaves: a leaf per id.
#[derive(Debug, Clone, Copy)]
struct Spread {
    /// As [`Page::present`].
    present: u32,
    leaves: [LeafId; PAGE as usize],
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SlotIndex {
    /// The pages in at most two leaves but the hot one, whose entry here,
    /// if any, is stale.
    pages: IdMap<Page>,
    /// The pages spread over more leaves; never hot, and never also in
    /// `pages`.
    spread: IdMap<Spread>,
    /// The page inserted into last, by its key, when it is in at most two
    /// leaves: this copy is the current one.
    hot: Option<(Id, Page)>,
    len: usize,
}

fn split(id: Id) -> (Id, u32) {
    (
        Id::new(id.peer, id.counter / PAGE),
        (id.counter % PAGE) as u32,
    )
}

impl SlotIndex {
    /// Number of ids held.
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The current page of `key`, when it is in at most two leaves.
    #[inline]
    fn page(&self, key: Id) -> Option<&Page> {
        match &self.hot {
            Some((hot, page)) if *hot == key => Some(page),
            _ => self.pages.get(&key),
        }
    }

    /// Whether a page that is not hot is looked for among the spread
    /// pages first: a probe of the table that lacks it is a cache miss in
    /// a large list, so the larger table, the likelier one, goes first
    /// (spread for inserts at random places, the other for appends).
    #[inline]
    fn spread_first(&self) -> bool {
        self.spread.len() > self.pages.len()
    }

    /// The leaf of `id`, if it is here.
    #[inline]
    pub(crate) fn get(&self, id: Id) -> Option<LeafId> {
        let (key, k) = split(id);
        let bit = 1u32 << k;
        let in_spread =
            |spread: &Spread| (spread.present & bit != 0).then(|| spread.leaves[k as usize]);
        if !matches!(self.hot, Some((hot, _)) if hot == key) && self.spread_first() {
            if let Some(spread) = self.spread.get(&key) {
                return in_spread(spread);
            }
        }
        if let Some(page) = self.page(key) {
            return (page.present & bit != 0).then(|| page.leaf(k));
        }
        self.spread.get(&key).and_then(in_spread)
    }

    /// Whether `id` is here.
    pub(crate) fn contains(&self, id: Id) -> bool {
        self.get(id).is_some()
    }

    /// Makes `key` the hot page, writing the old one back; `fresh` is the
    /// page to add when `key` has none. Returns whether it had one.
    fn heat(&mut self, key: Id, fresh: Page) -> bool {
        let (page, had) = match self.pages.get(&key) {
            Some(page) => (*page, true),
            None => (fresh, false),
        };
        if let Some((old, page)) = self.hot.replace((key, page)) {
            self.pages.insert(old, page);
        }
        had
    }

    /// Records (or moves) `id` in `leaf`. Returns whether it was here.
    pub(crate) fn insert(&mut self, id: Id, leaf: LeafId) -> bool {
        let (key, k) = split(id);
        let bit = 1u32 << k;
        if !matches!(self.hot, Some((hot, _)) if hot == key) {
            // A spread page stays where it is: re-filing the ids a split
            // moved is one probe each.
            if let Some(spread) = self.spread.get_mut(&key) {
                let was = spread.present & bit != 0;
                self.len += usize::from(!was);
                spread.present |= bit;
                spread.leaves[k as usize] = leaf;
                return was;
            }
            let fresh = Page {
                low: leaf,
                high: leaf,
                present: bit,
                split: 0,
            };
            if !self.heat(key, fresh) {
                self.len += 1;
                return false;
            }
        }
        let Some((_, page)) = &mut self.hot else {
            unreachable!("heated above")
        };
        let was = page.present & bit != 0;
        if !was {
            self.len += 1;
        }
        if page.leaf(k) != leaf {
            let mut leaves = [0; PAGE as usize];
            for (j, l) in leaves.iter_mut().enumerate() {
                *l = page.leaf(j as u32);
            }
            leaves[k as usize] = leaf;
            let present = page.present | bit;
            match two_leaves(&leaves, present) {
                Some(two) => *page = two,
                None => {
                    // Spread from now on: out of the hot place and of
                    // `pages`, whose entry for it may be stale.
                    self.hot = None;
                    self.pages.remove(&key);
                    self.spread.insert(key, Spread { present, leaves });
                }
            }
            return was;
        }
        page.present |= bit;
        was
    }

    /// Records the `len` ids from `first` on (consecutive counters of one
    /// peer) in `leaf`. Returns whether any was here. A list being built
    /// takes its ids a run at a time: a page new to the index is one hash
    /// insert for all its ids instead of one lookup each.
    pub(crate) fn insert_run(&mut self, first: Id, len: u32, leaf: LeafId) -> bool {
        let Some(end) = first.counter.checked_add(u64::from(len)) else {
            return (0..len).fold(false, |was, k| {
                was | self.insert(
                    Id::new(first.peer, first.counter.wrapping_add(k.into())),
                    leaf,
                )
            });
        };
        let mut was = false;
        let mut counter = first.counter;
        while counter < end {
            let (key, k) = split(Id::new(first.peer, counter));
            let n = (PAGE - u64::from(k)).min(end - counter);
            let page = Page {
                low: leaf,
                high: leaf,
                present: (u32::MAX >> (PAGE - n)) << k,
                split: 0,
            };
            // The hot page has no current entry in the table.
            let hot = matches!(self.hot, Some((h, _)) if h == key);
            let elsewhere = hot || self.spread.contains_key(&key);
            match self.pages.entry(key) {
                Entry::Vacant(v) if !elsewhere => {
                    v.insert(page);
                    self.len += n as usize;
                }
                _ => {
                    for c in counter..counter + n {
                        was |= self.insert(Id::new(first.peer, c), leaf);
                    }
                }
            }
            counter += n;
        }
        was
    }

    /// Forgets every id of `ids`, as [`SlotIndex::remove`] of each. A
    /// large batch (a reclamation's, of ids scattered over the list) goes
    /// in the order of its pages' buckets in the larger table, which it
    /// then sweeps once from end to end instead of missing the cache at
    /// almost every id. Leaves `ids` in that order.
    pub(crate) fn remove_all(&mut self, ids: &mut [Id]) {
        if ids.len() < SWEEP_MIN {
            for &id in ids.iter() {
                self.remove(id);
            }
            return;
        }
        let (hasher, capacity) = match self.spread_first() {
            true => (self.spread.hasher(), self.spread.capacity()),
            false => (self.pages.hasher(), self.pages.capacity()),
        };
        // The table's buckets, as the standard table sizes itself (seven
        // eighths full at most); only the order depends on it. Two radix
        // passes order the ids by the top 16 bits of their bucket: ids in
        // a row are then at most a few buckets apart.
        let buckets = (capacity / 7 * 8).max(1).next_power_of_two() as u64;
        let shift = buckets.trailing_zeros().saturating_sub(16);
        let group = |id: Id| ((hasher.hash_one(split(id).0) & (buckets - 1)) >> shift) as u16;
        radsort::sort_by_key(ids, |&id| group(id));
        for &id in ids.iter() {
            self.remove(id);
        }
    }

    /// Forgets `id`. Returns whether it was here.
    pub(crate) fn remove(&mut self, id: Id) -> bool {
        let (key, k) = split(id);
        let hot = matches!(self.hot, Some((h, _)) if h == key);
        if !hot && self.spread_first() {
            if let Some(was) = self.remove_spread(key, k) {
                return was;
            }
        }
        let page = match &mut self.hot {
            Some((_, page)) if hot => page,
            _ => match self.pages.get_mut(&key) {
                Some(page) => page,
                None => return self.remove_spread(key, k).unwrap_or(false),
            },
        };
        let bit = 1u32 << k;
        if page.present & bit == 0 {
            return false;
        }
        self.len -= 1;
        page.present &= !bit;
        if page.present == 0 {
            self.pages.remove(&key);
            if hot {
                self.hot = None;
            }
        }
        true
    }

    /// [`SlotIndex::remove`] of offset `k` of a spread page: whether it
    /// was here, or `None` when `key` is not a spread page.
    fn remove_spread(&mut self, key: Id, k: u32) -> Option<bool> {
        let Entry::Occupied(mut entry) = self.spread.entry(key) else {
            return None;
        };
        let bit = 1u32 << k;
        let spread = entry.get_mut();
        if spread.present & bit == 0 {
            return Some(false);
        }
        self.len -= 1;
        spread.present &= !bit;
        if spread.present == 0 {
            entry.remove();
        }
        Some(true)
    }
}

/// The page that puts the present ids of `leaves` in at most two leaves,
/// the lower offsets in the first, if there is one.
fn two_leaves(leaves: &[LeafId; PAGE as usize], present: u32) -> Option<Page> {
    let mut ids = Bits(present.into());
    let first = ids.next()?;
    let low = leaves[first as usize];
    let mut high = None;
    for j in ids {
        let l = leaves[j as usize];
        match high {
            None if l == low => {}
            None => high = Some((l, j)),
            Some((h, _)) if l == h => {}
            Some(_) => return None,
        }
    }
    let (high, split) = high.unwrap_or((low, PAGE as u32));
    Some(Page {
        low,
        high,
        present,
        split: split as u8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::PeerIdx;

    /// Appended ids, which leaf boundaries cut at any place in a page, need
    /// no spread entry; a page that a leaf boundary cuts twice does.
    #[test]
    fn runs_cut_by_leaf_boundaries_stay_compact() {
        let mut index = SlotIndex::default();
        let id = |c| Id::new(PeerIdx(0), c);
        for c in 0..1000 {
            index.insert(id(c), (c / 40) as u32);
        }
        assert!(index.spread.is_empty());
        assert!((0..1000).all(|c| index.get(id(c)) == Some((c / 40) as u32)));
        index.insert(id(2016), 1);
        index.insert(id(2026), 2);
        assert!(index.spread.is_empty());
        index.insert(id(2036), 1);
        assert_eq!(index.spread.len(), 1);
        assert_eq!(index.get(id(2026)), Some(2));
        assert_eq!(index.get(id(2036)), Some(1));
    }

    /// A run inserted at once leaves the index that inserting its ids one
    /// at a time does, and tells the same about ids already here.
    #[test]
    fn runs_match_single_inserts() {
        for seed in 1..40 {
            let mut rand = crate::graph::tests::xorshift(seed);
            let (mut runs, mut ones) = (SlotIndex::default(), SlotIndex::default());
            let mut run = |first: Id, len: u32, leaf: u32| {
                let was = (0..len).fold(false, |was, k| {
                    let id = Id::new(first.peer, first.counter.wrapping_add(k.into()));
                    was | ones.insert(id, leaf)
                });
                assert_eq!(runs.insert_run(first, len, leaf), was, "seed {seed}");
                assert_eq!(runs.len(), ones.len());
            };
            run(Id::new(PeerIdx(0), u64::MAX - 1), 4, 3);
            for _ in 0..200 {
                let first = Id::new(PeerIdx(rand(2) as u32), rand(300));
                run(first, 1 + rand(70) as u32, rand(4) as u32);
            }
            for c in (0..400).chain([u64::MAX - 1, u64::MAX]) {
                for p in 0..2 {
                    let id = Id::new(PeerIdx(p), c);
                    assert_eq!(runs.get(id), ones.get(id), "seed {seed}");
                }
            }
        }
    }

    /// A batch removal, in bucket order, leaves what removing each id
    /// alone does, ids absent and named twice included.
    #[test]
    fn batch_removals_match_single_ones() {
        for seed in 1..20 {
            let mut rand = crate::graph::tests::xorshift(seed);
            let mut index = SlotIndex::default();
            for _ in 0..4000 {
                let id = Id::new(PeerIdx(rand(3) as u32), rand(3000));
                index.insert(id, rand(50) as u32);
            }
            let mut ones = index.clone();
            let mut batch: Vec<Id> = (0..rand(1500) + SWEEP_MIN as u64)
                .map(|_| Id::new(PeerIdx(rand(3) as u32), rand(3200)))
                .collect();
            for &id in &batch {
                ones.remove(id);
            }
            index.remove_all(&mut batch);
            assert_eq!(index.len(), ones.len(), "seed {seed}");
            for c in 0..3200 {
                for p in 0..3 {
                    let id = Id::new(PeerIdx(p), c);
                    assert_eq!(index.get(id), ones.get(id), "seed {seed}");
                }
            }
        }
    }

    /// Random inserts, moves and removals against a model map.
    #[test]
    fn matches_a_map() {
        for seed in 1..40 {
            let mut rand = crate::graph::tests::xorshift(seed);
            let mut index = SlotIndex::default();
            let mut model = std::collections::HashMap::new();
            for _ in 0..3000 {
                let id = Id::new(PeerIdx(rand(3) as u32), rand(600));
                match rand(3) {
                    0 | 1 => {
                        let leaf = rand(4) as u32;
                        assert_eq!(index.insert(id, leaf), model.insert(id, leaf).is_some());
                    }
                    _ => {
                        assert_eq!(index.remove(id), model.remove(&id).is_some());
                    }
                }
                assert_eq!(index.len(), model.len());
                let probe = Id::new(PeerIdx(rand(3) as u32), rand(600));
                assert_eq!(index.get(probe), model.get(&probe).copied(), "seed {seed}");
                assert_eq!(index.contains(probe), model.contains_key(&probe));
            }
            // A page is in one place only.
            for key in index.spread.keys() {
                assert!(!index.pages.contains_key(key));
                assert!(!index.hot.is_some_and(|(h, _)| h == *key));
            }
        }
    }
}
