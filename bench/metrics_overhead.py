"""What the metrics endpoint costs a request: daemons with metrics off and on, in one run.

    python -m trtd.bench.metrics_overhead [--model mlp] [--iterations 10000] [--block 100]
                                          [--scrape-interval 1.0] [--json PATH] [--markdown PATH]

Both daemons are started by the benchmark (`sys.executable -m trtd.daemon serve`, private ipc
endpoints) and serve the same built-in model; the second one with `--metrics 127.0.0.1:PORT`,
so it also records every request's timing histograms. A scraper in a process of its own GETs
that daemon's /metrics every --scrape-interval seconds for the whole run (Prometheus scrapes
every 15-60 s: 1 s is the harsh case), so its exposition work lands in the measured daemon as
it would in production. A third daemon, identical to the first, is the control: the difference
between the two metrics-off daemons is the noise the on/off difference is judged by. One SDK
client times `handle(x)` (the copying path) against all three,
interleaved in blocks with the starting daemon rotated each round (trtd.bench.lib.interleave):
machine noise falls on both alike. Reported: client-side percentiles, the daemons' own p50
(`trtd status`), each daemon's CPU seconds over the run, the scrapes done, and whether the
scraped request count equals the requests sent; plus the recording itself timed in-process
(StageHistograms.observe, ns per call).
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import timeit
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import psutil

from .lib import meta
from .lib.daemon import connect, started_daemon
from .lib.interleave import Schedule, measure
from .lib.processes import start_process, stop_process
from .lib.progress import Progress
from .lib.stats import Summary
from .lib.workloads import MODELS

_SCRAPER = r"""
import sys, time, urllib.request
url, interval = sys.argv[1], float(sys.argv[2])
done = failed = 0
spent = 0.0
try:
    while True:
        began = time.monotonic()
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                r.read()
            done += 1
            spent += time.monotonic() - began
        except Exception:
            failed += 1
        time.sleep(max(interval - (time.monotonic() - began), 0))
except KeyboardInterrupt:
    pass
finally:
    print(done, failed, spent, flush=True)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _observe_ns() -> float:
    """ns per StageHistograms.observe of a CPU model's timing (three stages)."""
    from trtd.daemon.running.histograms import StageHistograms
    from trtd.protocol import messages as m

    histograms, timing = StageHistograms(device=False), m.Timing(compute_us=60, total_us=80, queue_us=3)
    n = 200_000
    return min(timeit.repeat(lambda: histograms.observe(timing), number=n, repeat=5)) / n * 1e9


def _scraped_requests(port: int, model: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "trtd_model_requests_total" and sample.labels.get("model") == model:
                return sample.value
    return float("nan")


def run(args) -> dict:
    port = _free_port()
    x = MODELS[args.model].make_inputs(0)["x"]
    with ExitStack() as stack, tempfile.TemporaryDirectory(prefix="trtd-metrics-bench-") as tmp:
        serve = ["--model", f"{args.model}=builtin:{args.model}"]
        procs = {"metrics off": stack.enter_context(started_daemon(Path(tmp) / "off", serve)),
                 # The control: a second daemon exactly like the first, so the run shows how far
                 # two identical daemons differ here (the noise the on/off difference is judged by).
                 "metrics off (control)": stack.enter_context(started_daemon(Path(tmp) / "off2", serve)),
                 "metrics on": stack.enter_context(
                     started_daemon(Path(tmp) / "on", [*serve, "--metrics", f"127.0.0.1:{port}"]))}
        clients = {name: stack.enter_context(connect(endpoint, proc))
                   for name, (endpoint, proc) in procs.items()}
        handles = {name: c.model(args.model) for name, c in clients.items()}
        for handle in handles.values():
            handle(x)  # loaded, region leased
        scraper = start_process([sys.executable, "-c", _SCRAPER, f"http://127.0.0.1:{port}/metrics",
                                 str(args.scrape_interval)], stdout=subprocess.PIPE, text=True)
        daemons = {name: psutil.Process(proc.pid) for name, (_, proc) in procs.items()}
        cpu_before = {name: sum(p.cpu_times()[:2]) for name, p in daemons.items()}
        began = time.monotonic()
        schedule = Schedule(args.iterations, args.warmup, args.block, args.settle)
        progress = Progress()
        progress.start(f"{args.model}: metrics off vs on")
        samples = measure({name: (lambda h=h: h(x)) for name, h in handles.items()}, schedule, progress)
        progress.done()
        seconds = time.monotonic() - began
        cpu = {name: sum(p.cpu_times()[:2]) - cpu_before[name] for name, p in daemons.items()}
        scraper.send_signal(2)  # SIGINT: it prints its counts
        done, failed, spent = scraper.communicate(timeout=10)[0].split()
        scrapes, scrape_failures, scrape_seconds = int(done), int(failed), float(spent)
        stop_process(scraper, "scraper")
        daemon_p50 = {name: c.status().models[0].p50_us for name, c in clients.items()}
        sent = args.warmup + args.iterations + args.settle * (-(-args.iterations // args.block)) + 1
        scraped = _scraped_requests(port, args.model)
    rows = {}
    for name, ns in samples.items():
        s = Summary.of(ns)
        rows[name] = {"p50_us": s.p50_us, "p90_us": s.p90_us, "p99_us": s.p99_us, "mean_us": s.mean_us,
                      "max_us": s.max_us, "daemon_p50_us": daemon_p50[name],
                      "daemon_cpu_s": cpu[name], "n": s.n}
    return {
        "environment": {**meta.machine(),
                        "versions": meta.versions(["numpy", "pyzmq", "msgpack", "onnxruntime",
                                                   "prometheus_client", "psutil", "trtd"]),
                        "command": meta.command("trtd.bench.metrics_overhead", sys.argv[1:])},
        "model": args.model, "schedule": vars(schedule), "seconds": seconds,
        "scrape_interval_s": args.scrape_interval, "scrapes": scrapes, "scrape_failures": scrape_failures,
        "scrape_ms_mean": scrape_seconds / scrapes * 1000 if scrapes else None,
        "requests_sent_to_metrics_on": sent, "requests_scraped": scraped,
        "observe_ns": _observe_ns(), "rows": rows,
    }


def markdown(result: dict) -> str:
    env, rows = result["environment"], result["rows"]
    off, control, on = rows["metrics off"], rows["metrics off (control)"], rows["metrics on"]
    lines = [
        "# Metrics endpoint overhead", "",
        f"{env['date']} on `{env['hostname']}`: {env['cpu_model']}, {env['logical_cores']} logical cores, "
        f"{env['platform']}, {env['python']}.", "",
        f"Model `{result['model']}` through the SDK's copying path (`handle(x)`), one client; "
        f"{result['schedule']['iterations']} timed requests per daemon (+{result['schedule']['warmup']} "
        f"warm-up), interleaved in blocks of {result['schedule']['block']} (each after "
        f"{result['schedule']['settle']} untimed). The `metrics on` daemon was scraped every "
        f"{result['scrape_interval_s']:g} s by a separate process: {result['scrapes']} scrapes, "
        f"{result['scrape_failures']} failed, {result['scrape_ms_mean']:.1f} ms each on average (the scraper's "
        f"GET to the end of the body); its scraped `trtd_model_requests_total` was "
        f"{result['requests_scraped']:.0f} for {result['requests_sent_to_metrics_on']} requests sent.", "",
        "| daemon | p50 µs | p90 µs | p99 µs | mean µs | max µs | daemon-side p50 µs | daemon CPU s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['p50_us']:.1f} | {r['p90_us']:.1f} | {r['p99_us']:.1f} | "
                     f"{r['mean_us']:.1f} | {r['max_us']:.0f} | {r['daemon_p50_us']:.1f} | {r['daemon_cpu_s']:.2f} |")
    def diff(a: dict, b: dict) -> str:
        return (f"p50 {a['p50_us'] - b['p50_us']:+.1f} µs ({(a['p50_us'] / b['p50_us'] - 1) * 100:+.1f} %), "
                f"p99 {a['p99_us'] - b['p99_us']:+.1f} µs, daemon-side p50 "
                f"{a['daemon_p50_us'] - b['daemon_p50_us']:+.1f} µs")

    lines += ["", f"- on - off: {diff(on, off)}.",
              f"- control - off (two identical daemons, the noise of this run): {diff(control, off)}.", "",
              f"The recording itself (`StageHistograms.observe`, three stages of a CPU model, in-process): "
              f"{result['observe_ns']:.0f} ns per request.", "",
              "## Environment", "", "```json", json.dumps(result["environment"], indent=2), "```", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtd.bench.metrics_overhead", description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="mlp", choices=sorted(MODELS), help="a built-in model (default mlp)")
    parser.add_argument("--iterations", type=int, default=10000)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--block", type=int, default=100)
    parser.add_argument("--settle", type=int, default=2)
    parser.add_argument("--scrape-interval", type=float, default=1.0, metavar="SECONDS")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    args = parser.parse_args(argv)
    result = run(args)
    text = markdown(result)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        args.markdown.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
