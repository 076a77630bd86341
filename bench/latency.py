"""Latency benchmark: trtd vs in-process ONNX Runtime vs the transport floor.

    python -m trtd.bench.latency [--models mlp,nearzero224,resnet18,volume3d]
                                 [--model NAME=PATH [--shape NAME:INPUT=DIMS]]
                                 [--iterations N] [--warmup N] [--block N] [--settle N]
                                 [--json PATH] [--markdown PATH] [--endpoint URL]
    trtd bench [the same options]

For each selected model (a built-in one, or your own ONNX file with --model
NAME=PATH, see trtd.bench.workloads), one run on one machine measures four
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
import ctypes
import gc
import importlib.metadata
import json
import os
import platform
import secrets
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from multiprocessing import shared_memory
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .workloads import BenchModel, own_models

TOLERANCE = 1e-5
TARGET_RATIO = 2.0  # overhead p50 must be at most this many floor p50s

# Keys in the JSON, and the order of rows everywhere.
SYSTEMS = ("floor", "in_process", "daemon_copy", "daemon_zero_copy")
SYSTEM_LABELS = {
    "floor": "floor (zmq rt + memcpy)",
    "in_process": "in-process ORT",
    "daemon_copy": "daemon copy",
    "daemon_zero_copy": "daemon zero-copy*",
}
DAEMON_SYSTEMS = ("daemon_copy", "daemon_zero_copy")

FLOOR_DEFINITION = (
    "a bare pyzmq DEALER->ROUTER round trip of the encoded infer request (msgpack, packed "
    "once) over the daemon's transport kind, echoed by a ROUTER in a separate process, with a "
    "memcpy (np.copyto) of the input bytes into a multiprocessing.shared_memory block done inside "
    "the timed section before the send"
)
ZERO_COPY_NOTE = ("the zero-copy row excludes the client's write of the input: it is written once "
                  "into the zero_copy_inputs() views before timing")


# The built-in models the benchmark knows: their shapes and how heavy one call is. A user's own
# ONNX model (`trtd bench --model NAME=PATH`) is described from its file (trtd.bench.workloads).
MODELS: dict[str, BenchModel] = {
    m.name: m for m in (
        BenchModel.builtin("mlp", (1, 64), (1, 10), heavy=False),
        BenchModel.builtin("nearzero224", (1, 3, 224, 224), (1, 3), heavy=False),
        BenchModel.builtin("resnet18", (1, 3, 224, 224), (1, 5), heavy=True),
        BenchModel.builtin("volume3d", (1, 1, 128, 256, 256), (1, 1, 128, 256, 256), heavy=True),
    )
}
DEFAULT_ITERATIONS = {False: 2000, True: 200}  # by BenchModel.heavy
DEFAULT_BLOCK = {False: 50, True: 20}
DEFAULT_SETTLE = 2


class BenchError(RuntimeError):
    """The benchmark could not run (exit status 3)."""


# -- results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Summary:
    """Summary statistics of one system's timed samples, in microseconds."""

    n: int
    p50_us: float
    p90_us: float
    p99_us: float
    mean_us: float
    max_us: float
    min_us: float
    std_us: float

    @classmethod
    def of(cls, samples_ns: list[int]) -> "Summary":
        us = np.asarray(samples_ns, dtype=np.float64) / 1000.0
        p50, p90, p99 = np.percentile(us, (50, 90, 99))
        return cls(n=len(us), p50_us=float(p50), p90_us=float(p90), p99_us=float(p99),
                   mean_us=float(us.mean()), max_us=float(us.max()), min_us=float(us.min()),
                   std_us=float(us.std()))


@dataclass(frozen=True)
class Overhead:
    """One daemon path against in-process ONNX Runtime, measured in floors."""

    overhead_p50_us: float  # daemon p50 - in-process p50
    ratio_to_floor: float   # overhead p50 / floor p50
    target_met: bool        # ratio <= TARGET_RATIO

    @classmethod
    def of(cls, daemon: Summary, in_process: Summary, floor: Summary) -> "Overhead":
        overhead = daemon.p50_us - in_process.p50_us
        ratio = overhead / floor.p50_us
        return cls(overhead_p50_us=overhead, ratio_to_floor=ratio, target_met=ratio <= TARGET_RATIO)


@dataclass(frozen=True)
class Correctness:
    max_abs_diff_copy: float
    max_abs_diff_zero_copy: float
    tolerance: float = TOLERANCE

    @property
    def ok(self) -> bool:
        # Written so that NaN (a NaN in either output) counts as a mismatch.
        return bool(self.max_abs_diff_copy <= self.tolerance and
                    self.max_abs_diff_zero_copy <= self.tolerance)


@dataclass
class ModelResult:
    model: str
    input_shape: list[int]   # the first input's and output's (a built-in model has one of each)
    output_shape: list[int]
    input_bytes: int
    request_bytes: int  # the msgpack message the floor sends
    iterations: int
    warmup: int
    block: int
    settle: int
    correctness: Correctness
    systems: dict[str, Summary] = field(default_factory=dict)
    overheads: dict[str, Overhead] = field(default_factory=dict)
    # The daemon's own p50 (message received -> reply built, 1 µs resolution) from `status`,
    # over its recent requests of this model on both paths, warm-up included; None on --endpoint
    # (other clients' requests would be mixed in).
    daemon_side_p50_us: float | None = None
    signature: str = ""  # every input and output: "x float32[1,64] -> y float32[1,10]"
    path: str = ""       # the user's ONNX file ("" for a built-in model)

    @property
    def floor_p50_us(self) -> float:
        return self.systems["floor"].p50_us

    def to_json(self) -> dict:
        out = asdict(self)
        out["correctness"]["ok"] = self.correctness.ok
        out["floor_p50_us"] = self.floor_p50_us
        return out


# -- options -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    model: BenchModel
    iterations: int
    warmup: int
    block: int
    settle: int


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
    parser.add_argument("--iterations", type=_positive_int, metavar="N",
                        help="timed iterations per system and model (default: "
                             f"{DEFAULT_ITERATIONS[False]}, {DEFAULT_ITERATIONS[True]} for "
                             f"{', '.join(m.name for m in MODELS.values() if m.heavy)})")
    parser.add_argument("--warmup", type=_non_negative_int, metavar="N",
                        help="discarded iterations per system before timing (default: 10%% of "
                             "the iterations, at least 10)")
    parser.add_argument("--block", type=_positive_int, metavar="N",
                        help=f"iterations per interleaved block (default: {DEFAULT_BLOCK[False]}, "
                             f"{DEFAULT_BLOCK[True]} for the heavy models)")
    parser.add_argument("--settle", type=_non_negative_int, default=DEFAULT_SETTLE, metavar="N",
                        help="untimed iterations at the start of every block, which pay for the "
                             f"switch between systems (default: {DEFAULT_SETTLE})")
    parser.add_argument("--json", metavar="PATH", help="write meta and results as JSON")
    parser.add_argument("--markdown", metavar="PATH", help="write a Markdown report (bench/results/)")
    parser.add_argument("--endpoint", help="use the daemon already running here instead of starting "
                                           "one; it must serve the selected models")
    return parser


def add_own_model_options(parser: argparse.ArgumentParser) -> None:
    """--model NAME=PATH and --shape NAME:INPUT=DIMS: the user's own ONNX models, beside the built-ins."""
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="also benchmark your own ONNX model PATH, served as NAME; repeatable. Its "
                             "inputs come from the model (seeded random data); a dynamic first "
                             "dimension is 1 unless --shape says otherwise")
    parser.add_argument("--shape", action="append", default=[], metavar="NAME:INPUT=DIMS",
                        help="the shape INPUT of model NAME runs with, e.g. mine:x=1x3x224x224; "
                             "needed for every dynamic dimension but the first; repeatable")


def selected_models(args: argparse.Namespace, default: str) -> str:
    """--models as given; else `default`, or no built-in at all when the user brought models."""
    if args.models is not None:
        return args.models
    return "" if args.model else default


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def make_plans(args: argparse.Namespace, own: tuple[BenchModel, ...] = ()) -> list[Plan]:
    """Plans for the built-in models named in args.models, then for `own` (the user's models)."""
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not (names or own):
        files = [n for n in unknown if n.lower().endswith(".onnx") or "/" in n]
        hint = (f"; to benchmark your own ONNX model use --model NAME=PATH, e.g. --model "
                f"{Path(files[0]).stem}={files[0]}" if files else
                "; your own ONNX model: --model NAME=PATH")
        raise ValueError(f"unknown model(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(MODELS)}{hint}")
    plans = []
    for model in [MODELS[name] for name in dict.fromkeys(names)] + list(own):  # dict: drops repeats
        iterations = args.iterations or DEFAULT_ITERATIONS[model.heavy]
        warmup = args.warmup if args.warmup is not None else max(10, iterations // 10)
        block = min(args.block or DEFAULT_BLOCK[model.heavy], iterations)
        plans.append(Plan(model, iterations, warmup, block, args.settle))
    return plans


# -- processes we start --------------------------------------------------------------------------


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn making a Linux child get SIGTERM if we die without cleaning up (SIGKILL,
    os._exit), so not even a killed benchmark leaves a daemon behind."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        # Resolved here, in the parent: the child must not load libraries between fork and exec.
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)

    return preexec


def _start_process(argv: list[str], env: dict[str, str] | None = None, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(argv, env=env, preexec_fn=_parent_death_signal(), **kwargs)


def _stop_process(proc: subprocess.Popen, what: str) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            print(f"trtd bench: the {what} (pid {proc.pid}) ignored SIGTERM for 30 s; killing it",
                  file=sys.stderr)
            proc.kill()
            proc.wait()


def _private_endpoint(tmpdir: Path, name: str) -> str:
    if sys.platform == "win32":  # no ipc:// in libzmq on Windows: loopback TCP like the daemon
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return f"tcp://127.0.0.1:{s.getsockname()[1]}"
    return f"ipc://{tmpdir / name}"


@contextmanager
def started_daemon(plans: list[Plan], tmpdir: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A daemon serving exactly the planned models on a private endpoint."""
    from trtd.daemon.serve.endpoint_lock import SHM_DIR, endpoint_prefix

    endpoint = _private_endpoint(tmpdir, "bench.sock")
    argv = [sys.executable, "-m", "trtd.daemon", "serve", "--endpoint", endpoint, "--log-level", "WARNING"]
    for plan in plans:
        argv += ["--model", plan.model.serve_flag()]
    # The lock file goes with the socket into our temp dir instead of accumulating, one per
    # temp endpoint, in the user's runtime dir.
    env = dict(os.environ, TRTD_RUNTIME_DIR=str(tmpdir))
    daemon = _start_process(argv, env=env)
    try:
        yield endpoint, daemon
    finally:
        _stop_process(daemon, "daemon")
        # Only a daemon on this endpoint can have made segments with its prefix, and it is gone:
        # anything left is a leak (a daemon bug, or a daemon that had to be killed).
        prefix = endpoint_prefix(endpoint)
        leftovers = sorted(p for p in SHM_DIR.glob(prefix + "*")) if SHM_DIR.is_dir() else []
        for path in leftovers:
            path.unlink(missing_ok=True)
        if leftovers:
            print(f"trtd bench: removed {len(leftovers)} shared-memory segment(s) the daemon left "
                  f"behind (exit status {daemon.returncode}): {', '.join(p.name for p in leftovers)}",
                  file=sys.stderr)


def connect(endpoint: str, daemon: subprocess.Popen | None, wait_s: float = 120.0):
    """An SDK client; while a daemon we started is coming up, keeps trying."""
    from trtd.sdk import Client, DaemonNotRunning

    deadline = time.monotonic() + wait_s
    while True:
        try:
            # A generous timeout: the first reply waits until every model is loaded.
            return Client(endpoint=endpoint, timeout=120.0, connect_timeout=0.5, name="trtd-bench")
        except DaemonNotRunning:
            if daemon is None:
                raise
            if daemon.poll() is not None:
                raise BenchError(f"the daemon exited with status {daemon.returncode} before answering "
                                 f"(its messages are above)") from None
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def check_models_served(client, plans: list[Plan]) -> None:
    served = {info.name: info for info in client.models()}
    for plan in plans:
        info = served.get(plan.model.name)
        if info is None:
            raise BenchError(f"the daemon at {client.endpoint} does not serve {plan.model.name!r} "
                             f"(it serves {', '.join(served) or 'nothing'})")
        if info.state != "ready":
            raise BenchError(f"model {plan.model.name!r} is {info.state} on the daemon: {info.error}")


# -- the floor -----------------------------------------------------------------------------------


def echo_main(endpoint: str) -> None:
    """The floor's other end (run in its own process): a ROUTER that sends every message back."""
    import zmq

    # Ctrl-C reaches the whole process group; the parent stops us, without a traceback here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    # A receive timeout instead of a poll per message: the message path stays bare, and we
    # still notice a parent that died without stopping us.
    sock.setsockopt(zmq.RCVTIMEO, 500)
    sock.bind(endpoint)
    parent = os.getppid()
    print(sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    while True:
        try:
            frames = sock.recv_multipart()
        except zmq.Again:
            if os.getppid() != parent:
                return
            continue
        sock.send_multipart(frames)


@contextmanager
def echo_server(endpoint: str) -> Iterator[str]:
    """The echo process, started and bound; yields the endpoint it listens on."""
    code = f"from trtd.bench.latency import echo_main; echo_main({endpoint!r})"
    proc = _start_process([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        bound = proc.stdout.readline().strip()  # printed once bound
        if not bound:
            raise BenchError(f"the floor's echo process exited ({proc.wait()}) before binding {endpoint}")
        yield bound
    finally:
        _stop_process(proc, "floor echo process")
        proc.stdout.close()


class Floor:
    """DEALER side of the floor plus the shared-memory block the input is copied into."""

    def __init__(self, endpoint: str, nbytes: int):
        import zmq

        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(endpoint)
        self._sock.send(b"hello")
        if not self._sock.poll(10_000):
            self._sock.close(linger=0)
            self._ctx.term()
            raise BenchError(f"the floor's echo process at {endpoint} did not answer within 10 s")
        self._sock.recv()
        # Named trtd_* so a leak would show up with the daemon's; not a daemon prefix (no hex hash).
        name = f"trtd_bench_{os.getpid()}_{secrets.token_hex(2)}"
        self._shm = shared_memory.SharedMemory(name=name, create=True, size=nbytes)

    def step(self, inputs: np.ndarray | list[np.ndarray], message: bytes) -> Callable[[], None]:
        """One floor sample: memcpy the inputs into the block (at aligned offsets, as in a
        region), send, wait for the echo."""
        from trtd.protocol import align_up

        arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
        pairs, offset = [], 0
        for a in arrays:
            pairs.append((np.ndarray(a.shape, a.dtype, buffer=self._shm.buf, offset=offset), a))
            offset = align_up(offset + a.nbytes)
        send, recv, copyto = self._sock.send, self._sock.recv, np.copyto
        if len(pairs) > 1:
            def run_many() -> None:
                for dst, src in pairs:
                    copyto(dst, src)
                send(message)
                recv()

            return run_many
        ((dst, x),) = pairs

        def run() -> None:  # one input: no loop in the timed section
            copyto(dst, x)
            send(message)
            recv()

        return run

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()
        gc.collect()  # drops the ndarray views made by step(), which pin the mapping
        try:
            self._shm.close()
        except BufferError:
            pass  # a view survived; the unlink below still removes the name
        self._shm.unlink()


def infer_message(model: BenchModel) -> bytes:
    """The bytes of an infer request like the SDK sends for this model (client-side encoded)."""
    from trtd.protocol import InputRef, OutputRef, encode_request, plan_slots
    from trtd.protocol import messages as m

    in_slots, end = plan_slots((t.name, t.nbytes) for t in model.inputs)
    out_slots, _ = plan_slots(((t.name, t.nbytes) for t in model.outputs), start=end)
    request = m.Infer(
        client_id=1, model=model.name, region="trtd_0123abcd_ab12_1", token=secrets.token_hex(16),
        inputs=[InputRef(name=t.name, dtype=t.dtype, shape=list(t.shape), offset=s.offset, nbytes=s.nbytes)
                for t, s in zip(model.inputs, in_slots)],
        outputs=[OutputRef(name=s.name, offset=s.offset, nbytes=s.nbytes) for s in out_slots],
    )
    return encode_request(request, 1)


# -- measuring -----------------------------------------------------------------------------------


class Progress:
    """Progress on stderr: one updating line on a terminal, start/end lines otherwise."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()

    def start(self, what: str) -> None:
        self._what = what
        if not self._tty:
            print(f"{what} ...", file=sys.stderr, flush=True)

    def update(self, done: int, total: int) -> None:
        if self._tty:
            print(f"\r{self._what}: {done}/{total}", end="", file=sys.stderr, flush=True)

    def done(self, note: str = "done") -> None:
        print(f"\r{self._what}: {note}" if self._tty else f"{self._what}: {note}",
              file=sys.stderr, flush=True)


@contextmanager
def gc_paused() -> Iterator[None]:
    # A collection landing in one system's sample would be charged to that system alone.
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def measure(steps: dict[str, Callable[[], object]], plan: Plan, progress: Progress) -> dict[str, list[int]]:
    """Warm every system up, then time them in interleaved round-robin blocks."""
    clock = time.perf_counter_ns
    for step in steps.values():
        for _ in range(plan.warmup):
            step()
    samples: dict[str, list[int]] = {name: [] for name in steps}
    order = list(steps)
    done = 0
    with gc_paused():
        for rnd in range((plan.iterations + plan.block - 1) // plan.block):
            n = min(plan.block, plan.iterations - done)
            # Rotate who goes first so no system always runs right after the same other one
            # (e.g. while the previous system's thread pool is still spinning down).
            shift = rnd % len(order)
            for name in order[shift:] + order[:shift]:
                step, out = steps[name], samples[name]
                for _ in range(plan.settle):
                    step()
                for _ in range(n):
                    t0 = clock()
                    step()
                    out.append(clock() - t0)
            done += n
            progress.update(done, plan.iterations)
    return samples


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0))


def _by_name(result, names: list[str]) -> dict[str, np.ndarray]:
    """The SDK's result (an array for one output, else a dict) as {output name: array}."""
    return result if isinstance(result, dict) else {names[0]: result}


def max_output_diff(got: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> float:
    if set(got) != set(expected):
        return float("inf")
    return max((max_abs_diff(got[name], expected[name]) for name in expected), default=0.0)


def bench_model(plan: Plan, client, floor: Floor, progress: Progress, own_daemon: bool) -> ModelResult:
    from trtd.daemon.backends.onnxruntime import create_session

    model = plan.model
    feed = model.make_inputs()
    session = create_session(model.source())
    handle = client.model(model.name)
    # One input goes as the array itself, as applications with one input call it.
    arg = next(iter(feed.values())) if len(feed) == 1 else feed
    names = [o.name for o in session.get_outputs()]

    # Correctness, once, before timing: both daemon paths against ONNX Runtime in this process.
    expected = dict(zip(names, session.run(None, feed)))
    diff_copy = max_output_diff(_by_name(handle(arg), names), expected)
    slots = handle.zero_copy_inputs({t.name: t.shape for t in model.inputs})
    for name, slot in slots.items():
        slot[...] = feed[name]  # the zero-copy inputs are written once, outside every timed section
    diff_zero_copy = max_output_diff(handle.run_zero_copy(), expected)
    del expected, slots

    message = infer_message(model)
    steps: dict[str, Callable[[], object]] = {
        "floor": floor.step(list(feed.values()), message),
        "in_process": lambda: session.run(None, feed),
        "daemon_copy": lambda: handle(arg),
        "daemon_zero_copy": handle.run_zero_copy,
    }
    progress.start(f"{model.name}: {plan.warmup} warm-up + {plan.iterations} timed x {len(steps)} "
                   f"systems, blocks of {plan.block} (+{plan.settle} settle)")
    samples = measure(steps, plan, progress)
    progress.done()

    systems = {name: Summary.of(samples[name]) for name in SYSTEMS}
    result = ModelResult(
        model=model.name, input_shape=list(model.input_shape), output_shape=list(model.output_shape),
        input_bytes=model.input_bytes, request_bytes=len(message), iterations=plan.iterations,
        warmup=plan.warmup, block=plan.block, settle=plan.settle,
        correctness=Correctness(diff_copy, diff_zero_copy), systems=systems,
        overheads={name: Overhead.of(systems[name], systems["in_process"], systems["floor"])
                   for name in DAEMON_SYSTEMS},
        signature=model.signature(), path=model.path,
    )
    if own_daemon:
        for status in client.status().models:
            if status.name == model.name:
                result.daemon_side_p50_us = status.p50_us
    return result


def run_benchmark(plans: list[Plan], endpoint: str | None, progress: Progress) -> list[ModelResult]:
    # Generate model files here first, so the daemon only reads finished files from the cache.
    for plan in plans:
        plan.model.source()
    results = []
    with ExitStack() as stack:
        tmpdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="trtd-bench-")))
        # Processes first, while this process has no threads yet (ORT and zmq start some).
        own_daemon, daemon = endpoint is None, None
        if own_daemon:
            endpoint, daemon = stack.enter_context(started_daemon(plans, tmpdir))
        floor_endpoint = stack.enter_context(echo_server(
            _private_endpoint(tmpdir, "floor.sock") if endpoint.startswith("ipc://")
            else "tcp://127.0.0.1:*"))
        floor = Floor(floor_endpoint, max(plan.model.input_region_bytes for plan in plans))
        stack.callback(floor.close)
        progress.start(f"connecting to the daemon at {endpoint}")
        client = stack.enter_context(connect(endpoint, daemon))
        progress.done("connected")
        check_models_served(client, plans)
        for plan in plans:
            results.append(bench_model(plan, client, floor, progress, own_daemon))
    return results


# -- reporting -----------------------------------------------------------------------------------


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_meta(argv: list[str], plans: list[Plan], endpoint: str | None) -> dict:
    import zmq

    from trtd.daemon.backends.onnxruntime import session_options

    options = session_options()
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "versions": {
            "numpy": np.__version__, "pyzmq": zmq.__version__, "libzmq": zmq.zmq_version(),
            "msgpack": _version("msgpack"), "onnxruntime": _version("onnxruntime"),
            "onnx": _version("onnx"), "psutil": _version("psutil"), "trtd": _version("trtd"),
        },
        "command": shlex.join([sys.executable, "-m", "trtd.bench.latency", *argv]),
        "daemon": "started by the benchmark (sys.executable -m trtd.daemon serve, private ipc endpoint)"
                  if endpoint is None else f"already running at {endpoint}",
        "onnxruntime_session": {
            "intra_op_num_threads": options.intra_op_num_threads,
            "inter_op_num_threads": options.inter_op_num_threads,
            "graph_optimization_level": str(options.graph_optimization_level),
            "providers": ["CPUExecutionProvider"],
        },
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


def _us(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"


def _shape(shape: list[int]) -> str:
    return "[" + ",".join(map(str, shape)) + "]"


def _io(r: ModelResult) -> str:
    """Inputs -> outputs; results written before `signature` existed were float32 x -> y."""
    return r.signature or f"float32 {_shape(r.input_shape)} -> {_shape(r.output_shape)}"


def inputs_text(r: ModelResult) -> str:
    return r.signature.split(" -> ")[0] if r.signature else _shape(r.input_shape)


def _bytes(n: int) -> str:
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def _overhead_text(o: Overhead) -> str:
    verdict = "met" if o.target_met else "MISSED"
    return f"{_us(o.overhead_p50_us)} µs = {o.ratio_to_floor:.2f}x floor ({verdict})"


def render_text(results: list[ModelResult]) -> str:
    lines = []
    header = f"  {'system':<24} {'p50':>9} {'p90':>9} {'p99':>9} {'mean':>9} {'max':>9}   (µs)"
    for r in results:
        lines.append(f"\n{r.model}: {_io(r)}, "
                     f"input {_bytes(r.input_bytes)}, request {r.request_bytes} B; "
                     f"{r.iterations} timed (+{r.warmup} warm-up) per system, blocks of {r.block} "
                     f"(+{r.settle} settle)")
        lines.append(header)
        for name in SYSTEMS:
            s = r.systems[name]
            lines.append(f"  {SYSTEM_LABELS[name]:<24} {_us(s.p50_us):>9} {_us(s.p90_us):>9} "
                         f"{_us(s.p99_us):>9} {_us(s.mean_us):>9} {_us(s.max_us):>9}")
        for name in DAEMON_SYSTEMS:
            path = name.removeprefix("daemon_")
            lines.append(f"  overhead {path:<10} {_overhead_text(r.overheads[name])}   "
                         f"(target <= {TARGET_RATIO:g}x floor p50 {_us(r.floor_p50_us)} µs)")
        if r.daemon_side_p50_us is not None:
            lines.append(f"  daemon-side p50 (the daemon's own timing in `trtd status`, both paths) "
                         f"{_us(r.daemon_side_p50_us)} µs")
        c = r.correctness
        lines.append(f"  correctness: max |daemon - in-process| copy {c.max_abs_diff_copy:.3g}, "
                     f"zero-copy {c.max_abs_diff_zero_copy:.3g} -> {'OK' if c.ok else 'MISMATCH'}")
    lines.append(f"\n* {ZERO_COPY_NOTE}.\n  Floor = {FLOOR_DEFINITION}.")
    return "\n".join(lines)


def _markdown_summary_row(r: ModelResult) -> str:
    cells = [r.model, f"{inputs_text(r)} ({_bytes(r.input_bytes)})"]
    cells += [_us(r.systems[name].p50_us) for name in SYSTEMS]
    cells += [f"{_us(r.overheads[n].overhead_p50_us)} µs ({r.overheads[n].ratio_to_floor:.2f}×)"
              for n in DAEMON_SYSTEMS]
    cells.append("/".join("met" if r.overheads[n].target_met else "**missed**" for n in DAEMON_SYSTEMS)
                 + " (copy/zero-copy)")
    diff = max(r.correctness.max_abs_diff_copy, r.correctness.max_abs_diff_zero_copy)
    cells.append(f"{diff:.3g}" + ("" if r.correctness.ok else " **MISMATCH**"))
    return "| " + " | ".join(cells) + " |"


def render_markdown(results: list[ModelResult], meta: dict) -> str:
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
                + (f" Daemon-side p50 (from `trtd status`): {_us(r.daemon_side_p50_us)} µs."
                   if r.daemon_side_p50_us is not None else ""), "",
                "| system | p50 µs | p90 µs | p99 µs | mean µs | max µs |", "|---|--:|--:|--:|--:|--:|"]
        for name in SYSTEMS:
            s = r.systems[name]
            figures = (s.p50_us, s.p90_us, s.p99_us, s.mean_us, s.max_us)
            out.append(f"| {SYSTEM_LABELS[name]} | " + " | ".join(map(_us, figures)) + " |")
    definitions = meta["definitions"]
    out += ["", "## Method", ""] + [f"- **{k}**: {v}." for k, v in definitions.items()]
    environment = {k: v for k, v in meta.items() if k != "definitions"}
    out += ["", "## Environment", "", "```json",
            json.dumps(environment, indent=2, ensure_ascii=False), "```", ""]
    return "\n".join(out)


def write_reports(args: argparse.Namespace, results: list[ModelResult], meta: dict) -> None:
    if args.json:
        payload = {"meta": meta, "results": {r.model: r.to_json() for r in results}}
        Path(args.json).write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n",
                                   encoding="utf-8")
    if args.markdown:
        Path(args.markdown).write_text(render_markdown(results, meta), encoding="utf-8")


# -- entry point ---------------------------------------------------------------------------------


@contextmanager
def sigterm_as_exit() -> Iterator[None]:
    """SIGTERM unwinds like an exception, so the daemon and echo process are still stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--"]:  # `trtd bench -- --models ...` passes the separator along
        argv = argv[1:]
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse already printed
        return exc.code if isinstance(exc.code, int) else 2
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
