"""One load-generating client process for the concurrency sweep (trtd's own systems).

    python -m trtd.bench.load_worker --system daemon_zero_copy --model mlp --endpoint ipc://...
                                     [--warmup N] [--duration S | --count N]

--model is a built-in model's name, or a model as BenchModel.to_json() writes it (the user's
own ONNX models, with the shapes the parent resolved).

Systems: in_process (ONNX Runtime in this process, the daemon's session settings),
daemon_copy (handle(x) through the SDK) and daemon_zero_copy (handle.run_zero_copy()
with the input written once beforehand). See trtd.bench.lib.load_loop for the
handshake with the parent, and trtd.bench.lib.systems for the calls.
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable

from .lib.load_loop import run_worker
from .lib.systems import copy_call, in_process_call, onnx_session, zero_copy_call
from .lib.workloads import MODELS, BenchModel

SYSTEMS = ("in_process", "daemon_copy", "daemon_zero_copy")


def model_arg(text: str) -> BenchModel:
    if text.lstrip().startswith("{"):
        return BenchModel.from_json(text)
    try:
        return MODELS[text]
    except KeyError:
        raise argparse.ArgumentTypeError(f"unknown model {text!r}; built-in: {', '.join(MODELS)}") from None


def make_call(system: str, model: BenchModel, endpoint: str) -> Callable[[], Callable[[], object]]:
    """The setup run_worker calls in the worker: connects, returns the call to time."""
    def setup() -> Callable[[], object]:
        feed = model.make_inputs()  # the parent's seed: the same inputs in every process
        if system == "in_process":
            return in_process_call(onnx_session(model), feed)
        from trtd.sdk import Client

        client = Client(endpoint=endpoint, timeout=60.0, name=f"trtd-bench-{system}")
        handle = client.model(model.name)
        if system == "daemon_copy":
            return copy_call(handle, feed)
        return zero_copy_call(handle, model, feed)

    return setup


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtd.bench.load_worker")
    parser.add_argument("--system", choices=SYSTEMS, required=True)
    parser.add_argument("--model", type=model_arg, required=True, metavar="NAME|JSON")
    parser.add_argument("--endpoint", default="")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--duration", type=float, default=0.0)
    parser.add_argument("--count", type=int, default=0)
    args = parser.parse_args(argv)
    return run_worker(make_call(args.system, args.model, args.endpoint), warmup=args.warmup,
                      duration_s=args.duration, count=args.count)


if __name__ == "__main__":
    sys.exit(main())
