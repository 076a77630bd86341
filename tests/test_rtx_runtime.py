"""The TensorRT-RTX serving path against the real `tensorrt_rtx` module, on a machine without a
GPU: every runtime member the backend calls exists on its classes (a rename in a release fails
here, not in production), and a real daemon configured with RTX engines stays up and says why
they cannot run. Running an engine needs an RTX GPU: no machine of this project has one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install \"trtd[rtx]\")")

from daemon_process import serving, wait_until  # noqa: E402
from trtd.daemon.builtin.onnx_models import builtin_model_path  # noqa: E402
from trtd.daemon.engines.trt import RTX_RUNTIME_API, import_tensorrt, missing_runtime_api  # noqa: E402


def _no_gpu() -> bool:
    from trtd.daemon.engines.library import gpu_of

    return gpu_of(0) is None


needs_no_gpu = pytest.mark.skipif(not _no_gpu(), reason="this machine has a GPU")


def test_tensorrt_rtx_has_every_member_the_backend_and_the_builder_use():
    trt = import_tensorrt(prefer="rtx")
    assert trt.flavor == "rtx" and trt.library == "tensorrt-rtx" and trt.can_build
    assert missing_runtime_api(trt.module, RTX_RUNTIME_API) == []
    assert sum(len(v) for v in RTX_RUNTIME_API.values()) > 45
    assert trt.cuda_build in ("cu12", "cu13")
    # The builder's calls (engines/builders.py), shared with the full TensorRT.
    for cls, members in {"Builder": ("create_network", "create_builder_config", "create_optimization_profile",
                                     "build_serialized_network", "get_plugin_registry"),
                         "OnnxParser": ("parse_from_file", "num_errors", "get_error"),
                         "ParserError": ("desc", "node", "node_name", "node_operator"),
                         "NetworkDefinitionCreationFlag": ("STRONGLY_TYPED",),
                         "ProfilingVerbosity": ("DETAILED",), "MemoryPoolType": ("WORKSPACE",)}.items():
        assert [m for m in members if not hasattr(getattr(trt.module, cls), m)] == [], cls
    assert trt.wire_dtype(trt.module.DataType.HALF) == "float16"
    # Every TensorRT-RTX context is made from a runtime config: that overload must exist.
    assert "runtime_config: tensorrt_rtx_bindings.tensorrt_rtx.IRuntimeConfig" in \
        trt.module.ICudaEngine.create_execution_context.__doc__


def test_its_validity_check_names_a_malformed_engine():
    """What the backend explains a refused engine with; answered without a GPU."""
    runtime = rtx.Runtime(rtx.Logger(rtx.Logger.ERROR))
    validity, diagnostics = runtime.get_engine_validity(b"not an engine" * 20)
    assert validity == rtx.EngineValidity.INVALID
    assert int(diagnostics) & int(rtx.EngineInvalidityDiagnostics.MALFORMED_ENGINE)


def _rtx_engine(tmp_path):
    """A real TensorRT-RTX engine of the built-in MLP, shipped as `trtd build -o` ships it."""
    engine = tmp_path / "mlp.engine"
    out = subprocess.run([sys.executable, "-m", "trtd.daemon", "build", str(builtin_model_path("mlp")),
                          "--library", "tensorrt-rtx", "--profile", "x:1x64,8x64,64x64", "-o", str(engine)],
                         capture_output=True, text=True, timeout=300,
                         env={**os.environ, "TRTD_CACHE_DIR": str(tmp_path / "cache")})
    assert out.returncode == 0, out.stderr
    return engine


@needs_no_gpu
def test_the_backend_says_why_an_rtx_engine_cannot_run_here(tmp_path):
    from trtd.daemon.backends.base import BackendError
    from trtd.daemon.backends.tensorrt import TensorRTBackend

    engine = _rtx_engine(tmp_path)
    with pytest.raises(BackendError, match=r"TensorRT-RTX engine mlp.engine \(built for sm86,sm89,sm120\) "
                                           r"cannot run here: it needs an RTX GPU as device 0"):
        TensorRTBackend(engine, device=0, library="tensorrt-rtx")


@needs_no_gpu
def test_a_daemon_with_rtx_engines_and_no_gpu_stays_up_and_says_why(tmp_path):
    from trtd.sdk import Client

    engine = _rtx_engine(tmp_path)
    config = (f"[models.shipped]\npath = \"{engine}\"\nbackend = \"tensorrt\"\ndevice = 0\n"  # library: its .json
              "[models.onnx_first]\npath = \"builtin:mlp\"\nbackend = \"tensorrt\"\n"
              "engine_library = \"tensorrt-rtx\"\n"
              "[models.demo]\npath = \"builtin:demo\"\n")
    with serving(tmp_path / "d", config) as d:
        with Client(d.endpoint) as c:
            shipped = c.describe("shipped")
            assert shipped.state == "failed"
            assert "TensorRT-RTX engine mlp.engine (built for sm86,sm89,sm120) cannot run here" in shipped.error

            def build_state():
                return next(s.build for s in c.status().models if s.name == "onnx_first")

            assert wait_until(lambda: build_state().startswith(("unavailable", "failed")), timeout=60)
            assert build_state() == ("unavailable: no GPU here: a TensorRT-RTX engine runs on an RTX GPU "
                                     "[library: tensorrt-rtx (engine_library = \"tensorrt-rtx\")]")
            import numpy as np

            h = c.model("onnx_first")  # still served, by ONNX Runtime
            assert h(np.zeros((2, 64), np.float32)).shape[0] == 2 and h.last_backend == ("onnxruntime", "")
            assert c.model("demo")(np.zeros((1, 64), np.float32)).shape == (1, 10)
        status = subprocess.run([sys.executable, "-m", "trtd.daemon", "status", "--endpoint", d.endpoint],
                                capture_output=True, text=True, timeout=60)
        assert ": engine build: unavailable: no GPU here" in status.stdout
        assert ": error: TensorRT-RTX engine mlp.engine" in status.stdout
        assert d.alive()
