"""The CPU each side burns per request: the client's calling thread and the daemon process.

Client: time.thread_time_ns() of the thread that makes the calls (its own CPU only; a spin-wait
for the reply counts, a sleep in poll() does not). Daemon: the CPU time of all the daemon's
threads, from /proc/PID/task/*/schedstat (nanoseconds) where there is one, else psutil's
cpu_times() user + system. psutil's figures come in clock ticks (10 ms): a block of 20 requests of
0.5 ms would read as 0 or 10 ms, so it serves only where /proc is missing (not Linux).

In an interleaved run (trtd.bench.lib.interleave.measure) the CPU times are read where the
schedule switches from one system to the next, so around every block: CpuMeter wraps each
system's step and reads the clocks in the first call after a switch, before that call's request.
That call is one of the block's untimed `settle` calls (with settle = 0 the reads, some µs, land
in one timed sample per block). A block's CPU time is divided by all the requests in it, settle
calls included. Each system's first span is its warm-up (skip_warmup) and is not counted. The daemon's time in
a span includes what it does while idle (heartbeats, polls): that is what it burns too.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Callable


def process_cpu_ns(pid: int) -> int:
    """CPU time of process `pid`, all its threads, in nanoseconds (see the module docstring)."""
    task_dir = f"/proc/{pid}/task"
    if os.path.isdir(task_dir):
        total = 0
        for tid in os.listdir(task_dir):
            try:
                with open(f"{task_dir}/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                pass  # a thread that ended between listdir and open
        return total
    import psutil

    times = psutil.Process(pid).cpu_times()
    return int((times.user + times.system) * 1e9)


@dataclass
class CpuCost:
    """µs of CPU per request: the client's calling thread, and the daemon (None: not measured,
    or the system does not use the daemon)."""

    requests: int
    client_us: float
    daemon_us: float | None


class CpuMeter:
    """Wraps the steps of an interleaved run so that each system's CPU per request is known."""

    def __init__(self, daemon_pid: int | None, skip_warmup: bool = True):
        """daemon_pid: None measures the client only. skip_warmup: the run has warm-up
        iterations (Schedule.warmup > 0), so each system's first span is not counted."""
        self._pid = daemon_pid
        self._skip_warmup = skip_warmup
        self._current: str | None = None
        self._calls = 0
        self._client0 = self._daemon0 = 0
        self._warmed: set[str] = set()
        self._totals: dict[str, list[int]] = {}  # name -> [requests, client ns, daemon ns]

    def wrap(self, name: str, step: Callable[[], object]) -> Callable[[], object]:
        self._totals[name] = [0, 0, 0]

        def run() -> object:
            if self._current != name:
                self._switch(name)
            self._calls += 1
            return step()

        return run

    def wrap_all(self, steps: dict[str, Callable[[], object]]) -> dict[str, Callable[[], object]]:
        return {name: self.wrap(name, step) for name, step in steps.items()}

    def _daemon_ns(self) -> int:
        return process_cpu_ns(self._pid) if self._pid is not None else 0

    def _switch(self, name: str | None) -> None:
        client = time.thread_time_ns()  # first: the daemon's reading is not the client's cost
        daemon = self._daemon_ns()
        previous = self._current
        if previous is not None:
            if previous in self._warmed or not self._skip_warmup:
                total = self._totals[previous]
                total[0] += self._calls
                total[1] += client - self._client0
                total[2] += daemon - self._daemon0
            self._warmed.add(previous)  # its first span was the warm-up
        self._current, self._calls = name, 0
        self._daemon0 = daemon
        self._client0 = time.thread_time_ns()

    def finish(self) -> None:
        """Close the last block (call after measure() returns)."""
        self._switch(None)

    def cost(self, name: str, uses_daemon: bool) -> CpuCost:
        requests, client_ns, daemon_ns = self._totals[name]
        n = max(requests, 1)
        return CpuCost(requests=requests, client_us=client_ns / n / 1000,
                       daemon_us=daemon_ns / n / 1000 if uses_daemon and self._pid is not None else None)
