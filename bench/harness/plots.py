"""`trtd bench --plots`: per model, the latency distribution at one client and throughput and p99
versus client processes, one PNG each (what a table of percentiles does not show: the shape)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..lib.plotting import pyplot
from .report import SYSTEM_LABELS, BenchReport


def plots(report: BenchReport, folder: Path, prefix: str) -> dict[str, Path]:
    """Writes folder/PREFIX-MODEL.png for every model of the sweep; returns them by model."""
    import matplotlib.ticker

    plt = pyplot()
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
            tail.plot([p.concurrency for p in ok], [p.latency.p99_us for p in ok if p.latency], marker="o",
                      label=SYSTEM_LABELS[system])
        if model in floors:
            dist.axvline(floors[model], color="grey", linestyle="--", label="floor p50 (single-client part)")
        dist.set(xscale="log", xlabel="latency µs (log)", ylabel="fraction of requests ≤ x",
                 title=f"{model}: latency distribution, {min(p.concurrency for p in points)} client")
        thr.set(xscale="log", yscale="log", xlabel="client processes", ylabel="requests/s (log)",
                title=f"{model}: throughput vs clients")
        tail.set(xscale="log", yscale="log", xlabel="client processes", ylabel="p99 µs (log)",
                 title=f"{model}: p99 latency vs clients")
        clients = sorted({p.concurrency for p in points})
        for ax in (thr, tail):
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # only the client counts
            ax.set_xticks(clients, labels=map(str, clients))
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
