"""Attaching to daemon-owned shared memory without taking ownership of it.

On Python < 3.13, SharedMemory(name) registers the block with this process's
resource tracker, which unlinks it when the process exits: a client's normal
exit would destroy the daemon's region. 3.13 has track=False; before that we
unregister right after attaching.
"""

from __future__ import annotations

import sys
from multiprocessing import shared_memory

import numpy as np


class AttachedRegion:
    """A client's mapping of a region the daemon leased to it."""

    def __init__(self, name: str, nbytes: int, token: str):
        self.name = name
        self.nbytes = nbytes
        self.token = token
        self._shm = _attach(name)
        if self._shm.size < nbytes:
            self._shm.close()
            raise ValueError(f"region {name} is {self._shm.size} bytes, expected {nbytes}")
        self.bytes = np.frombuffer(self._shm.buf, dtype=np.uint8, count=nbytes)

    def array(self, offset: int, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
        """A numpy view of a tensor slot inside the region (no copy)."""
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        # Views derive from one base array, so the mapping has a single buffer export.
        return self.bytes[offset:offset + nbytes].view(dtype).reshape(shape)

    def __del__(self) -> None:
        # Drop our view before SharedMemory's own finalizer tries to unmap.
        if getattr(self, "_shm", None) is not None:
            self.close()

    def close(self) -> None:
        """Unmap (never unlink: the daemon owns the name). Views must be dropped first."""
        self.bytes = None
        shm, self._shm = self._shm, None
        if shm is None:
            return
        try:
            shm.close()
        except BufferError:
            # A caller still holds a view into the region: let the mapping go when
            # the last view does, and keep SharedMemory.__del__ from retrying close().
            shm._buf = None
            shm._mmap = None


def _attach(name: str) -> shared_memory.SharedMemory:
    if sys.version_info >= (3, 13):
        return shared_memory.SharedMemory(name=name, track=False)
    shm = shared_memory.SharedMemory(name=name)
    if sys.platform != "win32":  # Windows has no resource tracker for shared memory
        from multiprocessing import resource_tracker

        resource_tracker.unregister(shm._name, "shared_memory")
    return shm
