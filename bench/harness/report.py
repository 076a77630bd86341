"""What one `trtd bench` run found: its parts' results, what could not run, and the targets judged.

Data only: rendering (render.py, plots.py) and judging (targets.py) read it, the run
(cli.py, sweep_run.py) fills it in, and nothing here imports them back.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ..lib.single_results import ModelResult
from ..sweep import Point

TRTD_SYSTEMS = ("in_process", "daemon_copy", "daemon_zero_copy")
TRITON_SYSTEMS = ("triton_http", "triton_grpc", "triton_grpc_shm")
SYSTEM_LABELS = {
    "in_process": "in-process ORT",
    "daemon_copy": "trtd copy",
    "daemon_zero_copy": "trtd zero-copy",
    "triton_http": "Triton via PyTriton (python backend), HTTP",
    "triton_grpc": "Triton via PyTriton (python backend), gRPC",
    "triton_grpc_shm": "Triton via PyTriton (python backend), gRPC + shm",
}


@dataclass
class Target:
    name: str
    model: str
    value: float | None
    required: str
    met: bool | None  # None: could not be judged (a side is missing)
    detail: str = ""


@dataclass
class BenchReport:
    meta: dict[str, Any]
    single_client: list[ModelResult] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)   # system -> why it did not run
    failed_points: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def point(self, model: str, system: str, concurrency: int) -> Point | None:
        return next((p for p in self.points if (p.model, p.system, p.concurrency) ==
                     (model, system, concurrency)), None)

    def to_json(self) -> dict[str, Any]:
        return {"meta": self.meta,
                "single_client": {r.model: r.to_json() for r in self.single_client},
                "sweep": [p.to_json() for p in self.points],
                "unavailable": self.unavailable, "failed_points": self.failed_points,
                "targets": [asdict(t) for t in self.targets]}
