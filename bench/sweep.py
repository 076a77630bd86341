"""Concurrency sweep: N client processes drive one system at once, for each N.

Every client is a separate process (trtd.bench.load_worker for trtd's systems, the
Triton peer's own worker in its environment), so clients never share an interpreter
lock. Each connects and warms up, says READY, and all start at one common instant;
the parent then samples the serving processes' CPU time and RSS around the timed
window (psutil). Throughput counts completed requests over the common window.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .lib.cpu_burn import process_cpu_ns
from .lib.processes import start_process, stop_process
from .lib.stats import Summary

READY_TIMEOUT_S = 300.0


class PointFailed(RuntimeError):
    """A sweep point could not be measured (a worker failed to start); the reason is reported."""


@dataclass
class Point:
    """One (model, system, concurrency) measurement."""

    model: str
    system: str
    concurrency: int
    requests: int
    errors: int
    window_s: float
    throughput_rps: float
    latency: Summary | None  # trtd.bench.lib.stats': the same statistics everywhere
    first_error: str = ""
    # Serving side (the daemon, or Triton's whole process tree); None for in-process runs.
    server_cpu_us_per_request: float | None = None
    server_rss_mib_before: float | None = None
    server_rss_mib_after: float | None = None
    # Raw per-request latencies, kept in memory for the plots (not written to JSON).
    samples_us: np.ndarray = field(default_factory=lambda: np.empty(0), repr=False)

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k != "samples_us"}
        out["latency"] = None if self.latency is None else self.latency.__dict__
        return out


def _cpu_seconds(proc: Any) -> float:
    """CPU time of a process, all threads, in seconds (nanosecond-exact on Linux: see
    lib/cpu_burn.process_cpu_ns, which psutil's 10 ms clock ticks would not be)."""
    return process_cpu_ns(proc.pid) / 1e9


def _cpu_and_rss(processes: Sequence[Any]) -> tuple[float, float]:
    import psutil

    cpu = rss = 0.0
    for proc in processes:
        try:
            cpu += _cpu_seconds(proc)
            rss += proc.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return cpu, rss / 2**20


def _read_line(proc: subprocess.Popen, deadline: float, what: str) -> str:
    import selectors

    assert proc.stdout is not None  # started with stdout=PIPE
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise PointFailed(f"{what}: no answer within {READY_TIMEOUT_S:.0f} s")
            if sel.select(timeout=min(left, 1.0)):
                line = proc.stdout.readline()
                if not line:
                    raise PointFailed(f"{what}: the worker exited with status {proc.wait()} "
                                      f"(its messages are above)")
                return line.strip()


def _parse_failure(line: str) -> str:
    try:
        return json.loads(line).get("error", line)
    except ValueError:
        return line


def run_point(model: str, system: str, concurrency: int, argv: list[str], env: dict[str, str] | None,
              server_processes: Callable[[], list[Any]]) -> Point:
    """Start `concurrency` workers from `argv`, release them together, collect their results.

    `server_processes` is a callable returning the psutil.Process objects whose CPU time and
    memory the point reports (an empty list when nothing serves: in-process runs).
    """
    workers = [start_process(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
               for _ in range(concurrency)]
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        for worker in workers:
            line = _read_line(worker, deadline, f"{system} worker")
            if line != "READY":
                raise PointFailed(f"{system} worker did not start: {_parse_failure(line)}")
        procs = server_processes()
        cpu_before, rss_before = _cpu_and_rss(procs)
        start_at = time.time() + 0.1
        for worker in workers:
            worker.stdin.write(f"GO {start_at!r}\n")
            worker.stdin.flush()
        results = []
        for worker in workers:
            line = _read_line(worker, time.monotonic() + READY_TIMEOUT_S, f"{system} worker")
            result = json.loads(line)
            if "error" in result:
                raise PointFailed(f"{system} worker failed: {result['error']}")
            results.append(result)
        cpu_after, rss_after = _cpu_and_rss(procs)
    finally:
        for worker in workers:
            worker.stdin.close()  # a worker still waiting for GO reads end-of-file and exits
        for worker in workers:
            try:  # a worker that has answered is exiting: let it run its own clean-up
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            stop_process(worker, f"{system} worker")
            worker.stdout.close()
    samples_ns = np.concatenate([np.asarray(r["latencies_ns"], dtype=np.int64) for r in results])
    errors = sum(r["errors"] for r in results)
    window = max(r["ended"] for r in results) - min(r["started"] for r in results)
    point = Point(model=model, system=system, concurrency=concurrency, requests=len(samples_ns),
                  errors=errors, window_s=window,
                  throughput_rps=len(samples_ns) / window if window > 0 else 0.0,
                  latency=Summary.of(samples_ns) if len(samples_ns) else None,
                  first_error=next((r["first_error"] for r in results if r["first_error"]), ""),
                  samples_us=samples_ns / 1000.0)
    if procs:
        point.server_cpu_us_per_request = (cpu_after - cpu_before) * 1e6 / max(1, point.requests + errors)
        point.server_rss_mib_before, point.server_rss_mib_after = rss_before, rss_after
    return point
