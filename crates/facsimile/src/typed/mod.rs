//! Typed mirroring: your own `Serialize`/`Deserialize` types in, replicated
//! writes of what changed out (the Rust form of the original's transparent
//! proxies).
//!
//! - [`Node::set_root_from`] / [`MapRef::set_from`] write a value;
//!   [`Node::root_as`] / [`MapRef::get_as`] read one.
//! - [`Node::update`] / [`MapRef::update`] read the store into `T`, run a
//!   closure on it, and send only what the closure changed.
//! - [`Node::watch`] / [`MapRef::watch`] call back with a freshly read `T`
//!   after each change to what `T` reads.
//! - [`Node::get`] and [`Node::set_path`] address values by JSON pointer.
//!
//! # How values map to the store
//! As serde_json maps them: structs and maps are maps, sequences and tuples
//! are arrays, newtypes are their content, unit and `()` are `Null`, enums
//! are externally tagged (a unit variant is the string of its name, any
//! other variant a map with the one key of its name), bytes (with
//! `serde_bytes`) are bytes, integers are `i64` (a `u64` above `i64::MAX`
//! is refused), and map keys are strings (integer, char, boolean and
//! unit-variant keys are written as strings and parsed back, only in the
//! form they are written: `"01"` or `"+1"` is not the key `1`, so that two
//! stored keys never read as one).
//!
//! `Option::None` in a struct field is an absent key, so setting a field to
//! `None` sends one delete and an absent key reads as `None`; a key holding
//! `Null` also reads as `None` and is left alone when the field stays
//! `None`. Elsewhere (an element of a `Vec`, a map value, inside a newtype
//! such as `struct W(Option<T>)`) `None` is `Null`, as in serde_json, so
//! that the element, the entry or the field stays.
//!
//! # What a write sends
//! A typed write diffs the value against the store and sends the writes
//! that make the store hold it, all in one message. They follow the rules
//! below, which make the usual edits cost what they change; they are not
//! a search for the fewest writes (a `Vec` largely rewritten may cost
//! more):
//! - an unchanged value sends nothing;
//! - a struct writes only the fields that differ, and never touches keys it
//!   does not declare (so a newer program's extra fields survive an older
//!   program's update); a map (`HashMap`, `BTreeMap`, a flattened struct)
//!   makes its key set equal, so a removed entry is one delete — but
//!   `update` removes only the entries the value it read held, so a key
//!   the type skips (a flattened struct's unknown key) or does not read
//!   back as itself (a key type of its own) stays;
//! - a nested struct, map or array is diffed in place (one changed field
//!   deep inside is one write on the object holding it) — unless its kind
//!   changed, in which case it is written whole as a new object;
//! - an enum variant with data is diffed in place while the variant stays,
//!   and written whole when the variant changes (so two nodes that switch
//!   variants at once end with one variant, never a map of two). Through
//!   a handle on the enum's own object, which keeps its identity, a switch
//!   is a delete and a set in it, and two at once leave a map of two
//!   variant keys: every replica reads it as the variant of the first key
//!   in byte order, and the next typed write of it deletes the others. A
//!   key beside them that is none of the enum's variants fails the read,
//!   as any map of several keys did before, rather than being deleted by
//!   the next update. Where serde buffers a value to read it later
//!   (inside an internally tagged or untagged enum, a flattened struct,
//!   or an adjacently tagged enum whose content key sorts before its tag)
//!   it refuses several keys itself: there a map of two variants fails to
//!   read until a `set_from` of the enum (through its handle) or of a
//!   value holding it, which reads nothing, writes one;
//! - a `Vec` keeps its longest common prefix and suffix. Between them,
//!   each new element equal to an old one keeps that element (its
//!   identity, and its place in the engine's movable list), and the kept
//!   elements are moved into the new order. The others pair only within
//!   a gap, the old elements between two kept neighbours with the new
//!   ones between the same two, in order (reversed where the update
//!   swapped the two neighbours): the pairs that leave the most fields or
//!   entries already equal in total, then as many pairs as that allows
//!   (an element changed in every field is still changed in place), then
//!   those alike in their first fields (where a struct usually names what
//!   it is). Each pair is diffed in place, and what is left over is
//!   deleted or inserted. A push, a pop, an insertion or
//!   removal anywhere, or a change of one element costs one write, also
//!   beside a removal or an insertion; a sort, a reverse or a rotation
//!   costs one move per element outside the longest run already in order
//!   (a rotation one), and no field write. Because elements move rather
//!   than being rewritten where they land, and a change is written on the
//!   element between the same kept neighbours, another node's concurrent
//!   edit of an element stays on that element.
//!
//!   What this cannot tell: a changed element that moved past a kept one
//!   is not that element to the diff (a change never buys a move): it is
//!   deleted and its value inserted, or written into an element left
//!   over where it now stands. Where two readings are as alike (a removed
//!   element and the changed one beside it alike in as many fields, as
//!   early), the leftmost element takes the change. A gap too large for
//!   the budget (about four likeness tests per element and item of the
//!   `Vec`, the small gaps served first) is aligned only near its
//!   diagonal when it has few more elements than items or the other way
//!   round, and otherwise paired in order.
//!
//! A float field reads a stored integer. `update` compares a float with a
//! stored integer as it read it (the integer as a float, bit for bit), so
//! writing back an unchanged value never sends a conversion, even where
//! the read rounded an integer a float cannot hold (`2^53 + 1` reads as
//! `2^53`, and stays `2^53 + 1` when left so); `-0.0` over `0` is a change.
//! `set_from`, which read nothing, compares exactly: the float `2^53`
//! over the integer `2^53 + 1` is written.
//!
//! # Consistency of `update`
//! The closure runs outside the node's lock (it may read and write the
//! store). The read records what it looked at; before writing, under the
//! lock, `update` checks that every value it read is unchanged, and if one
//! changed (a message arrived or another thread wrote meanwhile) it reads
//! again and runs the closure again. The closure may therefore run more
//! than once: keep its effects on `T`, and do not write the object being
//! updated from inside it. Writes made by another node concurrently, and not
//! yet received, merge with the update by the usual per-key and per-element
//! rules.
//!
//! Before anything is written, every object the update writes to passes the
//! check of [`Node::check_writable`], under the same hold of the node's lock
//! as the writes: if another node holds the lock on one of them the update
//! fails with [`EngineError::NotOwner`] and nothing is applied or sent.
//!
//! # Errors
//! A store that does not hold what `T` expects gives [`Error::Type`] naming
//! the path (`/players/3/score: expected i64, found string`), as does a
//! value written with a map key the store's string keys cannot hold; other
//! conversion failures (a missing field, an unknown variant, an integer
//! above `i64::MAX`) give [`Error::Convert`]. Paths are JSON pointers from
//! the value read (the root for node methods, the object for handle
//! methods). A failed read or update changes nothing.
//!
//! Shared objects are read as copies; an update that changes one copy
//! writes into the shared object, which every reference sees. Copies
//! changed alike are one change; copies changed differently fail with
//! [`Error::Convert`] naming where the object is reached, before anything
//! is written. In a `Vec`, an element that is a shared object is written
//! only where it stands alone between its kept neighbours and one new
//! element stands there: beside a removal or an insertion it may be the
//! element removed, so it is removed and the new element inserted, which
//! stores the value written and leaves the other references as they
//! were. A cycle cannot be read as a type ([`Error::Cycle`]).

mod de;
mod diff;
mod error;
pub mod pointer;
mod ser;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use facsimile_core::{IdKeys, ObjectId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{EngineError, Error, Result};
use crate::events::Subscription;
use crate::handle::{ArrayRef, MapRef, ObjectRef};
use crate::node::Node;
use crate::value::{Input, InputKind, Value};

use de::{ReadSet, Reader};
use diff::Target;
pub(crate) use error::{Seg, pointer};

impl Input {
    /// The value a `Serialize` type serializes to, as new objects: use it to
    /// write a typed value into one key or element with the untyped methods
    /// (`map.set("player", Input::from_serialize(&player)?)`). Unlike
    /// [`MapRef::set_from`] it does not diff: the key gets new objects.
    ///
    /// # Errors
    /// [`Error::Convert`] when the value has no store form (an integer above
    /// `i64::MAX`), [`Error::Type`] for a map key of a kind the store's
    /// string keys cannot hold (a float, a tuple, a struct).
    ///
    /// # Example
    /// ```
    /// use facsimile::{Input, LocalNetwork};
    /// use serde_json::json;
    ///
    /// #[derive(serde::Serialize)]
    /// struct Player { name: String, score: i64 }
    ///
    /// let node = LocalNetwork::new().join("a");
    /// let root = node.set_root(json!({}))?;
    /// let root = root.as_map().unwrap();
    /// root.set("p1", Input::from_serialize(&Player { name: "ada".into(), score: 3 })?)?;
    /// assert_eq!(node.root().to_json()?, json!({"p1": {"name": "ada", "score": 3}}));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn from_serialize<T: Serialize + ?Sized>(value: &T) -> Result<Input> {
        Ok(Input(InputKind::Core(ser::to_tree(value)?.into_input())))
    }
}

/// A typed listener registered with [`Node::watch`] or a handle's `watch`.
/// Dropping it stops the listener; [`Watch::detach`] keeps it for the
/// node's life instead.
#[must_use = "dropping a Watch stops it at once; call .detach() to keep it"]
pub struct Watch {
    subs: Vec<Subscription>,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch").field("subs", &self.subs).finish()
    }
}

impl Watch {
    /// Keeps the listener for the life of the node.
    pub fn detach(self) {
        for s in self.subs {
            s.detach();
        }
    }

    /// Whether the listener is still registered.
    pub fn is_active(&self) -> bool {
        self.subs.iter().all(Subscription::is_active)
    }
}

/// Reads `target` as `T` under one hold of the node's lock. The read set is
/// returned even when the read fails, so a watcher knows what to wait for.
fn read<T: DeserializeOwned>(node: &Node, target: Target) -> (Result<T>, ReadSet) {
    node.read(|replica| {
        let mut rd = Reader::new(replica);
        let value = match target {
            Target::Root => rd.root(),
            Target::Object(o) => rd.object(o),
        };
        (value, rd.reads)
    })
}

/// Plans, checks and applies the writes that make `target` hold the tree of
/// `value`, all under one hold of the node's lock. `reads` is what the
/// caller's value was computed from: if any of it changed since, nothing is
/// written and `Ok(false)` asks the caller to start over.
fn write_tree<T: Serialize + ?Sized>(
    node: &Node,
    target: Target,
    value: &T,
    reads: Option<&ReadSet>,
    old: Option<&ser::Tree>,
) -> Result<bool> {
    let tree = ser::to_tree(value)?;
    node.write(|r| {
        if reads.is_some_and(|rs| !rs.valid(r)) {
            return Ok(Ok(false));
        }
        // What `update` read, it compares as read; `set_from` exactly.
        let numbers = match reads {
            Some(_) => diff::Numbers::AsRead,
            None => diff::Numbers::Exact,
        };
        let plan = match diff::plan(r, target, tree, old, numbers) {
            Ok(plan) => plan,
            Err(e) => return Ok(Err(e)),
        };
        // All or nothing: every check the writes would make is made for
        // the whole plan before the first is applied, since one refused
        // halfway would leave those before it made and sent. The plan's
        // writes apply one after another (each index within its array as
        // the writes before leave it); each object written passes the
        // check of `Node::check_writable` (an object locked by another
        // node refuses the whole update); and together they fit in one
        // message.
        plan.validate(r)?;
        for o in plan.targets() {
            r.check_writable(o)?;
        }
        if !plan.writes.is_empty() {
            r.check_room(plan.planned())?;
            r.begin();
            let applied = plan.apply(r);
            // Closed whatever happened: a group left open would hold back
            // every later write. After the checks above no write is
            // refused, so this sends the whole plan.
            r.commit();
            applied?;
        }
        Ok(Ok(true))
    })?
}

fn set_from<T: Serialize + ?Sized>(node: &Node, target: Target, value: &T) -> Result<()> {
    write_tree(node, target, value, None, None).map(|_| ())
}

fn update<T, R>(node: &Node, target: Target, mut f: impl FnMut(&mut T) -> R) -> Result<R>
where
    T: Serialize + DeserializeOwned,
{
    loop {
        let (value, reads) = read::<T>(node, target);
        let mut value = value?;
        // What the value read declared, where serde read a map whole to
        // pick an enum's variant (the update deletes what it no longer
        // declares there), a struct read a field its map lacks (a default
        // the update leaves unwritten while unchanged), or a map was read
        // (the update deletes only the entries the value read held).
        let old = (reads.buffered() || reads.absent() || reads.maps())
            .then(|| ser::to_tree(&value))
            .transpose()?;
        let out = f(&mut value);
        if write_tree(node, target, &value, Some(&reads), old.as_ref())? {
            return Ok(out);
        }
    }
}

struct WatchState {
    reads: ReadSet,
    objects: HashSet<ObjectId, IdKeys>,
}

impl WatchState {
    fn new(reads: ReadSet) -> Self {
        WatchState {
            objects: reads.objects(),
            reads,
        }
    }
}

fn watch<T: DeserializeOwned>(
    node: &Node,
    target: Target,
    f: impl Fn(&T) + Send + Sync + 'static,
) -> Watch {
    let (_, reads) = read::<T>(node, target);
    let state = Arc::new(Mutex::new(WatchState::new(reads)));
    let weak = node.downgrade();
    let check = {
        let state = state.clone();
        Arc::new(move || {
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let node = Node { inner };
            let value = {
                let mut ws = state.lock().unwrap_or_else(|e| e.into_inner());
                // Several events of one batch (or of batches applied
                // together) find the read set already renewed: one call.
                if node.read(|r| ws.reads.valid(r)) {
                    return;
                }
                let (value, reads) = read::<T>(&node, target);
                *ws = WatchState::new(reads);
                value
            };
            // A state that does not decode as `T` (mid-migration, or written
            // by another program) is skipped; the watch fires again when
            // what it read changes.
            if let Ok(value) = value {
                f(&value);
            }
        })
    };
    let mut subs = Vec::with_capacity(3);
    subs.push({
        let check = check.clone();
        node.on_change(move |ev| {
            let relevant = state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .objects
                .contains(&ev.target().id());
            if relevant {
                check();
            }
        })
    });
    if let Target::Root = target {
        let check = check.clone();
        subs.push(node.on_root_changed(move |_| check()));
    }
    subs.push(node.on_ready(move |_| check()));
    Watch { subs }
}

impl Node {
    /// Writes `value` as the root, sending only what differs from the store
    /// (see [the rules](crate::typed)): writing the same value
    /// twice sends nothing the second time. When the root holds another
    /// kind of value (at first it is `Null`), it is replaced by new objects.
    ///
    /// To replace the root with new objects whatever it holds, use
    /// `node.set_root(Input::from_serialize(&value)?)`.
    ///
    /// # Errors
    /// [`Error::Convert`] when the value has no store form ([`Error::Type`]
    /// for a map key the store's string keys cannot hold), and the errors
    /// of [`Node::set_root`]. On error nothing is written.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize, Debug, PartialEq)]
    /// struct Game { round: i64, players: Vec<String> }
    ///
    /// let net = LocalNetwork::new();
    /// let host = net.join("host");
    /// let guest = net.join("guest");
    /// host.set_root_from(&Game { round: 1, players: vec!["ada".into()] })?;
    /// let game: Game = guest.root_as()?;
    /// assert_eq!(game, Game { round: 1, players: vec!["ada".into()] });
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn set_root_from<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
        set_from(self, Target::Root, value)
    }

    /// Reads the root as `T`.
    ///
    /// # Errors
    /// [`Error::Type`] naming the path where the store does not hold what
    /// `T` expects, [`Error::Convert`] for other conversion failures (a
    /// missing field, an unknown variant), [`Error::Cycle`].
    pub fn root_as<T: DeserializeOwned>(&self) -> Result<T> {
        read(self, Target::Root).0
    }

    /// Reads the root into `T`, runs `f` on it, and sends the writes that
    /// make the store hold the result: nothing for what `f` left unchanged,
    /// one write for a changed field, one insert for a pushed element. All
    /// of them go out as one message, and their events fire when `update`
    /// returns. Returns what `f` returns.
    ///
    /// `f` runs outside the node's lock; if what it read changed before the
    /// writes (a message arrived meanwhile), `update` reads again and runs
    /// `f` again, so `f` should only change its argument.
    ///
    /// # Errors
    /// The errors of [`Node::root_as`] (nothing is written),
    /// [`Error::Convert`] when the new value has no store form (as
    /// [`Node::set_root_from`] says), the refusal
    /// [`EngineError::NotOwner`] when another node holds the lock on an object it
    /// would write (checked before any write: nothing is sent), and the
    /// errors of [`Node::set_root`].
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize, Debug, PartialEq)]
    /// struct Game { round: i64, log: Vec<String> }
    ///
    /// let net = LocalNetwork::new();
    /// let host = net.join("host");
    /// let guest = net.join("guest");
    /// host.set_root_from(&Game { round: 1, log: vec![] })?;
    /// // One write for the round, one insert for the log entry, one message.
    /// host.update(|g: &mut Game| {
    ///     g.round += 1;
    ///     g.log.push("ada scored".into());
    /// })?;
    /// assert_eq!(guest.root_as::<Game>()?.round, 2);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn update<T, R>(&self, f: impl FnMut(&mut T) -> R) -> Result<R>
    where
        T: Serialize + DeserializeOwned,
    {
        update(self, Target::Root, f)
    }

    /// Calls `f` with the root read as `T` after each change to anything
    /// `T` reads, local or remote: once per message (or per group of
    /// messages applied together), not once per key. Changes to keys `T`
    /// does not declare do not call it; states that do not read as `T` are
    /// skipped. It does not fire for the current state: read that with
    /// [`Node::root_as`].
    ///
    /// `f` runs like any listener: after the change, outside every lock.
    ///
    /// # Example
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use facsimile::LocalNetwork;
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
    /// struct Score { ada: i64, bob: i64 }
    ///
    /// let net = LocalNetwork::new();
    /// let host = net.join("host");
    /// let guest = net.join("guest");
    /// host.set_root_from(&Score { ada: 0, bob: 0 })?;
    ///
    /// let seen = Arc::new(Mutex::new(Vec::new()));
    /// let log = seen.clone();
    /// let _watch = guest.watch(move |s: &Score| log.lock().unwrap().push(s.clone()));
    /// host.update(|s: &mut Score| { s.ada = 1; s.bob = 2 })?;
    /// assert_eq!(*seen.lock().unwrap(), vec![Score { ada: 1, bob: 2 }]);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn watch<T: DeserializeOwned>(&self, f: impl Fn(&T) + Send + Sync + 'static) -> Watch {
        watch(self, Target::Root, f)
    }

    /// The value at a JSON pointer (RFC 6901) from the root: `""` is the
    /// root, `"/elements/0"` element 0 of the root's key `elements`. `None`
    /// when nothing is there or the pointer is malformed (as
    /// `serde_json::Value::pointer`).
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"elements": [1, 2, {"a/b": true}]}))?;
    /// assert_eq!(node.get("/elements/0"), Some(Value::Int(1)));
    /// assert_eq!(node.get("/elements/2/a~1b"), Some(Value::Bool(true)));
    /// assert_eq!(node.get("/elements/7"), None);
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn get(&self, pointer: &str) -> Option<Value> {
        let segs = pointer::parse(pointer)?;
        self.read(|replica| {
            let v = pointer::resolve(replica, replica.root(), &segs)?;
            Some(self.value(replica, v))
        })
    }

    /// Writes `x` at a JSON pointer: `""` replaces the root, a key of a map
    /// is set, an index of an array is set (at the length it appends, as
    /// does `-`). The parent must exist.
    ///
    /// # Errors
    /// [`Error::Path`] when the pointer is malformed or its parent is not a
    /// map or an array, [`EngineError::IndexOutOfBounds`] past the end of an
    /// array, and the errors of [`MapRef::set`] (and of [`ArrayRef::set`]
    /// when the parent is an array).
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, Value};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"a": {"list": [1]}}))?;
    /// node.set_path("/a/b", 2)?;
    /// node.set_path("/a/list/-", 3)?;
    /// assert_eq!(node.root().to_json()?, json!({"a": {"b": 2, "list": [1, 3]}}));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn set_path(&self, pointer: &str, x: impl Into<Input>) -> Result<()> {
        let path_error = |reason: &str| Error::Path {
            path: pointer.to_string(),
            reason: reason.to_string(),
        };
        let mut segs = pointer::parse(pointer)
            .ok_or_else(|| path_error("a JSON pointer is empty or starts with '/'"))?;
        let Some(last) = segs.pop() else {
            return self.set_root(x).map(|_| ());
        };
        let input = x.into().into_core(self)?;
        let parent = |r: &facsimile_core::Replica| {
            pointer::resolve(r, r.root(), &segs)
                .and_then(|v| v.as_ref_id())
                .filter(|&o| r.kind(o).is_some())
                .ok_or_else(|| path_error("its parent is not a map or an array"))
        };
        self.write(|r| {
            let obj = match parent(r) {
                Ok(o) => o,
                Err(e) => return Ok(Err(e)),
            };
            match r.kind(obj) {
                Some(facsimile_core::ObjectKind::Array) => {
                    let len = r.list_len(obj)?;
                    let index = if last == "-" {
                        len
                    } else {
                        match pointer::index(&last) {
                            Some(i) => i,
                            None => return Ok(Err(path_error("not an array index"))),
                        }
                    };
                    if index > len {
                        return Err(EngineError::IndexOutOfBounds {
                            object: obj,
                            index,
                            len,
                        });
                    }
                    r.list_set(obj, index, input)?;
                }
                _ => {
                    r.map_set(obj, &last, input)?;
                }
            }
            Ok(Ok(()))
        })?
    }
}

/// The typed methods of handles. `$setup` is the start of their examples:
/// it makes `node` and `peer` on one network, `o` (a handle of `node`'s,
/// at `/o`) holding `start: T`, and `next: T`, which `change` makes of
/// `start`.
macro_rules! typed_handle {
    ($t:ident, $kind:literal, $setup:literal) => {
        impl $t {
            #[doc = concat!("Reads this ", $kind, " as `T` (see [the rules](crate::typed)).")]
            ///
            /// # Errors
            /// As [`Node::root_as`], with paths from this object, and
            /// [`EngineError::UnknownObject`] when it is gone.
            ///
            /// # Example
            /// ```
            #[doc = $setup]
            /// assert_eq!(o.get_as::<T>()?, start);
            /// # Ok::<(), facsimile::Error>(())
            /// ```
            pub fn get_as<T: DeserializeOwned>(&self) -> Result<T> {
                read(self.node(), Target::Object(self.id())).0
            }

            #[doc = concat!("Writes `value` into this ", $kind, ", sending only what differs")]
            /// (see [the rules](crate::typed)). The object keeps its
            /// identity, so the value must serialize as one of its kind.
            ///
            /// # Errors
            /// [`Error::Type`] when the value is of another kind, and the
            /// errors of [`Node::set_root_from`].
            ///
            /// # Example
            /// ```
            #[doc = $setup]
            /// o.set_from(&next)?;
            /// assert_eq!(peer.get("/o").unwrap().as_object().unwrap().get_as::<T>()?, next);
            /// # Ok::<(), facsimile::Error>(())
            /// ```
            pub fn set_from<T: Serialize + ?Sized>(&self, value: &T) -> Result<()> {
                set_from(self.node(), Target::Object(self.id()), value)
            }

            #[doc = concat!("Reads this ", $kind, " into `T`, runs `f` on it and sends the")]
            /// writes of what `f` changed, as one message. As [`Node::update`].
            ///
            /// # Errors
            /// As [`Node::update`], with paths from this object.
            ///
            /// # Example
            /// ```
            #[doc = $setup]
            /// o.update(change)?;
            /// assert_eq!(peer.get("/o").unwrap().as_object().unwrap().get_as::<T>()?, next);
            /// # Ok::<(), facsimile::Error>(())
            /// ```
            pub fn update<T, R>(&self, f: impl FnMut(&mut T) -> R) -> Result<R>
            where
                T: Serialize + DeserializeOwned,
            {
                update(self.node(), Target::Object(self.id()), f)
            }

            #[doc = concat!("Calls `f` with this ", $kind, " read as `T` after each change to")]
            /// anything `T` reads, until the returned [`Watch`] is dropped.
            /// As [`Node::watch`].
            ///
            /// # Example
            /// ```
            /// use std::sync::{Arc, Mutex};
            #[doc = $setup]
            /// let seen = Arc::new(Mutex::new(Vec::new()));
            /// let log = seen.clone();
            /// let on_peer = peer.get("/o").unwrap().as_object().unwrap();
            /// let _watch = on_peer.watch(move |t: &T| log.lock().unwrap().push(t.clone()));
            /// o.update(change)?;
            /// assert_eq!(*seen.lock().unwrap(), [next]);
            /// # Ok::<(), facsimile::Error>(())
            /// ```
            pub fn watch<T: DeserializeOwned>(
                &self,
                f: impl Fn(&T) + Send + Sync + 'static,
            ) -> Watch {
                watch(self.node(), Target::Object(self.id()), f)
            }
        }
    };
}

typed_handle!(
    MapRef,
    "map",
    r#"use facsimile::LocalNetwork;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
struct Player { name: String, score: i64 }
type T = Player;

let net = LocalNetwork::new();
let node = net.join("a");
let peer = net.join("b");
node.set_root(json!({"o": {"name": "ada", "score": 1}}))?;
let o = node.get("/o").unwrap().as_map().unwrap().clone();
let start = Player { name: "ada".into(), score: 1 };
let next = Player { name: "ada".into(), score: 2 };
let change = |p: &mut Player| p.score += 1;"#
);
typed_handle!(
    ArrayRef,
    "array",
    r#"use facsimile::LocalNetwork;
use serde_json::json;

type T = Vec<i64>;

let net = LocalNetwork::new();
let node = net.join("a");
let peer = net.join("b");
node.set_root(json!({"o": [1, 2]}))?;
let o = node.get("/o").unwrap().as_array().unwrap().clone();
let start = vec![1, 2];
let next = vec![1, 2, 3];
let change = |v: &mut T| v.push(3);"#
);
typed_handle!(
    ObjectRef,
    "object",
    r#"use std::collections::BTreeMap;
use facsimile::LocalNetwork;
use serde_json::json;

type T = BTreeMap<String, i64>;

let net = LocalNetwork::new();
let node = net.join("a");
let peer = net.join("b");
node.set_root(json!({"o": {"x": 1}}))?;
let o = node.get("/o").unwrap().as_object().unwrap();
let start = BTreeMap::from([("x".to_string(), 1)]);
let next = BTreeMap::from([("x".to_string(), 1), ("y".to_string(), 2)]);
let change = |m: &mut T| { m.insert("y".into(), 2); };"#
);
