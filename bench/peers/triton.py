"""NVIDIA Triton Inference Server as a peer, through PyTriton, in a virtual environment of its own.

PyTriton (`nvidia-pytriton` on PyPI) bundles a real Triton server. Triton's native ONNX
Runtime backend is not part of it, so the model runs as a Python function (ONNX Runtime,
the daemon's session settings) behind Triton's python backend: every report labels the
rows "Triton via PyTriton (python backend)". It needs numpy<2, which is why it gets its own
environment, created on request (`trtd bench --peers triton`) and reused afterwards.

Traps handled here:
- Triton's python-backend stub is linked against libpython by name, and on a machine with a
  system Python of the same minor version it can load that one instead of the interpreter's
  (seen: Debian's 3.11.2 libpython under a pyenv 3.11.7 standard library, failing in
  multiprocessing with a missing RLock method). The interpreter's LIBDIR goes first on
  LD_LIBRARY_PATH.
- PyTriton restricts the shared-memory (and other admin) endpoints behind an access token by
  default. We keep the restriction and pass a random token to our own clients.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import venv
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from ..lib.processes import start_process, stop_process

PYTRITON_VERSION = "0.7.0"  # the version this harness was written and measured with
PROTOCOLS = ("http", "grpc", "grpc_shm")
LABELS = {
    "triton_http": "Triton via PyTriton (python backend), HTTP",
    "triton_grpc": "Triton via PyTriton (python backend), gRPC",
    "triton_grpc_shm": "Triton via PyTriton (python backend), gRPC + system shm",
}
HERE = Path(__file__).resolve().parent
READY_TIMEOUT_S = 240.0


class PeerUnavailable(RuntimeError):
    """The peer cannot run here; the message says why (it goes into the report)."""


def default_env_dir() -> Path:
    from trtd.daemon.builtin.onnx_models import default_cache_dir

    return default_cache_dir() / "bench" / f"pytriton-{PYTRITON_VERSION}-py{sys.version_info[0]}{sys.version_info[1]}"


def unsupported_reason() -> str | None:
    if not sys.platform.startswith("linux"):
        return f"PyTriton runs on Linux only (this is {platform.system()})"
    if platform.machine() not in ("x86_64", "aarch64"):
        return f"PyTriton ships wheels for x86_64 and aarch64 only (this is {platform.machine()})"
    return None


def _env_python(env_dir: Path) -> Path:
    return env_dir / "bin" / "python"


def ensure_env(env_dir: Path, log: Callable[[str], None]) -> Path:
    """Create the environment and install PyTriton into it once; returns its interpreter."""
    reason = unsupported_reason()
    if reason:
        raise PeerUnavailable(reason)
    marker = env_dir / "trtd-installed.json"
    python = _env_python(env_dir)
    if marker.is_file() and python.exists():
        return python
    from importlib.metadata import version

    requirements = [f"nvidia-pytriton=={PYTRITON_VERSION}", "numpy<2", f"onnxruntime=={version('onnxruntime')}"]
    log(f"creating PyTriton's environment in {env_dir} (once): pip install {' '.join(requirements)}")
    try:
        venv.EnvBuilder(with_pip=True, clear=True).create(env_dir)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise PeerUnavailable(f"could not create a virtual environment in {env_dir}: {exc}") from None
    done = subprocess.run([str(python), "-m", "pip", "install", "--quiet", *requirements],
                          capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
        raise PeerUnavailable(f"pip could not install {' '.join(requirements)} into {env_dir}: {tail}")
    marker.write_text(json.dumps({"requirements": requirements}) + "\n")
    return python


def stub_library_env() -> dict[str, str]:
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir:
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libdir, env.get("LD_LIBRARY_PATH")]))
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class TritonServer:
    """A running PyTriton server: where to reach it and what it is."""

    python: Path
    http_url: str
    grpc_url: str
    token: str
    process: subprocess.Popen
    versions: dict[str, Any] = field(default_factory=dict)

    def url_for(self, protocol: str) -> str:
        return self.http_url if protocol == "http" else self.grpc_url

    def worker_argv(self, protocol: str, model: str, shape: tuple[int, ...], output_shape: tuple[int, ...],
                    *, warmup: int, duration_s: float, count: int) -> list[str]:
        return [str(self.python), str(HERE / "triton_worker.py"), "--protocol", protocol,
                "--model", model, "--shape", ",".join(map(str, shape)),
                "--output-shape", ",".join(map(str, output_shape)), "--url", self.url_for(protocol),
                "--warmup", str(warmup), "--duration", str(duration_s), "--count", str(count)]

    def worker_env(self) -> dict[str, str]:
        return dict(os.environ, TRTD_BENCH_TRITON_TOKEN=self.token)


@contextmanager
def triton_server(python: Path, models: list[dict[str, Any]],
                  ort_settings: dict[str, Any]) -> Iterator[TritonServer]:
    """Start PyTriton's server with `models` ({name, path, input, output, shape, output_shape})."""
    http_port, grpc_port, metrics_port = _free_port(), _free_port(), _free_port()
    token = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="trtd-bench-triton-") as tmp:
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps({"http_port": http_port, "grpc_port": grpc_port,
                                         "metrics_port": metrics_port, "ort": ort_settings,
                                         "models": models}))
        log_path = Path(tmp) / "server.log"
        env = stub_library_env()
        env["TRTD_BENCH_TRITON_TOKEN"] = token
        with open(log_path, "w") as log:
            proc = start_process([str(python), str(HERE / "pytriton_server.py"), str(spec_path)],
                                 env=env, stdout=subprocess.PIPE, stderr=log, text=True,
                                 start_new_session=True)
        try:
            versions = _wait_serving(proc, log_path)
            yield TritonServer(python=python, http_url=f"127.0.0.1:{http_port}",
                               grpc_url=f"127.0.0.1:{grpc_port}", token=token, process=proc,
                               versions=versions)
        finally:
            _stop_tree(proc)


def _wait_serving(proc: subprocess.Popen, log_path: Path) -> dict[str, Any]:
    import selectors

    deadline = time.monotonic() + READY_TIMEOUT_S
    assert proc.stdout is not None  # started with stdout=PIPE
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if sel.select(timeout=1.0):
                line = proc.stdout.readline()
                if line.startswith("SERVING "):
                    return json.loads(line[len("SERVING "):])
                if not line and proc.poll() is not None:
                    break
            elif proc.poll() is not None:
                break
    log_tail = "\n".join(log_path.read_text(errors="replace").strip().splitlines()[-15:])
    state = f"exited with status {proc.returncode}" if proc.poll() is not None else \
        f"was not serving after {READY_TIMEOUT_S:.0f} s"
    raise PeerUnavailable(f"the PyTriton server {state}; the end of its log:\n{log_tail}")


def _stop_tree(proc: subprocess.Popen) -> None:
    """PyTriton starts tritonserver and python-backend stubs: stop the whole session."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        children = []
    stop_process(proc, "PyTriton server")
    _, alive = psutil.wait_procs(children, timeout=15)
    for child in alive:
        child.kill()
    if proc.stdout:
        proc.stdout.close()


def server_processes(server: TritonServer) -> list[Any]:
    """The server's process tree (for CPU time and RSS)."""
    import psutil

    try:
        root = psutil.Process(server.process.pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
