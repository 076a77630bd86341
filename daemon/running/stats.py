"""Per-model request counters and a bounded latency window for status percentiles."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_WINDOW = 4096  # recent requests kept; status percentiles describe these


@dataclass(slots=True)
class ModelStats:
    # Named by outcome, not "requests": the wire's `requests` counts these successes only
    # (SPEC 7.8), and a bare "requests" beside "errors" read as the total.
    ok: int = 0
    errors: int = 0
    _latencies_us: np.ndarray = field(default_factory=lambda: np.zeros(_WINDOW, np.float64))
    _filled: int = 0

    @property
    def total(self) -> int:
        return self.ok + self.errors

    def record(self, latency_us: float) -> None:
        """A request that succeeded, with its latency."""
        self._latencies_us[self.ok % _WINDOW] = latency_us
        self.ok += 1
        self._filled = min(self._filled + 1, _WINDOW)

    def record_error(self) -> None:
        """A request that failed after its model and region were found."""
        self.errors += 1

    def percentiles(self) -> tuple[float, float, float]:
        if not self._filled:
            return 0.0, 0.0, 0.0
        p50, p90, p99 = np.percentile(self._latencies_us[: self._filled], (50, 90, 99))
        return float(p50), float(p90), float(p99)
