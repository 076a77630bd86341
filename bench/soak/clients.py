"""The soak's client processes: mixed requests, each answer checked, results by time window.

A client mixes inline and pooled (worker-instance) models, batch sizes, a larger 224x224
model, zero-copy requests, region lease/release churn, reconnects and deliberately bad requests
(expected errors, counted apart), and checks every answer against ONNX Runtime in its own
process. It sends one summary per WINDOW_S window to the parent over a multiprocessing queue,
so that latency can be followed over the run (growth shows up there too).
"""

from __future__ import annotations

import multiprocessing as mp
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

WINDOW_S = 10.0


def run_client(endpoint: str, seed: int, duration_s: float, out: "mp.Queue[Any]", start: Any) -> None:
    """One soak client. Its clock starts at `start` (set once every client is ready): starting a
    spawned process and its ONNX Runtime references takes seconds on a small machine, which
    once ate a whole short soak before its first request."""
    from trtd.daemon.backends.onnxruntime import create_session
    from trtd.daemon.builtin.onnx_models import builtin_model_path
    from trtd.sdk import Client, InvalidInput, Overloaded

    refs = {"demo": create_session(builtin_model_path("demo")),
            "nearzero224": create_session(builtin_model_path("nearzero224"))}
    refs["pool"] = refs["demo"]
    rng = np.random.default_rng(seed)
    window = Window(time.time())
    client = Client(endpoint, timeout=30, name=f"soak-{seed}")
    out.put(("ready", seed))
    start.wait()
    until = time.time() + duration_s
    try:
        while True:  # at least one request, however short the soak
            roll = rng.random()
            began = time.perf_counter()
            kind = "infer"
            try:
                if roll < 0.45:
                    x = rng.standard_normal((int(rng.integers(1, 9)), 64), dtype=np.float32)
                    model = "demo" if rng.random() < 0.6 else "pool"
                    ok = np.allclose(client.infer(model, x), refs[model].run(None, {"x": x})[0], atol=1e-5)
                elif roll < 0.55:
                    x = rng.standard_normal((1, 3, 224, 224), dtype=np.float32)
                    ok = np.allclose(client.infer("nearzero224", x),
                                     refs["nearzero224"].run(None, {"x": x})[0], atol=1e-4)
                elif roll < 0.75:
                    handle = client.model("demo")
                    x = rng.standard_normal((1, 64), dtype=np.float32)
                    handle.zero_copy_inputs()["x"][...] = x
                    ok = np.allclose(handle.run_zero_copy()["y"], refs["demo"].run(None, {"x": x})[0],
                                     atol=1e-5)
                elif roll < 0.85:
                    kind = "lease"
                    region = client.lease(int(rng.integers(1, 1 << 20)))
                    region.bytes[:16] = 7
                    client.release(region)
                    ok = True
                elif roll < 0.90:
                    kind = "reconnect"
                    client.close()
                    client = Client(endpoint, timeout=30, name=f"soak-{seed}")
                    ok = True
                elif roll < 0.95:
                    kind = "bad"  # must be refused with a clear error, never answered
                    try:
                        client.infer("demo", np.zeros((1, 63), np.float32))
                        ok = False
                    except InvalidInput:
                        ok = True
                else:
                    kind = "status"
                    ok = client.status().regions >= 0
            except Overloaded:
                kind, ok = "overloaded", True  # backpressure working as designed
            except Exception as exc:  # noqa: BLE001 - a failed correct request: counted, reported
                ok = False
                window.errors.append(f"{type(exc).__name__}: {exc}")
            elapsed_us = (time.perf_counter() - began) * 1e6
            window.add(kind, ok, elapsed_us)
            if time.time() - window.start >= WINDOW_S:
                out.put(window.summary(seed))
                window = Window(time.time())
            if time.time() >= until:
                break
        out.put(window.summary(seed))
    finally:
        client.close()
        out.put(("done", seed))


@dataclass
class Window:
    """One client's requests in one time window."""

    start: float
    latencies: list[float] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    failed: int = 0
    errors: list[str] = field(default_factory=list)

    def add(self, kind: str, ok: bool, us: float) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if not ok:
            self.failed += 1
        if kind == "infer":
            self.latencies.append(us)

    def summary(self, seed: int) -> dict[str, Any]:
        lat = np.array(self.latencies) if self.latencies else np.zeros(1)
        return {"client": seed, "t": self.start, "end": time.time(), "counts": self.counts,
                "failed": self.failed, "errors": self.errors[:5], "infer_n": len(self.latencies),
                "p50_us": float(np.percentile(lat, 50)), "p99_us": float(np.percentile(lat, 99))}


def wait_ready(queue: Any, workers: list[Any], timeout_s: float = 300.0) -> None:
    """Until every client has said "ready"; a client that died while starting ends the soak."""
    import queue as queues

    ready, deadline = 0, time.monotonic() + timeout_s
    while ready < len(workers):
        try:
            item = queue.get(timeout=0.5)
        except queues.Empty:
            dead = [w for w in workers if w.exitcode is not None]
            if dead or time.monotonic() > deadline:
                for w in workers:
                    w.kill()
                raise SystemExit(f"soak: {len(dead)} client(s) exited before starting (exit codes "
                                 f"{[w.exitcode for w in dead]})" if dead else
                                 f"soak: clients not ready after {timeout_s:.0f} s")
            continue
        if item[0] == "ready":
            ready += 1
