"""Part 2 of `trtd bench`: the concurrency sweep over every planned model, system and client count.

One daemon serves the whole sweep; with --peers triton a PyTriton server serves the same models
(trtd.bench.peers.triton). trtd's systems are driven by trtd.bench.load_worker processes,
Triton's by the peer's own worker in its environment; each point is trtd.bench.sweep.run_point.
A point or peer that cannot run is recorded in the report with the reason.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Callable

from ..lib.daemon import connect, started_daemon
from ..lib.meta import onnxruntime_settings
from ..lib.plans import Plan
from ..lib.progress import progress_bar
from ..lib.workloads import BenchModel
from ..sweep import PointFailed, run_point
from .report import TRITON_SYSTEMS, TRTD_SYSTEMS, BenchReport

# The Triton peer's server and clients speak one float32 tensor "x" in and "y" out.
TRITON_LIMIT = "the Triton peer runs the built-in models only (one float32 input x, one output y)"


def run_sweep(report: BenchReport, args: argparse.Namespace, plans: list[Plan]) -> None:
    """Every (model, system, client count) point into report.points (or report.failed_points)."""
    import psutil

    duration = 0.0 if args.count else (args.duration if args.duration is not None else 2.0)
    count = args.count or 0
    models = [plan.model for plan in plans]
    for model in models:
        model.source()  # a built-in is generated here, once, not by every client process
    with ExitStack() as stack:
        tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trtd-bench-sweep-")))
        serve = [arg for model in models for arg in ("--model", model.serve_flag())]
        endpoint, daemon = stack.enter_context(started_daemon(tmpdir, serve))
        stack.enter_context(connect(endpoint, daemon))  # waits until it serves
        daemon_proc = psutil.Process(daemon.pid)
        triton = _start_triton(report, args, models, stack) if "triton" in args.peers else None
        systems = list(TRTD_SYSTEMS) + (list(TRITON_SYSTEMS) if triton else [])
        bar = stack.enter_context(progress_bar(len(models) * len(systems) * len(args.concurrency)))
        for model in models:
            for system in systems:
                if system.startswith("triton_") and not triton_can_run(model):
                    report.failed_points.append(f"{model.name} {system}: not run: {TRITON_LIMIT}")
                    bar.update(len(args.concurrency))
                    continue
                argv, env, serving = _worker(system, model, args, duration, count, endpoint,
                                             daemon_proc, triton)
                for n in args.concurrency:
                    bar.set_description(f"{model.name} {system} x{n}")
                    try:
                        report.points.append(run_point(model.name, system, n, argv, env, serving))
                    except PointFailed as exc:
                        report.failed_points.append(f"{model.name} {system} x{n}: {exc}")
                    bar.update(1)


def _worker(system: str, model: BenchModel, args: argparse.Namespace, duration: float, count: int,
            endpoint: str, daemon_proc: Any, triton: Any) -> tuple[list[str], dict[str, str] | None,
                                                                   Callable[[], list[Any]]]:
    """How to start one client process of `system`, and which processes serve it."""
    if system.startswith("triton_"):
        from ..peers.triton import server_processes

        argv = triton.worker_argv(system.removeprefix("triton_"), model.name, model.input_shape,
                                  model.output_shape, warmup=args.warmup, duration_s=duration, count=count)
        return argv, triton.worker_env(), lambda: server_processes(triton)
    argv = [sys.executable, "-m", "trtd.bench.load_worker", "--system", system, "--model", model.to_json(),
            "--endpoint", endpoint, "--warmup", str(args.warmup), "--duration", str(duration),
            "--count", str(count)]
    return argv, None, (lambda: []) if system == "in_process" else (lambda: [daemon_proc])


def triton_can_run(model: BenchModel) -> bool:
    return not model.path and model.single_float32_io


def _start_triton(report: BenchReport, args: argparse.Namespace, models: list[BenchModel],
                  stack: ExitStack) -> Any:
    """The PyTriton server for the models it can run, or None (the reason goes into the report)."""
    from ..peers import triton as peer

    env_dir = args.peer_env or peer.default_env_dir()
    models = [m for m in models if triton_can_run(m)]
    if not models:
        for system in TRITON_SYSTEMS:
            report.unavailable[system] = TRITON_LIMIT
        return None
    try:
        python = peer.ensure_env(env_dir, log=lambda msg: print(f"trtd bench: {msg}", file=sys.stderr))
        specs = [{"name": m.name, "path": m.source(), "input": "x", "output": "y",
                  "shape": list(m.input_shape), "output_shape": list(m.output_shape)} for m in models]
        print("trtd bench: starting Triton (PyTriton)...", file=sys.stderr)
        server = stack.enter_context(peer.triton_server(python, specs, onnxruntime_settings()))
    except peer.PeerUnavailable as exc:
        for system in TRITON_SYSTEMS:
            report.unavailable[system] = str(exc)
        return None
    report.meta["peers"] = {"triton": {**server.versions, "environment": str(env_dir),
                                       "how": "PyTriton: the model is ONNX Runtime (CPU, the daemon's "
                                              "session settings) called from Triton's python backend; "
                                              "no dynamic batching"}}
    return server
