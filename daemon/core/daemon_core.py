"""The daemon's state and one handler per op: a plain object, no sockets, no threads of its own.

The socket loop (serve/server.py) drives it, and so can a test, a benchmark or the SDK's
InProcessTransport, in the same process:
    reply = core.receive(identity, frame)   # the reply frame, or None: answered by step()
    answers = core.step(timeout_s)          # finished work: Answer(identity, request_id, frame)
receive() decodes, authorizes and handles one request; a ProtocolError becomes an error reply,
and anything else a handler raises is a daemon bug: logged, answered INTERNAL, and the core
keeps serving. Every request it accepts and has not answered is in `in_flight` (the one
count), and every infer ends in `_end`, whichever way it ends.
"""

from __future__ import annotations

import copy
import logging
import os
import select
import sys
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, NamedTuple, Union

import psutil

from trtd.protocol import (ALIGNMENT, MAX_REQUEST_BYTES, PROTOCOL_VERSION, SERVER_VERSION,
                           ErrorCode, ProtocolError, decode_envelope, encode_error, encode_reply,
                           messages as m)
from trtd.protocol.layout import tensor_nbytes

from trtd.daemon.system import cuda
from trtd.daemon.core import stop_state
from trtd.daemon.core.binding import bind_cached
from trtd.daemon.core.clients import ClientRegistry, PeerCredentials
from trtd.daemon.core.in_flight import InFlight
from trtd.daemon.core.regions import Region, RegionLimits, RegionRegistry
from trtd.daemon.core.stop_state import StopState
from trtd.daemon.system.cuda import HostPinning
from trtd.daemon.config.settings import (BUILTIN_PREFIX, ConfigError, DaemonConfig, ModelConfig,
                                         model_file_problem, validate_model)
from trtd.daemon.running.executor import Job
from trtd.daemon.running.finished import (Caller, CompletionQueue, EngineReady, Finished,
                                          ModelLoaded, RequestDone)
from trtd.daemon.running.instances import RunTiming
from trtd.daemon.running.loader import ModelLoader
from trtd.daemon.running.registry import ModelRegistry, ServedModel, discard

log = logging.getLogger("trtd.core")


class _Pending:
    """Returned by a handler whose request a worker instance or the loader answers later."""

    def __repr__(self) -> str:
        return "PENDING"


PENDING = _Pending()
Reply = Union[m.HelloReply, m.ModelsReply, m.LeaseReply, m.ReleaseReply, m.InferReply,
              m.HeartbeatReply, m.GoodbyeReply, m.StatusReply, m.LoadReply, m.UnloadReply,
              m.ShutdownReply, m.ReloadReply]
# What a handler returns: a reply payload to encode, a reply frame built already (an infer's
# end), or PENDING.
Handled = Union[Reply, bytes, _Pending]


@dataclass(slots=True)
class Call:
    """Where a request came from: the connection's routing id, its id, its arrival time."""

    identity: bytes
    request_id: int
    received_ns: int  # perf_counter_ns when the frame was read
    # The connection's peer process and user as the OS reports them (unix sockets), asked for
    # by hello only.
    peer: Callable[[], PeerCredentials | None] | None = None


class Answer(NamedTuple):
    """A reply to send: to which connection, for which request, the encoded frame."""

    identity: bytes
    request_id: int
    frame: bytes


# Authorizes a decoded request with its envelope's auth field, raising ProtocolError (the
# socket loop passes its access gate; an in-process driver may pass none).
Authorize = Callable[[m.Request, str], None]


class DaemonCore:
    def __init__(self, config: DaemonConfig, endpoint: str, daemon_id: str, region_prefix: str,
                 share_region: Callable[[int], None] | None = None, authorize: Authorize | None = None,
                 stop: StopState | None = None):
        self.config = config
        self.endpoint = endpoint
        self.daemon_id = daemon_id
        self.started = time.monotonic()
        self.stop = stop if stop is not None else StopState()
        self.in_flight = InFlight()
        # How long the socket loop should keep polling before it sleeps, set by the requests
        # answered since it last asked (the models' idle_spin_us): read and reset by its driver.
        self.spin_ns = 0
        # The metrics endpoint is on: answered requests go into their model's timing histograms
        # (off, the hot path pays one attribute test). Errors answered before a request reached a
        # model, by op and code, are counted either way (the error path only).
        self.observe_timings = bool(config.metrics)
        self.rejected: dict[tuple[str, str], int] = {}
        self._authorize = authorize
        # The model configurations read from the config file, as read (the registry's copies
        # get filled in while loading): a reload compares against these.
        self._configured: dict[str, ModelConfig] = {}
        # Produces a fresh configuration for `reload` / SIGHUP (the server sets it).
        self.reload_source: Callable[[], DaemonConfig] | None = None
        self.clients = ClientRegistry(config.client_timeout_s, config.max_clients)
        self.pinning = HostPinning()
        self.completions = CompletionQueue()
        self.regions = RegionRegistry(
            region_prefix,
            RegionLimits(config.max_region_bytes, config.max_regions_per_client,
                         config.max_bytes_per_client, config.max_regions),
            before_destroy=lambda region: self.pinning.unpin(region.address),
            on_create=share_region)
        self.models = ModelRegistry(self.completions, self.pinning)
        self.loader = ModelLoader(self.models, self.completions)
        # Batching executors with requests queued: step() starts their batches (running/batching.py).
        self._batching: set = set()
        self._process = psutil.Process()
        self._handlers: dict[type, Callable[..., Handled]] = {
            m.Hello: self._hello, m.ListModels: self._models, m.Lease: self._lease,
            m.Release: self._release, m.Infer: self._infer, m.Heartbeat: self._heartbeat,
            m.Goodbye: self._goodbye, m.Status: self._status, m.Load: self._load,
            m.Unload: self._unload, m.Shutdown: self._shutdown, m.Reload: self._reload,
        }

    def start_loading(self) -> None:
        """Queue the configured models on the loader thread; they show as "loading" until ready."""
        for model in self.config.models:
            self._configured[model.name] = copy.deepcopy(model)
            self.loader.add(model)

    @property
    def loading(self) -> int:
        return self.loader.models_loading

    def run_until_loaded(self, timeout_s: float = 300.0) -> list[Answer]:
        """Step until no model is loading (an in-process driver's start-up); the answers met."""
        answers: list[Answer] = []
        deadline = time.monotonic() + timeout_s
        while self.loading and time.monotonic() < deadline:
            answers += self.step(min(0.1, max(deadline - time.monotonic(), 0.0)))
        if self.loading:
            raise TimeoutError(f"{self.loading} model(s) still loading after {timeout_s:g} s")
        return answers

    # -- the driver's two calls ----------------------------------------------------------------------

    def receive(self, identity: bytes, payload: bytes, received_ns: int | None = None,
                peer: Callable[[], int | None] | None = None) -> bytes | None:
        """Decode, authorize and handle one request frame: the reply frame, or None when the
        answer comes later (from step()). peer: the pid of the connection's process, as the OS
        says (the socket loop passes it for unix sockets; an in-process driver has none)."""
        received = time.perf_counter_ns() if received_ns is None else received_ns
        request_id = 0
        request = None
        try:
            envelope = decode_envelope(payload)
            request_id, request = envelope.request_id, envelope.request
            if self._authorize is not None:
                self._authorize(request, envelope.auth)
            result = self._handle(request, Call(identity, request_id, received, peer))
            if isinstance(result, _Pending):
                return None  # a worker instance or the loader answers it (step)
            if isinstance(result, bytes):
                return result
            return encode_reply(request_id, result)
        except ProtocolError as exc:
            self._rejected(request, exc.request_id or request_id, exc.code)
            return encode_error(exc.request_id or request_id, exc.code, exc.message, exc.details)
        except Exception as exc:  # a daemon bug must not take the daemon down
            self._rejected(request, request_id, ErrorCode.INTERNAL, log_it=False)
            log.exception("internal error handling request %d", request_id,
                          extra=request_fields(request, request_id, ErrorCode.INTERNAL))
            return encode_error(request_id, ErrorCode.INTERNAL,
                                f"internal error in the daemon ({type(exc).__name__}: {exc}); "
                                f"please report it with the daemon log")

    def _rejected(self, request: m.Request | None, request_id: int, code: ErrorCode,
                  log_it: bool = True) -> None:
        """Count (and at DEBUG, log) an error answered before the request reached a model."""
        key = (request.OP if request is not None else "", str(code))
        self.rejected[key] = self.rejected.get(key, 0) + 1
        if log_it and log.isEnabledFor(logging.DEBUG):
            log.debug("request %d (%s) refused: %s", request_id, key[0] or "undecoded", key[1],
                      extra=request_fields(request, request_id, code))

    def step(self, timeout_s: float = 0.0) -> list[Answer]:
        """Wait up to timeout_s for finished work (requests run on worker instances, loads,
        engine swaps), apply it, and return the answers to send."""
        due = self.batch_due_ns()
        if due is not None:
            timeout_s = min(timeout_s, due / 1e9)
        if timeout_s > 0:
            select.select([self.completions.fileno()], [], [], timeout_s)
        answers = []
        for item in self.completions.drain():
            try:
                answer = self.finish(item)
            except Exception as exc:  # one bad completion must not lose the others
                log.exception("finishing a request, an engine swap or a model load failed")
                answer = self._failed(item, exc)
            if answer is not None:
                answers.append(answer)
        if self._batching:
            answers += self._dispatch_batches()
        return answers

    def batch_due_ns(self) -> int | None:
        """How long until a queued batch should start (0: now); None when none is queued.
        The socket loop polls no longer than this before it calls step()."""
        if not self._batching:
            return None
        now = time.perf_counter_ns()
        dues = [due for due in (executor.due_ns(now) for executor in self._batching) if due is not None]
        return min(dues) if dues else None

    def _dispatch_batches(self) -> list[Answer]:
        answers = []
        for executor in list(self._batching):
            try:
                done = executor.dispatch()
            except Exception:  # a bug: its requests stay queued for the next step, the rest go on
                log.exception("dispatching batches of model %s failed", executor.name)
                continue
            for item in done:
                answer = self.finish(item)
                if answer is not None:
                    answers.append(answer)
            if not executor.has_queued():
                self._batching.discard(executor)
        return answers

    def _failed(self, item: Finished, exc: Exception) -> Answer | None:
        """The answer for work whose finishing failed (a daemon bug): its caller still gets one."""
        caller = None
        if isinstance(item, RequestDone) and item.job in self.in_flight:
            self.in_flight.end(item.job)
            caller = Caller(item.job.identity, item.job.request_id)
        elif isinstance(item, ModelLoaded) and item.answer is not None and item in self.in_flight:
            self.in_flight.end(item)
            caller = item.answer
        if caller is None:
            return None
        return Answer(caller.identity, caller.request_id, encode_error(
            caller.request_id, ErrorCode.INTERNAL,
            f"internal error in the daemon ({type(exc).__name__}: {exc}); please report it with "
            f"the daemon log"))

    def _handle(self, request: m.Request, call: Call) -> Handled:
        if self.stop.draining:
            self.stop.heard_from(call.identity)
            if isinstance(request, _REFUSED_WHILE_DRAINING):
                self.stop.refused += 1
                raise stop_state.refused(request.OP)
        return self._handlers[type(request)](request, call)

    def finish(self, item: Finished) -> Answer | None:
        """Apply work another thread finished (socket loop only): the answer to send, if any."""
        match item:
            case RequestDone(job=job):
                if job not in self.in_flight:
                    # Answered when the stop gave up on it while it ran: its region goes back only.
                    self.regions.checkin(job.region)
                    return None
                return Answer(job.identity, job.request_id, self._end(item))
            case ModelLoaded():
                return self._loaded(item)
            case EngineReady():
                self.models.swap(item)
                return None
        raise TypeError(f"unknown finished work {item!r}")

    # -- where an infer ends -------------------------------------------------------------------------

    def _end(self, done: RequestDone, region_in_use: bool = False) -> bytes:
        """The one place a request ends, however it ends (ran inline or on a worker, refused
        before it ran, given up on by a stop): out of the in-flight count, region checked in
        (unless a backend call still uses it: its late completion returns it), counted in the
        model's statistics, answered."""
        job = done.job
        self.in_flight.end(job)
        if not region_in_use:
            self.regions.checkin(job.region)
        spin_ns = job.model.config.idle_spin_us * 1000
        if spin_ns > self.spin_ns and done.error is None:  # refused requests must not buy spinning
            self.spin_ns = spin_ns
        stats = job.model.stats
        if done.error is not None:
            stats.record_error(done.error.code)
            if log.isEnabledFor(logging.DEBUG):
                log.debug("request %d to model %s failed: %s", job.request_id, job.model.name,
                          done.error.code, extra=job_fields(job, done.error.code))
            return encode_error(job.request_id, done.error.code, done.error.message, done.error.details)
        try:
            reply = self._infer_reply(job, done)
        except Exception as exc:  # a bug: the client still gets an answer, not a timeout
            log.exception("finishing request %d failed", job.request_id,
                          extra=job_fields(job, ErrorCode.INTERNAL))
            stats.record_error(ErrorCode.INTERNAL)
            return encode_error(job.request_id, ErrorCode.INTERNAL,
                                f"internal error in the daemon ({type(exc).__name__}: {exc})")
        stats.record(reply.timing.total_us)
        if self.observe_timings:
            stats.observe(reply.timing, job.model.config.device >= 0)
        return encode_reply(job.request_id, reply)

    @staticmethod
    def _infer_reply(job: Job, done: RequestDone) -> m.InferReply:
        base = job.region.address
        specs = job.model.outputs  # the wire dtype names, looked up (numpy's dtype.name is slow)
        infos = []
        for t in job.outputs:
            shape = done.shapes[t.name]
            infos.append(m.OutputInfo(name=t.name, dtype=specs[t.name][0].dtype, shape=list(shape),
                                      offset=t.address - base, nbytes=tensor_nbytes(shape, t.dtype.itemsize)))
        total_us = (time.perf_counter_ns() - job.received_ns) // 1000
        timing = done.timing or RunTiming()  # a run that succeeded always reports it
        return m.InferReply(backend=job.served_by, engine=job.engine, outputs=infos, timing=m.Timing(
            compute_us=timing.compute_us, total_us=total_us,
            queue_us=max(job.started_ns - job.received_ns, 0) // 1000,
            h2d_us=timing.h2d_us, d2h_us=timing.d2h_us))

    # -- periodic and stop ---------------------------------------------------------------------------

    def reclaim_dead_clients(self) -> int:
        reclaimed = 0
        for record in self.clients.dead():
            n = self.regions.release_client(record.client_id)
            self.clients.remove(record.client_id)
            reclaimed += n
            log.info("client %d (pid %d) is gone; reclaimed %d region(s)",
                     record.client_id, record.pid, n)
        return reclaimed

    def connection_closed(self, identity: bytes) -> int:
        """A connection has gone (its process closed it or died; or the daemon closed it for
        breaking the protocol): its client's leases go now, not at the next reclaim. Requests
        of it that still run keep their regions until they end (the region layer's refcount)."""
        self.stop.heard_from(identity)  # it reads nothing more: a stop need not wait for it
        self.stop.goodbye(identity)
        reclaimed = 0
        for record in self.clients.on_connection(identity):
            n = self.regions.release_client(record.client_id)
            self.clients.remove(record.client_id)
            reclaimed += n
            log.info("client %d (pid %d) closed its connection; released %d region(s)",
                     record.client_id, record.pid, n)
        return reclaimed

    def give_up_in_flight(self) -> list[Answer]:
        """A stop past drain_timeout_s: answer every request still queued or running, and every
        `load` op still waiting, with an error now, so no client waits for its own timeout.

        Queued requests never start. A running backend call cannot be interrupted (neither
        ONNX Runtime without a RunOptions on every call, nor a CUDA kernel): its request is
        answered as abandoned, and its region and model stay mapped until the process exits."""
        drain = self.config.drain_timeout_s
        answers = []

        def refusal(job: Job) -> ProtocolError:
            return stop_state.not_started(job.model.name, drain)

        for executor in self.models.executors():
            queued, running = executor.give_up(refusal)
            for job in queued:
                if job in self.in_flight:
                    answers.append(Answer(job.identity, job.request_id,
                                          self._end(RequestDone(job, error=refusal(job)))))
            for job in running:
                if job in self.in_flight:
                    error = stop_state.abandoned(job.model.name, drain)
                    answers.append(Answer(job.identity, job.request_id,
                                          self._end(RequestDone(job, error=error), region_in_use=True)))
        for item in self.in_flight.loads():
            self.in_flight.end(item)
            if item.answer is not None:
                error = stop_state.load_abandoned(item.config.name, drain)
                answers.append(Answer(item.answer.identity, item.answer.request_id,
                                      encode_error(item.answer.request_id, error.code, error.message,
                                                   error.details)))
        return answers

    def close(self, wait: bool = True) -> None:
        """Unload every model and release every region. wait=False after give_up_in_flight():
        requests still running keep their model and region (the process exits next)."""
        self.loader.close(wait)  # waits for the model being created now
        # Models first: their executors finish running requests, which use regions.
        left_open = self.models.close_all(wait)
        if left_open:
            log.warning("stopping: model(s) %s still running abandoned requests are left to the "
                        "process exit", ", ".join(left_open))
        for item in self.completions.drain():
            match item:
                case ModelLoaded(model=model) if model is not None:
                    discard(model)
                case EngineReady():
                    discard(item)
                case RequestDone():
                    self.finish(item)  # answers nobody (the socket is closing) but checks regions in
        self.regions.close_all()
        self.completions.close()

    # -- loads ---------------------------------------------------------------------------------------

    def _loaded(self, item: ModelLoaded) -> Answer | None:
        """Serve a model the loader created; answer the `load` op waiting for it, if any."""
        self.loader.finished(item)
        model = item.model
        if model is None:
            raise RuntimeError(f"the loader queued model {item.config.name!r} before creating it")
        if item.replace:
            self.models.finish_replacing(model)
            return None
        installed = self.models.finish_loading(item.target, model)
        if item.answer is None or item not in self.in_flight:
            return None  # a configured model, or a `load` op a stop has answered already
        caller = item.answer
        # The answer is built before the op leaves the in-flight count: if building it fails,
        # _failed still finds the op and answers INTERNAL.
        if installed and model.state == "ready":
            frame = encode_reply(caller.request_id, m.LoadReply(model=model.info()))
        else:
            if installed:
                self.models.unload(model.name)
            why = model.error if installed else "it was unloaded while it loaded"
            frame = encode_error(caller.request_id, ErrorCode.LOAD_FAILED,
                                 f"model {model.name!r} failed to load: {why}")
        self.in_flight.end(item)
        return Answer(caller.identity, caller.request_id, frame)

    # -- handlers ------------------------------------------------------------------------------------

    def _hello(self, req: m.Hello, call: Call):
        record, previous = self.clients.hello(req.client_pid, req.client_start_time, req.client_name,
                                             call.identity, call.peer() if call.peer else None,
                                             in_process=call.peer is None)
        if previous is not None:  # this connection's earlier client: one connection, one client
            self.regions.release_client(previous.client_id)
        return m.HelloReply(
            client_id=record.client_id, daemon_id=self.daemon_id, server_version=SERVER_VERSION,
            protocol_version=PROTOCOL_VERSION, alignment=ALIGNMENT,
            max_message_bytes=MAX_REQUEST_BYTES,
            heartbeat_interval_s=self.clients.heartbeat_interval_s(record),
        )

    def _models(self, req: m.ListModels, call: Call):
        if req.name is not None:
            return m.ModelsReply(models=[self.models.get(req.name).info()])
        return m.ModelsReply(models=[model.info() for model in self.models])

    def _lease(self, req: m.Lease, call: Call):
        record = self.clients.get(req.client_id, call.identity)
        # Windows mappings cannot shrink or lose pages under the daemon: nothing to guard there.
        guarded = not record.same_user and sys.platform != "win32"
        region = self.regions.lease(req.client_id, req.nbytes, guarded=guarded)
        return m.LeaseReply(region=m.RegionInfo(name=region.name, nbytes=region.nbytes,
                                                token=region.token))

    def _release(self, req: m.Release, call: Call):
        self.clients.get(req.client_id, call.identity)
        return m.ReleaseReply(released_now=self.regions.release(req.client_id, req.region, req.token))

    def _heartbeat(self, req: m.Heartbeat, call: Call):
        self.clients.get(req.client_id, call.identity)
        return m.HeartbeatReply()

    def _goodbye(self, req: m.Goodbye, call: Call):
        self.clients.get(req.client_id, call.identity)
        self.stop.goodbye(call.identity)
        released = self.regions.release_client(req.client_id)
        self.clients.remove(req.client_id)
        return m.GoodbyeReply(released=released)

    def _infer(self, req: m.Infer, call: Call) -> Handled:
        self.clients.get(req.client_id, call.identity)
        if req.deadline_ms < 0:
            raise ProtocolError(ErrorCode.BAD_MESSAGE,
                                f"deadline_ms must be >= 0 (0: no deadline), got {req.deadline_ms}")
        model = self.models.get_ready(req.model)
        region = self.regions.checkout(req.client_id, req.region, req.token)
        job = Job(call.identity, call.request_id, model, region, [], [], call.received_ns,
                  served_by=model.served_by, engine=model.engine,
                  deadline_ns=call.received_ns + req.deadline_ms * 1_000_000 if req.deadline_ms else 0)
        executor = model.executor
        try:
            job.inputs, job.outputs = bind_cached(req, model, region)
            if executor is None:  # get_ready() returns served models, which have one
                raise ProtocolError(ErrorCode.MODEL_NOT_READY, f"model {req.model!r} has no executor")
            if not executor.inline and self.in_flight.on(executor) >= executor.capacity:
                raise ProtocolError(
                    ErrorCode.OVERLOADED,
                    f"model {model.name!r} has {self.in_flight.on(executor)} requests queued or "
                    f"running, its limit; retry later, or raise its instances / max_queue")
        except ProtocolError as exc:
            return self._end(RequestDone(job, error=exc))
        if not executor.inline:
            self.in_flight.add(job, executor)
        try:
            done = executor.submit(job)
        except Exception as exc:  # a bug: the request still ends, its region goes back
            log.exception("submitting request %d failed", call.request_id,
                          extra=job_fields(job, ErrorCode.INTERNAL))
            return self._end(RequestDone(job, error=ProtocolError(
                ErrorCode.INTERNAL, f"internal error in the daemon ({type(exc).__name__}: {exc})")))
        if done is None and executor.batching:
            self._batching.add(executor)
        return PENDING if done is None else self._end(done)

    def _status(self, req: m.Status, call: Call):
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            cpu = self._process.cpu_times()
        models = []
        for model in self.models:
            p50, p90, p99 = model.stats.percentiles()
            graphs, graph_bytes = model.backend.graph_stats() if model.backend is not None else (0, 0)
            models.append(m.ModelStatus(
                name=model.name, backend=model.config.backend, state=model.state,
                requests=model.stats.ok, errors=model.stats.errors,
                p50_us=p50, p90_us=p90, p99_us=p99, error=model.error,
                device=model.config.device, instances=model.config.instances, build=model.build,
                in_flight=self.in_flight.on(model.executor), graphs=graphs, graph_bytes=graph_bytes,
                **_batching_status(model)))
        return m.StatusReply(
            daemon_id=self.daemon_id, pid=os.getpid(), server_version=SERVER_VERSION,
            protocol_version=PROTOCOL_VERSION, endpoint=self.endpoint,
            uptime_s=time.monotonic() - self.started, rss_bytes=rss, cpu_user_s=cpu.user,
            cpu_system_s=cpu.system, clients=len(self.clients), regions=len(self.regions),
            region_bytes=self.regions.total_bytes, models=models,
            pinned_bytes=self.pinning.stats.pinned_bytes,
            host_registrations=self.pinning.stats.registrations, devices=self._devices(),
            stopping=self.stop.draining)

    def _devices(self) -> list[m.DeviceStatus]:
        devices = sorted({model.config.device for model in self.models if model.config.device >= 0})
        result = []
        for device in devices:
            try:
                free, total = cuda.memory_info(device)
                result.append(m.DeviceStatus(device=device, name=cuda.device_name(device),
                                             free_bytes=free, total_bytes=total))
            except cuda.CudaError as exc:
                log.warning("device %d status: %s", device, exc)
        return result

    def _load(self, req: m.Load, call: Call) -> Handled:
        config = ModelConfig(name=req.name, path=req.path, backend=req.backend,
                             max_batch=req.max_batch, device=req.device, instances=req.instances,
                             inputs=list(req.inputs))
        try:
            validate_model(config)
        except ConfigError as exc:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, str(exc)) from None
        if any(model.name == req.name for model in self.models):
            raise ProtocolError(ErrorCode.LOAD_FAILED,
                                f"a model named {req.name!r} is already loaded; unload it first")
        if not req.path.startswith(BUILTIN_PREFIX):
            problem = model_file_problem(Path(req.path))  # answered now; the load itself is not
            if problem:
                raise ProtocolError(ErrorCode.LOAD_FAILED, f"model {req.name!r} failed to load: {problem}")
        # On the loader thread, answered from the socket loop once it is in (finish): a long load
        # (or one queued behind configured models) never stalls other clients or the watchdog.
        self.in_flight.add(self.loader.add(config, answer=Caller(call.identity, call.request_id)))
        return PENDING

    def _unload(self, req: m.Unload, call: Call):
        self.models.unload(req.name, background=True)
        self._configured.pop(req.name, None)  # the config file decides again at the next reload
        return m.UnloadReply()

    def _shutdown(self, req: m.Shutdown, call: Call):
        self.stop.shutdown_op(call.identity)
        return m.ShutdownReply()

    def _reload(self, req: m.Reload, call: Call):
        if self.reload_source is None:
            raise ProtocolError(ErrorCode.CONFIG_ERROR, "this daemon has no configuration to reload")
        try:
            config = self.reload_source()
        except ConfigError as exc:
            raise ProtocolError(ErrorCode.CONFIG_ERROR,
                                f"the configuration was not reloaded, nothing changed: {exc}") from None
        return self.reload(config)

    def reload(self, new: DaemonConfig) -> m.ReloadReply:
        """Apply a re-read configuration's models: new ones load, changed ones are replaced once
        their new version has loaded (the old one serves until then), removed ones unload;
        every other model keeps serving untouched. Models added with the `load` op are left
        alone unless the configuration names them."""
        reply = m.ReloadReply()
        wanted = {model.name: model for model in new.models}
        for name in list(self._configured):
            if name not in wanted:
                del self._configured[name]
                if name in self.models.names():
                    self.models.unload(name, background=True)
                    reply.unloaded.append(name)
        current = set(self.models.names())
        for name, config in wanted.items():
            before = self._configured.get(name)
            self._configured[name] = copy.deepcopy(config)
            if name not in current:
                self.loader.add(config)
                reply.loading.append(name)
                continue
            model = self.models.get(name)
            if before == config and model.state != "failed":
                reply.unchanged.append(name)
            else:  # changed, or failed before (its file may be there now): load it again
                self.loader.replace(model, config)
                reply.replacing.append(name)
        reply.restart_needed = [f.name for f in fields(DaemonConfig)
                                if f.name != "models" and getattr(new, f.name) != getattr(self.config, f.name)]
        log.info("reload: loading %s, replacing %s, unloaded %s, unchanged %s%s",
                 reply.loading, reply.replacing, reply.unloaded, reply.unchanged,
                 f"; restart to apply {reply.restart_needed}" if reply.restart_needed else "")
        return reply


_REFUSED_WHILE_DRAINING = (m.Infer, m.Lease, m.Load, m.Reload)


# The fields a log line about one request carries (logging's `extra`; the JSON log format
# writes them out, daemon/serve/logs.py): names and numbers only, never tensors or tokens.
def request_fields(request: m.Request | None, request_id: int, code: ErrorCode | None = None) -> dict:
    fields: dict = {"request_id": request_id}
    model = getattr(request, "model", None) or getattr(request, "name", None)
    if isinstance(model, str):
        fields["model"] = model
    client_id = getattr(request, "client_id", None)
    if isinstance(client_id, int):
        fields["client_id"] = client_id
    if code is not None:
        fields["error_code"] = str(code)
    return fields


def job_fields(job: Job, code: ErrorCode | None = None) -> dict:
    fields: dict = {"model": job.model.name, "client_id": job.region.owner, "request_id": job.request_id}
    if code is not None:
        fields["error_code"] = str(code)
    return fields


def _batching_status(model: ServedModel) -> dict:
    """The ModelStatus fields of dynamic batching (all zero when the model does not batch)."""
    stats = model.stats.batching
    delay_p50, delay_p99 = stats.delay_percentiles()
    return dict(batching=model.batching, batches=stats.batches, batch_mean=round(stats.mean_size, 3),
                batch_max=stats.max_size, queue_delay_p50_us=delay_p50, queue_delay_p99_us=delay_p99)
