"""Tensors of a guarded region move by system calls, never by touching its mapping.

A region lives in a file its client can change: truncate it, or punch a hole in it and fill
/dev/shm so that the hole cannot be refaulted. The daemon's checks before a request catch
what was done before it; what a client does *while* its request runs would make the
backend's next touch of the mapping a SIGBUS, which kills the daemon for every application.
A client running as the daemon's own user could kill the daemon anyway (signals), so its
regions are used in place; a region of any other client (a `group` member, or a peer the OS
does not vouch for) is guarded: its inputs are read with `preadv` into the instance's own
buffer, the backend runs there, and its outputs are written back with `pwritev`. A vanished
page then fails one request (a short read, `ENOSPC`), never the process. The cost is one copy
of the inputs and one of the outputs per request, on the CPU path only: a GPU instance moves
a region by DMA from pages it has pinned, which the kernel keeps while they are pinned.
"""

from __future__ import annotations

import ctypes
import os

import numpy as np

from trtd.protocol import ALIGNMENT
from trtd.protocol.layout import align_up, tensor_nbytes

from trtd.daemon.backends import BackendError, OutputTooLarge, TensorBinding


class RegionChanged(BackendError):
    """The client shrank or hollowed out its region while the request ran."""


class GuardedStaging:
    """One instance's buffer for guarded regions: grown to the largest request, then reused
    (no allocation per request, and stable addresses for the backend's binding cache)."""

    def __init__(self) -> None:
        self._buffer = np.empty(0, np.uint8)
        self._base = 0

    def _room(self, nbytes: int) -> np.ndarray:
        if self._buffer.nbytes < nbytes + ALIGNMENT:
            self._buffer = np.empty(nbytes + ALIGNMENT, np.uint8)
            start = self._buffer.ctypes.data
            self._base = align_up(start, ALIGNMENT) - start  # tensors stay 256-byte aligned
        return self._buffer

    def stage(self, region, inputs: list[TensorBinding], outputs: list[TensorBinding]
              ) -> tuple[list[TensorBinding], list[TensorBinding]]:
        """Bindings into the buffer, with every input read from the region's descriptor."""
        sizes = [align_up(t.nbytes, ALIGNMENT) for t in inputs + outputs]
        buffer = self._room(sum(sizes))
        address = buffer.ctypes.data + self._base
        staged: list[TensorBinding] = []
        for t, size in zip(inputs + outputs, sizes):
            staged.append(TensorBinding(t.name, t.dtype, t.shape, address, t.nbytes))
            address += size
        at = self._base
        for t, size in zip(inputs, sizes):
            offset = t.address - region.address
            got = _read_all(region.fd, memoryview(buffer)[at:at + t.nbytes], offset)
            if got != t.nbytes:
                raise RegionChanged(f"region {region.name!r} shrank while its request ran: input "
                                    f"'{t.name}' at offset {offset} is no longer all there")
            at += size
        return staged[:len(inputs)], staged[len(inputs):]

    def write_back(self, region, outputs: list[TensorBinding], staged: list[TensorBinding],
                   shapes: dict[str, tuple[int, ...]]) -> None:
        buffer = self._buffer
        sizes = []
        for t in outputs:  # every size checked before anything is written
            nbytes = tensor_nbytes(shapes[t.name], t.dtype.itemsize)
            if nbytes > t.nbytes:
                raise OutputTooLarge(t.name, nbytes, t.nbytes)
            sizes.append(nbytes)
        for t, s, nbytes in zip(outputs, staged, sizes):
            at = s.address - buffer.ctypes.data
            try:
                _write_all(region.fd, memoryview(buffer)[at:at + nbytes], t.address - region.address)
            except OSError as exc:  # ENOSPC: a hole punched in it and /dev/shm full
                raise RegionChanged(f"output '{t.name}' could not be written into region "
                                    f"{region.name!r} ({exc.strerror}): the client changed the "
                                    f"region while its request ran") from exc


def _at(address: int, nbytes: int) -> memoryview:
    return memoryview((ctypes.c_uint8 * nbytes).from_address(address)).cast("B")


def _read_all(fd: int, view: memoryview, offset: int) -> int:
    """preadv until view is full or the file ends (Linux moves at most 2 GiB - 4 KiB per call)."""
    done = 0
    while done < len(view):
        got = os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            break
        done += got
    return done


def _write_all(fd: int, view: memoryview, offset: int) -> None:
    done = 0
    while done < len(view):
        put = os.pwritev(fd, [view[done:]], offset + done)
        if put <= 0:
            raise OSError(28, "No space left on device")  # a short write that moved nothing
        done += put


def read_into(region, address: int, t: TensorBinding) -> None:
    """A batch's gather from a guarded region: t's bytes into the daemon's own memory."""
    offset = t.address - region.address
    if _read_all(region.fd, _at(address, t.nbytes), offset) != t.nbytes:
        raise RegionChanged(f"region {region.name!r} shrank while its request ran: input "
                            f"'{t.name}' at offset {offset} is no longer all there")


def write_from(region, t: TensorBinding, address: int, nbytes: int) -> None:
    """A batch's scatter into a guarded region: nbytes of the daemon's memory into t's area."""
    try:
        _write_all(region.fd, _at(address, nbytes), t.address - region.address)
    except OSError as exc:
        raise RegionChanged(f"output '{t.name}' could not be written into region {region.name!r} "
                            f"({exc.strerror}): the client changed the region while its request "
                            f"ran") from exc
