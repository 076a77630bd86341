"""An exclusive lock on an open file (flock on POSIX, msvcrt on Windows).

Kept rather than the `filelock` or `portalocker` packages: the endpoint lock opens its file
itself (O_NOFOLLOW, 0600, in a directory checked to be private), reads the holder's pid from
it when the lock is taken, writes its own once it holds it, and never unlinks it (a starting
daemon could lock an orphaned inode while a third creates a new file); the engine cache waits
on a per-fingerprint file. filelock opens (and on Windows, by default, unlinks) the file its
own way and keeps the descriptor private; portalocker locks an open file as this does, with the
same two system calls. Either would add a dependency and no correctness.

On Windows a locked byte cannot be read by another process: the lock is taken on a byte far
past the data (WINDOWS_LOCK_OFFSET; locking beyond the end of a file is allowed), so a daemon
that loses the race can still read the holder's pid at offset 0.
"""

from __future__ import annotations

import os
import sys

WINDOWS_LOCK_OFFSET = 1 << 20


def lock_fd(fd: int, blocking: bool = False) -> None:
    """Lock the file behind fd; OSError when it is held elsewhere and blocking is False."""
    if sys.platform == "win32":
        import msvcrt
        import time

        while True:  # LK_LOCK gives up after ~10 s; a build can hold the lock for minutes
            try:
                os.lseek(fd, WINDOWS_LOCK_OFFSET, os.SEEK_SET)  # msvcrt locks from the position
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return
            except OSError:
                if not blocking:
                    raise
                time.sleep(0.5)
    else:
        import fcntl

        fcntl.flock(fd, fcntl.LOCK_EX if blocking else fcntl.LOCK_EX | fcntl.LOCK_NB)
