"""The views of a map proxy (`m.keys()`, `m.values()`, `m.items()`): live,
as a dict's, reversible, as a dict's since Python 3.8.

Iterating values or items reads each key with its value in one read of the
map (`Map._entries`), as a dict's iteration of a copy would: a key another
node deletes meanwhile (on the I/O thread, which applies messages while
this thread runs) is not read again, so it never raises KeyError."""

from collections import abc


class KeysView(abc.KeysView):
    __slots__ = ()

    def __reversed__(self):
        return reversed(self._mapping)


class ValuesView(abc.ValuesView):
    __slots__ = ()

    def __iter__(self):
        return (v for _, v in self._mapping._entries())

    def __reversed__(self):
        return (v for _, v in reversed(self._mapping._entries()))

    def __contains__(self, value):
        return any(v is value or v == value for v in self)


class ItemsView(abc.ItemsView):
    __slots__ = ()

    def __iter__(self):
        return iter(self._mapping._entries())

    def __reversed__(self):
        return reversed(self._mapping._entries())
