//! The entries of a large map: a vector in insertion order, found by key
//! through a compact hash index.
//!
//! Each index slot is one word, the key's 32-bit hash and its entry's
//! position, so a probe reads one cache line where a table of control bytes
//! and separate index slots reads two, and a key that is absent costs no
//! read of the entries at all. A slot's home is the top bits of its hash:
//! the index is ordered by hash, so growing it is a stream through the old
//! slots into the new ones (homes `p` go to `2p` and `2p + 1`), and it never
//! reads the entries or hashes a key again. In a map of ten million keys,
//! that is what keeps the cost of a write near flat: each write misses the
//! cache once in the index, and growth adds only sequential passes.
//!
//! Keys come from the network, so the hash is keyed, a key of its own for
//! each index (SipHash, std's `RandomState`, and the process's key of
//! [`IdKeys`]): with a hash anyone can
//! compute, a peer could send keys that all share a home and make every
//! write to the map probe through all of them.

use std::hash::{BuildHasher, RandomState};

use smol_str::SmolStr;

use super::IdKeys;

/// An empty slot: positions are stored plus one.
const EMPTY: u64 = 0;

/// Fewest slots a non-empty index holds.
const MIN_SLOTS: usize = 32;

#[derive(Debug, Clone)]
pub(crate) struct KeyIndex<V> {
    entries: Vec<(SmolStr, V)>,
    /// `hash << 32 | (position + 1)`, or [`EMPTY`]; linear probing, a power
    /// of two long, at most three quarters full.
    slots: Vec<u64>,
    /// Right shift from a 32-bit hash to its home slot.
    shift: u32,
    /// The hash's key.
    keys: RandomState,
}

impl<V> Default for KeyIndex<V> {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

/// How many slots hold `n` keys at most three quarters full.
fn slots_for(n: usize) -> usize {
    (n + n / 3 + 1).next_power_of_two().max(MIN_SLOTS)
}

impl<V> KeyIndex<V> {
    /// An empty index with room for `n` keys before it grows.
    pub(crate) fn with_capacity(n: usize) -> Self {
        let (slots, shift) = if n == 0 {
            (Vec::new(), 32)
        } else {
            let len = slots_for(n);
            (vec![EMPTY; len], 32 - len.trailing_zeros())
        };
        KeyIndex {
            entries: Vec::with_capacity(n),
            slots,
            shift,
            keys: RandomState::new(),
        }
    }

    /// An index of `entries`, whose keys are all different, in their order.
    pub(crate) fn from_distinct(entries: Vec<(SmolStr, V)>) -> Self {
        let mut index = KeyIndex {
            entries,
            slots: Vec::new(),
            shift: 32,
            keys: RandomState::new(),
        };
        index.rebuild();
        index
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many slots a lookup of `key` reads.
    #[cfg(test)]
    fn probes(&self, key: &str) -> usize {
        let (mask, h) = (self.slots.len() - 1, self.hash(key));
        let mut at = self.home(h);
        let mut n = 1;
        loop {
            let s = self.slots[at];
            let hit = (s >> 32) as u32 == h && self.entries[(s as u32 - 1) as usize].0 == key;
            if s == EMPTY || hit {
                return n;
            }
            at = (at + 1) & mask;
            n += 1;
        }
    }

    /// The 32-bit hash that places `key`: the top half of SipHash's. The
    /// process's key goes in first, since where `std` has no random
    /// source its keys are the same in every run.
    #[inline]
    fn hash(&self, key: &str) -> u32 {
        (self.keys.hash_one((IdKeys::keys()[0], key)) >> 32) as u32
    }

    #[inline]
    fn home(&self, h: u32) -> usize {
        // `shift` is 32 only while there are no slots, and nothing probes then.
        (u64::from(h) >> self.shift) as usize
    }

    /// The position of `key` (`Ok`), or the empty slot where it would go.
    #[inline]
    fn find(&self, h: u32, key: &str) -> Result<usize, usize> {
        let mask = self.slots.len() - 1;
        let mut at = self.home(h);
        loop {
            let s = self.slots[at];
            if s == EMPTY {
                return Err(at);
            }
            if (s >> 32) as u32 == h {
                let i = (s as u32 - 1) as usize;
                if self.entries[i].0 == key {
                    return Ok(i);
                }
            }
            at = (at + 1) & mask;
        }
    }

    /// The value of `key`.
    pub(crate) fn get(&self, key: &str) -> Option<&V> {
        if self.entries.is_empty() {
            return None;
        }
        self.find(self.hash(key), key)
            .ok()
            .map(|i| &self.entries[i].1)
    }

    /// The position of `key`, added as the entry `make` gives (its key
    /// equal to `key`) when absent; `true` when it was added. One probe
    /// either way.
    pub(crate) fn get_or_insert_with(
        &mut self,
        key: &str,
        make: impl FnOnce() -> (SmolStr, V),
    ) -> (usize, bool) {
        let h = self.hash(key);
        let found = if self.slots.is_empty() {
            Err(0)
        } else {
            self.find(h, key)
        };
        match found {
            Ok(i) => (i, false),
            Err(mut at) => {
                if (self.entries.len() + 1) * 4 > self.slots.len() * 3 {
                    self.grow();
                    at = self.find(h, key).expect_err("absent before growing");
                }
                let i = self.entries.len();
                assert!(i < u32::MAX as usize, "a map holds fewer than 2^32 keys");
                self.slots[at] = u64::from(h) << 32 | (i as u64 + 1);
                let entry = make();
                debug_assert_eq!(entry.0, key);
                self.entries.push(entry);
                (i, true)
            }
        }
    }

    /// Sets `key` to `value`, in place when present, else last.
    pub(crate) fn insert(&mut self, key: SmolStr, value: V) {
        let k = key.clone();
        let mut entry = Some((key, value));
        let (i, _) = self.get_or_insert_with(&k, || entry.take().expect("made once"));
        // Still here: the key was present.
        if let Some((_, value)) = entry {
            self.entries[i].1 = value;
        }
    }

    /// Doubles the slots (or makes the first), a pass through the old ones
    /// in order: the homes of a slot's neighbours are the new neighbours.
    #[cold]
    fn grow(&mut self) {
        let len = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![EMPTY; len]);
        self.shift = 32 - len.trailing_zeros();
        for s in old {
            if s != EMPTY {
                self.place(s);
            }
        }
    }

    /// Puts a slot's word at the first free slot from its home.
    #[inline]
    fn place(&mut self, s: u64) {
        let mask = self.slots.len() - 1;
        let mut at = self.home((s >> 32) as u32);
        while self.slots[at] != EMPTY {
            at = (at + 1) & mask;
        }
        self.slots[at] = s;
    }

    /// Rebuilds the slots from the entries (after they moved).
    fn rebuild(&mut self) {
        let len = if self.entries.is_empty() {
            0
        } else {
            slots_for(self.entries.len())
        };
        self.slots.clear();
        self.slots.resize(len, EMPTY);
        self.shift = if len == 0 {
            32
        } else {
            32 - len.trailing_zeros()
        };
        for i in 0..self.entries.len() {
            let h = self.hash(&self.entries[i].0);
            self.place(u64::from(h) << 32 | (i as u64 + 1));
        }
    }

    pub(crate) fn get_index(&self, i: usize) -> Option<(&SmolStr, &V)> {
        self.entries.get(i).map(|(k, v)| (k, v))
    }

    pub(crate) fn get_index_mut(&mut self, i: usize) -> Option<(&SmolStr, &mut V)> {
        self.entries.get_mut(i).map(|(k, v)| (&*k, v))
    }

    /// Entries in storage order.
    pub(crate) fn iter(&self) -> std::slice::Iter<'_, (SmolStr, V)> {
        self.entries.iter()
    }

    /// Keeps the entries `keep` accepts, in order.
    pub(crate) fn retain(&mut self, mut keep: impl FnMut(&SmolStr, &mut V) -> bool) {
        let before = self.entries.len();
        self.entries.retain_mut(|(k, v)| keep(k, v));
        if self.entries.len() != before {
            self.rebuild();
        }
    }

    /// Orders the entries by `f`, computed once per entry (stably). The
    /// slots stay where their hashes put them; only their positions change.
    pub(crate) fn sort_by_cached_key<K: Ord>(&mut self, mut f: impl FnMut(&SmolStr, &V) -> K) {
        let mut order: Vec<(K, u32)> = self
            .entries
            .iter()
            .enumerate()
            .map(|(i, (k, v))| (f(k, v), i as u32))
            .collect();
        // The old position breaks ties: stable, as the unstable sort is cheaper.
        order.sort_unstable();
        // rank[old position] = new position.
        let mut rank = vec![0u32; order.len()];
        for (new, (_, old)) in order.into_iter().enumerate() {
            rank[old as usize] = new as u32;
        }
        for s in &mut self.slots {
            if *s != EMPTY {
                let old = (*s as u32 - 1) as usize;
                *s = (*s & !u64::from(u32::MAX)) | (u64::from(rank[old]) + 1);
            }
        }
        // Follow each cycle of the permutation, putting one entry in place
        // per swap.
        for i in 0..rank.len() {
            while rank[i] as usize != i {
                let j = rank[i] as usize;
                self.entries.swap(i, j);
                rank.swap(i, j);
            }
        }
    }
}

impl<V> Extend<(SmolStr, V)> for KeyIndex<V> {
    fn extend<I: IntoIterator<Item = (SmolStr, V)>>(&mut self, iter: I) {
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<V> FromIterator<(SmolStr, V)> for KeyIndex<V> {
    fn from_iter<I: IntoIterator<Item = (SmolStr, V)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut index = Self::with_capacity(iter.size_hint().0);
        index.extend(iter);
        index
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    /// Keys chosen to share a home under an unkeyed hash (Fx, as before)
    /// spread out under the index's keyed one: a lookup reads a slot or
    /// two, not the whole cluster.
    #[test]
    fn keys_chosen_to_collide_do_not_cluster() {
        use std::hash::BuildHasher;
        let n = 1000;
        // An index of 1,000 keys has 2,048 slots: homes are 11 bits.
        let unkeyed = |k: &str| {
            rustc_hash::FxBuildHasher
                .hash_one(k)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15)
                >> 53
        };
        let keys: Vec<SmolStr> = (0u64..)
            .map(|i| SmolStr::from(format!("k{i}")))
            .filter(|k| unkeyed(k) == 0)
            .take(n)
            .collect();
        let mut index: KeyIndex<()> = KeyIndex::default();
        for k in &keys {
            index.insert(k.clone(), ());
        }
        assert_eq!(index.slots.len(), 2048);
        let probes: usize = keys.iter().map(|k| index.probes(k)).sum();
        // Unkeyed, a lookup would read half the cluster: 500,000 in all.
        assert!(probes < 4 * n, "{probes} slots read for {n} lookups");
    }

    /// Inserts, retains and sorts behave like a map that remembers order.
    #[test]
    fn matches_a_model() {
        for seed in 1..100u64 {
            let mut rand = crate::graph::tests::xorshift(seed);
            let mut index: KeyIndex<u64> = KeyIndex::with_capacity(rand(3) as usize * 20);
            let mut order: Vec<SmolStr> = Vec::new();
            let mut model: BTreeMap<SmolStr, u64> = BTreeMap::new();
            let keys = 1 + rand(500);
            for step in 0..2000u64 {
                match rand(50) {
                    0 => {
                        let cut = rand(keys);
                        let drop = |k: &SmolStr| k[1..].parse::<u64>().unwrap() % 7 == cut % 7;
                        index.retain(|k, _| !drop(k));
                        order.retain(|k| !drop(k));
                        model.retain(|k, _| !drop(k));
                    }
                    1 => {
                        index.sort_by_cached_key(|k, _| k.clone());
                        order.sort();
                    }
                    _ => {
                        let key = SmolStr::from(format!("k{}", rand(keys)));
                        if rand(2) == 0 {
                            index.insert(key.clone(), step);
                            if model.insert(key.clone(), step).is_none() {
                                order.push(key);
                            }
                        } else {
                            let (i, added) = index.get_or_insert_with(&key, || (key.clone(), step));
                            assert_eq!(added, !model.contains_key(&key), "seed {seed}");
                            assert_eq!(index.get_index(i).unwrap().0, &key);
                            if added {
                                model.insert(key.clone(), step);
                                order.push(key);
                            }
                        }
                    }
                }
                assert_eq!(index.len(), model.len(), "seed {seed}");
                if step % 97 == 0 {
                    let got: Vec<_> = index.iter().map(|(k, v)| (k.clone(), *v)).collect();
                    let want: Vec<_> = order.iter().map(|k| (k.clone(), model[k])).collect();
                    assert_eq!(got, want, "seed {seed}");
                    for k in 0..keys {
                        let key = format!("k{k}");
                        assert_eq!(index.get(&key), model.get(key.as_str()), "seed {seed}");
                    }
                }
            }
        }
    }
}
