"""A torch module on a GPU the way an application runs it in-process, and where its time goes.

The GPU benchmarks compare the daemon with in-process torch; both sides must pay the same
transfers: input from pinned host memory (H2D, non_blocking), forward, output into pinned host
memory (D2H), torch.cuda.synchronize(). The H2D / compute / D2H split comes from CUDA events,
as the daemon reports its own per request.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np


@dataclass
class Split:
    """Median microseconds of one request's three phases."""

    h2d_us: float
    compute_us: float
    d2h_us: float


class Forward:
    """One in-process request in three timed steps (h2d, compute, d2h) into pinned memory
    `self._y`; subclasses say what each step does."""

    _torch: Any
    _y: Any

    def h2d(self) -> None:
        raise NotImplementedError

    def compute(self) -> None:
        raise NotImplementedError

    def d2h(self) -> None:
        raise NotImplementedError

    def run(self) -> None:
        """One whole request, finished (synchronized)."""
        self.h2d()
        self.compute()
        self.d2h()
        self._torch.cuda.synchronize()

    def output(self) -> np.ndarray:
        """A copy of the last output (after run())."""
        return self._y.numpy().copy()

    def split(self, n: int = 50) -> Split:
        return event_split(self._torch, self.h2d, self.compute, self.d2h, n)


class PinnedForward(Forward):
    """`module` on `device`, fed from pinned host memory; `dtype` casts the input on the device
    (FP16 modules), the output comes back as float32."""

    def __init__(self, torch: Any, module: Any, device: Any, x: np.ndarray,
                 output_shape: tuple[int, ...], dtype: Any = None):
        self._torch, self._module, self._device, self._dtype = torch, module, device, dtype
        self._x = torch.from_numpy(x).pin_memory()
        self._y = torch.empty(output_shape, dtype=torch.float32).pin_memory()
        self._on_device: Any = None
        self._result: Any = None

    def h2d(self) -> None:
        d = self._x.to(self._device, non_blocking=True)
        self._on_device = d.to(self._dtype) if self._dtype is not None else d

    def compute(self) -> None:
        with self._torch.inference_mode():
            self._result = self._module(self._on_device).float()

    def d2h(self) -> None:
        self._y.copy_(self._result, non_blocking=True)



def event_split(torch: Any, h2d: Callable[[], None], compute: Callable[[], None],
                d2h: Callable[[], None], n: int = 50) -> Split:
    """Median H2D / compute / D2H of `n` requests, from CUDA events between the phases."""
    events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    rows = []
    for _ in range(n):
        events[0].record()
        h2d()
        events[1].record()
        compute()
        events[2].record()
        d2h()
        events[3].record()
        torch.cuda.synchronize()
        rows.append([events[i].elapsed_time(events[i + 1]) * 1000 for i in range(3)])
    med = np.median(np.array(rows), axis=0)
    return Split(*map(float, med))


def median_split(timings: list[tuple[int, int, int]]) -> Split:
    """The median of (h2d_us, compute_us, d2h_us) rows, e.g. the daemon's own per-request timing."""
    med = np.median(np.array(timings), axis=0)
    return Split(*map(float, med))


def daemon_split(call: Callable[[], object], handle: Any, n: int = 50) -> Split:
    """Median H2D / compute / D2H the daemon reports (handle.last_timing) over `n` calls."""
    rows = []
    for _ in range(n):
        call()
        t = handle.last_timing
        rows.append((t.h2d_us, t.compute_us, t.d2h_us))
    return median_split(rows)
