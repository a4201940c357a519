"""Nodes on a document in NATS JetStream (`nats://`): the nats-server
binary is `$NATS_SERVER` (scripts/test.sh installs one) or on the PATH,
started here on a free loopback port."""

import os
import queue
import shutil
import socket
import subprocess
import threading

import pytest

import facsimile
from test_relay import until


@pytest.fixture
def nats(tmp_path):
    binary = os.environ.get("NATS_SERVER") or shutil.which("nats-server")
    if not binary:
        pytest.fail("no nats-server: set NATS_SERVER (scripts/test.sh installs one)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = tmp_path / "nats.conf"
    conf.write_text(
        f'listen: 127.0.0.1:{port}\n'
        f'jetstream {{ store_dir: "{tmp_path / "js"}", max_memory_store: 64MB, max_file_store: 1GB }}\n'
    )
    proc = subprocess.Popen([binary, "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    ready = threading.Event()

    def watch():
        for line in proc.stderr:
            if "Server is ready" in line:
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    try:
        assert ready.wait(30), "nats-server did not become ready"
        yield f"nats://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def test_two_nodes_mirror_on_nats(nats):
    a = facsimile.connect(nats, "alpha", doc="py")
    b = facsimile.connect(nats, "bravo", doc="py")
    try:
        a.store = {"stock": {"bolts": 1}}
        a.flush()
        until(b, lambda: b.store is not None and b.store.get("stock") is not None)
        changes = queue.Queue()
        b.store.stock.on("bolts", changes.put)
        with a.lock(a.store.stock, timeout=30) as guard:
            a.store.stock.bolts += guard.token
            expected = a.store.stock.bolts
        a.flush()
        change = changes.get(timeout=30)
        assert (change.new, change.origin) == (expected, "alpha")
        assert b.store.stock == {"bolts": expected}
    finally:
        a.close()
        b.close()


def test_an_unreachable_nats_server_is_a_connect_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(facsimile.ConnectError) as caught:
        facsimile.connect(f"nats://127.0.0.1:{port}", "alpha", doc="py")
    assert isinstance(caught.value, ConnectionError)
    assert "NATS" in str(caught.value)
