"""Several instances per model: concurrent requests, bounded queues, unload while busy."""

from __future__ import annotations


import msgpack
import numpy as np
import pytest

from daemon_process import run_threads, serving, wait_until
from held_requests import HeldRequest
from slow_models import held
from trtd.daemon.backends.onnxruntime import create_session
from trtd.daemon.builtin.onnx_models import builtin_model_path
from trtd.protocol import messages as m
from trtd.protocol.codec import encode_request
from trtd.sdk import Client

SHAPE = (1, 1, 128, 256, 256)
HELD_INSTANCES, HELD_QUEUE = 2, 1


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("pooled")
    held(workdir / "held.onnx")  # slow_models.held: in flight until the test opens it
    with serving(workdir,
                 "[models.volume3d]\npath = \"builtin:volume3d\"\ninstances = 2\nmax_queue = 0\n"
                 "[models.demo]\npath = \"builtin:demo\"\ninstances = 3\n"
                 f"[models.held]\npath = \"held.onnx\"\ninstances = {HELD_INSTANCES}\n"
                 f"max_queue = {HELD_QUEUE}\nintra_op_threads = 1\n") as d:
        yield d


def test_concurrent_clients_get_their_own_answers(pooled):
    session = create_session(builtin_model_path("demo"))

    def work(seed):
        rng = np.random.default_rng(seed)
        with Client(pooled.endpoint) as c:
            for _ in range(40):
                x = rng.standard_normal((1 + seed % 4, 64), dtype=np.float32)
                np.testing.assert_array_equal(c.infer("demo", x), session.run(None, {"x": x})[0])

    run_threads(work, [(i,) for i in range(6)])
    with Client(pooled.endpoint) as c:
        demo = next(s for s in c.status().models if s.name == "demo")
        assert demo.instances == 3 and demo.in_flight == 0 and demo.requests >= 240


def _held_in_flight(c: Client) -> int:
    return next(s.in_flight for s in c.status().models if s.name == "held")


def test_full_queue_fails_fast_with_overloaded(pooled):
    # Held requests fill both instances and the one queue place, whatever the machine's speed:
    # they stay in flight until opened. Every request beyond that is refused at once with
    # OVERLOADED: its answer comes while the held ones still hold every place, so it did not
    # wait for one. Once they are answered, the model takes requests again.
    x = np.random.default_rng(1).standard_normal((4, 16), dtype=np.float32)
    limit = HELD_INSTANCES + HELD_QUEUE
    clients = [Client(pooled.endpoint) for _ in range(limit + 3)]
    watcher = Client(pooled.endpoint)  # its own socket: the held requests' replies stay theirs
    holding: list[HeldRequest] = []
    try:
        for i, c in enumerate(clients[:limit]):
            holding.append(HeldRequest(c, x, request_id=100 + i))
            # One at a time, so that each is admitted before the next is sent.
            assert wait_until(lambda: _held_in_flight(watcher) == i + 1, timeout=30, interval=0.005), \
                f"in flight: {_held_in_flight(watcher)}, expected {i + 1}"
        # go = 1: were one of these admitted, it would run and succeed at once.
        extra = [HeldRequest(c, x, request_id=200 + i, open_now=True)
                 for i, c in enumerate(clients[limit:])]
        for r in extra:
            reply = r.reply()
            assert reply["ok"] is False and reply["error"]["code"] == "OVERLOADED", reply
            assert f"{limit} requests queued or running" in reply["error"]["message"], reply
            assert not r.y().any()  # it did not run: its output slot is as leased (zeros)
        assert _held_in_flight(watcher) == limit
        assert not any(r.client._conn._socket.poll(0) for r in holding)  # still held, unanswered
        for r in holding:
            r.open()
        for r in holding:
            reply = r.reply()
            assert reply["ok"], reply
            np.testing.assert_allclose(r.y(), np.tanh(x), rtol=1e-6, atol=1e-6)
        assert wait_until(lambda: _held_in_flight(watcher) == 0, timeout=30)
        again = HeldRequest(clients[-1], x, request_id=300, open_now=True)
        assert again.reply()["ok"]
        np.testing.assert_allclose(again.y(), np.tanh(x), rtol=1e-6, atol=1e-6)
    finally:
        for r in holding:
            r.open()  # never leave a worker spinning
        for c in clients:
            c.close()
        watcher.close()


def test_unload_waits_for_running_requests(pooled):
    # The request is on a worker instance when the unload arrives: unload waits
    # for it, the request gets its answer, then the model is gone.
    x = np.random.default_rng(2).standard_normal(SHAPE, dtype=np.float32)
    expected = create_session(builtin_model_path("volume3d")).run(None, {"x": x})[0]
    with Client(pooled.endpoint) as c, Client(pooled.endpoint) as admin:
        n = x.nbytes
        region = c.lease(2 * n)
        region.array(0, x.dtype, x.shape)[...] = x
        req = m.Infer(client_id=c.client_id, model="volume3d", region=region.name, token=region.token,
                      inputs=[m.InputRef(name="x", dtype="float32", shape=list(SHAPE), offset=0, nbytes=n)],
                      outputs=[m.OutputRef(name="y", offset=n, nbytes=n)])
        c._conn._socket.send(encode_request(req, 7))
        # Unload while it runs (on a fast machine it may be done already: then the
        # reply waits in the socket, and the rest of the test holds all the same).
        assert wait_until(lambda: c._conn._socket.poll(0) or next(
            s.in_flight for s in admin.status().models if s.name == "volume3d") == 1, timeout=10)
        admin.unload("volume3d")
        assert c._conn._socket.poll(20000)
        reply = msgpack.unpackb(c._conn._socket.recv())
        assert reply["ok"], reply
        np.testing.assert_array_equal(region.array(n, x.dtype, x.shape), expected)
        assert "volume3d" not in {info.name for info in c.models()}
        c.release(region)
