"""Per-model execution: inline for one instance, a worker per instance otherwise.

With one instance the request runs on the socket thread: for a single client
that is the shortest path (no thread hand-off). With N instances each has a
worker thread; requests queue (bounded: a full queue is an OVERLOADED error,
not growing memory) and run concurrently, each on its own CUDA stream and
buffers. Workers never touch the registries or the socket: they hand results
back through a CompletionQueue that wakes the socket loop.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from trtd.protocol import ErrorCode, ProtocolError

from trtd.daemon.backends import BackendError, OutputTooLarge
from trtd.daemon.system.cuda import CudaError
from trtd.daemon.running.instances import RunTiming

log = logging.getLogger("trtd.scheduler")


@dataclass(slots=True)
class Job:
    identity: bytes
    request_id: int
    model: Any       # LoadedModel
    region: Any      # Region (checked out: it stays alive until the job is finished)
    inputs: list
    outputs: list
    received_ns: int
    started_ns: int = 0
    executor: Any = None  # the executor it was submitted to (a swap may replace the model's)
    serving: str = ""     # backend and engine at submission: what the reply names
    engine: str = ""
    deadline_ns: int = 0  # perf_counter_ns after which it must not start; 0: none
    abandoned: bool = False  # a stop gave up on it while it ran: already answered, no reply


@dataclass(slots=True)
class Done:
    job: Job
    shapes: dict = field(default_factory=dict)
    timing: RunTiming | None = None
    error: ProtocolError | None = None


def run_job(instance, job: Job) -> Done:
    job.started_ns = time.perf_counter_ns()
    if job.deadline_ns and job.started_ns > job.deadline_ns:
        # Its client has given up or will: running it would only delay the requests behind it.
        waited_ms = (job.started_ns - job.received_ns) / 1e6
        allowed_ms = (job.deadline_ns - job.received_ns) / 1e6
        return Done(job, error=ProtocolError(
            ErrorCode.DEADLINE_EXCEEDED,
            f"request to model {job.model.name!r} waited {waited_ms:.1f} ms, past its deadline of "
            f"{allowed_ms:.0f} ms; it did not run (the model is busy: retry later, raise "
            f"deadline_ms, or ask for more instances)",
            {"waited_ms": round(waited_ms, 3), "deadline_ms": round(allowed_ms)}))
    try:
        shapes, timing = instance.run(job.region, job.inputs, job.outputs)
        return Done(job, shapes, timing)
    except OutputTooLarge as exc:
        return Done(job, error=ProtocolError(
            ErrorCode.OUTPUT_TOO_LARGE, str(exc),
            {"output": exc.name, "needed": exc.needed, "capacity": exc.capacity}))
    except (BackendError, CudaError) as exc:
        return Done(job, error=ProtocolError(
            ErrorCode.BACKEND_ERROR, f"model {job.model.name!r} failed on this request: {exc}"))
    except Exception as exc:  # a bug must fail the request, not the worker or the daemon
        log.exception("model %s: unexpected error", job.model.name)
        return Done(job, error=ProtocolError(
            ErrorCode.INTERNAL, f"internal error running model {job.model.name!r} "
                                f"({type(exc).__name__}: {exc}); please report it with the daemon log"))


class CompletionQueue:
    """Finished jobs from worker threads, plus a socket the loop polls to wake up."""

    def __init__(self):
        self._items: deque[Done] = deque()
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def fileno(self) -> int:
        return self._reader.fileno()

    def put(self, done: Done) -> None:
        self._items.append(done)
        try:
            self._writer.send(b"\0")
        except BlockingIOError:
            pass  # the loop is already far behind on wake-ups; it drains everything anyway
        except OSError:
            pass  # closed: the daemon is exiting and a request it gave up on has just ended

    def drain(self) -> list[Done]:
        try:
            while self._reader.recv(4096):
                pass
        except BlockingIOError:
            pass
        items = []
        while self._items:
            items.append(self._items.popleft())
        return items

    def close(self) -> None:
        self._reader.close()
        self._writer.close()


class Executor:
    def __init__(self, name: str, instances: list, max_queue: int, completions: CompletionQueue):
        self.name = name
        self.instances = instances
        self.inline = len(instances) == 1
        self._completions = completions
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue + len(instances))
        self._max_queue = max_queue
        self.in_flight = 0
        # Slot -> the job its instance runs now: what a stop that gives up has to answer and
        # must not free memory under (slot 0 of an inline executor is the socket thread's).
        self._running: dict[int, Job] = {}
        # Set by give_up(): a job a worker takes after it is answered with this, not run. The
        # lock makes "taken from the queue and running" one step against give_up()'s snapshot.
        self._refusal: Callable[[Job], ProtocolError] | None = None
        self._lock = threading.Lock()
        self._threads = []
        if not self.inline:
            for i, instance in enumerate(instances):
                t = threading.Thread(target=self._work, args=(i, instance), daemon=True,
                                     name=f"trtd-{name}-{i}")
                t.start()
                self._threads.append(t)

    def submit(self, job: Job) -> Done | None:
        """Run now (inline) and return the result, or queue it and return None."""
        if self.inline:
            self._running[0] = job
            try:
                return run_job(self.instances[0], job)
            finally:
                del self._running[0]
        if self.in_flight >= self._max_queue + len(self.instances):
            raise ProtocolError(
                ErrorCode.OVERLOADED,
                f"model {self.name!r} has {self.in_flight} requests queued or running, its limit; "
                f"retry later, or raise its instances / max_queue",
            )
        self.in_flight += 1
        job.executor = self
        self._queue.put_nowait(job)
        return None

    def finished(self) -> None:
        """Called by the loop for every job of this executor it has answered."""
        self.in_flight -= 1

    def _work(self, slot: int, instance) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                refusal = self._refusal
                if refusal is None:
                    self._running[slot] = job
            if refusal is not None:  # taken off the queue just as a stop gave up: never started
                self._completions.put(Done(job, error=refusal(job)))
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
