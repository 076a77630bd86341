"""Rendering `trtd bench` results: terminal tables, Markdown, PNG plots and --compare."""

from __future__ import annotations

import json
from pathlib import Path

from . import latency as single
from .harness import SYSTEM_LABELS, BenchReport

SWEEP_HEADER = ("system", "clients", "p50 µs", "p90 µs", "p99 µs", "max µs", "req/s", "server CPU µs/req",
                "server RSS MiB before→after", "errors")


def _us(v: float | None) -> str:
    return "—" if v is None else single._us(v)


def _sweep_cells(p) -> list[str]:
    lat = p.latency
    rss = ("—" if p.server_rss_mib_before is None
           else f"{p.server_rss_mib_before:.0f}→{p.server_rss_mib_after:.0f}")
    return [SYSTEM_LABELS[p.system], str(p.concurrency), _us(lat and lat.p50_us), _us(lat and lat.p90_us),
            _us(lat and lat.p99_us), _us(lat and lat.max_us), f"{p.throughput_rps:.0f}",
            _us(p.server_cpu_us_per_request), rss, str(p.errors) + (f" ({p.first_error})" if p.errors else "")]


def _table(header, rows) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))  # noqa: E731
    return [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)]


def _target_text(t) -> str:
    verdict = {True: "met", False: "MISSED", None: "not judged"}[t.met]
    value = "—" if t.value is None else f"{t.value:g}"
    return f"{t.model}: {t.name}: {value} (required {t.required}) -> {verdict}; {t.detail}"


def text(report: BenchReport) -> str:
    out = []
    if report.single_client:
        out += ["== single client, interleaved (trtd.bench.latency) ==", single.render_text(report.single_client)]
    for model in dict.fromkeys(p.model for p in report.points):
        out += ["", f"== concurrency sweep: {model} =="]
        out += _table(SWEEP_HEADER, [_sweep_cells(p) for p in report.points if p.model == model])
    for system, reason in report.unavailable.items():
        out.append(f"\n{SYSTEM_LABELS[system]}: not run: {reason}")
    out += [f"failed point: {f}" for f in report.failed_points]
    out += ["", "== targets =="] + [_target_text(t) for t in report.targets]
    return "\n".join(out)


def _md_table(header, rows) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]


def markdown(report: BenchReport, folder: Path) -> str:
    """The report as Markdown, with plot links relative to `folder` (where it is written)."""
    import os

    meta = report.meta
    out = ["# trtd bench: daemon vs in-process vs Triton", "",
           f"{meta['date']} on `{meta['hostname']}`: {meta['cpu_model']}, {meta['logical_cores']} logical "
           f"cores, {meta['platform']}.", "", f"Command: `{meta['command']}`", ""]
    out += ["## Targets", ""]
    out += _md_table(("model", "target", "value", "required", "verdict", "detail"),
                     [(t.model, t.name, "—" if t.value is None else f"{t.value:g}", t.required,
                       {True: "met", False: "**missed**", None: "not judged"}[t.met], t.detail)
                      for t in report.targets])
    if report.single_client:
        out += ["", "## Single client, interleaved", "",
                "Floor, in-process ONNX Runtime and both daemon paths timed in round-robin blocks in one "
                "process (see Method).", ""]
        out += _md_table(("model", "input", "floor p50 µs", "in-process p50 µs", "trtd copy p50 µs",
                          "trtd zero-copy* p50 µs", "overhead copy", "overhead zero-copy*"),
                         [(r.model, f"{single.inputs_text(r)} ({single._bytes(r.input_bytes)})",
                           *(single._us(r.systems[s].p50_us) for s in single.SYSTEMS),
                           *(f"{single._us(r.overheads[s].overhead_p50_us)} µs "
                             f"({r.overheads[s].ratio_to_floor:.2f}× floor)" for s in single.DAEMON_SYSTEMS))
                          for r in report.single_client])
        out += ["", f"\\* {single.ZERO_COPY_NOTE}."]
    out += ["", "## Concurrency sweep", "",
            "Every client is a separate process; all start together after a discarded warm-up. "
            "Server CPU is the daemon's (or Triton's whole process tree's) CPU time over the window "
            "divided by the requests served. No request batching in any system.", ""]
    for model in dict.fromkeys(p.model for p in report.points):
        out += [f"### {model}", ""]
        out += _md_table(SWEEP_HEADER, [_sweep_cells(p) for p in report.points if p.model == model])
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


def plots(report: BenchReport, folder: Path, prefix: str) -> dict[str, Path]:
    """Per model: latency distribution at one client; throughput and p99 versus clients."""
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")  # files only; no display on servers and CI
    import matplotlib.pyplot as plt
    import numpy as np

    written = {}
    floors = {r.model: r.floor_p50_us for r in report.single_client}
    for model in dict.fromkeys(p.model for p in report.points):
        points = [p for p in report.points if p.model == model]
        systems = list(dict.fromkeys(p.system for p in points))
        fig, (dist, thr, tail) = plt.subplots(1, 3, figsize=(17, 5))
        for system in systems:
            series = sorted((p for p in points if p.system == system), key=lambda p: p.concurrency)
            one = next((p for p in series if p.concurrency == min(q.concurrency for q in series)), None)
            if one is not None and len(one.samples_us):
                xs = np.sort(one.samples_us)
                dist.plot(xs, np.arange(1, len(xs) + 1) / len(xs), label=SYSTEM_LABELS[system])
            ok = [p for p in series if p.latency]
            thr.plot([p.concurrency for p in ok], [p.throughput_rps for p in ok], marker="o",
                     label=SYSTEM_LABELS[system])
            tail.plot([p.concurrency for p in ok], [p.latency.p99_us for p in ok], marker="o",
                      label=SYSTEM_LABELS[system])
        if model in floors:
            dist.axvline(floors[model], color="grey", linestyle="--", label="floor p50 (single-client part)")
        dist.set(xscale="log", xlabel="latency µs (log)", ylabel="fraction of requests ≤ x",
                 title=f"{model}: latency distribution, {min(p.concurrency for p in points)} client")
        thr.set(xscale="log", yscale="log", xlabel="client processes", ylabel="requests/s (log)",
                title=f"{model}: throughput vs clients")
        tail.set(xscale="log", yscale="log", xlabel="client processes", ylabel="p99 µs (log)",
                 title=f"{model}: p99 latency vs clients")
        for ax in (thr, tail):
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # only the client counts
            ax.set_xticks(sorted({p.concurrency for p in points}), labels=map(str, sorted({p.concurrency for p in points})))
        for ax in (dist, thr, tail):
            ax.grid(True, which="both", alpha=0.3)
        dist.legend(fontsize=7, loc="lower right")
        fig.suptitle(f"trtd bench, {report.meta['date']}, {report.meta['hostname']} "
                     f"({report.meta['logical_cores']} cores); Triton rows: PyTriton, python backend")
        fig.tight_layout()
        path = folder / f"{prefix}-{model}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written[model] = path
    return written


def _change(old: float | None, new: float | None) -> str:
    if old is None or new is None or old == 0:
        return "—"
    return f"{(new - old) / old * 100:+.1f}%"


def comparison(old: dict, report: BenchReport) -> str:
    """Change of every figure present in both runs (p50/p99 latency, throughput)."""
    rows = []
    for model, r in ((r.model, r) for r in report.single_client):
        before = old.get("single_client", {}).get(model)
        if not before:
            continue
        for system in single.SYSTEMS:
            o = before.get("systems", {}).get(system, {}).get("p50_us")
            n = r.systems[system].p50_us
            rows.append((model, single.SYSTEM_LABELS[system], "1 (interleaved)", "p50 µs", _us(o), _us(n), _change(o, n)))
    old_points = {(p["model"], p["system"], p["concurrency"]): p for p in old.get("sweep", [])}
    for p in report.points:
        before = old_points.get((p.model, p.system, p.concurrency))
        if not before:
            continue
        lat = before.get("latency") or {}
        for what, o, n in (("p50 µs", lat.get("p50_us"), p.latency and p.latency.p50_us),
                           ("p99 µs", lat.get("p99_us"), p.latency and p.latency.p99_us),
                           ("req/s", before.get("throughput_rps"), p.throughput_rps)):
            rows.append((p.model, SYSTEM_LABELS[p.system], str(p.concurrency), what, _us(o), _us(n), _change(o, n)))
    if not rows:
        return "\n== compared with the earlier run: no figure in common =="
    when = old.get("meta", {}).get("date", "?")
    return "\n".join(["", f"== change against the run of {when} =="] +
                     _table(("model", "system", "clients", "figure", "before", "now", "change"), rows))
