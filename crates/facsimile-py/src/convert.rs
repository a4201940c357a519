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

/// JSON data as Python plain data (typed updates).
pub(crate) fn json_to_py(py: Python<'_>, v: &serde_json::Value) -> PyResult<Py<PyAny>> {
    use serde_json::Value as J;
    Ok(match v {
        J::Null => py.None(),
        J::Bool(b) => PyBool::new(py, *b).to_owned().into_any().unbind(),
        J::Number(n) => match n.as_i64() {
            Some(i) => i.into_pyobject(py)?.into_any().unbind(),
            None => PyFloat::new(py, n.as_f64().unwrap_or(f64::NAN))
                .into_any()
                .unbind(),
        },
        J::String(s) => PyString::new(py, s).into_any().unbind(),
        J::Array(items) => {
            let list = PyList::empty(py);
            for i in items {
                list.append(json_to_py(py, i)?)?;
            }
            list.into_any().unbind()
        }
        J::Object(entries) => {
            let d = PyDict::new(py);
            for (k, v) in entries {
                d.set_item(k, json_to_py(py, v)?)?;
            }
            d.into_any().unbind()
        }
    })
}

/// Python plain data as JSON data (typed updates).
pub(crate) fn py_to_json(x: &Bound<'_, PyAny>, depth: usize) -> PyResult<serde_json::Value> {
    use serde_json::Value as J;
    if depth > MAX_DEPTH {
        return Err(PyValueError::new_err(format!(
            "the data nests deeper than {MAX_DEPTH} levels"
        )));
    }
    if x.is_none() {
        return Ok(J::Null);
    }
    if let Ok(b) = x.cast::<PyBool>() {
        return Ok(J::Bool(b.is_true()));
    }
    if let Ok(i) = x.cast::<PyInt>() {
        return Ok(J::from(i.extract::<i64>()?));
    }
    if let Ok(f) = x.cast::<PyFloat>() {
        return Ok(serde_json::Number::from_f64(f.value()).map_or(J::Null, J::Number));
    }
    if let Ok(s) = x.cast::<PyString>() {
        return Ok(J::String(s.to_cow()?.into_owned()));
    }
    if let Ok(d) = x.cast::<PyDict>() {
        let mut out = serde_json::Map::new();
        for (k, v) in d.iter() {
            let k: String = k
                .extract()
                .map_err(|_| PyTypeError::new_err("map keys are strings"))?;
            out.insert(k, py_to_json(&v, depth + 1)?);
        }
        return Ok(J::Object(out));
    }
    if x.cast::<PyList>().is_ok() || x.cast::<PyTuple>().is_ok() {
        let items = x
            .try_iter()?
            .map(|v| py_to_json(&v?, depth + 1))
            .collect::<PyResult<Vec<_>>>()?;
        return Ok(J::Array(items));
    }
    Err(PyTypeError::new_err(format!(
        "a typed update holds JSON-like data; got a {}",
        x.get_type().name()?
    )))
}
