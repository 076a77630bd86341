"""Executor and run_job in-process: jobs run inline or on worker threads and end in RequestDone.

The instances here are test-local: anything with run(region, inputs, outputs) -> (shapes, timing)
and close() is an instance to the executor, and these run, wait or raise as each job says, so the
executor's own behaviour (threads, queue, deadline, errors, give_up, close) is what is tested.
The executor never looks into a job's region, only hands it to the instance: a job's region here
is its script (a `Work`).
"""

from __future__ import annotations

import itertools
import select
import threading
import time
from dataclasses import dataclass

import pytest

from trtd.protocol import ErrorCode, ProtocolError

from trtd.daemon.backends import BackendError, OutputTooLarge
from trtd.daemon.running.executor import Executor, Job, run_job
from trtd.daemon.running.finished import CompletionQueue, RequestDone
from trtd.daemon.running.instances import RunTiming
from trtd.daemon.system.cuda import CudaError

WAIT_S = 10
_ids = itertools.count(1)


@dataclass
class Model:
    """What a job needs of its model: a name for the messages."""

    name: str = "m"


class Work:
    """A job's script: what the instance does when it runs the job."""

    def __init__(self, raises: BaseException | None = None, hold: bool = False):
        self.raises = raises
        self.started = threading.Event()
        self.release = threading.Event()
        if not hold:
            self.release.set()
        self.thread: int | None = None
        self.instance: ScriptedInstance | None = None


class ScriptedInstance:
    def __init__(self, close_raises: bool = False):
        self.ran: list[Work] = []
        self.closed = False
        self._close_raises = close_raises

    def run(self, region: Work, inputs, outputs):
        region.thread = threading.get_ident()
        region.instance = self
        self.ran.append(region)
        region.started.set()
        assert region.release.wait(WAIT_S), "the test never released this job"
        if region.raises is not None:
            raise region.raises
        return {"y": (1, 10)}, RunTiming(compute_us=7)

    def close(self) -> None:
        self.closed = True
        if self._close_raises:
            raise RuntimeError("closing failed")


def _job(work: Work | None = None, deadline_ns: int = 0, received_ns: int | None = None) -> Job:
    return Job(identity=b"conn", request_id=next(_ids), model=Model(), region=work or Work(),
               inputs=[], outputs=[],
               received_ns=time.perf_counter_ns() if received_ns is None else received_ns,
               deadline_ns=deadline_ns)


def _readable(completions: CompletionQueue, timeout: float) -> bool:
    return bool(select.select([completions], [], [], timeout)[0])


def _wait_done(completions: CompletionQueue, n: int) -> list[RequestDone]:
    """The next n items of the queue, waiting on its descriptor as the socket loop does."""
    items: list = []
    deadline = time.monotonic() + WAIT_S
    while len(items) < n:
        left = deadline - time.monotonic()
        assert left > 0 and _readable(completions, left), f"{len(items)} of {n} jobs ended"
        items.extend(completions.drain())
    assert len(items) == n, items
    assert all(isinstance(item, RequestDone) for item in items)
    return items


def _refusal(job: Job) -> ProtocolError:
    return ProtocolError(ErrorCode.INTERNAL, f"stopping: request {job.request_id} did not start")


@pytest.fixture
def completions():
    queue = CompletionQueue()
    yield queue
    queue.close()


@pytest.fixture
def executors(completions):
    """executors(n, max_queue=4) -> (executor, instances); each is closed after the test."""
    made: list[tuple[Executor, list[ScriptedInstance]]] = []

    def build(n: int, max_queue: int = 4):
        instances = [ScriptedInstance() for _ in range(n)]
        executor = Executor("m", instances, max_queue, completions)
        made.append((executor, instances))
        return executor, instances

    yield build
    for executor, instances in made:
        for instance in instances:
            for work in instance.ran:
                work.release.set()  # a failed test must not leave a worker waiting
        executor.close()


# -- the completion queue ---------------------------------------------------------------------------


def test_a_put_makes_the_completion_queue_readable_until_drained(completions):
    assert not _readable(completions, 0)
    done = RequestDone(_job())
    completions.put(done)
    assert _readable(completions, 0)
    assert completions.drain() == [done]
    assert not _readable(completions, 0)
    assert completions.drain() == []


# -- inline: one instance ---------------------------------------------------------------------------


def test_one_instance_runs_inline_on_the_callers_thread(executors, completions):
    executor, [instance] = executors(1)
    assert executor.inline
    work = Work()
    job = _job(work)
    done = executor.submit(job)
    assert isinstance(done, RequestDone) and done.job is job and done.error is None
    assert done.shapes == {"y": (1, 10)} and done.timing == RunTiming(compute_us=7)
    assert work.thread == threading.get_ident()
    assert job.started_ns >= job.received_ns
    assert not _readable(completions, 0.05)  # nothing goes through the queue


def test_an_inline_job_is_running_only_while_it_runs(executors):
    executor, [instance] = executors(1)
    seen = []
    work = Work()
    original = instance.run

    def run(region, inputs, outputs):
        seen.append(executor.running())
        return original(region, inputs, outputs)

    instance.run = run
    job = _job(work)
    executor.submit(job)
    assert seen == [[job]]
    assert executor.running() == []


def test_an_inline_error_is_returned_not_raised(executors):
    executor, _ = executors(1)
    done = executor.submit(_job(Work(raises=BackendError("bad input data"))))
    assert done.error.code == ErrorCode.BACKEND_ERROR


def test_capacity_is_the_queue_plus_one_per_instance(executors):
    assert executors(1, max_queue=5)[0].capacity == 6
    assert executors(3, max_queue=5)[0].capacity == 8


# -- workers: N instances ---------------------------------------------------------------------------


def test_n_instances_run_on_worker_threads_and_post_to_the_completion_queue(executors, completions):
    executor, instances = executors(2)
    assert not executor.inline
    work = Work()
    job = _job(work)
    assert executor.submit(job) is None
    [done] = _wait_done(completions, 1)
    assert done.job is job and done.error is None and done.shapes == {"y": (1, 10)}
    assert work.thread not in (None, threading.get_ident())


def test_n_instances_run_n_jobs_at_once_each_on_its_own_instance(executors, completions):
    executor, instances = executors(3)
    works = [Work(hold=True) for _ in range(3)]
    jobs = [_job(w) for w in works]
    for job in jobs:
        executor.submit(job)
    for work in works:
        assert work.started.wait(WAIT_S)  # all three started while none may finish
    assert {id(w.instance) for w in works} == {id(i) for i in instances}
    assert len({w.thread for w in works}) == 3
    assert sorted(j.request_id for j in executor.running()) == sorted(j.request_id for j in jobs)
    for work in works:
        work.release.set()
    assert {d.job.request_id for d in _wait_done(completions, 3)} == {j.request_id for j in jobs}
    assert executor.running() == []


def test_jobs_beyond_the_instances_wait_in_the_queue(executors, completions):
    executor, _ = executors(2)
    held = [Work(hold=True), Work(hold=True)]
    for work in held:
        executor.submit(_job(work))
    for work in held:
        assert work.started.wait(WAIT_S)
    waiting = Work()
    executor.submit(_job(waiting))
    assert not waiting.started.wait(0.1)
    held[0].release.set()
    assert waiting.started.wait(WAIT_S)
    held[1].release.set()
    assert len(_wait_done(completions, 3)) == 3


# -- deadline ---------------------------------------------------------------------------------------


def test_a_job_past_its_deadline_is_deadline_exceeded_without_running():
    instance = ScriptedInstance()
    received = time.perf_counter_ns() - 50_000_000  # read 50 ms ago ...
    job = _job(received_ns=received, deadline_ns=received + 10_000_000)  # ... allowed 10 ms
    done = run_job(instance, job)
    assert done.error.code == ErrorCode.DEADLINE_EXCEEDED
    assert instance.ran == []
    assert done.error.details["deadline_ms"] == 10 and done.error.details["waited_ms"] >= 50
    assert "'m'" in done.error.message and "did not run" in done.error.message


def test_a_job_within_its_deadline_runs():
    instance = ScriptedInstance()
    job = _job(deadline_ns=time.perf_counter_ns() + 60 * 10**9)
    done = run_job(instance, job)
    assert done.error is None and len(instance.ran) == 1


def test_a_job_that_waited_in_the_queue_past_its_deadline_does_not_run(executors, completions):
    executor, _ = executors(2)
    held = [Work(hold=True), Work(hold=True)]
    for work in held:
        executor.submit(_job(work))
    for work in held:
        assert work.started.wait(WAIT_S)
    late = Work()
    late_job = _job(late, deadline_ns=time.perf_counter_ns() + 20_000_000)
    executor.submit(late_job)
    time.sleep(0.1)
    for work in held:
        work.release.set()
    done = {d.job.request_id: d for d in _wait_done(completions, 3)}
    assert done[late_job.request_id].error.code == ErrorCode.DEADLINE_EXCEEDED
    assert not late.started.is_set()


# -- errors -----------------------------------------------------------------------------------------


def test_a_backend_error_is_backend_error_naming_the_model():
    done = run_job(ScriptedInstance(), _job(Work(raises=BackendError("ONNX Runtime failed: boom"))))
    assert done.error.code == ErrorCode.BACKEND_ERROR
    assert "'m'" in done.error.message and "boom" in done.error.message


def test_a_cuda_error_is_backend_error():
    done = run_job(ScriptedInstance(), _job(Work(raises=CudaError("an illegal memory access", "cudaErrorIllegalAddress"))))
    assert done.error.code == ErrorCode.BACKEND_ERROR
    assert "illegal memory access" in done.error.message


def test_output_too_large_is_output_too_large_with_its_details():
    done = run_job(ScriptedInstance(), _job(Work(raises=OutputTooLarge("y", needed=400, capacity=40))))
    assert done.error.code == ErrorCode.OUTPUT_TOO_LARGE
    assert done.error.details == {"output": "y", "needed": 400, "capacity": 40}
    assert "'y'" in done.error.message and "400" in done.error.message and "40" in done.error.message


def test_any_other_exception_is_internal_naming_it():
    done = run_job(ScriptedInstance(), _job(Work(raises=KeyError("no such binding"))))
    assert done.error.code == ErrorCode.INTERNAL
    assert "KeyError" in done.error.message and "'m'" in done.error.message


def test_workers_keep_working_after_a_job_raised(executors, completions):
    executor, _ = executors(2)
    for exc in (ZeroDivisionError("bug"), BackendError("bad"), OutputTooLarge("y", 8, 4)):
        executor.submit(_job(Work(raises=exc)))
        executor.submit(_job(Work(raises=exc)))
    errors = sorted(str(d.error.code) for d in _wait_done(completions, 6))
    assert errors == ["BACKEND_ERROR"] * 2 + ["INTERNAL"] * 2 + ["OUTPUT_TOO_LARGE"] * 2
    # Both workers are alive: two jobs run at once.
    works = [Work(hold=True), Work(hold=True)]
    for work in works:
        executor.submit(_job(work))
    for work in works:
        assert work.started.wait(WAIT_S)
        work.release.set()
    assert [d.error for d in _wait_done(completions, 2)] == [None, None]


# -- give_up ----------------------------------------------------------------------------------------


def test_give_up_returns_the_queued_and_the_running_jobs(executors, completions):
    executor, _ = executors(2)
    running = [_job(Work(hold=True)), _job(Work(hold=True))]
    for job in running:
        executor.submit(job)
    for job in running:
        assert job.region.started.wait(WAIT_S)
    queued = [_job(), _job()]
    for job in queued:
        executor.submit(job)
    taken, still_running = executor.give_up(_refusal)
    assert [j.request_id for j in taken] == [j.request_id for j in queued]  # in order
    assert sorted(j.request_id for j in still_running) == sorted(j.request_id for j in running)
    assert not any(job.region.started.is_set() for job in queued)
    # The running ones end normally and are posted as usual.
    for job in running:
        job.region.release.set()
    assert [d.error for d in _wait_done(completions, 2)] == [None, None]
    assert not any(job.region.started.is_set() for job in queued)


def test_after_give_up_a_job_is_answered_with_the_refusal_and_never_runs(executors, completions):
    executor, _ = executors(2)
    executor.give_up(_refusal)
    work = Work()
    job = _job(work)
    executor.submit(job)
    [done] = _wait_done(completions, 1)
    assert done.job is job and done.error.code == ErrorCode.INTERNAL
    assert done.error.message == f"stopping: request {job.request_id} did not start"
    assert not work.started.is_set()


def test_give_up_on_a_closing_executor_keeps_the_workers_stop_signals(executors, completions):
    executor, _ = executors(2)
    running = [_job(Work(hold=True)), _job(Work(hold=True))]
    for job in running:
        executor.submit(job)
    for job in running:
        assert job.region.started.wait(WAIT_S)
    executor.submit(_job())
    assert executor.close(wait=False) is False  # the stop signals queue behind the waiting job
    taken, _ = executor.give_up(_refusal)
    assert len(taken) == 1
    for job in running:
        job.region.release.set()
    _wait_done(completions, 2)
    for thread in executor._threads:
        thread.join(WAIT_S)
        assert not thread.is_alive(), "a worker lost its stop signal"


# -- close ------------------------------------------------------------------------------------------


def test_close_waits_for_queued_and_running_jobs_then_closes_the_instances(executors, completions):
    executor, instances = executors(2)
    held = Work(hold=True)
    executor.submit(_job(held))
    assert held.started.wait(WAIT_S)
    queued = [Work(), Work(), Work()]
    for work in queued:
        executor.submit(_job(work))
    result = []
    closer = threading.Thread(target=lambda: result.append(executor.close()))
    closer.start()
    closer.join(0.2)
    assert closer.is_alive() and not any(i.closed for i in instances)
    held.release.set()
    closer.join(WAIT_S)
    assert result == [True]
    assert all(w.started.is_set() for w in queued)
    assert all(i.closed for i in instances)
    assert not any(t.is_alive() for t in executor._threads)
    assert [d.error for d in _wait_done(completions, 4)] == [None] * 4


def test_close_without_waiting_while_a_job_runs_frees_nothing(executors, completions):
    executor, instances = executors(2)
    held = Work(hold=True)
    executor.submit(_job(held))
    assert held.started.wait(WAIT_S)
    assert executor.close(wait=False) is False
    assert not any(i.closed for i in instances)
    held.release.set()  # the running call still had its instance
    assert _wait_done(completions, 1)[0].error is None


def test_close_without_waiting_when_idle_closes_the_instances(executors):
    executor, instances = executors(2)
    assert executor.close(wait=False) is True
    assert all(i.closed for i in instances)
    assert not any(t.is_alive() for t in executor._threads)


def test_close_of_an_inline_executor_closes_its_instance(executors):
    executor, [instance] = executors(1)
    executor.submit(_job())
    assert executor.close() is True and instance.closed


def test_an_instance_failing_to_close_does_not_keep_the_others_open(completions, caplog):
    instances = [ScriptedInstance(close_raises=True), ScriptedInstance()]
    executor = Executor("m", instances, 4, completions)
    assert executor.close() is True
    assert all(i.closed for i in instances)
    assert "closing an instance of m failed" in caplog.text
