"""A torch module captured once as a CUDA graph, run the way an application would in-process.

The limit for a model in this process: no kernel launched one by one from Python, only the
replay of the captured graph. One request, as for trtd.bench.lib.torch_cuda.PinnedForward and
as the daemon does it: the input from pinned host memory into a static device tensor (H2D,
non_blocking, outside the graph), graph.replay(), the graph's static output into pinned host
memory (D2H, non_blocking), torch.cuda.synchronize(). The copies and the replay are issued on
the current stream, in order.

Capture as torch's CUDA-graph notes ask: warm-up runs on a side stream first (cuDNN picks its
algorithms, TorchScript's profiling executor optimizes its plan, the allocator warms up), then
torch.cuda.graph on that side stream. `dtype` (e.g. torch.float16 for a module.half()): the
graph casts the float32 input to it on the device and its output back to float32, so the
host-side bytes stay float32, as in the daemon's precision = "fp16".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .torch_cuda import Forward

WARMUP_RUNS = 3


class GraphForward(Forward):
    """`module` on `device` as one captured CUDA graph over static device tensors."""

    def __init__(self, torch: Any, module: Any, device: Any, x: np.ndarray, dtype: Any = None,
                 warmup: int = WARMUP_RUNS):
        self._torch = torch
        # The graph reads the module's weights by address: the module must live as long as it
        # (a module only the capture referenced was freed, and replays read reused memory: NaN).
        self._module = module
        self._x = torch.from_numpy(x).pin_memory()
        self._static_in = torch.empty(tuple(x.shape), dtype=torch.float32, device=device)
        self._static_in.copy_(self._x)

        def forward() -> Any:
            inp = self._static_in if dtype is None else self._static_in.to(dtype)
            return module(inp).float()  # .float() of a float32 tensor is the tensor itself

        side = torch.cuda.Stream(device=device)
        with torch.inference_mode():
            side.wait_stream(torch.cuda.current_stream(device))
            with torch.cuda.stream(side):
                for _ in range(warmup):
                    forward()
            torch.cuda.current_stream(device).wait_stream(side)
            torch.cuda.synchronize(device)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph, stream=side):
                self._static_out = forward()  # lives in the graph's pool as long as the graph
        torch.cuda.synchronize(device)
        self._y = torch.empty(tuple(self._static_out.shape), dtype=torch.float32).pin_memory()

    def h2d(self) -> None:
        self._static_in.copy_(self._x, non_blocking=True)

    def compute(self) -> None:
        self._graph.replay()

    def d2h(self) -> None:
        self._y.copy_(self._static_out, non_blocking=True)


    def close(self) -> None:
        """Free the graph and its pool now rather than at garbage collection."""
        self._graph.reset()
        self._static_out = self._module = None
