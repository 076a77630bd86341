"""The engine cache: one file per fingerprint, written atomically, checked before use.

    <cache>/engines/<fingerprint>.engine   the serialized engine (TensorRT)
    <cache>/engines/<fingerprint>.onnx     or the optimized ONNX model (the ONNX Runtime builder):
                                           each artifact is named for what it is
    <cache>/engines/<fingerprint>.json     metadata (model name, what it depends on, the artifact's
                                           file name), written last, with the artifact's sha256
    <cache>/engines/<fingerprint>.lock     held while that engine is being built
    <cache>/engines/<fingerprint>.<key>.rtcache   TensorRT-RTX's runtime cache of JIT-compiled
                                           kernels for that engine, one per GPU and versions
                                           (engines/runtime_cache.py); removed with the engine

An engine without metadata, or whose bytes do not match the recorded checksum
(a crash mid-write, a full disk, bit rot), is treated as absent and removed,
so it is rebuilt rather than served.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from trtd.daemon.system.filelock import lock_fd

log = logging.getLogger("trtd.engines")

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
ENGINE_SUFFIX = ".engine"  # the default artifact, and what entries written before "file" existed use


class CacheError(RuntimeError):
    pass


@dataclass
class CacheEntry:
    fingerprint: str
    engine_path: Path
    meta_path: Path
    metadata: dict

    @property
    def model(self) -> str:
        return self.metadata.get("model", "")


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)  # readers see the old file or the whole new one, never a part
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


class EngineCache:
    def __init__(self, root: str | Path):
        self.dir = Path(root) / "engines"

    def _paths(self, fp: str, suffix: str = ENGINE_SUFFIX) -> tuple[Path, Path]:
        # By fingerprint alone: the same ONNX and options give the same engine whatever
        # a model is called, so `trtd build` and a daemon share it.
        stem = _SAFE.sub("_", fp)
        return self.dir / f"{stem}{suffix}", self.dir / f"{stem}.json"

    def _artifact(self, meta: Path, metadata: dict) -> Path:
        # Only a bare name from the file: metadata never points outside the cache.
        return self.dir / Path(metadata.get("file") or meta.with_suffix(ENGINE_SUFFIX).name).name

    def _ensure_dir(self) -> None:
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CacheError(f"cannot create the engine cache {self.dir} ({exc.strerror}); set "
                             f"TRTD_CACHE_DIR to a writable folder") from None

    # -- reading -------------------------------------------------------------------------------------

    def lookup(self, fp: str, repair: bool = False, suffix: str = ENGINE_SUFFIX) -> CacheEntry | None:
        """The entry for this fingerprint if it is complete and intact (`suffix`: the artifact's).

        A broken entry is removed only with repair=True, which callers pass while they
        hold the build lock: without it, a writer between its two writes would lose its engine.
        """
        engine, meta = self._paths(fp, suffix)
        if not engine.exists() and not meta.exists():
            return None
        problem = self._check(engine, meta)
        if problem:
            if repair:
                log.warning("engine cache entry %s is unusable (%s); removing it so it is rebuilt",
                            engine.name, problem)
                self._remove(engine, meta)
            return None
        return CacheEntry(fp, engine, meta, json.loads(meta.read_text()))

    def read(self, entry: CacheEntry) -> bytes:
        data = entry.engine_path.read_bytes()
        if hashlib.sha256(data).hexdigest() != entry.metadata.get("sha256"):
            self._remove(entry.engine_path, entry.meta_path)
            raise CacheError(f"{entry.engine_path} changed on disk since it was checked; removed")
        return data

    @staticmethod
    def _check(engine: Path, meta: Path) -> str:
        if not meta.exists():
            return "no metadata: the write did not finish"
        if not engine.exists():
            return "metadata without an engine file"
        try:
            metadata = json.loads(meta.read_text())
        except (OSError, ValueError) as exc:
            return f"unreadable metadata ({exc})"
        digest = hashlib.sha256()
        with open(engine, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
        if digest.hexdigest() != metadata.get("sha256"):
            return "checksum mismatch: truncated or corrupted"
        return ""

    def entries(self) -> list[CacheEntry]:
        if not self.dir.is_dir():
            return []
        found = []
        for meta in sorted(self.dir.glob("*.json")):
            try:
                metadata = json.loads(meta.read_text())
            except (OSError, ValueError):
                metadata = {}
            found.append(CacheEntry(metadata.get("fingerprint", "?"), self._artifact(meta, metadata),
                                    meta, metadata))
        return found

    def find_compatible(self, family: str, target: str) -> CacheEntry | None:
        """An intact TensorRT-RTX entry of `family` whose targets include `target` ("sm86"): an
        engine built elsewhere for a wider set of GPUs serves this one without a build."""
        found = [e for e in self.entries() if e.metadata.get("family") == family
                 and target in e.metadata.get("targets", ())]
        for entry in sorted(found, key=lambda e: e.metadata.get("stored_at", ""), reverse=True):
            if not self._check(entry.engine_path, entry.meta_path):
                return entry
        return None

    def verify(self) -> list[tuple[CacheEntry, str]]:
        """Every entry with "" when intact or the problem found."""
        return [(e, self._check(e.engine_path, e.meta_path)) for e in self.entries()]

    # -- writing -------------------------------------------------------------------------------------

    def store(self, model: str, fp: str, engine_bytes: bytes, metadata: dict,
              suffix: str = ENGINE_SUFFIX) -> CacheEntry:
        self._ensure_dir()
        engine, meta = self._paths(fp, suffix)
        record = dict(metadata, model=model, fingerprint=fp, bytes=len(engine_bytes), file=engine.name,
                      sha256=hashlib.sha256(engine_bytes).hexdigest(),
                      stored_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        try:
            atomic_write(engine, engine_bytes)
            # Metadata last: its presence says the engine file is complete.
            atomic_write(meta, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
        except OSError as exc:
            raise CacheError(f"cannot write the engine to {self.dir} ({exc.strerror or exc}); free "
                             f"space or set TRTD_CACHE_DIR to a writable folder") from None
        return CacheEntry(fp, engine, meta, record)

    @contextmanager
    def building(self, fp: str, wait: bool = True) -> Iterator[None]:
        """Held while one process builds this engine: another daemon waits, then finds it cached."""
        self._ensure_dir()
        fd = os.open(self.dir / f"{fp}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                lock_fd(fd, blocking=wait)
            except OSError:
                raise CacheError(f"engine {fp} is being built by another process") from None
            yield
        finally:
            os.close(fd)

    def remove(self, entry: CacheEntry) -> None:
        self._remove(entry.engine_path, entry.meta_path)

    @staticmethod
    def _remove(*paths: Path) -> None:
        for path in paths:
            try:
                path.unlink()
            except FileNotFoundError:
                pass
            if path.suffix == ".json":  # the engine's runtime caches go with it
                for runtime_cache in path.parent.glob(f"{path.stem}.*.rtcache"):
                    runtime_cache.unlink(missing_ok=True)

    def clear(self) -> int:
        entries = self.entries()
        for entry in entries:
            self.remove(entry)
        patterns = ("*.engine", "*.onnx", "*.rtcache", ".*.tmp")  # also those without metadata
        for stray in [p for pattern in patterns for p in self.dir.glob(pattern)] if self.dir.is_dir() else []:
            self._remove(stray)
        return len(entries)
