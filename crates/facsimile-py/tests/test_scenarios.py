"""The specification's conformance scenarios (SPEC §6, 1 to 14), through
the Python API, two nodes unless stated."""

import asyncio
import threading
import time
import types

import pytest

import facsimile
from conftest import Interrupted, Net, sigint_after


def test_1_no_transport_refuses_writes():
    node = facsimile.Facsimile("alone")
    with pytest.raises(facsimile.NoTransportError, match="no transport"):
        node.store = {"a": 1}
    assert node.store is None


def test_2_root_number(pair):
    a, b = pair
    a.store = 3
    assert b.store == 3
    a.store = 2.5
    assert b.store == 2.5 and isinstance(b.store, float)


def test_3_root_map_array_nested(pair):
    a, b = pair
    a.store = {"x": 1}
    assert isinstance(b.store, facsimile.Map) and b.store == {"x": 1}
    a.store = [1, 2]
    assert isinstance(b.store, facsimile.List) and b.store == [1, 2]
    a.store = {"m": {"n": [1, {"deep": [True, None, b"\x00"]}]}}
    assert b.store.to_python() == {"m": {"n": [1, {"deep": [True, None, b"\x00"]}]}}
    assert b.store.m.n[1].deep[2] == b"\x00"


def test_4_self_reference_arrives_as_cycle(pair):
    a, b = pair
    a.store = {"name": "loop"}
    a.store.me = a.store
    assert b.store.me is b.store
    assert b.store.me.me.me.name == "loop"


@pytest.mark.parametrize("late_writes", [False, True])
def test_5_late_joiner_syncs(late_writes):
    net = Net("host", "guest")
    host = net[0]
    host.store = {"elements": [1, 2, 3], "shared": {"k": "v"}}
    host.store.other = host.store.shared
    late = net.add("late")
    ready = []
    late.on("ready", ready.append)
    late.sync()
    assert len(ready) == 1 and late.ready
    assert late.store.to_python() == host.store.to_python()
    assert late.store.other is late.store.shared
    if late_writes:
        late.store.elements.append(4)
        assert host.store.elements == [1, 2, 3, 4]
    assert late.snapshot() == host.snapshot() == net[1].snapshot()


def test_6_set_delete_add(pair):
    a, b = pair
    a.store = {"a": 1, "b": 2}
    a.store.a = 10
    del a.store["b"]
    a.store["c"] = [1]
    assert b.store == {"a": 10, "c": [1]}
    assert a.snapshot() == b.snapshot()


def test_7_concurrent_same_key_higher_hostname_wins():
    net = Net("alpha", "bravo", auto=False)
    a, b = net
    a.store = {"k": 0}
    net.run()
    a.store.k = "from alpha"
    b.store.k = "from bravo"
    net.run()
    assert a.store.k == b.store.k == "from bravo"


def test_8_assign_several_keys_arrives_whole():
    net = Net("alpha", "bravo")
    a, b = net
    a.store = {}
    sent = net.sent
    seen = []
    b.on("change", lambda c: seen.append(dict(b.store)))
    a.store.update({"x": 1, "y": 2}, z=3)
    assert net.sent == sent + 1
    # Every event fires after the whole message is applied.
    assert seen == [{"x": 1, "y": 2, "z": 3}] * 3


def test_9_array_methods_unlocked_and_locked(pair):
    a, b = pair
    a.store = {"l": [1, 2, 3]}
    a.store.l.append(4)
    assert a.store.l.pop() == 4
    assert b.store.l == [1, 2, 3]
    with a.lock(a.store.l):
        a.store.l.append(0)
        assert a.store.l.pop() == 0
        a.store.l.reverse()
        a.store.l.append(5)
        a.store.l.sort()
    assert b.store.l == [1, 2, 3, 5]
    assert a.snapshot() == b.snapshot()


def test_10_root_changed_fires_in_order_on_both(pair):
    a, b = pair
    seen_a, seen_b = [], []
    a.on("root_changed", seen_a.append)
    b.on("root_changed", seen_b.append)
    a.store = 1
    b.store = "two"
    a.store = [3]
    assert seen_a[:2] == seen_b[:2] == [1, "two"]
    assert seen_a[2] is a.store and seen_b[2] is b.store and b.store == [3]


def test_11_ready_after_sync_of_nested_arrays():
    net = Net("host")
    net[0].store = [[1, 2], [3, [4]]]
    late = net.add("late")
    ready = []
    late.on("ready", lambda store: ready.append(store.to_python()))
    late.sync()
    assert ready == [[[1, 2], [3, [4]]]]


def test_12_events_exactly_once(pair):
    a, b = pair
    a.store = {"x": 0, "y": 0}
    logs = {n.hostname: {"global": [], "object": [], "x": []} for n in (a, b)}
    for node in (a, b):
        log = logs[node.hostname]
        node.on("change", lambda c, log=log: log["global"].append((c.target, c.key, c.new, c.old)))
        node.store.on(lambda c, log=log: log["object"].append((c.key, c.new)))
        node.store.on("x", lambda c, log=log: log["x"].append((c.key, c.new, c.old)))
    a.store.x = 1
    a.store.x = 1  # no-op: nothing fires
    del a.store["y"]
    for node in (a, b):
        log = logs[node.hostname]
        assert [(t is node.store, k, n, o) for t, k, n, o in log["global"]] == [
            (True, "x", 1, 0),
            (True, "y", None, 0),
        ]
        assert log["object"] == [("x", 1), ("y", None)]
        assert log["x"] == [("x", 1, 0)]
    # Removed listeners never fire.
    for node in (a, b):
        assert node.store.off("x")
        assert node.store.off()
        assert node.off("change")
    a.store.x = 2
    assert all(len(logs[n.hostname]["x"]) == 1 for n in (a, b))
    assert all(len(logs[n.hostname]["global"]) == 2 for n in (a, b))


def test_12_off_by_callback(pair):
    a, b = pair
    a.store = {"x": 0}
    calls = []

    def listener(change):
        calls.append(change.new)

    b.store.on("x", listener)
    a.store.x = 1
    assert b.store.off("x", listener)
    assert not b.store.off("x", listener)
    a.store.x = 2
    assert calls == [1]


def test_13_lock_rules(pair):
    a, b = pair
    a.store = {"m": {"v": 0}, "l": [1]}
    guard = a.lock(a.store.m)
    assert guard.held and guard.token > 0
    a.store.m.v = 1
    assert b.store.m.v == 1
    with pytest.raises(facsimile.LockedError):
        b.request(b.store.m)
    with pytest.raises(facsimile.NotOwnerError, match="Object is not owned by current host"):
        b.store.m.v = 2
    with pytest.raises(facsimile.NotOwnerError):
        b.release(b.store.m)
    guard.release()
    assert not guard.held
    with pytest.raises(facsimile.NotLockedError):
        a.release(a.store.m)
    with a.lock(a.store.l) as g:
        assert g.object is a.store.l
        with pytest.raises(facsimile.LockedError):
            b.store.l.append(2)
        # Item assignment is a write, refused as in JavaScript.
        with pytest.raises(facsimile.NotOwnerError):
            b.store.l[0] = 5
    b.store.l.append(2)
    assert a.store.l == [1, 2]


def test_release_leaves_a_waiting_lock_waiting_and_cancelling_withdraws_it(pair):
    a, b = pair
    a.store = {"m": {}}

    async def main():
        held = a.lock(a.store.m)
        waiting = asyncio.ensure_future(b.lock_async(b.store.m))
        await asyncio.sleep(0)  # the task makes its request
        with pytest.raises(facsimile.NotOwnerError):
            b.release(b.store.m)
        held.release()
        guard = await waiting
        assert guard.held
        guard.release()

        held = a.lock(a.store.m)
        cancelled = asyncio.ensure_future(b.lock_async(b.store.m))
        await asyncio.sleep(0)
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        held.release()
        # b's request was withdrawn: nobody is ahead of a's.
        a.request(a.store.m).release()

    asyncio.run(main())


def test_an_infinite_timeout_is_no_timeout(pair):
    a, b = pair
    a.store = {"m": {}}
    with a.lock(a.store.m, timeout=float("inf")):
        pass
    guard = a.lock(a.store.m)
    threading.Timer(0.3, guard.release).start()
    with b.lock(b.store.m, timeout=float("inf")) as got:
        assert got.token > guard.token
    with b.lock(b.store.m, timeout=1e300):  # longer than a clock can count
        pass
    with pytest.raises(ValueError):
        a.lock(a.store.m, timeout=-1)


def test_a_lock_excludes_the_node_s_other_threads_and_this_one(pair):
    a, b = pair
    a.store = {"stock": {"n": 40}}
    stock = a.store.stock

    def buy():
        for _ in range(10):
            with a.lock(stock):
                n = stock.n
                time.sleep(0)  # another thread runs here if it may
                stock.n = n - 1

    threads = [threading.Thread(target=buy) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stock.n == 0 and b.store.stock.n == 0, "no purchase lost"

    with a.lock(stock) as outer:
        # The guard holds it alone, against this thread too (as
        # threading.Lock does): a second lock waits, here until its timeout.
        with pytest.raises(facsimile.LockTimeoutError):
            a.lock(stock, timeout=0.2)
        with pytest.raises(facsimile.LockedError, match="another task of this node"):
            a.request(stock)
        assert outer.held
    with a.lock(stock):  # released by the block: free again
        pass


def test_a_lock_that_times_out_withdraws_its_request(pair):
    a, b = pair
    a.store = {"m": {}}
    held = a.lock(a.store.m)
    with pytest.raises(TimeoutError):
        b.lock(b.store.m, timeout=0.05)
    held.release()
    # b's request was withdrawn: it holds nothing, and nobody is ahead of a.
    assert b.lock_token(b.store.m) is None
    a.request(a.store.m).release()


def test_ctrl_c_interrupts_a_lock_wait_and_withdraws_it(pair):
    a, b = pair
    a.store = {"o": {}}
    guard = a.lock(a.store.o)
    watchdog = threading.Timer(8, guard.release)  # the wait ends anyway
    watchdog.start()
    try:
        start = time.monotonic()
        with pytest.raises(Interrupted), sigint_after(0.3):
            b.lock(b.store.o)
        assert time.monotonic() - start < 3
    finally:
        watchdog.cancel()
    assert b.lock_token(b.store.o) is None
    guard.release()
    with a.request(a.store.o):  # nobody waits for it
        pass


def test_a_peer_reported_gone_loses_its_lock_everywhere():
    # No failure detection: only the transport's report frees the lock.
    net = Net("a", "b", "c")
    a, b, c = net
    a.store = {"m": {"x": 0}}
    dead = b.lock(b.store.m)
    # b's process dies holding the lock: it neither sends nor receives.
    b.send = lambda data: None
    net.nodes[1] = types.SimpleNamespace(receive=lambda data: None)
    with pytest.raises(facsimile.LockedError):
        a.request(a.store.m)
    assert a.evict("nobody") == 0
    assert a.evict("a") == 0
    assert a.evict("b") == 1
    guard = a.request(a.store.m)
    assert guard.held and guard.token > dead.token
    a.store.m.x = 2
    with pytest.raises(facsimile.NotOwnerError):
        c.store.m.x = 3
    assert "b" not in a.peers and "b" not in c.peers
    guard.release()
    c.store.m.x = 3
    assert a.snapshot() == c.snapshot()


def test_14_concurrent_locks_higher_hostname_first():
    net = Net("alpha", "bravo", auto=False)
    a, b = net
    a.store = {"log": []}
    net.run()
    order = []

    async def contend(node):
        async with node.lock_async(node.store) as guard:
            order.append((node.hostname, guard.token))
            node.store.log = list(node.store.log) + [node.hostname]

    async def main():
        tasks = [asyncio.ensure_future(contend(n)) for n in (a, b)]
        while not all(t.done() for t in tasks):
            await asyncio.sleep(0)
            net.run()
        for t in tasks:
            t.result()

    asyncio.run(main())
    net.run()
    assert [h for h, _ in order] == ["bravo", "alpha"]
    assert order[1][1] > order[0][1]
    assert a.store.log == b.store.log == ["bravo", "alpha"]


def test_an_observer_that_stalls_holds_up_no_lock():
    net = Net("alpha", "bravo")
    a, b = net
    a.store = {"m": {"x": 0}}
    o = net.add("obs", observer=True)
    m = net.add("member")
    o.sync()
    m.sync()
    assert o.store.m.x == 0
    with pytest.raises(facsimile.ReadOnlyError):
        o.store.m.x = 1
    with pytest.raises(PermissionError):  # its builtin family
        o.lock(o.store.m, timeout=1)

    class Stalled:
        def receive(self, data):
            pass

    net.nodes[2] = Stalled()  # the observer neither hears nor answers
    with a.lock(a.store.m, timeout=5) as guard:
        assert guard.token > 0
    net.nodes[3] = Stalled()  # a member that stalls holds the next grant up
    with pytest.raises(facsimile.LockTimeoutError):
        b.lock(b.store.m, timeout=0.2)


def test_a_node_that_left_frees_its_locks_and_raises_closed_error(pair):
    a, b = pair
    a.store = {"k": 0}
    guard = a.lock(a.store)
    a.leave()
    assert not guard.held
    with pytest.raises(facsimile.ClosedError):
        a.store.k = 1
    with pytest.raises(facsimile.ClosedError):
        a.lock(a.store)
    with b.lock(b.store):
        b.store.k = 2
    assert a.store == {"k": 0} and b.store == {"k": 2}


def test_close_of_a_node_wired_by_hand_leaves_the_document(pair):
    a, b = pair
    a.store = {"k": 0}
    guard = a.lock(a.store)
    a.close()
    assert not guard.held and not a.connected
    with pytest.raises(facsimile.ClosedError):
        a.store.k = 1
    with pytest.raises(facsimile.ClosedError):
        a.leave()
    with b.lock(b.store, timeout=10):  # the goodbye freed a's lock
        b.store.k = 2
    a.close()  # again: nothing to do
    a.abort()
    assert a.store == {"k": 0} and b.store == {"k": 2}


def test_abort_of_a_node_wired_by_hand_stops_it_without_a_goodbye():
    net = Net("alpha", "bravo")
    a, b = net
    a.store = {"k": 0}
    sent = net.sent
    a.abort()
    assert net.sent == sent and a.send is None  # no goodbye, as a crash
    assert b.peers == ["alpha"]
    with pytest.raises(facsimile.ClosedError):
        a.store.k = 1
    b.store.k = 2
    assert a.store == {"k": 0}  # what it receives is ignored
    b.evict("alpha")  # what its transport would say of a dead peer
    with b.lock(b.store, timeout=10):
        b.store.k = 3
    a.close()
    assert a.store == {"k": 0}
