"""The daemon's state and one handler per op; no sockets here (server.py owns them).

handle() takes a decoded request and returns the reply's payload, or raises
ProtocolError, which the server turns into an error reply. Anything else a
handler raises is a daemon bug: it is logged and answered with INTERNAL, and
the daemon keeps serving.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from pathlib import Path
from dataclasses import dataclass, fields
from typing import Callable

import psutil

from trtd.protocol import (ALIGNMENT, MAX_REQUEST_BYTES, PROTOCOL_VERSION, SERVER_VERSION,
                           ErrorCode, ProtocolError, encode_error, encode_reply, messages as m)

from trtd.daemon.system import cuda

from trtd.daemon.serve import stopping
from trtd.daemon.core.clients import ClientRegistry
from trtd.daemon.system.cuda import HostPinning
from trtd.daemon.config.settings import (BUILTIN_PREFIX, ConfigError, DaemonConfig, ModelConfig, model_file_problem,
                     validate_model)
from trtd.daemon.running.instances import RunTiming
from trtd.daemon.running.registry import LoadedModel, ModelRegistry
from trtd.daemon.core.regions import RegionLimits, RegionRegistry
from trtd.daemon.running.swap import Swap
from trtd.daemon.running.loader import Loaded, ModelLoader
from trtd.daemon.running.executor import CompletionQueue, Done, Job
from trtd.daemon.core.binding import bind_request

log = logging.getLogger("trtd.core")

# Returned by handle() for a request that a worker instance will answer later.
PENDING = object()


@dataclass(slots=True)
class Call:
    """Where a request came from: the connection's routing id, its id, its arrival time."""

    identity: bytes
    request_id: int
    received_ns: int  # perf_counter_ns when the frame was read


class DaemonCore:
    def __init__(self, config: DaemonConfig, endpoint: str, daemon_id: str, region_prefix: str,
                 share_region=None):
        self.config = config
        self.endpoint = endpoint
        self.daemon_id = daemon_id
        self.started = time.monotonic()
        self.stop_requested = False
        # Set on stop: running requests finish and are answered, new work is refused.
        self.draining = False
        self.refused_while_draining = 0  # new work answered OVERLOADED since, for the stop's log
        # Connections sent a reply during the stop that they may not have read yet.
        self.unread_replies: set[bytes] = set()
        self.shutdown_requester: bytes | None = None  # the connection that sent `shutdown`
        self.shutdown_acknowledged = False            # ... and has said goodbye since
        self.in_flight = 0  # requests a worker instance will answer (PENDING, not yet finished)
        self.loader: ModelLoader | None = None
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
        self._process = psutil.Process()
        self._handlers = {
            m.Hello: self._hello, m.ListModels: self._models, m.Lease: self._lease,
            m.Release: self._release, m.Infer: self._infer, m.Heartbeat: self._heartbeat,
            m.Goodbye: self._goodbye, m.Status: self._status, m.Load: self._load,
            m.Unload: self._unload, m.Shutdown: self._shutdown, m.Reload: self._reload,
        }

    def start_loading(self) -> None:
        """Queue the configured models on the loader thread; they show as "loading" until ready."""
        self.loader = ModelLoader(self.models, self.completions)
        for model in self.config.models:
            self._configured[model.name] = copy.deepcopy(model)
            self.loader.add(model)

    def load_configured_models(self) -> None:
        """Load every configured model now, on this thread (tests and tools that need them ready)."""
        for model in self.config.models:
            self._configured[model.name] = copy.deepcopy(model)
            self.models.load(model)

    @property
    def loading(self) -> int:
        return self.loader.pending if self.loader is not None else 0

    def handle(self, request: m.Request, call: Call):
        """The reply payload, or PENDING when a worker instance will finish the request."""
        if self.draining:
            # A connection that sends again has read its earlier replies (an SDK connection
            # waits for each): the stop need not keep the socket open for it.
            self.unread_replies.discard(call.identity)
            if isinstance(request, _REFUSED_WHILE_DRAINING):
                self.refused_while_draining += 1
                raise stopping.refused(request.OP)
        result = self._handlers[type(request)](request, call)
        if result is PENDING:
            self.in_flight += 1
        return result

    # -- periodic ------------------------------------------------------------------------------------

    def reclaim_dead_clients(self) -> int:
        reclaimed = 0
        for record in self.clients.dead():
            n = self.regions.release_client(record.client_id)
            self.clients.remove(record.client_id)
            reclaimed += n
            log.info("client %d (pid %d) is gone; reclaimed %d region(s)",
                     record.client_id, record.pid, n)
        return reclaimed

    def give_up_in_flight(self) -> list[tuple[bytes, bytes, int]]:
        """A stop past drain_timeout_s: answer every request still queued or running, and every
        `load` op still waiting, with an error now, as (identity, reply, request id), so no
        client waits for its own timeout.

        Queued requests never start. A running backend call cannot be interrupted (neither
        ONNX Runtime without a RunOptions on every call, nor a CUDA kernel): its request is
        answered as abandoned, and its region and model stay mapped until the process exits."""
        drain = self.config.drain_timeout_s
        replies = []

        def refusal(job: Job) -> ProtocolError:
            return stopping.not_started(job.model.name, drain)

        for executor in self.models.executors():
            queued, running = executor.give_up(refusal)
            for job in queued:
                answer = self.finish(Done(job, error=refusal(job)))
                if answer is not None:
                    replies.append((*answer, job.request_id))
            for job in running:
                if job.abandoned:
                    continue
                job.abandoned = True
                self.in_flight -= 1
                error = stopping.abandoned(job.model.name, drain)
                replies.append((job.identity, encode_error(job.request_id, error.code, error.message,
                                                           error.details), job.request_id))
        for identity, request_id, name in (self.loader.give_up() if self.loader is not None else []):
            self.in_flight -= 1
            error = stopping.load_abandoned(name, drain)
            replies.append((identity, encode_error(request_id, error.code, error.message, error.details),
                            request_id))
        return replies

    def close(self, wait: bool = True) -> None:
        """Unload every model and release every region. wait=False after give_up_in_flight():
        requests still running keep their model and region (the process exits next)."""
        from trtd.daemon.running.registry import discard

        if self.loader is not None:
            self.loader.close(wait)  # waits for the model being created now
        # Models first: their executors finish running requests, which use regions.
        left_open = self.models.close_all(wait)
        if left_open:
            log.warning("stopping: model(s) %s still running abandoned requests are left to the "
                        "process exit", ", ".join(left_open))
        for done in self.completions.drain():
            if isinstance(done, Loaded):
                discard(done.model)
            elif isinstance(done, Swap):
                discard(done)
            else:
                self.finish(done)  # answers nobody (the socket is closing) but checks regions back in
        self.regions.close_all()
        self.completions.close()

    def finish(self, done) -> tuple[bytes, bytes] | None:
        """(identity, reply frame) for a request a worker instance has finished; None for a swap
        or a model loaded in the background."""
        if isinstance(done, Swap):
            self.models.swap(done)
            return None
        if isinstance(done, Loaded):
            if self.loader is not None:  # only the loader queues these
                self.loader.finished(done)
            if done.model is None:
                raise RuntimeError(f"the loader queued model {done.config.name!r} before creating it")
            if done.replace:
                self.models.finish_replacing(done.model)
                return None
            installed = self.models.finish_loading(done.target, done.model)
            return None if done.answer is None else self._load_reply(done.answer, done.model, installed)
        job = done.job
        if job.abandoned:  # answered when the stop gave up on it: its region goes back only
            job.executor.finished()
            self.regions.checkin(job.region)
            return None
        self.in_flight -= 1
        job.executor.finished()
        try:
            reply = encode_reply(job.request_id, self._infer_reply(done))
        except ProtocolError as exc:
            reply = encode_error(job.request_id, exc.code, exc.message, exc.details)
        except Exception as exc:  # a bug: the client still gets an answer, not a timeout
            log.exception("finishing request %d failed", job.request_id)
            reply = encode_error(job.request_id, ErrorCode.INTERNAL,
                                 f"internal error in the daemon ({type(exc).__name__}: {exc})")
        return job.identity, reply

    # -- handlers ------------------------------------------------------------------------------------

    def _hello(self, req: m.Hello, call: Call):
        record = self.clients.hello(req.client_pid, req.client_start_time, req.client_name,
                                   call.identity)
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
        self.clients.get(req.client_id, call.identity)
        region = self.regions.lease(req.client_id, req.nbytes)
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
        if call.identity == self.shutdown_requester:
            self.shutdown_acknowledged = True
        released = self.regions.release_client(req.client_id)
        self.clients.remove(req.client_id)
        return m.GoodbyeReply(released=released)

    def _infer(self, req: m.Infer, call: Call):
        self.clients.get(req.client_id, call.identity)
        if req.deadline_ms < 0:
            raise ProtocolError(ErrorCode.BAD_MESSAGE,
                                f"deadline_ms must be >= 0 (0: no deadline), got {req.deadline_ms}")
        model = self.models.get_ready(req.model)
        region = self.regions.checkout(req.client_id, req.region, req.token)
        try:
            inputs, outputs = bind_request(req, model, region)
            deadline_ns = call.received_ns + req.deadline_ms * 1_000_000 if req.deadline_ms else 0
            if model.executor is None:  # get_ready() returns served models, which have one
                raise ProtocolError(ErrorCode.MODEL_NOT_READY, f"model {req.model!r} has no executor")
            done = model.executor.submit(Job(call.identity, call.request_id, model, region, inputs,
                                             outputs, call.received_ns, serving=model.serving,
                                             engine=model.engine, deadline_ns=deadline_ns))
        except ProtocolError:
            self.regions.checkin(region)
            model.stats.record_error()
            raise
        return PENDING if done is None else self._infer_reply(done)

    def _infer_reply(self, done: Done) -> m.InferReply:
        """Check the region back in and turn a finished job into its reply (or raise its error)."""
        job = done.job
        self.regions.checkin(job.region)
        model = job.model
        if done.error is not None:
            model.stats.record_error()
            raise done.error
        base = job.region.address
        infos = []
        for t in job.outputs:
            shape = done.shapes[t.name]
            nbytes = t.dtype.itemsize
            for d in shape:
                nbytes *= d
            infos.append(m.OutputInfo(name=t.name, dtype=t.dtype.name, shape=list(shape),
                                      offset=t.address - base, nbytes=nbytes))
        now = time.perf_counter_ns()
        total_us = (now - job.received_ns) // 1000
        model.stats.record(total_us)
        timing = done.timing or RunTiming()  # a run that succeeded always reports it
        return m.InferReply(backend=job.serving, engine=job.engine, outputs=infos, timing=m.Timing(
            compute_us=timing.compute_us, total_us=total_us,
            queue_us=max(job.started_ns - job.received_ns, 0) // 1000,
            h2d_us=timing.h2d_us, d2h_us=timing.d2h_us))

    def _status(self, req: m.Status, call: Call):
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            cpu = self._process.cpu_times()
        models = []
        for model in self.models:
            p50, p90, p99 = model.stats.percentiles()
            models.append(m.ModelStatus(
                name=model.name, backend=model.config.backend, state=model.state,
                requests=model.stats.ok, errors=model.stats.errors,
                p50_us=p50, p90_us=p90, p99_us=p99, error=model.error,
                device=model.config.device, instances=model.config.instances, build=model.build,
                in_flight=model.executor.in_flight if model.executor else 0))
        return m.StatusReply(
            daemon_id=self.daemon_id, pid=os.getpid(), server_version=SERVER_VERSION,
            protocol_version=PROTOCOL_VERSION, endpoint=self.endpoint,
            uptime_s=time.monotonic() - self.started, rss_bytes=rss, cpu_user_s=cpu.user,
            cpu_system_s=cpu.system, clients=len(self.clients), regions=len(self.regions),
            region_bytes=self.regions.total_bytes, models=models,
            pinned_bytes=self.pinning.stats.pinned_bytes,
            host_registrations=self.pinning.stats.registrations, devices=self._devices(),
            stopping=self.draining)

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

    def _load(self, req: m.Load, call: Call):
        config = ModelConfig(name=req.name, path=req.path, backend=req.backend,
                             max_batch=req.max_batch, device=req.device, instances=req.instances,
                             inputs=list(req.inputs))
        try:
            validate_model(config)
        except ConfigError as exc:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, str(exc)) from None
        if self.loader is None:  # a core driven without the socket loop (bench/gpu_profile)
            model = self.models.load(config)
            if model.state != "ready":
                self.models.unload(req.name)
                raise ProtocolError(ErrorCode.LOAD_FAILED,
                                    f"model {req.name!r} failed to load: {model.error}")
            return m.LoadReply(model=model.info())
        if any(model.name == req.name for model in self.models):
            raise ProtocolError(ErrorCode.LOAD_FAILED,
                                f"a model named {req.name!r} is already loaded; unload it first")
        if not req.path.startswith(BUILTIN_PREFIX):
            problem = model_file_problem(Path(req.path))  # answered now; the load itself is not
            if problem:
                raise ProtocolError(ErrorCode.LOAD_FAILED, f"model {req.name!r} failed to load: {problem}")
        # On the loader thread, answered from the socket loop once it is in (finish): a long load
        # (or one queued behind configured models) never stalls other clients or the watchdog.
        self.loader.add(config, answer=(call.identity, call.request_id))
        return PENDING

    def _load_reply(self, answer: tuple[bytes, int], model: LoadedModel,
                    installed: bool) -> tuple[bytes, bytes]:
        """The answer to a `load` op whose model the loader has finished."""
        self.in_flight -= 1
        identity, request_id = answer
        if installed and model.state == "ready":
            return identity, encode_reply(request_id, m.LoadReply(model=model.info()))
        if installed:
            self.models.unload(model.name)
        why = model.error if installed else "it was unloaded while it loaded"
        return identity, encode_error(request_id, ErrorCode.LOAD_FAILED,
                                      f"model {model.name!r} failed to load: {why}")

    def _unload(self, req: m.Unload, call: Call):
        self.models.unload(req.name)
        self._configured.pop(req.name, None)  # the config file decides again at the next reload
        return m.UnloadReply()

    def _shutdown(self, req: m.Shutdown, call: Call):
        self.stop_requested = True
        # The server keeps its socket open until this connection says goodbye (or a grace period
        # ends): a DEALER drops a reply it has not read yet when its peer disconnects.
        self.shutdown_requester = call.identity
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
        if self.loader is None:  # models were loaded in the foreground (load_configured_models)
            self.loader = ModelLoader(self.models, self.completions)
        wanted = {model.name: model for model in new.models}
        for name in list(self._configured):
            if name not in wanted:
                del self._configured[name]
                if name in self.models.names():
                    self.models.unload(name)
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
