"""Several instances per model: concurrent requests, bounded queues, unload while busy."""

from __future__ import annotations


import msgpack
import numpy as np
import pytest

from daemon_process import run_threads, serving, wait_until
from trtd.daemon.backends.onnxruntime import create_session
from trtd.daemon.builtin_models import builtin_model_path
from trtd.protocol import messages as m
from trtd.protocol.codec import encode_request
from trtd.sdk import Client

SHAPE = (1, 1, 128, 256, 256)


@pytest.fixture(scope="module")
def pooled(tmp_path_factory):
    with serving(tmp_path_factory.mktemp("pooled"),
                 "[models.volume3d]\npath = \"builtin:volume3d\"\ninstances = 2\nmax_queue = 0\n"
                 "[models.demo]\npath = \"builtin:demo\"\ninstances = 3\n") as d:
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


def test_full_queue_fails_fast_with_overloaded(pooled):
    # Six clients send at once to a model with 2 instances and no queue: the
    # daemon reads them in one go, two run, the others are refused at once.
    clients = []
    try:
        for _ in range(6):
            c = Client(pooled.endpoint)
            region = c.lease(2 * 32 * 2**20 + 4096)
            clients.append((c, region))
        codes = []
        for c, region in clients:
            n = 32 * 2**20
            req = m.Infer(client_id=c.client_id, model="volume3d", region=region.name, token=region.token,
                          inputs=[m.InputRef(name="x", dtype="float32", shape=list(SHAPE), offset=0, nbytes=n)],
                          outputs=[m.OutputRef(name="y", offset=n, nbytes=n)])
            c._conn._socket.send(encode_request(req, 1000))
        for c, _ in clients:
            assert c._conn._socket.poll(20000)
            reply = msgpack.unpackb(c._conn._socket.recv())
            codes.append("ok" if reply["ok"] else reply["error"]["code"])
        assert codes.count("ok") >= 2 and "OVERLOADED" in codes, codes
        assert set(codes) <= {"ok", "OVERLOADED"}, codes
    finally:
        for c, region in clients:
            c.release(region)
            c.close()


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
