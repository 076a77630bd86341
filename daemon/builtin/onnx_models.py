"""Built-in ONNX models that trtd can generate locally.

They exist so that a fresh install can serve a working model ("demo") without
downloading anything, and so that benchmarks have fixed, reproducible workloads:
every model is built from code with seeded weights, so two machines generating
"resnet18" get byte-identical files and comparable numbers. The weights are
random, so the outputs mean nothing; only shapes, compute and transfer sizes do.
"""

from __future__ import annotations

import os
import pathlib
import sys
import tempfile
from typing import TYPE_CHECKING, Callable

import numpy as np

if TYPE_CHECKING:
    import onnx

__all__ = [
    "BUILTIN_MODEL_NAMES",
    "DEFAULT_MAX_BATCH",
    "GENERATOR_VERSION",
    "UnknownBuiltinModelError",
    "build_builtin_model",
    "builtin_model_path",
]

# Part of every cached file name: bump it whenever any generator's output
# changes, so that caches written by an older trtd are never served.
GENERATOR_VERSION = 1

BUILTIN_MODEL_NAMES: tuple[str, ...] = ("demo", "mlp", "nearzero224", "resnet18", "volume3d")

DEFAULT_MAX_BATCH: dict[str, int] = {
    "demo": 64,
    "mlp": 64,
    "nearzero224": 8,
    "resnet18": 8,
    "volume3d": 1,
}

_OPSET = 17
# make_model stamps the installed onnx's newest IR version (14 with onnx 1.23),
# which older onnxruntime builds reject; opset 17 needs only IR 8, and IR 9
# loads in onnxruntime 1.15 and later.
_IR_VERSION = 9


class UnknownBuiltinModelError(ValueError, KeyError):
    """Raised for a name that is not a built-in model.

    A KeyError so dict-style callers can catch it, a ValueError because it is
    really a bad argument.
    """

    def __str__(self) -> str:
        # KeyError.__str__ would repr() the message, quotes and all.
        return str(self.args[0]) if self.args else ""


def _onnx():
    try:
        import onnx
        import onnx.helper
        import onnx.numpy_helper
    except ImportError as exc:
        raise ImportError(
            'building trtd\'s built-in models needs the onnx package: pip install "trtd[onnx]"'
        ) from exc
    return onnx


class _GraphBuilder:
    """Collects nodes and seeded initializers, handing out unique names."""

    def __init__(self, seed: int) -> None:
        self.onnx = _onnx()
        self.rng = np.random.default_rng(seed)
        self.nodes: list = []
        self.initializers: list = []
        self._counter = 0

    def name(self, prefix: str) -> str:
        self._counter += 1
        return f"{prefix}_{self._counter}"

    def const(self, prefix: str, value: np.ndarray | float) -> str:
        name = self.name(prefix)
        array = np.asarray(value, dtype=np.float32)
        self.initializers.append(self.onnx.numpy_helper.from_array(array, name))
        return name

    def he_normal(self, shape: tuple[int, ...], fan_in: int, scale: float = 1.0) -> np.ndarray:
        return self.rng.standard_normal(shape, dtype=np.float32) * np.float32(scale * np.sqrt(2.0 / fan_in))

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        out = out or self.name(op_type.lower())
        self.nodes.append(self.onnx.helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def value(self, name: str, shape: list) -> "onnx.ValueInfoProto":
        return self.onnx.helper.make_tensor_value_info(name, self.onnx.TensorProto.FLOAT, shape)

    def model(self, graph_name: str, inputs: list, outputs: list, doc: str) -> "onnx.ModelProto":
        helper = self.onnx.helper
        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, self.initializers)
        model = helper.make_model(
            graph,
            producer_name="trtd",
            producer_version=str(GENERATOR_VERSION),
            opset_imports=[helper.make_opsetid("", _OPSET)],
            doc_string=doc,
        )
        model.ir_version = _IR_VERSION
        return model


def _mlp(graph_name: str) -> "onnx.ModelProto":
    # demo and mlp share the seed too, so they compute the same function.
    b = _GraphBuilder(seed=0)
    w1 = b.const("fc1_w", b.he_normal((32, 64), fan_in=64))
    b1 = b.const("fc1_b", b.rng.normal(0.0, 0.1, 32))
    w2 = b.const("fc2_w", b.he_normal((10, 32), fan_in=32, scale=np.sqrt(0.5)))
    b2 = b.const("fc2_b", b.rng.normal(0.0, 0.1, 10))
    h = b.op("Relu", [b.op("Gemm", ["x", w1, b1], transB=1)])
    b.op("Gemm", [h, w2, b2], out="y", transB=1)
    return b.model(
        graph_name,
        [b.value("x", ["batch", 64])],
        [b.value("y", ["batch", 10])],
        "Two-layer MLP 64->32->10 with seeded random weights.",
    )


def _nearzero224() -> "onnx.ModelProto":
    b = _GraphBuilder(seed=0)
    b.op("ReduceMean", ["x"], out="y", axes=[2, 3], keepdims=0)
    return b.model(
        "nearzero224",
        [b.value("x", ["batch", 3, 224, 224])],
        [b.value("y", ["batch", 3])],
        "Per-channel mean of a 224x224 image: almost no compute, so timings measure transport.",
    )


def _resnet18() -> "onnx.ModelProto":
    b = _GraphBuilder(seed=18)

    def conv(x: str, cin: int, cout: int, k: int, stride: int, scale: float = 1.0) -> str:
        w = b.const("conv_w", b.he_normal((cout, cin, k, k), fan_in=cin * k * k, scale=scale))
        # Stands in for a folded BatchNorm, which would leave exactly such a bias.
        bias = b.const("conv_b", b.rng.normal(0.0, 0.01, cout))
        pad = k // 2
        return b.op("Conv", [x, w, bias], kernel_shape=[k, k],
                    strides=[stride, stride], pads=[pad] * 4)

    def basic_block(x: str, cin: int, cout: int, stride: int) -> str:
        h = b.op("Relu", [conv(x, cin, cout, 3, stride)])
        # Damping the residual branch keeps activations O(1) through 8 blocks
        # without BatchNorm, the job a zero-init last BN does in real training.
        h = conv(h, cout, cout, 3, 1, scale=0.2)
        shortcut = x if stride == 1 and cin == cout else conv(x, cin, cout, 1, stride, scale=np.sqrt(0.5))
        return b.op("Relu", [b.op("Add", [h, shortcut])])

    h = b.op("Relu", [conv("x", 3, 64, 7, 2)])
    h = b.op("MaxPool", [h], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    cin = 64
    for stage, cout in enumerate((64, 128, 256, 512)):
        h = basic_block(h, cin, cout, stride=1 if stage == 0 else 2)
        h = basic_block(h, cout, cout, stride=1)
        cin = cout
    h = b.op("Flatten", [b.op("GlobalAveragePool", [h])], axis=1)
    w = b.const("fc_w", b.he_normal((5, 512), fan_in=512, scale=np.sqrt(0.5)))
    bias = b.const("fc_b", b.rng.normal(0.0, 0.1, 5))
    b.op("Gemm", [h, w, bias], out="y", transB=1)
    return b.model(
        "resnet18",
        [b.value("x", ["batch", 3, 224, 224])],
        [b.value("y", ["batch", 5])],
        "ResNet-18-shaped CNN (BatchNorm folded into conv biases), 5 outputs, seeded random weights.",
    )


def _volume3d() -> "onnx.ModelProto":
    b = _GraphBuilder(seed=3)
    scaled = b.op("Mul", ["x", b.const("w", 0.5)])
    b.op("Sigmoid", [b.op("Add", [scaled, b.const("b", -0.25)])], out="y")
    shape = ["batch", 1, 128, 256, 256]
    return b.model(
        "volume3d",
        [b.value("x", shape)],
        [b.value("y", shape)],
        "CT-sized volume (32 MiB per item) through an elementwise sigmoid: stresses transfer, not compute.",
    )


_BUILDERS: dict[str, Callable[[], "onnx.ModelProto"]] = {
    "demo": lambda: _mlp("demo"),
    "mlp": lambda: _mlp("mlp"),
    "nearzero224": _nearzero224,
    "resnet18": _resnet18,
    "volume3d": _volume3d,
}


def build_builtin_model(name: str) -> "onnx.ModelProto":
    """Build the named built-in model in memory."""
    try:
        builder = _BUILDERS[name]
    except (KeyError, TypeError):
        raise UnknownBuiltinModelError(
            f"unknown built-in model {name!r}; known models: {', '.join(BUILTIN_MODEL_NAMES)}"
        ) from None
    return builder()


def default_cache_dir() -> pathlib.Path:
    override = os.environ.get("TRTD_CACHE_DIR")
    if override:
        return pathlib.Path(override)
    if sys.platform == "win32":
        local = os.environ.get("LOCALAPPDATA")
        base = pathlib.Path(local) if local else pathlib.Path.home() / "AppData" / "Local"
        return base / "trtd" / "cache"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (pathlib.Path(xdg) if xdg else pathlib.Path.home() / ".cache") / "trtd"


def builtin_model_path(name: str, cache_dir: str | os.PathLike | None = None) -> pathlib.Path:
    """Return the path of the named model's ONNX file, generating it on first use.

    The file lives in ``<cache_dir>/models/`` (default cache dir: $TRTD_CACHE_DIR,
    else the platform's user cache folder).
    """
    if name not in _BUILDERS:
        build_builtin_model(name)  # raises with the list of known names
    root = pathlib.Path(cache_dir) if cache_dir is not None else default_cache_dir()
    models_dir = root / "models"
    path = models_dir / f"{name}-v{GENERATOR_VERSION}.onnx"
    if path.is_file():
        return path

    data = build_builtin_model(name).SerializeToString()
    models_dir.mkdir(parents=True, exist_ok=True)
    # Temp file in the same folder so os.replace is an atomic rename: a
    # concurrent reader sees either no file or a complete one, never a torn one.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=models_dir)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        try:
            os.replace(tmp, path)
        except PermissionError:
            # Windows refuses to replace a file another process has open; that
            # process wrote the same bytes, so its copy is as good as ours.
            if not path.is_file():
                raise
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
