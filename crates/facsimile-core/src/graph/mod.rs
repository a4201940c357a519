//! The object graph: the root register and the arena of maps and arrays.

mod canonical;
mod key_index;
pub(crate) mod list;
pub(crate) mod map;
pub(crate) mod seq;
mod slot_index;
mod table;

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};
use std::sync::OnceLock;

use rustc_hash::FxHashSet;

use crate::value::{Id, ObjectKind, Value};
use list::ListObj;
use map::MapObj;

pub(crate) use table::Objects;

/// The set bits of a word, lowest first.
pub(crate) struct Bits(pub(crate) u64);

impl Iterator for Bits {
    type Item = u32;

    #[inline]
    fn next(&mut self) -> Option<u32> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros();
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

/// A table keyed by ids that are mostly made and visited in order.
pub(crate) type IdMap<V> = HashMap<Id, V, IdKeys>;

/// The keys of [`IdHasher`]: drawn once per process from the standard
/// library's random source, or from the seed a host gives first
/// ([`seed_hash_keys`]). Ids come from the network, and a peer picks
/// its counters (a message may move its counter by any amount): with an
/// unkeyed mix it could pick ids whose runs share a bucket and make each
/// lookup probe through all of them.
///
/// Public for the tables of hosts keyed by [`ObjectId`](crate::ObjectId)
/// (a handle table, a walk's visited set): `HashMap<ObjectId, V, IdKeys>`.
/// It suits ids only: other keys would hash unkeyed.
///
/// ```
/// use std::collections::HashMap;
/// use facsimile_core::{IdKeys, ObjectId};
/// let handles: HashMap<ObjectId, u32, IdKeys> = HashMap::default();
/// assert!(handles.is_empty());
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct IdKeys;

static KEYS: OnceLock<[u64; 2]> = OnceLock::new();

/// Keys from 16 random bytes, the multiplier odd so that the multiply
/// loses no bit.
fn keys_from(seed: [u64; 2]) -> [u64; 2] {
    [seed[0], seed[1] | 1]
}

impl IdKeys {
    /// The process's keys: an offset and an odd multiplier.
    pub(crate) fn keys() -> &'static [u64; 2] {
        KEYS.get_or_init(|| {
            let random = RandomState::new();
            keys_from([random.hash_one(0u8), random.hash_one(1u8)])
        })
    }
}

/// Seeds the keys of the engine's hash tables with 16 random bytes, before
/// any table is made; `false` when the keys were drawn already, and then
/// nothing changes.
///
/// Only a host whose standard library has no random source needs this:
/// on `wasm32-unknown-unknown` (browsers, Node.js) `std`'s keys are the
/// same in every run, so a peer could pick ids or map keys that share a
/// bucket in every replica it sends them to. `facsimile-wasm` seeds from
/// `crypto.getRandomValues` when it is loaded. Elsewhere the keys come
/// from the operating system.
///
/// ```
/// // From a random source, before the first replica is made.
/// let seed: [u8; 16] = std::array::from_fn(|i| (i * 37) as u8);
/// assert!(facsimile_core::seed_hash_keys(seed));
/// assert!(!facsimile_core::seed_hash_keys(seed), "keys are seeded once");
/// ```
pub fn seed_hash_keys(seed: [u8; 16]) -> bool {
    let word = |i: usize| u64::from_le_bytes(seed[i..i + 8].try_into().expect("8 bytes"));
    KEYS.set(keys_from([word(0), word(8)])).is_ok()
}

/// A 32-bit digest of the hash keys, from which they cannot be read back:
/// lets a test see that two runs drew different keys.
#[doc(hidden)]
pub fn hash_keys_fingerprint() -> u32 {
    // Above the bits a run's position takes.
    (IdKeys.hash_one(Id::ZERO) >> 6) as u32
}

impl BuildHasher for IdKeys {
    type Hasher = IdHasher;

    #[inline]
    fn build_hasher(&self) -> IdHasher {
        let &[key, fold] = IdKeys::keys();
        IdHasher {
            counter: 0,
            peer: 0,
            key,
            fold,
        }
    }
}

/// Hashes an id so that each aligned run of 64 counters of one peer lands in
/// 64 neighbouring buckets, while the runs themselves are spread by a full
/// mix. Objects are mostly created, loaded and walked in id order, so
/// neighbours share cache lines and pages instead of every access missing
/// both. A run holds at most 64 ids, so no input clusters more than that;
/// which runs share a bucket depends on the process's keys ([`IdKeys`]).
pub struct IdHasher {
    counter: u64,
    peer: u64,
    key: u64,
    fold: u64,
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.peer = (self.peer.rotate_left(5) ^ u64::from(b)).wrapping_mul(MIX);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.counter = n;
    }

    fn write_u32(&mut self, n: u32) {
        self.peer = u64::from(n);
    }

    fn finish(&self) -> u64 {
        let run = self.counter >> 6;
        let within = self.counter & 63;
        // Folded multiplies of the run and the peer: both halves of the
        // 128-bit product, so every input bit reaches every output bit.
        // The second, by a fixed constant, mends the first where the drawn
        // multiplier mixes poorly (about one process in thirteen had runs
        // of one peer share a tenth of the buckets they would at random).
        let x = run ^ self.peer.wrapping_mul(MIX) ^ self.key;
        let h = fold(fold(x, self.fold), MIX);
        // Low bits pick the bucket: consecutive within a run. The top seven
        // bits are the table's tag byte: varied within a run too, so that a
        // probe rarely compares keys that cannot match.
        let tag = within.wrapping_mul(0x25) & 0x7f;
        ((h & !63) | within) ^ (tag << 57)
    }
}

const MIX: u64 = 0x9e37_79b9_7f4a_7c15;

/// The two halves of `x * by`, xored.
#[inline]
fn fold(x: u64, by: u64) -> u64 {
    let product = u128::from(x) * u128::from(by);
    (product as u64) ^ ((product >> 64) as u64)
}

#[derive(Debug, Clone)]
pub(crate) enum ObjData {
    Map(MapObj),
    List(Box<ListObj>),
}

#[derive(Debug, Clone)]
pub(crate) struct Obj {
    pub(crate) data: ObjData,
    /// The reclamation generation at which this object was last known to be
    /// reachable (or was created). See `gc`.
    pub(crate) mark: u32,
}

impl Obj {
    pub(crate) fn kind(&self) -> ObjectKind {
        match self.data {
            ObjData::Map(_) => ObjectKind::Map,
            ObjData::List(_) => ObjectKind::Array,
        }
    }

    /// Every object this one references directly.
    pub(crate) fn children(&self, mut f: impl FnMut(Id)) {
        match &self.data {
            ObjData::Map(m) => {
                for (_, v) in m.iter() {
                    if let Value::Ref(o) = v {
                        f(o.0)
                    }
                }
            }
            // A list of scalars (the commonest kind) is not walked.
            ObjData::List(l) if l.has_refs() => {
                for v in l.values() {
                    if let Value::Ref(o) = v {
                        f(o.0)
                    }
                }
            }
            ObjData::List(_) => {}
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Graph {
    pub(crate) root: Value,
    pub(crate) root_stamp: Id,
    pub(crate) objects: Objects,
}

impl Graph {
    #[inline]
    pub(crate) fn get(&self, id: Id) -> Option<&Obj> {
        self.objects.get(&id)
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, id: Id) -> Option<&mut Obj> {
        self.objects.get_mut(&id)
    }

    /// Objects reachable from the root, in depth-first order with children
    /// in iteration order (map keys sorted, array elements in order). Maps
    /// must be sorted beforehand for the order to be canonical.
    pub(crate) fn reachable(&self) -> Vec<Id> {
        let mut seen = FxHashSet::default();
        let mut order = Vec::new();
        let mut stack = Vec::new();
        if let Value::Ref(o) = &self.root {
            stack.push(o.0);
        }
        while let Some(id) = stack.pop() {
            if !seen.insert(id) {
                continue;
            }
            let Some(obj) = self.objects.get(&id) else {
                continue;
            };
            order.push(id);
            // Pushed in order, then reversed in place: popped in order.
            let from = stack.len();
            obj.children(|c| stack.push(c));
            stack[from..].reverse();
        }
        order
    }

    /// Sets `mark` on every object reachable from the root; objects that
    /// already carry it are taken as visited, so `mark` must be new. Returns
    /// how many objects were marked and whether a reference names an object
    /// that is not here.
    pub(crate) fn mark_reachable(&mut self, mark: u32) -> (usize, bool) {
        let mut stack = Vec::new();
        let mut dangling = false;
        match &self.root {
            Value::Ref(o) => stack.push(o.0),
            _ => return (0, false),
        }
        let mut marked = 0;
        while let Some(id) = stack.pop() {
            let Some(obj) = self.objects.get_mut(&id) else {
                dangling = true;
                continue;
            };
            if obj.mark == mark {
                continue;
            }
            obj.mark = mark;
            marked += 1;
            obj.children(|c| stack.push(c));
        }
        (marked, dangling)
    }

    /// Sorts every map whose key order was disturbed.
    pub(crate) fn sort_maps(&mut self) {
        for obj in self.objects.values_mut() {
            if let ObjData::Map(m) = &mut obj.data {
                m.sort();
            }
        }
    }
}

// An object graph holds millions of these: keep them small (a one-key map
// is held in place: 80 bytes in its page instead of 40 and an allocation
// of 64).
const _: () = assert!(std::mem::size_of::<Obj>() <= 80);

#[cfg(test)]
mod tests {
    use std::hash::{BuildHasher, Hash};

    use super::*;
    use crate::value::PeerIdx;

    /// A seeded xorshift: `rand(n)` is below `n` (0 when `n` is 0), the same
    /// sequence for the same seed, for the graph's model tests.
    pub(super) fn xorshift(seed: u64) -> impl FnMut(u64) -> u64 {
        let mut x = seed;
        move |n| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n.max(1)
        }
    }

    fn hash(peer: u32, counter: u64) -> u64 {
        IdKeys.hash_one(Id::new(PeerIdx(peer), counter))
    }

    #[test]
    fn a_run_of_ids_fills_neighbouring_buckets_with_varied_tags() {
        let mask = (1u64 << 20) - 1;
        let run: Vec<u64> = (128..192).map(|c| hash(3, c)).collect();
        for (i, h) in run.iter().enumerate() {
            assert_eq!(h & mask, (run[0] & mask) + i as u64, "bucket of id {i}");
        }
        let tags: FxHashSet<u64> = run.iter().map(|h| h >> 57).collect();
        assert_eq!(tags.len(), 64, "every id of a run has its own tag");
    }

    /// Runs of ids picked to share a bucket under the mix with known keys
    /// (what the hash was before it was keyed) spread under the process's
    /// keys.
    #[test]
    fn runs_picked_to_collide_without_the_keys_spread_with_them() {
        let unkeyed = |run: u64| fold(run, 0xbf58_476d_1ce4_e5b9) & 0xfffc0;
        let picked: Vec<u64> = (0u64..).filter(|&r| unkeyed(r) == 0).take(200).collect();
        let mask = 0xfffc0;
        let buckets: FxHashSet<u64> = picked.iter().map(|&r| hash(0, r * 64) & mask).collect();
        // 200 runs thrown at random into 2^14 run positions: about 199
        // distinct ones.
        assert!(buckets.len() > 190, "{} distinct of 200", buckets.len());
    }

    /// Runs of four peers spread over the buckets under any keys: one
    /// multiply by a drawn multiplier alone left about one set of keys in
    /// thirteen with runs crowded into a tenth of the buckets.
    #[test]
    fn runs_and_peers_are_spread_under_any_keys() {
        let mask = (1u64 << 20) - 1;
        let mut draw = xorshift(0x2545_f491_4f6c_dd1d);
        for round in 0..200 {
            let (key, fold) = (draw(u64::MAX), draw(u64::MAX) | 1);
            let hash = |peer: u32, counter: u64| {
                let mut h = IdHasher {
                    counter: 0,
                    peer: 0,
                    key,
                    fold,
                };
                Id::new(PeerIdx(peer), counter).hash(&mut h);
                h.finish()
            };
            let starts: FxHashSet<u64> = (0..1000u64)
                .flat_map(|run| (0..4).map(move |peer| hash(peer, run * 64) & mask))
                .collect();
            // 4,000 runs thrown at random into 2^14 run positions land on
            // about 3,550 distinct ones.
            assert!(
                starts.len() > 3400,
                "keys {key:#x}, {fold:#x} (round {round}): {} distinct of 4000",
                starts.len()
            );
        }
    }
}
