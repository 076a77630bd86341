"""How a configured model is served: decided here, once, and nowhere else.

A model is served by a *first* backend from its first request on and, for ONNX models that
ask for it, replaced later by what a background job prepares (running/swap.py):
- `tensorrt` with an ONNX file: ONNX Runtime first (its CUDA provider where onnxruntime-gpu is
  installed), the TensorRT engine later;
- `onnxruntime` with `precision`: ONNX Runtime on the FP32 file first, the reduced-precision
  variant later;
- `tensorrt` with an engine file, `torch`, plain `onnxruntime`: that backend, nothing later.
Every backend the daemon opens for a model goes through one function per backend kind below,
so every setting of the model (threads, device, plugins, host code) reaches it whichever path
the model takes (the `inter_op_threads` bug was a second constructor that forgot one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from trtd.daemon.backends import BACKENDS, Backend, BackendError
from trtd.daemon.config.settings import BUILTIN_PREFIX, ModelConfig, did_you_mean, model_file_problem
from trtd.daemon.system import cuda

BackendKind = Literal["onnxruntime", "torch", "tensorrt"]
# What replaces the first backend once prepared and compared: nothing, a TensorRT (or
# ONNX Runtime optimized) engine built from the ONNX file, or a reduced-precision variant.
Later = Literal["none", "engine", "variant"]


@dataclass(frozen=True, slots=True)
class ServingPlan:
    first: BackendKind
    path: str              # the file the first backend opens (a built-in is generated)
    max_batch: int         # the configured one, or a built-in model's default
    torch_inputs: tuple[str, ...]  # TorchScript input specs (a built-in's own when none given)
    later: Later
    source: str            # the ONNX file `later` is prepared from ("" when later == "none")


def plan_serving(config: ModelConfig) -> ServingPlan:
    """The plan for `config`; BackendError when its file is missing or unusable. Generates a
    built-in model's file on first use; leaves `config` as it is."""
    if config.backend not in BACKENDS:
        raise BackendError(f"unknown backend {config.backend!r}{did_you_mean(config.backend, BACKENDS)} "
                           f"(available: {', '.join(BACKENDS)})")
    builtin = config.path[len(BUILTIN_PREFIX):] if config.path.startswith(BUILTIN_PREFIX) else None
    is_onnx = builtin is not None or config.path.lower().endswith(".onnx")
    later: Later = "none"
    if is_onnx and config.backend == "tensorrt":
        later = "engine"
    elif is_onnx and config.backend == "onnxruntime" and config.precision:
        later = "variant"
    first: BackendKind = "onnxruntime" if later != "none" else config.backend  # type: ignore[assignment]
    torch_inputs = tuple(config.inputs)
    if builtin is None:
        problem = model_file_problem(Path(config.path))
        if problem:
            raise BackendError(problem)
        path = config.path
    elif first == "torch":
        path, builtin_inputs = _builtin_torchscript(builtin)
        torch_inputs = torch_inputs or builtin_inputs
    else:
        from trtd.daemon.builtin.onnx_models import builtin_model_path

        path = str(builtin_model_path(builtin))
    return ServingPlan(first=first, path=path, max_batch=_max_batch(config, builtin),
                       torch_inputs=torch_inputs, later=later,
                       source=path if later != "none" else "")


def open_first(config: ModelConfig, plan: ServingPlan) -> Backend:
    """The backend that serves `config` from its first request on."""
    if config.device >= 0 and plan.later == "none" and not _rtx_engine(config, plan):
        cuda.open_device(config.device)  # a clear error before the backend tries (an RTX one explains more)
    if plan.first == "onnxruntime":
        if plan.later != "none":  # standing in for an engine or a variant: the GPU if it can
            from trtd.daemon.backends.onnxruntime import providers_for

            return onnxruntime(config, plan.path, plan.max_batch, providers_for(config.device))
        if config.device >= 0:
            raise BackendError(
                f"model '{config.name}': the onnxruntime backend runs on the CPU (device = -1); "
                f"serve GPU models with the torch or tensorrt backend")
        return onnxruntime(config, plan.path, plan.max_batch)
    if plan.first == "torch":
        from trtd.daemon.backends.torch import TorchBackend

        return TorchBackend(plan.path, inputs=list(plan.torch_inputs), max_batch=plan.max_batch,
                            device=config.device if config.device >= 0 else None,
                            cuda_graphs=config.cuda_graphs, graph_batches=tuple(config.graph_batches),
                            half=config.precision == "fp16")
    return tensorrt(config, plan.path, plan.max_batch, config.device if config.device >= 0 else None)


def open_later(config: ModelConfig, path: str, max_batch: int, kind: Later, library: str = "tensorrt") -> Backend:
    """The backend for what a background job prepared: a variant ONNX file, or an engine
    (`library`: the TensorRT that built it)."""
    if kind == "variant":
        from trtd.daemon.backends.onnxruntime import providers_for

        return onnxruntime(config, path, max_batch, providers_for(config.device))
    if config.engine_builder == "onnxruntime":  # ONNX Runtime's optimized model, on the CPU
        return onnxruntime(config, path, max_batch)
    return tensorrt(config, path, max_batch, max(config.device, 0), library)


def onnxruntime(config: ModelConfig, path: str, max_batch: int, providers: list | None = None) -> Backend:
    from trtd.daemon.backends.onnxruntime import OnnxRuntimeBackend

    return OnnxRuntimeBackend(path, max_batch=max_batch, intra_op_threads=config.intra_op_threads,
                              inter_op_threads=config.inter_op_threads, providers=providers)


def tensorrt(config: ModelConfig, path: str, max_batch: int, device: int | None,
             library: str | None = None) -> Backend:
    """`library` None: an engine file the config names, run by the configured engine_library
    or, for "auto", by the library its metadata names (engines/library.py)."""
    from trtd.daemon.backends.tensorrt import TensorRTBackend
    from trtd.daemon.engines.library import library_of_engine

    if library is None:
        library = config.engine_library if config.engine_library != "auto" else library_of_engine(path)
    return TensorRTBackend(path, device=device, max_batch=max_batch,
                           allow_host_code=config.allow_engine_host_code, plugins=config.plugins,
                           cuda_graphs=config.cuda_graphs, library=library)


def _rtx_engine(config: ModelConfig, plan: ServingPlan) -> bool:
    from trtd.daemon.engines.library import RTX, library_of_engine

    if plan.first != "tensorrt":
        return False
    return (config.engine_library if config.engine_library != "auto" else library_of_engine(plan.path)) == RTX


def _builtin_torchscript(name: str) -> tuple[str, tuple[str, ...]]:
    try:
        from trtd.daemon.builtin.torch_models import BUILTIN_TORCH_INPUTS, builtin_torchscript_path
        import torch  # noqa: F401  (the generator needs it)
    except ImportError:
        raise BackendError("built-in TorchScript models need torch: pip install \"trtd[torch]\"") from None
    return str(builtin_torchscript_path(name)), tuple(BUILTIN_TORCH_INPUTS.get(name, ()))


def _max_batch(config: ModelConfig, builtin: str | None) -> int:
    if config.max_batch or builtin is None:
        return config.max_batch
    from trtd.daemon.builtin.onnx_models import DEFAULT_MAX_BATCH

    return DEFAULT_MAX_BATCH.get(builtin, 0)
