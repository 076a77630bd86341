"""DaemonCore driven in-process: frames in, frames out, no socket and no daemon process.

The core is what the socket loop drives (`receive` per request frame, `step` for work other
threads finished); here a test drives it the same way. Regions are real shared memory, models
real ONNX Runtime sessions (the built-in demo model and the `held` model of slow_models, which
runs until the test writes 1 into its `go` input), and every answer is a real encoded frame.
"""

from __future__ import annotations

import ctypes
import itertools
import os
import time

import numpy as np
import pytest

from trtd.protocol import ErrorCode, decode_reply, encode_request, messages as m
from trtd.protocol.layout import align_up

from trtd.daemon.config.settings import DaemonConfig, ModelConfig
from trtd.daemon.core.daemon_core import DaemonCore
from trtd.daemon.running.finished import RequestDone

pytest.importorskip("onnxruntime")

from slow_models import held  # noqa: E402  (tests/ is on the path)
from trtd.daemon.backends.onnxruntime import create_session  # noqa: E402
from trtd.daemon.builtin.onnx_models import builtin_model_path  # noqa: E402

_prefixes = itertools.count()


class Driver:
    """One in-process connection to a core: sends typed requests as frames, decodes replies."""

    def __init__(self, core: DaemonCore, identity: bytes = b"conn-1"):
        self.core, self.identity = core, identity
        self._ids = itertools.count(1)
        self.client_id = 0

    def send(self, request: m.Request) -> int:
        """Send without waiting; the request id (the answer may be immediate: see `pending`)."""
        request_id = next(self._ids)
        self.last = (request, request_id, self.core.receive(self.identity, encode_request(request, request_id)))
        return request_id

    def call(self, request: m.Request):
        request_id = self.send(request)
        frame = self.last[2]
        assert frame is not None, f"{request.OP} was not answered at once"
        return decode_reply(frame, type(request), request_id)

    def ok(self, request: m.Request):
        reply = self.call(request)
        assert reply.error is None, reply.error
        return reply.result

    def hello(self) -> int:
        self.client_id = self.ok(m.Hello(client_pid=os.getpid(), client_start_time=0.0)).client_id
        return self.client_id


def _answers_for(core: DaemonCore, count: int, timeout_s: float = 30.0):
    answers = []
    deadline = time.monotonic() + timeout_s
    while len(answers) < count and time.monotonic() < deadline:
        answers += core.step(0.05)
    assert len(answers) == count, f"{len(answers)} of {count} answers within {timeout_s} s"
    return answers


def _view(d: "Driver", region, offset: int, dtype, shape) -> np.ndarray:
    """The core's own mapping of a leased region (what a client writes through its own)."""
    leased = d.core.regions.checkout(d.client_id, region.name, region.token)
    d.core.regions.checkin(leased)
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    # By address, not through the mapping's buffer: a view that outlives the test must not pin
    # the mapping open when the core closes it.
    raw = (ctypes.c_ubyte * nbytes).from_address(leased.address + offset)
    return np.ctypeslib.as_array(raw).view(dtype).reshape(shape)


@pytest.fixture
def make_core(tmp_path):
    cores = []

    def make(*models: ModelConfig, start: bool = True, authorize=None, **settings) -> DaemonCore:
        prefix = f"trtd_unit{os.getpid():x}_{next(_prefixes)}_"
        core = DaemonCore(DaemonConfig(models=list(models), **settings), "inproc://test", "core-test", prefix,
                          authorize=authorize)
        cores.append((core, prefix))
        if start:
            core.start_loading()
            core.run_until_loaded(60)
        return core

    yield make
    for core, prefix in cores:
        core.close()
        assert not [n for n in os.listdir("/dev/shm") if n.startswith(prefix)], "regions left behind"


def _infer(driver: Driver, region, x: np.ndarray, model: str = "demo", out_offset: int | None = None,
           extra_inputs=(), output: str = "y", out_nbytes: int | None = None, **fields) -> m.Infer:
    offset = align_up(x.nbytes) if out_offset is None else out_offset
    return m.Infer(client_id=driver.client_id, model=model, region=region.name, token=region.token,
                   inputs=[m.InputRef(name="x", dtype="float32", shape=list(x.shape), offset=0,
                                      nbytes=x.nbytes), *extra_inputs],
                   outputs=[m.OutputRef(name=output, offset=offset,
                                        nbytes=out_nbytes if out_nbytes is not None else x.nbytes)],
                   **fields)


def _demo_expected(x: np.ndarray) -> np.ndarray:
    return create_session(builtin_model_path("demo")).run(None, {"x": x})[0]


def test_an_inline_model_answers_infer_at_once_with_onnx_runtimes_result(make_core):
    core = make_core(ModelConfig(name="demo", path="builtin:demo"))
    d = Driver(core)
    d.hello()
    region = d.ok(m.Lease(client_id=d.client_id, nbytes=4096)).region
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    _view(d, region, 0, np.float32, x.shape)[...] = x
    reply = d.ok(_infer(d, region, x, out_nbytes=2048))
    (out,) = reply.outputs
    y = _view(d, region, out.offset, np.dtype(out.dtype), tuple(out.shape))
    np.testing.assert_allclose(y, _demo_expected(x), rtol=1e-5, atol=1e-6)
    assert reply.backend == "onnxruntime" and reply.timing.total_us >= reply.timing.compute_us
    assert len(core.in_flight) == 0
    status = d.ok(m.Status())
    assert [(s.name, s.state, s.requests, s.errors) for s in status.models] == [("demo", "ready", 1, 0)]


def test_a_refused_infer_ends_once_its_region_checked_in_and_counted(make_core):
    core = make_core(ModelConfig(name="demo", path="builtin:demo"))
    d = Driver(core)
    d.hello()
    region = d.ok(m.Lease(client_id=d.client_id, nbytes=4096)).region
    x = np.zeros((1, 63), np.float32)  # the demo model takes 64 features
    reply = d.call(_infer(d, region, x))
    assert reply.error.code == ErrorCode.INVALID_TENSOR and "'x'" in reply.error.message
    # The region was checked in: it can be released at once (not deferred behind a request).
    assert d.ok(m.Release(client_id=d.client_id, region=region.name, token=region.token)).released_now
    assert d.ok(m.Status()).models[0].errors == 1


def test_queued_requests_are_pending_then_answered_by_step_and_counted_once(make_core, tmp_path):
    core = make_core(ModelConfig(name="held", path=str(held(tmp_path / "held.onnx")), instances=2))
    d = Driver(core)
    d.hello()
    x = np.full((1, 16), 0.5, np.float32)
    go_offset, y_offset = align_up(x.nbytes), align_up(align_up(x.nbytes) + 4)
    regions, ids = [], []
    for _ in range(2):
        region = d.ok(m.Lease(client_id=d.client_id, nbytes=y_offset + x.nbytes)).region
        _view(d, region, 0, np.float32, x.shape)[...] = x
        _view(d, region, go_offset, np.int32, (1,))[...] = 0
        go = m.InputRef(name="go", dtype="int32", shape=[1], offset=go_offset, nbytes=4)
        ids.append(d.send(_infer(d, region, x, model="held", out_offset=y_offset, extra_inputs=[go])))
        assert d.last[2] is None  # pending: a worker instance answers it
        regions.append(region)
    assert len(core.in_flight) == 2
    assert d.ok(m.Status()).models[0].in_flight == 2
    assert core.step(0.2) == []  # held: nothing finishes until the test opens them
    for region in regions:
        _view(d, region, go_offset, np.int32, (1,))[...] = 1
    answers = _answers_for(core, 2)
    assert sorted(a.request_id for a in answers) == ids and {a.identity for a in answers} == {d.identity}
    for answer in answers:
        reply = decode_reply(answer.frame, m.Infer, answer.request_id)
        assert reply.error is None, reply.error
    for region in regions:
        np.testing.assert_allclose(_view(d, region, y_offset, np.float32, x.shape), np.tanh(x), rtol=1e-6)
    assert len(core.in_flight) == 0 and d.ok(m.Status()).models[0].requests == 2


def test_a_full_queue_is_overloaded_and_the_count_comes_back(make_core, tmp_path):
    core = make_core(ModelConfig(name="held", path=str(held(tmp_path / "held.onnx")), instances=2,
                                 max_queue=1))
    d = Driver(core)
    d.hello()
    x = np.full((1, 16), 0.5, np.float32)
    go_offset, y_offset = align_up(x.nbytes), align_up(align_up(x.nbytes) + 4)
    region = d.ok(m.Lease(client_id=d.client_id, nbytes=y_offset + x.nbytes)).region
    _view(d, region, 0, np.float32, x.shape)[...] = x
    go = _view(d, region, go_offset, np.int32, (1,))
    go[...] = 0
    go_ref = m.InputRef(name="go", dtype="int32", shape=[1], offset=go_offset, nbytes=4)
    # Capacity = max_queue + instances = 3; the same region may carry several reads of x,
    # but each needs its own output area: give them disjoint outputs past y.
    request = lambda i: _infer(d, region, x, model="held", out_offset=y_offset, extra_inputs=[go_ref])  # noqa: E731
    for _ in range(3):
        d.send(request(0))
        assert d.last[2] is None
    refused = d.call(request(0))
    assert refused.error.code == ErrorCode.OVERLOADED and "3 requests queued or running" in refused.error.message
    go[...] = 1
    _answers_for(core, 3)
    assert len(core.in_flight) == 0
    d.ok(m.Release(client_id=d.client_id, region=region.name, token=region.token))


def test_a_load_op_is_answered_by_step_once_the_loader_has_it(make_core):
    core = make_core()
    d = Driver(core)
    request_id = d.send(m.Load(name="late", path="builtin:demo"))
    assert d.last[2] is None and len(core.in_flight) == 1
    (answer,) = _answers_for(core, 1, timeout_s=60)
    reply = decode_reply(answer.frame, m.Load, request_id)
    assert reply.error is None and reply.result.model.state == "ready"
    assert len(core.in_flight) == 0
    assert [i.name for i in d.ok(m.ListModels()).models] == ["late"]


def test_a_draining_core_refuses_new_work_and_still_serves_releases(make_core):
    core = make_core(ModelConfig(name="demo", path="builtin:demo"))
    d = Driver(core)
    d.hello()
    region = d.ok(m.Lease(client_id=d.client_id, nbytes=4096)).region
    core.stop.begin_drain(core.clients.identities())
    assert d.identity in core.stop.unread_replies
    x = np.zeros((1, 64), np.float32)
    for request in (_infer(d, region, x), m.Lease(client_id=d.client_id, nbytes=4096)):
        reply = d.call(request)
        assert reply.error.code == ErrorCode.OVERLOADED and reply.error.details["stopping"] is True
    assert d.identity not in core.stop.unread_replies  # it sent again: it read its replies
    assert d.ok(m.Release(client_id=d.client_id, region=region.name, token=region.token)).released_now
    assert d.ok(m.Status()).stopping is True and core.stop.refused == 2


def test_give_up_answers_queued_and_running_requests_and_the_late_completion_only_returns_the_region(
        make_core, tmp_path):
    core = make_core(ModelConfig(name="held", path=str(held(tmp_path / "held.onnx")), instances=2),
                     drain_timeout_s=0.5)
    d = Driver(core)
    d.hello()
    x = np.full((1, 16), 0.5, np.float32)
    go_offset, y_offset = align_up(x.nbytes), align_up(align_up(x.nbytes) + 4)
    region = d.ok(m.Lease(client_id=d.client_id, nbytes=y_offset + x.nbytes)).region
    _view(d, region, 0, np.float32, x.shape)[...] = x
    go = _view(d, region, go_offset, np.int32, (1,))
    go[...] = 0
    go_ref = m.InputRef(name="go", dtype="int32", shape=[1], offset=go_offset, nbytes=4)
    for _ in range(3):  # two run (held), one waits in the queue
        d.send(_infer(d, region, x, model="held", out_offset=y_offset, extra_inputs=[go_ref]))
    deadline = time.monotonic() + 10
    while sum(len(e.running()) for e in core.models.executors()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    answers = core.give_up_in_flight()
    details = sorted(decode_reply(a.frame, m.Infer, a.request_id).error.details["started"] for a in answers)
    assert details == [False, True, True] and len(core.in_flight) == 0
    region_obj = core.regions.checkout(d.client_id, region.name, region.token)
    core.regions.checkin(region_obj)
    assert region_obj.in_use == 2  # the two running requests still hold it
    go[...] = 1  # the running calls end now; their completions answer nobody
    deadline = time.monotonic() + 10
    while region_obj.in_use and time.monotonic() < deadline:
        assert core.step(0.05) == []
    assert region_obj.in_use == 0


def test_an_unreadable_frame_is_a_bad_message_and_the_core_keeps_serving(make_core):
    core = make_core(ModelConfig(name="demo", path="builtin:demo"))
    for frame in (b"", b"\xc1", b"\x93\x01\x02\x03"):
        reply = decode_reply(core.receive(b"x", frame), m.Status, 0)
        assert reply.error.code in (ErrorCode.BAD_MESSAGE, ErrorCode.UNSUPPORTED_VERSION)
    assert Driver(core).ok(m.Status()).models[0].state == "ready"


def test_the_authorizer_decides_before_any_handler(make_core):
    from trtd.protocol import ProtocolError

    def authorize(request, auth):
        if auth != "secret":
            raise ProtocolError(ErrorCode.UNAUTHORIZED, "no")

    core = make_core(start=False, authorize=authorize)  # the socket loop passes its access gate
    reply = Driver(core).call(m.Hello(client_pid=os.getpid()))
    assert reply.error.code == ErrorCode.UNAUTHORIZED and len(core.clients) == 0


def test_finish_refuses_what_is_not_finished_work(make_core):
    core = make_core(start=False)
    with pytest.raises(TypeError, match="unknown finished work"):
        core.finish(object())  # type: ignore[arg-type]
    assert isinstance(RequestDone.__dataclass_fields__["kind"].default, str)


def test_answering_a_model_with_idle_spin_asks_the_loop_to_keep_polling(make_core):
    core = make_core(ModelConfig(name="demo", path="builtin:demo", idle_spin_us=300),
                     ModelConfig(name="quiet", path="builtin:demo"))
    d = Driver(core)
    d.hello()
    region = d.ok(m.Lease(client_id=d.client_id, nbytes=4096)).region
    x = np.zeros((1, 64), np.float32)
    d.ok(_infer(d, region, x, model="quiet"))
    assert core.spin_ns == 0
    d.ok(_infer(d, region, x, model="demo"))
    assert core.spin_ns == 300_000  # the socket loop reads and resets it before it sleeps
