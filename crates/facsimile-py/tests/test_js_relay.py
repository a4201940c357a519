"""A Python node and a JavaScript node of the js/ package on one relay:
the Python node over TCP, the JavaScript node over a WebSocket on the
relay's port. They mirror one document, contend for one lock and end with
byte-identical snapshots."""

import json
import queue
import subprocess
import threading

import pytest

import facsimile
from conftest import ROOT
from test_relay import until


class JsNode:
    def __init__(self, relay, hostname, doc):
        js = ROOT / "js"
        if not (js / "dist" / "index.cjs").exists():
            pytest.fail("js/dist is missing: build the JavaScript package (cd js && npm ci && npm run build)")
        script = ROOT / "crates" / "facsimile-py" / "tests" / "js_relay_peer.cjs"
        self.proc = subprocess.Popen(
            ["node", str(script), f"ws://{relay.addr}/", hostname, doc, str(js)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))
        self.lines.put({"error": "the JavaScript node exited"})

    def next(self, key):
        """The next output line that has `key` (change lines are skipped
        unless asked for)."""
        while True:
            out = self.lines.get(timeout=30)
            if "error" in out:
                raise RuntimeError(out["error"])
            if key in out:
                return out

    def command(self, cmd, key="done"):
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        return self.next(key)

    def close(self):
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def test_python_and_javascript_on_one_relay(relay):
    py = facsimile.connect(relay.addr, "python", doc="mixed")
    js = None
    try:
        py.store = {"from_py": [1, 2], "counter": 0}
        py.flush()
        js = JsNode(relay, "javascript", "mixed")
        assert js.next("ready")["ready"] == {"from_py": [1, 2], "counter": 0}

        js.command({"do": "set", "key": "from_js", "value": {"hello": "python"}})
        until(py, lambda: "from_js" in py.store)
        assert py.store.from_js == {"hello": "python"}

        py.store.from_py.append(3)
        py.flush()
        assert js.next("change")["change"][1] is None  # a list method: a mass change

        # The Python node holds the lock; the JavaScript node waits for it.
        guard = py.lock(py.store)
        js.proc.stdin.write(json.dumps({"do": "lock_set", "key": "counter"}) + "\n")
        js.proc.stdin.flush()
        py.store.counter = -1
        py.flush()
        first = guard.token
        guard.release()
        token = js.next("token")["token"]
        js.next("done")
        assert token > first
        until(py, lambda: py.store.counter == token)

        snapshot = bytes.fromhex(js.command({"do": "snapshot"}, "snapshot")["snapshot"])
        js.next("done")
        assert snapshot == py.snapshot()
    finally:
        if js is not None:
            js.close()
        py.close()
