"""Finding TensorRT, and the one place where TensorRT versions differ.

Two libraries, one API shape:
- TensorRT (library "tensorrt"): the full `tensorrt` module, or the lean runtime
  (`pip install tensorrt-lean-cu13`: module `tensorrt_lean`; from the bare wheels:
  `tensorrt_lean_bindings`), which runs version-compatible engines and weighs ~44 MB
  instead of gigabytes. Building needs the full module and a GPU.
- TensorRT for RTX (library "tensorrt-rtx", `pip install tensorrt-rtx-cu13`: module
  `tensorrt_rtx`): builds without a GPU, ahead of time, for chosen compute capabilities, and
  runs its engines on RTX-class GPUs only. Its engines and TensorRT's are not interchangeable.

RUNTIME_API lists every runtime class member the backend uses, RTX_RUNTIME_API adds what it
uses of TensorRT-RTX only; CI checks each against the real lean-runtime and TensorRT-RTX
classes, so a rename in a release shows up as a failing test, not as an AttributeError in
production.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from types import ModuleType

# Tried in this order: the full library can build and run; the lean runtime only runs.
RUNTIME_MODULES = ("tensorrt", "tensorrt_lean", "tensorrt_lean_bindings")
# TensorRT for RTX: never a stand-in for the above (nor they for it): its engines are its own.
RTX_MODULE = "tensorrt_rtx"

RUNTIME_API: dict[str, tuple[str, ...]] = {
    "Runtime": ("deserialize_cuda_engine", "engine_host_code_allowed", "get_plugin_registry"),
    "ICudaEngine": ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_dtype",
                    "get_tensor_shape", "num_optimization_profiles", "get_tensor_profile_shape",
                    "create_execution_context", "create_engine_inspector", "hardware_compatibility_level"),
    "IExecutionContext": ("set_optimization_profile_async", "set_input_shape", "set_tensor_address",
                          "execute_async_v3", "get_tensor_shape", "set_output_allocator",
                          "all_binding_shapes_specified"),
    "TensorIOMode": ("INPUT", "OUTPUT"),
    "ILogger": ("log", "Severity"),
    "IPluginRegistry": ("load_library",),  # the model's plugins = [...], loaded into the runtime
    "ExecutionContextAllocationStrategy": ("STATIC", "USER_MANAGED"),
    "DataType": ("FLOAT", "HALF", "INT8", "INT32", "INT64", "BOOL", "UINT8", "BF16"),
}

# What the backend and the builder use of TensorRT-RTX beyond RUNTIME_API: the runtime config
# (CUDA graphs by the library's own strategy, the JIT kernels' runtime cache), the engine's
# validity check (why an engine cannot run on this GPU), and the target compute capabilities.
RTX_RUNTIME_API: dict[str, tuple[str, ...]] = {
    **RUNTIME_API,
    "Runtime": (*RUNTIME_API["Runtime"], "get_engine_validity"),
    "ICudaEngine": (*RUNTIME_API["ICudaEngine"], "create_runtime_config"),
    "IRuntimeConfig": ("create_runtime_cache", "set_runtime_cache", "get_runtime_cache",
                       "cuda_graph_strategy", "dynamic_shapes_kernel_specialization_strategy",
                       "set_execution_context_allocation_strategy"),
    "IRuntimeCache": ("serialize", "deserialize"),
    "CudaGraphStrategy": ("DISABLED", "WHOLE_GRAPH_CAPTURE"),
    "EngineValidity": ("VALID", "SUBOPTIMAL", "INVALID"),
    "EngineInvalidityDiagnostics": ("VERSION_MISMATCH", "UNSUPPORTED_CC", "OLD_CUDA_DRIVER",
                                    "OLD_CUDA_RUNTIME", "INSUFFICIENT_GPU_MEMORY", "MALFORMED_ENGINE",
                                    "CUDA_ERROR"),
    "IBuilderConfig": ("num_compute_capabilities", "set_compute_capability", "get_compute_capability",
                       "set_memory_pool_limit", "builder_optimization_level", "profiling_verbosity",
                       "add_optimization_profile"),
    "ComputeCapability": ("SM75", "SM80", "SM86", "SM89", "SM120", "SM121"),
}

# TensorRT data types the protocol carries (BF16/FP8/INT4 tensors cannot cross the wire).
_WIRE_DTYPES = {"FLOAT": "float32", "HALF": "float16", "INT8": "int8", "INT32": "int32",
                "INT64": "int64", "BOOL": "bool", "UINT8": "uint8"}


class TensorRTUnavailable(ImportError):
    pass


@dataclass(frozen=True)
class TensorRT:
    module: ModuleType
    flavor: str  # "full", "lean" or "rtx"

    @property
    def version(self) -> str:
        return getattr(self.module, "__version__", "unknown")

    @property
    def major(self) -> int:
        try:
            return int(self.version.split(".")[0])
        except ValueError:
            return 0

    @property
    def library(self) -> str:
        """The library's name as the config and the cache write it."""
        return "tensorrt-rtx" if self.flavor == "rtx" else "tensorrt"

    @property
    def cuda_build(self) -> str:
        """TensorRT-RTX's CUDA major as its wheels name it ("cu13"), "" when not known: the -cu12
        and -cu13 builds carry the same version number and are not one library."""
        for cuda in ("cu13", "cu12", "cu14"):
            try:
                importlib.metadata.version(f"tensorrt_rtx_{cuda}_libs")
                return cuda
            except importlib.metadata.PackageNotFoundError:
                continue
        return ""

    @property
    def can_build(self) -> bool:
        return self.flavor in ("full", "rtx") and hasattr(self.module, "Builder")

    def wire_dtype(self, trt_dtype) -> str:
        name = getattr(trt_dtype, "name", str(trt_dtype))
        try:
            return _WIRE_DTYPES[name]
        except KeyError:
            raise TypeError(f"TensorRT tensor type {name} cannot be carried by the protocol "
                            f"(it carries {', '.join(sorted(set(_WIRE_DTYPES.values())))}); give the "
                            f"model FP32/FP16/INT32 I/O and keep reduced precision inside") from None


def import_tensorrt(prefer: str = "any") -> TensorRT:
    """The TensorRT runtime module; prefer "full" to require the builder, "rtx" for TensorRT-RTX."""
    if prefer == "rtx":
        return _import_rtx()
    errors = []
    for name in RUNTIME_MODULES:
        if prefer == "full" and name != "tensorrt":
            continue
        try:
            module = importlib.import_module(name)
        except Exception as exc:  # ImportError, or OSError from a missing shared library
            errors.append(f"{name}: {exc}")
            continue
        return TensorRT(module, "full" if name == "tensorrt" else "lean")
    hint = ("pip install tensorrt (needs NVIDIA's package index)" if prefer == "full" else
            "pip install \"tensorrt-lean-cu13\" (or -cu12) to run version-compatible engines, "
            "or the full tensorrt package to build them")
    raise TensorRTUnavailable(f"TensorRT is not installed here ({'; '.join(errors)}); {hint}")


def _import_rtx() -> TensorRT:
    try:
        module = importlib.import_module(RTX_MODULE)
    except Exception as exc:  # ImportError, or OSError from a missing shared library
        raise TensorRTUnavailable(
            f"TensorRT-RTX is not installed here ({RTX_MODULE}: {exc}); pip install \"trtd[rtx]\" "
            f"(tensorrt-rtx-cu13, from PyPI: builds engines without a GPU, runs them on RTX GPUs)") from None
    return TensorRT(module, "rtx")


def missing_runtime_api(module: ModuleType, api: dict[str, tuple[str, ...]] = RUNTIME_API) -> list[str]:
    """Members of `api` that `module` lacks (empty when the runtime has all we use)."""
    missing = []
    for cls_name, members in api.items():
        cls = getattr(module, cls_name, None)
        if cls is None:
            missing.append(cls_name)
            continue
        missing += [f"{cls_name}.{m}" for m in members if not hasattr(cls, m)]
    return missing


def capturing_logger(trt, forward=None):
    """A TensorRT logger that keeps what TensorRT says (for error messages), optionally passing it on.

    `messages`: the last warnings and errors; `errors`: the last errors; `layers`: the builder's
    per-layer report ("Layers:" then one line per engine layer, as the engine inspector words it;
    said at VERBOSE level by a build with DETAILED profiling verbosity), "" if none was said.
    """

    class Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.messages: list[str] = []
            self.errors: list[str] = []
            self.layers = ""

        def log(self, severity, msg):
            level = int(severity)
            if str(msg).startswith("Layers:"):
                # The one way to see an RTX engine's layers where its runtime cannot load it.
                self.layers = str(msg)
            if level <= int(trt.ILogger.Severity.WARNING):
                self.messages = (self.messages + [str(msg)])[-20:]
                if forward is not None:
                    forward(f"TensorRT: {msg}")
            if level <= int(trt.ILogger.Severity.ERROR):
                self.errors = (self.errors + [str(msg)])[-20:]

    return Logger()
