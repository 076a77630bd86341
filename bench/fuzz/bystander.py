"""A well-behaved client running beside the fuzzer: hostile frames must not hurt other clients."""

from __future__ import annotations

import threading
import time

import numpy as np

from trtd.sdk import Client

from .strategies import PROTECTED_MODEL


class WellBehavedClient(threading.Thread):
    """Infers on demo with random inputs and checks every answer against ONNX Runtime in-process."""

    def __init__(self, endpoint: str):
        super().__init__(name="well-behaved", daemon=True)
        from trtd.daemon.backends.onnxruntime import create_session
        from trtd.daemon.builtin.onnx_models import builtin_model_path

        self.session = create_session(builtin_model_path(PROTECTED_MODEL))
        self.endpoint = endpoint
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []

    def run(self) -> None:
        rng = np.random.default_rng(0)
        with Client(self.endpoint, timeout=30) as c:
            while not self.stop.is_set():
                x = rng.standard_normal((int(rng.integers(1, 5)), 64), dtype=np.float32)
                try:
                    y = c.infer(PROTECTED_MODEL, x)
                    if not np.allclose(y, self.session.run(None, {"x": x})[0], rtol=0, atol=1e-5):
                        self.failures.append("wrong answer")
                    else:
                        self.ok += 1
                except Exception as exc:  # noqa: BLE001 - counted, reported by the caller
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.002)  # leave the daemon to the fuzzer most of the time
