//! The diff of a [`Tree`] against the store: the minimal writes that make the
//! store hold the tree, planned without writing, then applied as one group.
//!
//! The rules (documented on `crate::typed`):
//! - a struct writes only the fields that differ and never touches keys the
//!   struct does not declare; an absent field (`None`) deletes its key, and a
//!   key holding `Null` counts as absent;
//! - a map makes its key set equal: extra keys are deleted, new ones set,
//!   common ones diffed; after a read (`update`), only the keys the value
//!   read held are deleted, and an entry it held, left as read, is not
//!   written though its key is not stored (another key read as it);
//! - an enum variant with data is diffed in place when the stored map holds
//!   the same variant, and replaced whole otherwise (so that two nodes
//!   switching variants at once cannot merge into a map of two variants);
//! - an array keeps its longest common prefix and suffix, diffs the middle
//!   element by element, and inserts or deletes the difference in length at
//!   the end of the middle: a push, a pop, an insert or a removal anywhere,
//!   or a change of one element costs one write;
//! - a scalar that differs, or a value whose kind differs, is rewritten in
//!   its parent slot (a new object when the value is a map or an array). An
//!   integer in the store holds a float of the tree as [`Numbers`] says.

use std::collections::HashMap;

use facsimile_core::{
    IdKeys, Input as CoreInput, ObjectId, ObjectKind, Planned, Replica, Value as CoreValue,
};
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
        }
    }

    fn target(&self) -> Option<ObjectId> {
        match self {
            Write::Root(_) => None,
            Write::Set(o, ..)
            | Write::Delete(o, _)
            | Write::SetElems(o, _)
            | Write::Splice(o, ..) => Some(*o),
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
    /// within its array as the writes before leave its length. An array
    /// is written by one diff of it only (a shared object is diffed once,
    /// [`Differ::revisit`]), so this holds by construction; checked all
    /// the same, because a plan refused halfway would leave the writes
    /// before the refusal made and sent.
    ///
    /// # Errors
    /// [`EngineError::IndexOutOfBounds`] for a write that would not apply.
    pub(crate) fn validate(&self, r: &Replica) -> Result<(), EngineError> {
        let mut lens: HashMap<ObjectId, usize, IdKeys> = HashMap::default();
        for w in &self.writes {
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

/// Map entries sorted by key, the last of duplicate keys kept.
fn sorted(entries: &[(SmolStr, Tree)]) -> Vec<&(SmolStr, Tree)> {
    let mut entries: Vec<&(SmolStr, Tree)> = entries.iter().collect();
    // Stable: of duplicate keys, the last stays last.
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out: Vec<&(SmolStr, Tree)> = Vec::with_capacity(entries.len());
    for e in entries {
        match out.last_mut() {
            Some(last) if last.0 == e.0 => *last = e,
            _ => out.push(e),
        }
    }
    out
}

impl<'t> Differ<'_, 't> {
    fn map_kind(&self, v: &CoreValue) -> Option<(ObjectId, ObjectKind)> {
        let o = v.as_ref_id()?;
        Some((o, self.r.kind(o)?))
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
                let len = self.r.map_len(o).unwrap_or(0);
                match (len, self.get(o, name)?) {
                    (1, Some(v)) => {
                        if !self.revisit(o, cur, new)? {
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
        let old_mid = n - prefix - suffix;
        let new_mid = m - prefix - suffix;
        let paired = old_mid.min(new_mid);
        let mut sets = Vec::new();
        for i in prefix..prefix + paired {
            if let Some(input) = self.diff(&old[i], &items[i]).map_err(|e| e.at_index(i))? {
                sets.push((i, input));
            }
        }
        if !sets.is_empty() {
            self.plan.writes.push(Write::SetElems(o, sets));
        }
        let at = prefix + paired;
        if new_mid > paired {
            let inserted: Vec<CoreInput> = items[at..prefix + new_mid]
                .iter()
                .map(Tree::to_input)
                .collect();
            self.plan.writes.push(Write::Splice(o, at, 0, inserted));
        } else if old_mid > paired {
            self.plan
                .writes
                .push(Write::Splice(o, at, old_mid - paired, Vec::new()));
        }
        Ok(())
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
                    // Duplicate keys in `entries` make it look longer than
                    // the map it would become: count as different, which
                    // only costs a finer diff.
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
