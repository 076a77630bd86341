"""One build, end to end: fingerprint, cache lookup, lock, spawned build process, atomic store.

`trtd build` and the daemon use this same path.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from trtd.daemon.engines.builders import ARTIFACT_SUFFIX, BuildError
from trtd.daemon.engines.cache import CacheEntry, EngineCache
from trtd.daemon.engines.progress import HEARTBEAT_S, PROGRESS, is_progress
from trtd.daemon.engines.fingerprint import (BuildEnvironment, BuildOptions, family, file_sha256,
                                             fingerprint, fingerprint_inputs, options_to_json)


@dataclass
class BuildJob:
    model: str
    onnx_path: str
    options: BuildOptions = field(default_factory=BuildOptions)
    builder: str = "tensorrt"            # "tensorrt-rtx", or "onnxruntime" (an optimized ONNX model)
    cache_root: str | None = None        # default: the user's trtd cache
    timing_cache: str | None = None      # default: <cache>/timing-<environment>.cache
    device: int = 0
    # A workspace ceiling that is not part of the engine's identity (the daemon caps builds
    # at a share of the GPU's free memory, which differs at every start).
    workspace_cap_bytes: int = 0
    # TensorRT-RTX: the GPU that will run the engine ("sm86"), when known. A cached engine of the
    # same model and options whose targets include it is used instead of building another.
    gpu_target: str = ""


def build_environment(builder: str, device: int = 0) -> BuildEnvironment:
    """What the build targets; for TensorRT, read from the GPU and the installed library; for
    TensorRT-RTX, its version alone (its engines run on every GPU of their targets)."""
    if builder == "tensorrt-rtx":
        from trtd.daemon.engines.trt import import_tensorrt

        rtx = import_tensorrt(prefer="rtx")
        version = f"{rtx.version} {rtx.cuda_build}".strip()
        return BuildEnvironment(tensorrt_version=version, gpu_name="any", compute_capability="targets",
                                os="any")
    if builder == "onnxruntime":
        import onnxruntime

        return BuildEnvironment(tensorrt_version=f"onnxruntime-{onnxruntime.__version__}",
                                gpu_name="cpu", compute_capability="-", os=platform.system())
    from trtd.daemon.system import cuda
    from trtd.daemon.engines.trt import import_tensorrt

    trt = import_tensorrt(prefer="full")
    props = cuda.device_properties(device)
    return BuildEnvironment(tensorrt_version=trt.version, gpu_name=props["name"],
                            compute_capability=f"{props['major']}.{props['minor']}",
                            os=platform.system(), driver_major=cuda.versions()["driver"] // 1000)


def default_cache_root() -> str:
    from trtd.daemon.builtin.onnx_models import default_cache_dir

    return str(default_cache_dir())


def build(job: BuildJob, log: Callable[[str], None] = lambda m: None,
          env: BuildEnvironment | None = None, on_start=None) -> tuple[CacheEntry, bool]:
    """(cache entry, built now?) — a cached engine for the same fingerprint is reused.

    on_start(proc) receives the build process (so that a caller can cancel it).
    """
    if not Path(job.onnx_path).is_file():
        raise BuildError(f"{job.onnx_path} does not exist")
    for plugin in job.options.plugins:
        if not Path(plugin).is_file():
            raise BuildError(f"plugin library {plugin} does not exist; give the path of the shared "
                             f"library that implements the model's custom ops")
    rtx = job.builder == "tensorrt-rtx"
    if rtx != bool(job.options.targets):
        raise BuildError("target compute capabilities apply to TensorRT-RTX builds, which need them")
    env = env or build_environment(job.builder, job.device)
    onnx_sha = onnx_sha256(job.onnx_path)
    inputs = fingerprint_inputs(onnx_sha, env, job.options)
    fp = fingerprint(onnx_sha, env, job.options)
    cache = EngineCache(job.cache_root or default_cache_root())
    suffix = ARTIFACT_SUFFIX[job.builder]
    entry = _cached(cache, fp, suffix, family(inputs) if rtx else "", job.gpu_target)
    if entry is not None:
        log(f"cached: {entry.engine_path}")
        return entry, False
    with cache.building(fp):
        # Another process may have built it while we waited.
        entry = cache.lookup(fp, repair=True, suffix=suffix)
        if entry is not None:
            return entry, False
        timing_cache = "" if rtx else job.timing_cache or str(
            cache.dir / f"timing-{_safe(env.gpu_name)}-{_safe(env.tensorrt_version)}.cache")
        data, seconds, info = _run_worker(job, timing_cache, log, on_start)
        metadata = {"builder": job.builder, "onnx_path": str(Path(job.onnx_path).resolve()),
                    "build_seconds": round(seconds, 3), "depends_on": inputs, **info}
        if job.builder != "onnxruntime":
            metadata["library"] = "tensorrt-rtx" if rtx else "tensorrt"
        if rtx:
            metadata.update(targets=list(job.options.targets), family=family(inputs))
        return cache.store(job.model, fp, data, metadata, suffix=suffix), True


def _cached(cache: EngineCache, fp: str, suffix: str, family_fp: str, gpu_target: str) -> CacheEntry | None:
    """This fingerprint's entry; for TensorRT-RTX, else one of its family built for the GPU."""
    entry = cache.lookup(fp, suffix=suffix)
    if entry is None and family_fp and gpu_target:
        entry = cache.find_compatible(family_fp, gpu_target)
    return entry


def onnx_sha256(path: str) -> str:
    """The ONNX file's hash, and its external weight files' (a new .data file is a new model)."""
    digest_parts = [file_sha256(path)]
    try:
        import onnx

        model = onnx.load(path, load_external_data=False)
        locations = sorted({entry.value for tensor in model.graph.initializer
                            for entry in tensor.external_data if entry.key == "location"})
    except Exception:  # not loadable here: the builder will say why
        locations = []
    for location in locations:
        external = Path(path).parent / location
        digest_parts.append(f"{location}:{file_sha256(external) if external.is_file() else 'missing'}")
    return digest_parts[0] if len(digest_parts) == 1 else hashlib.sha256(
        "\n".join(digest_parts).encode()).hexdigest()


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def _run_worker(job: BuildJob, timing_cache: str, log: Callable[[str], None],
                on_start=None) -> tuple[bytes, float, dict]:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="trtd-build-") as tmp:
        output = os.path.join(tmp, "engine.bin")
        spec = os.path.join(tmp, "job.json")
        with open(spec, "w", encoding="utf-8") as f:
            json.dump({"builder": job.builder, "onnx": str(job.onnx_path), "output": output,
                       "timing_cache": timing_cache, "options": options_to_json(job.options),
                       "workspace_cap_bytes": job.workspace_cap_bytes}, f)
        # The build sees only its GPU (as device 0): the engine is built for the device it is for.
        env = dict(os.environ, CUDA_VISIBLE_DEVICES=str(job.device))
        proc = subprocess.Popen([sys.executable, "-m", "trtd.daemon.engines.worker", spec],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        if on_start is not None:
            on_start(proc)
        stdout, lines = _relay(proc, log, started)
        result = _last_json(stdout)
        if proc.returncode != 0 or not result.get("ok"):
            said = [line for line in lines if not is_progress(line)]
            reason = result.get("error") or (said or ["no output"])[-1]
            raise BuildError(f"building {job.model} failed (exit {proc.returncode}): {reason}")
        return Path(output).read_bytes(), time.monotonic() - started, result.get("info") or {}


def _relay(proc: subprocess.Popen, log: Callable[[str], None], started: float) -> tuple[str, list[str]]:
    """The build's stdout, and its stderr lines, each passed to `log` as it comes (a build takes
    minutes: whoever waits sees its phases then, not at the end); while it says nothing for
    HEARTBEAT_S, a progress line with the time it has taken so far."""
    lines: list[str] = []
    heard = [time.monotonic()]

    def read_stderr() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            line = line.rstrip("\n")
            lines.append(line)
            heard[0] = time.monotonic()
            log(line)

    reader = threading.Thread(target=read_stderr, name="trtd-build-log", daemon=True)
    reader.start()
    assert proc.stdout is not None
    stdout_parts: list[str] = []
    stdout_reader = threading.Thread(target=lambda: stdout_parts.append(proc.stdout.read()),  # type: ignore[union-attr]
                                     name="trtd-build-out", daemon=True)
    stdout_reader.start()
    while True:
        try:
            proc.wait(timeout=1.0)
            break
        except subprocess.TimeoutExpired:
            now = time.monotonic()
            if now - heard[0] >= HEARTBEAT_S:
                heard[0] = now
                log(f"{PROGRESS}still building, {now - started:.0f} s so far")
    reader.join()
    stdout_reader.join()
    return "".join(stdout_parts), lines


def _last_json(stdout: str) -> dict:
    for line in reversed(stdout.strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return {}
