"""The model registry: load, describe, unload. A model that fails to load is
kept as "failed" with its reason, so status shows it and the rest keep serving."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Iterator

import numpy as np

from trtd.protocol import ErrorCode, ModelInfo, ProtocolError, TensorSpec

from trtd.daemon.backends import Backend, BackendError
from trtd.daemon.system import cuda
from trtd.daemon.config.settings import ModelConfig
from trtd.daemon.system.cuda import CudaError, HostPinning
from trtd.daemon.running.finished import CompletionQueue, EngineReady, ModelState
from trtd.daemon.running.instances import make_instances
from trtd.daemon.running.batching import BatchingExecutor, make_executor
from trtd.daemon.running.executor import Executor
from trtd.daemon.running.serving import open_first, plan_serving
from trtd.daemon.running.swap import EngineSwapper
from trtd.daemon.running.histograms import BuildCounts
from trtd.daemon.running.stats import ModelStats

log = logging.getLogger("trtd.models")


@dataclass(slots=True)
class ServedModel:
    """A model under its name: serving, loading (a placeholder) or failed (with its reason)."""

    config: ModelConfig
    backend: Backend | None
    state: ModelState
    error: str = ""
    executor: Executor | None = None
    served_by: str = ""  # the backend answering now (differs from config.backend until a swap)
    engine: str = ""     # fingerprint of the engine in use, if any
    build: str = ""      # the background engine build: building, comparing, rejected: ..., failed: ...
    swapper: EngineSwapper | None = None  # the background build, while one runs
    source: str = ""     # the ONNX file an engine or variant is prepared from, if any
    batching: str = ""   # dynamic_batching: "on", or "refused: why" ("" when not asked for)
    stats: ModelStats = field(default_factory=ModelStats)
    # name -> (spec, numpy dtype); built once so request binding does no lookups by scan.
    inputs: dict[str, tuple[TensorSpec, np.dtype]] = field(default_factory=dict)
    outputs: dict[str, tuple[TensorSpec, np.dtype]] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.config.name

    def info(self) -> ModelInfo:
        b = self.backend
        return ModelInfo(
            name=self.name, backend=self.served_by or self.config.backend, state=self.state,
            inputs=list(b.inputs) if b else [], outputs=list(b.outputs) if b else [],
            max_batch=b.max_batch if b else 0, error=self.error,
        )


def _retire(executor: Executor, backend: Backend, retiring: set[Executor] | None = None,
            swapper: EngineSwapper | None = None) -> None:
    if swapper is not None:
        swapper.cancel()  # its build uses the backend closed below: it ends first
    executor.close()
    backend.close()
    if retiring is not None:
        retiring.discard(executor)


def retire_in_background(executor: Executor, backend: Backend, name: str, retiring: set[Executor],
                         swapper: EngineSwapper | None = None) -> None:
    """Close a replaced or unloaded executor once its queued requests have run, on its own
    thread (the socket loop never waits for a queue to drain or a build to stop); `retiring`
    keeps it in sight of a stop until then."""
    retiring.add(executor)
    threading.Thread(target=_retire, args=(executor, backend, retiring, swapper), daemon=True,
                     name=f"trtd-retire-{name}").start()


def discard(model: ServedModel | EngineReady) -> None:
    """Close a model (or a swap's engine) that was never served."""
    if model.executor is not None:
        model.executor.close()
    if model.backend is not None:
        model.backend.close()


def retire(model: ServedModel, retiring: set[Executor]) -> None:
    """Close a model that is no longer served without making the socket loop wait: its queued
    requests drain and its engine build stops on a thread of their own; an inline executor with
    no build has nothing running and closes now."""
    swapper, model.swapper = model.swapper, None
    if model.executor is None or model.backend is None:
        if swapper is not None:
            swapper.cancel(wait=False)  # nothing of its model is left to close after it
        return
    if model.executor.inline and swapper is None:
        discard(model)
    else:
        retire_in_background(model.executor, model.backend, model.name, retiring, swapper)


# The largest tensor a model may declare: beyond it, sizes stop being exact in a double (and a
# client in JavaScript or a JSON log would round them) long before any machine could hold one;
# a model declaring more has a wrong shape, e.g. a dimension of 2**62.
MAX_TENSOR_BYTES = 2**53


def io_problem(backend: Backend) -> str | None:
    """Why the model's inputs and outputs cannot be served as declared, or None."""
    for kind, specs in (("input", backend.inputs), ("output", backend.outputs)):
        for spec in specs:
            if spec.max_nbytes > MAX_TENSOR_BYTES:
                return (f"{kind} {spec.name!r} declares {spec.dtype}{list(spec.shape)}: "
                        f"{spec.max_nbytes} bytes at its largest (max_batch {backend.max_batch}), "
                        f"more than any region can hold (limit {MAX_TENSOR_BYTES}); fix the model's "
                        f"shape or lower max_batch")
    return None


def model_io(model: ServedModel, backend: Backend) -> None:
    model.inputs = {s.name: (s, np.dtype(s.dtype)) for s in backend.inputs}
    model.outputs = {s.name: (s, np.dtype(s.dtype)) for s in backend.outputs}


class ModelRegistry:
    def __init__(self, completions: CompletionQueue, pinning: HostPinning):
        self._models: dict[str, ServedModel] = {}
        self.completions = completions
        self.pinning = pinning
        self.streams = cuda.StreamPool()
        self._create_lock = threading.Lock()
        self._retiring: set[Executor] = set()  # replaced executors still finishing their requests
        self.builds = BuildCounts()  # the background engine builds, for the metrics endpoint

    def __iter__(self) -> Iterator[ServedModel]:
        return iter(list(self._models.values()))

    def names(self) -> list[str]:
        return list(self._models)

    def load(self, config: ModelConfig) -> ServedModel:
        """Load now (on the caller's thread) and serve it; a failure is kept as a failed model."""
        if config.name in self._models:
            raise ProtocolError(
                ErrorCode.LOAD_FAILED,
                f"a model named {config.name!r} is already loaded; unload it first",
            )
        model = self.create(config)
        self._install(model)
        return model

    def add_loading(self, config: ModelConfig) -> ServedModel:
        """A placeholder in state "loading", shown by status until create() has finished."""
        placeholder = ServedModel(config=config, backend=None, state="loading")
        self._models[config.name] = placeholder
        return placeholder

    def create(self, config: ModelConfig) -> ServedModel:
        """Build a model without serving it yet (safe on a loader thread: touches no registry)."""
        with self._create_lock:  # one load at a time: they share the stream pool and the GPU
            return self._create(config)

    def _create(self, config: ModelConfig) -> ServedModel:
        try:
            plan = plan_serving(config)  # how it is served: the one place that decides
            backend = open_first(config, plan)
            try:
                instances = make_instances(backend, config.instances, self.pinning, self.streams,
                                           config.gpu_wait)
                try:
                    executor, batching = make_executor(config, backend, instances, self.completions,
                                                       self.pinning)
                except BaseException:
                    for instance in instances:
                        instance.close()
                    raise
            except BaseException:
                backend.close()
                raise
        except Exception as exc:  # any model's failure is that model's, never the daemon's
            reason = str(exc)
            if not isinstance(exc, (BackendError, CudaError, ImportError, ValueError, OSError)):
                log.exception("model %s: unexpected error while loading", config.name)
                reason = f"{type(exc).__name__}: {exc}"
            log.error("model %s failed to load: %s", config.name, reason)
            return ServedModel(config=config, backend=None, state="failed", error=reason)
        problem = io_problem(backend)
        if problem:  # the model's own declaration: every description of it would fail to encode
            executor.close()
            backend.close()
            log.error("model %s failed to load: %s", config.name, problem)
            return ServedModel(config=config, backend=None, state="failed", error=problem)
        model = ServedModel(config=config, backend=backend, state="ready", executor=executor,
                            served_by=backend.kind, source=plan.source, batching=batching)
        model_io(model, backend)
        log.info("model %s ready (%s, %s)", config.name, backend.kind, config.path)
        return model

    def _install(self, model: ServedModel) -> None:
        """Serve a created model under its name (socket loop only)."""
        self._models[model.name] = model
        if model.source:  # ONNX first: the engine or reduced-precision variant comes later
            if model.config.swap == "auto":
                model.build = "queued"
                model.swapper = EngineSwapper(model, model.source, self)
                model.swapper.start()
            else:
                model.build = "off (swap = \"off\")"

    def finish_loading(self, placeholder: ServedModel, model: ServedModel) -> bool:
        """Put a model created in the background in its placeholder's place (socket loop only).

        False (and the model closed) when the placeholder is gone: unloaded, or the daemon
        is stopping.
        """
        if self._models.get(placeholder.name) is not placeholder:
            discard(model)
            return False
        self._install(model)
        return True

    def finish_replacing(self, model: ServedModel) -> bool:
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

    def swap(self, item: EngineReady) -> None:
        """Put a compared engine in place of ONNX Runtime (socket loop only, between requests)."""
        model: ServedModel = item.model
        if self._models.get(model.name) is not model:  # unloaded while it was built
            item.executor.close()
            item.backend.close()
            return
        old_executor, old_backend = model.executor, model.backend
        if old_executor is None or old_backend is None:  # only a served model has a swapper
            raise RuntimeError(f"model {model.name!r} has no backend to swap out")
        model.backend, model.executor = item.backend, item.executor
        model.served_by, model.engine = item.served_by, item.engine
        model.batching = item.batching
        model_io(model, item.backend)
        model.build = f"serving engine {item.engine}"
        model.swapper = None
        if old_executor.inline:
            old_executor.close()  # nothing runs on it: inline requests are done by now
            old_backend.close()
        else:
            retire_in_background(old_executor, old_backend, model.name, self._retiring)
        log.info("model %s now served by %s engine %s", model.name, item.served_by, item.engine)

    def get(self, name: str) -> ServedModel:
        model = self._models.get(name)
        if model is None:
            known = ", ".join(self._models) or "none"
            raise ProtocolError(
                ErrorCode.UNKNOWN_MODEL,
                f"no model named {name!r}; loaded models: {known}",
                {"models": list(self._models)},
            )
        return model

    def get_ready(self, name: str) -> ServedModel:
        model = self.get(name)
        if model.state == "loading":
            raise ProtocolError(
                ErrorCode.MODEL_NOT_READY,
                f"model {name!r} is still loading; retry shortly (`trtd status` shows it)",
                {"state": "loading"},  # the SDK waits for it, as for a model it describes
            )
        if model.state != "ready":
            raise ProtocolError(
                ErrorCode.MODEL_NOT_READY,
                f"model {name!r} is {model.state}: {model.error or 'not ready yet'}",
            )
        return model

    def unload(self, name: str, wait: bool = True, background: bool = False) -> bool:
        """Stop serving `name`. background: return at once, its queued requests finishing (and
        being answered) and its build stopping on their own thread (the `unload` op, a reload:
        the socket loop must not wait for a queue of long requests). Otherwise close it here;
        False when wait=False left a running request's model open (see Executor.close)."""
        model = self.get(name)
        del self._models[name]
        if background:
            retire(model, self._retiring)
            return True
        if model.swapper is not None:
            model.swapper.cancel()  # stops the build; it uses the backend closed below
        if model.executor is not None and not model.executor.close(wait):  # waits for its requests
            return False
        if model.backend is not None:
            model.backend.close()
        return True

    def executors(self) -> list[Executor | BatchingExecutor]:
        """Every executor that may hold requests: the served models' and the replaced ones'."""
        served = [model.executor for model in self._models.values() if model.executor is not None]
        return served + list(self._retiring)

    def close_all(self, wait: bool = True) -> list[str]:
        """Unload everything; the names of the models left open because wait=False and a
        request of theirs still runs."""
        left_open = [name for name in list(self._models) if not self.unload(name, wait)]
        self.streams.close()  # the free streams only: open instances keep theirs
        return left_open
