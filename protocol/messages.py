"""Typed wire messages: one dataclass per request op and per reply payload.

A request on the wire is a map {"v": version, "op": name, "id": request id,
...fields}; a reply is {"v", "id", "ok": true, "result": {...}} or
{"v", "id", "ok": false, "error": {"code", "message", "details"}}.
SPEC.md is the normative description; tests keep the two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

_wire = dataclass(slots=True, kw_only=True)


# -- shared pieces ---------------------------------------------------------------------------------


@_wire
class TensorSpec:
    """A model input or output as the daemon describes it; -1 marks a dynamic dimension."""

    name: str
    dtype: str
    shape: list[int]
    # Bytes at the largest shape the model accepts/produces; -1 when unbounded.
    max_nbytes: int = -1


@_wire
class ModelInfo:
    name: str
    backend: str
    state: str  # "ready" | "loading" | "failed"
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    max_batch: int = 0  # 0: the model has no dynamic batch dimension
    error: str = ""


@_wire
class RegionInfo:
    name: str    # the shared-memory name to attach to; also the region's id in requests
    nbytes: int
    token: str   # the lease secret; every use of the region must present it


@_wire
class InputRef:
    name: str
    dtype: str
    shape: list[int]
    offset: int
    nbytes: int


@_wire
class OutputRef:
    name: str
    offset: int
    nbytes: int  # capacity of the area; the result must fit


@_wire
class OutputInfo:
    name: str
    dtype: str
    shape: list[int]
    offset: int
    nbytes: int  # bytes actually written


@_wire
class Timing:
    compute_us: int
    total_us: int  # from message received until the result was ready (before encoding)
    queue_us: int = 0  # from message received until an instance started it
    h2d_us: int = 0    # host->device copies (GPU models; 0 on the CPU)
    d2h_us: int = 0    # device->host copies (GPU models; 0 on the CPU)


@_wire
class ModelStatus:
    name: str
    backend: str
    state: str
    # `requests` counts the infer requests that succeeded (its meaning is fixed in protocol
    # version 1, SPEC 7.8); `ok` and `total` below say it plainly.
    requests: int = 0
    errors: int = 0
    p50_us: float = 0.0
    p90_us: float = 0.0
    p99_us: float = 0.0
    error: str = ""
    device: int = -1   # CUDA device index, -1 for the CPU
    instances: int = 1
    in_flight: int = 0  # requests queued or running on worker instances
    build: str = ""     # background engine build: queued, building, comparing, serving engine ..., failed: ...
    graphs: int = 0       # CUDA graphs captured (cuda_graphs = true), over all instances
    graph_bytes: int = 0  # device memory their pools hold
    # Dynamic batching: "on", "refused: why", or "" (not configured); batches run, their mean
    # and largest size in requests, and percentiles of how long requests queued for one (µs).
    batching: str = ""
    batches: int = 0
    batch_mean: float = 0.0
    batch_max: int = 0
    queue_delay_p50_us: float = 0.0
    queue_delay_p99_us: float = 0.0

    # Read-only views, not wire fields (the codec encodes dataclass fields only).
    @property
    def ok(self) -> int:
        """Infer requests that succeeded."""
        return self.requests

    @property
    def total(self) -> int:
        """Infer requests that reached the model: succeeded plus failed."""
        return self.requests + self.errors


@_wire
class DeviceStatus:
    device: int
    name: str
    free_bytes: int
    total_bytes: int


@_wire
class ErrorInfo:
    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)


# -- requests --------------------------------------------------------------------------------------


class Request:
    """Base of all request payloads; OP is the wire name, REPLY the result type.

    PRIVILEGED ops change what the daemon serves for everyone (stop it, load or
    unload models): the daemon refuses them unless the envelope's "auth" is the
    daemon's admin token (SPEC 5.1, 10.5). This flag is the only gate.
    """

    OP: ClassVar[str]
    REPLY: ClassVar[type]
    PRIVILEGED: ClassVar[bool] = False
    __slots__ = ()


@_wire
class HelloReply:
    client_id: int
    daemon_id: str
    server_version: str
    protocol_version: int
    alignment: int
    max_message_bytes: int
    # > 0 when the daemon cannot watch the client's pid (another PID namespace):
    # the client must then send a heartbeat at this interval to keep its leases.
    heartbeat_interval_s: float = 0.0


@_wire
class Hello(Request):
    OP = "hello"
    REPLY = HelloReply
    client_pid: int
    # psutil.Process().create_time(); with the pid it identifies a process, so a
    # recycled pid is not mistaken for a live client.
    client_start_time: float = 0.0
    client_name: str = ""


@_wire
class ModelsReply:
    models: list[ModelInfo]


@_wire
class ListModels(Request):
    OP = "models"
    REPLY = ModelsReply
    name: Optional[str] = None  # describe one model; all when absent


@_wire
class LeaseReply:
    region: RegionInfo


@_wire
class Lease(Request):
    OP = "lease"
    REPLY = LeaseReply
    client_id: int
    nbytes: int


@_wire
class ReleaseReply:
    # False when a request still uses the region: it is released when that ends.
    released_now: bool = True


@_wire
class Release(Request):
    OP = "release"
    REPLY = ReleaseReply
    client_id: int
    region: str
    token: str


@_wire
class InferReply:
    outputs: list[OutputInfo]
    timing: Timing
    backend: str = ""  # the backend that produced this answer (changes when an engine is swapped in)
    engine: str = ""   # the engine's fingerprint, when an engine produced it


@_wire
class Infer(Request):
    OP = "infer"
    REPLY = InferReply
    client_id: int
    model: str
    region: str
    token: str
    inputs: list[InputRef]
    outputs: list[OutputRef]
    # > 0: a request that has not started within this many milliseconds of the daemon
    # reading it fails with DEADLINE_EXCEEDED instead of running (its answer would be late).
    deadline_ms: int = 0


@_wire
class HeartbeatReply:
    pass


@_wire
class Heartbeat(Request):
    OP = "heartbeat"
    REPLY = HeartbeatReply
    client_id: int


@_wire
class GoodbyeReply:
    released: int = 0


@_wire
class Goodbye(Request):
    """A client leaving: its leases are released at once instead of at reclaim time."""

    OP = "goodbye"
    REPLY = GoodbyeReply
    client_id: int


@_wire
class StatusReply:
    daemon_id: str
    pid: int
    server_version: str
    protocol_version: int
    endpoint: str
    uptime_s: float
    rss_bytes: int
    cpu_user_s: float
    cpu_system_s: float
    clients: int
    regions: int
    region_bytes: int
    models: list[ModelStatus]
    # Page-locked (CUDA-registered) region bytes now, and registrations made so far:
    # each region is registered once, on its first use by a GPU model.
    pinned_bytes: int = 0
    host_registrations: int = 0
    devices: list[DeviceStatus] = field(default_factory=list)
    # The daemon is stopping (draining, SPEC 6.11): it still answers status, but refuses new work.
    stopping: bool = False


@_wire
class Status(Request):
    OP = "status"
    REPLY = StatusReply


@_wire
class LoadReply:
    model: ModelInfo


@_wire
class Load(Request):
    OP = "load"
    REPLY = LoadReply
    PRIVILEGED = True
    name: str
    path: str
    backend: str = "onnxruntime"
    max_batch: int = 0
    device: int = -1     # CUDA device index; -1 for the CPU
    instances: int = 1
    inputs: list[str] = field(default_factory=list)  # TorchScript: "NAME:SHAPE[:DTYPE]" each


@_wire
class UnloadReply:
    pass


@_wire
class Unload(Request):
    OP = "unload"
    REPLY = UnloadReply
    PRIVILEGED = True
    name: str


@_wire
class ShutdownReply:
    pass


@_wire
class Shutdown(Request):
    OP = "shutdown"
    REPLY = ShutdownReply
    PRIVILEGED = True


@_wire
class ReloadReply:
    """What a reload started; models load in the background (their state is "loading")."""

    loading: list[str] = field(default_factory=list)    # new in the configuration
    replacing: list[str] = field(default_factory=list)  # changed (or failed before): reloading
    unloaded: list[str] = field(default_factory=list)   # no longer in the configuration
    unchanged: list[str] = field(default_factory=list)  # serving on, untouched
    # Daemon-wide keys whose new values take effect only after a restart.
    restart_needed: list[str] = field(default_factory=list)


@_wire
class Reload(Request):
    """Re-read the daemon's configuration file and apply its models (SIGHUP does the same)."""

    OP = "reload"
    REPLY = ReloadReply
    PRIVILEGED = True  # it loads and unloads models, like load/unload


REQUEST_TYPES: dict[str, type] = {
    cls.OP: cls
    for cls in (Hello, ListModels, Lease, Release, Infer, Heartbeat, Goodbye, Status, Load,
                Unload, Shutdown, Reload)
}
