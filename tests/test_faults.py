"""Faults injected into a real daemon: failing and memory-hungry models, deadlines, releases
under running requests, a /dev/shm without room. Each one: a clear error, the daemon serves on.

Covered elsewhere (see bench/results/reliability.md): client SIGKILLed mid-request and leasing in a
loop (test_bad_input.py), daemon SIGKILLed and replaced (test_daemon_lifecycle.py,
test_hardening.py), full queues and unload while busy (test_instances.py).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time

import msgpack
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from daemon_process import DaemonProcess, serving, shm_names, wait_ready, wait_until
from held_requests import HeldRequest
from slow_models import held
from trtd.daemon.backends.onnxruntime import create_session
from trtd.daemon.builtin.onnx_models import builtin_model_path
from trtd.protocol import messages as m
from trtd.protocol.codec import encode_request
from trtd.sdk import Client, DeadlineExceeded, ServerError



def _save(model: onnx.ModelProto, path) -> str:
    model.opset_import[0].version = 17
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


def gather_model(path) -> str:
    """y = table[idx]: ONNX Runtime raises at run time for an index outside the table."""
    table = helper.make_tensor("table", TensorProto.FLOAT, [10], [float(i) * 1.5 for i in range(10)])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "idx"], ["y"], axis=0)], "gather",
        [helper.make_tensor_value_info("idx", TensorProto.INT64, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])], [table])
    return _save(helper.make_model(graph), path)


def fill_model(path) -> str:
    """y = zeros(shape): the output's size is the input's value, so a request can ask for more
    memory than the machine (or the address space) has."""
    graph = helper.make_graph(
        [helper.make_node("ConstantOfShape", ["shape"], ["y"],
                          value=helper.make_tensor("v", TensorProto.FLOAT, [1], [2.0]))], "fill",
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["k"])])
    return _save(helper.make_model(graph), path)


@pytest.fixture(scope="module")
def busy(tmp_path_factory):
    """held (slow_models.held) on two worker instances with a queue; demo inline."""
    workdir = tmp_path_factory.mktemp("busy")
    held(workdir / "held.onnx")
    with serving(workdir,
                 "reclaim_interval_s = 0.2\n"
                 "[models.held]\npath = \"held.onnx\"\ninstances = 2\nmax_queue = 8\nintra_op_threads = 1\n"
                 "[models.demo]\npath = \"builtin:demo\"\n") as d:
        yield d


# -- backends that fail ----------------------------------------------------------------------------


def test_backend_error_fails_the_request_and_the_model_stays_usable(busy, tmp_path):
    with Client(busy.endpoint) as c:
        c.load("gather", gather_model(tmp_path / "gather.onnx"))
        try:
            idx = np.array([3, 0, 9], np.int64)
            np.testing.assert_array_equal(c.infer("gather", idx), [4.5, 0.0, 13.5])
            with pytest.raises(ServerError) as e:
                c.infer("gather", np.array([3, 100], np.int64))
            assert e.value.code == "BACKEND_ERROR" and "'gather'" in str(e.value)
            assert "100" in str(e.value)  # ONNX Runtime's reason: the index out of range
            np.testing.assert_array_equal(c.infer("gather", idx), [4.5, 0.0, 13.5])
            status = next(s for s in c.status().models if s.name == "gather")
            assert status.state == "ready" and status.errors == 1
        finally:
            c.unload("gather")


def test_backend_out_of_memory_fails_the_request_and_the_model_stays_usable(busy, tmp_path):
    with Client(busy.endpoint) as c:
        c.load("fill", fill_model(tmp_path / "fill.onnx"))
        try:
            np.testing.assert_array_equal(c.infer("fill", np.array([5], np.int64)), np.full(5, 2.0))
            rss = c.status().rss_bytes
            # 2**46 floats = 256 TiB: beyond the address space whatever the overcommit policy.
            with pytest.raises(ServerError) as e:
                c.infer("fill", np.array([2**46], np.int64))
            assert e.value.code == "BACKEND_ERROR" and "'fill'" in str(e.value)
            np.testing.assert_array_equal(c.infer("fill", np.array([7], np.int64)), np.full(7, 2.0))
            assert c.status().rss_bytes < rss + (64 << 20)
        finally:
            c.unload("fill")


# -- deadlines -------------------------------------------------------------------------------------


def _held_in_flight(c: Client) -> int:
    return next(s.in_flight for s in c.status().models if s.name == "held")


class _Blockers:
    """Two held requests, one per worker instance: what is sent next waits in the queue until
    open() (however fast the machine runs them)."""

    def __init__(self, endpoint: str):
        self.clients = [Client(endpoint) for _ in range(2)]
        self.watcher = Client(endpoint)  # its own socket: a status call drops replies not its own
        self.requests: list[HeldRequest] = []

    def send(self) -> None:
        x = np.ones((4, 16), np.float32)
        self.requests = [HeldRequest(c, x, request_id=100) for c in self.clients]
        self.wait_in_flight(2)

    def wait_in_flight(self, n: int) -> None:
        assert wait_until(lambda: _held_in_flight(self.watcher) == n, timeout=30, interval=0.005), \
            f"in flight: {_held_in_flight(self.watcher)}, expected {n}"

    def open_and_collect(self) -> list[dict]:
        for r in self.requests:
            r.open()
        return [r.reply() for r in self.requests]

    def close(self) -> None:
        for r in self.requests:
            r.open()  # never leave a worker spinning
        for r in self.requests:
            r.client.release(r.region)
        for c in self.clients:
            c.close()
        self.watcher.close()


def test_deadline_passed_in_the_queue_fails_without_running(busy):
    x = np.random.default_rng(3).standard_normal((8, 16), dtype=np.float32)
    expected = np.tanh(x)
    blockers = _Blockers(busy.endpoint)
    try:
        with Client(busy.endpoint) as late, Client(busy.endpoint) as patient:
            blockers.send()
            # Both queue behind the two held requests (FIFO); go = 1: each runs at once when reached.
            late_req = HeldRequest(late, x, request_id=7, deadline_ms=1, open_now=True)
            patient_req = HeldRequest(patient, x, request_id=8, deadline_ms=600_000, open_now=True)
            blockers.wait_in_flight(4)
            time.sleep(0.01)  # past the late one's 1 ms in the queue, on any machine
            assert all(r["ok"] for r in blockers.open_and_collect())
            reply = late_req.reply()
            assert reply["ok"] is False and reply["error"]["code"] == "DEADLINE_EXCEEDED", reply
            assert "did not run" in reply["error"]["message"]
            assert reply["error"]["details"]["deadline_ms"] == 1
            assert reply["error"]["details"]["waited_ms"] > 1
            assert patient_req.reply()["ok"] is True
            np.testing.assert_allclose(patient_req.y(), expected, rtol=1e-6, atol=1e-6)
            # The late one never ran: its output slot is as leased (zeros).
            assert not late_req.y().any()

            # Through the SDK: the same error as an exception, and the handle stays usable.
            handle = late.model("held")
            slots = handle.zero_copy_inputs({"x": x.shape})  # leased and written before the queue fills
            slots["x"][...], slots["go"][...] = x, 1
            blockers.send()
            opener = threading.Thread(target=_open_when_queued, args=(blockers, 3))
            opener.start()
            try:
                with pytest.raises(DeadlineExceeded, match="did not run"):
                    handle.run_zero_copy(deadline_ms=1)
            finally:
                opener.join()
            np.testing.assert_allclose(handle.run_zero_copy(deadline_ms=600_000)["y"], expected,
                                       rtol=1e-6, atol=1e-6)
            with pytest.raises(Exception, match="deadline_ms must be >= 0"):
                late.infer("demo", np.zeros((1, 64), np.float32), deadline_ms=-5)
            for c, r in ((late, late_req), (patient, patient_req)):
                c.release(r.region)
            assert wait_until(lambda: _held_in_flight(late) == 0, timeout=30)
    finally:
        blockers.close()


def _open_when_queued(blockers: _Blockers, in_flight: int) -> None:
    """Open the blockers once the request sent after them is queued and past a 1 ms deadline."""
    try:
        blockers.wait_in_flight(in_flight)
        time.sleep(0.01)
    finally:
        assert all(r["ok"] for r in blockers.open_and_collect())


# -- releases under running requests ---------------------------------------------------------------


def test_release_while_the_request_runs_is_deferred_until_it_ends(busy):
    x = np.random.default_rng(4).standard_normal((8, 16), dtype=np.float32)
    with Client(busy.endpoint) as c, Client(busy.endpoint) as watcher:
        request = HeldRequest(c, x, request_id=1)  # running, on a worker, until opened
        assert wait_until(lambda: _held_in_flight(watcher) == 1, timeout=30, interval=0.005)
        region = request.region
        c._conn._socket.send(encode_request(m.Release(client_id=c.client_id, region=region.name,
                                                      token=region.token), 2))
        assert c._conn._socket.poll(30_000)
        released = msgpack.unpackb(c._conn._socket.recv())
        assert released["id"] == 2 and released["ok"] and released["result"]["released_now"] is False, released
        assert region.name in shm_names()  # it lives while the request runs
        request.open()
        reply = request.reply()
        assert reply["ok"], reply
        # The daemon wrote the output into it, then let it go.
        np.testing.assert_allclose(request.y(), np.tanh(x), rtol=1e-6, atol=1e-6)
        assert wait_until(lambda: region.name not in shm_names(), timeout=10)
        request.go = None
        region.close()
        again = m.Infer(client_id=c.client_id, model="held", region=region.name, token=region.token,
                        inputs=request.request.inputs, outputs=request.request.outputs)
        with pytest.raises(Exception, match="released"):
            c._call(again)
    assert busy.alive()


# -- /dev/shm without room -------------------------------------------------------------------------


_IN_NAMESPACE = textwrap.dedent("""
    import json, sys
    import numpy as np
    from trtd.sdk import Client, QuotaExceeded, RegionError
    out = {}
    with Client(sys.argv[1]) as c:
        handle = c.model("demo")
        x = np.arange(64, dtype=np.float32).reshape(1, 64)
        handle.zero_copy_inputs()   # the handle's region is leased now, its pages untouched
        held = []
        for size in (1 << 20, 64 << 10, 4096):  # fill the file system to the last page
            while True:
                try:
                    held.append(c.lease(size))
                except (RegionError, QuotaExceeded) as exc:
                    out.setdefault("codes", []).append(exc.code)
                    out["message"] = str(exc)
                    break
        out["held"] = len(held)
        # Reserved at lease time: the daemon writes outputs into a full file system, no SIGBUS.
        out["y"] = handle.infer(x).tolist()
        for region in held:
            c.release(region)
        out["again"] = c.lease(1 << 20).nbytes
    print(json.dumps(out))
""")


def _namespace_tools() -> bool:
    return (sys.platform == "linux" and os.geteuid() == 0 and shutil.which("unshare") is not None
            and shutil.which("nsenter") is not None
            and subprocess.run(["unshare", "-m", "true"], capture_output=True).returncode == 0)


@pytest.mark.skipif(not _namespace_tools(), reason="needs root, unshare and nsenter (CI runs as root)")
def test_full_dev_shm_is_a_clear_error_at_lease_time_never_a_sigbus(tmp_path):
    """The daemon runs in its own mount namespace with an 8 MiB tmpfs on /dev/shm."""
    endpoint = f"ipc://{tmp_path / 'd.sock'}"
    log = tmp_path / "d.log"
    mount = "mount -t tmpfs -o size=8m trtd-test /dev/shm && exec \"$@\""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", mount, "sh", sys.executable,
             "-m", "trtd.daemon", "serve", "--endpoint", endpoint, "--model", "demo=builtin:demo"],
            stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "TRTD_RUNTIME_DIR": str(tmp_path / "run")})
    d = DaemonProcess(endpoint, proc, log)
    try:
        wait_ready(d)
        before = shm_names()
        run = subprocess.run(["nsenter", "-t", str(proc.pid), "-m", sys.executable, "-c", _IN_NAMESPACE,
                              endpoint], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr + d.log()
        result = json.loads(run.stdout)
        assert result["codes"] == ["NO_SPACE"] * 3, result
        assert "/dev/shm" in result["message"] and "enlarge" in result["message"]
        assert result["held"] >= 6
        expected = create_session(builtin_model_path("demo")).run(
            None, {"x": np.arange(64, dtype=np.float32).reshape(1, 64)})[0]
        np.testing.assert_allclose(result["y"], expected, atol=1e-6)
        assert result["again"] == 1 << 20
        assert d.alive()
        assert shm_names() == before  # the host's /dev/shm never saw these regions
    finally:
        assert d.stop() == 0, d.log()
