"""The daemon's state and one handler per op; no sockets here (server.py owns them).

handle() takes a decoded request and returns the reply's payload, or raises
ProtocolError, which the server turns into an error reply. Anything else a
handler raises is a daemon bug: it is logged and answered with INTERNAL, and
the daemon keeps serving.
"""

from __future__ import annotations

import logging
import os
import time

import psutil

from trtd.protocol import (ALIGNMENT, MAX_REQUEST_BYTES, PROTOCOL_VERSION, SERVER_VERSION,
                           ErrorCode, ProtocolError, messages as m)

from .backends import BackendError, OutputTooLarge
from .clients import ClientRegistry
from .config import DaemonConfig, ModelConfig
from .models import ModelRegistry
from .regions import RegionLimits, RegionRegistry
from .validation import bind_request

log = logging.getLogger("trtd.core")


class DaemonCore:
    def __init__(self, config: DaemonConfig, endpoint: str, daemon_id: str, region_prefix: str):
        self.config = config
        self.endpoint = endpoint
        self.daemon_id = daemon_id
        self.started = time.monotonic()
        self.stop_requested = False
        self.clients = ClientRegistry(config.client_timeout_s)
        self.regions = RegionRegistry(region_prefix, RegionLimits(
            config.max_region_bytes, config.max_regions_per_client, config.max_bytes_per_client))
        self.models = ModelRegistry()
        self._process = psutil.Process()
        self._handlers = {
            m.Hello: self._hello, m.ListModels: self._models, m.Lease: self._lease,
            m.Release: self._release, m.Infer: self._infer, m.Heartbeat: self._heartbeat,
            m.Goodbye: self._goodbye, m.Status: self._status, m.Load: self._load,
            m.Unload: self._unload, m.Shutdown: self._shutdown,
        }

    def load_configured_models(self) -> None:
        for model in self.config.models:
            self.models.load(model)

    def handle(self, request: m.Request, identity: bytes, received_ns: int):
        """identity: the connection's routing id; received_ns: perf_counter_ns at arrival."""
        return self._handlers[type(request)](request, identity, received_ns)

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

    def close(self) -> None:
        self.regions.close_all()
        self.models.close_all()

    # -- handlers ------------------------------------------------------------------------------------

    def _hello(self, req: m.Hello, identity: bytes, _received_ns: int):
        record = self.clients.hello(req.client_pid, req.client_start_time, req.client_name,
                                   identity)
        return m.HelloReply(
            client_id=record.client_id, daemon_id=self.daemon_id, server_version=SERVER_VERSION,
            protocol_version=PROTOCOL_VERSION, alignment=ALIGNMENT,
            max_message_bytes=MAX_REQUEST_BYTES,
            heartbeat_interval_s=self.clients.heartbeat_interval_s(record),
        )

    def _models(self, req: m.ListModels, identity: bytes, _received_ns: int):
        if req.name is not None:
            return m.ModelsReply(models=[self.models.get(req.name).info()])
        return m.ModelsReply(models=[model.info() for model in self.models])

    def _lease(self, req: m.Lease, identity: bytes, _received_ns: int):
        self.clients.get(req.client_id, identity)
        region = self.regions.lease(req.client_id, req.nbytes)
        return m.LeaseReply(region=m.RegionInfo(name=region.name, nbytes=region.nbytes,
                                                token=region.token))

    def _release(self, req: m.Release, identity: bytes, _received_ns: int):
        self.clients.get(req.client_id, identity)
        return m.ReleaseReply(released_now=self.regions.release(req.client_id, req.region, req.token))

    def _heartbeat(self, req: m.Heartbeat, identity: bytes, _received_ns: int):
        self.clients.get(req.client_id, identity)
        return m.HeartbeatReply()

    def _goodbye(self, req: m.Goodbye, identity: bytes, _received_ns: int):
        self.clients.get(req.client_id, identity)
        released = self.regions.release_client(req.client_id)
        self.clients.remove(req.client_id)
        return m.GoodbyeReply(released=released)

    def _infer(self, req: m.Infer, identity: bytes, received_ns: int):
        self.clients.get(req.client_id, identity)
        model = self.models.get_ready(req.model)
        region = self.regions.checkout(req.client_id, req.region, req.token)
        try:
            try:
                inputs, outputs = bind_request(req, model, region)
                start = time.perf_counter_ns()
                shapes = model.backend.enqueue(None, inputs, outputs)
                compute_ns = time.perf_counter_ns() - start
            except OutputTooLarge as exc:
                raise ProtocolError(ErrorCode.OUTPUT_TOO_LARGE, str(exc),
                                    {"output": exc.name, "needed": exc.needed,
                                     "capacity": exc.capacity}) from None
            except BackendError as exc:
                raise ProtocolError(ErrorCode.BACKEND_ERROR,
                                    f"model {model.name!r} failed on this request: {exc}") from None
        except ProtocolError:
            model.stats.errors += 1
            raise
        finally:
            self.regions.checkin(region)
        base = region.address
        infos = []
        for t in outputs:
            shape = shapes[t.name]
            nbytes = t.dtype.itemsize
            for d in shape:
                nbytes *= d
            infos.append(m.OutputInfo(name=t.name, dtype=t.dtype.name, shape=list(shape),
                                      offset=t.address - base, nbytes=nbytes))
        total_us = (time.perf_counter_ns() - received_ns) // 1000
        model.stats.record(total_us)
        return m.InferReply(outputs=infos, timing=m.Timing(compute_us=compute_ns // 1000,
                                                           total_us=total_us))

    def _status(self, req: m.Status, identity: bytes, _received_ns: int):
        with self._process.oneshot():
            rss = self._process.memory_info().rss
            cpu = self._process.cpu_times()
        models = []
        for model in self.models:
            p50, p90, p99 = model.stats.percentiles()
            models.append(m.ModelStatus(
                name=model.name, backend=model.config.backend, state=model.state,
                requests=model.stats.requests, errors=model.stats.errors,
                p50_us=p50, p90_us=p90, p99_us=p99, error=model.error))
        return m.StatusReply(
            daemon_id=self.daemon_id, pid=os.getpid(), server_version=SERVER_VERSION,
            protocol_version=PROTOCOL_VERSION, endpoint=self.endpoint,
            uptime_s=time.monotonic() - self.started, rss_bytes=rss, cpu_user_s=cpu.user,
            cpu_system_s=cpu.system, clients=len(self.clients), regions=len(self.regions),
            region_bytes=self.regions.total_bytes, models=models)

    def _load(self, req: m.Load, identity: bytes, _received_ns: int):
        if req.max_batch < 0:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"max_batch must be >= 0, got {req.max_batch}")
        model = self.models.load(ModelConfig(name=req.name, path=req.path, backend=req.backend,
                                             max_batch=req.max_batch))
        if model.state != "ready":
            self.models.unload(req.name)
            raise ProtocolError(ErrorCode.LOAD_FAILED,
                                f"model {req.name!r} failed to load: {model.error}")
        return m.LoadReply(model=model.info())

    def _unload(self, req: m.Unload, identity: bytes, _received_ns: int):
        self.models.unload(req.name)
        return m.UnloadReply()

    def _shutdown(self, req: m.Shutdown, identity: bytes, _received_ns: int):
        self.stop_requested = True
        return m.ShutdownReply()
