"""Requests straight through a daemon backend's GPU instance, in this process, without a daemon.

The TensorRT benchmarks time an engine on the daemon's own GPU data path (a CudaInstance: H2D
from a pinned host area, enqueue on the instance's stream, D2H, event timing) to separate the
engine from the transport. Like a daemon region, the host area is one buffer registered with
CUDA once, on its first request, not per request, so what is timed is what the daemon pays.
Only public daemon names are used: the backend's I/O description and `instance.run`.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any

import numpy as np


class InstanceRunner:
    """Runs requests of `backend` through `instance` on one reused host buffer.

    `pinning` (a trtd.daemon.system.cuda.HostPinning, the one the instance was made with): on
    close() the buffer is unregistered from CUDA before it is freed."""

    def __init__(self, backend: Any, instance: Any, pinning: Any = None):
        self.backend, self.instance, self._pinning = backend, instance, pinning
        self._buffer: np.ndarray | None = None

    def _area(self, nbytes: int) -> np.ndarray:
        """The host buffer, at least `nbytes`, its start aligned as a region's is."""
        from trtd.protocol import ALIGNMENT, align_up

        if self._buffer is None or self._buffer.nbytes < nbytes:
            self.close()
            raw = np.zeros(nbytes + ALIGNMENT, np.uint8)
            start = align_up(raw.ctypes.data) - raw.ctypes.data
            self._buffer = raw[start:start + nbytes]
        return self._buffer

    def run(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], Any]:
        """One request: its outputs (copies) and the instance's RunTiming (h2d/compute/d2h µs)."""
        from trtd.daemon.backends import TensorBinding
        from trtd.protocol import align_up

        predicted = self.backend.output_shapes({k: v.shape for k, v in inputs.items()})
        sizes = [(name, a.nbytes) for name, a in inputs.items()]
        sizes += [(s.name, math.prod(predicted[s.name]) * np.dtype(s.dtype).itemsize
                   if predicted.get(s.name) else max(s.max_nbytes, 1)) for s in self.backend.outputs]
        offsets, total = {}, 0
        for name, nbytes in sizes:
            offsets[name] = total
            total = align_up(total + nbytes)
        area = self._area(total)
        address = area.ctypes.data
        bindings_in = []
        for name, array in inputs.items():
            area[offsets[name]:offsets[name] + array.nbytes] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
            bindings_in.append(TensorBinding(name, array.dtype, array.shape, address + offsets[name], array.nbytes))
        capacity = dict(sizes[len(inputs):])
        bindings_out = [TensorBinding(s.name, np.dtype(s.dtype), predicted.get(s.name), address + offsets[s.name],
                                      capacity[s.name]) for s in self.backend.outputs]
        region = SimpleNamespace(address=address, nbytes=area.nbytes, name="bench")
        shapes, timing = self.instance.run(region, bindings_in, bindings_out)
        outputs = {}
        for b in bindings_out:
            out_shape = tuple(shapes[b.name])
            n = math.prod(out_shape) * b.dtype.itemsize
            outputs[b.name] = area[offsets[b.name]:offsets[b.name] + n].view(b.dtype).reshape(out_shape).copy()
        return outputs, timing

    def close(self) -> None:
        """Unregister the buffer from CUDA (if it was registered) and drop it."""
        if self._buffer is not None and self._pinning is not None:
            self._pinning.unpin(self._buffer.ctypes.data)
        self._buffer = None
