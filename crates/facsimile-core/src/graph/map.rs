//! Maps: a last-writer-wins register per key, iterated in key byte order.
//!
//! Each key remembers the stamp of the write that currently wins. Deleted keys
//! keep a tombstone so that an older concurrent write arriving later cannot
//! resurrect them; tombstones are purged once no replica can still send such a
//! write (see `gc`). Keys iterate in byte order: an order by creation stamp
//! would move a re-created key on replicas that purged its tombstone but not on
//! the others, so it could not be identical everywhere.

use smol_str::SmolStr;

use super::key_index::KeyIndex;
use crate::clock::Peers;
use crate::value::{Id, Value};

#[derive(Debug, Clone)]
pub(crate) struct MapEntry {
    /// `None` is a tombstone.
    pub(crate) value: Option<Value>,
    pub(crate) stamp: Id,
}

/// Up to this many keys (tombstones included) a map keeps its entries in a
/// vector sorted by key: one allocation, no hashing, and already in
/// iteration order. Most maps of an object graph are that small.
const SMALL: usize = 16;

/// Boxed so that the many small maps stay small.
#[derive(Debug, Clone)]
enum Entries {
    /// One key, held in place: object graphs hold many one-key maps, and
    /// this spares each an allocation (80 bytes with the allocator's).
    One((SmolStr, MapEntry)),
    /// No key (without allocating), or two keys up to [`SMALL`].
    Small(Vec<(SmolStr, MapEntry)>),
    Large(Box<Large>),
}

#[derive(Debug, Clone)]
struct Large {
    map: KeyIndex<MapEntry>,
    /// Set when a key was added out of order; iteration sorts first.
    unsorted: bool,
}

impl Default for Entries {
    fn default() -> Self {
        Entries::Small(Vec::new())
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct MapObj {
    entries: Entries,
    live: usize,
}

/// The visible effect of a write on one key.
pub(crate) struct KeyChange<'a> {
    pub(crate) old: Option<Value>,
    /// What readers see now, borrowed: only a recorded change copies it.
    pub(crate) new: Option<&'a Value>,
}

/// A key's entry, found or added for a write ([`MapObj::slot`]).
pub(crate) struct Slot<'a> {
    key: &'a SmolStr,
    entry: &'a mut MapEntry,
    added: bool,
    live: &'a mut usize,
}

impl<'a> Slot<'a> {
    /// The key as the map stores it.
    pub(crate) fn key(&self) -> &SmolStr {
        self.key
    }

    /// The value readers see now (`None` for a key just added).
    pub(crate) fn value(&self) -> Option<&Value> {
        self.entry.value.as_ref()
    }

    /// Writes `value` (`None` deletes) stamped `stamp`, unless the entry's
    /// stamp is later. Returns the visible change when the write wins and
    /// changes what readers see.
    pub(crate) fn write(
        self,
        value: Option<Value>,
        stamp: Id,
        peers: &Peers,
    ) -> Option<KeyChange<'a>> {
        let e = self.entry;
        // A new key's placeholder is an unstamped tombstone: any write wins.
        if !self.added && !peers.later(stamp, e.stamp) {
            return None;
        }
        e.stamp = stamp;
        let same = match (&e.value, &value) {
            (Some(a), Some(b)) => a.same(b),
            (None, None) => true,
            _ => false,
        };
        if same {
            return None;
        }
        let old = std::mem::replace(&mut e.value, value);
        match (&old, &e.value) {
            (None, Some(_)) => *self.live += 1,
            (Some(_), None) => *self.live -= 1,
            _ => {}
        }
        Some(KeyChange {
            old,
            new: e.value.as_ref(),
        })
    }
}

/// Entries in storage order.
pub(crate) enum Iter<'a> {
    Small(std::slice::Iter<'a, (SmolStr, MapEntry)>),
    Large(std::slice::Iter<'a, (SmolStr, MapEntry)>),
}

impl<'a> Iterator for Iter<'a> {
    type Item = (&'a SmolStr, &'a MapEntry);

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        match self {
            Iter::Small(it) | Iter::Large(it) => it.next().map(|(k, e)| (k, e)),
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match self {
            Iter::Small(it) | Iter::Large(it) => it.size_hint(),
        }
    }
}

impl ExactSizeIterator for Iter<'_> {}

impl Entries {
    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            Entries::One(_) => 1,
            Entries::Small(v) => v.len(),
            Entries::Large(l) => l.map.len(),
        }
    }

    fn get(&self, key: &str) -> Option<&MapEntry> {
        match self {
            Entries::One((k, e)) => (k == key).then_some(e),
            Entries::Small(v) => v
                .binary_search_by(|(k, _)| k.as_str().cmp(key))
                .ok()
                .map(|i| &v[i].1),
            Entries::Large(l) => l.map.get(key),
        }
    }

    /// The entry of `key`, added as an empty tombstone when absent; `true`
    /// when it was added. One lookup either way; `owned` makes the stored
    /// key, only when it is added.
    fn slot(
        &mut self,
        key: &str,
        owned: impl FnOnce() -> SmolStr,
    ) -> (&SmolStr, &mut MapEntry, bool) {
        let fresh = MapEntry {
            value: None,
            stamp: Id::ZERO,
        };
        if let Entries::One((k, _)) = self {
            if k == key {
                let Entries::One((k, e)) = self else {
                    unreachable!("matched as one")
                };
                return (k, e, false);
            }
            // A second key: both go to a vector, below.
            let Entries::One(pair) = std::mem::take(self) else {
                unreachable!("matched as one")
            };
            let mut v = Vec::with_capacity(2);
            v.push(pair);
            *self = Entries::Small(v);
        }
        if matches!(self, Entries::Small(v) if v.capacity() == 0) {
            *self = Entries::One((owned(), fresh));
            let Entries::One((k, e)) = self else {
                unreachable!("made one")
            };
            return (k, e, true);
        }
        // Where the key is or goes in a small map, and whether that is full.
        let small = match self {
            Entries::One(_) => unreachable!("made a vector above"),
            // Keys mostly arrive in order (snapshots, generated names).
            Entries::Small(v) => Some(match v.last() {
                Some((last, _)) if last.as_str() < key => (Err(v.len()), v.len() >= SMALL),
                None => (Err(0), false),
                Some(_) => (
                    v.binary_search_by(|(k, _)| k.as_str().cmp(key)),
                    v.len() >= SMALL,
                ),
            }),
            Entries::Large(_) => None,
        };
        match small {
            Some((Err(_), true)) => {
                // Full: the sorted entries move to a hash map, and the new
                // key joins them below.
                let Entries::Small(v) = self else {
                    unreachable!("matched as small")
                };
                let mut map = KeyIndex::with_capacity(SMALL * 2);
                map.extend(v.drain(..));
                *self = Entries::Large(Box::new(Large {
                    map,
                    unsorted: false,
                }));
            }
            Some((found, _)) => {
                let Entries::Small(v) = self else {
                    unreachable!("matched as small")
                };
                let (at, added) = match found {
                    Ok(i) => (i, false),
                    Err(at) => {
                        v.insert(at, (owned(), fresh));
                        (at, true)
                    }
                };
                let (k, e) = &mut v[at];
                return (k, e, added);
            }
            None => {}
        }
        let Entries::Large(l) = self else {
            unreachable!("small maps returned above")
        };
        let Large { map, unsorted } = &mut **l;
        let (i, added) = map.get_or_insert_with(key, || (owned(), fresh));
        // Once out of order, the keys stay so until sorted: no comparison.
        if added
            && !*unsorted
            && i > 0
            && map.get_index(i - 1).is_some_and(|(k, _)| k.as_str() > key)
        {
            *unsorted = true;
        }
        let (k, e) = map.get_index_mut(i).expect("present");
        (k, e, added)
    }

    fn iter(&self) -> Iter<'_> {
        match self {
            Entries::One(pair) => Iter::Small(std::slice::from_ref(pair).iter()),
            Entries::Small(v) => Iter::Small(v.iter()),
            Entries::Large(l) => Iter::Large(l.map.iter()),
        }
    }
}

/// The first eight bytes of `key` as a big-endian integer, padded with
/// zeros: a key's prefix is at most the prefix of any key above it.
fn prefix(key: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    let n = key.len().min(8);
    b[..n].copy_from_slice(&key[..n]);
    u64::from_be_bytes(b)
}

impl MapObj {
    /// An empty map with room for `n` keys.
    pub(crate) fn with_capacity(n: usize) -> Self {
        let entries = match n {
            // The first key of an empty map is held in place.
            0..=1 => Entries::Small(Vec::new()),
            2..=SMALL => Entries::Small(Vec::with_capacity(n)),
            _ => Entries::Large(Box::new(Large {
                map: KeyIndex::with_capacity(n),
                unsorted: false,
            })),
        };
        MapObj { entries, live: 0 }
    }

    /// A new map of `entries` (taken out, leaving defaults), each written
    /// at `stamp`: what restoring them one by one leaves (of equal keys
    /// the first wins), built at once. A thousand keys took about 870
    /// instructions a key sorted by cached keys, then restored one by one.
    pub(crate) fn from_new(entries: &mut [(SmolStr, Value)], stamp: Id) -> MapObj {
        let entry = |value| MapEntry {
            value: Some(value),
            stamp,
        };
        if let [one] = entries {
            let (k, v) = std::mem::take(one);
            return MapObj {
                entries: Entries::One((k, entry(v))),
                live: 1,
            };
        }
        // Key order, stably: each key's prefix above its place, sorted as
        // integers (two fifths of the cached-key sort's instructions); keys of equal
        // prefixes are then ordered by their bytes.
        let mut order: Vec<u128> = (entries.iter().enumerate())
            .map(|(i, (k, _))| u128::from(prefix(k.as_bytes())) << 32 | i as u128)
            .collect();
        order.sort_unstable();
        let at = |o: &u128| (*o as u32) as usize;
        let mut start = 0;
        while start < order.len() {
            let run = order[start..]
                .iter()
                .take_while(|o| *o >> 32 == order[start] >> 32)
                .count();
            if run > 1 {
                order[start..start + run].sort_by(|a, b| entries[at(a)].0.cmp(&entries[at(b)].0));
            }
            start += run;
        }
        let taken = order.iter().map(|o| std::mem::take(&mut entries[at(o)]));
        // Repeated keys are neighbours now: the first of each stays.
        let mut v: Vec<(SmolStr, MapEntry)> = Vec::with_capacity(order.len());
        for (k, x) in taken {
            if v.last().is_none_or(|(last, _)| *last != k) {
                v.push((k, entry(x)));
            }
        }
        MapObj::from_sorted(v)
    }

    /// A map of `entries`, whose keys rise strictly in byte order (as a
    /// snapshot lists them): each representation is built as it stands,
    /// with no lookup per key.
    pub(crate) fn from_sorted(entries: Vec<(SmolStr, MapEntry)>) -> Self {
        debug_assert!(entries.windows(2).all(|w| w[0].0 < w[1].0), "sorted");
        let live = entries.iter().filter(|(_, e)| e.value.is_some()).count();
        let entries = match entries.len() {
            0 => Entries::Small(Vec::new()),
            1 => Entries::One(entries.into_iter().next().expect("one entry")),
            2..=SMALL => Entries::Small(entries),
            _ => Entries::Large(Box::new(Large {
                map: KeyIndex::from_distinct(entries),
                unsorted: false,
            })),
        };
        MapObj { entries, live }
    }

    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.entries.get(key).and_then(|e| e.value.as_ref())
    }

    /// The stamp of the last write to `key` (a delete's too).
    pub(crate) fn stamp_of(&self, key: &str) -> Option<Id> {
        self.entries.get(key).map(|e| e.stamp)
    }

    /// Applies a write (`None` deletes) stamped `stamp`. Returns the visible
    /// change when the write wins and changes what readers see.
    pub(crate) fn apply(
        &mut self,
        key: &SmolStr,
        value: Option<Value>,
        stamp: Id,
        peers: &Peers,
    ) -> Option<KeyChange<'_>> {
        self.slot(key, || key.clone()).write(value, stamp, peers)
    }

    /// The entry of `key` for a write, added (as an unstamped tombstone,
    /// which any write beats) when absent: a write that first looks at the
    /// current value looks the key up once. `owned` makes the stored key,
    /// only when it is added.
    pub(crate) fn slot(&mut self, key: &str, owned: impl FnOnce() -> SmolStr) -> Slot<'_> {
        let (key, entry, added) = self.entries.slot(key, owned);
        Slot {
            key,
            entry,
            added,
            live: &mut self.live,
        }
    }

    /// Restores an entry exactly as transferred in a snapshot. Returns
    /// `false` (and changes nothing) when the key is already present.
    pub(crate) fn restore(&mut self, key: SmolStr, entry: MapEntry) -> bool {
        let (_, e, added) = self.entries.slot(&key, || key.clone());
        if added {
            self.live += usize::from(entry.value.is_some());
            *e = entry;
        }
        added
    }

    /// Whether entries are in iteration order.
    pub(crate) fn is_sorted(&self) -> bool {
        match &self.entries {
            Entries::One(_) | Entries::Small(_) => true,
            Entries::Large(l) => !l.unsorted,
        }
    }

    /// Puts entries in iteration order if arrivals disturbed it.
    #[inline]
    pub(crate) fn sort(&mut self) {
        // Inline: a snapshot checks every map, and most need nothing.
        if let Entries::Large(l) = &mut self.entries
            && l.unsorted
        {
            Self::sort_large(l);
        }
    }

    fn sort_large(l: &mut Large) {
        // Each key's first eight bytes, big-endian and padded with
        // zeros, order keys as their bytes do wherever they differ:
        // most comparisons are of one integer (sorting a thousand keys
        // `c0` to `c999` took 0.4 M instructions, 0.7 M by strings).
        l.map
            .sort_by_cached_key(|k, _| (prefix(k.as_bytes()), k.clone()));
        l.unsorted = false;
    }

    /// All entries, tombstones included, in storage order (call
    /// [`MapObj::sort`] first for iteration order).
    pub(crate) fn raw_entries(&self) -> Iter<'_> {
        self.entries.iter()
    }

    /// Whether both maps hold the same keys (tombstones included) in the
    /// same storage order. Maps of one shape are mostly small: their key
    /// slices are compared directly.
    pub(crate) fn same_keys(&self, other: &MapObj) -> bool {
        fn keys_eq(a: &[(SmolStr, MapEntry)], b: &[(SmolStr, MapEntry)]) -> bool {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.0 == y.0)
        }
        match (&self.entries, &other.entries) {
            (Entries::Small(a), Entries::Small(b)) => keys_eq(a, b),
            (Entries::One(a), Entries::One(b)) => a.0 == b.0,
            _ => {
                let (a, b) = (self.raw_entries(), other.raw_entries());
                a.len() == b.len() && a.zip(b).all(|((x, _), (y, _))| x == y)
            }
        }
    }

    /// Visible entries in storage order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&SmolStr, &Value)> + '_ {
        self.entries
            .iter()
            .filter_map(|(k, e)| e.value.as_ref().map(|v| (k, v)))
    }

    /// Drops tombstones whose stamp `stable` accepts.
    pub(crate) fn purge_tombstones(&mut self, stable: impl Fn(Id) -> bool) {
        let keep = |e: &MapEntry| e.value.is_some() || !stable(e.stamp);
        match &mut self.entries {
            Entries::One((_, e)) => {
                if !keep(e) {
                    self.entries = Entries::Small(Vec::new());
                }
            }
            Entries::Small(v) => v.retain(|(_, e)| keep(e)),
            Entries::Large(l) => l.map.retain(|_, e| keep(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::clock::Peers;
    use crate::value::{PeerId, PeerIdx};

    /// Maps built whole from sorted entries hold what restoring each entry
    /// builds, and compare their keys alike in every representation.
    #[test]
    fn sorted_maps_match_restored_ones() {
        let entry = |i: usize| MapEntry {
            value: (i % 3 > 0).then_some(Value::Int(i as i64)),
            stamp: Id::new(PeerIdx::SELF, i as u64),
        };
        let keys = |n: usize, tag: &str| -> Vec<SmolStr> {
            let mut keys: Vec<SmolStr> = (0..n).map(|i| format!("{tag}{i:03}").into()).collect();
            keys.sort();
            keys
        };
        for n in [0, 1, 2, 5, SMALL, SMALL + 1, 40] {
            let whole = MapObj::from_sorted(
                keys(n, "k")
                    .into_iter()
                    .enumerate()
                    .map(|(i, k)| (k, entry(i)))
                    .collect(),
            );
            let mut restored = MapObj::with_capacity(n);
            for (i, k) in keys(n, "k").into_iter().enumerate() {
                assert!(restored.restore(k, entry(i)));
            }
            assert_eq!(whole.len(), restored.len());
            assert!(whole.is_sorted());
            let pairs = |m: &MapObj| -> Vec<(SmolStr, Option<i64>, Id)> {
                m.raw_entries()
                    .map(|(k, e)| {
                        let v = e.value.as_ref().map(|v| match v {
                            Value::Int(i) => *i,
                            _ => -1,
                        });
                        (k.clone(), v, e.stamp)
                    })
                    .collect()
            };
            assert_eq!(pairs(&whole), pairs(&restored), "{n}");
            assert!(whole.same_keys(&restored) && restored.same_keys(&whole));
            for (m, other) in [(n, "k"), (n + 1, "k"), (n.max(1), "j")] {
                let mut map = MapObj::default();
                for (i, k) in keys(m, other).into_iter().enumerate() {
                    map.restore(k, entry(i));
                }
                let same = m == n && (other == "k" || n == 0);
                assert_eq!(whole.same_keys(&map), same, "{n} {m} {other}");
                assert_eq!(map.same_keys(&whole), same, "{n} {m} {other}");
            }
        }
    }

    /// Random writes, deletes, restores and purges across the small/large
    /// boundary behave like a sorted map of registers.
    #[test]
    fn small_and_large_maps_match_a_model() {
        let peers = Peers::new(PeerId::new("a", 1));
        for seed in 1..200u64 {
            let mut rand = crate::graph::tests::xorshift(seed);
            let mut map = MapObj::default();
            let mut model: BTreeMap<SmolStr, (Option<i64>, u64)> = BTreeMap::new();
            let keys = 1 + rand(40);
            for counter in 1..300u64 {
                let key = SmolStr::from(format!("k{}", rand(keys)));
                let value = (rand(4) > 0).then_some(counter as i64);
                let stamp = Id::new(PeerIdx::SELF, if rand(8) == 0 { 1 } else { counter });
                match rand(10) {
                    0 => {
                        map.purge_tombstones(|_| true);
                        model.retain(|_, (v, _)| v.is_some());
                    }
                    1 => {
                        let entry = MapEntry {
                            value: value.map(Value::Int),
                            stamp,
                        };
                        let added = map.restore(key.clone(), entry);
                        assert_eq!(added, !model.contains_key(&key), "seed {seed}");
                        model.entry(key).or_insert((value, stamp.counter));
                    }
                    _ => {
                        map.apply(&key, value.map(Value::Int), stamp, &peers);
                        match model.get_mut(&key) {
                            Some(e) if e.1 >= stamp.counter => {}
                            Some(e) => *e = (value, stamp.counter),
                            None => {
                                model.insert(key, (value, stamp.counter));
                            }
                        }
                    }
                }
                map.sort();
                let got: Vec<_> = map
                    .raw_entries()
                    .map(|(k, e)| (k.clone(), (e.value.clone(), e.stamp.counter)))
                    .collect();
                let want: Vec<_> = model
                    .iter()
                    .map(|(k, (v, c))| (k.clone(), (v.map(Value::Int), *c)))
                    .collect();
                assert_eq!(got.len(), want.len(), "seed {seed}");
                for (g, w) in got.iter().zip(&want) {
                    assert!(g.0 == w.0 && g.1.1 == w.1.1, "seed {seed}: {g:?} {w:?}");
                    assert!(
                        match (&g.1.0, &w.1.0) {
                            (Some(a), Some(b)) => a.same(b),
                            (a, b) => a.is_none() && b.is_none(),
                        },
                        "seed {seed}: {g:?} {w:?}"
                    );
                }
                let live = model.values().filter(|(v, _)| v.is_some()).count();
                assert_eq!(map.len(), live, "seed {seed}");
                assert_eq!(map.entries.len(), model.len(), "seed {seed}");
                for (k, (v, _)) in &model {
                    assert_eq!(map.get(k).is_some(), v.is_some(), "seed {seed}");
                }
            }
        }
    }

    /// A map built at once holds what restoring its entries one by one
    /// leaves, in the same order, whatever the keys' lengths and repeats.
    #[test]
    fn a_new_map_built_at_once_matches_restoring() {
        for seed in 1..200u64 {
            let mut rand = crate::graph::tests::xorshift(seed);
            let n = rand(60) as usize;
            let long = rand(2) == 0;
            let mut entries: Vec<(SmolStr, Value)> = (0..n)
                .map(|i| {
                    let k = rand(n as u64 + 1);
                    let key = match long {
                        true => format!("a_long_shared_prefix{k}\0"),
                        false => format!("k{k}"),
                    };
                    (SmolStr::from(key), Value::Int(i as i64))
                })
                .collect();
            let stamp = Id::new(PeerIdx::SELF, 7);
            let mut want = MapObj::default();
            for (k, v) in entries.clone() {
                let entry = MapEntry {
                    value: Some(v),
                    stamp,
                };
                want.restore(k, entry);
            }
            want.sort();
            let got = MapObj::from_new(&mut entries, stamp);
            assert!(got.is_sorted(), "seed {seed}");
            assert_eq!(got.len(), want.len(), "seed {seed}");
            let pairs = |m: &MapObj| -> Vec<(SmolStr, Option<i64>, Id)> {
                m.raw_entries()
                    .map(|(k, e)| {
                        let v = match e.value {
                            Some(Value::Int(i)) => Some(i),
                            _ => None,
                        };
                        (k.clone(), v, e.stamp)
                    })
                    .collect()
            };
            assert_eq!(pairs(&got), pairs(&want), "seed {seed}");
        }
    }
}
