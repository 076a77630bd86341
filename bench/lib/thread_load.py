"""Concurrent clients as threads of this process: each its own call (its own SDK Client), a fixed
number of requests each, all released at one instant.

The sweep of `trtd bench` (trtd.bench.sweep) runs every client as a process, so that clients
never share an interpreter lock; this is the lighter form for a benchmark that needs a few
concurrent clients in one run. A call spends most of its time waiting for the reply, with the
lock released; its Python part (some tens of µs) does hold it, which the latency includes.
Throughput counts the requests over the common window (first start to last end); CPU per
request: the client threads' own CPU (time.thread_time_ns in each, summed) and the daemon
process's (trtd.bench.lib.cpu_burn), both over the timed window only.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from .cpu_burn import process_cpu_ns
from .interleave import gc_paused
from .stats import Summary

START_TIMEOUT_S = 300.0


@dataclass
class LoadResult:
    clients: int
    requests: int
    window_s: float
    throughput_rps: float
    latency: Summary
    client_cpu_us_per_request: float
    daemon_cpu_us_per_request: float | None


def run_clients(calls: Sequence[Callable[[], object]], count: int, warmup: int,
                daemon_pid: int | None) -> LoadResult:
    """One thread per call: `warmup` calls, then (all together) `count` timed calls each.

    The first exception of any thread is raised here, after every thread has ended."""
    n = len(calls)
    # ready: every thread warmed up (the daemon's CPU is read then); go: all start.
    ready, go = threading.Barrier(n + 1), threading.Barrier(n + 1)
    latencies: list[list[int]] = [[] for _ in calls]
    spans: list[tuple[int, int, int]] = [(0, 0, 0)] * n  # (started ns, ended ns, thread CPU ns)
    errors: list[BaseException] = []

    def client(i: int) -> None:
        call, out, clock = calls[i], latencies[i], time.perf_counter_ns
        try:
            for _ in range(warmup):
                call()
            ready.wait(START_TIMEOUT_S)
            go.wait(START_TIMEOUT_S)
            cpu0, started = time.thread_time_ns(), clock()
            for _ in range(count):
                t0 = clock()
                call()
                out.append(clock() - t0)
            spans[i] = (started, clock(), time.thread_time_ns() - cpu0)
        except threading.BrokenBarrierError:
            pass  # another thread failed: its error is the one reported
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)
            ready.abort()
            go.abort()

    threads = [threading.Thread(target=client, args=(i,), name=f"trtd-bench-client-{i}", daemon=True)
               for i in range(n)]
    with gc_paused():
        for t in threads:
            t.start()
        daemon0 = 0
        try:
            ready.wait(START_TIMEOUT_S)
            daemon0 = process_cpu_ns(daemon_pid) if daemon_pid is not None else 0
            go.wait(START_TIMEOUT_S)
        except threading.BrokenBarrierError:
            pass  # a thread failed: raised below
        for t in threads:
            t.join()
        daemon1 = process_cpu_ns(daemon_pid) if daemon_pid is not None else 0
    if errors:
        raise errors[0]
    if any(span[1] == 0 for span in spans):
        raise RuntimeError(f"the {n} client threads were not all ready within {START_TIMEOUT_S:.0f} s")
    samples = np.concatenate([np.asarray(lat, dtype=np.int64) for lat in latencies])
    requests = len(samples)
    window_s = (max(s[1] for s in spans) - min(s[0] for s in spans)) / 1e9
    per = max(requests, 1)
    return LoadResult(
        clients=n, requests=requests, window_s=window_s,
        throughput_rps=requests / window_s if window_s > 0 else 0.0,
        latency=Summary.of(samples),
        client_cpu_us_per_request=sum(s[2] for s in spans) / per / 1000,
        daemon_cpu_us_per_request=(daemon1 - daemon0) / per / 1000 if daemon_pid is not None else None)
