"""A daemon of the benchmark's own: started for one run, reached through the SDK, stopped after.

Every benchmark that measures the daemon starts it the same way, so that what is measured is
the same thing: `sys.executable -m trtd.daemon serve` on a private endpoint in a temp dir (its
lock file goes there too, instead of piling up in the user's runtime dir), stopped with SIGTERM
at the end, also on errors and Ctrl-C. Shared-memory segments it leaves behind are removed and
reported: only a daemon on that endpoint can have made them, so any left is a leak.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from .processes import private_endpoint, start_process, stop_process

if TYPE_CHECKING:
    from trtd.sdk import Client


class BenchError(RuntimeError):
    """The benchmark could not run (exit status 3): the daemon failed, a model is missing."""


@contextmanager
def started_daemon(tmpdir: Path, serve_args: Iterable[str] = (), *, log_level: str = "WARNING",
                   log: Path | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """`trtd serve` with `serve_args` (--model, --config ...) on a private endpoint in `tmpdir`.

    Yields (endpoint, process). `log`: the daemon's stdout and stderr go to that file instead
    of ours. The daemon may still be loading its models: connect() waits for it."""
    from trtd.daemon.serve.endpoint_lock import SHM_DIR, endpoint_prefix

    endpoint = private_endpoint(tmpdir, "d.sock")
    argv = [sys.executable, "-m", "trtd.daemon", "serve", "--endpoint", endpoint,
            "--log-level", log_level, *serve_args]
    env = dict(os.environ, TRTD_RUNTIME_DIR=str(tmpdir))
    with ExitStack() as stack:
        output = stack.enter_context(open(log, "wb")) if log is not None else None
        daemon = start_process(argv, env=env, stdout=output,
                               stderr=subprocess.STDOUT if output else None)
        try:
            yield endpoint, daemon
        finally:
            stop_process(daemon, "daemon")
            prefix = endpoint_prefix(endpoint)
            leftovers = sorted(SHM_DIR.glob(prefix + "*")) if SHM_DIR.is_dir() else []
            for path in leftovers:
                path.unlink(missing_ok=True)
            if leftovers:
                print(f"bench: removed {len(leftovers)} shared-memory segment(s) the daemon left "
                      f"behind (exit status {daemon.returncode}): "
                      f"{', '.join(p.name for p in leftovers)}", file=sys.stderr)


def connect(endpoint: str, daemon: subprocess.Popen | None, wait_s: float = 120.0, *,
            name: str = "trtd-bench", timeout: float = 120.0) -> "Client":
    """An SDK client; while a daemon we started (`daemon`) is coming up, keeps trying.

    A daemon we did not start (`daemon` None) must be there already: DaemonNotRunning at once.
    The default timeout is generous because the first reply waits until every model is loaded."""
    from trtd.sdk import Client, DaemonNotRunning

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return Client(endpoint=endpoint, timeout=timeout, connect_timeout=0.5, name=name)
        except DaemonNotRunning:
            if daemon is None:
                raise
            if daemon.poll() is not None:
                raise BenchError(f"the daemon exited with status {daemon.returncode} before answering "
                                 f"(its messages are above)") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def check_models_served(client: "Client", names: Iterable[str]) -> None:
    """BenchError unless the daemon serves every model in `names` and each is ready."""
    served = {info.name: info for info in client.models()}
    for name in names:
        info = served.get(name)
        if info is None:
            raise BenchError(f"the daemon at {client.endpoint} does not serve {name!r} "
                             f"(it serves {', '.join(served) or 'nothing'})")
        if info.state != "ready":
            raise BenchError(f"model {name!r} is {info.state} on the daemon: {info.error}")
