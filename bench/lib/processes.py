"""Processes a benchmark starts (daemons, echo servers, load workers) and how they are stopped.

A benchmark that is interrupted, fails, or is killed must not leave a daemon or a worker
behind: every child gets SIGTERM when its parent dies (Linux), is stopped with SIGTERM and,
after 30 s, SIGKILL, and SIGTERM to the benchmark unwinds like an exception so that its
clean-up runs.
"""

from __future__ import annotations

import ctypes
import signal
import socket
import subprocess
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

STOP_TIMEOUT_S = 30.0


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn making a Linux child get SIGTERM if we die without cleaning up (SIGKILL,
    os._exit), so not even a killed benchmark leaves a daemon behind."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # Resolved here, in the parent: the child must not load libraries between fork and exec.
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return preexec


def start_process(argv: list[str], env: dict[str, str] | None = None, **kwargs: Any) -> subprocess.Popen:
    """A child that dies with us (see the module docstring); kwargs go to Popen."""
    return subprocess.Popen(argv, env=env, preexec_fn=_parent_death_signal(), **kwargs)


def stop_process(proc: subprocess.Popen, what: str) -> None:
    """SIGTERM, then SIGKILL if it is still there after STOP_TIMEOUT_S; reaps it either way."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            print(f"bench: the {what} (pid {proc.pid}) ignored SIGTERM for {STOP_TIMEOUT_S:.0f} s; "
                  f"killing it", file=sys.stderr)
            proc.kill()
            proc.wait()


def private_endpoint(tmpdir: Path, name: str) -> str:
    """An endpoint only this run uses: ipc:// in `tmpdir`, loopback TCP on Windows (no ipc://
    in libzmq there, as for the daemon)."""
    if sys.platform == "win32":
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"tcp://127.0.0.1:{s.getsockname()[1]}"
    return f"ipc://{tmpdir / name}"


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like an exception, so the processes we started are still stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
