"""Typed updates: dataclasses and pydantic models in and out of the store,
the minimal writes computed by the engine (``Facsimile._update_plain``)."""

import dataclasses
import typing

from ._facsimile import TypeMismatchError

def _hints(cls):
    try:
        return typing.get_type_hints(cls)
    except Exception:
        return {f.name: f.type for f in dataclasses.fields(cls)}


def _is_pydantic(cls):
    return isinstance(cls, type) and hasattr(cls, "model_validate") and hasattr(cls, "model_dump")


def _from_plain(tp, data, read):
    """Plain data read from the store as an instance of ``tp`` (dataclasses,
    pydantic models, and lists, dicts and Optionals of them). Each instance
    and container made is entered in ``read`` (by ``id``, kept alive with
    it) with the plain data it came from: its undeclared keys go with it
    wherever the update puts it."""
    value = _build(tp, data, read)
    _remember(read, value, data)
    return value


def _remember(read, value, data):
    if isinstance(data, (dict, list)):
        read[id(value)] = (value, data)


def _build(tp, data, read):
    if tp is None or tp is typing.Any:
        return data
    if _is_pydantic(tp):
        model = tp.model_validate(data)
        _remember_models(read, model, data)
        return model
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(data, dict):
            raise TypeMismatchError(f"expected a map for {tp.__name__}, found {type(data).__name__}")
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in data:
                kwargs[f.name] = _from_plain(hints.get(f.name), data[f.name], read)
        try:
            return tp(**kwargs)
        except TypeError as e:
            raise TypeMismatchError(f"{tp.__name__}: {e}") from None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (list, typing.List) and args and isinstance(data, list):
        return [_from_plain(args[0], x, read) for x in data]
    if origin in (dict, typing.Dict) and len(args) == 2 and isinstance(data, dict):
        return {k: _from_plain(args[1], v, read) for k, v in data.items()}
    if origin is typing.Union and data is not None:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _build(inner[0], data, read)
    return data


def _remember_models(read, value, data):
    """Enters what pydantic built from ``data`` (nested models and
    dataclasses, their lists and dicts, element by element as built)."""
    if isinstance(data, dict) and (_is_pydantic(type(value)) or _is_dataclass_instance(value)):
        _remember(read, value, data)
        for name in _field_names(value):
            if name in data:
                _remember_models(read, getattr(value, name, None), data[name])
    elif isinstance(value, list) and isinstance(data, list) and len(value) == len(data):
        _remember(read, value, data)
        for v, d in zip(value, data):
            _remember_models(read, v, d)
    elif isinstance(value, dict) and isinstance(data, dict):
        _remember(read, value, data)
        for k, v in value.items():
            if k in data:
                _remember_models(read, v, data[k])


def _is_dataclass_instance(value):
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _field_names(value):
    if _is_pydantic(type(value)):
        return list(type(value).model_fields)
    return [f.name for f in dataclasses.fields(value)]


def _to_plain(value, old, read):
    """An instance as plain data over `old`, the plain data it was read
    from: keys its type does not declare are kept, and a field is written
    only where it differs from what it was read as, as in the Rust crate's
    typed layer: None is an absent key (a key holding null, or no key,
    stays as it is), and a field an absent key gave its default stays
    absent while it holds that default.

    What was read is found by identity (`read`), wherever the update moved
    it: a record removed or reordered in a list takes its undeclared keys
    along rather than leaving them at its old position. Anything else
    (made by `fn`) is over `old`, what its slot held (a field, a dict's
    key, the root), as the Rust crate's struct diff writes in place; a new
    list element has nothing under it."""
    found = read.get(id(value))
    if found is not None and found[0] is value:
        old = found[1]
    if _is_pydantic(type(value)):
        fields = {k: getattr(value, k) for k in type(value).model_fields}
        return _fields_to_plain(fields, _pydantic_default(type(value)), old, read)
    if _is_dataclass_instance(value):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _fields_to_plain(fields, _dataclass_default(type(value)), old, read)
    if isinstance(value, dict):
        old = old if isinstance(old, dict) else {}
        return {k: _to_plain(v, old.get(k), read) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v, None, read) for v in value]
    return value


_NO_DEFAULT = object()


def _dataclass_default(cls):
    fields = {f.name: f for f in dataclasses.fields(cls)}

    def default(name):
        f = fields[name]
        if f.default is not dataclasses.MISSING:
            return f.default
        if f.default_factory is not dataclasses.MISSING:
            return f.default_factory()
        return _NO_DEFAULT

    return default


def _pydantic_default(cls):
    def default(name):
        info = cls.model_fields[name]
        if info.is_required():
            return _NO_DEFAULT
        try:
            return info.get_default(call_default_factory=True)
        except Exception:  # a factory that needs the other fields
            return _NO_DEFAULT

    return default


def _is_default(v, default):
    if default is _NO_DEFAULT or type(v) is not type(default):
        return False
    try:
        return bool(v == default)
    except Exception:
        return False


def _fields_to_plain(fields, default, old, read):
    stored = isinstance(old, dict)
    out = dict(old) if stored else {}
    for name, v in fields.items():
        if name not in out:
            # Absent, the field read as None, or as its default from a
            # stored map: left so, the key stays absent.
            if v is not None and not (stored and _is_default(v, default(name))):
                out[name] = _to_plain(v, None, read)
        elif v is None:
            # A null stays; a value set to None is deleted.
            if out[name] is not None:
                del out[name]
        else:
            out[name] = _to_plain(v, out[name], read)
    return out


def update(self, fn, cls=None):
    """Reads the store as ``cls`` (a dataclass or pydantic model; taken from
    the annotation of ``fn``'s parameter when not given; plain data without
    either), calls ``fn`` on it, and sends only the writes that make the
    store hold the result: nothing for unchanged fields, one write per
    changed field, one insert per appended element, as one message. ``fn``
    mutates its argument or returns a new value; it may run again when a
    message arrived meanwhile, so it should only change its argument. Keys
    the types do not declare stay with the instance read with them, wherever
    ``fn`` moves it (`_to_plain`)."""
    if cls is None:
        try:
            params = list(typing.get_type_hints(fn).items())
            params = [(k, v) for k, v in params if k != "return"]
            if params:
                cls = params[0][1]
        except Exception:
            cls = None

    def run(plain):
        read = {}
        state = _from_plain(cls, plain, read)
        result = fn(state)
        return _to_plain(state if result is None else result, plain, read)

    self._update_plain(run)
