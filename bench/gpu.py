"""GPU latency benchmark: in-process torch (eager, TorchScript, CUDA graph) against trtd on one GPU.

    python -m trtd.bench.gpu [--device cuda:0] [--iterations 200] [--json PATH] [--markdown PATH]

Workloads: the ResNet-18-shaped TorchScript model at batch 1 and 8, and the 32 MiB 3-D volume
model at batch 1, each FP32 and FP16, all built-in (seeded weights, generated locally). For each,
every row (the list: --help, or trtd.bench.lib.gpu_report.SYSTEMS) is timed in one run, in
interleaved blocks (trtd.bench.lib.interleave), with the CPU each side burns per request
(trtd.bench.lib.cpu_burn) and its output compared with in-process TorchScript (rel. L2). The
daemon serves each model eagerly and with CUDA graphs (cuda_graphs = true; FP16 with
precision = "fp16"); in-process, the graph is captured here (trtd.bench.lib.torch_graph). Then 4
concurrent clients (threads, each its own Client, zero-copy, b1) on the eager, graph, FP16 graph
and 2-instance graph ResNet-18, and issue 15's targets from the ResNet-18 b1 rows. The H2D /
compute / D2H split comes from CUDA events on both sides (the daemon reports its own).

Exit status 1 when an FP32 daemon row's output is further than 1e-4 (rel. L2) from TorchScript's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import textwrap
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .lib.accuracy import rel_l2
from .lib.cpu_burn import CpuMeter
from .lib.daemon import check_models_served, connect, started_daemon
from .lib.floor import FLOOR_DEFINITION, Floor, echo_server, infer_message
from .lib.gpu_report import (SYSTEMS, ConcurrencyResult, Row, WorkloadResult, add_overheads,
                             failed_checks, render, targets)
from .lib.interleave import Schedule, measure
from .lib.meta import command
from .lib.processes import private_endpoint
from .lib.progress import Progress
from .lib.results import write_json, write_text
from .lib.single_report import collect_meta
from .lib.stats import Summary
from .lib.systems import zero_copy_call
from .lib.thread_load import run_clients
from .lib.torch_cuda import PinnedForward, daemon_split
from .lib.torch_graph import GraphForward
from .lib.workloads import BenchModel

SPIN_US = 2000
CONCURRENT_CLIENTS = 4

# Served model -> (built-in model, settings). The eager models are today's; *_graph capture a
# CUDA graph per instance and batch size on its first request, and replay it after.
MODELS: dict[str, tuple[str, dict[str, Any]]] = {
    "resnet18": ("resnet18", {"max_batch": 8}),
    "volume3d": ("volume3d", {}),
    "resnet18_graph": ("resnet18", {"max_batch": 8, "cuda_graphs": True, "graph_batches": [1, 8]}),
    "resnet18_graph_fp16": ("resnet18", {"max_batch": 8, "cuda_graphs": True, "graph_batches": [1, 8],
                                         "precision": "fp16"}),
    "resnet18_graph_x2": ("resnet18", {"max_batch": 8, "cuda_graphs": True, "graph_batches": [1],
                                       "instances": 2}),
    "volume3d_graph": ("volume3d", {"cuda_graphs": True, "graph_batches": [1]}),
    "volume3d_graph_fp16": ("volume3d", {"cuda_graphs": True, "graph_batches": [1], "precision": "fp16"}),
    # The same graphs, the instance's thread sleeping on the GPU's completion instead of spinning.
    "resnet18_graph_block": ("resnet18", {"max_batch": 8, "cuda_graphs": True, "graph_batches": [1, 8],
                                          "gpu_wait": "block"}),
    "volume3d_graph_block": ("volume3d", {"cuda_graphs": True, "graph_batches": [1], "gpu_wait": "block"}),
    # The same graphs, the socket loop polling 300 µs for the client's next request before it sleeps.
    "resnet18_graph_idle_spin": ("resnet18", {"max_batch": 8, "cuda_graphs": True, "graph_batches": [1, 8],
                                              "idle_spin_us": 300}),
    "volume3d_graph_idle_spin": ("volume3d", {"cuda_graphs": True, "graph_batches": [1], "idle_spin_us": 300}),
}
IDLE_SPIN_MODEL = {"resnet18": "resnet18_graph_idle_spin", "volume3d": "volume3d_graph_idle_spin"}
GRAPH_MODEL = {"resnet18": "resnet18_graph", "volume3d": "volume3d_graph"}
BLOCKING_MODEL = {"resnet18": "resnet18_graph_block", "volume3d": "volume3d_graph_block"}
# Every workload's model has an FP16 graph row pair (copy, zero-copy) and an in-process FP16 graph.
FP16_MODEL = {"resnet18": "resnet18_graph_fp16", "volume3d": "volume3d_graph_fp16"}
# The concurrency rows: served model -> how it is served.
CONCURRENCY = {"resnet18": "eager, 1 instance", "resnet18_graph": "CUDA graph, 1 instance",
               "resnet18_graph_fp16": "CUDA graph FP16, 1 instance",
               "resnet18_graph_x2": "CUDA graph, 2 instances"}


@dataclass(frozen=True)
class Workload:
    model: str
    batch: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"{self.model} b{self.batch}"

    def bench_model(self) -> BenchModel:
        return BenchModel.builtin(self.model, self.input_shape, self.output_shape, heavy=True)


WORKLOADS = (
    Workload("resnet18", 1, (1, 3, 224, 224), (1, 5)),
    Workload("resnet18", 8, (8, 3, 224, 224), (8, 5)),
    Workload("volume3d", 1, (1, 1, 128, 256, 256), (1, 1, 128, 256, 256)),
)


@dataclass
class Bench:
    """What every workload's run uses."""

    torch: Any
    device: Any
    client: Any        # the SDK Client
    spin_client: Any   # a second Client with spin_us=SPIN_US
    floor: Floor
    schedule: Schedule
    progress: Progress
    daemon_pid: int


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value)  # ints, strings and lists of ints read the same in TOML


def _config(device: int, tmpdir: Path, models: dict[str, tuple[str, dict[str, Any]]] = MODELS) -> Path:
    lines = []
    for name, (builtin, settings) in models.items():
        lines += [f"[models.{name}]", f'path = "builtin:{builtin}"', 'backend = "torch"', f"device = {device}"]
        lines += [f"{key} = {_toml(value)}" for key, value in settings.items()]
    path = tmpdir / "gpu-bench.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def copy_bandwidths(torch: Any, device: Any, nbytes: int) -> dict[str, float]:
    """H2D GB/s from pinned and from pageable host memory, for reference."""
    out = {}
    dst = torch.empty(nbytes, dtype=torch.uint8, device=device)
    for kind, pinned in (("pinned", True), ("pageable", False)):
        src = torch.ones(nbytes, dtype=torch.uint8, pin_memory=pinned)
        for _ in range(3):
            dst.copy_(src, non_blocking=pinned)
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            dst.copy_(src, non_blocking=pinned)
        end.record()
        torch.cuda.synchronize()
        out[kind] = nbytes * 10 / (start.elapsed_time(end) / 1000) / 1e9
    return out


def eager_module(torch: Any, name: str, scripted: Any, device: Any, notes: list[str]) -> Any:
    """The built-in model as an eager module with the TorchScript file's weights."""
    from trtd.daemon.builtin.torch_models import eager_modules

    torch.manual_seed(0)  # build_torchscript's seed (as gpu_compare): the same weights if the load fails
    eager = eager_modules()[name]().eval().to(device)
    try:
        eager.load_state_dict(scripted.state_dict())
    except Exception as exc:  # the row is still timed; its rel. L2 shows what the weights are
        notes.append(f"in_process_eager: the TorchScript file's weights did not load into the eager "
                     f"module ({type(exc).__name__}: {exc}); it has torch.manual_seed(0)'s weights, equal "
                     f"to the file's only if this torch initializes as the one that wrote it")
    return eager


def in_process_systems(b: Bench, w: Workload, x: np.ndarray, notes: list[str]) -> dict[str, Any]:
    """The in-process rows, each with run(), output() and split()."""
    from trtd.daemon.builtin.torch_models import builtin_torchscript_path

    torch, device = b.torch, b.device
    path = str(builtin_torchscript_path(w.model))
    scripted = torch.jit.load(path, map_location=device).eval()
    systems = {
        "in_process_eager": PinnedForward(torch, eager_module(torch, w.model, scripted, device, notes),
                                          device, x, w.output_shape),
        "in_process": PinnedForward(torch, scripted, device, x, w.output_shape),
        "in_process_graph": GraphForward(torch, scripted, device, x),
    }
    if w.model in FP16_MODEL:
        half = torch.jit.load(path, map_location=device).eval().half()
        systems["in_process_graph_fp16"] = GraphForward(torch, half, device, x, dtype=torch.float16)
    return systems


def daemon_systems(b: Bench, w: Workload, x: np.ndarray) -> dict[str, tuple[Callable[[], Any], Any]]:
    """The daemon rows: system -> (the call, its handle)."""
    model = w.bench_model()
    feed = {"x": x}
    eager = b.client.model(w.model)
    graph = b.client.model(GRAPH_MODEL[w.model])
    spin = b.spin_client.model(GRAPH_MODEL[w.model])
    systems = {
        "daemon_copy": (lambda: eager(x), eager),
        "daemon_zero_copy": (zero_copy_call(eager, model, feed), eager),
        "daemon_graph_copy": (lambda: graph(x), graph),
        "daemon_graph_zero_copy": (zero_copy_call(graph, model, feed), graph),
        "daemon_graph_zero_copy_spin": (zero_copy_call(spin, model, feed), spin),
    }
    blocking = b.client.model(BLOCKING_MODEL[w.model])
    systems["daemon_graph_zero_copy_block"] = (zero_copy_call(blocking, model, feed), blocking)
    idle_spin = b.client.model(IDLE_SPIN_MODEL[w.model])
    systems["daemon_graph_zero_copy_idle_spin"] = (zero_copy_call(idle_spin, model, feed), idle_spin)
    both = b.spin_client.model(IDLE_SPIN_MODEL[w.model])
    systems["daemon_graph_zero_copy_both_spin"] = (zero_copy_call(both, model, feed), both)
    if w.model in FP16_MODEL:
        fp16 = b.client.model(FP16_MODEL[w.model])
        systems["daemon_graph_fp16_copy"] = (lambda: fp16(x), fp16)
        systems["daemon_graph_fp16_zero_copy"] = (zero_copy_call(fp16, model, feed), fp16)
    return systems


def _array(result: Any) -> np.ndarray:
    """The one output of an SDK call (an array, or a dict of views), as a copy."""
    if isinstance(result, dict):
        (result,) = result.values()
    return np.array(result, copy=True)


def bench_workload(w: Workload, b: Bench) -> WorkloadResult:
    x = np.random.default_rng(w.batch).standard_normal(w.input_shape, dtype=np.float32)
    notes: list[str] = []
    local = in_process_systems(b, w, x, notes)
    daemon = daemon_systems(b, w, x)
    # Outputs, once, before timing (a graph model's first request also captures its graph).
    outputs = {}
    for name, system in local.items():
        system.run()
        outputs[name] = system.output()
    for name, (call, _) in daemon.items():
        outputs[name] = _array(call())
    expected = outputs["in_process"]
    steps: dict[str, Callable[[], object]] = {"floor": b.floor.step(x, infer_message(w.bench_model()))}
    steps.update({name: system.run for name, system in local.items()})
    steps.update({name: call for name, (call, _) in daemon.items()})
    meter = CpuMeter(b.daemon_pid, skip_warmup=b.schedule.warmup > 0)
    b.progress.start(f"{w.label}: {b.schedule.iterations} timed x {len(steps)} systems")
    samples = measure(meter.wrap_all(steps), b.schedule, b.progress)
    meter.finish()
    b.progress.done()
    rows = {name: Row(system=name, latency=Summary.of(samples[name]),
                      cpu=meter.cost(name, uses_daemon=name.startswith("daemon_")),
                      rel_l2=rel_l2(outputs[name], expected) if name in outputs else None)
            for name in steps}
    splits = {name: local[name].split() for name in ("in_process", "in_process_graph")}
    for name in ("daemon_zero_copy", "daemon_graph_zero_copy"):
        splits[name] = daemon_split(*daemon[name])
    for name, system in local.items():
        if isinstance(system, GraphForward):
            system.close()
    result = WorkloadResult(workload=w.label, input_bytes=x.nbytes, rows=rows, splits=splits, notes=notes)
    add_overheads(result)
    return result


def bench_concurrency(b: Bench, endpoint: str, count: int, warmup: int) -> list[ConcurrencyResult]:
    """CONCURRENT_CLIENTS threads, each its own Client, zero-copy ResNet-18 b1, per CONCURRENCY model."""
    from trtd.sdk import TrtdError

    w = WORKLOADS[0]
    x = np.random.default_rng(w.batch).standard_normal(w.input_shape, dtype=np.float32)
    out = []
    for model, detail in CONCURRENCY.items():
        b.progress.start(f"{model}: {CONCURRENT_CLIENTS} clients x {count} requests")
        with ExitStack() as stack:
            calls = []
            for i in range(CONCURRENT_CLIENTS):
                client = stack.enter_context(connect(endpoint, None, name=f"trtd-bench-load-{i}"))
                calls.append(zero_copy_call(client.model(model), w.bench_model(), {"x": x}))
            try:
                result = ConcurrencyResult(model, detail, run_clients(calls, count=count, warmup=warmup,
                                                                      daemon_pid=b.daemon_pid))
            except TrtdError as exc:  # the daemon refused or failed: reported, the other rows still run
                why = " ".join(str(exc).split())  # one line: it goes into a table cell
                result = ConcurrencyResult(model, detail, None, f"{type(exc).__name__}: {why[:300]}")
        b.progress.done("done" if result.load is not None else f"failed: {result.error}")
        out.append(result)
    return out


def graph_status(status: Any) -> dict[str, dict[str, int]]:
    return {s.name: {"graphs": s.graphs, "graph_bytes": s.graph_bytes, "requests": s.requests,
                     "instances": s.instances} for s in status.models}


def _parser() -> argparse.ArgumentParser:
    rows = "\n".join(textwrap.fill(text, 100, initial_indent=f"  {name:28} ", subsequent_indent=" " * 31)
                     for name, text in SYSTEMS.items())
    parser = argparse.ArgumentParser(prog="python -m trtd.bench.gpu", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=f"rows of each workload:\n{rows}")
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--settle", type=int, default=2)
    parser.add_argument("--concurrent-requests", type=int, default=500,
                        help=f"timed requests per client in the {CONCURRENT_CLIENTS}-client rows")
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    import torch

    from trtd.daemon.builtin.torch_models import builtin_torchscript_path
    from trtd.daemon.system import cuda
    from trtd.sdk import Client

    index = int(args.device.split(":")[1]) if ":" in args.device else 0
    device = torch.device("cuda", index)
    for name in ("resnet18", "volume3d"):
        builtin_torchscript_path(name)  # generated here first; the daemon only reads them
    schedule = Schedule(iterations=args.iterations, warmup=args.warmup, block=args.block, settle=args.settle)
    progress = Progress()
    with ExitStack() as stack:
        tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trtd-gpu-bench-")))
        endpoint, daemon = stack.enter_context(started_daemon(tmpdir, ["--config", str(_config(index, tmpdir))]))
        floor_endpoint = stack.enter_context(echo_server(private_endpoint(tmpdir, "floor.sock")))
        floor = Floor(floor_endpoint, max(int(np.prod(w.input_shape)) * 4 for w in WORKLOADS))
        stack.callback(floor.close)
        client = stack.enter_context(connect(endpoint, daemon))
        check_models_served(client, MODELS)
        spin = stack.enter_context(Client(endpoint=endpoint, timeout=120.0, spin_us=SPIN_US, name="trtd-bench-spin"))
        torch.cuda.set_device(index)  # the current device: the in-process rows' streams are on it
        b = Bench(torch, device, client, spin, floor, schedule, progress, daemon.pid)
        results = [bench_workload(w, b) for w in WORKLOADS]
        concurrency = bench_concurrency(b, endpoint, args.concurrent_requests, args.warmup)
        status = client.status()
        extra = {"h2d_gbps": copy_bandwidths(torch, device, 32 * 2**20),
                 "host_registrations": status.host_registrations, "regions": status.regions,
                 "pinned_bytes": status.pinned_bytes, "requests": sum(s.requests for s in status.models),
                 "graphs": graph_status(status)}
    goals = targets(results[0])
    failed = failed_checks(results)
    meta = collect_meta([], [], None)
    meta["command"] = command("trtd.bench.gpu", argv)
    for key in ("onnxruntime_session", "iterations", "own_models"):
        meta.pop(key, None)
    meta["definitions"] = {
        "floor": FLOOR_DEFINITION, "rows": SYSTEMS,
        "method": "perf_counter_ns per call; warm-up discarded; timed iterations in round-robin blocks "
                  "across all rows of a workload (start rotated each round), each block after `settle` "
                  "untimed iterations; gc disabled while timing",
        "cpu": "per request, over each row's blocks (settle calls included): the client's calling thread "
               "(time.thread_time_ns) and the daemon process, all threads (/proc/PID/task/*/schedstat)",
        "concurrency": f"{CONCURRENT_CLIENTS} threads of this process, each its own Client, zero-copy "
                       f"ResNet-18 b1; throughput over the common window",
        "targets": "issue 15, from the ResNet-18 b1 rows of this run",
    }
    meta["gpu"] = {"name": cuda.device_name(index), "cuda": cuda.versions(), "torch": torch.__version__,
                   "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    meta["iterations"] = {"timed": args.iterations, "warmup": args.warmup, "block": args.block,
                          "settle": args.settle, "concurrent_clients": CONCURRENT_CLIENTS,
                          "concurrent_requests_per_client": args.concurrent_requests}
    meta["models"] = {name: {"builtin": builtin, **settings} for name, (builtin, settings) in MODELS.items()}
    report = render(results, goals, concurrency, extra)
    if failed:
        report += "\n\n## Failed checks\n\n" + "\n".join(f"- {f}" for f in failed)
    print(report)
    if args.json:
        write_json(args.json, {"meta": meta, "extra": extra, "targets": [t.to_json() for t in goals],
                               "results": [asdict(r) for r in results],
                               "concurrency": [asdict(c) for c in concurrency], "failed_checks": failed})
    if args.markdown:
        write_text(args.markdown,
                   f"# trtd GPU latency benchmark\n\n{meta['date']} on {meta['gpu']['name']} "
                   f"(CUDA driver {meta['gpu']['cuda']['driver']}, runtime {meta['gpu']['cuda']['runtime']}, "
                   f"torch {meta['gpu']['torch']}), {meta['logical_cores']} CPU cores.\n\n"
                   f"Command: `{meta['command']}`\n\n{report}\n\n## Environment\n\n```json\n"
                   f"{json.dumps(meta, indent=2)}\n```\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
