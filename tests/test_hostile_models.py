"""Models whose declarations are hostile or absurd load as failed; the daemon keeps serving.

A model that declares a dimension of 2**62 used to be served: its largest input size no longer
fit msgpack's integers, so every unfiltered `models` request answered INTERNAL (`trtd demo`
failed for everyone) and its `load` reply was never sent (issue 17.4). It is now refused at
load with the tensor, its shape and its size, and everyone else keeps being answered.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from daemon_process import start_daemon
from trtd.sdk import Client, LoadFailed


def _absurd(path: Path) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2**62])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2**62])
    model = helper.make_model(helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "absurd", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


@pytest.fixture
def daemon(tmp_path):
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo")
    yield d
    assert d.stop() == 0, d.log()


def test_a_model_with_an_absurd_dimension_is_refused_at_load_and_nothing_else_breaks(daemon, tmp_path):
    path = _absurd(tmp_path / "absurd.onnx")
    with Client(daemon.endpoint) as c:
        with pytest.raises(LoadFailed) as e:
            c.load("absurd", str(path))
        assert "input 'x'" in str(e.value) and "4611686018427387904" in str(e.value)
        assert [m.name for m in c.models()] == ["demo"]  # listing every model still works
        assert c.infer("demo", np.zeros((1, 64), np.float32)).shape == (1, 10)
    assert daemon.alive()


def test_a_configured_absurd_model_is_failed_in_status_and_the_rest_serve(tmp_path):
    path = _absurd(tmp_path / "absurd.onnx")
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo", "--model", f"absurd={path}", name="c")
    try:
        with Client(d.endpoint) as c:
            states = {s.name: (s.state, s.error) for s in c.status().models}
            assert states["absurd"][0] == "failed" and "more than any region can hold" in states["absurd"][1]
            assert {m.name: m.state for m in c.models(wait=False)} == {"demo": "ready", "absurd": "failed"}
            assert c.infer("demo", np.zeros((1, 64), np.float32)).shape == (1, 10)
    finally:
        assert d.stop() == 0, d.log()


def test_a_pipe_that_never_stops_writing_fails_that_model_not_the_daemon(daemon, tmp_path):
    """A named pipe sending more than an ONNX file can hold (2 GiB, protobuf's limit) is cut off
    there: it used to be read to its end (6 GiB of zeros was an OOM kill)."""
    import os
    import subprocess

    import psutil

    from trtd.daemon.backends.onnxruntime import MAX_PIPE_MODEL_BYTES

    pipe = tmp_path / "endless.onnx"
    os.mkfifo(pipe)
    writer = subprocess.Popen(f"head -c {MAX_PIPE_MODEL_BYTES + (256 << 20)} /dev/zero > {pipe}",
                              shell=True, stderr=subprocess.DEVNULL)
    try:
        with Client(daemon.endpoint, timeout=120) as c:
            with pytest.raises(LoadFailed) as e:
                c.load("endless", str(pipe))
            assert "more than 2 GiB arrived through the pipe" in str(e.value)
            assert c.infer("demo", np.zeros((1, 64), np.float32)).shape == (1, 10)
        # What was read is let go: the daemon is far below what the pipe sent.
        assert psutil.Process(daemon.pid).memory_info().rss < MAX_PIPE_MODEL_BYTES
    finally:
        writer.kill()
        writer.wait()


def test_unload_and_reload_answer_at_once_while_the_models_queue_is_held(tmp_path):
    """Issue 17.6: with requests held on a two-instance model, `unload` (and a reload that drops
    the model) used to block the socket thread until the queue drained (9.2 s measured, the
    watchdog at risk). Held requests here never finish until the test opens them, so a daemon
    that waited would not answer at all; every held request is answered once opened."""
    from daemon_process import serving, wait_until
    from held_requests import HeldRequest
    from slow_models import held

    held(tmp_path / "held.onnx")
    base = '[models.demo]\npath = "builtin:demo"\n'
    with_held = base + '[models.held]\npath = "held.onnx"\ninstances = 2\nmax_queue = 8\nintra_op_threads = 1\n'
    with serving(tmp_path, with_held, name="u") as d:
        x = np.ones((2, 16), np.float32)
        for drop in ("unload", "reload"):
            clients = [Client(d.endpoint) for _ in range(4)]
            admin = Client(d.endpoint, timeout=10)
            try:
                if drop == "reload":
                    (tmp_path / "u.toml").write_text(with_held)
                    admin.reload()
                    admin.model("held")  # waits until it is in again
                requests = [HeldRequest(c, x, request_id=50 + i) for i, c in enumerate(clients)]
                assert wait_until(lambda: next((s.in_flight for s in admin.status().models
                                                if s.name == "held"), 0) == 4, timeout=30)
                if drop == "unload":
                    admin.unload("held")  # answered although 2 requests run and 2 wait
                else:
                    (tmp_path / "u.toml").write_text(base)
                    assert admin.reload().unloaded == ["held"]
                assert admin.infer("demo", np.zeros((1, 64), np.float32)).shape == (1, 10)
                assert "held" not in [s.name for s in admin.status().models]
                for request in requests:
                    request.open()
                for request in requests:  # none is lost: each finishes and is answered
                    reply = request.reply(timeout_s=30)
                    assert "error" not in reply, reply
                    np.testing.assert_allclose(request.y(), np.tanh(x), rtol=1e-6)
            finally:
                for c in clients + [admin]:
                    c.close()


@pytest.mark.skipif(__import__("sys").platform == "win32", reason="POSIX file modes")
def test_a_model_file_other_users_can_write_is_refused(daemon, tmp_path):
    """A model runs as the daemon's user (TorchScript is code): a file anyone may replace would
    run anyone's code as the daemon (issue 17)."""
    import os
    import shutil

    from trtd.daemon.builtin.onnx_models import builtin_model_path

    path = tmp_path / "shared.onnx"
    shutil.copy(builtin_model_path("demo"), path)
    os.chmod(path, 0o666)
    with Client(daemon.endpoint) as c:
        with pytest.raises(LoadFailed, match="can be changed by its group or other users"):
            c.load("shared", str(path))
        os.chmod(path, 0o644)
        c.load("shared", str(path))
        assert c.infer("shared", np.zeros((1, 64), np.float32)).shape == (1, 10)
