"""TensorRT backend: a serialized engine run with execute_async_v3 on the instance's stream.

Works with the full `tensorrt` module or the lean runtime, and with TensorRT for RTX
(library "tensorrt-rtx": the same calls on its own engines). One execution
context per instance (per CUDA stream) and optimization profile: each request
runs on the first profile whose ranges cover its shapes. Inputs and outputs are the instance's device
buffers (filled from / drained into the pinned region by the GPU data path).

Fixed dimensions, including a fixed batch, must match exactly: smaller
requests are rejected, not padded (padding would spend compute on rows the
client did not send and return rows it did not ask for). Outputs whose shape
depends on the data are refused at load time with a clear error.

TensorRT-RTX differs in three places, each as its documentation says: every context is made
from a runtime config (IRuntimeConfig) that carries CUDA graphs (the library's own
WHOLE_GRAPH_CAPTURE strategy, which knows when its JIT kernels are final, instead of the
manual capture used for TensorRT) and the runtime cache of kernels it compiles on this GPU,
kept in a file beside the engine (engines/runtime_cache.py); and an engine it cannot load
is explained by its validity check (another version, a compute capability it does not
support). None of the RTX path has run on an RTX GPU: no machine of this project has one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from trtd.protocol import TensorSpec
from trtd.protocol.layout import tensor_nbytes

from trtd.daemon.system import cuda
from trtd.daemon.engines import library as libraries
from trtd.daemon.engines.runtime_cache import RuntimeCacheFile
from trtd.daemon.engines.trt import TensorRTUnavailable, capturing_logger, import_tensorrt
from trtd.daemon.backends.base import Backend, BackendError, OutputTooLarge, TensorBinding

log = logging.getLogger("trtd.tensorrt")


# Graphs one backend keeps at most (per instance, shape and output set): a bound on GPU memory.
_MAX_GRAPHS = 64


class TensorRTBackend(Backend):
    kind = "tensorrt"

    def __init__(self, path: str | Path, device: int | None, max_batch: int = 0,
                 allow_host_code: bool = False, plugins: list[str] | tuple[str, ...] = (),
                 cuda_graphs: bool = False, library: str = libraries.TENSORRT):
        """cuda_graphs, TensorRT: capture execute_async_v3 per (stream, shapes, addresses) as a
        CUDA graph on its second request of that kind and replay it after (TensorRT's documented
        pattern: enqueue once to flush deferred updates, then capture); TensorRT-RTX: its own
        CUDA-graph strategy. Neither has run on any machine of this project yet."""
        self._rtx = library == libraries.RTX
        if self._rtx:
            self.kind = "tensorrt-rtx"
        self._cuda_graphs = cuda_graphs
        self._graphs: dict | None = {} if cuda_graphs and not self._rtx else None
        self._runtime_configs: list = []  # TensorRT-RTX: each context's, alive as long as it is
        self._runtime_cache = None  # TensorRT-RTX's IRuntimeCache, shared by the contexts
        self._runtime_cache_file: RuntimeCacheFile | None = None
        if device is None:
            raise BackendError("TensorRT engines run on a GPU: set the model's device (e.g. device = 0)")
        try:
            self._trt = import_tensorrt(prefer="rtx" if self._rtx else "any")
        except TensorRTUnavailable as exc:
            raise BackendError(str(exc)) from None
        trt = self._trt.module
        self.device = device
        gpu = _rtx_gpu(path, device) if self._rtx else None
        cuda.use_device(device)
        self._logger = capturing_logger(trt)
        self._runtime = trt.Runtime(self._logger)
        # Version-compatible engines that embed the lean runtime execute host code
        # from the engine file: allowed only when the operator trusts the file.
        self._runtime.engine_host_code_allowed = allow_host_code
        if hasattr(trt, "init_libnvinfer_plugins"):  # the full library's standard plugins
            trt.init_libnvinfer_plugins(self._logger, "")
        for plugin in plugins:
            if not Path(plugin).is_file():
                raise BackendError(f"plugin library {plugin} does not exist")
            self._runtime.get_plugin_registry().load_library(str(plugin))
        data = Path(path).read_bytes()
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None and self._rtx:
            raise BackendError(self._rtx_refusal(path, data))
        if self._engine is None:
            said = "; ".join(self._logger.messages[-3:]) or "no message"
            raise BackendError(
                f"TensorRT {self._trt.version} ({self._trt.flavor}) could not deserialize {path}: {said}. "
                f"An engine runs only on the TensorRT version and GPU that built it (unless built "
                f"version/hardware compatible); a version-compatible engine that embeds the lean "
                f"runtime also needs allow_engine_host_code = true; an engine with custom ops needs its "
                f"plugin libraries (plugins = [...]). Otherwise rebuild it with `trtd build`.")
        self._contexts: dict[tuple[int, int], object] = {}  # (stream, profile) -> context
        if gpu is not None:
            self._open_runtime_cache(path, gpu)
        self._describe(trt, max_batch)

    # -- TensorRT-RTX ---------------------------------------------------------------------------------

    def _rtx_refusal(self, path, data: bytes) -> str:
        """Why TensorRT-RTX did not load the engine, in its validity check's words."""
        said = "; ".join(self._logger.messages[-3:]) or "no message"
        reasons = []
        try:
            _, diagnostics = self._runtime.get_engine_validity(data)
            for flag, text in _RTX_INVALIDITY.items():
                value = getattr(self._trt.module.EngineInvalidityDiagnostics, flag, None)
                if value is not None and int(diagnostics) & int(value):
                    reasons.append(text)
        except Exception:  # the check is for the message only
            pass
        why = "; ".join(reasons) or said
        return (f"TensorRT-RTX {self._trt.version} could not load {path}: {why}. A TensorRT-RTX engine "
                f"runs with the TensorRT-RTX version that built it, on the RTX GPUs of its targets: "
                f"rebuild it with `trtd build MODEL.onnx --library tensorrt-rtx --target ...`")

    def _open_runtime_cache(self, path, gpu: libraries.Gpu) -> None:
        """The runtime cache shared by this engine's contexts, loaded from its file if there."""
        from trtd.daemon.engines.runtime_cache import runtime_cache_key, runtime_cache_path

        key = runtime_cache_key(gpu.compute_capability, gpu.name, self._trt.version,
                                cuda.versions()["driver"] // 1000)
        config = self._engine.create_runtime_config()
        self._runtime_configs.append(config)
        self._runtime_cache = config.create_runtime_cache()
        cache_file = self._runtime_cache_file = RuntimeCacheFile(runtime_cache_path(path, key), log.warning)
        if cache_file.load_into(self._runtime_cache):
            log.info("TensorRT-RTX runtime cache %s loaded", cache_file.path)

    def _new_context(self, strategy=None):
        """An execution context; TensorRT-RTX's through a runtime config (graphs, runtime cache)."""
        trt = self._trt.module
        if not self._rtx:
            return (self._engine.create_execution_context(strategy) if strategy is not None
                    else self._engine.create_execution_context())
        config = self._engine.create_runtime_config()
        if strategy is not None:
            config.set_execution_context_allocation_strategy(strategy)
        config.cuda_graph_strategy = (trt.CudaGraphStrategy.WHOLE_GRAPH_CAPTURE if self._cuda_graphs
                                      else trt.CudaGraphStrategy.DISABLED)
        if self._runtime_cache is not None and not config.set_runtime_cache(self._runtime_cache):
            log.warning("TensorRT-RTX refused the runtime cache: kernels are compiled at every start")
        ctx = self._engine.create_execution_context(config)
        self._runtime_configs.append(config)
        self._save_runtime_cache()  # the context's JIT kernels: kept even if the daemon is killed
        return ctx

    def _save_runtime_cache(self) -> None:
        if self._runtime_cache is not None and self._runtime_cache_file is not None:
            self._runtime_cache_file.save_from(self._runtime_cache)

    # -- description ---------------------------------------------------------------------------------

    def _describe(self, trt, max_batch: int) -> None:
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs: list[TensorSpec] = []
        outputs: list[TensorSpec] = []
        for name in names:
            try:
                dtype = self._trt.wire_dtype(engine.get_tensor_dtype(name))
            except TypeError as exc:
                raise BackendError(f"tensor {name!r}: {exc}") from None
            spec = TensorSpec(name=name, dtype=dtype, shape=list(engine.get_tensor_shape(name)))
            (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs).append(spec)
        self.num_profiles = max(engine.num_optimization_profiles, 1)
        # Per profile and input, the (min, max) shapes it accepts; fixed inputs accept one shape.
        self._ranges: list[dict[str, tuple[tuple[int, ...], tuple[int, ...]]]] = []
        for p in range(self.num_profiles):
            ranges = {}
            for spec in inputs:
                if any(d < 0 for d in spec.shape):
                    lo, _, hi = engine.get_tensor_profile_shape(spec.name, p)
                    ranges[spec.name] = (tuple(lo), tuple(hi))
                else:
                    ranges[spec.name] = (tuple(spec.shape), tuple(spec.shape))
            self._ranges.append(ranges)
        self._max_shapes = {spec.name: tuple(max(r[spec.name][1][i] for r in self._ranges)
                                             for i in range(len(spec.shape))) for spec in inputs}
        dynamic_batch = inputs and all(s.shape and s.shape[0] < 0 for s in inputs)
        engine_max = (max(min(r[s.name][1][0] for s in inputs) for r in self._ranges)
                      if dynamic_batch else 0)
        self.max_batch = min(max_batch, engine_max) if (max_batch and engine_max) else engine_max
        for spec in inputs:
            spec.max_nbytes = tensor_nbytes(self._max_shapes[spec.name], np.dtype(spec.dtype).itemsize)
        # Output sizes at each profile's largest input shapes, from TensorRT's own shape inference.
        largest = {spec.name: 0 for spec in outputs}
        stream = cuda.Stream(self.device)
        try:
            probe = self._new_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
            for p, ranges in enumerate(self._ranges):
                if self.num_profiles > 1:
                    probe.set_optimization_profile_async(p, stream.ptr)
                    stream.synchronize()
                for spec in inputs:
                    if not probe.set_input_shape(spec.name, ranges[spec.name][1]):
                        raise BackendError(f"TensorRT refused input {spec.name!r} at profile {p}'s "
                                           f"largest shape {list(ranges[spec.name][1])}")
                for spec in outputs:
                    shape = tuple(probe.get_tensor_shape(spec.name))
                    if any(d < 0 for d in shape):
                        raise BackendError(
                            f"output {spec.name!r} has a data-dependent shape {list(shape)}: not "
                            f"supported by this backend yet; serve the model with onnxruntime or torch")
                    largest[spec.name] = max(largest[spec.name],
                                             tensor_nbytes(shape, np.dtype(spec.dtype).itemsize))
            del probe
        finally:
            stream.close()
        for spec in outputs:
            spec.max_nbytes = largest[spec.name]
        self.inputs, self.outputs = inputs, outputs

    def _profile_for(self, shapes: dict[str, tuple[int, ...]]) -> int:
        for p, ranges in enumerate(self._ranges):
            if all(all(lo <= d <= hi for d, lo, hi in zip(shapes[n], *ranges[n])) for n in shapes):
                return p
        raise BackendError(f"input shapes {shapes} are outside every optimization profile of this "
                           f"engine; rebuild it with a profile that covers them")

    def output_shapes(self, input_shapes):
        # Known exactly only once a context has the input shapes: enqueue() checks sizes.
        return {spec.name: None if any(d < 0 for d in spec.shape) else tuple(spec.shape)
                for spec in self.outputs}

    # -- running -------------------------------------------------------------------------------------

    def _context(self, stream, profile: int):
        """One context per (instance stream, profile): switching profiles is never needed."""
        key = (stream.ptr, profile)
        ctx = self._contexts.get(key)
        if ctx is None:
            ctx = self._new_context()
            if ctx is None:
                said = "; ".join(self._logger.messages[-3:])
                raise BackendError(f"TensorRT could not create an execution context ({said}); the GPU "
                                   f"may be out of memory")
            if self.num_profiles > 1 and not ctx.set_optimization_profile_async(profile, stream.ptr):
                raise BackendError(f"TensorRT refused optimization profile {profile}")
            self._contexts[key] = ctx
        return ctx

    def enqueue(self, stream, inputs: list[TensorBinding], outputs: list[TensorBinding]):
        ctx = self._context(stream, self._profile_for({t.name: tuple(t.shape) for t in inputs}))
        for t in inputs:
            if not ctx.set_input_shape(t.name, t.shape):
                raise BackendError(f"TensorRT refused input {t.name!r} shape {list(t.shape)}")
            ctx.set_tensor_address(t.name, t.address)
        shapes = {}
        for t in outputs:
            shape = tuple(ctx.get_tensor_shape(t.name))
            nbytes = tensor_nbytes(shape, t.dtype.itemsize)
            if nbytes > t.nbytes:
                raise OutputTooLarge(t.name, nbytes, t.nbytes)
            ctx.set_tensor_address(t.name, t.address)
            shapes[t.name] = shape
        if self._graphs is not None:
            return self._through_graph(ctx, stream, inputs, outputs, shapes)
        self._execute(ctx, stream)
        return shapes

    def _execute(self, ctx, stream) -> None:
        if not ctx.execute_async_v3(stream.ptr):
            said = "; ".join(self._logger.messages[-3:])
            raise BackendError(f"TensorRT execute_async_v3 failed: {said or 'no message'}")

    def _through_graph(self, ctx, stream, inputs: list[TensorBinding], outputs: list[TensorBinding],
                       shapes: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
        graphs = self._graphs
        assert graphs is not None
        key = (stream.ptr, tuple((t.name, t.address, tuple(t.shape)) for t in inputs),
               tuple((t.name, t.address) for t in outputs))
        graph = graphs.get(key)
        if graph is not None:
            graph.launch(stream)
        elif key in graphs:  # seen once, eagerly: its deferred updates are flushed; capture now
            self._execute(ctx, stream)
            with cuda.capture_guard.exclusive():  # alone among every instance's GPU work
                graphs[key] = cuda.Graph(stream, lambda: self._execute(ctx, stream))
        else:
            self._execute(ctx, stream)
            if len(graphs) < _MAX_GRAPHS:
                graphs[key] = None
        return shapes

    def graph_stats(self) -> tuple[int, int]:
        # The graphs use the execution contexts' own memory: no pool of their own to report.
        # TensorRT-RTX keeps its graphs inside its contexts: none to count from here.
        return (sum(g is not None for g in self._graphs.values()), 0) if self._graphs else (0, 0)

    def close(self) -> None:
        self._save_runtime_cache()  # kernels specialized while serving (dynamic shapes) too
        for graph in (self._graphs or {}).values():
            if graph is not None:
                graph.close()
        self._graphs = {} if self._graphs is not None else None
        self._contexts.clear()
        self._runtime_configs.clear()
        self._runtime_cache = None
        self._runtime_cache_file = None
        self._engine = None
        self._runtime = None


# What TensorRT-RTX's validity check can say of an engine it does not load.
_RTX_INVALIDITY = {
    "VERSION_MISMATCH": "it was built by another TensorRT-RTX version",
    "UNSUPPORTED_CC": "it was not built for this GPU's compute capability, or TensorRT-RTX does not "
                      "support this GPU",
    "OLD_CUDA_DRIVER": "the NVIDIA driver is too old for it: update the driver",
    "OLD_CUDA_RUNTIME": "the CUDA runtime is too old for it",
    "INSUFFICIENT_GPU_MEMORY": "the GPU has too little memory for it",
    "MALFORMED_ENGINE": "the file is not a TensorRT-RTX engine, or is damaged",
    "CUDA_ERROR": "CUDA failed while checking it (no usable GPU or driver)",
}


def _rtx_gpu(path, device: int) -> libraries.Gpu:
    """The GPU a TensorRT-RTX engine is to run on; BackendError saying why it cannot run there."""
    engine = f"TensorRT-RTX engine {Path(path).name}"
    targets = libraries.engine_metadata(path).get("targets") or []
    built_for = f" (built for {','.join(targets)})" if targets else ""
    try:
        cuda.open_device(device)
    except cuda.CudaError as exc:
        raise BackendError(f"{engine}{built_for} cannot run here: it needs an RTX GPU as device {device} "
                           f"and there is none usable ({exc})") from None
    gpu = libraries.gpu_of(device)
    if gpu is None:
        raise BackendError(f"{engine} cannot run here: device {device} is not a usable GPU")
    if not libraries.rtx_supports(gpu):
        raise BackendError(f"{engine} cannot run on {gpu.text()}: TensorRT-RTX runs on RTX GPUs "
                           f"(compute capability {', '.join(libraries.RTX_TARGETS.values())}) only; "
                           f"for this GPU serve the ONNX model with engine_library = \"tensorrt\" "
                           f"({libraries.TENSORRT_INSTALL}) or with ONNX Runtime")
    target = libraries.target_of(gpu.compute_capability)
    if targets and target not in targets:
        raise BackendError(f"{engine} was built for {','.join(targets)}, not for {gpu.text()}: rebuild "
                           f"it with --target {','.join(sorted(set(targets) | {target}, key=lambda t: int(t[2:])))}")
    return gpu
