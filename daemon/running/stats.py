"""Per-model request counters and a bounded latency window for status percentiles."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trtd.daemon.running.histograms import BatchHistogram, StageHistograms

_WINDOW = 4096  # recent requests kept; status percentiles describe these


@dataclass(slots=True)
class BatchStats:
    """Dynamic batching: batches run, their sizes, and how long requests waited for one."""

    batches: int = 0
    rows: int = 0   # requests over all batches (a batch of one request counts too)
    max_size: int = 0
    _delays_us: np.ndarray = field(default_factory=lambda: np.zeros(_WINDOW, np.float64))
    _delays: int = 0

    def record(self, size: int) -> None:
        self.batches += 1
        self.rows += size
        self.max_size = max(self.max_size, size)

    def record_delay(self, delay_us: float) -> None:
        """How long one request queued before its batch started."""
        self._delays_us[self._delays % _WINDOW] = delay_us
        self._delays += 1

    @property
    def mean_size(self) -> float:
        return self.rows / self.batches if self.batches else 0.0

    def delay_percentiles(self) -> tuple[float, float]:
        """p50 and p99 of the recent requests' queue delays (µs)."""
        filled = min(self._delays, _WINDOW)
        if not filled:
            return 0.0, 0.0
        p50, p99 = np.percentile(self._delays_us[:filled], (50, 99))
        return float(p50), float(p99)


@dataclass(slots=True)
class ModelStats:
    # Named by outcome, not "requests": the wire's `requests` counts these successes only
    # (SPEC 7.8), and a bare "requests" beside "errors" read as the total.
    ok: int = 0
    errors: int = 0
    _latencies_us: np.ndarray = field(default_factory=lambda: np.zeros(_WINDOW, np.float64))
    _filled: int = 0
    # For the metrics endpoint (daemon/serve/metrics.py): errors by their wire code, and, when
    # the endpoint is on (the core calls observe), cumulative histograms of each request's
    # timing and of batch sizes. Read from its thread at scrape time, never locked.
    errors_by_code: dict[str, int] = field(default_factory=dict)
    timings: StageHistograms | None = None
    batches: BatchHistogram | None = None
    batching: "BatchStats" = field(default_factory=lambda: BatchStats())

    @property
    def total(self) -> int:
        return self.ok + self.errors

    def record(self, latency_us: float) -> None:
        """A request that succeeded, with its latency."""
        self._latencies_us[self.ok % _WINDOW] = latency_us
        self.ok += 1
        self._filled = min(self._filled + 1, _WINDOW)

    def record_error(self, code: str = "") -> None:
        """A request that failed after its model and region were found (code: its error code)."""
        self.errors += 1
        if code:
            self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1

    def observe(self, timing, device: bool) -> None:
        """A succeeded request's timing into the histograms (device: the model runs on a GPU,
        so its H2D and D2H copies are timed too)."""
        timings = self.timings
        if timings is None:
            timings = self.timings = StageHistograms(device)
        timings.observe(timing)

    def observe_batch(self, size: int) -> None:
        """One batch of `size` requests run together (dynamic batching calls it per batch)."""
        if self.batches is None:
            self.batches = BatchHistogram()
        self.batches.observe(size)

    def record_batch(self, size: int) -> None:
        """A batch of `size` requests ran as one backend call (dynamic_batching)."""
        self.batching.record(size)

    def percentiles(self) -> tuple[float, float, float]:
        if not self._filled:
            return 0.0, 0.0, 0.0
        p50, p90, p99 = np.percentile(self._latencies_us[: self._filled], (50, 90, 99))
        return float(p50), float(p90), float(p99)
