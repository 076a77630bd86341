"""The SDK's transport seam: the request/reply layer over any Transport, and InProcessTransport,
which drives a daemon core in this process (a fake core here, then the daemon's own DaemonCore)."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import threading
import time
from typing import NamedTuple

import msgpack
import numpy as np
import pytest

from daemon_process import run_threads
from trtd.protocol import ErrorCode, decode_envelope, encode_error, encode_reply, encode_request, messages as m
from trtd.sdk import (Client, DaemonNotRunning, DaemonTimeout, InProcessTransport, InvalidInput, ProtocolMismatch,
                      Transport, UnknownModel, ZmqTransport)
from trtd.sdk.connection import Connection

# -- the request/reply layer over a scripted transport -------------------------------------------


class Scripted:
    """A Transport that answers each request with the frames a test gives (like httpx's
    MockTransport): `answer(request_id)` returns the frames to deliver, in order."""

    endpoint = "scripted://"

    def __init__(self, answer):
        self.answer = answer
        self.sent: list[bytes] = []
        self.pending: list[bytes] = []
        self.closed = False

    def send(self, frame: bytes, op: str, connect_timeout_s: float) -> None:
        self.sent.append(frame)
        self.pending += self.answer(decode_envelope(frame).request_id)

    def receive(self, deadline: float, op: str, timeout_s: float) -> bytes:
        if not self.pending:
            raise DaemonTimeout(f"nothing scripted for '{op}'")
        return self.pending.pop(0)

    def connected(self) -> bool:
        return not self.closed

    def close(self, linger_ms: int = 0) -> None:
        self.closed = True


def _status(request_id: int) -> bytes:
    return encode_reply(request_id, m.HeartbeatReply())


def test_transports_satisfy_the_protocol():
    assert isinstance(Scripted(lambda i: []), Transport)
    assert isinstance(InProcessTransport(FakeCore()), Transport)


def test_late_replies_are_dropped_by_request_id():
    # A reply to an earlier request (it timed out) arrives first: it is not taken for this one.
    conn = Connection(Scripted(lambda i: [encode_reply(i - 1, m.HeartbeatReply()), _status(i)]), 1.0)
    assert conn.call(m.Heartbeat(client_id=1), 1.0) == m.HeartbeatReply()


def test_error_replies_are_raised_as_their_classes():
    conn = Connection(Scripted(lambda i: [encode_error(i, ErrorCode.UNKNOWN_MODEL, "no 'x'",
                                                       {"models": ["demo"]})]), 1.0)
    with pytest.raises(UnknownModel, match="no 'x'") as e:
        conn.call(m.ListModels(name="x"), 1.0)
    assert e.value.details == {"models": ["demo"]}


def test_an_unreadable_reply_is_a_protocol_mismatch():
    conn = Connection(Scripted(lambda i: [b"\xc1 not msgpack"]), 1.0)
    with pytest.raises(ProtocolMismatch, match="unreadable reply"):
        conn.call(m.Heartbeat(client_id=1), 1.0)


def test_an_oversized_request_never_reaches_the_transport():
    transport = Scripted(lambda i: [])
    ref = m.InputRef(name="x" * 100, dtype="float32", shape=[1, 64], offset=0, nbytes=256)
    with pytest.raises(InvalidInput, match="over the protocol's limit"):
        Connection(transport, 1.0).call(m.Infer(client_id=1, model="demo", region="r", token="t",
                                                inputs=[ref] * 1000, outputs=[]), 1.0)
    assert transport.sent == []


def test_auth_and_ids_go_in_the_envelope():
    transport = Scripted(lambda i: [_status(i)])
    conn = Connection(transport, 1.0, auth="conn-token")
    conn.call(m.Heartbeat(client_id=1), 1.0)
    conn.call(m.Heartbeat(client_id=1), 1.0, auth="admin-token")
    envelopes = [decode_envelope(f) for f in transport.sent]
    assert [(e.request_id, e.auth) for e in envelopes] == [(1, "conn-token"), (2, "admin-token")]


def test_a_closed_connection_refuses_and_closes_its_transport_once():
    transport = Scripted(lambda i: [_status(i)])
    conn = Connection(transport, 1.0)
    conn.close()
    conn.close()
    assert transport.closed
    conn.send_nowait(m.Heartbeat(client_id=1))  # silently nothing
    with pytest.raises(DaemonNotRunning, match="closed"):
        conn.call(m.Heartbeat(client_id=1), 1.0)
    assert transport.sent == []


def test_client_refuses_an_endpoint_beside_a_transport():
    with pytest.raises(ValueError, match="not with it"):
        Client("ipc:///tmp/x.sock", transport=Scripted(lambda i: []))


def test_zmq_transport_validates_its_endpoint():
    from trtd.sdk import InvalidEndpoint

    with pytest.raises(InvalidEndpoint, match="port"):
        ZmqTransport("tcp://127.0.0.1:99999")


def test_the_sdk_imports_nothing_of_the_daemon():
    """InProcessTransport takes any object with the core's two calls: the SDK stays installable
    and importable without the daemon's dependencies."""
    code = ("import sys, trtd.sdk; "
            "print(sorted(n for n in sys.modules if n.startswith('trtd.daemon')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


# -- InProcessTransport with a fake core ---------------------------------------------------------


class Answer(NamedTuple):
    identity: bytes
    request_id: int
    frame: bytes


class FakeCore:
    """Answers hello, goodbye and heartbeat at once; `models` later, from step(), once
    `hold` of them are waiting (so one step() answers several transports at once); never
    `status`. Checks that no two threads are inside it at once."""

    endpoint = "fake://core"

    def __init__(self, hold: int = 1):
        self.hold = hold
        self.later: list[Answer] = []
        self.ready = threading.Condition()
        self.inside = 0
        self.overlaps = 0
        self.identities: set[bytes] = set()

    def _enter(self):
        self.inside += 1
        self.overlaps += self.inside > 1
        time.sleep(0.001)  # widen the window a second caller would hit

    def receive(self, identity: bytes, payload: bytes, received_ns: int | None = None) -> bytes | None:
        self._enter()
        try:
            self.identities.add(identity)
            envelope = decode_envelope(payload)
            request_id, request = envelope.request_id, envelope.request
            if isinstance(request, m.Hello):
                return encode_reply(request_id, m.HelloReply(
                    client_id=int(identity.rsplit(b"-", 1)[1]), daemon_id="fake", server_version="0",
                    protocol_version=1, alignment=256, max_message_bytes=65536))
            if isinstance(request, m.Goodbye):
                return encode_reply(request_id, m.GoodbyeReply())
            if isinstance(request, m.Heartbeat):
                return encode_reply(request_id, m.HeartbeatReply())
            if isinstance(request, m.ListModels):
                if request.name == "nope":
                    return encode_error(request_id, ErrorCode.UNKNOWN_MODEL, "no model 'nope'")
                with self.ready:
                    self.later.append(Answer(identity, request_id, encode_reply(request_id, m.ModelsReply(
                        models=[]))))
                    self.ready.notify_all()
            return None  # status: never answered
        finally:
            self.inside -= 1

    def step(self, timeout_s: float = 0.0) -> list[Answer]:
        self._enter()
        try:
            with self.ready:
                self.ready.wait_for(lambda: len(self.later) >= self.hold, timeout_s)
                if len(self.later) < self.hold:
                    return []
                answers, self.later = self.later, []
                return answers
        finally:
            self.inside -= 1


def test_a_client_over_a_fake_core():
    core = FakeCore()
    with Client(transport=InProcessTransport(core), timeout=2) as c:
        assert c.endpoint == "fake://core" and c.daemon_id == "fake"
        assert c.models() == []  # answered by step()
        with pytest.raises(UnknownModel, match="nope"):
            c.describe("nope")
    (identity,) = core.identities
    assert identity.startswith(b"inproc-")


def test_no_reply_is_a_timeout_naming_the_core():
    with Client(transport=InProcessTransport(FakeCore()), timeout=0.3) as c:
        started = time.monotonic()
        with pytest.raises(DaemonTimeout, match="'status' from the in-process daemon core"):
            c.status()
        # At least its own timeout; the upper bound only tells "waited for good" apart, far above
        # what a loaded machine adds (no speed is judged here).
        assert 0.3 <= time.monotonic() - started < 30


def test_answers_of_one_step_reach_each_transport_sharing_the_core():
    """Four clients on one core, each waiting in its own thread; the core answers all four in
    one step() call, made by whichever transport steps: each still gets its own answer."""
    core = FakeCore(hold=4)
    clients = [Client(transport=InProcessTransport(core), timeout=5) for _ in range(4)]
    try:
        assert len({c.client_id for c in clients}) == 4
        got = []
        run_threads(lambda c: got.append(c.models()), [(c,) for c in clients])
        assert got == [[]] * 4
        assert core.overlaps == 0, "calls into the core must be serialized"
    finally:
        for c in clients:
            c.close()


def test_a_closed_transport_drops_its_answers_and_refuses_to_send():
    core = FakeCore()
    transport = InProcessTransport(core)
    transport.send(encode_request(m.ListModels(), 7), "models", 1.0)
    transport.close()
    other = InProcessTransport(core)
    other.send(encode_request(m.ListModels(), 8), "models", 1.0)
    # One step answers both; the closed transport's answer is dropped, the other arrives.
    assert decode_envelope_id(other.receive(time.monotonic() + 2, "models", 2)) == 8
    assert not transport.connected()
    with pytest.raises(DaemonNotRunning, match="closed"):
        transport.send(encode_request(m.Heartbeat(client_id=1), 9), "heartbeat", 1.0)


def decode_envelope_id(frame: bytes) -> int:
    return msgpack.unpackb(frame)["id"]


# -- InProcessTransport with the daemon's own core -----------------------------------------------


@pytest.fixture(scope="module")
def core():
    pytest.importorskip("onnxruntime")
    from trtd.daemon.config.settings import DaemonConfig, ModelConfig
    from trtd.daemon.core.daemon_core import DaemonCore

    if not (hasattr(DaemonCore, "receive") and hasattr(DaemonCore, "step")):
        pytest.skip("this daemon's core has no receive()/step() for an in-process driver")
    config = DaemonConfig(models=[ModelConfig(name="demo", path="builtin:demo")],
                          max_regions_per_client=4)
    core = DaemonCore(config, "in-process-test", daemon_id=secrets.token_hex(8),
                      region_prefix=f"trtd_inproc_{os.getpid()}_")
    core.start_loading()
    deadline = time.monotonic() + 120
    while core.loading and time.monotonic() < deadline:  # the loader thread reports through step()
        core.step(0.1)
    assert not core.loading, "the builtin model did not load within 120 s"
    yield core
    core.close()


def _regions(prefix: str) -> set[str]:
    return {n for n in os.listdir("/dev/shm") if n.startswith(prefix)}


def test_infer_through_a_real_core_in_process(core):
    from trtd.daemon.backends.onnxruntime import create_session
    from trtd.daemon.builtin.onnx_models import builtin_model_path

    session = create_session(builtin_model_path("demo"))
    rng = np.random.default_rng(11)
    with Client(transport=InProcessTransport(core), timeout=30) as c:
        assert c.endpoint == "in-process-test"
        (info,) = c.models()
        assert info.name == "demo" and info.state == "ready"
        for batch in (1, 5, 64):
            x = rng.standard_normal((batch, 64), dtype=np.float32)
            np.testing.assert_array_equal(c.infer("demo", x), session.run(None, {"x": x})[0])
        slots = c.model("demo").zero_copy_inputs({"x": (3, 64)})
        x = rng.standard_normal((3, 64), dtype=np.float32)
        slots["x"][...] = x
        np.testing.assert_array_equal(c.model("demo").run_zero_copy()["y"], session.run(None, {"x": x})[0])
        assert c.model("demo").last_timing.total_us > 0
        assert _regions(f"trtd_inproc_{os.getpid()}_")  # a real region in /dev/shm
        with pytest.raises(UnknownModel):
            c.infer("nope", x)
    assert not _regions(f"trtd_inproc_{os.getpid()}_")  # the goodbye released it


def test_clients_in_threads_share_a_real_core(core):
    from trtd.daemon.backends.onnxruntime import create_session
    from trtd.daemon.builtin.onnx_models import builtin_model_path

    session = create_session(builtin_model_path("demo"))

    def work(seed: int) -> None:
        rng = np.random.default_rng(seed)
        with Client(transport=InProcessTransport(core), timeout=30) as c:
            for _ in range(20):
                x = rng.standard_normal((2, 64), dtype=np.float32)
                np.testing.assert_array_equal(c.infer("demo", x), session.run(None, {"x": x})[0])

    run_threads(work, [(seed,) for seed in range(4)])


def test_errors_of_a_real_core_in_process(core):
    from trtd.sdk import QuotaExceeded

    with Client(transport=InProcessTransport(core), timeout=30) as c:
        held = [c.lease(256) for _ in range(4)]
        with pytest.raises(QuotaExceeded):
            c.lease(256)
        for region in held:
            c.release(region)
