"""TensorRT backend: a serialized engine run with execute_async_v3 on the instance's stream.

Works with the full `tensorrt` module or the lean runtime. One execution
context per instance (per CUDA stream), each on its own optimization profile
when the engine has several. Inputs and outputs are the instance's device
buffers (filled from / drained into the pinned region by the GPU data path).

Fixed dimensions, including a fixed batch, must match exactly: smaller
requests are rejected, not padded (padding would spend compute on rows the
client did not send and return rows it did not ask for). Outputs whose shape
depends on the data are refused at load time with a clear error.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from trtd.protocol import TensorSpec

from .. import cuda
from ..engines.trt import TensorRTUnavailable, import_tensorrt
from .base import Backend, BackendError, OutputTooLarge, TensorBinding


def _capturing_logger(trt):
    class Logger(trt.ILogger):
        """Keeps what TensorRT says, so a failure can quote it."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[str] = []

        def log(self, severity, msg):
            if int(severity) <= int(trt.ILogger.Severity.WARNING):
                self.messages.append(str(msg))
                del self.messages[:-20]

    return Logger()


class TensorRTBackend(Backend):
    kind = "tensorrt"

    def __init__(self, path: str | Path, device: int | None, max_batch: int = 0,
                 allow_host_code: bool = False):
        if device is None:
            raise BackendError("TensorRT engines run on a GPU: set the model's device (e.g. device = 0)")
        try:
            self._trt = import_tensorrt()
        except TensorRTUnavailable as exc:
            raise BackendError(str(exc)) from None
        trt = self._trt.module
        self.device = device
        cuda.use_device(device)
        self._logger = _capturing_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        # Version-compatible engines that embed the lean runtime execute host code
        # from the engine file: allowed only when the operator trusts the file.
        self._runtime.engine_host_code_allowed = allow_host_code
        data = Path(path).read_bytes()
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            said = "; ".join(self._logger.messages[-3:]) or "no message"
            raise BackendError(
                f"TensorRT {self._trt.version} ({self._trt.flavor}) could not deserialize {path}: {said}. "
                f"An engine runs only on the TensorRT version and GPU that built it (unless built "
                f"version/hardware compatible); a version-compatible engine that embeds the lean "
                f"runtime also needs allow_engine_host_code = true. Rebuild it with `trtd build`.")
        self._contexts: dict[int, object] = {}
        self._describe(trt, max_batch)

    # -- description ---------------------------------------------------------------------------------

    def _describe(self, trt, max_batch: int) -> None:
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs, outputs = [], []
        for name in names:
            try:
                dtype = self._trt.wire_dtype(engine.get_tensor_dtype(name))
            except TypeError as exc:
                raise BackendError(f"tensor {name!r}: {exc}") from None
            spec = TensorSpec(name=name, dtype=dtype, shape=list(engine.get_tensor_shape(name)))
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
        self.num_profiles = max(engine.num_optimization_profiles, 1)
        # The largest shapes every profile allows, per input (for buffers and the batch limit).
        self._max_shapes = {}
        for spec in inputs:
            if any(d < 0 for d in spec.shape):
                shapes = [engine.get_tensor_profile_shape(spec.name, p)[2] for p in range(self.num_profiles)]
                self._max_shapes[spec.name] = tuple(max(s[i] for s in shapes) for i in range(len(spec.shape)))
            else:
                self._max_shapes[spec.name] = tuple(spec.shape)
        dynamic_batch = inputs and all(s.shape and s.shape[0] < 0 for s in inputs)
        engine_max = min(self._max_shapes[s.name][0] for s in inputs) if dynamic_batch else 0
        self.max_batch = min(max_batch, engine_max) if (max_batch and engine_max) else engine_max
        for spec in inputs:
            spec.max_nbytes = math.prod(self._max_shapes[spec.name]) * np.dtype(spec.dtype).itemsize
        # Output sizes at the largest input shapes, from TensorRT's own shape inference.
        probe = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        for spec in inputs:
            probe.set_input_shape(spec.name, self._max_shapes[spec.name])
        for spec in outputs:
            shape = tuple(probe.get_tensor_shape(spec.name))
            if any(d < 0 for d in shape):
                raise BackendError(
                    f"output {spec.name!r} has a data-dependent shape {list(shape)}: not supported by "
                    f"this backend yet; serve the model with onnxruntime or torch")
            spec.max_nbytes = math.prod(shape) * np.dtype(spec.dtype).itemsize
        del probe
        self.inputs, self.outputs = inputs, outputs

    def output_shapes(self, input_shapes):
        # Known exactly only once a context has the input shapes: enqueue() checks sizes.
        return {spec.name: None if any(d < 0 for d in spec.shape) else tuple(spec.shape)
                for spec in self.outputs}

    # -- running -------------------------------------------------------------------------------------

    def _context(self, stream):
        ctx = self._contexts.get(stream.ptr)
        if ctx is None:
            ctx = self._engine.create_execution_context()
            if ctx is None:
                said = "; ".join(self._logger.messages[-3:])
                raise BackendError(f"TensorRT could not create an execution context ({said}); the GPU "
                                   f"may be out of memory")
            # Instance i uses profile i (mod the count): instances do not contend for one profile.
            profile = len(self._contexts) % self.num_profiles
            if self.num_profiles > 1 and not ctx.set_optimization_profile_async(profile, stream.ptr):
                raise BackendError(f"TensorRT refused optimization profile {profile}")
            self._contexts[stream.ptr] = ctx
        return ctx

    def enqueue(self, stream, inputs: list[TensorBinding], outputs: list[TensorBinding]):
        ctx = self._context(stream)
        for t in inputs:
            if not ctx.set_input_shape(t.name, t.shape):
                raise BackendError(f"input {t.name!r} shape {list(t.shape)} is outside the engine's "
                                   f"optimization profile; rebuild with a profile that covers it")
            ctx.set_tensor_address(t.name, t.address)
        shapes = {}
        for t in outputs:
            shape = tuple(ctx.get_tensor_shape(t.name))
            nbytes = math.prod(shape) * t.dtype.itemsize
            if nbytes > t.nbytes:
                raise OutputTooLarge(t.name, nbytes, t.nbytes)
            ctx.set_tensor_address(t.name, t.address)
            shapes[t.name] = shape
        if not ctx.execute_async_v3(stream.ptr):
            said = "; ".join(self._logger.messages[-3:])
            raise BackendError(f"TensorRT execute_async_v3 failed: {said or 'no message'}")
        return shapes

    def close(self) -> None:
        self._contexts.clear()
        self._engine = None
        self._runtime = None
