"""INT8 variants on several x86 CPUs: this one, and CPUs emulated by qemu's user-mode emulator.

    python -m trtd.bench.int8_portability [--cpus EPYC-Rome-v1,Westmere-v1] [--markdown PATH] [--json PATH]

ONNX Runtime picks its 8-bit kernels by instruction set (VNNI, AVX2 without VNNI, SSE4.1), and
the AVX2 one sums pairs of products with saturation. Each INT8 target of `trtd convert` is
gated by `trtd validate` (cosine >= 0.999, top-1 >= 0.95 against FP32) on the trained shape
classifier, natively and under `qemu-x86_64 -cpu MODEL` (Debian's qemu-user), which executes
the instructions of that CPU model whatever the host is. tests/test_int8_portability.py
uses the same helpers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .lib.meta import command
from .lib.results import write_json, write_text

MODEL = Path(__file__).parent / "models" / "shapes_classifier.onnx"
# Zen 2: AVX2 and FMA, no AVX-512, no VNNI; Westmere: SSE4.2, no AVX at all.
DEFAULT_CPUS = ("EPYC-Rome-v1", "Westmere-v1")
GATE = ("--min-cosine", "0.999", "--min-top1", "0.95")


def make_variants(folder: Path, test_samples: int = 256) -> dict[str, Any]:
    """Calibration and test samples from the classifier's data, and one variant per INT8 target."""
    from trtd.daemon.precision.convert import INT8_TARGETS, convert
    from trtd.daemon.precision.datasets import shapes

    np.savez(folder / "calib.npz", x=shapes(64, seed=6)[0])
    np.savez(folder / "test.npz", x=shapes(test_samples, seed=5)[0])
    return {target: convert(MODEL, "int8", folder / "calib.npz", cache_root=folder, int8_target=target)
            for target in INT8_TARGETS}


def under_qemu(cpu: str, argv: Sequence[str]) -> list[str]:
    """`argv` (this interpreter first) run by qemu's user-mode emulator as CPU model `cpu`.
    Processes it starts run natively: qemu-user emulates one process, not its children."""
    # -0 keeps argv[0] the (virtual environment's) interpreter, so it finds its packages.
    return ["qemu-x86_64", "-cpu", cpu, "-0", argv[0], os.path.realpath(argv[0]), *argv[1:]]


def validate_on(candidate: Path, folder: Path, emulated_cpu: str | None) -> dict[str, Any]:
    """`trtd validate` with the gate, natively (None) or on an emulated CPU model: its report."""
    report = folder / f"report-{candidate.stem}-{emulated_cpu or 'native'}.json"
    argv = [sys.executable, "-m", "trtd.daemon", "validate", str(candidate), "--data", str(folder / "test.npz"),
               *GATE, "--json", str(report)]
    if emulated_cpu:
        argv = under_qemu(emulated_cpu, argv)
    out = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if out.returncode not in (0, 1) or not report.is_file():
        raise RuntimeError(f"trtd validate on {emulated_cpu or 'this CPU'} failed: {out.stdout}{out.stderr}")
    return json.loads(report.read_text())


def _cpu_flags() -> str:
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return "unknown"
    wanted = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8")
    return " ".join(f for f in wanted if f in flags) or "no AVX2"


def run(cpus: tuple[str, ...], argv: Sequence[str] = ()) -> dict[str, Any]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        variants = make_variants(folder)
        for cpu in (None, *cpus):
            for target, variant in variants.items():
                report = validate_on(variant.path, folder, cpu)
                metrics = report["outputs"]["output"]
                rows.append({"cpu": cpu or f"this CPU ({_cpu_flags()})", "target": target,
                             "weights": variant.metadata["trtd.int8_weight_range"],
                             "cosine": metrics["cosine"], "rel_l2": metrics["rel_l2"], "top1": metrics["top1"],
                             "passed": report["passed"]})
    import onnxruntime

    return {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "host": platform.node(),
            "platform": platform.platform(), "cores": os.cpu_count(), "cpu_flags": _cpu_flags(),
            "versions": {"onnxruntime": onnxruntime.__version__, "numpy": np.__version__,
                         "python": platform.python_version(), "qemu": _qemu_version()},
            "command": command("trtd.bench.int8_portability", argv), "rows": rows}


def _qemu_version() -> str:
    try:
        return subprocess.run(["qemu-x86_64", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    except OSError:
        return "absent"


def markdown(result: dict[str, Any]) -> str:
    lines = ["# INT8 variants on several x86 CPUs (ONNX Runtime CPU provider)", "",
             f"{result['date']} on {result['host']} ({result['platform']}, {result['cores']} cores, "
             f"flags: {result['cpu_flags']}); " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()) + ".",
             "", f"Command: `{result['command']}`", "",
             "Trained shape classifier, 256 held-out images, each variant against FP32 through `trtd validate` "
             f"with the gate `{' '.join(GATE)}`; emulated CPUs run under `qemu-x86_64 -cpu MODEL`.", "",
             "| CPU | target | weights | cosine | rel L2 | top-1 vs FP32 | gate |", "|---|---|---|--:|--:|--:|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['cpu']} | {r['target']} | {r['weights']} | {r['cosine']:.5f} | {r['rel_l2']:.4f} | "
                     f"{r['top1']:.3f} | {'PASS' if r['passed'] else 'FAIL'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtd.bench.int8_portability", description=__doc__.split("\n")[0])
    parser.add_argument("--cpus", default=",".join(DEFAULT_CPUS), help="qemu CPU models (qemu-x86_64 -cpu help)")
    parser.add_argument("--markdown")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    result = run(tuple(c for c in args.cpus.split(",") if c), sys.argv[1:] if argv is None else argv)
    text = markdown(result)
    print(text)
    if args.markdown:
        write_text(args.markdown, text)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
