//! Errors of store operations and locks.
//!
//! The engine's refusals are [`EngineError`]s. [`Error`] carries them
//! whole in [`Error::Engine`], with the [`Place`] of the object concerned
//! when the document reaches it, so that a message names `/items` rather
//! than an internal id. Each message is written once: the engine's where no
//! place is known, this module's where one is, and the lock refusals the
//! specification words ("Object is not owned by current host") only here,
//! for [`Error`] and [`LockError`](crate::LockError) alike.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;

use facsimile_core::{IdKeys, ObjectId, ObjectKind, ReceiveError, Replica, Value as CoreValue};

use crate::typed::{Seg, pointer};

/// The engine's error ([`facsimile_core::Error`]): why it refused a read,
/// a write or a lock. Match on it through [`Error::engine`].
pub use facsimile_core::Error as EngineError;

/// Why a store operation was refused. A refused write changes nothing and
/// sends nothing.
///
/// # Example
/// ```
/// use facsimile::{EngineError, LocalNetwork};
/// use serde_json::json;
///
/// let node = LocalNetwork::new().join("a");
/// node.set_root(json!({"items": [1, 2]}))?;
/// let items = node.get("/items").unwrap();
/// let err = items.as_array().unwrap().remove(5).unwrap_err();
/// assert!(matches!(
///     err.engine(),
///     Some(EngineError::IndexOutOfBounds { index: 5, len: 2, .. })
/// ));
/// assert_eq!(
///     err.to_string(),
///     "index 5 is out of bounds for the array at /items, of length 2"
/// );
/// # Ok::<(), facsimile::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// [`ArrayRef::reorder`](crate::ArrayRef::reorder) or
    /// [`ArrayRef::sort_by`](crate::ArrayRef::sort_by) gave up: an element
    /// the new order was computed from was removed or written while it was
    /// computed, every time; nothing moved.
    #[error(
        "an element of the array was removed or written while its new order was computed, {attempts} times in a row; nothing moved"
    )]
    Modified {
        /// How many times the order was computed.
        attempts: usize,
    },
    /// The node has no transport: call [`crate::Node::set_sender`] (or join a
    /// network) before writing.
    #[error("this node has no transport: call set_sender (or join a network) before writing")]
    NoSender,
    /// The engine refused the operation: the object is gone or of the other
    /// kind, an index is past the end, a referenced object was removed,
    /// another node holds the lock, a sync is in progress. Match on
    /// `error` (or [`Error::engine`]).
    #[error("{}", Refusal(error, place.as_ref()))]
    Engine {
        /// What the engine refused, and why.
        error: EngineError,
        /// Where the object concerned is in this node's document, when the
        /// root reaches it.
        place: Option<Place>,
    },
    /// A handle of another node was passed to this node.
    #[error(
        "a handle of node {0} was passed to another node; read its value and write that instead"
    )]
    ForeignHandle(String),
    /// A deep conversion met a cycle.
    #[error("the value contains a cycle through object {0:?} and cannot become a tree")]
    Cycle(ObjectId),
    /// The store does not hold what a type expects (typed reads and
    /// updates, [`crate::typed`]), or a value written has a map key the
    /// store's string keys cannot hold (a float, a tuple). `path` is a JSON
    /// pointer from the value read or written (empty for the value
    /// itself). Nothing was changed.
    #[error("{}: expected {expected}, found {found}", display_path(.path))]
    Type {
        /// Where: a JSON pointer such as `/players/3/score`.
        path: String,
        /// What the type expects (`i64`, `struct Player`, ...).
        expected: String,
        /// What the store holds (`string`, `null`, `a map with no key`, ...).
        found: String,
    },
    /// A typed conversion failed for another reason: a missing field, an
    /// unknown enum variant, an integer the store cannot hold, copies of
    /// one shared object that an update changed differently, or an error
    /// of the type's own `Serialize` or `Deserialize`. Nothing was changed.
    #[error("{}: {message}", display_path(.path))]
    Convert {
        /// Where: a JSON pointer from the value read or written.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A JSON pointer names no place to write: it is malformed, or its
    /// parent is not a map or an array.
    #[error("cannot write at {path:?}: {reason}")]
    Path {
        /// The pointer.
        path: String,
        /// Why.
        reason: String,
    },
    /// An incoming message was refused; the node is unchanged.
    #[error(transparent)]
    Receive(#[from] ReceiveError),
    /// [`Node::reload`](crate::Node::reload) was called inside a listener
    /// (or the sender) of a node, the one it reloads or any other. They
    /// run while their node hands out what it has to send and report,
    /// under its pump, which the reload takes: it would wait for ever for
    /// this thread's own, or for another thread's whose listener waits
    /// for this one in turn. Nothing was changed; reload after the
    /// listener returns.
    #[error(
        "a node cannot be reloaded inside a listener (or the sender) of a node; \
         reload it after the listener returns"
    )]
    InListener,
}

impl Error {
    /// The engine's refusal, when the engine refused.
    ///
    /// # Example
    /// ```
    /// use facsimile::{EngineError, LocalNetwork};
    /// use futures_executor::block_on;
    /// use serde_json::json;
    ///
    /// let net = LocalNetwork::new();
    /// let a = net.join("a");
    /// let b = net.join("b");
    /// a.set_root(json!({"score": 0}))?;
    /// let _guard = block_on(a.lock(a.root_map().unwrap()))?;
    ///
    /// let err = b.root_map().unwrap().set("score", 1).unwrap_err();
    /// assert!(matches!(err.engine(), Some(EngineError::NotOwner(_))));
    /// assert_eq!(
    ///     err.to_string(),
    ///     "Object is not owned by current host: another node holds the lock on the root map \
    ///      (or this node's own request for it is not granted yet: its writes wait for the grant)"
    /// );
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn engine(&self) -> Option<&EngineError> {
        match self {
            Error::Engine { error, .. } => Some(error),
            _ => None,
        }
    }

    /// Where the object the error is about sits in the document, when the
    /// root reached it as the error was made.
    ///
    /// # Example
    /// ```
    /// use facsimile::{LocalNetwork, ObjectKind};
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"teams": [{"name": "red"}, [1]]}))?;
    /// let err = node.set_path("/teams/1/5", 0).unwrap_err();
    /// let place = err.place().unwrap();
    /// assert_eq!((place.kind(), place.path()), (ObjectKind::Array, "/teams/1"));
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn place(&self) -> Option<&Place> {
        match self {
            Error::Engine { place, .. } => place.as_ref(),
            _ => None,
        }
    }

    /// The engine's refusal, with the place of the object it names.
    pub(crate) fn engine_in(error: EngineError, replica: &mut Replica) -> Error {
        let place = subject(&error).and_then(|o| locate(replica, o));
        Error::Engine { error, place }
    }
}

/// The engine's refusal without a place (the object is not looked for).
impl From<EngineError> for Error {
    fn from(error: EngineError) -> Self {
        Error::Engine { error, place: None }
    }
}

/// Shorthand for results of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where an object sits in a node's document: its kind and its path from
/// the root, as a JSON pointer (RFC 6901). Errors carry it for their
/// messages; it is the shortest path, keys in order, when the error was
/// made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Place {
    kind: ObjectKind,
    path: String,
}

impl Place {
    /// Whether the object is a map or an array.
    pub fn kind(&self) -> ObjectKind {
        self.kind
    }

    /// The JSON pointer from the root (`/items/0`; empty for the root
    /// itself).
    pub fn path(&self) -> &str {
        &self.path
    }
}

impl fmt::Display for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            ObjectKind::Map => "map",
            ObjectKind::Array => "array",
        };
        if self.path.is_empty() {
            write!(f, "the root {kind}")
        } else {
            write!(f, "the {kind} at {}", self.path)
        }
    }
}

/// An object in a message: by its place, else by its id.
pub(crate) struct Subject<'a>(pub(crate) ObjectId, pub(crate) Option<&'a Place>);

impl fmt::Display for Subject<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.1 {
            Some(place) => place.fmt(f),
            None => write!(f, "object {:?}", self.0),
        }
    }
}

/// The refusal of a write to a map whose lock another node holds, worded
/// as the specification requires.
pub(crate) fn not_owner(f: &mut fmt::Formatter<'_>, object: Subject<'_>) -> fmt::Result {
    write!(
        f,
        "Object is not owned by current host: another node holds the lock on {object}"
    )
}

/// The refusal of a write to a map, or of an element set, while another
/// node holds or heads the lock on the object, or while this node's own
/// request for it waits: the node writes only once granted (DESIGN.md).
pub(crate) fn not_writable(f: &mut fmt::Formatter<'_>, object: Subject<'_>) -> fmt::Result {
    not_owner(f, object)?;
    f.write_str(
        " (or this node's own request for it is not granted yet: its writes wait for the grant)",
    )
}

/// The refusal of an array method, or of a fail-fast lock request, while
/// another node holds or waits for the lock.
pub(crate) fn locked(f: &mut fmt::Formatter<'_>, object: Subject<'_>) -> fmt::Result {
    write!(f, "{object} is locked by another node")
}

/// An engine refusal in words: the engine's own where no place is known
/// (their ids are all it has), these where the message can name a path.
struct Refusal<'a>(&'a EngineError, Option<&'a Place>);

impl fmt::Display for Refusal<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use EngineError as E;
        match (self.0, self.1) {
            (E::NotOwner(o), place) => not_writable(f, Subject(*o, place)),
            (E::Locked(o), place) => locked(f, Subject(*o, place)),
            (E::NotLocked(_), Some(place)) => write!(f, "{place} is not locked"),
            (E::WrongKind { expected, .. }, Some(place)) => {
                let expected = match expected {
                    ObjectKind::Map => "a map",
                    ObjectKind::Array => "an array",
                };
                write!(f, "{place} is not {expected}")
            }
            (E::IndexOutOfBounds { index, len, .. }, Some(place)) => {
                write!(
                    f,
                    "index {index} is out of bounds for {place}, of length {len}"
                )
            }
            (E::BadPermutation { len, .. }, Some(place)) => {
                write!(f, "not a permutation of the {len} elements of {place}")
            }
            (e, _) => e.fmt(f),
        }
    }
}

/// The object an engine error is about, when it is worth looking for:
/// an unknown or detached object is not reachable from the root.
fn subject(error: &EngineError) -> Option<ObjectId> {
    use EngineError as E;
    match error {
        E::NotOwner(o) | E::Locked(o) | E::NotLocked(o) => Some(*o),
        E::WrongKind { object, .. }
        | E::IndexOutOfBounds { object, .. }
        | E::BadPermutation { object, .. } => Some(*object),
        _ => None,
    }
}

/// How many values a search for a place looks at before giving up: an
/// error retried in a loop (a write refused while another node holds the
/// lock) must not cost a walk of a large document each time.
const LOCATE_BUDGET: usize = 1 << 16;

/// The place of `target`: a breadth-first search from the root, keys in
/// order, so the path is the shortest and the same on every node that
/// holds the same document. `None` when the root does not reach it (or
/// not within [`LOCATE_BUDGET`]).
pub(crate) fn locate(r: &mut Replica, target: ObjectId) -> Option<Place> {
    let kind = r.kind(target)?;
    let CoreValue::Ref(root) = r.root() else {
        return None;
    };
    // How each object was first reached: its parent and the step.
    let mut via: HashMap<ObjectId, (ObjectId, Seg), IdKeys> = HashMap::default();
    let mut seen = HashSet::<_, IdKeys>::from_iter([root]);
    let mut queue = VecDeque::from([root]);
    let mut budget = LOCATE_BUDGET;
    while let Some(o) = queue.pop_front() {
        if o == target {
            let mut steps = Vec::new();
            let mut at = o;
            while let Some((parent, seg)) = via.remove(&at) {
                steps.push(seg);
                at = parent;
            }
            let path = pointer(steps.iter().rev());
            return Some(Place { kind, path });
        }
        let mut visit = |child: ObjectId, seg: Seg| {
            if seen.insert(child) {
                via.insert(child, (o, seg));
                queue.push_back(child);
            }
        };
        let looked = match r.kind(o) {
            Some(ObjectKind::Map) => {
                let mut n = 0;
                let _ = r.map_for_each(o, |k, v, _| {
                    n += 1;
                    if let CoreValue::Ref(c) = v {
                        visit(*c, Seg::Key(k.clone()));
                    }
                });
                n
            }
            Some(ObjectKind::Array) => {
                let mut n = 0;
                let _ = r.list_for_each(o, |v, _| {
                    if let CoreValue::Ref(c) = v {
                        visit(*c, Seg::Index(n));
                    }
                    n += 1;
                });
                n
            }
            None => 0,
        };
        budget = budget.checked_sub(looked.max(1))?;
    }
    None
}

/// A JSON pointer for messages: the empty pointer (the value itself) reads
/// as `(root)`.
fn display_path(path: &str) -> &str {
    if path.is_empty() { "(root)" } else { path }
}
