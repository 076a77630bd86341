"""`trtd bench --batching` end to end on the CPU (tiny points): it serves, measures, judges, writes.

Nothing here times anything: the figures are whatever the machine gives; the test checks that
every point ran, the daemon batched (its status says so) and the report files are complete.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("matplotlib")

from trtd.bench.batching import main  # noqa: E402


def test_the_batching_sweep_writes_its_points_targets_and_plot(tmp_path):
    stem = tmp_path / "batching"
    rc = main(["--batching", "--models", "mlp", "--concurrency", "1,2", "--duration", "0.3",
               "--warmup", "3", "--out", str(stem)])
    assert rc == 0
    report = json.loads(stem.with_suffix(".json").read_text())
    systems = {(p["system"], p["concurrency"]) for p in report["points"]}
    assert systems == {(s, n) for s in ("trtd", "trtd_batched", "trtd_batched_wait") for n in (1, 2)}
    assert all(p["errors"] == 0 and p["requests"] > 0 for p in report["points"])
    served = {s["name"]: s for s in report["daemon_status"]}
    assert served["mlp"]["batching"] == "" and served["mlp_batched"]["batching"] == "on"
    assert served["mlp_batched"]["batches"] > 0
    assert any("one client" in t["target"] for t in report["targets"])
    text = stem.with_suffix(".md").read_text()
    assert "## Targets (issue 18)" in text and "batching.png" in text
    assert stem.with_suffix(".png").stat().st_size > 0
