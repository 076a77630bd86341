"""The single-client results as text, Markdown and JSON, with the run's machine and method.

`python -m trtd.bench.latency` writes these; `trtd bench` puts the text and the meta into its
own report (trtd.bench.harness).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from .floor import FLOOR_DEFINITION
from .meta import command, machine, onnxruntime_settings, version
from .plans import Plan
from .results import write_json, write_text
from .single_results import (DAEMON_SYSTEMS, SYSTEM_LABELS, SYSTEMS, TARGET_RATIO, ModelResult,
                             Overhead)
from .systems import ZERO_COPY_NOTE
from .text import nbytes, shape, us


def collect_meta(argv: list[str], plans: list[Plan], endpoint: str | None) -> dict[str, Any]:
    """Machine, versions, command, settings and definitions of a single-client run."""
    import numpy as np
    import zmq

    return {
        **machine(),
        "versions": {
            "numpy": np.__version__, "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
            "msgpack": version("msgpack"), "onnxruntime": version("onnxruntime"),
            "onnx": version("onnx"), "psutil": version("psutil"), "trtd": version("trtd"),
        },
        "command": command("trtd.bench.latency", argv),
        "daemon": "started by the benchmark (sys.executable -m trtd.daemon serve, private ipc endpoint)"
                  if endpoint is None else f"already running at {endpoint}",
        "onnxruntime_session": {**onnxruntime_settings(), "providers": ["CPUExecutionProvider"]},
        "iterations": {p.model.name: {"timed": p.iterations, "warmup": p.warmup, "block": p.block,
                                      "settle": p.settle} for p in plans},
        # The user's own models: which file, and the shapes they ran with.
        "own_models": {p.model.name: {"path": p.model.path, "signature": p.model.signature()}
                       for p in plans if p.model.path},
        "definitions": {
            "floor": FLOOR_DEFINITION,
            "overhead": "daemon p50 - in-process p50, per daemon path",
            "target": f"overhead p50 <= {TARGET_RATIO:g} x floor p50",
            "zero_copy": ZERO_COPY_NOTE,
            "method": "perf_counter_ns per call; warm-up discarded; timed iterations in "
                      "round-robin blocks across the four systems (start rotated each round), each "
                      "block after `settle` untimed iterations that absorb the switch between "
                      "systems; gc disabled while timing",
        },
    }


def _io(r: ModelResult) -> str:
    """Inputs -> outputs; results written before `signature` existed were float32 x -> y."""
    return r.signature or f"float32 {shape(r.input_shape)} -> {shape(r.output_shape)}"


def inputs_text(r: ModelResult) -> str:
    return r.signature.split(" -> ")[0] if r.signature else shape(r.input_shape)


def _overhead_text(o: Overhead) -> str:
    verdict = "met" if o.target_met else "MISSED"
    return f"{us(o.overhead_p50_us)} µs = {o.ratio_to_floor:.2f}x floor ({verdict})"


def render_text(results: list[ModelResult]) -> str:
    lines = []
    header = f"  {'system':<24} {'p50':>9} {'p90':>9} {'p99':>9} {'mean':>9} {'max':>9}   (µs)"
    for r in results:
        lines.append(f"\n{r.model}: {_io(r)}, "
                     f"input {nbytes(r.input_bytes)}, request {r.request_bytes} B; "
                     f"{r.iterations} timed (+{r.warmup} warm-up) per system, blocks of {r.block} "
                     f"(+{r.settle} settle)")
        lines.append(header)
        for name in SYSTEMS:
            s = r.systems[name]
            lines.append(f"  {SYSTEM_LABELS[name]:<24} {us(s.p50_us):>9} {us(s.p90_us):>9} "
                         f"{us(s.p99_us):>9} {us(s.mean_us):>9} {us(s.max_us):>9}")
        for name in DAEMON_SYSTEMS:
            path = name.removeprefix("daemon_")
            lines.append(f"  overhead {path:<10} {_overhead_text(r.overheads[name])}   "
                         f"(target <= {TARGET_RATIO:g}x floor p50 {us(r.floor_p50_us)} µs)")
        if r.daemon_side_p50_us is not None:
            lines.append(f"  daemon-side p50 (the daemon's own timing in `trtd status`, both paths) "
                         f"{us(r.daemon_side_p50_us)} µs")
        c = r.correctness
        lines.append(f"  correctness: max |daemon - in-process| copy {c.max_abs_diff_copy:.3g}, "
                     f"zero-copy {c.max_abs_diff_zero_copy:.3g} -> {'OK' if c.ok else 'MISMATCH'}")
    lines.append(f"\n* {ZERO_COPY_NOTE}.\n  Floor = {FLOOR_DEFINITION}.")
    return "\n".join(lines)


def _markdown_summary_row(r: ModelResult) -> str:
    cells = [r.model, f"{inputs_text(r)} ({nbytes(r.input_bytes)})"]
    cells += [us(r.systems[name].p50_us) for name in SYSTEMS]
    cells += [f"{us(r.overheads[n].overhead_p50_us)} µs ({r.overheads[n].ratio_to_floor:.2f}×)"
              for n in DAEMON_SYSTEMS]
    cells.append("/".join("met" if r.overheads[n].target_met else "**missed**" for n in DAEMON_SYSTEMS)
                 + " (copy/zero-copy)")
    diff = max(r.correctness.max_abs_diff_copy, r.correctness.max_abs_diff_zero_copy)
    cells.append(f"{diff:.3g}" + ("" if r.correctness.ok else " **MISMATCH**"))
    return "| " + " | ".join(cells) + " |"


def render_markdown(results: list[ModelResult], meta: dict[str, Any]) -> str:
    out = ["# trtd latency benchmark", "",
           f"{meta['date']} on `{meta['hostname']}`: {meta['cpu_model']}, "
           f"{meta['logical_cores']} logical cores, {meta['platform']}.", "",
           "## Summary", "",
           "| model | input | floor p50 µs | in-process p50 µs | daemon copy p50 µs | "
           "daemon zero-copy* p50 µs | overhead copy | overhead zero-copy* | "
           f"target ≤ {TARGET_RATIO:g}× floor | max abs diff |",
           "|---|---|--:|--:|--:|--:|--:|--:|---|--:|"]
    out += [_markdown_summary_row(r) for r in results]
    out += ["", f"\\* {ZERO_COPY_NOTE}.", "", "## Per model"]
    for r in results:
        out += ["", f"### {r.model}: {_io(r).replace(' -> ', ' → ')}", "",
                f"{r.iterations} timed iterations per system (+{r.warmup} warm-up), interleaved in "
                f"blocks of {r.block}, each after {r.settle} untimed settle iterations; floor request "
                f"{r.request_bytes} bytes."
                + (f" Daemon-side p50 (from `trtd status`): {us(r.daemon_side_p50_us)} µs."
                   if r.daemon_side_p50_us is not None else ""), "",
                "| system | p50 µs | p90 µs | p99 µs | mean µs | max µs |", "|---|--:|--:|--:|--:|--:|"]
        for name in SYSTEMS:
            s = r.systems[name]
            figures = (s.p50_us, s.p90_us, s.p99_us, s.mean_us, s.max_us)
            out.append(f"| {SYSTEM_LABELS[name]} | " + " | ".join(map(us, figures)) + " |")
    definitions = meta["definitions"]
    out += ["", "## Method", ""] + [f"- **{k}**: {v}." for k, v in definitions.items()]
    environment = {k: v for k, v in meta.items() if k != "definitions"}
    out += ["", "## Environment", "", "```json",
            json.dumps(environment, indent=2, ensure_ascii=False), "```", ""]
    return "\n".join(out)


def write_reports(args: argparse.Namespace, results: list[ModelResult], meta: dict[str, Any]) -> None:
    """--json and --markdown, where given."""
    if args.json:
        write_json(args.json, {"meta": meta, "results": {r.model: r.to_json() for r in results}})
    if args.markdown:
        write_text(Path(args.markdown), render_markdown(results, meta))
