"""What an engine depends on, and the fingerprint that names its cached file.

A serialized engine runs only where everything it was built for still holds:
the same TensorRT version, GPU (model and compute capability), OS, a driver
of the same major version, the same plugins and build options, and of course
the same ONNX bytes. The fingerprint hashes all of those. Engines built
version-compatible (they carry or expect the lean runtime of the same major
version) relax the TensorRT version to its major; hardware-compatible
(Ampere+) engines relax the GPU to "any compute capability >= 8.0", as
TensorRT documents for those two options.

A TensorRT-RTX engine (BuildOptions.targets set) is built without a GPU for a set of compute
capabilities and, as its documentation says, runs on any GPU of those on Linux and Windows:
its fingerprint covers the TensorRT-RTX version (and the CUDA major of its build), the target
set, the options, the ONNX bytes and the plugins, and not the GPU model, the OS or the driver.
Its `family` (the same without the targets) finds an engine built for another target set
that contains a given GPU's compute capability.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path

from trtd.daemon.engines.profiles import InputRange, Profile

FINGERPRINT_SCHEMA = 1  # bumped if what goes into a fingerprint changes


@dataclass(frozen=True)
class BuildOptions:
    profiles: tuple[Profile, ...] = ()
    workspace_bytes: int = 0              # 0: TensorRT's default (the device's memory)
    optimization_level: int = 3           # TensorRT's default; 0..5
    hardware_compatible: bool = False     # Ampere and newer
    version_compatible: bool = False
    exclude_lean_runtime: bool = False    # version compatible without embedding the lean runtime
    plugins: tuple[str, ...] = ()         # shared libraries with custom ops
    # TensorRT-RTX: the compute capabilities built for ("sm86", ...); empty for TensorRT.
    targets: tuple[str, ...] = ()

    def __post_init__(self):
        if not 0 <= self.optimization_level <= 5:
            raise ValueError(f"optimization level must be 0..5, got {self.optimization_level}")
        if self.exclude_lean_runtime and not self.version_compatible:
            raise ValueError("exclude_lean_runtime only applies to version-compatible engines")
        if self.workspace_bytes < 0:
            raise ValueError("workspace_bytes must be >= 0")
        if self.targets and (self.hardware_compatible or self.version_compatible):
            raise ValueError("hardware and version compatibility are TensorRT options; a TensorRT-RTX "
                             "engine runs on every GPU of its targets already")


@dataclass(frozen=True)
class BuildEnvironment:
    """The machine an engine is built for (and must run on)."""

    tensorrt_version: str       # e.g. "10.13.0.35"
    gpu_name: str               # e.g. "NVIDIA H100 80GB HBM3"
    compute_capability: str     # e.g. "9.0"
    os: str = field(default_factory=lambda: platform.system())
    driver_major: int = 0


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fingerprint_inputs(onnx_sha256: str, env: BuildEnvironment, options: BuildOptions) -> dict:
    """The exact fields that are hashed, after the compatibility relaxations (kept as metadata)."""
    if options.targets:
        return _rtx_inputs(onnx_sha256, env, options)
    trt = env.tensorrt_version
    if options.version_compatible:
        trt = trt.split(".")[0] + ".x (version compatible)"
    gpu, cc = env.gpu_name, env.compute_capability
    if options.hardware_compatible:
        gpu, cc = "any (hardware compatible: Ampere and newer)", ">=8.0"
    opts = _options(options)
    return {
        "schema": FINGERPRINT_SCHEMA, "onnx_sha256": onnx_sha256, "tensorrt": trt, "gpu": gpu,
        "compute_capability": cc, "os": env.os, "driver_major": env.driver_major, "options": opts,
    }


def _options(options: BuildOptions) -> dict:
    opts = asdict(options)
    opts["plugins"] = sorted(file_sha256(p) for p in options.plugins)  # content, not where it lies
    if not options.targets:
        del opts["targets"]  # TensorRT engines' fingerprints stay what they were before targets
    return opts


def _rtx_inputs(onnx_sha256: str, env: BuildEnvironment, options: BuildOptions) -> dict:
    opts = _options(options)
    targets = opts.pop("targets")
    return {"schema": FINGERPRINT_SCHEMA, "library": "tensorrt-rtx", "onnx_sha256": onnx_sha256,
            "tensorrt": env.tensorrt_version, "targets": list(targets), "options": opts}


def _digest(inputs: dict) -> str:
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def fingerprint(onnx_sha256: str, env: BuildEnvironment, options: BuildOptions) -> str:
    return _digest(fingerprint_inputs(onnx_sha256, env, options))


def family(inputs: dict) -> str:
    """A TensorRT-RTX engine's fingerprint without its targets: the same engine for other GPUs."""
    return _digest({k: v for k, v in inputs.items() if k != "targets"})


def options_to_json(options: BuildOptions) -> dict:
    return asdict(options)


def options_from_json(data: dict) -> BuildOptions:
    profiles = tuple(
        Profile(tuple(InputRange(r["name"], tuple(r["min"]), tuple(r["opt"]), tuple(r["max"]))
                      for r in p["inputs"]))
        for p in data.get("profiles", ()))
    fields = {k: v for k, v in data.items() if k != "profiles"}
    fields["plugins"] = tuple(fields.get("plugins", ()))
    fields["targets"] = tuple(fields.get("targets", ()))
    return BuildOptions(profiles=profiles, **fields)
