//! The leaf of every slot of one list, by slot id.
//!
//! Ids are grouped in pages of [`PAGE`] consecutive counters of one peer,
//! one hash entry per page. A page whose slots all lie in one leaf (pushes,
//! typing: runs of consecutive ids) stores that leaf once; otherwise it
//! stores a leaf per id in an arena. A presence bit per id says which ids
//! are here, so lookups of absent ids and duplicates need no leaf scan.
//! Slots inserted at scattered places take about 6 bytes each (a hash entry
//! per id had taken 35 to 50).

use super::IdMap;
use super::seq::LeafId;
use crate::value::Id;

/// Ids per page: a list built by appends takes about a byte an id, and a
/// page spread over leaves 128 bytes in the arena.
const PAGE: u64 = 32;
/// Set in [`Page::leaf`] when it is an arena index, not a leaf.
const SPREAD: u32 = 1 << 31;

#[derive(Debug, Clone, Copy)]
struct Page {
    /// The leaf of every id present, or `SPREAD | i` for arena entry `i`.
    leaf: u32,
    /// Bit `k`: the id with counter `PAGE * page + k` is here.
    present: u32,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct SlotIndex {
    pages: IdMap<Page>,
    arena: Vec<[LeafId; PAGE as usize]>,
    free: Vec<u32>,
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

    /// The leaf of `id`, if it is here.
    #[inline]
    pub(crate) fn get(&self, id: Id) -> Option<LeafId> {
        let (key, k) = split(id);
        let page = self.pages.get(&key)?;
        if page.present & (1 << k) == 0 {
            return None;
        }
        Some(match page.leaf & SPREAD {
            0 => page.leaf,
            _ => self.arena[(page.leaf & !SPREAD) as usize][k as usize],
        })
    }

    /// Whether `id` is here.
    pub(crate) fn contains(&self, id: Id) -> bool {
        let (key, k) = split(id);
        self.pages
            .get(&key)
            .is_some_and(|p| p.present & (1 << k) != 0)
    }

    /// Records (or moves) `id` in `leaf`. Returns whether it was here.
    pub(crate) fn insert(&mut self, id: Id, leaf: LeafId) -> bool {
        debug_assert_eq!(leaf & SPREAD, 0, "leaf ids stay below 2^31");
        let (key, k) = split(id);
        let bit = 1u32 << k;
        let page = self.pages.entry(key).or_insert(Page { leaf, present: 0 });
        let was = page.present & bit != 0;
        if !was {
            self.len += 1;
        }
        if page.leaf & SPREAD != 0 {
            self.arena[(page.leaf & !SPREAD) as usize][k as usize] = leaf;
        } else if page.leaf != leaf {
            if page.present & !bit == 0 {
                // Nobody else in this page: it follows the one id.
                page.leaf = leaf;
            } else {
                let mut leaves = [page.leaf; PAGE as usize];
                leaves[k as usize] = leaf;
                let at = match self.free.pop() {
                    Some(at) => {
                        self.arena[at as usize] = leaves;
                        at
                    }
                    None => {
                        self.arena.push(leaves);
                        (self.arena.len() - 1) as u32
                    }
                };
                page.leaf = SPREAD | at;
            }
        }
        page.present |= bit;
        was
    }

    /// Forgets `id`. Returns whether it was here.
    pub(crate) fn remove(&mut self, id: Id) -> bool {
        let (key, k) = split(id);
        let Some(page) = self.pages.get_mut(&key) else {
            return false;
        };
        let bit = 1u32 << k;
        if page.present & bit == 0 {
            return false;
        }
        self.len -= 1;
        page.present &= !bit;
        if page.present == 0 {
            if page.leaf & SPREAD != 0 {
                self.free.push(page.leaf & !SPREAD);
            }
            self.pages.remove(&key);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::PeerIdx;

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
            assert!(index.arena.len() - index.free.len() <= index.pages.len());
        }
    }
}
