"""`trtd bench --device cuda:N`: the backends side by side on one GPU, then the daemon against them.

Part 1, in this process, the comparison the deployment notes started from, for the
ResNet-18-shaped model at batch 1: PyTorch eager, TorchScript (FP32 and FP16), and TensorRT
engines built from the FP32 ONNX model and its FP16 and calibrated INT8 (Q/DQ) variants
(trtd convert). Each row: p50/p99 of H2D from pinned memory + compute + D2H + synchronize,
and the H2D / compute / D2H split from CUDA events. Rows that cannot run here say why
("not available on this machine: ...") instead of disappearing.

Part 2: trtd.bench.gpu: floor, in-process TorchScript and the daemon (both SDK paths) on the
same device, interleaved, with the daemon's own split.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .lib.accuracy import rel_l2
from .lib.results import write_json, write_text
from .lib.stats import percentiles_us, time_calls
from .lib.torch_cuda import PinnedForward, Split, median_split

BATCH_SHAPE = (1, 3, 224, 224)


@dataclass
class BackendRow:
    system: str
    available: bool
    reason: str = ""
    p50_us: float | None = None
    p99_us: float | None = None
    split: Split | None = None
    rel_l2_vs_eager: float | None = None


def _time(run: Callable[[], object], iterations: int) -> tuple[float, float]:
    """p50 and p99 µs of `run`, after max(10, iterations / 10) discarded calls."""
    p50, p99 = percentiles_us(time_calls(run, iterations, max(10, iterations // 10)), 50, 99)
    return p50, p99


def torch_rows(device_index: int, iterations: int, x: np.ndarray) -> tuple[list[BackendRow], np.ndarray | None]:
    import torch

    from trtd.daemon.builtin.torch_models import build_torchscript, eager_modules

    device = torch.device("cuda", device_index)
    torch.manual_seed(0)  # the same seed build_torchscript uses: identical weights
    eager = eager_modules()["resnet18"]().eval().to(device)
    scripted = build_torchscript("resnet18").to(device)
    scripted_fp16 = build_torchscript("resnet18").to(device).half()
    rows: list[BackendRow] = []
    reference: np.ndarray | None = None
    for label, module, dtype in (("PyTorch eager FP32", eager, torch.float32),
                                 ("TorchScript FP32", scripted, torch.float32),
                                 ("TorchScript FP16 (.half())", scripted_fp16, torch.float16)):
        local = PinnedForward(torch, module, device, x, (x.shape[0], 5), dtype=dtype)
        local.run()
        out = local.output()
        reference = out if reference is None else reference
        p50, p99 = _time(local.run, iterations)
        rows.append(BackendRow(label, True, p50_us=p50, p99_us=p99, split=local.split(),
                               rel_l2_vs_eager=rel_l2(out, reference)))
    return rows, reference


def tensorrt_rows(device_index: int, iterations: int, x: np.ndarray, calibration_dir: Path) -> list[BackendRow]:
    labels = ("TensorRT FP32", "TensorRT FP16 (ONNX FP16 variant)", "TensorRT INT8 (calibrated Q/DQ variant)")
    try:
        import tensorrt  # noqa: F401  - the full library: the lean runtime cannot build engines
    except ImportError:
        return [BackendRow(label, False, "not available on this machine: the full TensorRT library "
                                         "(`tensorrt`, which builds engines) is not installed")
                for label in labels]
    from trtd.daemon.builtin.onnx_models import builtin_model_path
    from trtd.daemon.precision.convert import convert

    onnx_fp32 = builtin_model_path("resnet18")
    calibration = calibration_dir / "calibration.npz"
    np.savez(calibration, x=np.random.default_rng(3).standard_normal((16, *BATCH_SHAPE[1:]), dtype=np.float32))
    rows = []
    for label, make in ((labels[0], lambda: onnx_fp32),
                        (labels[1], lambda: convert(onnx_fp32, "fp16").path),
                        (labels[2], lambda: convert(onnx_fp32, "int8", calibration).path)):
        try:
            rows.append(_tensorrt_row(label, str(make()), device_index, iterations, x))
        except Exception as exc:  # one row failing (a build error) must not hide the others
            rows.append(BackendRow(label, False, f"failed: {type(exc).__name__}: {exc}"))
    return rows


def _tensorrt_row(label: str, onnx_path: str, device_index: int, iterations: int, x: np.ndarray) -> BackendRow:
    from types import SimpleNamespace

    from trtd.daemon.backends.onnxruntime import OnnxRuntimeBackend
    from trtd.daemon.backends.tensorrt import TensorRTBackend
    from trtd.daemon.engines.build import BuildJob, build
    from trtd.daemon.running.instances import CudaInstance
    from trtd.daemon.running.swap import build_options
    from trtd.daemon.system import cuda

    from .lib.instance_run import InstanceRunner

    options = build_options(SimpleNamespace(profiles=[], workspace_mib=0, opt_level=3, hardware_compatible=False,
                                            version_compatible=False, plugins=[]),
                            OnnxRuntimeBackend(onnx_path, max_batch=8))
    entry, _ = build(BuildJob(Path(onnx_path).stem, onnx_path, options, device=device_index))
    backend = TensorRTBackend(entry.engine_path, device=device_index)
    pinning = cuda.HostPinning()
    runner = InstanceRunner(backend, CudaInstance(backend, pinning, cuda.StreamPool()), pinning)
    feed = {backend.inputs[0].name: x}
    splits = []

    def run() -> None:
        _, timing = runner.run(feed)
        splits.append((timing.h2d_us, timing.compute_us, timing.d2h_us))

    p50, p99 = _time(run, iterations)
    return BackendRow(label, True, p50_us=p50, p99_us=p99, split=median_split(splits[-iterations:]))


def render(rows: list[BackendRow]) -> str:
    lines = ["| system (ResNet-18-shaped, batch 1, in-process) | p50 µs | p99 µs | H2D / compute / D2H µs | "
             "rel. L2 vs eager |", "|---|--:|--:|--:|--:|"]
    for r in rows:
        if not r.available:
            lines.append(f"| {r.system} | {r.reason} | | | |")
            continue
        s = r.split
        assert s is not None  # every available row has its split
        rel = "—" if r.rel_l2_vs_eager is None else f"{r.rel_l2_vs_eager:.1e}"
        lines.append(f"| {r.system} | {r.p50_us:.0f} | {r.p99_us:.0f} | {s.h2d_us:.0f} / {s.compute_us:.0f} / "
                     f"{s.d2h_us:.0f} | {rel} |")
    return "\n".join(lines)


def main(args: argparse.Namespace, argv: list[str]) -> int:
    """`trtd bench --device cuda:N` (args parsed by trtd.bench.harness)."""
    import tempfile

    if not args.device.startswith("cuda:"):
        print(f"trtd bench: --device must be cpu or cuda:N, got {args.device!r}", file=sys.stderr)
        return 2
    try:
        import torch
    except ImportError:
        print("trtd bench: --device cuda:N needs torch with CUDA (pip install 'trtd[torch,cuda]')", file=sys.stderr)
        return 3
    index = int(args.device.split(":", 1)[1])
    if not torch.cuda.is_available() or index >= torch.cuda.device_count():
        print(f"trtd bench: {args.device} is not a CUDA device here (torch sees "
              f"{torch.cuda.device_count()} device(s))", file=sys.stderr)
        return 3
    from . import gpu

    iterations = args.iterations or 200
    x = np.random.default_rng(0).standard_normal(BATCH_SHAPE, dtype=np.float32)
    rows, _ = torch_rows(index, iterations, x)
    with tempfile.TemporaryDirectory(prefix="trtd-gpu-compare-") as tmp:
        rows += tensorrt_rows(index, iterations, x, Path(tmp))
    rows.append(BackendRow("ONNX Runtime CUDA provider", False,
                           "not available on this machine: onnxruntime-gpu is not installed")
                if not _ort_cuda() else BackendRow("ONNX Runtime CUDA provider", False,
                                                   "installed but not measured by this harness yet"))
    table = render(rows)
    print(table)
    out = Path(args.out) if args.out else None
    json_path = Path(args.json) if args.json else (out / "gpu-compare.json" if out else None)
    md_path = Path(args.markdown) if args.markdown else (out / "gpu-compare.md" if out else None)
    for path in (json_path, md_path):
        if path:
            path.parent.mkdir(parents=True, exist_ok=True)
    daemon_argv = ["--device", args.device, "--iterations", str(iterations)]
    if json_path:
        daemon_argv += ["--json", str(json_path.with_name(json_path.stem + "-daemon.json"))]
    if md_path:
        daemon_argv += ["--markdown", str(md_path.with_name(md_path.stem + "-daemon.md"))]
    code = gpu.main(daemon_argv)
    command = shlex.join(["trtd", "bench", *argv])
    if json_path:
        write_json(json_path, {"command": command, "device": torch.cuda.get_device_name(index),
                               "torch": torch.__version__, "rows": [asdict(r) for r in rows]})
    if md_path:
        write_text(md_path, f"# trtd bench --device {args.device}: backends\n\n{time.strftime('%Y-%m-%d')} on "
                            f"{torch.cuda.get_device_name(index)}, torch {torch.__version__}.\n\n"
                            f"Command: `{command}`\n\n{table}\n\nThe daemon comparison is in "
                            f"`{md_path.stem}-daemon.md`.\n")
    return code


def _ort_cuda() -> bool:
    try:
        import onnxruntime

        return "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except ImportError:
        return False
