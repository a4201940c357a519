"""facsimile: mirror an object graph across processes.

A node's ``store`` reads and writes like plain Python data — maps are
``MutableMapping`` proxies whose keys are also attributes, arrays are
``MutableSequence`` proxies with every ``list`` method — and every write is
replicated by the Rust engine underneath, which keeps all replicas
convergent, reports every change and grants distributed locks with fencing
tokens::

    import facsimile

    a, b = facsimile.Facsimile("alpha"), facsimile.Facsimile("bravo")
    a.send, b.send = b.receive, a.receive     # any ordered channel will do
    a.store = {"players": [{"name": "ada", "score": 0}]}
    b.store.players[0].score += 1
    assert a.store == {"players": [{"name": "ada", "score": 1}]}

Threads: a listener runs in the thread that applied the change — the
writing thread for a local write (before the write returns, unless another
thread is running the node's listeners at that moment: that thread runs
it, in order, as soon as it can), the thread that called ``receive`` for a
message, and for a node from ``connect`` the ``facsimile-io`` thread, which
delivers every connection's messages. Waits
(``lock``, ``flush``, ``connect``, ``close``) release the GIL and end
with ``KeyboardInterrupt`` on Ctrl-C; each has an ``_async`` form for
asyncio.
"""

from collections.abc import MutableMapping, MutableSequence

from ._facsimile import (
    Change,
    ChangesOverflowError,
    ClosedError,
    ConnectError,
    CycleError,
    DetachedError,
    EvictedError,
    Facsimile,
    FacsimileError,
    ForeignHandleError,
    List,
    LockedError,
    LockGuard,
    LockLostError,
    LockTimeoutError,
    Map,
    NetError,
    NetTimeoutError,
    NoTransportError,
    NotLockedError,
    NotOwnerError,
    ReadOnlyError,
    ReceiveError,
    SyncingError,
    TooLargeError,
    TypeMismatchError,
    UnknownObjectError,
    WritesLostError,
    WrongKindError,
    _engines_alive,
    connect,
    connect_async,
)

MutableMapping.register(Map)
MutableSequence.register(List)

__all__ = [
    "Change",
    "ChangesOverflowError",
    "ClosedError",
    "ConnectError",
    "CycleError",
    "DetachedError",
    "EvictedError",
    "Facsimile",
    "FacsimileError",
    "ForeignHandleError",
    "List",
    "LockGuard",
    "LockLostError",
    "LockTimeoutError",
    "LockedError",
    "Map",
    "NetError",
    "NetTimeoutError",
    "NoTransportError",
    "NotLockedError",
    "NotOwnerError",
    "ReadOnlyError",
    "ReceiveError",
    "SyncingError",
    "TooLargeError",
    "TypeMismatchError",
    "UnknownObjectError",
    "WritesLostError",
    "WrongKindError",
    "connect",
    "connect_async",
    "to_python",
]


def to_python(value):
    """A deep copy of a stored value as plain data (proxies become dicts and
    lists; shared objects stay shared), e.g. for ``json.dumps``."""
    if isinstance(value, (Map, List)):
        return value.to_python()
    return value
