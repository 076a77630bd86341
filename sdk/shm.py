"""Attaching to daemon-owned shared memory without taking ownership of it.

On Python < 3.13, `SharedMemory(name)` registers the block with the process's
resource tracker, which unlinks it when the process exits: a client's normal
exit would destroy the daemon's region, and a client killed between attach and
unregister would too. So on POSIX the SDK maps the block itself (shm_open +
mmap, exactly what SharedMemory does, minus the tracker). On Windows a named
mapping has no tracker and lives while any handle is open.
"""

from __future__ import annotations

import mmap
import os
import sys

import numpy as np

from trtd.protocol.layout import tensor_nbytes


class AttachedRegion:
    """A client's mapping of a region the daemon leased to it."""

    def __init__(self, name: str, nbytes: int, token: str):
        self.name = name
        self.nbytes = nbytes
        self.token = token
        self._map: mmap.mmap | None = _map(name, nbytes)
        # Views derive from this one array, so the mapping has a single buffer export.
        self.bytes: np.ndarray | None = np.frombuffer(self._map, dtype=np.uint8, count=nbytes)

    def array(self, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """A numpy view of a tensor slot inside the region (no copy)."""
        if self.bytes is None:
            raise ValueError(f"region {self.name} is closed")
        nbytes = tensor_nbytes(shape, dtype.itemsize)
        return self.bytes[offset:offset + nbytes].view(dtype).reshape(shape)

    def close(self) -> None:
        """Unmap (never unlink: the daemon owns the name). Views must be dropped first."""
        self.bytes = None
        mapping, self._map = self._map, None
        if mapping is None:
            return
        try:
            mapping.close()
        except BufferError:
            pass  # a caller still holds a view: the mapping goes when the last view does


def _map(name: str, nbytes: int) -> mmap.mmap:
    if sys.platform == "win32":
        return mmap.mmap(-1, nbytes, tagname=name)
    import _posixshmem  # CPython's own module behind multiprocessing.shared_memory

    fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
    try:
        size = os.fstat(fd).st_size
        if size < nbytes:
            raise ValueError(f"region {name} is {size} bytes, expected {nbytes}")
        return mmap.mmap(fd, nbytes)
    finally:
        os.close(fd)  # the mapping keeps the memory; the descriptor is not needed
