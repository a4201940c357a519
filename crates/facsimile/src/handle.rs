//! Handles: cheap, clonable names of one object on one node.
//!
//! A handle is a node and an id, and caches nothing: every read goes to the
//! replica under the node's lock, so it sees the latest state. An id handed
//! out before the replica took a new incarnation is resolved through
//! `Node::resolve` (DESIGN.md, "Messages and streams").

use std::cmp::Ordering;
use std::sync::Arc;

use facsimile_core::{Input as CoreInput, ObjectId, Planned, Prop, Value as CoreValue};
use smol_str::SmolStr;

use crate::error::{EngineError, Error, Result};
use crate::events::{ChangeEvent, Listener, Subscription};
use crate::node::Node;
use crate::value::{Input, Value};

/// A map of a node's document: string keys to values.
///
/// Reads and writes go through the handle; writes apply at once and are
/// sent to the other nodes, whose listeners see them as remote changes.
/// A handle is cheap to clone (a node and an id); equal handles name the
/// same object on the same node. It stays valid while the map is in the
/// document; once the map was removed and reclaimed, reads return nothing
/// and writes fail with [`UnknownObject`](crate::EngineError::UnknownObject).
///
/// Keys iterate in byte order, the same on every node. Concurrent writes of
/// one key converge on the write with the larger logical time (ties to the
/// higher hostname); a delete leaves a tombstone, so an older write arriving
/// later does not bring a key back.
///
/// # Example
/// ```
/// use facsimile::{LocalNetwork, Value};
/// use serde_json::json;
///
/// let net = LocalNetwork::new();
/// let a = net.join("a");
/// let b = net.join("b");
/// a.set_root(json!({"players": {}}))?;
/// let players = a.get("/players").unwrap().as_map().unwrap().clone();
/// players.set("ada", 10)?;
/// players.assign([("grace", 12), ("alan", 9)])?;
///
/// let on_b = b.get("/players").unwrap().as_map().unwrap().clone();
/// assert_eq!(on_b.keys(), ["ada", "alan", "grace"]);
/// assert_eq!(on_b.get("grace"), Some(Value::Int(12)));
/// # Ok::<(), facsimile::Error>(())
/// ```
#[derive(Clone)]
pub struct MapRef {
    node: Node,
    id: ObjectId,
}

/// An array of a node's document: an ordered list of values.
///
/// Every mutating method of the JavaScript `Array` is here. Each call is one
/// change, sent as one message and reported as one change event with no
/// property (a mass change), except [`ArrayRef::set`], which reports its
/// index. Elements have identity: concurrent inserts all land, in an order
/// every node agrees on, and concurrent moves (a [`sort_by`](Self::sort_by)
/// or [`reverse`](Self::reverse) on two nodes) never duplicate or drop an
/// element. Handles behave as [`MapRef`]'s do.
///
/// # Example
/// ```
/// use facsimile::LocalNetwork;
/// use serde_json::json;
///
/// let net = LocalNetwork::new();
/// let a = net.join("a");
/// let b = net.join("b");
/// a.set_root(json!({"queue": [3, 1]}))?;
/// let queue = a.get("/queue").unwrap().as_array().unwrap().clone();
/// queue.push(2)?;
/// queue.sort_by(|x, y| x.as_i64().cmp(&y.as_i64()))?;
///
/// assert_eq!(b.get("/queue").unwrap().to_json()?, json!([1, 2, 3]));
/// # Ok::<(), facsimile::Error>(())
/// ```
#[derive(Clone)]
pub struct ArrayRef {
    node: Node,
    id: ObjectId,
}

/// A map or an array: what [`Node::lock`] and the change events name.
///
/// Every handle converts into one ([`From`]), so functions that take any
/// object take `impl Into<ObjectRef>`.
///
/// # Example
/// ```
/// use facsimile::{LocalNetwork, ObjectRef};
/// use serde_json::json;
///
/// let node = LocalNetwork::new().join("a");
/// node.set_root(json!({"m": {}, "l": []}))?;
/// let objects: Vec<ObjectRef> = ["/m", "/l"]
///     .iter()
///     .map(|p| node.get(p).unwrap().as_object().unwrap())
///     .collect();
/// assert!(objects[0].as_map().is_some());
/// assert!(objects[1].as_array().is_some());
/// # Ok::<(), facsimile::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum ObjectRef {
    /// A map.
    Map(MapRef),
    /// An array.
    Array(ArrayRef),
}

impl ObjectRef {
    /// The object's id on its node.
    ///
    /// Ids are this node's names: the same object has another id on another
    /// node. Handles taken before the node took a new incarnation (a reload,
    /// a rejoin after eviction) keep naming the same object.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"m": {}}))?;
    /// let m = node.get("/m").unwrap().as_object().unwrap();
    /// assert_eq!(m.id(), node.get("/m").unwrap().as_map().unwrap().id());
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn id(&self) -> ObjectId {
        match self {
            ObjectRef::Map(m) => m.id(),
            ObjectRef::Array(a) => a.id(),
        }
    }

    /// The node whose document holds the object.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"m": {}}))?;
    /// let m = node.get("/m").unwrap().as_object().unwrap();
    /// assert_eq!(m.node().hostname(), "a");
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn node(&self) -> &Node {
        match self {
            ObjectRef::Map(m) => &m.node,
            ObjectRef::Array(a) => &a.node,
        }
    }

    /// The map, if the object is one.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"m": {"k": 1}}))?;
    /// let m = node.get("/m").unwrap().as_object().unwrap();
    /// assert_eq!(m.as_map().unwrap().len(), 1);
    /// assert!(m.as_array().is_none());
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn as_map(&self) -> Option<&MapRef> {
        match self {
            ObjectRef::Map(m) => Some(m),
            ObjectRef::Array(_) => None,
        }
    }

    /// The array, if the object is one.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"l": [1, 2]}))?;
    /// let l = node.get("/l").unwrap().as_object().unwrap();
    /// assert_eq!(l.as_array().unwrap().len(), 2);
    /// assert!(l.as_map().is_none());
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn as_array(&self) -> Option<&ArrayRef> {
        match self {
            ObjectRef::Array(a) => Some(a),
            ObjectRef::Map(_) => None,
        }
    }

    /// Calls `f` after every change to this object (not to the objects it
    /// contains), local or remote, until the returned [`Subscription`] is
    /// dropped. As [`MapRef::on`].
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// use std::sync::{Arc, Mutex};
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"l": []}))?;
    /// let l = node.get("/l").unwrap().as_object().unwrap();
    /// let seen = Arc::new(Mutex::new(0));
    /// let count = seen.clone();
    /// let _sub = l.on(move |_| *count.lock().unwrap() += 1);
    /// l.as_array().unwrap().push(1)?;
    /// assert_eq!(*seen.lock().unwrap(), 1);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn on(&self, f: impl Fn(&ChangeEvent) + Send + Sync + 'static) -> Subscription {
        self.node()
            .subscribe(Listener::Object(self.id(), Arc::new(f)))
    }

    /// A deep copy of the object as JSON.
    ///
    /// # Errors
    /// As [`Value::to_json`]: [`Error::Cycle`](crate::Error::Cycle) when the
    /// object contains itself.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"m": {"k": [1]}}))?;
    /// let m = node.get("/m").unwrap().as_object().unwrap();
    /// assert_eq!(m.to_json()?, json!({"k": [1]}));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn to_json(&self) -> Result<serde_json::Value> {
        match self {
            ObjectRef::Map(m) => m.to_json(),
            ObjectRef::Array(a) => a.to_json(),
        }
    }
}

/// The methods maps and arrays share. For the examples, `$root` is a JSON
/// root whose key `"o"` holds a `$kind`, and `$write` a change to it.
macro_rules! handle_common {
    ($t:ident, $kind:literal, $root:literal, $write:literal) => {
        impl $t {
            pub(crate) fn new(node: Node, id: ObjectId) -> Self {
                $t { node, id }
            }

            #[doc = concat!("The ", $kind, "'s id on its node.")]
            ///
            /// Ids are this node's names: the same object has another id on
            /// another node. A handle taken before the node took a new
            /// incarnation (a reload, a rejoin after eviction) keeps naming
            /// the same object.
            ///
            /// # Example
            /// ```
            /// use facsimile::LocalNetwork;
            /// use serde_json::json;
            ///
            /// let node = LocalNetwork::new().join("a");
            #[doc = concat!("node.set_root(json!(", $root, "))?;")]
            #[doc = concat!("let o = node.get(\"/o\").unwrap().as_object().unwrap();")]
            /// assert_eq!(o.id(), node.get("/o").unwrap().as_object().unwrap().id());
            /// # Ok::<(), facsimile::Error>(())
            /// ```
            pub fn id(&self) -> ObjectId {
                self.node.resolve(self.id)
            }

            #[doc = concat!("The node whose document holds the ", $kind, ".")]
            ///
            /// # Example
            /// ```
            /// use facsimile::LocalNetwork;
            /// use serde_json::json;
            ///
            /// let node = LocalNetwork::new().join("a");
            #[doc = concat!("node.set_root(json!(", $root, "))?;")]
            #[doc = concat!("let o = node.get(\"/o\").unwrap().as_", $kind, "().unwrap().clone();")]
            /// assert_eq!(o.node().hostname(), "a");
            /// # Ok::<(), facsimile::Error>(())
            /// ```
            pub fn node(&self) -> &Node {
                &self.node
            }

            #[doc = concat!("Calls `f` after every change to this ", $kind, " (not to the")]
            /// objects it contains), local or remote, until the returned
            /// [`Subscription`] is dropped. A write that changes nothing does
            /// not call it.
            ///
            /// `f` runs after the change is applied and outside the node's
            /// locks: it may read and write the document (its writes are
            /// sent after the change that called it).
            ///
            /// # Example
            /// ```
            /// use std::sync::{Arc, Mutex};
            /// use facsimile::{LocalNetwork, Origin};
            /// use serde_json::json;
            ///
            /// let net = LocalNetwork::new();
            /// let a = net.join("a");
            /// let b = net.join("b");
            #[doc = concat!("a.set_root(json!(", $root, "))?;")]
            #[doc = concat!("let on_b = b.get(\"/o\").unwrap().as_", $kind, "().unwrap().clone();")]
            /// let changes = Arc::new(Mutex::new(0));
            /// let count = changes.clone();
            /// let _sub = on_b.on(move |ev| {
            ///     assert!(matches!(ev.origin(), Origin::Remote(_)));
            ///     *count.lock().unwrap() += 1;
            /// });
            #[doc = concat!("let on_a = a.get(\"/o\").unwrap().as_", $kind, "().unwrap().clone();")]
            #[doc = concat!("on_a.", $write, "?;")]
            /// assert_eq!(*changes.lock().unwrap(), 1);
            /// # Ok::<(), facsimile::Error>(())
            /// ```
            pub fn on(&self, f: impl Fn(&ChangeEvent) + Send + Sync + 'static) -> Subscription {
                self.node
                    .subscribe(Listener::Object(self.id(), Arc::new(f)))
            }

            #[doc = concat!("Whether the ", $kind, " is still in this node's document:")]
            /// false once it was reclaimed (some time after it became
            /// unreachable from the root), or when it was never received.
            ///
            /// # Example
            /// ```
            /// use std::time::Duration;
            /// use facsimile::LocalNetwork;
            /// use serde_json::json;
            ///
            /// let net = LocalNetwork::new().with_virtual_time();
            /// let node = net.join("a");
            #[doc = concat!("node.set_root(json!(", $root, "))?;")]
            #[doc = concat!("let o = node.get(\"/o\").unwrap().as_", $kind, "().unwrap().clone();")]
            /// node.set_root(0)?;
            /// assert!(o.exists(), "not reclaimed yet");
            /// net.advance(Duration::from_secs(10));
            /// assert!(!o.exists());
            /// # Ok::<(), facsimile::Error>(())
            /// ```
            pub fn exists(&self) -> bool {
                self.node.replica().kind(self.id()).is_some()
            }

            #[doc = concat!("A deep copy of the ", $kind, " as JSON.")]
            ///
            /// # Errors
            /// As [`Value::to_json`]: [`Error::Cycle`](crate::Error::Cycle)
            /// when it contains itself.
            ///
            /// # Example
            /// ```
            /// use facsimile::LocalNetwork;
            /// use serde_json::json;
            ///
            /// let node = LocalNetwork::new().join("a");
            #[doc = concat!("node.set_root(json!(", $root, "))?;")]
            #[doc = concat!("let o = node.get(\"/o\").unwrap().as_", $kind, "().unwrap().clone();")]
            #[doc = concat!("assert_eq!(o.to_json()?, json!(", $root, ")[\"o\"]);")]
            /// # Ok::<(), facsimile::Error>(())
            /// ```
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

handle_common!(MapRef, "map", r#"{"o": {"k": 1}}"#, r#"set("k", 2)"#);
handle_common!(ArrayRef, "array", r#"{"o": [1, 2]}"#, "push(3)");

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

impl From<ObjectRef> for Value {
    fn from(o: ObjectRef) -> Self {
        match o {
            ObjectRef::Map(m) => Value::Map(m),
            ObjectRef::Array(a) => Value::Array(a),
        }
    }
}

impl MapRef {
    /// The value of a key, or `None` when the key is not set (or the map is
    /// gone).
    ///
    /// Maps and arrays come back as handles ([`Value::Map`],
    /// [`Value::Array`]): reading through them reads the live document.
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"name": "ada", "langs": ["rust"]}))?;
    /// let map = node.root_map().unwrap();
    /// assert_eq!(map.get("name"), Some(Value::from("ada")));
    /// assert_eq!(map.get("langs").unwrap().as_array().unwrap().len(), 1);
    /// assert_eq!(map.get("missing"), None);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn get(&self, key: &str) -> Option<Value> {
        let r = self.node.replica();
        let v = r.map_get(self.id(), key).ok()??;
        Some(self.node.value(&r, v))
    }

    /// Sets a key, and sends the write to the other nodes.
    ///
    /// The value is anything that converts into an [`Input`]: a scalar, a handle
    /// of this node (the key then refers to that object: shared objects and
    /// cycles), or a tree of new objects (`serde_json::Value`, [`Input::map`],
    /// [`Input::array`]). Writing the value already there sends and reports
    /// nothing. Concurrent writes of one key converge on the write with the
    /// larger logical time, ties to the higher hostname.
    ///
    /// # Errors
    /// [`Error::NoSender`](crate::Error::NoSender) when the node has no
    /// transport, [`Error::ForeignHandle`](crate::Error::ForeignHandle) when the
    /// value holds a handle of another node, and
    /// [`Error::Engine`](crate::Error::Engine) when the engine refuses the write:
    /// [`NotOwner`](crate::EngineError::NotOwner) while another node holds or
    /// waits for the lock on the map, [`Syncing`](crate::EngineError::Syncing)
    /// during a sync, [`UnknownObject`](crate::EngineError::UnknownObject) when
    /// the map (or an object the value refers to) is not in the document,
    /// [`WrongKind`](crate::EngineError::WrongKind) when the handle names an
    /// array, [`Detached`](crate::EngineError::Detached) when the value refers to
    /// an object removed from the document. A refused write changes nothing and
    /// sends nothing.
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"name": "ada", "langs": ["rust"]}))?;
    /// let map = node.root_map().unwrap();
    /// map.set("name", "grace")?;
    /// map.set("address", json!({"city": "Arlington"}))?;
    /// map.set("me", &map)?; // a reference: the map now contains itself
    /// assert_eq!(map.get("me").unwrap().as_map(), Some(&map));
    /// assert_eq!(node.get("/address/city"), Some(Value::from("Arlington")));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn set(&self, key: &str, x: impl Into<Input>) -> Result<()> {
        let input = x.into().into_core(&self.node)?;
        self.node
            .write(|r| r.map_set(self.id(), key, input))
            .map(|_| ())
    }

    /// Deletes a key, and sends the delete. Returns whether the key was set
    /// (deleting an absent key sends and reports nothing).
    ///
    /// An object that only this key referred to leaves the document: it is
    /// reclaimed later, and can no longer be written anywhere
    /// ([`Detached`](crate::EngineError::Detached)). To move an object, insert it
    /// at its new place first.
    ///
    /// # Errors
    /// As [`MapRef::set`].
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"name": "ada", "langs": ["rust"]}))?;
    /// let map = node.root_map().unwrap();
    /// assert!(map.delete("name")?);
    /// assert!(!map.delete("name")?);
    /// assert_eq!(map.keys(), ["langs"]);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn delete(&self, key: &str) -> Result<bool> {
        self.node
            .write(|r| r.map_delete(self.id(), key))
            .map(|old| old.is_some())
    }

    /// Removes `key` and returns the value it held, read in the same write:
    /// a `pop` that a message applied meanwhile by another thread cannot
    /// make return a value it did not remove.
    ///
    /// # Errors
    /// As [`MapRef::delete`].
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"name": "ada"}))?;
    /// let map = node.root_map().unwrap();
    /// assert_eq!(map.remove("name")?, Some(Value::from("ada")));
    /// assert_eq!(map.remove("name")?, None);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn remove(&self, key: &str) -> Result<Option<Value>> {
        self.node.write(|r| {
            let old = r.map_delete(self.id(), key)?;
            Ok(old.map(|v| self.node.value(r, v)))
        })
    }

    /// The value of `key`, set to `default` first when the map has none:
    /// looked up and written in one step, so a value that another thread
    /// or a message wrote meanwhile is returned, never overwritten
    /// (Python's `setdefault`). A key already there sends nothing and needs
    /// no transport.
    ///
    /// # Errors
    /// As [`MapRef::set`], when the key is absent.
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"name": "ada"}))?;
    /// let map = node.root_map().unwrap();
    /// assert_eq!(map.get_or_insert("name", "grace")?, Value::from("ada"));
    /// assert_eq!(map.get_or_insert("born", 1815)?, Value::Int(1815));
    /// assert_eq!(map.to_json()?, json!({"name": "ada", "born": 1815}));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn get_or_insert(&self, key: &str, default: impl Into<Input>) -> Result<Value> {
        if let Some(v) = self.get(key) {
            return Ok(v);
        }
        let input = default.into().into_core(&self.node)?;
        let id = self.id();
        self.node.write(|r| {
            if r.map_get(id, key)?.is_none() {
                r.map_set(id, key, input)?;
            }
            let v = r.map_get(id, key)?.expect("the key is set");
            Ok(self.node.value(r, v))
        })
    }

    /// Sets several keys as one change, sent as one message (the JavaScript
    /// `Object.assign` case): the other nodes receive all of the keys at once.
    ///
    /// # Errors
    /// [`Error::NoSender`](crate::Error::NoSender) when the node has no
    /// transport, [`Error::ForeignHandle`](crate::Error::ForeignHandle) when the
    /// value holds a handle of another node, and
    /// [`Error::Engine`](crate::Error::Engine) when the engine refuses the write:
    /// [`NotOwner`](crate::EngineError::NotOwner) while another node holds or
    /// waits for the lock on the map, [`Syncing`](crate::EngineError::Syncing)
    /// during a sync, [`UnknownObject`](crate::EngineError::UnknownObject) when
    /// the map (or an object the value refers to) is not in the document,
    /// [`WrongKind`](crate::EngineError::WrongKind) when the handle names an
    /// array, [`Detached`](crate::EngineError::Detached) when the value refers to
    /// an object removed from the document. A refused write changes nothing and
    /// sends nothing.
    ///
    /// Every value is checked before the first key is written, so a refused
    /// assignment writes nothing.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"name": "ada", "langs": ["rust"]}))?;
    /// let map = node.root_map().unwrap();
    /// map.assign([("name", json!("ada")), ("born", json!(1815)), ("died", json!(1852))])?;
    /// assert_eq!(map.keys(), ["born", "died", "langs", "name"]);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn assign<K: AsRef<str>, V: Into<Input>>(
        &self,
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Result<()> {
        let entries = entries
            .into_iter()
            .map(|(k, v)| Ok((SmolStr::from(k.as_ref()), v.into().into_core(&self.node)?)))
            .collect::<Result<Vec<_>>>()?;
        self.node
            .write(|r| r.map_set_many(self.id(), entries).map(|_| ()))
    }

    /// The keys, in byte order (the same on every node); empty when the map
    /// is gone.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"name": "ada", "langs": ["rust"]}))?;
    /// let map = node.root_map().unwrap();
    /// assert_eq!(map.keys(), ["langs", "name"]);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn keys(&self) -> Vec<String> {
        self.node
            .read(|r| r.map_keys(self.id()))
            .map(|ks| ks.into_iter().map(String::from).collect())
            .unwrap_or_default()
    }

    /// The entries, in key order, read under one hold of the node's lock (a
    /// consistent copy). Keys are [`SmolStr`](crate::SmolStr)s: short keys
    /// are held inline, so reading a map allocates nothing per key.
    ///
    /// # Errors
    /// [`Error::Engine`](crate::Error::Engine) with
    /// [`UnknownObject`](crate::EngineError::UnknownObject) when the map is no
    /// longer in the document, or [`WrongKind`](crate::EngineError::WrongKind)
    /// when the handle names an array.
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"name": "ada", "langs": ["rust"]}))?;
    /// let map = node.root_map().unwrap();
    /// let entries = map.entries()?;
    /// assert_eq!(entries[1], ("name".into(), Value::from("ada")));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn entries(&self) -> Result<Vec<(SmolStr, Value)>> {
        let id = self.id();
        self.node
            .try_read(|r| r.map_collect(id, |k, v, r| (k.clone(), self.node.value(r, v.clone()))))
    }

    /// The number of keys; 0 when the map is gone.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"name": "ada", "langs": ["rust"]}))?;
    /// let map = node.root_map().unwrap();
    /// assert_eq!(map.len(), 2);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.node.replica().map_len(self.id()).unwrap_or(0)
    }

    /// Whether the map has no keys.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// let map = node.set_root(json!({}))?;
    /// assert!(map.as_map().unwrap().is_empty());
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the key is set.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"name": "ada", "langs": ["rust"]}))?;
    /// let map = node.root_map().unwrap();
    /// assert!(map.contains_key("name"));
    /// assert!(!map.contains_key("age"));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Calls `f` after every change of one key of this map, local or remote,
    /// until the returned [`Subscription`] is dropped. Changes of other keys do
    /// not call it; a write that changes nothing does not either.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// use std::sync::{Arc, Mutex};
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"score": 0, "name": "ada"}))?;
    /// let map = node.root_map().unwrap();
    /// let scores = Arc::new(Mutex::new(Vec::new()));
    /// let seen = scores.clone();
    /// let _sub = map.on_key("score", move |ev| {
    ///     seen.lock().unwrap().push(ev.new_value().and_then(|v| v.as_i64()));
    /// });
    /// map.set("score", 1)?;
    /// map.set("name", "grace")?;
    /// map.set("score", 1)?; // unchanged: no event
    /// assert_eq!(*scores.lock().unwrap(), [Some(1)]);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
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
    /// The element at `index`, or `None` past the end (or when the array is
    /// gone).
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// assert_eq!(list.get(0), Some(Value::Int(3)));
    /// assert_eq!(list.get(3), None);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn get(&self, index: usize) -> Option<Value> {
        let r = self.node.replica();
        let v = r.list_get(self.id(), index).ok()??;
        Some(self.node.value(&r, v))
    }

    /// The number of elements; 0 when the array is gone.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// assert_eq!(list.len(), 3);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn len(&self) -> usize {
        self.node.replica().list_len(self.id()).unwrap_or(0)
    }

    /// Whether the array has no elements.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([]))?;
    /// assert!(node.root_array().unwrap().is_empty());
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// All elements, in order, read under one hold of the node's lock (a
    /// consistent copy).
    ///
    /// # Errors
    /// [`Error::Engine`](crate::Error::Engine) with
    /// [`UnknownObject`](crate::EngineError::UnknownObject) when the array is no
    /// longer in the document, or [`WrongKind`](crate::EngineError::WrongKind)
    /// when the handle names a map.
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// assert_eq!(list.to_vec()?, [Value::Int(3), Value::Int(1), Value::Int(2)]);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn to_vec(&self) -> Result<Vec<Value>> {
        self.node.try_read(|r| {
            let mut out = Vec::with_capacity(r.list_len(self.id())?);
            r.list_for_each(self.id(), |v, r| out.push(self.node.value(r, v.clone())))?;
            Ok(out)
        })
    }

    /// `items` as the engine takes them.
    fn core_inputs(&self, items: impl IntoIterator<Item = Input>) -> Result<Vec<CoreInput>> {
        items.into_iter().map(|i| i.into_core(&self.node)).collect()
    }

    fn splice_inputs(&self, start: usize, delete: usize, items: Vec<Input>) -> Result<Vec<Value>> {
        let items = self.core_inputs(items)?;
        self.node.write(|r| {
            let removed = r.list_splice(self.id(), start, delete, items)?;
            Ok(removed.into_iter().map(|v| self.node.value(r, v)).collect())
        })
    }

    /// Removes `delete` elements from `start` (fewer at the end of the array)
    /// and inserts `items` there, as JavaScript's `splice`: one change, one
    /// message. Returns the removed elements.
    ///
    /// # Errors
    /// [`Error::NoSender`](crate::Error::NoSender) when the node has no
    /// transport, [`Error::ForeignHandle`](crate::Error::ForeignHandle) when a
    /// value holds a handle of another node, and
    /// [`Error::Engine`](crate::Error::Engine) when the engine refuses the write:
    /// [`Locked`](crate::EngineError::Locked) while another node holds or waits
    /// for the lock on the array, [`Syncing`](crate::EngineError::Syncing)
    /// during a sync, [`UnknownObject`](crate::EngineError::UnknownObject) when
    /// the array (or an object a value refers to) is not in the document,
    /// [`WrongKind`](crate::EngineError::WrongKind) when the handle names a map,
    /// [`Detached`](crate::EngineError::Detached) when a value refers to an
    /// object removed from the document. A refused write changes nothing and
    /// sends nothing. [`IndexOutOfBounds`](crate::EngineError::IndexOutOfBounds)
    /// when `start` is past the end.
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// let removed = list.splice(1, 1, [10, 11])?;
    /// assert_eq!(removed, [Value::Int(1)]);
    /// assert_eq!(list.to_json()?, json!([3, 10, 11, 2]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn splice<V: Into<Input>>(
        &self,
        start: usize,
        delete: usize,
        items: impl IntoIterator<Item = V>,
    ) -> Result<Vec<Value>> {
        self.splice_inputs(start, delete, items.into_iter().map(Into::into).collect())
    }

    /// As [`ArrayRef::splice`], with the range chosen by `range_of` from
    /// the array's length as of the write: a position counted from the end
    /// (Python's `l[-1:]`, `pop(-2)`, `insert(-1, x)`) that a message
    /// applied meanwhile by another thread cannot shift onto other
    /// elements. The range must lie within the array. `range_of` runs under
    /// the node's lock: it must not touch the store.
    ///
    /// # Errors
    /// As [`ArrayRef::splice`], and
    /// [`IndexOutOfBounds`](crate::EngineError::IndexOutOfBounds) when the
    /// range ends past the array or starts after its end.
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// // The last two elements, whatever the length is by then.
    /// let removed = list.splice_with(|len| len - 2..len, ["x"])?;
    /// assert_eq!(removed, [Value::Int(1), Value::Int(2)]);
    /// assert_eq!(list.to_json()?, json!([3, "x"]));
    /// assert!(list.splice_with(|len| len..len + 1, [0; 0]).is_err());
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn splice_with<V: Into<Input>>(
        &self,
        range_of: impl FnOnce(usize) -> std::ops::Range<usize>,
        items: impl IntoIterator<Item = V>,
    ) -> Result<Vec<Value>> {
        let items = self.core_inputs(items.into_iter().map(Into::into))?;
        let id = self.id();
        self.node.write(|r| {
            let len = r.list_len(id)?;
            let range = range_of(len);
            if range.start > range.end || range.end > len {
                return Err(EngineError::IndexOutOfBounds {
                    object: id,
                    index: range.end.max(range.start),
                    len,
                });
            }
            let removed = r.list_splice(id, range.start, range.len(), items)?;
            Ok(removed.into_iter().map(|v| self.node.value(r, v)).collect())
        })
    }

    /// Appends the elements `times - 1` more times, so that the array holds
    /// its elements `times` over (Python's `l *= n`): read and written in
    /// one step, one change and one message. An object element is then
    /// referenced once per copy, not copied. `times` of 0 empties the
    /// array; 1 changes nothing.
    ///
    /// # Errors
    /// As [`ArrayRef::push`].
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// list.repeat(3)?;
    /// assert_eq!(list.to_json()?, json!([1, 2, 1, 2, 1, 2]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn repeat(&self, times: usize) -> Result<()> {
        if times == 0 {
            return self.clear();
        }
        let id = self.id();
        self.node
            .write(|r| {
                let values = r.list_values(id)?;
                let len = values.len();
                // Every element takes a byte or more of the message: more
                // copies than its limit are refused before being made.
                let copies = len.saturating_mul(times - 1);
                let limit = r.config().message_size_limit();
                if copies > limit {
                    return Err(EngineError::TooLarge {
                        size: copies,
                        limit,
                    });
                }
                let items = values.iter().cycle().take(copies);
                r.list_splice(id, len, 0, items.map(|v| CoreInput::Value(v.clone())))
            })
            .map(|_| ())
    }

    /// Appends an element, and sends the insert to the other nodes.
    ///
    /// An element's position is an identity, not an index: concurrent inserts
    /// from several nodes all land, in an order every node agrees on.
    ///
    /// # Errors
    /// [`Error::NoSender`](crate::Error::NoSender) when the node has no
    /// transport, [`Error::ForeignHandle`](crate::Error::ForeignHandle) when a
    /// value holds a handle of another node, and
    /// [`Error::Engine`](crate::Error::Engine) when the engine refuses the write:
    /// [`Locked`](crate::EngineError::Locked) while another node holds or waits
    /// for the lock on the array, [`Syncing`](crate::EngineError::Syncing)
    /// during a sync, [`UnknownObject`](crate::EngineError::UnknownObject) when
    /// the array (or an object a value refers to) is not in the document,
    /// [`WrongKind`](crate::EngineError::WrongKind) when the handle names a map,
    /// [`Detached`](crate::EngineError::Detached) when a value refers to an
    /// object removed from the document. A refused write changes nothing and
    /// sends nothing.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// list.push(4)?;
    /// list.push(json!({"nested": true}))?;
    /// assert_eq!(list.to_json()?, json!([3, 1, 2, 4, {"nested": true}]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn push(&self, x: impl Into<Input>) -> Result<()> {
        let input = x.into().into_core(&self.node)?;
        let id = self.id();
        self.node.write(|r| r.list_push(id, input))
    }

    /// Appends several elements as one change, sent as one message.
    ///
    /// # Errors
    /// As [`ArrayRef::push`].
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// list.extend([4, 5])?;
    /// assert_eq!(list.to_json()?, json!([3, 1, 2, 4, 5]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn extend<V: Into<Input>>(&self, items: impl IntoIterator<Item = V>) -> Result<()> {
        let items = self.core_inputs(items.into_iter().map(Into::into))?;
        let id = self.id();
        // The length as of the write: a message applied meanwhile may
        // have changed it.
        self.node
            .write(|r| r.list_splice(id, r.list_len(id)?, 0, items))
            .map(|_| ())
    }

    /// Removes and returns the last element (`None` when the array is
    /// empty).
    ///
    /// # Errors
    /// As [`ArrayRef::push`].
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// assert_eq!(list.pop()?, Some(Value::Int(2)));
    /// assert_eq!(list.len(), 2);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
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

    /// Removes and returns the first element (`None` when the array is
    /// empty).
    ///
    /// # Errors
    /// As [`ArrayRef::push`].
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// assert_eq!(list.shift()?, Some(Value::Int(3)));
    /// assert_eq!(list.to_json()?, json!([1, 2]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn shift(&self) -> Result<Option<Value>> {
        Ok(self.splice(0, 1, Vec::<Input>::new())?.into_iter().next())
    }

    /// Inserts elements at the front, in order, as one change.
    ///
    /// # Errors
    /// As [`ArrayRef::push`].
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// list.unshift([0, 1])?;
    /// assert_eq!(list.to_json()?, json!([0, 1, 3, 1, 2]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn unshift<V: Into<Input>>(&self, items: impl IntoIterator<Item = V>) -> Result<()> {
        self.splice(0, 0, items).map(|_| ())
    }

    /// Inserts an element at `index` (at `len`, appends).
    ///
    /// # Errors
    /// As [`ArrayRef::push`]. [`IndexOutOfBounds`](crate::EngineError::IndexOutOfBounds) when
    /// `index` is past the end.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// list.insert(1, 7)?;
    /// assert_eq!(list.to_json()?, json!([3, 7, 1, 2]));
    /// assert!(list.insert(9, 0).is_err());
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn insert(&self, index: usize, x: impl Into<Input>) -> Result<()> {
        self.splice(index, 0, [x]).map(|_| ())
    }

    /// Removes and returns the element at `index`.
    ///
    /// # Errors
    /// As [`ArrayRef::push`]. [`IndexOutOfBounds`](crate::EngineError::IndexOutOfBounds) when
    /// there is no element at `index`.
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// assert_eq!(list.remove(1)?, Value::Int(1));
    /// let err = list.remove(5).unwrap_err();
    /// assert_eq!(err.to_string(), "index 5 is out of bounds for the root array, of length 2");
    /// # Ok::<(), facsimile::Error>(())
    /// ```
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
    /// The change event of a set within the array names the index, unlike
    /// the other array methods; one at or past the end is reported as they
    /// are, a change of the whole array with no index (so
    /// [`ArrayRef::on_index`] listeners of those indices do not hear of it).
    ///
    /// # Errors
    /// As [`ArrayRef::push`], except that a lock held by another node
    /// refuses it as a write, with [`EngineError::NotOwner`](crate::EngineError::NotOwner)
    /// (as an element assignment in JavaScript and Python), not `Locked`.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// list.set(0, "three")?;
    /// list.set(4, 5)?;
    /// assert_eq!(list.to_json()?, json!(["three", 1, 2, null, 5]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn set(&self, index: usize, x: impl Into<Input>) -> Result<()> {
        let input = x.into().into_core(&self.node)?;
        self.node
            .write(|r| r.list_set(self.id(), index, input))
            .map(|_| ())
    }

    /// Sets the element at `index`, which must exist as of this write, and
    /// returns the one it replaces: an element assignment as Python's and
    /// Rust's are, where [`ArrayRef::set`] pads as JavaScript's does. A
    /// message applied by another thread since the caller read the length
    /// cannot turn it into an append.
    ///
    /// # Errors
    /// As [`ArrayRef::set`], and [`IndexOutOfBounds`](crate::EngineError::IndexOutOfBounds)
    /// when there is no element at `index`.
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// assert_eq!(list.replace(0, "three")?, Value::Int(3));
    /// assert!(list.replace(3, 4).is_err());
    /// assert_eq!(list.to_json()?, json!(["three", 1, 2]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn replace(&self, index: usize, x: impl Into<Input>) -> Result<Value> {
        self.replace_with(|_| index, x)
    }

    /// As [`ArrayRef::replace`], with the index chosen by `index_of` from
    /// the array's length as of the write: Python's `l[-1] = x`, which a
    /// message applied meanwhile by another thread cannot shift onto
    /// another element. `index_of` runs under the node's lock: it must not
    /// touch the store.
    ///
    /// # Errors
    /// As [`ArrayRef::replace`].
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// assert_eq!(list.replace_with(|len| len - 1, "last")?, Value::Int(2));
    /// assert_eq!(list.to_json()?, json!([3, 1, "last"]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn replace_with(
        &self,
        index_of: impl FnOnce(usize) -> usize,
        x: impl Into<Input>,
    ) -> Result<Value> {
        let input = x.into().into_core(&self.node)?;
        let id = self.id();
        self.node.write(|r| {
            let len = r.list_len(id)?;
            let index = index_of(len);
            let old = r
                .list_get(id, index)?
                .ok_or(EngineError::IndexOutOfBounds {
                    object: id,
                    index,
                    len,
                })?;
            r.list_set(id, index, input)?;
            Ok(self.node.value(r, old))
        })
    }

    /// Sets several elements that exist as of this write, in one change
    /// and one message: a slice assignment, which a message applied
    /// meanwhile by another thread cannot leave half done.
    ///
    /// # Errors
    /// As [`ArrayRef::replace`]; a refused call sets nothing.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([0, 1, 2, 3]))?;
    /// let list = node.root_array().unwrap();
    /// list.replace_many([(0, "a"), (2, "c")])?;
    /// assert!(list.replace_many([(1, "b"), (4, "e")]).is_err());
    /// assert_eq!(list.to_json()?, json!(["a", 1, "c", 3]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn replace_many<V: Into<Input>>(
        &self,
        writes: impl IntoIterator<Item = (usize, V)>,
    ) -> Result<()> {
        let writes = writes
            .into_iter()
            .map(|(i, x)| Ok((i, x.into().into_core(&self.node)?)))
            .collect::<Result<Vec<_>>>()?;
        let id = self.id();
        self.node.write(|r| {
            // Refused as an element assignment is, by a lock elsewhere.
            r.check_writable(id)?;
            r.list_set_many(id, writes).map(|_| ())
        })
    }

    /// As [`ArrayRef::replace_many`], with the positions chosen by
    /// `positions_of` from the array's length as of the write: `items[k]`
    /// goes to the `k`th position (Python's `l[::2] = [...]`), which a
    /// message applied meanwhile by another thread cannot shift onto other
    /// elements. Returns `false`, with nothing written and nothing sent,
    /// when `positions_of` gives another number of positions than there
    /// are items. `positions_of` runs under the node's lock: it must not
    /// touch the store.
    ///
    /// # Errors
    /// As [`ArrayRef::replace_many`].
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([0, 1, 2, 3]))?;
    /// let list = node.root_array().unwrap();
    /// let every_other = |len: usize| (0..len).step_by(2).collect();
    /// assert!(list.replace_many_with(["a", "c"], every_other)?);
    /// assert!(!list.replace_many_with(["x"], every_other)?);
    /// assert_eq!(list.to_json()?, json!(["a", 1, "c", 3]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn replace_many_with<V: Into<Input>>(
        &self,
        items: impl IntoIterator<Item = V>,
        positions_of: impl FnOnce(usize) -> Vec<usize>,
    ) -> Result<bool> {
        let items = self.core_inputs(items.into_iter().map(Into::into))?;
        let id = self.id();
        self.node.write(|r| {
            let at = positions_of(r.list_len(id)?);
            if at.len() != items.len() {
                return Ok(false);
            }
            r.check_writable(id)?;
            r.list_set_many(id, at.into_iter().zip(items).collect())?;
            Ok(true)
        })
    }

    /// Shortens the array to `len` elements (a longer `len` changes
    /// nothing).
    ///
    /// # Errors
    /// As [`ArrayRef::push`].
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// list.truncate(1)?;
    /// assert_eq!(list.to_json()?, json!([3]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
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
    /// As [`ArrayRef::push`].
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// list.clear()?;
    /// assert!(list.is_empty());
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn clear(&self) -> Result<()> {
        self.truncate(0)
    }

    /// Writes `x` at every index of `range` (clamped to the array), as
    /// JavaScript's `fill`: one change, one message. A new object is
    /// created once and referenced from every index, as in JavaScript.
    ///
    /// # Errors
    /// As [`ArrayRef::push`].
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// list.fill(0, 1..)?;
    /// assert_eq!(list.to_json()?, json!([3, 0, 0]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn fill(
        &self,
        x: impl Into<Input>,
        range: impl std::ops::RangeBounds<usize>,
    ) -> Result<()> {
        let input = x.into().into_core(&self.node)?;
        let range = (range.start_bound().cloned(), range.end_bound().cloned());
        let id = self.id();
        self.node.write(|r| {
            // Bounds as of the write: a message applied meanwhile may have
            // changed the length.
            let (a, b) = bounds(range, r.list_len(id)?);
            if a + 1 >= b || !matches!(input, CoreInput::Map(_) | CoreInput::Array(_)) {
                let writes = (a..b).map(|i| (i, input.clone())).collect();
                return r.list_set_many(id, writes).map(|_| ());
            }
            // All or nothing: the references to the new object must fit
            // beside it (any reference's bound is that of this one).
            let first = [(a, input)];
            let refs: Vec<_> = (a + 1..b)
                .map(|i| (i, CoreInput::Value(CoreValue::Ref(id))))
                .collect();
            r.check_room([
                Planned::ListSetMany(id, &first),
                Planned::ListSetMany(id, &refs),
            ])?;
            let [(a, input)] = first;
            r.begin();
            let filled = r.list_set_many(id, vec![(a, input)]).and_then(|_| {
                let created = r.list_get(id, a)?.expect("the element just set");
                let refs = (a + 1..b).map(|i| (i, CoreInput::Value(created.clone())));
                r.list_set_many(id, refs.collect())
            });
            r.commit();
            filled.map(|_| ())
        })
    }

    /// Copies the elements of `source` to the positions starting at
    /// `target`, as JavaScript's `copyWithin` (an overlap copies what was
    /// there before). One change, one message.
    ///
    /// # Errors
    /// As [`ArrayRef::push`].
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// list.copy_within(0..2, 1)?;
    /// assert_eq!(list.to_json()?, json!([3, 3, 1]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn copy_within(
        &self,
        source: impl std::ops::RangeBounds<usize>,
        target: usize,
    ) -> Result<()> {
        let source = (source.start_bound().cloned(), source.end_bound().cloned());
        let id = self.id();
        self.node.write(|r| {
            // Read and written in one step: a message applied in between
            // would shift what is copied.
            let values = r.list_values(id)?;
            let len = values.len();
            let (a, b) = bounds(source, len);
            if target >= len {
                return Ok(());
            }
            let n = (b - a).min(len - target);
            let writes = (0..n)
                .map(|k| (target + k, CoreInput::Value(values[a + k].clone())))
                .collect();
            r.list_set_many(id, writes).map(|_| ())
        })
    }

    /// Reverses the array in place. The elements move (they keep their
    /// identity), so a concurrent write to one of them lands where it went.
    ///
    /// # Errors
    /// As [`ArrayRef::push`].
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// list.reverse()?;
    /// assert_eq!(list.to_json()?, json!([2, 1, 3]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn reverse(&self) -> Result<()> {
        self.reorder_held(|values| (0..values.len()).rev().collect())
    }

    /// Sorts the array by [`Value::total_cmp`] (`Null`, booleans, numbers by
    /// value, strings, bytes, objects): one change, one message, stable.
    /// Elements move as with [`ArrayRef::sort_by`]; the order is computed
    /// under the node's lock, so it never has to start over.
    ///
    /// # Errors
    /// As [`ArrayRef::push`].
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!(["b", 2.5, null, 1, "a", true]))?;
    /// let list = node.root_array().unwrap();
    /// list.sort()?;
    /// assert_eq!(list.to_json()?, json!([null, true, 1, 2.5, "a", "b"]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn sort(&self) -> Result<()> {
        self.reorder_held(|values| {
            let mut order: Vec<usize> = (0..values.len()).collect();
            order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
            order
        })
    }

    /// Reorders with an order computed under the node's lock: `order_of`
    /// must not touch the store (it would wait on the lock it runs under).
    fn reorder_held(&self, order_of: impl FnOnce(&[Value]) -> Vec<usize>) -> Result<()> {
        let id = self.id();
        self.node.write(|r| {
            let values: Vec<Value> = r
                .list_values(id)?
                .into_iter()
                .map(|v| self.node.value(r, v))
                .collect();
            r.list_reorder(id, &order_of(&values)).map(|_| ())
        })
    }

    /// Sorts the array with a comparator (stable, as JavaScript's `sort`).
    /// Elements move rather than being rewritten, and only those outside the
    /// longest run already in order, so a nearly sorted array sends little;
    /// concurrent sorts on several nodes never duplicate or drop an element.
    ///
    /// The comparator runs outside the node's lock and may read the store;
    /// if the array changes meanwhile, the sort starts over, as
    /// [`ArrayRef::reorder`] does.
    ///
    /// # Errors
    /// As [`ArrayRef::push`], and [`Error::Modified`](crate::Error::Modified)
    /// when the array changed during every sort.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([3, 1, 2]))?;
    /// let list = node.root_array().unwrap();
    /// list.sort_by(|a, b| a.as_i64().cmp(&b.as_i64()))?;
    /// assert_eq!(list.to_json()?, json!([1, 2, 3]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn sort_by(&self, mut compare: impl FnMut(&Value, &Value) -> Ordering) -> Result<()> {
        self.reorder(|values| {
            let mut order: Vec<usize> = (0..values.len()).collect();
            order.sort_by(|&a, &b| compare(&values[a], &values[b]));
            order
        })
    }

    /// How many times [`ArrayRef::reorder`] runs its `order_of` before it
    /// gives up on an array whose elements it received are removed or
    /// written while `order_of` runs.
    pub const REORDER_ATTEMPTS: usize = 8;

    /// Moves the elements into the order `order_of` gives: it receives the
    /// elements and returns, for each new position, the index of the element
    /// to put there (a permutation). One change, one message; only elements
    /// outside the longest run already in order move. For orders a
    /// comparator cannot express (a key function computed once per element,
    /// as Python's `sort(key=)`).
    ///
    /// `order_of` runs outside the node's lock (it may read the store). If
    /// an element it received is removed or has its value written
    /// meanwhile, the order is stale and it runs again on the new
    /// elements, at most [`ArrayRef::REORDER_ATTEMPTS`] times in all;
    /// other changes do not hold it up: elements inserted meanwhile stay
    /// where they are, and the elements it received are put in order in
    /// the places they hold at the write ([`ArrayRef::try_reorder`], which
    /// runs it once and leaves the retrying to the caller).
    ///
    /// # Errors
    /// As [`ArrayRef::push`],
    /// [`BadPermutation`](crate::EngineError::BadPermutation) when the order
    /// is not a permutation of the elements, and
    /// [`Error::Modified`](crate::Error::Modified), with nothing moved and
    /// nothing sent, when an element it received was removed or written
    /// during every run (`order_of` writes one itself, or other nodes
    /// write them faster than it runs).
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!(["b", "a", "c"]))?;
    /// let list = node.root_array().unwrap();
    /// list.reorder(|_| vec![1, 0, 2])?;
    /// assert_eq!(list.to_json()?, json!(["a", "b", "c"]));
    ///
    /// // An order that rewrites an element it reads each time it is asked
    /// // for: the order it gives is stale each time.
    /// let mut runs = 0;
    /// let gave_up = list.reorder(|values| {
    ///     runs += 1;
    ///     list.set(0, runs as i64).unwrap();
    ///     (0..values.len()).rev().collect()
    /// });
    /// assert!(matches!(gave_up, Err(facsimile::Error::Modified { .. })));
    /// assert_eq!(runs, facsimile::ArrayRef::REORDER_ATTEMPTS);
    /// assert_eq!(list.to_json()?, json!([runs, "b", "c"]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn reorder(&self, mut order_of: impl FnMut(&[Value]) -> Vec<usize>) -> Result<()> {
        for _ in 0..Self::REORDER_ATTEMPTS {
            if self.try_reorder(&mut order_of)? {
                return Ok(());
            }
        }
        Err(Error::Modified {
            attempts: Self::REORDER_ATTEMPTS,
        })
    }

    /// Runs `order_of` once on the elements, outside the node's lock, and
    /// moves them into the order it gives (as [`ArrayRef::reorder`]),
    /// provided none of them was removed or had its value written while
    /// `order_of` ran: an order computed from a value that changed since
    /// is stale, and writes elsewhere do not hold it up. Returns `false`,
    /// with nothing moved and nothing sent, when one was: the caller
    /// decides whether to try again (Python's `list.sort` raises when its
    /// key function changed the list, and tries again when another node
    /// wrote or removed an element it sorts).
    ///
    /// The elements it read take the places they hold at the write, in
    /// the order `order_of` gave: an element inserted meanwhile stays where
    /// it is, among them or around them, and so does every element it did
    /// not read; one moved meanwhile by another node takes its place in
    /// the order among the places the elements read hold now. One change,
    /// one message, none when nothing moves.
    ///
    /// # Errors
    /// As [`ArrayRef::reorder`]:
    /// [`BadPermutation`](crate::EngineError::BadPermutation) when the order
    /// is not a permutation of the elements `order_of` received.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!(["b", "a"]))?;
    /// let list = node.root_array().unwrap();
    ///
    /// // An insert while `order_of` runs: the elements read are put in
    /// // order in their places, and the one inserted stays where it is.
    /// assert!(list.try_reorder(|_| {
    ///     list.insert(0, "c").unwrap();
    ///     vec![1, 0]
    /// })?);
    /// assert_eq!(list.to_json()?, json!(["c", "a", "b"]));
    ///
    /// // An element read is written meanwhile: nothing moves.
    /// assert!(!list.try_reorder(|_| {
    ///     list.set(0, "z").unwrap();
    ///     vec![2, 1, 0]
    /// })?);
    /// assert_eq!(list.to_json()?, json!(["z", "a", "b"]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    #[must_use = "false: an element read changed meanwhile and nothing moved"]
    pub fn try_reorder(&self, order_of: impl FnOnce(&[Value]) -> Vec<usize>) -> Result<bool> {
        let id = self.id();
        let (values, stamps) = self.read_with_stamps()?;
        let order = order_of(&values);
        self.node.write(|r| {
            let len = values.len();
            if !facsimile_core::is_permutation(&order, len) {
                return Err(EngineError::BadPermutation { object: id, len });
            }
            let Some(now) = r.list_positions(id, &stamps)? else {
                return Ok(false);
            };
            let mut places = now.clone();
            places.sort_unstable();
            // `list_reorder` takes, for each new position, the position
            // its element comes from: the places of the elements read get
            // them in the order given; every other position keeps its own.
            let mut full: Vec<usize> = (0..r.list_len(id)?).collect();
            for (&place, &read) in places.iter().zip(&order) {
                full[place] = now[read];
            }
            r.list_reorder(id, &full)?;
            Ok(true)
        })
    }

    /// Removes the elements at the positions `pick` chooses among the
    /// elements it reads, provided none of those elements was removed or
    /// written while `pick` ran: a removal found by reading (Python's
    /// `list.remove(x)`) that other writes applied meanwhile, by another
    /// thread or a message, cannot move onto other elements, and that
    /// writes elsewhere in the array do not hold up. `pick` receives the
    /// elements, runs outside the node's lock (it may read the store) and
    /// returns positions among them, in any order (a repeated one counts
    /// once). One change and one message; all or nothing.
    ///
    /// Returns the removed elements in array order, or `None`, with
    /// nothing removed and nothing sent, when a picked element was removed
    /// or written while `pick` ran: read again and call again.
    ///
    /// # Errors
    /// As [`ArrayRef::push`];
    /// [`IndexOutOfBounds`](crate::EngineError::IndexOutOfBounds) for a
    /// position past the elements `pick` received, and
    /// [`TooLarge`](crate::EngineError::TooLarge) when the removals
    /// together may not fit one message: none is made.
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!(["p", "x", "q", "x"]))?;
    /// let list = node.root_array().unwrap();
    /// let first_x = |values: &[Value]| {
    ///     values.iter().position(|v| v.as_str() == Some("x")).into_iter().collect()
    /// };
    /// assert_eq!(list.try_remove_picked(first_x)?, Some(vec![Value::from("x")]));
    ///
    /// // An insert while `pick` runs: the element picked is removed still.
    /// let q = list.try_remove_picked(|_| {
    ///     list.insert(0, "new").unwrap();
    ///     vec![1]
    /// })?;
    /// assert_eq!(q, Some(vec![Value::from("q")]));
    ///
    /// // The element picked is written meanwhile: nothing is removed.
    /// let changed = list.try_remove_picked(|_| {
    ///     list.set(0, "newer").unwrap();
    ///     vec![0]
    /// })?;
    /// assert_eq!(changed, None);
    /// assert_eq!(list.to_json()?, json!(["newer", "p", "x"]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn try_remove_picked(
        &self,
        pick: impl FnOnce(&[Value]) -> Vec<usize>,
    ) -> Result<Option<Vec<Value>>> {
        let id = self.id();
        let (values, stamps) = self.read_with_stamps()?;
        let at = pick(&values);
        if at.is_empty() {
            return Ok(Some(Vec::new()));
        }
        self.node.write(|r| {
            let mut picked = Vec::with_capacity(at.len());
            for &index in &at {
                let stamp = stamps.get(index).ok_or(EngineError::IndexOutOfBounds {
                    object: id,
                    index,
                    len: values.len(),
                })?;
                picked.push(*stamp);
            }
            match r.list_positions(id, &picked)? {
                Some(now) => self.remove_positions(r, now).map(Some),
                None => Ok(None),
            }
        })
    }

    /// Removes the elements at the positions `positions_of` chooses from
    /// the array's length as of the write (in any order; a repeated one
    /// counts once): Python's `del l[::2]`, whose positions depend on the
    /// length alone, as one change and one message, all or nothing, and
    /// never refused for a change made meanwhile. Returns the removed
    /// elements in array order. `positions_of` runs under the node's lock:
    /// it must not touch the store.
    ///
    /// # Errors
    /// As [`ArrayRef::try_remove_picked`].
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([0, 1, 2, 3, 4]))?;
    /// let list = node.root_array().unwrap();
    /// let removed = list.remove_many_with(|len| (0..len).step_by(2).collect())?;
    /// assert_eq!(removed, [Value::Int(0), Value::Int(2), Value::Int(4)]);
    /// assert_eq!(list.to_json()?, json!([1, 3]));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn remove_many_with(
        &self,
        positions_of: impl FnOnce(usize) -> Vec<usize>,
    ) -> Result<Vec<Value>> {
        let id = self.id();
        self.node.write(|r| {
            let at = positions_of(r.list_len(id)?);
            self.remove_positions(r, at)
        })
    }

    /// Removes the elements at positions `at` (in any order, repeats
    /// counting once) in one change, all or none; the removed elements in
    /// array order.
    fn remove_positions(
        &self,
        r: &mut facsimile_core::Replica,
        mut at: Vec<usize>,
    ) -> std::result::Result<Vec<Value>, facsimile_core::Error> {
        let id = self.id();
        at.sort_unstable();
        at.dedup();
        let len = r.list_len(id)?;
        if let Some(&index) = at.last().filter(|&&p| p >= len) {
            return Err(EngineError::IndexOutOfBounds {
                object: id,
                index,
                len,
            });
        }
        if at.is_empty() {
            return Ok(Vec::new());
        }
        // Runs of consecutive positions, the last first: removing one
        // leaves the positions before it in place.
        let mut runs: Vec<(usize, usize)> = Vec::new();
        for &p in at.iter().rev() {
            match runs.last_mut() {
                Some((start, n)) if *start == p + 1 => {
                    *start = p;
                    *n += 1;
                }
                _ => runs.push((p, 1)),
            }
        }
        // All or nothing: a removal refused for the message's size
        // halfway would leave the ones before it made and sent.
        r.check_room(
            runs.iter()
                .map(|&(s, n)| Planned::ListSplice(id, s, n, &[])),
        )?;
        r.begin();
        let mut removed = Vec::with_capacity(at.len());
        let mut done = Ok(());
        for &(start, n) in &runs {
            match r.list_splice(id, start, n, Vec::new()) {
                Ok(mut run) => {
                    run.reverse();
                    removed.extend(run);
                }
                Err(e) => {
                    done = Err(e);
                    break;
                }
            }
        }
        r.commit();
        done?;
        removed.reverse();
        Ok(removed.into_iter().map(|v| self.node.value(r, v)).collect())
    }

    /// The elements, each with the [`ElementStamp`] that finds it again
    /// at the write ([`Replica::list_positions`]), read together.
    ///
    /// [`ElementStamp`]: facsimile_core::ElementStamp
    /// [`Replica::list_positions`]: facsimile_core::Replica::list_positions
    fn read_with_stamps(&self) -> Result<(Vec<Value>, Vec<facsimile_core::ElementStamp>)> {
        self.node.try_read(|r| {
            let read = r.list_stamped(self.id())?;
            Ok(read
                .into_iter()
                .map(|(v, stamp)| (self.node.value(r, v), stamp))
                .unzip())
        })
    }

    /// Calls `f` after every change reported at one index, local or remote,
    /// until the returned [`Subscription`] is dropped: only
    /// [`ArrayRef::set`] within the array reports an index; the other
    /// methods, and a set at or past the end (an append), report a change
    /// of the whole array ([`ArrayRef::on`]).
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// use std::sync::{Arc, Mutex};
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!([0, 0]))?;
    /// let list = node.root_array().unwrap();
    /// let seen = Arc::new(Mutex::new(0));
    /// let count = seen.clone();
    /// let _sub = list.on_index(1, move |_| *count.lock().unwrap() += 1);
    /// list.set(1, 5)?;
    /// list.set(0, 5)?;
    /// assert_eq!(*seen.lock().unwrap(), 1);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn on_index(
        &self,
        index: usize,
        f: impl Fn(&ChangeEvent) + Send + Sync + 'static,
    ) -> Subscription {
        self.node
            .subscribe(Listener::Prop(self.id(), Prop::Index(index), Arc::new(f)))
    }
}

fn bounds(range: impl std::ops::RangeBounds<usize>, len: usize) -> (usize, usize) {
    use std::ops::Bound;
    let a = match range.start_bound() {
        Bound::Included(&a) => a,
        Bound::Excluded(&a) => a.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let b = match range.end_bound() {
        Bound::Included(&b) => b.saturating_add(1),
        Bound::Excluded(&b) => b,
        Bound::Unbounded => len,
    };
    (a.min(len), b.min(len).max(a.min(len)))
}
