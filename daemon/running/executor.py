"""Per-model execution: inline for one instance, a worker per instance otherwise.

With one instance the request runs on the socket thread: for a single client
that is the shortest path (no thread hand-off). With N instances each has a
worker thread; requests queue (bounded by `capacity`: the core answers a full
queue with OVERLOADED, not growing memory) and run concurrently, each on its
own CUDA stream and buffers. Workers never touch the registries or the socket:
they hand results back through the CompletionQueue that wakes the socket loop.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from trtd.protocol import ErrorCode, ProtocolError

from trtd.daemon.backends import BackendError, OutputTooLarge, TensorBinding
from trtd.daemon.system.cuda import CudaError
from trtd.daemon.running.finished import CompletionQueue, RequestDone
from trtd.daemon.running.instances import Instance

if TYPE_CHECKING:
    from trtd.daemon.core.regions import Region
    from trtd.daemon.running.registry import ServedModel

log = logging.getLogger("trtd.scheduler")


@dataclass(slots=True)
class Job:
    """One infer request, bound and checked, from submission to its reply."""

    identity: bytes
    request_id: int
    model: ServedModel
    region: Region   # checked out: it stays mapped until the request has ended
    inputs: list[TensorBinding]
    outputs: list[TensorBinding]
    received_ns: int
    started_ns: int = 0
    served_by: str = ""   # backend and engine at submission: what the reply names (a swap
    engine: str = ""      # may replace the model's before it runs)
    deadline_ns: int = 0  # perf_counter_ns after which it must not start; 0: none


def deadline_refusal(job: Job, now_ns: int) -> ProtocolError | None:
    """DEADLINE_EXCEEDED for a job that must not start at now_ns, else None."""
    if not job.deadline_ns or now_ns <= job.deadline_ns:
        return None
    # Its client has given up or will: running it would only delay the requests behind it.
    waited_ms = (now_ns - job.received_ns) / 1e6
    allowed_ms = (job.deadline_ns - job.received_ns) / 1e6
    return ProtocolError(
        ErrorCode.DEADLINE_EXCEEDED,
        f"request to model {job.model.name!r} waited {waited_ms:.1f} ms, past its deadline of "
        f"{allowed_ms:.0f} ms; it did not run (the model is busy: retry later, raise "
        f"deadline_ms, or ask for more instances)",
        {"waited_ms": round(waited_ms, 3), "deadline_ms": round(allowed_ms)})


def run_error(job: Job, exc: Exception, batch: int = 1) -> ProtocolError:
    """The error reply for a backend call that raised `exc` while running `job` (alone, or as
    one of a batch of `batch` requests, which all fail with it)."""
    where = "this request" if batch == 1 else f"a batch of {batch} requests, this one among them"
    if isinstance(exc, OutputTooLarge):
        return ProtocolError(ErrorCode.OUTPUT_TOO_LARGE, str(exc),
                             {"output": exc.name, "needed": exc.needed, "capacity": exc.capacity})
    if isinstance(exc, (BackendError, CudaError)):
        return ProtocolError(ErrorCode.BACKEND_ERROR, f"model {job.model.name!r} failed on {where}: {exc}")
    # a bug must fail the request, not the worker or the daemon
    log.error("model %s: unexpected error", job.model.name, exc_info=exc)
    return ProtocolError(ErrorCode.INTERNAL, f"internal error running model {job.model.name!r} "
                                             f"({type(exc).__name__}: {exc}); please report it with "
                                             f"the daemon log")


def run_job(instance: Instance, job: Job) -> RequestDone:
    job.started_ns = time.perf_counter_ns()
    refusal = deadline_refusal(job, job.started_ns)
    if refusal is not None:
        return RequestDone(job, error=refusal)
    try:
        shapes, timing = instance.run(job.region, job.inputs, job.outputs)
        return RequestDone(job, shapes, timing)
    except Exception as exc:
        return RequestDone(job, error=run_error(job, exc))


class Executor:
    batching = False  # see running/batching.BatchingExecutor

    def __init__(self, name: str, instances: list[Instance], max_queue: int, completions: CompletionQueue):
        self.name = name
        self.instances = instances
        self.inline = len(instances) == 1
        self._completions = completions
        # Requests queued or running at most (the core checks it against its in-flight count).
        self.capacity = max_queue + len(instances)
        self._queue: queue.Queue[Job | None] = queue.Queue(maxsize=self.capacity)
        # Slot -> the job its instance runs now: what a stop that gives up has to answer and
        # must not free memory under (slot 0 of an inline executor is the socket thread's).
        self._running: dict[int, Job] = {}
        # Set by give_up(): a job a worker takes after it is answered with this, not run. The
        # lock makes "taken from the queue and running" one step against give_up()'s snapshot.
        self._refusal: Callable[[Job], ProtocolError] | None = None
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        if not self.inline:
            for i, instance in enumerate(instances):
                t = threading.Thread(target=self._work, args=(i, instance), daemon=True,
                                     name=f"trtd-{name}-{i}")
                t.start()
                self._threads.append(t)

    def submit(self, job: Job) -> RequestDone | None:
        """Run now (inline) and return the result, or queue it and return None (the caller
        has checked that fewer than `capacity` of its requests are in flight)."""
        if self.inline:
            self._running[0] = job
            try:
                return run_job(self.instances[0], job)
            finally:
                del self._running[0]
        self._queue.put_nowait(job)
        return None

    def _work(self, slot: int, instance: Instance) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                refusal = self._refusal
                if refusal is None:
                    self._running[slot] = job
            if refusal is not None:  # taken off the queue just as a stop gave up: never started
                self._completions.put(RequestDone(job, error=refusal(job)))
                continue
            done = run_job(instance, job)
            del self._running[slot]
            self._completions.put(done)

    def running(self) -> list[Job]:
        """The jobs an instance is running now."""
        return list(self._running.values())

    def give_up(self, refusal: Callable[[Job], ProtocolError]) -> tuple[list[Job], list[Job]]:
        """A stop past its drain timeout: start nothing more. Returns the jobs taken off the
        queue (never started: the caller answers them) and the jobs running now; a job a worker
        takes from here on is answered with refusal(job) through the completion queue."""
        with self._lock:
            self._refusal = refusal
            queued, sentinels = [], 0
            while True:
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    sentinels += 1
                else:
                    queued.append(job)
            for _ in range(sentinels):  # a closing executor's workers must still see theirs
                self._queue.put_nowait(None)
            return queued, list(self._running.values())

    def close(self, wait: bool = True) -> bool:
        """Let queued and running requests finish, then free every instance.

        wait=False (a stop past its drain timeout): when a request is still running, free
        nothing (the running backend call uses it all) and return False; the process is about
        to exit, which frees it."""
        for _ in self._threads:
            self._queue.put(None)
        if not wait and self._running:
            return False
        for t in self._threads:
            t.join()
        for instance in self.instances:
            try:
                instance.close()
            except Exception:
                log.exception("closing an instance of %s failed", self.name)
        return True
