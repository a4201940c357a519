//! The object graph: the root register and the arena of maps and arrays.

pub(crate) mod list;
pub(crate) mod map;
pub(crate) mod seq;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::value::{Id, ObjectKind, Value};
use list::ListObj;
use map::MapObj;

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
            ObjData::List(l) => {
                for v in l.values() {
                    if let Value::Ref(o) = v {
                        f(o.0)
                    }
                }
            }
        }
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Graph {
    pub(crate) root: Value,
    pub(crate) root_stamp: Id,
    pub(crate) objects: FxHashMap<Id, Obj>,
}

impl Graph {
    pub(crate) fn get(&self, id: Id) -> Option<&Obj> {
        self.objects.get(&id)
    }

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

// An object graph holds millions of these: keep them small.
const _: () = assert!(std::mem::size_of::<Obj>() <= 40);
