//! Proxies: a map as a `MutableMapping` (keys also as attributes), an
//! array as a `MutableSequence` with every list method. Each call is one
//! engine call: a method is one change and one message, whatever it moves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};

use facsimile::{ArrayRef, EngineError, Input, MapRef, ObjectRef, Origin, Prop, Value};
use pyo3::PyTraverseError;
use pyo3::exceptions::{
    PyAttributeError, PyIndexError, PyKeyError, PyRecursionError, PyRuntimeError, PyTypeError,
    PyValueError,
};
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyDict, PyInt, PyList, PySlice, PyString, PyTuple};

use crate::convert::{to_input, to_py};
use crate::errors;
use crate::node::{Facsimile, Sent, Topic, change_listener};

/// The object a proxy names, for locks.
pub(crate) fn object_of(obj: &Bound<'_, PyAny>) -> PyResult<ObjectRef> {
    if let Ok(m) = obj.cast::<MapProxy>() {
        return Ok(ObjectRef::from(&m.get().map));
    }
    if let Ok(l) = obj.cast::<ListProxy>() {
        return Ok(ObjectRef::from(&l.get().list));
    }
    Err(PyTypeError::new_err(format!(
        "locks are taken on a map or list of the store (a proxy), not on a {}",
        obj.get_type().name()?
    )))
}

/// Names a map's methods have: attribute access reads these, not keys.
const MAP_METHODS: &[&str] = &[
    "keys",
    "values",
    "items",
    "get",
    "pop",
    "popitem",
    "setdefault",
    "update",
    "clear",
    "copy",
    "on",
    "off",
    "to_python",
    "_entries",
];

type Memo = std::collections::HashMap<facsimile::ObjectId, Py<PyAny>>;

/// Whether `name` is of Python's own form (`__x__`): as an attribute of a
/// map it is never a key, so that what Python and libraries set, delete or
/// probe by such names (`__class__`, `__doc__`, `__array__`) never reaches
/// the replicated store.
fn python_name(name: &str) -> bool {
    name.len() > 4 && name.starts_with("__") && name.ends_with("__")
}

/// Deep copy as plain Python data, shared objects and cycles kept (a memo
/// by object). Objects nested deeper than [`facsimile::MAX_JSON_DEPTH`]
/// raise `RecursionError`, as Python's own copies do, rather than overflow
/// the thread's stack: another node may have nested them so.
fn deep(owner: &Bound<'_, Facsimile>, v: Value, memo: &mut Memo) -> PyResult<Py<PyAny>> {
    deep_at(owner, v, memo, 0)
}

fn deep_at(
    owner: &Bound<'_, Facsimile>,
    v: Value,
    memo: &mut Memo,
    depth: usize,
) -> PyResult<Py<PyAny>> {
    let py = owner.py();
    if depth >= facsimile::MAX_JSON_DEPTH && v.as_object().is_some() {
        return Err(PyRecursionError::new_err(format!(
            "objects nested deeper than {} levels cannot be copied",
            facsimile::MAX_JSON_DEPTH
        )));
    }
    match v {
        Value::Map(m) => {
            if let Some(done) = memo.get(&m.id()) {
                return Ok(done.clone_ref(py));
            }
            let d = PyDict::new(py);
            memo.insert(m.id(), d.clone().into_any().unbind());
            for (k, v) in m.entries().map_err(errors::store)? {
                d.set_item(k.as_str(), deep_at(owner, v, memo, depth + 1)?)?;
            }
            Ok(d.into_any().unbind())
        }
        Value::Array(a) => {
            if let Some(done) = memo.get(&a.id()) {
                return Ok(done.clone_ref(py));
            }
            let l = PyList::empty(py);
            memo.insert(a.id(), l.clone().into_any().unbind());
            for v in a.to_vec().map_err(errors::store)? {
                l.append(deep_at(owner, v, memo, depth + 1)?)?;
            }
            Ok(l.into_any().unbind())
        }
        v => to_py(owner, v),
    }
}

/// The copies one `copy.deepcopy` call made of a node's objects, kept in
/// its memo: a proxy it reaches twice, or an object two proxies reach, is
/// copied once, as `deepcopy` copies a shared object of plain data once.
#[pyclass(module = "facsimile")]
struct DeepMemo {
    copies: Memo,
}

#[pymethods]
impl DeepMemo {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        for copy in self.copies.values() {
            visit.call(copy)?;
        }
        Ok(())
    }

    fn __clear__(&mut self) {
        self.copies.clear();
    }
}

/// `copy.deepcopy` of a value of the node `owner`, with the objects
/// copied before in the same call (`memo`, deepcopy's dict) shared.
fn deep_copy(
    owner: &Bound<'_, Facsimile>,
    v: Value,
    memo: &Bound<'_, PyAny>,
) -> PyResult<Py<PyAny>> {
    let py = owner.py();
    let Ok(memo) = memo.cast::<PyDict>() else {
        return deep(owner, v, &mut Memo::new());
    };
    // One entry per node: two nodes' proxies of one object are copies of
    // two replicas. The key is no `id()`, so it names no other entry.
    let key = (
        intern!(py, "facsimile deep copies"),
        owner.as_ptr() as usize,
    );
    let copies = match memo.get_item(key)? {
        Some(found) => found.cast_into::<DeepMemo>()?,
        None => {
            let fresh = Bound::new(
                py,
                DeepMemo {
                    copies: Memo::new(),
                },
            )?;
            memo.set_item(key, &fresh)?;
            fresh
        }
    };
    let mut copies = copies.try_borrow_mut()?;
    deep(owner, v, &mut copies.copies)
}

/// A view of a map proxy (`facsimile._views`).
fn view<'py>(map: &Bound<'py, MapProxy>, kind: &str) -> PyResult<Bound<'py, PyAny>> {
    map.py()
        .import("facsimile._views")?
        .getattr(kind)?
        .call1((map,))
}

/// The other side of `==`: a proxy's plain copy, else the value itself.
fn plain<'py>(other: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    if other.cast::<MapProxy>().is_ok() || other.cast::<ListProxy>().is_ok() {
        return other.call_method0("to_python");
    }
    Ok(other.clone())
}

/// `UnknownObjectError` for an object not in the node's document.
fn unknown(id: facsimile::ObjectId) -> PyErr {
    errors::store(EngineError::UnknownObject(id).into())
}

/// Registers a listener on `object`, refused with `UnknownObjectError`
/// when the object is not in the document: it would never fire, and the
/// engine drops an object's listeners only when it reclaims the object.
fn listen_object(
    owner: &Bound<'_, Facsimile>,
    object: ObjectRef,
    prop: Option<Prop>,
    callback: Py<PyAny>,
) -> PyResult<()> {
    let f = owner.get();
    let id = object.id();
    let entry = match prop {
        None => f.listen(Topic::Object(id), callback, |w, i| {
            object.on(change_listener(w, i))
        }),
        Some(Prop::Key(k)) => {
            let ObjectRef::Map(m) = &object else {
                return Ok(());
            };
            let m = m.clone();
            f.listen(Topic::Prop(id, Prop::Key(k.clone())), callback, |w, i| {
                m.on_key(&k, change_listener(w, i))
            })
        }
        Some(Prop::Index(n)) => {
            let ObjectRef::Array(a) = &object else {
                return Ok(());
            };
            let a = a.clone();
            f.listen(Topic::Prop(id, Prop::Index(n)), callback, |w, i| {
                a.on_index(n, change_listener(w, i))
            })
        }
    };
    // Checked once subscribed: a reclamation after this check drops the
    // listener with the object.
    let exists = match &object {
        ObjectRef::Map(m) => m.exists(),
        ObjectRef::Array(a) => a.exists(),
    };
    if !exists {
        f.unlisten_entry(entry);
        return Err(unknown(id));
    }
    Ok(())
}

/// `obj.on(cb)` or `obj.on(key, cb)`, parsed.
fn on_args(
    args: &Bound<'_, PyTuple>,
    prop: impl Fn(&Bound<'_, PyAny>) -> PyResult<Prop>,
) -> PyResult<(Option<Prop>, Py<PyAny>)> {
    match args.len() {
        1 => Ok((None, args.get_item(0)?.unbind())),
        2 => Ok((Some(prop(&args.get_item(0)?)?), args.get_item(1)?.unbind())),
        _ => Err(PyTypeError::new_err("on(callback) or on(key, callback)")),
    }
}

fn off_args<'py>(
    args: &Bound<'py, PyTuple>,
    prop: impl Fn(&Bound<'_, PyAny>) -> PyResult<Prop>,
) -> PyResult<(Option<Prop>, Option<Bound<'py, PyAny>>)> {
    match args.len() {
        0 => Ok((None, None)),
        1 if args.get_item(0)?.is_callable() => Ok((None, Some(args.get_item(0)?))),
        1 => Ok((Some(prop(&args.get_item(0)?)?), None)),
        2 => Ok((Some(prop(&args.get_item(0)?)?), Some(args.get_item(1)?))),
        _ => Err(PyTypeError::new_err(
            "off(), off(callback), off(key) or off(key, callback)",
        )),
    }
}

fn off(
    owner: &Bound<'_, Facsimile>,
    id: facsimile::ObjectId,
    prop: Option<Prop>,
    cb: Option<&Bound<'_, PyAny>>,
) -> PyResult<bool> {
    let topic = match prop {
        None => Topic::Object(id),
        Some(p) => Topic::Prop(id, p),
    };
    Ok(owner.get().unlisten(owner.py(), &topic, cb)? > 0)
}

/// A dict or a map proxy as a new plain dict (shallow), else None: what
/// `dict | x` takes.
fn shallow_dict<'py>(other: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyDict>>> {
    if let Ok(m) = other.cast::<MapProxy>() {
        return m.get().shallow(other.py()).map(Some);
    }
    match other.cast::<PyDict>() {
        Ok(d) => d.copy().map(Some),
        Err(_) => Ok(None),
    }
}

/// The length of element `i` of `pairs`, for `update`'s message.
fn pair_len(pairs: &Bound<'_, PyAny>, i: usize) -> PyResult<usize> {
    let pair = pairs.try_iter()?.nth(i).transpose()?;
    Ok(pair.map(|p| p.len()).transpose()?.unwrap_or(0))
}

/// A list or a list proxy as a new plain list (shallow), else None: what
/// `list + x` and `list < x` take.
fn shallow_list<'py>(other: &Bound<'py, PyAny>) -> PyResult<Option<Bound<'py, PyList>>> {
    if let Ok(l) = other.cast::<ListProxy>() {
        return l.get().shallow(other.py()).map(Some);
    }
    match other.cast::<PyList>() {
        Ok(l) => PyList::new(other.py(), l.iter()).map(Some),
        Err(_) => Ok(None),
    }
}

/// A list index, converted as `list`'s: IndexError for an integer no
/// position can be, TypeError for what is not an integer, and what an
/// `__index__` raises as it is (it is the caller's error, not a bad
/// position).
fn list_index(index: &Bound<'_, PyAny>) -> PyResult<isize> {
    let py = index.py();
    let int = if index.is_instance_of::<PyInt>() {
        index.clone()
    } else if index.get_type().hasattr(intern!(py, "__index__"))? {
        py.import(intern!(py, "operator"))?
            .getattr(intern!(py, "index"))?
            .call1((index,))?
    } else {
        return Err(PyTypeError::new_err(format!(
            "list indices must be integers or slices, not {}",
            index.get_type().name()?
        )));
    };
    int.extract::<isize>()
        .map_err(|_| PyIndexError::new_err("cannot fit 'int' into an index-sized integer"))
}

/// A bound of `index(x, start, stop)`: integers past any position are
/// clamped, as `list.index`'s.
fn slice_bound(bound: &Bound<'_, PyAny>) -> PyResult<isize> {
    match bound.extract::<isize>() {
        Err(_) if bound.is_instance_of::<PyInt>() => {
            Ok(if bound.gt(0)? { isize::MAX } else { isize::MIN })
        }
        r => r,
    }
}

/// A slice's bounds and step, converted (`__index__`) before the list is
/// read, and resolved against the length as of a write, as `list`'s own
/// slicing does.
struct SliceSpec {
    start: Option<isize>,
    stop: Option<isize>,
    step: isize,
}

impl SliceSpec {
    fn of(slice: &Bound<'_, PySlice>) -> PyResult<SliceSpec> {
        let part = |name: &str| -> PyResult<Option<isize>> {
            let v = slice.getattr(name)?;
            if v.is_none() {
                return Ok(None);
            }
            slice_bound(&v).map(Some).map_err(|_| {
                PyTypeError::new_err(
                    "slice indices must be integers or None or have an __index__ method",
                )
            })
        };
        let step = part("step")?.unwrap_or(1);
        if step == 0 {
            return Err(PyValueError::new_err("slice step cannot be zero"));
        }
        Ok(SliceSpec {
            start: part("start")?,
            stop: part("stop")?,
            // As CPython's, so that `-step` cannot overflow.
            step: step.max(-isize::MAX),
        })
    }

    /// The first position and the number of positions for a list of
    /// `len` elements (`PySlice_AdjustIndices`).
    fn resolve(&self, len: usize) -> (isize, usize) {
        let (len, step) = (len as isize, self.step);
        let fix = |x: isize| {
            if x < 0 {
                let x = x + len;
                if x < 0 {
                    if step < 0 { -1 } else { 0 }
                } else {
                    x
                }
            } else if x >= len {
                if step < 0 { len - 1 } else { len }
            } else {
                x
            }
        };
        let start = fix(self.start.unwrap_or(if step < 0 { isize::MAX } else { 0 }));
        let stop = fix(self
            .stop
            .unwrap_or(if step < 0 { isize::MIN } else { isize::MAX }));
        let n = match step < 0 {
            true if stop < start => (start - stop - 1) / -step + 1,
            false if start < stop => (stop - start - 1) / step + 1,
            _ => 0,
        };
        (start, n as usize)
    }

    /// The positions for a list of `len` elements, in slice order.
    fn positions(&self, len: usize) -> impl Iterator<Item = usize> + use<> {
        let (start, n) = self.resolve(len);
        let step = self.step;
        (0..n).map(move |k| (start + k as isize * step) as usize)
    }

    /// The range of a slice of step 1.
    fn range(&self, len: usize) -> std::ops::Range<usize> {
        let (start, n) = self.resolve(len);
        start as usize..start as usize + n
    }
}

/// A Python index (negative from the end) as a position in a list of
/// `len` elements; `usize::MAX`, which no list reaches, when there is
/// none, so that the engine refuses it as out of bounds.
fn resolve_index(i: isize, len: usize) -> usize {
    let p = if i < 0 { i + len as isize } else { i };
    if p < 0 { usize::MAX } else { p as usize }
}

/// An engine refusal of a position past the end as Python's IndexError
/// with `message`; any other error as the store's.
fn index_error(e: facsimile::Error, message: &'static str) -> PyErr {
    match e.engine() {
        Some(EngineError::IndexOutOfBounds { .. }) => PyIndexError::new_err(message),
        _ => errors::store(e),
    }
}

/// A map of the store: a `MutableMapping` whose keys are also attributes
/// (`m.score` is `m["score"]` when no method has that name and the name is
/// not of the form `__x__`). Reads see the live document; writes
/// replicate. `copy()` and `dict(m.items())` read it once; `dict(m)` and
/// `{**m}` read key by key (Python's protocol for a mapping that is not a
/// dict), so a key another thread's message deletes in between raises
/// KeyError there.
#[pyclass(module = "facsimile", name = "Map", frozen, weakref, mapping)]
pub(crate) struct MapProxy {
    pub(crate) owner: Py<Facsimile>,
    pub(crate) map: MapRef,
}

impl MapProxy {
    fn open(&self) -> PyResult<()> {
        self.owner.get().check_open()
    }

    /// `UnknownObjectError` when the map is no longer in the document: the
    /// engine's reads of it answer as for an empty map, which would let a
    /// stale proxy pass for one. Asked after a read that found nothing, so
    /// that the read itself costs nothing more.
    fn present(&self) -> PyResult<()> {
        match self.map.exists() {
            true => Ok(()),
            false => Err(unknown(self.map.id())),
        }
    }

    /// The keys, or `UnknownObjectError` (see [`MapProxy::present`]).
    fn keys_read(&self) -> PyResult<Vec<String>> {
        let keys = self.map.keys();
        if keys.is_empty() {
            self.present()?;
        }
        Ok(keys)
    }

    /// The entries as a plain dict, objects as proxies.
    fn shallow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let owner = self.owner.bind(py);
        let d = PyDict::new(py);
        for (k, v) in self.map.entries().map_err(errors::store)? {
            d.set_item(k.as_str(), to_py(owner, v)?)?;
        }
        Ok(d)
    }

    fn get_value(&self, py: Python<'_>, key: &str) -> PyResult<Option<Py<PyAny>>> {
        match self.map.get(key) {
            Some(v) => Ok(Some(to_py(self.owner.bind(py), v)?)),
            None => self.present().map(|()| None),
        }
    }

    fn set_value(&self, key: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.open()?;
        let input = to_input(value)?;
        self.map.set(key, input).sent()
    }
}

#[pymethods]
impl MapProxy {
    fn __getitem__(&self, py: Python<'_>, key: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let k = key
            .cast::<PyString>()
            .map_err(|_| PyKeyError::new_err(key.clone().unbind()))?;
        self.get_value(py, &k.to_cow()?)?
            .ok_or_else(|| PyKeyError::new_err(key.clone().unbind()))
    }

    fn __setitem__(&self, key: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        let k = key
            .cast::<PyString>()
            .map_err(|_| PyTypeError::new_err("map keys are strings"))?;
        self.set_value(&k.to_cow()?, value)
    }

    fn __delitem__(&self, key: &Bound<'_, PyAny>) -> PyResult<()> {
        self.open()?;
        let k = key
            .cast::<PyString>()
            .map_err(|_| PyKeyError::new_err(key.clone().unbind()))?;
        if self.map.delete(&k.to_cow()?).sent()? {
            Ok(())
        } else {
            Err(PyKeyError::new_err(key.clone().unbind()))
        }
    }

    fn __len__(&self) -> PyResult<usize> {
        let n = self.map.len();
        if n == 0 {
            self.present()?;
        }
        Ok(n)
    }

    fn __contains__(&self, key: &Bound<'_, PyAny>) -> PyResult<bool> {
        let found = match key.cast::<PyString>() {
            Ok(k) => self.map.contains_key(&k.to_cow()?),
            Err(_) => false,
        };
        if !found {
            self.present()?;
        }
        Ok(found)
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        PyList::new(py, self.keys_read()?)?
            .into_any()
            .try_iter()
            .map(Bound::into_any)
    }

    fn __getattr__(&self, py: Python<'_>, name: &str) -> PyResult<Py<PyAny>> {
        if python_name(name) {
            return Err(PyAttributeError::new_err(format!(
                "'Map' object has no attribute {name:?} (a key of that name is m[{name:?}])"
            )));
        }
        self.get_value(py, name)?
            .ok_or_else(|| PyAttributeError::new_err(format!("the map has no key {name:?}")))
    }

    fn __setattr__(&self, name: &str, value: &Bound<'_, PyAny>) -> PyResult<()> {
        if MAP_METHODS.contains(&name) {
            return Err(PyAttributeError::new_err(format!(
                "{name} is a method of Map; set the key with m[{name:?}] = ..."
            )));
        }
        if python_name(name) {
            return Err(PyAttributeError::new_err(format!(
                "{name} is a name of Python's, not a key, as an attribute; set the key with m[{name:?}] = ..."
            )));
        }
        self.set_value(name, value)
    }

    fn __delattr__(&self, name: &str) -> PyResult<()> {
        if python_name(name) {
            return Err(PyAttributeError::new_err(format!(
                "{name} is a name of Python's, not a key, as an attribute; delete the key with del m[{name:?}]"
            )));
        }
        self.open()?;
        if self.map.delete(name).sent()? {
            Ok(())
        } else {
            Err(PyAttributeError::new_err(format!(
                "the map has no key {name:?}"
            )))
        }
    }

    fn __dir__(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let mut names: Vec<Py<PyAny>> = MAP_METHODS
            .iter()
            .map(|m| PyString::new(py, m).into_any().unbind())
            .collect();
        names.extend(
            self.map
                .keys()
                .into_iter()
                .filter(|k| !python_name(k))
                .map(|k| PyString::new(py, &k).into_any().unbind()),
        );
        Ok(names)
    }

    /// The keys, a live view.
    fn keys<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        view(slf, "KeysView")
    }

    /// The values, a live view; iterating it reads the map once.
    fn values<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        view(slf, "ValuesView")
    }

    /// The (key, value) pairs, a live view; iterating it reads the map
    /// once.
    fn items<'py>(slf: &Bound<'py, Self>) -> PyResult<Bound<'py, PyAny>> {
        view(slf, "ItemsView")
    }

    /// The (key, value) pairs as a list, read together: what iterating
    /// `items()` and `values()` gives.
    fn _entries<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let owner = self.owner.bind(py);
        let entries = self.map.entries().map_err(errors::store)?;
        let pairs = entries
            .into_iter()
            .map(|(k, v)| Ok((PyString::new(py, &k), to_py(owner, v)?)))
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, pairs)
    }

    /// The value of `key`, or `default`.
    #[pyo3(signature = (key, default=None))]
    fn get(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let found = match key.cast::<PyString>() {
            Ok(k) => self.get_value(py, &k.to_cow()?)?,
            Err(_) => {
                self.present()?;
                None
            }
        };
        Ok(found.or(default).unwrap_or_else(|| py.None()))
    }

    /// Removes `key` and returns its value (or `default`; KeyError without).
    #[pyo3(signature = (key, *default))]
    fn pop(
        &self,
        py: Python<'_>,
        key: &Bound<'_, PyAny>,
        default: &Bound<'_, PyTuple>,
    ) -> PyResult<Py<PyAny>> {
        if default.len() > 1 {
            return Err(PyTypeError::new_err(format!(
                "pop expected at most 2 arguments, got {}",
                default.len() + 1
            )));
        }
        self.open()?;
        // A key that is not a string is never in the map.
        let removed = match key.cast::<PyString>() {
            // Read and removed in one write: what another thread applies
            // meanwhile cannot make it return a value it did not remove.
            Ok(k) => self.map.remove(&k.to_cow()?).sent()?,
            Err(_) => None,
        };
        match removed {
            Some(v) => to_py(self.owner.bind(py), v),
            None if !default.is_empty() => Ok(default.get_item(0)?.unbind()),
            None => Err(PyKeyError::new_err(key.clone().unbind())),
        }
    }

    /// Removes and returns the last (key, value) pair in key order.
    fn popitem(&self, py: Python<'_>) -> PyResult<(String, Py<PyAny>)> {
        self.open()?;
        loop {
            let Some(key) = self.keys_read()?.pop() else {
                return Err(PyKeyError::new_err("popitem(): the map is empty"));
            };
            // Removed meanwhile by a message: the next last key.
            if let Some(v) = self.map.remove(&key).sent()? {
                return Ok((key, to_py(self.owner.bind(py), v)?));
            }
        }
    }

    /// The value of `key`, set to `default` first when absent.
    #[pyo3(signature = (key, default=None))]
    fn setdefault(
        &self,
        py: Python<'_>,
        key: &str,
        default: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        if let Some(v) = self.get_value(py, key)? {
            return Ok(v);
        }
        self.open()?;
        let none = py.None().into_bound(py);
        let default = to_input(default.unwrap_or(&none))?;
        // Looked up again and set in one write: a value another thread or
        // a message wrote since the read above is kept, not overwritten.
        let v = self.map.get_or_insert(key, default).sent()?;
        to_py(self.owner.bind(py), v)
    }

    /// Sets several keys in one message, all or none (from a mapping, an
    /// iterable of pairs, and keywords). Listeners hear a change per key
    /// that changed.
    #[pyo3(signature = (other=None, **kwargs))]
    fn update(
        &self,
        other: Option<&Bound<'_, PyAny>>,
        kwargs: Option<&Bound<'_, PyDict>>,
    ) -> PyResult<()> {
        self.open()?;
        let mut entries: Vec<(String, Input)> = Vec::new();
        if let Some(o) = other {
            let pairs = if o.hasattr("keys")? {
                let mut v = Vec::new();
                for k in o.call_method0("keys")?.try_iter()? {
                    let k = k?;
                    let val = o.get_item(&k)?;
                    v.push((k, val));
                }
                v
            } else {
                let mut v = Vec::new();
                for (i, pair) in o.try_iter()?.enumerate() {
                    // Any iterable of two, as dict's: tuples, lists, strings.
                    let kv: Vec<Bound<'_, PyAny>> = pair?
                        .try_iter()
                        .map_err(|_| {
                            PyTypeError::new_err(format!(
                                "cannot convert dictionary update sequence element #{i} to a sequence"
                            ))
                        })?
                        .collect::<PyResult<_>>()?;
                    let Ok([k, val]) = <[_; 2]>::try_from(kv) else {
                        return Err(PyValueError::new_err(format!(
                            "dictionary update sequence element #{i} has length {}; 2 is required",
                            pair_len(o, i)?
                        )));
                    };
                    v.push((k, val));
                }
                v
            };
            for (k, val) in pairs {
                let k: String = k
                    .extract()
                    .map_err(|_| PyTypeError::new_err("map keys are strings"))?;
                entries.push((k, to_input(&val)?));
            }
        }
        if let Some(kw) = kwargs {
            for (k, val) in kw.iter() {
                entries.push((k.extract()?, to_input(&val)?));
            }
        }
        // A key given twice is one write of its last value, as `dict.update`
        // ends: one change, and no object made only to be overwritten.
        let mut at: std::collections::HashMap<String, usize> =
            std::collections::HashMap::with_capacity(entries.len());
        let mut folded: Vec<(String, Input)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match at.get(&k) {
                Some(&i) => folded[i].1 = v,
                None => {
                    at.insert(k.clone(), folded.len());
                    folded.push((k, v));
                }
            }
        }
        let entries = folded;
        if entries.is_empty() {
            return Ok(());
        }
        self.map.assign(entries).sent()
    }

    /// Deletes every key, in one message: all of them or, when they do not
    /// fit one message (TooLargeError), none. Listeners hear a change per
    /// key.
    fn clear(&self) -> PyResult<()> {
        self.open()?;
        // The empty map's writes are planned and checked for room together.
        self.map
            .set_from(&std::collections::BTreeMap::<String, ()>::new())
            .sent()
    }

    /// A deep copy as plain Python data (dicts, lists, scalars; shared
    /// objects stay shared and cycles stay cycles), e.g. for `json.dumps`.
    fn to_python(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        deep(
            self.owner.bind(py),
            Value::Map(self.map.clone()),
            &mut Memo::new(),
        )
    }

    /// A shallow copy, as `dict.copy`: a plain dict of the entries, read
    /// together (objects stay proxies; `to_python` copies them too).
    fn copy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.shallow(py)
    }

    /// `m | other`: a new plain dict (shallow: objects stay proxies).
    fn __or__<'py>(&self, other: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Some(other) = shallow_dict(other)? else {
            return Ok(py.NotImplemented());
        };
        let out = self.shallow(py)?;
        out.update(other.as_mapping())?;
        Ok(out.into_any().unbind())
    }

    /// `other | m`: a new plain dict.
    fn __ror__<'py>(&self, other: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Some(out) = shallow_dict(other)? else {
            return Ok(py.NotImplemented());
        };
        out.update(self.shallow(py)?.as_mapping())?;
        Ok(out.into_any().unbind())
    }

    /// `m |= other`: `update`.
    fn __ior__(&self, other: &Bound<'_, PyAny>) -> PyResult<()> {
        self.update(Some(other), None)
    }

    fn __reversed__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut keys = self.keys_read()?;
        keys.reverse();
        PyList::new(py, keys)?
            .into_any()
            .try_iter()
            .map(Bound::into_any)
    }

    /// `copy.copy`: a plain dict of this map's entries (objects stay
    /// proxies).
    fn __copy__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.shallow(py)
    }

    /// `copy.deepcopy`: `to_python`, sharing what the other proxies that
    /// one deep copy reaches share.
    fn __deepcopy__(&self, py: Python<'_>, memo: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        deep_copy(self.owner.bind(py), Value::Map(self.map.clone()), memo)
    }

    fn __reduce_ex__(&self, _protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(PyTypeError::new_err(
            "a Map is a live view of a node's store and cannot be pickled; pickle m.to_python(), a plain copy",
        ))
    }

    /// `on(callback)`: every change of this map; `on(key, callback)`: of one
    /// key. callback(change) runs after the change is applied. Raises
    /// UnknownObjectError when the map is no longer in the document.
    #[pyo3(signature = (*args))]
    fn on(&self, py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        let (prop, cb) = on_args(args, |k| Ok(Prop::Key(k.extract::<String>()?.into())))?;
        listen_object(self.owner.bind(py), ObjectRef::from(&self.map), prop, cb)
    }

    /// Removes listeners: `off(callback)`, `off(key, callback)`, `off(key)`
    /// (every listener of the key), `off()` (every listener of the map but
    /// those of its keys). Returns whether one was removed.
    #[pyo3(signature = (*args))]
    fn off(&self, py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        let (prop, cb) = off_args(args, |k| Ok(Prop::Key(k.extract::<String>()?.into())))?;
        off(self.owner.bind(py), self.map.id(), prop, cb.as_ref())
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        match op {
            CompareOp::Eq | CompareOp::Ne => {
                if slf.is(other) {
                    return Ok(matches!(op, CompareOp::Eq)
                        .into_pyobject(py)?
                        .to_owned()
                        .into_any()
                        .unbind());
                }
                let mine = slf.get().to_python(py)?;
                let eq = mine.bind(py).eq(plain(other)?)?;
                Ok((eq == matches!(op, CompareOp::Eq))
                    .into_pyobject(py)?
                    .to_owned()
                    .into_any()
                    .unbind())
            }
            _ => Ok(py.NotImplemented()),
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let copy = self.to_python(py);
        match copy.and_then(|c| Ok(c.bind(py).repr()?.to_string())) {
            Ok(r) => Ok(format!("Map({r})")),
            // Never an error for a stale proxy: debuggers and logs show it.
            Err(_) if !self.map.exists() => Ok("<facsimile.Map (not in this document)>".into()),
            Err(e) => Err(e),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.owner)
    }
}

/// A list of the store: a `MutableSequence` with every list method. Reads
/// see the live document; writes replicate, one message per call.
#[pyclass(module = "facsimile", name = "List", frozen, weakref, sequence)]
pub(crate) struct ListProxy {
    pub(crate) owner: Py<Facsimile>,
    pub(crate) list: ArrayRef,
}

/// How many times a method that computes its write from a read of the
/// list (`sort`, `remove`, an extended-slice delete) reads again when
/// another node's write lands in between, before it gives up.
const ATTEMPTS: usize = 8;

/// A Python index (negative from the end) as a position, or IndexError.
fn position(i: isize, len: usize) -> PyResult<usize> {
    let p = if i < 0 { i + len as isize } else { i };
    if p < 0 || p as usize >= len {
        return Err(PyIndexError::new_err("list index out of range"));
    }
    Ok(p as usize)
}

impl ListProxy {
    fn open(&self) -> PyResult<()> {
        self.owner.get().check_open()
    }

    /// `UnknownObjectError` when the list is no longer in the document, as
    /// [`MapProxy::present`].
    fn present(&self) -> PyResult<()> {
        match self.list.exists() {
            true => Ok(()),
            false => Err(unknown(self.list.id())),
        }
    }

    /// The elements as a plain list, objects as proxies.
    fn shallow<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.values(py)?)
    }

    /// The index of `on(index, ..)` and `off(index)`: negative from the
    /// end of the list as it is now, as its own indices; one past the end
    /// listens to an element yet to come.
    fn listened_index(&self, index: &Bound<'_, PyAny>) -> PyResult<Prop> {
        let i = list_index(index)?;
        if i >= 0 {
            return Ok(Prop::Index(i as usize));
        }
        let p = i + self.__len__()? as isize;
        if p < 0 {
            return Err(PyIndexError::new_err("list index out of range"));
        }
        Ok(Prop::Index(p as usize))
    }

    fn values(&self, py: Python<'_>) -> PyResult<Vec<Py<PyAny>>> {
        let owner = self.owner.bind(py);
        self.list
            .to_vec()
            .sent()?
            .into_iter()
            .map(|v| to_py(owner, v))
            .collect()
    }

    fn inputs(items: &Bound<'_, PyAny>) -> PyResult<Vec<Input>> {
        // Snapshot first: `l.extend(l)` reads the list it writes.
        let items: Vec<Bound<'_, PyAny>> = items.try_iter()?.collect::<PyResult<_>>()?;
        items.iter().map(to_input).collect()
    }

    /// Removes the elements `pick` chooses among the list's, as
    /// [`ArrayRef::try_remove_picked`]: again on the new elements while
    /// one it picked is removed or written between the read and the
    /// write, up to [`ATTEMPTS`] times.
    fn remove_picked(
        &self,
        what: &str,
        mut pick: impl FnMut(&[Value]) -> PyResult<Vec<usize>>,
    ) -> PyResult<Vec<Value>> {
        for _ in 0..ATTEMPTS {
            let mut failure = None;
            let removed = self.list.try_remove_picked(|values| {
                pick(values).unwrap_or_else(|e| {
                    failure = Some(e);
                    Vec::new()
                })
            });
            if let Some(e) = failure {
                return Err(e);
            }
            if let Some(removed) = removed.sent()? {
                return Ok(removed);
            }
        }
        Err(PyRuntimeError::new_err(format!(
            "{what}: the element found changed between its read and its write {ATTEMPTS} times in a row; nothing was removed"
        )))
    }

    fn find(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        start: usize,
        stop: usize,
    ) -> PyResult<Option<usize>> {
        let values = self.values(py)?;
        for (i, v) in values.iter().enumerate().take(stop).skip(start) {
            if v.bind(py).eq(value)? {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

#[pymethods]
impl ListProxy {
    fn __len__(&self) -> PyResult<usize> {
        let n = self.list.len();
        if n == 0 {
            self.present()?;
        }
        Ok(n)
    }

    fn __getitem__(&self, py: Python<'_>, index: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        if let Ok(s) = index.cast::<PySlice>() {
            let values = self.values(py)?;
            let ind = s.indices(values.len() as isize)?;
            let mut out = Vec::with_capacity(ind.slicelength);
            let mut i = ind.start;
            for _ in 0..ind.slicelength {
                out.push(values[i as usize].clone_ref(py));
                i += ind.step;
            }
            return Ok(PyList::new(py, out)?.into_any().unbind());
        }
        let i = list_index(index)?;
        let p = position(i, self.__len__()?)?;
        match self.list.get(p) {
            Some(v) => to_py(self.owner.bind(py), v),
            None => {
                self.present()?;
                Err(PyIndexError::new_err("list index out of range"))
            }
        }
    }

    fn __setitem__(&self, index: &Bound<'_, PyAny>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.open()?;
        // Indices and values are converted first (`__index__`, iteration:
        // code that may write the list), positions resolved last.
        if let Ok(s) = index.cast::<PySlice>() {
            let slice = SliceSpec::of(s)?;
            let items = Self::inputs(value)?;
            if slice.step == 1 {
                // The range as of the write.
                let range = |len| slice.range(len);
                return self.list.splice_with(range, items).map(|_| ()).sent();
            }
            // One write, its positions as of the write.
            let (n, size) = (items.len(), std::cell::Cell::new(0));
            let at = |len| {
                let at: Vec<usize> = slice.positions(len).collect();
                size.set(at.len());
                at
            };
            if !self.list.replace_many_with(items, at).sent()? {
                return Err(PyValueError::new_err(format!(
                    "attempt to assign sequence of size {n} to extended slice of size {}",
                    size.get()
                )));
            }
            return Ok(());
        }
        let i = list_index(index)?;
        let value = to_input(value)?;
        // An element that exists as of the write: a concurrent removal
        // makes it an IndexError, never an append.
        self.list
            .replace_with(|len| resolve_index(i, len), value)
            .map(|_| ())
            .map_err(|e| index_error(e, "list assignment index out of range"))
            .sent()
    }

    fn __delitem__(&self, index: &Bound<'_, PyAny>) -> PyResult<()> {
        self.open()?;
        // Positions resolved against the length as of the write, all in
        // one message or none.
        if let Ok(s) = index.cast::<PySlice>() {
            let slice = SliceSpec::of(s)?;
            let at = |len| slice.positions(len).collect();
            return self.list.remove_many_with(at).map(|_| ()).sent();
        }
        let i = list_index(index)?;
        let at = |len| vec![resolve_index(i, len)];
        self.list
            .remove_many_with(at)
            .map(|_| ())
            .map_err(|e| index_error(e, "list assignment index out of range"))
            .sent()
    }

    fn __iter__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        PyList::new(py, self.values(py)?)?
            .into_any()
            .try_iter()
            .map(Bound::into_any)
    }

    fn __reversed__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let mut v = self.values(py)?;
        v.reverse();
        PyList::new(py, v)?
            .into_any()
            .try_iter()
            .map(Bound::into_any)
    }

    fn __contains__(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<bool> {
        Ok(self.find(py, value, 0, usize::MAX)?.is_some())
    }

    /// Appends one element.
    fn append(&self, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.open()?;
        self.list.push(to_input(value)?).sent()
    }

    /// Appends every element of an iterable, as one change.
    fn extend(&self, items: &Bound<'_, PyAny>) -> PyResult<()> {
        self.open()?;
        let items = Self::inputs(items)?;
        if items.is_empty() {
            return Ok(());
        }
        self.list.extend(items).sent()
    }

    fn __iadd__(&self, items: &Bound<'_, PyAny>) -> PyResult<()> {
        self.extend(items)
    }

    /// `l *= n`: the elements appended n - 1 times, as one change (an
    /// object is then referenced n times, as in a list); `n <= 0` clears.
    fn __imul__(&self, n: isize) -> PyResult<()> {
        self.open()?;
        // Read and appended in one write.
        self.list.repeat(n.max(0) as usize).sent()
    }

    /// `l + other`: a new plain list (shallow: objects stay proxies).
    fn __add__<'py>(&self, other: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Some(other) = shallow_list(other)? else {
            return Ok(py.NotImplemented());
        };
        Ok(self.shallow(py)?.add(other)?.unbind())
    }

    /// `other + l`: a new plain list.
    fn __radd__<'py>(&self, other: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        let py = other.py();
        let Some(other) = shallow_list(other)? else {
            return Ok(py.NotImplemented());
        };
        Ok(other.add(self.shallow(py)?)?.unbind())
    }

    /// `l * n`: a new plain list.
    fn __mul__<'py>(&self, n: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        Ok(self.shallow(n.py())?.mul(n)?.unbind())
    }

    fn __rmul__<'py>(&self, n: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        self.__mul__(n)
    }

    /// `copy.copy`: a plain list of the elements (objects stay proxies).
    fn __copy__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.shallow(py)
    }

    /// `copy.deepcopy`: `to_python`, as `Map.__deepcopy__`.
    fn __deepcopy__(&self, py: Python<'_>, memo: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        deep_copy(self.owner.bind(py), Value::Array(self.list.clone()), memo)
    }

    fn __reduce_ex__(&self, _protocol: &Bound<'_, PyAny>) -> PyResult<()> {
        Err(PyTypeError::new_err(
            "a List is a live view of a node's store and cannot be pickled; pickle l.to_python(), a plain copy",
        ))
    }

    /// Inserts before `index` (clamped, negative from the end, as `list`).
    fn insert(&self, index: isize, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.open()?;
        let input = to_input(value)?;
        // Clamped to the length as of the write: `list.insert` never
        // fails for an index.
        let at = |len: usize| {
            let len = len as isize;
            let p = if index < 0 {
                (index + len).max(0)
            } else {
                index.min(len)
            } as usize;
            p..p
        };
        self.list.splice_with(at, [input]).map(|_| ()).sent()
    }

    /// Removes and returns the element at `index` (the last by default).
    #[pyo3(signature = (index=-1))]
    fn pop(&self, py: Python<'_>, index: isize) -> PyResult<Py<PyAny>> {
        self.open()?;
        // The position as of the write.
        let empty = std::cell::Cell::new(false);
        let at = |len| {
            empty.set(len == 0);
            let p = resolve_index(index, len);
            p..p.saturating_add(1)
        };
        let removed = self.list.splice_with(at, [0; 0]).map_err(|e| {
            let message = if empty.get() {
                "pop from empty list"
            } else {
                "pop index out of range"
            };
            index_error(e, message)
        });
        let v = removed.sent()?.pop().unwrap_or(Value::Null);
        to_py(self.owner.bind(py), v)
    }

    /// Removes the first element equal to `value` (ValueError if none). A
    /// message that removes or writes the element found, applied between
    /// the search and the removal, makes it search again: it never removes
    /// an element that is not `value`.
    fn remove(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<()> {
        self.open()?;
        let owner = self.owner.bind(py);
        let removed = self.remove_picked("list.remove(x)", |values| {
            for (i, v) in values.iter().enumerate() {
                if to_py(owner, v.clone())?.bind(py).eq(value)? {
                    return Ok(vec![i]);
                }
            }
            Ok(Vec::new())
        })?;
        if removed.is_empty() {
            return Err(PyValueError::new_err("list.remove(x): x not in list"));
        }
        Ok(())
    }

    /// The position of the first element equal to `value`.
    #[pyo3(signature = (value, start=None, stop=None))]
    fn index(
        &self,
        py: Python<'_>,
        value: &Bound<'_, PyAny>,
        start: Option<&Bound<'_, PyAny>>,
        stop: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<usize> {
        let len = self.__len__()? as isize;
        let clamp = |i: isize| if i < 0 { (i + len).max(0) } else { i.min(len) } as usize;
        let start = start.map(slice_bound).transpose()?.unwrap_or(0);
        let stop = stop.map(slice_bound).transpose()?.unwrap_or(len);
        let (a, b) = (clamp(start), clamp(stop));
        self.find(py, value, a, b)?
            .ok_or_else(|| PyValueError::new_err("value is not in list"))
    }

    /// How many elements equal `value`.
    fn count(&self, py: Python<'_>, value: &Bound<'_, PyAny>) -> PyResult<usize> {
        let mut n = 0;
        for v in self.values(py)? {
            if v.bind(py).eq(value)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Reverses in place: elements move, as one change.
    fn reverse(&self) -> PyResult<()> {
        self.open()?;
        self.list.reverse().sent()
    }

    /// Sorts in place, stably, as `list.sort`: elements move (none is
    /// rewritten), as one change. `key` runs once per element; ValueError
    /// when it changes the list, as `list.sort`'s does. Other nodes'
    /// changes while the keys run do not hold it up, unless they write or
    /// remove an element sorted: elements they insert stay where they are,
    /// and the elements sorted take, in order, the places they hold then.
    #[pyo3(signature = (*, key=None, reverse=false))]
    fn sort(&self, py: Python<'_>, key: Option<Py<PyAny>>, reverse: bool) -> PyResult<()> {
        self.open()?;
        let owner = self.owner.bind(py);
        let builtins = py.import("builtins")?;
        // A change made on this node while the keys run is the key
        // function's own (or another thread's): `list.sort` raises for
        // it, and running the keys again would not end. Another node's
        // write or removal of an element sorted makes its key stale and
        // is tried again; its other changes do not refuse the sort.
        let local = Arc::new(AtomicBool::new(false));
        let seen = local.clone();
        let _sub = self.list.on(move |ev| {
            if matches!(ev.origin(), Origin::Local) {
                seen.store(true, AtomicOrdering::Relaxed);
            }
        });
        for _ in 0..ATTEMPTS {
            let mut failure = None;
            let applied = self.list.try_reorder(|values| {
                let order = (|| -> PyResult<Vec<usize>> {
                    let items = values
                        .iter()
                        .map(|v| to_py(owner, v.clone()))
                        .collect::<PyResult<Vec<_>>>()?;
                    let keys = match &key {
                        Some(k) => items
                            .iter()
                            .map(|v| k.call1(py, (v,)))
                            .collect::<PyResult<Vec<_>>>()?,
                        None => items,
                    };
                    let keys = PyList::new(py, keys)?;
                    let positions = PyList::new(py, 0..values.len())?;
                    let kwargs = PyDict::new(py);
                    kwargs.set_item("key", keys.getattr("__getitem__")?)?;
                    kwargs.set_item("reverse", reverse)?;
                    builtins
                        .getattr("sorted")?
                        .call((positions,), Some(&kwargs))?
                        .extract()
                })();
                let order = order.and_then(|o| {
                    if local.load(AtomicOrdering::Relaxed) {
                        return Err(PyValueError::new_err("list modified during sort"));
                    }
                    Ok(o)
                });
                match order {
                    Ok(o) => o,
                    Err(e) => {
                        // Nothing moves: the identity sends nothing.
                        failure = Some(e);
                        (0..values.len()).collect()
                    }
                }
            });
            if let Some(e) = failure {
                return Err(e);
            }
            if applied.sent()? {
                return Ok(());
            }
            if local.load(AtomicOrdering::Relaxed) {
                return Err(PyValueError::new_err("list modified during sort"));
            }
        }
        Err(PyValueError::new_err(format!(
            "list modified during sort: other nodes wrote or removed elements it sorted while the keys were computed, {ATTEMPTS} times in a row"
        )))
    }

    /// Removes every element, as one change.
    fn clear(&self) -> PyResult<()> {
        self.open()?;
        self.list.clear().sent()
    }

    /// A deep copy as plain Python data (`Map.to_python`).
    fn to_python(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        deep(
            self.owner.bind(py),
            Value::Array(self.list.clone()),
            &mut Memo::new(),
        )
    }

    /// A shallow copy, as `list.copy`: a plain list of the elements
    /// (objects stay proxies; `to_python` copies them too).
    fn copy<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.shallow(py)
    }

    /// `on(callback)`: every change of this list (a method call is one
    /// change with key None); `on(index, callback)`: element sets at one
    /// index (a negative one counts from the end as the list is now). Raises UnknownObjectError when the list is no longer in the
    /// document.
    #[pyo3(signature = (*args))]
    fn on(&self, py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<()> {
        let (prop, cb) = on_args(args, |k| self.listened_index(k))?;
        listen_object(self.owner.bind(py), ObjectRef::from(&self.list), prop, cb)
    }

    /// Removes listeners, as `Map.off`.
    #[pyo3(signature = (*args))]
    fn off(&self, py: Python<'_>, args: &Bound<'_, PyTuple>) -> PyResult<bool> {
        let (prop, cb) = off_args(args, |k| self.listened_index(k))?;
        off(self.owner.bind(py), self.list.id(), prop, cb.as_ref())
    }

    fn __richcmp__(
        slf: &Bound<'_, Self>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        match op {
            CompareOp::Eq | CompareOp::Ne => {
                if slf.is(other) {
                    return Ok(matches!(op, CompareOp::Eq)
                        .into_pyobject(py)?
                        .to_owned()
                        .into_any()
                        .unbind());
                }
                let mine = slf.get().to_python(py)?;
                let eq = mine.bind(py).eq(plain(other)?)?;
                Ok((eq == matches!(op, CompareOp::Eq))
                    .into_pyobject(py)?
                    .to_owned()
                    .into_any()
                    .unbind())
            }
            // Ordered as lists are, element by element.
            _ => match shallow_list(other)? {
                Some(other) => Ok(slf.get().shallow(py)?.rich_compare(other, op)?.unbind()),
                None => Ok(py.NotImplemented()),
            },
        }
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let copy = self.to_python(py);
        match copy.and_then(|c| Ok(c.bind(py).repr()?.to_string())) {
            Ok(r) => Ok(format!("List({r})")),
            // As `Map.__repr__`.
            Err(_) if !self.list.exists() => Ok("<facsimile.List (not in this document)>".into()),
            Err(e) => Err(e),
        }
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.owner)
    }
}
