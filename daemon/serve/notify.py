"""systemd's sd_notify protocol, spoken directly (no libsystemd, no dependency).

The service manager passes NOTIFY_SOCKET: the path of an AF_UNIX datagram socket, or an
abstract one written with a leading '@'. Each notification is one datagram of
newline-separated KEY=VALUE lines (READY=1, STATUS=..., WATCHDOG=1, STOPPING=1, RELOADING=1).
Without NOTIFY_SOCKET (a plain `trtd serve`, Windows) every call is a no-op.

WATCHDOG_USEC (with WATCHDOG_PID, when set, naming this process) asks for WATCHDOG=1 at least
that often; systemd's docs recommend pinging at half the interval.
"""

from __future__ import annotations

import logging
import os
import socket
import time

log = logging.getLogger("trtd.notify")


def _address(value: str) -> str | bytes:
    if value.startswith("@"):
        return b"\0" + value[1:].encode()  # Linux abstract namespace
    return value


class Notifier:
    def __init__(self, environ: dict | None = None):
        environ = dict(os.environ) if environ is None else environ
        self.socket_path = environ.get("NOTIFY_SOCKET") or None
        self.watchdog_interval_s = _watchdog_interval(environ)
        self._sock: socket.socket | None = None
        self._next_ping = 0.0
        if self.socket_path and not hasattr(socket, "AF_UNIX"):
            self.socket_path = None  # Windows: there is no service manager on this protocol

    @property
    def enabled(self) -> bool:
        return self.socket_path is not None

    def send(self, *lines: str) -> bool:
        """Send one notification; False (and a log line) when it could not be delivered."""
        if not self.socket_path:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(lines).encode(), _address(self.socket_path))
            return True
        except OSError as exc:  # the manager went away: serving matters more than telling it
            log.warning("sd_notify to %s failed: %s", self.socket_path, exc)
            return False

    def ready(self, status: str) -> bool:
        self._next_ping = time.monotonic()
        return self.send("READY=1", f"STATUS={status}", f"MAINPID={os.getpid()}")

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match this to its request.
        # (time.monotonic is CLOCK_MONOTONIC on Linux, the clock systemd means.)
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")

    def watchdog_due(self, now: float | None = None) -> bool:
        """Ping WATCHDOG=1 if half the interval has passed since the last one; True if pinged.

        Called from the socket loop, so a loop that hangs stops pinging and systemd
        restarts the daemon: that is the point of the watchdog.
        """
        if self.watchdog_interval_s is None:
            return False
        now = time.monotonic() if now is None else now
        if now < self._next_ping:
            return False
        self._next_ping = now + self.watchdog_interval_s / 2
        return self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _watchdog_interval(environ: dict) -> float | None:
    usec = environ.get("WATCHDOG_USEC")
    if not usec:
        return None
    pid = environ.get("WATCHDOG_PID")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None  # meant for another process (e.g. a wrapper that exec'd us)
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", usec)
        return None
    return value / 1e6 if value > 0 else None
