"""One-command TensorRT evaluation kit for a machine that has TensorRT (Linux or Windows).

    python -m trtd.bench.verify_tensorrt [--onnx MODEL.onnx] [--torchscript MODEL.pt]
        [--profile x:1x3x224x224,8x3x224x224,16x3x224x224] [--device 0] [--iterations 200]
        [--report trtd-tensorrt-report.json]

Builds the engine through trtd's own build path (fingerprint, cache, spawned
builder), loads it with trtd's TensorRT backend on the GPU data path, compares
it with ONNX Runtime (and TorchScript when given) on seeded inputs (max/mean
error, relative L2, cosine), times it with the H2D / compute / D2H split like
trtexec, checks device memory over unload/reload cycles, and writes one report
(JSON, plus Markdown beside it) to send back. Every step records its outcome;
a step that cannot run says why and the rest still run.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable

import numpy as np

from .lib.instance_run import InstanceRunner
from .lib.meta import command
from .lib.results import write_json, write_text


def _step(report: dict[str, Any], name: str, fn: Callable[[], dict[str, Any] | None]) -> None:
    """Run one step; its outcome (or its error, with a short trace) goes into the report."""
    started = time.monotonic()
    try:
        result = fn()
        report["steps"][name] = {"ok": True, "seconds": round(time.monotonic() - started, 3), **(result or {})}
    except Exception as exc:
        report["steps"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                 "trace": traceback.format_exc(limit=4)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtd.bench.verify_tensorrt", description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", help="ONNX model (default: the built-in ResNet-18-shaped model)")
    parser.add_argument("--torchscript", help="the same model as TorchScript, to compare with too")
    parser.add_argument("--profile", action="append", default=[], help="as for trtd build")
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=3, help="unload/reload cycles for the memory check")
    parser.add_argument("--report", default="trtd-tensorrt-report.json")
    args = parser.parse_args(argv)

    from trtd.daemon.backends.onnxruntime import OnnxRuntimeBackend
    from trtd.daemon.backends.tensorrt import TensorRTBackend
    from trtd.daemon.commands.doctor import run_checks
    from trtd.daemon.engines.build import BuildJob, build
    from trtd.daemon.engines.fingerprint import BuildOptions
    from trtd.daemon.engines.profiles import parse_profiles
    from trtd.daemon.precision.metrics import value_metrics
    from trtd.daemon.running.instances import CudaInstance
    from trtd.daemon.running.swap_gate import compare
    from trtd.daemon.system import cuda

    onnx_path = args.onnx
    if onnx_path is None:
        from trtd.daemon.builtin.onnx_models import builtin_model_path

        onnx_path = str(builtin_model_path("resnet18"))
    report: dict[str, Any] = {
        "command": command("trtd.bench.verify_tensorrt", sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "platform": platform.platform(),
        "onnx": onnx_path, "steps": {}}
    report["environment"] = [c.__dict__ for c in run_checks()]
    state: dict[str, Any] = {}

    def do_build() -> dict[str, Any]:
        from trtd.daemon.running.swap import build_options

        if args.profile:
            options = BuildOptions(profiles=tuple(parse_profiles([args.profile])))
        else:  # as the daemon does: one profile for batch 1..8 on a dynamic batch
            reference = OnnxRuntimeBackend(onnx_path, max_batch=8)
            options = build_options(SimpleNamespace(profiles=[], workspace_mib=0, opt_level=3,
                                                    hardware_compatible=False, version_compatible=False,
                                                    plugins=[]), reference)
        entry, built = build(BuildJob(Path(onnx_path).stem, onnx_path, options, device=args.device),
                             log=lambda line: print(line, file=sys.stderr))
        state["engine"] = entry.engine_path
        return {"engine": str(entry.engine_path), "fingerprint": entry.fingerprint, "built_now": built,
                "build_seconds": entry.metadata.get("build_seconds")}

    def do_load() -> dict[str, Any]:
        state["trt"] = TensorRTBackend(state["engine"], device=args.device)
        state["pinning"] = cuda.HostPinning()
        state["streams"] = cuda.StreamPool()
        state["instance"] = CudaInstance(state["trt"], state["pinning"], state["streams"])
        # One host buffer for every timed request, registered once, as a daemon region is.
        state["runner"] = InstanceRunner(state["trt"], state["instance"], state["pinning"])
        return {"inputs": [asdict(s) for s in state["trt"].inputs],
                "outputs": [asdict(s) for s in state["trt"].outputs], "max_batch": state["trt"].max_batch}

    def do_compare_onnxruntime() -> dict[str, Any]:
        ort_backend = OnnxRuntimeBackend(onnx_path, max_batch=state["trt"].max_batch or 1)
        result = compare(ort_backend, state["instance"], 8, atol=1e-2, rtol=1e-2, pinning=state["pinning"])
        return {"passed_1e-2": result.ok, "max_abs_error": result.max_abs_error,
                "max_rel_l2": result.max_rel_l2, "summary": result.summary()}

    def do_compare_torchscript() -> dict[str, Any]:
        import torch

        module = torch.jit.load(args.torchscript, map_location=f"cuda:{args.device}").eval()
        rng = np.random.default_rng(0)
        spec = state["trt"].inputs[0]
        x = rng.standard_normal([1 if d < 0 else d for d in spec.shape]).astype(np.float32)
        with torch.inference_mode():
            ref = module(torch.from_numpy(x).cuda(args.device)).cpu().numpy()
        got, _ = state["runner"].run({spec.name: x})
        return {"metrics": value_metrics(next(iter(got.values())), ref)}

    def do_latency() -> dict[str, Any]:
        spec = state["trt"].inputs[0]
        x = np.random.default_rng(1).standard_normal([1 if d < 0 else d for d in spec.shape]).astype(np.float32)
        splits, walls = [], []
        # On one buffer, pinned once (as a daemon region is): wall time and the event split.
        for i in range(args.iterations + 20):
            t = time.perf_counter_ns()
            _, timing = state["runner"].run({spec.name: x})
            walls.append((time.perf_counter_ns() - t) / 1000)
            if i >= 20:
                splits.append((timing.h2d_us, timing.compute_us, timing.d2h_us))
        med = np.median(np.array(splits), axis=0)
        return {"host_wall_p50_us": float(np.percentile(walls[20:], 50)),
                "host_wall_p99_us": float(np.percentile(walls[20:], 99)),
                "h2d_us": float(med[0]), "compute_us": float(med[1]), "d2h_us": float(med[2])}

    def do_memory_cycles() -> dict[str, Any]:
        free = []
        for _ in range(args.cycles + 1):
            backend = TensorRTBackend(state["engine"], device=args.device)
            instance = CudaInstance(backend, state["pinning"], state["streams"])
            spec = backend.inputs[0]
            x = np.zeros([1 if d < 0 else d for d in spec.shape], np.float32)
            runner = InstanceRunner(backend, instance, state["pinning"])
            runner.run({spec.name: x})
            runner.close()
            instance.close()
            backend.close()
            free.append(cuda.memory_info(args.device)[0])
        drift = free[-1] - free[1]
        return {"free_bytes_after_each_cycle": free, "drift_after_first_cycle": drift,
                "leak_suspected": abs(drift) > 64 * 2**20}

    for name, fn in (("build", do_build), ("load", do_load), ("compare_onnxruntime", do_compare_onnxruntime),
                     ("latency", do_latency), ("memory_cycles", do_memory_cycles)):
        if name != "build" and not report["steps"].get("build", {}).get("ok"):
            report["steps"][name] = {"ok": False, "error": "skipped: the build did not succeed"}
            continue
        if name not in ("build", "load") and not report["steps"].get("load", {}).get("ok"):
            report["steps"][name] = {"ok": False, "error": "skipped: the engine did not load"}
            continue
        _step(report, name, fn)
    if args.torchscript and report["steps"].get("load", {}).get("ok"):
        _step(report, "compare_torchscript", do_compare_torchscript)
    write_json(args.report, report, default=str)
    write_text(Path(args.report).with_suffix(".md"), _markdown(report))
    print(_markdown(report))
    return 0 if all(s.get("ok") for s in report["steps"].values()) else 1


def _markdown(report: dict[str, Any]) -> str:
    lines = ["# trtd TensorRT verification", "", f"{report['date']} on {report['platform']}", "",
             f"Command: `{report['command']}`", "", "| step | ok | details |", "|---|---|---|"]
    for name, step in report["steps"].items():
        details = step.get("error") or ", ".join(f"{k}={v}" for k, v in step.items()
                                                  if k not in ("ok", "trace", "inputs", "outputs"))
        lines.append(f"| {name} | {'yes' if step.get('ok') else 'NO'} | {str(details)[:300]} |")
    lines += ["", "## Environment", ""] + [f"- {c['name']}: {c['detail']}" for c in report["environment"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
