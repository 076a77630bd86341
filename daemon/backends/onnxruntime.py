"""ONNX Runtime backend (CPU): I/O binding straight onto region memory.

Inputs are bound at their addresses inside the region and outputs are bound
at their areas, so ONNX Runtime reads the client's bytes and writes results
where the client reads them: no intermediate copy. Only an output whose shape
cannot be predicted from the inputs (data-dependent) is allocated by ONNX
Runtime and copied into its area once.
"""

from __future__ import annotations

import ctypes
import logging
import time
from pathlib import Path

import numpy as np

from trtd.protocol import TensorSpec
from trtd.protocol.layout import tensor_nbytes

from trtd.daemon.backends.base import Backend, BackendError, OutputTooLarge, TensorBinding

log = logging.getLogger("trtd.models")

# A model arriving through a named pipe (decrypted on the fly) may be gigabytes from a slow
# writer: how much has arrived is logged this often while it is read.
PIPE_REPORT_S = 5.0
_PIPE_CHUNK = 16 << 20
# An ONNX file is one protobuf message, which protobuf caps at 2 GiB (a larger model keeps its
# weights in external data files, which a pipe cannot carry): a writer sending more is wrong,
# and reading on would only let it fill the daemon's memory (6 GiB of zeros was an OOM kill).
MAX_PIPE_MODEL_BYTES = 2 << 30

DEFAULT_MAX_BATCH = 64
_MAX_CACHED_BINDINGS = 256

# ONNX Runtime's type strings -> wire dtypes (only dtypes the protocol carries).
_ORT_TYPES = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(int16)": "int16",
    "tensor(uint16)": "uint16",
    "tensor(int32)": "int32",
    "tensor(uint32)": "uint32",
    "tensor(int64)": "int64",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
}


def _import_ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise BackendError(
            f"ONNX Runtime is not installed ({exc}); install it with: pip install \"trtd[onnx]\""
        ) from None
    return onnxruntime


def wire_dtype(ort_type: str) -> str | None:
    """The wire dtype of an ONNX Runtime type string ("tensor(float)" -> "float32"), or None for
    a type the protocol does not carry (string, bfloat16, sequences, maps...)."""
    return _ORT_TYPES.get(ort_type)


def session_options(intra_op_threads: int = 0, inter_op_threads: int = 0, quiet: bool = False):
    """The one place session settings are made, so in-process baselines match the daemon.

    quiet: ONNX Runtime logs fatal errors only, for a caller that reports a failed load in its
    own words (`trtd bench` describing the user's model)."""
    ort = _import_ort()
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = inter_op_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if quiet:
        options.log_severity_level = 4
    return options


def providers_for(device: int | None) -> list:
    """CPU by default; on a GPU, ONNX Runtime's CUDA provider where onnxruntime-gpu is installed."""
    if device is None or device < 0:
        return ["CPUExecutionProvider"]
    available = _import_ort().get_available_providers()
    if "CUDAExecutionProvider" in available:
        return [("CUDAExecutionProvider", {"device_id": device}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def create_session(path: str | Path, intra_op_threads: int = 0, inter_op_threads: int = 0,
                   providers: list | None = None):
    ort = _import_ort()
    source: str | bytes = str(path)
    if not Path(path).is_file():
        # A named pipe (a model decrypted on the fly): read it here, where a blocked read releases
        # the GIL. ONNX Runtime opening the pipe itself can block every thread of the daemon, the
        # socket loop included, until the writer delivers (seen with some onnxruntime builds).
        source = read_pipe(Path(path))
    return ort.InferenceSession(
        source, session_options(intra_op_threads, inter_op_threads),
        providers=providers or ["CPUExecutionProvider"],
    )


def read_pipe(path: Path) -> bytes:
    """All of a named pipe, logging every PIPE_REPORT_S how much has arrived (the model shows as
    "loading" meanwhile; the log says whether its writer is slow or stuck)."""
    chunks, got = [], 0
    started = last = time.monotonic()
    with open(path, "rb") as f:
        while chunk := f.read(_PIPE_CHUNK):
            got += len(chunk)
            if got > MAX_PIPE_MODEL_BYTES:
                raise BackendError(
                    f"model file {path}: more than {MAX_PIPE_MODEL_BYTES >> 30} GiB arrived through "
                    f"the pipe, and an ONNX model in one file is at most 2 GiB (protobuf's limit); "
                    f"check what writes the pipe (a larger model keeps its weights in external "
                    f"data files, which need a real file)")
            chunks.append(chunk)
            now = time.monotonic()
            if now - last >= PIPE_REPORT_S:
                last = now
                log.info("model file %s: %.1f MiB read from the pipe in %.0f s, still reading",
                         path, got / 2**20, now - started)
    if last != started:  # it took long enough to report: say when it is done
        log.info("model file %s: %.1f MiB read from the pipe in %.0f s", path, got / 2**20,
                 time.monotonic() - started)
    return b"".join(chunks)


class _Dim:
    """A dimension of an ONNX tensor: fixed, or a named/unnamed symbol."""

    __slots__ = ("value", "symbol")

    def __init__(self, raw):
        self.value = raw if isinstance(raw, int) and raw >= 0 else -1
        self.symbol = raw if isinstance(raw, str) and raw else None


class OnnxRuntimeBackend(Backend):
    kind = "onnxruntime"

    def __init__(self, path: str | Path, max_batch: int = 0, intra_op_threads: int = 0,
                 inter_op_threads: int = 0, providers: list | None = None):
        ort = _import_ort()
        try:
            # Inputs and outputs stay bound to host (region) memory whatever the provider:
            # with the CUDA provider, ONNX Runtime does the copies itself.
            self._session = create_session(path, intra_op_threads, inter_op_threads, providers)
        except Exception as exc:
            raise BackendError(f"ONNX Runtime could not load {path}: {exc}") from None
        # Cached I/O bindings by (name, shape, address) of every tensor: a steady
        # client reuses its slots, so binding costs nothing after the first request.
        self._bindings: dict[tuple, object] = {}
        self._in = [(a.name, self._dtype(a), [_Dim(d) for d in a.shape]) for a in self._session.get_inputs()]
        self._out = [(a.name, self._dtype(a), [_Dim(d) for d in a.shape]) for a in self._session.get_outputs()]
        self._batch_symbol = self._shared_batch_symbol()
        self.max_batch = (max_batch or DEFAULT_MAX_BATCH) if self._batch_symbol else 0
        self.inputs = [self._spec(n, t, dims) for n, t, dims in self._in]
        self.outputs = [self._spec(n, t, dims) for n, t, dims in self._out]
        self._out_dims = {n: dims for n, _, dims in self._out}
        self._in_dims = {n: dims for n, _, dims in self._in}

    @staticmethod
    def _dtype(arg) -> str:
        dtype = wire_dtype(arg.type)
        if dtype is None:
            raise BackendError(
                f"tensor '{arg.name}' has type {arg.type}, which the protocol does not carry"
            )
        return dtype

    def _shared_batch_symbol(self) -> str | None:
        """The symbol on the first dim of every input, if they all share one."""
        firsts = {dims[0].symbol if dims else None for _, _, dims in self._in}
        if len(firsts) == 1:
            (symbol,) = firsts
            return symbol
        return None

    def _spec(self, name: str, dtype: str, dims: list[_Dim]) -> TensorSpec:
        shape = [d.value for d in dims]
        max_shape = [
            self.max_batch if (i == 0 and d.symbol and d.symbol == self._batch_symbol) else d.value
            for i, d in enumerate(dims)
        ]
        itemsize = np.dtype(dtype).itemsize
        max_nbytes = tensor_nbytes(max_shape, itemsize) if all(v >= 0 for v in max_shape) else -1
        return TensorSpec(name=name, dtype=dtype, shape=shape, max_nbytes=max_nbytes)

    def output_shapes(self, input_shapes):
        symbols: dict[str, int] = {}
        for name, shape in input_shapes.items():
            for dim, value in zip(self._in_dims[name], shape):
                if dim.symbol:
                    symbols.setdefault(dim.symbol, value)
        result = {}
        for name, dims in self._out_dims.items():
            shape = []
            for dim in dims:
                value = dim.value if dim.value >= 0 else symbols.get(dim.symbol or "", -1)
                if value < 0:
                    shape = None
                    break
                shape.append(value)
            result[name] = tuple(shape) if shape is not None else None
        return result

    def _binding(self, inputs: list[TensorBinding], outputs: list[TensorBinding]):
        key = tuple((t.name, t.shape, t.address) for t in inputs) + tuple(
            (t.name, t.shape, t.address) for t in outputs)
        binding = self._bindings.get(key)
        if binding is not None:
            return binding
        binding = self._session.io_binding()
        for t in inputs:
            binding.bind_input(t.name, "cpu", 0, t.dtype, t.shape, t.address)
        for t in outputs:
            if t.shape is None:
                binding.bind_output(t.name, "cpu")
            else:
                binding.bind_output(t.name, "cpu", 0, t.dtype, t.shape, t.address)
        if all(t.shape is not None for t in outputs):  # ORT-allocated outputs change per run
            if len(self._bindings) >= _MAX_CACHED_BINDINGS:
                self._bindings.pop(next(iter(self._bindings)))
            self._bindings[key] = binding
        return binding

    def enqueue(self, stream, inputs: list[TensorBinding], outputs: list[TensorBinding]):
        binding = self._binding(inputs, outputs)
        try:
            # No RunOptions: with one, ONNX Runtime 1.31's Python wrapper spends
            # ~25 µs per call looking for graph-capture annotations.
            self._session.run_with_iobinding(binding)
        except Exception as exc:
            raise BackendError(f"ONNX Runtime failed: {exc}") from None
        shapes = {t.name: t.shape for t in outputs}
        if any(shape is None for shape in shapes.values()):
            values = dict(zip([t.name for t in outputs], binding.get_outputs()))
            for t in outputs:
                if t.shape is None:
                    shapes[t.name] = self._copy_out(t, values[t.name].numpy())
        return shapes

    @staticmethod
    def _copy_out(t: TensorBinding, array: np.ndarray) -> tuple[int, ...]:
        if array.nbytes > t.nbytes:
            raise OutputTooLarge(t.name, array.nbytes, t.nbytes)
        area = (ctypes.c_uint8 * array.nbytes).from_address(t.address)
        np.frombuffer(area, np.uint8)[:] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
        return tuple(array.shape)

    def close(self) -> None:
        self._bindings.clear()
        self._session = None
