"""Nodes connected to a relay (`facsimile serve` on loopback), from plain
threads and from asyncio, in this process and in other processes."""

import asyncio
import contextlib
import os
import queue
import signal
import threading
import time

import pytest

import facsimile
from conftest import Interrupted, python_child, sigint_after


def thread_name():
    """The operating system's name of the current thread."""
    with open(f"/proc/self/task/{threading.get_native_id()}/comm") as f:
        return f.read().strip()


def until(node, predicate, timeout=20):
    """Waits for a change of `node` after which `predicate()` holds."""
    done = threading.Event()

    def check(_=None):
        if predicate():
            done.set()

    node.on("change", check)
    node.on("root_changed", check)
    check()
    try:
        assert done.wait(timeout), "the state never arrived"
    finally:
        node.off("change", check)
        node.off("root_changed", check)


def test_two_nodes_mirror_over_the_relay(relay):
    a = facsimile.connect(relay.addr, "alpha", doc="t1")
    b = facsimile.connect(relay.addr, "bravo", doc="t1")
    try:
        assert a.connected and a.store is None
        a.store = {"players": [{"name": "ada", "score": 0}]}
        a.flush()
        until(b, lambda: b.store is not None and len(b.store.players) == 1)
        threads = queue.Queue()
        b.on("change", lambda c: threads.put((thread_name(), c.key, c.new)))
        a.store.players[0].score += 1
        # Remote changes are delivered on the I/O thread.
        assert threads.get(timeout=20) == ("facsimile-io", "score", 1)
        with b.lock(b.store.players) as guard:
            assert guard.token > 0
            b.store.players.append({"name": "grace", "score": 3})
            with pytest.raises(facsimile.LockedError):
                a.store.players.append({})
        b.flush()
        until(a, lambda: len(a.store.players) == 2)
        with pytest.raises(RuntimeError, match="not connected|connection"):
            a.send = print
    finally:
        a.close()
        b.close()


def test_a_read_only_node_mirrors_refuses_writes_and_is_no_member(relay):
    a = facsimile.connect(relay.addr, "alpha", doc="read-only")
    o = facsimile.connect(relay.addr, "obs", doc="read-only", read_only=True)
    try:
        a.store = {"n": 1}
        a.flush()
        until(o, lambda: o.store is not None and o.store.n == 1)
        with pytest.raises(facsimile.ReadOnlyError):
            o.store.n = 2
        assert "obs" not in a.peers  # nobody waits for it
        with a.lock(a.store, timeout=20) as guard:
            assert guard.token > 0
    finally:
        a.close()
        o.close()


def test_a_write_too_large_for_the_relay_raises_and_the_connection_goes_on(relay):
    a = facsimile.connect(relay.addr, "alpha", doc="large")
    b = facsimile.connect(relay.addr, "bravo", doc="large")
    try:
        a.store = {"n": 0}
        with pytest.raises(facsimile.TooLargeError):
            a.store.big = "x" * (17 << 20)  # over the relay's 16 MiB frames
        a.store.n = 1
        a.flush()
        until(b, lambda: b.store is not None and b.store.n == 1)
        assert "big" not in b.store
    finally:
        a.close()
        b.close()


def test_a_websocket_node_mirrors_a_tcp_node(relay):
    a = facsimile.connect(relay.addr, "alpha", doc="ws")
    b = facsimile.connect(f"ws://{relay.addr}/", "bravo", doc="ws")
    try:
        a.store = {"jobs": []}
        a.flush()
        until(b, lambda: b.store is not None)
        with b.lock(b.store.jobs):
            b.store.jobs.append("from ws")
            b.flush()
            # The write follows the lock in the relay's order.
            until(a, lambda: list(a.store.jobs) == ["from ws"])
            with pytest.raises(facsimile.LockedError):
                a.store.jobs.append("from tcp")
        b.flush()
        assert a.store.to_python() == b.store.to_python() == {"jobs": ["from ws"]}
    finally:
        a.close()
        b.close()


def test_from_threads(relay):
    nodes = [facsimile.connect(relay.addr, f"w{i}", doc="t2") for i in range(3)]
    try:
        nodes[0].store = {"hits": []}
        nodes[0].flush()
        for n in nodes:
            until(n, lambda n=n: n.store is not None)

        def work(node):
            for i in range(20):
                node.store.hits.append(f"{node.hostname}-{i}")
            node.flush()

        threads = [threading.Thread(target=work, args=(n,)) for n in nodes]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for n in nodes:
            until(n, lambda n=n: len(n.store.hits) == 60)
        assert sorted(nodes[0].store.hits) == sorted(nodes[2].store.hits)
    finally:
        for n in nodes:
            n.close()


def test_from_asyncio(relay):
    async def main():
        a = await facsimile.connect_async(relay.addr, "alpha", doc="t3")
        b = await facsimile.connect_async(relay.addr, "bravo", doc="t3")
        changes = b.changes()
        a.store = {"n": 0}
        await a.flush_async()
        async with a.lock_async(a.store) as guard:
            a.store.n = guard.token
        await a.flush_async()
        seen = []
        async for change in changes:
            seen.append(change)
            if b.store is not None and b.store.get("n"):
                break
        await changes.aclose()
        with pytest.raises(facsimile.LockedError):
            async with a.lock_async(a.store):
                await b.request_async(b.store)
        await a.close_async()
        await b.close_async()
        return b.store.n

    assert asyncio.run(main()) > 0


def test_blocking_calls_refused_on_the_io_thread(relay):
    a = facsimile.connect(relay.addr, "alpha", doc="t4")
    b = facsimile.connect(relay.addr, "bravo", doc="t4")
    try:
        errors = queue.Queue()

        def listener(change):
            try:
                b.flush()
            except RuntimeError as e:
                errors.put(str(e))

        a.store = {"x": 1}
        a.flush()
        until(b, lambda: b.store is not None)
        b.on("change", listener)
        a.store.x = 2
        assert "would block" in errors.get(timeout=20)
    finally:
        a.close()
        b.close()


def test_unreachable_addresses():
    with pytest.raises(facsimile.ConnectError):
        facsimile.connect("ws://127.0.0.1:1/", "x", timeout=5)
    with pytest.raises(ConnectionError):  # the builtin family
        facsimile.connect("127.0.0.1:1", "x", timeout=5)
    with pytest.raises(facsimile.ConnectError):
        facsimile.connect("127.0.0.1:1", "x", timeout=5)


CHILD = """
import sys, facsimile
node = facsimile.connect(sys.argv[1], sys.argv[2], doc=sys.argv[3])
print("connected", flush=True)
for line in sys.stdin:
    cmd = line.split()
    if cmd[0] == "set":
        node.store = {"from": sys.argv[2], "n": int(cmd[1])}
        node.flush()
        print("done", flush=True)
    elif cmd[0] == "lock":
        guard = node.lock(node.store)
        print("token", guard.token, flush=True)
    elif cmd[0] == "read":
        print("store", node.store.to_python(), flush=True)
"""


def test_two_processes_mirror_a_dict(relay):
    writer = python_child(CHILD, relay.addr, "writer", "t5")
    try:
        assert writer.stdout.readline().strip() == "connected"
        reader = facsimile.connect(relay.addr, "reader", doc="t5")
        writer.stdin.write("set 7\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "done"
        until(reader, lambda: reader.store is not None and reader.store.get("n") == 7)
        assert reader.store == {"from": "writer", "n": 7}
        reader.close()
    finally:
        writer.kill()
        writer.wait()


def test_killed_lock_holder_frees_the_lock(relay):
    holder = python_child(CHILD, relay.addr, "holder", "t6")
    try:
        assert holder.stdout.readline().strip() == "connected"
        holder.stdin.write("set 1\nlock\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "done"
        first = int(holder.stdout.readline().split()[1])
        node = facsimile.connect(relay.addr, "next", doc="t6")
        with pytest.raises(facsimile.LockedError):
            node.request(node.store)
        holder.kill()  # SIGKILL: no goodbye
        holder.wait()
        with node.lock(node.store, timeout=30) as guard:
            assert guard.token > first
            node.store.n = 2
        node.close()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def _state(pid):
    """The state letter of process `pid` (Linux): "T" once it is stopped."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()[0]


@contextlib.contextmanager
def frozen(relay, at_most=8):
    """The relay stopped (SIGSTOP), for at most `at_most` seconds: it
    accepts connections and answers nothing."""
    os.kill(relay.proc.pid, signal.SIGSTOP)
    # The signal is delivered in the relay's own time: until it stops, it
    # may still acknowledge what the test means to leave unacknowledged.
    while _state(relay.proc.pid) != "T":
        time.sleep(0.001)
    thaw = threading.Timer(at_most, os.kill, (relay.proc.pid, signal.SIGCONT))
    thaw.start()
    try:
        yield
    finally:
        thaw.cancel()
        os.kill(relay.proc.pid, signal.SIGCONT)


def test_ctrl_c_interrupts_flush_close_and_connect(relay):
    a = facsimile.connect(relay.addr, "alpha", doc="sigint")
    a.store = {"n": 0}
    a.flush()
    calls = {
        "flush()": a.flush,
        "connect()": lambda: facsimile.connect(relay.addr, "bravo", doc="sigint"),
        "close()": lambda: a.close(timeout=30),
    }
    for name, call in calls.items():
        with frozen(relay):
            a.store.n += 1  # unacknowledged while the relay is stopped
            start = time.monotonic()
            with pytest.raises(Interrupted), sigint_after(0.3):
                call()
            assert time.monotonic() - start < 3, name
    assert not a.connected  # an interrupted close drops the connection


def test_a_closed_node_reads_and_refuses_writes(relay):
    a = facsimile.connect(relay.addr, "alpha", doc="closed")
    a.store = {"n": 0, "o": {}, "l": [1]}
    a.flush()
    b = facsimile.connect(relay.addr, "bravo", doc="closed")
    a.close()
    assert not a.connected and a.store == {"n": 0, "o": {}, "l": [1]}
    o, l = a.store.o, a.store.l
    for write in (
        lambda: setattr(a.store, "n", 5),
        lambda: a.store.__setitem__("n", 5),
        lambda: o.update(x=1),
        lambda: o.clear(),
        lambda: l.append(2),
        lambda: l.sort(),
        lambda: l.remove(1),
        lambda: setattr(a, "store", {}),
        lambda: a.update(lambda d: d),
        lambda: a.request(o),
        lambda: a.lock(o),
        lambda: a.lock(o, timeout=1),
        lambda: a.flush(),
        a.sync,
    ):
        with pytest.raises(facsimile.ClosedError):
            write()
    a.close()  # again: nothing to do
    a.abort()
    assert a.store == {"n": 0, "o": {}, "l": [1]} and len(l) == 1
    assert b.store == {"n": 0, "o": {}, "l": [1]}
    b.abort()
    assert not b.connected
    with pytest.raises(facsimile.ClosedError):
        b.store.n = 1


def test_a_flush_timeout_is_a_timeout_error(relay):
    a = facsimile.connect(relay.addr, "alpha", doc="timeout")
    a.store = {"n": 0}
    a.flush()
    with frozen(relay):
        a.store.n = 1
        with pytest.raises(TimeoutError) as e:
            a.flush(timeout=0.2)
    assert type(e.value) is facsimile.NetTimeoutError
    a.flush(timeout=float("inf"))  # no timeout
    b = facsimile.connect(relay.addr, "bravo", doc="timeout", timeout=float("inf"))
    b.close(timeout=float("inf"))
    a.close()
    with pytest.raises(ConnectionError) as e:
        a.store.n = 2
    assert type(e.value) is facsimile.ClosedError


EXITING_CHILD = """
import sys, threading, facsimile
node = facsimile.connect(sys.argv[1], sys.argv[2], doc="exit")
heard = threading.Event()
count = [0]

def listener(change):
    count[0] += 1
    if count[0] >= 100:
        heard.set()

node.on("change", listener)

def write():
    i = 0
    while True:
        node.store["mine"] = i
        i += 1

threading.Thread(target=write, daemon=True).start()
assert heard.wait(30)
# Exits with the node connected, its writer and the I/O thread busy.
"""


def test_an_interpreter_exits_cleanly_with_a_node_connected_and_busy(relay):
    w = facsimile.connect(relay.addr, "writer", doc="exit")
    w.store = {"n": 0}
    w.flush()
    stop = threading.Event()

    def write():
        i = 0
        while not stop.is_set():
            w.store["n"] = i
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        # Probabilistic: the child exits while this process's writes keep
        # arriving on its I/O thread (which runs its listener for each)
        # and its own thread writes (running the listener too), so that
        # some callback is due as the interpreter finalizes; before the
        # fix, about one run in three printed a panic or aborted.
        for i in range(8):
            child = python_child(EXITING_CHILD, relay.addr, f"child{i}")
            out, err = child.communicate(timeout=60)
            assert "panicked" not in err and child.returncode == 0, (child.returncode, err[-2000:])
    finally:
        stop.set()
        writer.join()
        w.close()


# The hooks of these children are registered before `import facsimile`
# (imported inside functions), so they run after the package's own.
FLUSHING_HOOK_CHILD = """
import asyncio, atexit, sys
nodes = []

async def flush(node):
    await node.flush_async()

def last_words():
    node = nodes[0]
    node.store["last"] = "words"
    asyncio.run(flush(node))
    print("flushed", flush=True)

atexit.register(last_words)

def main():
    import facsimile
    nodes.append(facsimile.connect(sys.argv[1], sys.argv[2], doc="hooks"))
    nodes[0].store = {"first": 1}
    nodes[0].flush()

main()
"""


def test_an_atexit_hook_registered_before_import_still_flushes(relay):
    reader = facsimile.connect(relay.addr, "reader", doc="hooks")
    child = python_child(FLUSHING_HOOK_CHILD, relay.addr, "leaving")
    try:
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0 and "flushed" in out, (child.returncode, err[-2000:])
    until(reader, lambda: reader.store is not None and reader.store.get("last") == "words")
    reader.close()


SENDING_HOOK_CHILD = """
import atexit, sys
nodes = []

def last_words():
    nodes[0].store["last"] = "words"

atexit.register(last_words)

def main():
    import facsimile
    node = facsimile.Facsimile("leaving")
    node.send = lambda data: print(data.hex(), flush=True)
    node.store = {"first": 1}
    node.on("change", lambda change: print("heard", change.key, file=sys.stderr))
    nodes.append(node)

main()
"""


def test_an_atexit_hook_registered_before_import_still_sends():
    child = python_child(SENDING_HOOK_CHILD)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, (child.returncode, err[-2000:])
    # The thread that runs the hooks hears its own writes too.
    assert "heard last" in err, err[-2000:]
    peer = facsimile.Facsimile("peer")
    for line in out.split():
        peer.receive(bytes.fromhex(line))
    assert peer.store == {"first": 1, "last": "words"}


SENDING_THREAD_CHILD = """
import socket, sys, threading, facsimile
a, b = socket.socketpair()

def drain():
    while b.recv(65536):
        pass

threading.Thread(target=drain, daemon=True).start()
node = facsimile.Facsimile("busy")
node.send = a.sendall  # releases the GIL while it sends
node.store = {"n": 0}
going = threading.Event()

def write():
    i = 0
    while True:
        node.store["n"] = i
        i += 1
        if i == 1000:
            going.set()

threading.Thread(target=write, daemon=True).start()
assert going.wait(30)
# Exits with a daemon thread inside its sends.
"""


def test_an_interpreter_exits_cleanly_with_a_thread_sending_through_its_transport():
    # Probabilistic as the test above: sends allowed on every thread until
    # the interpreter finalizes aborted about one exit in seven.
    for _ in range(12):
        child = python_child(SENDING_THREAD_CHILD)
        out, err = child.communicate(timeout=60)
        assert "panicked" not in err and child.returncode == 0, (child.returncode, err[-2000:])


LONG_LISTENER_CHILD = """
import atexit, sys, time
exited = []
# Runs after the package's hook: measures how long that one waited.
atexit.register(lambda: print("waited", time.monotonic() - exited[0], flush=True))

def main():
    import threading, facsimile
    node = facsimile.Facsimile("long")
    node.send = lambda data: None
    node.store = {"n": 0}
    inside = threading.Event()

    def listener(change):
        inside.set()
        threading.Event().wait()  # never returns

    node.on("change", listener)
    threading.Thread(target=lambda: node.store.__setitem__("n", 1), daemon=True).start()
    assert inside.wait(30)
    exited.append(time.monotonic())

main()
"""


def test_an_exit_does_not_wait_long_for_a_listener_that_never_returns():
    child = python_child(LONG_LISTENER_CHILD)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, (child.returncode, err[-2000:])
    waited = float(out.split()[1])
    assert waited < 1.0, waited
