"""The calls each compared system makes, built once so that every benchmark times the same thing.

in-process   ONNX Runtime in the calling process, with the daemon's own session settings (both
             come from trtd.daemon.backends.onnxruntime.create_session);
daemon copy  `handle(x)` through the SDK: x copied into the leased region, one request, the
             output copied out;
daemon zero-copy  `handle.run_zero_copy()`: the inputs are written once into the
             `zero_copy_inputs()` views beforehand, so this call EXCLUDES the client's write of
             the input; outputs are read-only views into the region (no copy out).

The single-client benchmark and every sweep worker process build their calls here.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from .workloads import BenchModel

ZERO_COPY_NOTE = ("the zero-copy row excludes the client's write of the input: it is written once "
                  "into the zero_copy_inputs() views before timing")


def onnx_session(model: BenchModel) -> Any:
    """An ONNX Runtime session of the model with the daemon's settings."""
    from trtd.daemon.backends.onnxruntime import create_session

    return create_session(model.source())


def in_process_call(session: Any, feed: dict[str, np.ndarray]) -> Callable[[], Any]:
    return lambda: session.run(None, feed)


def copy_call(handle: Any, feed: dict[str, np.ndarray]) -> Callable[[], Any]:
    """One input goes as the array itself, as applications with one input call it."""
    arg = next(iter(feed.values())) if len(feed) == 1 else feed
    return lambda: handle(arg)


def zero_copy_call(handle: Any, model: BenchModel, feed: dict[str, np.ndarray]) -> Callable[[], Any]:
    """Writes the inputs into the region's views now, outside every timed section."""
    for name, slot in handle.zero_copy_inputs({t.name: t.shape for t in model.inputs}).items():
        slot[...] = feed[name]
    run: Callable[[], Any] = handle.run_zero_copy
    return run
