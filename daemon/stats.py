"""Per-model request counters and a bounded latency window for status percentiles."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

_WINDOW = 4096  # recent requests kept; status percentiles describe these


@dataclass(slots=True)
class ModelStats:
    requests: int = 0
    errors: int = 0
    _latencies_us: np.ndarray = field(default_factory=lambda: np.zeros(_WINDOW, np.float64))
    _filled: int = 0

    def record(self, latency_us: float) -> None:
        self._latencies_us[self.requests % _WINDOW] = latency_us
        self.requests += 1
        self._filled = min(self._filled + 1, _WINDOW)

    def percentiles(self) -> tuple[float, float, float]:
        if not self._filled:
            return 0.0, 0.0, 0.0
        p50, p90, p99 = np.percentile(self._latencies_us[: self._filled], (50, 90, 99))
        return float(p50), float(p90), float(p99)
