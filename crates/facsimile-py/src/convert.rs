//! Values between Python and the engine: plain data in (copied into new
//! objects; proxies become references), engine values out (scalars as
//! Python values, objects as this node's proxies).

use facsimile::{Input, Value};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{
    PyBool, PyByteArray, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple,
};

use crate::node::Facsimile;
use crate::proxy::{ListProxy, MapProxy};

/// How deep plain data may nest: the engine builds stored trees
/// recursively, so depth is bounded where data comes in.
pub(crate) const MAX_DEPTH: usize = 500;

/// Plain data (or a proxy) as an engine input.
pub(crate) fn to_input(x: &Bound<'_, PyAny>) -> PyResult<Input> {
    let mut path = Vec::new();
    input(x, &mut path)
}

fn input(x: &Bound<'_, PyAny>, path: &mut Vec<usize>) -> PyResult<Input> {
    // The commonest types first, each checked exactly (bool is an int).
    if let Ok(i) = x.cast_exact::<PyInt>() {
        return match i.extract::<i64>() {
            Ok(i) => Ok(Input::from(i)),
            Err(_) => Err(PyOverflowError::new_err(format!(
                "{i} does not fit the store's 64-bit integers; store it as a string or a float"
            ))),
        };
    }
    if let Ok(s) = x.cast_exact::<PyString>() {
        return Ok(Input::from(&*s.to_cow()?));
    }
    if let Ok(f) = x.cast_exact::<PyFloat>() {
        return Ok(Input::from(f.value()));
    }
    if x.is_none() {
        return Ok(Input::null());
    }
    if let Ok(b) = x.cast_exact::<PyBool>() {
        return Ok(Input::from(b.is_true()));
    }
    if let Ok(m) = x.cast::<MapProxy>() {
        return Ok(Input::from(&m.get().map));
    }
    if let Ok(l) = x.cast::<ListProxy>() {
        return Ok(Input::from(&l.get().list));
    }
    if let Ok(b) = x.cast::<PyBytes>() {
        return Ok(Input::from(b.as_bytes()));
    }
    if let Ok(b) = x.cast::<PyByteArray>() {
        return Ok(Input::from(b.to_vec()));
    }
    if let Ok(d) = x.cast::<PyDict>() {
        enter(x, path)?;
        let mut entries = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            let Ok(k) = k.cast::<PyString>() else {
                return Err(PyTypeError::new_err(format!(
                    "map keys are strings; got a key of type {}",
                    k.get_type().name()?
                )));
            };
            entries.push((k.to_cow()?.into_owned(), input(&v, path)?));
        }
        path.pop();
        return Ok(Input::map(entries));
    }
    if let Ok(l) = x.cast::<PyList>() {
        enter(x, path)?;
        let items = l
            .iter()
            .map(|v| input(&v, path))
            .collect::<PyResult<Vec<_>>>()?;
        path.pop();
        return Ok(Input::array(items));
    }
    if let Ok(t) = x.cast::<PyTuple>() {
        enter(x, path)?;
        let items = t
            .iter()
            .map(|v| input(&v, path))
            .collect::<PyResult<Vec<_>>>()?;
        path.pop();
        return Ok(Input::array(items));
    }
    if let Ok(i) = x.cast::<PyInt>() {
        return Ok(Input::from(i.extract::<i64>()?));
    }
    if let Ok(f) = x.cast::<PyFloat>() {
        return Ok(Input::from(f.value()));
    }
    if let Ok(s) = x.cast::<PyString>() {
        return Ok(Input::from(&*s.to_cow()?));
    }
    Err(PyTypeError::new_err(format!(
        "cannot store a {}: the store holds dict, list, tuple, str, bytes, int, float, bool, None and proxies of this node",
        x.get_type().name()?
    )))
}

/// Enters a container of plain data, refusing cycles (a list that contains
/// itself has no tree to copy: store a proxy to make a reference) and
/// depth past [`MAX_DEPTH`].
fn enter(x: &Bound<'_, PyAny>, path: &mut Vec<usize>) -> PyResult<()> {
    let id = x.as_ptr() as usize;
    if path.contains(&id) {
        return Err(PyValueError::new_err(
            "the plain data contains itself; store it first and assign its proxy to make a cycle",
        ));
    }
    if path.len() >= MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "the data nests deeper than {MAX_DEPTH} levels"
        )));
    }
    path.push(id);
    Ok(())
}

/// An engine value as a Python value: objects as `owner`'s proxies.
pub(crate) fn to_py(owner: &Bound<'_, Facsimile>, v: Value) -> PyResult<Py<PyAny>> {
    let py = owner.py();
    Ok(match v {
        Value::Null => py.None(),
        Value::Bool(b) => PyBool::new(py, b).to_owned().into_any().unbind(),
        Value::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Value::Float(f) => PyFloat::new(py, f).into_any().unbind(),
        Value::String(s) => PyString::new(py, &s).into_any().unbind(),
        Value::Bytes(b) => PyBytes::new(py, &b).into_any().unbind(),
        Value::Map(m) => owner.get().map_proxy(py, owner, m)?.into_any(),
        Value::Array(a) => owner.get().list_proxy(py, owner, a)?.into_any(),
    })
}

/// Plain data as a typed update reads and writes the store: JSON's
/// kinds, and the bytes and non-finite floats the store holds too, which
/// JSON's values cannot (read through them, an update would write `null`
/// over every NaN, and fail on bytes).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Plain {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    List(Vec<Plain>),
    Map(Vec<(String, Plain)>),
}

impl serde::Serialize for Plain {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{SerializeMap, SerializeSeq};
        match self {
            Plain::Null => s.serialize_unit(),
            Plain::Bool(b) => s.serialize_bool(*b),
            Plain::Int(i) => s.serialize_i64(*i),
            Plain::Float(f) => s.serialize_f64(*f),
            Plain::Str(v) => s.serialize_str(v),
            Plain::Bytes(b) => s.serialize_bytes(b),
            Plain::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Plain::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl<'de> serde::Deserialize<'de> for Plain {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Plain, D::Error> {
        d.deserialize_any(PlainVisitor)
    }
}

struct PlainVisitor;

impl<'de> serde::de::Visitor<'de> for PlainVisitor {
    type Value = Plain;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("plain data")
    }
    fn visit_unit<E>(self) -> Result<Plain, E> {
        Ok(Plain::Null)
    }
    fn visit_none<E>(self) -> Result<Plain, E> {
        Ok(Plain::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Plain, D::Error> {
        serde::Deserialize::deserialize(d)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Plain, E> {
        Ok(Plain::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Plain, E> {
        Ok(Plain::Int(i))
    }
    fn visit_u64<E: serde::de::Error>(self, u: u64) -> Result<Plain, E> {
        i64::try_from(u)
            .map(Plain::Int)
            .map_err(|_| E::custom(format!("{u} is past the largest integer stored")))
    }
    fn visit_f64<E>(self, f: f64) -> Result<Plain, E> {
        Ok(Plain::Float(f))
    }
    fn visit_str<E>(self, v: &str) -> Result<Plain, E> {
        Ok(Plain::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Plain, E> {
        Ok(Plain::Str(v))
    }
    fn visit_bytes<E>(self, b: &[u8]) -> Result<Plain, E> {
        Ok(Plain::Bytes(b.to_vec()))
    }
    fn visit_byte_buf<E>(self, b: Vec<u8>) -> Result<Plain, E> {
        Ok(Plain::Bytes(b))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Plain, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(i) = seq.next_element()? {
            items.push(i);
        }
        Ok(Plain::List(items))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Plain, A::Error> {
        let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(0).min(4096));
        while let Some(e) = map.next_entry()? {
            entries.push(e);
        }
        Ok(Plain::Map(entries))
    }
}

/// Plain data as Python's (typed updates).
pub(crate) fn plain_to_py(py: Python<'_>, v: &Plain) -> PyResult<Py<PyAny>> {
    Ok(match v {
        Plain::Null => py.None(),
        Plain::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        Plain::Int(i) => i.into_pyobject(py)?.into_any().unbind(),
        Plain::Float(f) => PyFloat::new(py, *f).into_any().unbind(),
        Plain::Str(s) => PyString::new(py, s).into_any().unbind(),
        Plain::Bytes(b) => PyBytes::new(py, b).into_any().unbind(),
        Plain::List(items) => {
            let list = PyList::empty(py);
            for i in items {
                list.append(plain_to_py(py, i)?)?;
            }
            list.into_any().unbind()
        }
        Plain::Map(entries) => {
            let d = PyDict::new(py);
            for (k, v) in entries {
                d.set_item(k, plain_to_py(py, v)?)?;
            }
            d.into_any().unbind()
        }
    })
}

/// Python's plain data as [`Plain`] (typed updates).
pub(crate) fn py_to_plain(x: &Bound<'_, PyAny>, depth: usize) -> PyResult<Plain> {
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "the data nests deeper than {MAX_DEPTH} levels"
        )));
    }
    if x.is_none() {
        return Ok(Plain::Null);
    }
    if let Ok(b) = x.cast::<PyBool>() {
        return Ok(Plain::Bool(b.is_true()));
    }
    if let Ok(i) = x.cast::<PyInt>() {
        return Ok(Plain::Int(i.extract::<i64>()?));
    }
    if let Ok(f) = x.cast::<PyFloat>() {
        return Ok(Plain::Float(f.value()));
    }
    if let Ok(s) = x.cast::<PyString>() {
        return Ok(Plain::Str(s.to_cow()?.into_owned()));
    }
    if let Ok(b) = x.cast::<PyBytes>() {
        return Ok(Plain::Bytes(b.as_bytes().to_vec()));
    }
    if let Ok(b) = x.cast::<PyByteArray>() {
        return Ok(Plain::Bytes(b.to_vec()));
    }
    if let Ok(d) = x.cast::<PyDict>() {
        let mut out = Vec::with_capacity(d.len());
        for (k, v) in d.iter() {
            let k: String = k
                .extract()
                .map_err(|_| PyTypeError::new_err("map keys are strings"))?;
            out.push((k, py_to_plain(&v, depth + 1)?));
        }
        return Ok(Plain::Map(out));
    }
    if x.cast::<PyList>().is_ok() || x.cast::<PyTuple>().is_ok() {
        let items = x
            .try_iter()?
            .map(|v| py_to_plain(&v?, depth + 1))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(Plain::List(items));
    }
    Err(PyTypeError::new_err(format!(
        "a typed update holds plain data (None, bool, int, float, str, bytes, dict, list); got a {}",
        x.get_type().name()?
    )))
}
