"""`trtd demo`: the shortest path to seeing the daemon work.

Starts a daemon if none answers (serving the built-in demo model), runs
requests through the SDK, checks every answer against ONNX Runtime in this
process, prints a small latency table, and stops what it started.
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np

from trtd.protocol import resolve_endpoint

_TOLERANCE = 1e-5


def _start_daemon(endpoint: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "trtd.daemon", "serve", "--endpoint", endpoint,
         "--model", "demo=builtin:demo", "--log-level", "WARNING"],
    )


def _connect(endpoint: str, daemon: subprocess.Popen | None, wait_s: float):
    from trtd.sdk import Client, DaemonNotRunning

    deadline = time.monotonic() + wait_s
    while True:
        try:
            return Client(endpoint=endpoint, connect_timeout=0.5, name="trtd-demo")
        except DaemonNotRunning:
            if daemon is None or daemon.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _percentiles(samples_us: list[float]) -> tuple[float, float, float]:
    p50, p90, p99 = np.percentile(samples_us, (50, 90, 99))
    return float(p50), float(p90), float(p99)


def run_demo(endpoint: str | None = None, requests: int = 200) -> int:
    from trtd.sdk import Client, DaemonNotRunning

    from trtd.daemon.backends.onnxruntime import create_session
    from trtd.daemon.builtin.onnx_models import builtin_model_path

    endpoint = resolve_endpoint(endpoint)
    daemon = None
    try:
        client = Client(endpoint=endpoint, connect_timeout=0.5, name="trtd-demo")
        print(f"using the daemon already running at {endpoint}")
    except DaemonNotRunning:
        print(f"no daemon at {endpoint}: starting one for the demo")
        daemon = _start_daemon(endpoint)
        client = _connect(endpoint, daemon, wait_s=60)
    try:
        with client:
            names = [m.name for m in client.models()]
            if "demo" not in names:
                print(f"the daemon at {endpoint} does not serve 'demo' (it serves {names}); "
                      f"start one with `trtd serve` or pass --endpoint", file=sys.stderr)
                return 1
            session = create_session(builtin_model_path("demo"))
            handle = client.model("demo")
            rng = np.random.default_rng(0)
            worst = 0.0
            daemon_us, local_us = [], []
            for i in range(requests):
                x = rng.standard_normal((1 + i % 4, 64), dtype=np.float32)
                t0 = time.perf_counter()
                y = handle(x)
                t1 = time.perf_counter()
                (expected,) = session.run(None, {"x": x})
                t2 = time.perf_counter()
                worst = max(worst, float(np.abs(y - expected).max()))
                daemon_us.append((t1 - t0) * 1e6)
                local_us.append((t2 - t1) * 1e6)
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=30)
    ok = worst <= _TOLERANCE
    print(f"\n{requests} requests to 'demo' (float32 [1..4,64] -> [1..4,10])")
    print(f"max |daemon - in-process ONNX Runtime| = {worst:.3g}  ({'OK' if ok else 'MISMATCH'})\n")
    print(f"{'path':<28} {'p50 µs':>9} {'p90 µs':>9} {'p99 µs':>9}")
    for label, samples in (("daemon (trtd.sdk)", daemon_us), ("in-process ONNX Runtime", local_us)):
        p50, p90, p99 = _percentiles(samples[10:])  # first requests warm caches up
        print(f"{label:<28} {p50:>9.0f} {p90:>9.0f} {p99:>9.0f}")
    if daemon is not None:
        print("\nstopped the daemon started for the demo")
    return 0 if ok else 1
