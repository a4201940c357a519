//! Maps: a last-writer-wins register per key, iterated in key byte order.
//!
//! Each key remembers the stamp of the write that currently wins. Deleted keys
//! keep a tombstone so that an older concurrent write arriving later cannot
//! resurrect them; tombstones are purged once no replica can still send such a
//! write (see `gc`). Keys iterate in byte order: an order by creation stamp
//! would move a re-created key on replicas that purged its tombstone but not on
//! the others, so it could not be identical everywhere.

use indexmap::IndexMap;
use rustc_hash::FxBuildHasher;
use smol_str::SmolStr;

use crate::clock::Peers;
use crate::value::{Id, Value};

#[derive(Debug, Clone)]
pub(crate) struct MapEntry {
    /// `None` is a tombstone.
    pub(crate) value: Option<Value>,
    pub(crate) stamp: Id,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct MapObj {
    entries: IndexMap<SmolStr, MapEntry, FxBuildHasher>,
    live: usize,
    /// Set when a key was added out of order; iteration sorts first.
    unsorted: bool,
}

/// The visible effect of a write on one key.
pub(crate) struct KeyChange {
    pub(crate) old: Option<Value>,
    pub(crate) new: Option<Value>,
}

impl MapObj {
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    pub(crate) fn get(&self, key: &str) -> Option<&Value> {
        self.entries.get(key).and_then(|e| e.value.as_ref())
    }

    /// Applies a write (`None` deletes) stamped `stamp`. Returns the visible
    /// change when the write wins and changes what readers see.
    pub(crate) fn apply(
        &mut self,
        key: &SmolStr,
        value: Option<Value>,
        stamp: Id,
        peers: &Peers,
    ) -> Option<KeyChange> {
        let len = self.entries.len();
        match self.entries.get_mut(key) {
            Some(e) => {
                if !peers.later(stamp, e.stamp) {
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
                let old = std::mem::replace(&mut e.value, value.clone());
                match (&old, &value) {
                    (None, Some(_)) => self.live += 1,
                    (Some(_), None) => self.live -= 1,
                    _ => {}
                }
                Some(KeyChange { old, new: value })
            }
            None => {
                if len > 0
                    && self
                        .entries
                        .get_index(len - 1)
                        .is_some_and(|(k, _)| k > key)
                {
                    self.unsorted = true;
                }
                let live = value.is_some();
                self.entries.insert(
                    key.clone(),
                    MapEntry {
                        value: value.clone(),
                        stamp,
                    },
                );
                if live {
                    self.live += 1;
                    Some(KeyChange {
                        old: None,
                        new: value,
                    })
                } else {
                    None
                }
            }
        }
    }

    /// Restores an entry exactly as transferred in a snapshot.
    pub(crate) fn restore(&mut self, key: SmolStr, entry: MapEntry) {
        if entry.value.is_some() {
            self.live += 1;
        }
        let len = self.entries.len();
        if len > 0
            && self
                .entries
                .get_index(len - 1)
                .is_some_and(|(k, _)| *k > key)
        {
            self.unsorted = true;
        }
        self.entries.insert(key, entry);
    }

    /// Puts entries in iteration order if arrivals disturbed it.
    pub(crate) fn sort(&mut self) {
        if self.unsorted {
            self.entries.sort_unstable_keys();
            self.unsorted = false;
        }
    }

    /// All entries, tombstones included, in storage order (call
    /// [`MapObj::sort`] first for iteration order).
    pub(crate) fn raw_entries(&self) -> impl Iterator<Item = (&SmolStr, &MapEntry)> + '_ {
        self.entries.iter()
    }

    /// Visible entries in storage order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&SmolStr, &Value)> + '_ {
        self.entries
            .iter()
            .filter_map(|(k, e)| e.value.as_ref().map(|v| (k, v)))
    }

    /// Drops tombstones whose stamp `stable` accepts.
    pub(crate) fn purge_tombstones(&mut self, stable: impl Fn(Id) -> bool) {
        self.entries
            .retain(|_, e| e.value.is_some() || !stable(e.stamp));
    }
}
