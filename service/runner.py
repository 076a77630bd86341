"""The daemon as a service host runs it: start, report running, stop on request, log to files.

Platform-neutral on purpose: the Windows service (service/windows.py) is a thin adapter around
ServiceRunner, and ServiceRunner itself is tested on Linux with a real daemon. A service has no
console and gets no signals: the stop request calls stop(), which is the same drain-then-close
path SIGTERM takes.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import threading
import time
from pathlib import Path
from typing import Callable

from trtd.daemon.system import platform
from trtd.daemon.config.settings import DaemonConfig
from trtd.daemon.serve.stopping import CLOSE_GRACE_S, exit_now
from trtd.protocol.endpoint import service_runtime_dir

log = logging.getLogger("trtd.service")

LOG_FILE_BYTES = 10 * 2**20
LOG_FILE_COUNT = 5
# What a stop takes beyond the drain: closing models, regions and the socket, which the daemon
# bounds itself (CLOSE_GRACE_S, then it exits: daemon/serve/stopping.py). More than that, so that the
# service manager never kills a service that is keeping its own bound.
STOP_CLOSE_MARGIN_S = CLOSE_GRACE_S + 20.0
# How often a stopping service reports progress (a new checkpoint) to the service manager.
STOP_PROGRESS_INTERVAL_S = 5.0


def stop_wait_hint_ms(drain_timeout_s: float, elapsed_s: float = 0.0,
                      margin_s: float = STOP_CLOSE_MARGIN_S) -> int:
    """How long the service manager should wait for the next stop report (a SERVICE_STATUS
    waitHint): what is left of the drain, plus the time to close."""
    return int((max(drain_timeout_s - elapsed_s, 0.0) + margin_s) * 1000)


class ForwardHandler(logging.Handler):
    """Hands WARNING and above to a callable (the Windows event log: servicemanager)."""

    def __init__(self, emit_warning: Callable[[str], None], emit_error: Callable[[str], None]):
        super().__init__(level=logging.WARNING)
        self._warning, self._error = emit_warning, emit_error

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            (self._error if record.levelno >= logging.ERROR else self._warning)(text)
        except Exception:  # the event log being unavailable must not stop the daemon
            self.handleError(record)


def configure_service_logging(log_dir: Path, level: str = "INFO",
                              extra: logging.Handler | None = None, log_format: str = "text") -> Path:
    """A rotating file (10 MiB x 5) in `log_format` (the event log keeps plain text) plus,
    optionally, the event log; returns the file."""
    from trtd.daemon.serve.logs import formatter

    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_dir / "trtd.log"
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=LOG_FILE_BYTES,
                                                   backupCount=LOG_FILE_COUNT, encoding="utf-8")
    handler.setFormatter(formatter(log_format))
    root = logging.getLogger()
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    for old in list(root.handlers):
        if getattr(old, "_trtd_service", False):
            root.removeHandler(old)
            old.close()
    for h in (handler, extra):
        if h is not None:
            h._trtd_service = True  # type: ignore[attr-defined]
            root.addHandler(h)
    return path


class ServiceRunner:
    """run() blocks serving until stop() (from any thread); returns the exit status."""

    def __init__(self, config_path: Path, scope: str = "system", log_dir: Path | None = None,
                 event_log: logging.Handler | None = None,
                 before_exit: Callable[[], None] | None = None, own_process: bool = False):
        """own_process: the daemon is the whole process (the Windows service), so a stop that
        overruns its bound ends it (daemon/serve/stopping.py), calling before_exit first: the moment
        to tell the service manager it has stopped. False inside another program (tests)."""
        self.config_path = Path(config_path)
        self.before_exit = before_exit
        self.own_process = own_process
        self.scope = scope
        self.log_dir = Path(log_dir) if log_dir is not None else Path(platform.log_dir(scope))
        self.event_log = event_log
        self.server = None
        self.running = threading.Event()  # set once the socket serves (report SERVICE_RUNNING)
        self.stopped = threading.Event()  # set when run() returns (or fails)
        self._stop_requested = threading.Event()
        # The configured drain; read again by run() from the file it serves.
        self.drain_timeout_s = DaemonConfig().drain_timeout_s

    def prepare_environment(self) -> None:
        # LocalSystem's profile is not the users': machine-wide caches live under ProgramData.
        os.environ.setdefault("TRTD_CACHE_DIR", str(platform.cache_dir(self.scope)))
        if platform.IS_WINDOWS and self.scope == "system":
            os.environ.setdefault("TRTD_SHM_GLOBAL", "1")  # session 0: Global\ names, explicit DACL
            # Token files where users' clients look for them (LocalSystem's own runtime folder is
            # invisible to them); the folder's DACL decides who may read them (access.py).
            os.environ.setdefault("TRTD_RUNTIME_DIR", str(service_runtime_dir()))
        platform.add_dll_directories()

    def run(self, on_running: Callable[[], None] | None = None) -> int:
        """Serve until stop(); on_running is called (on this thread) once the socket serves,
        before the models have loaded: the moment to report SERVICE_RUNNING."""
        try:
            return self._run(on_running)
        finally:
            self.stopped.set()

    def _run(self, on_running: Callable[[], None] | None) -> int:
        from trtd.daemon.config.settings import load_config
        from trtd.daemon.serve.server import Server

        self.prepare_environment()
        config = load_config(self.config_path)
        self.drain_timeout_s = config.drain_timeout_s
        log_file = configure_service_logging(self.log_dir, config.log_level, self.event_log,
                                             config.log_format)
        log.info("trtd service starting: config %s, log %s, cache %s", self.config_path, log_file,
                 os.environ["TRTD_CACHE_DIR"])
        server = Server(config, reload_source=lambda: load_config(self.config_path),
                        own_process=self.own_process)
        self.server = server
        if self.before_exit is not None:
            server.stop_deadline.before_exit(self.before_exit)
        try:
            server.start()
        except BaseException:
            server.close()
            raise
        if self._stop_requested.is_set():
            server.request_stop()
        self.running.set()
        if on_running is not None:
            on_running()
        try:
            server.serve_forever()
        finally:
            server.close()
        if server.abandoned and self.own_process:
            # A backend call still runs on another thread: exit now, not through the
            # interpreter's shutdown under it (see daemon/serve/stopping.py).
            log.info("trtd stopped (abandoned requests: exiting at once)")
            if self.before_exit is not None:
                self.before_exit()
            exit_now(0)
        return 0

    def stop(self) -> None:
        self._stop_requested.set()
        if self.server is not None:
            self.server.request_stop()

    def report_stop_progress(self, report: Callable[[int], None],
                             interval_s: float = STOP_PROGRESS_INTERVAL_S,
                             clock: Callable[[], float] = time.monotonic) -> None:
        """Call report(wait_hint_ms) now and every interval_s until run() has returned, so that
        the service manager sees a stop that drains for long make progress (each
        SERVICE_STOP_PENDING report is a new checkpoint) instead of a service that hangs."""
        started = clock()
        while not self.stopped.is_set():
            report(stop_wait_hint_ms(self.drain_timeout_s, clock() - started))
            if self.stopped.wait(interval_s):
                return

    def reload(self) -> None:
        if self.server is not None:
            self.server.request_reload()
