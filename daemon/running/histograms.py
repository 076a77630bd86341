"""Cumulative latency and batch-size histograms, and engine build counts, for the metrics endpoint.

Recorded on the socket thread (one call per answered request) and read by the metrics
endpoint's thread at scrape time, so both sides stay cheap and lock-free: a request adds one
to a plain list slot per stage (a bisect on fixed bounds, ~0.5 µs for three stages on the
2-core VM) and a scrape copies the lists (`list(...)` of a list is one C call, atomic under
the GIL). A scrape may see a request's total counted before its sum: the +Inf bucket is the
count, so the exposition stays consistent; the sum lags by at most the requests answered
while it copied. Buckets are Prometheus' cumulative `le` buckets, built at scrape time.
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from dataclasses import dataclass, field
from typing import Callable, TypeVar

# Upper bounds (µs) of the latency buckets: a local daemon answers in tens of microseconds to
# seconds (a large model on the CPU); 2.5x steps keep 18 buckets over that range.
LATENCY_BOUNDS_US = (25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
                     250_000, 500_000, 1_000_000, 2_500_000, 5_000_000, 10_000_000)
# Batch sizes: powers of two up to the largest max_batch in common use.
BATCH_BOUNDS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

# The stages of an infer reply's timing (protocol Timing), in the order they are kept.
HOST_STAGES = ("total", "queue", "compute")
DEVICE_STAGES = ("total", "queue", "h2d", "compute", "d2h")


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """One histogram as a scrape sees it: cumulative counts per bound (the last is +Inf)."""

    cumulative: list[int]
    sum: float  # in the unit of the bounds

    @property
    def count(self) -> int:
        return self.cumulative[-1]


def _snapshot(counts: list[int], total: float) -> HistogramSnapshot:
    copied = list(counts)
    running, cumulative = 0, []
    for n in copied:
        running += n
        cumulative.append(running)
    return HistogramSnapshot(cumulative, total)


class StageHistograms:
    """Per stage of an infer (end to end in the daemon, queue, H2D, compute, D2H): how many
    requests took at most each bound. H2D and D2H only where the model runs on a GPU: on the
    CPU the backend reads and writes the region in place and reports no copies."""

    __slots__ = ("stages", "_counts", "_sums", "_device")

    def __init__(self, device: bool):
        self._device = device
        self.stages = DEVICE_STAGES if device else HOST_STAGES
        self._counts = [[0] * (len(LATENCY_BOUNDS_US) + 1) for _ in self.stages]
        self._sums = [0] * len(self.stages)

    def observe(self, timing) -> None:
        """One answered request's protocol Timing (µs fields). The hot path: no allocation."""
        counts, sums, bounds = self._counts, self._sums, LATENCY_BOUNDS_US
        value = timing.total_us
        counts[0][bisect_left(bounds, value)] += 1
        sums[0] += value
        value = timing.queue_us
        counts[1][bisect_left(bounds, value)] += 1
        sums[1] += value
        if self._device:
            value = timing.h2d_us
            counts[2][bisect_left(bounds, value)] += 1
            sums[2] += value
            value = timing.compute_us
            counts[3][bisect_left(bounds, value)] += 1
            sums[3] += value
            value = timing.d2h_us
            counts[4][bisect_left(bounds, value)] += 1
            sums[4] += value
        else:
            value = timing.compute_us
            counts[2][bisect_left(bounds, value)] += 1
            sums[2] += value

    def snapshot(self) -> dict[str, HistogramSnapshot]:
        """Stage -> its histogram, in µs (read from any thread)."""
        return {stage: _snapshot(self._counts[i], self._sums[i]) for i, stage in enumerate(self.stages)}


class BatchHistogram:
    """Requests per batch a model ran. The hook for dynamic batching (issue 18): whatever
    forms a batch calls `ModelStats.observe_batch(size)` once per batch it runs; until then it
    stays empty and the endpoint leaves it out."""

    __slots__ = ("_counts", "_sum")

    def __init__(self):
        self._counts = [0] * (len(BATCH_BOUNDS) + 1)
        self._sum = 0

    def observe(self, size: int) -> None:
        self._counts[bisect_left(BATCH_BOUNDS, size)] += 1
        self._sum += size

    def snapshot(self) -> HistogramSnapshot:
        return _snapshot(self._counts, self._sum)


R = TypeVar("R")


@dataclass(slots=True)
class BuildCounts:
    """Engine builds (the background builds of the swap, `engines/build.py`'s `build`): how many
    started, were built, came from the cache, failed, and the seconds spent building. Updated
    from the build threads (several models may build at once: a lock, off the hot path)."""

    started: int = 0
    succeeded: int = 0   # built now
    cached: int = 0      # an engine of the same fingerprint was in the cache: nothing built
    failed: int = 0      # raised (a cancelled build counts here too: its process was ended)
    seconds: float = 0.0  # wall time of the builds that ran (succeeded or failed), not of cache hits
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(self, build: Callable[..., tuple[R, bool]], *args, **kwargs) -> tuple[R, bool]:
        """`build(*args, **kwargs)` -> (entry, built now?), counted."""
        with self._lock:
            self.started += 1
        began = time.monotonic()
        try:
            entry, built = build(*args, **kwargs)
        except BaseException:
            with self._lock:
                self.failed += 1
                self.seconds += time.monotonic() - began
            raise
        with self._lock:
            if built:
                self.succeeded += 1
                self.seconds += time.monotonic() - began
            else:
                self.cached += 1
        return entry, built

    def snapshot(self) -> dict[str, float]:
        with self._lock:
            return {"started": self.started, "succeeded": self.succeeded, "cached": self.cached,
                    "failed": self.failed, "seconds": self.seconds}
