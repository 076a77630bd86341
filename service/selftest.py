"""`trtd selftest`: checks a user runs on their machine and sends back as one report.

Each check is real: shared memory is created here and read and written by a second process;
the daemon round trip goes through a running daemon (the service's, when one answers) or a
temporary one started for the test; the cache folder gets a real file written, renamed and
removed. The report is written twice: JSON for us, text for the person sending it.
"""

from __future__ import annotations

import datetime
import json
import os
import platform as pyplatform
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path

from trtd.daemon.system import platform


@dataclass
class Result:
    name: str
    ok: bool | None  # None: information, or not applicable here
    detail: str


def add_parser(sub) -> None:
    p = sub.add_parser("selftest", help="check shared memory, CUDA, the engine cache and a daemon "
                                        "round trip; write a report to send back")
    p.add_argument("--report", type=Path, help="report path without suffix (default: "
                                                 "./trtd-selftest-HOST-DATE); .json and .txt are written")
    p.add_argument("--endpoint", help="the daemon to test (default: the one clients find; a "
                                      "temporary daemon is started when none answers)")
    p.add_argument("--scope", choices=platform.SCOPES, default="user",
                   help="whose cache folder to check (system: the service's)")
    p.set_defaults(func=main)


# -- checks --------------------------------------------------------------------------------------

_CHILD = r"""
import sys
from trtd.sdk.shm import AttachedRegion
region = AttachedRegion(sys.argv[1], int(sys.argv[2]), token="")
data = region.bytes
assert bytes(data[:4]) == b"trtd", bytes(data[:4])
data[4:8] = memoryview(b"pong")
region.close()
"""


def check_shared_memory() -> Result:
    """A region made as the daemon makes them, attached and written by another process."""
    from trtd.daemon.core.regions import RegionLimits, RegionRegistry

    registry = RegionRegistry(f"trtd_selftest_{os.getpid()}_", RegionLimits(1 << 20, 4, 1 << 22))
    try:
        region = registry.lease(1, 4096)
        region.view[:4] = memoryview(b"trtd")
        child = subprocess.run([sys.executable, "-c", _CHILD, region.name, str(region.nbytes)],
                               capture_output=True, text=True, timeout=60)
        if child.returncode != 0:
            return Result("shared memory", False, f"a second process could not use region "
                                                  f"{region.name}: {child.stderr.strip()[-500:]}")
        if bytes(region.view[4:8]) != b"pong":
            return Result("shared memory", False, "the second process's write is not visible here")
        return Result("shared memory", True, f"region {region.name} ({region.nbytes} bytes) written "
                                             f"here, read and written by another process")
    finally:
        registry.close_all()


def check_cuda() -> Result:
    from trtd.daemon.system import cuda

    dll_dirs = platform.add_dll_directories() if platform.IS_WINDOWS else []
    suffix = f"; DLL folders added: {', '.join(dll_dirs)}" if dll_dirs else ""
    if not cuda.available():
        return Result("cuda", None, 'cuda-python is not installed (pip install "trtd[cuda]"); '
                                    'GPU models cannot load' + suffix)
    try:
        count = cuda.device_count()
        names = [cuda.device_name(i) for i in range(count)]
    except cuda.CudaError as exc:
        return Result("cuda", False, f"{exc}{suffix}")
    if not count:
        return Result("cuda", False, "CUDA is installed but sees no device" + suffix)
    return Result("cuda", True, f"{count} device(s): {', '.join(names)}{suffix}")


def check_cache(scope: str) -> Result:
    folder = Path(platform.cache_dir(scope))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".selftest.", dir=folder)
        with os.fdopen(fd, "wb") as f:
            f.write(b"trtd selftest\n")
            f.flush()
            os.fsync(f.fileno())
        final = folder / f".selftest-{os.getpid()}"
        os.replace(tmp, final)  # engines are written the same way: temp file, then rename
        final.unlink()
    except OSError as exc:
        return Result("engine cache", False, f"{folder} is not writable ({exc}); set TRTD_CACHE_DIR "
                                             f"to a writable folder")
    return Result("engine cache", True, f"{folder} is writable (write, fsync, rename, remove)")


def check_round_trip(endpoint: str | None) -> Result:
    import shutil

    import numpy as np

    from trtd.sdk import Client, DaemonNotRunning

    started = None
    try:
        try:
            client = Client(endpoint=endpoint, connect_timeout=1.0, timeout=60, name="trtd-selftest")
            where = f"the running daemon at {client.endpoint}"
        except DaemonNotRunning:
            started, endpoint = _start_temporary_daemon()
            client = _connect_when_up(started, endpoint)
            where = f"a temporary daemon at {endpoint}"
        with client:
            names = [m.name for m in client.models() if m.state in ("ready", "loading")]
            if "demo" not in names:
                return Result("daemon round trip", None, f"{where} serves {names}, not 'demo': "
                                                         f"connected, no inference tried")
            x = np.random.default_rng(0).standard_normal((2, 64), dtype=np.float32)
            t0 = time.perf_counter()
            y = client.infer("demo", x)
            ms = (time.perf_counter() - t0) * 1e3
            if y.shape != (2, 10) or not np.isfinite(y).all():
                return Result("daemon round trip", False, f"{where}: unexpected output {y.shape}")
            return Result("daemon round trip", True, f"{where}: 'demo' answered float32{list(y.shape)} "
                                                     f"in {ms:.1f} ms through shared memory")
    except Exception as exc:  # the report must still be written
        return Result("daemon round trip", False, f"{type(exc).__name__}: {exc}")
    finally:
        if started is not None:
            started.terminate()
            try:
                started.wait(timeout=30)
            except subprocess.TimeoutExpired:
                started.kill()
            if endpoint and endpoint.startswith("ipc://"):
                shutil.rmtree(Path(endpoint[len("ipc://"):]).parent, ignore_errors=True)


def _connect_when_up(proc: subprocess.Popen, endpoint: str, wait_s: float = 60.0):
    from trtd.sdk import Client, DaemonNotRunning

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return Client(endpoint=endpoint, connect_timeout=1.0, timeout=60, name="trtd-selftest")
        except DaemonNotRunning:
            if proc.poll() is not None:
                raise RuntimeError(f"the temporary daemon exited with status {proc.returncode}") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _start_temporary_daemon() -> tuple[subprocess.Popen, str]:
    if platform.IS_WINDOWS:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            endpoint = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    else:
        folder = Path(tempfile.mkdtemp(prefix="trtd-selftest-"))
        endpoint = f"ipc://{folder / 'trtd.sock'}"
    proc = subprocess.Popen([sys.executable, "-m", "trtd.daemon", "serve", "--endpoint", endpoint,
                             "--model", "demo=builtin:demo"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return proc, endpoint


def check_tdr() -> Result:
    """GeForce cards in WDDM mode: Windows resets the GPU when a kernel runs past TdrDelay."""
    if not platform.IS_WINDOWS:
        return Result("gpu watchdog (TDR)", None, "Windows only")
    from .tdr import describe_tdr

    ok, detail = describe_tdr()
    return Result("gpu watchdog (TDR)", ok, detail)


def environment() -> Result:
    details = [f"{pyplatform.system()} {pyplatform.release()} ({pyplatform.machine()})",
               f"Python {pyplatform.python_version()} at {sys.executable}"]
    if sys.platform == "win32":
        details.append(f"session {os.environ.get('SESSIONNAME', '?')}")
    else:
        details.append(f"uid {os.getuid()}")
    return Result("environment", None, ", ".join(details))


def run_checks(endpoint: str | None, scope: str) -> list[Result]:
    results = [environment()]
    for check in (check_shared_memory, check_cuda, lambda: check_cache(scope),
                  lambda: check_round_trip(endpoint), check_tdr):
        try:
            results.append(check())
        except Exception as exc:  # one broken check must not lose the report
            results.append(Result(getattr(check, "__name__", "check"), False,
                                  f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=3)}"))
    return results


def render_text(results: list[Result]) -> str:
    lines = [f"trtd selftest, {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}"]
    for r in results:
        mark = {True: "ok  ", False: "FAIL", None: "    "}[r.ok]
        lines.append(f"{mark} {r.name:<20} {r.detail}")
    failed = sum(1 for r in results if r.ok is False)
    lines.append(f"\n{failed} check(s) failed" if failed else "\nall checks passed")
    return "\n".join(lines) + "\n"


def main(args) -> int:
    results = run_checks(args.endpoint, args.scope)
    stem = args.report or Path(f"trtd-selftest-{socket.gethostname()}-"
                               f"{datetime.date.today().isoformat()}")
    text = render_text(results)
    from trtd.protocol import SERVER_VERSION

    report = {"trtd_version": SERVER_VERSION, "created": time.time(), "host": socket.gethostname(),
              "platform": sys.platform, "results": [asdict(r) for r in results]}
    stem.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    Path(f"{stem}.txt").write_text(text, encoding="utf-8")
    print(text + f"report: {stem}.json, {stem}.txt")
    return 1 if any(r.ok is False for r in results) else 0
