"""Which TensorRT library builds and runs a model's engine: TensorRT or TensorRT for RTX.

`engine_library = "auto"` (the default) decides from what is installed and the GPU:
- no GPU: TensorRT-RTX, the one that builds without one (ahead of time, for its targets);
- a GPU whose compute capability TensorRT-RTX supports (the RTX generations): TensorRT-RTX
  where installed, else TensorRT;
- any other GPU (datacenter Hopper, Blackwell B200, ...): TensorRT.
When nothing installed suits, the choice carries the problem: what exactly is missing and what
to install. Every choice carries its reason, which `trtd status` and `trtd doctor` show.

An engine file names its library in the metadata written beside it (`<stem>.json`, as the
engine cache and `trtd build -o` write it); a file without one is taken for a TensorRT engine.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from dataclasses import dataclass
from pathlib import Path

TENSORRT, RTX = "tensorrt", "tensorrt-rtx"
LIBRARIES = (TENSORRT, RTX)
CHOICES = ("auto", *LIBRARIES)

# The compute capabilities TensorRT-RTX builds for (its ComputeCapability enum, 1.7) and runs on.
RTX_TARGETS: dict[str, str] = {"sm75": "7.5", "sm80": "8.0", "sm86": "8.6", "sm89": "8.9",
                               "sm120": "12.0", "sm121": "12.1"}
# Ampere (the product's RTX 30xx, 8.6), Ada (8.9) and Blackwell (12.0). Turing (sm75) only on
# request: TensorRT-RTX's documentation advises a separate engine for it (it costs the others).
DEFAULT_RTX_TARGETS = ("sm86", "sm89", "sm120")
RTX_INSTALL = 'pip install "trtd[rtx]" (tensorrt-rtx-cu13, from PyPI)'
TENSORRT_INSTALL = "pip install tensorrt, from NVIDIA's package index"


class TargetError(ValueError):
    pass


def parse_targets(text: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """'sm86,sm89' (or a list) -> ('sm86', 'sm89'): known targets, sorted by compute capability."""
    items = text.split(",") if isinstance(text, str) else list(text)
    targets = {item.strip().lower() for item in items if item.strip()}
    unknown = sorted(targets - set(RTX_TARGETS))
    if unknown:
        raise TargetError(f"unknown TensorRT-RTX target(s) {', '.join(unknown)}; known: "
                          f"{', '.join(RTX_TARGETS)} (compute capability {', '.join(RTX_TARGETS.values())})")
    if not targets:
        raise TargetError(f"give at least one target, e.g. --target {','.join(DEFAULT_RTX_TARGETS)}")
    return tuple(sorted(targets, key=lambda t: int(t[2:])))


def target_of(compute_capability: str) -> str:
    """'8.6' -> 'sm86' (a name whether or not TensorRT-RTX supports it)."""
    major, _, minor = compute_capability.partition(".")
    return f"sm{major}{minor or '0'}"


@dataclass(frozen=True)
class Gpu:
    index: int
    name: str
    compute_capability: str  # "8.6"

    def text(self) -> str:
        return f"GPU {self.index} ({self.name}, compute capability {self.compute_capability})"


@dataclass(frozen=True)
class Installed:
    full: bool   # the full tensorrt module: builds and runs
    lean: bool   # a lean runtime: runs version-compatible engines only
    rtx: bool    # tensorrt_rtx: builds (without a GPU) and runs on RTX GPUs

    @property
    def tensorrt_runs(self) -> bool:
        return self.full or self.lean


@dataclass(frozen=True)
class LibraryChoice:
    library: str        # "tensorrt" or "tensorrt-rtx"
    reason: str         # why this one (shown by `trtd status` and `trtd doctor`)
    problem: str = ""   # non-empty: it cannot do the job here; what is missing and what to install

    def text(self) -> str:
        return f"{self.library} ({self.reason})"


def _importable(name: str) -> bool:
    if name in sys.modules:  # None there means "known absent" (and find_spec would raise)
        return sys.modules[name] is not None
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def installed() -> Installed:
    """What is installed, without importing it (TensorRT-RTX alone is ~230 MB of libraries)."""
    return Installed(full=_importable("tensorrt"),
                     lean=_importable("tensorrt_lean") or _importable("tensorrt_lean_bindings"),
                     rtx=_importable("tensorrt_rtx"))


def rtx_supports(gpu: Gpu) -> bool:
    return target_of(gpu.compute_capability) in RTX_TARGETS


def _unsupported_by_rtx(gpu: Gpu) -> str:
    return (f"TensorRT-RTX does not support {gpu.text()}: it runs on compute capability "
            f"{', '.join(RTX_TARGETS.values())} (RTX GPUs) only")


def choose(requested: str, gpu: Gpu | None, have: Installed, build: bool, run: bool = True,
           via: str = "engine_library") -> LibraryChoice:
    """The library for one model's engine: to be built here (`build`), run here (`run`), or both
    (`via`: where `requested` was said, for the reason: the config key, or `--library`)."""
    asked = f"{via} {requested}" if via.startswith("--") else f"{via} = \"{requested}\""
    if requested == RTX:
        return LibraryChoice(RTX, asked, _rtx_problem(gpu, have, run))
    if requested == TENSORRT:
        return LibraryChoice(TENSORRT, asked, _tensorrt_problem(gpu, have, build, run))
    tensorrt_ok = have.full if build else have.tensorrt_runs
    if gpu is None:
        if have.rtx:
            why = "auto: no GPU here, and TensorRT-RTX builds without one"
            return LibraryChoice(RTX, why, _rtx_problem(gpu, have, run))
        return LibraryChoice(TENSORRT, "auto: no GPU here and TensorRT-RTX is not installed",
                             _tensorrt_problem(gpu, have, build, run))
    if have.rtx and rtx_supports(gpu):
        also = ", preferred to TensorRT for it" if tensorrt_ok else ""
        return LibraryChoice(RTX, f"auto: TensorRT-RTX supports {gpu.text()}{also}")
    if tensorrt_ok:
        why = "TensorRT-RTX does not support it" if have.rtx else "TensorRT-RTX is not installed"
        return LibraryChoice(TENSORRT, f"auto: {gpu.text()}; {why}")
    if have.rtx and run:  # only TensorRT-RTX, on a GPU it does not support (e.g. Hopper)
        return LibraryChoice(RTX, "auto: only TensorRT-RTX is installed",
                             f"{gpu.text()} is supported by neither installed library: "
                             f"{_unsupported_by_rtx(gpu)}, and the full TensorRT is not installed. "
                             f"For this GPU: {TENSORRT_INSTALL}. TensorRT-RTX still builds engines "
                             f"here for RTX GPUs: trtd build MODEL.onnx --library tensorrt-rtx "
                             f"--target {','.join(DEFAULT_RTX_TARGETS)}")
    if have.rtx:  # building only: TensorRT-RTX builds for RTX GPUs whatever GPU is here
        return LibraryChoice(RTX, f"auto: only TensorRT-RTX can build here (for RTX GPUs, not {gpu.text()})")
    return LibraryChoice(TENSORRT, "auto: no TensorRT library is installed", _tensorrt_problem(gpu, have, build, run))


def targets_for(gpu: Gpu) -> tuple[str, ...]:
    """What the daemon builds a TensorRT-RTX engine for: the default targets and its own GPU."""
    return parse_targets([*DEFAULT_RTX_TARGETS, target_of(gpu.compute_capability)])


def _rtx_problem(gpu: Gpu | None, have: Installed, run: bool) -> str:
    if not have.rtx:
        return f"TensorRT-RTX is not installed: {RTX_INSTALL}"
    if run and gpu is None:
        return "no GPU here: a TensorRT-RTX engine runs on an RTX GPU"
    if run and gpu is not None and not rtx_supports(gpu):
        return f"{_unsupported_by_rtx(gpu)}; for this GPU use the full TensorRT: {TENSORRT_INSTALL}"
    return ""


def _tensorrt_problem(gpu: Gpu | None, have: Installed, build: bool, run: bool) -> str:
    missing = []
    if build and not have.full:
        missing.append("the full TensorRT library" + (" (only the lean runtime is here: it runs "
                                                       "engines, it cannot build them)" if have.lean else ""))
    elif run and not have.tensorrt_runs:
        missing.append("the TensorRT library")
    if gpu is None:
        missing.append("a GPU (TensorRT builds and runs on the GPU the engine is for)")
    if not missing:
        return ""
    extra = (f"; or TensorRT-RTX, which builds without a GPU for RTX GPUs: {RTX_INSTALL}"
             if not have.rtx else "")
    return f"missing {' and '.join(missing)}: {TENSORRT_INSTALL}{extra}"


def engine_metadata(path: str | Path) -> dict:
    """The metadata written beside an engine file (`<stem>.json`), {} when there is none."""
    meta = Path(path).with_suffix(".json")
    try:
        data = json.loads(meta.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def library_of_engine(path: str | Path) -> str:
    """The library an engine file was built by: its metadata says, else TensorRT."""
    library = engine_metadata(path).get("library")
    return library if library in LIBRARIES else TENSORRT


def gpu_of(device: int) -> Gpu | None:
    """The GPU `device` names, or None when there is none (no cuda-python, no driver, no GPU)."""
    from trtd.daemon.system import cuda

    if device < 0 or not cuda.available():
        return None
    try:
        if device >= cuda.device_count():
            return None
        props = cuda.device_properties(device)
    except cuda.CudaError:
        return None
    return Gpu(device, props["name"], f"{props['major']}.{props['minor']}")
