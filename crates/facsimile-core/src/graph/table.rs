//! The object table: every object by id, in pages of [`PAGE`] consecutive
//! counters of one peer.
//!
//! Objects take their peer's counters in order, so most pages hold many
//! objects: a page stores them side by side in counter order, with a
//! presence bit per counter, behind one hash entry. A million 40-byte
//! objects took about 41 MB here, where a hash entry each (id, object and
//! the table's slack: 2^21 buckets of 56 bytes) took 120 MB. Lookups hash
//! the page, then count the presence bits below the counter's.

use std::collections::HashMap;
use std::ops::Index;

use super::{Bits, IdKeys, IdMap, Obj};
use crate::value::Id;

/// Counters per page: one presence bit each in a `u64`.
const PAGE: u64 = 64;

#[derive(Debug, Clone, Default)]
struct Page {
    /// Bit `k`: the object with counter `PAGE * page + k` is here.
    present: u64,
    /// The objects present, in counter order.
    objs: Vec<Obj>,
}

impl Page {
    /// Where the object at `bit` is (or goes) in `objs`.
    fn rank(&self, bit: u32) -> usize {
        (self.present & ((1u64 << bit) - 1)).count_ones() as usize
    }

    fn has(&self, bit: u32) -> bool {
        self.present & (1u64 << bit) != 0
    }

    fn iter(&self, key: Id) -> impl Iterator<Item = (Id, &Obj)> + '_ {
        let base = key.counter * PAGE;
        Bits(self.present)
            .zip(&self.objs)
            .map(move |(bit, o)| (Id::new(key.peer, base + u64::from(bit)), o))
    }

    fn iter_mut(&mut self, key: Id) -> impl Iterator<Item = (Id, &mut Obj)> + '_ {
        let base = key.counter * PAGE;
        Bits(self.present)
            .zip(&mut self.objs)
            .map(move |(bit, o)| (Id::new(key.peer, base + u64::from(bit)), o))
    }
}

/// The page of `id` and its bit there.
#[inline]
fn split(id: Id) -> (Id, u32) {
    (
        Id::new(id.peer, id.counter / PAGE),
        (id.counter % PAGE) as u32,
    )
}

/// Objects by id.
#[derive(Debug, Clone, Default)]
pub(crate) struct Objects {
    /// Keyed by page, with the keyed id hash: a peer picks its objects'
    /// counters, so it could pick pages that share a bucket under a hash
    /// anyone can compute.
    pages: IdMap<Page>,
    len: usize,
}

impl Objects {
    /// A table with room for `n` objects of dense counters.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Objects {
            pages: HashMap::with_capacity_and_hasher(n.div_ceil(PAGE as usize), IdKeys),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(crate) fn get(&self, id: &Id) -> Option<&Obj> {
        let (key, bit) = split(*id);
        let page = self.pages.get(&key)?;
        page.has(bit).then(|| &page.objs[page.rank(bit)])
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, id: &Id) -> Option<&mut Obj> {
        let (key, bit) = split(*id);
        let page = self.pages.get_mut(&key)?;
        match page.has(bit) {
            true => {
                let at = page.rank(bit);
                Some(&mut page.objs[at])
            }
            false => None,
        }
    }

    pub(crate) fn contains_key(&self, id: &Id) -> bool {
        let (key, bit) = split(*id);
        self.pages.get(&key).is_some_and(|p| p.has(bit))
    }

    /// Puts `obj` at `id`; returns the object it replaced.
    pub(crate) fn insert(&mut self, id: Id, obj: Obj) -> Option<Obj> {
        let (key, bit) = split(id);
        let page = self.pages.entry(key).or_default();
        let at = page.rank(bit);
        if page.has(bit) {
            return Some(std::mem::replace(&mut page.objs[at], obj));
        }
        if page.objs.len() == page.objs.capacity() {
            // Room for 4, 16, then 64 objects: a full page is reallocated
            // twice and holds exactly its 64.
            let n = page.objs.len();
            page.objs.reserve_exact((n * 3).clamp(4, PAGE as usize - n));
        }
        page.objs.insert(at, obj);
        page.present |= 1u64 << bit;
        self.len += 1;
        None
    }

    /// Takes the object at `id` out.
    pub(crate) fn remove(&mut self, id: &Id) -> Option<Obj> {
        let (key, bit) = split(*id);
        let page = self.pages.get_mut(&key)?;
        if !page.has(bit) {
            return None;
        }
        let obj = page.objs.remove(page.rank(bit));
        page.present &= !(1u64 << bit);
        self.len -= 1;
        if page.present == 0 {
            self.pages.remove(&key);
        } else if page.objs.len() * 4 <= page.objs.capacity() {
            page.objs.shrink_to_fit();
        }
        Some(obj)
    }

    /// Every object with its id, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Id, &Obj)> + '_ {
        self.pages.iter().flat_map(|(&key, page)| page.iter(key))
    }

    /// Every object with its id, in no particular order.
    pub(crate) fn iter_mut(&mut self) -> impl Iterator<Item = (Id, &mut Obj)> + '_ {
        self.pages
            .iter_mut()
            .flat_map(|(&key, page)| page.iter_mut(key))
    }

    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn values(&self) -> impl Iterator<Item = &Obj> + '_ {
        self.pages.values().flat_map(|page| &page.objs)
    }

    pub(crate) fn values_mut(&mut self) -> impl Iterator<Item = &mut Obj> + '_ {
        self.pages.values_mut().flat_map(|page| &mut page.objs)
    }

    /// Every object with its id, in id order (peer index, then counter):
    /// the pages are sorted, the objects within a page are in order.
    pub(crate) fn in_id_order(&self) -> Vec<(Id, &Obj)> {
        let mut pages: Vec<(Id, &Page)> = self.pages.iter().map(|(&k, p)| (k, p)).collect();
        pages.sort_unstable_by_key(|(k, _)| (k.peer, k.counter));
        let mut out = Vec::with_capacity(self.len);
        for (key, page) in pages {
            out.extend(page.iter(key));
        }
        out
    }
}

impl Index<&Id> for Objects {
    type Output = Obj;

    fn index(&self, id: &Id) -> &Obj {
        self.get(id).expect("an object present in the table")
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::graph::ObjData;
    use crate::graph::map::MapObj;
    use crate::value::PeerIdx;

    fn obj(mark: u32) -> Obj {
        Obj {
            data: ObjData::Map(MapObj::default()),
            mark,
        }
    }

    /// Random inserts, replacements and removals over a few peers and
    /// pages behave like an ordered map of ids.
    #[test]
    fn the_table_matches_a_model() {
        for seed in 1..100u64 {
            let mut rand = crate::graph::tests::xorshift(seed);
            let mut table = Objects::default();
            let mut model: BTreeMap<(u32, u64), u32> = BTreeMap::new();
            for step in 0..2_000u32 {
                let id = Id::new(PeerIdx(rand(3) as u32), rand(300));
                let key = (id.peer.0, id.counter);
                if rand(3) == 0 {
                    let got = table.remove(&id).map(|o| o.mark);
                    assert_eq!(got, model.remove(&key), "seed {seed}");
                } else {
                    let got = table.insert(id, obj(step)).map(|o| o.mark);
                    assert_eq!(got, model.insert(key, step), "seed {seed}");
                }
                assert_eq!(table.len(), model.len(), "seed {seed}");
                let probe = Id::new(PeerIdx(rand(3) as u32), rand(300));
                let want = model.get(&(probe.peer.0, probe.counter)).copied();
                assert_eq!(table.get(&probe).map(|o| o.mark), want, "seed {seed}");
                assert_eq!(table.contains_key(&probe), want.is_some(), "seed {seed}");
            }
            let ordered: Vec<_> = table
                .in_id_order()
                .into_iter()
                .map(|(id, o)| ((id.peer.0, id.counter), o.mark))
                .collect();
            let want: Vec<_> = model.iter().map(|(&k, &v)| (k, v)).collect();
            assert_eq!(ordered, want, "seed {seed}");
            let mut any: Vec<_> = table
                .iter()
                .map(|(id, o)| ((id.peer.0, id.counter), o.mark))
                .collect();
            any.sort();
            assert_eq!(any, want, "seed {seed}");
            assert_eq!(table.values().count(), model.len(), "seed {seed}");
        }
    }
}
