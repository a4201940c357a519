"""Convergence under random operations and interleavings: 3 to 5 Python
nodes and one Rust node (the workspace's stdio_peer example), and in a
second test a JavaScript node of the js/ package as well, write at
random while messages are delivered in random orders (each sender's order
kept per link); once everything is delivered, every node's snapshot is
byte for byte the same. Hypothesis prints the failing example and the blob
that reproduces it (`@reproduce_failure`)."""

import collections

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import facsimile
from conftest import js_peer, rust_peer

RUST = "rust"
JS = "js"


class Mesh:
    """Python nodes and nodes of other languages; one FIFO queue per
    directed link."""

    def __init__(self, names, peers):
        self.names = list(names) + list(peers)
        self.nodes = {}
        self.peers = peers
        self.links = collections.OrderedDict(
            ((s, r), collections.deque()) for s in self.names for r in self.names if s != r
        )
        for name in names:
            node = facsimile.Facsimile(name)
            node.send = lambda data, s=name: self.broadcast(s, data)
            self.nodes[name] = node

    def broadcast(self, sender, data):
        for r in self.names:
            if r != sender:
                self.links[(sender, r)].append(data)

    def peer_command(self, name, cmd):
        sent, snapshot = self.peers[name].command(cmd)
        for data in sent:
            self.broadcast(name, data)
        return snapshot

    def deliver(self, choice):
        busy = [k for k, q in self.links.items() if q]
        if not busy:
            return False
        s, r = busy[choice % len(busy)]
        data = self.links[(s, r)].popleft()
        if r in self.peers:
            self.peer_command(r, {"recv_hex": data.hex()})
        else:
            self.nodes[r].receive(data)
        return True

    def settle(self):
        while self.deliver(0):
            pass


def write(node, op, key, value, index):
    store = node.store
    items = store.get("items")
    if op == 0:
        store[key] = value
    elif op == 1:
        store[key] = {"n": value, "l": [value]}
    elif op == 2:
        store.pop(key, None)
    elif items is None:
        store["items"] = []
    elif op == 3:
        items.append(value)
    elif op == 4:
        items.insert(index % (len(items) + 1), value)
    elif op == 5 and len(items):
        items.pop(index % len(items))
    elif op == 6:
        items.sort(key=repr, reverse=bool(value % 2))
    elif op == 7:
        items.reverse()
    elif op == 8 and len(items):
        items[index % len(items)] = value
    elif op == 9:
        items[index % (len(items) + 1) :] = [value, "s"]
    else:
        store["items"] = [value]


actions = st.lists(
    st.one_of(
        st.tuples(st.just("write"), st.integers(0, 4), st.integers(0, 10), st.sampled_from("abcd"),
                  st.integers(0, 99), st.integers(0, 20)),
        st.tuples(st.just("peer"), st.integers(0, 2**32), st.integers(1, 4)),
        st.tuples(st.just("deliver"), st.integers(0, 1000)),
        st.tuples(st.just("burst"), st.integers(0, 1000), st.integers(1, 30)),
    ),
    max_size=80,
)


def run(n, steps, peers):
    try:
        mesh = Mesh([f"py{i}" for i in range(n)], peers)
        first = mesh.nodes["py0"]
        first.store = {"items": [1, 2, 3], "a": 0}
        mesh.settle()
        others = sorted(peers)
        for step in steps:
            if step[0] == "write":
                _, who, op, key, value, index = step
                node = mesh.nodes[f"py{who % n}"]
                write(node, op, key, value, index)
            elif step[0] == "peer":
                name = others[step[1] % len(others)]
                mesh.peer_command(name, {"do": "random", "seed": step[1], "ops": step[2]})
            elif step[0] == "deliver":
                mesh.deliver(step[1])
            else:
                for k in range(step[2]):
                    mesh.deliver(step[1] + k)
        mesh.settle()
        snapshots = {name: node.snapshot() for name, node in mesh.nodes.items()}
        for name in peers:
            snapshots[name] = mesh.peer_command(name, {"do": "snapshot"})
        reference = snapshots["py0"]
        assert all(s == reference for s in snapshots.values()), {k: v.hex()[:80] for k, v in snapshots.items()}
        stores = [node.store.to_python() for node in mesh.nodes.values()]
        assert all(s == stores[0] for s in stores)
    finally:
        for p in peers.values():
            p.close()


@settings(max_examples=200, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(3, 5), actions)
def test_python_and_rust_nodes_converge(n, steps):
    run(n, steps, {RUST: rust_peer(RUST)})


@settings(max_examples=60, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(3, 4), actions)
def test_python_rust_and_javascript_nodes_converge(n, steps):
    """The JavaScript package's node mirrors the same document: its
    messages are the Rust engine's, byte for byte compatible."""
    run(n, steps, {RUST: rust_peer(RUST), JS: js_peer(JS)})
