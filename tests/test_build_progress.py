"""Progress of engine builds: TensorRT-RTX's IProgressMonitor through a real build (no GPU
needed), shown by `trtd build` when asked; the elapsed time for a build that says nothing."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trtd.daemon.builtin.onnx_models import builtin_model_path
from trtd.daemon.engines import build as build_module
from trtd.daemon.engines.progress import PROGRESS

pytest.importorskip("tensorrt_rtx", reason="the test extra installs TensorRT-RTX on Linux")


def _build(tmp_path, *extra):
    return subprocess.run([sys.executable, "-m", "trtd.daemon", "build", str(builtin_model_path("mlp")),
                           "--library", "tensorrt-rtx", "--target", "sm86", "--profile", "x:1x64,4x64,8x64",
                           *extra], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TRTD_CACHE_DIR": str(tmp_path)})


def test_a_tensorrt_rtx_build_reports_its_phases_when_asked(tmp_path):
    out = _build(tmp_path / "a", "--progress")
    assert out.returncode == 0, out.stderr
    progress = [line for line in out.stderr.splitlines() if line.startswith(PROGRESS)]
    assert f"{PROGRESS}Building engine: started" in progress[0] and progress[-1] == f"{PROGRESS}Building engine: done"
    assert out.stdout.startswith("built: ")


def test_progress_stays_off_when_stderr_is_not_a_terminal(tmp_path):
    out = _build(tmp_path / "b")
    assert out.returncode == 0, out.stderr
    assert PROGRESS not in out.stderr and "building with TensorRT-RTX" in out.stderr


def test_a_silent_build_process_gets_the_time_it_has_taken(monkeypatch):
    monkeypatch.setattr(build_module, "HEARTBEAT_S", 0.2)
    proc = subprocess.Popen([sys.executable, "-c", "import sys, time; time.sleep(1.6); "
                             "print('said', file=sys.stderr); print('{\"ok\": true}')"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    said: list[str] = []
    stdout, lines = build_module._relay(proc, said.append, started=0.0)
    assert stdout.strip() == '{"ok": true}' and lines == ["said"]
    assert said[-1] == "said"
    assert any(line.startswith(f"{PROGRESS}still building, ") and line.endswith(" s so far") for line in said[:-1])
