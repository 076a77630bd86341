"""The soak's verdict: a run passes only when growth was judged and nothing grew or failed."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from trtd.bench.soak.verdict import MIN_STEADY_SAMPLES, judge, problems

# The real soak below has its own 180 s bound (its subprocess): above it, so that bound, which
# names the command, is the one that fires (pytest-timeout would only say "Timeout").
pytestmark = pytest.mark.timeout(300)

CLEAN = {"regions": 0, "shm_files": 0}


def _samples(n: int, rss_growth_per_s: float = 0.0, step_s: float = 2.0) -> list[dict]:
    rng = np.random.default_rng(0)
    return [{"t": i * step_s, "rss": 200 * 2**20 + rss_growth_per_s * i * step_s
             + float(rng.integers(0, 64 * 1024)), "fds": 40, "threads": 12, "regions": 3,
             "shm_files": 3, "pinned_bytes": 0, "device_used": 0} for i in range(n)]


def test_flat_samples_pass_and_growth_fails():
    assert problems(judge(_samples(30), warmup_s=10), 0, CLEAN) == []
    grown = problems(judge(_samples(30, rss_growth_per_s=2**20), warmup_s=10), 0, CLEAN)
    assert len(grown) == 1 and grown[0].startswith("rss grew"), grown


def test_too_few_samples_after_warm_up_fail_with_the_reason():
    few = judge(_samples(MIN_STEADY_SAMPLES + 2), warmup_s=2.0 * 3)  # samples at t = 6, 8, ...
    found = problems(few, 0, CLEAN)
    assert len(found) == 1 and "growth not judged" in found[0] and "run longer" in found[0]
    assert problems(judge([], warmup_s=30), 0, CLEAN)[0].startswith("growth not judged: 0 sample")


def test_failed_requests_and_leftover_regions_fail():
    judged = judge(_samples(30), warmup_s=10)
    assert problems(judged, 2, CLEAN) == ["2 correct request(s) failed"]
    assert "1 region(s)" in problems(judged, 0, {"regions": 1, "shm_files": 1})[0]


def test_a_soak_too_short_to_judge_exits_non_zero(tmp_path):
    """A real (seconds-long) soak against a real daemon: it runs its clients, then fails because
    no sample fell after the warm-up, instead of reporting PASS. 0.12 s is far less than starting
    a client process takes: the soak's clock must start when its clients are ready (it once
    started at spawn, and a slow start left a 1.8 s soak with no request at all)."""
    out = subprocess.run([sys.executable, "-m", "trtd.bench.soak", "--clients", "2", "--minutes", "0.002",
                          "--sample-s", "0.5", "--warmup-s", "60", "--out-dir", str(tmp_path),
                          "--tag", "short"], capture_output=True, text=True, timeout=180,
                         env={**os.environ, "TMPDIR": str(tmp_path)})
    assert out.returncode == 1, out.stdout + out.stderr
    assert "FAIL" in out.stdout and "growth not judged" in out.stdout
    result = json.loads(next(tmp_path.glob("*-soak-short.json")).read_text())
    assert result["pass"] is False and result["failed_correct_requests"] == 0
    assert sum(result["requests"].values()) >= 2  # both clients did run
    assert any("growth not judged" in p for p in result["problems"])
