"""`trtd bench --batching`: dynamic batching across client processes, on and off, and Triton's.

    trtd bench --batching [--models mlp] [--concurrency 1,2,4,8,16] [--duration S] [--warmup N]
                          [--max-queue-delay-us US] [--peers triton] [--device cpu|cuda:N]
                          [--out DIR | --json P --markdown P --plots DIR]

N client processes (1, 2, 4, 8, 16) each send batch-1 requests back to back to one model; every
point is trtd.bench.sweep.run_point (separate processes released together, throughput over
the common window, p50/p99 per request). Systems, all in this run:
- CPU: the daemon with the model unbatched and with `dynamic_batching = true` (one daemon, the
  model served under two names), and with --peers triton Triton through PyTriton with and
  without its dynamic batcher (`DynamicBatcher(max_queue_delay_microseconds=...)`, the same
  delay and ONNX Runtime settings), over gRPC.
- GPU (--device cuda:N): ResNet-18 on the TorchScript backend, CUDA graphs off and on
  (graph_batches = preferred_batch_sizes = 1, 2, 4, 8, 16), each unbatched and batched.
The targets of issue 18 are judged from the points (see `targets`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from .lib import cli
from .lib.daemon import connect, started_daemon
from .lib.meta import machine, onnxruntime_settings, versions
from .lib.plotting import pyplot
from .lib.progress import progress_bar
from .lib.results import write_json, write_text
from .lib.workloads import MODELS, BenchModel
from .sweep import Point, PointFailed, run_point

GPU_BUCKETS = [1, 2, 4, 8, 16]
# The batched daemon's delay by default: the daemon's own defaults (config DEFAULT_QUEUE_DELAY_US).
DEFAULT_DELAY_US = {"cpu": 0, "gpu": 500}
# On the CPU also the daemon waiting this long for company, and Triton's batcher's delay.
WAIT_DELAY_US = 200


@dataclasses.dataclass(frozen=True)
class Variant:
    """One served configuration of the model: a system of the sweep."""

    system: str            # the report's name, e.g. "trtd_batched"
    served: str            # the model's name on the server
    settings: dict[str, Any]
    peer: str = "trtd"     # or "triton"
    batched: bool = False


def variants(model: BenchModel, device: str, delay_us: int, peers: list[str]) -> list[Variant]:
    if device == "cpu":
        batching = {"dynamic_batching": True, "max_batch": 64}
        out = [Variant("trtd", model.name, {}),
               Variant("trtd_batched", f"{model.name}_batched", {**batching, "max_queue_delay_us": delay_us},
                       batched=True)]
        if delay_us != WAIT_DELAY_US:  # the same daemon waiting for company, to choose the default
            out.append(Variant("trtd_batched_wait", f"{model.name}_batched_wait",
                               {**batching, "max_queue_delay_us": WAIT_DELAY_US}, batched=True))
        if "triton" in peers:
            out += [Variant("triton", f"{model.name}", {}, peer="triton"),
                    Variant("triton_batched", f"{model.name}_batched",
                            {"max_batch_size": 64, "max_queue_delay_us": WAIT_DELAY_US}, peer="triton",
                            batched=True)]
        return out
    index = int(device.split(":")[1]) if ":" in device else 0
    gpu = {"backend": "torch", "device": index, "max_batch": GPU_BUCKETS[-1]}
    graphs = {**gpu, "cuda_graphs": True, "graph_batches": GPU_BUCKETS}
    batching = {"dynamic_batching": True, "max_queue_delay_us": delay_us}
    return [Variant("trtd_eager", f"{model.name}_eager", gpu),
            Variant("trtd_eager_batched", f"{model.name}_eager_batched", {**gpu, **batching}, batched=True),
            Variant("trtd_graphs", f"{model.name}_graphs", graphs),
            Variant("trtd_graphs_batched", f"{model.name}_graphs_batched",
                    {**graphs, **batching, "preferred_batch_sizes": GPU_BUCKETS}, batched=True)]


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)


def daemon_config(model: BenchModel, served: list[Variant], path: Path) -> Path:
    lines = []
    for v in served:
        lines += [f"[models.{v.served}]", f"path = {_toml(model.path or 'builtin:' + model.name)}"]
        lines += [f"{key} = {_toml(value)}" for key, value in v.settings.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _start_triton(model: BenchModel, served: list[Variant], stack: ExitStack, report: dict) -> Any:
    from .peers import triton as peer

    try:
        python = peer.ensure_env(peer.default_env_dir(), log=lambda msg: print(f"trtd bench: {msg}", file=sys.stderr))
        specs = []
        for v in served:
            spec = {"name": v.served, "path": model.source(), "input": "x", "output": "y",
                    "shape": list(model.input_shape), "output_shape": list(model.output_shape)}
            if v.batched:
                spec["batching"] = {"max_batch_size": v.settings["max_batch_size"],
                                    "max_queue_delay_us": v.settings["max_queue_delay_us"]}
            specs.append(spec)
        print("trtd bench: starting Triton (PyTriton)...", file=sys.stderr)
        server = stack.enter_context(peer.triton_server(python, specs, onnxruntime_settings()))
    except peer.PeerUnavailable as exc:
        for v in served:
            report["unavailable"][v.system] = str(exc)
        return None
    report["meta"]["peers"] = {"triton": {**server.versions, "how": (
        "PyTriton 0.7.0's bundled tritonserver; the model is ONNX Runtime (CPU, the daemon's session "
        "settings) behind Triton's python backend; clients over gRPC; the batched model uses "
        "Triton's dynamic batcher with @batch stacking the merged requests")}}
    return server


def run(args: argparse.Namespace, argv: list[str]) -> dict:
    import psutil

    device = "cpu" if args.device == "cpu" else args.device
    kind = "cpu" if device == "cpu" else "gpu"
    delay = args.max_queue_delay_us if args.max_queue_delay_us is not None else DEFAULT_DELAY_US[kind]
    names = args.models.split(",") if args.models else (["mlp"] if kind == "cpu" else ["resnet18"])
    duration = args.duration if args.duration is not None else 2.0
    report: dict[str, Any] = {"meta": {
        "command": shlex.join(["trtd", "bench", *argv]), "machine": machine(), "device": device,
        "versions": versions(["trtd", "onnxruntime", "numpy", "pyzmq", "torch", "matplotlib"]),
        "onnxruntime_session": onnxruntime_settings(), "max_queue_delay_us": delay,
        "duration_s": duration, "warmup_per_client": args.warmup, "concurrency": args.concurrency,
        "clients": "separate processes, each sending batch-1 requests back to back (copying SDK path "
                   "for trtd, gRPC for Triton)"},
        "points": [], "failed_points": [], "unavailable": {}}
    with ExitStack() as stack:
        tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trtd-bench-batching-")))
        for name in names:
            model = MODELS[name]
            model.source()
            if kind == "gpu":
                from trtd.daemon.builtin.torch_models import builtin_torchscript_path

                builtin_torchscript_path(name)  # generated once here; the daemon only reads it
            chosen = variants(model, device, delay, args.peers)
            ours = [v for v in chosen if v.peer == "trtd"]
            workdir = tmpdir / name
            workdir.mkdir()
            config = daemon_config(model, ours, workdir / "d.toml")
            endpoint, daemon = stack.enter_context(started_daemon(workdir, ["--config", str(config)]))
            client = stack.enter_context(connect(endpoint, daemon))
            daemon_proc = psutil.Process(daemon.pid)
            theirs = [v for v in chosen if v.peer == "triton"]
            triton = _start_triton(model, theirs, stack, report) if theirs else None
            bar = stack.enter_context(progress_bar(len(chosen) * len(args.concurrency)))
            # Client count first, then every system at that count: the machine's load drifts over
            # a run (a shared VM), and it then falls on all systems of a point alike.
            points: list[Point] = []
            for n in args.concurrency:
                for v in chosen:
                    if v.peer == "triton" and triton is None:
                        bar.update(1)
                        continue
                    bar.set_description(f"{name} {v.system} x{n}")
                    if v.peer == "triton":
                        from .peers.triton import server_processes

                        wargv = triton.worker_argv("grpc", v.served, model.input_shape, model.output_shape,
                                                   warmup=args.warmup, duration_s=duration, count=0)
                        env, serving = triton.worker_env(), (lambda: server_processes(triton))
                    else:
                        served = dataclasses.replace(model, name=v.served)
                        wargv = [sys.executable, "-m", "trtd.bench.load_worker", "--system", "daemon_copy",
                                 "--model", served.to_json(), "--endpoint", endpoint, "--warmup",
                                 str(args.warmup), "--duration", str(duration), "--count", "0"]
                        env, serving = None, (lambda: [daemon_proc])
                    try:
                        points.append(run_point(name, v.system, n, wargv, env, serving))
                    except PointFailed as exc:
                        report["failed_points"].append(f"{name} {v.system} x{n}: {exc}")
                    bar.update(1)
            order = [v.system for v in chosen]
            report["points"] += sorted(points, key=lambda p: (order.index(p.system), p.concurrency))
            report["daemon_status"] = [
                {k: getattr(s, k) for k in ("name", "batching", "batches", "batch_mean", "batch_max",
                                            "queue_delay_p50_us", "queue_delay_p99_us", "requests",
                                            "errors", "graphs")}
                for s in client.status().models]
    report["meta"]["wait_delay_us"] = WAIT_DELAY_US if kind == "cpu" else None
    report["targets"] = targets(report["points"], delay, kind)
    return report


def _by(points: list[Point]) -> dict[tuple[str, str, int], Point]:
    return {(p.model, p.system, p.concurrency): p for p in points}


def targets(points: list[Point], delay_us: int, kind: str) -> list[dict[str, Any]]:
    """Issue 18's targets, each with its figures and whether it was met."""
    by, out = _by(points), []
    models = sorted({p.model for p in points})
    for model in models:
        counts = sorted({p.concurrency for p in points if p.model == model})
        pairs = ([("trtd", "trtd_batched")] if kind == "cpu" else
                 [("trtd_eager", "trtd_eager_batched"), ("trtd_graphs", "trtd_graphs_batched")])
        for off, on in pairs:
            a, b = by.get((model, off, 1)), by.get((model, on, 1))
            if a and b and a.latency and b.latency:
                cost = b.latency.p50_us / a.latency.p50_us - 1
                out.append({"target": f"{model}: one client, {on} p50 costs <= 10% against {off}",
                            "figures": f"p50 {b.latency.p50_us:.0f} µs vs {a.latency.p50_us:.0f} µs "
                                       f"({cost:+.1%})", "met": cost <= 0.10})
        if kind == "cpu":
            for n in counts:
                ours, theirs = by.get((model, "trtd_batched", n)), by.get((model, "triton_batched", n))
                if ours and theirs:
                    out.append({"target": f"{model} x{n}: trtd batched throughput >= Triton batched",
                                "figures": f"{ours.throughput_rps:.0f} vs {theirs.throughput_rps:.0f} req/s "
                                           f"({ours.throughput_rps / max(theirs.throughput_rps, 1e-9):.2f}x)",
                                "met": ours.throughput_rps >= theirs.throughput_rps})
        else:
            top = max(counts) if counts else 0
            for off, on in pairs:
                a, b, one = by.get((model, off, top)), by.get((model, on, top)), by.get((model, on, 1))
                alone = by.get((model, off, 1))
                if a and b:
                    ratio = b.throughput_rps / max(a.throughput_rps, 1e-9)
                    out.append({"target": f"{model} x{top}: {on} throughput >= 3x {off} (goal 5x)",
                                "figures": f"{b.throughput_rps:.0f} vs {a.throughput_rps:.0f} req/s ({ratio:.2f}x)",
                                "met": ratio >= 3})
                if b and b.latency and alone and alone.latency:
                    bound = 2 * alone.latency.p99_us + delay_us
                    out.append({"target": f"{model} x{top}: {on} p99 <= 2x single-client p99 ({off}) "
                                          f"+ max_queue_delay_us",
                                "figures": f"p99 {b.latency.p99_us:.0f} µs vs bound {bound:.0f} µs "
                                           f"(2 x {alone.latency.p99_us:.0f} + {delay_us})",
                                "met": b.latency.p99_us <= bound})
                del one
    return out


def markdown(report: dict, plot_name: str | None) -> str:
    meta = report["meta"]
    lines = [f"# Dynamic batching sweep ({meta['device']})", "",
             f"- Date: {meta['machine']['date']}; machine: {meta['machine']['hostname']}, "
             f"{meta['machine']['cpu_model']}, {meta['machine']['logical_cores']} logical cores, "
             f"{meta['machine']['platform']}",
             f"- Command: `{meta['command']}`",
             f"- Versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
             f"- ONNX Runtime session: {meta['onnxruntime_session']}",
             f"- max_queue_delay_us = {meta['max_queue_delay_us']} (trtd_batched)"
             + (f", {meta['wait_delay_us']} (trtd_batched_wait, triton_batched)" if meta.get("wait_delay_us") else "")
             + f"; {meta['duration_s']} s per point after "
             f"{meta['warmup_per_client']} warm-up requests per client; {meta['clients']}"]
    if "peers" in meta:
        lines.append(f"- Triton: {meta['peers']['triton']}")
    lines += ["", "| model | system | clients | req/s | p50 µs | p99 µs | errors |", "|---|---|---|---|---|---|---|"]
    for p in report["points"]:
        lat = p.latency
        lines.append(f"| {p.model} | {p.system} | {p.concurrency} | {p.throughput_rps:.0f} | "
                     f"{lat.p50_us:.0f} | {lat.p99_us:.0f} | {p.errors} |" if lat else
                     f"| {p.model} | {p.system} | {p.concurrency} | 0 | - | - | {p.errors} |")
    if report.get("daemon_status"):
        lines += ["", "Daemon status after the sweep (batches per model):", "",
                  "| served as | batching | batches | mean | max | queue delay p50 / p99 µs |",
                  "|---|---|---|---|---|---|"]
        for s in report["daemon_status"]:
            lines.append(f"| {s['name']} | {s['batching'] or 'off'} | {s['batches']} | {s['batch_mean']:.2f} | "
                         f"{s['batch_max']} | {s['queue_delay_p50_us']:.0f} / {s['queue_delay_p99_us']:.0f} |")
    lines += ["", "## Targets (issue 18)", ""]
    for t in report["targets"]:
        lines.append(f"- {'MET' if t['met'] else 'NOT MET'}: {t['target']}: {t['figures']}")
    for system, why in report["unavailable"].items():
        lines.append(f"- {system} not run: {why}")
    for failed in report["failed_points"]:
        lines.append(f"- point failed: {failed}")
    if plot_name:
        lines += ["", f"![throughput and latency per client count]({plot_name})"]
    return "\n".join(lines) + "\n"


def plot(report: dict, path: Path) -> Path:
    """Per model a row: throughput, and p50/p99 latency, against client processes."""
    plt = pyplot()
    points = report["points"]
    models = list(dict.fromkeys(p.model for p in points))
    fig, axes = plt.subplots(len(models), 2, figsize=(12, 4.5 * len(models)), squeeze=False)
    for (ax_t, ax_l), model in zip(axes, models):
        mine_all = [p for p in points if p.model == model]
        for system in dict.fromkeys(p.system for p in mine_all):
            mine = sorted((p for p in mine_all if p.system == system and p.latency), key=lambda p: p.concurrency)
            xs = [p.concurrency for p in mine]
            ax_t.plot(xs, [p.throughput_rps for p in mine], marker="o", label=system)
            line, = ax_l.plot(xs, [p.latency.p50_us / 1000 for p in mine], marker="o", label=f"{system} p50")
            ax_l.plot(xs, [p.latency.p99_us / 1000 for p in mine], marker="x", linestyle="--",
                      color=line.get_color(), label=f"{system} p99")
        for ax in (ax_t, ax_l):
            ax.set_xscale("log", base=2)
            ax.set_xlabel("client processes (batch-1 requests)")
            ax.grid(True, alpha=0.3)
        ax_t.set_ylabel(f"{model}: requests / s")
        ax_t.set_yscale("log")
        ax_l.set_ylabel(f"{model}: latency (ms)")
        ax_l.set_yscale("log")
        ax_t.legend(fontsize=8)
        ax_l.legend(fontsize=6, ncol=2)
    meta = report["meta"]
    fig.suptitle(f"dynamic batching, {meta['device']}, {meta['machine']['cpu_model']}, "
                 f"{meta['machine']['logical_cores']} cores, max_queue_delay_us={meta['max_queue_delay_us']} "
                 f"({meta['machine']['date'][:10]})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_json(json_path: Path, png_path: Path) -> Path:
    """The plot of a report written earlier (its --out STEM.json)."""
    from types import SimpleNamespace

    report = json.loads(Path(json_path).read_text())
    report["points"] = [SimpleNamespace(**{**p, "latency": SimpleNamespace(**p["latency"]) if p["latency"] else None})
                        for p in report["points"]]
    return plot(report, png_path)


def to_json(report: dict) -> dict:
    return {**report, "points": [p.to_json() for p in report["points"]]}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trtd bench --batching", description=__doc__.split("\n\n")[0])
    parser.add_argument("--batching", action="store_true", help="(selects this sweep in `trtd bench`)")
    parser.add_argument("--models", default=None, help="built-in models (default: mlp on the CPU, resnet18 on a GPU)")
    parser.add_argument("--concurrency", type=cli.int_list, default=[1, 2, 4, 8, 16], metavar="N,N,...")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="timed seconds per point (default 2)")
    parser.add_argument("--warmup", type=int, default=20, metavar="N")
    parser.add_argument("--max-queue-delay-us", type=int, default=None, metavar="US",
                        help=f"the batched systems' delay (default: {DEFAULT_DELAY_US})")
    parser.add_argument("--peers", type=lambda s: [p for p in s.split(",") if p and p != "none"], default=[],
                        metavar="triton")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda:N")
    parser.add_argument("--out", metavar="STEM", help="write STEM.json, STEM.md and STEM.png")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = cli.argv_list(argv)
    args = cli.parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    report = run(args, argv)
    text = markdown(report, None)
    print(text)
    if args.out:
        stem = Path(args.out)
        stem.parent.mkdir(parents=True, exist_ok=True)
        png = plot(report, stem.with_suffix(".png"))
        write_text(stem.with_suffix(".md"), markdown(report, png.name))
        write_json(stem.with_suffix(".json"), to_json(report), default=str)
    return 0 if not report["failed_points"] else 1


if __name__ == "__main__":
    sys.exit(main())
