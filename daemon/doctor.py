"""`trtd doctor`: what this machine has for trtd, checked against the support matrix.

Support matrix (what trtd is written for; the README says what was verified where):
  - TensorRT 10.x with CUDA 12 (driver R525+), TensorRT 11.x with CUDA 13 (driver R580+);
  - the lean runtime (`tensorrt-lean-cu12` / `-cu13`) runs version-compatible engines only;
  - cuda-python 12.x or 13.x matching the driver's CUDA major;
  - ONNX Runtime (CPU, or onnxruntime-gpu for its CUDA/TensorRT providers).
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shutil
import sys
from dataclasses import dataclass


@dataclass
class Check:
    name: str
    ok: bool | None  # None: informational
    detail: str
    fix: str = ""


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def run_checks() -> list[Check]:
    checks = [Check("os", None, f"{platform.system()} {platform.release()} ({platform.machine()}), "
                                f"Python {platform.python_version()}")]
    from . import cuda

    driver_cuda_major = None
    if not cuda.available():
        checks.append(Check("cuda-python", False, "not installed", 'pip install "trtd[cuda]"'))
    else:
        try:
            v = cuda.versions()
            if v["driver"] == 0:
                raise cuda.CudaError("no NVIDIA driver is installed (cudaDriverGetVersion reports 0)")
            driver_cuda_major = v["driver"] // 1000
            checks.append(Check("cuda-python", True, f"driver supports CUDA {v['driver'] // 1000}."
                                f"{v['driver'] % 1000 // 10}, runtime {v['runtime'] // 1000}.{v['runtime'] % 1000 // 10}"))
            for i in range(cuda.device_count()):
                props = cuda.device_properties(i)
                free, total = cuda.memory_info(i)
                checks.append(Check(f"gpu {i}", True, f"{props['name']}, compute capability "
                                    f"{props['major']}.{props['minor']}, {free / 2**30:.1f} of "
                                    f"{total / 2**30:.1f} GiB free"))
        except cuda.CudaError as exc:
            checks.append(Check("cuda", False, str(exc),
                                "install the NVIDIA driver (R580+ for CUDA 13, R525+ for CUDA 12)"))
    from .engines.trt import TensorRTUnavailable, import_tensorrt

    try:
        trt = import_tensorrt()
        # Drivers run older CUDA versions too: only a TensorRT 11 on a pre-CUDA-13 driver is a problem.
        ok = driver_cuda_major is None or not (trt.major >= 11 and driver_cuda_major < 13)
        checks.append(Check("tensorrt", ok, f"{trt.version} ({trt.flavor}{', can build' if trt.can_build else ', runtime only'})",
                            "" if ok else "TensorRT 11 needs a CUDA 13 driver (R580+): update the driver"))
    except TensorRTUnavailable as exc:
        checks.append(Check("tensorrt", False, "not installed",
                            str(exc).split("; ", 1)[-1]))
    ort = _version("onnxruntime") or _version("onnxruntime-gpu")
    if ort:
        import onnxruntime

        checks.append(Check("onnxruntime", True, f"{ort}, providers: {', '.join(onnxruntime.get_available_providers())}"))
    else:
        checks.append(Check("onnxruntime", False, "not installed", 'pip install "trtd[onnx]"'))
    torch = _version("torch")
    checks.append(Check("torch", None if torch is None else True, torch or "not installed (optional)"))
    if sys.platform == "win32":
        from trtd.service.tdr import describe_tdr

        ok, detail = describe_tdr()
        checks.append(Check("gpu watchdog", ok, detail, "" if ok is not False else detail.split(". ", 1)[-1]))
    if os.path.isdir("/dev/shm"):
        usage = shutil.disk_usage("/dev/shm")
        checks.append(Check("/dev/shm", usage.free > 1 << 30, f"{usage.free / 2**30:.1f} of "
                            f"{usage.total / 2**30:.1f} GiB free",
                            "enlarge it (mount -o remount,size=8G /dev/shm); regions live there"))
    return checks


def main() -> int:
    checks = run_checks()
    for c in checks:
        mark = {True: "ok  ", False: "FAIL", None: "    "}[c.ok]
        print(f"{mark} {c.name:<12} {c.detail}")
        if c.ok is False and c.fix:
            print(f"     {'':<12} -> {c.fix}")
    return 0 if all(c.ok is not False for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
