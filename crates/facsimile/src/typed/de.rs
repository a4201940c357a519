//! A `serde::Deserializer` reading straight from a replica (under the node's
//! lock), recording what it read so that a later write can check that
//! nothing it depends on changed meanwhile.

use std::collections::HashSet;

use facsimile_core::{IdKeys, ObjectId, ObjectKind, Replica, Value as CoreValue};
use serde::de::{self, DeserializeSeed, IntoDeserializer, Visitor};
use smol_str::SmolStr;

use super::error::{ConvError, describe};
use crate::error::{EngineError, Error};

/// How deep a typed read follows nested objects. Deeper documents are
/// refused rather than risking the thread's stack (serde_json's limit).
pub(crate) const MAX_DEPTH: usize = 128;

/// What a typed read or a diff looked at, to validate later under the lock
/// (optimistic concurrency): if every read still returns what it returned,
/// nothing the reader could see has changed.
#[derive(Default, Debug)]
pub(crate) struct ReadSet {
    reads: Vec<Read>,
    buffered: bool,
    maps: bool,
}

#[derive(Debug)]
enum Read {
    /// The root held this value.
    Root(CoreValue),
    /// A map key held this value (`None`: absent).
    Key(ObjectId, SmolStr, Option<CoreValue>),
    /// A map had this many keys (with every key recorded as well).
    Len(ObjectId, usize),
    /// An array had this version and length.
    List(ObjectId, u64, usize),
}

impl ReadSet {
    pub(crate) fn root(&mut self, v: &CoreValue) {
        self.reads.push(Read::Root(v.clone()));
    }

    fn reserve(&mut self, n: usize) {
        self.reads.reserve(n);
    }

    pub(crate) fn key(&mut self, obj: ObjectId, key: SmolStr, v: Option<&CoreValue>) {
        self.reads.push(Read::Key(obj, key, v.cloned()));
    }

    pub(crate) fn len(&mut self, obj: ObjectId, len: usize) {
        self.reads.push(Read::Len(obj, len));
    }

    pub(crate) fn list(&mut self, r: &Replica, obj: ObjectId) {
        let version = r.list_version(obj).unwrap_or(u64::MAX);
        let len = r.list_len(obj).unwrap_or(0);
        self.reads.push(Read::List(obj, version, len));
    }

    /// Whether every read still returns what it returned.
    pub(crate) fn valid(&self, r: &Replica) -> bool {
        self.reads.iter().all(|read| match read {
            Read::Root(v) => r.root().same(v),
            Read::Key(o, k, v) => match (r.map_get(*o, k), v) {
                (Ok(Some(now)), Some(v)) => now.same(v),
                (Ok(None), None) => true,
                _ => false,
            },
            Read::Len(o, n) => r.map_len(*o).is_ok_and(|len| len == *n),
            Read::List(o, version, n) => {
                r.list_version(*o).is_ok_and(|v| v == *version)
                    && r.list_len(*o).is_ok_and(|len| len == *n)
            }
        })
    }

    /// Whether the type read a map through `deserialize_any`: serde does
    /// so for an untagged or internally tagged enum, whose variant it
    /// picks by the keys it finds ([`super::diff::plan`] then needs what
    /// the value read declared).
    pub(crate) fn buffered(&self) -> bool {
        self.buffered
    }

    /// Whether the type read a map as a map (its entries, not a struct's
    /// fields): a key may not read back as it is stored (a key type of
    /// its own), so [`super::diff::plan`] needs the entries the value read
    /// held.
    pub(crate) fn maps(&self) -> bool {
        self.maps
    }

    /// Whether a struct read a field its map lacks (the type may have
    /// filled it in with a default).
    pub(crate) fn absent(&self) -> bool {
        self.reads
            .iter()
            .any(|r| matches!(r, Read::Key(_, _, None)))
    }

    /// The objects read.
    pub(crate) fn objects(&self) -> HashSet<ObjectId, IdKeys> {
        self.reads
            .iter()
            .filter_map(|r| match r {
                Read::Root(_) => None,
                Read::Key(o, ..) | Read::Len(o, _) | Read::List(o, ..) => Some(*o),
            })
            .collect()
    }
}

/// The state of one typed read.
pub(crate) struct Reader<'r> {
    replica: &'r mut Replica,
    pub(crate) reads: ReadSet,
    /// Objects on the current path, to refuse cycles.
    stack: Vec<ObjectId>,
}

impl<'r> Reader<'r> {
    pub(crate) fn new(replica: &'r mut Replica) -> Self {
        Reader {
            replica,
            reads: ReadSet::default(),
            stack: Vec::new(),
        }
    }

    /// Reads the root as `T`.
    pub(crate) fn root<T: de::DeserializeOwned>(&mut self) -> Result<T, Error> {
        let v = self.replica.root();
        self.reads.root(&v);
        T::deserialize(De { rd: self, v }).map_err(ConvError::into_error)
    }

    /// Reads an object as `T`.
    pub(crate) fn object<T: de::DeserializeOwned>(&mut self, obj: ObjectId) -> Result<T, Error> {
        if self.replica.kind(obj).is_none() {
            return Err(EngineError::UnknownObject(obj).into());
        }
        T::deserialize(De {
            rd: self,
            v: CoreValue::Ref(obj),
        })
        .map_err(ConvError::into_error)
    }

    fn kind(&self, v: &CoreValue) -> Option<ObjectKind> {
        v.as_ref_id().and_then(|o| self.replica.kind(o))
    }

    fn mismatch(&self, expected: impl std::fmt::Display, v: &CoreValue) -> ConvError {
        ConvError::mismatch(expected, describe(v, self.kind(v)))
    }

    /// Runs `f` inside object `o`, refusing cycles and excessive depth.
    fn enter<R>(
        &mut self,
        o: ObjectId,
        f: impl FnOnce(&mut Self) -> Result<R, ConvError>,
    ) -> Result<R, ConvError> {
        if self.stack.contains(&o) {
            return Err(ConvError::store(Error::Cycle(o)));
        }
        if self.stack.len() >= MAX_DEPTH {
            return Err(ConvError::message(format!(
                "objects nested deeper than {MAX_DEPTH} levels cannot be read as a type"
            )));
        }
        self.stack.push(o);
        let r = f(self);
        self.stack.pop();
        r
    }

    fn map_entries(&mut self, o: ObjectId) -> Result<Vec<(SmolStr, CoreValue)>, ConvError> {
        let entries = self
            .replica
            .map_entries(o)
            .map_err(|e| ConvError::store(e.into()))?;
        self.reads.len(o, entries.len());
        for (k, v) in &entries {
            self.reads.key(o, k.clone(), Some(v));
        }
        Ok(entries)
    }

    fn list_values(&mut self, o: ObjectId) -> Result<Vec<CoreValue>, ConvError> {
        let values = self
            .replica
            .list_values(o)
            .map_err(|e| ConvError::store(e.into()))?;
        self.reads.list(self.replica, o);
        Ok(values)
    }
}

/// One stored value, as a deserializer.
struct De<'a, 'r> {
    rd: &'a mut Reader<'r>,
    v: CoreValue,
}

macro_rules! de_int {
    ($($f:ident: $t:ty => $visit:ident),* $(,)?) => {$(
        fn $f<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
            match self.v {
                CoreValue::Int(i) => match <$t>::try_from(i) {
                    Ok(x) => visitor.$visit(x),
                    Err(_) => Err(ConvError::mismatch(stringify!($t), format!("integer {i}"))),
                },
                v => Err(self.rd.mismatch(stringify!($t), &v)),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for De<'_, '_> {
    type Error = ConvError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        match self.v {
            CoreValue::Null => visitor.visit_unit(),
            CoreValue::Bool(b) => visitor.visit_bool(b),
            CoreValue::Int(i) => visitor.visit_i64(i),
            CoreValue::Float(f) => visitor.visit_f64(f),
            CoreValue::Str(s) => visitor.visit_str(&s),
            CoreValue::Bytes(b) => visitor.visit_bytes(&b),
            CoreValue::Ref(o) => match self.rd.replica.kind(o) {
                Some(ObjectKind::Map) => {
                    self.rd.reads.buffered = true;
                    De::map(self.rd, o, visitor)
                }
                Some(ObjectKind::Array) => De::seq(self.rd, o, None, visitor),
                None => Err(ConvError::store(EngineError::UnknownObject(o).into())),
            },
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        match self.v {
            CoreValue::Bool(b) => visitor.visit_bool(b),
            v => Err(self.rd.mismatch("bool", &v)),
        }
    }

    de_int!(
        deserialize_i8: i8 => visit_i8,
        deserialize_i16: i16 => visit_i16,
        deserialize_i32: i32 => visit_i32,
        deserialize_i64: i64 => visit_i64,
        deserialize_i128: i128 => visit_i128,
        deserialize_u8: u8 => visit_u8,
        deserialize_u16: u16 => visit_u16,
        deserialize_u32: u32 => visit_u32,
        deserialize_u64: u64 => visit_u64,
        deserialize_u128: u128 => visit_u128,
    );

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        match self.v {
            CoreValue::Float(f) => visitor.visit_f32(f as f32),
            CoreValue::Int(i) => visitor.visit_f32(i as f32),
            v => Err(self.rd.mismatch("f32", &v)),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        // An integer reads as a float (JSON written elsewhere may store `1`
        // for `1.0`); the diff counts them equal, so this sends nothing.
        match self.v {
            CoreValue::Float(f) => visitor.visit_f64(f),
            CoreValue::Int(i) => visitor.visit_f64(i as f64),
            v => Err(self.rd.mismatch("f64", &v)),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        match self.v {
            CoreValue::Str(s) => {
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => visitor.visit_char(c),
                    _ => Err(ConvError::mismatch(
                        "char",
                        format!("a string of {} characters", s.chars().count()),
                    )),
                }
            }
            v => Err(self.rd.mismatch("char", &v)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        match self.v {
            CoreValue::Str(s) => visitor.visit_str(&s),
            v => Err(self.rd.mismatch("string", &v)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        match self.v {
            CoreValue::Bytes(b) => visitor.visit_bytes(&b),
            v => Err(self.rd.mismatch("bytes", &v)),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        match self.v {
            CoreValue::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        match self.v {
            CoreValue::Null => visitor.visit_unit(),
            v => Err(self.rd.mismatch("null", &v)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConvError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConvError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        match self.v {
            CoreValue::Ref(o) if self.rd.replica.kind(o) == Some(ObjectKind::Array) => {
                De::seq(self.rd, o, None, visitor)
            }
            v => Err(self.rd.mismatch("array", &v)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, ConvError> {
        match self.v {
            CoreValue::Ref(o) if self.rd.replica.kind(o) == Some(ObjectKind::Array) => {
                De::seq(self.rd, o, Some(len), visitor)
            }
            v => Err(self.rd.mismatch(format_args!("an array of {len}"), &v)),
        }
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, ConvError> {
        self.deserialize_tuple(len, visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        match self.v {
            CoreValue::Ref(o) if self.rd.replica.kind(o) == Some(ObjectKind::Map) => {
                De::map(self.rd, o, visitor)
            }
            v => Err(self.rd.mismatch("map", &v)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConvError> {
        match self.v {
            CoreValue::Ref(o) if self.rd.replica.kind(o) == Some(ObjectKind::Map) => {
                self.rd.enter(o, |rd| {
                    rd.reads.reserve(fields.len());
                    visitor.visit_map(StructAccess {
                        rd,
                        obj: o,
                        fields,
                        next: 0,
                        value: None,
                    })
                })
            }
            v => Err(self.rd.mismatch(format_args!("struct {name}"), &v)),
        }
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConvError> {
        match self.v {
            CoreValue::Str(s) => visitor.visit_enum(s.as_str().into_deserializer()),
            CoreValue::Ref(o) if self.rd.replica.kind(o) == Some(ObjectKind::Map) => {
                self.rd.enter(o, |rd| {
                    let expected = format_args!("enum {name} (a string, or a map with one key)");
                    let entries = rd.map_entries(o)?;
                    // Several keys, all variants: two nodes switched the
                    // variant at once through the enum's own object (a
                    // delete and a set in it each, merged key by key). Its
                    // first key in byte order is a choice every replica
                    // makes alike, from what each holds, where the key
                    // written last needs stamps the engine does not expose
                    // (DESIGN, "An enum switched through its own object");
                    // a typed write of it deletes the others. A key that
                    // is no variant is no switch's: the map is not this
                    // enum's, and reading it as one would have the next
                    // write delete what the type cannot see.
                    if entries.len() > 1 {
                        if let Some((k, _)) = entries
                            .iter()
                            .find(|(k, _)| !variants.contains(&k.as_str()))
                        {
                            return Err(ConvError::mismatch(
                                expected,
                                format!(
                                    "a map with {} keys, {k:?} none of its variants",
                                    entries.len()
                                ),
                            ));
                        }
                    }
                    let Some((variant, value)) = entries.into_iter().next() else {
                        return Err(ConvError::mismatch(expected, "a map with no key"));
                    };
                    visitor.visit_enum(EnumAccess { rd, variant, value })
                })
            }
            v => Err(self.rd.mismatch(format_args!("enum {name}"), &v)),
        }
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        // Nothing below is read, so nothing is recorded: the reader does
        // not depend on it.
        visitor.visit_unit()
    }
}

impl<'a, 'r> De<'a, 'r> {
    fn map<'de, V: Visitor<'de>>(
        rd: &'a mut Reader<'r>,
        o: ObjectId,
        visitor: V,
    ) -> Result<V::Value, ConvError> {
        rd.reads.maps = true;
        rd.enter(o, |rd| {
            let entries = rd.map_entries(o)?;
            visitor.visit_map(MapAccess {
                rd,
                entries: entries.into_iter(),
                value: None,
            })
        })
    }

    fn seq<'de, V: Visitor<'de>>(
        rd: &'a mut Reader<'r>,
        o: ObjectId,
        len: Option<usize>,
        visitor: V,
    ) -> Result<V::Value, ConvError> {
        rd.enter(o, |rd| {
            let values = rd.list_values(o)?;
            let n = values.len();
            if let Some(len) = len {
                if n != len {
                    return Err(ConvError::mismatch(
                        format_args!("an array of {len}"),
                        format!("an array of {n}"),
                    ));
                }
            }
            let mut access = SeqAccess {
                rd,
                values: values.into_iter(),
                index: 0,
            };
            let out = visitor.visit_seq(&mut access)?;
            if access.values.len() > 0 {
                return Err(ConvError::mismatch(
                    format_args!("an array of {}", access.index),
                    format!("an array of {n}"),
                ));
            }
            Ok(out)
        })
    }
}

struct SeqAccess<'a, 'r> {
    rd: &'a mut Reader<'r>,
    values: std::vec::IntoIter<CoreValue>,
    index: usize,
}

impl<'de> de::SeqAccess<'de> for &mut SeqAccess<'_, '_> {
    type Error = ConvError;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, ConvError> {
        let Some(v) = self.values.next() else {
            return Ok(None);
        };
        let index = self.index;
        self.index += 1;
        seed.deserialize(De { rd: self.rd, v })
            .map(Some)
            .map_err(|e| e.at_index(index))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.values.len())
    }
}

struct MapAccess<'a, 'r> {
    rd: &'a mut Reader<'r>,
    entries: std::vec::IntoIter<(SmolStr, CoreValue)>,
    value: Option<(SmolStr, CoreValue)>,
}

impl<'de> de::MapAccess<'de> for MapAccess<'_, '_> {
    type Error = ConvError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ConvError> {
        let Some((k, v)) = self.entries.next() else {
            return Ok(None);
        };
        let key = seed
            .deserialize(KeyDe(k.clone()))
            .map_err(|e| e.at_key(&k))?;
        self.value = Some((k, v));
        Ok(Some(key))
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, ConvError> {
        let (k, v) = self
            .value
            .take()
            .ok_or_else(|| ConvError::message("a map value was read before its key"))?;
        seed.deserialize(De { rd: self.rd, v })
            .map_err(|e| e.at_key(&k))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.entries.len())
    }
}

/// A struct: only its declared fields are looked up (keys the type does not
/// know are neither read nor depended on).
struct StructAccess<'a, 'r> {
    rd: &'a mut Reader<'r>,
    obj: ObjectId,
    fields: &'static [&'static str],
    next: usize,
    value: Option<(&'static str, CoreValue)>,
}

impl<'de> de::MapAccess<'de> for StructAccess<'_, '_> {
    type Error = ConvError;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, ConvError> {
        while let Some(&field) = self.fields.get(self.next) {
            self.next += 1;
            let v = self
                .rd
                .replica
                .map_get(self.obj, field)
                .map_err(|e| ConvError::store(e.into()))?;
            self.rd
                .reads
                .key(self.obj, SmolStr::new_static(field), v.as_ref());
            if let Some(v) = v {
                let key =
                    seed.deserialize(de::value::BorrowedStrDeserializer::<ConvError>::new(field))?;
                self.value = Some((field, v));
                return Ok(Some(key));
            }
        }
        Ok(None)
    }

    fn next_value_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<T::Value, ConvError> {
        let (k, v) = self
            .value
            .take()
            .ok_or_else(|| ConvError::message("a field value was read before its name"))?;
        seed.deserialize(De { rd: self.rd, v })
            .map_err(|e| e.at_key(k))
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.fields.len() - self.next)
    }
}

struct EnumAccess<'a, 'r> {
    rd: &'a mut Reader<'r>,
    variant: SmolStr,
    value: CoreValue,
}

impl<'de, 'a, 'r> de::EnumAccess<'de> for EnumAccess<'a, 'r> {
    type Error = ConvError;
    type Variant = VariantAccess<'a, 'r>;

    fn variant_seed<V: DeserializeSeed<'de>>(
        self,
        seed: V,
    ) -> Result<(V::Value, VariantAccess<'a, 'r>), ConvError> {
        let tag = seed.deserialize(KeyDe(self.variant.clone()))?;
        Ok((
            tag,
            VariantAccess {
                rd: self.rd,
                variant: self.variant,
                value: self.value,
            },
        ))
    }
}

struct VariantAccess<'a, 'r> {
    rd: &'a mut Reader<'r>,
    variant: SmolStr,
    value: CoreValue,
}

impl<'de> de::VariantAccess<'de> for VariantAccess<'_, '_> {
    type Error = ConvError;

    fn unit_variant(self) -> Result<(), ConvError> {
        match self.value {
            CoreValue::Null => Ok(()),
            v => Err(self.rd.mismatch("null", &v).at_key(&self.variant)),
        }
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value, ConvError> {
        let variant = self.variant;
        seed.deserialize(De {
            rd: self.rd,
            v: self.value,
        })
        .map_err(|e| e.at_key(&variant))
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, ConvError> {
        let variant = self.variant;
        de::Deserializer::deserialize_tuple(
            De {
                rd: self.rd,
                v: self.value,
            },
            len,
            visitor,
        )
        .map_err(|e| e.at_key(&variant))
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConvError> {
        let variant = self.variant;
        de::Deserializer::deserialize_struct(
            De {
                rd: self.rd,
                v: self.value,
            },
            "variant",
            fields,
            visitor,
        )
        .map_err(|e| e.at_key(&variant))
    }
}

/// A map key, as a deserializer: a string that also reads as an integer, a
/// boolean or a char (the keys the serializer turned into strings). Such a
/// key reads only in the form the serializer writes (`"1"`, not `"01"` or
/// `"+1"`): two stored keys must never read as one, which an update would
/// then write back as one.
struct KeyDe(SmolStr);

macro_rules! key_parse {
    ($($f:ident: $t:ty => $visit:ident),* $(,)?) => {$(
        fn $f<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
            match self.0.parse::<$t>() {
                Ok(x) if x.to_string() == self.0 => visitor.$visit(x),
                _ => Err(ConvError::mismatch(
                    concat!("a map key holding a ", stringify!($t), " as it is written"),
                    format!("the key {:?}", self.0.as_str()),
                )),
            }
        }
    )*};
}

impl<'de> de::Deserializer<'de> for KeyDe {
    type Error = ConvError;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        visitor.visit_str(&self.0)
    }

    key_parse!(
        deserialize_bool: bool => visit_bool,
        deserialize_i8: i8 => visit_i8,
        deserialize_i16: i16 => visit_i16,
        deserialize_i32: i32 => visit_i32,
        deserialize_i64: i64 => visit_i64,
        deserialize_i128: i128 => visit_i128,
        deserialize_u8: u8 => visit_u8,
        deserialize_u16: u16 => visit_u16,
        deserialize_u32: u32 => visit_u32,
        deserialize_u64: u64 => visit_u64,
        deserialize_u128: u128 => visit_u128,
        deserialize_char: char => visit_char,
    );

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, ConvError> {
        visitor.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, ConvError> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, ConvError> {
        visitor.visit_enum(self.0.as_str().into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        f32 f64 str string bytes byte_buf unit unit_struct seq tuple
        tuple_struct map struct identifier ignored_any
    }
}
