"""Smoke tests of the latency benchmark: it runs end to end against a real daemon subprocess,
writes its reports, and leaves no process or shared-memory segment behind. No speed is asserted:
timings depend on the machine."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import psutil
import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from trtd.bench import latency  # noqa: E402
from trtd.bench.lib import single_client  # noqa: E402

SYSTEMS = ("floor", "in_process", "daemon_copy", "daemon_zero_copy")
SHM = Path("/dev/shm")


def _trtd_segments() -> set[str]:
    return {p.name for p in SHM.glob("trtd*")} if SHM.is_dir() else set()


def _children() -> list[psutil.Process]:
    # The daemon and the floor's echo process are the only children the benchmark starts.
    # multiprocessing's resource tracker (started by the floor's SharedMemory on Python < 3.13)
    # is Python's own helper and lives as long as this process does, by design.
    children = []
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(p.cmdline()):
                children.append(p)
        except psutil.NoSuchProcess:
            pass
    return children


@pytest.fixture
def nothing_left_behind():
    segments, children = _trtd_segments(), {p.pid for p in _children()}
    yield
    assert _trtd_segments() <= segments, "the run left shared-memory segments behind"
    assert {p.pid for p in _children()} <= children, "the run left processes behind"


def test_smoke_mlp(tmp_path, nothing_left_behind):
    json_path, md_path = tmp_path / "bench.json", tmp_path / "bench.md"
    argv = ["--models", "mlp", "--iterations", "30", "--warmup", "5",
            "--json", str(json_path), "--markdown", str(md_path)]

    assert latency.main(argv) == 0

    data = json.loads(json_path.read_text())
    meta = data["meta"]
    assert meta["command"].startswith(sys.executable)
    assert "-m trtd.bench.latency --models mlp --iterations 30 --warmup 5" in meta["command"]
    assert meta["iterations"]["mlp"] == {"timed": 30, "warmup": 5, "block": 30, "settle": 2}
    for key in ("date", "hostname", "platform", "cpu_model", "logical_cores", "python", "versions"):
        assert meta[key], key
    assert set(data["results"]) == {"mlp"}
    result = data["results"]["mlp"]
    assert set(result["systems"]) == set(SYSTEMS)
    for name in SYSTEMS:
        stats = result["systems"][name]
        assert stats["n"] == 30
        assert stats["p50_us"] > 0
        assert stats["min_us"] <= stats["p50_us"] <= stats["p90_us"] <= stats["p99_us"] <= stats["max_us"]
    assert set(result["overheads"]) == {"daemon_copy", "daemon_zero_copy"}
    assert result["floor_p50_us"] == result["systems"]["floor"]["p50_us"]
    correctness = result["correctness"]
    assert correctness["ok"] is True
    assert correctness["max_abs_diff_copy"] <= 1e-5
    assert correctness["max_abs_diff_zero_copy"] <= 1e-5

    markdown = md_path.read_text(encoding="utf-8")
    assert markdown.startswith("# trtd latency benchmark")
    assert "| mlp |" in markdown


def test_error_mid_run_stops_everything(monkeypatch, nothing_left_behind):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(single_client, "bench_model", broken)
    with pytest.raises(RuntimeError, match="boom"):
        latency.main(["--models", "mlp", "--iterations", "10", "--warmup", "1"])


def test_usage_errors():
    assert latency.main(["--models", "nosuchmodel"]) == 2
    assert latency.main(["--iterations", "0"]) == 2


def test_missing_external_daemon(tmp_path, nothing_left_behind):
    endpoint = f"ipc://{tmp_path / 'nobody.sock'}"
    assert latency.main(["--models", "mlp", "--endpoint", endpoint]) == 3
