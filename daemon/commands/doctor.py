"""`trtd doctor [--config PATH]`: what this machine has for trtd, judged by what the models need.

A CPU-only machine is a supported set-up: the GPU parts (cuda-python, an NVIDIA driver, TensorRT,
torch) are optional, and their absence fails the check only when a configured model needs them
(`device >= 0`, or `backend = "tensorrt"` with an engine to build or run on this machine). The
models are those of `--config PATH`, else of the default config file (`trtd config paths`), else
`trtd serve`'s default: the built-in demo model on ONNX Runtime.

Support matrix (what trtd is written for; the README says what was verified where):
  - TensorRT 10.x with CUDA 12 (driver R525+), TensorRT 11.x with CUDA 13 (driver R580+);
  - the lean runtime (`tensorrt-lean-cu12` / `-cu13`) runs version-compatible engines only;
  - TensorRT for RTX 1.x (`tensorrt-rtx-cu13`, CUDA 13, driver R580+): builds without a GPU,
    runs on RTX GPUs (compute capability 7.5, 8.0, 8.6, 8.9, 12.0, 12.1) only;
  - cuda-python 12.x or 13.x matching the driver's CUDA major;
  - ONNX Runtime (CPU, or onnxruntime-gpu for its CUDA/TensorRT providers).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trtd.daemon.config.settings import ModelConfig

# The optional parts a model can need. "gpu": cuda-python, a driver and a device. TENSORRT_BUILD:
# a builder of either library (engine_library = "auto"); FULL_BUILD, RTX_BUILD: that library's.
GPU, TENSORRT, TENSORRT_BUILD, ONNXRUNTIME, TORCH = "gpu", "tensorrt", "tensorrt-build", "onnxruntime", "torch"
FULL_BUILD, RTX, RTX_BUILD = "tensorrt-full-build", "tensorrt-rtx", "tensorrt-rtx-build"


@dataclass
class Check:
    name: str
    ok: bool | None  # None: informational (or an optional part no model needs)
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Need:
    """One part one configured model needs, and why (for the message when it is missing)."""

    part: str
    model: str
    why: str

    def text(self) -> str:
        return f"model '{self.model}' ({self.why})"


@dataclass
class Probe:
    """What this machine has of the parts in `answers` (the needs this probe is judged by)."""

    name: str
    answers: tuple[str, ...]
    provides: tuple[str, ...]   # of `answers`, what is here
    detail: str
    fix: str = ""               # for what is missing of `answers`
    required: bool = False      # needed whatever the models (e.g. /dev/shm)
    is_device: bool = False     # a GPU found (not only the software for one)


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


# -- what the models need --------------------------------------------------------------------------


def _tensorrt_use(m: ModelConfig) -> str | None:
    """TENSORRT_BUILD, TENSORRT (run an engine file) or None for a model config."""
    if m.backend != "tensorrt":
        return None
    from trtd.daemon.config.settings import BUILTIN_PREFIX

    if not (m.path.startswith(BUILTIN_PREFIX) or m.path.lower().endswith(".onnx")):
        return TENSORRT
    # From ONNX: served by ONNX Runtime first; an engine is built here unless the swap is off or
    # the "engine" is ONNX Runtime's optimized model (no GPU, no TensorRT).
    if m.swap == "off" or m.engine_builder != "tensorrt":
        return None
    return TENSORRT_BUILD


def _engine_library(m: ModelConfig) -> str:
    """The configured library; for an engine file under "auto", the one its metadata names."""
    if m.engine_library != "auto" or _tensorrt_use(m) != TENSORRT:
        return m.engine_library
    from trtd.daemon.engines.library import library_of_engine

    return library_of_engine(m.path)


def model_needs(m: ModelConfig) -> list[Need]:
    needs = []
    tensorrt = _tensorrt_use(m)
    library = _engine_library(m) if tensorrt else ""
    if m.device >= 0:
        needs.append(Need(GPU, m.name, f"device {m.device}"))
    elif tensorrt:
        needs.append(Need(GPU, m.name, "backend tensorrt"))
    if tensorrt == TENSORRT:
        needs.append(Need(RTX, m.name, "runs a TensorRT-RTX engine") if library == "tensorrt-rtx"
                     else Need(TENSORRT, m.name, "runs a TensorRT engine"))
    elif tensorrt == TENSORRT_BUILD:
        part = {"tensorrt": FULL_BUILD, "tensorrt-rtx": RTX_BUILD}.get(library, TENSORRT_BUILD)
        needs.append(Need(part, m.name, "its TensorRT engine is built here"))
    if m.backend == "torch":
        needs.append(Need(TORCH, m.name, "backend torch"))
    elif tensorrt != TENSORRT:
        needs.append(Need(ONNXRUNTIME, m.name, "served by ONNX Runtime"))
    return needs


def default_config_path() -> Path | None:
    """The config `trtd serve` would be pointed at by a service: the user's, else the system's."""
    from trtd.daemon.system import platform as trtd_platform

    for scope in ("user", "system"):
        candidate = Path(trtd_platform.config_path(scope))
        if candidate.exists():
            return candidate
    return None


def configured_needs(config_path: str | None) -> tuple[Check, list[Need]]:
    """A line saying which models were judged, and what they need."""
    from trtd.daemon.config.settings import ConfigError, ModelConfig, load_config

    path = Path(config_path) if config_path else default_config_path()
    if path is None:
        demo = ModelConfig(name="demo", path="builtin:demo")
        return (Check("config", None, "no config file: judged for `trtd serve`'s default (the demo "
                                      "model on ONNX Runtime)"), model_needs(demo))
    try:
        models = load_config(path).models
    except (ConfigError, OSError) as exc:
        return Check("config", False, f"{path}: {exc}", f"trtd config check {path}"), []
    needs = [need for m in models for need in model_needs(m)]
    on_gpu = sorted({n.model for n in needs if n.part == GPU})
    detail = (f"{path}: {len(models)} model(s)" +
              (f", on a GPU: {', '.join(on_gpu)}" if on_gpu else ", all on the CPU"))
    return Check("config", None, detail), needs


# -- what the machine has --------------------------------------------------------------------------


def _has(present: bool, *parts: str) -> tuple[str, ...]:
    return parts if present else ()


def probe_gpu() -> list[Probe]:
    from trtd.daemon.system import cuda

    fix = 'pip install "trtd[cuda]" and the NVIDIA driver (R580+ for CUDA 13, R525+ for CUDA 12)'
    if not cuda.available():
        return [Probe("cuda-python", (GPU,), (), "not installed", fix)]
    try:
        v = cuda.versions()
        if v["driver"] == 0:
            raise cuda.CudaError("no NVIDIA driver is installed (cudaDriverGetVersion reports 0)")
        count = cuda.device_count()
        probes = [Probe("cuda-python", (GPU,), _has(count > 0, GPU),
                        f"driver supports CUDA {v['driver'] // 1000}.{v['driver'] % 1000 // 10}, "
                        f"runtime {v['runtime'] // 1000}.{v['runtime'] % 1000 // 10}"
                        + ("" if count else "; the driver sees no GPU"), fix)]
        for i in range(count):
            props = cuda.device_properties(i)
            free, total = cuda.memory_info(i)
            probes.append(Probe(f"gpu {i}", (GPU,), (GPU,),
                                f"{props['name']}, compute capability {props['major']}.{props['minor']}, "
                                f"{free / 2**30:.1f} of {total / 2**30:.1f} GiB free", is_device=True))
        return probes
    except cuda.CudaError as exc:
        return [Probe("cuda", (GPU,), (), str(exc), fix)]


def _driver_cuda_major() -> int | None:
    from trtd.daemon.system import cuda

    try:
        return cuda.versions()["driver"] // 1000 if cuda.available() else None
    except cuda.CudaError:
        return None


def probe_tensorrt() -> Probe:
    from trtd.daemon.engines.trt import TensorRTUnavailable, import_tensorrt

    answers = (TENSORRT, TENSORRT_BUILD, FULL_BUILD)
    try:
        trt = import_tensorrt()
    except TensorRTUnavailable:
        return Probe("tensorrt", answers, (), "not installed",
                     'pip install "trtd[tensorrt-lean]" to run version-compatible engines, the full '
                     "tensorrt package (NVIDIA's index) to build them")
    driver_major = _driver_cuda_major()
    # Drivers run older CUDA versions too: only a TensorRT 11 on a pre-CUDA-13 driver is a problem.
    if driver_major is not None and trt.major >= 11 and driver_major < 13:
        return Probe("tensorrt", answers, (), f"{trt.version} ({trt.flavor}) on a CUDA "
                     f"{driver_major} driver", "TensorRT 11 needs a CUDA 13 driver (R580+): update the driver")
    if trt.can_build:
        return Probe("tensorrt", answers, answers, f"{trt.version} ({trt.flavor}, can build)")
    return Probe("tensorrt", answers, (TENSORRT,), f"{trt.version} ({trt.flavor}, runtime only)",
                 "building engines needs the full tensorrt package (NVIDIA's index); or set "
                 'engine_builder = "onnxruntime" or swap = "off" for the model, or (RTX GPUs) '
                 'install TensorRT-RTX: pip install "trtd[rtx]"')


def probe_tensorrt_rtx() -> Probe:
    from trtd.daemon.engines.library import RTX_INSTALL, RTX_TARGETS
    from trtd.daemon.engines.trt import TensorRTUnavailable, import_tensorrt

    answers = (RTX, RTX_BUILD, TENSORRT_BUILD)
    try:
        rtx = import_tensorrt(prefer="rtx")
    except TensorRTUnavailable:
        return Probe("tensorrt-rtx", answers, (), "not installed", f"{RTX_INSTALL}; it runs on RTX GPUs only")
    detail = (f"{rtx.version} ({rtx.cuda_build or 'CUDA ?'}): builds without a GPU; runs on "
              f"{', '.join(RTX_TARGETS)} only")
    driver_major = _driver_cuda_major()
    if driver_major is not None and rtx.cuda_build == "cu13" and driver_major < 13:
        return Probe("tensorrt-rtx", answers, (RTX_BUILD, TENSORRT_BUILD), f"{detail}; CUDA {driver_major} driver",
                     "TensorRT-RTX for CUDA 13 runs on a CUDA 13 driver (R580+): update the driver, or "
                     "install tensorrt-rtx-cu12")
    return Probe("tensorrt-rtx", answers, answers, detail)


def probe_onnxruntime() -> Probe:
    if not (_version("onnxruntime") or _version("onnxruntime-gpu")):
        return Probe("onnxruntime", (ONNXRUNTIME,), (), "not installed", 'pip install "trtd[onnx]"')
    import onnxruntime

    return Probe("onnxruntime", (ONNXRUNTIME,), (ONNXRUNTIME,), f"{onnxruntime.__version__}, "
                 f"providers: {', '.join(onnxruntime.get_available_providers())}")


def probe_torch() -> Probe:
    version = _version("torch")
    return Probe("torch", (TORCH,), _has(version is not None, TORCH), version or "not installed",
                 'pip install "trtd[torch]"')


def probe_shm() -> list[Probe]:
    if not os.path.isdir("/dev/shm"):
        return []
    usage = shutil.disk_usage("/dev/shm")
    return [Probe("/dev/shm", ("shm",), _has(usage.free > 1 << 30, "shm"),
                  f"{usage.free / 2**30:.1f} of {usage.total / 2**30:.1f} GiB free",
                  "enlarge it (mount -o remount,size=8G /dev/shm); regions live there", required=True)]


def probe_machine() -> list[Probe]:
    probes = probe_gpu() + [probe_tensorrt(), probe_tensorrt_rtx(), probe_onnxruntime(), probe_torch()]
    if sys.platform == "win32":
        from trtd.service.tdr import describe_tdr

        ok, detail = describe_tdr()
        # A GPU watchdog that resets long kernels matters only for GPU models.
        probes.append(Probe("gpu watchdog", (GPU,), _has(ok is not False, GPU), detail,
                            detail.split(". ", 1)[-1]))
    return probes + probe_shm()


# -- the verdict -----------------------------------------------------------------------------------


def judge(probe: Probe, needs: list[Need], provided: set[str] | None = None) -> Check:
    """A probe as a check: what is missing fails only when a configured model needs it and no
    other probe provides it (`provided`: what all probes provide; a TensorRT builder, say, is
    either library's)."""
    provided = set(probe.provides) if provided is None else provided
    unmet = [n for n in needs if n.part in probe.answers and n.part not in provided]
    if unmet:
        return Check(probe.name, False, probe.detail,
                     f"needed by {', '.join(n.text() for n in unmet)}: {probe.fix}")
    if probe.required and set(probe.provides) != set(probe.answers):
        return Check(probe.name, False, probe.detail, probe.fix)
    if probe.provides:
        return Check(probe.name, True, probe.detail)
    return Check(probe.name, None, f"{probe.detail} (optional: no configured model needs it)")


def run_checks(config_path: str | None = None) -> list[Check]:
    checks = [Check("os", None, f"{platform.system()} {platform.release()} ({platform.machine()}), "
                                f"Python {platform.python_version()}")]
    config_check, needs = configured_needs(config_path)
    checks.append(config_check)
    probes = probe_machine()
    provided = {part for probe in probes for part in probe.provides}
    checks += [judge(probe, needs, provided) for probe in probes]
    checks += library_checks(config_path)
    checks.append(zeromq_check())
    gpu_present = any(probe.is_device for probe in probes)
    checks.append(verdict(checks, needs, gpu_present))
    return checks


def zeromq_check() -> Check:
    """The libzmq the daemon and the SDK run on (informational): the daemon reads its socket as
    a ZMQ_STREAM and speaks ZMTP 3 itself, so no libzmq ROUTER bug is reachable from a peer."""
    import zmq

    return Check("zeromq", None, f"libzmq {zmq.zmq_version()} (pyzmq {zmq.__version__}); the "
                                 "daemon speaks ZMTP 3.1 itself over a STREAM socket")


def library_checks(config_path: str | None) -> list[Check]:
    """Per model with a TensorRT engine: the library that builds or runs it here, and why; a
    failure says exactly what this GPU lacks (a Hopper GPU with only TensorRT-RTX, say)."""
    from trtd.daemon.config.settings import ConfigError, load_config
    from trtd.daemon.engines import library as libraries

    path = Path(config_path) if config_path else default_config_path()
    try:
        models = load_config(path).models if path else []
    except (ConfigError, OSError):
        return []  # the config line says why already
    have, checks = libraries.installed(), []
    for m in models:
        use = _tensorrt_use(m)
        if use is None:
            continue
        gpu = libraries.gpu_of(max(m.device, 0))
        choice = libraries.choose(_engine_library(m), gpu, have, build=use == TENSORRT_BUILD, run=True)
        checks.append(Check("library", not choice.problem, f"model '{m.name}': {choice.text()}", choice.problem))
    return checks


def verdict(checks: list[Check], needs: list[Need], gpu_present: bool) -> Check:
    if any(c.ok is False for c in checks):
        return Check("verdict", False, "what the configured models need is missing (see above)")
    if not gpu_present and not any(n.part == GPU for n in needs):
        return Check("verdict", True, "CPU-only: OK (no configured model needs a GPU)")
    return Check("verdict", True, "OK")


def print_checks(checks: list[Check]) -> None:
    for c in checks:
        mark = {True: "ok  ", False: "FAIL", None: "    "}[c.ok]
        print(f"{mark} {c.name:<12} {c.detail}")
        if c.ok is False and c.fix:
            print(f"     {'':<12} -> {c.fix}")


def add_parser(sub) -> None:
    p = sub.add_parser("doctor", help="check this machine for what the configured models need: "
                                      "driver, CUDA, TensorRT, ONNX Runtime, /dev/shm")
    p.add_argument("--config", metavar="PATH",
                   help="judge for this config's models (default: the default config file, else "
                        "the demo model `trtd serve` starts with)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace | None = None) -> int:
    config_path = getattr(args, "config", None)
    if config_path and not Path(config_path).is_file():
        print(f"trtd doctor: {config_path} does not exist", file=sys.stderr)
        return 2
    checks = run_checks(config_path)
    print_checks(checks)
    return 0 if all(c.ok is not False for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
