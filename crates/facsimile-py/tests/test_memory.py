"""Reference cycles between proxies and callbacks are collected, and a
dropped node frees its engine state."""

import gc
import time
import weakref

import facsimile
from conftest import Net


def test_cycles_through_listeners_and_senders_are_collected():
    gc.collect()
    before = facsimile._engines_alive()
    net = Net("alpha", "bravo")
    a, b = net
    a.store = {"l": [1], "m": {}}
    store = b.store
    # Listeners that close over proxies of their own node (and the node).
    store.on(lambda c: (store, b))
    store.l.on(lambda c: store.l.append(0) if False else None)
    b.on("change", lambda c: (c.target, b))
    a.store.m.self = a.store.m
    guard = a.lock(a.store.m)
    holder = {"guard": guard}
    a.store.m.on(lambda c: holder)
    refs = [weakref.ref(x) for x in (a, b, store, guard)]
    assert facsimile._engines_alive() == before + 2
    del a, b, store, guard, holder, net
    gc.collect()
    assert [r() for r in refs] == [None] * 4
    assert facsimile._engines_alive() == before


def test_dropped_node_frees_memory():
    def rss_kb():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4

    def round_trip():
        net = Net("alpha", "bravo")
        net[0].store = {"rows": [{"i": i, "s": "x" * 50} for i in range(5000)]}
        assert len(net[1].store.rows) == 5000
        net[1].store.on(lambda c: net)

    gc.collect()
    base = facsimile._engines_alive()
    for _ in range(3):  # warm up the allocators
        round_trip()
        gc.collect()
    start = rss_kb()
    for _ in range(15):
        round_trip()
        gc.collect()
        assert facsimile._engines_alive() == base
    grown = rss_kb() - start
    # One round holds two replicas of 5,000 maps (several MB); fifteen
    # rounds kept alive would hold far more than this.
    assert grown < 8_000, f"resident memory grew by {grown} KB over 15 dropped pairs"


def test_listeners_of_reclaimed_objects_are_freed():
    net = Net("alpha", "bravo")
    a, b = net
    a.store = {"k": {}}

    heard = []

    class Callback:
        def __call__(self, change):
            heard.append(change.key)

    refs = []
    for i in range(200):
        a.store.k = {"i": i}  # the previous map becomes unreachable
        callback = Callback()
        refs.append(weakref.ref(callback))
        b.store.k.on(callback)
        b.store.k.on("i", callback)
    del callback

    def alive():
        gc.collect()
        return [r for r in refs if r() is not None]

    # Reclamation runs on the nodes' timers (a pass a second) once both
    # have acknowledged what the other sent: nothing signals it, so this
    # polls, ticking both nodes, for at most 30 seconds.
    deadline = time.monotonic() + 30
    while len(alive()) > 1 and time.monotonic() < deadline:
        a.tick()
        b.tick()
        time.sleep(0.05)
    # Only the listeners of the map still in the store are left.
    assert alive() == [refs[-1]]
    heard.clear()
    a.store.k.i = 7
    assert heard == ["i", "i"]  # and they still hear its changes
