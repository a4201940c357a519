//! Values as users see them, and what writes accept.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use facsimile_core::{Input as CoreInput, ObjectKind, Value as CoreValue};
use smol_str::SmolStr;

use crate::error::{Error, Result};
use crate::handle::{ArrayRef, MapRef, ObjectRef};
use crate::node::Node;
use crate::typed::pointer::escape;

/// A value read from the store: a scalar, or a handle to a map or an array.
#[derive(Clone, Default)]
pub enum Value {
    /// The absence of a value.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A signed integer.
    Int(i64),
    /// A float (compared bitwise: `NaN` equals itself).
    Float(f64),
    /// A string.
    String(SmolStr),
    /// Bytes.
    Bytes(Arc<[u8]>),
    /// A map.
    Map(MapRef),
    /// An array.
    Array(ArrayRef),
}

impl Value {
    /// Converts an engine value; `kind` tells what a reference points to.
    pub(crate) fn from_core(
        node: &Node,
        v: CoreValue,
        kind: impl Fn(facsimile_core::ObjectId) -> Option<ObjectKind>,
    ) -> Value {
        match v {
            CoreValue::Null => Value::Null,
            CoreValue::Bool(b) => Value::Bool(b),
            CoreValue::Int(i) => Value::Int(i),
            CoreValue::Float(f) => Value::Float(f),
            CoreValue::Str(s) => Value::String(s),
            CoreValue::Bytes(b) => Value::Bytes(b),
            CoreValue::Ref(id) => match kind(id) {
                Some(ObjectKind::Array) => Value::Array(ArrayRef::new(node.clone(), id)),
                // An object gone from this node reads as the map handle it
                // was; every operation on it reports `UnknownObject`.
                _ => Value::Map(MapRef::new(node.clone(), id)),
            },
        }
    }

    /// A total order over values, the one [`ArrayRef::sort`] uses: `Null`,
    /// then booleans (false first), numbers by value (an integer and a float
    /// of equal value: the integer first; floats by IEEE total order, so
    /// `NaN` sorts last), strings by their bytes, bytes, maps, arrays (two
    /// maps, or two arrays, are equal here: a stable sort keeps their
    /// order).
    ///
    /// # Example
    /// ```
    /// use std::cmp::Ordering;
    /// use facsimile::Value;
    ///
    /// assert_eq!(Value::Int(2).total_cmp(&Value::Float(2.5)), Ordering::Less);
    /// assert_eq!(Value::Null.total_cmp(&Value::Bool(false)), Ordering::Less);
    /// assert_eq!(Value::from("b").total_cmp(&Value::Int(9)), Ordering::Greater);
    /// ```
    pub fn total_cmp(&self, other: &Value) -> std::cmp::Ordering {
        use std::cmp::Ordering;
        fn rank(v: &Value) -> u8 {
            match v {
                Value::Null => 0,
                Value::Bool(_) => 1,
                Value::Int(_) | Value::Float(_) => 2,
                Value::String(_) => 3,
                Value::Bytes(_) => 4,
                Value::Map(_) => 5,
                Value::Array(_) => 6,
            }
        }
        // An integer against a float: by value, exactly (an i64 need not
        // fit an f64), the integer first when equal.
        fn int_float(i: i64, f: f64) -> Ordering {
            if f.is_nan() {
                return if f.is_sign_negative() {
                    Ordering::Greater
                } else {
                    Ordering::Less
                };
            }
            // Beyond ±2^63 every i64 is on one side.
            if f >= 9_223_372_036_854_775_808.0 {
                return Ordering::Less;
            }
            if f < -9_223_372_036_854_775_808.0 {
                return Ordering::Greater;
            }
            let whole = f.floor();
            // In range now: the cast is exact for a whole f64.
            (i as i128)
                .cmp(&(whole as i128))
                .then(if f > whole {
                    Ordering::Less
                } else {
                    Ordering::Equal
                })
                .then(Ordering::Less)
        }
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Float(a), Value::Float(b)) => a.total_cmp(b),
            (Value::Int(a), Value::Float(b)) => int_float(*a, *b),
            (Value::Float(a), Value::Int(b)) => int_float(*b, *a).reverse(),
            (Value::String(a), Value::String(b)) => a.as_bytes().cmp(b.as_bytes()),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            _ => rank(self).cmp(&rank(other)),
        }
    }

    /// The map, if this is one.
    pub fn as_map(&self) -> Option<&MapRef> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }

    /// The array, if this is one.
    pub fn as_array(&self) -> Option<&ArrayRef> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }

    /// The object, if this is a map or an array.
    pub fn as_object(&self) -> Option<ObjectRef> {
        match self {
            Value::Map(m) => Some(ObjectRef::Map(m.clone())),
            Value::Array(a) => Some(ObjectRef::Array(a.clone())),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The number as a float, if this is a number.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Float(f) => Some(*f),
            Value::Int(i) => Some(*i as f64),
            _ => None,
        }
    }

    /// The boolean, if this is one.
    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    /// The bytes, if this is a byte string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// Whether this is `Null`.
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// A deep copy as JSON. Bytes become arrays of numbers. An object
    /// shared by several places is copied at each: a document whose
    /// objects are shared many ways over is better read with
    /// [`Value::to_json_with_refs`].
    ///
    /// # Errors
    /// [`Error::Cycle`] when an object contains itself,
    /// [`Error::Convert`] when objects nest deeper than [`MAX_JSON_DEPTH`],
    /// and
    /// [`Error::Engine`] with
    /// [`UnknownObject`](crate::EngineError::UnknownObject) for a handle
    /// whose object is gone.
    pub fn to_json(&self) -> Result<serde_json::Value> {
        self.to_json_at(None)
    }

    /// A deep copy as JSON in which every object is written out once: where
    /// it appears again (shared, or inside itself), `{"$ref": pointer}`
    /// names the place it was first written, as a JSON pointer that starts
    /// with `at` (the place of this value in its document). A key `$ref`
    /// of a stored map is written `$$ref` (and `$$ref` as `$$$ref`, and so
    /// on), so that only a reference has the key `$ref`; pointers name
    /// keys as stored. Its size is
    /// that of the document however its objects are shared, where
    /// [`Value::to_json`] copies a shared object at each place and refuses
    /// a cycle.
    ///
    /// # Errors
    /// [`Error::Convert`] when objects nest deeper than [`MAX_JSON_DEPTH`],
    /// and [`Error::Engine`] with
    /// [`UnknownObject`](crate::EngineError::UnknownObject) for a handle
    /// whose object is gone.
    ///
    /// # Example
    /// ```
    /// use facsimile::LocalNetwork;
    /// use serde_json::json;
    ///
    /// let node = LocalNetwork::new().join("a");
    /// node.set_root(json!({"me": {}}))?;
    /// let me = node.get("/me").unwrap();
    /// me.as_map().unwrap().set("self", me.clone())?;
    /// assert_eq!(
    ///     node.get("/me").unwrap().to_json_with_refs("/me")?,
    ///     json!({"self": {"$ref": "/me"}})
    /// );
    /// # Ok::<(), facsimile::Error>(())
    /// ```
    pub fn to_json_with_refs(&self, at: &str) -> Result<serde_json::Value> {
        self.to_json_at(Some(at))
    }

    /// The copy of [`Value::to_json`], or with `refs` (the place of this
    /// value) that of [`Value::to_json_with_refs`]. A loop over a stack of
    /// the objects being written rather than a recursion: a document may
    /// be nested deeper than a thread's stack allows.
    fn to_json_at(&self, refs: Option<&str>) -> Result<serde_json::Value> {
        use serde_json::Value as J;
        /// An object being written: its entries left (in reverse), what
        /// is written of it, and its place.
        struct Open {
            id: facsimile_core::ObjectId,
            place: usize,
            kids: Kids,
        }
        enum Kids {
            /// With the key of the entry being written.
            Map(
                Vec<(SmolStr, Value)>,
                serde_json::Map<String, J>,
                Option<SmolStr>,
            ),
            Array(Vec<Value>, Vec<J>),
        }
        // With `refs`: where each object was written, as its parent's place
        // and its segment of the pointer (`NONE` for this value).
        const NONE: usize = usize::MAX;
        let mut places: Vec<(usize, String)> = Vec::new();
        let pointer = |places: &[(usize, String)], mut place: usize| {
            let mut segments = Vec::new();
            while let Some((parent, segment)) = places.get(place).filter(|p| p.0 != NONE) {
                segments.push(segment.as_str());
                place = *parent;
            }
            let mut out = refs.unwrap_or_default().to_owned();
            for s in segments.iter().rev() {
                out.push('/');
                out.push_str(s);
            }
            out
        };
        // The objects met and their places: those still open without
        // `refs`, every one with it.
        let mut met: HashMap<facsimile_core::ObjectId, usize> = HashMap::new();
        let mut stack: Vec<Open> = Vec::new();
        let mut next = Some((self.clone(), String::new()));
        while let Some((value, segment)) = next.take() {
            let mut done = match value {
                Value::Null => Some(J::Null),
                Value::Bool(b) => Some(J::Bool(b)),
                Value::Int(i) => Some(J::from(i)),
                Value::Float(f) => Some(serde_json::Number::from_f64(f).map_or(J::Null, J::Number)),
                Value::String(s) => Some(J::String(String::from(s.as_str()))),
                Value::Bytes(b) => Some(J::Array(b.iter().map(|&x| J::from(x)).collect())),
                Value::Map(_) | Value::Array(_) => {
                    let id = value.as_object().expect("an object").id();
                    match met.get(&id) {
                        Some(&place) if refs.is_some() => {
                            Some(serde_json::json!({ "$ref": pointer(&places, place) }))
                        }
                        Some(_) => return Err(Error::Cycle(id)),
                        None if stack.len() >= MAX_JSON_DEPTH => {
                            let mut path = String::new();
                            for o in &stack {
                                match &o.kids {
                                    Kids::Map(_, _, key) => {
                                        path.push('/');
                                        path.push_str(&escape(key.as_deref().unwrap_or_default()));
                                    }
                                    Kids::Array(_, out) => {
                                        path.push_str(&format!("/{}", out.len()))
                                    }
                                }
                            }
                            return Err(Error::Convert {
                                path,
                                message: format!(
                                    "objects nested deeper than {MAX_JSON_DEPTH} levels cannot become JSON"
                                ),
                            });
                        }
                        None => {
                            let place = places.len();
                            if refs.is_some() {
                                let parent = stack.last().map_or(NONE, |o| o.place);
                                places.push((parent, segment));
                            }
                            met.insert(id, place);
                            let kids = match value {
                                Value::Map(m) => {
                                    let mut entries = m.entries()?;
                                    entries.reverse();
                                    Kids::Map(entries, serde_json::Map::new(), None)
                                }
                                Value::Array(a) => {
                                    let mut items = a.to_vec()?;
                                    items.reverse();
                                    Kids::Array(items, Vec::new())
                                }
                                _ => unreachable!("matched as an object"),
                            };
                            stack.push(Open { id, place, kids });
                            None
                        }
                    }
                }
            };
            // Files what was written in the object that holds it, then
            // opens that object's next entry, or closes it and goes up.
            while let Some(top) = stack.last_mut() {
                match &mut top.kids {
                    Kids::Map(entries, out, key) => {
                        if let (Some(j), Some(k)) = (done.take(), key.take()) {
                            let k = match refs {
                                Some(_) => literal_key(&k),
                                None => String::from(k.as_str()),
                            };
                            out.insert(k, j);
                        }
                        if let Some((k, v)) = entries.pop() {
                            let segment = if refs.is_some() {
                                escape(&k).into_owned()
                            } else {
                                String::new()
                            };
                            *key = Some(k);
                            next = Some((v, segment));
                            break;
                        }
                    }
                    Kids::Array(items, out) => {
                        if let Some(j) = done.take() {
                            out.push(j);
                        }
                        if let Some(v) = items.pop() {
                            let segment = if refs.is_some() {
                                out.len().to_string()
                            } else {
                                String::new()
                            };
                            next = Some((v, segment));
                            break;
                        }
                    }
                }
                let closed = stack.pop().expect("looked at");
                if refs.is_none() {
                    met.remove(&closed.id);
                }
                done = Some(match closed.kids {
                    Kids::Map(_, out, _) => J::Object(out),
                    Kids::Array(_, out) => J::Array(out),
                });
            }
            if stack.is_empty() {
                return Ok(done.expect("the value is written when nothing is open"));
            }
        }
        unreachable!("the loop ends when the value is written")
    }
}

/// A map's key as [`Value::to_json_with_refs`] writes it: `$ref`, `$$ref`
/// and so on take one more `$`, so that a stored map whose key is `$ref`
/// is not read as a reference.
fn literal_key(key: &str) -> String {
    let escaped = key
        .strip_suffix("ref")
        .is_some_and(|dollars| !dollars.is_empty() && dollars.bytes().all(|b| b == b'$'));
    match escaped {
        true => format!("${key}"),
        false => key.to_owned(),
    }
}

/// How deep [`Value::to_json`] follows nested objects: JSON readers and
/// writers recurse, and most stop well before (serde_json reads 128
/// levels).
pub const MAX_JSON_DEPTH: usize = 1_000;

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("Null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::String(s) => write!(f, "{s:?}"),
            Value::Bytes(b) => write!(f, "b{b:?}"),
            Value::Map(m) => write!(f, "Map({:?})", m.id()),
            Value::Array(a) => write!(f, "Array({:?})", a.id()),
        }
    }
}

impl PartialEq for Value {
    /// Scalars compare by value (floats bitwise); maps and arrays by
    /// identity.
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Value::Null, Value::Null) => true,
            (Value::Bool(a), Value::Bool(b)) => a == b,
            (Value::Int(a), Value::Int(b)) => a == b,
            (Value::Float(a), Value::Float(b)) => a.to_bits() == b.to_bits(),
            (Value::String(a), Value::String(b)) => a == b,
            (Value::Bytes(a), Value::Bytes(b)) => a == b,
            (Value::Map(a), Value::Map(b)) => a == b,
            (Value::Array(a), Value::Array(b)) => a == b,
            _ => false,
        }
    }
}

/// What a write stores: a scalar, a reference to an existing map or array
/// (shared objects and cycles), or a tree of new objects (from
/// `serde_json::Value`, or built with [`Input::map`] and [`Input::array`]).
#[derive(Clone, Debug)]
pub struct Input(pub(crate) InputKind);

#[derive(Clone, Debug)]
pub(crate) enum InputKind {
    Core(CoreInput),
    Ref(Node, facsimile_core::ObjectId),
    Map(Vec<(SmolStr, Input)>),
    Array(Vec<Input>),
}

impl Input {
    /// A new map with these entries.
    pub fn map<K: Into<SmolStr>, V: Into<Input>>(
        entries: impl IntoIterator<Item = (K, V)>,
    ) -> Input {
        let mut entries = entries.into_iter().map(|(k, v)| (k.into(), v.into()));
        // A tree without handles is the engine's input already: built as
        // such, it is not converted again (a million-object tree spent a
        // tenth of its write converting).
        let mut core = Vec::with_capacity(entries.size_hint().0);
        while let Some((k, v)) = entries.next() {
            match v.0 {
                InputKind::Core(c) => core.push((k, c)),
                kind => {
                    let mut mixed: Vec<(SmolStr, Input)> = core
                        .into_iter()
                        .map(|(k, c)| (k, Input(InputKind::Core(c))))
                        .collect();
                    mixed.push((k, Input(kind)));
                    mixed.extend(entries);
                    return Input(InputKind::Map(mixed));
                }
            }
        }
        Input(InputKind::Core(CoreInput::Map(core)))
    }

    /// A new array with these elements.
    pub fn array<V: Into<Input>>(items: impl IntoIterator<Item = V>) -> Input {
        let mut items = items.into_iter().map(Into::into);
        // As for maps: without handles, the engine's input at once.
        let mut core = Vec::with_capacity(items.size_hint().0);
        while let Some(v) = items.next() {
            match v.0 {
                InputKind::Core(c) => core.push(c),
                kind => {
                    let mut mixed: Vec<Input> = core
                        .into_iter()
                        .map(|c| Input(InputKind::Core(c)))
                        .collect();
                    mixed.push(Input(kind));
                    mixed.extend(items);
                    return Input(InputKind::Array(mixed));
                }
            }
        }
        Input(InputKind::Core(CoreInput::Array(core)))
    }

    /// Null.
    pub fn null() -> Input {
        Input(InputKind::Core(CoreInput::Value(CoreValue::Null)))
    }

    /// Converts into the engine's input for `node`.
    pub(crate) fn into_core(self, node: &Node) -> Result<CoreInput> {
        Ok(match self.0 {
            InputKind::Core(c) => c,
            InputKind::Ref(owner, id) => {
                if !owner.same_node(node) {
                    return Err(Error::ForeignHandle(owner.hostname().to_string()));
                }
                CoreInput::Value(CoreValue::Ref(id))
            }
            InputKind::Map(entries) => CoreInput::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| Ok((k, v.into_core(node)?)))
                    .collect::<Result<_>>()?,
            ),
            InputKind::Array(items) => CoreInput::Array(
                items
                    .into_iter()
                    .map(|v| v.into_core(node))
                    .collect::<Result<_>>()?,
            ),
        })
    }
}

macro_rules! scalar_input {
    ($($t:ty),*) => {$(
        impl From<$t> for Input {
            fn from(x: $t) -> Self {
                Input(InputKind::Core(CoreInput::from(x)))
            }
        }
    )*};
}

scalar_input!(bool, i64, i32, u32, f64, &str, String, SmolStr, ());

impl From<&String> for Input {
    fn from(x: &String) -> Self {
        Input::from(x.as_str())
    }
}

impl From<Vec<u8>> for Input {
    fn from(b: Vec<u8>) -> Self {
        Input(InputKind::Core(CoreInput::Value(CoreValue::Bytes(
            b.into(),
        ))))
    }
}

impl From<&[u8]> for Input {
    fn from(b: &[u8]) -> Self {
        Input(InputKind::Core(CoreInput::Value(CoreValue::Bytes(
            b.into(),
        ))))
    }
}

/// JSON as input. Stored integers are `i64`: a JSON integer above
/// `i64::MAX` becomes the nearest `f64`, as JavaScript reads it; convert it
/// yourself (to a string, say) where every digit matters.
impl From<serde_json::Value> for Input {
    fn from(v: serde_json::Value) -> Self {
        Input(InputKind::Core(CoreInput::from(v)))
    }
}

impl From<&serde_json::Value> for Input {
    fn from(v: &serde_json::Value) -> Self {
        Input(InputKind::Core(CoreInput::from(v)))
    }
}

impl From<&MapRef> for Input {
    fn from(m: &MapRef) -> Self {
        Input(InputKind::Ref(m.node().clone(), m.id()))
    }
}

impl From<MapRef> for Input {
    fn from(m: MapRef) -> Self {
        Input::from(&m)
    }
}

impl From<&ArrayRef> for Input {
    fn from(a: &ArrayRef) -> Self {
        Input(InputKind::Ref(a.node().clone(), a.id()))
    }
}

impl From<ArrayRef> for Input {
    fn from(a: ArrayRef) -> Self {
        Input::from(&a)
    }
}

impl From<&ObjectRef> for Input {
    fn from(o: &ObjectRef) -> Self {
        Input(InputKind::Ref(o.node().clone(), o.id()))
    }
}

impl From<ObjectRef> for Input {
    fn from(o: ObjectRef) -> Self {
        Input::from(&o)
    }
}

impl From<&Value> for Input {
    fn from(v: &Value) -> Self {
        let core = |c: CoreValue| Input(InputKind::Core(CoreInput::Value(c)));
        match v {
            Value::Null => core(CoreValue::Null),
            Value::Bool(b) => core(CoreValue::Bool(*b)),
            Value::Int(i) => core(CoreValue::Int(*i)),
            Value::Float(f) => core(CoreValue::Float(*f)),
            Value::String(s) => core(CoreValue::Str(s.clone())),
            Value::Bytes(b) => core(CoreValue::Bytes(b.clone())),
            Value::Map(m) => Input::from(m),
            Value::Array(a) => Input::from(a),
        }
    }
}

impl From<Value> for Input {
    fn from(v: Value) -> Self {
        Input::from(&v)
    }
}

impl<T: Into<Input>> From<Option<T>> for Input {
    fn from(o: Option<T>) -> Self {
        o.map_or_else(Input::null, Into::into)
    }
}

macro_rules! value_eq {
    ($($t:ty => $p:pat => $e:expr),* $(,)?) => {$(
        impl PartialEq<$t> for Value {
            fn eq(&self, other: &$t) -> bool {
                match self { $p => $e(other), _ => false }
            }
        }
    )*};
}

value_eq!(
    i64 => Value::Int(i) => |o: &i64| i == o,
    i32 => Value::Int(i) => |o: &i32| *i == i64::from(*o),
    bool => Value::Bool(b) => |o: &bool| b == o,
    f64 => Value::Float(f) => |o: &f64| f.to_bits() == o.to_bits(),
    &str => Value::String(s) => |o: &&str| s == *o,
    str => Value::String(s) => |o: &str| s == o,
);

macro_rules! value_from {
    ($($t:ty => $v:ident),*) => {$(
        impl From<$t> for Value {
            fn from(x: $t) -> Self { Value::$v(x.into()) }
        }
    )*};
}

value_from!(bool => Bool, i64 => Int, i32 => Int, f64 => Float, &str => String, String => String);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::LocalNetwork;

    /// Trees without handles are built as the engine's input; a handle
    /// anywhere (after scalars, inside an array) keeps its place and is
    /// checked against the node it is written on.
    #[test]
    fn input_trees_with_and_without_handles() {
        let net = LocalNetwork::new();
        let a = net.join("a");
        let root = a.set_root(json!({"m": {"n": 1}})).unwrap();
        let root = root.as_map().unwrap().clone();
        let m = root.get("m").unwrap();

        let plain = Input::map([("x", Input::from(1)), ("y", Input::array([2, 3]))]);
        assert!(matches!(plain.0, InputKind::Core(CoreInput::Map(_))));
        let mixed = Input::map([
            ("x", Input::from(1)),
            ("h", Input::from(&m)),
            ("y", Input::array([Input::from(2), Input::from(&m)])),
        ]);
        assert!(matches!(mixed.0, InputKind::Map(_)));
        root.set("t", mixed).unwrap();
        assert_eq!(a.get("/t/x"), Some(Value::Int(1)));
        assert_eq!(a.get("/t/h"), Some(m.clone()));
        assert_eq!(a.get("/t/y/0"), Some(Value::Int(2)));
        assert_eq!(a.get("/t/y/1"), Some(m.clone()));
        root.set("p", plain).unwrap();
        assert_eq!(a.get("/p/y/1"), Some(Value::Int(3)));

        let other = net.join("b");
        let foreign = Input::map([("x", Input::from(1)), ("h", Input::from(&m))]);
        let other_root = other.set_root(json!({})).unwrap();
        let err = other_root.as_map().unwrap().set("f", foreign);
        assert!(matches!(err, Err(Error::ForeignHandle(_))), "{err:?}");
    }

    /// `total_cmp` is a total order (antisymmetric, transitive) over
    /// values at the edges: integers beyond what a float holds exactly,
    /// fractions, infinities, both NaNs, zero's two signs, every kind.
    #[test]
    fn total_cmp_is_a_total_order() {
        use std::cmp::Ordering;
        let big = i64::MAX;
        let values = vec![
            Value::Null,
            Value::Bool(false),
            Value::Bool(true),
            Value::Int(i64::MIN),
            Value::Int(-1),
            Value::Int(0),
            Value::Int(2),
            Value::Int(big),
            Value::Int(big - 1),
            Value::Int(1 << 53),
            Value::Int((1 << 53) + 1),
            Value::Float(f64::NEG_INFINITY),
            Value::Float(-0.0),
            Value::Float(0.0),
            Value::Float(1.5),
            Value::Float(2.0),
            Value::Float(9_007_199_254_740_992.0),
            Value::Float(9_223_372_036_854_775_808.0),
            Value::Float(-9_223_372_036_854_775_808.0),
            Value::Float(f64::INFINITY),
            Value::Float(f64::NAN),
            Value::Float(-f64::NAN),
            Value::from(""),
            Value::from("a"),
            Value::Bytes(Arc::from(&b"a"[..])),
        ];
        for a in &values {
            assert_eq!(a.total_cmp(a), Ordering::Equal, "{a:?}");
            for b in &values {
                assert_eq!(a.total_cmp(b), b.total_cmp(a).reverse(), "{a:?} {b:?}");
                for c in &values {
                    if a.total_cmp(b).is_le() && b.total_cmp(c).is_le() {
                        assert!(a.total_cmp(c).is_le(), "{a:?} {b:?} {c:?}");
                    }
                }
            }
        }
        let cmp = |a: Value, b: Value| a.total_cmp(&b);
        assert_eq!(
            cmp(Value::Int(big), Value::Float(9_223_372_036_854_775_808.0)),
            Ordering::Less
        );
        assert_eq!(
            cmp(
                Value::Int((1 << 53) + 1),
                Value::Float(9_007_199_254_740_992.0)
            ),
            Ordering::Greater
        );
        assert_eq!(cmp(Value::Int(2), Value::Float(2.0)), Ordering::Less);
        assert_eq!(cmp(Value::Int(1), Value::Float(1.5)), Ordering::Less);
        assert_eq!(cmp(Value::Int(-2), Value::Float(-1.5)), Ordering::Less);
        assert_eq!(
            cmp(Value::Float(f64::NAN), Value::Int(big)),
            Ordering::Greater
        );
        assert_eq!(
            cmp(Value::Float(-f64::NAN), Value::Int(i64::MIN)),
            Ordering::Less
        );
    }
}
