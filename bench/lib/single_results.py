"""What the single-client benchmark measures per model, and the overhead target it judges.

Four systems on the same seeded inputs (see trtd.bench.lib.floor and trtd.bench.lib.systems):
the floor, in-process ONNX Runtime, and the daemon's copying and zero-copy paths. Overhead =
daemon p50 - in-process p50 (for each daemon path); the target is overhead p50 <= 2 x floor
p50. `python -m trtd.bench.latency` and `trtd bench` report these results.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .stats import Summary

TOLERANCE = 1e-5
TARGET_RATIO = 2.0  # overhead p50 must be at most this many floor p50s

# Keys in the JSON, and the order of rows everywhere.
SYSTEMS = ("floor", "in_process", "daemon_copy", "daemon_zero_copy")
SYSTEM_LABELS = {
    "floor": "floor (zmq rt + memcpy)",
    "in_process": "in-process ORT",
    "daemon_copy": "daemon copy",
    "daemon_zero_copy": "daemon zero-copy*",
}
DAEMON_SYSTEMS = ("daemon_copy", "daemon_zero_copy")


@dataclass(frozen=True)
class Overhead:
    """One daemon path against in-process ONNX Runtime, measured in floors."""

    overhead_p50_us: float  # daemon p50 - in-process p50
    ratio_to_floor: float   # overhead p50 / floor p50
    target_met: bool        # ratio <= TARGET_RATIO

    @classmethod
    def of(cls, daemon: Summary, in_process: Summary, floor: Summary) -> "Overhead":
        overhead = daemon.p50_us - in_process.p50_us
        ratio = overhead / floor.p50_us
        return cls(overhead_p50_us=overhead, ratio_to_floor=ratio, target_met=ratio <= TARGET_RATIO)


@dataclass(frozen=True)
class Correctness:
    """Both daemon paths' outputs against in-process ONNX Runtime, checked once before timing."""

    max_abs_diff_copy: float
    max_abs_diff_zero_copy: float
    tolerance: float = TOLERANCE

    @property
    def ok(self) -> bool:
        # Written so that NaN (a NaN in either output) counts as a mismatch.
        return bool(self.max_abs_diff_copy <= self.tolerance and
                    self.max_abs_diff_zero_copy <= self.tolerance)


@dataclass
class ModelResult:
    model: str
    input_shape: list[int]   # the first input's and output's (a built-in model has one of each)
    output_shape: list[int]
    input_bytes: int
    request_bytes: int  # the msgpack message the floor sends
    iterations: int
    warmup: int
    block: int
    settle: int
    correctness: Correctness
    systems: dict[str, Summary] = field(default_factory=dict)
    overheads: dict[str, Overhead] = field(default_factory=dict)
    # The daemon's own p50 (message received -> reply built, 1 µs resolution) from `status`,
    # over its recent requests of this model on both paths, warm-up included; None on --endpoint
    # (other clients' requests would be mixed in).
    daemon_side_p50_us: float | None = None
    signature: str = ""  # every input and output: "x float32[1,64] -> y float32[1,10]"
    path: str = ""       # the user's ONNX file ("" for a built-in model)

    @property
    def floor_p50_us(self) -> float:
        return self.systems["floor"].p50_us

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["correctness"]["ok"] = self.correctness.ok
        out["floor_p50_us"] = self.floor_p50_us
        return out
