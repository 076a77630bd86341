"""`trtd bench`: the daemon side by side with in-process execution and peer servers, in one run.

    trtd bench [--models mlp,nearzero224,resnet18] [--model NAME=PATH [--shape NAME:INPUT=DIMS]]
               [--concurrency 1,2,4,8] [--duration S | --count N] [--peers triton] [--out DIR]
               [--json PATH] [--markdown PATH] [--plots DIR] [--compare OLD.json]
               [--device cuda:0]

Your own ONNX model: `--model NAME=PATH` (repeatable; alone it replaces the default built-ins,
add --models to run both). Its inputs come from the model; a dynamic first dimension is 1, any
other dynamic dimension needs `--shape NAME:INPUT=DIMS` (DIMS like 1x3x224x224). See
trtd.bench.lib.own_models.

Two parts, both on this machine in this run:

1. Single client, interleaved (as trtd.bench.latency): the floor (bare pyzmq round trip of the
   infer message + memcpy of the input into shared memory), in-process ONNX Runtime with the
   daemon's session settings, and the daemon through the SDK (copying and zero-copy paths),
   timed in round-robin blocks so machine noise falls on all alike. The overhead target
   (daemon p50 - in-process p50 <= 2x floor p50) is judged here.
2. Concurrency sweep (trtd.bench.sweep, driven by sweep_run.py): 1, 2, 4, 8... client
   processes per system, fixed duration (or count) after a discarded warm-up, for in-process
   ONNX Runtime (one session per process), the daemon (both paths) and, with --peers triton,
   NVIDIA Triton via PyTriton over HTTP, gRPC, and gRPC with system shared memory.
   p50/p90/p99/max, throughput, the serving side's CPU time per request and RSS before/after
   (psutil). No request batching anywhere.

`trtd bench --batching` runs the dynamic batching sweep instead (trtd.bench.batching: batch-1
requests from 1..16 client processes, batching on and off, Triton's batcher with --peers triton).

A peer that cannot run is reported with the reason, never dropped silently. With
--device cuda:N the GPU comparison runs instead (trtd.bench.gpu_compare).
"""

from __future__ import annotations

import argparse
import json
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

from ..lib import cli
from ..lib.daemon import BenchError
from ..lib.floor import FLOOR_DEFINITION
from ..lib.meta import version
from ..lib.own_models import own_models
from ..lib.plans import DEFAULT_SETTLE, add_own_model_options, make_plans, selected_models
from ..lib.processes import sigterm_as_exit
from ..lib.progress import Progress
from ..lib.results import dated_stem, write_json, write_text
from ..lib.single_client import run_benchmark
from ..lib.single_report import collect_meta
from ..lib.workloads import MODELS
from . import render
from .plots import plots
from .report import BenchReport
from .sweep_run import run_sweep
from .targets import judge_targets

DEFAULT_MODELS = "mlp,nearzero224,resnet18"


def _peer_list(text: str) -> list[str]:
    peers = [p.strip() for p in text.split(",") if p.strip()]
    unknown = [p for p in peers if p not in ("triton", "none")]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown peer(s) {', '.join(unknown)}; known: triton")
    return [p for p in peers if p != "none"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trtd bench", description=__doc__.split("\n\n")[0].split("`trtd bench`: ")[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Floor = " + FLOOR_DEFINITION + ".")
    parser.add_argument("--models", default=None,
                        help=f"comma-separated subset of {','.join(MODELS)} (default: "
                             f"{DEFAULT_MODELS}; none when --model is given)")
    add_own_model_options(parser)
    parser.add_argument("--concurrency", type=cli.int_list, default=[1, 2, 4, 8], metavar="N,N,...",
                        help="client processes per sweep point (default: 1,2,4,8)")
    run = parser.add_mutually_exclusive_group()
    run.add_argument("--duration", type=float, default=None, metavar="S",
                     help="timed seconds per sweep point (default: 2)")
    run.add_argument("--count", type=int, default=None, metavar="N",
                     help="timed requests per client per sweep point, instead of a duration")
    parser.add_argument("--warmup", type=int, default=20, metavar="N",
                        help="discarded requests per client before timing (default: 20)")
    parser.add_argument("--iterations", type=int, default=None, metavar="N",
                        help="timed iterations per system in the single-client part "
                             "(default: trtd.bench.latency's: 2000, 200 for heavy models)")
    parser.add_argument("--no-single", action="store_true", help="skip the single-client part")
    parser.add_argument("--peers", type=_peer_list, default=[], metavar="triton",
                        help="peer servers to compare with; installed on first use into their own "
                             "environment (see --peer-env)")
    parser.add_argument("--peer-env", type=Path, default=None, metavar="DIR",
                        help="where PyTriton's virtual environment lives (default: under the trtd "
                             "cache dir)")
    parser.add_argument("--json", metavar="PATH", help="write everything as JSON (input to --compare)")
    parser.add_argument("--markdown", metavar="PATH", help="write a Markdown report")
    parser.add_argument("--plots", metavar="DIR", help="write PNG plots (one per model) here")
    parser.add_argument("--out", metavar="DIR",
                        help="shorthand: DIR/<date>-bench-<host>.json, .md and -<model>.png")
    parser.add_argument("--compare", metavar="OLD.json", help="print the change against an earlier --json")
    parser.add_argument("--device", default="cpu",
                        help="cpu (default) or cuda:N for the GPU comparison (TorchScript / ONNX "
                             "Runtime / TensorRT backends)")
    return parser


def output_paths(args: argparse.Namespace) -> dict[str, Path | None]:
    """--json, --markdown and --plots, with --out filling in the ones not given."""
    paths = {"json": args.json, "markdown": args.markdown, "plots": args.plots}
    if args.out:
        stem = dated_stem(args.out, "bench", socket.gethostname())
        paths["json"] = paths["json"] or f"{stem}.json"
        paths["markdown"] = paths["markdown"] or f"{stem}.md"
        paths["plots"] = paths["plots"] or args.out
    return {k: Path(v) if v else None for k, v in paths.items()}


def _load_compare(path: str) -> dict[str, Any] | str:
    """The earlier --json to compare with, or why it cannot be."""
    try:
        old = json.loads(Path(path).read_text())
        old["sweep"], old["single_client"]  # noqa: B018 - the shape --json writes
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"--compare {path}: not a `trtd bench --json` file ({exc})"
    return old


def _meta(argv: list[str], args: argparse.Namespace, plans: list) -> dict[str, Any]:
    meta = collect_meta(argv, plans, None)
    meta["command"] = shlex.join(["trtd", "bench", *argv])
    meta["sweep"] = {"concurrency": args.concurrency, "warmup_per_client": args.warmup,
                     "duration_s": None if args.count else (args.duration or 2.0), "count_per_client": args.count,
                     "clients": "separate processes; the daemon runs one instance per model (requests "
                                "of concurrent clients queue); no request batching in any system"}
    meta["versions"]["tqdm"], meta["versions"]["matplotlib"] = version("tqdm"), version("matplotlib")
    return meta


def _write(report: BenchReport, paths: dict[str, Path | None]) -> None:
    plots_dir, json_path, md_path = paths["plots"], paths["json"], paths["markdown"]
    if plots_dir:
        plots_dir.mkdir(parents=True, exist_ok=True)
        prefix = md_path.stem if md_path else "bench"
        report.meta["plots"] = {m: str(p) for m, p in plots(report, plots_dir, prefix).items()}
    if json_path:
        write_json(json_path, report.to_json())
    if md_path:
        write_text(md_path, render.markdown(report, md_path.parent))


def main(argv: list[str] | None = None) -> int:
    argv = cli.argv_list(argv)
    if "--batching" in argv:  # the dynamic batching sweep: its own options (trtd.bench.batching)
        from ..batching import main as batching_main

        return batching_main(argv)
    args = cli.parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    if args.device != "cpu":
        if args.model or args.shape:
            print("trtd bench: --model/--shape run in the CPU comparison; --device runs the GPU "
                  "comparison on its own workloads", file=sys.stderr)
            return 2
        from ..gpu_compare import main as gpu_main

        return gpu_main(args, argv)
    try:
        own = tuple(own_models(args.model, args.shape, MODELS))
        plans = make_plans(argparse.Namespace(models=selected_models(args, DEFAULT_MODELS),
                                              iterations=args.iterations, warmup=None, block=None,
                                              settle=DEFAULT_SETTLE), own)
    except ValueError as exc:
        print(f"trtd bench: {exc}", file=sys.stderr)
        return 2
    old = _load_compare(args.compare) if args.compare else None
    if isinstance(old, str):
        print(f"trtd bench: {old}", file=sys.stderr)
        return 2

    from trtd.sdk import TrtdError

    report = BenchReport(meta=_meta(argv, args, plans))
    try:
        with sigterm_as_exit():
            if not args.no_single:
                report.single_client = run_benchmark(plans, None, Progress())
            run_sweep(report, args, plans)
    except KeyboardInterrupt:
        print("\ntrtd bench: interrupted", file=sys.stderr)
        return 130
    except (BenchError, TrtdError) as exc:
        print(f"trtd bench: {exc}", file=sys.stderr)
        return 3
    judge_targets(report)
    print(render.text(report))
    if old is not None:
        print(render.comparison(old, report))
    _write(report, output_paths(args))
    mismatch = any(not r.correctness.ok for r in report.single_client)
    return 1 if mismatch else 0
