"""`trtd bench` end to end on a real daemon: sweep, reports, plots, --compare, and peers that cannot
run being reported instead of dropped. Nothing about speed is asserted; counts and shapes are."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")
pytest.importorskip("tqdm")

from trtd.bench import harness  # noqa: E402

SYSTEMS = ("in_process", "daemon_copy", "daemon_zero_copy")
TRITON = ("triton_http", "triton_grpc", "triton_grpc_shm")
COUNT = 25


def _live_children() -> set[int]:
    pids = set()
    for p in psutil.Process().children(recursive=True):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "resource_tracker" not in " ".join(p.cmdline()):
                pids.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return pids


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """One small but complete run: single-client part, a 1- and 2-client sweep, a peer that cannot run."""
    out = tmp_path_factory.mktemp("bench")
    before = _live_children()
    code = harness.main(["--models", "mlp", "--concurrency", "1,2", "--count", str(COUNT), "--warmup", "5",
                         "--iterations", "40", "--peers", "triton",
                         "--peer-env", "/proc/trtd-cannot-create-this", "--out", str(out)])
    assert _live_children() <= before, "the run left processes behind"
    return code, out


def _outputs(out: Path) -> tuple[dict, str, list[Path]]:
    (json_path,) = out.glob("*.json")
    (md_path,) = out.glob("*.md")
    return json.loads(json_path.read_text()), md_path.read_text(), sorted(out.glob("*.png"))


def test_sweep_counts_every_request_of_every_client(first_run):
    code, out = first_run
    assert code == 0
    data, _, _ = _outputs(out)
    points = {(p["system"], p["concurrency"]): p for p in data["sweep"]}
    assert set(points) == {(s, n) for s in SYSTEMS for n in (1, 2)}
    for (system, n), p in points.items():
        assert p["requests"] == COUNT * n and p["errors"] == 0, p
        lat = p["latency"]
        assert 0 < lat["p50_us"] <= lat["p90_us"] <= lat["p99_us"] <= lat["max_us"]
        assert p["throughput_rps"] > 0
        if system == "in_process":
            assert p["server_cpu_us_per_request"] is None
        else:  # the daemon did the work: it used CPU time and has a size
            assert p["server_cpu_us_per_request"] > 0 and p["server_rss_mib_after"] > 10
    assert data["single_client"]["mlp"]["correctness"]["ok"]


def test_a_peer_that_cannot_run_is_reported_with_the_reason(first_run):
    _, out = first_run
    data, markdown, _ = _outputs(out)
    for system in TRITON:
        assert "could not create a virtual environment" in data["unavailable"][system]
    assert "## Not run" in markdown and "/proc/trtd-cannot-create-this" in markdown
    throughput_targets = [t for t in data["targets"] if "Triton" in t["name"]]
    assert throughput_targets and all(t["met"] is None for t in throughput_targets)
    assert all("not judged" in t["detail"] for t in throughput_targets)


def test_report_and_plots(first_run):
    _, out = first_run
    data, markdown, pngs = _outputs(out)
    assert [p.name for p in pngs] == [Path(data["meta"]["plots"]["mlp"]).name]
    assert pngs[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and pngs[0].stat().st_size > 20_000
    assert f"![mlp]({pngs[0].name})" in markdown
    assert data["meta"]["command"].startswith("trtd bench --models mlp")
    for needle in ("## Targets", "## Single client, interleaved", "## Concurrency sweep", "trtd zero-copy",
                   "## Environment", "onnxruntime"):
        assert needle in markdown


def test_compare_prints_the_change(first_run, tmp_path, capsys):
    _, out = first_run
    (old,) = out.glob("*.json")
    code = harness.main(["--models", "mlp", "--concurrency", "1", "--count", "10", "--warmup", "2",
                         "--no-single", "--compare", str(old)])
    assert code == 0
    printed = capsys.readouterr().out
    assert "== change against the run of" in printed
    rows = [line for line in printed.splitlines() if line.startswith("mlp ") and "%" in line]
    # 3 systems x 1 common concurrency x (p50, p99, req/s)
    assert len(rows) == 9, printed


@pytest.mark.parametrize("args, message", [
    (["--compare", "/nonexistent.json"], "not a `trtd bench --json` file"),
    (["--peers", "tensorflow-serving"], "unknown peer"),
    (["--concurrency", "0,2"], "at least 1"),
    (["--models", "nosuchmodel"], "unknown model"),
])
def test_usage_errors(args, message, tmp_path):
    done = subprocess.run([sys.executable, "-m", "trtd.daemon", "bench", *args], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2 and message in done.stderr, done.stderr


@pytest.mark.skipif(os.environ.get("TRTD_TEST_TRITON") != "1",
                    reason="installs PyTriton (~25 s, network) and starts a Triton server: "
                           "set TRTD_TEST_TRITON=1")
def test_triton_peer_for_real(tmp_path):
    code = harness.main(["--models", "mlp", "--concurrency", "1", "--count", "20", "--warmup", "3",
                         "--no-single", "--peers", "triton", "--json", str(tmp_path / "r.json")])
    data = json.loads((tmp_path / "r.json").read_text())
    assert code == 0 and not data["unavailable"], data["unavailable"]
    for system in TRITON:
        (point,) = [p for p in data["sweep"] if p["system"] == system]
        assert point["requests"] == 20 and point["errors"] == 0
    assert data["meta"]["peers"]["triton"]["triton"]
