"""A peer that picks its own routing id must not abort the daemon (issue 17.1).

libzmq 4.3.5's ROUTER named a peer without a routing id b"\\0" + a counter and aborted the
process when that id was already held by a peer that chose it itself; unseeded, the counter of
the first ROUTER in a process started at glibc's first rand() value, 0x6b8b4567: one connection
with that id, then any ordinary client, aborted `trtd serve` (SIGABRT, socket and token files
left behind). The daemon now reads a ZMQ_STREAM socket and speaks ZMTP itself
(daemon/serve/zmtp.py): libzmq names every connection, and a peer's ZMQ_ROUTING_ID is ignored.
The fuzzer (tests/test_fuzz.py) sends chosen ids too, twice the same among them.
"""

from __future__ import annotations

import struct
import sys
import time

import msgpack
import numpy as np
import pytest
import zmq

from daemon_process import start_daemon
from trtd.daemon.builtin.onnx_models import builtin_model_path
from trtd.daemon.backends.onnxruntime import create_session
from trtd.sdk import Client

GLIBC_FIRST = 0x6b8b4567  # libzmq's first automatic id in a process that never seeded rand()

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="ipc endpoints")


def _claim(ctx: zmq.Context, endpoint: str, counter: int) -> zmq.Socket:
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, b"\0" + struct.pack(">I", counter & 0xFFFFFFFF))
    sock.connect(endpoint)
    return sock


def test_peers_holding_the_unseeded_automatic_ids_do_not_abort_the_daemon(tmp_path):
    daemon = start_daemon(tmp_path, "--model", "demo=builtin:demo")
    ctx = zmq.Context()
    held = []
    try:
        # The next ids an unseeded libzmq would hand out (a client or two may already have
        # taken the first while the daemon started: cover a window after the start).
        held = [_claim(ctx, daemon.endpoint, GLIBC_FIRST + k) for k in range(200)]
        time.sleep(0.5)  # every claim is registered by the daemon's ROUTER
        x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
        expected = create_session(builtin_model_path("demo")).run(None, {"x": x})[0]
        for _ in range(5):  # ordinary clients get automatic ids now
            with Client(daemon.endpoint) as c:
                np.testing.assert_allclose(c.infer("demo", x), expected, rtol=1e-5, atol=1e-6)
        assert daemon.alive(), daemon.log()
    finally:
        for sock in held:
            sock.close()
        ctx.term()
        assert daemon.stop() == 0, daemon.log()


def test_two_peers_claiming_one_routing_id_are_both_served(tmp_path):
    """A ROUTER served only the first of two peers with one id (or, with handover, stole the
    connection): on the daemon's STREAM socket each connection is its own."""
    daemon = start_daemon(tmp_path, "--model", "demo=builtin:demo")
    ctx = zmq.Context()
    try:
        socks = [_claim(ctx, daemon.endpoint, GLIBC_FIRST) for _ in range(2)]
        for k, sock in enumerate(socks):
            sock.send(msgpack.packb({"v": 1, "op": "status", "id": k + 1}))
        for k, sock in enumerate(socks):
            assert sock.poll(10_000), "a peer with a duplicate routing id was not answered"
            assert msgpack.unpackb(sock.recv())["id"] == k + 1
        for sock in socks:
            sock.close()
    finally:
        ctx.term()
        assert daemon.stop() == 0, daemon.log()
