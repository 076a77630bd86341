"""TensorRT-RTX on a real GPU it does not support (the lent H200, compute capability 9.0): what
`trtd build`, `trtd doctor`, the backend and a daemon say there, with the real library and the
real GPU (tests/test_rtx_library.py checks the same decisions on every machine with a simulated
H200). Run by `bench/run_on_gpu.sh --rtx`; skipped without a GPU, on an RTX GPU, or without
TensorRT-RTX. Running an engine on an RTX GPU is not tested anywhere: no machine here has one."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install \"trtd[rtx]\")")

from daemon_process import serving, wait_until  # noqa: E402
from trtd.daemon.builtin.onnx_models import builtin_model_path  # noqa: E402
from trtd.daemon.engines import library as libraries  # noqa: E402

GPU = libraries.gpu_of(0)
ONLY_RTX = not libraries.installed().full  # the full TensorRT would be chosen for this GPU instead
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(GPU is None, reason="no GPU here"),
              pytest.mark.skipif(GPU is not None and libraries.rtx_supports(GPU),
                                 reason="an RTX GPU: TensorRT-RTX supports it")]
MLP_PROFILE = "x:1x64,8x64,64x64"


def _trtd(*args, tmp_path):
    return subprocess.run([sys.executable, "-m", "trtd.daemon", *args], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "TRTD_CACHE_DIR": str(tmp_path / "cache"),
                                            "XDG_CONFIG_HOME": str(tmp_path / "xdg")})


@pytest.fixture
def shipped_engine(tmp_path):
    """`trtd build --library tensorrt-rtx` here: it builds for RTX GPUs whatever GPU this is."""
    engine = tmp_path / "mlp.engine"
    out = _trtd("build", str(builtin_model_path("mlp")), "--library", "tensorrt-rtx", "--profile", MLP_PROFILE,
                "-o", str(engine), tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "library: tensorrt-rtx (--library tensorrt-rtx)" in out.stderr
    assert "for sm86,sm89,sm120)" in out.stdout
    return engine


def test_tensorrt_rtx_s_own_validity_check_refuses_this_gpu(shipped_engine):
    runtime = rtx.Runtime(rtx.Logger(rtx.Logger.ERROR))
    validity, diagnostics = runtime.get_engine_validity(shipped_engine.read_bytes())
    flags = [name for name in ("VERSION_MISMATCH", "UNSUPPORTED_CC", "OLD_CUDA_DRIVER", "OLD_CUDA_RUNTIME",
                               "INSUFFICIENT_GPU_MEMORY", "MALFORMED_ENGINE", "CUDA_ERROR")
             if int(diagnostics) & int(getattr(rtx.EngineInvalidityDiagnostics, name))]
    assert validity == rtx.EngineValidity.INVALID and "UNSUPPORTED_CC" in flags, (validity, flags)


def test_the_backend_names_the_gpu_and_what_runs_on_it_instead(shipped_engine):
    from trtd.daemon.backends.base import BackendError
    from trtd.daemon.backends.tensorrt import TensorRTBackend

    with pytest.raises(BackendError) as refused:
        TensorRTBackend(shipped_engine, device=0, library="tensorrt-rtx")
    assert (f"TensorRT-RTX engine mlp.engine cannot run on GPU 0 ({GPU.name}, compute capability "
            f"{GPU.compute_capability}): TensorRT-RTX runs on RTX GPUs") in str(refused.value)
    assert 'engine_library = "tensorrt"' in str(refused.value)


@pytest.mark.skipif(not ONLY_RTX, reason="the full TensorRT is installed: it builds for this GPU")
def test_trtd_build_and_doctor_say_neither_library_supports_this_gpu(tmp_path):
    neither = (f"GPU 0 ({GPU.name}, compute capability {GPU.compute_capability}) is supported by neither "
               f"installed library")
    auto = _trtd("build", str(builtin_model_path("mlp")), "--profile", MLP_PROFILE, tmp_path=tmp_path)
    assert auto.returncode == 1
    assert f"trtd build: a TensorRT-RTX engine cannot be built: {neither}" in auto.stderr
    assert "pip install tensorrt, from NVIDIA's package index" in auto.stderr
    config = tmp_path / "seg.toml"
    config.write_text('[models.seg]\npath = "builtin:mlp"\nbackend = "tensorrt"\ndevice = 0\n')
    doctor = _trtd("doctor", "--config", str(config), tmp_path=tmp_path)
    assert doctor.returncode == 1
    assert "FAIL library      model 'seg': tensorrt-rtx (auto: only TensorRT-RTX is installed)" in doctor.stdout
    assert neither in doctor.stdout


def test_a_daemon_with_rtx_engines_on_this_gpu_stays_up_and_says_why(tmp_path, shipped_engine):
    from trtd.sdk import Client

    config = (f"[models.shipped]\npath = \"{shipped_engine}\"\nbackend = \"tensorrt\"\ndevice = 0\n"
              "[models.onnx_first]\npath = \"builtin:mlp\"\nbackend = \"tensorrt\"\n"
              "engine_library = \"tensorrt-rtx\"\n"
              "[models.demo]\npath = \"builtin:demo\"\n")
    with serving(tmp_path / "d", config) as d:
        with Client(d.endpoint) as c:
            shipped = c.describe("shipped")
            assert shipped.state == "failed"
            assert f"cannot run on GPU 0 ({GPU.name}, compute capability {GPU.compute_capability})" in shipped.error

            def build_state():
                return next(s.build for s in c.status().models if s.name == "onnx_first")

            assert wait_until(lambda: build_state().startswith(("unavailable", "failed")), timeout=120)
            assert build_state().startswith(f"unavailable: TensorRT-RTX does not support GPU 0 ({GPU.name}"), build_state()
            assert build_state().endswith('[library: tensorrt-rtx (engine_library = "tensorrt-rtx")]')
            h = c.model("onnx_first")  # still served, by ONNX Runtime
            assert h(np.zeros((2, 64), np.float32)).shape[0] == 2 and h.last_backend == ("onnxruntime", "")
        status = subprocess.run([sys.executable, "-m", "trtd.daemon", "status", "--endpoint", d.endpoint],
                                capture_output=True, text=True, timeout=60)
        print(status.stdout)  # kept in the GPU run's log: what `trtd status` says on this GPU
        assert ": engine build: unavailable: TensorRT-RTX does not support GPU 0" in status.stdout
        assert ": error: TensorRT-RTX engine mlp.engine cannot run on GPU 0" in status.stdout
        assert d.alive()
