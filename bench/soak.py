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
Writes DATE-soak-TAG.{json,md,png} into --out-dir.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

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
WINDOW_S = 10.0
# Fewer samples after warm-up than this give no slope worth judging.
MIN_STEADY_SAMPLES = 5


# -- clients (separate processes) ------------------------------------------------------------------


def _client(endpoint: str, seed: int, duration_s: float, out: "mp.Queue", start) -> None:
    """One soak client. Its clock starts at `start` (set once every client is ready): starting a
    spawned process and its ONNX Runtime references takes seconds on a small machine, which
    once ate a whole short soak before its first request."""
    from trtd.daemon.backends.onnxruntime import create_session
    from trtd.daemon.builtin.onnx_models import builtin_model_path
    from trtd.sdk import Client, InvalidInput, Overloaded

    refs = {"demo": create_session(builtin_model_path("demo")),
            "nearzero224": create_session(builtin_model_path("nearzero224"))}
    refs["pool"] = refs["demo"]
    rng = np.random.default_rng(seed)
    window = _Window(time.time())
    client = Client(endpoint, timeout=30, name=f"soak-{seed}")
    out.put(("ready", seed))
    start.wait()
    until = time.time() + duration_s
    try:
        while True:  # at least one request, however short the soak
            roll = rng.random()
            began = time.perf_counter()
            kind = "infer"
            try:
                if roll < 0.45:
                    x = rng.standard_normal((int(rng.integers(1, 9)), 64), dtype=np.float32)
                    model = "demo" if rng.random() < 0.6 else "pool"
                    ok = np.allclose(client.infer(model, x), refs[model].run(None, {"x": x})[0], atol=1e-5)
                elif roll < 0.55:
                    x = rng.standard_normal((1, 3, 224, 224), dtype=np.float32)
                    ok = np.allclose(client.infer("nearzero224", x),
                                     refs["nearzero224"].run(None, {"x": x})[0], atol=1e-4)
                elif roll < 0.75:
                    handle = client.model("demo")
                    x = rng.standard_normal((1, 64), dtype=np.float32)
                    handle.zero_copy_inputs()["x"][...] = x
                    ok = np.allclose(handle.run_zero_copy()["y"], refs["demo"].run(None, {"x": x})[0],
                                     atol=1e-5)
                elif roll < 0.85:
                    kind = "lease"
                    region = client.lease(int(rng.integers(1, 1 << 20)))
                    region.bytes[:16] = 7
                    client.release(region)
                    ok = True
                elif roll < 0.90:
                    kind = "reconnect"
                    client.close()
                    client = Client(endpoint, timeout=30, name=f"soak-{seed}")
                    ok = True
                elif roll < 0.95:
                    kind = "bad"  # must be refused with a clear error, never answered
                    try:
                        client.infer("demo", np.zeros((1, 63), np.float32))
                        ok = False
                    except InvalidInput:
                        ok = True
                else:
                    kind = "status"
                    ok = client.status().regions >= 0
            except Overloaded:
                kind, ok = "overloaded", True  # backpressure working as designed
            except Exception as exc:  # noqa: BLE001 - a failed correct request: counted, reported
                ok = False
                window.errors.append(f"{type(exc).__name__}: {exc}")
            elapsed_us = (time.perf_counter() - began) * 1e6
            window.add(kind, ok, elapsed_us)
            if time.time() - window.start >= WINDOW_S:
                out.put(window.summary(seed))
                window = _Window(time.time())
            if time.time() >= until:
                break
        out.put(window.summary(seed))
    finally:
        client.close()
        out.put(("done", seed))


@dataclass
class _Window:
    start: float
    latencies: list = field(default_factory=list)
    counts: dict = field(default_factory=dict)
    failed: int = 0
    errors: list = field(default_factory=list)

    def add(self, kind: str, ok: bool, us: float) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if not ok:
            self.failed += 1
        if kind == "infer":
            self.latencies.append(us)

    def summary(self, seed: int) -> dict:
        lat = np.array(self.latencies) if self.latencies else np.zeros(1)
        return {"client": seed, "t": self.start, "end": time.time(), "counts": self.counts,
                "failed": self.failed, "errors": self.errors[:5], "infer_n": len(self.latencies),
                "p50_us": float(np.percentile(lat, 50)), "p99_us": float(np.percentile(lat, 99))}


# -- the daemon's side -----------------------------------------------------------------------------


def _wait_ready(queue, workers, timeout_s: float = 300.0) -> None:
    """Until every client has said "ready"; a client that died while starting ends the soak."""
    import queue as queues

    ready, deadline = 0, time.monotonic() + timeout_s
    while ready < len(workers):
        try:
            item = queue.get(timeout=0.5)
        except queues.Empty:
            dead = [w for w in workers if w.exitcode is not None]
            if dead or time.monotonic() > deadline:
                for w in workers:
                    w.kill()
                raise SystemExit(f"soak: {len(dead)} client(s) exited before starting (exit codes "
                                 f"{[w.exitcode for w in dead]})" if dead else
                                 f"soak: clients not ready after {timeout_s:.0f} s")
            continue
        if item[0] == "ready":
            ready += 1


def _sample(client, proc, prefix: str, t0: float) -> dict:
    status = client.status()
    p = proc
    with p.oneshot():
        sample = {"t": time.time() - t0, "rss": p.memory_info().rss, "fds": p.num_fds(),
                  "threads": p.num_threads()}
    shm = [n for n in os.listdir("/dev/shm") if n.startswith(prefix)] if os.path.isdir("/dev/shm") else []
    sample.update(regions=status.regions, region_bytes=status.region_bytes, shm_files=len(shm),
                  clients=status.clients, pinned_bytes=status.pinned_bytes,
                  device_used=sum(d.total_bytes - d.free_bytes for d in status.devices))
    return sample


def _judge(samples: list[dict], warmup_s: float) -> dict:
    from scipy.stats import theilslopes

    steady = [s for s in samples if s["t"] >= warmup_s]
    verdict = {}
    if len(steady) < MIN_STEADY_SAMPLES:
        return {"error": f"growth not judged: {len(steady)} sample(s) after the {warmup_s:g} s "
                         f"warm-up, {MIN_STEADY_SAMPLES} needed; run longer (--minutes) or sample "
                         f"more often (--sample-s), or shorten --warmup-s"}
    t = np.array([s["t"] for s in steady])
    span = float(t[-1] - t[0])
    for key in ("rss", "fds", "threads", "regions", "shm_files", "pinned_bytes", "device_used"):
        y = np.array([s[key] for s in steady], dtype=float)
        slope, _, low, high = theilslopes(y, t)
        growth = slope * span
        tolerance = max(0.02 * float(np.median(y)), 4 * 2**20) if key == "rss" else (
            max(0.02 * float(np.median(y)), 1.0) if key in ("pinned_bytes", "device_used") else 1.0)
        verdict[key] = {"slope_per_s": float(slope), "slope_ci": [float(low), float(high)],
                        "growth_over_steady_span": float(growth), "tolerance": tolerance,
                        "first": float(y[0]), "last": float(y[-1]), "median": float(np.median(y)),
                        "pass": bool(growth <= tolerance)}
    verdict["steady_span_s"] = span
    return verdict


def _plot(samples: list[dict], windows: list[dict], path: Path, title: str, warmup_s: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtd.bench.soak", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--sample-s", type=float, default=2.0)
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--out-dir", default="bench/results")
    parser.add_argument("--tag", default=f"cpu-{os.cpu_count()}core")
    parser.add_argument("--endpoint", help="use a running daemon (it must serve demo, pool, nearzero224)")
    args = parser.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="trtd-soak-"))
    daemon = None
    endpoint = args.endpoint
    if endpoint is None:
        (tmp / "d.toml").write_text(CONFIG)
        endpoint = f"ipc://{tmp / 'd.sock'}"
        daemon = subprocess.Popen([sys.executable, "-m", "trtd.daemon", "serve", "--config", str(tmp / "d.toml"),
                                   "--endpoint", endpoint, "--log-level", "WARNING"],
                                  stdout=open(tmp / "d.log", "wb"), stderr=subprocess.STDOUT,
                                  env={**os.environ, "TRTD_RUNTIME_DIR": str(tmp / "run")})
    try:
        return _soak(args, argv, endpoint)
    finally:  # also when the soak gives up (no daemon, a client that did not start)
        if daemon is not None:
            daemon.terminate()
            daemon.wait(30)


def _soak(args, argv, endpoint: str) -> int:
    """The soak against the daemon at `endpoint`: clients, samples, verdict, report files."""
    import psutil

    from trtd.daemon.serve.endpoint_lock import endpoint_prefix
    from trtd.sdk import Client

    for _ in range(600):
        try:
            watcher = Client(endpoint, timeout=10, connect_timeout=0.5, name="soak-watcher")
            break
        except Exception:  # noqa: BLE001 - still starting
            time.sleep(0.2)
    else:
        raise SystemExit(f"no daemon at {endpoint}")
    proc = psutil.Process(watcher.status().pid)
    prefix = endpoint_prefix(endpoint)
    ctx = mp.get_context("spawn")
    queue, start = ctx.Queue(), ctx.Event()
    workers = [ctx.Process(target=_client, args=(endpoint, i, args.minutes * 60, queue, start))
               for i in range(args.clients)]
    for w in workers:
        w.start()
    _wait_ready(queue, workers)
    t0 = time.time()
    start.set()
    samples, windows, done = [], [], 0
    next_sample = t0
    while done < args.clients:
        now = time.time()
        if now >= next_sample:
            s = _sample(watcher, proc, prefix, t0)
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
    final = _sample(watcher, proc, prefix, t0)
    watcher.close()
    version = {"trtd": __import__("trtd.protocol", fromlist=["SERVER_VERSION"]).SERVER_VERSION}
    for mod in ("onnxruntime", "numpy", "zmq"):
        version[mod] = getattr(__import__(mod), "__version__", "?")

    verdict = _judge(samples, args.warmup_s)
    failed = sum(w["failed"] for w in windows)
    totals: dict[str, int] = {}
    for w in windows:
        for k, v in w["counts"].items():
            totals[k] = totals.get(k, 0) + v
    problems = _problems(verdict, failed, final)
    ok = not problems
    date = time.strftime("%Y-%m-%d")
    result = {
        "date": date, "pass": ok, "problems": problems, "command": "python -m trtd.bench.soak " + " ".join(argv or sys.argv[1:]),
        "machine": {"node": platform.node(), "cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "note": "CPU shared with other jobs"},
        "versions": version, "clients": args.clients, "minutes": args.minutes,
        "requests": totals, "failed_correct_requests": failed,
        "errors": [e for w in windows for e in w["errors"]][:20],
        "final_after_clients_left": final, "growth": verdict, "samples": samples, "windows": windows,
    }
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / f"{date}-soak-{args.tag}"
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    _plot(samples, windows, stem.with_suffix(".png"),
          f"trtd soak: {args.clients} clients x {args.minutes:g} min, {platform.node()}, "
          f"{os.cpu_count()} CPUs (shared) — {'PASS' if ok else 'FAIL'}", args.warmup_s)
    stem.with_suffix(".md").write_text(_report(result, stem.with_suffix(".png").name))
    print(stem.with_suffix(".md").read_text())
    return 0 if ok else 1


def _problems(growth: dict, failed: int, final: dict) -> list[str]:
    """Why the run fails; empty when it passes. A run whose growth could not be judged fails
    (growth holds "error" then): passing it would claim "no growth" without a measurement."""
    problems = []
    if failed:
        problems.append(f"{failed} correct request(s) failed")
    if final["regions"] or final["shm_files"]:
        problems.append(f"after the clients left: {final['regions']} region(s), "
                        f"{final['shm_files']} file(s) in /dev/shm")
    if "error" in growth:
        problems.append(growth["error"])
    problems += [f"{key} grew by {v['growth_over_steady_span']:.3g} (tolerance {v['tolerance']:.3g})"
                 for key, v in growth.items() if isinstance(v, dict) and not v["pass"]]
    return problems


def _report(r: dict, png: str) -> str:
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


if __name__ == "__main__":
    sys.exit(main())
