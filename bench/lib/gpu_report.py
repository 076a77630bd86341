"""The GPU benchmark's results (trtd.bench.gpu): what each row is, its figures, the targets, as Markdown.

Every row of one workload is timed in the same interleaved run; every ratio is between rows of
that run. Outputs are compared with in-process TorchScript (FP32) on the same input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .cpu_burn import CpuCost
from .stats import Summary
from .text import markdown_table, nbytes, us
from .thread_load import LoadResult
from .torch_cuda import Split

# Row name -> how it is measured (the report's legend and --help's).
SYSTEMS: dict[str, str] = {
    "floor": "the project-wide floor (trtd.bench.lib.floor): bare pyzmq round trip of the infer "
             "message + memcpy of the input into shared memory",
    "in_process_eager": "the eager torch module (weights loaded from the TorchScript file), pinned "
                        "H2D, forward, D2H into pinned memory, synchronize",
    "in_process": "TorchScript in this process, the same transfers (torch_cuda.PinnedForward)",
    "in_process_graph": "the same TorchScript captured once as a CUDA graph (torch_graph.GraphForward): "
                        "pinned H2D into a static input, replay, D2H into pinned memory, synchronize; "
                        "the limit for the model in-process",
    "in_process_graph_fp16": "as in_process_graph with module.half(): input cast to FP16 and output "
                             "back to FP32 inside the graph",
    "daemon_copy": "handle(x) through the SDK (copy in, copy out), eager TorchScript in the daemon",
    "daemon_zero_copy": "handle.run_zero_copy() (input written once beforehand), eager TorchScript",
    "daemon_graph_copy": "handle(x) on the cuda_graphs model",
    "daemon_graph_zero_copy": "handle.run_zero_copy() on the cuda_graphs model",
    "daemon_graph_fp16_copy": "handle(x) on the cuda_graphs model with precision = \"fp16\"",
    "daemon_graph_fp16_zero_copy": "handle.run_zero_copy() on the cuda_graphs model with precision = \"fp16\"",
    "daemon_graph_zero_copy_spin": "handle.run_zero_copy() on the cuda_graphs model from a second Client "
                                   "with spin_us=2000 (busy-polls up to 2 ms for the reply)",
    "daemon_graph_zero_copy_block": "handle.run_zero_copy() on the cuda_graphs model served with "
                                    "gpu_wait = \"block\" (the daemon sleeps on the GPU's completion)",
    "daemon_graph_zero_copy_idle_spin": "handle.run_zero_copy() on the cuda_graphs model served with "
                                        "idle_spin_us = 300 (the socket loop polls 300 µs for the next "
                                        "request before it sleeps)",
    "daemon_graph_zero_copy_both_spin": "the idle_spin_us = 300 model from the spin_us=2000 Client: "
                                        "neither side sleeps between requests",
}
# The in-process row a daemon row's overhead is taken against: the same computation.
REFERENCE = {
    "daemon_copy": "in_process", "daemon_zero_copy": "in_process",
    "daemon_graph_copy": "in_process_graph", "daemon_graph_zero_copy": "in_process_graph",
    "daemon_graph_zero_copy_spin": "in_process_graph", "daemon_graph_fp16_zero_copy": "in_process_graph_fp16",
    "daemon_graph_fp16_copy": "in_process_graph_fp16",
    "daemon_graph_zero_copy_block": "in_process_graph", "daemon_graph_zero_copy_idle_spin": "in_process_graph",
    "daemon_graph_zero_copy_both_spin": "in_process_graph",
}
FP32_CHECK = 1e-5   # an FP32 row's rel. L2 above this is flagged in the table
FP32_FAIL = 1e-4    # an FP32 daemon row above this fails the run (exit status 1)


def is_fp16(system: str) -> bool:
    return "fp16" in system


@dataclass
class Row:
    system: str
    latency: Summary
    cpu: CpuCost
    rel_l2: float | None = None          # vs in-process TorchScript FP32; None for the floor
    overhead_us: float | None = None     # p50 minus REFERENCE's p50 (daemon rows)
    overhead_floors: float | None = None  # overhead_us / floor p50


@dataclass
class WorkloadResult:
    workload: str
    input_bytes: int
    rows: dict[str, Row]
    splits: dict[str, Split]              # H2D / compute / D2H medians, from CUDA events
    notes: list[str] = field(default_factory=list)

    def p50(self, system: str) -> float:
        return self.rows[system].latency.p50_us


@dataclass
class ConcurrencyResult:
    model: str
    detail: str                  # eager / graphs, instances
    load: LoadResult | None      # None: the row failed
    error: str = ""              # why it failed (the first client's exception)


@dataclass
class Target:
    name: str
    figure: float
    limit: float
    goal: float
    detail: str

    @property
    def met(self) -> bool:
        return self.figure <= self.limit

    @property
    def goal_met(self) -> bool:
        return self.figure <= self.goal

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "met": self.met, "goal_met": self.goal_met}


def add_overheads(result: WorkloadResult) -> None:
    """Each daemon row's overhead over its in-process counterpart, in µs and in floors."""
    floor = result.p50("floor")
    for system, row in result.rows.items():
        ref = REFERENCE.get(system)
        if ref in result.rows:
            row.overhead_us = row.latency.p50_us - result.p50(ref)
            row.overhead_floors = row.overhead_us / floor if floor > 0 else None


def targets(result: WorkloadResult) -> list[Target]:
    """Issue 15's targets, from the ResNet-18 b1 rows of one run."""
    daemon, script, graph = (result.p50(s) for s in ("daemon_graph_zero_copy", "in_process", "in_process_graph"))
    floor = result.p50("floor")
    return [
        Target(f"{result.workload}: daemon (graphs, zero-copy) p50 / in-process TorchScript p50",
               daemon / script, 0.8, 0.6, f"{us(daemon)} µs / {us(script)} µs"),
        Target(f"{result.workload}: (daemon (graphs, zero-copy) p50 - in-process graph p50) / floor p50",
               (daemon - graph) / floor, 2.0, 1.2,
               f"({us(daemon)} - {us(graph)}) µs / {us(floor)} µs"),
    ]


def failed_checks(results: list[WorkloadResult]) -> list[str]:
    """FP32 daemon rows whose output is too far from in-process TorchScript (fail the run)."""
    return [f"{r.workload} {s}: rel. L2 {row.rel_l2:.1e} > {FP32_FAIL:g}"
            for r in results for s, row in r.rows.items()
            if s.startswith("daemon_") and not is_fp16(s) and row.rel_l2 is not None
            and not row.rel_l2 <= FP32_FAIL]


def _rel(system: str, value: float | None) -> str:
    if value is None:
        return "—"
    flag = "" if is_fp16(system) or value <= FP32_CHECK else f" (> {FP32_CHECK:g})"
    return f"{value:.1e}{flag}"


def _overhead(row: Row) -> str:
    if row.overhead_us is None:
        return "—"
    floors = "" if row.overhead_floors is None else f" ({row.overhead_floors:.2f}×)"
    return f"{us(row.overhead_us)}{floors}"


def render_workload(r: WorkloadResult) -> list[str]:
    header = ["system", "p50 µs", "p99 µs", "overhead vs in-process counterpart µs (× floor)",
              "client CPU µs/req", "daemon CPU µs/req", "rel. L2 vs in-process TorchScript"]
    rows = [[s, us(row.latency.p50_us), us(row.latency.p99_us), _overhead(row), us(row.cpu.client_us),
             us(row.cpu.daemon_us), _rel(s, row.rel_l2)] for s, row in r.rows.items()]
    lines = [f"### {r.workload} (input {nbytes(r.input_bytes)})", "", *markdown_table(header, rows), ""]
    split_rows = [[s, f"{us(sp.h2d_us)} / {us(sp.compute_us)} / {us(sp.d2h_us)}",
                   f"{r.input_bytes / (sp.h2d_us / 1e6) / 1e9:.1f}" if sp.h2d_us > 0 else "—"]
                  for s, sp in r.splits.items()]
    lines += markdown_table(["system", "H2D / compute / D2H µs (CUDA events, median)", "H2D GB/s"], split_rows)
    lines += [""] + [f"- {note}" for note in r.notes] + ([""] if r.notes else [])
    return lines


def render_concurrency(rows: list[ConcurrencyResult]) -> list[str]:
    header = ["model", "serving", "clients", "requests", "req/s", "p50 µs", "p99 µs",
              "client CPU µs/req", "daemon CPU µs/req"]
    body = [[c.model, c.detail, str(c.load.clients), str(c.load.requests), f"{c.load.throughput_rps:.0f}",
             us(c.load.latency.p50_us), us(c.load.latency.p99_us), us(c.load.client_cpu_us_per_request),
             us(c.load.daemon_cpu_us_per_request)] if c.load is not None
            else [c.model, c.detail, f"failed: {c.error}", "", "", "", "", "", ""] for c in rows]
    return markdown_table(header, body)


def render(results: list[WorkloadResult], goals: list[Target], concurrency: list[ConcurrencyResult],
           extra: dict[str, Any]) -> str:
    lines = ["## Targets", ""]
    lines += markdown_table(["target", "figure", "limit", "goal", "result", "from"],
                            [[t.name, f"{t.figure:.2f}", f"≤ {t.limit:g}", f"≤ {t.goal:g}",
                              ("met" if t.met else "missed") + (", goal met" if t.goal_met else ""), t.detail]
                             for t in goals])
    lines += ["", "## Single client, interleaved", "",
              "All times µs. Overhead: p50 minus the p50 of the in-process row computing the same thing "
              "(daemon eager rows against in_process, graph rows against in_process_graph, FP16 against "
              "in_process_graph_fp16), and that in floors. CPU per request: the client's calling thread "
              "and the whole daemon process, over each system's timed blocks. "
              f"FP32 rows' rel. L2 should be ≤ {FP32_CHECK:g}; FP16 rows show theirs.", ""]
    for r in results:
        lines += render_workload(r)
    lines += ["## Concurrent clients", "",
              "Threads of this process, each its own Client, zero-copy, the same input; throughput over "
              "the common window, latency per request over all clients.", ""]
    lines += render_concurrency(concurrency)
    lines += ["", "## CUDA graphs in the daemon (status at the end)", ""]
    lines += markdown_table(["model", "graphs", "graph bytes", "requests"],
                            [[name, str(g["graphs"]), nbytes(g["graph_bytes"]), str(g["requests"])]
                             for name, g in extra["graphs"].items()])
    lines += ["", f"Reference H2D bandwidth (32 MiB, torch, this GPU): pinned {extra['h2d_gbps']['pinned']:.1f} "
              f"GB/s, pageable {extra['h2d_gbps']['pageable']:.1f} GB/s.",
              f"Daemon host registrations: {extra['host_registrations']} for {extra['regions']} region(s) "
              f"over {extra['requests']} requests (one cudaHostRegister per region, none per request); "
              f"pinned bytes {extra['pinned_bytes']}.", "", "## Rows", ""]
    lines += [f"- `{name}`: {text}" for name, text in SYSTEMS.items()]
    return "\n".join(lines)
