"""`trtd validate`: a candidate model against a reference, per output, as a deployment gate."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

from trtd.daemon.precision.metrics import MetricError, mask_metrics, top1_agreement, value_metrics
from trtd.daemon.precision.samples import SampleError, load_samples, random_samples

# flag -> (metric, "max" | "min"): a threshold each output must meet
GATES = {"max_abs": ("max_abs", "max"), "max_rel_l2": ("rel_l2", "max"), "min_cosine": ("cosine", "min"),
         "min_top1": ("top1", "min"), "min_dice": ("dice", "min"), "max_hd95": ("hd95", "max")}


class ValidateError(ValueError):
    pass


def _backend(path: str, kind: str, inputs_spec: list[str], device: int | None):
    """(backend, instance or None) from trtd's own backends, so validation runs what serving runs."""
    if kind == "onnxruntime":
        from trtd.daemon.backends.onnxruntime import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, max_batch=64), None
    if kind == "torch":
        from trtd.daemon.backends.torch import TorchBackend

        return TorchBackend(path, inputs=inputs_spec, device=device), None
    if kind == "tensorrt":
        from trtd.daemon.system import cuda
        from trtd.daemon.backends.tensorrt import TensorRTBackend
        from trtd.daemon.running.instances import CudaInstance

        backend = TensorRTBackend(path, device=device or 0)
        return backend, CudaInstance(backend, cuda.HostPinning(), cuda.StreamPool())
    raise ValidateError(f"unknown backend {kind!r}")


def _kind_of(path: str, given: str | None) -> str:
    if given:
        return given
    return "torch" if path.endswith((".pt", ".ts", ".pth")) else "onnxruntime"


def _notes(candidate: str, kind: str) -> list[str]:
    """What a reader of the figures must know about where they were measured."""
    from trtd.daemon.precision.convert import provenance

    if kind != "onnxruntime" or not candidate.endswith(".onnx"):
        return []
    if provenance(candidate).get("trtd.int8_target") == "tensorrt":
        return ["this INT8 variant's target is tensorrt (8-bit weights): ONNX Runtime on an x86 CPU without "
                "VNNI adds its products with saturation, so these figures can be worse than its engine's; "
                "validate the engine (--backend tensorrt) or convert with --target portable"]
    return []


def run_validation(args) -> dict:
    from trtd.daemon.running.swap_gate import run_once
    from trtd.daemon.precision.convert import provenance

    reference = args.reference
    if reference is None:
        source = provenance(args.candidate).get("trtd.source") if args.candidate.endswith(".onnx") else None
        if not source or not Path(source).exists():
            raise ValidateError("no --reference given and the candidate does not name an existing source "
                                "model in its metadata; give --reference REF.onnx or REF.pt")
        reference = source
    cand, cand_inst = _backend(args.candidate, _kind_of(args.candidate, args.backend), args.input, args.device)
    ref, ref_inst = _backend(reference, _kind_of(reference, None), args.input, args.device)
    inputs = {s.name: (s.dtype, s.shape) for s in ref.inputs}
    if {s.name: s.dtype for s in cand.inputs} != {n: d for n, (d, _) in inputs.items()}:
        raise ValidateError(f"the candidate's inputs {[(s.name, s.dtype) for s in cand.inputs]} differ "
                            f"from the reference's {[(n, d) for n, (d, _) in inputs.items()]}")
    samples = (load_samples(args.data, inputs) if args.data
               else random_samples(inputs, args.samples, seed=args.seed))
    per_output: dict[str, list] = {}
    for sample in samples:
        got = run_once(cand, cand_inst, sample, None)
        want = run_once(ref, ref_inst, sample, None)
        for name, expected in want.items():
            if name not in got:
                raise ValidateError(f"the candidate has no output {name!r}")
            per_output.setdefault(name, []).append((got[name], expected))
    report = {"candidate": args.candidate, "reference": reference, "samples": len(samples),
              "data": args.data or f"seeded random (seed {args.seed})", "outputs": {},
              "notes": _notes(args.candidate, _kind_of(args.candidate, args.backend))}
    for name, pairs in per_output.items():
        got = np.concatenate([g for g, _ in pairs])
        want = np.concatenate([w for _, w in pairs])
        metrics = value_metrics(got, want)
        if got.ndim == 2 and got.shape[1] > 1:
            metrics["top1"] = top1_agreement(got, want)
        if args.mask_threshold is not None and got.ndim >= 3:
            metrics.update(mask_metrics(got, want, args.mask_threshold, args.spacing))
        report["outputs"][name] = metrics
    failures = []
    for flag, (metric, kind) in GATES.items():
        limit = getattr(args, flag)
        if limit is None:
            continue
        for name, metrics in report["outputs"].items():
            if metric not in metrics:
                continue
            value = metrics[metric]
            bad = value > limit if kind == "max" else value < limit
            if bad or (isinstance(value, float) and math.isnan(value)):
                failures.append(f"{name}: {metric} {value:.4g} {'>' if kind == 'max' else '<'} {limit:g}")
    report["failures"] = failures
    report["passed"] = not failures
    return report


def render(report: dict) -> str:
    cols = ["max_abs", "mean_abs", "rel_l2", "cosine", "top1", "dice", "hd", "hd95"]
    from tabulate import tabulate

    lines = [f"candidate {report['candidate']}", f"reference {report['reference']}",
             f"samples   {report['samples']} ({report['data']})", "",
             tabulate([[name, *(m.get(c) for c in cols)] for name, m in report["outputs"].items()],
                      headers=["output", *cols], tablefmt="simple", floatfmt=".4g", missingval="-")]
    lines.extend(f"note: {note}" for note in report.get("notes", []))
    lines.append("")
    lines.append("PASS" if report["passed"] else "FAIL: " + "; ".join(report["failures"]))
    return "\n".join(lines)


def add_parser(sub) -> None:
    p = sub.add_parser("validate", help="compare a candidate model with a reference (a deployment gate)")
    p.add_argument("candidate")
    p.add_argument("--reference", help="REF.onnx or REF.pt (default: the source named in the candidate's "
                                       "metadata, i.e. the FP32 model it was converted from)")
    p.add_argument("--backend", choices=["onnxruntime", "tensorrt", "torch"],
                   help="how to run the candidate (default: from its file type)")
    p.add_argument("--data", help="samples: .npz or a folder of .npy (default: seeded random inputs)")
    p.add_argument("--samples", type=int, default=16, help="random samples when no --data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--input", action="append", default=[], metavar="NAME:SHAPE[:DTYPE]",
                   help="inputs of a TorchScript model (as in the daemon config)")
    p.add_argument("--device", type=int, default=None, help="CUDA device for torch/tensorrt")
    p.add_argument("--mask-threshold", type=float, help="binarise outputs at this value for Dice / HD")
    p.add_argument("--spacing", type=lambda t: tuple(float(v) for v in t.split(",")),
                   help="voxel spacing for HD, e.g. 2.5,0.8,0.8")
    for flag in GATES:
        p.add_argument(f"--{flag.replace('_', '-')}", dest=flag, type=float, help="gate: fail beyond this")
    p.add_argument("--json", help="write the report here")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        report = run_validation(args)
    except (ValidateError, SampleError, MetricError, ValueError, OSError, ImportError) as exc:
        print(f"trtd validate: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # backends' own load errors
        print(f"trtd validate: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    print(render(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if report["passed"] else 1
