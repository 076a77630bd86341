"""One daemon per endpoint: a lock file, a name prefix, and start-up clean-up.

Every region name starts with a prefix derived from the (normalised) endpoint,
so the daemon that holds the endpoint's lock knows that any segment with that
prefix was left by a dead predecessor (a live one would still hold the lock)
and removes exactly those, never another live daemon's regions. For ipc://
endpoints the lock sits beside the socket, so two daemons can never share a
socket path whatever their runtime directories are.
"""

from __future__ import annotations

import hashlib
import logging
import os
import secrets
import stat
import sys
from pathlib import Path

from trtd.protocol.endpoint import ipc_path

from trtd.daemon.system.filelock import lock_fd

log = logging.getLogger("trtd.instance")

SHM_DIR = Path("/dev/shm")


class AlreadyRunning(RuntimeError):
    pass


class UnsafeDirectory(RuntimeError):
    pass


def normalize_endpoint(endpoint: str) -> str:
    """ipc://a//b/../c.sock and ipc:///a/c.sock name one socket: compare and hash one spelling."""
    path = ipc_path(endpoint)
    return f"ipc://{os.path.normpath(os.path.abspath(path))}" if path is not None else endpoint


def endpoint_prefix(endpoint: str) -> str:
    # Short: macOS limits shared-memory names to 31 characters.
    digest = hashlib.sha256(normalize_endpoint(endpoint).encode()).hexdigest()[:8]
    return f"trtd_{digest}_"


def private_directory(path: Path) -> None:
    """Create `path` 0700, or accept an existing one only if it is ours and no one else can write it.

    A shared /tmp lets another user pre-create the folder (or plant symlinks in
    it) to capture the socket or have our lock file truncate their choice of file.
    """
    if sys.platform == "win32":
        path.mkdir(parents=True, exist_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    st = path.lstat()
    # Others' write access is what lets them plant symlinks or swap the socket.
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        raise UnsafeDirectory(
            f"{path} must be a directory owned by uid {os.getuid()} and writable by no one else "
            f"(found uid "
            f"{st.st_uid}, mode {stat.filemode(st.st_mode)}); remove it or set TRTD_RUNTIME_DIR / "
            f"--endpoint to a private folder"
        )


class InstanceLock:
    """Holds the endpoint's lock file for the daemon's lifetime (flock / msvcrt lock)."""

    def __init__(self, runtime_dir: Path, endpoint: str):
        self.endpoint = normalize_endpoint(endpoint)
        self.prefix = endpoint_prefix(endpoint)
        # A fresh component per start, so names never repeat across restarts and
        # a client of a dead daemon can never attach to a new daemon's region by name.
        self.region_prefix = self.prefix + secrets.token_hex(4) + "_"
        socket_path = ipc_path(self.endpoint)
        self.path = (Path(str(socket_path) + ".lock") if socket_path is not None
                     else runtime_dir / f"{self.prefix.rstrip('_')}.lock")
        self._fd: int | None = None

    def acquire(self) -> None:
        private_directory(self.path.parent)
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.path, flags, 0o600)
        try:
            lock_fd(fd)
        except OSError:
            os.lseek(fd, 0, os.SEEK_SET)  # the holder's pid; the lock itself is elsewhere (filelock.py)
            holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise AlreadyRunning(
                f"another trtd daemon (pid {holder}) is serving {self.endpoint}; "
                f"stop it (trtd status shows it) or choose another --endpoint"
            ) from None
        os.ftruncate(fd, 0)
        # lseek + write, not os.pwrite: Windows has no pwrite (the start failed there on it).
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd

    def remove_predecessor_regions(self) -> list[str]:
        """Unlink segments a dead daemon of this endpoint left behind; returns their names.

        Only our own regular files: anything else with the prefix (another user's
        file in the sticky /dev/shm) is logged and left alone.
        """
        if self._fd is None:
            raise RuntimeError("acquire the lock first")
        if sys.platform == "win32" or not SHM_DIR.is_dir():  # Windows mappings die with their last handle
            return []
        removed = []
        for entry in SHM_DIR.iterdir():
            if not entry.name.startswith(self.prefix):
                continue
            try:
                st = entry.lstat()
                if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
                    log.warning("left %s alone: not a region of ours (uid %d)", entry, st.st_uid)
                    continue
                entry.unlink()
                removed.append(entry.name)
            except OSError as exc:
                log.warning("could not remove %s: %s", entry, exc)
        if removed:
            log.warning("removed %d region(s) left by a dead predecessor: %s",
                        len(removed), ", ".join(removed))
        return removed

    def release(self) -> None:
        # The file stays: unlinking it would let a starting daemon lock an
        # orphaned inode while a third one creates a new file and locks that.
        if self._fd is not None:
            os.close(self._fd)  # closing drops the lock
            self._fd = None
