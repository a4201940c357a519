//! The diff of a [`Tree`] against the store: the writes that make the store
//! hold the tree, following the rules below (which make the usual edits
//! cost what they change, without searching for the fewest writes),
//! planned without writing, then applied as one group.
//!
//! The rules (documented on `crate::typed`):
//! - a struct writes only the fields that differ and never touches keys the
//!   struct does not declare; an absent field (`None`) deletes its key, and a
//!   key holding `Null` counts as absent;
//! - a map makes its key set equal: extra keys are deleted, new ones set,
//!   common ones diffed; after a read (`update`), only the keys the value
//!   read held are deleted, and an entry it held, left as read, is not
//!   written though its key is not stored (another key read as it);
//! - an enum variant with data is diffed in place when the stored map reads
//!   as the same variant, and replaced whole otherwise (so that two nodes
//!   switching variants at once cannot merge into a map of two variants);
//!   a map of several variant keys (switches through the enum's own
//!   object merged) reads as the first, whose diff deletes the others;
//! - an array keeps its longest common prefix and suffix; in the middle,
//!   elements equal to new items are kept and moved into the new order,
//!   the rest paired within each gap between kept neighbours by an
//!   alignment of most likeness and diffed in place, the difference
//!   deleted or inserted ([`Differ::list`], [`Differ::pair`]): a push, a
//!   pop, an insert or a removal anywhere, or a change of one element
//!   costs one write, a reorder moves elements instead of rewriting them,
//!   and a change never pairs across a kept element (it never buys a
//!   move);
//! - a scalar that differs, or a value whose kind differs, is rewritten in
//!   its parent slot (a new object when the value is a map or an array). An
//!   integer in the store holds a float of the tree as [`Numbers`] says.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use facsimile_core::{
    IdKeys, Input as CoreInput, ObjectId, ObjectKind, Planned, Replica, Value as CoreValue,
};
use rustc_hash::{FxHashMap, FxHasher};
use smol_str::SmolStr;

use super::de::MAX_DEPTH;
use super::error::{ConvError, Seg, pointer};
use super::ser::Tree;
use crate::error::{EngineError, Error};

/// One planned write.
#[derive(Debug)]
pub(crate) enum Write {
    Root(CoreInput),
    Set(ObjectId, SmolStr, CoreInput),
    Delete(ObjectId, SmolStr),
    SetElems(ObjectId, Vec<(usize, CoreInput)>),
    Splice(ObjectId, usize, usize, Vec<CoreInput>),
    /// [`Replica::list_reorder`], and what stands for its moves in
    /// [`Replica::check_room`] ([`move_room`]).
    Reorder(ObjectId, Vec<usize>, Vec<(usize, CoreInput)>),
}

impl Write {
    /// The write as the engine plans it ([`Replica::check_room`]).
    fn planned(&self) -> Planned<'_> {
        match self {
            Write::Root(input) => Planned::Root(input),
            Write::Set(o, k, input) => Planned::MapSet(*o, k, input),
            Write::Delete(o, k) => Planned::MapDelete(*o, k),
            Write::SetElems(o, writes) => Planned::ListSetMany(*o, writes),
            Write::Splice(o, start, delete, items) => {
                Planned::ListSplice(*o, *start, *delete, items)
            }
            Write::Reorder(o, _, room) => Planned::ListSetMany(*o, room),
        }
    }

    fn target(&self) -> Option<ObjectId> {
        match self {
            Write::Root(_) => None,
            Write::Set(o, ..)
            | Write::Delete(o, _)
            | Write::SetElems(o, _)
            | Write::Splice(o, ..)
            | Write::Reorder(o, ..) => Some(*o),
        }
    }
}

/// The writes that make the store hold a tree, computed from the store as
/// it is, before any of them is applied. [`Plan::validate`] checks them
/// together before the first is applied, so that applying them changes
/// all or nothing.
#[derive(Default, Debug)]
pub(crate) struct Plan {
    pub(crate) writes: Vec<Write>,
}

impl Plan {
    /// The existing objects the plan writes to, each once.
    pub(crate) fn targets(&self) -> Vec<ObjectId> {
        let mut seen = std::collections::HashSet::new();
        self.writes
            .iter()
            .filter_map(Write::target)
            .filter(|o| seen.insert(*o))
            .collect()
    }

    /// The writes as the engine plans them ([`Replica::check_room`]).
    pub(crate) fn planned(&self) -> impl Iterator<Item = Planned<'_>> {
        self.writes.iter().map(Write::planned)
    }

    /// Checks that every write applies after those before it: each index
    /// within its array as the writes before leave its length, and each
    /// reorder a permutation of that length. An array is written by one
    /// diff of it only (a shared object is diffed once,
    /// [`Differ::revisit`]), so this holds by construction; checked all
    /// the same, because a plan refused halfway would leave the writes
    /// before the refusal made and sent.
    ///
    /// # Errors
    /// [`EngineError::IndexOutOfBounds`] or [`EngineError::BadPermutation`]
    /// for a write that would not apply.
    pub(crate) fn validate(&self, r: &Replica) -> Result<(), EngineError> {
        let mut lens: HashMap<ObjectId, usize, IdKeys> = HashMap::default();
        for w in &self.writes {
            if let Write::Reorder(o, order, _) = w {
                let len = match lens.get(o) {
                    Some(&len) => len,
                    None => r.list_len(*o)?,
                };
                let mut seen = vec![false; len];
                if order.len() != len
                    || order
                        .iter()
                        .any(|&i| i >= len || std::mem::replace(&mut seen[i], true))
                {
                    return Err(EngineError::BadPermutation { object: *o, len });
                }
                continue;
            }
            let (o, index, delete, inserted) = match w {
                Write::SetElems(o, writes) => {
                    let last = writes.iter().map(|(i, _)| *i).max();
                    match last {
                        Some(i) => (*o, i, 1, 1),
                        None => continue,
                    }
                }
                Write::Splice(o, start, delete, items) => (*o, *start, *delete, items.len()),
                _ => continue,
            };
            let len = match lens.get(&o) {
                Some(&len) => len,
                None => r.list_len(o)?,
            };
            if index.checked_add(delete).is_none_or(|end| end > len) {
                return Err(EngineError::IndexOutOfBounds {
                    object: o,
                    index,
                    len,
                });
            }
            let after = match w {
                Write::Splice(..) => len - delete + inserted,
                _ => len,
            };
            lens.insert(o, after);
        }
        Ok(())
    }

    /// Applies the writes. Call inside one `begin`/`commit` group so they
    /// form one message, after [`Plan::validate`] and the engine's checks
    /// of the whole plan.
    pub(crate) fn apply(self, r: &mut Replica) -> Result<(), facsimile_core::Error> {
        for w in self.writes {
            match w {
                Write::Root(input) => {
                    r.set_root(input)?;
                }
                Write::Set(o, k, input) => {
                    r.map_set(o, &k, input)?;
                }
                Write::Delete(o, k) => {
                    r.map_delete(o, &k)?;
                }
                Write::SetElems(o, writes) => {
                    r.list_set_many(o, writes)?;
                }
                Write::Splice(o, start, delete, items) => {
                    r.list_splice(o, start, delete, items)?;
                }
                Write::Reorder(o, order, _) => {
                    r.list_reorder(o, &order)?;
                }
            }
        }
        Ok(())
    }
}

/// Where the diff starts.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Target {
    /// The root, which may be replaced.
    Root,
    /// An existing object, which keeps its identity: the tree must be of its
    /// kind.
    Object(ObjectId),
}

/// Plans the writes that make `target` hold `tree`. Nothing is written.
/// `old`: the tree of the value the caller read and changed, when its read
/// went through `deserialize_any` ([`super::de::ReadSet::buffered`]): a
/// struct written into a map deletes the keys the old value's struct
/// there declared and it does not (the fields of an untagged or
/// internally tagged enum's variant it left), where keys neither
/// declares stay.
///
/// An object reached more than once (a shared reference) is diffed once:
/// the copies the tree leaves as the store holds them write nothing, and
/// copies changed in two different ways are refused ([`Differ::revisit`]).
pub(crate) fn plan(
    r: &mut Replica,
    target: Target,
    tree: Tree,
    old: Option<&Tree>,
    numbers: Numbers,
) -> Result<Plan, Error> {
    let start = match target {
        Target::Root => r.root(),
        Target::Object(o) => CoreValue::Ref(o),
    };
    let mut declared = Declared::default();
    if let Some(old) = old {
        declared_keys(r, &start, old, &mut declared, 0);
    }
    let tree = match target {
        Target::Root => tree,
        Target::Object(o) => {
            let kind = r
                .kind(o)
                .ok_or(Error::from(EngineError::UnknownObject(o)))?;
            // The object keeps its identity, so a variant is written into it
            // as the map it is, not replaced.
            let tree = match tree {
                Tree::Variant(name, t) => Tree::Map(vec![(SmolStr::new_static(name), *t)]),
                t => t,
            };
            let fits = matches!(
                (kind, &tree),
                (ObjectKind::Map, Tree::Map(_) | Tree::Struct(_))
                    | (ObjectKind::Array, Tree::Seq(_))
            );
            if !fits {
                return Err(Error::Type {
                    path: String::new(),
                    expected: match kind {
                        ObjectKind::Map => "a value that serializes as a map (a struct or a map)",
                        ObjectKind::Array => "a value that serializes as an array",
                    }
                    .to_string(),
                    found: tree.describe().to_string(),
                });
            }
            tree
        }
    };
    let mut d = Differ {
        r,
        plan: Plan::default(),
        depth: 0,
        declared,
        numbers,
        visits: HashMap::default(),
        start: start.clone(),
        top: &tree,
        shared: None,
    };
    let slot = d.diff(&start, &tree)?;
    match (target, slot) {
        (_, None) => {}
        (Target::Root, Some(input)) => d.plan.writes.push(Write::Root(input)),
        // Unreachable by the check above; refuse rather than lose the
        // object's identity.
        (Target::Object(_), Some(_)) => {
            return Err(Error::Convert {
                path: String::new(),
                message: "the value cannot be written into this object".into(),
            });
        }
    }
    Ok(d.plan)
}

struct Differ<'a, 't> {
    r: &'a mut Replica,
    plan: Plan,
    depth: usize,
    /// What the old value declared, for [`plan`].
    declared: Declared<'t>,
    numbers: Numbers,
    /// Each object diffed in place so far, with the tree it was diffed
    /// against ([`Differ::revisit`]).
    visits: HashMap<ObjectId, &'t Tree, IdKeys>,
    /// Where the diff started, and its tree: to name the places of a
    /// shared object in an error.
    start: CoreValue,
    top: &'t Tree,
    /// The objects reached more than once from `start`, once asked
    /// ([`Differ::shared`]).
    shared: Option<HashSet<ObjectId, IdKeys>>,
}

/// What the value read declared ([`declared_keys`]).
#[derive(Default)]
pub(crate) struct Declared<'o> {
    /// The fields each map's struct declared.
    keys: HashMap<ObjectId, Vec<&'static str>, IdKeys>,
    /// The value read of each field absent from its map.
    defaulted: HashMap<(ObjectId, &'static str), &'o Tree>,
    /// The entries each map read as a map held, as the value read wrote
    /// them back: a stored key that is not among them did not read back
    /// as itself (a key type of its own), and is left alone.
    entries: HashMap<ObjectId, HashMap<&'o str, &'o Tree>, IdKeys>,
}

/// The fields each stored map's struct declared in `old`, the tree of a
/// value read from `cur`: the two are walked together, a struct's fields
/// by key, a sequence's items by index.
fn declared_keys<'o>(
    r: &Replica,
    cur: &CoreValue,
    old: &'o Tree,
    out: &mut Declared<'o>,
    depth: usize,
) {
    let Some(o) = cur.as_ref_id() else { return };
    if depth > MAX_DEPTH {
        return;
    }
    let below = |key: &str, t: &'o Tree, out: &mut Declared<'o>| {
        if let Ok(Some(v)) = r.map_get(o, key) {
            declared_keys(r, &v, t, out, depth + 1);
        }
    };
    match (r.kind(o), old) {
        (Some(ObjectKind::Map), Tree::Struct(fields)) => {
            out.keys
                .entry(o)
                .or_default()
                .extend(fields.iter().map(|(k, _)| *k));
            for (k, t) in fields {
                match r.map_get(o, k) {
                    // A field the type filled in (a default): the value
                    // read, to tell it unchanged.
                    Ok(None) if !matches!(t, Tree::Absent) => {
                        out.defaulted.insert((o, k), t);
                    }
                    _ => below(k, t, out),
                }
            }
        }
        (Some(ObjectKind::Map), Tree::Map(entries)) => {
            out.entries
                .entry(o)
                .or_default()
                .extend(entries.iter().map(|(k, t)| (k.as_str(), t)));
            for (k, t) in entries {
                below(k, t, out);
            }
        }
        (Some(ObjectKind::Map), Tree::Variant(name, t)) => below(name, t, out),
        (Some(ObjectKind::Array), Tree::Seq(items)) => {
            let values = r.list_values(o).unwrap_or_default();
            for (v, t) in values.iter().zip(items) {
                declared_keys(r, v, t, out, depth + 1);
            }
        }
        _ => {}
    }
}

/// How a stored number is compared with a float of the tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Numbers {
    /// By value, exactly: an integer holds a float only when the float is
    /// that integer (not `-0.0` for `0`, not `2^53` for `2^53 + 1`). For
    /// `set_from`, which read nothing.
    Exact,
    /// As a typed read gives them: an integer holds the float that reading
    /// it as a float returns (rounded where the float cannot hold it), bit
    /// for bit. For `update`, whose value was read from the store: a float
    /// field left as it was read sends nothing, even where the read
    /// rounded, so that a no-op update never rewrites an integer as a
    /// float, while `-0.0` over `0` is a change and is written.
    AsRead,
}

/// Whether the integer `i` is the float `f`, exactly.
fn int_is(i: i64, f: f64) -> bool {
    let g = i as f64;
    g.to_bits() == f.to_bits() && g as i128 == i128::from(i)
}

/// Whether the stored scalar `cur` already holds the tree scalar `new`.
fn scalar_matches(cur: &CoreValue, new: &CoreValue, numbers: Numbers) -> bool {
    match (cur, new, numbers) {
        (CoreValue::Int(i), CoreValue::Float(f), Numbers::Exact) => int_is(*i, *f),
        (CoreValue::Int(i), CoreValue::Float(f), Numbers::AsRead) => {
            (*i as f64).to_bits() == f.to_bits()
        }
        _ => cur.same(new),
    }
}

/// Whether the stored scalar `cur` already holds the `f32` `new`. As read
/// ([`Numbers::AsRead`]): it reads as that `f32` (a float narrowed, or an
/// integer), bit for bit, so that an `f32` field written back unchanged
/// sends nothing though the `f32` widened is not the float stored.
/// Exactly: it is the `f32` widened.
fn single_matches(cur: &CoreValue, new: f32, numbers: Numbers) -> bool {
    match (cur, numbers) {
        (CoreValue::Float(f), Numbers::AsRead) => (*f as f32).to_bits() == new.to_bits(),
        (CoreValue::Int(i), Numbers::AsRead) => (*i as f32).to_bits() == new.to_bits(),
        (CoreValue::Float(f), Numbers::Exact) => f.to_bits() == f64::from(new).to_bits(),
        (CoreValue::Int(i), Numbers::Exact) => int_is(*i, new.into()),
        _ => false,
    }
}

/// Map entries sorted by key (each key is there once: the serializer kept
/// the last of a key serialized twice).
fn sorted(entries: &[(SmolStr, Tree)]) -> Vec<&(SmolStr, Tree)> {
    let mut entries: Vec<&(SmolStr, Tree)> = entries.iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    entries
}

/// What stands for the moves of a reorder in [`Replica::check_room`],
/// which plans no reorder: for each move, a list write whose bound, ids
/// and weight are each at least a move's (a bare operation naming two
/// elements) in either wire format, so that a plan the check passes is
/// never refused halfway for its moves.
fn move_room(o: ObjectId, moves: usize) -> Vec<(usize, CoreInput)> {
    let named = || CoreInput::Array(vec![CoreInput::Value(CoreValue::Ref(o))]);
    (0..moves).map(|_| (0, named())).collect()
}

/// The length of the longest increasing subsequence of `order`: the
/// elements [`Replica::list_reorder`] leaves in place.
fn longest_increasing(order: &[usize]) -> usize {
    let mut tails: Vec<usize> = Vec::new();
    for &x in order {
        let at = tails.partition_point(|&t| t < x);
        match tails.get_mut(at) {
            Some(t) => *t = x,
            None => tails.push(x),
        }
    }
    tails.len()
}

/// The likeness evaluations [`Differ::pair`] may spend on one array: at
/// least this many, and four per element and item of its middle. For a
/// middle of 10^5 elements and as many items that is 8·10^5 evaluations,
/// each an equality test per field, as many as [`Differ::matches`] may
/// spend on deep comparisons; the alignment keeps a byte per evaluation
/// (0.8 MB) and two rows of worths.
const MAX_PAIRS: usize = 1024;

/// How alike a stored element is to an item ([`Differ::likeness`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Alike {
    /// The fields, entries or items already equal.
    equal: u64,
    /// For each of those in a struct or a tuple, how many fields it comes
    /// before the end: at equal likeness, the element alike in its first
    /// fields, where a struct usually names what it is (an id, a name).
    early: u64,
}

impl Alike {
    fn add(&mut self, early: usize) {
        self.equal += 1;
        self.early += early as u64;
    }
}

/// What an alignment of a gap is worth, compared field by field: its
/// total likeness first, then its pairs (a pair with nothing alike is an
/// element changed in place: one write for a one-field change, where a
/// delete and an insert take two and new objects), then how early the
/// likeness lies, then how many pairs are in order from the first (so
/// that an element never paired does not shift the pairs after it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
struct Worth {
    alike: u64,
    pairs: u64,
    early: u64,
    straight: u64,
}

impl Worth {
    fn with(self, a: Alike, straight: bool) -> Worth {
        Worth {
            alike: self.alike + a.equal,
            pairs: self.pairs + 1,
            early: self.early + a.early,
            straight: self.straight + u64::from(straight),
        }
    }
}

/// How [`Differ::pair`] aligns a gap of `a` elements and `b` items
/// within what is left of the budget.
#[derive(Debug, PartialEq, Eq)]
enum Reach {
    /// Every pair: `a·b` evaluations.
    Full,
    /// The pairs whose offset (element less item) lies in this range: the
    /// offsets an alignment pairing every item (or every element) takes,
    /// and one more either way (an element and an item both left out),
    /// about `(|a - b| + 3)·min(a, b)` evaluations. A gap every element of
    /// which changed beside a removal is aligned exactly in about `4n`.
    Band(isize, isize),
    /// In order, no evaluation.
    Fallback,
}

impl Reach {
    fn of(a: usize, b: usize, budget: usize) -> Reach {
        if a.saturating_mul(b) <= budget {
            return Reach::Full;
        }
        let d = a as isize - b as isize;
        let (lo, hi) = (d.min(0) - 1, d.max(0) + 1);
        let cells = ((hi - lo + 1) as usize).saturating_mul(a.min(b));
        if cells <= budget {
            Reach::Band(lo, hi)
        } else {
            Reach::Fallback
        }
    }
}

/// The pairing of `a` elements and `b` items, each in order, that crosses
/// no other and is worth the most ([`Worth`]), among the pairs whose
/// offset `x - y` lies in `band` (which holds 0); `worth(x, y)` is asked
/// once for each (`None`: never paired). At equal worth the leftmost
/// pairs win, so that with nothing alike `min(a, b)` elements and items
/// pair in order from the first. Returns `(element, item)` pairs in
/// order.
///
/// A table over suffixes: the best worth of elements `x..` and items
/// `y..` is that of pairing `x` with `y` and aligning the rest, or of
/// leaving out element `x`, or item `y`; a choice per cell is kept and
/// followed from the start.
fn align(
    a: usize,
    b: usize,
    (lo, hi): (isize, isize),
    mut worth: impl FnMut(usize, usize) -> Option<Alike>,
) -> Vec<(usize, usize)> {
    const PAIR: u8 = 0;
    const SKIP_ELEMENT: u8 = 1;
    const SKIP_ITEM: u8 = 2;
    if a == 0 || b == 0 {
        return Vec::new();
    }
    // The elements of row `y` in the band.
    let span = |y: usize| {
        let first = (y as isize + lo).max(0) as usize;
        let last = ((y as isize + hi) as usize).min(a - 1);
        first..last + 1
    };
    let mut starts = Vec::with_capacity(b + 1);
    let mut cells = 0;
    for y in 0..b {
        starts.push(cells);
        cells += span(y).len();
    }
    let mut choices = vec![PAIR; cells];
    // Worths of rows `y` and `y + 1`, by element; outside the band, and
    // past the last element or item, nothing more is paired.
    let mut row = vec![Worth::default(); a + 1];
    let mut below = vec![Worth::default(); a + 1];
    for y in (0..b).rev() {
        let xs = span(y);
        let below_xs = if y + 1 < b { span(y + 1) } else { 0..0 };
        let at = |xs: &std::ops::Range<usize>, v: &[Worth], x: usize| {
            if xs.contains(&x) {
                v[x]
            } else {
                Worth::default()
            }
        };
        for x in xs.clone().rev() {
            let mut best = at(&xs, &row, x + 1);
            let mut choice = SKIP_ELEMENT;
            let skip_item = at(&below_xs, &below, x);
            if skip_item > best {
                (best, choice) = (skip_item, SKIP_ITEM);
            }
            if let Some(alike) = worth(x, y) {
                let pair = at(&below_xs, &below, x + 1).with(alike, x == y);
                if pair >= best {
                    (best, choice) = (pair, PAIR);
                }
            }
            row[x] = best;
            choices[starts[y] + x - xs.start] = choice;
        }
        std::mem::swap(&mut row, &mut below);
    }
    let mut out = Vec::new();
    let (mut x, mut y) = (0, 0);
    while y < b {
        let xs = span(y);
        if !xs.contains(&x) {
            break;
        }
        match choices[starts[y] + x - xs.start] {
            PAIR => {
                out.push((x, y));
                x += 1;
                y += 1;
            }
            SKIP_ELEMENT => x += 1,
            _ => y += 1,
        }
    }
    out
}

/// The objects reached more than once from `start` through map values and
/// array elements: one walk, which does not go below an object reached
/// before (what lies only below a shared object is reached once, through
/// it).
fn reached_twice(r: &mut Replica, start: &CoreValue) -> HashSet<ObjectId, IdKeys> {
    let mut seen: HashSet<ObjectId, IdKeys> = HashSet::default();
    let mut twice = HashSet::default();
    let mut todo: Vec<ObjectId> = start.as_ref_id().into_iter().collect();
    seen.extend(todo.iter().copied());
    let mut below = Vec::new();
    while let Some(o) = todo.pop() {
        below.clear();
        let _ = match r.kind(o) {
            Some(ObjectKind::Map) => r.map_for_each(o, |_, v, _| below.extend(v.as_ref_id())),
            Some(ObjectKind::Array) => r.list_for_each(o, |v, _| below.extend(v.as_ref_id())),
            None => Ok(()),
        };
        for &c in &below {
            if seen.insert(c) {
                todo.push(c);
            } else {
                twice.insert(c);
            }
        }
    }
    twice
}

/// How deep signatures look into maps: below, a map is only a map.
const SIG_DEPTH: usize = 3;
// Signature tags.
const NULL: u8 = 0;
const BOOL: u8 = 1;
const NUMBER: u8 = 2;
const STR: u8 = 3;
const BYTES: u8 = 4;
const SINGLE: u8 = 5;
const STRUCT: u8 = 6;
const VARIANT: u8 = 7;
const SEQ: u8 = 8;
const MAP: u8 = 9;
const DEEP_MAP: u8 = 10;
const OBJECT: u8 = 11;
/// A stored value that is not of the shape: no tree's signature.
const MISMATCH: u8 = 12;

/// The structure of a tree that [`tree_sig`] and [`Differ::store_sig`]
/// follow: struct fields and variant names down to [`SIG_DEPTH`], and
/// which leaves are `f32`s.
fn shape(t: &Tree, h: &mut FxHasher, depth: usize) {
    match t {
        Tree::Scalar(_) | Tree::Absent => h.write_u8(NULL),
        Tree::Single(_) => h.write_u8(SINGLE),
        Tree::Seq(_) => h.write_u8(SEQ),
        Tree::Map(_) => h.write_u8(MAP),
        _ if depth >= SIG_DEPTH => h.write_u8(DEEP_MAP),
        Tree::Struct(fields) => {
            h.write_u8(STRUCT);
            h.write_usize(fields.len());
            for (k, t) in fields {
                k.hash(h);
                shape(t, h, depth + 1);
            }
        }
        Tree::Variant(name, t) => {
            h.write_u8(VARIANT);
            name.hash(h);
            shape(t, h, depth + 1);
        }
    }
}

/// The signature of a tree ([`Differ::sig`]).
fn tree_sig(t: &Tree, h: &mut FxHasher, depth: usize) {
    match t {
        Tree::Scalar(v) => scalar_sig(v, h),
        Tree::Absent => scalar_sig(&CoreValue::Null, h),
        Tree::Single(v) => single_sig(*v, h),
        Tree::Seq(items) => seq_sig(items.len(), h),
        Tree::Map(entries) => map_sig(entries.iter().map(|(k, _)| k.as_str()), h),
        _ if depth >= SIG_DEPTH => h.write_u8(DEEP_MAP),
        Tree::Struct(fields) => {
            h.write_u8(STRUCT);
            for (_, t) in fields {
                tree_sig(t, h, depth + 1);
            }
        }
        Tree::Variant(_, t) => {
            h.write_u8(VARIANT);
            tree_sig(t, h, depth + 1);
        }
    }
}

/// A scalar's signature: numbers by their value as a float, bit for bit,
/// which both ways of comparing them ([`Numbers`]) require to be equal.
fn scalar_sig(v: &CoreValue, h: &mut FxHasher) {
    match v {
        CoreValue::Null => h.write_u8(NULL),
        CoreValue::Bool(b) => {
            h.write_u8(BOOL);
            h.write_u8(u8::from(*b));
        }
        CoreValue::Int(i) => {
            h.write_u8(NUMBER);
            h.write_u64((*i as f64).to_bits());
        }
        CoreValue::Float(f) => {
            h.write_u8(NUMBER);
            h.write_u64(f.to_bits());
        }
        CoreValue::Str(s) => {
            h.write_u8(STR);
            s.hash(h);
        }
        CoreValue::Bytes(b) => {
            h.write_u8(BYTES);
            b.hash(h);
        }
        CoreValue::Ref(_) => h.write_u8(OBJECT),
    }
}

fn single_sig(v: f32, h: &mut FxHasher) {
    h.write_u8(SINGLE);
    h.write_u32(v.to_bits());
}

fn seq_sig(len: usize, h: &mut FxHasher) {
    h.write_u8(SEQ);
    h.write_usize(len);
}

/// A map's signature: its keys, in any order.
fn map_sig<'k>(keys: impl Iterator<Item = &'k str>, h: &mut FxHasher) {
    let (mut n, mut sum) = (0usize, 0u64);
    for k in keys {
        let mut kh = FxHasher::default();
        k.hash(&mut kh);
        sum = sum.wrapping_add(kh.finish());
        n += 1;
    }
    h.write_u8(MAP);
    h.write_usize(n);
    h.write_u64(sum);
}

impl<'t> Differ<'_, 't> {
    fn map_kind(&self, v: &CoreValue) -> Option<(ObjectId, ObjectKind)> {
        let o = v.as_ref_id()?;
        Some((o, self.r.kind(o)?))
    }

    /// The variant the map `o` reads as: its one key, or of several
    /// (concurrent switches merged), the first in byte order, as a typed
    /// read takes it. A read refuses a map with a key that is none of the
    /// enum's variants, so only `set_from`, which reads nothing, meets one
    /// here, and writes the variant's map as it is serialized, one key.
    fn variant(&mut self, o: ObjectId) -> Option<SmolStr> {
        self.r.map_keys(o).ok()?.into_iter().next()
    }

    fn get(&mut self, o: ObjectId, key: &str) -> Result<Option<CoreValue>, ConvError> {
        self.r
            .map_get(o, key)
            .map_err(|e| ConvError::store(e.into()))
    }

    fn descend(&mut self) -> Result<(), ConvError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ConvError::message(format!(
                "values nested deeper than {MAX_DEPTH} levels cannot be written as a type"
            )));
        }
        Ok(())
    }

    /// Diffs `new` against the stored `cur`, planning writes inside `cur`'s
    /// objects. Returns the input to write in `cur`'s slot when the slot
    /// itself must change.
    fn diff(&mut self, cur: &CoreValue, new: &'t Tree) -> Result<Option<CoreInput>, ConvError> {
        self.descend()?;
        let out = match (self.map_kind(cur), new) {
            (Some((o, ObjectKind::Map)), Tree::Struct(fields)) => {
                if !self.revisit(o, cur, new)? {
                    self.fields(o, fields)?;
                }
                None
            }
            (Some((o, ObjectKind::Map)), Tree::Map(entries)) => {
                if !self.revisit(o, cur, new)? {
                    self.entries(o, entries)?;
                }
                None
            }
            (Some((o, ObjectKind::Map)), Tree::Variant(name, t)) => {
                // Sorted: the first is the variant the map reads as.
                let keys = self.r.map_keys(o).unwrap_or_default();
                let same = keys.first().map(SmolStr::as_str) == Some(*name);
                match self.get(o, name)? {
                    Some(v) if same => {
                        if !self.revisit(o, cur, new)? {
                            // The keys of other variants a concurrent switch
                            // left (they read as this one).
                            for k in keys.into_iter().skip(1) {
                                self.plan.writes.push(Write::Delete(o, k));
                            }
                            if let Some(input) = self.diff(&v, t).map_err(|e| e.at_key(name))? {
                                self.plan.writes.push(Write::Set(
                                    o,
                                    SmolStr::new_static(name),
                                    input,
                                ));
                            }
                        }
                        None
                    }
                    _ => Some(new.to_input()),
                }
            }
            (Some((o, ObjectKind::Array)), Tree::Seq(items)) => {
                if !self.revisit(o, cur, new)? {
                    self.list(o, items)?;
                }
                None
            }
            (_, Tree::Scalar(v)) => {
                (!scalar_matches(cur, v, self.numbers)).then(|| CoreInput::Value(v.clone()))
            }
            (_, Tree::Single(v)) => {
                (!single_matches(cur, *v, self.numbers)).then(|| new.to_input())
            }
            (_, t) => Some(t.to_input()),
        };
        self.depth -= 1;
        Ok(out)
    }

    /// Whether to leave the object `o` (stored as `cur`) alone for `new`,
    /// because it was diffed already: reached through another reference
    /// (shared objects are read as copies). Diffing it twice would plan
    /// two sets of writes from the same stored state (two pushes for one,
    /// or indexes the first set's writes shift). So the copy the tree
    /// leaves as stored writes nothing, copies changed alike are one
    /// change, and copies changed differently are refused: no value makes
    /// both hold.
    fn revisit(&mut self, o: ObjectId, cur: &CoreValue, new: &'t Tree) -> Result<bool, ConvError> {
        let Some(&first) = self.visits.get(&o) else {
            self.visits.insert(o, new);
            return Ok(false);
        };
        if first.same(new) || self.equal(cur, new) {
            return Ok(true);
        }
        // The first copy was left as stored, so its diff planned nothing:
        // this one is the change.
        if self.equal(cur, first) {
            self.visits.insert(o, new);
            return Ok(false);
        }
        Err(ConvError::message(format!(
            "one object is reached at {} (a shared reference), and its copies were \
             changed differently: change one copy, or all of them alike",
            self.places(o).join(" and ")
        )))
    }

    /// The places (JSON pointers) where the tree reaches the object `o`,
    /// walking the tree and the store together: a few, for an error.
    fn places(&self, o: ObjectId) -> Vec<String> {
        let mut out = Vec::new();
        self.find(&self.start, self.top, o, &mut Vec::new(), &mut out);
        out
    }

    fn find(
        &self,
        cur: &CoreValue,
        t: &Tree,
        o: ObjectId,
        path: &mut Vec<Seg>,
        out: &mut Vec<String>,
    ) {
        let Some(id) = cur.as_ref_id() else { return };
        if out.len() >= 4 || path.len() > MAX_DEPTH {
            return;
        }
        if id == o {
            out.push(pointer(path.iter()));
            return;
        }
        let mut below = |key: &str, t: &Tree, out: &mut Vec<String>| {
            if let Ok(Some(v)) = self.r.map_get(id, key) {
                path.push(Seg::Key(key.into()));
                self.find(&v, t, o, path, out);
                path.pop();
            }
        };
        match (self.r.kind(id), t) {
            (Some(ObjectKind::Map), Tree::Struct(fields)) => {
                fields.iter().for_each(|(k, t)| below(k, t, out));
            }
            (Some(ObjectKind::Map), Tree::Map(entries)) => {
                entries.iter().for_each(|(k, t)| below(k, t, out));
            }
            (Some(ObjectKind::Map), Tree::Variant(name, t)) => below(name, t, out),
            (Some(ObjectKind::Array), Tree::Seq(items)) => {
                let values = self.r.list_values(id).unwrap_or_default();
                for (i, (v, t)) in values.iter().zip(items).enumerate() {
                    path.push(Seg::Index(i));
                    self.find(v, t, o, path, out);
                    path.pop();
                }
            }
            _ => {}
        }
    }

    fn fields(&mut self, o: ObjectId, fields: &'t [(&'static str, Tree)]) -> Result<(), ConvError> {
        if let Some(mut old) = self.declared.keys.remove(&o) {
            old.sort_unstable();
            old.dedup();
            for k in old {
                if !fields.iter().any(|(f, _)| *f == k) && self.get(o, k)?.is_some() {
                    self.plan
                        .writes
                        .push(Write::Delete(o, SmolStr::new_static(k)));
                }
            }
        }
        for (k, t) in fields {
            let cur = self.get(o, k)?;
            let key = SmolStr::new_static(k);
            match (cur, t) {
                (None | Some(CoreValue::Null), Tree::Absent) => {}
                (Some(_), Tree::Absent) => self.plan.writes.push(Write::Delete(o, key)),
                // Absent when read, and what the type filled in is
                // unchanged: nothing to write (a write would overwrite
                // another node's concurrent one).
                (None, t) if self.defaulted(o, k, t) => {}
                (None, t) => self.plan.writes.push(Write::Set(o, key, t.to_input())),
                (Some(v), t) => {
                    if let Some(input) = self.diff(&v, t).map_err(|e| e.at_key(k))? {
                        self.plan.writes.push(Write::Set(o, key, input));
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the field `k`, absent from the map `o`, was read as `t` (a
    /// default the type filled in, left as it was).
    fn defaulted(&self, o: ObjectId, k: &'static str, t: &Tree) -> bool {
        self.declared
            .defaulted
            .get(&(o, k))
            .is_some_and(|read| read.same(t))
    }

    fn entries(&mut self, o: ObjectId, entries: &'t [(SmolStr, Tree)]) -> Result<(), ConvError> {
        let stored = self
            .r
            .map_entries(o)
            .map_err(|e| ConvError::store(e.into()))?;
        // Taken while the diff below borrows `self`, and put back (an
        // object reached twice).
        let read = self.declared.entries.remove(&o);
        // Both sides sorted by key: a merge join.
        let mut new = sorted(entries).into_iter().peekable();
        let mut old = stored.into_iter().peekable();
        loop {
            let order = match (old.peek(), new.peek()) {
                (None, None) => break,
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (Some((a, _)), Some((b, _))) => a.cmp(b),
            };
            match order {
                std::cmp::Ordering::Less => {
                    let (k, _) = old.next().expect("peeked");
                    // Only what the value read held is removed.
                    if read
                        .as_ref()
                        .is_none_or(|read| read.contains_key(k.as_str()))
                    {
                        self.plan.writes.push(Write::Delete(o, k));
                    }
                }
                std::cmp::Ordering::Greater => {
                    let (k, t) = new.next().expect("peeked");
                    // An entry the value read held though its key is not
                    // stored (another key read as it), left as read.
                    let as_read = read
                        .as_ref()
                        .and_then(|read| read.get(k.as_str()))
                        .is_some_and(|read| read.same(t));
                    if !as_read {
                        self.plan
                            .writes
                            .push(Write::Set(o, k.clone(), t.to_input()));
                    }
                }
                std::cmp::Ordering::Equal => {
                    let (_, v) = old.next().expect("peeked");
                    let (k, t) = new.next().expect("peeked");
                    if let Some(input) = self.diff(&v, t).map_err(|e| e.at_key(k))? {
                        self.plan.writes.push(Write::Set(o, k.clone(), input));
                    }
                }
            }
        }
        if let Some(read) = read {
            self.declared.entries.insert(o, read);
        }
        Ok(())
    }

    /// Diffs an array. Its longest common prefix and suffix stay; in the
    /// middle, each new item equal to an old element keeps that element
    /// (equal ones in their order), the items and elements left are
    /// paired by likeness ([`Differ::pair`]) and each pair diffed in
    /// place, and then the elements no item keeps are deleted, the kept
    /// ones moved into the new order ([`Replica::list_reorder`], which
    /// moves only those outside the longest run already in order), and
    /// the items that keep none inserted. A sort or a rotation therefore
    /// moves elements, and a changed element is written between the kept
    /// neighbours it had, which keeps their identity: another node's
    /// concurrent edit of an element stays with it, where rewriting each
    /// position with its new value would land it on whatever element took
    /// that position.
    fn list(&mut self, o: ObjectId, items: &'t [Tree]) -> Result<(), ConvError> {
        let old = self
            .r
            .list_values(o)
            .map_err(|e| ConvError::store(e.into()))?;
        let (n, m) = (old.len(), items.len());
        let mut prefix = 0;
        while prefix < n.min(m) && self.equal(&old[prefix], &items[prefix]) {
            prefix += 1;
        }
        let mut suffix = 0;
        while suffix < n.min(m) - prefix && self.equal(&old[n - 1 - suffix], &items[m - 1 - suffix])
        {
            suffix += 1;
        }
        let (old_end, new_end) = (n - suffix, m - suffix);
        // For each new item of the middle, the old element it keeps.
        let mut source: Vec<Option<usize>> = self
            .matches(&old[prefix..old_end], &items[prefix..new_end])
            .into_iter()
            .map(|i| i.map(|i| prefix + i))
            .collect();
        let mut kept = vec![false; n];
        for &i in source.iter().flatten() {
            kept[i] = true;
        }
        let pairs = self.pair(&old, items, prefix, (old_end, new_end), &source, &kept);
        let mut sets = Vec::new();
        for (j, i) in pairs {
            source[j] = Some(i);
            kept[i] = true;
            let at = prefix + j;
            if let Some(input) = self.diff(&old[i], &items[at]).map_err(|e| e.at_index(at))? {
                sets.push((i, input));
            }
        }
        if !sets.is_empty() {
            self.plan.writes.push(Write::SetElems(o, sets));
        }
        // Deletes, back to front so that each index is as stored.
        let mut i = old_end;
        while i > prefix {
            if kept[i - 1] {
                i -= 1;
                continue;
            }
            let end = i;
            while i > prefix && !kept[i - 1] {
                i -= 1;
            }
            self.plan
                .writes
                .push(Write::Splice(o, i, end - i, Vec::new()));
        }
        // After the deletes the kept elements of the middle follow the
        // prefix in their old order; the reorder puts them in the order of
        // the items that keep them.
        let mut at = vec![0; n];
        let mut next = prefix;
        for i in prefix..old_end {
            if kept[i] {
                at[i] = next;
                next += 1;
            }
        }
        let middle: Vec<usize> = source.iter().flatten().map(|&i| at[i]).collect();
        if middle.windows(2).any(|w| w[0] > w[1]) {
            let order: Vec<usize> = (0..prefix)
                .chain(middle)
                .chain(next..next + suffix)
                .collect();
            let room = move_room(o, order.len() - longest_increasing(&order));
            self.plan.writes.push(Write::Reorder(o, order, room));
        }
        // Inserts, front to back: each run of items that keep no element
        // goes where it ends up, all before it being in place already.
        let mut j = 0;
        while j < source.len() {
            if source[j].is_some() {
                j += 1;
                continue;
            }
            let start = j;
            while j < source.len() && source[j].is_none() {
                j += 1;
            }
            let inserted = items[prefix + start..prefix + j]
                .iter()
                .map(Tree::to_input)
                .collect();
            self.plan
                .writes
                .push(Write::Splice(o, prefix + start, 0, inserted));
        }
        Ok(())
    }

    /// Pairs the items of the middle (`prefix..new_end`) that keep no
    /// element (`source`, relative to `prefix`) with the elements
    /// (`prefix..old_end`) none keeps, to be diffed in place: which pairs
    /// it makes decides which element takes each changed value.
    ///
    /// Pairs are made only within a gap: the elements between two kept
    /// neighbours (elements kept as equal, the prefix's end, the suffix's
    /// start) with the items between the same two, in their order (in
    /// reverse where the update reversed the two neighbours). A change
    /// never pairs across a kept element, so it never buys a move. Within
    /// a gap the pairing is an alignment ([`align`], [`Worth`]): the most
    /// total likeness ([`Differ::likeness`]), then the most pairs (an
    /// element and an item with nothing alike are one changed element,
    /// cheaper than a delete, an insert and new objects, but never at the
    /// cost of likeness), then the likeness earliest in each struct, then
    /// the pairs in order from the first; with nothing alike and as many
    /// items as elements, that is in order. A shared
    /// object ([`Differ::shared`]) is paired only when it is its gap's one
    /// element and the item its one item, a change of that copy; elsewhere
    /// it may have been removed while another copy stays, so it is
    /// deleted and its item inserted rather than written through.
    ///
    /// Returns `(item, element)` pairs, items relative to `prefix`, in
    /// item order.
    fn pair(
        &mut self,
        old: &[CoreValue],
        items: &'t [Tree],
        prefix: usize,
        (old_end, new_end): (usize, usize),
        source: &[Option<usize>],
        kept: &[bool],
    ) -> Vec<(usize, usize)> {
        // Bounds that are no element: the prefix's end and the suffix's
        // start, the same on both sides.
        const START: usize = usize::MAX - 1;
        const END: usize = usize::MAX;
        // Each gap of elements by its two neighbours in either order, with
        // its left one and its elements.
        let mut gaps: FxHashMap<(usize, usize), (usize, Vec<usize>)> = FxHashMap::default();
        let mut run = Vec::new();
        let mut left = START;
        for (i, &k) in kept.iter().enumerate().take(old_end).skip(prefix) {
            if !k {
                run.push(i);
                continue;
            }
            if !run.is_empty() {
                gaps.insert((left.min(i), left.max(i)), (left, std::mem::take(&mut run)));
            }
            left = i;
        }
        if !run.is_empty() {
            gaps.insert((left, END), (left, run));
        }
        let mut jobs = Vec::new();
        let mut run = Vec::new();
        let mut left = START;
        for (j, s) in source
            .iter()
            .enumerate()
            .chain([(source.len(), &Some(END))])
        {
            let Some(right) = *s else {
                run.push(j);
                continue;
            };
            if !run.is_empty() {
                // Neighbours that are consecutive kept elements bound one
                // gap each, so each gap of items meets at most one.
                if let Some((l, mut elements)) = gaps.remove(&(left.min(right), left.max(right))) {
                    if l != left {
                        elements.reverse();
                    }
                    jobs.push((elements, std::mem::take(&mut run)));
                }
                run.clear();
            }
            left = right;
        }
        // The budget goes to the cheapest gaps first, so that one large
        // gap does not leave the small ones unaligned.
        jobs.sort_by_key(|(elements, items)| {
            (elements.len().saturating_mul(items.len()), items[0])
        });
        let mut budget = MAX_PAIRS.max(4 * (old_end - prefix + new_end - prefix));
        let mut out = Vec::new();
        for (elements, free) in jobs {
            let (a, b) = (elements.len(), free.len());
            if a == 1 && b == 1 {
                out.push((free[0], elements[0]));
                continue;
            }
            let shared: Vec<bool> = elements.iter().map(|&i| self.shared(&old[i])).collect();
            let band = match Reach::of(a, b, budget) {
                Reach::Fallback => {
                    // In order, still within the gap; a shared object is
                    // left out of it rather than written through.
                    for (x, &j) in free.iter().enumerate().take(a) {
                        if !shared[x] {
                            out.push((j, elements[x]));
                        }
                    }
                    continue;
                }
                Reach::Full => (-(b as isize), a as isize),
                Reach::Band(lo, hi) => (lo, hi),
            };
            let mut cells = 0;
            let pairs = align(a, b, band, |x, y| {
                cells += 1;
                (!shared[x]).then(|| self.likeness(&old[elements[x]], &items[prefix + free[y]]))
            });
            budget -= cells.min(budget);
            out.extend(pairs.into_iter().map(|(x, y)| (free[y], elements[x])));
        }
        out.sort_unstable();
        out
    }

    /// How much of `new` the stored `cur` already holds: the fields of a
    /// struct and the entries of a map whose stored value is
    /// [`Differ::equal`] to the item's, one more inside the variant the map
    /// reads as, the items of an array (a tuple, a nested `Vec`) equal at
    /// their index, and a scalar's one when it is equal. A field the item
    /// lacks (`None`) counts for nothing, being alike in every element that
    /// lacks it. Each field or item alike also counts for how early it
    /// comes ([`Alike::early`]).
    fn likeness(&mut self, cur: &CoreValue, new: &Tree) -> Alike {
        let mut out = Alike::default();
        match (self.map_kind(cur), new) {
            (Some((o, ObjectKind::Map)), Tree::Struct(fields)) => {
                for (at, (k, t)) in fields.iter().enumerate() {
                    let alike = match (self.get(o, k).ok().flatten(), t) {
                        (_, Tree::Absent) => false,
                        (Some(v), t) => self.equal(&v, t),
                        (None, t) => self.defaulted(o, k, t),
                    };
                    if alike {
                        out.add(fields.len() - at);
                    }
                }
            }
            (Some((o, ObjectKind::Map)), Tree::Map(entries)) => {
                for (k, t) in entries {
                    if let Some(v) = self.get(o, k).ok().flatten() {
                        if self.equal(&v, t) {
                            out.add(0);
                        }
                    }
                }
            }
            (Some((o, ObjectKind::Map)), Tree::Variant(name, t)) => {
                let reads_as = match self.r.map_len(o) {
                    Ok(1) => true,
                    _ => self.variant(o).as_deref() == Some(*name),
                };
                if let Some(v) = self.get(o, name).ok().flatten().filter(|_| reads_as) {
                    out = self.likeness(&v, t);
                    out.add(0);
                }
            }
            (Some((o, ObjectKind::Array)), Tree::Seq(items)) => {
                let values = self.r.list_values(o).unwrap_or_default();
                for (at, (v, t)) in values.iter().zip(items).enumerate() {
                    if self.equal(v, t) {
                        out.add(items.len() - at);
                    }
                }
            }
            (_, Tree::Scalar(_) | Tree::Single(_)) if self.equal(cur, new) => out.add(0),
            _ => {}
        }
        out
    }

    /// Whether the stored `v` is an object reached more than once from
    /// where the diff starts, through any key or element (a shared
    /// reference; those the typed value does not declare count too, as a
    /// write through the object changes what they see). Found by one walk
    /// of the store below the start, made the first time it is asked: a
    /// walk of what the diff compares anyway, and only for an update that
    /// pairs elements in a gap of more than one.
    fn shared(&mut self, v: &CoreValue) -> bool {
        let Some(o) = v.as_ref_id() else {
            return false;
        };
        let start = &self.start;
        let r = &mut *self.r;
        self.shared
            .get_or_insert_with(|| reached_twice(r, start))
            .contains(&o)
    }

    /// For each item of `new`, an element of `old` it equals, if any: equal
    /// ones paired in order, each element at most once. Items are grouped
    /// by [`shape`], and the elements bucketed by their [`Differ::sig`]
    /// under each group's shape (a few shapes only), so that the deep
    /// comparisons are between likely equals, and their number is
    /// bounded: when it runs out, the items left match nothing here, and
    /// [`Differ::pair`] pairs them by likeness within their gaps, where
    /// the element an item equals is as alike as any, so that the bound
    /// seldom costs a write.
    fn matches(&mut self, old: &[CoreValue], new: &'t [Tree]) -> Vec<Option<usize>> {
        const SHAPES: usize = 8;
        let mut out = vec![None; new.len()];
        // One and one differ (the prefix stopped there).
        if old.is_empty() || new.is_empty() || (old.len() == 1 && new.len() == 1) {
            return out;
        }
        let mut groups: Vec<(u64, Vec<usize>)> = Vec::new();
        for (j, t) in new.iter().enumerate() {
            let mut h = FxHasher::default();
            shape(t, &mut h, 0);
            let h = h.finish();
            match groups.iter().position(|(s, _)| *s == h) {
                Some(g) => groups[g].1.push(j),
                None if groups.len() < SHAPES => groups.push((h, vec![j])),
                None => {}
            }
        }
        let mut used = vec![false; old.len()];
        let mut budget = 4 * (old.len() + new.len());
        for (_, group) in &groups {
            let rep = &new[group[0]];
            let mut buckets: FxHashMap<u64, (usize, Vec<usize>)> = FxHashMap::default();
            for (i, v) in old.iter().enumerate() {
                if !used[i] {
                    let sig = self.sig(v, rep);
                    buckets.entry(sig).or_default().1.push(i);
                }
            }
            for &j in group {
                let mut h = FxHasher::default();
                tree_sig(&new[j], &mut h, 0);
                let Some((first, candidates)) = buckets.get_mut(&h.finish()) else {
                    continue;
                };
                while candidates.get(*first).is_some_and(|&i| used[i]) {
                    *first += 1;
                }
                for &i in &candidates[*first..] {
                    if budget == 0 {
                        return out;
                    }
                    if used[i] {
                        continue;
                    }
                    budget -= 1;
                    if self.equal(&old[i], &new[j]) {
                        used[i] = true;
                        out[j] = Some(i);
                        break;
                    }
                }
            }
        }
        out
    }

    /// The signature of the stored `v` under the shape of `rep`: equal to
    /// [`tree_sig`] of every tree of that shape `v` is [`Differ::equal`]
    /// to (a necessary condition, to bucket candidates).
    fn sig(&mut self, v: &CoreValue, rep: &Tree) -> u64 {
        let mut h = FxHasher::default();
        self.store_sig(v, rep, &mut h, 0);
        h.finish()
    }

    fn store_sig(&mut self, v: &CoreValue, rep: &Tree, h: &mut FxHasher, depth: usize) {
        let map = self.map_kind(v).and_then(|(o, kind)| match kind {
            ObjectKind::Map => Some(o),
            ObjectKind::Array => None,
        });
        match (rep, map) {
            (Tree::Scalar(_) | Tree::Absent, _) => scalar_sig(v, h),
            (Tree::Single(_), _) => match v {
                CoreValue::Float(f) => single_sig(*f as f32, h),
                CoreValue::Int(i) => single_sig(*i as f32, h),
                v => scalar_sig(v, h),
            },
            (Tree::Seq(_), _) => match self.map_kind(v) {
                Some((o, ObjectKind::Array)) => seq_sig(self.r.list_len(o).unwrap_or(0), h),
                _ => h.write_u8(MISMATCH),
            },
            (Tree::Map(_), Some(o)) => {
                let keys = self.r.map_keys(o).unwrap_or_default();
                map_sig(keys.iter().map(|k| k.as_str()), h);
            }
            (_, Some(_)) if depth >= SIG_DEPTH => h.write_u8(DEEP_MAP),
            (Tree::Struct(fields), Some(o)) => {
                h.write_u8(STRUCT);
                for (k, t) in fields {
                    match self.r.map_get(o, k).ok().flatten() {
                        Some(v) => self.store_sig(&v, t, h, depth + 1),
                        // Absent: null, or the default read in its place.
                        None => match self.declared.defaulted.get(&(o, *k)) {
                            Some(read) => tree_sig(read, h, depth + 1),
                            None => scalar_sig(&CoreValue::Null, h),
                        },
                    }
                }
            }
            (Tree::Variant(name, t), Some(o)) => match self.r.map_get(o, name).ok().flatten() {
                Some(v) if self.r.map_len(o).is_ok_and(|n| n == 1) => {
                    h.write_u8(VARIANT);
                    self.store_sig(&v, t, h, depth + 1);
                }
                _ => h.write_u8(MISMATCH),
            },
            _ => h.write_u8(MISMATCH),
        }
    }

    /// Whether the stored `cur` already holds `new` (deep, read-only): the
    /// diff of `new` against it would plan nothing.
    fn equal(&mut self, cur: &CoreValue, new: &Tree) -> bool {
        if self.depth > MAX_DEPTH {
            return false;
        }
        self.depth += 1;
        let eq = self.equal_inner(cur, new);
        self.depth -= 1;
        eq
    }

    fn equal_inner(&mut self, cur: &CoreValue, new: &Tree) -> bool {
        match (self.map_kind(cur), new) {
            (_, Tree::Scalar(v)) => scalar_matches(cur, v, self.numbers),
            (_, Tree::Single(v)) => single_matches(cur, *v, self.numbers),
            (Some((o, ObjectKind::Map)), Tree::Struct(fields)) => {
                let left = self.declared.keys.get(&o).is_some_and(|old| {
                    old.iter().any(|k| {
                        !fields.iter().any(|(f, _)| f == k)
                            && self.r.map_get(o, k).is_ok_and(|v| v.is_some())
                    })
                });
                !left
                    && fields
                        .iter()
                        .all(|(k, t)| match (self.get(o, k).ok().flatten(), t) {
                            (None | Some(CoreValue::Null), Tree::Absent) => true,
                            (Some(v), t) => self.equal(&v, t),
                            (None, t) => self.defaulted(o, k, t),
                        })
            }
            (Some((o, ObjectKind::Map)), Tree::Map(entries)) => {
                let len = self.r.map_len(o).unwrap_or(0);
                // Taken while `equal` borrows `self`, and put back.
                let read = self.declared.entries.remove(&o);
                let eq = match &read {
                    None => {
                        len == entries.len()
                            && entries
                                .iter()
                                .all(|(k, t)| match self.get(o, k).ok().flatten() {
                                    Some(v) => self.equal(&v, t),
                                    None => false,
                                })
                    }
                    // After a read, as [`Differ::entries`] writes: no stored
                    // key the value read held is missing, and no entry
                    // differs from what is stored or was read.
                    Some(read) => {
                        let stored = self.r.map_keys(o).unwrap_or_default();
                        stored.iter().all(|k| {
                            !read.contains_key(k.as_str()) || entries.iter().any(|(e, _)| e == k)
                        }) && entries
                            .iter()
                            .all(|(k, t)| match self.get(o, k).ok().flatten() {
                                Some(v) => self.equal(&v, t),
                                None => read.get(k.as_str()).is_some_and(|read| read.same(t)),
                            })
                    }
                };
                if let Some(read) = read {
                    self.declared.entries.insert(o, read);
                }
                eq
            }
            (Some((o, ObjectKind::Map)), Tree::Variant(name, t)) => {
                let len = self.r.map_len(o).unwrap_or(0);
                len == 1
                    && match self.get(o, name).ok().flatten() {
                        Some(v) => self.equal(&v, t),
                        None => false,
                    }
            }
            (Some((o, ObjectKind::Array)), Tree::Seq(items)) => {
                let Ok(values) = self.r.list_values(o) else {
                    return false;
                };
                values.len() == items.len()
                    && values.iter().zip(items).all(|(v, t)| self.equal(v, t))
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alike(equal: u64, early: u64) -> Alike {
        Alike { equal, early }
    }

    /// What `pairs` is worth under `worth`, or `None` if they cross, repeat
    /// an element or item, or use a pair never to be made.
    fn worth_of(
        pairs: &[(usize, usize)],
        worth: &dyn Fn(usize, usize) -> Option<Alike>,
    ) -> Option<Worth> {
        let mut total = Worth::default();
        for (k, &(x, y)) in pairs.iter().enumerate() {
            if k > 0 && (pairs[k - 1].0 >= x || pairs[k - 1].1 >= y) {
                return None;
            }
            total = total.with(worth(x, y)?, x == y);
        }
        Some(total)
    }

    /// Every non-crossing pairing of `a` elements and `b` items.
    fn every_alignment(a: usize, b: usize) -> Vec<Vec<(usize, usize)>> {
        let mut out = vec![Vec::new()];
        for x in 0..a {
            for y in 0..b {
                let more: Vec<_> = out
                    .iter()
                    .filter(|p: &&Vec<(usize, usize)>| {
                        p.last().is_none_or(|&(px, py)| px < x && py < y)
                    })
                    .map(|p| {
                        let mut p = p.clone();
                        p.push((x, y));
                        p
                    })
                    .collect();
                out.extend(more);
            }
        }
        out
    }

    #[test]
    fn the_alignment_is_worth_the_most_of_all_that_cross_nothing() {
        // A small generator: the same cases on every run.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % n
        };
        for _ in 0..400 {
            let (a, b) = (next(5) as usize, next(5) as usize);
            let cells: Vec<Option<Alike>> = (0..a * b)
                .map(|_| match next(6) {
                    0 => None,
                    k => Some(alike(next(3) * (k % 2), next(3))),
                })
                .collect();
            let worth = |x: usize, y: usize| cells[x * b + y];
            let mut asked = 0;
            let got = align(a, b, (-(b as isize), a as isize), |x, y| {
                asked += 1;
                worth(x, y)
            });
            assert_eq!(asked, a * b, "each pair asked once");
            let best = every_alignment(a, b)
                .iter()
                .filter_map(|p| worth_of(p, &worth))
                .max()
                .unwrap();
            assert_eq!(worth_of(&got, &worth), Some(best), "{a}×{b}: {cells:?}");
        }
    }

    #[test]
    fn with_nothing_alike_the_alignment_pairs_in_order_from_the_first() {
        let none = |_: usize, _: usize| Some(Alike::default());
        assert_eq!(align(3, 3, (-3, 3), none), [(0, 0), (1, 1), (2, 2)]);
        assert_eq!(align(3, 2, (-2, 3), none), [(0, 0), (1, 1)]);
        assert_eq!(align(2, 3, (-3, 2), none), [(0, 0), (1, 1)]);
        // A pair never made is left out, and the rest still pair.
        let but = |x: usize, _: usize| (x != 1).then(Alike::default);
        assert_eq!(align(3, 3, (-3, 3), but), [(0, 0), (2, 2)]);
        assert_eq!(align(3, 3, (-1, 1), but), [(0, 0), (2, 2)]);
    }

    /// One removal in a gap of every element changed: the band pairs each
    /// item with its own element, asking about four pairs per item where
    /// the whole table would ask `n²`.
    #[test]
    fn a_band_aligns_a_removal_among_changes_in_linear_work() {
        let (a, b) = (300, 299);
        let Reach::Band(lo, hi) = Reach::of(a, b, 4 * (a + b)) else {
            panic!("a band");
        };
        assert_eq!((lo, hi), (-1, 2));
        let mut asked = 0;
        let got = align(a, b, (lo, hi), |x, y| {
            asked += 1;
            Some(alike(u64::from(x == y + 1), 0))
        });
        assert!(asked <= 4 * b, "{asked}");
        assert_eq!(got, (0..b).map(|y| (y + 1, y)).collect::<Vec<_>>());
        // The same where the removal is in the middle.
        let got = align(a, b, (lo, hi), |x, y| {
            Some(alike(u64::from(x == y + usize::from(y >= 150)), 0))
        });
        let want: Vec<_> = (0..b).map(|y| (y + usize::from(y >= 150), y)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn the_reach_of_a_gap_follows_the_budget() {
        assert_eq!(Reach::of(30, 30, 1024), Reach::Full);
        assert_eq!(Reach::of(40, 30, 1024), Reach::Band(-1, 11));
        assert_eq!(Reach::of(200, 100, 1204), Reach::Fallback);
        assert_eq!(Reach::of(100_000, 50_000, 600_000), Reach::Fallback);
    }
}
