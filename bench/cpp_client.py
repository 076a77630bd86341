"""Latency of the C++ client against the Python SDK and the floor, interleaved in one run.

    python -m trtd.bench.cpp_client [--models mlp,nearzero224] [--iterations N] [--warmup N]
                                    [--block N] [--settle N] [--binary PATH] [--build-dir DIR]
                                    [--json PATH] [--markdown PATH]

For each selected built-in model, one daemon (started for the run, private ipc:// endpoint) and
these systems on the same seeded inputs, timed in interleaved round-robin blocks
(trtd.bench.lib.interleave.measure_blocks: warm-up discarded, start rotated each round, `settle`
untimed calls at the start of every block, gc off):

floor          the project's floor (trtd.bench.lib.floor): a bare pyzmq round trip of the encoded
               infer request to an echo process, after a memcpy of the input into shared memory
in-process     ONNX Runtime in this process, with the daemon's session settings
python copy    the Python SDK's `handle(x)`; python zero-copy: its `run_zero_copy()` (the input
               written once beforehand, as in trtd.bench.latency)
C++ floor      the same floor in C++: a cppzmq round trip of the same bytes to the same echo
               process, after a memcpy of the input into a shared mapping
C++ copy       trtd::Model::infer (the input copied into the region, the output copied out)
C++ zero-copy  trtd::Model::run_zero_copy (views filled once beforehand; outputs read in place)

The C++ systems run in the C++ client's latency loop (sdk/cpp/bench/latency_bench.cpp, built here
with CMake unless --binary names it), timed with std::chrono::steady_clock; the others are timed
with perf_counter_ns. Before timing, both C++ paths' outputs are compared byte for byte with the
Python SDK's and with in-process ONNX Runtime.

Exit status: 0 done, 1 an output differs, 2 bad usage, 3 the benchmark could not run (no C++
toolchain, daemon failed), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .lib import cli, cpp_build
from .lib.cpp_process import CppBench
from .lib.daemon import BenchError, connect, started_daemon
from .lib.floor import FLOOR_DEFINITION, Floor, echo_server, infer_message
from .lib.interleave import local_block, measure_blocks
from .lib.meta import command, machine, onnxruntime_settings, version
from .lib.plans import DEFAULT_BLOCK, DEFAULT_ITERATIONS, DEFAULT_SETTLE, Plan, make_plans
from .lib.processes import private_endpoint, sigterm_as_exit
from .lib.progress import Progress
from .lib.results import write_json, write_text
from .lib.stats import Summary
from .lib.systems import ZERO_COPY_NOTE, copy_call, in_process_call, onnx_session, zero_copy_call
from .lib.text import markdown_table, us
from .lib.workloads import MODELS

DEFAULT_MODELS = "mlp,nearzero224"
SYSTEMS = ("floor", "in_process", "python_copy", "python_zero_copy", "cpp_floor", "cpp_copy", "cpp_zero_copy")
LABELS = {
    "floor": "floor (pyzmq rt + memcpy)",
    "in_process": "in-process ORT",
    "python_copy": "Python SDK copy",
    "python_zero_copy": "Python SDK zero-copy*",
    "cpp_floor": "C++ floor (cppzmq rt + memcpy)",
    "cpp_copy": "C++ client copy",
    "cpp_zero_copy": "C++ client zero-copy*",
}


@dataclass(frozen=True)
class Result:
    model: str
    signature: str
    iterations: int
    warmup: int
    block: int
    settle: int
    systems: dict[str, Summary]
    # Before timing: the C++ outputs equal the Python SDK's byte for byte, and in-process ORT within 1e-5.
    same_bytes_as_python: bool
    max_abs_diff_vs_in_process: float

    @property
    def ok(self) -> bool:
        return self.same_bytes_as_python and self.max_abs_diff_vs_in_process <= 1e-5

    def p50(self, system: str) -> float:
        return self.systems[system].p50_us


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trtd.bench.cpp_client",
                                     description="Latency of the C++ client against the Python SDK, in-process "
                                                 "ONNX Runtime and the floor, interleaved in one run.",
                                     epilog=f"Floor = {FLOOR_DEFINITION}.")
    parser.add_argument("--models", default=DEFAULT_MODELS, help=f"comma-separated subset of {','.join(MODELS)} "
                                                                  f"(default: {DEFAULT_MODELS})")
    parser.add_argument("--iterations", type=cli.positive_int, metavar="N",
                        help=f"timed iterations per system and model (default: {DEFAULT_ITERATIONS[False]}, "
                             f"{DEFAULT_ITERATIONS[True]} for the heavy models)")
    parser.add_argument("--warmup", type=cli.non_negative_int, metavar="N",
                        help="discarded iterations per system (default: 10%% of the iterations, at least 10)")
    parser.add_argument("--block", type=cli.positive_int, metavar="N",
                        help=f"iterations per interleaved block (default: {DEFAULT_BLOCK[False]}, "
                             f"{DEFAULT_BLOCK[True]} for the heavy models)")
    parser.add_argument("--settle", type=cli.non_negative_int, default=DEFAULT_SETTLE, metavar="N",
                        help=f"untimed iterations at the start of every block (default: {DEFAULT_SETTLE})")
    parser.add_argument("--binary", type=Path, help="the C++ latency loop (trtd_latency_bench) to run; by default "
                                                    "it is built with CMake from sdk/cpp")
    parser.add_argument("--build-dir", type=Path, help="where to build it (default: a temporary folder)")
    parser.add_argument("--json", metavar="PATH", help="write meta and results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write a Markdown report (bench/results/)")
    return parser


def latency_binary(args: argparse.Namespace, tmpdir: Path, progress: Progress) -> Path:
    if args.binary:
        return args.binary
    folder = args.build_dir or tmpdir / "cpp-build"
    progress.start(f"building the C++ client (Release) in {folder}")
    cpp_build.configure(cpp_build.source_dir(), folder,
                        options=["-DTRTD_BUILD_TESTS=OFF", "-DTRTD_BUILD_EXAMPLES=OFF"])
    cpp_build.build(folder, targets=["trtd_latency_bench"])
    progress.done()
    return cpp_build.executable(folder, "trtd_latency_bench")


def bench_model(plan: Plan, client: Any, floor: Floor, cpp: CppBench, feed: dict[str, np.ndarray],
                progress: Progress) -> Result:
    model = plan.model
    session = onnx_session(model)
    handle = client.model(model.name)
    names = [o.name for o in session.get_outputs()]
    expected = dict(zip(names, session.run(None, feed)))
    python = handle.infer(next(iter(feed.values())) if len(feed) == 1 else feed)
    python = python if isinstance(python, dict) else {names[0]: python}
    outputs = cpp.outputs()
    same = all(outputs[path].get(name) == np.ascontiguousarray(array).tobytes()
               for path in ("copy", "zero_copy") for name, array in python.items())
    diff = max(float(np.max(np.abs(np.frombuffer(outputs[path][name], dtype=array.dtype).reshape(array.shape) - array)))
               for path in ("copy", "zero_copy") for name, array in expected.items())

    message = infer_message(model)
    blocks = {
        "floor": local_block(floor.step(list(feed.values()), message)),
        "in_process": local_block(in_process_call(session, feed)),
        "python_copy": local_block(copy_call(handle, feed)),
        "python_zero_copy": local_block(zero_copy_call(handle, model, feed)),
        "cpp_floor": lambda n, settle: cpp.block("floor", n, settle),
        "cpp_copy": lambda n, settle: cpp.block("copy", n, settle),
        "cpp_zero_copy": lambda n, settle: cpp.block("zero_copy", n, settle),
    }
    progress.start(f"{model.name}: {plan.warmup} warm-up + {plan.iterations} timed x {len(blocks)} systems, "
                   f"blocks of {plan.block} (+{plan.settle} settle)")
    samples = measure_blocks(blocks, plan, progress)
    progress.done()
    return Result(model=model.name, signature=model.signature(), iterations=plan.iterations, warmup=plan.warmup,
                  block=plan.block, settle=plan.settle, systems={s: Summary.of(samples[s]) for s in SYSTEMS},
                  same_bytes_as_python=same, max_abs_diff_vs_in_process=diff)


def run(plans: list[Plan], args: argparse.Namespace, progress: Progress) -> list[Result]:
    for plan in plans:
        plan.model.source()  # generate the model files before the daemon reads them
    results = []
    with ExitStack() as stack:
        tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trtd-bench-cpp-")))
        binary = latency_binary(args, tmpdir, progress)
        serve = [arg for plan in plans for arg in ("--model", plan.model.serve_flag())]
        endpoint, daemon = stack.enter_context(started_daemon(tmpdir, serve))
        floor_endpoint = stack.enter_context(echo_server(private_endpoint(tmpdir, "floor.sock")))
        floor = Floor(floor_endpoint, max(plan.model.input_region_bytes for plan in plans))
        stack.callback(floor.close)
        client = stack.enter_context(connect(endpoint, daemon))
        for plan in plans:
            feed = plan.model.make_inputs()
            cpp = CppBench(binary, endpoint, plan.model.name, feed, tmpdir / plan.model.name, floor_endpoint,
                           infer_message(plan.model))
            try:
                results.append(bench_model(plan, client, floor, cpp, feed, progress))
            finally:
                cpp.close()
    return results


def collect_meta(argv: list[str], binary_note: str) -> dict[str, Any]:
    import zmq

    return {
        **machine(),
        "versions": {"numpy": np.__version__, "pyzmq": zmq.__version__, "libzmq (pyzmq)": zmq.zmq_version(),
                     "msgpack": version("msgpack"), "onnxruntime": version("onnxruntime"), "trtd": version("trtd"),
                     **cpp_versions()},
        "command": command("trtd.bench.cpp_client", argv),
        "cpp_binary": binary_note,
        "daemon": "started by the benchmark (sys.executable -m trtd.daemon serve, private ipc endpoint)",
        "onnxruntime_session": onnxruntime_settings(),
        "definitions": {
            "floor": FLOOR_DEFINITION,
            "cpp_floor": "the same round trip and memcpy from C++: cppzmq DEALER to the same echo process, "
                         "the same message bytes, memcpy into a MAP_SHARED mapping",
            "zero_copy": ZERO_COPY_NOTE,
            "method": "round-robin blocks across the seven systems (start rotated each round), each block "
                      "after `settle` untimed calls; Python systems timed with perf_counter_ns, C++ systems "
                      "with std::chrono::steady_clock inside the C++ process; gc disabled while timing",
        },
    }


def cpp_versions() -> dict[str, str]:
    """The compiler and the C++ libraries the C++ client was built against (Debian packages when found)."""
    import shutil
    import subprocess

    found = {}
    for name in ("g++", "cmake"):
        if shutil.which(name):
            first = subprocess.run([name, "--version"], capture_output=True, text=True).stdout.splitlines()
            found[name] = first[0] if first else "?"
    if shutil.which("dpkg-query"):
        for package in ("libzmq3-dev", "cppzmq-dev", "libmsgpack-cxx-dev"):
            result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True, text=True)
            found[package] = result.stdout if result.returncode == 0 else "not installed"
    return found


def render_markdown(results: list[Result], meta: dict[str, Any]) -> str:
    lines = ["# trtd C++ client latency", "",
             f"{meta['date']} on `{meta['hostname']}`: {meta['cpu_model']}, {meta['logical_cores']} logical cores, "
             f"{meta['platform']}.", "", "## Summary", ""]
    rows = []
    for r in results:
        rows.append([r.model, us(r.p50("floor")), us(r.p50("cpp_floor")), us(r.p50("in_process")),
                     us(r.p50("python_copy")), us(r.p50("cpp_copy")), us(r.p50("python_zero_copy")),
                     us(r.p50("cpp_zero_copy")),
                     f"{r.p50('cpp_copy') / r.p50('python_copy'):.2f}× / {r.p50('cpp_zero_copy') / r.p50('python_zero_copy'):.2f}×",
                     f"{(r.p50('cpp_copy') - r.p50('in_process')) / r.p50('floor'):.2f} / "
                     f"{(r.p50('python_copy') - r.p50('in_process')) / r.p50('floor'):.2f}",
                     "yes" if r.ok else "**NO**"])
    lines += markdown_table(["model", "floor p50 µs", "C++ floor p50 µs", "in-process p50 µs", "Python copy p50 µs",
                             "C++ copy p50 µs", "Python zero-copy* p50 µs", "C++ zero-copy* p50 µs",
                             "C++ / Python p50 (copy / zero-copy)", "overhead in floors (C++ / Python copy)",
                             "outputs equal"], rows)
    lines += ["", f"\\* {ZERO_COPY_NOTE}.", "",
              "Overhead in floors = (p50 − in-process p50) / floor p50, the project's transport target "
              "(≤ 2, goal 1.3).", "", "## Per model", ""]
    for r in results:
        lines += [f"### {r.model}: {r.signature}", "",
                  f"{r.iterations} timed iterations per system (+{r.warmup} warm-up), interleaved in blocks of "
                  f"{r.block}, each after {r.settle} untimed settle iterations. C++ outputs equal the Python SDK's "
                  f"byte for byte: {r.same_bytes_as_python}; max abs diff to in-process ORT: "
                  f"{r.max_abs_diff_vs_in_process:g}.", ""]
        lines += markdown_table(["system", "p50 µs", "p90 µs", "p99 µs", "mean µs", "max µs"],
                                [[LABELS[s], us(r.systems[s].p50_us), us(r.systems[s].p90_us), us(r.systems[s].p99_us),
                                  us(r.systems[s].mean_us), us(r.systems[s].max_us)] for s in SYSTEMS])
        lines.append("")
    lines += ["## Method", ""] + [f"- **{k}**: {v}" for k, v in meta["definitions"].items()]
    lines += ["", "## Environment", "", "```json", __import__("json").dumps(
        {k: v for k, v in meta.items() if k != "definitions"}, indent=2), "```", ""]
    return "\n".join(lines)


def render_text(results: list[Result]) -> str:
    out = []
    for r in results:
        out.append(f"{r.model} ({r.signature}), p50 µs:")
        out += [f"  {LABELS[s]:<32} {us(r.systems[s].p50_us):>8}" for s in SYSTEMS]
        out.append(f"  C++ copy / Python copy p50: {r.p50('cpp_copy') / r.p50('python_copy'):.2f}x; "
                   f"outputs equal: {r.ok}")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    argv = cli.argv_list(argv)
    args = cli.parse(build_parser(), argv)
    if isinstance(args, int):
        return args
    try:
        plans = make_plans(args)
    except ValueError as exc:
        print(f"python -m trtd.bench.cpp_client: {exc}", file=sys.stderr)
        return 2
    from trtd.sdk import TrtdError

    meta = collect_meta(argv, str(args.binary) if args.binary else "built by the benchmark (CMake, Release)")
    try:
        with sigterm_as_exit():
            results = run(plans, args, Progress())
    except KeyboardInterrupt:
        print("\npython -m trtd.bench.cpp_client: interrupted", file=sys.stderr)
        return 130
    except (BenchError, TrtdError, cpp_build.CppUnavailable, cpp_build.CppBuildError) as exc:
        print(f"python -m trtd.bench.cpp_client: {exc}", file=sys.stderr)
        return 3
    print(render_text(results))
    if args.json:
        write_json(args.json, {"meta": meta, "results": [{**asdict(r), "ok": r.ok} for r in results]})
    if args.markdown:
        write_text(args.markdown, render_markdown(results, meta))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
