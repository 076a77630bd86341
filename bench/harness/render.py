"""A `trtd bench` report as terminal text and Markdown, and its change against an earlier run."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..lib.single_report import inputs_text, render_text
from ..lib.single_results import DAEMON_SYSTEMS, SYSTEMS
from ..lib.single_results import SYSTEM_LABELS as SINGLE_LABELS
from ..lib.systems import ZERO_COPY_NOTE
from ..lib.text import markdown_table, nbytes, text_table, us
from ..sweep import Point
from .report import SYSTEM_LABELS, BenchReport, Target

SWEEP_HEADER = ("system", "clients", "p50 µs", "p90 µs", "p99 µs", "max µs", "req/s", "server CPU µs/req",
                "server RSS MiB before→after", "errors")
VERDICTS = {True: "met", False: "MISSED", None: "not judged"}


def _sweep_cells(p: Point) -> list[str]:
    lat = p.latency
    rss = ("—" if p.server_rss_mib_before is None
           else f"{p.server_rss_mib_before:.0f}→{p.server_rss_mib_after:.0f}")
    figures = (lat.p50_us, lat.p90_us, lat.p99_us, lat.max_us) if lat else (None,) * 4
    return [SYSTEM_LABELS[p.system], str(p.concurrency), *map(us, figures), f"{p.throughput_rps:.0f}",
            us(p.server_cpu_us_per_request), rss, str(p.errors) + (f" ({p.first_error})" if p.errors else "")]


def _target_text(t: Target) -> str:
    value = "—" if t.value is None else f"{t.value:g}"
    return f"{t.model}: {t.name}: {value} (required {t.required}) -> {VERDICTS[t.met]}; {t.detail}"


def text(report: BenchReport) -> str:
    out = []
    if report.single_client:
        out += ["== single client, interleaved (trtd.bench.latency) ==", render_text(report.single_client)]
    for model in dict.fromkeys(p.model for p in report.points):
        out += ["", f"== concurrency sweep: {model} =="]
        out += text_table(SWEEP_HEADER, [_sweep_cells(p) for p in report.points if p.model == model])
    for system, reason in report.unavailable.items():
        out.append(f"\n{SYSTEM_LABELS[system]}: not run: {reason}")
    out += [f"failed point: {f}" for f in report.failed_points]
    out += ["", "== targets =="] + [_target_text(t) for t in report.targets]
    return "\n".join(out)


def markdown(report: BenchReport, folder: Path) -> str:
    """The report as Markdown, with plot links relative to `folder` (where it is written)."""
    meta = report.meta
    out = ["# trtd bench: daemon vs in-process vs Triton", "",
           f"{meta['date']} on `{meta['hostname']}`: {meta['cpu_model']}, {meta['logical_cores']} logical "
           f"cores, {meta['platform']}.", "", f"Command: `{meta['command']}`", ""]
    out += ["## Targets", ""]
    out += markdown_table(("model", "target", "value", "required", "verdict", "detail"),
                          [(t.model, t.name, "—" if t.value is None else f"{t.value:g}", t.required,
                            {True: "met", False: "**missed**", None: "not judged"}[t.met], t.detail)
                           for t in report.targets])
    if report.single_client:
        out += ["", "## Single client, interleaved", "",
                "Floor, in-process ONNX Runtime and both daemon paths timed in round-robin blocks in one "
                "process (see Method).", ""]
        out += markdown_table(("model", "input", "floor p50 µs", "in-process p50 µs", "trtd copy p50 µs",
                               "trtd zero-copy* p50 µs", "overhead copy", "overhead zero-copy*"),
                              [(r.model, f"{inputs_text(r)} ({nbytes(r.input_bytes)})",
                                *(us(r.systems[s].p50_us) for s in SYSTEMS),
                                *(f"{us(r.overheads[s].overhead_p50_us)} µs "
                                  f"({r.overheads[s].ratio_to_floor:.2f}× floor)" for s in DAEMON_SYSTEMS))
                               for r in report.single_client])
        out += ["", f"\\* {ZERO_COPY_NOTE}."]
    out += ["", "## Concurrency sweep", "",
            "Every client is a separate process; all start together after a discarded warm-up. "
            "Server CPU is the daemon's (or Triton's whole process tree's) CPU time over the window "
            "divided by the requests served. No request batching in any system.", ""]
    for model in dict.fromkeys(p.model for p in report.points):
        out += [f"### {model}", ""]
        out += markdown_table(SWEEP_HEADER, [_sweep_cells(p) for p in report.points if p.model == model])
        plot = meta.get("plots", {}).get(model)
        if plot:
            out += ["", f"![{model}]({Path(os.path.relpath(plot, folder)).as_posix()})"]
        out.append("")
    if report.unavailable or report.failed_points:
        out += ["## Not run", ""]
        out += [f"- {SYSTEM_LABELS[s]}: {r}" for s, r in report.unavailable.items()]
        out += [f"- {f}" for f in report.failed_points]
        out.append("")
    out += ["## Method", ""] + [f"- **{k}**: {v}." for k, v in meta["definitions"].items()]
    out += [f"- **sweep**: {json.dumps(meta['sweep'])}."]
    environment = {k: v for k, v in meta.items() if k not in ("definitions", "plots")}
    out += ["", "## Environment", "", "```json", json.dumps(environment, indent=2, ensure_ascii=False), "```", ""]
    return "\n".join(out)


def _change(old: float | None, new: float | None) -> str:
    if old is None or new is None or old == 0:
        return "—"
    return f"{(new - old) / old * 100:+.1f}%"


def comparison(old: dict[str, Any], report: BenchReport) -> str:
    """Change of every figure present in both runs (p50/p99 latency, throughput)."""
    rows = []
    for r in report.single_client:
        before = old.get("single_client", {}).get(r.model)
        if not before:
            continue
        for system in SYSTEMS:
            o = before.get("systems", {}).get(system, {}).get("p50_us")
            n = r.systems[system].p50_us
            rows.append((r.model, SINGLE_LABELS[system], "1 (interleaved)", "p50 µs", us(o), us(n), _change(o, n)))
    old_points = {(p["model"], p["system"], p["concurrency"]): p for p in old.get("sweep", [])}
    for p in report.points:
        before = old_points.get((p.model, p.system, p.concurrency))
        if not before:
            continue
        lat = before.get("latency") or {}
        now = p.latency
        figures: tuple[tuple[str, float | None, float | None], ...] = (
            ("p50 µs", lat.get("p50_us"), now.p50_us if now else None),
            ("p99 µs", lat.get("p99_us"), now.p99_us if now else None),
            ("req/s", before.get("throughput_rps"), p.throughput_rps))
        for what, o, n in figures:
            rows.append((p.model, SYSTEM_LABELS[p.system], str(p.concurrency), what, us(o), us(n), _change(o, n)))
    if not rows:
        return "\n== compared with the earlier run: no figure in common =="
    when = old.get("meta", {}).get("date", "?")
    return "\n".join(["", f"== change against the run of {when} =="] +
                     text_table(("model", "system", "clients", "figure", "before", "now", "change"), rows))
