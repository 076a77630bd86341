"""First deployment on ONNX Runtime, then the engine: build, compare, swap, in the background.

A model configured for TensorRT with an ONNX path is served by ONNX Runtime at
once. A background thread builds the engine (or takes it from the cache) in a
spawned process, loads it, and compares it with ONNX Runtime on seeded
samples. Only a passing engine is handed to the socket loop, which swaps it in
between two requests: no request fails or waits for the build. A failed build
or comparison leaves the model on ONNX Runtime, with the reason in status.
Unloading the model or stopping the daemon cancels the build (its process is
terminated) and waits for the thread.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import TYPE_CHECKING

from trtd.daemon.system import cuda
from trtd.daemon.backends import Backend, BackendError
from trtd.daemon.running.swap_gate import compare
from trtd.daemon.system.cuda import CudaError
from trtd.daemon.engines import library as libraries
from trtd.daemon.engines.build import BuildJob, build
from trtd.daemon.engines.builders import BuildError
from trtd.daemon.engines.cache import CacheError
from trtd.daemon.engines.fingerprint import BuildOptions
from trtd.daemon.engines.progress import PROGRESS, is_progress
from trtd.daemon.engines.profiles import InputRange, Profile, ProfileError, check_against_model, parse_profiles
from trtd.daemon.engines.trt import TensorRTUnavailable, import_tensorrt
from trtd.daemon.running.instances import Instance, make_instances
from trtd.daemon.running.batching import make_executor
from trtd.daemon.running.finished import EngineReady
from trtd.daemon.running.serving import Later, open_later

if TYPE_CHECKING:
    from trtd.daemon.config.settings import ModelConfig
    from trtd.daemon.running.registry import ModelRegistry, ServedModel

log = logging.getLogger("trtd.swap")


class Cancelled(Exception):
    pass


def build_options(config: ModelConfig, reference: Backend) -> BuildOptions:
    """The configured build options; without profiles, one covering batch 1..max_batch."""
    inputs = {s.name: list(s.shape) for s in reference.inputs}
    if config.profiles:
        profiles = parse_profiles([spec.split(";") for spec in config.profiles])
    elif any(d < 0 for shape in inputs.values() for d in shape[1:]):
        raise ProfileError("inputs have dynamic dimensions other than the batch: give the model's "
                           "profiles, e.g. profiles = [\"x:1x3x224x224,8x3x512x512,16x3x1024x1024\"]")
    elif any(shape and shape[0] < 0 for shape in inputs.values()):
        top = max(reference.max_batch, 1)
        opt = max(top // 2, 1)
        profiles = [Profile(tuple(InputRange(n, (1, *s[1:]), (opt, *s[1:]), (top, *s[1:]))
                                  for n, s in inputs.items()))]
    else:
        profiles = []
    check_against_model(profiles, inputs)
    return BuildOptions(profiles=tuple(profiles), workspace_bytes=config.workspace_mib * 2**20,
                        optimization_level=config.opt_level,
                        hardware_compatible=config.hardware_compatible,
                        version_compatible=config.version_compatible,
                        plugins=tuple(config.plugins),
                        # The daemon serves with the TensorRT installed here: no embedded copy
                        # (which would also need allow_engine_host_code).
                        exclude_lean_runtime=config.version_compatible)


_TOLERANCE = {"same": 1e-3, "": 1e-3, "fp16": 1e-2, "int8": 1e-1}


def source_fp(path: str) -> str:
    from trtd.daemon.engines.fingerprint import file_sha256

    return file_sha256(path)[:32]


def _profile_samples(options: BuildOptions) -> list[dict[str, tuple[int, ...]]]:
    """Each profile's opt and min shapes: the comparison covers what the engine will serve."""
    return [{r.name: getattr(r, which) for r in profile.inputs}
            for profile in options.profiles for which in ("opt", "min")]


class EngineSwapper(threading.Thread):
    def __init__(self, model: ServedModel, onnx_path: str, registry: ModelRegistry):
        super().__init__(name=f"trtd-build-{model.name}", daemon=True)
        self.model = model
        self.onnx_path = onnx_path
        self.registry = registry
        self._cancelled = threading.Event()
        self._proc = None
        self._choice: libraries.LibraryChoice | None = None  # which TensorRT, and why

    def _why(self) -> str:
        """The library choice, appended to the build states that `trtd status` shows."""
        return f" [library: {self._choice.text()}]" if self._choice else ""

    def cancel(self, wait: bool = True) -> None:
        """Stop the build (terminate its process) and wait for the thread (wait=False: a forced
        exit, which must not leave a build process running on the GPU, nor wait for it)."""
        self._cancelled.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
        if wait:
            self.join(timeout=60)

    def _build_said(self, line: str) -> None:
        """A line of the build process: its progress goes into the model's build state (`trtd
        status` shows how far it is) and into the log at DEBUG; everything else is logged."""
        if is_progress(line):
            self.model.build = f"building: {line[len(PROGRESS):]}{self._why()}"
            log.debug("build %s: %s", self.model.name, line)
        else:
            log.info("build %s: %s", self.model.name, line)

    def _check(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled()

    def _build_started(self, proc) -> None:
        self._proc = proc
        if self._cancelled.is_set():
            proc.terminate()

    def run(self) -> None:
        model, config = self.model, self.model.config
        reference = model.backend  # ONNX Runtime; it stays open until this thread has ended
        try:
            model.build = "building"
            source = self.onnx_path
            if config.precision:
                # The reduced-precision ONNX variant first (cached like engines); an engine,
                # if asked for, is then built from it.
                from trtd.daemon.precision.convert import convert

                # INT8 for a TensorRT engine keeps 8-bit weights: the engine, not ONNX Runtime on
                # this CPU, runs and is compared; anything ONNX Runtime runs is the portable one.
                engine = config.backend == "tensorrt" and config.engine_builder == "tensorrt"
                source = str(convert(source, config.precision, config.calibration or None,
                                     config.calibration_method,
                                     int8_target="tensorrt" if engine else "portable").path)
                self._check()
            if config.backend != "tensorrt":
                return self._swap_in(reference, self._open(source, "variant"), source_fp(source),
                                     f"onnxruntime-{config.precision}", [])
            options = build_options(config, reference)
            cap, builder, gpu_target = 0, config.engine_builder, ""
            if config.engine_builder == "tensorrt":
                device = max(config.device, 0)
                gpu = libraries.gpu_of(device)
                self._choice = libraries.choose(config.engine_library, gpu, libraries.installed(),
                                                build=True, run=True)
                model.build = f"building{self._why()}"
                if self._choice.problem:  # say so before building what cannot run here
                    raise TensorRTUnavailable(self._choice.problem)
                if self._choice.library == libraries.RTX and gpu is not None:
                    # Built without the GPU, for the default targets and this GPU's; an engine of
                    # the same model built elsewhere for this GPU (trtd build) is used as it is.
                    builder, gpu_target = libraries.RTX, libraries.target_of(gpu.compute_capability)
                    options = replace(options, targets=libraries.targets_for(gpu))
                else:
                    import_tensorrt(prefer="full")  # no builder here: say so before touching the GPU
                    # The daemon serves from this GPU: the build may take a quarter of what is free.
                    cap = cuda.memory_info(device)[0] // 4
            job = BuildJob(model=config.name, onnx_path=source, options=options,
                           builder=builder, device=max(config.device, 0),
                           workspace_cap_bytes=cap, gpu_target=gpu_target)
            entry, _ = self.registry.builds.run(  # counted for the metrics endpoint
                build, job, log=self._build_said, on_start=self._build_started)
            self._check()
            kind = {"tensorrt": "tensorrt", libraries.RTX: "tensorrt-rtx"}.get(builder, "onnxruntime-optimized")
            if config.precision:
                kind += f"-{config.precision}"
            candidate = self._open(str(entry.engine_path), "engine", entry.metadata.get("library", "tensorrt"))
            return self._swap_in(reference, candidate, entry.fingerprint, kind, _profile_samples(options))
        except Cancelled:
            model.build = "cancelled"
        except TensorRTUnavailable as exc:
            model.build = f"unavailable: {exc}{self._why()}"
        except (BuildError, CacheError, ProfileError, BackendError, CudaError, ImportError, OSError,
                ValueError) as exc:
            model.build = "cancelled" if self._cancelled.is_set() else f"failed: {exc}{self._why()}"
            if not self._cancelled.is_set():
                log.error("model %s: engine build failed: %s", config.name, exc)
        except Exception as exc:  # never let a build take the daemon down
            model.build = f"failed: {type(exc).__name__}: {exc}{self._why()}"
            log.exception("model %s: engine build failed", config.name)

    def _swap_in(self, reference, candidate, fingerprint: str, kind: str, shapes) -> None:
        """Compare `candidate` with `reference`; hand a passing one to the socket loop.

        Same precision: element-wise within compare_atol/rtol (default 1e-3), on seeded inputs.
        Reduced precision: relative L2 per output (default 1e-2 FP16, 0.1 INT8, or the configured
        compare_rtol), on the calibration samples when there are some: real data, not noise.
        """
        model, config = self.model, self.model.config
        instances: list[Instance] = []
        real = None
        if config.precision and config.calibration:
            from trtd.daemon.precision.samples import load_samples

            real = load_samples(config.calibration, {s.name: (s.dtype, s.shape) for s in reference.inputs})
        rel_l2 = (config.compare_rtol or _TOLERANCE[config.precision]) if config.precision else None
        tol = config.compare_atol or _TOLERANCE["same"], config.compare_rtol or _TOLERANCE["same"]
        try:
            model.build = "comparing"
            instances = make_instances(candidate, config.instances, self.registry.pinning,
                                       self.registry.streams, config.gpu_wait)
            result = compare(reference, instances[0], config.compare_samples, tol[0], tol[1],
                             self.registry.pinning, shapes or None, inputs=real, max_rel_l2=rel_l2)
            self._check()
            if not result.ok:
                model.build = f"rejected: {result.summary()}"
                log.warning("model %s: %s %s rejected: %s", config.name, kind, fingerprint, result.summary())
                return
            executor, batching = make_executor(config, candidate, instances, self.registry.completions,
                                               self.registry.pinning)
            log.info("model %s: %s %s passed (%s); swapping", config.name, kind, fingerprint,
                     result.summary())
            model.build = f"passed: {result.summary()}"
            swap = EngineReady(model, candidate, executor, kind, fingerprint, batching)
            candidate, instances = None, []  # the socket loop owns them now
            self.registry.completions.put(swap)
        finally:
            for instance in instances:
                instance.close()
            if candidate is not None:
                candidate.close()

    def _open(self, path: str, kind: Later, library: str = "tensorrt") -> Backend:
        """What the build made, opened as the model's backend would be (running/serving.py)."""
        reference = self.model.backend
        if reference is None:  # a swapper runs only for a served model
            raise BackendError(f"model {self.model.name!r} has no backend to compare with")
        return open_later(self.model.config, path, reference.max_batch, kind, library)
