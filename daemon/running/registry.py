"""The model registry: load, describe, unload. A model that fails to load is
kept as "failed" with its reason, so status shows it and the rest keep serving."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trtd.protocol import ErrorCode, ModelInfo, ProtocolError, TensorSpec

from trtd.daemon.backends import Backend, BackendError, create_backend
from trtd.daemon.system import cuda
from trtd.daemon.config.settings import BUILTIN_PREFIX, ModelConfig, model_file_problem
from trtd.daemon.system.cuda import CudaError, HostPinning
from trtd.daemon.running.instances import make_instances
from trtd.daemon.running.executor import CompletionQueue, Executor
from trtd.daemon.running.swap import EngineSwapper, Swap
from trtd.daemon.running.stats import ModelStats

log = logging.getLogger("trtd.models")


@dataclass(slots=True)
class LoadedModel:
    config: ModelConfig
    backend: Backend | None
    state: str  # "ready" | "failed"
    error: str = ""
    executor: Executor | None = None
    serving: str = ""   # the backend answering now (differs from config.backend until a swap)
    engine: str = ""    # fingerprint of the engine in use, if any
    build: str = ""     # the background engine build: building, comparing, rejected: ..., failed: ...
    swapper: object = None  # the EngineSwapper thread, while one runs
    source: str = ""    # the ONNX file an engine or variant is prepared from, if any
    stats: ModelStats = field(default_factory=ModelStats)
    # name -> (spec, numpy dtype); built once so validation does no lookups by scan.
    inputs: dict[str, tuple[TensorSpec, np.dtype]] = field(default_factory=dict)
    outputs: dict[str, tuple[TensorSpec, np.dtype]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    def info(self) -> ModelInfo:
        b = self.backend
        return ModelInfo(
            name=self.name, backend=self.serving or self.config.backend, state=self.state,
            inputs=list(b.inputs) if b else [], outputs=list(b.outputs) if b else [],
            max_batch=b.max_batch if b else 0, error=self.error,
        )


def _retire(executor: Executor, backend: Backend, retiring: set | None = None) -> None:
    executor.close()
    backend.close()
    if retiring is not None:
        retiring.discard(executor)


def retire_in_background(executor: Executor, backend: Backend, name: str, retiring: set) -> None:
    """Close a replaced executor once its queued requests have run, on its own thread (the
    socket loop does not wait); `retiring` keeps it in sight of a stop until then."""
    retiring.add(executor)
    threading.Thread(target=_retire, args=(executor, backend, retiring), daemon=True,
                     name=f"trtd-retire-{name}").start()


def discard(model: LoadedModel | Swap) -> None:
    """Close a model (or a swap's engine) that was never served."""
    if model.executor is not None:
        model.executor.close()
    if model.backend is not None:
        model.backend.close()


def retire(model: LoadedModel, retiring: set) -> None:
    """Close a model that is no longer served: its queued requests drain on their own threads,
    so the socket loop does not wait for them; an inline executor has nothing running."""
    if model.swapper is not None:
        model.swapper.cancel()
    if model.executor is None or model.backend is None:
        return
    if model.executor.inline:
        discard(model)
    else:
        retire_in_background(model.executor, model.backend, model.name, retiring)


def model_io(model: LoadedModel, backend: Backend) -> None:
    model.inputs = {s.name: (s, np.dtype(s.dtype)) for s in backend.inputs}
    model.outputs = {s.name: (s, np.dtype(s.dtype)) for s in backend.outputs}


def resolve_model_path(config: ModelConfig) -> str:
    """The file to load; built-in models are generated (once) for the configured backend."""
    path = config.path
    if path.startswith(BUILTIN_PREFIX):
        name = path[len(BUILTIN_PREFIX):]
        if config.backend == "torch":
            try:
                from trtd.daemon.builtin.torch_models import BUILTIN_TORCH_INPUTS, builtin_torchscript_path
                import torch  # noqa: F401  (the generator needs it)
            except ImportError:
                raise BackendError("built-in TorchScript models need torch: pip install \"trtd[torch]\"") from None

            if not config.inputs and name in BUILTIN_TORCH_INPUTS:
                config.inputs = list(BUILTIN_TORCH_INPUTS[name])
            return str(builtin_torchscript_path(name))
        from trtd.daemon.builtin.onnx_models import builtin_model_path

        return str(builtin_model_path(name))
    problem = model_file_problem(Path(path))
    if problem:
        raise BackendError(problem)
    return path


def _default_max_batch(config: ModelConfig) -> int:
    if config.max_batch or not config.path.startswith(BUILTIN_PREFIX):
        return config.max_batch
    from trtd.daemon.builtin.onnx_models import DEFAULT_MAX_BATCH

    return DEFAULT_MAX_BATCH.get(config.path[len(BUILTIN_PREFIX):], 0)


class ModelRegistry:
    def __init__(self, completions: CompletionQueue, pinning: HostPinning):
        self._models: dict[str, LoadedModel] = {}
        self.completions = completions
        self.pinning = pinning
        self.streams = cuda.StreamPool()
        self._create_lock = threading.Lock()
        self._retiring: set[Executor] = set()  # replaced executors still finishing their requests

    def __iter__(self):
        return iter(list(self._models.values()))

    def names(self) -> list[str]:
        return list(self._models)

    def load(self, config: ModelConfig) -> LoadedModel:
        """Load now (on the caller's thread) and serve it; a failure is kept as a failed model."""
        if config.name in self._models:
            raise ProtocolError(
                ErrorCode.LOAD_FAILED,
                f"a model named {config.name!r} is already loaded; unload it first",
            )
        model = self.create(config)
        self._install(model)
        return model

    def add_loading(self, config: ModelConfig) -> LoadedModel:
        """A placeholder in state "loading", shown by status until create() has finished."""
        placeholder = LoadedModel(config=config, backend=None, state="loading")
        self._models[config.name] = placeholder
        return placeholder

    def create(self, config: ModelConfig) -> LoadedModel:
        """Build a model without serving it yet (safe on a loader thread: touches no registry)."""
        with self._create_lock:  # one load at a time: they share the stream pool and the GPU
            return self._create(config)

    def _create(self, config: ModelConfig) -> LoadedModel:
        # TensorRT from ONNX: ONNX Runtime serves first (engine_swap); the GPU comes later.
        is_onnx = config.path.startswith(BUILTIN_PREFIX) or config.path.lower().endswith(".onnx")
        onnx_first = is_onnx and (config.backend == "tensorrt" or
                                  (config.backend == "onnxruntime" and bool(config.precision)))
        try:
            if config.device >= 0 and not onnx_first:
                cuda.open_device(config.device)  # a clear error before the backend tries
            path = resolve_model_path(config)
            if onnx_first:
                # Served by ONNX Runtime at once (its CUDA provider where onnxruntime-gpu is
                # installed, the CPU otherwise); the engine comes later (engine_swap).
                from trtd.daemon.backends.onnxruntime import OnnxRuntimeBackend, providers_for

                backend = OnnxRuntimeBackend.for_model(config, path, _default_max_batch(config),
                                                       providers=providers_for(config.device))
            else:
                backend = create_backend(config, path, max_batch=_default_max_batch(config))
            try:
                executor = Executor(config.name, make_instances(backend, config.instances, self.pinning,
                                                                self.streams),
                                    config.max_queue, self.completions)
            except BaseException:
                backend.close()
                raise
        except Exception as exc:  # any model's failure is that model's, never the daemon's
            if not isinstance(exc, (BackendError, CudaError, ImportError, ValueError, OSError)):
                log.exception("model %s: unexpected error while loading", config.name)
                exc = f"{type(exc).__name__}: {exc}"
            log.error("model %s failed to load: %s", config.name, exc)
            return LoadedModel(config=config, backend=None, state="failed", error=str(exc))
        model = LoadedModel(config=config, backend=backend, state="ready", executor=executor,
                            serving=backend.kind, source=path if onnx_first else "")
        model_io(model, backend)
        log.info("model %s ready (%s, %s)", config.name, backend.kind, config.path)
        return model

    def _install(self, model: LoadedModel) -> None:
        """Serve a created model under its name (socket loop only)."""
        self._models[model.name] = model
        if model.source:  # ONNX first: the engine or reduced-precision variant comes later
            if model.config.swap == "auto":
                model.build = "queued"
                model.swapper = EngineSwapper(model, model.source, self)
                model.swapper.start()
            else:
                model.build = "off (swap = \"off\")"

    def finish_loading(self, placeholder: LoadedModel, model: LoadedModel) -> bool:
        """Put a model created in the background in its placeholder's place (socket loop only).

        False (and the model closed) when the placeholder is gone: unloaded, or the daemon
        is stopping.
        """
        if self._models.get(placeholder.name) is not placeholder:
            discard(model)
            return False
        self._install(model)
        return True

    def finish_replacing(self, model: LoadedModel) -> bool:
        """Serve a reloaded model instead of the one serving under its name now (by name: that
        may be a model whose first load finished after the reload asked); a failed one leaves
        the old one serving. Discarded when the name was unloaded meanwhile."""
        old = self._models.get(model.name)
        if old is None or old.state == "loading":
            discard(model)
            return False
        if model.state != "ready" and old.state == "ready":
            old.error = f"reload failed; still serving the previous configuration: {model.error}"
            return False
        self._install(model)
        retire(old, self._retiring)
        return True

    def swap(self, item) -> None:
        """Put a compared engine in place of ONNX Runtime (socket loop only, between requests)."""
        model = item.model
        if self._models.get(model.name) is not model:  # unloaded while it was built
            item.executor.close()
            item.backend.close()
            return
        old_executor, old_backend = model.executor, model.backend
        model.backend, model.executor = item.backend, item.executor
        model.serving, model.engine = item.serving, item.engine
        model_io(model, item.backend)
        model.build = f"serving engine {item.engine}"
        model.swapper = None
        if old_executor.inline:
            old_executor.close()  # nothing runs on it: inline requests are done by now
            old_backend.close()
        else:
            retire_in_background(old_executor, old_backend, model.name, self._retiring)
        log.info("model %s now served by %s engine %s", model.name, item.serving, item.engine)

    def get(self, name: str) -> LoadedModel:
        model = self._models.get(name)
        if model is None:
            known = ", ".join(self._models) or "none"
            raise ProtocolError(
                ErrorCode.UNKNOWN_MODEL,
                f"no model named {name!r}; loaded models: {known}",
                {"models": list(self._models)},
            )
        return model

    def get_ready(self, name: str) -> LoadedModel:
        model = self.get(name)
        if model.state == "loading":
            raise ProtocolError(
                ErrorCode.MODEL_NOT_READY,
                f"model {name!r} is still loading; retry shortly (`trtd status` shows it)",
            )
        if model.state != "ready":
            raise ProtocolError(
                ErrorCode.MODEL_NOT_READY,
                f"model {name!r} is {model.state}: {model.error or 'not ready yet'}",
            )
        return model

    def unload(self, name: str, wait: bool = True) -> bool:
        """False when wait=False left a running request's model open (see Executor.close)."""
        model = self.get(name)
        del self._models[name]
        if model.swapper is not None:
            model.swapper.cancel()  # stops the build; it uses the backend closed below
        if model.executor is not None and not model.executor.close(wait):  # waits for its requests
            return False
        if model.backend is not None:
            model.backend.close()
        return True

    def executors(self) -> list[Executor]:
        """Every executor that may hold requests: the served models' and the replaced ones'."""
        served = [model.executor for model in self._models.values() if model.executor is not None]
        return served + list(self._retiring)

    def close_all(self, wait: bool = True) -> list[str]:
        """Unload everything; the names of the models left open because wait=False and a
        request of theirs still runs."""
        left_open = [name for name in list(self._models) if not self.unload(name, wait)]
        self.streams.close()  # the free streams only: open instances keep theirs
        return left_open
