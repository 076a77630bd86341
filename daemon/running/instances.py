"""Model instances: where one request's tensors move and the backend runs.

A host instance hands the backend the region's own addresses (ONNX Runtime on
the CPU reads inputs and writes outputs in place), except for a guarded region (another
user's), whose tensors move by preadv/pwritev (guarded_io.py). A CUDA instance owns a
stream, events and device buffers sized from the model's I/O specs, allocated
once and reused: inputs go host->device straight from the (page-locked)
region, the backend runs on the stream, outputs go device->host straight into
the region, and an event says when it is done. No host staging copy anywhere.
"""

from __future__ import annotations

import ctypes
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence, Union

import numpy as np

from trtd.protocol import ALIGNMENT
from trtd.protocol.layout import tensor_nbytes

from trtd.daemon.system import cuda
from trtd.daemon.backends import Backend, OutputTooLarge, TensorBinding
from trtd.daemon.running import guarded_io
from trtd.daemon.running.guarded_io import GuardedStaging

if TYPE_CHECKING:
    from trtd.daemon.core.regions import Region


@dataclass(slots=True)
class RunTiming:
    h2d_us: int = 0
    compute_us: int = 0
    d2h_us: int = 0


@dataclass(slots=True)
class BatchPart:
    """One request's share of a batch: its region and its tensors (inputs and outputs in the
    same order for every part), `rows` rows starting at row `first` of the batch."""

    region: Region
    inputs: list[TensorBinding]
    outputs: list[TensorBinding]
    rows: int
    first: int = 0


def _row_bytes(t: TensorBinding, rows: int) -> int:
    return t.nbytes // rows if rows else 0


def batch_shape(t: TensorBinding, rows: int) -> tuple[int, ...]:
    return (rows, *t.shape[1:]) if t.shape is not None else None


def _scatter_sizes(parts: Sequence[BatchPart], shapes: dict, failed: dict[int, Exception]) -> list[list[int]]:
    """Per part, the bytes of each output's rows, checked against its area before any copy.
    A part whose area is too small (the model's output disagreed with the shape predicted when
    the request was bound) fails alone, with its own sizes: recorded in `failed`."""
    sizes = []
    for k, part in enumerate(parts):
        row = []
        for t in part.outputs:
            shape = shapes[t.name]
            nbytes = tensor_nbytes((part.rows, *shape[1:]), t.dtype.itemsize)
            if nbytes > t.nbytes and k not in failed:
                failed[k] = OutputTooLarge(t.name, nbytes, t.nbytes)
            row.append(nbytes)
        sizes.append(row)
    return sizes


# A part's outcome: its output shapes, or why that request alone failed.
PartResult = Union[dict[str, tuple[int, ...]], Exception]


def _part_shapes(parts: Sequence[BatchPart], shapes: dict,
                 failed: dict[int, Exception] | None = None) -> list[PartResult]:
    """Per part, its output shapes, or the error that failed it alone (a guarded region its
    client changed mid-run: the batch's other requests keep their answers)."""
    failed = failed or {}
    return [failed[k] if k in failed else {t.name: (part.rows, *shapes[t.name][1:]) for t in part.outputs}
            for k, part in enumerate(parts)]


class _HostBuffers:
    """Preallocated, aligned host memory per tensor name for gathered batches (grown, never
    shrunk: a model's largest batch is bounded by max_batch)."""

    def __init__(self) -> None:
        self._arrays: dict[str, tuple[np.ndarray, int]] = {}

    def get(self, name: str, nbytes: int) -> int:
        held = self._arrays.get(name)
        if held is None or held[0].nbytes - ALIGNMENT < nbytes:
            array = np.zeros(nbytes + ALIGNMENT, np.uint8)
            address = array.ctypes.data
            self._arrays[name] = held = (array, address + (-address) % ALIGNMENT)
        return held[1]

    def clear(self) -> None:
        self._arrays.clear()


class HostInstance:
    def __init__(self, backend: Backend):
        self.backend = backend
        self._staging = GuardedStaging()
        self._batch = _HostBuffers()

    def run_batch(self, parts: Sequence[BatchPart], run_rows: int):
        """Several requests as one run: every part's input rows gathered into one host buffer
        per input (one copy), one backend call, each part's output rows copied into its area.
        A guarded region that its client shrank or hollowed out fails that part only (the
        input that could not be read runs as zeros; rows are independent), as does an output
        area too small for what the model returned.
        run_rows >= the parts' rows: rows beyond theirs (padding to a preferred size) hold
        whatever the buffer held; rows are independent, so they change nobody's result."""
        start = time.perf_counter_ns()
        first = parts[0]
        failed: dict[int, Exception] = {}  # part -> why: a guarded region changed under it
        inputs = []
        for i, t in enumerate(first.inputs):
            row = _row_bytes(t, first.rows)
            base = self._batch.get("in:" + t.name, row * run_rows)
            for k, part in enumerate(parts):
                src = part.inputs[i]
                if k in failed:
                    continue
                if part.region.guarded:  # another user's region: by syscall, not the mapping
                    try:
                        guarded_io.read_into(part.region, base + part.first * row, src)
                    except guarded_io.RegionChanged as exc:  # that request fails, not the batch
                        failed[k] = exc
                        ctypes.memset(base + part.first * row, 0, src.nbytes)
                else:
                    ctypes.memmove(base + part.first * row, src.address, src.nbytes)
            inputs.append(TensorBinding(t.name, t.dtype, batch_shape(t, run_rows), base, row * run_rows))
        outputs = []
        for t in first.outputs:
            row = _row_bytes(t, first.rows)
            base = self._batch.get("out:" + t.name, row * run_rows)
            outputs.append(TensorBinding(t.name, t.dtype, batch_shape(t, run_rows), base, row * run_rows))
        shapes = self.backend.enqueue(None, inputs, outputs)
        sizes = _scatter_sizes(parts, shapes, failed)
        for j, t in enumerate(outputs):
            row = tensor_nbytes((1, *shapes[t.name][1:]), t.dtype.itemsize)
            for k, (part, part_sizes) in enumerate(zip(parts, sizes)):
                if k in failed:
                    continue
                if part.region.guarded:
                    try:
                        guarded_io.write_from(part.region, part.outputs[j], t.address + part.first * row,
                                              part_sizes[j])
                    except guarded_io.RegionChanged as exc:
                        failed[k] = exc
                else:
                    ctypes.memmove(part.outputs[j].address, t.address + part.first * row, part_sizes[j])
        timing = RunTiming(compute_us=(time.perf_counter_ns() - start) // 1000)
        return _part_shapes(parts, shapes, failed), timing

    def run(self, region, inputs: list[TensorBinding], outputs: list[TensorBinding]):
        start = time.perf_counter_ns()
        if region.guarded:  # another user's region: never touched through its mapping
            staged_inputs, staged_outputs = self._staging.stage(region, inputs, outputs)
            shapes = self.backend.enqueue(None, staged_inputs, staged_outputs)
            self._staging.write_back(region, outputs, staged_outputs, shapes)
        else:
            shapes = self.backend.enqueue(None, inputs, outputs)
        return shapes, RunTiming(compute_us=(time.perf_counter_ns() - start) // 1000)

    def close(self) -> None:
        self._batch.clear()


class CudaInstance:
    def __init__(self, backend: Backend, pinning: cuda.HostPinning, streams: cuda.StreamPool,
                 gpu_wait: str = "spin"):
        self.backend = backend
        self.device = backend.device
        self._pinning = pinning
        self._streams = streams
        self.stream = streams.acquire(self.device)
        # Four timing events give the H2D / compute / D2H split of every request; the thread
        # waits on the last one, spinning or sleeping as the model's gpu_wait says.
        self._marks = [cuda.Event(self.device, timing=True, blocking=(i == 3 and gpu_wait == "block"))
                       for i in range(4)]
        self._buffers: dict[str, cuda.DeviceBuffer] = {}
        self._limits = {spec.name: spec.max_nbytes for spec in list(backend.inputs) + list(backend.outputs)}
        try:
            for spec in list(backend.inputs) + list(backend.outputs):
                if spec.max_nbytes >= 0:
                    self._buffers[spec.name] = cuda.DeviceBuffer(self.device, spec.max_nbytes)
        except BaseException:
            self.close()  # what was made so far (stream, events, buffers) goes back
            raise

    def _buffer(self, name: str, nbytes: int) -> cuda.DeviceBuffer:
        limit = self._limits.get(name, -1)
        if limit >= 0:
            nbytes = min(nbytes, limit)  # a client's large area never grows a bounded buffer
        buf = self._buffers.get(name)
        if buf is None or buf.nbytes < nbytes:
            # Only for tensors without a known largest size: grow (new first), then reuse.
            grown = cuda.DeviceBuffer(self.device, nbytes)
            if buf is not None:
                buf.close()
            buf = self._buffers[name] = grown
        return buf

    def run(self, region, inputs: list[TensorBinding], outputs: list[TensorBinding]):
        cuda.use_device(self.device)
        self._pinning.pin(region.address, region.nbytes, self.device)  # once per region
        try:
            with cuda.capture_guard.shared():  # a CUDA graph capture elsewhere runs alone
                return self._run(inputs, outputs)
        except BaseException:
            # Copies may still be queued: let them finish before the error reply lets the
            # client rewrite or release the region (and before its memory is unregistered).
            try:
                self.stream.synchronize()
            except cuda.CudaError:
                pass
            raise

    def _run(self, inputs: list[TensorBinding], outputs: list[TensorBinding]):
        stream, (start, copied_in, computed, copied_out) = self.stream, self._marks
        start.record(stream)
        device_inputs = []
        for t in inputs:
            buf = self._buffer(t.name, t.nbytes)
            cuda.copy_h2d(buf.ptr, t.address, t.nbytes, stream)
            device_inputs.append(TensorBinding(t.name, t.dtype, t.shape, buf.ptr, t.nbytes))
        copied_in.record(stream)
        device_outputs = []
        for t in outputs:
            buf = self._buffer(t.name, t.nbytes)
            device_outputs.append(TensorBinding(t.name, t.dtype, t.shape, buf.ptr, min(buf.nbytes, t.nbytes)))
        shapes = self.backend.enqueue(stream, device_inputs, device_outputs)
        computed.record(stream)
        sizes = []
        for t in outputs:  # every size checked before any copy is queued
            nbytes = tensor_nbytes(shapes[t.name], t.dtype.itemsize)
            if nbytes > t.nbytes:
                raise OutputTooLarge(t.name, nbytes, t.nbytes)
            sizes.append(nbytes)
        for t, d, nbytes in zip(outputs, device_outputs, sizes):
            cuda.copy_d2h(t.address, d.address, nbytes, stream)
        copied_out.record(stream)
        copied_out.synchronize()
        timing = RunTiming(h2d_us=int(copied_in.elapsed_ms(start) * 1000),
                           compute_us=int(computed.elapsed_ms(copied_in) * 1000),
                           d2h_us=int(copied_out.elapsed_ms(computed) * 1000))
        return shapes, timing

    def run_batch(self, parts: Sequence[BatchPart], run_rows: int):
        """Several requests as one run: each part's input rows go host->device straight from its
        (pinned) region into its rows of the instance's device buffer, one backend call on the
        batch (a CUDA graph replay where run_rows is a captured size), and each part's output
        rows go device->host straight into its area. No host staging copy."""
        cuda.use_device(self.device)
        for part in parts:
            self._pinning.pin(part.region.address, part.region.nbytes, self.device)  # once per region
        try:
            with cuda.capture_guard.shared():
                return self._run_batch(parts, run_rows)
        except BaseException:
            try:
                self.stream.synchronize()  # copies may be queued: finish before regions are reused
            except cuda.CudaError:
                pass
            raise

    def _run_batch(self, parts: Sequence[BatchPart], run_rows: int):
        stream, (start, copied_in, computed, copied_out) = self.stream, self._marks
        first = parts[0]
        start.record(stream)
        inputs = []
        for i, t in enumerate(first.inputs):
            row = _row_bytes(t, first.rows)
            buf = self._buffer(t.name, row * run_rows)
            for part in parts:
                src = part.inputs[i]
                cuda.copy_h2d(buf.ptr + part.first * row, src.address, src.nbytes, stream)
            inputs.append(TensorBinding(t.name, t.dtype, batch_shape(t, run_rows), buf.ptr, row * run_rows))
        copied_in.record(stream)
        outputs = []
        for t in first.outputs:
            row = _row_bytes(t, first.rows)
            buf = self._buffer(t.name, row * run_rows)
            outputs.append(TensorBinding(t.name, t.dtype, batch_shape(t, run_rows), buf.ptr,
                                         min(buf.nbytes, row * run_rows)))
        shapes = self.backend.enqueue(stream, inputs, outputs)
        computed.record(stream)
        failed: dict[int, Exception] = {}
        sizes = _scatter_sizes(parts, shapes, failed)  # every size checked before any copy is queued
        for j, t in enumerate(outputs):
            row = tensor_nbytes((1, *shapes[t.name][1:]), t.dtype.itemsize)
            for k, (part, part_sizes) in enumerate(zip(parts, sizes)):
                if k not in failed:
                    cuda.copy_d2h(part.outputs[j].address, t.address + part.first * row, part_sizes[j], stream)
        copied_out.record(stream)
        copied_out.synchronize()
        timing = RunTiming(h2d_us=int(copied_in.elapsed_ms(start) * 1000),
                           compute_us=int(computed.elapsed_ms(copied_in) * 1000),
                           d2h_us=int(copied_out.elapsed_ms(computed) * 1000))
        return _part_shapes(parts, shapes, failed), timing

    def close(self) -> None:
        cuda.use_device(self.device)
        self.stream.synchronize()
        for buf in self._buffers.values():
            buf.close()
        self._buffers.clear()
        for event in getattr(self, "_marks", []):
            event.close()
        self._streams.release(self.stream)


Instance = Union[HostInstance, CudaInstance]


def make_instances(backend: Backend, count: int, pinning: cuda.HostPinning,
                   streams: cuda.StreamPool, gpu_wait: str = "spin") -> list[Instance]:
    if backend.device is None:
        return [HostInstance(backend) for _ in range(count)]
    instances: list[Instance] = []
    try:
        for _ in range(count):
            instances.append(CudaInstance(backend, pinning, streams, gpu_wait))
    except BaseException:
        for instance in instances:
            instance.close()
        raise
    return instances
