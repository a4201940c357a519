//! Handles: cheap, clonable names of one object on one node.

use std::cmp::Ordering;
use std::sync::Arc;

use facsimile_core::{Input as CoreInput, ObjectId, Prop, Replica, Value as CoreValue};
use rustc_hash::FxHashSet;
use smol_str::SmolStr;

use crate::error::{EngineError, Result};
use crate::events::{ChangeEvent, Listener, Subscription};
use crate::node::Node;
use crate::value::{Input, Value};

/// A map of this node's document. Reads and writes go through it; writes
/// replicate. Equal handles name the same object on the same node.
#[derive(Clone)]
pub struct MapRef {
    node: Node,
    id: ObjectId,
}

/// An array of this node's document. Every mutating method of the
/// JavaScript `Array` is here; each call is one change, sent as one message
/// and reported as one change event with no property (a mass change), except
/// [`ArrayRef::set`], which reports its index.
#[derive(Clone)]
pub struct ArrayRef {
    node: Node,
    id: ObjectId,
}

/// A map or an array.
#[derive(Clone, Debug, PartialEq)]
pub enum ObjectRef {
    /// A map.
    Map(MapRef),
    /// An array.
    Array(ArrayRef),
}

impl ObjectRef {
    /// The object's id on its node.
    pub fn id(&self) -> ObjectId {
        match self {
            ObjectRef::Map(m) => m.id(),
            ObjectRef::Array(a) => a.id(),
        }
    }

    /// The node holding it.
    pub fn node(&self) -> &Node {
        match self {
            ObjectRef::Map(m) => &m.node,
            ObjectRef::Array(a) => &a.node,
        }
    }

    /// The map, if it is one.
    pub fn as_map(&self) -> Option<&MapRef> {
        match self {
            ObjectRef::Map(m) => Some(m),
            ObjectRef::Array(_) => None,
        }
    }

    /// The array, if it is one.
    pub fn as_array(&self) -> Option<&ArrayRef> {
        match self {
            ObjectRef::Array(a) => Some(a),
            ObjectRef::Map(_) => None,
        }
    }

    /// Calls `f` for every change to this object.
    pub fn on(&self, f: impl Fn(&ChangeEvent) + Send + Sync + 'static) -> Subscription {
        self.node()
            .subscribe(Listener::Object(self.id(), Arc::new(f)))
    }

    /// A deep copy as JSON.
    ///
    /// # Errors
    /// As [`Value::to_json`].
    pub fn to_json(&self) -> Result<serde_json::Value> {
        match self {
            ObjectRef::Map(m) => m.to_json(),
            ObjectRef::Array(a) => a.to_json(),
        }
    }
}

macro_rules! handle_common {
    ($t:ident) => {
        impl $t {
            pub(crate) fn new(node: Node, id: ObjectId) -> Self {
                $t { node, id }
            }

            /// The object's id on its node.
            pub fn id(&self) -> ObjectId {
                self.node.resolve(self.id)
            }

            /// The node holding it.
            pub fn node(&self) -> &Node {
                &self.node
            }

            /// Calls `f` for every change to this object (not to objects it
            /// contains).
            pub fn on(&self, f: impl Fn(&ChangeEvent) + Send + Sync + 'static) -> Subscription {
                self.node
                    .subscribe(Listener::Object(self.id(), Arc::new(f)))
            }

            /// Whether the object is still in this node's document.
            pub fn exists(&self) -> bool {
                self.node.read(|r| r.kind(self.id()).is_some())
            }

            /// A deep copy as JSON.
            ///
            /// # Errors
            /// As [`Value::to_json`].
            pub fn to_json(&self) -> Result<serde_json::Value> {
                Value::from(self.clone()).to_json()
            }
        }

        impl PartialEq for $t {
            fn eq(&self, other: &Self) -> bool {
                self.node.same_node(&other.node) && self.id() == other.id()
            }
        }

        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    "{}({:?} on {})",
                    stringify!($t),
                    self.id(),
                    self.node.hostname()
                )
            }
        }
    };
}

handle_common!(MapRef);
handle_common!(ArrayRef);

impl From<&MapRef> for ObjectRef {
    fn from(m: &MapRef) -> Self {
        ObjectRef::Map(m.clone())
    }
}

impl From<MapRef> for ObjectRef {
    fn from(m: MapRef) -> Self {
        ObjectRef::Map(m)
    }
}

impl From<&ArrayRef> for ObjectRef {
    fn from(a: &ArrayRef) -> Self {
        ObjectRef::Array(a.clone())
    }
}

impl From<ArrayRef> for ObjectRef {
    fn from(a: ArrayRef) -> Self {
        ObjectRef::Array(a)
    }
}

impl From<&ObjectRef> for ObjectRef {
    fn from(o: &ObjectRef) -> Self {
        o.clone()
    }
}

impl From<MapRef> for Value {
    fn from(m: MapRef) -> Self {
        Value::Map(m)
    }
}

impl From<ArrayRef> for Value {
    fn from(a: ArrayRef) -> Self {
        Value::Array(a)
    }
}

impl MapRef {
    /// The value of a key.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.node.read(|r| {
            let v = r.map_get(self.id(), key).ok()??;
            Some(self.node.value(r, v))
        })
    }

    /// Sets a key. Writing the value already there sends and fires nothing.
    ///
    /// # Errors
    /// [`Error::NoSender`](crate::Error::NoSender), [`EngineError::UnknownObject`](crate::EngineError::UnknownObject), [`EngineError::WrongKind`](crate::EngineError::WrongKind),
    /// [`EngineError::Detached`](crate::EngineError::Detached), [`Error::ForeignHandle`](crate::Error::ForeignHandle), [`EngineError::Syncing`](crate::EngineError::Syncing).
    pub fn set(&self, key: &str, x: impl Into<Input>) -> Result<()> {
        let input = x.into().into_core(&self.node)?;
        self.node
            .write(|r| r.map_set(self.id(), key, input))
            .map(|_| ())
    }

    /// Deletes a key. Returns whether it was there.
    ///
    /// # Errors
    /// As [`MapRef::set`].
    pub fn delete(&self, key: &str) -> Result<bool> {
        self.node
            .write(|r| r.map_delete(self.id(), key))
            .map(|old| old.is_some())
    }

    /// Sets several keys as one change, sent as one message (the
    /// `Object.assign` case).
    ///
    /// # Errors
    /// As [`MapRef::set`]. Every value is checked before the first key is
    /// written, so a refused assignment writes nothing, with one exception:
    /// whether a reference to an object removed from the document is
    /// refused ([`EngineError::Detached`]) depends on this node's
    /// reclamation passes, and is only known as its key is written. Keys
    /// whose values hold references are written first, so that refusal too
    /// writes nothing unless two or more values hold references.
    pub fn assign<K: AsRef<str>, V: Into<Input>>(
        &self,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        let mut entries = entries
            .into_iter()
            .map(|(k, v)| Ok((SmolStr::from(k.as_ref()), v.into().into_core(&self.node)?)))
            .collect::<Result<Vec<_>>>()?;
        if entries.iter().any(|(_, v)| holds_ref(v)) {
            first_refs(&mut entries);
        }
        self.node.write(|r| {
            // The target's own checks (kind, sync, lock) come first in the
            // first write, before it changes anything.
            entries.iter().try_for_each(|(_, v)| refs_exist(r, v))?;
            r.begin();
            let result = entries
                .into_iter()
                .try_for_each(|(k, v)| r.map_set(self.id(), &k, v).map(|_| ()));
            r.commit();
            result
        })
    }

    /// The keys, in key order (the same on every node).
    pub fn keys(&self) -> Vec<String> {
        self.node
            .read(|r| r.map_keys(self.id()))
            .map(|ks| ks.into_iter().map(|k| k.to_string()).collect())
            .unwrap_or_default()
    }

    /// The entries, in key order.
    ///
    /// # Errors
    /// [`EngineError::UnknownObject`](crate::EngineError::UnknownObject) or [`EngineError::WrongKind`](crate::EngineError::WrongKind).
    pub fn entries(&self) -> Result<Vec<(String, Value)>> {
        self.node.try_read(|r| {
            let mut out = Vec::with_capacity(r.map_len(self.id())?);
            r.map_for_each(self.id(), |k, v, r| {
                out.push((k.to_string(), self.node.value(r, v.clone())));
            })?;
            Ok(out)
        })
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.node.read(|r| r.map_len(self.id())).unwrap_or(0)
    }

    /// Whether the map has no keys.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the key is set.
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Calls `f` for every change of one key.
    pub fn on_key(
        &self,
        key: &str,
        f: impl Fn(&ChangeEvent) + Send + Sync + 'static,
    ) -> Subscription {
        self.node.subscribe(Listener::Prop(
            self.id(),
            Prop::Key(key.into()),
            Arc::new(f),
        ))
    }
}

impl ArrayRef {
    /// The element at `index`.
    pub fn get(&self, index: usize) -> Option<Value> {
        self.node.read(|r| {
            let v = r.list_get(self.id(), index).ok()??;
            Some(self.node.value(r, v))
        })
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.node.read(|r| r.list_len(self.id())).unwrap_or(0)
    }

    /// Whether the array is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All elements, in order.
    ///
    /// # Errors
    /// [`EngineError::UnknownObject`](crate::EngineError::UnknownObject) or [`EngineError::WrongKind`](crate::EngineError::WrongKind).
    pub fn to_vec(&self) -> Result<Vec<Value>> {
        self.node.try_read(|r| {
            let mut out = Vec::with_capacity(r.list_len(self.id())?);
            r.list_for_each(self.id(), |v, r| out.push(self.node.value(r, v.clone())))?;
            Ok(out)
        })
    }

    fn splice_inputs(&self, start: usize, delete: usize, items: Vec<Input>) -> Result<Vec<Value>> {
        let items = items
            .into_iter()
            .map(|i| i.into_core(&self.node))
            .collect::<Result<Vec<_>>>()?;
        self.node.write(|r| {
            let removed = r.list_splice(self.id(), start, delete, items)?;
            Ok(removed.into_iter().map(|v| self.node.value(r, v)).collect())
        })
    }

    /// Removes `delete` elements from `start` and inserts `items` there.
    /// Returns the removed elements.
    ///
    /// # Errors
    /// [`EngineError::IndexOutOfBounds`](crate::EngineError::IndexOutOfBounds) when `start > len`, and the errors of
    /// [`MapRef::set`].
    pub fn splice<V: Into<Input>>(
        &self,
        start: usize,
        delete: usize,
        items: impl IntoIterator<Item = V>,
    ) -> Result<Vec<Value>> {
        self.splice_inputs(start, delete, items.into_iter().map(Into::into).collect())
    }

    /// Appends an element.
    ///
    /// # Errors
    /// As [`MapRef::set`].
    pub fn push(&self, x: impl Into<Input>) -> Result<()> {
        let input = x.into().into_core(&self.node)?;
        self.node
            .write(|r| {
                let len = r.list_len(self.id())?;
                r.list_splice(self.id(), len, 0, std::iter::once(input))
            })
            .map(|_| ())
    }

    /// Appends several elements as one change.
    ///
    /// # Errors
    /// As [`MapRef::set`].
    pub fn extend<V: Into<Input>>(&self, items: impl IntoIterator<Item = V>) -> Result<()> {
        let len = self.len();
        self.splice(len, 0, items).map(|_| ())
    }

    /// Removes and returns the last element.
    ///
    /// # Errors
    /// As [`MapRef::set`].
    pub fn pop(&self) -> Result<Option<Value>> {
        self.node.write(|r| {
            let len = r.list_len(self.id())?;
            if len == 0 {
                return Ok(None);
            }
            let removed = r.list_splice(self.id(), len - 1, 1, vec![])?;
            Ok(removed.into_iter().next().map(|v| self.node.value(r, v)))
        })
    }

    /// Removes and returns the first element.
    ///
    /// # Errors
    /// As [`MapRef::set`].
    pub fn shift(&self) -> Result<Option<Value>> {
        Ok(self.splice(0, 1, Vec::<Input>::new())?.into_iter().next())
    }

    /// Inserts elements at the front, in order.
    ///
    /// # Errors
    /// As [`MapRef::set`].
    pub fn unshift<V: Into<Input>>(&self, items: impl IntoIterator<Item = V>) -> Result<()> {
        self.splice(0, 0, items).map(|_| ())
    }

    /// Inserts an element at `index`.
    ///
    /// # Errors
    /// [`EngineError::IndexOutOfBounds`](crate::EngineError::IndexOutOfBounds) when `index > len`, and the errors of
    /// [`MapRef::set`].
    pub fn insert(&self, index: usize, x: impl Into<Input>) -> Result<()> {
        self.splice(index, 0, [x]).map(|_| ())
    }

    /// Removes and returns the element at `index`.
    ///
    /// # Errors
    /// [`EngineError::IndexOutOfBounds`](crate::EngineError::IndexOutOfBounds) when `index >= len`, and the errors of
    /// [`MapRef::set`].
    pub fn remove(&self, index: usize) -> Result<Value> {
        self.node.write(|r| {
            let len = r.list_len(self.id())?;
            let out_of_bounds = EngineError::IndexOutOfBounds {
                object: self.id(),
                index,
                len,
            };
            if index >= len {
                return Err(out_of_bounds);
            }
            let removed = r.list_splice(self.id(), index, 1, vec![])?;
            let removed = removed.into_iter().next().ok_or(out_of_bounds)?;
            Ok(self.node.value(r, removed))
        })
    }

    /// Sets the element at `index`; at `len` it appends, past it pads with
    /// `Null` (as a JavaScript assignment past the end would with holes).
    /// Reports a change of that index.
    ///
    /// # Errors
    /// As [`MapRef::set`].
    pub fn set(&self, index: usize, x: impl Into<Input>) -> Result<()> {
        let input = x.into().into_core(&self.node)?;
        self.node
            .write(|r| r.list_set(self.id(), index, input))
            .map(|_| ())
    }

    /// Shortens the array to `len` elements.
    ///
    /// # Errors
    /// As [`MapRef::set`].
    pub fn truncate(&self, len: usize) -> Result<()> {
        self.node
            .write(|r| {
                let n = r.list_len(self.id())?;
                if len >= n {
                    return Ok(Vec::new());
                }
                r.list_splice(self.id(), len, n - len, vec![])
            })
            .map(|_| ())
    }

    /// Removes every element.
    ///
    /// # Errors
    /// As [`MapRef::set`].
    pub fn clear(&self) -> Result<()> {
        self.truncate(0)
    }

    /// Writes `x` at every index of `range` (clamped to the array).
    ///
    /// # Errors
    /// As [`MapRef::set`].
    pub fn fill(
        &self,
        x: impl Into<Input>,
        range: impl std::ops::RangeBounds<usize>,
    ) -> Result<()> {
        let input = x.into();
        let len = self.len();
        let (a, b) = bounds(range, len);
        let writes = (a..b)
            .map(|i| Ok((i, input.clone().into_core(&self.node)?)))
            .collect::<Result<Vec<_>>>()?;
        self.node
            .write(|r| r.list_set_many(self.id(), writes))
            .map(|_| ())
    }

    /// Copies the elements of `source` to the positions starting at
    /// `target`, as JavaScript's `copyWithin` (overlaps handled as a copy).
    ///
    /// # Errors
    /// As [`MapRef::set`].
    pub fn copy_within(
        &self,
        source: impl std::ops::RangeBounds<usize>,
        target: usize,
    ) -> Result<()> {
        let values = self.to_vec()?;
        let len = values.len();
        let (a, b) = bounds(source, len);
        if target >= len {
            return Ok(());
        }
        let n = (b - a).min(len - target);
        let writes = (0..n)
            .map(|k| {
                Ok((
                    target + k,
                    Input::from(&values[a + k]).into_core(&self.node)?,
                ))
            })
            .collect::<Result<Vec<_>>>()?;
        self.node
            .write(|r| r.list_set_many(self.id(), writes))
            .map(|_| ())
    }

    /// Reverses the array in place.
    ///
    /// # Errors
    /// As [`MapRef::set`].
    pub fn reverse(&self) -> Result<()> {
        self.reorder(|values| (0..values.len()).rev().collect())
    }

    /// Sorts the array with a comparator (stable, as JavaScript's `sort`).
    /// Concurrent sorts on several nodes never duplicate or drop an element.
    ///
    /// # Errors
    /// As [`MapRef::set`].
    pub fn sort_by(&self, mut compare: impl FnMut(&Value, &Value) -> Ordering) -> Result<()> {
        self.reorder(|values| {
            let mut order: Vec<usize> = (0..values.len()).collect();
            order.sort_by(|&a, &b| compare(&values[a], &values[b]));
            order
        })
    }

    /// Computes a new order outside the node's lock (so the comparator may
    /// read the store) and applies it if the array did not change meanwhile.
    fn reorder(&self, mut order_of: impl FnMut(&[Value]) -> Vec<usize>) -> Result<()> {
        loop {
            let (values, stamp) = self.node.try_read(|r| {
                let values = r.list_values(self.id())?;
                let stamp = r.list_version(self.id())?;
                let values: Vec<Value> =
                    values.into_iter().map(|v| self.node.value(r, v)).collect();
                Ok((values, stamp))
            })?;
            let order = order_of(&values);
            let applied = self.node.write(|r| {
                if r.list_version(self.id())? != stamp {
                    return Ok(false);
                }
                r.list_reorder(self.id(), &order)?;
                Ok(true)
            })?;
            if applied {
                return Ok(());
            }
        }
    }

    /// Calls `f` for every change reported at one index.
    pub fn on_index(
        &self,
        index: usize,
        f: impl Fn(&ChangeEvent) + Send + Sync + 'static,
    ) -> Subscription {
        self.node
            .subscribe(Listener::Prop(self.id(), Prop::Index(index), Arc::new(f)))
    }
}

/// Whether a value stores a reference to an existing object.
fn holds_ref(v: &CoreInput) -> bool {
    match v {
        CoreInput::Value(v) => matches!(v, CoreValue::Ref(_)),
        CoreInput::Map(entries) => entries.iter().any(|(_, v)| holds_ref(v)),
        CoreInput::Array(items) => items.iter().any(holds_ref),
    }
}

/// Refuses a reference to an object this node does not have, as the
/// engine would when the key is written.
fn refs_exist(r: &Replica, v: &CoreInput) -> Result<(), EngineError> {
    match v {
        CoreInput::Value(CoreValue::Ref(o)) if r.kind(*o).is_none() => {
            Err(EngineError::UnknownObject(*o))
        }
        CoreInput::Value(_) => Ok(()),
        CoreInput::Map(entries) => entries.iter().try_for_each(|(_, v)| refs_exist(r, v)),
        CoreInput::Array(items) => items.iter().try_for_each(|v| refs_exist(r, v)),
    }
}

/// Orders an assignment so that values holding references are written
/// first: the engine checks a reference as its key is written, and a
/// refusal then comes before any key was. A key given twice keeps its last
/// value, as written in order it would.
fn first_refs(entries: &mut Vec<(SmolStr, CoreInput)>) {
    let mut seen = FxHashSet::default();
    let mut kept: Vec<_> = entries
        .drain(..)
        .rev()
        .filter(|(k, _)| seen.insert(k.clone()))
        .collect();
    kept.reverse();
    let (mut with, without): (Vec<_>, Vec<_>) = kept.into_iter().partition(|(_, v)| holds_ref(v));
    with.extend(without);
    *entries = with;
}

fn bounds(range: impl std::ops::RangeBounds<usize>, len: usize) -> (usize, usize) {
    use std::ops::Bound;
    let a = match range.start_bound() {
        Bound::Included(&a) => a,
        Bound::Excluded(&a) => a + 1,
        Bound::Unbounded => 0,
    };
    let b = match range.end_bound() {
        Bound::Included(&b) => b + 1,
        Bound::Excluded(&b) => b,
        Bound::Unbounded => len,
    };
    (a.min(len), b.min(len).max(a.min(len)))
}
