"""The models the benchmarks run, with concrete shapes: the built-in ones and how any is described.

Every benchmark process (the parent, each sweep worker, the floor) must agree on a model's
tensors and its inputs, so a model travels between processes as BenchModel.to_json() and its
inputs are seeded random data, the same on every run and in every process: floats from a
standard normal, integers from 0..9 (valid indices for most embedding tables), booleans fair.
The user's own ONNX models are described by trtd.bench.lib.own_models.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from trtd.protocol import align_up


@dataclass(frozen=True)
class Tensor:
    """One input or output with a concrete shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def text(self) -> str:
        return f"{self.name} {self.dtype}[{','.join(map(str, self.shape))}]"


@dataclass(frozen=True)
class BenchModel:
    """A model the benchmark runs, with concrete shapes for every input and output."""

    name: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    heavy: bool  # tens of milliseconds a call: fewer iterations and smaller blocks
    path: str = ""  # the user's ONNX file; "" for the built-in model of this name

    @classmethod
    def builtin(cls, name: str, input_shape: tuple[int, ...], output_shape: tuple[int, ...],
                heavy: bool) -> "BenchModel":
        """A built-in model: one float32 input "x", one float32 output "y"."""
        return cls(name, (Tensor("x", "float32", input_shape),), (Tensor("y", "float32", output_shape),), heavy)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.inputs[0].shape

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.outputs[0].shape

    @property
    def input_bytes(self) -> int:
        return sum(t.nbytes for t in self.inputs)

    @property
    def input_region_bytes(self) -> int:
        """Bytes the inputs take laid out back to back at aligned offsets (as the floor copies them)."""
        end = 0
        for t in self.inputs:
            end = align_up(end) + t.nbytes
        return max(end, 1)

    @property
    def single_float32_io(self) -> bool:
        return (len(self.inputs) == len(self.outputs) == 1 and
                self.inputs[0].dtype == self.outputs[0].dtype == "float32")

    def source(self) -> str:
        """The ONNX file: the user's, or the generated built-in (made on first use)."""
        if self.path:
            return self.path
        from trtd.daemon.builtin.onnx_models import builtin_model_path

        return str(builtin_model_path(self.name))

    def serve_flag(self) -> str:
        """The `trtd serve --model` value that serves this model."""
        return f"{self.name}={self.path or 'builtin:' + self.name}"

    def signature(self) -> str:
        return (", ".join(t.text() for t in self.inputs) + " -> " +
                ", ".join(t.text() for t in self.outputs))

    def make_inputs(self, seed: int = 0) -> dict[str, np.ndarray]:
        # The comparison gate's seeded data (integers 0..9 here, as the module says).
        from trtd.daemon.running.swap_gate import random_array

        rng = np.random.default_rng(seed)
        return {t.name: random_array(rng, np.dtype(t.dtype), t.shape, high=10) for t in self.inputs}

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "heavy": self.heavy, "path": self.path,
                           "inputs": [[t.name, t.dtype, list(t.shape)] for t in self.inputs],
                           "outputs": [[t.name, t.dtype, list(t.shape)] for t in self.outputs]})

    @classmethod
    def from_json(cls, text: str) -> "BenchModel":
        d = json.loads(text)
        tensors = lambda items: tuple(Tensor(n, dt, tuple(s)) for n, dt, s in items)  # noqa: E731
        return cls(d["name"], tensors(d["inputs"]), tensors(d["outputs"]), d["heavy"], d["path"])


# The built-in models the benchmarks know: their shapes and how heavy one call is.
MODELS: dict[str, BenchModel] = {
    m.name: m for m in (
        BenchModel.builtin("mlp", (1, 64), (1, 10), heavy=False),
        BenchModel.builtin("nearzero224", (1, 3, 224, 224), (1, 3), heavy=False),
        BenchModel.builtin("resnet18", (1, 3, 224, 224), (1, 5), heavy=True),
        BenchModel.builtin("volume3d", (1, 1, 128, 256, 256), (1, 1, 128, 256, 256), heavy=True),
    )
}
