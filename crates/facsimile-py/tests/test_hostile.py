"""Hostile bytes given to receive raise ReceiveError and change nothing;
the node keeps working."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import facsimile
from conftest import Net


def setup():
    net = Net("alpha", "bravo")
    a, b = net
    a.store = {"items": [1, 2, {"k": "v"}], "n": 1}
    captured = []
    a.send = lambda data: (captured.append(data), b.receive(data))
    a.store.n = 2
    a.store["items"].append(3)
    return net, captured


def check_unchanged(net, before):
    a, b = net
    assert b.snapshot() == before
    a.store.n = 99  # still mirrors
    assert b.store.n == 99


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(data):
    net, _ = setup()
    before = net[1].snapshot()
    try:
        net[1].receive(data)
    except facsimile.ReceiveError:
        pass
    check_unchanged(net, before)


def test_mutated_messages():
    rng = random.Random(1)
    net, captured = setup()
    b = net[1]
    refused = 0
    for seed in range(400):
        msg = bytearray(rng.choice(captured))
        kind = seed % 4
        if kind == 0:
            msg = msg[: rng.randrange(len(msg))]
        elif kind == 1:
            msg[rng.randrange(len(msg))] ^= 1 << rng.randrange(8)
        elif kind == 2:
            msg += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 20)))
        else:
            msg = bytes([msg[0]]) + bytes(rng.randrange(256) for _ in range(len(msg)))
        before = b.snapshot()
        try:
            b.receive(bytes(msg))
        except facsimile.ReceiveError:
            refused += 1
            assert b.snapshot() == before, seed
    assert refused > 100
    check_unchanged(net, b.snapshot())


@pytest.mark.parametrize(
    "data, match",
    [(b"", "empty"), (b"\x09rest", "version"), (b"\x01" + b"\xff" * 64, "malformed|invalid")],
)
def test_typed_refusals(data, match):
    net, _ = setup()
    before = net[1].snapshot()
    with pytest.raises(facsimile.ReceiveError, match=match):
        net[1].receive(data)
    check_unchanged(net, before)


def test_not_bytes():
    net, captured = setup()
    for data in (12, "text", [1, 2], None):
        with pytest.raises(TypeError, match="a message is bytes"):
            net[1].receive(data)
    net[1].receive(bytearray(captured[-1]))  # a bytes-like object is a message
    net[1].receive(memoryview(captured[-1]))
    with pytest.raises(TypeError, match="callable"):
        net[0].send = 5


def test_a_write_larger_than_max_message_raises_and_changes_nothing():
    net = Net("alpha", "bravo", max_message=4096)
    a, b = net
    a.store = {"n": 0, "items": []}
    sent, before = net.sent, a.snapshot()
    with pytest.raises(facsimile.TooLargeError, match="4096 bytes"):
        a.store.s = "x" * 5000
    with pytest.raises(facsimile.TooLargeError):
        a.store["items"].append({"deep": [b"y" * 5000]})
    assert net.sent == sent and a.snapshot() == before
    a.store.s = "x" * 3000  # what fits goes through
    assert b.store.s == "x" * 3000 and b.snapshot() == a.snapshot()


def test_a_method_too_large_for_one_message_changes_nothing():
    # Each method is one message: all of it, or (TooLargeError) none of it,
    # here and on the peer.
    net = Net("alpha", "bravo", max_message=2000)
    a, b = net
    a.store = {"l": [], "m": {}}
    m, l = a.store.m, a.store.l
    for i in range(60):
        m[f"key-{i:03}-" + "x" * 10] = i
    for i in range(30):
        l.extend(range(10))
    calls = {
        "m.clear()": m.clear,
        "m.update()": lambda: m.update({f"k{i}": "v" * 50 for i in range(100)}),
        "del l[::2]": lambda: l.__delitem__(slice(None, None, 2)),
        "del l[1::3]": lambda: l.__delitem__(slice(1, None, 3)),
        "l[::2] = ...": lambda: l.__setitem__(slice(None, None, 2), ["y" * 20] * 150),
        "l.extend()": lambda: l.extend(["z" * 30] * 100),
        "l.sort()": lambda: l.sort(key=lambda v: -v),
        "l.reverse()": l.reverse,
    }
    for name, call in calls.items():
        sent, before = net.sent, a.snapshot()
        try:
            call()
        except facsimile.TooLargeError:
            assert net.sent == sent and a.snapshot() == before == b.snapshot(), name
        else:
            assert net.sent == sent + 1 and a.snapshot() == b.snapshot(), name
    assert len(m) == 60 and b.store.m == m
    # What fits goes through, as one message.
    n, sent = len(l), net.sent
    del l[:10:2]
    for k in list(m)[:50]:
        del m[k]
    m.clear()
    assert len(l) == n - 5 and net.sent == sent + 52
    assert len(m) == 0 and b.store.m == {} and b.snapshot() == a.snapshot()


def test_a_hostname_longer_than_peers_accept_is_a_value_error():
    longest = "h" * 1024
    facsimile.Facsimile(longest)
    with pytest.raises(ValueError, match="at most 1024 bytes"):
        facsimile.Facsimile(longest + "h")
    with pytest.raises(ValueError, match="at most 1024 bytes"):
        facsimile.connect("127.0.0.1:1", longest + "h")


def test_a_document_nested_deeper_than_a_copy_goes_raises_recursion_error():
    # Another node may nest objects one write at a time, as deep as it
    # likes: a deep copy here raises RecursionError rather than overflow
    # the stack and end the process.
    a, b = Net("alpha", "bravo")
    a.store = {}
    m = a.store
    for _ in range(200_000):
        m["c"] = {}
        m = m["c"]
    with pytest.raises(RecursionError):
        b.store.to_python()
    shallow = b.store
    for _ in range(199_990):
        shallow = shallow["c"]
    assert shallow.to_python() == {"c": {"c": {"c": {"c": {"c": {"c": {"c": {"c": {"c": {"c": {}}}}}}}}}}}
