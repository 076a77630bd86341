"""The timing loop every load-generating process runs, whatever system it drives.

Imports only the standard library, so the Triton peer's client processes (which
run in PyTriton's own virtual environment, without trtd installed) use exactly
the same loop as the daemon's: they load this file by path.

The parent and a worker talk over the worker's stdin/stdout, one line each way:
    worker -> parent   READY                      (connected, warmed up)
    parent -> worker   GO <epoch seconds>         (everyone starts at that instant)
    worker -> parent   {"latencies_ns": [...], ...}   (one JSON line, then exit)
A worker that fails prints {"error": "..."} instead, at whatever point it failed.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Callable


def wait_for_go() -> float:
    """Say READY, then block until the parent names the common start instant."""
    print("READY", flush=True)
    line = sys.stdin.readline().split()
    if len(line) != 2 or line[0] != "GO":
        raise SystemExit(f"load worker: expected 'GO <time>' from the parent, got {line!r}")
    return float(line[1])


def timed_loop(call: Callable[[], object], *, warmup: int, duration_s: float, count: int) -> dict:
    """Warm up, wait for the common start, then call back to back for `duration_s` or `count` calls.

    Latencies are per call (perf_counter_ns); `started`/`ended` are wall-clock so that the
    parent can compute throughput over all workers' common window.
    """
    for _ in range(warmup):
        call()
    start_at = wait_for_go()
    while time.time() < start_at:
        time.sleep(min(0.001, max(0.0, start_at - time.time())))
    clock = time.perf_counter_ns
    latencies: list[int] = []
    errors = 0
    first_error = ""
    started = time.time()
    deadline = clock() + int(duration_s * 1e9) if duration_s > 0 else None
    while True:
        if count and len(latencies) + errors >= count:
            break
        t0 = clock()
        if deadline is not None and t0 >= deadline:
            break
        try:
            call()
        except Exception as exc:  # counted and reported: a failed request is a result too
            errors += 1
            first_error = first_error or f"{type(exc).__name__}: {exc}"
            continue
        latencies.append(clock() - t0)
    return {"latencies_ns": latencies, "errors": errors, "first_error": first_error,
            "started": started, "ended": time.time()}


def run_worker(setup: Callable[[], Callable[[], object]], *, warmup: int, duration_s: float,
               count: int) -> int:
    """Set up the system's call, run the loop, print the result line; exit status 0 or 1."""
    try:
        call = setup()
        result = timed_loop(call, warmup=warmup, duration_s=duration_s, count=count)
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    print(json.dumps(result), flush=True)
    return 0
