"""Dynamic batching driven in-process: requests queued by receive(), batches cut by step().

The core is driven as the socket loop drives it (tests/unit/test_core.py's Driver): several
connections (each its own "client") send before the core steps, so what forms a batch is
decided by the test, not by a machine's timing. Models are real ONNX Runtime sessions, built
with onnx.helper where a test needs a particular behaviour (rows mixed, a run that fails).
"""

from __future__ import annotations

import os
import sys
import time

import numpy as np
import pytest

from trtd.protocol import ErrorCode, decode_reply, messages as m
from trtd.protocol.layout import align_up

from trtd.daemon.config.settings import ModelConfig
from trtd.daemon.backends import OutputTooLarge
from trtd.daemon.running import batching

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from test_core import Driver, _demo_expected, _view, make_core  # noqa: E402,F401  (make_core: fixture)
from trtd.daemon.backends.onnxruntime import create_session  # noqa: E402


def _save(graph, path) -> str:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return str(path)


def mixes_rows(path) -> str:
    """y = x - mean of x over the batch: every row's result depends on the other rows."""
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["mu"], axes=[0], keepdims=1),
         helper.make_node("Sub", ["x", "mu"], ["y"])],
        "mixes_rows", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])])
    return _save(graph, path)


def any_width(path) -> str:
    """y = relu(x) for x float32[batch, n]: requests of other widths cannot share a batch."""
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "any_width",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "n"])])
    return _save(graph, path)


def lookup(path) -> str:
    """y = table[x] for x int64[batch, 1] (table: 8 rows of 4): an index outside 0..7 makes
    ONNX Runtime fail the run, and with it every request of its batch."""
    table = np.arange(32, dtype=np.float32).reshape(8, 4)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "x"], ["g"], axis=0),
         helper.make_node("Flatten", ["g"], ["y"], axis=1)], "lookup",
        [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(table, "table")])
    return _save(graph, path)


class Sender:
    """One client connection with one region: writes its input, sends, reads its output."""

    def __init__(self, core, name: bytes, x: np.ndarray, out_shape, model: str = "demo"):
        self.d = Driver(core, name)
        self.d.hello()
        self.x, self.model, self.out_shape = x, model, tuple(out_shape)
        self.out_offset = align_up(x.nbytes)
        nbytes = int(np.prod(out_shape)) * 4
        self.region = self.d.ok(m.Lease(client_id=self.d.client_id, nbytes=self.out_offset + nbytes)).region
        _view(self.d, self.region, 0, x.dtype, x.shape)[...] = x
        self.out_nbytes = nbytes

    def send(self, **fields) -> int:
        dtype = {np.dtype(np.float32): "float32", np.dtype(np.int64): "int64"}[self.x.dtype]
        self.request_id = self.d.send(m.Infer(
            client_id=self.d.client_id, model=self.model, region=self.region.name, token=self.region.token,
            inputs=[m.InputRef(name="x", dtype=dtype, shape=list(self.x.shape), offset=0, nbytes=self.x.nbytes)],
            outputs=[m.OutputRef(name="y", offset=self.out_offset, nbytes=self.out_nbytes)], **fields))
        return self.request_id

    def y(self) -> np.ndarray:
        return _view(self.d, self.region, self.out_offset, np.float32, self.out_shape).copy()


def _replies(answers, senders) -> dict[bytes, m.InferReply]:
    """Each sender's reply (exactly one per sender), by its connection."""
    by_identity = {}
    for answer in answers:
        assert answer.identity not in by_identity, "two answers for one request"
        sender = next(s for s in senders if s.d.identity == answer.identity)
        by_identity[answer.identity] = decode_reply(answer.frame, m.Infer, sender.request_id)
    assert set(by_identity) == {s.d.identity for s in senders}
    return by_identity


@pytest.fixture
def active(monkeypatch):
    """A client counts as active (others may wait for it) for the whole test, however slow the
    machine: what forms a batch is then decided by the order the test sends in."""
    monkeypatch.setattr(batching, "ACTIVE_WINDOW_NS", 600 * 10**9)


def warm(core, senders) -> None:
    """One request from each sender, so that every one is a known, active client: the first
    runs at once (nobody else is active yet), the others queue and run in the next step."""
    answers = []
    for s in senders:
        s.send()
        frame = s.d.last[2]
        if frame is not None:
            reply = decode_reply(frame, m.Infer, s.request_id)
            assert reply.error is None, reply.error
    answers = core.step()
    while len(core.in_flight):
        answers += core.step(0.05)
    for answer in answers:
        assert decode_reply(answer.frame, m.Infer, answer.request_id).error is None


def _batching_status(core, name: str) -> m.ModelStatus:
    status = Driver(core, b"status").ok(m.Status())
    return next(s for s in status.models if s.name == name)


def demo(**settings) -> ModelConfig:
    return ModelConfig(name="demo", path="builtin:demo", dynamic_batching=True, **settings)


def test_queued_requests_of_several_clients_run_as_one_batch_each_getting_its_own_rows(make_core, active):
    core = make_core(demo(max_queue_delay_us=0))
    rng = np.random.default_rng(3)
    senders = [Sender(core, f"client-{i}".encode(), rng.standard_normal((rows, 64)).astype(np.float32),
                      (rows, 10)) for i, rows in enumerate([1, 2, 1, 3])]
    warm(core, senders)
    before = _batching_status(core, "demo")
    for s in senders:
        s.send()
        assert s.d.last[2] is None  # queued: step() starts the batch
    replies = _replies(core.step(), senders)
    for s in senders:
        reply = replies[s.d.identity]
        assert reply.error is None, reply.error
        assert reply.result.outputs[0].shape == list(s.out_shape)
        np.testing.assert_allclose(s.y(), _demo_expected(s.x), rtol=1e-5, atol=1e-6)
    st = _batching_status(core, "demo")
    assert (st.batching, st.batches - before.batches, st.batch_max, st.requests - before.requests) == \
        ("on", 1, 4, 4)
    assert len(core.in_flight) == 0


def test_a_lone_client_never_waits_for_company(make_core):
    """Nobody else has sent: its request runs at once, in receive(), as an unbatched model's
    would, however long max_queue_delay_us is."""
    core = make_core(demo(max_queue_delay_us=1_000_000))
    s = Sender(core, b"alone", np.ones((1, 64), np.float32), (1, 10))
    for _ in range(3):
        s.send()
        reply = decode_reply(s.d.last[2], m.Infer, s.request_id)
        assert reply.error is None, reply.error
        assert core.batch_due_ns() is None and len(core.in_flight) == 0
    assert _batching_status(core, "demo").batches == 3


def test_a_request_waits_for_an_active_client_and_runs_with_it_once_it_comes(make_core, monkeypatch):
    monkeypatch.setattr(batching, "ACTIVE_WINDOW_NS", 600 * 10**9)  # "active": decided by the test
    core = make_core(demo(max_queue_delay_us=1_000_000))
    a = Sender(core, b"a", np.full((1, 64), 0.5, np.float32), (1, 10))
    b = Sender(core, b"b", np.full((1, 64), -0.5, np.float32), (1, 10))
    b.send()                            # b alone (the only client): run at once
    assert decode_reply(b.d.last[2], m.Infer, b.request_id).error is None
    a.send()                            # b is active and not queued: a waits for it
    assert 0 < core.batch_due_ns() <= 1_000_000_000
    assert core.step() == []
    b.send()                            # everyone who could come has: the batch runs now
    assert core.batch_due_ns() == 0
    replies = _replies(core.step(), [a, b])
    assert all(r.error is None for r in replies.values())
    for s in (a, b):
        np.testing.assert_allclose(s.y(), _demo_expected(s.x), rtol=1e-5, atol=1e-6)
    assert _batching_status(core, "demo").batch_max == 2


def test_no_request_waits_longer_than_max_queue_delay_us(make_core, monkeypatch):
    monkeypatch.setattr(batching, "ACTIVE_WINDOW_NS", 600 * 10**9)
    core = make_core(demo(max_queue_delay_us=2000))
    a = Sender(core, b"a", np.ones((1, 64), np.float32), (1, 10))
    b = Sender(core, b"b", np.ones((1, 64), np.float32), (1, 10))
    b.send()  # alone: run at once
    assert decode_reply(b.d.last[2], m.Infer, b.request_id).error is None
    a.send()  # waits for b, which does not come
    assert core.batch_due_ns() <= 2_000_000
    time.sleep(0.005)  # past the delay: due now
    assert core.batch_due_ns() == 0
    (reply,) = _replies(core.step(), [a]).values()
    assert reply.error is None and reply.result.timing.queue_us >= 2000


def test_a_request_of_another_shape_runs_in_its_own_batch(make_core, active, tmp_path):
    core = make_core(ModelConfig(name="w", path=any_width(tmp_path / "w.onnx"), dynamic_batching=True,
                                 max_queue_delay_us=0))
    rng = np.random.default_rng(4)
    shapes = [(1, 4), (1, 8), (2, 4)]
    senders = [Sender(core, f"c{i}".encode(), rng.standard_normal(shape).astype(np.float32), shape, "w")
               for i, shape in enumerate(shapes)]
    warm(core, senders)
    before = _batching_status(core, "w")
    for s in senders:
        s.send()
    replies = _replies(core.step(), senders)
    for s in senders:
        assert replies[s.d.identity].error is None
        np.testing.assert_allclose(s.y(), np.maximum(s.x, 0))
    st = _batching_status(core, "w")
    assert (st.batches - before.batches, st.batch_max) == (2, 2)  # the two width-4 requests together, width 8 alone


def test_a_request_past_its_deadline_is_refused_and_its_batch_runs_without_it(make_core, active):
    core = make_core(demo(max_queue_delay_us=0))
    late = Sender(core, b"late", np.ones((1, 64), np.float32), (1, 10))
    fine = Sender(core, b"fine", np.full((1, 64), 2.0, np.float32), (1, 10))
    warm(core, [late, fine])
    late.send(deadline_ms=1)
    fine.send()
    time.sleep(0.01)  # the queued request's 1 ms passes before the batch starts
    replies = _replies(core.step(), [late, fine])
    assert replies[b"late"].error.code == ErrorCode.DEADLINE_EXCEEDED
    assert replies[b"fine"].error is None
    np.testing.assert_allclose(fine.y(), _demo_expected(fine.x), rtol=1e-5, atol=1e-6)


def test_the_queue_is_bounded_overloaded_beyond_it_and_the_queued_still_answered(make_core, active):
    core = make_core(demo(max_queue_delay_us=0, max_batch=2, max_queue=1))  # capacity 1 + 1 x 2
    senders = [Sender(core, f"c{i}".encode(), np.full((1, 64), float(i), np.float32), (1, 10))
               for i in range(4)]
    warm(core, senders)
    before = _batching_status(core, "demo")
    for s in senders[:3]:
        s.send()
        assert s.d.last[2] is None
    senders[3].send()
    refused = decode_reply(senders[3].d.last[2], m.Infer, senders[3].request_id)
    assert refused.error.code == ErrorCode.OVERLOADED and "3 requests queued" in refused.error.message
    replies = _replies(core.step(), senders[:3])  # a batch of 2 (max_batch), then the third
    assert all(r.error is None for r in replies.values())
    for s in senders[:3]:
        np.testing.assert_allclose(s.y(), _demo_expected(s.x), rtol=1e-5, atol=1e-6)
    st = _batching_status(core, "demo")
    assert (st.batches - before.batches, st.batch_max, st.errors) == (2, 2, 1)
    assert len(core.in_flight) == 0


def test_a_backend_failure_fails_only_its_batch_each_request_with_the_reason(make_core, active, tmp_path):
    core = make_core(ModelConfig(name="lookup", path=lookup(tmp_path / "l.onnx"), dynamic_batching=True,
                                 max_queue_delay_us=0))
    good = Sender(core, b"good", np.array([[3]], np.int64), (1, 4), "lookup")
    bad = Sender(core, b"bad", np.array([[5]], np.int64), (1, 4), "lookup")
    warm(core, [good, bad])
    before = _batching_status(core, "lookup")
    _view(bad.d, bad.region, 0, np.int64, (1, 1))[...] = 99  # out of the table: ONNX Runtime fails
    good.send()
    bad.send()
    replies = _replies(core.step(), [good, bad])
    for reply in replies.values():
        assert reply.error.code == ErrorCode.BACKEND_ERROR
        assert "failed on a batch of 2 requests" in reply.error.message, reply.error.message
    good.send()  # the next batch runs normally
    (reply,) = _replies(core.step(), [good]).values()
    assert reply.error is None
    np.testing.assert_array_equal(good.y(), [[12, 13, 14, 15]])
    st = _batching_status(core, "lookup")
    assert (st.state, st.requests - before.requests, st.errors - before.errors) == ("ready", 1, 2)


def understates_its_output(path) -> str:
    """y = concat(x, x) for x float32[batch, 4], declared float32[batch, 4]: it returns twice the
    columns its graph says, so an output area sized from the declared shape is too small."""
    graph = helper.make_graph(
        [helper.make_node("Concat", ["x", "x"], ["y"], axis=1)], "understates",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    return _save(graph, path)


def test_a_model_that_understates_its_output_is_refused_batching(make_core, tmp_path):
    """The load check sees a model's real output disagree with the shape it declares."""
    core = make_core(ModelConfig(name="liar", path=understates_its_output(tmp_path / "u.onnx"),
                                 dynamic_batching=True, max_queue_delay_us=0))
    st = _batching_status(core, "liar")
    assert st.state == "ready" and st.batching.startswith("refused") and "split back" in st.batching, st.batching


def test_an_output_area_too_small_for_what_the_model_returned_fails_that_part_alone(tmp_path):
    """Below the load check (which refuses such a model batching, above): if a backend ever
    returns more than a part's area holds, that part fails with its own sizes and its
    batch-mates keep their rows. Driven on a host instance with a real ONNX Runtime session, the
    output bound as data-dependent (shape None: ONNX Runtime allocates it and says its shape)."""
    from types import SimpleNamespace

    from trtd.daemon.backends import TensorBinding
    from trtd.daemon.backends.onnxruntime import OnnxRuntimeBackend
    from trtd.daemon.running.instances import BatchPart, HostInstance

    instance = HostInstance(OnnxRuntimeBackend(understates_its_output(tmp_path / "u.onnx")))
    f32 = np.dtype(np.float32)
    xs = [np.full((1, 4), v, np.float32) for v in (2.0, 3.0)]
    ys = [np.zeros((1, 8), np.float32), np.zeros((1, 4), np.float32)]  # room for 8 columns; the declared 4
    unguarded = SimpleNamespace(guarded=False)  # the daemon's own user's region: used in place
    parts = [BatchPart(unguarded, [TensorBinding("x", f32, (1, 4), x.ctypes.data, x.nbytes)],
                       [TensorBinding("y", f32, None, y.ctypes.data, y.nbytes)], rows=1, first=k)
             for k, (x, y) in enumerate(zip(xs, ys))]
    outcomes, _ = instance.run_batch(parts, 2)
    assert outcomes[0] == {"y": (1, 8)}
    np.testing.assert_array_equal(ys[0], np.full((1, 8), 2.0, np.float32))
    assert isinstance(outcomes[1], OutputTooLarge) and (outcomes[1].needed, outcomes[1].capacity) == (32, 16)
    np.testing.assert_array_equal(ys[1], 0)  # nothing written into the area that was too small
    instance.close()


@pytest.mark.skipif(sys.platform == "win32", reason="guarded regions are POSIX (a Windows mapping cannot shrink)")
def test_a_guarded_region_changed_before_its_batch_runs_fails_that_request_alone(make_core, active):
    """Issue 17 (2c) inside a batch: another user's regions are moved by preadv/pwritev, and a
    client that truncates its region while its request waits for company fails that request
    only. Its batch-mates get their own rows (the whole batch failed before)."""
    core = make_core(demo(max_queue_delay_us=0))
    rng = np.random.default_rng(11)
    senders = [Sender(core, f"member-{i}".encode(), rng.standard_normal((rows, 64)).astype(np.float32),
                      (rows, 10)) for i, rows in enumerate([2, 1, 3])]
    warm(core, senders)
    for s in senders:  # as the core marks the regions of a client that is not its own user
        s.d.core.regions._regions[s.region.name].guarded = True
    before = _batching_status(core, "demo")
    for s in senders:
        s.send()
        assert s.d.last[2] is None  # queued: step() starts the batch
    hostile = senders[1]
    os.truncate(f"/dev/shm/{hostile.region.name}", 0)  # after its check, before the gather
    replies = _replies(core.step(), senders)
    error = replies[hostile.d.identity].error
    assert error.code == ErrorCode.BACKEND_ERROR and "shrank while its request ran" in error.message, error
    for s in (senders[0], senders[2]):
        reply = replies[s.d.identity]
        assert reply.error is None, reply.error
        np.testing.assert_allclose(s.y(), _demo_expected(s.x), rtol=1e-5, atol=1e-6)
    st = _batching_status(core, "demo")
    assert (st.batches - before.batches, st.batch_max, st.errors - before.errors) == (1, 3, 1)


def test_a_model_that_mixes_rows_is_refused_batching_and_served_unbatched(make_core, tmp_path, caplog):
    path = mixes_rows(tmp_path / "mix.onnx")
    core = make_core(ModelConfig(name="mix", path=path, dynamic_batching=True, max_queue_delay_us=0))
    st = _batching_status(core, "mix")
    assert st.state == "ready" and st.batching.startswith("refused: its rows are not independent"), st
    assert "dynamic_batching refused" in caplog.text
    rng = np.random.default_rng(5)
    senders = [Sender(core, f"c{i}".encode(), rng.standard_normal((2, 8)).astype(np.float32), (2, 8), "mix")
               for i in range(3)]
    session = create_session(path)
    for s in senders:  # unbatched: answered at once, each its own batch-mean as when run alone
        s.send()
        reply = decode_reply(s.d.last[2], m.Infer, s.request_id)
        assert reply.error is None, reply.error
        np.testing.assert_allclose(s.y(), session.run(None, {"x": s.x})[0], rtol=1e-5, atol=1e-6)
    assert _batching_status(core, "mix").batches == 0


def test_a_model_without_a_batch_dimension_is_refused_batching(make_core, tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "fixed",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8])])
    core = make_core(ModelConfig(name="fixed", path=_save(graph, tmp_path / "f.onnx"), dynamic_batching=True))
    st = _batching_status(core, "fixed")
    assert st.state == "ready" and "no dynamic batch dimension" in st.batching, st


def test_an_unload_with_batches_queued_answers_every_request_and_leaks_no_region(make_core, active):
    core = make_core(demo(max_queue_delay_us=0))
    senders = [Sender(core, f"c{i}".encode(), np.full((1, 64), float(i), np.float32), (1, 10))
               for i in range(3)]
    warm(core, senders)
    for s in senders:
        s.send()
    Driver(core, b"admin").ok(m.Unload(name="demo"))  # retired in the background: queued ones run
    answers = []
    deadline = time.monotonic() + 30
    while len(answers) < 3 and time.monotonic() < deadline:
        answers += core.step(0.05)
    replies = _replies(answers, senders)
    assert all(r.error is None for r in replies.values())
    for s in senders:
        np.testing.assert_allclose(s.y(), _demo_expected(s.x), rtol=1e-5, atol=1e-6)
        assert s.d.ok(m.Release(client_id=s.d.client_id, region=s.region.name,
                                token=s.region.token)).released_now
    assert len(core.in_flight) == 0


def test_a_stop_that_gives_up_answers_the_queued_requests_as_not_started(make_core, active):
    core = make_core(demo(max_queue_delay_us=0))
    senders = [Sender(core, f"c{i}".encode(), np.ones((1, 64), np.float32), (1, 10)) for i in range(3)]
    warm(core, senders)
    for s in senders:
        s.send()
    replies = _replies(core.give_up_in_flight(), senders)
    for reply in replies.values():
        assert reply.error is not None and reply.error.details.get("started") is False, reply.error
    assert core.step() == [] and len(core.in_flight) == 0  # nothing runs after the give-up


def test_a_reload_that_replaces_the_model_answers_the_queued_requests(make_core, active):
    core = make_core(demo(max_queue_delay_us=0))
    senders = [Sender(core, f"c{i}".encode(), np.full((1, 64), float(i), np.float32), (1, 10))
               for i in range(3)]
    warm(core, senders)
    for s in senders:
        s.send()
    from trtd.daemon.config.settings import DaemonConfig

    reply = core.reload(DaemonConfig(models=[demo(max_queue_delay_us=100)]))
    assert reply.replacing == ["demo"]
    answers = []
    deadline = time.monotonic() + 30
    while (len(answers) < 3 or core.loading) and time.monotonic() < deadline:
        answers += core.step(0.05)
    replies = _replies(answers, senders)
    assert all(r.error is None for r in replies.values())
    assert len(core.in_flight) == 0


def test_batches_on_worker_instances_each_get_their_own_rows_and_a_lone_client_runs_at_once(make_core, active):
    """Two instances: batches run on worker threads (answered through step), but a lone client's
    request still runs at once in receive()."""
    core = make_core(demo(max_queue_delay_us=0, instances=2))
    rng = np.random.default_rng(8)
    senders = [Sender(core, f"c{i}".encode(), rng.standard_normal((1, 64)).astype(np.float32), (1, 10))
               for i in range(6)]
    senders[0].send()
    assert decode_reply(senders[0].d.last[2], m.Infer, senders[0].request_id).error is None
    warm(core, senders[1:])
    for s in senders:
        s.send()
        assert s.d.last[2] is None
    answers = []
    deadline = time.monotonic() + 30
    while len(answers) < len(senders) and time.monotonic() < deadline:
        answers += core.step(0.05)
    replies = _replies(answers, senders)
    for s in senders:
        assert replies[s.d.identity].error is None
        np.testing.assert_allclose(s.y(), _demo_expected(s.x), rtol=1e-5, atol=1e-6)
    assert _batching_status(core, "demo").batch_max >= 2 and len(core.in_flight) == 0
