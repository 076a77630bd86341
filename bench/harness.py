"""`trtd bench`: the daemon side by side with in-process execution and peer servers, in one run.

    trtd bench [--models mlp,nearzero224,resnet18] [--model NAME=PATH [--shape NAME:INPUT=DIMS]]
               [--concurrency 1,2,4,8] [--duration S | --count N] [--peers triton] [--out DIR]
               [--json PATH] [--markdown PATH] [--plots DIR] [--compare OLD.json]
               [--device cuda:0]

Your own ONNX model: `--model NAME=PATH` (repeatable; alone it replaces the default built-ins,
add --models to run both). Its inputs come from the model; a dynamic first dimension is 1, any
other dynamic dimension needs `--shape NAME:INPUT=DIMS` (DIMS like 1x3x224x224). See
trtd.bench.workloads.

Two parts, both on this machine in this run:

1. Single client, interleaved (trtd.bench.latency): the floor (bare pyzmq round trip of the
   infer message + memcpy of the input into shared memory), in-process ONNX Runtime with the
   daemon's session settings, and the daemon through the SDK (copying and zero-copy paths),
   timed in round-robin blocks so machine noise falls on all alike. The overhead target
   (daemon p50 - in-process p50 <= 2x floor p50) is judged here.
2. Concurrency sweep (trtd.bench.sweep): 1, 2, 4, 8... client processes per system, fixed
   duration (or count) after a discarded warm-up, for in-process ONNX Runtime (one session per
   process), the daemon (both paths) and, with --peers triton, NVIDIA Triton via PyTriton over
   HTTP, gRPC, and gRPC with system shared memory. p50/p90/p99/max, throughput, the serving
   side's CPU time per request and RSS before/after (psutil). No request batching anywhere.

A peer that cannot run is reported with the reason, never dropped silently. With
--device cuda:N the GPU comparison runs instead (trtd.bench.gpu_compare).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

from . import latency as single
from .sweep import Point, PointFailed, run_point
from .workloads import own_models

TRTD_SYSTEMS = ("in_process", "daemon_copy", "daemon_zero_copy")
TRITON_SYSTEMS = ("triton_http", "triton_grpc", "triton_grpc_shm")
SYSTEM_LABELS = {
    "in_process": "in-process ORT",
    "daemon_copy": "trtd copy",
    "daemon_zero_copy": "trtd zero-copy",
    "triton_http": "Triton via PyTriton (python backend), HTTP",
    "triton_grpc": "Triton via PyTriton (python backend), gRPC",
    "triton_grpc_shm": "Triton via PyTriton (python backend), gRPC + shm",
}
DEFAULT_MODELS = "mlp,nearzero224,resnet18"
LATENCY_TARGET_VS_TRITON = 10.0     # trtd p50 at least this many times lower, small model
THROUGHPUT_TARGET_VS_TRITON = 5.0   # at 4 and 8 clients


@dataclass
class Target:
    name: str
    model: str
    value: float | None
    required: str
    met: bool | None  # None: could not be judged (a side is missing)
    detail: str = ""


@dataclass
class BenchReport:
    meta: dict
    single_client: list[single.ModelResult] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    unavailable: dict[str, str] = field(default_factory=dict)   # system -> why it did not run
    failed_points: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)

    def point(self, model: str, system: str, concurrency: int) -> Point | None:
        return next((p for p in self.points if (p.model, p.system, p.concurrency) ==
                     (model, system, concurrency)), None)

    def to_json(self) -> dict:
        return {"meta": self.meta,
                "single_client": {r.model: r.to_json() for r in self.single_client},
                "sweep": [p.to_json() for p in self.points],
                "unavailable": self.unavailable, "failed_points": self.failed_points,
                "targets": [asdict(t) for t in self.targets]}


# -- options -------------------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"every value must be at least 1, got {text!r}")
    return sorted(set(values))


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
        epilog="Floor = " + single.FLOOR_DEFINITION + ".")
    parser.add_argument("--models", default=None,
                        help=f"comma-separated subset of {','.join(single.MODELS)} (default: "
                             f"{DEFAULT_MODELS}; none when --model is given)")
    single.add_own_model_options(parser)
    parser.add_argument("--concurrency", type=_int_list, default=[1, 2, 4, 8], metavar="N,N,...",
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


# -- running -------------------------------------------------------------------------------------


def _progress_bar(total: int):
    from tqdm import tqdm

    return tqdm(total=total, unit="point", file=sys.stderr, dynamic_ncols=True,
                disable=None)  # None: only on a terminal, so logs stay clean


def _ort_settings() -> dict:
    from trtd.daemon.backends.onnxruntime import session_options

    options = session_options()
    return {"intra_op_num_threads": options.intra_op_num_threads,
            "inter_op_num_threads": options.inter_op_num_threads,
            "graph_optimization_level": str(options.graph_optimization_level)}


def run_sweep(report: BenchReport, args, plans: list[single.Plan]) -> None:
    import psutil

    duration = 0.0 if args.count else (args.duration if args.duration is not None else 2.0)
    count = args.count or 0
    models = [plan.model for plan in plans]
    for model in models:
        model.source()  # a built-in is generated here, once, not by every client process
    with ExitStack() as stack:
        tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trtd-bench-sweep-")))
        endpoint, daemon = stack.enter_context(single.started_daemon(plans, tmpdir))
        stack.enter_context(single.connect(endpoint, daemon))  # waits until it serves
        daemon_proc = psutil.Process(daemon.pid)
        triton = None
        if "triton" in args.peers:
            triton = _start_triton(report, args, models, stack)
        systems = list(TRTD_SYSTEMS) + (list(TRITON_SYSTEMS) if triton else [])
        bar = stack.enter_context(_progress_bar(len(models) * len(systems) * len(args.concurrency)))
        for model in models:
            for system in systems:
                if system.startswith("triton_") and not _triton_can_run(model):
                    report.failed_points.append(f"{model.name} {system}: not run: {TRITON_LIMIT}")
                    bar.update(len(args.concurrency))
                    continue
                for n in args.concurrency:
                    bar.set_description(f"{model.name} {system} x{n}")
                    if system.startswith("triton_"):
                        from .peers.triton import server_processes

                        argv = triton.worker_argv(system.removeprefix("triton_"), model.name,
                                                  model.input_shape, model.output_shape,
                                                  warmup=args.warmup, duration_s=duration, count=count)
                        env, serving = triton.worker_env(), (lambda: server_processes(triton))
                    else:
                        argv = [sys.executable, "-m", "trtd.bench.load_worker", "--system", system,
                                "--model", model.to_json(), "--endpoint", endpoint, "--warmup",
                                str(args.warmup), "--duration", str(duration), "--count", str(count)]
                        env = None
                        serving = (lambda: []) if system == "in_process" else (lambda: [daemon_proc])
                    try:
                        report.points.append(run_point(model.name, system, n, argv, env, serving,
                                                       single._start_process, single._stop_process))
                    except PointFailed as exc:
                        report.failed_points.append(f"{model.name} {system} x{n}: {exc}")
                    bar.update(1)


# The Triton peer's server and clients speak one float32 tensor "x" in and "y" out.
TRITON_LIMIT = "the Triton peer runs the built-in models only (one float32 input x, one output y)"


def _triton_can_run(model) -> bool:
    return not model.path and model.single_float32_io


def _start_triton(report: BenchReport, args, models, stack):
    from .peers import triton as peer

    env_dir = args.peer_env or peer.default_env_dir()
    models = [m for m in models if _triton_can_run(m)]
    if not models:
        for system in TRITON_SYSTEMS:
            report.unavailable[system] = TRITON_LIMIT
        return None
    try:
        python = peer.ensure_env(env_dir, log=lambda msg: print(f"trtd bench: {msg}", file=sys.stderr))
        specs = [{"name": m.name, "path": m.source(), "input": "x", "output": "y",
                  "shape": list(m.input_shape), "output_shape": list(m.output_shape)} for m in models]
        print("trtd bench: starting Triton (PyTriton)...", file=sys.stderr)
        server = stack.enter_context(peer.triton_server(python, specs, _ort_settings(),
                                                        single._start_process, single._stop_process))
    except peer.PeerUnavailable as exc:
        for system in TRITON_SYSTEMS:
            report.unavailable[system] = str(exc)
        return None
    report.meta["peers"] = {"triton": {**server.versions, "environment": str(env_dir),
                                       "how": "PyTriton: the model is ONNX Runtime (CPU, the daemon's "
                                              "session settings) called from Triton's python backend; "
                                              "no dynamic batching"}}
    return server


def judge_targets(report: BenchReport) -> None:
    for r in report.single_client:
        for path in single.DAEMON_SYSTEMS:
            o = r.overheads[path]
            report.targets.append(Target(
                name=f"overhead {path.removeprefix('daemon_')} <= {single.TARGET_RATIO:g}x floor",
                model=r.model, value=round(o.ratio_to_floor, 2), required=f"<= {single.TARGET_RATIO:g}",
                met=o.target_met, detail=f"overhead p50 {o.overhead_p50_us:.1f} µs, floor p50 "
                                         f"{r.floor_p50_us:.1f} µs"))
    small = "mlp"
    tri = report.point(small, "triton_grpc_shm", 1)
    ran_small = any(p.model == small for p in report.points)
    for path in ("daemon_copy", "daemon_zero_copy") if ran_small else ():
        ours = report.point(small, path, 1)
        value = (tri.latency.p50_us / ours.latency.p50_us) if tri and ours and tri.latency and ours.latency else None
        report.targets.append(Target(
            name=f"{SYSTEM_LABELS[path]} p50 >= {LATENCY_TARGET_VS_TRITON:g}x lower than Triton gRPC+shm",
            model=small, value=None if value is None else round(value, 1),
            required=f">= {LATENCY_TARGET_VS_TRITON:g}", met=None if value is None else value >= LATENCY_TARGET_VS_TRITON,
            detail="1 client, sweep" if value is not None else _missing(report, "triton_grpc_shm")))
    models = dict.fromkeys(p.model for p in report.points)
    for model in models:
        for n in (4, 8):
            ours = [p for s in ("daemon_copy", "daemon_zero_copy") if (p := report.point(model, s, n))]
            theirs = [p for s in TRITON_SYSTEMS if (p := report.point(model, s, n))]
            if not ours:
                continue
            best_ours = max(ours, key=lambda p: p.throughput_rps)
            best_theirs = max(theirs, key=lambda p: p.throughput_rps) if theirs else None
            value = best_ours.throughput_rps / best_theirs.throughput_rps if best_theirs and best_theirs.throughput_rps else None
            report.targets.append(Target(
                name=f"throughput with {n} clients >= {THROUGHPUT_TARGET_VS_TRITON:g}x Triton's",
                model=model, value=None if value is None else round(value, 2),
                required=f">= {THROUGHPUT_TARGET_VS_TRITON:g}",
                met=None if value is None else value >= THROUGHPUT_TARGET_VS_TRITON,
                detail=(f"best trtd path {SYSTEM_LABELS[best_ours.system]} {best_ours.throughput_rps:.0f}/s vs "
                        f"best Triton protocol {SYSTEM_LABELS[best_theirs.system]} {best_theirs.throughput_rps:.0f}/s"
                        if best_theirs else _missing(report, "triton_grpc"))))


def _missing(report: BenchReport, system: str) -> str:
    return "not judged: " + report.unavailable.get(system, f"{system} was not run (add --peers triton)")


def output_paths(args) -> dict[str, Path | None]:
    paths = {"json": args.json, "markdown": args.markdown, "plots": args.plots}
    if args.out:
        import socket

        stem = Path(args.out) / f"{datetime.now().date().isoformat()}-bench-{socket.gethostname()}"
        paths["json"] = paths["json"] or f"{stem}.json"
        paths["markdown"] = paths["markdown"] or f"{stem}.md"
        paths["plots"] = paths["plots"] or args.out
    return {k: Path(v) if v else None for k, v in paths.items()}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:
        argv = argv[1:]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
    if args.device != "cpu":
        if args.model or args.shape:
            print("trtd bench: --model/--shape run in the CPU comparison; --device runs the GPU "
                  "comparison on its own workloads", file=sys.stderr)
            return 2
        from .gpu_compare import main as gpu_main

        return gpu_main(args, argv)
    try:
        own = tuple(own_models(args.model, args.shape, single.MODELS))
        plans = single.make_plans(argparse.Namespace(models=single.selected_models(args, DEFAULT_MODELS),
                                                     iterations=args.iterations, warmup=None, block=None,
                                                     settle=single.DEFAULT_SETTLE), own)
    except ValueError as exc:
        print(f"trtd bench: {exc}", file=sys.stderr)
        return 2
    old = None
    if args.compare:
        try:
            old = json.loads(Path(args.compare).read_text())
            old["sweep"], old["single_client"]  # noqa: B018 - the shape --json writes
        except (OSError, ValueError, KeyError, TypeError) as exc:
            print(f"trtd bench: --compare {args.compare}: not a `trtd bench --json` file ({exc})",
                  file=sys.stderr)
            return 2

    from trtd.sdk import TrtdError

    from . import report as render

    meta = single.collect_meta(argv, plans, None)
    meta["command"] = shlex.join(["trtd", "bench", *argv])
    meta["sweep"] = {"concurrency": args.concurrency, "warmup_per_client": args.warmup,
                     "duration_s": None if args.count else (args.duration or 2.0), "count_per_client": args.count,
                     "clients": "separate processes; the daemon runs one instance per model (requests "
                                "of concurrent clients queue); no request batching in any system"}
    versions = meta["versions"]
    versions["tqdm"], versions["matplotlib"] = single._version("tqdm"), single._version("matplotlib")
    report = BenchReport(meta=meta)
    try:
        with single.sigterm_as_exit():
            if not args.no_single:
                report.single_client = single.run_benchmark(plans, None, single.Progress())
            run_sweep(report, args, plans)
    except KeyboardInterrupt:
        print("\ntrtd bench: interrupted", file=sys.stderr)
        return 130
    except (single.BenchError, TrtdError) as exc:
        print(f"trtd bench: {exc}", file=sys.stderr)
        return 3
    judge_targets(report)
    paths = output_paths(args)
    print(render.text(report))
    if old is not None:
        print(render.comparison(old, report))
    if paths["plots"]:
        paths["plots"].mkdir(parents=True, exist_ok=True)
        prefix = paths["markdown"].stem if paths["markdown"] else "bench"
        report.meta["plots"] = {m: str(p) for m, p in render.plots(report, paths["plots"], prefix).items()}
    if paths["json"]:
        paths["json"].parent.mkdir(parents=True, exist_ok=True)
        paths["json"].write_text(json.dumps(report.to_json(), indent=2, ensure_ascii=False) + "\n")
    if paths["markdown"]:
        paths["markdown"].parent.mkdir(parents=True, exist_ok=True)
        paths["markdown"].write_text(render.markdown(report, paths["markdown"].parent))
    mismatch = any(not r.correctness.ok for r in report.single_client)
    return 1 if mismatch else 0


if __name__ == "__main__":
    sys.exit(main())
