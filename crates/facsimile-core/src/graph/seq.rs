//! An order-statistic B+tree holding the slots of one list in sequence order.
//!
//! Leaves hold items in order and are linked both ways, so a scan can walk
//! right from any item (the RGA integration rule needs that). Every node
//! caches the number of visible items below it, so finding the item at a
//! visible index and computing the visible index of an item are both
//! `O(log n)`. Items leave a leaf only by a split, a merge or a removal; a
//! split or a merge reports every moved item so that the owner can keep its
//! id index current. Removing items touches only their leaves: a leaf left
//! small is merged into a neighbour, and freed nodes are reused.

/// Whether an item counts towards visible indices (items stored plainly,
/// as the tests' trees do).
#[cfg(test)]
pub(crate) trait SeqItem {
    fn is_visible(&self) -> bool;
}

/// The items of one leaf, stored as the owner likes (a list stores them
/// column by column, with ids as runs); `Vec<T>` stores them plainly.
pub(crate) trait Items: Default {
    /// One item, moved in or out.
    type Item;
    fn len(&self) -> usize;
    fn is_visible(&self, pos: usize) -> bool;
    fn item_visible(item: &Self::Item) -> bool;
    fn insert(&mut self, pos: usize, item: Self::Item);
    /// Moves the items from `at` on into new storage with room for
    /// `spare` more.
    fn split_off(&mut self, at: usize, spare: usize) -> Self;
    /// Moves every item of `other` to the end.
    fn append(&mut self, other: Self);
    /// Makes room for `n` more items without doubling.
    fn reserve_exact(&mut self, n: usize);
    fn capacity(&self) -> usize;
    fn shrink_to(&mut self, n: usize);

    fn visible_in(&self, range: std::ops::Range<usize>) -> u64 {
        range.filter(|&p| self.is_visible(p)).count() as u64
    }

    /// Starts fetching storage that a lookup in this leaf will read next,
    /// so that its cache misses overlap rather than follow each other.
    fn prefetch(&self) {}
}

#[cfg(test)]
impl<T: SeqItem> Items for Vec<T> {
    type Item = T;
    fn len(&self) -> usize {
        Vec::len(self)
    }
    fn is_visible(&self, pos: usize) -> bool {
        self[pos].is_visible()
    }
    fn item_visible(item: &T) -> bool {
        item.is_visible()
    }
    fn insert(&mut self, pos: usize, item: T) {
        Vec::insert(self, pos, item);
    }
    fn split_off(&mut self, at: usize, spare: usize) -> Self {
        let mut moved = Vec::with_capacity(self.len() - at + spare);
        moved.extend(self.drain(at..));
        moved
    }
    fn append(&mut self, other: Self) {
        self.reserve_exact(other.len());
        self.extend(other);
    }
    fn reserve_exact(&mut self, n: usize) {
        Vec::reserve_exact(self, n);
    }
    fn capacity(&self) -> usize {
        Vec::capacity(self)
    }
    fn shrink_to(&mut self, n: usize) {
        Vec::shrink_to(self, n);
    }
}

/// Index of a leaf inside the tree's arena. Stable until the leaf splits or
/// merges (moved items are reported).
pub(crate) type LeafId = u32;

/// The most items a leaf holds.
pub(crate) const LEAF_MAX: usize = 64;
/// Where a full leaf splits when the item does not go at its end: the items
/// from here on move to the start of a new leaf right after it.
pub(crate) const SPLIT_AT: usize = LEAF_MAX / 2;
const NODE_MAX: usize = 32;
const NONE: u32 = u32::MAX;
/// The parent of a freed node, which is on a free list.
const FREED: u32 = u32::MAX - 1;
/// After a removal, a leaf merges with a neighbour when both together hold
/// at most this many items: two neighbours that a removal touched hold more,
/// so leaves stay about a third full or more on average.
pub(crate) const MERGE_MAX: usize = LEAF_MAX * 3 / 4;
/// A leaf's storage grows and shrinks by this many items, not by doubling:
/// leaves split at random places are about two thirds full, and doubling
/// left room for 64 items in every one of them.
const LEAF_GROW: usize = 8;

/// Leaves per group of [`SeqTree::read_ahead`].
const AHEAD: usize = 4;

/// Makes room for one more item without doubling.
fn reserve_one<S: Items>(items: &mut S) {
    if items.len() == items.capacity() {
        items.reserve_exact(LEAF_GROW);
    }
}

/// Gives back room beyond one growth step.
fn trim<S: Items>(items: &mut S) {
    if items.capacity() - items.len() > 2 * LEAF_GROW {
        items.shrink_to(items.len() + LEAF_GROW);
    }
}

/// Gives back the room of a leaf that lost items in place when it is more
/// than half a leaf. A purge drops a quarter of a leaf or more, which the
/// inserts that follow fill again: shrinking to one growth step each time
/// reallocated the leaf's columns at every purge and again at the next
/// inserts.
fn trim_loose<S: Items>(items: &mut S) {
    if items.capacity() - items.len() > LEAF_MAX / 2 {
        items.shrink_to(items.len() + LEAF_GROW);
    }
}

/// Position of one item: its leaf and its offset in that leaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) leaf: LeafId,
    pub(crate) pos: usize,
}

#[derive(Debug, Clone)]
struct Leaf<S> {
    items: S,
    visible: u64,
    parent: u32,
    next: u32,
    prev: u32,
}

/// An inner node, its rows held in place: a descent or a climb through a
/// node of a large list then costs one or two cache misses, where rows on
/// the heap cost three (node, children, counts).
#[derive(Debug, Clone)]
struct Inner {
    children: Row<u32>,
    counts: Row<u64>,
    parent: u32,
}

/// Up to `NODE_MAX + 1` values in place (a node holds one more than
/// `NODE_MAX` until it splits), read as a slice.
#[derive(Clone, Copy)]
struct Row<T> {
    len: u8,
    items: [T; NODE_MAX + 1],
}

impl<T: Copy + Default> Default for Row<T> {
    fn default() -> Self {
        Row {
            len: 0,
            items: [T::default(); NODE_MAX + 1],
        }
    }
}

impl<T: Copy + Default> Row<T> {
    fn from_slice(values: &[T]) -> Self {
        let mut row = Row::default();
        row.items[..values.len()].copy_from_slice(values);
        row.len = values.len() as u8;
        row
    }

    fn insert(&mut self, at: usize, value: T) {
        let len = self.len as usize;
        self.items.copy_within(at..len, at + 1);
        self.items[at] = value;
        self.len += 1;
    }

    fn remove(&mut self, at: usize) -> T {
        let len = self.len as usize;
        let value = self.items[at];
        self.items.copy_within(at + 1..len, at);
        self.len -= 1;
        value
    }

    /// Moves the values from `at` on into a new row.
    fn split_off(&mut self, at: usize) -> Self {
        let tail = Row::from_slice(&self[at..]);
        self.len = at as u8;
        tail
    }
}

impl<T: Copy + Default> FromIterator<T> for Row<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        let mut row = Row::default();
        for value in iter {
            row.items[row.len as usize] = value;
            row.len += 1;
        }
        row
    }
}

impl<T> std::ops::Deref for Row<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        &self.items[..self.len as usize]
    }
}

impl<T> std::ops::DerefMut for Row<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.items[..self.len as usize]
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Row<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// The tree. `height == 0` means the root is a leaf.
#[derive(Debug, Clone)]
pub(crate) struct SeqTree<S> {
    leaves: Vec<Leaf<S>>,
    inners: Vec<Inner>,
    root: u32,
    height: u32,
    first: LeafId,
    len: usize,
    /// Number of visible items: read by every push and index check, so
    /// kept rather than summed over the root's children.
    visible: u64,
    /// Freed leaves and inner nodes, reused before the arenas grow.
    free_leaves: Vec<LeafId>,
    free_inners: Vec<u32>,
}

impl<S: Items> Default for SeqTree<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Items> SeqTree<S> {
    pub(crate) fn new() -> Self {
        SeqTree {
            leaves: vec![Leaf {
                items: S::default(),
                visible: 0,
                parent: NONE,
                next: NONE,
                prev: NONE,
            }],
            inners: Vec::new(),
            root: 0,
            height: 0,
            first: 0,
            len: 0,
            visible: 0,
            free_leaves: Vec::new(),
            free_inners: Vec::new(),
        }
    }

    fn alloc_leaf(&mut self, leaf: Leaf<S>) -> LeafId {
        match self.free_leaves.pop() {
            Some(id) => {
                self.leaves[id as usize] = leaf;
                id
            }
            None => {
                self.leaves.push(leaf);
                (self.leaves.len() - 1) as LeafId
            }
        }
    }

    fn alloc_inner(&mut self, inner: Inner) -> u32 {
        match self.free_inners.pop() {
            Some(id) => {
                self.inners[id as usize] = inner;
                id
            }
            None => {
                self.inners.push(inner);
                (self.inners.len() - 1) as u32
            }
        }
    }

    /// Builds a tree from items already in sequence order. `place` is told
    /// each leaf's items once they are all in.
    pub(crate) fn from_items(
        items: impl IntoIterator<Item = S::Item>,
        mut place: impl FnMut(&S, LeafId),
    ) -> Self {
        let mut tree = SeqTree::new();
        let mut iter = items.into_iter().peekable();
        if iter.peek().is_none() {
            return tree;
        }
        let fill = LEAF_MAX * 3 / 4;
        // Sized to what will come, so a short list holds no spare room.
        let leaves = iter.size_hint().0.div_ceil(fill);
        tree.leaves.clear();
        tree.leaves.reserve_exact(leaves);
        while iter.peek().is_some() {
            let id = tree.leaves.len() as LeafId;
            let mut chunk = S::default();
            chunk.reserve_exact(iter.size_hint().0.clamp(1, fill));
            for item in iter.by_ref().take(fill) {
                chunk.insert(chunk.len(), item);
            }
            tree.len += chunk.len();
            let visible = chunk.visible_in(0..chunk.len());
            place(&chunk, id);
            let prev = if id == 0 { NONE } else { id - 1 };
            if prev != NONE {
                tree.leaves[prev as usize].next = id;
            }
            tree.leaves.push(Leaf {
                items: chunk,
                visible,
                parent: NONE,
                next: NONE,
                prev,
            });
        }
        if tree.leaves.len() == 1 {
            tree.visible = tree.leaves[0].visible;
            return tree;
        }
        // Build the inner levels bottom-up.
        let mut level: Vec<(u32, u64)> = tree
            .leaves
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u32, l.visible))
            .collect();
        let mut height = 0;
        let node_fill = NODE_MAX * 3 / 4;
        while level.len() > 1 {
            let mut next_level = Vec::with_capacity(level.len() / node_fill + 1);
            for group in level.chunks(node_fill) {
                let id = tree.inners.len() as u32;
                for &(child, _) in group {
                    if height == 0 {
                        tree.leaves[child as usize].parent = id;
                    } else {
                        tree.inners[child as usize].parent = id;
                    }
                }
                let total = group.iter().map(|&(_, c)| c).sum();
                tree.inners.push(Inner {
                    children: group.iter().map(|&(c, _)| c).collect(),
                    counts: group.iter().map(|&(_, c)| c).collect(),
                    parent: NONE,
                });
                next_level.push((id, total));
            }
            level = next_level;
            height += 1;
        }
        tree.root = level[0].0;
        tree.height = height;
        tree.visible = level[0].1;
        tree
    }

    /// Number of items, visible or not.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Number of visible items.
    pub(crate) fn visible_len(&self) -> usize {
        self.visible as usize
    }

    /// Whether `c` points at an item.
    pub(crate) fn holds(&self, c: Cursor) -> bool {
        self.leaves
            .get(c.leaf as usize)
            .is_some_and(|l| c.pos < l.items.len())
    }

    /// Starts the cache misses of a pass over `leaves`, at leaf `i` of
    /// them: every [`AHEAD`] leaves, the records of the group after next
    /// and the items of the next group (whose records the call before
    /// read). A pass over scattered leaves of a large list otherwise takes
    /// each leaf's chain of misses one after another; this way a group's
    /// misses overlap.
    #[inline]
    pub(crate) fn read_ahead(&self, leaves: &[LeafId], i: usize) {
        if i % AHEAD != 0 {
            return;
        }
        let group = |g: usize| {
            let ahead = leaves.iter().skip(i + g * AHEAD).take(AHEAD);
            ahead.filter_map(|&l| self.leaves.get(l as usize))
        };
        for l in group(2) {
            mem_prefetch::prefetch_read_data::<_, 3>(l);
        }
        for l in group(1) {
            l.items.prefetch();
        }
    }

    /// Items of one leaf.
    pub(crate) fn leaf_items(&self, leaf: LeafId) -> &S {
        &self.leaves[leaf as usize].items
    }

    /// Cursor of the visible item at `index` (`index < visible_len()`).
    /// Each node is scanned from the end nearer to the index, so that
    /// reaching the end of the list (a push) costs no more than its start.
    pub(crate) fn locate_visible(&self, index: usize) -> Cursor {
        let mut index = index as u64;
        let mut node = self.root;
        let mut total = self.visible_len() as u64;
        for _ in 0..self.height {
            let inner = &self.inners[node as usize];
            let mut i = 0;
            if index < total / 2 {
                while i + 1 < inner.counts.len() && index >= inner.counts[i] {
                    index -= inner.counts[i];
                    i += 1;
                }
            } else {
                // Counting from the back: `after` items lie right of child i.
                let mut after = total - index;
                i = inner.counts.len() - 1;
                while i > 0 && after > inner.counts[i] {
                    after -= inner.counts[i];
                    i -= 1;
                }
                index = inner.counts[i] - after;
            }
            total = inner.counts[i];
            node = inner.children[i];
        }
        let items = &self.leaves[node as usize].items;
        items.prefetch();
        let mut visible = (0..items.len()).filter(|&p| items.is_visible(p));
        let found = if index < total / 2 {
            visible.nth(index as usize)
        } else {
            visible.nth_back((total - 1 - index) as usize)
        };
        Cursor {
            leaf: node,
            pos: found.expect("visible counts are consistent with leaf contents"),
        }
    }

    /// Number of visible items before the item at `c`.
    pub(crate) fn visible_index(&self, c: Cursor) -> usize {
        let leaf = &self.leaves[c.leaf as usize];
        let mut index = leaf.items.visible_in(0..c.pos);
        let mut child = c.leaf;
        let mut node = leaf.parent;
        while node != NONE {
            let inner = &self.inners[node as usize];
            for (i, &ch) in inner.children.iter().enumerate() {
                if ch == child {
                    break;
                }
                index += inner.counts[i];
            }
            child = node;
            node = inner.parent;
        }
        index as usize
    }

    /// The item after `c` in sequence order, if any.
    pub(crate) fn next(&self, c: Cursor) -> Option<Cursor> {
        let leaf = &self.leaves[c.leaf as usize];
        if c.pos + 1 < leaf.items.len() {
            return Some(Cursor {
                leaf: c.leaf,
                pos: c.pos + 1,
            });
        }
        let mut next = leaf.next;
        while next != NONE {
            if self.leaves[next as usize].items.len() != 0 {
                return Some(Cursor { leaf: next, pos: 0 });
            }
            next = self.leaves[next as usize].next;
        }
        None
    }

    /// The first item, if any.
    pub(crate) fn first(&self) -> Option<Cursor> {
        let mut leaf = self.first;
        while leaf != NONE {
            if self.leaves[leaf as usize].items.len() != 0 {
                return Some(Cursor { leaf, pos: 0 });
            }
            leaf = self.leaves[leaf as usize].next;
        }
        None
    }

    /// Mutates the item at `c` (`f` is given its leaf's items and its
    /// position), keeping visible counts right.
    pub(crate) fn update<R>(&mut self, c: Cursor, f: impl FnOnce(&mut S, usize) -> R) -> R {
        let items = &mut self.leaves[c.leaf as usize].items;
        let before = items.is_visible(c.pos);
        let r = f(items, c.pos);
        let after = items.is_visible(c.pos);
        if before != after {
            self.add_count(c.leaf, if after { 1 } else { -1 });
        }
        r
    }

    fn add_count(&mut self, leaf: LeafId, delta: i64) {
        self.visible = self.visible.wrapping_add_signed(delta);
        let l = &mut self.leaves[leaf as usize];
        l.visible = l.visible.wrapping_add_signed(delta);
        let mut child = leaf;
        let mut node = l.parent;
        while node != NONE {
            let inner = &mut self.inners[node as usize];
            // From the back: lists mostly grow at their end.
            let i = inner
                .children
                .iter()
                .rposition(|&c| c == child)
                .expect("child is listed by its parent");
            inner.counts[i] = inner.counts[i].wrapping_add_signed(delta);
            child = node;
            node = inner.parent;
        }
    }

    /// Inserts `item` so that it lands at position `pos` of `leaf` (items
    /// from `pos` on shift right). `on_move` is given the items that a
    /// split moved to another leaf. Returns the cursor of the new item.
    pub(crate) fn insert(
        &mut self,
        leaf: LeafId,
        pos: usize,
        item: S::Item,
        mut on_move: impl FnMut(&S, LeafId),
    ) -> Cursor {
        let visible = S::item_visible(&item);
        self.len += 1;
        let mut target = Cursor { leaf, pos };
        let len = self.leaves[leaf as usize].items.len();
        if len >= LEAF_MAX {
            // Appending at a full leaf's end starts a new leaf and moves
            // nothing: a list that grows at its end keeps full leaves and
            // never re-files its items.
            let at = if pos == len { len } else { SPLIT_AT };
            let new_leaf = self.split_leaf(leaf, at, &mut on_move);
            if pos >= at {
                target = Cursor {
                    leaf: new_leaf,
                    pos: pos - at,
                };
            }
        }
        let items = &mut self.leaves[target.leaf as usize].items;
        reserve_one(items);
        items.insert(target.pos, item);
        if visible {
            self.add_count(target.leaf, 1);
        }
        target
    }

    /// Inserts `item` after the item at `c`.
    pub(crate) fn insert_after(
        &mut self,
        c: Cursor,
        item: S::Item,
        on_move: impl FnMut(&S, LeafId),
    ) -> Cursor {
        self.insert(c.leaf, c.pos + 1, item, on_move)
    }

    /// Inserts `item` before every other item.
    pub(crate) fn insert_first(
        &mut self,
        item: S::Item,
        on_move: impl FnMut(&S, LeafId),
    ) -> Cursor {
        let leaf = self.first;
        self.insert(leaf, 0, item, on_move)
    }

    /// Moves the items of `leaf` from `at` on into a new leaf placed right
    /// after it.
    fn split_leaf(
        &mut self,
        leaf: LeafId,
        at: usize,
        on_move: &mut impl FnMut(&S, LeafId),
    ) -> LeafId {
        let old = &mut self.leaves[leaf as usize];
        // A leaf started by an append is mostly filled by more appends: it
        // gets its full room at once rather than a step at a time.
        let spare = if at == old.items.len() {
            LEAF_MAX
        } else {
            LEAF_GROW
        };
        let moved = old.items.split_off(at, spare);
        trim(&mut old.items);
        let moved_visible = moved.visible_in(0..moved.len());
        old.visible -= moved_visible;
        let next = old.next;
        let parent = old.parent;
        let new_id = self.alloc_leaf(Leaf {
            items: moved,
            visible: moved_visible,
            parent,
            next,
            prev: leaf,
        });
        self.leaves[leaf as usize].next = new_id;
        on_move(&self.leaves[new_id as usize].items, new_id);
        if next != NONE {
            self.leaves[next as usize].prev = new_id;
        }
        self.attach_sibling(parent, leaf, new_id, moved_visible, true);
        new_id
    }

    /// Registers `new` (a leaf when `is_leaf`, else an inner node) in
    /// `parent` right after `old`, moving `moved` visible items from `old`'s
    /// count to `new`'s. Splits the parent when it overflows.
    fn attach_sibling(&mut self, parent: u32, old: u32, new: u32, moved: u64, is_leaf: bool) {
        if parent == NONE {
            // The root split: grow a new root above both halves.
            let old_count = self.count_of(old, is_leaf);
            let root = self.alloc_inner(Inner {
                children: Row::from_slice(&[old, new]),
                counts: Row::from_slice(&[old_count, moved]),
                parent: NONE,
            });
            self.set_parent(old, is_leaf, root);
            self.set_parent(new, is_leaf, root);
            self.root = root;
            self.height += 1;
            return;
        }
        let inner = &mut self.inners[parent as usize];
        let i = inner
            .children
            .iter()
            .position(|&c| c == old)
            .expect("child is listed by its parent");
        inner.counts[i] -= moved;
        inner.children.insert(i + 1, new);
        inner.counts.insert(i + 1, moved);
        if inner.children.len() > NODE_MAX {
            self.split_inner(parent, is_leaf);
        }
    }

    fn split_inner(&mut self, node: u32, children_are_leaves: bool) {
        let old = &mut self.inners[node as usize];
        let half = old.children.len() / 2;
        let children = old.children.split_off(half);
        let counts = old.counts.split_off(half);
        let moved: u64 = counts.iter().sum();
        let parent = old.parent;
        let new_id = self.alloc_inner(Inner {
            children,
            counts,
            parent,
        });
        for i in 0..self.inners[new_id as usize].children.len() {
            let c = self.inners[new_id as usize].children[i];
            self.set_parent(c, children_are_leaves, new_id);
        }
        self.attach_sibling(parent, node, new_id, moved, false);
    }

    fn count_of(&self, id: u32, is_leaf: bool) -> u64 {
        if is_leaf {
            self.leaves[id as usize].visible
        } else {
            self.inners[id as usize].counts.iter().sum()
        }
    }

    fn set_parent(&mut self, id: u32, is_leaf: bool, parent: u32) {
        if is_leaf {
            self.leaves[id as usize].parent = parent;
        } else {
            self.inners[id as usize].parent = parent;
        }
    }

    /// Lets `f` change or drop invisible items of `leaf` in one go (it must
    /// leave visible items as they are). Call [`SeqTree::rebalance`] on the
    /// leaf afterwards when items went.
    pub(crate) fn edit_invisible<R>(&mut self, leaf: LeafId, f: impl FnOnce(&mut S) -> R) -> R {
        let l = &mut self.leaves[leaf as usize];
        let before = l.items.len();
        let r = f(&mut l.items);
        let after = l.items.len();
        if after < before {
            trim_loose(&mut l.items);
            self.len -= before - after;
        }
        debug_assert_eq!(
            l.items.visible_in(0..after),
            l.visible,
            "only invisible items change"
        );
        r
    }

    /// Merges `leaf`, after removals, with a neighbour when both together
    /// are small (an empty leaf always goes, unless it is the only one).
    /// `on_move` is given the items moved to another leaf.
    pub(crate) fn rebalance(&mut self, leaf: LeafId, mut on_move: impl FnMut(&S, LeafId)) {
        let l = &self.leaves[leaf as usize];
        if l.parent == FREED {
            return;
        }
        let (n, prev, next) = (l.items.len(), l.prev, l.next);
        if n > MERGE_MAX {
            // Nothing can join it: spare a look at the neighbours.
            return;
        }
        let fits = |other: u32| {
            other != NONE && (n == 0 || n + self.leaves[other as usize].items.len() <= MERGE_MAX)
        };
        if fits(prev) {
            self.merge_leaves(prev, leaf, &mut on_move);
        } else if fits(next) {
            self.merge_leaves(leaf, next, &mut on_move);
        }
        self.shrink_root();
    }

    /// Moves every item of `src` to the end of `dst`, its predecessor, and
    /// frees `src`.
    fn merge_leaves(&mut self, dst: LeafId, src: LeafId, on_move: &mut impl FnMut(&S, LeafId)) {
        let visible = self.leaves[src as usize].visible;
        if visible != 0 {
            self.add_count(src, -(visible as i64));
            self.add_count(dst, visible as i64);
        }
        let s = &mut self.leaves[src as usize];
        let items = std::mem::take(&mut s.items);
        let (next, parent) = (s.next, s.parent);
        s.parent = FREED;
        s.next = NONE;
        s.prev = NONE;
        on_move(&items, dst);
        let d = &mut self.leaves[dst as usize];
        d.items.append(items);
        d.next = next;
        if next != NONE {
            self.leaves[next as usize].prev = dst;
        }
        self.free_leaves.push(src);
        self.detach(parent, src);
    }

    /// Removes `child` from inner node `node`, freeing nodes left empty.
    fn detach(&mut self, node: u32, child: u32) {
        let inner = &mut self.inners[node as usize];
        let i = inner
            .children
            .iter()
            .position(|&c| c == child)
            .expect("child is listed by its parent");
        debug_assert_eq!(inner.counts[i], 0, "a detached node holds nothing visible");
        inner.children.remove(i);
        inner.counts.remove(i);
        if inner.children.is_empty() {
            // Never the root: the leaf merged into lies below it.
            let parent = inner.parent;
            inner.parent = FREED;
            self.free_inners.push(node);
            self.detach(parent, node);
        }
    }

    /// Drops roots that have a single child.
    fn shrink_root(&mut self) {
        while self.height > 0 && self.inners[self.root as usize].children.len() == 1 {
            let old = self.root;
            let child = self.inners[old as usize].children[0];
            self.inners[old as usize] = Inner {
                children: Row::default(),
                counts: Row::default(),
                parent: FREED,
            };
            self.free_inners.push(old);
            self.height -= 1;
            self.root = child;
            self.set_parent(child, self.height == 0, NONE);
        }
    }

    /// The leaves in sequence order from `leaf` on, with their items.
    pub(crate) fn leaves_from(&self, leaf: LeafId) -> impl Iterator<Item = (LeafId, &S)> + '_ {
        let mut leaf = leaf;
        std::iter::from_fn(move || {
            if leaf == NONE {
                return None;
            }
            let id = leaf;
            let l = &self.leaves[leaf as usize];
            leaf = l.next;
            Some((id, &l.items))
        })
    }

    /// The leaves in sequence order, with their items.
    pub(crate) fn leaves(&self) -> impl Iterator<Item = (LeafId, &S)> + '_ {
        self.leaves_from(self.first)
    }

    /// Checks every cached count and link; used by tests.
    #[cfg(any(test, feature = "sim"))]
    pub(crate) fn check(&self) {
        fn walk<S: Items>(t: &SeqTree<S>, node: u32, height: u32, parent: u32) -> u64 {
            if height == 0 {
                let l = &t.leaves[node as usize];
                assert_eq!(l.parent, parent);
                let v = l.items.visible_in(0..l.items.len());
                assert_eq!(v, l.visible);
                v
            } else {
                let n = &t.inners[node as usize];
                assert_eq!(n.parent, parent);
                let mut total = 0;
                for (i, &c) in n.children.iter().enumerate() {
                    let v = walk(t, c, height - 1, node);
                    assert_eq!(v, n.counts[i]);
                    total += v;
                }
                total
            }
        }
        let total = walk(self, self.root, self.height, NONE);
        assert_eq!(total as usize, self.visible_len());
        assert_eq!(self.leaves().map(|(_, l)| l.len()).sum::<usize>(), self.len);
        // The linked leaves are exactly the leaves not freed, linked both ways.
        let mut linked = 0;
        let mut prev = NONE;
        let mut leaf = self.first;
        while leaf != NONE {
            let l = &self.leaves[leaf as usize];
            assert_ne!(l.parent, FREED);
            assert_eq!(l.prev, prev);
            linked += 1;
            prev = leaf;
            leaf = l.next;
        }
        let live = self.leaves.len() - self.free_leaves.len();
        assert_eq!(linked, live);
        for &f in &self.free_leaves {
            assert_eq!(self.leaves[f as usize].parent, FREED);
        }
        for &f in &self.free_inners {
            assert_eq!(self.inners[f as usize].parent, FREED);
        }
    }
}

/// Item by item access, for trees that store items plainly.
#[cfg(test)]
impl<T: SeqItem> SeqTree<Vec<T>> {
    pub(crate) fn get(&self, c: Cursor) -> &T {
        &self.leaves[c.leaf as usize].items[c.pos]
    }

    /// Removes the item at `c` and returns it. Call [`SeqTree::rebalance`]
    /// on its leaf afterwards.
    pub(crate) fn remove(&mut self, c: Cursor) -> T {
        let items = &mut self.leaves[c.leaf as usize].items;
        let item = items.remove(c.pos);
        trim(items);
        self.len -= 1;
        if item.is_visible() {
            self.add_count(c.leaf, -1);
        }
        item
    }

    /// Iterates all items in sequence order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.leaves().flat_map(|(_, l)| l.iter())
    }

    /// Consumes the tree, yielding items in order.
    pub(crate) fn into_items(self) -> Vec<T> {
        let mut out = Vec::with_capacity(self.len);
        let mut leaves: Vec<Option<Leaf<Vec<T>>>> = self.leaves.into_iter().map(Some).collect();
        let mut leaf = self.first;
        while leaf != NONE {
            let l = leaves[leaf as usize]
                .take()
                .expect("leaves are linked once");
            leaf = l.next;
            out.extend(l.items);
        }
        out
    }
}
#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};

    #[derive(Debug, Clone, PartialEq)]
    struct It(u32, bool);
    impl SeqItem for It {
        fn is_visible(&self) -> bool {
            self.1
        }
    }

    #[test]
    fn random_inserts_and_visibility_match_a_vec() {
        for seed in 0..20 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut tree = SeqTree::new();
            let mut model: Vec<It> = Vec::new();
            for n in 0..3000u32 {
                if !model.is_empty() && rng.random_bool(0.3) {
                    let i = rng.random_range(0..model.len());
                    // Find cursor of the i-th item by scanning.
                    let mut c = tree.first().unwrap();
                    for _ in 0..i {
                        c = tree.next(c).unwrap();
                    }
                    let v = !model[i].1;
                    model[i].1 = v;
                    tree.update(c, |items: &mut Vec<It>, p| items[p].1 = v);
                } else {
                    let i = rng.random_range(0..=model.len());
                    let item = It(n, rng.random_bool(0.7));
                    model.insert(i, item.clone());
                    if i == 0 {
                        tree.insert_first(item, |_, _| {});
                    } else {
                        let mut c = tree.first().unwrap();
                        for _ in 0..i - 1 {
                            c = tree.next(c).unwrap();
                        }
                        tree.insert_after(c, item, |_, _| {});
                    }
                }
            }
            tree.check();
            let items: Vec<It> = tree.iter().cloned().collect();
            assert_eq!(items, model);
            let visible: Vec<&It> = model.iter().filter(|i| i.1).collect();
            assert_eq!(tree.visible_len(), visible.len());
            for (k, want) in visible.iter().enumerate() {
                let c = tree.locate_visible(k);
                assert_eq!(tree.get(c), *want);
                assert_eq!(tree.visible_index(c), k);
            }
            let rebuilt = SeqTree::from_items(tree.clone().into_items(), |_, _| {});
            rebuilt.check();
            assert_eq!(rebuilt.iter().cloned().collect::<Vec<_>>(), model);
        }
    }

    /// The cursor of every item, in order.
    fn cursors<S: Items>(tree: &SeqTree<S>) -> Vec<Cursor> {
        std::iter::successors(tree.first(), |&c| tree.next(c)).collect()
    }

    /// Inserts anywhere, and removals of random batches (leaves emptied,
    /// merged across parents, the root shrinking and growing again): the
    /// order, the counts and the reported moves stay right.
    #[test]
    fn removals_in_place_match_a_vec() {
        for seed in 0..30 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut tree = SeqTree::new();
            let mut model: Vec<It> = Vec::new();
            let mut next = 0u32;
            for round in 0..40 {
                let grow = if round % 10 < 7 { 400 } else { 20 };
                for _ in 0..rng.random_range(0..grow) {
                    let i = rng.random_range(0..=model.len());
                    let item = It(next, rng.random_bool(0.7));
                    next += 1;
                    model.insert(i, item.clone());
                    if i == 0 {
                        tree.insert_first(item, |_, _| {});
                    } else {
                        tree.insert_after(cursors(&tree)[i - 1], item, |_, _| {});
                    }
                }
                // Remove a random share, sometimes nearly everything.
                let share = [0.05, 0.3, 0.9, 1.0][rng.random_range(0..4)];
                let all = cursors(&tree);
                let mut doomed: Vec<(Cursor, u32)> = all
                    .iter()
                    .filter(|_| rng.random_bool(share))
                    .map(|&c| (c, tree.get(c).0))
                    .collect();
                // Within a leaf from the back, so that the positions still
                // to remove stay where they were.
                doomed.sort_by_key(|(c, _)| (c.leaf, std::cmp::Reverse(c.pos)));
                let gone: std::collections::HashSet<u32> = doomed.iter().map(|d| d.1).collect();
                let mut touched = Vec::new();
                for &(c, item) in &doomed {
                    assert_eq!(tree.remove(c).0, item);
                    touched.push(c.leaf);
                }
                for leaf in touched {
                    let mut moved = Vec::new();
                    tree.rebalance(leaf, |items: &Vec<It>, to| {
                        moved.extend(items.iter().map(|item| (item.0, to)))
                    });
                    for (item, to) in moved {
                        assert!(tree.leaf_items(to).iter().any(|i| i.0 == item));
                    }
                }
                model.retain(|i| !gone.contains(&i.0));
                tree.check();
                assert_eq!(
                    tree.iter().cloned().collect::<Vec<_>>(),
                    model,
                    "seed {seed}"
                );
                let visible: Vec<&It> = model.iter().filter(|i| i.1).collect();
                assert_eq!(tree.visible_len(), visible.len());
                for (k, want) in visible.iter().enumerate() {
                    let c = tree.locate_visible(k);
                    assert_eq!(tree.get(c), *want);
                    assert_eq!(tree.visible_index(c), k);
                }
            }
            assert!(tree.leaves.len() < 200, "freed leaves are reused");
        }
    }
}
