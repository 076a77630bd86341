"""GPU latency benchmark: TorchScript in-process on CUDA versus the same model through trtd.

    python -m trtd.bench.gpu [--device cuda:0] [--iterations 200] [--json PATH] [--markdown PATH]

Workloads: the ResNet-18-shaped TorchScript model at batch 1 and 8, and the
32 MiB 3-D volume model, all built-in (seeded weights, generated locally).
Systems, timed in interleaved blocks exactly as trtd.bench.latency does (trtd.bench.lib.interleave):

floor             the project-wide floor (trtd.bench.lib.floor): a bare pyzmq
                  round trip of the infer message plus a memcpy of the input into
                  shared memory, measured in this run on this machine;
in_process        torch in this process on the same device: input from pinned host
                  memory (H2D, non_blocking), forward, D2H into pinned memory,
                  torch.cuda.synchronize();
daemon_copy       handle(x) through the SDK (copy into the region, copy out);
daemon_zero_copy  handle.run_zero_copy() (input written once beforehand).

The H2D / compute / D2H split comes from CUDA events on both sides (the daemon
reports its own per request). "No host staging copy" is shown, not assumed:
the daemon's host_registrations counter (one cudaHostRegister per region, never
per request) and the H2D bandwidth the daemon achieves from the region,
compared with pinned and pageable copies measured here.
"""


from __future__ import annotations

import argparse
import json
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .lib.daemon import connect, started_daemon
from .lib.floor import Floor, echo_server, infer_message
from .lib.interleave import Schedule, measure
from .lib.meta import command
from .lib.processes import private_endpoint
from .lib.progress import Progress
from .lib.results import write_json, write_text
from .lib.single_report import collect_meta
from .lib.stats import Summary
from .lib.torch_cuda import PinnedForward, Split, median_split
from .lib.workloads import BenchModel

TARGET_RATIO = 2.0


@dataclass(frozen=True)
class Workload:
    model: str
    batch: int
    input_shape: tuple[int, ...]
    output_shape: tuple[int, ...]

    @property
    def label(self) -> str:
        return f"{self.model} b{self.batch}"


WORKLOADS = (
    Workload("resnet18", 1, (1, 3, 224, 224), (1, 5)),
    Workload("resnet18", 8, (8, 3, 224, 224), (8, 5)),
    Workload("volume3d", 1, (1, 1, 128, 256, 256), (1, 1, 128, 256, 256)),
)


@dataclass
class WorkloadResult:
    workload: str
    input_bytes: int
    systems: dict[str, Summary]
    overhead_us: dict[str, float]
    ratio_to_floor: dict[str, float]
    target_met: dict[str, bool]
    split_in_process: Split
    split_daemon: Split
    rel_l2_error: float
    daemon_h2d_gbps: float
    notes: list[str] = field(default_factory=list)


def _config(device: int, tmpdir: Path) -> Path:
    path = tmpdir / "gpu-bench.toml"
    path.write_text(
        f"[models.resnet18]\npath = \"builtin:resnet18\"\nbackend = \"torch\"\ndevice = {device}\nmax_batch = 8\n"
        f"[models.volume3d]\npath = \"builtin:volume3d\"\nbackend = \"torch\"\ndevice = {device}\n")
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


def bench_workload(w: Workload, client: Any, floor: Floor, schedule: Schedule, torch: Any, device: Any,
                   progress: Progress) -> WorkloadResult:
    from trtd.daemon.builtin.torch_models import builtin_torchscript_path

    x = np.random.default_rng(w.batch).standard_normal(w.input_shape, dtype=np.float32)
    module = torch.jit.load(str(builtin_torchscript_path(w.model)), map_location=device).eval()
    local = PinnedForward(torch, module, device, x, w.output_shape)
    handle = client.model(w.model)
    local.run()
    expected = local.output()
    got = handle(x)
    rel = float(np.linalg.norm(got - expected) / np.linalg.norm(expected))
    slots = handle.zero_copy_inputs({"x": w.input_shape})
    slots["x"][...] = x
    del slots
    daemon_splits = []

    def zero_copy() -> None:
        handle.run_zero_copy()
        t = handle.last_timing
        daemon_splits.append((t.h2d_us, t.compute_us, t.d2h_us))

    bench_model = BenchModel.builtin(w.model, w.input_shape, w.output_shape, heavy=True)
    steps = {"floor": floor.step(x, infer_message(bench_model)), "in_process": local.run,
             "daemon_copy": lambda: handle(x), "daemon_zero_copy": zero_copy}
    progress.start(f"{w.label}: {schedule.iterations} timed x {len(steps)} systems")
    samples = measure(steps, schedule, progress)
    progress.done()
    systems = {k: Summary.of(v) for k, v in samples.items()}
    floor_p50 = systems["floor"].p50_us
    overhead = {k: systems[k].p50_us - systems["in_process"].p50_us for k in ("daemon_copy", "daemon_zero_copy")}
    split_daemon = median_split(daemon_splits[-schedule.iterations:])
    return WorkloadResult(
        workload=w.label, input_bytes=x.nbytes, systems=systems, overhead_us=overhead,
        ratio_to_floor={k: v / floor_p50 for k, v in overhead.items()},
        target_met={k: v / floor_p50 <= TARGET_RATIO for k, v in overhead.items()},
        split_in_process=local.split(), split_daemon=split_daemon,
        rel_l2_error=rel,
        daemon_h2d_gbps=x.nbytes / (split_daemon.h2d_us / 1e6) / 1e9 if split_daemon.h2d_us else 0.0,
    )


def render(results: list[WorkloadResult], extra: dict[str, Any]) -> str:
    lines = ["| workload | floor p50 | in-process p50 | daemon copy p50 | daemon zero-copy p50 | overhead zero-copy (× floor) | overhead copy (× floor) | rel. L2 vs in-process |",
             "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in results:
        s = r.systems
        lines.append(
            f"| {r.workload} | {s['floor'].p50_us:.0f} | {s['in_process'].p50_us:.0f} | "
            f"{s['daemon_copy'].p50_us:.0f} | {s['daemon_zero_copy'].p50_us:.0f} | "
            f"{r.overhead_us['daemon_zero_copy']:.0f} µs ({r.ratio_to_floor['daemon_zero_copy']:.2f}×, "
            f"{'met' if r.target_met['daemon_zero_copy'] else 'missed'}) | "
            f"{r.overhead_us['daemon_copy']:.0f} µs ({r.ratio_to_floor['daemon_copy']:.2f}×, "
            f"{'met' if r.target_met['daemon_copy'] else 'missed'}) | {r.rel_l2_error:.1e} |")
    lines += ["", "All times µs, p50 over the timed iterations.", "",
              "| workload | in-process H2D / compute / D2H (µs) | daemon H2D / compute / D2H (µs) | daemon H2D GB/s |",
              "|---|--:|--:|--:|"]
    for r in results:
        a, b = r.split_in_process, r.split_daemon
        lines.append(f"| {r.workload} | {a.h2d_us:.0f} / {a.compute_us:.0f} / {a.d2h_us:.0f} | "
                     f"{b.h2d_us:.0f} / {b.compute_us:.0f} / {b.d2h_us:.0f} | {r.daemon_h2d_gbps:.1f} |")
    lines += ["", f"Reference H2D bandwidth (32 MiB, torch, this GPU): pinned {extra['h2d_gbps']['pinned']:.1f} GB/s, "
              f"pageable {extra['h2d_gbps']['pageable']:.1f} GB/s.",
              f"Daemon host registrations: {extra['host_registrations']} for {extra['regions']} region(s) "
              f"over {extra['requests']} requests (one cudaHostRegister per region, none per request); "
              f"pinned bytes {extra['pinned_bytes']}."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m trtd.bench.gpu", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda:0")
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--block", type=int, default=20)
    parser.add_argument("--settle", type=int, default=2)
    parser.add_argument("--json")
    parser.add_argument("--markdown")
    args = parser.parse_args(argv)
    import torch

    from trtd.daemon.builtin.torch_models import builtin_torchscript_path
    from trtd.daemon.system import cuda

    index = int(args.device.split(":")[1]) if ":" in args.device else 0
    device = torch.device("cuda", index)
    for name in ("resnet18", "volume3d"):
        builtin_torchscript_path(name)  # generated here first; the daemon only reads them
    schedule = Schedule(iterations=args.iterations, warmup=args.warmup, block=args.block, settle=args.settle)
    progress = Progress()
    results = []
    with ExitStack() as stack:
        tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trtd-gpu-bench-")))
        endpoint, daemon = stack.enter_context(started_daemon(tmpdir, ["--config", str(_config(index, tmpdir))]))
        floor_endpoint = stack.enter_context(echo_server(private_endpoint(tmpdir, "floor.sock")))
        floor = Floor(floor_endpoint, max(int(np.prod(w.input_shape)) * 4 for w in WORKLOADS))
        stack.callback(floor.close)
        client = stack.enter_context(connect(endpoint, daemon))
        for w in WORKLOADS:
            results.append(bench_workload(w, client, floor, schedule, torch, device, progress))
        status = client.status()
        extra = {"h2d_gbps": copy_bandwidths(torch, device, 32 * 2**20),
                 "host_registrations": status.host_registrations, "regions": status.regions,
                 "pinned_bytes": status.pinned_bytes,
                 "requests": sum(s.requests for s in status.models)}
    meta = collect_meta([], [], None)
    meta["command"] = command("trtd.bench.gpu", argv)
    meta.pop("onnxruntime_session", None)
    meta.pop("iterations", None)
    meta["gpu"] = {"name": cuda.device_name(index), "cuda": cuda.versions(), "torch": torch.__version__,
                   "torch_cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version()}
    meta["iterations"] = {"timed": args.iterations, "warmup": args.warmup, "block": args.block,
                          "settle": args.settle}
    table = render(results, extra)
    print(table)
    if args.json:
        write_json(args.json, {"meta": meta, "extra": extra, "results": [asdict(r) for r in results]})
    if args.markdown:
        write_text(args.markdown,
                   f"# trtd GPU latency benchmark\n\n{meta['date']} on {meta['gpu']['name']} "
                   f"(CUDA driver {meta['gpu']['cuda']['driver']}, runtime {meta['gpu']['cuda']['runtime']}, "
                   f"torch {meta['gpu']['torch']}), {meta['logical_cores']} CPU cores.\n\n"
                   f"Command: `{meta['command']}`\n\n{table}\n\n## Environment\n\n```json\n"
                   f"{json.dumps(meta, indent=2)}\n```\n")
    return 0 if all(r.rel_l2_error < 1e-4 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
