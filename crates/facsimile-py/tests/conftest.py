"""Shared helpers: in-process networks of nodes, the relay and the Rust
stdio peer as subprocesses (binaries from the workspace's target/)."""

import collections
import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import threading

import pytest

import facsimile

ROOT = pathlib.Path(__file__).resolve().parents[3]
TARGET = pathlib.Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))


def binary(env, *parts):
    """A workspace binary: from `env` when set, else under target/release."""
    path = pathlib.Path(os.environ.get(env) or TARGET.joinpath("release", *parts))
    if not path.exists():
        pytest.fail(f"{path} is missing: build it (scripts/test.sh does) or set {env}")
    return str(path)


class Net:
    """Nodes joined by one in-process broadcast: every message reaches every
    other node in its sender's order. With `auto` a send is delivered before
    the writing call returns (as the seed's synchronous example); without,
    messages wait until `run()` or `step()`."""

    def __init__(self, *names, auto=True, **options):
        self.queue = collections.deque()
        self.auto = auto
        self.delivering = False
        self.nodes = []
        self.sent = 0
        for name in names:
            self.add(name, **options)

    def add(self, name, **options):
        node = facsimile.Facsimile(name, **options)
        index = len(self.nodes)
        self.nodes.append(node)
        node.send = lambda data, i=index: self._send(i, data)
        return node

    def _send(self, index, data):
        assert isinstance(data, bytes)
        self.sent += 1
        self.queue.append((index, data))
        if self.auto and not self.delivering:
            self.run()

    def step(self):
        index, data = self.queue.popleft()
        for j, node in enumerate(self.nodes):
            if j != index:
                node.receive(data)

    def run(self):
        self.delivering = True
        try:
            while self.queue:
                self.step()
        finally:
            self.delivering = False

    def __getitem__(self, i):
        return self.nodes[i]


@pytest.fixture
def pair():
    net = Net("alpha", "bravo")
    return net[0], net[1]


class Relay:
    """`facsimile serve` on a free loopback port, without a data directory."""

    def __init__(self, *args):
        self.proc = subprocess.Popen(
            [binary("FACSIMILE_BIN", "facsimile"), "serve", "--listen", "127.0.0.1:0", "--ephemeral", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"the relay did not start: {line!r}")
        self.addr = line.rsplit(" ", 1)[1].strip()

    def stop(self):
        self.proc.kill()
        self.proc.wait(timeout=10)


@pytest.fixture
def relay():
    r = Relay()
    yield r
    r.stop()


class StdioPeer:
    """A node of another language whose transport is its standard input and
    output, one JSON object a line (binary messages as hex)."""

    def __init__(self, argv):
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def command(self, cmd):
        """Runs one command; returns the messages the node sent and its
        snapshot when one was asked for."""
        import json

        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        sent, snapshot = [], None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("the Rust peer exited")
            out = json.loads(line)
            if "msg_hex" in out:
                sent.append(bytes.fromhex(out["msg_hex"]))
            elif "snapshot" in out:
                snapshot = bytes.fromhex(out["snapshot"])
            elif "done" in out:
                return sent, snapshot
            elif "error" in out:
                raise RuntimeError(out["error"])

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def rust_peer(hostname):
    """The workspace's `stdio_peer` example: a Rust `facsimile::Node`."""
    return StdioPeer([binary("FACSIMILE_STDIO_PEER", "examples", "stdio_peer"), hostname, "binary"])


def js_peer(hostname):
    """A node of the JavaScript package (js/, built by `npm run build`)."""
    js = ROOT / "js"
    if not (js / "dist" / "index.cjs").exists():
        pytest.fail("js/dist is missing: build the JavaScript package (cd js && npm ci && npm run build)")
    return StdioPeer(["node", str(pathlib.Path(__file__).with_name("js_peer.cjs")), hostname, str(js)])


def python_child(code, *args):
    """A Python child process running `code` with this interpreter."""
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


class Interrupted(Exception):
    """What the test's SIGINT handler raises (KeyboardInterrupt would end
    the test session if a wait ignored the signal)."""


@contextlib.contextmanager
def sigint_after(seconds, raising=Interrupted):
    """Sends this process SIGINT after `seconds`; its handler raises
    `raising` (Interrupted unless told), in the main thread, when Python
    code or a wait checks for signals."""
    previous = signal.signal(signal.SIGINT, lambda *_: (_ for _ in ()).throw(raising()))
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
