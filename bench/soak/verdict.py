"""Did anything grow? The soak's verdict over the daemon's samples taken after warm-up.

Pass: zero failed correct requests, and no growth after warm-up: a Theil-Sen slope
(scipy.stats.theilslopes, robust to the odd outlier sample) over the post-warm-up samples,
projected over that span, stays under a tolerance (RSS: 2 % of its median or 4 MiB, whichever
is larger; descriptors, threads, regions, /dev/shm files: under 1); and every region is gone
once the clients have left. A run too short to judge growth (fewer than MIN_STEADY_SAMPLES
samples after the warm-up) fails: it proved nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Fewer samples after warm-up than this give no slope worth judging.
MIN_STEADY_SAMPLES = 5


def judge(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """Per sampled metric: slope, growth over the steady span, tolerance, pass."""
    from scipy.stats import theilslopes

    steady = [s for s in samples if s["t"] >= warmup_s]
    verdict: dict[str, Any] = {}
    if len(steady) < MIN_STEADY_SAMPLES:
        return {"error": f"growth not judged: {len(steady)} sample(s) after the {warmup_s:g} s "
                         f"warm-up, {MIN_STEADY_SAMPLES} needed; run longer (--minutes) or sample "
                         f"more often (--sample-s), or shorten --warmup-s"}
    t = np.array([s["t"] for s in steady])
    span = float(t[-1] - t[0])
    for key in ("rss", "fds", "threads", "regions", "shm_files", "pinned_bytes", "device_used"):
        y = np.array([s[key] for s in steady], dtype=float)
        slope, _, low, high = theilslopes(y, t)
        growth = slope * span
        tolerance = max(0.02 * float(np.median(y)), 4 * 2**20) if key == "rss" else (
            max(0.02 * float(np.median(y)), 1.0) if key in ("pinned_bytes", "device_used") else 1.0)
        verdict[key] = {"slope_per_s": float(slope), "slope_ci": [float(low), float(high)],
                        "growth_over_steady_span": float(growth), "tolerance": tolerance,
                        "first": float(y[0]), "last": float(y[-1]), "median": float(np.median(y)),
                        "pass": bool(growth <= tolerance)}
    verdict["steady_span_s"] = span
    return verdict


def problems(growth: dict[str, Any], failed: int, final: dict[str, Any]) -> list[str]:
    """Why the run fails; empty when it passes. A run whose growth could not be judged fails
    (growth holds "error" then): passing it would claim "no growth" without a measurement."""
    found = []
    if failed:
        found.append(f"{failed} correct request(s) failed")
    if final["regions"] or final["shm_files"]:
        found.append(f"after the clients left: {final['regions']} region(s), "
                        f"{final['shm_files']} file(s) in /dev/shm")
    if "error" in growth:
        found.append(growth["error"])
    found += [f"{key} grew by {v['growth_over_steady_span']:.3g} (tolerance {v['tolerance']:.3g})"
                 for key, v in growth.items() if isinstance(v, dict) and not v["pass"]]
    return found
