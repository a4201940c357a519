//! A `serde::Serializer` that turns any `Serialize` value into a [`Tree`]:
//! the shape the store will hold, still knowing which maps are structs (whose
//! undeclared keys a diff must leave alone) and which are enum variants
//! (which a diff replaces whole).

use std::collections::hash_map::Entry;

use facsimile_core::{Input as CoreInput, Value as CoreValue};
use rustc_hash::FxHashMap;
use serde::ser::{self, Serialize};
use smol_str::SmolStr;

use super::error::ConvError;

/// A serialized value, before it meets the store.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tree {
    /// A scalar (never a reference).
    Scalar(CoreValue),
    /// An `f32`, stored as a float: a stored value that reads as this
    /// `f32` already holds it.
    Single(f32),
    /// `Option::None` in a struct field, or a field skipped by
    /// `skip_serializing_if`: the key is absent. Anywhere else `None` is
    /// stored as `Null` (in a newtype too, even in a struct field).
    Absent,
    /// A sequence, tuple or tuple struct: an array.
    Seq(Vec<Tree>),
    /// A map (`HashMap`, `BTreeMap`, a flattened struct): the key set is
    /// exactly this one, each key once.
    Map(Vec<(SmolStr, Tree)>),
    /// A struct: these fields, and no opinion about other keys.
    Struct(Vec<(&'static str, Tree)>),
    /// A newtype, tuple or struct variant: a map with the one key `name`
    /// (serde's external tagging). Unit variants are plain strings.
    Variant(&'static str, Box<Tree>),
}

impl Tree {
    /// `None` outside a struct field is `Null`.
    fn present(self) -> Tree {
        match self {
            Tree::Absent => Tree::Scalar(CoreValue::Null),
            t => t,
        }
    }

    /// The engine input that creates this value as new objects.
    pub(crate) fn into_input(self) -> CoreInput {
        match self {
            Tree::Scalar(v) => CoreInput::Value(v),
            Tree::Single(v) => CoreInput::Value(CoreValue::Float(v.into())),
            Tree::Absent => CoreInput::Value(CoreValue::Null),
            Tree::Seq(items) => CoreInput::Array(items.into_iter().map(Tree::into_input).collect()),
            Tree::Map(entries) => CoreInput::Map(
                entries
                    .into_iter()
                    .map(|(k, t)| (k, t.into_input()))
                    .collect(),
            ),
            Tree::Struct(fields) => CoreInput::Map(
                fields
                    .into_iter()
                    .filter(|(_, t)| !matches!(t, Tree::Absent))
                    .map(|(k, t)| (SmolStr::new_static(k), t.into_input()))
                    .collect(),
            ),
            Tree::Variant(name, t) => {
                CoreInput::Map(vec![(SmolStr::new_static(name), t.into_input())])
            }
        }
    }

    /// [`Tree::into_input`] of a borrowed tree.
    pub(crate) fn to_input(&self) -> CoreInput {
        match self {
            Tree::Scalar(v) => CoreInput::Value(v.clone()),
            Tree::Single(v) => CoreInput::Value(CoreValue::Float((*v).into())),
            Tree::Absent => CoreInput::Value(CoreValue::Null),
            Tree::Seq(items) => CoreInput::Array(items.iter().map(Tree::to_input).collect()),
            Tree::Map(entries) => CoreInput::Map(
                entries
                    .iter()
                    .map(|(k, t)| (k.clone(), t.to_input()))
                    .collect(),
            ),
            Tree::Struct(fields) => CoreInput::Map(
                fields
                    .iter()
                    .filter(|(_, t)| !matches!(t, Tree::Absent))
                    .map(|(k, t)| (SmolStr::new_static(k), t.to_input()))
                    .collect(),
            ),
            Tree::Variant(name, t) => {
                CoreInput::Map(vec![(SmolStr::new_static(name), t.to_input())])
            }
        }
    }

    /// Whether two trees are the same value, floats bit for bit (as
    /// [`CoreValue::same`]), so that a `NaN` is the `NaN` it was.
    pub(crate) fn same(&self, other: &Tree) -> bool {
        match (self, other) {
            (Tree::Scalar(a), Tree::Scalar(b)) => a.same(b),
            (Tree::Single(a), Tree::Single(b)) => a.to_bits() == b.to_bits(),
            (Tree::Absent, Tree::Absent) => true,
            (Tree::Seq(a), Tree::Seq(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.same(b))
            }
            (Tree::Map(a), Tree::Map(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, a), (kb, b))| ka == kb && a.same(b))
            }
            (Tree::Struct(a), Tree::Struct(b)) => {
                a.len() == b.len()
                    && a.iter()
                        .zip(b)
                        .all(|((ka, a), (kb, b))| ka == kb && a.same(b))
            }
            (Tree::Variant(na, a), Tree::Variant(nb, b)) => na == nb && a.same(b),
            _ => false,
        }
    }

    /// What this value is, in the words of a type error.
    pub(crate) fn describe(&self) -> &'static str {
        match self {
            Tree::Scalar(v) => super::error::describe(v, None),
            Tree::Single(v) => super::error::describe(&CoreValue::Float((*v).into()), None),
            Tree::Absent => "null",
            Tree::Seq(_) => "array",
            Tree::Map(_) | Tree::Struct(_) | Tree::Variant(..) => "map",
        }
    }
}

/// Serializes a value into a tree.
pub(crate) fn to_tree<T: Serialize + ?Sized>(value: &T) -> Result<Tree, ConvError> {
    Ok(value.serialize(TreeSer)?.present())
}

pub(crate) struct TreeSer;

fn int(i: i64) -> Result<Tree, ConvError> {
    Ok(Tree::Scalar(CoreValue::Int(i)))
}

fn out_of_range(v: impl std::fmt::Display) -> ConvError {
    ConvError::message(format!(
        "the integer {v} does not fit in the store's 64-bit signed integers"
    ))
}

impl ser::Serializer for TreeSer {
    type Ok = Tree;
    type Error = ConvError;
    type SerializeSeq = SeqSer;
    type SerializeTuple = SeqSer;
    type SerializeTupleStruct = SeqSer;
    type SerializeTupleVariant = VariantSer<SeqSer>;
    type SerializeMap = MapSer;
    type SerializeStruct = StructSer;
    type SerializeStructVariant = VariantSer<StructSer>;

    fn serialize_bool(self, v: bool) -> Result<Tree, ConvError> {
        Ok(Tree::Scalar(CoreValue::Bool(v)))
    }
    fn serialize_i8(self, v: i8) -> Result<Tree, ConvError> {
        int(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<Tree, ConvError> {
        int(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<Tree, ConvError> {
        int(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<Tree, ConvError> {
        int(v)
    }
    fn serialize_i128(self, v: i128) -> Result<Tree, ConvError> {
        int(i64::try_from(v).map_err(|_| out_of_range(v))?)
    }
    fn serialize_u8(self, v: u8) -> Result<Tree, ConvError> {
        int(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<Tree, ConvError> {
        int(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<Tree, ConvError> {
        int(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<Tree, ConvError> {
        int(i64::try_from(v).map_err(|_| out_of_range(v))?)
    }
    fn serialize_u128(self, v: u128) -> Result<Tree, ConvError> {
        int(i64::try_from(v).map_err(|_| out_of_range(v))?)
    }
    fn serialize_f32(self, v: f32) -> Result<Tree, ConvError> {
        Ok(Tree::Single(v))
    }
    fn serialize_f64(self, v: f64) -> Result<Tree, ConvError> {
        Ok(Tree::Scalar(CoreValue::Float(v)))
    }
    fn serialize_char(self, v: char) -> Result<Tree, ConvError> {
        let mut buf = [0; 4];
        Ok(Tree::Scalar(CoreValue::Str(SmolStr::new(
            v.encode_utf8(&mut buf),
        ))))
    }
    fn serialize_str(self, v: &str) -> Result<Tree, ConvError> {
        Ok(Tree::Scalar(CoreValue::Str(SmolStr::new(v))))
    }
    fn serialize_bytes(self, v: &[u8]) -> Result<Tree, ConvError> {
        Ok(Tree::Scalar(CoreValue::Bytes(v.into())))
    }
    fn serialize_none(self) -> Result<Tree, ConvError> {
        Ok(Tree::Absent)
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Tree, ConvError> {
        Ok(value.serialize(TreeSer)?.present())
    }
    fn serialize_unit(self) -> Result<Tree, ConvError> {
        Ok(Tree::Scalar(CoreValue::Null))
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<Tree, ConvError> {
        self.serialize_unit()
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<Tree, ConvError> {
        Ok(Tree::Scalar(CoreValue::Str(SmolStr::new_static(variant))))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<Tree, ConvError> {
        // A newtype of `None` is null, as in serde_json: its derive reads
        // it with `deserialize_newtype_struct`, which a missing key does not
        // answer with `None` (only `Option` itself reads one as `None`).
        Ok(value.serialize(TreeSer)?.present())
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        value: &T,
    ) -> Result<Tree, ConvError> {
        let inner = value
            .serialize(TreeSer)
            .map_err(|e| e.at_key(variant))?
            .present();
        Ok(Tree::Variant(variant, Box::new(inner)))
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<SeqSer, ConvError> {
        Ok(SeqSer(Vec::with_capacity(len.unwrap_or(0).min(4096))))
    }
    fn serialize_tuple(self, len: usize) -> Result<SeqSer, ConvError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_struct(self, _name: &'static str, len: usize) -> Result<SeqSer, ConvError> {
        self.serialize_seq(Some(len))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantSer<SeqSer>, ConvError> {
        Ok(VariantSer {
            name: variant,
            inner: self.serialize_seq(Some(len))?,
        })
    }
    fn serialize_map(self, len: Option<usize>) -> Result<MapSer, ConvError> {
        Ok(MapSer {
            entries: Vec::with_capacity(len.unwrap_or(0).min(4096)),
            key: None,
        })
    }
    fn serialize_struct(self, _name: &'static str, len: usize) -> Result<StructSer, ConvError> {
        Ok(StructSer(Vec::with_capacity(len)))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
        len: usize,
    ) -> Result<VariantSer<StructSer>, ConvError> {
        Ok(VariantSer {
            name: variant,
            inner: StructSer(Vec::with_capacity(len)),
        })
    }
}

pub(crate) struct SeqSer(Vec<Tree>);

impl SeqSer {
    fn push<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ConvError> {
        let index = self.0.len();
        let t = value.serialize(TreeSer).map_err(|e| e.at_index(index))?;
        self.0.push(t.present());
        Ok(())
    }
}

impl ser::SerializeSeq for SeqSer {
    type Ok = Tree;
    type Error = ConvError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ConvError> {
        self.push(value)
    }
    fn end(self) -> Result<Tree, ConvError> {
        Ok(Tree::Seq(self.0))
    }
}

impl ser::SerializeTuple for SeqSer {
    type Ok = Tree;
    type Error = ConvError;
    fn serialize_element<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ConvError> {
        self.push(value)
    }
    fn end(self) -> Result<Tree, ConvError> {
        Ok(Tree::Seq(self.0))
    }
}

impl ser::SerializeTupleStruct for SeqSer {
    type Ok = Tree;
    type Error = ConvError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ConvError> {
        self.push(value)
    }
    fn end(self) -> Result<Tree, ConvError> {
        Ok(Tree::Seq(self.0))
    }
}

pub(crate) struct VariantSer<S> {
    name: &'static str,
    inner: S,
}

impl ser::SerializeTupleVariant for VariantSer<SeqSer> {
    type Ok = Tree;
    type Error = ConvError;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ConvError> {
        let name = self.name;
        self.inner.push(value).map_err(|e| e.at_key(name))
    }
    fn end(self) -> Result<Tree, ConvError> {
        Ok(Tree::Variant(self.name, Box::new(Tree::Seq(self.inner.0))))
    }
}

impl ser::SerializeStructVariant for VariantSer<StructSer> {
    type Ok = Tree;
    type Error = ConvError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ConvError> {
        let name = self.name;
        self.inner.field(key, value).map_err(|e| e.at_key(name))
    }
    fn skip_field(&mut self, key: &'static str) -> Result<(), ConvError> {
        self.inner.0.push((key, Tree::Absent));
        Ok(())
    }
    fn end(self) -> Result<Tree, ConvError> {
        Ok(Tree::Variant(
            self.name,
            Box::new(Tree::Struct(self.inner.0)),
        ))
    }
}

pub(crate) struct StructSer(Vec<(&'static str, Tree)>);

impl StructSer {
    fn field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ConvError> {
        // `None` stays `Absent` here: a struct field holding `None` is an
        // absent key.
        let t = value.serialize(TreeSer).map_err(|e| e.at_key(key))?;
        self.0.push((key, t));
        Ok(())
    }
}

impl ser::SerializeStruct for StructSer {
    type Ok = Tree;
    type Error = ConvError;
    fn serialize_field<T: Serialize + ?Sized>(
        &mut self,
        key: &'static str,
        value: &T,
    ) -> Result<(), ConvError> {
        self.field(key, value)
    }
    fn skip_field(&mut self, key: &'static str) -> Result<(), ConvError> {
        // `skip_serializing_if` said the field is not there: the key must
        // not be either (or an update that empties it would leave it).
        self.0.push((key, Tree::Absent));
        Ok(())
    }
    fn end(self) -> Result<Tree, ConvError> {
        Ok(Tree::Struct(self.0))
    }
}

pub(crate) struct MapSer {
    entries: Vec<(SmolStr, Tree)>,
    key: Option<SmolStr>,
}

impl ser::SerializeMap for MapSer {
    type Ok = Tree;
    type Error = ConvError;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> Result<(), ConvError> {
        self.key = Some(key.serialize(KeySer)?);
        Ok(())
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ConvError> {
        let key = self
            .key
            .take()
            .ok_or_else(|| ConvError::message("a map value was serialized before its key"))?;
        let t = value.serialize(TreeSer).map_err(|e| e.at_key(&key))?;
        self.entries.push((key, t.present()));
        Ok(())
    }
    fn end(self) -> Result<Tree, ConvError> {
        Ok(Tree::Map(last_of_each(self.entries)))
    }
}

/// The entries with each key once, holding its last value. serde_json keeps
/// the last of a key serialized twice (a flattened struct's field and an
/// entry of the same name); the engine, creating a map, keeps the first,
/// and a diff would then write the last over it each time.
fn last_of_each(entries: Vec<(SmolStr, Tree)>) -> Vec<(SmolStr, Tree)> {
    // Keys in order (a `BTreeMap`'s) repeat none: nothing to look up.
    if entries.windows(2).all(|w| w[0].0 < w[1].0) {
        return entries;
    }
    let mut at: FxHashMap<SmolStr, usize> = FxHashMap::default();
    let mut out: Vec<(SmolStr, Tree)> = Vec::with_capacity(entries.len());
    for (k, t) in entries {
        match at.entry(k) {
            Entry::Occupied(e) => out[*e.get()].1 = t,
            Entry::Vacant(e) => {
                out.push((e.key().clone(), t));
                e.insert(out.len() - 1);
            }
        }
    }
    out
}

/// Map keys: strings, and what serde_json also turns into strings (integers,
/// chars, booleans, unit variants, newtypes of those).
struct KeySer;

fn key_error(found: &str) -> ConvError {
    ConvError::mismatch("a string map key", found)
}

macro_rules! key_display {
    ($($f:ident: $t:ty),*) => {$(
        fn $f(self, v: $t) -> Result<SmolStr, ConvError> {
            Ok(SmolStr::new(v.to_string()))
        }
    )*};
}

impl ser::Serializer for KeySer {
    type Ok = SmolStr;
    type Error = ConvError;
    type SerializeSeq = ser::Impossible<SmolStr, ConvError>;
    type SerializeTuple = ser::Impossible<SmolStr, ConvError>;
    type SerializeTupleStruct = ser::Impossible<SmolStr, ConvError>;
    type SerializeTupleVariant = ser::Impossible<SmolStr, ConvError>;
    type SerializeMap = ser::Impossible<SmolStr, ConvError>;
    type SerializeStruct = ser::Impossible<SmolStr, ConvError>;
    type SerializeStructVariant = ser::Impossible<SmolStr, ConvError>;

    key_display!(
        serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32,
        serialize_i64: i64, serialize_i128: i128, serialize_u8: u8, serialize_u16: u16,
        serialize_u32: u32, serialize_u64: u64, serialize_u128: u128, serialize_char: char
    );

    fn serialize_str(self, v: &str) -> Result<SmolStr, ConvError> {
        Ok(SmolStr::new(v))
    }
    fn serialize_f32(self, _v: f32) -> Result<SmolStr, ConvError> {
        Err(key_error("float"))
    }
    fn serialize_f64(self, _v: f64) -> Result<SmolStr, ConvError> {
        Err(key_error("float"))
    }
    fn serialize_bytes(self, _v: &[u8]) -> Result<SmolStr, ConvError> {
        Err(key_error("bytes"))
    }
    fn serialize_none(self) -> Result<SmolStr, ConvError> {
        Err(key_error("null"))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<SmolStr, ConvError> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<SmolStr, ConvError> {
        Err(key_error("null"))
    }
    fn serialize_unit_struct(self, _name: &'static str) -> Result<SmolStr, ConvError> {
        Err(key_error("null"))
    }
    fn serialize_unit_variant(
        self,
        _name: &'static str,
        _index: u32,
        variant: &'static str,
    ) -> Result<SmolStr, ConvError> {
        Ok(SmolStr::new_static(variant))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        value: &T,
    ) -> Result<SmolStr, ConvError> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _value: &T,
    ) -> Result<SmolStr, ConvError> {
        Err(key_error("enum variant with data"))
    }
    fn serialize_seq(self, _len: Option<usize>) -> Result<Self::SerializeSeq, ConvError> {
        Err(key_error("array"))
    }
    fn serialize_tuple(self, _len: usize) -> Result<Self::SerializeTuple, ConvError> {
        Err(key_error("array"))
    }
    fn serialize_tuple_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleStruct, ConvError> {
        Err(key_error("array"))
    }
    fn serialize_tuple_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeTupleVariant, ConvError> {
        Err(key_error("enum variant with data"))
    }
    fn serialize_map(self, _len: Option<usize>) -> Result<Self::SerializeMap, ConvError> {
        Err(key_error("map"))
    }
    fn serialize_struct(
        self,
        _name: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStruct, ConvError> {
        Err(key_error("map"))
    }
    fn serialize_struct_variant(
        self,
        _name: &'static str,
        _index: u32,
        _variant: &'static str,
        _len: usize,
    ) -> Result<Self::SerializeStructVariant, ConvError> {
        Err(key_error("enum variant with data"))
    }
}
