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

import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .gpu import Split, _torch_split

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


def _time(run, iterations: int) -> tuple[float, float]:
    for _ in range(max(10, iterations // 10)):
        run()
    samples = []
    for _ in range(iterations):
        t = time.perf_counter_ns()
        run()
        samples.append((time.perf_counter_ns() - t) / 1000)
    p50, p99 = np.percentile(samples, (50, 99))
    return float(p50), float(p99)


def _rel_l2(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(got.astype(np.float64) - ref) / max(np.linalg.norm(ref), 1e-30))


def torch_rows(device_index: int, iterations: int, x: np.ndarray) -> tuple[list[BackendRow], np.ndarray]:
    import torch

    from trtd.daemon.builtin.torch_models import _modules, build_torchscript

    device = torch.device("cuda", device_index)
    torch.manual_seed(0)  # the same seed build_torchscript uses: identical weights
    eager = _modules()["resnet18"]().eval().to(device)
    scripted = build_torchscript("resnet18").to(device)
    scripted_fp16 = build_torchscript("resnet18").to(device).half()
    x_pinned = torch.from_numpy(x).pin_memory()
    rows, reference = [], None
    for label, module, dtype in (("PyTorch eager FP32", eager, torch.float32),
                                 ("TorchScript FP32", scripted, torch.float32),
                                 ("TorchScript FP16 (.half())", scripted_fp16, torch.float16)):
        state: dict = {}
        y_pinned = torch.empty((x.shape[0], 5), dtype=torch.float32).pin_memory()

        def h2d():
            state["d"] = x_pinned.to(device, non_blocking=True).to(dtype)

        def compute():
            with torch.inference_mode():
                state["y"] = module(state["d"]).float()

        def d2h():
            y_pinned.copy_(state["y"], non_blocking=True)

        def run():
            h2d(); compute(); d2h()  # noqa: E702
            torch.cuda.synchronize()

        run()
        out = y_pinned.numpy().copy()
        reference = out if reference is None else reference
        p50, p99 = _time(run, iterations)
        rows.append(BackendRow(label, True, p50_us=p50, p99_us=p99,
                               split=_torch_split(h2d, compute, d2h, torch), rel_l2_vs_eager=_rel_l2(out, reference)))
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

    from trtd.daemon.system import cuda
    from trtd.daemon.backends.onnxruntime import OnnxRuntimeBackend
    from trtd.daemon.backends.tensorrt import TensorRTBackend
    from trtd.daemon.running.swap import build_options
    from trtd.daemon.engines.build import BuildJob, build
    from trtd.daemon.running.instances import CudaInstance

    from .verify_tensorrt import _timed_run

    options = build_options(SimpleNamespace(profiles=[], workspace_mib=0, opt_level=3, hardware_compatible=False,
                                            version_compatible=False, plugins=[]),
                            OnnxRuntimeBackend(onnx_path, max_batch=8))
    entry, _ = build(BuildJob(Path(onnx_path).stem, onnx_path, options, device=device_index))
    backend = TensorRTBackend(entry.engine_path, device=device_index)
    state = {"trt": backend, "instance": CudaInstance(backend, cuda.HostPinning(), cuda.StreamPool())}
    spec = backend.inputs[0]
    splits = []

    def run():
        _, timing = _timed_run(state, spec, x)
        splits.append((timing.h2d_us, timing.compute_us, timing.d2h_us))

    p50, p99 = _time(run, iterations)
    med = np.median(np.array(splits[-iterations:]), axis=0)
    return BackendRow(label, True, p50_us=p50, p99_us=p99, split=Split(*map(float, med)))


def render(rows: list[BackendRow]) -> str:
    lines = ["| system (ResNet-18-shaped, batch 1, in-process) | p50 µs | p99 µs | H2D / compute / D2H µs | "
             "rel. L2 vs eager |", "|---|--:|--:|--:|--:|"]
    for r in rows:
        if not r.available:
            lines.append(f"| {r.system} | {r.reason} | | | |")
            continue
        s = r.split
        rel = "—" if r.rel_l2_vs_eager is None else f"{r.rel_l2_vs_eager:.1e}"
        lines.append(f"| {r.system} | {r.p50_us:.0f} | {r.p99_us:.0f} | {s.h2d_us:.0f} / {s.compute_us:.0f} / "
                     f"{s.d2h_us:.0f} | {rel} |")
    return "\n".join(lines)


def main(args, argv: list[str]) -> int:
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
        json_path.write_text(json.dumps({"command": command, "device": torch.cuda.get_device_name(index),
                                         "torch": torch.__version__,
                                         "rows": [asdict(r) for r in rows]}, indent=2) + "\n")
    if md_path:
        md_path.write_text(f"# trtd bench --device {args.device}: backends\n\n{time.strftime('%Y-%m-%d')} on "
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
