"""Start and stop real daemon processes for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import msgpack
import zmq

SHM = Path("/dev/shm")


@dataclass
class DaemonProcess:
    endpoint: str
    proc: subprocess.Popen
    log_path: Path
    env: dict = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.alive():
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"daemon did not stop within {timeout}s on signal {sig}:\n{self.log()}")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def start_daemon(workdir: Path, *args: str, name: str = "d", env: dict | None = None,
                 wait: bool = True, open_files: int | None = None,
                 emulated_cpu: str | None = None) -> DaemonProcess:
    """open_files: the daemon's descriptor limit (RLIMIT_NOFILE, POSIX), for the tests of what
    it does when descriptors run short. emulated_cpu: a qemu CPU model the daemon runs as, under
    qemu-x86_64 (tests/test_int8_portability.py), for what depends on the instruction set."""
    workdir.mkdir(parents=True, exist_ok=True)

    def limited() -> None:
        import resource

        resource.setrlimit(resource.RLIMIT_NOFILE, (open_files, open_files))

    endpoint = f"ipc://{workdir / (name + '.sock')}"
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env.setdefault("TRTD_RUNTIME_DIR", str(workdir / "run"))
    log_path = workdir / f"{name}.log"
    argv = [sys.executable, "-m", "trtd.daemon", "serve", "--endpoint", endpoint, *args]
    if emulated_cpu is not None:
        from trtd.bench.int8_portability import under_qemu

        argv = under_qemu(emulated_cpu, argv)
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            argv,
            stdout=log, stderr=subprocess.STDOUT, env=full_env,
            preexec_fn=limited if open_files is not None else None,
        )
    daemon = DaemonProcess(endpoint, proc, log_path, full_env)
    if wait:
        wait_ready(daemon)
    return daemon


def wait_ready(daemon: DaemonProcess, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not daemon.alive():
            raise AssertionError(f"daemon exited with {daemon.proc.returncode}:\n{daemon.log()}")
        try:
            reply = raw_call(daemon.endpoint, {"v": 1, "op": "status", "id": 1}, timeout=0.5)
        except TimeoutError:
            time.sleep(0.05)
            continue
        # Models load in the background after the socket serves: wait for them too.
        if reply.get("ok") and not any(m["state"] == "loading" for m in reply["result"]["models"]):
            return
        time.sleep(0.02)
    raise AssertionError(f"daemon not ready within {timeout}s:\n{daemon.log()}")


def raw_call(endpoint: str, message, timeout: float = 5.0, raw: bool = False) -> dict:
    """Send one frame with a bare DEALER socket (bytes as they are when raw) and return the reply."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    try:
        sock.connect(endpoint)
        sock.send(message if raw else msgpack.packb(message))
        if not sock.poll(int(timeout * 1000)):
            raise TimeoutError(f"no reply within {timeout}s")
        return msgpack.unpackb(sock.recv())
    finally:
        sock.close()
        ctx.term()


def shm_names(prefix: str = "trtd_") -> set[str]:
    return {p.name for p in SHM.iterdir() if p.name.startswith(prefix)} if SHM.is_dir() else set()


def wait_until(predicate, timeout: float, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


@contextmanager
def serving(workdir: Path, config_text: str, name: str = "d") -> Iterator[DaemonProcess]:
    """A daemon started from a TOML config text; stopped (and checked to exit 0) afterwards."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir / f"{name}.toml"
    config.write_text(config_text)
    daemon = start_daemon(workdir, "--config", str(config), name=name)
    try:
        yield daemon
    finally:
        rc = daemon.stop()
        assert rc == 0, daemon.log()


def run_threads(target, args_list) -> None:
    """target(*args) in one thread per args; the first failure is raised here, not lost in a thread."""
    errors = []

    def guarded(*args):
        try:
            target(*args)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=tuple(args)) for args in args_list]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
