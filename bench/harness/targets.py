"""The targets `trtd bench` judges: overhead in floors, and latency and throughput against Triton.

A target whose other side did not run is "not judged", with the reason, never silently met.
"""

from __future__ import annotations

from ..lib.single_results import DAEMON_SYSTEMS, TARGET_RATIO
from .report import SYSTEM_LABELS, TRITON_SYSTEMS, BenchReport, Target

LATENCY_TARGET_VS_TRITON = 10.0     # trtd p50 at least this many times lower, small model
THROUGHPUT_TARGET_VS_TRITON = 5.0   # at 4 and 8 clients
SMALL_MODEL = "mlp"


def judge_targets(report: BenchReport) -> None:
    """Append every judged target to report.targets."""
    _overhead_targets(report)
    _latency_targets(report)
    _throughput_targets(report)


def _overhead_targets(report: BenchReport) -> None:
    for r in report.single_client:
        for path in DAEMON_SYSTEMS:
            o = r.overheads[path]
            report.targets.append(Target(
                name=f"overhead {path.removeprefix('daemon_')} <= {TARGET_RATIO:g}x floor",
                model=r.model, value=round(o.ratio_to_floor, 2), required=f"<= {TARGET_RATIO:g}",
                met=o.target_met, detail=f"overhead p50 {o.overhead_p50_us:.1f} µs, floor p50 "
                                         f"{r.floor_p50_us:.1f} µs"))


def _latency_targets(report: BenchReport) -> None:
    tri = report.point(SMALL_MODEL, "triton_grpc_shm", 1)
    if not any(p.model == SMALL_MODEL for p in report.points):
        return
    for path in DAEMON_SYSTEMS:
        ours = report.point(SMALL_MODEL, path, 1)
        value = (tri.latency.p50_us / ours.latency.p50_us
                 if tri and ours and tri.latency and ours.latency else None)
        report.targets.append(Target(
            name=f"{SYSTEM_LABELS[path]} p50 >= {LATENCY_TARGET_VS_TRITON:g}x lower than Triton gRPC+shm",
            model=SMALL_MODEL, value=None if value is None else round(value, 1),
            required=f">= {LATENCY_TARGET_VS_TRITON:g}",
            met=None if value is None else value >= LATENCY_TARGET_VS_TRITON,
            detail="1 client, sweep" if value is not None else missing(report, "triton_grpc_shm")))


def _throughput_targets(report: BenchReport) -> None:
    for model in dict.fromkeys(p.model for p in report.points):
        for n in (4, 8):
            ours = [p for s in DAEMON_SYSTEMS if (p := report.point(model, s, n))]
            theirs = [p for s in TRITON_SYSTEMS if (p := report.point(model, s, n))]
            if not ours:
                continue
            best_ours = max(ours, key=lambda p: p.throughput_rps)
            best_theirs = max(theirs, key=lambda p: p.throughput_rps) if theirs else None
            value = (best_ours.throughput_rps / best_theirs.throughput_rps
                     if best_theirs and best_theirs.throughput_rps else None)
            report.targets.append(Target(
                name=f"throughput with {n} clients >= {THROUGHPUT_TARGET_VS_TRITON:g}x Triton's",
                model=model, value=None if value is None else round(value, 2),
                required=f">= {THROUGHPUT_TARGET_VS_TRITON:g}",
                met=None if value is None else value >= THROUGHPUT_TARGET_VS_TRITON,
                detail=(f"best trtd path {SYSTEM_LABELS[best_ours.system]} {best_ours.throughput_rps:.0f}/s vs "
                        f"best Triton protocol {SYSTEM_LABELS[best_theirs.system]} "
                        f"{best_theirs.throughput_rps:.0f}/s" if best_theirs else missing(report, "triton_grpc"))))


def missing(report: BenchReport, system: str) -> str:
    """Why a target against `system` could not be judged."""
    return "not judged: " + report.unavailable.get(system, f"{system} was not run (add --peers triton)")
