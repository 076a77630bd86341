"""ONNX first, then the engine: served at once, built in the background, compared, swapped.

The engine here comes from the ONNX Runtime builder (an optimized ONNX model),
so the whole path (spawned build, cache, comparison gate, swap between
requests) runs without TensorRT; with TensorRT the builder is the only change.
"""

from __future__ import annotations

import subprocess
import threading

import numpy as np
import pytest

from daemon_process import serving, wait_until
from trtd.daemon.backends.onnxruntime import create_session
from trtd.daemon.builtin.onnx_models import builtin_model_path
from trtd.sdk import Client


def _build_state(client, model):
    return next(s.build for s in client.status().models if s.name == model)


@pytest.mark.parametrize("instances", [1, 2])
def test_served_at_once_then_swapped_without_a_failed_request(tmp_path, instances):
    reference = create_session(builtin_model_path("demo"))
    seen, errors, stop = [], [], threading.Event()
    config = ("[models.demo]\npath = \"builtin:demo\"\nbackend = \"tensorrt\"\n"
              f"engine_builder = \"onnxruntime\"\ncompare_samples = 6\ninstances = {instances}\n")
    with serving(tmp_path, config) as d:
        def traffic():
            rng = np.random.default_rng(5)
            with Client(d.endpoint) as c:
                h = c.model("demo")
                while not stop.is_set():
                    x = rng.standard_normal((1 + len(seen) % 4, 64), dtype=np.float32)
                    try:
                        np.testing.assert_allclose(h(x), reference.run(None, {"x": x})[0], atol=1e-5)
                    except Exception as exc:
                        errors.append(exc)
                        return
                    seen.append(h.last_backend)

        t = threading.Thread(target=traffic)
        t.start()
        with Client(d.endpoint) as c:
            try:
                assert wait_until(lambda: _build_state(c, "demo").startswith(
                    ("serving engine", "failed", "rejected", "unavailable")), timeout=90)
                assert _build_state(c, "demo").startswith("serving engine"), _build_state(c, "demo")
                count = len(seen)
                assert wait_until(lambda: len(seen) > count + 20, timeout=30)
            finally:
                stop.set()
                t.join()
            assert c.describe("demo").backend == "onnxruntime-optimized"
    assert not errors, errors
    backends = [b for b, _ in seen]
    # ONNX Runtime first (unless the engine was already cached, then the swap is immediate),
    # then the engine, and never back.
    assert backends[-1] == "onnxruntime-optimized" and seen[-1][1]
    first = backends.index("onnxruntime-optimized")
    assert set(backends[:first]) <= {"onnxruntime"}
    assert all(b == "onnxruntime-optimized" for b in backends[first:])


def test_without_a_tensorrt_builder_the_model_stays_on_onnx_runtime(tmp_path):
    with serving(tmp_path, "[models.demo]\npath = \"builtin:demo\"\nbackend = \"tensorrt\"\n") as d:
        with Client(d.endpoint) as c:
            assert wait_until(lambda: _build_state(c, "demo").startswith(("unavailable", "failed")),
                              timeout=60)
            assert "TensorRT" in _build_state(c, "demo") or "GPU" in _build_state(c, "demo")
            h = c.model("demo")
            assert h(np.zeros((1, 64), np.float32)).shape == (1, 10)
            assert h.last_backend == ("onnxruntime", "")


def test_swap_off_stays_on_onnx_runtime(tmp_path):
    config = ("[models.demo]\npath = \"builtin:demo\"\nbackend = \"tensorrt\"\nengine_builder = \"onnxruntime\"\n"
              "swap = \"off\"\n")
    with serving(tmp_path, config) as d:
        with Client(d.endpoint) as c:
            assert _build_state(c, "demo").startswith("off")
            assert c.describe("demo").backend == "onnxruntime"


def _scaled_model(path, scale: float):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "k"], ["y"])], "scaled",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor("k", TensorProto.FLOAT, [], [scale])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), str(path))
    return path


def test_the_comparison_gate_rejects_an_engine_that_computes_something_else(tmp_path):
    from trtd.daemon.backends.onnxruntime import OnnxRuntimeBackend
    from trtd.daemon.running.swap_gate import compare
    from trtd.daemon.running.instances import HostInstance

    reference = OnnxRuntimeBackend(_scaled_model(tmp_path / "a.onnx", 2.0), max_batch=4)
    same = OnnxRuntimeBackend(_scaled_model(tmp_path / "b.onnx", 2.0), max_batch=4)
    other = OnnxRuntimeBackend(_scaled_model(tmp_path / "c.onnx", 2.01), max_batch=4)
    assert compare(reference, HostInstance(same), 4, atol=1e-6, rtol=0).ok
    result = compare(reference, HostInstance(other), 4, atol=1e-6, rtol=0)
    assert not result.ok and "differs beyond" in result.summary() and result.max_rel_l2 > 1e-3


def _build_processes() -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "trtd.daemon.engines.worker" in line]


@pytest.mark.parametrize("how", ["unload", "shutdown"])
def test_unload_or_shutdown_during_a_build_leaves_no_build_behind(tmp_path, how):
    config = ("[models.r]\npath = \"builtin:resnet18\"\nbackend = \"tensorrt\"\n"
              "engine_builder = \"onnxruntime\"\n[models.demo]\npath = \"builtin:demo\"\n")
    with serving(tmp_path, config) as d:
        with Client(d.endpoint) as c:
            if how == "unload":
                c.unload("r")
                assert "r" not in {m.name for m in c.models()}
                assert c.infer("demo", np.zeros((1, 64), np.float32)).shape == (1, 10)
            else:
                d.stop()
        assert wait_until(lambda: not _build_processes(), timeout=10), _build_processes()
        assert "Traceback" not in d.log(), d.log()


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_precision_variant_is_prepared_in_the_background_and_swapped_in(tmp_path, precision):
    from pathlib import Path

    from trtd.daemon.precision.datasets import shapes

    model = Path(__file__).parent.parent / "bench" / "models" / "shapes_classifier.onnx"
    calib, _ = shapes(32, seed=6)
    np.savez(tmp_path / "calib.npz", x=calib)
    config = (f"[models.cls]\npath = \"{model}\"\nprecision = \"{precision}\"\n"
              f"calibration = \"{tmp_path / 'calib.npz'}\"\n")
    with serving(tmp_path, config) as d:
        with Client(d.endpoint) as c:
            assert wait_until(lambda: _build_state(c, "cls").startswith(
                ("serving", "failed", "rejected")), timeout=90)
            assert _build_state(c, "cls").startswith("serving"), _build_state(c, "cls")
            h = c.model("cls")
            x, labels = shapes(16, seed=5)
            predicted = np.concatenate([h(x[i:i + 1]) for i in range(16)]).argmax(1)
            assert h.last_backend[0] == f"onnxruntime-{precision}" and (predicted == labels).mean() >= 0.8


def test_int8_without_calibration_is_a_config_error(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[models.cls]\npath = \"builtin:demo\"\nprecision = \"int8\"\n")
    out = subprocess.run([__import__("sys").executable, "-m", "trtd.daemon", "serve", "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "needs calibration" in out.stderr
