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


def _from_plain(tp, data):
    """Plain data read from the store as an instance of ``tp`` (dataclasses,
    pydantic models, and lists, dicts and Optionals of them)."""
    if tp is None or tp is typing.Any:
        return data
    if _is_pydantic(tp):
        return tp.model_validate(data)
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        if not isinstance(data, dict):
            raise TypeMismatchError(f"expected a map for {tp.__name__}, found {type(data).__name__}")
        hints = _hints(tp)
        kwargs = {}
        for f in dataclasses.fields(tp):
            if f.name in data:
                kwargs[f.name] = _from_plain(hints.get(f.name), data[f.name])
        try:
            return tp(**kwargs)
        except TypeError as e:
            raise TypeMismatchError(f"{tp.__name__}: {e}") from None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (list, typing.List) and args and isinstance(data, list):
        return [_from_plain(args[0], x) for x in data]
    if origin in (dict, typing.Dict) and len(args) == 2 and isinstance(data, dict):
        return {k: _from_plain(args[1], v) for k, v in data.items()}
    if origin is typing.Union and data is not None:
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _from_plain(inner[0], data)
    return data


def _to_plain(value, old=None):
    """An instance as plain data, over `old` (the plain data it was read
    from): keys its type does not declare are kept, and a field is written
    only where it differs from what it was read as, as in the Rust crate's
    typed layer: None is an absent key (a key holding null, or no key,
    stays as it is), and a field an absent key gave its default stays
    absent while it holds that default."""
    if _is_pydantic(type(value)):
        fields = {k: getattr(value, k) for k in type(value).model_fields}
        return _fields_to_plain(fields, _pydantic_default(type(value)), old)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _fields_to_plain(fields, _dataclass_default(type(value)), old)
    if isinstance(value, dict):
        old = old if isinstance(old, dict) else {}
        return {k: _to_plain(v, old.get(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        old = old if isinstance(old, list) else []
        return [_to_plain(v, old[i] if i < len(old) else None) for i, v in enumerate(value)]
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


def _fields_to_plain(fields, default, old):
    read = isinstance(old, dict)
    out = dict(old) if read else {}
    for name, v in fields.items():
        if name not in out:
            # Absent, the field read as None, or as its default from a
            # stored map: left so, the key stays absent.
            if v is not None and not (read and _is_default(v, default(name))):
                out[name] = _to_plain(v)
        elif v is None:
            # A null stays; a value set to None is deleted.
            if out[name] is not None:
                del out[name]
        else:
            out[name] = _to_plain(v, out[name])
    return out


def update(self, fn, cls=None):
    """Reads the store as ``cls`` (a dataclass or pydantic model; taken from
    the annotation of ``fn``'s parameter when not given; plain data without
    either), calls ``fn`` on it, and sends only the writes that make the
    store hold the result: nothing for unchanged fields, one write per
    changed field, one insert per appended element, as one message. ``fn``
    mutates its argument or returns a new value; it may run again when a
    message arrived meanwhile, so it should only change its argument."""
    if cls is None:
        try:
            params = list(typing.get_type_hints(fn).items())
            params = [(k, v) for k, v in params if k != "return"]
            if params:
                cls = params[0][1]
        except Exception:
            cls = None

    def run(plain):
        state = _from_plain(cls, plain)
        result = fn(state)
        return _to_plain(state if result is None else result, plain)

    self._update_plain(run)
