"""The backend interface, shaped like TensorRT's execution context.

A backend describes its I/O and runs one request given, per tensor, a dtype,
a shape and an address (host addresses inside a pinned region on the CPU
path; device addresses on the GPU path), writing outputs to the addresses it
is given. `stream` is the instance's CUDA stream, or None on the CPU.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from trtd.protocol import TensorSpec


@dataclass(slots=True)
class TensorBinding:
    name: str
    dtype: np.dtype
    # Input: the request's shape. Output: the shape the backend predicted, or
    # None when only running the model can tell (data-dependent shapes).
    shape: tuple[int, ...] | None
    address: int
    nbytes: int  # input: exact size; output: capacity of the area


class BackendError(RuntimeError):
    """The backend failed on a request; the model stays loaded and usable."""


class OutputTooLarge(BackendError):
    def __init__(self, name: str, needed: int, capacity: int):
        super().__init__(
            f"output '{name}' needs {needed} bytes but its area holds {capacity}; "
            f"give it a larger area (a client should size it from the model's max_nbytes)"
        )
        self.name, self.needed, self.capacity = name, needed, capacity


class Backend(ABC):
    kind: str
    # None: the backend reads and writes host memory (the region itself).
    # A CUDA device index: enqueue() gets device addresses on that device and a stream.
    device: int | None = None
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    # Largest batch on the shared dynamic first dimension; 0 when there is none.
    max_batch: int

    @abstractmethod
    def output_shapes(self, input_shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...] | None]:
        """Predict output shapes from input shapes (None where the data decides)."""

    @abstractmethod
    def enqueue(self, stream: object | None, inputs: list[TensorBinding],
                outputs: list[TensorBinding]) -> dict[str, tuple[int, ...]]:
        """Run one request; returns each requested output's actual shape."""

    def graph_stats(self) -> tuple[int, int]:
        """CUDA graphs captured so far and the bytes their memory pools hold (0, 0: none)."""
        return 0, 0

    def close(self) -> None:
        """Release everything the backend holds."""
