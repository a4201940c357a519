//! Arrays: a movable list.
//!
//! An array is a sequence of *slots* ordered by the RGA rule, and a set of
//! *elements*, each with identity, a last-writer-wins value and a
//! last-writer-wins position (the slot it currently occupies).
//!
//! - Inserting an element creates the element and its home slot, both named by
//!   the insert's stamp, placed after an origin slot.
//! - Moving an element creates a new slot after an origin and points the
//!   element's position at it; concurrent moves of one element resolve by
//!   stamp, so an element appears exactly once.
//! - Deleting an element is permanent and clears its value (so a deleted
//!   element never keeps an object alive).
//!
//! A slot is visible when it is the current position of a live element.
//! Slots that are no longer visible stay as anchors for concurrent inserts
//! until reclamation proves nobody can name them any more.
//!
//! RGA placement: a slot goes right after its origin, skipping every slot
//! with a later stamp. Everything inserted after a slot has a later stamp than
//! that slot (Lamport), so the skipped run is exactly the later siblings and
//! their descendants, and the rule needs only the origin to be present.
//!
//! Storage: a leaf keeps its slots column by column ([`Slots`]): ids as runs
//! of consecutive counters of one peer (pushes and typing make long runs),
//! a flag byte and an 8-byte value each. Scalars sit in the value inline;
//! strings, bytes, references and a move slot's element go to a side table
//! ([`Big`]) that the value indexes. A list of pushed numbers takes about
//! 12 bytes a slot besides the id index (a slot had taken 40).

use super::seq::{Cursor, Items, LEAF_MAX, LeafId, MERGE_MAX, SeqTree};
use super::slot_index::SlotIndex;
use super::{Bits, IdMap};
use crate::clock::Peers;
use crate::value::{Id, ObjectId, PeerIdx, Value};

#[derive(Debug, Clone)]
pub(crate) enum SlotKind {
    /// The slot the element `id` was inserted at; holds the element's state.
    Home {
        value: Value,
        deleted: bool,
        /// The element lives at a move slot now.
        away: bool,
    },
    /// A slot created by moving `elem` here.
    Moved { elem: Id, live: bool },
}

/// A slot as transferred.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) id: Id,
    pub(crate) kind: SlotKind,
}

/// A move slot (else a home slot).
const MOVED: u8 = 1;
/// Home slot: the element is deleted.
const DELETED: u8 = 2;
/// Home slot: the element lives at a move slot.
const AWAY: u8 = 4;
/// Move slot: it is its element's position.
const LIVE: u8 = 8;

/// The flag bits that say what a slot's 8-byte value holds.
const KIND: u8 = 0x70;
const NULL: u8 = 0x00;
const BOOL: u8 = 0x10;
const INT: u8 = 0x20;
const FLOAT: u8 = 0x30;
/// An index into [`Big`].
const BIG: u8 = 0x40;
/// A dead slot's reclamation epoch: the one a round takes, or the next (see
/// [`Dead`]). Meaningless while the slot lives.
const EPOCH: u8 = 0x80;

fn is_dead(flags: u8) -> bool {
    match flags & MOVED != 0 {
        false => flags & DELETED != 0,
        true => flags & LIVE == 0,
    }
}

fn is_visible(flags: u8) -> bool {
    match flags & MOVED != 0 {
        false => flags & (DELETED | AWAY) == 0,
        true => flags & LIVE != 0,
    }
}

/// Values that do not fit a slot's 8 bytes, by index, with freed entries
/// reused.
#[derive(Debug, Clone, Default)]
struct Big {
    values: Vec<Value>,
    free: Vec<u32>,
}

impl Big {
    fn put(&mut self, value: Value) -> u64 {
        match self.free.pop() {
            Some(i) => {
                self.values[i as usize] = value;
                u64::from(i)
            }
            None => {
                self.values.push(value);
                (self.values.len() - 1) as u64
            }
        }
    }

    fn get(&self, i: u64) -> &Value {
        &self.values[i as usize]
    }

    fn take(&mut self, i: u64) -> Value {
        self.free.push(i as u32);
        std::mem::take(&mut self.values[i as usize])
    }

    /// Entries in use.
    #[cfg(any(test, feature = "sim"))]
    fn len(&self) -> usize {
        self.values.len() - self.free.len()
    }
}

/// A value packed into a slot: its kind bits and its 8 bytes.
fn pack(value: Value, big: &mut Big) -> (u8, u64) {
    match value {
        Value::Null => (NULL, 0),
        Value::Bool(b) => (BOOL, u64::from(b)),
        Value::Int(i) => (INT, i as u64),
        Value::Float(f) => (FLOAT, f.to_bits()),
        other => (BIG, big.put(other)),
    }
}

/// A slot's value, unpacked.
fn unpack(flags: u8, bits: u64, big: &Big) -> Value {
    match flags & KIND {
        NULL => Value::Null,
        BOOL => Value::Bool(bits != 0),
        INT => Value::Int(bits as i64),
        FLOAT => Value::Float(f64::from_bits(bits)),
        _ => big.get(bits).clone(),
    }
}

/// Whether a slot's value is a reference to an object.
#[cfg(any(test, feature = "sim"))]
fn holds_ref(flags: u8, bits: u64, big: &Big) -> bool {
    flags & (KIND | MOVED) == BIG && matches!(big.get(bits), Value::Ref(_))
}

/// One slot moved into or out of a leaf.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stored {
    id: Id,
    flags: u8,
    bits: u64,
}

impl Stored {
    fn home(id: Id, value: Value, deleted: bool, away: bool, big: &mut Big) -> Self {
        let (kind, bits) = pack(value, big);
        let flags = kind | if deleted { DELETED } else { 0 } | if away { AWAY } else { 0 };
        Stored { id, flags, bits }
    }

    fn moved(id: Id, elem: Id, live: bool, big: &mut Big) -> Self {
        Stored {
            id,
            flags: MOVED | BIG | if live { LIVE } else { 0 },
            bits: big.put(Value::Ref(ObjectId(elem))),
        }
    }

    fn from_slot(slot: Slot, big: &mut Big) -> Self {
        match slot.kind {
            SlotKind::Home {
                value,
                deleted,
                away,
            } => Stored::home(slot.id, value, deleted, away, big),
            SlotKind::Moved { elem, live } => Stored::moved(slot.id, elem, live, big),
        }
    }
}

/// Consecutive ids of one peer held by consecutive slots of a leaf.
#[derive(Debug, Clone, Copy)]
struct Run {
    counter: u64,
    peer: PeerIdx,
    len: u32,
}

impl Run {
    fn one(id: Id) -> Self {
        Run {
            counter: id.counter,
            peer: id.peer,
            len: 1,
        }
    }

    /// Whether `id` comes right after this run.
    fn continued_by(&self, id: Id) -> bool {
        self.peer == id.peer && self.counter + u64::from(self.len) == id.counter
    }
}

/// The slots of one leaf, column by column.
#[derive(Debug, Clone, Default)]
pub(crate) struct Slots {
    /// The ids, as runs in slot order.
    runs: Vec<Run>,
    /// Per slot: [`MOVED`] and its companions, and the value's kind.
    flags: Vec<u8>,
    /// Per slot: the value's 8 bytes (see [`pack`]).
    bits: Vec<u64>,
}

impl Slots {
    /// The run holding slot `pos` and the offset of `pos` in it; a `pos`
    /// right after a run's end belongs to that run (so an append can extend
    /// it). `None` for an empty leaf.
    fn locate(&self, pos: usize) -> Option<(usize, u32)> {
        // From the nearer end: the columns hold `len()` slots here (callers
        // change the runs before the columns).
        let total = self.flags.len();
        if pos * 2 > total {
            let mut end = total;
            for (i, r) in self.runs.iter().enumerate().rev() {
                let start = end - r.len as usize;
                if pos > start || i == 0 {
                    return Some((i, (pos - start) as u32));
                }
                end = start;
            }
            return None;
        }
        let mut start = 0;
        for (i, r) in self.runs.iter().enumerate() {
            let end = start + r.len as usize;
            if pos <= end {
                return Some((i, (pos - start) as u32));
            }
            start = end;
        }
        None
    }

    /// The id of slot `pos`.
    fn id(&self, pos: usize) -> Id {
        let total = self.flags.len();
        if pos * 2 > total {
            let mut end = total;
            for r in self.runs.iter().rev() {
                let start = end - r.len as usize;
                if pos >= start {
                    return Id::new(r.peer, r.counter + (pos - start) as u64);
                }
                end = start;
            }
        }
        let mut start = 0;
        for r in &self.runs {
            let end = start + r.len as usize;
            if pos < end {
                return Id::new(r.peer, r.counter + (pos - start) as u64);
            }
            start = end;
        }
        panic!("slot {pos} is in its leaf")
    }

    /// The position of the slot named `id`, if it is here.
    fn find(&self, id: Id) -> Option<usize> {
        let mut start = 0;
        for r in &self.runs {
            if r.peer == id.peer && id.counter.wrapping_sub(r.counter) < u64::from(r.len) {
                return Some(start + (id.counter - r.counter) as usize);
            }
            start += r.len as usize;
        }
        None
    }

    /// Every id, in slot order.
    fn ids(&self) -> impl Iterator<Item = Id> + '_ {
        self.runs
            .iter()
            .flat_map(|r| (0..u64::from(r.len)).map(|k| Id::new(r.peer, r.counter + k)))
    }

    fn insert_id(&mut self, pos: usize, id: Id) {
        let Some((i, k)) = self.locate(pos) else {
            self.runs.push(Run::one(id));
            return;
        };
        let r = self.runs[i];
        if k == r.len {
            if r.continued_by(id) {
                self.runs[i].len += 1;
                // The gap between this run and the next may have closed.
                if let Some(&n) = self.runs.get(i + 1) {
                    if self.runs[i].continued_by(Id::new(n.peer, n.counter)) {
                        self.runs[i].len += n.len;
                        self.runs.remove(i + 1);
                    }
                }
            } else if let Some(n) = self
                .runs
                .get_mut(i + 1)
                .filter(|n| n.peer == id.peer && id.counter.checked_add(1) == Some(n.counter))
            {
                n.counter = id.counter;
                n.len += 1;
            } else {
                self.runs.insert(i + 1, Run::one(id));
            }
        } else if k == 0 {
            if r.peer == id.peer && id.counter.checked_add(1) == Some(r.counter) {
                self.runs[i].counter = id.counter;
                self.runs[i].len += 1;
            } else {
                self.runs.insert(i, Run::one(id));
            }
        } else {
            // Inside a run: split it around the new id.
            self.runs[i].len = k;
            let tail = Run {
                counter: r.counter + u64::from(k),
                peer: r.peer,
                len: r.len - k,
            };
            self.runs.insert(i + 1, tail);
            self.runs.insert(i + 1, Run::one(id));
        }
    }

    /// Where `big` holds the value of slot `pos`, if it does. The value
    /// column is not read otherwise: a purge's reads of it at scattered
    /// places were cache misses.
    #[inline]
    fn held_aside(&self, pos: usize) -> Option<u64> {
        (self.flags[pos] & KIND == BIG).then(|| self.bits[pos])
    }

    /// Drops the slots that are dead with epoch bit `epoch`, telling
    /// `gone` each one's id and where `big` holds its value, if it does.
    /// One walk over the runs edits those holding such slots and moves
    /// each stretch of runs between them once; another closes up the
    /// columns. Returns how many went.
    fn drop_dead(&mut self, epoch: u8, mut gone: impl FnMut(Id, Option<u64>)) -> usize {
        let mask = dead_mask(&self.flags, epoch);
        if mask == 0 {
            return 0;
        }
        // Runs before `read` are edited into `..write`; `start` is where
        // run `read` starts; `seam`: a slot just dropped may have left the
        // run before `write` continued by the next one kept.
        let (mut read, mut write, mut start) = (0, 0, 0);
        let mut seam = false;
        let mut left = mask;
        while left != 0 {
            let p = left.trailing_zeros();
            let from = read;
            while start + self.runs[read].len <= p {
                start += self.runs[read].len;
                read += 1;
            }
            write = self.keep_runs(from..read, write, seam);
            let r = self.runs[read];
            if r.len == 1 {
                // A slot inserted alone (typing and pushes make longer runs;
                // scattered inserts, these): the run goes whole.
                left &= left - 1;
                let at = p as usize;
                gone(Id::new(r.peer, r.counter), self.held_aside(at));
                seam = true;
                start += 1;
                read += 1;
                continue;
            }
            let drop = match r.len {
                64 => mask,
                n => (mask >> start) & ((1 << n) - 1),
            };
            left &= !(drop << start);
            // The stretches of `r` kept, each after the last one written.
            let mut pieces = [(0, 0); LEAF_MAX / 2];
            let mut count = 0;
            let mut k = 0;
            while k < r.len {
                let kept = (k + (drop >> k).trailing_zeros()).min(r.len);
                if kept > k {
                    pieces[count] = (k, kept);
                    count += 1;
                }
                k = kept;
                while k < r.len && (drop >> k) & 1 != 0 {
                    let at = (start + k) as usize;
                    let id = Id::new(r.peer, r.counter + u64::from(k));
                    gone(id, self.held_aside(at));
                    k += 1;
                }
            }
            // Room for pieces beyond the run's own place: the unread runs
            // shift right.
            let room = (write + count).saturating_sub(read + 1);
            if room != 0 {
                self.runs
                    .splice(read + 1..read + 1, std::iter::repeat_n(r, room));
                read += room;
            }
            for (i, &(a, b)) in pieces[..count].iter().enumerate() {
                let piece = Run {
                    counter: r.counter + u64::from(a),
                    peer: r.peer,
                    len: b - a,
                };
                write = self.put_run(write, piece, seam && i == 0);
            }
            seam = (drop >> (r.len - 1)) & 1 != 0;
            start += r.len;
            read += 1;
        }
        let end = self.runs.len();
        let write = self.keep_runs(read..end, write, seam);
        self.runs.truncate(write);
        // The columns: each stretch between two dropped slots moves once.
        let len = self.flags.len();
        let mut write = mask.trailing_zeros() as usize;
        let mut left = mask;
        while left != 0 {
            let p = left.trailing_zeros() as usize;
            left &= left - 1;
            let next = match left {
                0 => len,
                _ => left.trailing_zeros() as usize,
            };
            if next > p + 1 {
                self.flags.copy_within(p + 1..next, write);
                self.bits.copy_within(p + 1..next, write);
                write += next - p - 1;
            }
        }
        self.flags.truncate(write);
        self.bits.truncate(write);
        len - write
    }

    /// Moves the runs `from` to `write` and on (joined to the run before
    /// when `seam` and it continues it); returns where the next goes.
    fn keep_runs(&mut self, from: std::ops::Range<usize>, write: usize, seam: bool) -> usize {
        let Some(&first) = self.runs.get(from.start).filter(|_| !from.is_empty()) else {
            return write;
        };
        let write = self.put_run(write, first, seam);
        let rest = from.start + 1..from.end;
        if rest.start != write {
            self.runs.copy_within(rest.clone(), write);
        }
        write + rest.len()
    }

    /// Writes `r` at `write`, or adds it to the run before when `seam` and
    /// that run is continued by it; returns where the next goes.
    fn put_run(&mut self, write: usize, r: Run, seam: bool) -> usize {
        if seam && write > 0 && self.runs[write - 1].continued_by(Id::new(r.peer, r.counter)) {
            self.runs[write - 1].len += r.len;
            write
        } else {
            self.runs[write] = r;
            write + 1
        }
    }

    /// Checks that the columns agree; used by tests.
    #[cfg(any(test, feature = "sim"))]
    fn check(&self) {
        assert!(self.runs.iter().all(|r| r.len > 0), "no empty run");
        let n: usize = self.runs.iter().map(|r| r.len as usize).sum();
        assert_eq!(n, self.flags.len());
        assert_eq!(n, self.bits.len());
    }
}

/// Bit `i` set when slot `i` of a leaf is dead and stamped with `epoch`,
/// eight flag bytes at a time (a leaf holds at most 64 slots).
fn dead_mask(flags: &[u8], epoch: u8) -> u64 {
    const _: () = assert!(LEAF_MAX <= 64, "a leaf's slots fit a mask");
    debug_assert!(flags.len() <= 64);
    let mut chunks = flags.chunks_exact(8);
    let mut mask = 0;
    for (c, chunk) in chunks.by_ref().enumerate() {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        mask |= dead_byte(w, epoch) << (8 * c);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut bytes = [0; 8];
        bytes[..rest.len()].copy_from_slice(rest);
        mask |= dead_byte(u64::from_le_bytes(bytes), epoch) << (flags.len() / 8 * 8);
    }
    mask
}

/// Stamps every dead slot of a leaf with epoch bit `epoch`, eight flag
/// bytes at a time; returns how many there are.
fn stamp_dead(flags: &mut [u8], epoch: u8) -> u8 {
    const LOW: u64 = 0x0101_0101_0101_0101;
    let stamp = |w: u64| {
        let moved = w & LOW;
        let deleted = (w >> DELETED.trailing_zeros()) & LOW;
        let live = (w >> LIVE.trailing_zeros()) & LOW;
        let dead = ((moved & !live) | (!moved & deleted)) & LOW;
        let bit = dead << EPOCH.trailing_zeros();
        let w = match epoch {
            0 => w & !bit,
            _ => w | bit,
        };
        (w, dead.count_ones() as u8)
    };
    let mut n = 0;
    let mut chunks = flags.chunks_exact_mut(8);
    for chunk in chunks.by_ref() {
        let (w, k) = stamp(u64::from_le_bytes(
            (&*chunk).try_into().expect("eight bytes"),
        ));
        chunk.copy_from_slice(&w.to_le_bytes());
        n += k;
    }
    let rest = chunks.into_remainder();
    if !rest.is_empty() {
        // Zero bytes past the end are live home slots.
        let mut bytes = [0; 8];
        bytes[..rest.len()].copy_from_slice(rest);
        let (w, k) = stamp(u64::from_le_bytes(bytes));
        let len = rest.len();
        rest.copy_from_slice(&w.to_le_bytes()[..len]);
        n += k;
    }
    n
}

/// Bit `k` set when byte `k` of `w` is the flags of a slot dead and
/// stamped with `epoch` (a zero byte is a live home slot).
fn dead_byte(w: u64, epoch: u8) -> u64 {
    const LOW: u64 = 0x0101_0101_0101_0101;
    // Bit 0 of every byte: the flag of that slot (see `is_dead`).
    let moved = w & LOW;
    let deleted = (w >> DELETED.trailing_zeros()) & LOW;
    let live = (w >> LIVE.trailing_zeros()) & LOW;
    let stamped = (w >> EPOCH.trailing_zeros()) & LOW;
    let dead = (moved & !live) | (!moved & deleted);
    let ours = match epoch {
        0 => !stamped,
        _ => stamped,
    };
    // Gathers bit 0 of each byte into the top byte, byte k at bit k.
    (dead & ours & LOW).wrapping_mul(0x0102_0408_1020_4080) >> 56
}

impl Items for Slots {
    type Item = Stored;

    fn len(&self) -> usize {
        self.flags.len()
    }

    #[inline]
    fn is_visible(&self, pos: usize) -> bool {
        is_visible(self.flags[pos])
    }

    fn item_visible(item: &Stored) -> bool {
        is_visible(item.flags)
    }

    fn insert(&mut self, pos: usize, item: Stored) {
        if pos < self.flags.len() {
            self.insert_id(pos, item.id);
            self.flags.insert(pos, item.flags);
            self.bits.insert(pos, item.bits);
            return;
        }
        match self.runs.last_mut() {
            // An append that continues the last run: the common case.
            Some(last) if last.continued_by(item.id) => last.len += 1,
            _ => self.insert_id(pos, item.id),
        }
        self.flags.push(item.flags);
        self.bits.push(item.bits);
    }

    fn split_off(&mut self, at: usize, spare: usize) -> Self {
        // The runs first: `locate` reads the columns' length.
        let runs = match self.locate(at) {
            None => Vec::new(),
            Some((i, k)) if k == self.runs[i].len => self.runs.split_off(i + 1),
            Some((i, 0)) => self.runs.split_off(i),
            Some((i, k)) => {
                let r = self.runs[i];
                self.runs[i].len = k;
                let mut tail = Vec::with_capacity(self.runs.len() - i);
                tail.push(Run {
                    counter: r.counter + u64::from(k),
                    peer: r.peer,
                    len: r.len - k,
                });
                tail.extend(self.runs.drain(i + 1..));
                tail
            }
        };
        self.runs.shrink_to_fit();
        let n = self.len() - at;
        let mut flags = Vec::with_capacity(n + spare);
        flags.extend(self.flags.drain(at..));
        let mut bits = Vec::with_capacity(n + spare);
        bits.extend(self.bits.drain(at..));
        Slots { runs, flags, bits }
    }

    fn append(&mut self, other: Self) {
        self.flags.reserve_exact(other.flags.len());
        self.flags.extend(other.flags);
        self.bits.reserve_exact(other.bits.len());
        self.bits.extend(other.bits);
        let mut runs = other.runs.into_iter();
        if let (Some(last), Some(first)) = (self.runs.last_mut(), runs.as_slice().first()) {
            if last.continued_by(Id::new(first.peer, first.counter)) {
                last.len += first.len;
                runs.next();
            }
        }
        self.runs.extend(runs);
    }

    fn reserve_exact(&mut self, n: usize) {
        self.flags.reserve_exact(n);
        self.bits.reserve_exact(n);
    }

    fn capacity(&self) -> usize {
        self.bits.capacity()
    }

    fn shrink_to(&mut self, n: usize) {
        self.flags.shrink_to(n);
        self.bits.shrink_to(n);
    }

    fn visible_in(&self, range: std::ops::Range<usize>) -> u64 {
        self.flags[range].iter().filter(|&&f| is_visible(f)).count() as u64
    }

    /// A slot's lookup reads the ids, then its flags and value: on a large
    /// list each column is a cache miss. Prefetching each here (the values
    /// twice: an insert shifts their tail) starts the misses at once, where
    /// the lookup would take them one after another.
    #[inline]
    fn prefetch(&self) {
        use mem_prefetch::prefetch_read_data as fetch;
        if let Some(r) = self.runs.first() {
            fetch::<_, 3>(r);
        }
        if let Some(f) = self.flags.first() {
            fetch::<_, 3>(f);
        }
        if let Some(b) = self.bits.first() {
            fetch::<_, 3>(b);
        }
        if let Some(b) = self.bits.get(self.bits.len() / 2) {
            fetch::<_, 3>(b);
        }
    }
}

/// A set of leaves, a bit per leaf id; empty exactly when it has no words.
#[derive(Debug, Clone, Default)]
struct LeafSet(Vec<u64>);

impl LeafSet {
    fn insert(&mut self, leaf: LeafId) {
        let word = leaf as usize / 64;
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        self.0[word] |= 1 << (leaf % 64);
    }

    #[cfg(any(test, feature = "sim"))]
    fn contains(&self, leaf: LeafId) -> bool {
        self.0
            .get(leaf as usize / 64)
            .is_some_and(|w| w & (1 << (leaf % 64)) != 0)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn union(&mut self, other: &LeafSet) {
        if self.0.len() < other.0.len() {
            self.0.resize(other.0.len(), 0);
        }
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a |= b;
        }
    }

    /// The leaves for which `keep` holds.
    fn filter(&self, mut keep: impl FnMut(LeafId) -> bool) -> LeafSet {
        let mut out = LeafSet::default();
        for leaf in self.iter().filter(|&leaf| keep(leaf)) {
            out.insert(leaf);
        }
        out
    }

    /// Removes the leaves of `other`.
    fn remove_all(&mut self, other: &LeafSet) {
        for (a, b) in self.0.iter_mut().zip(&other.0) {
            *a &= !b;
        }
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    fn iter(&self) -> impl Iterator<Item = LeafId> + '_ {
        self.0
            .iter()
            .enumerate()
            .flat_map(|(i, &w)| Bits(w).map(move |bit| i as LeafId * 64 + bit))
    }
}

/// A leaf is taken for purging once it holds this many dead slots (or, when
/// no leaf does and no slot died since the last take, every leaf, so that a
/// list nobody edits any more ends up with none): the pass over its
/// columns, which costs about as much for one slot as for a few, is shared
/// by at least this many, and a leaf keeps fewer than this many dead slots
/// for long. While slots keep dying the others wait: taking every leaf at
/// each round then purged one or two slots a leaf, at the full cost of the
/// pass for each.
const READY: u8 = (LEAF_MAX / 4) as u8;

/// Where the dead slots waiting for reclamation are. A slot that dies is
/// stamped with the current [`EPOCH`] bit and its leaf noted in `pending`.
/// A round takes the leaves that gathered [`READY`] dead slots, stamping
/// all of them with the current bit, and flips the bit: a taken leaf is
/// then purged in one pass of the slots stamped with the old bit, and
/// slots that died after the take (the new bit) stay, with no slot looked
/// up one by one. A slot stamped with the old bit died before the latest
/// take, wherever it is; one stamped with the new bit may have died before
/// or after it (in a leaf that was not taken), so it waits. Splits and
/// merges note the leaves that dead slots move to.
#[derive(Debug, Clone, Default)]
struct Dead {
    /// The [`EPOCH`] bit of slots dying now (`0` or `EPOCH`).
    epoch: u8,
    /// Leaves that may hold dead slots no round took: every slot stamped
    /// with `epoch` is in one of them, and every other dead slot in one of
    /// them or of `taken`.
    pending: LeafSet,
    /// Leaves taken by a round, whose slots stamped with the other bit it
    /// purges.
    taken: LeafSet,
    /// By leaf, at least how many dead slots it holds (a split leaves the
    /// source's count exact, a merge leaves the freed leaf's as it was):
    /// a leaf with [`READY`] of them is never missed.
    counts: Vec<u8>,
    /// A slot died since the last take.
    fresh: bool,
}

fn count_mut(counts: &mut Vec<u8>, leaf: LeafId) -> &mut u8 {
    if leaf as usize >= counts.len() {
        counts.resize(leaf as usize + 1, 0);
    }
    &mut counts[leaf as usize]
}

/// What [`ListObj::take_dead`] took.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taken {
    /// No slot was dead.
    Nothing,
    /// Every dead slot.
    All,
    /// The leaves that had gathered enough dead slots; others wait.
    Some,
    /// Nothing: no leaf had gathered enough dead slots, and slots died
    /// since the last take, so more may join them; a later take looks
    /// again.
    Waiting,
}

impl Dead {
    fn count(&self, leaf: LeafId) -> u8 {
        self.counts.get(leaf as usize).copied().unwrap_or(0)
    }

    fn count_mut(&mut self, leaf: LeafId) -> &mut u8 {
        count_mut(&mut self.counts, leaf)
    }

    /// A slot of `leaf` died (stamped with `epoch`).
    fn killed(&mut self, leaf: LeafId) {
        self.fresh = true;
        self.pending.insert(leaf);
        let n = self.count_mut(leaf);
        *n = n.saturating_add(1);
    }

    /// `flags` (the slots of one leaf or part of it) went to `leaf`: a new
    /// leaf holding just them when `split`, else the end of a leaf (a
    /// merge). Notes it where they include dead slots, and returns how many
    /// do. Nothing to look at when no slot is dead (a list that only grows).
    fn note(&mut self, flags: &[u8], leaf: LeafId, split: bool) -> u8 {
        if self.pending.is_empty() && self.taken.is_empty() {
            if split && !self.counts.is_empty() {
                // A leaf id freed by a merge may be in use again.
                *self.count_mut(leaf) = 0;
            }
            return 0;
        }
        let (mut now, mut old, mut n) = (false, false, 0u8);
        for &f in flags {
            if is_dead(f) {
                n += 1;
                match f & EPOCH == self.epoch {
                    true => now = true,
                    false => old = true,
                }
            }
        }
        // Slots stamped with the old bit died before the take: the round
        // under way (if any) may purge them where they go.
        let round = !self.taken.is_empty();
        if old && round {
            self.taken.insert(leaf);
        }
        if now || (old && !round) {
            self.pending.insert(leaf);
        }
        let count = self.count_mut(leaf);
        *count = match split {
            true => n,
            false => count.saturating_add(n),
        };
        n
    }
}

/// A slot found by its visible index, and where it was: a local insert
/// after it or a delete of its element then needs no lookup in the id
/// index, which on a large list is a chain of cache misses (the index
/// page, the page's leaves, the leaf, its ids). Checked before use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Found {
    id: Id,
    at: Cursor,
}

impl Found {
    /// The slot, or for [`ListObj::elem_found_at`] the element.
    pub(crate) fn id(&self) -> Id {
        self.id
    }
}

/// Element state that differs from the defaults implied by its home slot
/// (value written by the insert, position at the home slot).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ElemExtra {
    pub(crate) value_stamp: Id,
    pub(crate) pos: Id,
    pub(crate) pos_stamp: Id,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct ListObj {
    tree: SeqTree<Slots>,
    /// Values that do not fit a slot.
    big: Big,
    /// Slot id to the leaf holding it.
    index: SlotIndex,
    /// Stamps and positions of moved or rewritten elements, by element.
    extra: IdMap<ElemExtra>,
    /// Bumped by every change; lets a caller detect that the list changed
    /// between a read and a write.
    version: u64,
    /// The slot inserted last and where it was put: the origin of the next
    /// insert when somebody types or pushes. Checked before use, since a
    /// split may have moved it.
    last: Option<(Id, Cursor)>,
    /// Where the slots that died and are not reclaimed yet are (a dead
    /// slot never lives again): reclamation finds them without scanning the
    /// list.
    dead: Dead,
    /// Live elements whose value references an object: a list without any
    /// is not walked when reachable objects are marked.
    refs: usize,
}

/// The version a list built from slots (a document loaded or transferred)
/// starts at: one no earlier list of this process took, so that a read of
/// the list this one replaces (same id, other contents) never compares
/// equal to it.
fn fresh_version() -> u64 {
    static BUILT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    BUILT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) << 32
}

fn is_ref(v: &Value) -> bool {
    matches!(v, Value::Ref(_))
}

/// Records every slot of `slots` as being in `leaf` (see [`Dead::note`]
/// for `split`); returns how many of them are dead.
fn file(index: &mut SlotIndex, dead: &mut Dead, slots: &Slots, leaf: LeafId, split: bool) -> u8 {
    for id in slots.ids() {
        index.insert(id, leaf);
    }
    dead.note(&slots.flags, leaf, split)
}

impl ListObj {
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn len(&self) -> usize {
        self.tree.visible_len()
    }

    pub(crate) fn slot_count(&self) -> usize {
        self.tree.len()
    }

    /// Where slot `id` is, if it is here; for [`ListObj::insert_placed`].
    pub(crate) fn find_slot(&self, id: Id) -> Option<Found> {
        // As in `has_slot`: the origin of a push is the slot inserted last.
        let at = self.last_cursor(id).or_else(|| self.cursor(id))?;
        Some(Found { id, at })
    }

    pub(crate) fn has_slot(&self, id: Id) -> bool {
        // The origin of a push or a typed character is the slot inserted
        // last: found without hashing.
        self.last_cursor(id).is_some() || self.index.contains(id)
    }

    /// Where a slot is: in the leaf the index names.
    fn cursor(&self, id: Id) -> Option<Cursor> {
        let leaf = self.index.get(id)?;
        let slots = self.tree.leaf_items(leaf);
        slots.prefetch();
        let pos = slots.find(id)?;
        Some(Cursor { leaf, pos })
    }

    fn flags(&self, c: Cursor) -> u8 {
        self.tree.leaf_items(c.leaf).flags[c.pos]
    }

    fn id(&self, c: Cursor) -> Id {
        self.tree.leaf_items(c.leaf).id(c.pos)
    }

    /// The value a home slot holds.
    fn value_at(&self, c: Cursor) -> Value {
        let slots = self.tree.leaf_items(c.leaf);
        unpack(slots.flags[c.pos], slots.bits[c.pos], &self.big)
    }

    /// The element occupying or owning the slot at `c`.
    fn elem(&self, c: Cursor) -> Id {
        let slots = self.tree.leaf_items(c.leaf);
        match slots.flags[c.pos] & MOVED {
            0 => slots.id(c.pos),
            _ => self.moved_elem(slots.bits[c.pos]),
        }
    }

    /// The element of a move slot whose value bits are `bits`.
    fn moved_elem(&self, bits: u64) -> Id {
        match self.big.get(bits) {
            Value::Ref(o) => o.0,
            other => unreachable!("a move slot names its element, not {other:?}"),
        }
    }

    /// Takes a home slot's value, leaving null.
    fn take_value(&mut self, c: Cursor) -> Value {
        let big = &mut self.big;
        self.tree.update(c, |s, p| {
            let (flags, bits) = (s.flags[p], s.bits[p]);
            s.flags[p] = flags & !KIND;
            s.bits[p] = 0;
            match flags & KIND {
                BIG => big.take(bits),
                _ => unpack(flags, bits, big),
            }
        })
    }

    /// Sets or clears `flag` of the slot at `c`, which dies by it (or died
    /// as it was made): stamps it for reclamation.
    fn kill(&mut self, c: Cursor, flag: u8, on: bool) {
        let epoch = self.dead.epoch;
        self.tree.update(c, |s, p| {
            let f = match on {
                true => s.flags[p] | flag,
                false => s.flags[p] & !flag,
            };
            s.flags[p] = (f & !EPOCH) | epoch;
        });
        self.dead.killed(c.leaf);
    }

    fn set_flag(&mut self, c: Cursor, flag: u8, on: bool) {
        self.tree.update(c, |s, p| {
            if on {
                s.flags[p] |= flag;
            } else {
                s.flags[p] &= !flag;
            }
        });
    }

    fn extra(&self, elem: Id) -> ElemExtra {
        self.extra.get(&elem).copied().unwrap_or(ElemExtra {
            value_stamp: elem,
            pos: elem,
            pos_stamp: elem,
        })
    }

    /// The visible slots in order: id, flags and value bits.
    fn visible(&self) -> impl Iterator<Item = (Id, u8, u64)> + '_ {
        self.all().filter(|&(_, f, _)| is_visible(f))
    }

    /// The element at a visible index.
    pub(crate) fn elem_at(&self, index: usize) -> Id {
        self.elem(self.tree.locate_visible(index))
    }

    /// The element at a visible index, and where its visible slot is.
    pub(crate) fn elem_found_at(&self, index: usize) -> Found {
        let at = self.tree.locate_visible(index);
        Found {
            id: self.elem(at),
            at,
        }
    }

    /// The slot at a visible index, and where it is.
    pub(crate) fn slot_found_at(&self, index: usize) -> Found {
        // A push names the last element: when that is the slot inserted
        // last and nothing follows it, no descent is needed.
        if let Some((id, at)) = self.last {
            if index + 1 == self.len()
                && self.holds_at(at, id)
                && is_visible(self.flags(at))
                && self.tree.next(at).is_none()
            {
                return Found { id, at };
            }
        }
        let at = self.tree.locate_visible(index);
        Found {
            id: self.id(at),
            at,
        }
    }

    /// The value of a live element.
    pub(crate) fn value_of(&self, elem: Id) -> Option<Value> {
        let c = self.cursor(elem)?;
        match self.flags(c) & (MOVED | DELETED) {
            0 => Some(self.value_at(c)),
            _ => None,
        }
    }

    pub(crate) fn get(&self, index: usize) -> Option<Value> {
        if index >= self.len() {
            return None;
        }
        self.value_of(self.elem_at(index))
    }

    /// The element and the value of a visible slot.
    fn visible_elem(&self, id: Id, flags: u8, bits: u64) -> (Id, Value) {
        match flags & MOVED {
            0 => (id, unpack(flags, bits, &self.big)),
            _ => {
                let elem = self.moved_elem(bits);
                let value = self
                    .value_of(elem)
                    .expect("a live move slot has a live element");
                (elem, value)
            }
        }
    }

    /// Visible values in order.
    pub(crate) fn values(&self) -> impl Iterator<Item = Value> + '_ {
        // No ids needed: a move slot names its element in its value.
        self.tree.leaves().flat_map(move |(_, s)| {
            s.flags
                .iter()
                .zip(&s.bits)
                .filter(|(f, _)| is_visible(**f))
                .map(move |(&f, &b)| match f & MOVED {
                    0 => unpack(f, b, &self.big),
                    _ => self
                        .value_of(self.moved_elem(b))
                        .expect("a live move slot has a live element"),
                })
        })
    }

    /// Visible elements in order, with their values and value stamps.
    pub(crate) fn elements(&self) -> impl Iterator<Item = (Id, Value, Id)> + '_ {
        self.visible().map(move |(id, f, b)| {
            let (elem, value) = self.visible_elem(id, f, b);
            (elem, value, self.extra(elem).value_stamp)
        })
    }

    /// The slot a live element occupies.
    pub(crate) fn position_of(&self, elem: Id) -> Option<Id> {
        let c = self.cursor(elem)?;
        let f = self.flags(c);
        match (f & MOVED != 0, f & DELETED != 0, f & AWAY != 0) {
            (true, _, _) | (false, false, true) => Some(self.extra(elem).pos),
            (false, true, _) => None,
            (false, false, false) => Some(elem),
        }
    }

    /// The stamp of a live element's value (its insert's, or its last
    /// set's).
    pub(crate) fn value_stamp_of(&self, elem: Id) -> Option<Id> {
        self.value_of(elem)?;
        Some(self.extra(elem).value_stamp)
    }

    /// The visible index of a slot, if it is visible (an element is there):
    /// a local insert or move names only such a slot as its origin.
    pub(crate) fn visible_slot_index(&self, slot: Id) -> Option<usize> {
        let c = self.cursor(slot)?;
        is_visible(self.flags(c)).then(|| self.tree.visible_index(c))
    }

    /// The visible index of a live element.
    pub(crate) fn index_of(&self, elem: Id) -> Option<usize> {
        let c = self.cursor(elem)?;
        let f = self.flags(c);
        match (f & MOVED != 0, f & DELETED != 0, f & AWAY != 0) {
            (false, true, _) => None,
            (false, false, false) => Some(self.tree.visible_index(c)),
            _ => {
                let pos = self.cursor(self.extra(elem).pos)?;
                Some(self.tree.visible_index(pos))
            }
        }
    }

    /// Whether `c`, a position kept from before, still holds slot `id`.
    #[inline]
    fn holds_at(&self, c: Cursor, id: Id) -> bool {
        self.tree.holds(c) && self.id(c) == id
    }

    /// The cursor of an insert's origin: at `hint` when it is still there.
    fn origin_cursor(&self, id: Id, hint: Option<Cursor>) -> Option<Cursor> {
        match hint {
            Some(c) if self.holds_at(c, id) => Some(c),
            _ => self.last_cursor(id).or_else(|| self.cursor(id)),
        }
    }

    /// Where `id` is when it is the slot inserted last and has not moved.
    #[inline]
    fn last_cursor(&self, id: Id) -> Option<Cursor> {
        match self.last {
            Some((last, c)) if last == id && self.holds_at(c, id) => Some(c),
            _ => None,
        }
    }

    /// Places `slot` after the slot at `prev` (`None`: at the head) by the
    /// RGA rule.
    fn integrate(&mut self, mut prev: Option<Cursor>, slot: Stored, peers: &Peers) -> Cursor {
        let mut next = match prev {
            Some(p) => self.tree.next(p),
            None => self.tree.first(),
        };
        while let Some(n) = next {
            if !peers.later(self.id(n), slot.id) {
                break;
            }
            prev = Some(n);
            next = self.tree.next(n);
        }
        let id = slot.id;
        self.version += 1;
        let (index, dead) = (&mut self.index, &mut self.dead);
        // A split moves slots from the leaf the slot goes to into a new one.
        let mut moved_dead = 0;
        let on_move = |s: &Slots, leaf: LeafId| moved_dead = file(index, dead, s, leaf, true);
        let c = match prev {
            Some(p) => self.tree.insert_after(p, slot, on_move),
            None => self.tree.insert_first(slot, on_move),
        };
        if moved_dead != 0 {
            // The leaf split is before the new one: the origin's, or the
            // first.
            let from = match prev {
                Some(p) => p.leaf,
                None => self.tree.first().expect("a leaf split").leaf,
            };
            let n = self.dead.count_mut(from);
            *n = n.saturating_sub(moved_dead);
        }
        self.index.insert(id, c.leaf);
        self.last = Some((id, c));
        c
    }

    /// Inserts elements with consecutive ids from `first` after `origin`.
    pub(crate) fn insert(
        &mut self,
        origin: Option<Id>,
        first: Id,
        values: impl IntoIterator<Item = Value>,
        peers: &Peers,
    ) {
        self.insert_hinted(origin, None, first, values, peers);
    }

    /// [`ListObj::insert`] after a slot found by its index.
    pub(crate) fn insert_found(
        &mut self,
        origin: Option<Found>,
        first: Id,
        values: impl IntoIterator<Item = Value>,
        peers: &Peers,
    ) {
        let (id, hint) = (origin.map(|f| f.id), origin.map(|f| f.at));
        self.insert_hinted(id, hint, first, values, peers);
    }

    fn insert_hinted(
        &mut self,
        origin: Option<Id>,
        hint: Option<Cursor>,
        first: Id,
        values: impl IntoIterator<Item = Value>,
        peers: &Peers,
    ) {
        let at = origin.map(|o| {
            self.origin_cursor(o, hint)
                .expect("origin checked by caller")
        });
        self.insert_at(at, first, values, peers);
    }

    /// [`ListObj::insert`] after a slot found by [`ListObj::find_slot`] or
    /// [`ListObj::slot_found_at`], the list unchanged since: its place
    /// needs no second look.
    pub(crate) fn insert_placed(
        &mut self,
        origin: Option<Found>,
        first: Id,
        values: impl IntoIterator<Item = Value>,
        peers: &Peers,
    ) {
        self.insert_at(origin.map(|f| f.at), first, values, peers);
    }

    /// Inserts after the slot at `prev`, each value after the one before:
    /// the cursor an insert returns is where the next one goes.
    fn insert_at(
        &mut self,
        mut prev: Option<Cursor>,
        first: Id,
        values: impl IntoIterator<Item = Value>,
        peers: &Peers,
    ) {
        for (i, value) in values.into_iter().enumerate() {
            let id = Id::new(first.peer, first.counter + i as u64);
            self.refs += usize::from(is_ref(&value));
            let slot = Stored::home(id, value, false, false, &mut self.big);
            prev = Some(self.integrate(prev, slot, peers));
        }
    }

    /// Deletes an element. Returns its old value when it was live (no
    /// index: finding it would climb the tree for nobody).
    pub(crate) fn delete(&mut self, elem: Id) -> Option<Value> {
        let home = self.cursor(elem)?;
        self.delete_at(elem, home)
    }

    /// [`ListObj::delete`] of an element found by its index.
    pub(crate) fn delete_found(&mut self, found: Found) -> Option<Value> {
        // A moved element's visible slot is not its home: that fails the
        // check and is looked up.
        let home = match found.at {
            c if self.holds_at(c, found.id) => c,
            _ => self.cursor(found.id)?,
        };
        self.delete_at(found.id, home)
    }

    /// Deletes `elem`, whose home slot is at `home`.
    fn delete_at(&mut self, elem: Id, home: Cursor) -> Option<Value> {
        let f = self.flags(home);
        if f & (MOVED | DELETED) != 0 {
            return None;
        }
        let away = f & AWAY != 0;
        let live = if away {
            self.cursor(self.extra(elem).pos)
                .expect("a moved element's slot exists")
        } else {
            home
        };
        self.version += 1;
        if away {
            self.kill(live, LIVE, false);
        }
        let old = self.take_value(home);
        self.kill(home, DELETED, true);
        self.refs -= usize::from(is_ref(&old));
        self.extra.remove(&elem);
        Some(old)
    }

    /// Writes an element's value if `stamp` wins. Returns the old value and
    /// the element's visible index when the visible value changed.
    pub(crate) fn set(
        &mut self,
        elem: Id,
        value: Value,
        stamp: Id,
        peers: &Peers,
    ) -> Option<(Value, usize)> {
        let home = self.cursor(elem)?;
        if self.flags(home) & (MOVED | DELETED) != 0 {
            return None;
        }
        let mut extra = self.extra(elem);
        if !peers.later(stamp, extra.value_stamp) {
            return None;
        }
        extra.value_stamp = stamp;
        self.extra.insert(elem, extra);
        self.version += 1;
        if self.value_at(home).same(&value) {
            return None;
        }
        let new_ref = is_ref(&value);
        let old = self.take_value(home);
        let (kind, bits) = pack(value, &mut self.big);
        self.tree.update(home, |s, p| {
            s.flags[p] |= kind;
            s.bits[p] = bits;
        });
        self.refs = self.refs + usize::from(new_ref) - usize::from(is_ref(&old));
        Some((old, self.index_of(elem).expect("live element")))
    }

    /// Moves an element to a new slot `slot` placed after `origin`, if the
    /// move wins. Returns whether the visible order changed.
    pub(crate) fn move_elem(
        &mut self,
        elem: Id,
        origin: Option<Id>,
        slot: Id,
        peers: &Peers,
    ) -> bool {
        let Some(home) = self.cursor(elem) else {
            return false;
        };
        let f = self.flags(home);
        if f & MOVED != 0 {
            return false;
        }
        let (deleted, away) = (f & DELETED != 0, f & AWAY != 0);
        let mut extra = self.extra(elem);
        let wins = !deleted && peers.later(slot, extra.pos_stamp);
        let moved = Stored::moved(slot, elem, false, &mut self.big);
        let at = origin.map(|o| {
            self.origin_cursor(o, None)
                .expect("origin checked by caller")
        });
        let new = self.integrate(at, moved, peers);
        if !wins {
            self.kill(new, LIVE, false);
            return false;
        }
        // Retire the old position, then light up the new one. The cursor of
        // the new slot may have shifted if the retirement touched its leaf;
        // visibility changes never move items, so it is still valid.
        if away {
            let old = self
                .cursor(extra.pos)
                .expect("a moved element's slot exists");
            self.kill(old, LIVE, false);
        }
        let home = self.cursor(elem).expect("home exists");
        self.set_flag(home, AWAY, true);
        let new = self.cursor(slot).unwrap_or(new);
        self.set_flag(new, LIVE, true);
        extra.pos = slot;
        extra.pos_stamp = slot;
        self.extra.insert(elem, extra);
        true
    }

    /// A slot as transferred.
    fn to_slot(&self, id: Id, flags: u8, bits: u64) -> Slot {
        let kind = match flags & MOVED {
            0 => SlotKind::Home {
                value: unpack(flags, bits, &self.big),
                deleted: flags & DELETED != 0,
                away: flags & AWAY != 0,
            },
            _ => SlotKind::Moved {
                elem: self.moved_elem(bits),
                live: flags & LIVE != 0,
            },
        };
        Slot { id, kind }
    }

    /// Every slot in sequence order: id, flags and value bits.
    fn all(&self) -> impl Iterator<Item = (Id, u8, u64)> + '_ {
        self.tree.leaves().flat_map(|(_, s)| {
            s.ids()
                .zip(s.flags.iter().zip(&s.bits))
                .map(|(id, (&f, &b))| (id, f, b))
        })
    }

    /// All slots in sequence order with the element state they carry, for
    /// state transfer.
    pub(crate) fn slots(&self) -> impl Iterator<Item = (Slot, Option<ElemExtra>)> + '_ {
        self.all().map(move |(id, flags, bits)| {
            let extra = match flags & MOVED {
                0 => self.extra.get(&id).copied(),
                _ => None,
            };
            (self.to_slot(id, flags, bits), extra)
        })
    }

    /// Rebuilds a list from transferred slots in sequence order; `None` when
    /// two slots have the same id.
    pub(crate) fn from_slots(
        slots: impl IntoIterator<Item = (Slot, Option<ElemExtra>)>,
    ) -> Option<Self> {
        let mut extra = IdMap::default();
        let mut big = Big::default();
        let mut refs = 0;
        let items = slots.into_iter().map(|(slot, e)| {
            if let Some(e) = e {
                extra.insert(slot.id, e);
            }
            if let SlotKind::Home {
                value: Value::Ref(_),
                deleted: false,
                ..
            } = &slot.kind
            {
                refs += 1;
            }
            Stored::from_slot(slot, &mut big)
        });
        let mut index = SlotIndex::default();
        // Slots are made with the epoch bit clear, a new list's own.
        let mut dead = Dead::default();
        let mut unique = true;
        let tree = SeqTree::from_items(items, |s: &Slots, leaf| {
            for r in &s.runs {
                unique &= !index.insert_run(Id::new(r.peer, r.counter), r.len, leaf);
            }
            let n = s.flags.iter().filter(|&&f| is_dead(f)).count();
            if n != 0 {
                dead.pending.insert(leaf);
                *dead.count_mut(leaf) = n as u8;
            }
        });
        if !unique {
            return None;
        }
        Some(ListObj {
            tree,
            big,
            index,
            extra,
            version: fresh_version(),
            last: None,
            dead,
            refs,
        })
    }

    /// Slots that no element can come back to: move slots that are not
    /// current and home slots of deleted elements. Scans the whole list.
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn dead_slots(&self) -> Vec<Id> {
        self.all()
            .filter(|&(_, f, _)| is_dead(f))
            .map(|(id, _, _)| id)
            .collect()
    }

    /// Every dead slot, with its leaf and whether a purge now would drop
    /// it. Scans the whole list.
    #[cfg(test)]
    fn dead_by_leaf(&self) -> Vec<(Id, LeafId, bool)> {
        let old = self.dead.epoch ^ EPOCH;
        let mut out = Vec::new();
        for (leaf, s) in self.tree.leaves() {
            for (id, &f) in s.ids().zip(&s.flags) {
                if is_dead(f) {
                    let purged = f & EPOCH == old && self.dead.taken.contains(leaf);
                    out.push((id, leaf, purged));
                }
            }
        }
        out
    }

    /// Takes dead slots for a round to purge once nobody can name them:
    /// those of the leaves that gathered [`READY`] of them, or when none
    /// did, none while slots keep dying and all of them once they stop.
    // Out of line, as `purge`: once a round, and a profile then counts
    // reclamation by function.
    #[inline(never)]
    pub(crate) fn take_dead(&mut self) -> Taken {
        if !self.dead.taken.is_empty() {
            // Taken by a round that is gone: two takes must not share a bit.
            self.restore_dead();
        }
        let dead = &mut self.dead;
        if dead.pending.is_empty() {
            return Taken::Nothing;
        }
        let ready = dead.pending.filter(|leaf| dead.count(leaf) >= READY);
        let fresh = std::mem::take(&mut dead.fresh);
        let taken = match (ready.is_empty(), fresh) {
            (true, true) => return Taken::Waiting,
            (true, false) => Taken::All,
            (false, _) => Taken::Some,
        };
        dead.taken = match taken {
            Taken::All => std::mem::take(&mut dead.pending),
            _ => {
                dead.pending.remove_all(&ready);
                ready
            }
        };
        // Every slot dead now died before the take, including those a
        // take that passed their leaf by left stamped with the bit that is
        // about to be current again.
        let now = dead.epoch;
        let leaves: Vec<LeafId> = dead.taken.iter().collect();
        for (i, &leaf) in leaves.iter().enumerate() {
            self.tree.read_ahead(&leaves, i);
            let n = self
                .tree
                .edit_invisible(leaf, |s| stamp_dead(&mut s.flags, now));
            *count_mut(&mut dead.counts, leaf) = n;
        }
        dead.epoch ^= EPOCH;
        taken
    }

    /// Gives back the dead slots taken and not purged, for a later take
    /// (which stamps them again).
    pub(crate) fn restore_dead(&mut self) {
        let taken = std::mem::take(&mut self.dead.taken);
        self.dead.pending.union(&taken);
    }

    /// Whether some live element references an object.
    pub(crate) fn has_refs(&self) -> bool {
        self.refs != 0
    }

    /// Drops the slots taken by [`ListObj::take_dead`]. Only their leaves
    /// change, each in one pass: the rest of the tree and of the id index
    /// stays as it is.
    #[inline(never)]
    pub(crate) fn purge(&mut self) {
        let taken = std::mem::take(&mut self.dead.taken);
        let old = self.dead.epoch ^ EPOCH;
        let big = &mut self.big;
        let mut touched = Vec::new();
        let mut ids = Vec::new();
        let leaves: Vec<LeafId> = taken.iter().collect();
        for (i, &leaf) in leaves.iter().enumerate() {
            self.tree.read_ahead(&leaves, i);
            let gone = self.tree.edit_invisible(leaf, |s| {
                s.drop_dead(old, |id, aside| {
                    ids.push(id);
                    if let Some(at) = aside {
                        big.take(at);
                    }
                })
            });
            let n = self.dead.count_mut(leaf);
            *n = n.saturating_sub(gone as u8);
            if gone != 0 {
                touched.push(leaf);
            }
        }
        self.index.remove_all(&mut ids);
        // Merges move slots between leaves, so they wait until every taken
        // leaf is purged. A larger leaf cannot merge: spare it the look.
        for leaf in touched {
            if self.tree.leaf_items(leaf).len() <= MERGE_MAX {
                let (index, dead) = (&mut self.index, &mut self.dead);
                self.tree.rebalance(leaf, |s: &Slots, to| {
                    file(index, dead, s, to, false);
                });
            }
        }
    }

    /// Whether transferred element state is coherent: every live move slot
    /// is its element's position, every moved live element's position is a
    /// live move slot naming it, and deleted elements hold no value.
    pub(crate) fn is_consistent(&self) -> bool {
        self.all().all(|(id, f, bits)| {
            let moved = f & MOVED != 0;
            if moved {
                let live = f & LIVE != 0;
                let elem = match self.big.get(bits) {
                    Value::Ref(o) => o.0,
                    _ => return false,
                };
                let Some(home) = self.cursor(elem) else {
                    // The element was purged; its dead move slots may remain.
                    return !live;
                };
                let hf = self.flags(home);
                if hf & MOVED != 0 {
                    return false;
                }
                !live || (hf & DELETED == 0 && hf & AWAY != 0 && self.extra(elem).pos == id)
            } else if f & DELETED != 0 {
                f & KIND == NULL
            } else if f & AWAY != 0 {
                let pos = self.extra(id).pos;
                pos != id
                    && self.cursor(pos).is_some_and(|c| {
                        let pf = self.flags(c);
                        pf & MOVED != 0 && pf & LIVE != 0 && self.elem(c) == id
                    })
            } else {
                self.extra(id).pos == id
            }
        })
    }

    /// Checks internal consistency; used by tests.
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn check(&self) {
        self.tree.check();
        assert_eq!(self.index.len(), self.tree.len(), "every slot indexed");
        let refs = self
            .all()
            .filter(|&(_, f, b)| f & DELETED == 0 && holds_ref(f, b, &self.big))
            .count();
        assert_eq!(refs, self.refs, "references counted");
        let big = self.all().filter(|&(_, f, _)| f & KIND == BIG).count();
        assert_eq!(big, self.big.len(), "side table entries in use");
        for (leaf, s) in self.tree.leaves() {
            s.check();
            for (pos, id) in s.ids().enumerate() {
                assert_eq!(
                    self.cursor(id),
                    Some(Cursor { leaf, pos }),
                    "slot {id:?} is found where it is"
                );
            }
            for &f in &s.flags {
                if is_dead(f) {
                    let taken = self.dead.taken.contains(leaf);
                    match f & EPOCH == self.dead.epoch {
                        true => assert!(self.dead.pending.contains(leaf), "a dead slot is pending"),
                        false => assert!(
                            taken || self.dead.pending.contains(leaf),
                            "a dead slot is pending or taken"
                        ),
                    }
                }
            }
            let dead = s.flags.iter().filter(|&&f| is_dead(f)).count();
            assert!(
                usize::from(self.dead.count(leaf)) >= dead,
                "a leaf's dead slots are counted"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{PeerId, PeerIdx};

    /// The mask of dead slots agrees with `is_dead` for every flag byte, at
    /// every place of a leaf.
    #[test]
    fn dead_masks_match_the_flags() {
        for epoch in [0, EPOCH] {
            for f in 0..=u8::MAX {
                for len in [1, 7, 8, 9, 44, 64] {
                    for at in [0, len / 2, len - 1] {
                        let mut flags = vec![MOVED | LIVE | (!epoch & EPOCH); len];
                        flags[at] = f;
                        let want = is_dead(f) && f & EPOCH == epoch;
                        assert_eq!(dead_mask(&flags, epoch), u64::from(want) << at, "{f:#x}");
                    }
                }
            }
        }
    }

    /// Stamping marks exactly the dead slots, and counts them.
    #[test]
    fn stamping_marks_the_dead_slots() {
        for epoch in [0, EPOCH] {
            for f in 0..=u8::MAX {
                for len in [1, 7, 8, 9, 44, 64] {
                    let mut flags = vec![MOVED | LIVE | (!epoch & EPOCH); len];
                    let at = len / 2;
                    flags[at] = f;
                    let n = stamp_dead(&mut flags, epoch);
                    assert_eq!(n, u8::from(is_dead(f)), "{f:#x}");
                    let want = match is_dead(f) {
                        true => (f & !EPOCH) | epoch,
                        false => f,
                    };
                    assert_eq!(flags[at], want, "{f:#x}");
                    assert!(
                        flags
                            .iter()
                            .enumerate()
                            .all(|(i, &g)| i == at || g == MOVED | LIVE | (!epoch & EPOCH))
                    );
                }
            }
        }
    }

    #[test]
    fn twice_present_ids_are_refused_even_when_covered() {
        let home = |c| {
            let kind = SlotKind::Home {
                value: Value::Null,
                deleted: false,
                away: false,
            };
            let id = Id::new(PeerIdx(0), c);
            (Slot { id, kind }, None)
        };
        let slots = |cs: &[u64]| cs.iter().map(|&c| home(c)).collect::<Vec<_>>();
        assert!(ListObj::from_slots(slots(&[5, 6, 4, 5, 6])).is_none());
        assert!(ListObj::from_slots(slots(&[5, 6, 6])).is_none());
        assert!(ListObj::from_slots(slots(&[5, 6, 9, 4, 7])).is_some());
    }

    /// A purge drops the slots dead at the take, wherever splits moved
    /// them, and keeps those that died after it, in the same leaves; slots
    /// given back are taken by the next take.
    #[test]
    fn a_purge_drops_what_was_taken_and_keeps_later_deaths() {
        let peers = Peers::new(PeerId::new("a", 1));
        let id = |c| Id::new(PeerIdx(0), c);
        let mut list = ListObj::default();
        assert_eq!(take(&mut list), Taken::Nothing, "nothing died");
        list.insert(None, id(1), (1..=60).map(Value::Int), &peers);
        list.delete(id(51)).unwrap();
        assert_eq!(list.take_dead(), Taken::Waiting, "slots are dying");
        assert_eq!(list.take_dead(), Taken::All, "none died since");
        list.delete(id(52)).unwrap();
        // Inserts at the head fill the leaf and split it: the back half,
        // both dead slots with it, moves to a new leaf.
        for c in 100..110 {
            list.insert(None, id(c), [Value::Int(0)], &peers);
        }
        list.check();
        list.purge();
        list.check();
        assert!(!list.has_slot(id(51)));
        assert!(list.has_slot(id(52)), "died after the take");
        assert_eq!(list.slot_count(), 69);
        // Taken, given back, and taken again with a later death.
        assert_eq!(take(&mut list), Taken::All);
        list.delete(id(53)).unwrap();
        list.restore_dead();
        list.check();
        list.delete(id(54)).unwrap();
        assert_eq!(take(&mut list), Taken::All);
        list.delete(id(55)).unwrap();
        list.purge();
        list.check();
        assert!((52..=54).all(|c| !list.has_slot(id(c))));
        assert!(list.has_slot(id(55)));
        assert_eq!(list.slot_count(), 66);
        assert_eq!(list.len(), 65);
    }

    /// Purges of many slots scattered over a list of two peers' slots
    /// (whose ids leave the index in a batch, in bucket order) leave every
    /// live slot found, in order, and no dead one.
    #[test]
    fn large_purges_leave_the_index_exact() {
        let mut peers = Peers::new(PeerId::new("a", 1));
        peers.intern(&PeerId::new("b", 2)).unwrap();
        let mut rand = crate::graph::tests::xorshift(7);
        let mut list = ListObj::default();
        let mut order: Vec<Id> = Vec::new();
        for c in 1..=4000u64 {
            let at = rand(order.len() as u64 + 1) as usize;
            let origin = at.checked_sub(1).map(|i| order[i]);
            let id = Id::new(PeerIdx(rand(2) as u32), c);
            list.insert(origin, id, [Value::Int(c as i64)], &peers);
            order.insert(at, id);
        }
        let mut dead = Vec::new();
        for _ in 0..1500 {
            let i = rand(order.len() as u64) as usize;
            if list.delete(order[i]).is_some() {
                dead.push(order[i]);
            }
        }
        let mut purges = 0;
        while take(&mut list) != Taken::Nothing {
            list.purge();
            list.check();
            purges += 1;
        }
        assert!(purges >= 1);
        assert!(dead.iter().all(|&id| !list.has_slot(id)));
        let live: Vec<Id> = order.into_iter().filter(|id| !dead.contains(id)).collect();
        assert!(live.iter().all(|&id| list.has_slot(id)));
        assert_eq!(list.slot_count(), live.len());
        let values: Vec<Value> = list.values().collect();
        let expected: Vec<Value> = live
            .iter()
            .map(|id| Value::Int(id.counter as i64))
            .collect();
        assert_eq!(values, expected);
    }

    /// Takes as a round would once slots stop dying: a take that waits
    /// for more deaths is followed by one that finds none.
    fn take(list: &mut ListObj) -> Taken {
        match list.take_dead() {
            Taken::Waiting => list.take_dead(),
            taken => taken,
        }
    }

    /// What a take took, given every dead slot after it (its leaf and
    /// whether a purge would drop it): all of them, or every dead slot of
    /// the leaves that gathered [`READY`] and none of the others.
    fn check_take(taken: Taken, dead: &[(Id, LeafId, bool)], seed: u64) {
        let in_leaf = |leaf| dead.iter().filter(move |d| d.1 == leaf);
        for &(id, leaf, purged) in dead {
            match taken {
                Taken::Nothing => unreachable!("seed {seed}: {id:?} is dead"),
                Taken::Waiting => assert!(!purged, "seed {seed}: {id:?} waits"),
                Taken::All => assert!(purged, "seed {seed}: {id:?} is taken"),
                Taken::Some => {
                    let n = in_leaf(leaf).count();
                    assert_eq!(purged, n >= usize::from(READY), "seed {seed}: {id:?}, {n}");
                    assert!(in_leaf(leaf).all(|d| d.2 == purged), "seed {seed}: {id:?}");
                }
            }
        }
    }

    /// Leaves with few dead slots wait while others have gathered enough;
    /// when none has, every dead slot goes once no slot died since the
    /// last take.
    #[test]
    fn a_leaf_is_purged_once_it_has_gathered_enough_dead_slots() {
        let peers = Peers::new(PeerId::new("a", 1));
        let id = |c| Id::new(PeerIdx(0), c);
        let mut list = ListObj::default();
        // Appends fill leaves of LEAF_MAX slots: 1..=64, 65..=128, ...
        list.insert(None, id(1), (1..=256).map(Value::Int), &peers);
        for c in (1..=u64::from(READY)).chain([70, 71, 200]) {
            list.delete(id(c)).unwrap();
        }
        list.check();
        assert_eq!(take(&mut list), Taken::Some);
        list.check();
        list.purge();
        list.check();
        assert_eq!(list.slot_count(), 256 - usize::from(READY));
        assert!([70, 71, 200].iter().all(|&c| list.has_slot(id(c))));
        // A death after the take stays for the next one.
        assert_eq!(take(&mut list), Taken::All);
        list.delete(id(100)).unwrap();
        list.purge();
        list.check();
        assert!(list.has_slot(id(100)));
        assert_eq!(take(&mut list), Taken::All);
        list.purge();
        list.check();
        assert_eq!(list.slot_count(), list.len());
        assert_eq!(take(&mut list), Taken::Nothing);
    }

    /// Runs of consecutive ids inserted anywhere (so leaves split inside
    /// runs and runs cross index strides), from two peers, with deletes and
    /// purges: every slot is found where it is, nothing absent is found, and
    /// the order is the model's.
    #[test]
    fn slots_are_found_through_runs_splits_and_purges() {
        let mut peers = Peers::new(PeerId::new("a", 1));
        peers.intern(&PeerId::new("b", 2)).unwrap();
        for seed in 1..120u64 {
            let mut rand = crate::graph::tests::xorshift(seed);
            let mut list = ListObj::default();
            // Every slot in order: id, whether its element is live,
            // whether a take took it, and whether it was dead at the take.
            let mut model: Vec<(Id, bool, bool, bool)> = Vec::new();
            let mut counter = 0;
            for _ in 0..150 {
                match rand(10) {
                    0..=5 => {
                        let long = rand(3) == 0;
                        let n = 1 + rand(if long { 40 } else { 3 });
                        let at = if rand(2) == 0 {
                            model.len()
                        } else {
                            rand(model.len() as u64 + 1) as usize
                        };
                        let origin = at.checked_sub(1).map(|i| model[i].0);
                        let first = Id::new(PeerIdx(rand(2) as u32), counter + 1);
                        counter += n + rand(2);
                        let values = (0..n).map(|i| Value::Int((first.counter + i) as i64));
                        list.insert(origin, first, values, &peers);
                        let ids = (0..n)
                            .map(|i| (Id::new(first.peer, first.counter + i), true, false, false));
                        model.splice(at..at, ids);
                    }
                    6..=8 => {
                        let live: Vec<usize> = (0..model.len()).filter(|&i| model[i].1).collect();
                        if let Some(&i) = live.get(rand(live.len() as u64) as usize) {
                            assert!(list.delete(model[i].0).is_some(), "seed {seed}");
                            model[i].1 = false;
                        }
                    }
                    _ => {
                        // Take, purge what was taken, or give it back;
                        // inserts and deletes between take and purge move
                        // taken slots and add later deaths to their leaves.
                        match rand(3) {
                            0 => {
                                let taken = list.take_dead();
                                let any_dead = model.iter().any(|s| !s.1);
                                assert_eq!(taken != Taken::Nothing, any_dead, "seed {seed}");
                                let dead = list.dead_by_leaf();
                                check_take(taken, &dead, seed);
                                for s in &mut model {
                                    s.2 = dead.iter().any(|d| d.0 == s.0 && d.2);
                                    s.3 = !s.1;
                                    assert!(!s.2 || s.3, "seed {seed}: only dead slots go");
                                }
                            }
                            1 => {
                                // What was taken goes, and so may other slots
                                // dead at the take that a split moved to a
                                // taken leaf; nothing else.
                                list.purge();
                                for s in &model {
                                    let gone = !list.has_slot(s.0);
                                    assert!(!s.2 || gone, "seed {seed}: {:?} taken", s.0);
                                    assert!(!gone || s.3, "seed {seed}: {:?} went", s.0);
                                }
                                model.retain(|s| list.has_slot(s.0));
                            }
                            _ => {
                                list.restore_dead();
                                for s in &mut model {
                                    (s.2, s.3) = (false, false);
                                }
                            }
                        }
                        assert_eq!(list.slot_count(), model.len(), "seed {seed}");
                    }
                }
                list.check();
                let values: Vec<i64> = list
                    .values()
                    .map(|v| match v {
                        Value::Int(i) => i,
                        other => panic!("seed {seed}: {other:?}"),
                    })
                    .collect();
                let expected: Vec<i64> = model
                    .iter()
                    .filter(|s| s.1)
                    .map(|s| s.0.counter as i64)
                    .collect();
                assert_eq!(values, expected, "seed {seed}");
                for peer in 0..2 {
                    let absent = Id::new(PeerIdx(peer), counter + 1 + rand(20));
                    assert!(!list.has_slot(absent), "seed {seed}: {absent:?}");
                }
            }
        }
    }
}
