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

use rustc_hash::FxHashMap;

use super::seq::{Cursor, LeafId, MERGE_MAX, SPLIT_AT, SeqItem, SeqTree};
use super::slot_index::SlotIndex;
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

/// A slot as a list holds it: 40 bytes where [`Slot`] takes 48 (a list
/// holds one per element). The id's halves and the flags share what would
/// be padding, and a move slot keeps its element in the value's place.
#[derive(Debug, Clone)]
struct Stored {
    counter: u64,
    peer: PeerIdx,
    flags: u8,
    /// A home slot's value; a move slot's element, as a reference.
    value: Value,
}

/// A move slot (else a home slot).
const MOVED: u8 = 1;
/// Home slot: the element is deleted.
const DELETED: u8 = 2;
/// Home slot: the element lives at a move slot.
const AWAY: u8 = 4;
/// Move slot: it is its element's position.
const LIVE: u8 = 8;

const _: () = assert!(std::mem::size_of::<Stored>() == 40);

/// A stored slot, read.
enum View<'a> {
    Home {
        value: &'a Value,
        deleted: bool,
        away: bool,
    },
    Moved {
        elem: Id,
        live: bool,
    },
}

impl Stored {
    fn home(id: Id, value: Value, deleted: bool, away: bool) -> Self {
        let flags = if deleted { DELETED } else { 0 } | if away { AWAY } else { 0 };
        Stored {
            counter: id.counter,
            peer: id.peer,
            flags,
            value,
        }
    }

    fn moved(id: Id, elem: Id, live: bool) -> Self {
        Stored {
            counter: id.counter,
            peer: id.peer,
            flags: MOVED | if live { LIVE } else { 0 },
            value: Value::Ref(ObjectId(elem)),
        }
    }

    #[inline]
    fn id(&self) -> Id {
        Id::new(self.peer, self.counter)
    }

    #[inline]
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn set(&mut self, flag: u8, on: bool) {
        if on {
            self.flags |= flag;
        } else {
            self.flags &= !flag;
        }
    }

    fn view(&self) -> View<'_> {
        if self.has(MOVED) {
            View::Moved {
                elem: self.elem(),
                live: self.has(LIVE),
            }
        } else {
            View::Home {
                value: &self.value,
                deleted: self.has(DELETED),
                away: self.has(AWAY),
            }
        }
    }

    /// The element occupying or owning this slot.
    fn elem(&self) -> Id {
        match (&self.value, self.has(MOVED)) {
            (Value::Ref(o), true) => o.0,
            _ => self.id(),
        }
    }

    fn to_slot(&self) -> Slot {
        let kind = match self.view() {
            View::Home {
                value,
                deleted,
                away,
            } => SlotKind::Home {
                value: value.clone(),
                deleted,
                away,
            },
            View::Moved { elem, live } => SlotKind::Moved { elem, live },
        };
        Slot {
            id: self.id(),
            kind,
        }
    }

    fn from_slot(slot: Slot) -> Self {
        match slot.kind {
            SlotKind::Home {
                value,
                deleted,
                away,
            } => Stored::home(slot.id, value, deleted, away),
            SlotKind::Moved { elem, live } => Stored::moved(slot.id, elem, live),
        }
    }
}

fn is_dead(s: &Stored) -> bool {
    match s.has(MOVED) {
        false => s.has(DELETED),
        true => !s.has(LIVE),
    }
}

impl SeqItem for Stored {
    #[inline]
    fn is_visible(&self) -> bool {
        match self.has(MOVED) {
            false => self.flags & (DELETED | AWAY) == 0,
            true => self.has(LIVE),
        }
    }
}

/// A slot that died, and where it was when it died: reclamation looks there
/// and a few places around, and asks the id index only when the slot has
/// moved further since (a split or a merge moves it to another leaf). A
/// hint is checked against the id, never trusted.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeadSlot {
    counter: u64,
    peer: PeerIdx,
    leaf: LeafId,
    pos: u32,
}

impl DeadSlot {
    pub(crate) fn at(id: Id, c: Cursor) -> Self {
        DeadSlot {
            counter: id.counter,
            peer: id.peer,
            leaf: c.leaf,
            pos: c.pos as u32,
        }
    }

    pub(crate) fn id(&self) -> Id {
        Id::new(self.peer, self.counter)
    }
}

const _: () = assert!(std::mem::size_of::<DeadSlot>() == 24);

/// How far after its hint a dead slot is looked for: mostly inserts happen
/// in its leaf meanwhile, which shift it right. Past that, a look-up in the
/// id index and a scan of the right leaf cost less.
const HINT_AHEAD: usize = 16;
/// How far before its hint a dead slot is looked for (removals shift it
/// left).
const HINT_BEHIND: usize = 8;

/// The position of the item `here` accepts at `pos` of `items` or within
/// the hint's reach around it, looked for on the likelier side first.
fn seek(items: &[Stored], pos: usize, here: impl Fn(&Stored) -> bool) -> Option<usize> {
    let end = (pos + HINT_AHEAD + 1).min(items.len());
    if let Some(i) = items.get(pos..end).and_then(|w| w.iter().position(&here)) {
        return Some(pos + i);
    }
    let start = pos.saturating_sub(HINT_BEHIND);
    let end = pos.min(items.len());
    items
        .get(start..end)?
        .iter()
        .rposition(here)
        .map(|i| start + i)
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
    tree: SeqTree<Stored>,
    /// Slot id to the leaf holding it.
    index: SlotIndex,
    extra: FxHashMap<Id, ElemExtra>,
    /// Bumped by every change; lets a caller detect that the list changed
    /// between a read and a write.
    version: u64,
    /// The slot inserted last and where it was put: the origin of the next
    /// insert when somebody types or pushes. Checked before use, since a
    /// split may have moved it.
    last: Option<(Id, Cursor)>,
    /// Slots that died since reclamation last took them (a dead slot never
    /// lives again): reclamation finds them without scanning the list.
    dead: Vec<DeadSlot>,
    /// Live elements whose value references an object: a list without any
    /// is not walked when reachable objects are marked.
    refs: usize,
}

fn is_ref(v: &Value) -> bool {
    matches!(v, Value::Ref(_))
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

    pub(crate) fn has_slot(&self, id: Id) -> bool {
        self.index.contains(id)
    }

    /// Where a slot is: in the leaf the index names.
    fn cursor(&self, id: Id) -> Option<Cursor> {
        let leaf = self.index.get(id)?;
        let pos = self
            .tree
            .leaf_items(leaf)
            .iter()
            .position(|s| s.counter == id.counter && s.peer == id.peer)?;
        Some(Cursor { leaf, pos })
    }

    fn extra(&self, elem: Id) -> ElemExtra {
        self.extra.get(&elem).copied().unwrap_or(ElemExtra {
            value_stamp: elem,
            pos: elem,
            pos_stamp: elem,
        })
    }

    /// The element at a visible index.
    pub(crate) fn elem_at(&self, index: usize) -> Id {
        self.tree.get(self.tree.locate_visible(index)).elem()
    }

    /// The slot at a visible index.
    pub(crate) fn slot_at(&self, index: usize) -> Id {
        // A push names the last element: when that is the slot inserted
        // last and nothing follows it, no descent is needed.
        if let Some((id, c)) = self.last {
            if index + 1 == self.len()
                && self
                    .tree
                    .try_get(c)
                    .is_some_and(|s| s.id() == id && s.is_visible())
                && self.tree.next(c).is_none()
            {
                return id;
            }
        }
        self.tree.get(self.tree.locate_visible(index)).id()
    }

    /// The value of a live element.
    pub(crate) fn value_of(&self, elem: Id) -> Option<&Value> {
        let c = self.cursor(elem)?;
        match self.tree.get(c).view() {
            View::Home {
                value,
                deleted: false,
                ..
            } => Some(value),
            _ => None,
        }
    }

    pub(crate) fn get(&self, index: usize) -> Option<&Value> {
        if index >= self.len() {
            return None;
        }
        self.value_of(self.elem_at(index))
    }

    /// Visible values in order.
    pub(crate) fn values(&self) -> impl Iterator<Item = &Value> + '_ {
        self.tree
            .iter_visible_from(0)
            .map(move |slot| match slot.view() {
                View::Home { value, .. } => value,
                View::Moved { elem, .. } => self
                    .value_of(elem)
                    .expect("a live move slot has a live element"),
            })
    }

    /// Visible elements in order, with their values and value stamps.
    pub(crate) fn elements(&self) -> impl Iterator<Item = (Id, &Value, Id)> + '_ {
        self.tree.iter_visible_from(0).map(move |slot| {
            let elem = slot.elem();
            let value = self
                .value_of(elem)
                .expect("a visible slot has a live element");
            (elem, value, self.extra(elem).value_stamp)
        })
    }

    /// The slot a live element occupies.
    pub(crate) fn position_of(&self, elem: Id) -> Option<Id> {
        let c = self.cursor(elem)?;
        match self.tree.get(c).view() {
            View::Home { deleted: true, .. } => None,
            View::Home { away: false, .. } => Some(elem),
            _ => Some(self.extra(elem).pos),
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
        self.tree
            .get(c)
            .is_visible()
            .then(|| self.tree.visible_index(c))
    }

    /// The visible index of a live element.
    pub(crate) fn index_of(&self, elem: Id) -> Option<usize> {
        let c = self.cursor(elem)?;
        match self.tree.get(c).view() {
            View::Home { deleted: true, .. } => None,
            View::Home { away: false, .. } => Some(self.tree.visible_index(c)),
            _ => {
                let pos = self.cursor(self.extra(elem).pos)?;
                Some(self.tree.visible_index(pos))
            }
        }
    }

    /// The cursor of an insert's origin.
    fn origin_cursor(&self, id: Id) -> Option<Cursor> {
        self.last_cursor(id).or_else(|| self.cursor(id))
    }

    /// Where `id` is when it is the slot inserted last and has not moved.
    fn last_cursor(&self, id: Id) -> Option<Cursor> {
        match self.last {
            Some((last, c)) if last == id && self.tree.try_get(c).is_some_and(|s| s.id() == id) => {
                Some(c)
            }
            _ => None,
        }
    }

    /// Places `slot` after `origin` (`None`: at the head) by the RGA rule.
    fn integrate(&mut self, origin: Option<Id>, slot: Stored, peers: &Peers) -> Cursor {
        let mut prev = origin.map(|o| self.origin_cursor(o).expect("origin checked by caller"));
        let mut next = match prev {
            Some(p) => self.tree.next(p),
            None => self.tree.first(),
        };
        while let Some(n) = next {
            if !peers.later(self.tree.get(n).id(), slot.id()) {
                break;
            }
            prev = Some(n);
            next = self.tree.next(n);
        }
        let id = slot.id();
        self.version += 1;
        let index = &mut self.index;
        let on_move = |s: &Stored, leaf: LeafId| {
            index.insert(s.id(), leaf);
        };
        let c = match prev {
            Some(p) => self.tree.insert_after(p, slot, on_move),
            None => self.tree.insert_first(slot, on_move),
        };
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
        let mut origin = origin;
        for (i, value) in values.into_iter().enumerate() {
            let id = Id::new(first.peer, first.counter + i as u64);
            self.refs += usize::from(is_ref(&value));
            self.integrate(origin, Stored::home(id, value, false, false), peers);
            origin = Some(id);
        }
    }

    /// Deletes an element. Returns its old value and visible index when it
    /// was live.
    pub(crate) fn delete(&mut self, elem: Id) -> Option<(Value, usize)> {
        let home = self.cursor(elem)?;
        let away = match self.tree.get(home).view() {
            View::Home {
                deleted: false,
                away,
                ..
            } => away,
            _ => return None,
        };
        let live = if away {
            self.cursor(self.extra(elem).pos)
                .expect("a moved element's slot exists")
        } else {
            home
        };
        let index = self.tree.visible_index(live);
        self.version += 1;
        if away {
            let id = self.tree.update(live, |s| {
                s.set(LIVE, false);
                s.id()
            });
            self.dead.push(DeadSlot::at(id, live));
        }
        let old = self.tree.update(home, |s| {
            s.set(DELETED, true);
            std::mem::replace(&mut s.value, Value::Null)
        });
        self.dead.push(DeadSlot::at(elem, home));
        self.refs -= usize::from(is_ref(&old));
        self.extra.remove(&elem);
        Some((old, index))
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
        if !matches!(
            self.tree.get(home).view(),
            View::Home { deleted: false, .. }
        ) {
            return None;
        }
        let mut extra = self.extra(elem);
        if !peers.later(stamp, extra.value_stamp) {
            return None;
        }
        extra.value_stamp = stamp;
        self.extra.insert(elem, extra);
        self.version += 1;
        let new_ref = is_ref(&value);
        let old = self.tree.update(home, |s| {
            (!s.value.same(&value)).then(|| std::mem::replace(&mut s.value, value))
        })?;
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
        let (deleted, away) = match self.tree.get(home).view() {
            View::Home { deleted, away, .. } => (deleted, away),
            View::Moved { .. } => return false,
        };
        let mut extra = self.extra(elem);
        let wins = !deleted && peers.later(slot, extra.pos_stamp);
        let new = self.integrate(origin, Stored::moved(slot, elem, false), peers);
        if !wins {
            self.dead.push(DeadSlot::at(slot, new));
            return false;
        }
        // Retire the old position, then light up the new one. The cursor of
        // the new slot may have shifted if the retirement touched its leaf;
        // visibility changes never move items, so it is still valid.
        if away {
            let old = self
                .cursor(extra.pos)
                .expect("a moved element's slot exists");
            self.tree.update(old, |s| s.set(LIVE, false));
            self.dead.push(DeadSlot::at(extra.pos, old));
        }
        let home = self.cursor(elem).expect("home exists");
        self.tree.update(home, |s| s.set(AWAY, true));
        let new = self.cursor(slot).unwrap_or(new);
        self.tree.update(new, |s| s.set(LIVE, true));
        extra.pos = slot;
        extra.pos_stamp = slot;
        self.extra.insert(elem, extra);
        true
    }

    /// All slots in sequence order with the element state they carry, for
    /// state transfer.
    pub(crate) fn slots(&self) -> impl Iterator<Item = (Slot, Option<ElemExtra>)> + '_ {
        self.tree.iter().map(move |s| {
            let extra = match s.has(MOVED) {
                false => self.extra.get(&s.id()).copied(),
                true => None,
            };
            (s.to_slot(), extra)
        })
    }

    /// Rebuilds a list from transferred slots in sequence order; `None` when
    /// two slots have the same id.
    pub(crate) fn from_slots(slots: Vec<(Slot, Option<ElemExtra>)>) -> Option<Self> {
        let mut extra = FxHashMap::default();
        let mut items = Vec::with_capacity(slots.len());
        let mut refs = 0;
        for (slot, e) in slots {
            if let Some(e) = e {
                extra.insert(slot.id, e);
            }
            let slot = Stored::from_slot(slot);
            if !is_dead(&slot) && !slot.has(MOVED) {
                refs += usize::from(is_ref(&slot.value));
            }
            items.push(slot);
        }
        let mut index = SlotIndex::default();
        let mut dead = Vec::new();
        let mut unique = true;
        // Items arrive leaf by leaf, in order: count each one's position.
        let mut at = Cursor {
            leaf: LeafId::MAX,
            pos: 0,
        };
        let tree = SeqTree::from_items(items, |s, leaf| {
            unique &= !index.insert(s.id(), leaf);
            let pos = if at.leaf == leaf { at.pos + 1 } else { 0 };
            at = Cursor { leaf, pos };
            if is_dead(s) {
                dead.push(DeadSlot::at(s.id(), at));
            }
        });
        if !unique {
            return None;
        }
        Some(ListObj {
            tree,
            index,
            extra,
            version: 0,
            last: None,
            dead,
            refs,
        })
    }

    /// Slots that no element can come back to: move slots that are not
    /// current and home slots of deleted elements. Scans the whole list.
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn dead_slots(&self) -> Vec<Id> {
        self.tree
            .iter()
            .filter(|s| is_dead(s))
            .map(|s| s.id())
            .collect()
    }

    /// The slots that died since the last call (or [`ListObj::restore_dead`]).
    pub(crate) fn take_dead(&mut self) -> Vec<DeadSlot> {
        std::mem::take(&mut self.dead)
    }

    /// Gives back dead slots taken and not purged, for a later round.
    pub(crate) fn restore_dead(&mut self, slots: &[DeadSlot]) {
        self.dead.extend_from_slice(slots);
    }

    /// Whether some live element references an object.
    pub(crate) fn has_refs(&self) -> bool {
        self.refs != 0
    }

    /// Drops the given slots (dead ones only; others and absent ids are
    /// ignored). Only their leaves change: the rest of the tree and of the
    /// id index stays as it is.
    pub(crate) fn purge(&mut self, slots: &[DeadSlot]) {
        // One at a time, where each died. A round's slots do share leaves
        // (a few a leaf), but closing a leaf's gaps in one pass moves its
        // slots one by one (no `memmove` without unsafe code), and that and
        // sorting the slots by leaf each cost more than a shift of the tail
        // a slot. A leaf is looked at for a merge once, after the round's
        // removals.
        let mut seen = vec![0u64; self.tree.leaf_ids().div_ceil(64)];
        let mut leaves = Vec::new();
        for d in slots {
            let Some(c) = self.find_dead(d) else {
                continue;
            };
            if !is_dead(self.tree.get(c)) {
                continue;
            }
            self.index.remove(d.id());
            self.tree.remove(c);
            let (word, bit) = (c.leaf as usize / 64, 1 << (c.leaf % 64));
            if seen[word] & bit == 0 {
                seen[word] |= bit;
                leaves.push(c.leaf);
            }
        }
        // Merges move slots between leaves (a slot still to remove would
        // be looked for through the index), so they wait. A larger leaf
        // cannot merge: spare it the look.
        for leaf in leaves {
            if self.tree.leaf_items(leaf).len() <= MERGE_MAX {
                let index = &mut self.index;
                self.tree.rebalance(leaf, |s, to| {
                    index.insert(s.id(), to);
                });
            }
        }
    }

    /// Where a dead slot is now: near its hint (inserts and removals in its
    /// leaf shift it), near where a split of its leaf would have put it,
    /// else where the index says (a merge, a later split, or a longer
    /// shift moved it).
    fn find_dead(&self, d: &DeadSlot) -> Option<Cursor> {
        let here = |s: &Stored| s.counter == d.counter && s.peer == d.peer;
        let pos = d.pos as usize;
        let leaf = d.leaf;
        if let Some(items) = self.tree.try_leaf_items(leaf) {
            if let Some(pos) = seek(items, pos, here) {
                return Some(Cursor { leaf, pos });
            }
            if pos + HINT_AHEAD >= SPLIT_AT {
                if let Some(next) = self.tree.next_leaf(leaf) {
                    let items = self.tree.leaf_items(next);
                    if let Some(pos) = seek(items, pos.saturating_sub(SPLIT_AT), here) {
                        return Some(Cursor { leaf: next, pos });
                    }
                }
            }
        }
        self.cursor(d.id())
    }

    /// Whether transferred element state is coherent: every live move slot
    /// is its element's position, every moved live element's position is a
    /// live move slot naming it, and deleted elements hold no value.
    pub(crate) fn is_consistent(&self) -> bool {
        self.tree.iter().all(|s| match s.view() {
            View::Moved { elem, live } => {
                let Some(home) = self.cursor(elem) else {
                    // The element was purged; its dead move slots may remain.
                    return !live;
                };
                match self.tree.get(home).view() {
                    View::Home { deleted, away, .. } => {
                        !live || (!deleted && away && self.extra(elem).pos == s.id())
                    }
                    View::Moved { .. } => false,
                }
            }
            View::Home {
                deleted: true,
                value,
                ..
            } => matches!(value, Value::Null),
            View::Home { away: true, .. } => {
                let pos = self.extra(s.id()).pos;
                pos != s.id()
                    && self.cursor(pos).is_some_and(|c| {
                        matches!(self.tree.get(c).view(), View::Moved { elem, live: true } if elem == s.id())
                    })
            }
            View::Home { .. } => self.extra(s.id()).pos == s.id(),
        })
    }

    /// Checks internal consistency; used by tests.
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn check(&self) {
        self.tree.check();
        assert_eq!(self.index.len(), self.tree.len(), "every slot indexed");
        let refs = self
            .tree
            .iter()
            .filter(
                |s| matches!(s.view(), View::Home { value, deleted: false, .. } if is_ref(value)),
            )
            .count();
        assert_eq!(refs, self.refs, "references counted");
        for s in self.tree.iter() {
            let found = self.cursor(s.id()).map(|c| self.tree.get(c));
            assert!(
                found.is_some_and(|f| std::ptr::eq(f, s)),
                "slot {:?} is found where it is",
                s.id()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::value::{PeerId, PeerIdx};

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

    /// A slot whose leaf split after it died is found in the new leaf from
    /// its old hint; a hint that points elsewhere falls back to the index,
    /// and a slot that is gone is not found.
    #[test]
    fn dead_slots_are_found_after_their_leaf_splits() {
        let peers = Peers::new(PeerId::new("a", 1));
        let id = |c| Id::new(PeerIdx(0), c);
        let mut list = ListObj::default();
        list.insert(None, id(1), (1..=60).map(Value::Int), &peers);
        list.delete(id(51)).unwrap();
        let taken = list.take_dead();
        let [hint] = taken[..] else {
            panic!("one dead slot: {taken:?}")
        };
        // Inserts at the head fill the leaf and split it: the back half,
        // the dead slot with it, moves to a new leaf.
        for c in 100..110 {
            list.insert(None, id(c), [Value::Int(0)], &peers);
        }
        let c = list.find_dead(&hint).expect("found through the split");
        assert_ne!(c.leaf, hint.leaf);
        assert_eq!(list.tree.get(c).id(), id(51));
        let elsewhere = DeadSlot::at(id(51), Cursor { leaf: 0, pos: 0 });
        assert_eq!(list.find_dead(&elsewhere), Some(c));
        list.purge(&[elsewhere, hint]);
        assert!(!list.has_slot(id(51)));
        assert_eq!(list.find_dead(&hint), None);
        list.check();
        assert_eq!(list.len(), 69);
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
            // Every slot in order: id and whether its element is live.
            let mut model: Vec<(Id, bool)> = Vec::new();
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
                        let ids = (0..n).map(|i| (Id::new(first.peer, first.counter + i), true));
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
                        // Some of the dead (the rest go back for a later
                        // purge, their hints going stale meanwhile) or all
                        // of them; a few with hints that point anywhere, and
                        // a live slot that must stay.
                        let some = rand(2) == 0;
                        let taken = list.take_dead();
                        let mut recorded: Vec<Id> = taken.iter().map(|d| d.id()).collect();
                        let mut expected: Vec<Id> =
                            model.iter().filter(|s| !s.1).map(|s| s.0).collect();
                        recorded.sort_by_key(|id| (id.peer.0, id.counter));
                        expected.sort_by_key(|id| (id.peer.0, id.counter));
                        assert_eq!(recorded, expected, "seed {seed}: every dead slot recorded");
                        let (mut dead, later): (Vec<DeadSlot>, Vec<DeadSlot>) =
                            taken.into_iter().partition(|_| !some || rand(2) == 0);
                        for d in &mut dead {
                            if rand(4) == 0 {
                                let anywhere = Cursor {
                                    leaf: rand(40) as u32,
                                    pos: rand(80) as usize,
                                };
                                *d = DeadSlot::at(d.id(), anywhere);
                            }
                        }
                        let keep: Vec<Id> =
                            model.iter().filter(|s| s.1).map(|s| s.0).take(1).collect();
                        let nowhere = Cursor { leaf: 0, pos: 0 };
                        dead.extend(keep.iter().map(|&id| DeadSlot::at(id, nowhere)));
                        list.purge(&dead);
                        list.restore_dead(&later);
                        let dead: Vec<Id> = dead
                            .iter()
                            .map(|d| d.id())
                            .filter(|id| !keep.contains(id))
                            .collect();
                        model.retain(|s| s.1 || !dead.contains(&s.0));
                        assert!(keep.iter().all(|&id| list.has_slot(id)), "seed {seed}");
                        assert!(dead.iter().all(|&id| !list.has_slot(id)), "seed {seed}");
                    }
                }
                list.check();
                let values: Vec<i64> = list
                    .values()
                    .map(|v| match v {
                        Value::Int(i) => *i,
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
