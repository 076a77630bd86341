"""`trtd doctor`: a CPU-only machine passes; missing GPU parts fail only what the models need."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trtd.daemon.system import cuda
from trtd.daemon.config.settings import ModelConfig
from trtd.daemon.commands.doctor import GPU, ONNXRUNTIME, TENSORRT, TENSORRT_BUILD, TORCH, model_needs


def _gpu_here() -> bool:
    try:
        return cuda.available() and cuda.versions()["driver"] > 0 and cuda.device_count() > 0
    except cuda.CudaError:
        return False


needs_no_gpu = pytest.mark.skipif(_gpu_here(), reason="this machine has a GPU: the CPU-only verdict "
                                                      "cannot be seen here")

# Importing a name bound to None in sys.modules raises ImportError: TensorRT is absent for the run.
WITHOUT_TENSORRT = ("import sys; sys.modules.update(dict.fromkeys(['tensorrt', 'tensorrt_lean', "
                    "'tensorrt_lean_bindings'])); ")


def _doctor(*args, tmp_path, prelude=""):
    code = prelude + f"from trtd.daemon.commands.cli import main; sys.exit(main(['doctor', *{list(args)!r}]))"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    return subprocess.run([sys.executable, "-c", "import sys; " + code], capture_output=True, text=True,
                          timeout=120, env=env)


def _parts(model: ModelConfig) -> set[str]:
    return {n.part for n in model_needs(model)}


@pytest.mark.parametrize("model, parts", [
    (ModelConfig("demo", "builtin:demo"), {ONNXRUNTIME}),
    (ModelConfig("g", "m.onnx", device=0), {GPU, ONNXRUNTIME}),
    (ModelConfig("t", "m.onnx", backend="tensorrt"), {GPU, TENSORRT_BUILD, ONNXRUNTIME}),
    (ModelConfig("e", "m.engine", backend="tensorrt"), {GPU, TENSORRT}),
    # The "engine" is ONNX Runtime's optimized model, or there is no swap: no GPU, no TensorRT.
    (ModelConfig("o", "m.onnx", backend="tensorrt", engine_builder="onnxruntime"), {ONNXRUNTIME}),
    (ModelConfig("s", "m.onnx", backend="tensorrt", swap="off"), {ONNXRUNTIME}),
    (ModelConfig("c", "m.pt", backend="torch"), {TORCH}),
    (ModelConfig("cg", "m.pt", backend="torch", device=1), {TORCH, GPU}),
])
def test_what_a_model_needs(model, parts):
    assert _parts(model) == parts


@needs_no_gpu
def test_a_cpu_only_machine_passes(tmp_path):
    config = tmp_path / "cpu.toml"
    config.write_text('[models.demo]\npath = "builtin:demo"\n'
                      '[models.opt]\npath = "builtin:mlp"\nbackend = "tensorrt"\nengine_builder = "onnxruntime"\n')
    out = _doctor("--config", str(config), tmp_path=tmp_path)
    assert out.returncode == 0, out.stdout
    assert out.stdout.splitlines()[-1].split() == ["ok", "verdict", "CPU-only:", "OK", "(no", "configured",
                                                   "model", "needs", "a", "GPU)"]
    assert "FAIL" not in out.stdout
    assert "cuda-python  not installed (optional: no configured model needs it)" in out.stdout


@needs_no_gpu
def test_a_gpu_model_on_a_cpu_only_machine_fails_and_names_the_model(tmp_path):
    config = tmp_path / "gpu.toml"
    config.write_text('[models.seg]\npath = "builtin:demo"\ndevice = 0\n')
    out = _doctor("--config", str(config), tmp_path=tmp_path)
    assert out.returncode == 1
    # cuda-python is absent, or present without a driver: either way the GPU part fails.
    assert any(line.startswith("FAIL cuda") for line in out.stdout.splitlines()), out.stdout
    assert "needed by model 'seg' (device 0)" in out.stdout


def test_without_tensorrt_the_line_is_clean_and_a_tensorrt_model_gets_the_remedy(tmp_path):
    out = _doctor(tmp_path=tmp_path, prelude=WITHOUT_TENSORRT)
    (line,) = [line for line in out.stdout.splitlines() if " tensorrt " in line]
    assert line.strip() == "tensorrt     not installed (optional: no configured model needs it)"
    config = tmp_path / "trt.toml"
    config.write_text('[models.r]\npath = "r.engine"\nbackend = "tensorrt"\n')
    out = _doctor("--config", str(config), tmp_path=tmp_path, prelude=WITHOUT_TENSORRT)
    assert out.returncode == 1
    assert ("-> needed by model 'r' (runs a TensorRT engine): pip install \"trtd[tensorrt-lean]\" to run "
            "version-compatible engines" in " ".join(out.stdout.split()))


def test_without_a_config_flag_the_default_config_file_is_judged(tmp_path):
    default = tmp_path / "xdg" / "trtd" / "trtd.toml"
    default.parent.mkdir(parents=True)
    default.write_text('[models.g]\npath = "builtin:demo"\ndevice = 0\n')
    out = _doctor(tmp_path=tmp_path)
    assert f"config       {default}: 1 model(s), on a GPU: g" in out.stdout
    if not _gpu_here():
        assert out.returncode == 1 and "needed by model 'g' (device 0)" in out.stdout


def test_a_broken_config_or_a_missing_file_is_reported(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[models.b]\npath = 3\n")
    out = _doctor("--config", str(bad), tmp_path=tmp_path)
    assert out.returncode == 1 and f"-> trtd config check {bad}" in out.stdout
    missing = _doctor("--config", str(tmp_path / "none.toml"), tmp_path=tmp_path)
    assert missing.returncode == 2 and "does not exist" in missing.stderr


def test_doctor_names_the_zeromq_library():
    from trtd.daemon.commands.doctor import zeromq_check

    check = zeromq_check()
    assert check.name == "zeromq" and "libzmq" in check.detail and check.ok is None