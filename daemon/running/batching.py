"""Dynamic batching: requests of different clients for one model run as one backend call.

A model with `dynamic_batching = true` gets a BatchingExecutor instead of an Executor. Its
requests queue (FIFO, bounded: the core answers OVERLOADED beyond `capacity`) and the socket
loop's step() dispatches them: the oldest request heads a batch, and every later request
whose inputs agree with it apart from dimension 0 (same names, dtypes, other dims, same
outputs) joins, up to `max_batch` rows. When to dispatch (BatchQueue.take):
- at once when nobody else could join: a lone client never waits (no other client of the
  model was seen in the last ACTIVE_WINDOW_NS, or every one seen has a request queued);
- otherwise after at most `max_queue_delay_us` for company, measured from the head's arrival;
  earlier when the batch is full, or a request in it has a deadline closer than that delay.
With one instance the batch runs on the socket thread, as an unbatched request does (while it
runs, new requests wait in the socket and are read together afterwards: they form the next
batch). With several, batches go to idle worker threads (one per instance) while the socket
thread goes on reading and binding requests; results come back through the CompletionQueue.
A lone client's request runs at once on the socket thread in every case. A batch is padded up to the smallest `preferred_batch_sizes` entry that holds
it (e.g. a CUDA-graph bucket): the padded rows' outputs are never returned.

Only models whose rows are independent may be batched: the model must declare a dynamic first
dimension shared by every input and output, and at load (`batching_problem`) batched and
one-row-at-a-time results on seeded random inputs must agree. A model that fails the check is
served unbatched, and its status says why.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

import numpy as np

from trtd.protocol import ErrorCode, ProtocolError

from trtd.daemon.backends import Backend
from trtd.daemon.running.executor import Job, deadline_refusal, run_error
from trtd.daemon.running.finished import CompletionQueue, RequestDone
from trtd.daemon.running.instances import BatchPart, Instance

if TYPE_CHECKING:
    from trtd.daemon.config.settings import ModelConfig

log = logging.getLogger("trtd.batching")

# A client that sent a request this recently is expected to send again soon: waiting for it
# can fill a batch. Older ones are forgotten (a client that went quiet costs no waiting).
ACTIVE_WINDOW_NS = 20_000_000
# Rows the load-time check runs: enough to catch a model that mixes rows (batch mean, batch
# norm in training mode), small enough to cost nothing at load.
CHECK_ROWS = 3
# Relative L2 difference allowed between a row run in a batch and alone: kernels may pick other
# algorithms per batch size (cuDNN's TF32 convolutions, FP16 models differ by ~1e-3), while a
# model that mixes rows differs by the size of its values (~1).
ROW_TOLERANCE = 1e-2


def _row_error(got: np.ndarray, expected: np.ndarray) -> float:
    if got.shape != expected.shape:
        return float("inf")
    a, b = got.astype(np.float64), expected.astype(np.float64)
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        same = np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(a[np.isfinite(a)], b[np.isfinite(b)])
        return 0.0 if same else float("inf")
    norm = float(np.linalg.norm(b))
    diff = float(np.linalg.norm(a - b))
    return diff / norm if norm > 0 else diff


def _key(job: Job) -> tuple:
    """What two requests must share to run as one batch: everything but dimension 0."""
    return (tuple((t.name, t.dtype.str, t.shape[1:]) for t in job.inputs),
            tuple((t.name, t.dtype.str) for t in job.outputs))


def _rows(job: Job) -> int:
    return job.inputs[0].shape[0] if job.inputs and job.inputs[0].shape else 1


@dataclass(slots=True)
class _Queued:
    job: Job
    key: tuple
    rows: int


class BatchQueue:
    """The FIFO of requests waiting for an instance, and the rule that cuts batches from it.
    Socket thread only (the executor's lock guards it against a background close)."""

    def __init__(self, max_batch: int, max_queue_delay_us: int, preferred: list[int]):
        self.max_batch = max(max_batch, 1)
        self.delay_ns = max_queue_delay_us * 1000
        self.preferred = sorted(set(preferred))
        self.jobs: deque[_Queued] = deque()
        self._seen: dict[bytes, int] = {}  # client connection -> when it last sent a request
        self._run_ns = 0  # recent backend calls' duration (moving average)

    def __len__(self) -> int:
        return len(self.jobs)

    def seen(self, job: Job) -> None:
        """Note that the job's client is active (every request, queued or run at once)."""
        self._seen[job.identity] = job.received_ns
        if len(self._seen) > 4 * len(self.jobs) + 64:
            cutoff = job.received_ns - max(ACTIVE_WINDOW_NS, 4 * self._run_ns)
            self._seen = {k: t for k, t in self._seen.items() if t >= cutoff}

    def ran(self, duration_ns: int) -> None:
        """A backend call took this long: clients of a slow model send less often."""
        self._run_ns = duration_ns if not self._run_ns else (3 * self._run_ns + duration_ns) // 4

    def others_active(self, now: int, queued: set[bytes]) -> bool:
        """Whether a client not in `queued` sent a request recently: within ACTIVE_WINDOW_NS, or
        a few runs of the model (a client of a 100 ms model sends every few hundred ms)."""
        cutoff = now - max(ACTIVE_WINDOW_NS, 4 * self._run_ns)
        return any(t >= cutoff and who not in queued for who, t in self._seen.items())

    def add(self, job: Job) -> None:
        # Inputs and outputs in name order: every part of a batch lists them alike.
        job.inputs.sort(key=lambda t: t.name)
        job.outputs.sort(key=lambda t: t.name)
        key = _key(job) if job.outputs and all(t.shape is not None for t in job.outputs) else None
        self.jobs.append(_Queued(job, key, _rows(job)))

    def _candidate(self) -> tuple[list[Job], int]:
        """The head and every later request that can join it, within max_batch rows (a request
        whose outputs' shapes only running it tells joins nobody)."""
        head = self.jobs[0]
        batch, rows = [head.job], head.rows
        if head.key is not None:
            for i in range(1, len(self.jobs)):
                entry = self.jobs[i]
                if rows + entry.rows <= self.max_batch and entry.key == head.key:
                    batch.append(entry.job)
                    rows += entry.rows
                    if rows == self.max_batch:
                        break
        return batch, rows

    def _wait_ns(self, batch: list[Job], rows: int, now: int) -> int:
        """How much longer to wait for company before this batch runs (0: run it now)."""
        if not self.delay_ns or rows >= self.max_batch:
            return 0
        if self.preferred and rows >= self.preferred[-1]:
            return 0
        left = batch[0].received_ns + self.delay_ns - now
        if left <= 0:
            return 0
        for job in batch:  # a close deadline: waiting for company could make it miss
            if job.deadline_ns and job.deadline_ns - now < 2 * self.delay_ns:
                return 0
        if not self.others_active(now, {entry.job.identity for entry in self.jobs}):
            return 0  # nobody else could join: a lone client never waits
        return left

    def due_ns(self, now: int) -> int | None:
        """None when empty; else how long until the head's batch should run (0: now)."""
        if not self.jobs:
            return None
        batch, rows = self._candidate()
        return self._wait_ns(batch, rows, now)

    def take(self, now: int, wait: bool = True) -> list[Job] | None:
        """The next batch to run now, taken off the queue; None when empty or worth waiting
        (wait=False: never worth it)."""
        if not self.jobs:
            return None
        batch, rows = self._candidate()
        if wait and self._wait_ns(batch, rows, now):
            return None
        if len(batch) == len(self.jobs):
            self.jobs.clear()
        else:
            taken = {id(job) for job in batch}
            self.jobs = deque(entry for entry in self.jobs if id(entry.job) not in taken)
        return batch

    def drain(self) -> list[Job]:
        jobs = [entry.job for entry in self.jobs]
        self.jobs.clear()
        return jobs

    def padded(self, rows: int) -> int:
        """The rows to run for `rows` rows of requests: the smallest preferred size that holds
        them (within max_batch), else exactly them."""
        for size in self.preferred:
            if size >= rows:
                return min(size, self.max_batch)
        return rows


def run_batch(instance: Instance, jobs: list[Job], padded: Callable[[int], int],
              ran: Callable[[int], None] | None = None) -> list[RequestDone]:
    """Run `jobs` as one backend call; every job ends in exactly one RequestDone. ran(ns): told
    how long the call took."""
    now = time.perf_counter_ns()
    try:
        return _run_batch(instance, jobs, padded, now)
    finally:
        if ran is not None:
            ran(time.perf_counter_ns() - now)


def _run_batch(instance: Instance, jobs: list[Job], padded: Callable[[int], int], now: int) -> list[RequestDone]:
    done: list[RequestDone] = []
    live = []
    for job in jobs:
        job.started_ns = now
        refusal = deadline_refusal(job, now)
        if refusal is not None:
            done.append(RequestDone(job, error=refusal))
        else:
            live.append(job)
    stats = jobs[0].model.stats.batching
    for job in live:
        stats.record_delay((now - job.received_ns) / 1000)
    if len(live) == 1:
        stats.record(1)
        job = live[0]
        try:
            shapes, timing = instance.run(job.region, job.inputs, job.outputs)
            done.append(RequestDone(job, shapes, timing))
        except Exception as exc:
            done.append(RequestDone(job, error=run_error(job, exc)))
        return done
    if not live:
        return done
    parts, first = [], 0
    for job in live:
        rows = _rows(job)
        parts.append(BatchPart(job.region, job.inputs, job.outputs, rows, first))
        first += rows
    stats.record(len(live))
    try:
        shapes, timing = instance.run_batch(parts, padded(first))
    except Exception as exc:  # the whole call failed: each of its requests, with the reason
        return done + [RequestDone(job, error=run_error(job, exc, len(live))) for job in live]
    for job, outcome in zip(live, shapes, strict=True):
        if isinstance(outcome, Exception):  # this request's own region failed it
            done.append(RequestDone(job, error=run_error(job, outcome)))
        else:
            done.append(RequestDone(job, outcome, timing))
    return done


class BatchingExecutor:
    """The Executor interface (submit, running, give_up, close) over a BatchQueue; dispatch()
    is called by the core's step() on the socket thread."""

    batching = True
    inline = False  # requests are answered from step(), through the core's in-flight count

    def __init__(self, name: str, instances: list[Instance], max_queue: int, completions: CompletionQueue,
                 max_batch: int, max_queue_delay_us: int, preferred: list[int], workers: bool = False):
        self.name = name
        self.instances = instances
        self._completions = completions
        self.max_batch = max(max_batch, 1)
        self.capacity = max_queue + len(instances) * self.max_batch
        self.queue = BatchQueue(self.max_batch, max_queue_delay_us, preferred)
        # Guards the queue and the running batches against a close() on a retiring thread; a
        # batch run inline holds it, so that close waits for it.
        self._lock = threading.RLock()
        self._running: dict[int, list[Job]] = {}
        self._refusal: Callable[[Job], ProtocolError] | None = None
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._free: list[int] = []
        self._work: queue.SimpleQueue[tuple[int, list[Job]] | None] = queue.SimpleQueue()
        if workers or len(instances) > 1:
            self._free = list(range(len(instances)))
            for i in range(len(instances)):
                t = threading.Thread(target=self._worker, daemon=True, name=f"trtd-{name}-batch-{i}")
                t.start()
                self._threads.append(t)

    def submit(self, job: Job) -> RequestDone | None:
        with self._lock:
            if self._closed:  # the core submits to served models only: a race with a retire
                return RequestDone(job, error=self._refusal(job) if self._refusal else ProtocolError(
                    ErrorCode.MODEL_NOT_READY, f"model {self.name!r} was unloaded or replaced; retry"))
            queue_ = self.queue
            queue_.seen(job)
            idle = not self._running and (not self._threads or len(self._free) == len(self.instances))
            if idle and not queue_.jobs and not queue_.others_active(job.received_ns, {job.identity}):
                # A lone client: nobody could join, so run it now, on this (the socket) thread,
                # as an unbatched model would: no queueing, no hand-off, no extra loop turn.
                slot = self._free.pop() if self._threads else 0
                self._running[slot] = [job]
                try:
                    return run_batch(self.instances[slot], [job], queue_.padded, queue_.ran)[0]
                finally:
                    del self._running[slot]
                    if self._threads:
                        self._free.append(slot)
            queue_.add(job)
        return None

    def due_ns(self, now: int) -> int | None:
        """How long until dispatch() has a batch to start (0: now), None when nothing waits
        (or no instance is free to take it: its completion wakes the loop)."""
        if self._threads and not self._free:
            return None
        return self.queue.due_ns(now)

    def has_queued(self) -> bool:
        return bool(self.queue)

    def dispatch(self) -> list[RequestDone]:
        """Start every batch that should start now: run inline (one instance: the results are
        returned) or handed to free workers (their results come through the CompletionQueue)."""
        results: list[RequestDone] = []
        with self._lock:
            while not self._closed:
                if self._threads and not self._free:
                    break
                batch = self.queue.take(time.perf_counter_ns())
                if batch is None:
                    break
                if self._threads:
                    slot = self._free.pop()
                    self._running[slot] = batch
                    self._work.put((slot, batch))
                else:
                    self._running[0] = batch
                    try:
                        results += run_batch(self.instances[0], batch, self.queue.padded, self.queue.ran)
                    finally:
                        del self._running[0]
        return results

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            slot, batch = item
            with self._lock:
                refusal = self._refusal
            if refusal is not None:  # handed over just as a stop gave up: never started
                done = [RequestDone(job, error=refusal(job)) for job in batch]
            else:
                done = run_batch(self.instances[slot], batch, self.queue.padded, self.queue.ran)
            with self._lock:
                self._running.pop(slot, None)
                self._free.append(slot)
            for item_done in done:  # after the slot is free: the wake-up may dispatch to it
                self._completions.put(item_done)

    def running(self) -> list[Job]:
        with self._lock:
            return [job for batch in self._running.values() for job in batch]

    def give_up(self, refusal: Callable[[Job], ProtocolError]) -> tuple[list[Job], list[Job]]:
        """A stop past its drain timeout: start nothing more (see Executor.give_up)."""
        with self._lock:
            self._refusal = refusal
            self._closed = True
            return self.queue.drain(), [job for batch in self._running.values() for job in batch]

    def close(self, wait: bool = True) -> bool:
        """Let running batches finish, run what is still queued (answered through the
        CompletionQueue), then free every instance. wait=False: see Executor.close."""
        with self._lock:
            self._closed = True
        for _ in self._threads:
            self._work.put(None)
        if not wait and self._running:
            return False
        for t in self._threads:
            t.join()
        with self._lock:
            while self.queue and self._refusal is None:
                batch = self.queue.take(time.perf_counter_ns(), wait=False)
                for done in run_batch(self.instances[0], batch, self.queue.padded):
                    self._completions.put(done)
        for instance in self.instances:
            try:
                instance.close()
            except Exception:
                log.exception("closing an instance of %s failed", self.name)
        return True


# -- can this model be batched? --------------------------------------------------------------------

def batching_problem(backend: Backend, instance: Instance, pinning=None) -> str | None:
    """Why the model must not be batched, or None: it has no dynamic first dimension shared by
    all its inputs and outputs, or a batch of random rows gives other results than the same
    rows run one at a time (the model mixes rows: batch statistics, sorting across the batch)."""
    from trtd.daemon.running.swap_gate import random_array, run_once

    if not backend.max_batch:
        return "the model has no dynamic batch dimension shared by its inputs (max_batch is 0)"
    for kind, specs in (("input", backend.inputs), ("output", backend.outputs)):
        for spec in specs:
            if not spec.shape or spec.shape[0] != -1:
                return (f"{kind} {spec.name!r} is {spec.dtype}{list(spec.shape)}: its first dimension is "
                        f"not the dynamic batch dimension, so requests cannot be stacked along it")
    rows = min(CHECK_ROWS, backend.max_batch)
    if rows < 2:
        return "max_batch is 1: there is nothing to batch"
    # Other dynamic dimensions (a sequence length, an image size) get a small fixed size.
    shapes = {s.name: (rows, *(d if d >= 0 else 2 for d in s.shape[1:])) for s in backend.inputs}
    predicted = backend.output_shapes(shapes)
    for spec in backend.outputs:
        shape = predicted.get(spec.name)
        if shape is None or shape[0] != rows:
            return (f"output {spec.name!r} does not have one row per input row (its shape for "
                    f"{rows} rows is {shape}), so a batch cannot be split back per request")
    rng = np.random.default_rng(20261202)
    sample = {s.name: random_array(rng, np.dtype(s.dtype), shapes[s.name]) for s in backend.inputs}
    batched = run_once(backend, instance, sample, pinning)
    for r in range(rows):
        alone = run_once(backend, instance, {k: v[r:r + 1] for k, v in sample.items()}, pinning)
        for name, expected in alone.items():
            got = batched[name][r:r + 1]
            error = _row_error(got, expected)
            if error > ROW_TOLERANCE:
                return (f"its rows are not independent: output {name!r} of row {r} differs when run in "
                        f"a batch of {rows} from when run alone (relative L2 difference {error:.3g} > "
                        f"{ROW_TOLERANCE:g}); a model that mixes rows (batch statistics, normalising over "
                        f"the batch) would give each client results that depend on the others' inputs")
    return None


def make_executor(config: ModelConfig, backend: Backend, instances: list[Instance],
                  completions: CompletionQueue, pinning=None):
    """The model's executor, and what status says about batching ("" when not asked for)."""
    from trtd.daemon.running.executor import Executor

    if not config.dynamic_batching:
        return Executor(config.name, instances, config.max_queue, completions), ""
    try:
        problem = batching_problem(backend, instances[0], pinning)
    except Exception as exc:  # the check itself failed: the model may still serve unbatched
        problem = f"the check that its rows are independent failed: {type(exc).__name__}: {exc}"
    if problem:
        log.warning("model %s: dynamic_batching refused, requests run one at a time: %s",
                    config.name, problem)
        return Executor(config.name, instances, config.max_queue, completions), f"refused: {problem}"
    # With one instance the batch runs on the socket thread, on the GPU too: a worker thread that
    # let the socket thread read the next requests during the run measured worse on the H200
    # (ResNet-18, 16 clients: 4390 against 4973 req/s, p99 4.85 against 4.01 ms; the GIL hand-offs
    # cost more than the overlap gained; bench/results/2026-12-02-batching-gpu-h200.md).
    from trtd.daemon.config.settings import queue_delay_us

    delay_us = queue_delay_us(config)
    executor = BatchingExecutor(config.name, instances, config.max_queue, completions, backend.max_batch,
                                delay_us, config.preferred_batch_sizes)
    log.info("model %s: dynamic batching up to %d rows, max_queue_delay_us %d%s", config.name,
             backend.max_batch, delay_us,
             f", padded to {sorted(config.preferred_batch_sizes)}" if config.preferred_batch_sizes else "")
    return executor, "on"
