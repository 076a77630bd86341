"""CUDA graphs for TorchScript on a GPU: capture a model once per batch size, then replay it.

Launching a ResNet-18's ~60 kernels one by one from Python costs more than running them on an
H200 (measured 2026-12-01: TorchScript b1 ~1.0 ms eager, ~0.48 ms as a replayed graph). A
graph records the kernels with fixed device addresses, so it is captured per instance (each has
its own stream and device buffers, allocated once by CudaInstance and reused) and per batch
size, reading the instance's input buffers and writing its output buffers. A request whose
addresses and shapes match a captured graph replays it; any other runs eagerly. Nothing is
padded into a larger graph: rows of a batch need not be independent for every model, and the
daemon cannot know.

The graphs of one instance share one memory pool (torch's graph_pool_handle): the tensors a
graph's kernels use live there for as long as the graph does. torch allows sharing a pool when
the graphs never replay concurrently, and in an order that keeps what one graph leaves in the
pool unneeded by the next; here each graph copies its results into the instance's own output
buffers (outside the pool) before it ends, and an instance replays on one stream, one request
at a time, so any order is safe. Instances run concurrently, so each has its own pool.
`graph_bytes` reports what the captures took from the allocator; close() frees the graphs and
the pools.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

from trtd.daemon.system import cuda

log = logging.getLogger("trtd.torch")

# The batch sizes captured when the configuration names none (each capped by max_batch).
DEFAULT_GRAPH_BATCHES = (1, 2, 4, 8)
# Eager runs before a capture: cuDNN picks its algorithms and torch's allocator warms up
# on these, so that the capture records the steady state.
_WARMUP_RUNS = 3

# (stream pointer, input addresses and shapes, output addresses)
GraphKey = tuple[int, tuple[tuple[int, tuple[int, ...]], ...], tuple[int, ...]]


@dataclass(slots=True)
class _Captured:
    graph: Any                       # torch.cuda.CUDAGraph
    shapes: dict[str, tuple[int, ...]]


class GraphCache:
    """The graphs of one TorchBackend, keyed by the exact addresses and shapes they read and
    write. Used from each instance's own thread only for its own stream's keys."""

    def __init__(self, torch_module: Any, device: Any, batches: tuple[int, ...]):
        self._torch = torch_module
        self._device = device
        self.batches = frozenset(batches)
        self._pools: dict[int, Any] = {}  # stream pointer -> that instance's pool
        self._graphs: dict[GraphKey, _Captured] = {}
        self.graph_bytes = 0

    def __len__(self) -> int:
        return len(self._graphs)

    def wants(self, batch: int | None) -> bool:
        # A bound on graphs of one backend: every instance and every set of requested outputs
        # gets its own, and a client asking for ever new output subsets must not fill the GPU.
        return batch is not None and batch in self.batches and len(self._graphs) < 8 * len(self.batches)

    def replay(self, key: GraphKey) -> dict[str, tuple[int, ...]] | None:
        """Replay the graph for `key` on the current stream; its output shapes, or None if none."""
        captured = self._graphs.get(key)
        if captured is None:
            return None
        captured.graph.replay()
        return captured.shapes

    def capture(self, key: GraphKey, stream: Any, run: Callable[[], dict[str, tuple[int, ...]]]
                ) -> dict[str, tuple[int, ...]]:
        """Warm up, then capture `run` (the eager path: module and copies into the output
        buffers) on `stream`, and replay it once so this request's outputs are written."""
        torch = self._torch
        for _ in range(_WARMUP_RUNS):
            shapes = run()
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        pool = self._pools.setdefault(key[0], torch.cuda.graph_pool_handle())
        # Alone among every instance's GPU work (system/cuda.py CaptureGuard); thread_local
        # besides, so that what another library thread does cannot fail it.
        with cuda.capture_guard.exclusive():
            torch.cuda.empty_cache()  # what torch.cuda.graph does first: measure after it
            before = torch.cuda.memory_reserved(self._device)
            with torch.cuda.graph(graph, pool=pool, stream=stream, capture_error_mode="thread_local"):
                shapes = run()
            # Reserved, not allocated: what the kernels used during capture went back to the
            # graph's private pool, which keeps it for the replays.
            self.graph_bytes += max(torch.cuda.memory_reserved(self._device) - before, 0)
        self._graphs[key] = _Captured(graph, shapes)
        log.info("captured a CUDA graph for shapes %s (%d graph(s), %d bytes in the pool)",
                 [shape for _, shape in key[1]], len(self._graphs), self.graph_bytes)
        graph.replay()
        return shapes

    def close(self) -> None:
        for captured in self._graphs.values():
            captured.graph.reset()
        self._graphs.clear()
        self._pools.clear()
        self.graph_bytes = 0
