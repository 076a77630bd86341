"""Summary statistics of timed samples: the same percentiles in every benchmark's tables.

Every benchmark times calls with perf_counter_ns and reports numpy's (linear) percentiles of
those samples in microseconds, so that figures from different benchmarks can be set side by side.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np


@dataclass(frozen=True)
class Summary:
    """Summary statistics of one system's timed samples, in microseconds."""

    n: int
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    max_us: float
    min_us: float
    std_us: float

    @classmethod
    def of(cls, samples_ns: Sequence[int] | np.ndarray) -> "Summary":
        us = np.asarray(samples_ns, dtype=np.float64) / 1000.0
        p50, p90, p99 = np.percentile(us, (50, 90, 99))
        return cls(n=len(us), p50_us=float(p50), p90_us=float(p90), p99_us=float(p99),
                   mean_us=float(us.mean()), max_us=float(us.max()), min_us=float(us.min()),
                   std_us=float(us.std()))


def time_calls(call: Callable[[], object], iterations: int, warmup: int) -> list[int]:
    """`warmup` discarded calls, then `iterations` timed ones: nanoseconds per call.

    For one system timed alone; several systems compared in one run are timed by
    trtd.bench.lib.interleave instead, so that machine noise falls on all of them alike."""
    for _ in range(warmup):
        call()
    clock = time.perf_counter_ns
    samples = []
    for _ in range(iterations):
        t0 = clock()
        call()
        samples.append(clock() - t0)
    return samples


def percentiles_us(samples_ns: Sequence[int] | np.ndarray, *qs: float) -> tuple[float, ...]:
    """The percentiles `qs` of nanosecond samples, in microseconds."""
    return tuple(float(v) for v in np.percentile(np.asarray(samples_ns, dtype=np.float64) / 1000.0, qs))
