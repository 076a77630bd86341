"""Latency benchmark: trtd vs in-process ONNX Runtime vs the transport floor.

    python -m trtd.bench.latency [--models mlp,nearzero224,resnet18,volume3d]
                                 [--model NAME=PATH [--shape NAME:INPUT=DIMS]]
                                 [--iterations N] [--warmup N] [--block N] [--settle N]
                                 [--json PATH] [--markdown PATH] [--endpoint URL]
    trtd bench [the same options]

For each selected model (a built-in one, or your own ONNX file with --model
NAME=PATH, see trtd.bench.lib.own_models), one run on one machine measures four
systems on the same seeded inputs:

floor
    The least any out-of-process design with this transport could cost: a bare
    pyzmq DEALER -> ROUTER round trip of one small msgpack message (the encoded
    bytes of a real infer request for this model, ~200 bytes, packed once
    beforehand: encoding and decoding are not part of the floor) over the same transport kind as the daemon (ipc:// in a temp
    dir on POSIX), answered by a ROUTER that echoes it from a separate process,
    PLUS a memcpy of the request's input bytes into a shared-memory block
    (np.copyto into a numpy view of a multiprocessing.shared_memory block).
    Floor per sample = the round trip time measured with the memcpy done inside
    the timed section, before the send. This is the project-wide definition of
    "floor".
in-process
    `create_session(builtin_model_path(name)).run(None, {"x": x})` in this
    process: the same session settings as the daemon's (both come from
    trtd.daemon.backends.onnxruntime.create_session).
daemon copy
    `handle(x)` through the SDK: copies x into the leased region, one request,
    copies the output out.
daemon zero-copy
    `handle.run_zero_copy()`: x is written once into the `zero_copy_inputs()`
    views before timing, so this row EXCLUDES the client's write of the input;
    outputs are read-only views into the region (no copy out).

Overhead = daemon p50 - in-process p50 (for each daemon path); the target is
overhead p50 <= 2 x floor p50.

Method: every sample is one call timed with time.perf_counter_ns. Warm-up
iterations run first for every system and are discarded. Timed iterations run
in interleaved blocks (default 50 per block, 20 for the heavy models), round
robin across the four systems with the starting system rotated each round, so
that machine noise (other processes, frequency changes, thermal) falls on all
systems alike instead of on whichever ran last. Each block starts with
--settle (default 2) untimed iterations: the first calls after a switch pay
for the switch itself (caches refilled, a peer process woken from sleep, and
on few cores the previous system's ONNX Runtime threads still spinning in the
other process: the first resnet18 calls after a switch took twice as long on
a 2-core machine), which is an artefact of interleaving, not a steady-state
cost of any system. The garbage collector is off while timing. Once per
model, before timing, the daemon's outputs (both paths) are compared with the
in-process output.

The daemon is started as a subprocess serving exactly the selected models on a
private ipc:// endpoint (its lock file goes to the same temp dir) and stopped
with SIGTERM at the end, also on errors and Ctrl-C; --endpoint uses a running
daemon instead, which must serve the selected models.

Exit status: 0 done, 1 a daemon output differs from the in-process output by
more than 1e-5, 2 bad usage, 3 the benchmark could not run (daemon failed,
model missing on --endpoint), 130 interrupted.
"""

from __future__ import annotations

import argparse
import sys

from .lib import cli
from .lib.daemon import BenchError
from .lib.floor import FLOOR_DEFINITION
from .lib.own_models import own_models
from .lib.plans import (DEFAULT_BLOCK, DEFAULT_ITERATIONS, DEFAULT_SETTLE, add_own_model_options,
                        make_plans, selected_models)
from .lib.processes import sigterm_as_exit
from .lib.progress import Progress
from .lib.single_client import run_benchmark
from .lib.single_report import collect_meta, render_text, write_reports
from .lib.single_results import TARGET_RATIO
from .lib.workloads import MODELS


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trtd.bench.latency",
        description="Latency of trtd (both SDK paths) against in-process ONNX Runtime and the "
                    "transport floor, interleaved in one run.",
        epilog=f"Floor = {FLOOR_DEFINITION}. Target: daemon p50 - in-process p50 <= "
               f"{TARGET_RATIO:g} x floor p50.")
    parser.add_argument("--models", default=None,
                        help=f"comma-separated subset of {','.join(MODELS)} (default: all, or none "
                             f"when --model is given)")
    add_own_model_options(parser)
    parser.add_argument("--iterations", type=cli.positive_int, metavar="N",
                        help="timed iterations per system and model (default: "
                             f"{DEFAULT_ITERATIONS[False]}, {DEFAULT_ITERATIONS[True]} for "
                             f"{', '.join(m.name for m in MODELS.values() if m.heavy)})")
    parser.add_argument("--warmup", type=cli.non_negative_int, metavar="N",
                        help="discarded iterations per system before timing (default: 10%% of "
                             "the iterations, at least 10)")
    parser.add_argument("--block", type=cli.positive_int, metavar="N",
                        help=f"iterations per interleaved block (default: {DEFAULT_BLOCK[False]}, "
                             f"{DEFAULT_BLOCK[True]} for the heavy models)")
    parser.add_argument("--settle", type=cli.non_negative_int, default=DEFAULT_SETTLE, metavar="N",
                        help="untimed iterations at the start of every block, which pay for the "
                             f"switch between systems (default: {DEFAULT_SETTLE})")
    parser.add_argument("--json", metavar="PATH", help="write meta and results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write a Markdown report (bench/results/)")
    parser.add_argument("--endpoint", help="use the daemon already running here instead of starting "
                                           "one; it must serve the selected models")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = cli.argv_list(argv)  # `trtd bench -- --models ...` passes the separator along
    args = cli.parse(build_parser(), argv)
    if isinstance(args, int):  # --help, or a usage error argparse already printed
        return args
    try:
        own = tuple(own_models(args.model, args.shape, MODELS))
        args.models = selected_models(args, ",".join(MODELS))
        plans = make_plans(args, own)
    except ValueError as exc:
        print(f"trtd bench: {exc}", file=sys.stderr)
        return 2

    from trtd.sdk import TrtdError

    meta = collect_meta(argv, plans, args.endpoint)
    try:
        with sigterm_as_exit():
            results = run_benchmark(plans, args.endpoint, Progress())
    except KeyboardInterrupt:
        print("\ntrtd bench: interrupted", file=sys.stderr)
        return 130
    except (BenchError, TrtdError) as exc:
        print(f"trtd bench: {exc}", file=sys.stderr)
        return 3

    print(render_text(results))
    write_reports(args, results, meta)
    return 0 if all(r.correctness.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
