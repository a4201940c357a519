//! What `facsimile watch` follows, and the bounded queue of the changes it
//! prints.
//!
//! A change is kept only when its object lies under the watched path, or
//! on the way to it from the root: the objects under the path are known by
//! id, each with the step by which a walk from the watched object first
//! reached it. A change elsewhere in the document then costs one hash
//! lookup, and the place of a change inside costs a climb from its object
//! to the watched one, not a search of the document. A change on the way
//! to the path (a key on it written, an array on it changed by a method)
//! looks the path up again, a lookup for each of its segments, and gives
//! a line for the path only when what is there changed; the objects
//! under it are walked again only when the watched object is another one
//! by then (or the root is replaced). An object added under the path is
//! walked when it arrives.
//!
//! The changes kept wait in a queue of bounded length. When the reader
//! falls that far behind, the queued changes are dropped and the whole of
//! the path is printed again instead (a resync line), so a slow reader
//! costs memory bounded by the queue, not by the writers.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use facsimile::typed::pointer::{self, escape};
use facsimile::{
    ChangeEvent, Node, ObjectId, ObjectRef, Origin, Prop, SmolStr, Subscription, Value,
};
use serde_json::json;
use tokio::sync::mpsc;

use crate::client::{origin, to_json};

/// The changes `facsimile watch` has yet to print, by default.
pub(crate) const DEFAULT_MAX_PENDING: usize = 10_000;

/// The changes under a path of a node, queued as they happen, as the
/// JSON lines `facsimile watch` prints.
pub(crate) struct Watcher {
    node: Node,
    path: String,
    scope: Arc<Mutex<Scope>>,
    queue: mpsc::Receiver<Pending>,
    /// Set when a change was dropped because the queue was full.
    overflowed: Arc<AtomicBool>,
    _subscriptions: [Subscription; 3],
}

/// A change kept for printing.
enum Pending {
    /// A change under the path.
    Change(ChangeEvent),
    /// A change on the way to the path changed what is there: `old` was
    /// there, `new` is now (`None`: nothing), under `key` of its parent.
    At {
        key: serde_json::Value,
        old: Option<Value>,
        new: Option<Value>,
        origin: Origin,
    },
    /// The root was replaced (by `origin`), or the document received
    /// again after a resync with the relay (no origin).
    Replaced(Option<Origin>),
}

impl Watcher {
    /// Starts following `path` of `node`, queueing at most `max_pending`
    /// changes (at least 1).
    pub(crate) fn new(node: &Node, path: &str, max_pending: usize) -> Watcher {
        let scope = Arc::new(Mutex::new(Scope::new(node.clone(), path)));
        let (tx, queue) = mpsc::channel(max_pending.max(1));
        let overflowed = Arc::new(AtomicBool::new(false));
        let push = {
            let overflowed = overflowed.clone();
            move |p: Pending| {
                if let Err(mpsc::error::TrySendError::Full(_)) = tx.try_send(p) {
                    overflowed.store(true, Ordering::Release);
                }
            }
        };
        let on_change = {
            let (scope, push) = (scope.clone(), push.clone());
            node.on_change(move |ev| {
                let kept = lock(&scope).admit(ev);
                if let Some(p) = kept {
                    push(p);
                }
            })
        };
        let on_root = {
            let (scope, push) = (scope.clone(), push.clone());
            node.on_root_changed(move |c| {
                let mut scope = lock(&scope);
                scope.rebuild();
                scope.replaced_last = true;
                push(Pending::Replaced(Some(c.origin().clone())));
            })
        };
        let on_ready = {
            let scope = scope.clone();
            node.on_ready(move |_| {
                let mut scope = lock(&scope);
                // A resync that brought another root reported it just
                // before: that line shows the document as it is now.
                if std::mem::take(&mut scope.replaced_last) {
                    return;
                }
                scope.rebuild();
                push(Pending::Replaced(None));
            })
        };
        Watcher {
            node: node.clone(),
            path: path.to_string(),
            scope,
            queue,
            overflowed,
            _subscriptions: [on_change, on_root, on_ready],
        }
    }

    /// What is at the path now, as JSON (null when nothing is).
    pub(crate) fn tree(&self) -> serde_json::Value {
        self.node
            .get(&self.path)
            .map_or(serde_json::Value::Null, |v| to_json(&v, &self.path))
    }

    /// The next line to print, waiting for a change; `None` once the
    /// node's listeners are gone.
    pub(crate) async fn next_line(&mut self) -> Option<serde_json::Value> {
        loop {
            if let Some(resync) = self.resync() {
                return Some(resync);
            }
            let pending = self.queue.recv().await?;
            // Changes after this one were dropped: the resync shows them.
            if self.overflowed.load(Ordering::Acquire) {
                continue;
            }
            if let Some(line) = self.line(pending) {
                return Some(line);
            }
        }
    }

    /// After an overflow, the queue emptied and the resync line to print.
    fn resync(&mut self) -> Option<serde_json::Value> {
        if !self.overflowed.swap(false, Ordering::AcqRel) {
            return None;
        }
        while self.queue.try_recv().is_ok() {}
        Some(json!({ "path": self.path, "value": self.tree(), "resync": true }))
    }

    /// The line for a change, unless its object is no longer under the
    /// path (nor on the way to it) by now.
    fn line(&self, pending: Pending) -> Option<serde_json::Value> {
        let ev = match pending {
            Pending::Change(ev) => ev,
            Pending::At {
                key,
                old,
                new,
                origin: by,
            } => {
                let json = |v: &Option<Value>| {
                    v.as_ref()
                        .map_or(serde_json::Value::Null, |v| to_json(v, &self.path))
                };
                return Some(json!({
                    "path": self.path,
                    "origin": origin(&by),
                    "key": key,
                    "old": json(&old),
                    "new": json(&new),
                    "deleted": new.is_none(),
                }));
            }
            Pending::Replaced(by) => {
                let mut line = json!({ "path": self.path, "value": self.tree(), "replaced": true });
                if let Some(by) = by {
                    line["origin"] = origin(&by);
                }
                return Some(line);
            }
        };
        let obj = lock(&self.scope).place(ev.target().id())?;
        let (full, prop) = match ev.prop() {
            Some(Prop::Key(k)) => (format!("{obj}/{}", escape(k)), json!(k.as_str())),
            Some(Prop::Index(i)) => (format!("{obj}/{i}"), json!(i)),
            None => (obj, serde_json::Value::Null),
        };
        if !within(&full, &self.path) {
            return None;
        }
        let mut line = json!({ "path": full, "origin": origin(ev.origin()) });
        match ev.prop() {
            Some(_) => {
                line["key"] = prop;
                let json =
                    |v: Option<&Value>| v.map_or(serde_json::Value::Null, |v| to_json(v, &full));
                line["old"] = json(ev.old_value());
                line["new"] = json(ev.new_value());
                line["deleted"] = json!(ev.new_value().is_none());
            }
            // A method changed the array as a whole: its new contents.
            None => line["value"] = to_json(&ev.target().clone().into(), &full),
        }
        Some(line)
    }

    /// The next line if one is ready, without waiting.
    #[cfg(test)]
    fn try_next_line(&mut self) -> Option<serde_json::Value> {
        loop {
            if let Some(resync) = self.resync() {
                return Some(resync);
            }
            let pending = self.queue.try_recv().ok()?;
            if let Some(line) = self.line(pending) {
                return Some(line);
            }
        }
    }
}

fn lock(scope: &Mutex<Scope>) -> MutexGuard<'_, Scope> {
    scope.lock().unwrap_or_else(|e| e.into_inner())
}

/// Whether `path` is `under` or inside it, or holds it (replacing a
/// parent changes the child).
pub(crate) fn within(path: &str, under: &str) -> bool {
    under.is_empty()
        || path == under
        || (path.starts_with(under) && path.as_bytes().get(under.len()) == Some(&b'/'))
        || under.starts_with(path) && under.as_bytes().get(path.len()) == Some(&b'/')
}

/// The objects under a path, and those on the way to it.
struct Scope {
    node: Node,
    path: String,
    /// The objects from the root to the watched one (excluded), each with
    /// the pointer to it and the segment of the path that leads on.
    above: Vec<Ancestor>,
    /// What is at the path, as last looked up (`None`: nothing).
    at: Option<Value>,
    /// The watched object and every object under it, each with the step
    /// by which a breadth-first walk from the watched object first reached
    /// it (keys in order): its place is the first one under the path.
    below: HashMap<ObjectId, Step>,
    /// Whether the last event of the node was the root replaced (no change
    /// since): a resync reports a new root just before the document is
    /// ready, and the document is printed once.
    replaced_last: bool,
    /// Work done, for the tests: objects walked, places looked up.
    walked: u64,
    lookups: u64,
}

struct Ancestor {
    id: ObjectId,
    pointer: String,
    /// The next segment of the path, escaped.
    next: String,
    /// An array's indices shift with any change of its elements.
    array: bool,
}

/// How an object under the path was reached.
enum Step {
    /// It is the watched object.
    Watched,
    /// Under this key of a map.
    Key(ObjectRef, SmolStr),
    /// As an element of an array (the index is looked up: it shifts).
    Item(ObjectRef),
}

impl Scope {
    fn new(node: Node, path: &str) -> Scope {
        let mut scope = Scope {
            node,
            path: path.to_string(),
            above: Vec::new(),
            at: None,
            below: HashMap::new(),
            replaced_last: false,
            walked: 0,
            lookups: 0,
        };
        scope.rebuild();
        scope
    }

    /// Finds the way to the path and walks what is under it, afresh.
    fn rebuild(&mut self) {
        self.find_way();
        self.walk_watched();
    }

    /// Walks what is under the path afresh (nothing when a scalar is
    /// there, or nothing is).
    fn walk_watched(&mut self) {
        self.below.clear();
        if let Some(watched) = self.at.as_ref().and_then(Value::as_object) {
            self.add(watched, Step::Watched);
        }
    }

    /// Finds the objects on the way to the path, and what is there: a
    /// lookup for each segment of the path.
    fn find_way(&mut self) {
        self.above.clear();
        self.at = None;
        let segments: Vec<&str> = match self.path.strip_prefix('/') {
            Some(rest) => rest.split('/').collect(),
            None => Vec::new(),
        };
        let mut pointer = String::new();
        for next in segments {
            let Some(obj) = self.node.get(&pointer).and_then(|v| v.as_object()) else {
                return;
            };
            self.above.push(Ancestor {
                id: obj.id(),
                pointer: pointer.clone(),
                next: next.to_string(),
                array: matches!(obj, ObjectRef::Array(_)),
            });
            pointer.push('/');
            pointer.push_str(next);
        }
        self.at = self.node.get(&self.path);
    }

    /// Adds `obj`, reached by `step`, and the objects under it not known
    /// yet, breadth first.
    fn add(&mut self, obj: ObjectRef, step: Step) {
        if self.below.contains_key(&obj.id()) {
            return;
        }
        self.below.insert(obj.id(), step);
        let mut queue = VecDeque::from([obj]);
        while let Some(o) = queue.pop_front() {
            self.walked += 1;
            let children: Vec<(Value, Step)> = match &o {
                ObjectRef::Map(m) => m
                    .entries()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (v, Step::Key(o.clone(), k)))
                    .collect(),
                ObjectRef::Array(a) => a
                    .to_vec()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|v| (v, Step::Item(o.clone())))
                    .collect(),
            };
            for (v, step) in children {
                if let Some(child) = v.as_object() {
                    if let Entry::Vacant(e) = self.below.entry(child.id()) {
                        e.insert(step);
                        queue.push_back(child);
                    }
                }
            }
        }
    }

    /// What to print of a change, if anything: a change under the path
    /// as it is; a change on the way to the path as what it changed at
    /// the path, if it changed anything there. Keeps track of the objects
    /// it brings under the path.
    fn admit(&mut self, ev: &ChangeEvent) -> Option<Pending> {
        self.replaced_last = false;
        let target = ev.target();
        if self.below.contains_key(&target.id()) {
            match (ev.prop(), ev.new_value().and_then(Value::as_object)) {
                (Some(Prop::Key(k)), Some(obj)) => {
                    self.add(obj, Step::Key(target.clone(), k.clone()))
                }
                (Some(Prop::Index(_)), Some(obj)) => self.add(obj, Step::Item(target.clone())),
                (None, _) => {
                    // An array method: its elements may be new objects.
                    if let ObjectRef::Array(a) = target {
                        for v in a.to_vec().unwrap_or_default() {
                            if let Some(obj) = v.as_object() {
                                self.add(obj, Step::Item(target.clone()));
                            }
                        }
                    }
                }
                _ => {}
            }
            return Some(Pending::Change(ev.clone()));
        }
        let on_the_way = self.above.iter().find(|a| a.id == target.id())?;
        // A key or an element written elsewhere leaves the way as it was
        // (an element set moves no other); an array method may have moved
        // any element, the one on the way included.
        let leads = match ev.prop() {
            None => true,
            Some(Prop::Key(k)) => escape(k) == on_the_way.next,
            Some(Prop::Index(i)) => i.to_string() == on_the_way.next,
        };
        if !leads {
            return None;
        }
        let old = self.at.clone();
        self.find_way();
        if self.at == old {
            // The same value, or the same object, there still (by
            // another way, maybe): nothing to print, nothing to walk.
            return None;
        }
        let watched = |v: &Option<Value>| v.as_ref().and_then(Value::as_object).map(|o| o.id());
        if watched(&self.at) != watched(&old) {
            self.walk_watched();
        }
        Some(Pending::At {
            key: self.key(),
            old,
            new: self.at.clone(),
            origin: ev.origin().clone(),
        })
    }

    /// The last segment of the path, as a change line names it: an index
    /// of an array as a number, a key of a map as it is stored.
    fn key(&self) -> serde_json::Value {
        let Some((_, last)) = self.path.rsplit_once('/') else {
            return serde_json::Value::Null;
        };
        let parent_is_array = self.above.last().is_some_and(|a| a.array && a.next == last);
        match last.parse::<u64>() {
            Ok(i) if parent_is_array => json!(i),
            _ => pointer::parse(&self.path)
                .and_then(|mut keys| keys.pop())
                .map_or(serde_json::Value::Null, |key| json!(key.as_str())),
        }
    }

    /// The pointer of an object under the path (its first place there) or
    /// on the way to it; `None` when it is neither by now.
    fn place(&mut self, id: ObjectId) -> Option<String> {
        self.lookups += 1;
        if self.below.contains_key(&id) {
            if let Some(p) = self.climb(id) {
                return Some(p);
            }
            // It moved, or left, since it was walked.
            self.rebuild();
            if let Some(p) = self.climb(id) {
                return Some(p);
            }
        }
        self.above
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.pointer.clone())
    }

    /// The pointer of an object under the path, from its steps up to the
    /// watched object, each checked against the document as it is now.
    fn climb(&self, id: ObjectId) -> Option<String> {
        let mut segments: Vec<String> = Vec::new();
        let mut at = id;
        for _ in 0..=self.below.len() {
            match self.below.get(&at)? {
                Step::Watched => {
                    let mut p = self.path.clone();
                    for s in segments.iter().rev() {
                        p.push('/');
                        p.push_str(s);
                    }
                    return Some(p);
                }
                Step::Key(parent, k) => {
                    let here = parent.as_map()?.get(k)?.as_object()?;
                    if here.id() != at {
                        return None;
                    }
                    segments.push(escape(k).into_owned());
                    at = parent.id();
                }
                Step::Item(parent) => {
                    let items = parent.as_array()?.to_vec().ok()?;
                    let i = items
                        .iter()
                        .position(|v| v.as_object().is_some_and(|o| o.id() == at))?;
                    segments.push(i.to_string());
                    at = parent.id();
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use facsimile::LocalNetwork;

    use super::*;

    #[test]
    fn within_matches_whole_segments() {
        assert!(within("/a/b", ""));
        assert!(within("/a/b", "/a"));
        assert!(within("/a", "/a"));
        assert!(within("/a", "/a/b"), "replacing a parent changes the child");
        assert!(!within("/ab", "/a"));
        assert!(!within("/b", "/a"));
    }

    #[test]
    fn keys_escape_as_pointer_segments() {
        assert_eq!(escape("a/b~c"), "a~1b~0c");
    }

    /// A document with a small `config` and many items beside it.
    fn document(items: usize) -> Node {
        let node = LocalNetwork::new().join("w");
        let items: Vec<_> = (0..items).map(|i| json!({ "n": i })).collect();
        node.set_root(json!({ "config": { "size": 1 }, "items": items }))
            .unwrap();
        node
    }

    fn work(w: &Watcher) -> (u64, u64) {
        let s = lock(&w.scope);
        (s.walked, s.lookups)
    }

    /// Changes outside the path are dropped without a walk or a lookup:
    /// the work of watching is the watched part's, not the document's.
    #[test]
    fn changes_outside_the_path_cost_no_walk_and_no_lookup() {
        let node = document(5_000);
        let mut w = Watcher::new(&node, "/config", 16);
        assert_eq!(w.tree(), json!({ "size": 1 }));
        let (walked, _) = work(&w);
        assert_eq!(walked, 1, "only /config is walked");
        for i in 0..2_000 {
            node.set_path(&format!("/items/{i}/n"), -1).unwrap();
        }
        assert_eq!(w.try_next_line(), None, "nothing queued");
        assert_eq!(work(&w), (1, 0), "no walk, no lookup");

        node.set_path("/config/size", 2).unwrap();
        let line = w.try_next_line().unwrap();
        assert_eq!(line["path"], "/config/size");
        assert_eq!(
            (line["old"].clone(), line["new"].clone()),
            (json!(1), json!(2))
        );
        assert_eq!(work(&w), (1, 1), "one lookup, no walk");
    }

    /// An object added under the path is followed at once, and a change
    /// on the way to the path (the watched object replaced, an array on
    /// the way shifting) moves what is watched.
    #[test]
    fn objects_added_under_the_path_and_moves_of_the_path_are_followed() {
        let node = document(3);
        let mut w = Watcher::new(&node, "/items/1", 16);
        node.set_path("/items/1/sub", json!({ "x": [1] })).unwrap();
        assert_eq!(w.try_next_line().unwrap()["path"], "/items/1/sub");
        node.set_path("/items/1/sub/x/0", 2).unwrap();
        assert_eq!(w.try_next_line().unwrap()["path"], "/items/1/sub/x/0");
        // Another item takes index 1: changes to the one that was there
        // are no longer watched, changes to the new one are.
        let items = node.get("/items").unwrap().as_array().unwrap().clone();
        items.insert(0, json!({ "n": "first" })).unwrap();
        while w.try_next_line().is_some() {}
        node.set_path("/items/2/n", "moved away").unwrap();
        assert_eq!(w.try_next_line(), None);
        node.set_path("/items/1/n", "now here").unwrap();
        let line = w.try_next_line().unwrap();
        assert_eq!(
            (line["path"].clone(), line["new"].clone()),
            (json!("/items/1/n"), json!("now here"))
        );
        // The root replaced: the path is what the new root has there.
        node.set_root(json!({ "items": [0, { "n": "new" }] }))
            .unwrap();
        let line = w.try_next_line().unwrap();
        assert_eq!(line["replaced"], true);
        assert_eq!(line["value"], json!({ "n": "new" }));
        node.set_path("/items/1/n", "newer").unwrap();
        assert_eq!(w.try_next_line().unwrap()["path"], "/items/1/n");
    }

    /// An array method on an array on the way to the path gives a line
    /// for the path only when what is there changed, and never prints
    /// the array: a push at the end of 5,000 items leaves `/items/1` as
    /// it was, an insert at 0 puts another item there.
    #[test]
    fn array_methods_on_the_way_print_only_what_changed_at_the_path() {
        let node = document(5_000);
        let mut w = Watcher::new(&node, "/items/1", 16);
        let items = node.get("/items").unwrap().as_array().unwrap().clone();
        let (walked, _) = work(&w);
        items.push(json!({ "n": "last" })).unwrap();
        assert_eq!(w.try_next_line(), None, "/items/1 did not change");
        assert_eq!(work(&w).0, walked, "nothing walked again");

        items.insert(0, json!({ "n": "first" })).unwrap();
        let line = w.try_next_line().unwrap();
        assert_eq!(line["path"], "/items/1", "{line}");
        assert_eq!(line["key"], 1, "{line}");
        assert_eq!(line["old"], json!({ "n": 1 }), "{line}");
        assert_eq!(line["new"], json!({ "n": 0 }), "{line}");
        assert_eq!(line["deleted"], false, "{line}");
        assert_eq!(w.try_next_line(), None);
        assert_eq!(work(&w).0, walked + 1, "only the new /items/1 walked");

        // Below a moved element: a value that stays the same gives no
        // line, one that goes gives its own.
        node.set_path(
            "/items",
            json!([{ "n": 1 }, { "n": 1 }, { "n": 1 }, { "n": 1 }]),
        )
        .unwrap();
        let items = node.get("/items").unwrap().as_array().unwrap().clone();
        let mut name = Watcher::new(&node, "/items/3/n", 16);
        items.insert(0, json!({ "n": 1 })).unwrap();
        assert_eq!(name.try_next_line(), None, "/items/3/n is still 1");
        items.truncate(3).unwrap();
        let line = name.try_next_line().unwrap();
        assert_eq!(
            (
                line["path"].clone(),
                line["old"].clone(),
                line["deleted"].clone()
            ),
            (json!("/items/3/n"), json!(1), json!(true))
        );
    }

    /// A resync that brings another root prints the document once: the
    /// root replaced and the document ready again are one event to the
    /// reader.
    #[test]
    fn a_resync_that_replaces_the_root_prints_it_once() {
        let net = LocalNetwork::manual(7);
        let a = net.join("a");
        let b = net.join("b");
        a.set_root(json!({ "v": 1 })).unwrap();
        net.run();
        let mut w = Watcher::new(&b, "/v", 16);
        // b asks for the document while a's new root is on its way.
        a.set_root(json!({ "v": 2 })).unwrap();
        b.sync();
        net.run();
        let line = w.try_next_line().unwrap();
        assert_eq!(
            (line["replaced"].clone(), line["value"].clone()),
            (json!(true), json!(2)),
            "{line}"
        );
        assert_eq!(w.try_next_line(), None, "printed once");
        // A resync that keeps the root still prints the document.
        b.sync();
        net.run();
        let line = w.try_next_line().unwrap();
        assert_eq!(line["replaced"], true, "{line}");
        assert_eq!(w.try_next_line(), None);
    }

    /// A reader that falls behind costs the queue's bound: the changes
    /// past it are dropped, and one line with the whole of the path
    /// replaces them.
    #[test]
    fn a_full_queue_drops_the_changes_and_resyncs() {
        let node = document(1);
        let mut w = Watcher::new(&node, "/config", 4);
        for size in 2..=20 {
            node.set_path("/config/size", size).unwrap();
        }
        assert_eq!(w.queue.len(), 4, "the queue keeps to its bound");
        let resync = w.try_next_line().unwrap();
        assert_eq!(
            resync,
            json!({ "path": "/config", "value": { "size": 20 }, "resync": true })
        );
        assert_eq!(w.try_next_line(), None, "the queued changes were dropped");
        node.set_path("/config/size", 21).unwrap();
        assert_eq!(w.try_next_line().unwrap()["new"], 21);
    }
}
