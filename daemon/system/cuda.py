"""The daemon's CUDA layer on cuda-python (`cuda.bindings.runtime`, CUDA 12 and 13).

Everything the daemon does with a GPU goes through here: device selection,
streams and events per model instance, page-locking (registering) leased
shared-memory regions once, reusable device buffers, async copies. Every call's
status is checked and turned into a CudaError whose message says what to do.
Nothing here runs at import time: a machine without cuda-python or without a
GPU imports this module fine and only fails when a GPU model is loaded.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Callable, Iterator

try:  # cuda-python is an optional extra: `pip install "trtd[cuda]"`
    from cuda.bindings import runtime as _rt
except ImportError:  # pragma: no cover - depends on the machine
    _rt = None


class CudaError(RuntimeError):
    """A CUDA call failed; `code` is the cudaError_t name (e.g. cudaErrorMemoryAllocation)."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


# Advice for the errors people actually meet, keyed by cudaError_t name.
_ADVICE = {
    "cudaErrorNoDevice": "no CUDA GPU is visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)",
    "cudaErrorInsufficientDriver": (
        "the NVIDIA driver is missing or older than this CUDA runtime needs: install or update "
        "the driver, or install the cuda-python build for your CUDA major version"),
    "cudaErrorInvalidDevice": "that device index does not exist (see nvidia-smi for the GPUs present)",
    "cudaErrorMemoryAllocation": (
        "the GPU is out of memory: unload models, lower max_batch or instances, or use another device"),
    "cudaErrorHostMemoryAlreadyRegistered": "this host memory is already page-locked",
    "cudaErrorDevicesUnavailable": "the GPU is in exclusive-process mode and used by another process",
}


def available() -> bool:
    return _rt is not None


def _require() -> None:
    if _rt is None:
        raise CudaError(
            "cuda-python is not installed, so GPU models cannot load here: pip install \"trtd[cuda]\"",
            "cudaPythonMissing",
        )


def check(result, what: str):
    """Unpack a cuda.bindings result tuple, raising CudaError on a failed status."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        name = getattr(err, "name", str(err))
        _, text = _rt.cudaGetErrorString(err)
        detail = text.decode() if isinstance(text, bytes) else str(text)
        advice = _ADVICE.get(name, "")
        raise CudaError(f"{what} failed: {name} ({detail})" + (f"; {advice}" if advice else ""), name)
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def device_count() -> int:
    _require()
    return check(_rt.cudaGetDeviceCount(), "cudaGetDeviceCount")


def use_device(device: int) -> None:
    """Make `device` current on the calling thread (every thread that touches CUDA calls this)."""
    _require()
    check(_rt.cudaSetDevice(device), f"cudaSetDevice({device})")


def memory_info(device: int) -> tuple[int, int]:
    """(free, total) bytes of `device`."""
    use_device(device)
    return check(_rt.cudaMemGetInfo(), "cudaMemGetInfo")


def versions() -> dict[str, int]:
    _require()
    return {"driver": check(_rt.cudaDriverGetVersion(), "cudaDriverGetVersion"),
            "runtime": check(_rt.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion")}


def device_properties(device: int) -> dict:
    """Name, compute capability and memory of `device`."""
    _require()
    props = check(_rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = props.name
    name = (name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)).strip()
    return {"name": name, "major": int(props.major), "minor": int(props.minor),
            "total_bytes": int(props.totalGlobalMem)}


def device_name(device: int) -> str:
    return device_properties(device)["name"]


def open_device(device: int) -> None:
    """Check that `device` exists and is usable, with a clear error when it is not."""
    count = device_count()
    if not 0 <= device < count:
        raise CudaError(f"device {device} does not exist: this machine has {count} CUDA GPU(s)",
                        "cudaErrorInvalidDevice")
    use_device(device)
    check(_rt.cudaFree(0), f"initialising device {device}")  # creates the primary context now


# -- streams, events, buffers ----------------------------------------------------------------------


class Stream:
    """A non-blocking stream on one device (never synchronises with the legacy default stream)."""

    def __init__(self, device: int):
        use_device(device)
        self.device = device
        self.handle = check(_rt.cudaStreamCreateWithFlags(_rt.cudaStreamNonBlocking),
                            "cudaStreamCreateWithFlags")

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        check(_rt.cudaStreamSynchronize(self.handle), "cudaStreamSynchronize")

    def close(self) -> None:
        if self.handle is not None:
            use_device(self.device)
            check(_rt.cudaStreamDestroy(self.handle), "cudaStreamDestroy")
            self.handle = None


class StreamPool:
    """Streams are kept for the daemon's lifetime and reused by later model instances.

    Libraries cache per-stream state (cuBLAS/cuDNN workspaces in torch, keyed by
    stream): a fresh stream for every load would leak that state on every
    load/unload cycle.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._free: dict[int, list[Stream]] = {}

    def acquire(self, device: int) -> Stream:
        with self._lock:
            free = self._free.get(device)
            if free:
                return free.pop()
        return Stream(device)

    def release(self, stream: Stream) -> None:
        use_device(stream.device)
        stream.synchronize()
        with self._lock:
            self._free.setdefault(stream.device, []).append(stream)

    def close(self) -> None:
        with self._lock:
            streams = [s for free in self._free.values() for s in free]
            self._free.clear()
        for stream in streams:
            stream.close()


class Event:
    def __init__(self, device: int, timing: bool = False, blocking: bool = False):
        """blocking: synchronize() sleeps until the event completes instead of spinning (the
        CPU is free meanwhile; waking costs the thread a scheduler round trip)."""
        use_device(device)
        self.device = device
        flags = _rt.cudaEventDefault if timing else _rt.cudaEventDisableTiming
        if blocking:
            flags |= _rt.cudaEventBlockingSync
        self.handle = check(_rt.cudaEventCreateWithFlags(flags), "cudaEventCreateWithFlags")

    def record(self, stream: Stream) -> None:
        check(_rt.cudaEventRecord(self.handle, stream.handle), "cudaEventRecord")

    def synchronize(self) -> None:
        check(_rt.cudaEventSynchronize(self.handle), "cudaEventSynchronize")

    def elapsed_ms(self, since: "Event") -> float:
        return check(_rt.cudaEventElapsedTime(since.handle, self.handle), "cudaEventElapsedTime")

    def close(self) -> None:
        if self.handle is not None:
            use_device(self.device)
            check(_rt.cudaEventDestroy(self.handle), "cudaEventDestroy")
            self.handle = None


class DeviceBuffer:
    """Device memory allocated once and reused for every request."""

    def __init__(self, device: int, nbytes: int):
        use_device(device)
        self.device = device
        self.nbytes = nbytes
        self.ptr = int(check(_rt.cudaMalloc(max(nbytes, 1)), f"cudaMalloc({nbytes} bytes)"))

    def close(self) -> None:
        if self.ptr:
            use_device(self.device)
            check(_rt.cudaFree(self.ptr), "cudaFree")
            self.ptr = 0


class CaptureGuard:
    """GPU work of every instance runs shared; a CUDA graph capture runs alone.

    While one thread captures, work another thread starts can break the capture or fail itself
    ("operation not permitted when stream is capturing", seen with two instances of one
    TorchScript model: the second instance's first use of a kernel loads its module lazily,
    and cuBLAS sets up its workspace, while the first captures). Captures happen once per
    instance and batch size, so making them wait for running work, and new work wait for them,
    costs nothing in the steady state; each request pays two uncontended lock round trips.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._waiting = 0      # threads waiting to capture: new shared work waits behind them
        self._exclusive = False

    @contextlib.contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                self._cond.notify_all()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[None]:
        """For a thread inside shared(): gives its slot up while it captures, takes it back after."""
        with self._cond:
            self._waiting += 1
            self._shared -= 1
            self._cond.notify_all()
            while self._exclusive or self._shared:
                self._cond.wait()
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._shared += 1
                self._cond.notify_all()


# One per process: captures must be alone among every model's GPU work, not only their own.
capture_guard = CaptureGuard()


class Graph:
    """Work queued on a stream, captured once and replayed with a single launch.

    `record` queues the work (kernels, copies, a TensorRT execute_async_v3) on `stream` while it
    is captured (thread-local mode: other threads may keep using CUDA meanwhile). The graph keeps
    the addresses and parameters the work was queued with: replay it only where they still hold.
    """

    def __init__(self, stream: Stream, record: Callable[[], object]):
        use_device(stream.device)
        self.device = stream.device
        self._graph = None
        self._exec = None
        check(_rt.cudaStreamBeginCapture(stream.handle,
                                         _rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal),
              "cudaStreamBeginCapture")
        try:
            record()
        except BaseException:
            err, graph = _rt.cudaStreamEndCapture(stream.handle)  # end it whatever happened
            if int(err) == 0 and graph is not None:
                _rt.cudaGraphDestroy(graph)
            raise
        self._graph = check(_rt.cudaStreamEndCapture(stream.handle), "cudaStreamEndCapture")
        self._exec = check(_rt.cudaGraphInstantiate(self._graph, 0), "cudaGraphInstantiate")

    def launch(self, stream: Stream) -> None:
        check(_rt.cudaGraphLaunch(self._exec, stream.handle), "cudaGraphLaunch")

    def close(self) -> None:
        use_device(self.device)
        if self._exec is not None:
            check(_rt.cudaGraphExecDestroy(self._exec), "cudaGraphExecDestroy")
            self._exec = None
        if self._graph is not None:
            check(_rt.cudaGraphDestroy(self._graph), "cudaGraphDestroy")
            self._graph = None


def copy_h2d(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    check(_rt.cudaMemcpyAsync(dst, src, nbytes, _rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
                              stream.handle), "cudaMemcpyAsync host->device")


def copy_d2h(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    check(_rt.cudaMemcpyAsync(dst, src, nbytes, _rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                              stream.handle), "cudaMemcpyAsync device->host")


def copy_d2d(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    check(_rt.cudaMemcpyAsync(dst, src, nbytes, _rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice,
                              stream.handle), "cudaMemcpyAsync device->device")


# -- page-locked (registered) host memory ----------------------------------------------------------


@dataclass
class PinStats:
    registrations: int = 0    # cudaHostRegister calls made, ever
    unregistrations: int = 0
    pinned_bytes: int = 0     # bytes registered now


class HostPinning:
    """Registers leased regions with CUDA once, so copies go straight from and to them.

    Portable registration makes the pages usable from every device's context,
    so one registration serves models on any GPU. Regions are registered on
    their first use by a GPU model, not at lease time, so CPU-only clients pay
    nothing.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self._pinned: dict[int, int] = {}  # address -> nbytes
        self.stats = PinStats()

    def is_pinned(self, address: int) -> bool:
        return address in self._pinned

    def pin(self, address: int, nbytes: int, device: int) -> None:
        with self._lock:
            if address in self._pinned:
                return
            use_device(device)
            check(_rt.cudaHostRegister(address, nbytes, _rt.cudaHostRegisterPortable),
                  f"cudaHostRegister({nbytes} bytes)")
            self._pinned[address] = nbytes
            self.stats.registrations += 1
            self.stats.pinned_bytes += nbytes

    def unpin(self, address: int) -> None:
        with self._lock:
            nbytes = self._pinned.get(address)
            if nbytes is None:
                return
            check(_rt.cudaHostUnregister(address), "cudaHostUnregister")
            del self._pinned[address]
            self.stats.unregistrations += 1
            self.stats.pinned_bytes -= nbytes
