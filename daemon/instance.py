"""One daemon per endpoint: a lock file, a name prefix, and start-up clean-up.

Every region name starts with a prefix derived from the endpoint, so the
daemon that holds the endpoint's lock knows that any segment with that prefix
was left by a dead predecessor (a live one would still hold the lock) and
removes exactly those, never another live daemon's regions.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import sys
from pathlib import Path

log = logging.getLogger("trtd.instance")

SHM_DIR = Path("/dev/shm")


class AlreadyRunning(RuntimeError):
    pass


def endpoint_prefix(endpoint: str) -> str:
    # Short: macOS limits shared-memory names to 31 characters.
    return "trtd_" + hashlib.sha256(endpoint.encode()).hexdigest()[:8] + "_"


class InstanceLock:
    """Holds <runtime_dir>/<prefix>.lock for the daemon's lifetime (flock / msvcrt lock)."""

    def __init__(self, runtime_dir: Path, endpoint: str):
        self.endpoint = endpoint
        self.prefix = endpoint_prefix(endpoint)
        # A fresh component per start, so names never repeat across restarts and
        # a client of a dead daemon can never attach to a new daemon's region by name.
        self.region_prefix = self.prefix + secrets.token_hex(2) + "_"
        self.path = runtime_dir / f"{self.prefix.rstrip('_')}.lock"
        self._file = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        f = open(self.path, "a+")
        try:
            _lock(f)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise AlreadyRunning(
                f"another trtd daemon (pid {holder}) is serving {self.endpoint}; "
                f"stop it (trtd status shows it) or choose another --endpoint"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        self._file = f

    def remove_predecessor_regions(self) -> list[str]:
        """Unlink segments a dead daemon of this endpoint left behind; returns their names."""
        if self._file is None:
            raise RuntimeError("acquire the lock first")
        if not SHM_DIR.is_dir():  # Windows mappings die with their last handle
            return []
        removed = []
        for entry in SHM_DIR.iterdir():
            if entry.name.startswith(self.prefix):
                try:
                    entry.unlink()
                    removed.append(entry.name)
                except FileNotFoundError:
                    pass
        if removed:
            log.warning("removed %d region(s) left by a dead predecessor: %s",
                        len(removed), ", ".join(removed))
        return removed

    def release(self) -> None:
        # The file stays: unlinking it would let a starting daemon lock an
        # orphaned inode while a third one creates a new file and locks that.
        if self._file is not None:
            self._file.close()  # closing drops the lock
            self._file = None


def _lock(f) -> None:
    if sys.platform == "win32":
        import msvcrt

        msvcrt.locking(f.fileno(), msvcrt.LK_NBLCK, 1)
    else:
        import fcntl

        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
