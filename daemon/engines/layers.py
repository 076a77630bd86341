"""An engine's layers and their precisions, from the builder's own report.

The engine inspector (ICudaEngine.create_engine_inspector) needs a deserialized engine, and
TensorRT-RTX deserializes only on a GPU it supports: on a build machine without one, and on a
datacenter GPU, it cannot. The builder says the same per-layer information at VERBOSE level
while it builds ("Layers:" and one line per layer, in the inspector's ONELINE wording, with
DETAILED profiling verbosity): that report is parsed here and kept in the cache metadata, so
`trtd build --inspect` shows it wherever the engine was built.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass

_LAYER = re.compile(r"Name: (?P<name>.*?), LayerType: (?P<type>[^,]*), Inputs: \[(?P<inputs>.*?)\], "
                    r"Constants: \[(?P<constants>.*?)\], Outputs: \[(?P<outputs>.*?)\], TacticName")
_DTYPE = re.compile(r"Datatype: (\w+)")
_ONNX = re.compile(r"\[ONNX Layer: ([^\]]+)\]")


@dataclass(frozen=True)
class Layer:
    name: str
    type: str
    inputs: tuple[str, ...]      # data types of the activations read
    weights: tuple[str, ...]     # of the constants (weights, biases, scales)
    outputs: tuple[str, ...]
    onnx: tuple[str, ...]        # the ONNX nodes fused into it (Q/DQ nodes left out)

    def line(self) -> str:
        onnx = ",".join(self.onnx)
        return (f"{self.name}: {self.type} in={'/'.join(self.inputs) or '-'} "
                f"weights={'/'.join(self.weights) or '-'} out={'/'.join(self.outputs) or '-'}"
                + (f" onnx={onnx}" if onnx else ""))


def parse_layers(report: str) -> list[Layer]:
    """The layers of a "Layers:" report; lines that are not layers (there are none) are skipped."""
    layers = []
    for text in report.splitlines():
        m = _LAYER.search(text)
        if not m:
            continue
        onnx = tuple(n for n in _ONNX.findall(text) if not n.endswith(("QuantizeLinear", "DequantizeLinear")))
        layers.append(Layer(m["name"], m["type"], tuple(_DTYPE.findall(m["inputs"])),
                            tuple(_DTYPE.findall(m["constants"])), tuple(_DTYPE.findall(m["outputs"])),
                            onnx))
    return layers


def compute_precisions(layers: list[Layer]) -> dict[str, int]:
    """How many computing layers (convolutions, matrix products: those with weights of their own
    that read activations) read activations of each data type: {"Int8": 21, "Half": 3}."""
    counts: Counter[str] = Counter()
    for layer in layers:
        if layer.inputs and layer.weights and layer.type in _COMPUTING:
            counts[layer.inputs[0]] += 1
    return dict(counts)


# The inspector's words for convolutions and matrix products (TensorRT-RTX's compiler backend
# names a convolution "correlation"; TensorRT's own layers say Convolution / MatrixMultiply).
# "runtime_fusion" is what it calls a fully connected layer fused with its bias.
_COMPUTING = {"correlation", "convolution", "gemm", "runtime_fusion", "Convolution", "MatrixMultiply",
              "CaskConvolution", "CaskGemmConvolution", "matmul"}
