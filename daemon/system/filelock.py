"""An exclusive lock on an open file (flock on POSIX, msvcrt on Windows)."""

from __future__ import annotations

import sys


def lock_fd(fd: int, blocking: bool = False) -> None:
    """Lock the file behind fd; OSError when it is held elsewhere and blocking is False."""
    if sys.platform == "win32":
        import msvcrt
        import time

        while True:  # LK_LOCK gives up after ~10 s; a build can hold the lock for minutes
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                if not blocking:
                    raise
                time.sleep(0.5)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
