"""The hard bound on a stop: drain_timeout_s for the requests, then CLOSE_GRACE_S to close.

The socket loop drains and closes cooperatively (server.py). This covers what it cannot:
a request running on the socket thread itself (one instance), a model still being created,
a backend close that hangs. Armed when a stop is asked for, from whatever thread asks (the
signal watcher, the Windows service's stop handler, the loop for a `shutdown` op); when the
bound passes with the process still here, it logs what holds the stop, removes what names
this daemon (socket file, token files, region names: mappings stay, the exit unmaps them),
flushes the log and exits. systemd's TimeoutStopSec and the Windows stop wait hint leave
more time than this, so a stop is never ended by SIGKILL or a hung service.

It also logs how the drain went (what a stop tells clients is worded in core/stop_state.py).
"""

from __future__ import annotations

import faulthandler
import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Callable

log = logging.getLogger("trtd.server")

# What closing (unloading models, releasing regions) may take after the drain.
CLOSE_GRACE_S = 10.0
# After the forced exit's own time: faulthandler ends the process even if that exit is stuck
# (a log handler blocked on a full pipe, a thread holding the GIL in a backend call), printing
# every thread's stack to stderr (the journal) and exiting with status 1.
BACKSTOP_S = 5.0


@dataclass(slots=True)
class DrainReport:
    """The drain's two log lines: why the daemon stops and what it found in flight, then how
    the drain ended. Counts are of requests (and `load` ops) a worker was to answer."""

    in_flight: int
    began: float

    @classmethod
    def begin(cls, cause: str, in_flight: int, drain_timeout_s: float) -> "DrainReport":
        work = (f"finishing {in_flight} request(s) in flight (up to {drain_timeout_s:g} s)"
                if in_flight else "no request in flight")
        log.info("%s: stopping: %s; new work is answered OVERLOADED (stopping)", cause, work)
        return cls(in_flight, time.monotonic())

    def end(self, unfinished: int, refused: int, answered_ok: int) -> None:
        """answered_ok: infer requests answered with outputs since the daemon started, which
        their clients can compare with what they received (a reply lost in the stop shows)."""
        log.info("stopping: drain done in %.2f s: %d of %d request(s) in flight finished, "
                 "%d new request(s) refused, %d answered ok since start; closing",
                 time.monotonic() - self.began, self.in_flight - unfinished, self.in_flight, refused,
                 answered_ok)


class StopDeadline:
    """enforce=False (a daemon inside another program: tests, benchmarks) only keeps the time
    the stop was asked for: the drain is measured from it, but nothing exits the process."""

    def __init__(self, describe: Callable[[], str], clean_up: Callable[[], None], enforce: bool = True):
        self.seconds = 0.0
        self.armed_at: float | None = None  # time.monotonic() of the first stop request
        self.enforce = enforce
        self._describe = describe
        self._clean_up = clean_up
        self._hooks: list[Callable[[], None]] = []
        self._done = threading.Event()
        self._armed = False
        self._arm_lock = threading.Lock()

    def before_exit(self, hook: Callable[[], None]) -> None:
        """Run hook (e.g. tell the Windows service manager "stopped") before a forced exit."""
        self._hooks.append(hook)

    def arm(self, drain_timeout_s: float) -> None:
        """Start counting (idempotent: the first stop request sets the bound)."""
        with self._arm_lock:
            if self._armed:
                return
            self._armed = True
            self.armed_at = time.monotonic()
            self.seconds = drain_timeout_s + CLOSE_GRACE_S
        if not self.enforce:
            return
        faulthandler.dump_traceback_later(self.seconds + BACKSTOP_S, exit=True)
        threading.Thread(target=self._wait, name="trtd-stop-deadline", daemon=True).start()

    def drain_ends(self, drain_timeout_s: float) -> float:
        """When the drain gives up: drain_timeout_s after the stop was asked for (the socket
        thread may reach the drain later, e.g. after a request it was running)."""
        start = self.armed_at if self.armed_at is not None else time.monotonic()
        return start + drain_timeout_s

    def disarm(self) -> None:
        """The stop finished in time."""
        self._done.set()
        if self.enforce and self._armed:
            faulthandler.cancel_dump_traceback_later()

    def _wait(self) -> None:
        if self._done.wait(self.seconds):
            return
        self.force_exit()

    def force_exit(self) -> None:
        try:
            why = self._describe()
        except Exception:  # the state it describes is changing under it: exit anyway
            why = "state unreadable"
        # Names first, the log after: a log write that blocks (a full pipe) is caught by the
        # faulthandler backstop, and by then nothing points at this daemon any more.
        failed = []
        for step in [self._clean_up, *self._hooks]:
            try:
                step()
            except Exception as exc:
                failed.append(f"{type(exc).__name__}: {exc}")
        log.error("stopping took longer than drain_timeout_s + %.0f s = %.0f s: exiting now (%s)%s",
                  CLOSE_GRACE_S, self.seconds, why,
                  f"; cleaning up failed: {'; '.join(failed)}" if failed else "")
        flush_logs()
        os._exit(0)  # a requested stop, bounded as configured: not a failure for the service manager


def flush_logs() -> None:
    for handler in logging.getLogger().handlers + logging.getLogger("trtd").handlers:
        try:
            handler.flush()
        except Exception:
            pass


def exit_now(code: int = 0) -> None:
    """Exit without the interpreter's shutdown: after a stop that left a backend call running,
    tearing down modules under that thread (ONNX Runtime, CUDA) could crash the exit."""
    flush_logs()
    os._exit(code)
