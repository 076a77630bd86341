"""First deployment on ONNX Runtime, then the engine: build, compare, swap, in the background.

A model configured for TensorRT with an ONNX path is served by ONNX Runtime at
once. A background thread builds the engine (or takes it from the cache) in a
spawned process, loads it, and compares it with ONNX Runtime on seeded
samples. Only a passing engine is handed to the socket loop, which swaps it in
between two requests: no request fails or waits for the build. A failed build
or comparison leaves the model on ONNX Runtime, with the reason in status.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, replace

from . import cuda
from .backends import Backend, BackendError
from .compare import compare
from .cuda import CudaError
from .engines.build import BuildJob, build
from .engines.builders import BuildError
from .engines.cache import CacheError
from .engines.fingerprint import BuildOptions
from .engines.profiles import ProfileError, parse_profiles
from .engines.trt import TensorRTUnavailable, import_tensorrt
from .instances import make_instances
from .scheduler import Executor

log = logging.getLogger("trtd.swap")


@dataclass
class Swap:
    """A compared, ready engine for `model`, to be put in place by the socket loop."""

    model: object
    backend: Backend
    executor: Executor
    serving: str
    engine: str


def build_options(config) -> BuildOptions:
    groups = [spec.split(";") for spec in config.profiles]
    return BuildOptions(profiles=tuple(parse_profiles(groups)), workspace_bytes=config.workspace_mib * 2**20,
                        optimization_level=config.opt_level,
                        hardware_compatible=config.hardware_compatible,
                        version_compatible=config.version_compatible)


class EngineSwapper(threading.Thread):
    def __init__(self, model, onnx_path: str, registry):
        super().__init__(name=f"trtd-build-{model.name}", daemon=True)
        self.model = model
        self.onnx_path = onnx_path
        self.registry = registry

    def run(self) -> None:
        model, config = self.model, self.model.config
        try:
            model.build = "building"
            options = build_options(config)
            if config.engine_builder == "tensorrt":
                import_tensorrt(prefer="full")  # no builder here: say so before touching the GPU
            if config.engine_builder == "tensorrt" and not options.workspace_bytes:
                # The daemon is serving from this GPU: the builder may take a quarter of what is free.
                free, _ = cuda.memory_info(max(config.device, 0))
                options = replace(options, workspace_bytes=free // 4)
            job = BuildJob(model=config.name, onnx_path=self.onnx_path, options=options,
                           builder=config.engine_builder, device=max(config.device, 0))
            entry, built = build(job, log=lambda line: log.info("build %s: %s", config.name, line))
            model.build = "comparing"
            candidate = self._load(entry.engine_path)
            try:
                instances = make_instances(candidate, config.instances, self.registry.pinning,
                                           self.registry.streams)
                result = compare(model.backend, instances[0], config.compare_samples,
                                 config.compare_atol, config.compare_rtol, self.registry.pinning)
            except BaseException:
                candidate.close()
                raise
            if not result.ok:
                for instance in instances:
                    instance.close()
                candidate.close()
                model.build = f"rejected: {result.summary()}"
                log.warning("model %s: engine %s rejected: %s", config.name, entry.fingerprint,
                            result.summary())
                return
            executor = Executor(config.name, instances, config.max_queue, self.registry.completions)
            kind = "tensorrt" if config.engine_builder == "tensorrt" else "onnxruntime-optimized"
            log.info("model %s: engine %s passed (%s); swapping", config.name, entry.fingerprint,
                     result.summary())
            model.build = f"passed: {result.summary()}"
            self.registry.completions.put(Swap(model, candidate, executor, kind, entry.fingerprint))
        except TensorRTUnavailable as exc:
            model.build = f"unavailable: {exc}"
        except (BuildError, CacheError, ProfileError, BackendError, CudaError, ImportError, OSError,
                ValueError) as exc:
            model.build = f"failed: {exc}"
            log.error("model %s: engine build failed: %s", config.name, exc)
        except Exception as exc:  # never let a build take the daemon down
            model.build = f"failed: {type(exc).__name__}: {exc}"
            log.exception("model %s: engine build failed", config.name)

    def _load(self, path) -> Backend:
        config = self.model.config
        if config.engine_builder == "onnxruntime":
            from .backends.onnxruntime import OnnxRuntimeBackend

            return OnnxRuntimeBackend(path, max_batch=self.model.backend.max_batch,
                                      intra_op_threads=config.intra_op_threads)
        from .backends.tensorrt import TensorRTBackend

        return TensorRTBackend(path, device=max(config.device, 0), max_batch=config.max_batch,
                               allow_host_code=config.allow_engine_host_code)
