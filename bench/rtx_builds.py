"""TensorRT-RTX build times and engine sizes of the built-in models, and the INT8 variant's layers.

    python -m trtd.bench.rtx_builds [--repeat 3] [--targets sm86,sm89,sm120] [--markdown PATH] [--json PATH]
                                    [--int8-report PATH]

Each build is the real command a user types, `trtd build MODEL.onnx --library tensorrt-rtx
--target ... --profile x:1x...,OPT,MAX --cache-dir FRESH`, in a fresh cache folder each time (a
cached engine is not a build), timed from outside (wall time, the CLI's and the build process's
start included); the build process's own time is the `build_seconds` of the cache metadata.
The profile is the daemon's default one: batch 1..the model's default max batch, opt max/2.
resnet18's `trtd convert` FP16 and INT8 (Q/DQ, `--target tensorrt`: 8-bit weights) variants are
built the same way. With --int8-report, the INT8 variant's layer report (what `trtd build
--inspect` prints: TensorRT-RTX's builder report, in its engine inspector's wording) is written
there. No GPU is needed; on a GPU machine the same builds run (TensorRT-RTX does not use it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .lib.meta import command, machine, versions
from .lib.results import write_json, write_text

VARIANTS = ("resnet18-fp16", "resnet18-int8")
# How _variants makes them (calibration.npz: 8 seeded standard-normal 1x3x224x224 samples).
CONVERT_COMMANDS = (
    "trtd convert resnet18.onnx --precision fp16 -o resnet18-fp16.onnx",
    "trtd convert resnet18.onnx --precision int8 --calibration calibration.npz --target tensorrt -o resnet18-int8.onnx")


def _profile(onnx_path: str, max_batch: int) -> str:
    import onnx

    (value,) = onnx.load(onnx_path, load_external_data=False).graph.input
    rest = [d.dim_value for d in value.type.tensor_type.shape.dim[1:]]

    def shape(batch: int) -> str:
        return "x".join(str(d) for d in (batch, *rest))

    return f"{value.name}:{shape(1)},{shape(max(max_batch // 2, 1))},{shape(max_batch)}"


def _trtd(args: Sequence[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trtd.daemon", *args], capture_output=True, text=True,
                          timeout=900)


def _variants(folder: Path) -> dict[str, str]:
    """resnet18's FP16 and INT8 variants, made by `trtd convert` (its commands, as run)."""
    from trtd.daemon.builtin.onnx_models import builtin_model_path

    source = str(builtin_model_path("resnet18"))
    samples = folder / "calibration.npz"
    np.savez(samples, x=np.random.default_rng(0).standard_normal((8, 3, 224, 224), dtype=np.float32))
    made = {}
    for name, extra in (("resnet18-fp16", ["--precision", "fp16"]),
                        ("resnet18-int8", ["--precision", "int8", "--calibration", str(samples),
                                           "--target", "tensorrt"])):
        out = folder / f"{name}.onnx"
        result = _trtd(["convert", source, *extra, "-o", str(out), "--cache-dir", str(folder / "convert")])
        if result.returncode != 0:
            raise SystemExit(f"trtd convert failed: {result.stderr}")
        made[name] = str(out)
    return made


def build_once(onnx_path: str, name: str, profile: str, targets: str, inspect: bool = False) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="trtd-rtx-bench-") as cache:
        args = ["build", onnx_path, "--library", "tensorrt-rtx", "--target", targets, "--profile", profile,
                "--name", name, "--cache-dir", cache, *(["--inspect"] if inspect else [])]
        started = time.perf_counter()
        result = _trtd(args)
        wall = time.perf_counter() - started
        if result.returncode != 0 or not result.stdout.startswith("built: "):
            raise SystemExit(f"trtd {' '.join(args)} failed: {result.stdout}{result.stderr}")
        (meta,) = (Path(cache) / "engines").glob("*.json")
        metadata = json.loads(meta.read_text())
        return {"wall_s": wall, "build_seconds": metadata["build_seconds"], "bytes": metadata["bytes"],
                "compute_precisions": metadata.get("compute_precisions", {}),
                "command": ["trtd", *args[:-2 - inspect], "--cache-dir", "FRESH", *(["--inspect"] if inspect else [])],
                "stdout": result.stdout}


def run(repeat: int, targets: str, int8_report: str | None) -> dict[str, Any]:
    from trtd.daemon.builtin.onnx_models import BUILTIN_MODEL_NAMES, DEFAULT_MAX_BATCH, builtin_model_path

    rows = []
    with tempfile.TemporaryDirectory(prefix="trtd-rtx-variants-") as folder:
        models = {name: str(builtin_model_path(name)) for name in BUILTIN_MODEL_NAMES}
        models.update(_variants(Path(folder)))
        for name, path in models.items():
            profile = _profile(path, DEFAULT_MAX_BATCH["resnet18" if name in VARIANTS else name])
            runs = [build_once(path, name, profile, targets) for _ in range(repeat)]
            rows.append({"model": name, "profile": profile, "bytes": runs[0]["bytes"],
                         "wall_s": [round(r["wall_s"], 3) for r in runs],
                         "build_seconds": [r["build_seconds"] for r in runs],
                         "compute_precisions": runs[0]["compute_precisions"],
                         "command": " ".join(runs[0]["command"]).replace(path, f"{name}.onnx")})
            print(f"{name}: median wall {statistics.median(rows[-1]['wall_s']):.2f} s, "
                  f"{rows[-1]['bytes'] / 1e6:.2f} MB", file=sys.stderr)
        inspected = None
        if int8_report:
            path = models["resnet18-int8"]
            inspected = build_once(path, "resnet18-int8", _profile(path, DEFAULT_MAX_BATCH["resnet18"]),
                                   targets, inspect=True)
    return {"machine": machine(), "versions": versions(["tensorrt_rtx_cu13", "tensorrt_rtx_cu13_libs", "onnx",
                                                        "onnxruntime", "numpy"]),
            "targets": targets, "repeat": repeat, "rows": rows,
            "int8_layer_report": inspected["stdout"] if inspected else None}


def markdown(result: dict[str, Any], argv: Sequence[str]) -> str:
    m = result["machine"]
    lines = [f"# TensorRT-RTX builds of the built-in models ({result['targets']})", "",
             f"- date: {m['date']}; host {m['hostname']}, {m['platform']}, {m['cpu_model']}, "
             f"{m['logical_cores']} logical cores, load at start {m['load_average_at_start']}; {m['python']}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in result["versions"].items()),
             f"- command: `{command('trtd.bench.rtx_builds', argv)}`",
             f"- each build: a fresh cache folder, {result['repeat']} runs; wall = the `trtd build` command "
             f"from outside (its start included), build = the build process (cache metadata `build_seconds`)",
             "", "| model | profile (daemon default) | engine | wall median (runs) | build median | "
                 "convolutions/matmuls by input precision |",
             "|---|---|--:|---|--:|---|"]
    for row in result["rows"]:
        precisions = ", ".join(f"{n} {t}" for t, n in sorted(row["compute_precisions"].items())) or "-"
        lines.append(f"| {row['model']} | `{row['profile']}` | {row['bytes'] / 1e6:.2f} MB | "
                     f"{statistics.median(row['wall_s']):.2f} s ({', '.join(f'{w:.2f}' for w in row['wall_s'])}) | "
                     f"{statistics.median(row['build_seconds']):.2f} s | {precisions} |")
    lines += ["", "Commands (one per row; FRESH: a new empty folder), after the variants were made with", "",
              *(f"    {c}" for c in CONVERT_COMMANDS), ""]
    lines += [f"    {row['command']}" for row in result["rows"]]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trtd.bench.rtx_builds", description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--targets", default="sm86,sm89,sm120")
    p.add_argument("--markdown")
    p.add_argument("--json")
    p.add_argument("--int8-report", help="write the INT8 variant's `trtd build --inspect` output here")
    args = p.parse_args(argv)
    result = run(args.repeat, args.targets, args.int8_report)
    text = markdown(result, sys.argv[1:] if argv is None else argv)
    print(text)
    if args.markdown:
        write_text(args.markdown, text)
    if args.json:
        write_json(args.json, result)
    if args.int8_report and result["int8_layer_report"] is not None:
        write_text(args.int8_report, result["int8_layer_report"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
