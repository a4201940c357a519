"""Listeners: what they receive, that they may write, where they run, and
the async iterator of changes."""

import asyncio
import gc
import sys
import threading
import time
import weakref

import pytest

import facsimile
from conftest import Net, sigint_after


def test_change_fields_local_and_remote(pair):
    a, b = pair
    a.store = {"x": 1}
    seen = {}
    for node in (a, b):
        node.on("change", lambda c, h=node.hostname: seen.setdefault(h, []).append(c))
    a.store.x = {"nested": True}
    ca, cb = seen["alpha"][0], seen["bravo"][0]
    assert ca.local and ca.origin is None
    assert not cb.local and cb.origin == "alpha"
    assert cb.target is b.store and cb.key == "x" and cb.old == 1
    assert cb.new is b.store.x and cb.new == {"nested": True}
    assert "Change(key='x'" in repr(cb)


def test_index_listener_and_mass_change(pair):
    a, b = pair
    a.store = [0, 0, 0]
    hits = []
    b.store.on(1, lambda c: hits.append((c.key, c.new, c.old)))
    a.store[1] = 5
    a.store[0] = 5
    a.store.append(1)  # a mass change: no index
    assert hits == [(1, 5, 0)]


def test_listener_may_write_and_writes_replicate(pair):
    a, b = pair
    a.store = {"n": 0, "echo": 0}

    def echo(change):
        if change.key == "n":
            b.store.echo = change.new * 10

    b.store.on("n", echo)
    a.store.n = 4
    assert a.store.echo == 40 and b.store.echo == 40
    assert a.snapshot() == b.snapshot()


def test_listener_exceptions_are_unraisable(pair):
    a, b = pair
    a.store = {"n": 0}
    b.on("change", lambda c: 1 / 0)
    caught = []
    import sys

    old = sys.unraisablehook
    sys.unraisablehook = lambda u: caught.append(u.exc_type)
    try:
        a.store.n = 1
    finally:
        sys.unraisablehook = old
    assert caught == [ZeroDivisionError]
    assert b.store.n == 1


def test_an_interrupt_in_a_listener_is_raised_by_the_call_that_ran_it(pair):
    a, b = pair
    a.store = {"n": 0}

    def spin(change):
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until Ctrl-C
            pass

    a.on("change", spin)
    with pytest.raises(KeyboardInterrupt), sigint_after(0.2, raising=KeyboardInterrupt):
        a.store.n = 1
    # The write was made and sent; only the interrupt went on.
    assert a.store.n == 1 and b.store.n == 1 and a.snapshot() == b.snapshot()
    a.off("change", spin)

    ran = []
    b.on("change", lambda c: sys.exit(3))
    b.on("change", lambda c: ran.append(c.new))
    with pytest.raises(SystemExit) as exit:
        a.store.n = 2  # b's listeners run in b.receive, inside this call
    assert exit.value.code == 3
    assert ran == [2] and b.store.n == 2  # the other listeners ran too


def test_listeners_run_in_the_applying_thread(pair):
    a, b = pair
    a.store = {"n": 0}
    threads = []
    b.on("change", lambda c: threads.append(threading.current_thread().name))
    t = threading.Thread(target=lambda: a.store.__setitem__("n", 1), name="writer")
    t.start()
    t.join()
    assert threads == ["writer"]


def test_unknown_event():
    with pytest.raises(ValueError, match="unknown event"):
        facsimile.Facsimile("x").on("nope", print)


def test_async_iterator_of_changes():
    net = Net("alpha", "bravo")
    a, b = net
    a.store = {"n": 0}

    async def main():
        changes = b.changes()
        for i in range(1, 4):
            a.store.n = i
        got = [await changes.__anext__() for _ in range(3)]
        await changes.aclose()
        a.store.n = 99
        return [(c.key, c.new, c.origin) for c in got]

    assert asyncio.run(main()) == [("n", 1, "alpha"), ("n", 2, "alpha"), ("n", 3, "alpha")]


def test_aclose_ends_an_iteration_waiting_for_a_change():
    net = Net("alpha", "bravo")
    a, b = net
    a.store = {"n": 0}

    async def main():
        changes = b.changes()
        got, heard = [], asyncio.Event()

        async def consume():
            async for change in changes:
                got.append(change.new)
                heard.set()

        task = asyncio.create_task(consume())
        a.store.n = 1
        await heard.wait()  # the consumer is back in __anext__, waiting
        await changes.aclose()
        await asyncio.wait_for(task, 10)
        return got

    assert asyncio.run(main()) == [1]


def test_blocking_waits_refused_in_listeners(pair):
    a, b = pair
    a.store = {"n": 0}
    refused = []

    def listener(change):
        try:
            b.lock(b.store)
        except RuntimeError as e:
            refused.append(str(e))

    b.on("change", listener)
    a.store.n = 1
    assert len(refused) == 1 and "would block" in refused[0]
    # Outside a listener the same call works.
    with b.lock(b.store) as guard:
        assert guard.held


class _Dead:
    """A node that crashed: it receives nothing."""

    def receive(self, data):
        pass


def test_lock_async_sees_a_dead_holder_evicted_by_failure_detection():
    # On a transport of the user's nothing else calls into the waiting
    # node: the awaiting lock runs its timers, as the blocking one does.
    net = Net("a", "b", failure_detection=(0.05, 0.3))
    a, b = net
    a.store = {"jobs": []}
    held = a.lock(a.store)
    assert held.held
    net.nodes[0] = _Dead()
    a.send = lambda data: None

    async def main():
        guard = await asyncio.wait_for(b.lock_async(b.store), 10)
        token = guard.token
        guard.release()
        return token

    assert asyncio.run(main()) > held.token
    assert "a" not in b.peers


def test_an_exception_from_send_is_raised_by_the_call_that_sent():
    # As the original's send throwing to the writer: the write is made
    # here, and the caller learns that its message did not go.
    a = facsimile.Facsimile("alpha")
    failing = []

    def send(data):
        if failing:
            raise ConnectionError("down")

    a.send = send
    a.store = {"n": 0, "l": []}
    failing.append(True)
    with pytest.raises(ConnectionError):
        a.store.n = 1
    assert a.store.n == 1
    with pytest.raises(ConnectionError):
        a.store.l.append(1)
    with pytest.raises(ConnectionError):
        del a.store["n"]
    failing.clear()
    a.store.n = 2  # nothing left over to raise
    assert a.store.n == 2 and a.store.l == [1]

    # A lock's request, and the release of the guard dropped with the
    # error, fail to send: raised by lock(), and nothing is left over for
    # a later call (the release goes to the unraisable hook).
    failing.append(True)
    caught = []
    old = sys.unraisablehook
    sys.unraisablehook = lambda u: caught.append(u.exc_type)
    try:
        with pytest.raises(ConnectionError):
            a.lock(a.store)
    finally:
        sys.unraisablehook = old
    failing.clear()
    a.store.n = 3
    assert a.store.n == 3

    # A listener that writes while the failing call runs its listeners
    # does not take the call's error.
    # (The listener's write goes out in the same pump, and fails too: a
    # second exception of one call goes to the unraisable hook.)
    a.on("change", lambda c: setattr(a.store, "seen", 1) if c.key == "n" else None)
    failing.append(True)
    caught.clear()
    sys.unraisablehook = lambda u: caught.append(u.exc_type)
    try:
        with pytest.raises(ConnectionError):
            a.store.n = 4
    finally:
        sys.unraisablehook = old
    failing.clear()
    assert a.store.seen == 1
    assert caught == [ConnectionError]

    # What was queued before a sender was assigned goes out when it is:
    # raised by the assignment; then by the sync that sends its request.
    c = facsimile.Facsimile("charlie")

    def refuse(data):
        raise BrokenPipeError("closed")

    with pytest.raises(BrokenPipeError):
        c.send = refuse
    with pytest.raises(BrokenPipeError):
        c.sync()


def test_a_listener_on_an_object_not_in_the_document_is_refused():
    # While a sync waits for its answer the node holds no object: a proxy
    # read before names an object the document does not have, as one of a
    # reclaimed object does. A listener on it would never fire, and would
    # stay until the node went.
    net = Net("alpha", "bravo", auto=False)
    a, b = net
    a.store = {"m": {"x": 1}, "l": [1]}
    net.run()
    m, l = b.store.m, b.store.l
    b.sync()

    class Callback:
        def __call__(self, change):
            pass

    callback = Callback()
    freed = weakref.ref(callback)
    for listen in (m.on, lambda cb: m.on("x", cb), l.on, lambda cb: l.on(0, cb)):
        with pytest.raises(facsimile.UnknownObjectError):
            listen(callback)
    del callback
    gc.collect()
    assert freed() is None  # not kept by the node

    net.run()  # the document is back: listening works again
    heard = []
    m.on(lambda c: heard.append(c.key))
    a.store.m.x = 2
    net.run()
    assert heard == ["x"]


def test_index_listeners_take_negative_indices_as_lists_do(pair):
    a, b = pair
    a.store = [0, 1, 2]
    heard = []
    b.store.on(-1, lambda c: heard.append(c.key))
    a.store[1] = 10
    a.store[2] = 20
    assert heard == [2]
    assert b.store.off(-1) and not b.store.off(2)
    for call in (lambda: b.store.on(-4, print), lambda: b.store.off(-4)):
        with pytest.raises(IndexError):
            call()


def test_changes_waiting_to_be_read_are_bounded_and_their_overflow_raised():
    net = Net("alpha", "bravo")
    a, b = net
    a.store = {"n": 0}

    async def main():
        changes = b.changes(maxsize=3)
        for i in range(1, 6):
            a.store.n = i
        got = [(await changes.__anext__()).new for _ in range(3)]
        # The changes after the third were not kept: the iteration says so
        # once it has given those it kept, and ends.
        with pytest.raises(facsimile.ChangesOverflowError, match="3"):
            await changes.__anext__()
        with pytest.raises(StopAsyncIteration):
            await changes.__anext__()
        return got

    assert asyncio.run(main()) == [1, 2, 3]
