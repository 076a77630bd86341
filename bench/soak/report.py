"""The soak's report: Markdown with the verdict table, and a plot of the samples over time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..lib.plotting import pyplot


def markdown(r: dict[str, Any], png: str) -> str:
    """The result (run.py's JSON) as Markdown, linking the plot `png` beside it."""
    lines = [f"# Soak: {r['clients']} clients × {r['minutes']:g} min — {'PASS' if r['pass'] else 'FAIL'}", "",
             *[f"- **FAIL**: {p}" for p in r.get("problems", [])],
             f"- date: {r['date']}; machine: {r['machine']['node']}, {r['machine']['cpus']} CPUs shared with "
             f"other jobs, {r['machine']['platform']}, Python {r['machine']['python']}",
             f"- versions: {', '.join(f'{k} {v}' for k, v in r['versions'].items())}",
             f"- command: `{r['command']}`",
             f"- requests: {', '.join(f'{k} {v}' for k, v in sorted(r['requests'].items()))}; "
             f"failed correct requests: **{r['failed_correct_requests']}**",
             f"- after the clients left: regions {r['final_after_clients_left']['regions']}, files in "
             f"/dev/shm {r['final_after_clients_left']['shm_files']}, clients "
             f"{r['final_after_clients_left']['clients']}", ""]
    if "error" in r["growth"]:
        return "\n".join(lines + [f"Growth not judged: {r['growth']['error']}. Plot: [{png}]({png})", ""])
    lines += ["| metric | first | last | Theil-Sen slope /s (95% CI) | growth over steady span | tolerance | pass |",
              "|---|---|---|---|---|---|---|"]
    for key, v in r["growth"].items():
        if isinstance(v, dict):
            lines.append(f"| {key} | {v['first']:.0f} | {v['last']:.0f} | {v['slope_per_s']:.3g} "
                         f"({v['slope_ci'][0]:.3g} … {v['slope_ci'][1]:.3g}) | {v['growth_over_steady_span']:.3g} "
                         f"| {v['tolerance']:.3g} | {'yes' if v['pass'] else 'NO'} |")
    lines += ["", f"Steady span: {r['growth'].get('steady_span_s', 0):.0f} s after warm-up. "
              f"RSS in bytes. Plot: [{png}]({png})", ""]
    return "\n".join(lines)


def plot(samples: list[dict[str, Any]], windows: list[dict[str, Any]], path: Path, title: str,
         warmup_s: float) -> None:
    """RSS; counts; per-client p50/p99 per window; infers/s per client. A line marks the warm-up."""
    plt = pyplot()
    t = [s["t"] / 60 for s in samples]
    fig, ax = plt.subplots(4, 1, figsize=(9, 11), sharex=True)
    ax[0].plot(t, [s["rss"] / 2**20 for s in samples])
    ax[0].set_ylabel("daemon RSS (MiB)")
    for key in ("fds", "threads", "regions", "shm_files", "clients"):
        ax[1].plot(t, [s[key] for s in samples], label=key)
    ax[1].set_ylabel("count")
    ax[1].legend(fontsize=8, ncol=5)
    t0 = min((w["t"] for w in windows), default=0)
    start = samples[0]["wall"] if samples else t0
    for client in sorted({w["client"] for w in windows}):
        ws = [w for w in windows if w["client"] == client and w["infer_n"]]
        tm = [(w["t"] - start) / 60 for w in ws]
        ax[2].plot(tm, [w["p50_us"] for w in ws], "o-", ms=3, label=f"client {client} p50")
        ax[2].plot(tm, [w["p99_us"] for w in ws], "x--", ms=3, label=f"client {client} p99")
        ax[3].plot(tm, [w["infer_n"] / max(w["end"] - w["t"], 1e-9) for w in ws], label=f"client {client}")
    ax[2].set_ylabel("infer latency (µs)")
    ax[2].set_yscale("log")
    ax[2].legend(fontsize=6, ncol=4)
    ax[3].set_ylabel("infers/s per client")
    ax[3].set_xlabel("minutes")
    for a in ax:
        a.axvline(warmup_s / 60, color="grey", lw=0.8, ls=":")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
