"""`trtd build` / `trtd cache` / `trtd doctor` through the real CLI, and the lean runtime's API.

The TensorRT builder needs the full TensorRT library, which cannot be installed
here: those paths are exercised through the same machinery with the ONNX
Runtime builder, and the TensorRT-only checks skip with the reason.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trtd.daemon.builtin.onnx_models import builtin_model_path
from trtd.daemon.engines.build import BuildJob, build
from trtd.daemon.engines.builders import BuildError
from trtd.daemon.engines.cache import EngineCache
from trtd.daemon.engines.fingerprint import BuildEnvironment, BuildOptions


def _trtd(*args, cache, check=False):
    out = subprocess.run([sys.executable, "-m", "trtd.daemon", *args], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "TRTD_CACHE_DIR": str(cache)})
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_build_then_cached_then_verify_list_clear(tmp_path):
    model = builtin_model_path("demo")
    first = _trtd("build", str(model), "--builder", "onnxruntime", "--name", "demo", cache=tmp_path, check=True)
    assert first.stdout.startswith("built: ")
    second = _trtd("build", str(model), "--builder", "onnxruntime", "--name", "demo", cache=tmp_path, check=True)
    assert second.stdout.startswith("cached: ")
    listing = _trtd("cache", "list", cache=tmp_path, check=True).stdout
    assert listing.startswith("demo ") and "onnxruntime" in listing
    # Another name for the same model and options shares the engine.
    other = _trtd("build", str(model), "--builder", "onnxruntime", "--name", "other", cache=tmp_path, check=True)
    assert other.stdout.startswith("cached: ")
    assert _trtd("cache", "verify", cache=tmp_path, check=True).stdout.startswith("ok ")
    (engine,) = (tmp_path / "engines").glob("*.onnx")  # named for what it is: an ONNX model
    assert not list((tmp_path / "engines").glob("*.engine"))
    engine.write_bytes(engine.read_bytes()[:100])  # truncated on disk
    bad = _trtd("cache", "verify", cache=tmp_path)
    assert bad.returncode == 1 and "checksum mismatch" in bad.stdout
    rebuilt = _trtd("build", str(model), "--builder", "onnxruntime", "--name", "demo", cache=tmp_path, check=True)
    assert rebuilt.stdout.startswith("built: ")  # a damaged engine is rebuilt, never used
    assert "removed 1 engine" in _trtd("cache", "clear", cache=tmp_path, check=True).stdout


def test_the_built_artifact_runs(tmp_path):
    import numpy as np
    import onnxruntime as ort

    entry, built = build(BuildJob("demo", str(builtin_model_path("demo")), builder="onnxruntime",
                                  cache_root=str(tmp_path)))
    assert built
    session = ort.InferenceSession(entry.engine_path.read_bytes(), providers=["CPUExecutionProvider"])
    reference = ort.InferenceSession(str(builtin_model_path("demo")), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((3, 64), dtype=np.float32)
    np.testing.assert_allclose(session.run(None, {"x": x})[0], reference.run(None, {"x": x})[0], atol=1e-5)


def test_corrupt_onnx_is_a_clear_build_error(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 this is not a model")
    with pytest.raises(BuildError, match="ONNX Runtime rejected"):
        build(BuildJob("bad", str(bad), builder="onnxruntime", cache_root=str(tmp_path / "c")))
    out = _trtd("build", str(bad), "--builder", "onnxruntime", cache=tmp_path / "c")
    assert out.returncode == 1 and "trtd build:" in out.stderr
    assert not list((tmp_path / "c" / "engines").glob("*.onnx"))


def test_profile_that_contradicts_the_model_is_refused_before_building(tmp_path):
    out = _trtd("build", str(builtin_model_path("resnet18")), "--profile",
                "x:1x3x256x256,2x3x256x256,4x3x256x256", cache=tmp_path)
    assert out.returncode == 1 and "fixed at 224" in out.stderr


def test_missing_onnx_file(tmp_path):
    out = _trtd("build", str(tmp_path / "none.onnx"), "--builder", "onnxruntime", cache=tmp_path)
    assert out.returncode == 1 and "does not exist" in out.stderr


def test_new_external_weights_make_a_new_engine(tmp_path):
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    model = onnx.load(str(builtin_model_path("demo")))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="w.data", size_threshold=0)
    onnx.save(model, str(tmp_path / "m.onnx"))
    job = BuildJob("m", str(tmp_path / "m.onnx"), builder="onnxruntime", cache_root=str(tmp_path / "c"))
    first, _ = build(job)
    data = bytearray((tmp_path / "w.data").read_bytes())
    data[0] ^= 0xFF
    (tmp_path / "w.data").write_bytes(bytes(data))
    second, built = build(job)
    assert built and second.fingerprint != first.fingerprint


def test_two_processes_build_one_engine_once(tmp_path):
    model = str(builtin_model_path("resnet18"))
    procs = [subprocess.Popen([sys.executable, "-m", "trtd.daemon", "build", model, "--builder", "onnxruntime",
                               "--name", "r"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "TRTD_CACHE_DIR": str(tmp_path)}) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert sorted(o.split(":")[0] for o in outs) == ["built", "cached"], outs
    assert len(EngineCache(tmp_path).entries()) == 1


def _can_build_tensorrt() -> bool:
    """The full TensorRT (not TensorRT-RTX, which builds anywhere it is installed)."""
    from trtd.daemon.commands.engines import tensorrt_build_problem

    return tensorrt_build_problem("m.onnx", 0, "tensorrt") is None


@pytest.mark.skipif(_can_build_tensorrt(), reason="this machine can build TensorRT engines")
def test_trtd_build_where_tensorrt_cannot_build_says_what_is_missing_and_what_works(tmp_path):
    model = str(builtin_model_path("demo"))
    out = _trtd("build", model, "--library", "tensorrt", "--profile", "x:1x64,4x64,8x64", cache=tmp_path)
    assert out.returncode == 1 and out.stdout == ""
    lines = out.stderr.splitlines()
    assert lines[0] == "trtd build: a TensorRT engine cannot be built on this machine. Missing:"
    missing = [line for line in lines if line.startswith("  - ")]
    assert missing and all(("TensorRT library" in m or "GPU" in m or "TensorRT-RTX" in m) for m in missing)
    assert any(line.split() == ["trtd", "build", model, "--builder", "onnxruntime", *line.split()[5:]]
               for line in lines)
    assert any(line.strip().startswith(f"trtd serve --model NAME={model}") for line in lines)
    # ... and what it points to works here.
    instead = _trtd("build", model, "--builder", "onnxruntime", cache=tmp_path)
    assert instead.returncode == 0, instead.stderr


def test_a_wrong_profile_and_a_machine_that_cannot_build_are_reported_together(tmp_path):
    out = _trtd("build", str(builtin_model_path("resnet18")), "--library", "tensorrt", "--profile",
                "x:1x3x256x256,2x3x256x256,4x3x256x256", cache=tmp_path)
    assert out.returncode == 1 and out.stderr.startswith("trtd build: profile 0: input 'x' dimension 2 "
                                                         "is fixed at 224")
    assert ("cannot be built on this machine" in out.stderr) != _can_build_tensorrt()


def test_the_onnxruntime_builder_writes_a_portable_onnx_model_quietly(tmp_path):
    """The artifact is named .onnx, keeps no CPU-specific layout (NCHWc: a cache shared with
    another CPU would serve it), and ONNX Runtime's warnings do not reach the terminal."""
    import onnx

    model = tmp_path / "conv.onnx"
    onnx.save(_conv_model(), model)
    out = _trtd("build", str(model), "--builder", "onnxruntime", cache=tmp_path / "c", check=True)
    (artifact,) = (tmp_path / "c" / "engines").glob("*.onnx")
    assert out.stdout.startswith(f"built: {artifact} ")
    assert out.stderr.splitlines() == [f"optimized with ONNX Runtime {_ort_version()}"]
    domains = {node.domain for node in onnx.load(str(artifact)).graph.node}
    assert not any("nchwc" in d for d in domains), domains


def _ort_version() -> str:
    import onnxruntime

    return onnxruntime.__version__


def _conv_model():
    """A convolution with enough channels for ONNX Runtime's NCHWc layout transform (on ALL)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((16, 16, 3, 3), dtype=np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])],
        "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 32, 32])], initializer=[w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_tensorrt_build_without_tensorrt_says_what_to_install(tmp_path):
    try:
        import tensorrt  # noqa: F401
        pytest.skip("the full TensorRT is installed here")
    except ImportError:
        pass
    with pytest.raises(ImportError, match="pip install tensorrt"):
        build(BuildJob("demo", str(builtin_model_path("demo")), cache_root=str(tmp_path)),
              env=None)


def test_environment_is_part_of_the_fingerprint(tmp_path):
    job = BuildJob("demo", str(builtin_model_path("demo")), builder="onnxruntime", cache_root=str(tmp_path))
    a, _ = build(job, env=BuildEnvironment("onnxruntime-x", "cpu", "-", "Linux", 0))
    b, built = build(job, env=BuildEnvironment("onnxruntime-y", "cpu", "-", "Linux", 0))
    assert built and a.fingerprint != b.fingerprint


def test_doctor_runs_and_reports(tmp_path):
    out = _trtd("doctor", cache=tmp_path)
    assert "onnxruntime" in out.stdout and "/dev/shm" in out.stdout and out.returncode in (0, 1)


def test_tensorrt_runtime_has_every_member_the_backend_uses():
    from trtd.daemon.engines.trt import RUNTIME_API, TensorRTUnavailable, import_tensorrt, missing_runtime_api

    try:
        trt = import_tensorrt()
    except TensorRTUnavailable as exc:
        pytest.skip(f"no TensorRT runtime here: {exc}")
    assert missing_runtime_api(trt.module) == []
    assert sum(len(v) for v in RUNTIME_API.values()) > 25
    assert trt.major >= 10
    assert trt.wire_dtype(trt.module.DataType.HALF) == "float16"
    with pytest.raises(TypeError, match="cannot be carried"):
        trt.wire_dtype(trt.module.DataType.FP8)


def test_tensorrt_model_on_a_machine_without_gpu_fails_clearly(tmp_path):
    from daemon_process import serving
    from trtd.sdk import Client

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not an engine")
    with serving(tmp_path, f"[models.trt]\npath = \"{engine}\"\nbackend = \"tensorrt\"\n"
                           "[models.demo]\npath = \"builtin:demo\"\n") as d:
        with Client(d.endpoint) as c:
            info = c.describe("trt")
            assert info.state == "failed" and "GPU" in info.error


def test_verify_tensorrt_writes_a_report_that_says_why_steps_did_not_run(tmp_path):
    report = tmp_path / "report.json"
    out = subprocess.run([sys.executable, "-m", "trtd.bench.verify_tensorrt", "--onnx",
                          str(builtin_model_path("demo")), "--report", str(report)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TRTD_CACHE_DIR": str(tmp_path / "cache")})
    import json

    data = json.loads(report.read_text())
    assert set(data["steps"]) >= {"build", "load", "compare_onnxruntime", "latency", "memory_cycles"}
    if not data["steps"]["build"]["ok"]:  # no TensorRT builder here: the report says so
        assert out.returncode == 1 and "TensorRT" in data["steps"]["build"]["error"]
        assert data["steps"]["latency"]["error"].startswith("skipped")
    assert report.with_suffix(".md").read_text().startswith("# trtd TensorRT verification")


def test_missing_plugin_library_is_a_clear_error(tmp_path):
    out = _trtd("build", str(builtin_model_path("demo")), "--builder", "onnxruntime", "--plugin",
                str(tmp_path / "libmissing.so"), cache=tmp_path)
    assert out.returncode == 1 and "plugin library" in out.stderr and "does not exist" in out.stderr


def test_tensorrt_messages_are_kept_for_error_messages():
    from trtd.daemon.engines.trt import TensorRTUnavailable, capturing_logger, import_tensorrt

    try:
        trt = import_tensorrt().module
    except TensorRTUnavailable as exc:
        pytest.skip(str(exc))
    seen = []
    logger = capturing_logger(trt, seen.append)
    logger.log(trt.ILogger.Severity.INFO, "chatter")
    logger.log(trt.ILogger.Severity.WARNING, "careful")
    logger.log(trt.ILogger.Severity.ERROR, "broken")
    assert logger.messages == ["careful", "broken"] and logger.errors == ["broken"]
    assert seen == ["TensorRT: careful", "TensorRT: broken"]
