"""TorchScript backend: the format applications run in-process today.

On a GPU, the module runs on the instance's CUDA stream (torch's external-stream
wrapper), reading its inputs straight from the instance's device buffers
(wrapped as tensors without a copy) and writing each result into the output
device buffer with one device-to-device copy: no host copies. On the CPU the
inputs are tensors over the region's own memory and results are copied into
their areas once (TorchScript allocates its outputs, so one copy is inherent).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from trtd.protocol import WIRE_DTYPES, TensorSpec
from trtd.protocol.layout import tensor_nbytes

from trtd.daemon.backends.torch_graphs import DEFAULT_GRAPH_BATCHES, GraphCache
from trtd.daemon.backends.base import Backend, BackendError, OutputTooLarge, TensorBinding

DEFAULT_MAX_BATCH = 64


def _import_torch():
    try:
        import torch
    except ImportError as exc:
        raise BackendError(
            f"torch is not installed ({exc}); install it with: pip install \"trtd[torch]\" "
            f"(on a CPU-only machine, the CPU wheel avoids gigabytes of CUDA libraries)"
        ) from None
    return torch


def parse_input_spec(text: str) -> TensorSpec:
    """"NAME:SHAPE[:DTYPE]", SHAPE comma-separated with -1 for a dynamic batch; dtype float32 by default."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0]:
        raise BackendError(f"input spec {text!r} must be NAME:SHAPE[:DTYPE], e.g. x:-1,3,224,224:float32")
    name, shape_text = parts[0], parts[1]
    dtype = parts[2] if len(parts) == 3 else "float32"
    if dtype not in WIRE_DTYPES:
        raise BackendError(f"input spec {text!r}: unknown dtype {dtype!r}; known: {', '.join(WIRE_DTYPES)}")
    try:
        shape = [int(d) for d in shape_text.replace("x", ",").split(",")]
    except ValueError:
        raise BackendError(f"input spec {text!r}: SHAPE must be integers, e.g. -1,3,224,224") from None
    if any(d == 0 or d < -1 for d in shape) or any(d < 0 for d in shape[1:]):
        raise BackendError(f"input spec {text!r}: dims must be positive; only the first may be -1")
    return TensorSpec(name=name, dtype=dtype, shape=shape)


class CudaArrayView:
    """Exposes a device buffer through __cuda_array_interface__, so torch wraps it without a copy."""

    __slots__ = ("__cuda_array_interface__",)

    def __init__(self, address: int, shape: tuple[int, ...], dtype: np.dtype):
        self.__cuda_array_interface__ = {
            "shape": tuple(shape), "typestr": dtype.str, "data": (address, False), "version": 3,
            "strides": None,
        }


def _host_array(address: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    nbytes = tensor_nbytes(shape, dtype.itemsize)
    raw = (ctypes.c_uint8 * nbytes).from_address(address)
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


class TorchBackend(Backend):
    kind = "torch"

    def __init__(self, path: str | Path, inputs: list[str], max_batch: int = 0, device: int | None = None,
                 cuda_graphs: bool = False, graph_batches: tuple[int, ...] = (), half: bool = False):
        """half: run the module in FP16 (`precision = "fp16"`): its floating-point inputs are cast
        to half and its floating-point outputs back, inside the call (and the CUDA graph), so
        the model's declared I/O dtypes, and the client's bytes, stay what they were."""
        torch = self._torch = _import_torch()
        if not inputs:
            raise BackendError(
                "a TorchScript file does not describe its inputs: give them in the model's config, "
                "e.g. inputs = [\"x:-1,3,224,224:float32\"]")
        specs = [parse_input_spec(i) for i in inputs]
        self.device = device
        if device is not None:
            if not torch.cuda.is_available():
                raise BackendError(f"torch sees no CUDA device (torch {torch.__version__}); this model "
                                   f"is configured for device {device}")
            self._torch_device = torch.device("cuda", device)
        else:
            self._torch_device = torch.device("cpu")
        try:
            self._module = torch.jit.load(str(path), map_location=self._torch_device).eval()
        except Exception as exc:
            raise BackendError(f"torch.jit.load could not load {path}: {exc}") from None
        self._half = half
        if half:
            self._module = self._module.half()
        dynamic = [s.shape[0] == -1 for s in specs]
        self.max_batch = (max_batch or DEFAULT_MAX_BATCH) if all(dynamic) else 0
        for s in specs:
            s.max_nbytes = self._nbytes(s.shape, s.dtype)
        self.inputs = specs
        self.outputs = self._probe_outputs()
        self._external: dict[int, object] = {}  # instance stream pointer -> torch's view of it
        self._graphs: GraphCache | None = None
        if cuda_graphs and device is not None:
            batches = graph_batches or tuple(b for b in DEFAULT_GRAPH_BATCHES if b <= max(self.max_batch, 1))
            self._graphs = GraphCache(torch, self._torch_device, tuple(batches))

    def _nbytes(self, shape: list[int], dtype: str) -> int:
        dims = [self.max_batch if d == -1 else d for d in shape]
        return tensor_nbytes(dims, np.dtype(dtype).itemsize)

    def _run_module(self, tensors):
        torch = self._torch
        with torch.inference_mode():
            if self._half:
                tensors = [t.half() if t.dtype == torch.float32 else t for t in tensors]
            result = self._module(*tensors)
        if isinstance(result, (tuple, list)):
            results = list(result)
        elif isinstance(result, dict):
            results = list(result.values())
        else:
            results = [result]
        if self._half:
            results = [r.float() if isinstance(r, torch.Tensor) and r.dtype == torch.float16 else r
                       for r in results]
        return results

    def _probe_outputs(self) -> list[TensorSpec]:
        """Output dtypes and shapes from runs at batch 1 and 2: a dim that follows the batch is dynamic."""
        torch = self._torch
        batches = (1, 2) if self.max_batch else (1,)
        runs = []
        for batch in batches:
            tensors = [torch.zeros([batch if d == -1 else d for d in s.shape],
                                   dtype=getattr(torch, s.dtype), device=self._torch_device)
                       for s in self.inputs]
            try:
                runs.append(self._run_module(tensors))
            except Exception as exc:
                raise BackendError(f"the TorchScript module failed on zero inputs of the configured "
                                   f"shapes ({exc}); check the model's inputs setting") from None
        for run in runs:
            if not all(isinstance(r, torch.Tensor) for r in run):
                raise BackendError("the TorchScript module must return a tensor, or a tuple/list/dict "
                                   f"of tensors; it returned {[type(r).__name__ for r in run]}")
        specs = []
        for i, first in enumerate(runs[0]):
            dtype = str(first.dtype).removeprefix("torch.")
            if dtype not in WIRE_DTYPES:
                raise BackendError(f"output {i} has dtype {dtype}, which the protocol does not carry")
            shape = list(first.shape)
            if len(runs) == 2 and shape and runs[1][i].shape[0] == 2 and shape[0] == 1:
                shape[0] = -1
            spec = TensorSpec(name=f"output{i}" if len(runs[0]) > 1 else "output", dtype=dtype, shape=shape)
            spec.max_nbytes = self._nbytes(shape, dtype)
            specs.append(spec)
        return specs

    def output_shapes(self, input_shapes):
        batch = next(iter(input_shapes.values()))[0] if self.max_batch else None
        return {s.name: tuple(batch if d == -1 else d for d in s.shape) for s in self.outputs}

    def enqueue(self, stream, inputs: list[TensorBinding], outputs: list[TensorBinding]):
        torch = self._torch
        try:
            if self.device is None:
                tensors = [torch.from_numpy(_host_array(t.address, t.shape, t.dtype)) for t in inputs]
                results = self._run_module(tensors)
                return self._write_host(results, outputs)
            external = self._external.get(stream.ptr)
            if external is None:  # one per instance stream: making one costs µs per request
                external = self._external[stream.ptr] = torch.cuda.ExternalStream(
                    stream.ptr, device=self._torch_device)
            with torch.cuda.stream(external):
                if self._graphs is not None:
                    shapes = self._through_graph(stream.ptr, external, inputs, outputs)
                    if shapes is not None:
                        return shapes
                return self._run_device(inputs, outputs)
        except (OutputTooLarge, BackendError):
            raise
        except Exception as exc:
            raise BackendError(f"TorchScript failed: {exc}") from None

    def _run_device(self, inputs: list[TensorBinding], outputs: list[TensorBinding]):
        """The eager GPU path: the module over the input buffers, results copied into the output
        buffers, all on the current stream (what a CUDA graph captures, too)."""
        torch = self._torch
        tensors = [torch.as_tensor(CudaArrayView(t.address, t.shape, t.dtype), device=self._torch_device)
                   for t in inputs]
        return self._write_device(self._run_module(tensors), outputs)

    def _through_graph(self, stream_ptr: int, external, inputs: list[TensorBinding],
                       outputs: list[TensorBinding]) -> dict[str, tuple[int, ...]] | None:
        """Replay (or capture, on the first request of a captured batch size) the CUDA graph for
        exactly these buffers and shapes; None to run eagerly."""
        graphs = self._graphs
        key = (stream_ptr, tuple((t.address, tuple(t.shape)) for t in inputs), tuple(t.address for t in outputs))
        shapes = graphs.replay(key)
        if shapes is None:
            batch = inputs[0].shape[0] if self.max_batch and inputs and inputs[0].shape else None
            if not graphs.wants(batch if self.max_batch else 1):
                return None
            shapes = graphs.capture(key, external, lambda: self._run_device(inputs, outputs))
        return {t.name: shapes[t.name] for t in outputs}

    def graph_stats(self) -> tuple[int, int]:
        return (len(self._graphs), self._graphs.graph_bytes) if self._graphs is not None else (0, 0)

    def _by_name(self, results):
        if len(results) != len(self.outputs):
            raise BackendError(f"the module returned {len(results)} outputs, it returned "
                               f"{len(self.outputs)} when it was loaded")
        return {spec.name: r for spec, r in zip(self.outputs, results)}

    def _checked(self, r, t: TensorBinding):
        """The result, refused unless it has the dtype the model declared at load time."""
        torch = self._torch
        if not isinstance(r, torch.Tensor) or r.dtype != getattr(torch, t.dtype.name):
            got = r.dtype if isinstance(r, torch.Tensor) else type(r).__name__
            raise BackendError(f"output {t.name!r} came back as {got}, the model declared {t.dtype.name} "
                               f"when it was loaded; its outputs must keep their dtype")
        return r

    def _write_host(self, results, outputs: list[TensorBinding]):
        by_name, shapes = self._by_name(results), {}
        for t in outputs:
            r = self._checked(by_name[t.name], t).contiguous()
            nbytes = tensor_nbytes(tuple(r.shape), t.dtype.itemsize)
            if nbytes > t.nbytes:
                raise OutputTooLarge(t.name, nbytes, t.nbytes)
            _host_array(t.address, tuple(r.shape), t.dtype)[...] = r.numpy()
            shapes[t.name] = tuple(r.shape)
        return shapes

    def _write_device(self, results, outputs: list[TensorBinding]):
        torch = self._torch
        by_name, shapes = self._by_name(results), {}
        for t in outputs:
            r = self._checked(by_name[t.name], t)
            nbytes = tensor_nbytes(tuple(r.shape), t.dtype.itemsize)
            if nbytes > t.nbytes:
                raise OutputTooLarge(t.name, nbytes, t.nbytes)
            target = torch.as_tensor(CudaArrayView(t.address, tuple(r.shape), t.dtype), device=self._torch_device)
            target.copy_(r)  # device to device, on the instance's stream
            shapes[t.name] = tuple(r.shape)
        return shapes

    def close(self) -> None:
        if self._graphs is not None:
            self._graphs.close()  # before the module: graphs hold its kernels' memory
        self._module = None
        if self.device is not None:
            # Return the caching allocator's blocks, so unload gives the memory back.
            self._torch.cuda.empty_cache()
