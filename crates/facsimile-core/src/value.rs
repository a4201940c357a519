//! Values, identities and the inputs that build new objects.

use std::fmt;
use std::sync::Arc;

use smol_str::SmolStr;

/// The identity of one participant: its hostname and an incarnation that
/// distinguishes two runs of the same host.
///
/// Peers order by hostname, then incarnation; a higher peer wins ties between
/// writes made at the same logical time.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerId {
    hostname: Arc<str>,
    incarnation: u32,
}

impl PeerId {
    /// Creates a peer id. Two live peers of one document must not share an
    /// incarnation; pick it at random (the `facsimile` crate does).
    pub fn new(hostname: impl Into<Arc<str>>, incarnation: u32) -> Self {
        PeerId {
            hostname: hostname.into(),
            incarnation,
        }
    }

    /// The hostname given at creation.
    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// The incarnation; also the peer's tag on the wire.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{:08x}", self.hostname, self.incarnation)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Index of a peer in one replica's peer table. Index 0 is the replica itself.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub(crate) struct PeerIdx(pub(crate) u32);

impl PeerIdx {
    pub(crate) const SELF: PeerIdx = PeerIdx(0);
}

/// A logical time: a Lamport counter and the peer that ticked it. Every
/// operation and every object, element and list slot is named by the stamp of
/// the operation that made it.
///
/// The peer is an index into one replica's peer table, so a stamp's total
/// order (counter, then hostname, then incarnation) is decided by
/// [`crate::clock::Peers::cmp`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub(crate) struct Id {
    pub(crate) counter: u64,
    pub(crate) peer: PeerIdx,
}

impl Id {
    pub(crate) const ZERO: Id = Id {
        counter: 0,
        peer: PeerIdx(0),
    };

    pub(crate) fn new(peer: PeerIdx, counter: u64) -> Self {
        Id { counter, peer }
    }
}

/// The identity of an object (a map or an array) within one replica.
///
/// Object ids are stable for the life of the object on a replica; the same
/// object has an equal id on every replica only through the wire encoding,
/// which translates peers.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectId(pub(crate) Id);

impl ObjectId {
    /// This id as a replica that took this one's place names it: ids this
    /// replica handed out before a [`Succession`] stay valid through it.
    ///
    /// ```
    /// use facsimile_core::{Config, Input, PeerId, Replica};
    /// let mut old = Replica::new(PeerId::new("a", 1), Config::default());
    /// let root = old.set_root(Input::Map(vec![])).unwrap().unwrap();
    /// let saved = old.export_state();
    /// let (new, succession) = old.successor(PeerId::new("a", 2), Some(&saved)).unwrap();
    /// assert!(new.kind(root.after(&succession)).is_some());
    /// ```
    #[must_use]
    pub fn after(self, succession: &Succession) -> ObjectId {
        if self.0.peer == PeerIdx::SELF && self.0.counter <= succession.boundary {
            ObjectId(Id::new(succession.previous, self.0.counter))
        } else {
            self
        }
    }
}

/// What a replica that takes another's place as a new incarnation
/// ([`crate::Replica::successor`], [`crate::Replica::reincarnate`]) needs to
/// read the object ids handed out before: every other peer keeps its
/// index, and the previous incarnation's own objects become a peer's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Succession {
    /// The previous incarnation's last counter.
    pub(crate) boundary: u64,
    /// Its index in the successor.
    pub(crate) previous: PeerIdx,
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}.{}", self.0.peer.0, self.0.counter)
    }
}

/// The kind of an object.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum ObjectKind {
    /// String keys to values.
    Map,
    /// An ordered list of values.
    Array,
}

/// A value stored in the document: a scalar or a reference to an object.
#[derive(Clone, Debug, Default)]
pub enum Value {
    /// The absence of a value.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed 64-bit integer.
    Int(i64),
    /// A 64-bit float. Compared bitwise, so `NaN` equals itself.
    Float(f64),
    /// A UTF-8 string.
    Str(SmolStr),
    /// A byte string.
    Bytes(Arc<[u8]>),
    /// A reference to a map or an array.
    Ref(ObjectId),
}

impl Value {
    /// Whether writing `other` over `self` changes nothing.
    pub fn same(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::Str(a), Value::Str(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Ref(a), Value::Ref(b)) => a == b,
            _ => false,
        }
    }

    /// The referenced object, if this is a reference.
    pub fn as_ref_id(&self) -> Option<ObjectId> {
        match self {
            Value::Ref(id) => Some(*id),
            _ => None,
        }
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.same(other)
    }
}

/// What a write stores: a scalar, a reference to an existing object, or a
/// tree of new maps and arrays to create.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// A scalar or a reference to an existing object.
    Value(Value),
    /// A new map with these entries, in this order.
    Map(Vec<(SmolStr, Input)>),
    /// A new array with these elements.
    Array(Vec<Input>),
}

impl From<Value> for Input {
    fn from(v: Value) -> Self {
        Input::Value(v)
    }
}

macro_rules! input_from {
    ($($t:ty => $v:ident),* $(,)?) => {$(
        impl From<$t> for Value {
            fn from(x: $t) -> Self { Value::$v(x.into()) }
        }
        impl From<$t> for Input {
            fn from(x: $t) -> Self { Input::Value(Value::$v(x.into())) }
        }
    )*};
}

input_from!(bool => Bool, i64 => Int, i32 => Int, u32 => Int, f64 => Float, &str => Str, String => Str, SmolStr => Str);

impl From<()> for Input {
    fn from(_: ()) -> Self {
        Input::Value(Value::Null)
    }
}

impl From<ObjectId> for Input {
    fn from(id: ObjectId) -> Self {
        Input::Value(Value::Ref(id))
    }
}

/// JSON as input. Stored integers are `i64`: a JSON integer outside that
/// range (above `i64::MAX`) becomes the nearest `f64`, as JavaScript reads
/// it; convert it yourself (to a string, say) where every digit matters.
impl From<&serde_json::Value> for Input {
    fn from(v: &serde_json::Value) -> Self {
        use serde_json::Value as J;
        match v {
            J::Null => Input::Value(Value::Null),
            J::Bool(b) => Input::Value(Value::Bool(*b)),
            J::Number(n) => Input::Value(match n.as_i64() {
                Some(i) => Value::Int(i),
                None => Value::Float(n.as_f64().unwrap_or(f64::NAN)),
            }),
            J::String(s) => Input::Value(Value::Str(s.into())),
            J::Array(a) => Input::Array(a.iter().map(Input::from).collect()),
            J::Object(o) => Input::Map(o.iter().map(|(k, v)| (k.into(), Input::from(v))).collect()),
        }
    }
}

impl From<serde_json::Value> for Input {
    fn from(v: serde_json::Value) -> Self {
        Input::from(&v)
    }
}

/// A property of an object: a map key or an array index.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Prop {
    /// A map key.
    Key(SmolStr),
    /// An array index.
    Index(usize),
}

impl fmt::Display for Prop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Prop::Key(k) => write!(f, "{k:?}"),
            Prop::Index(i) => write!(f, "[{i}]"),
        }
    }
}
