"""Soak: N clients x M minutes of mixed requests against one daemon; does anything grow?

    python -m trtd.bench.soak --clients 4 --minutes 3

Starts a daemon (or uses --endpoint), runs client processes that mix inline and
pooled (worker-instance) models, batch sizes, a larger 224x224 model, zero-copy
requests, region lease/release churn, reconnecting clients and deliberately bad
requests (expected errors, counted apart). Every answer is checked against ONNX
Runtime in-process. Meanwhile the daemon is sampled: RSS, open descriptors,
threads, regions, region bytes, files in /dev/shm, clients, pinned bytes and
device memory (when a GPU model is served), and per-window latency percentiles.

Pass: zero failed correct requests, and no growth after warm-up: a Theil-Sen
slope (scipy.stats.theilslopes) over the post-warm-up samples, projected over
that span, stays under a tolerance (RSS: 2 % of its median or 4 MiB, whichever
is larger; descriptors, threads, regions, /dev/shm files: under 1); and every
region is gone once the clients have left. A run too short to judge growth (fewer
than MIN_STEADY_SAMPLES samples after --warmup-s) fails: it proved nothing.
Writes DATE-soak-TAG.{json,md,png} into --out-dir. The parts: clients.py (the client
processes), sampling.py (what is sampled of the daemon), verdict.py (the growth verdict),
report.py (Markdown and plot).
"""


from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from ..lib.daemon import BenchError, connect, started_daemon
from ..lib.meta import command
from ..lib.results import dated_stem, write_json, write_text
from . import report
from .clients import run_client, wait_ready
from .sampling import sample
from .verdict import judge, problems

CONFIG = """reclaim_interval_s = 0.5
[models.demo]
path = "builtin:demo"
[models.pool]
path = "builtin:demo"
instances = 2
max_queue = 16
[models.nearzero224]
path = "builtin:nearzero224"
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m trtd.bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--sample-s", type=float, default=2.0)
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--out-dir", default="bench/results")
    parser.add_argument("--tag", default=f"cpu-{os.cpu_count()}core")
    parser.add_argument("--endpoint", help="use a running daemon (it must serve demo, pool, nearzero224)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    # Kept after the run (not a TemporaryDirectory): the daemon's log d.log is there.
    tmp = Path(tempfile.mkdtemp(prefix="trtd-soak-"))
    with ExitStack() as stack:  # the daemon stops also when the soak gives up
        endpoint, daemon = args.endpoint, None
        if endpoint is None:
            (tmp / "d.toml").write_text(CONFIG)
            endpoint, daemon = stack.enter_context(
                started_daemon(tmp, ["--config", str(tmp / "d.toml")], log=tmp / "d.log"))
        from trtd.sdk import TrtdError

        try:
            watcher = stack.enter_context(connect(endpoint, daemon, name="soak-watcher", timeout=60))
        except (BenchError, TrtdError) as exc:
            raise SystemExit(f"no daemon at {endpoint}: {exc}") from None
        return soak(args, argv, endpoint, watcher)


def soak(args: argparse.Namespace, argv: list[str], endpoint: str, watcher: Any) -> int:
    """The soak against the daemon at `endpoint`: clients, samples, verdict, report files."""
    import psutil

    from trtd.daemon.serve.endpoint_lock import endpoint_prefix

    proc = psutil.Process(watcher.status().pid)
    prefix = endpoint_prefix(endpoint)
    ctx = mp.get_context("spawn")
    queue, start = ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=run_client, args=(endpoint, i, args.minutes * 60, queue, start))
               for i in range(args.clients)]
    for w in workers:
        w.start()
    wait_ready(queue, workers)
    t0 = time.time()
    start.set()
    samples: list[dict[str, Any]] = []
    windows: list[dict[str, Any]] = []
    done, next_sample = 0, t0
    while done < args.clients:
        now = time.time()
        if now >= next_sample:
            s = sample(watcher, proc, prefix, t0)
            s["wall"] = now
            samples.append(s)
            next_sample += args.sample_s
        try:
            item = queue.get(timeout=max(0.05, next_sample - time.time()))
        except Exception:  # noqa: BLE001 - queue.Empty
            continue
        if isinstance(item, tuple):
            done += 1
        else:
            windows.append(item)
    for w in workers:
        w.join(30)
    time.sleep(1.5)  # goodbyes and reclaim
    final = sample(watcher, proc, prefix, t0)
    result = _result(args, argv, samples, windows, final)
    stem = dated_stem(args.out_dir, "soak", args.tag)
    write_json(f"{stem}.json", result, indent=1)
    png = Path(f"{stem}.png")
    report.plot(samples, windows, png,
                f"trtd soak: {args.clients} clients x {args.minutes:g} min, {platform.node()}, "
                f"{os.cpu_count()} CPUs (shared) — {'PASS' if result['pass'] else 'FAIL'}", args.warmup_s)
    text = report.markdown(result, png.name)
    write_text(f"{stem}.md", text)
    print(text)
    return 0 if result["pass"] else 1


def _result(args: argparse.Namespace, argv: list[str], samples: list[dict[str, Any]],
            windows: list[dict[str, Any]], final: dict[str, Any]) -> dict[str, Any]:
    """Everything the JSON file holds: verdict, totals, machine, versions, command, samples."""
    from trtd.protocol import SERVER_VERSION

    versions = {"trtd": SERVER_VERSION}
    for mod in ("onnxruntime", "numpy", "zmq"):
        versions[mod] = getattr(__import__(mod), "__version__", "?")
    growth = judge(samples, args.warmup_s)
    failed = sum(w["failed"] for w in windows)
    totals: dict[str, int] = {}
    for w in windows:
        for k, v in w["counts"].items():
            totals[k] = totals.get(k, 0) + v
    found = problems(growth, failed, final)
    return {
        "date": time.strftime("%Y-%m-%d"), "pass": not found, "problems": found,
        "command": command("trtd.bench.soak", argv),
        "machine": {"node": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "note": "CPU shared with other jobs"},
        "versions": versions, "clients": args.clients, "minutes": args.minutes,
        "requests": totals, "failed_correct_requests": failed,
        "errors": [e for w in windows for e in w["errors"]][:20],
        "final_after_clients_left": final, "growth": growth, "samples": samples, "windows": windows,
    }
