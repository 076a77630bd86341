"""TensorRT-RTX's runtime cache: the kernels it compiles on the GPU at load (JIT), kept across
restarts so that a daemon's second start does not compile them again.

Keyed as TensorRT-RTX's documentation says a cache is reusable: the GPU's SM version, the
TensorRT-RTX version and the CUDA version (its Python API adds that the GPU model and the OS
must match, and the driver share its major). A blob that does not match is refused by
`IRuntimeCache.deserialize` and the cache starts empty, so the key only keeps caches of
different GPUs or versions from overwriting each other. The file lies beside the engine,
`<engine stem>.<key>.rtcache`, and is written atomically (a reader sees the old file or the
new one, never part of one).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Callable, Protocol

from trtd.daemon.engines.cache import atomic_write

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]+")


class RuntimeCache(Protocol):
    """What is used of tensorrt_rtx.IRuntimeCache."""

    def serialize(self): ...
    def deserialize(self, blob: bytes) -> bool: ...


def runtime_cache_key(compute_capability: str, gpu_name: str, library_version: str,
                      cuda_major: int) -> str:
    """E.g. 'sm86-NVIDIA-GeForce-RTX-3090-rtx1.7.1.116-cuda13'."""
    sm = "sm" + compute_capability.replace(".", "")
    return _UNSAFE.sub("-", f"{sm}-{gpu_name}-rtx{library_version}-cuda{cuda_major}").strip("-")


def runtime_cache_path(engine_path: str | Path, key: str) -> Path:
    engine = Path(engine_path)
    return engine.with_name(f"{engine.stem}.{key}.rtcache")


class RuntimeCacheFile:
    """One engine's runtime cache file: loaded into a fresh IRuntimeCache, saved from it."""

    def __init__(self, path: Path, log: Callable[[str], None] = lambda message: None):
        self.path = path
        self._log = log
        self._saved = b""

    def load_into(self, cache: RuntimeCache) -> bool:
        """True when the file was there and TensorRT-RTX took it (False: it starts empty)."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return False
        except OSError as exc:
            self._log(f"runtime cache {self.path} not read ({exc}); kernels are compiled again")
            return False
        if not cache.deserialize(blob):
            self._log(f"runtime cache {self.path} does not match this GPU or these versions; "
                      f"kernels are compiled again and the file is replaced")
            return False
        self._saved = blob
        return True

    def save_from(self, cache: RuntimeCache) -> bool:
        """Write what `cache` holds now, if it changed; never fails the caller (False: not saved)."""
        try:
            blob = bytes(cache.serialize())
        except Exception as exc:  # the cache is a speed-up: never worth failing a model over
            self._log(f"runtime cache not serialized ({exc})")
            return False
        if not blob or blob == self._saved:
            return False
        try:
            atomic_write(self.path, blob)
        except OSError as exc:
            self._log(f"runtime cache not saved to {self.path} ({exc}); the next start compiles "
                      f"the kernels again")
            return False
        self._saved = blob
        return True
