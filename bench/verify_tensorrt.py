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
import json
import platform
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def _step(report: dict, name: str, fn):
    started = time.monotonic()
    try:
        result = fn()
        report["steps"][name] = {"ok": True, "seconds": round(time.monotonic() - started, 3), **(result or {})}
        return result
    except Exception as exc:
        report["steps"][name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}",
                                 "trace": traceback.format_exc(limit=4)}
        return None


def _metrics(got: np.ndarray, ref: np.ndarray) -> dict:
    g, r = got.astype(np.float64).ravel(), ref.astype(np.float64).ravel()
    diff = np.abs(g - r)
    norm = np.linalg.norm(r)
    denom = np.linalg.norm(g) * norm
    return {"max_abs": float(diff.max(initial=0)), "mean_abs": float(diff.mean()) if diff.size else 0.0,
            "rel_l2": float(np.linalg.norm(g - r) / norm) if norm else 0.0,
            "cosine": float(g @ r / denom) if denom else 1.0}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtd.bench.verify_tensorrt", description=__doc__.split("\n\n")[0])
    parser.add_argument("--onnx", help="ONNX model (default: the built-in ResNet-18-shaped model)")
    parser.add_argument("--torchscript", help="the same model as TorchScript, to compare with too")
    parser.add_argument("--profile", action="append", default=[], help="as for trtd build")
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=3, help="unload/reload cycles for the memory check")
    parser.add_argument("--report", default="trtd-tensorrt-report.json")
    args = parser.parse_args(argv)

    from trtd.daemon.system import cuda
    from trtd.daemon.backends.onnxruntime import OnnxRuntimeBackend
    from trtd.daemon.backends.tensorrt import TensorRTBackend
    from trtd.daemon.running.swap_gate import _run, compare
    from trtd.daemon.commands.doctor import run_checks
    from trtd.daemon.engines.build import BuildJob, build
    from trtd.daemon.engines.fingerprint import BuildOptions
    from trtd.daemon.engines.profiles import parse_profiles
    from trtd.daemon.running.instances import CudaInstance

    onnx_path = args.onnx
    if onnx_path is None:
        from trtd.daemon.builtin.onnx_models import builtin_model_path

        onnx_path = str(builtin_model_path("resnet18"))
    report = {"command": " ".join([sys.executable, "-m", "trtd.bench.verify_tensorrt", *(argv or sys.argv[1:])]),
              "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "platform": platform.platform(),
              "onnx": onnx_path, "steps": {}}
    report["environment"] = [c.__dict__ for c in run_checks()]
    state: dict = {}

    def do_build():
        from trtd.daemon.backends.onnxruntime import OnnxRuntimeBackend
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

    def do_load():
        state["trt"] = TensorRTBackend(state["engine"], device=args.device)
        state["pinning"] = cuda.HostPinning()
        state["streams"] = cuda.StreamPool()
        state["instance"] = CudaInstance(state["trt"], state["pinning"], state["streams"])
        return {"inputs": [asdict(s) for s in state["trt"].inputs],
                "outputs": [asdict(s) for s in state["trt"].outputs], "max_batch": state["trt"].max_batch}

    def do_compare_onnxruntime():
        ort_backend = OnnxRuntimeBackend(onnx_path, max_batch=state["trt"].max_batch or 1)
        result = compare(ort_backend, state["instance"], 8, atol=1e-2, rtol=1e-2, pinning=state["pinning"])
        return {"passed_1e-2": result.ok, "max_abs_error": result.max_abs_error,
                "max_rel_l2": result.max_rel_l2, "summary": result.summary()}

    def do_compare_torchscript():
        import torch

        module = torch.jit.load(args.torchscript, map_location=f"cuda:{args.device}").eval()
        rng = np.random.default_rng(0)
        spec = state["trt"].inputs[0]
        x = rng.standard_normal([1 if d < 0 else d for d in spec.shape]).astype(np.float32)
        with torch.inference_mode():
            ref = module(torch.from_numpy(x).cuda(args.device)).cpu().numpy()
        got = _run(state["trt"], state["instance"], {spec.name: x}, state["pinning"])
        return {"metrics": _metrics(next(iter(got.values())), ref)}

    def do_latency():
        spec = state["trt"].inputs[0]
        x = np.random.default_rng(1).standard_normal([1 if d < 0 else d for d in spec.shape]).astype(np.float32)
        splits, walls = [], []
        # On one buffer, pinned once (as a daemon region is): wall time and the event split.
        for i in range(args.iterations + 20):
            t = time.perf_counter_ns()
            _, timing = _timed_run(state, spec, x)
            walls.append((time.perf_counter_ns() - t) / 1000)
            if i >= 20:
                splits.append((timing.h2d_us, timing.compute_us, timing.d2h_us))
        med = np.median(np.array(splits), axis=0)
        return {"host_wall_p50_us": float(np.percentile(walls[20:], 50)),
                "host_wall_p99_us": float(np.percentile(walls[20:], 99)),
                "h2d_us": float(med[0]), "compute_us": float(med[1]), "d2h_us": float(med[2])}

    def do_memory_cycles():
        free = []
        for _ in range(args.cycles + 1):
            backend = TensorRTBackend(state["engine"], device=args.device)
            instance = CudaInstance(backend, state["pinning"], state["streams"])
            spec = backend.inputs[0]
            x = np.zeros([1 if d < 0 else d for d in spec.shape], np.float32)
            _run(backend, instance, {spec.name: x}, state["pinning"])
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
    Path(args.report).write_text(json.dumps(report, indent=2, default=str) + "\n")
    Path(args.report).with_suffix(".md").write_text(_markdown(report))
    print(_markdown(report))
    return 0 if all(s.get("ok") for s in report["steps"].values()) else 1


def _timed_run(state, spec, x):
    from types import SimpleNamespace

    from trtd.daemon.backends import TensorBinding

    buf = state.setdefault("timed_buffer", np.zeros(x.nbytes + sum(max(s.max_nbytes, 0) for s in state["trt"].outputs) + 4096, np.uint8))
    base = buf.ctypes.data
    region = SimpleNamespace(address=base, nbytes=buf.nbytes, name="verify")
    buf[:x.nbytes] = x.reshape(-1).view(np.uint8)
    inputs = [TensorBinding(spec.name, x.dtype, x.shape, base, x.nbytes)]
    offset, outputs = (x.nbytes + 255) // 256 * 256, []
    for out in state["trt"].outputs:
        outputs.append(TensorBinding(out.name, np.dtype(out.dtype), None, base + offset, out.max_nbytes))
        offset += (out.max_nbytes + 255) // 256 * 256
    return state["instance"].run(region, inputs, outputs)


def _markdown(report: dict) -> str:
    lines = [f"# trtd TensorRT verification", "", f"{report['date']} on {report['platform']}", "",
             f"Command: `{report['command']}`", "", "| step | ok | details |", "|---|---|---|"]
    for name, step in report["steps"].items():
        details = step.get("error") or ", ".join(f"{k}={v}" for k, v in step.items()
                                                  if k not in ("ok", "trace", "inputs", "outputs"))
        lines.append(f"| {name} | {'yes' if step.get('ok') else 'NO'} | {str(details)[:300]} |")
    lines += ["", "## Environment", ""] + [f"- {c['name']}: {c['detail']}" for c in report["environment"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
