"""One load-generating client process for the concurrency sweep (trtd's own systems).

    python -m trtd.bench.load_worker --system daemon_zero_copy --model mlp --endpoint ipc://...
                                     [--warmup N] [--duration S | --count N]

Systems: in_process (ONNX Runtime in this process, the daemon's session settings),
daemon_copy (handle(x) through the SDK) and daemon_zero_copy (handle.run_zero_copy()
with the input written once beforehand). See trtd.bench.load_loop for the
handshake with the parent.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

import numpy as np

from .latency import MODELS
from .load_loop import run_worker

SYSTEMS = ("in_process", "daemon_copy", "daemon_zero_copy")


def make_call(system: str, model: str, endpoint: str) -> Callable[[], Callable[[], object]]:
    def setup() -> Callable[[], object]:
        x = np.random.default_rng(0).standard_normal(MODELS[model].input_shape, dtype=np.float32)
        if system == "in_process":
            from trtd.daemon.backends.onnxruntime import create_session
            from trtd.daemon.builtin_models import builtin_model_path

            session = create_session(builtin_model_path(model))
            feed = {session.get_inputs()[0].name: x}
            return lambda: session.run(None, feed)
        from trtd.sdk import Client

        client = Client(endpoint=endpoint, timeout=60.0, name=f"trtd-bench-{system}")
        handle = client.model(model)
        if system == "daemon_copy":
            return lambda: handle(x)
        (slot,) = handle.zero_copy_inputs().values()
        slot[...] = x
        return handle.run_zero_copy

    return setup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtd.bench.load_worker")
    parser.add_argument("--system", choices=SYSTEMS, required=True)
    parser.add_argument("--model", choices=sorted(MODELS), required=True)
    parser.add_argument("--endpoint", default="")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--duration", type=float, default=0.0)
    parser.add_argument("--count", type=int, default=0)
    args = parser.parse_args(argv)
    return run_worker(make_call(args.system, args.model, args.endpoint), warmup=args.warmup,
                      duration_s=args.duration, count=args.count)


if __name__ == "__main__":
    sys.exit(main())
