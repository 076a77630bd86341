"""The hard bound on a stop: drain_timeout_s for the requests, then CLOSE_GRACE_S to close.

The socket loop drains and closes cooperatively (server.py). This covers what it cannot:
a request running on the socket thread itself (one instance), a model still being created,
a backend close that hangs. Armed when a stop is asked for, from whatever thread asks (the
signal watcher, the Windows service's stop handler, the loop for a `shutdown` op); when the
bound passes with the process still here, it logs what holds the stop, removes what names
this daemon (socket file, token files, region names: mappings stay, the exit unmaps them),
flushes the log and exits. systemd's TimeoutStopSec and the Windows stop wait hint leave
more time than this, so a stop is never ended by SIGKILL or a hung service.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Callable

log = logging.getLogger("trtd.server")

# What closing (unloading models, releasing regions) may take after the drain.
CLOSE_GRACE_S = 10.0


class StopDeadline:
    def __init__(self, describe: Callable[[], str], clean_up: Callable[[], None]):
        self.seconds = 0.0
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
            self.seconds = drain_timeout_s + CLOSE_GRACE_S
        threading.Thread(target=self._wait, name="trtd-stop-deadline", daemon=True).start()

    def disarm(self) -> None:
        """The stop finished in time."""
        self._done.set()

    def _wait(self) -> None:
        if self._done.wait(self.seconds):
            return
        self.force_exit()

    def force_exit(self) -> None:
        try:
            log.error("stopping took longer than drain_timeout_s + %.0f s = %.0f s: exiting now (%s)",
                      CLOSE_GRACE_S, self.seconds, self._describe())
        except Exception:  # the state it describes is changing under it: exit anyway
            log.error("stopping took longer than %.0f s: exiting now", self.seconds)
        for step in [self._clean_up, *self._hooks]:
            try:
                step()
            except Exception:
                log.exception("cleaning up before a forced exit failed")
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
