"""The default transport: one ZeroMQ DEALER socket to the daemon's ROUTER.

ZMQ_IMMEDIATE keeps messages from queueing while no daemon is connected, so "not running" is
detected rather than hidden, and a daemon that closes the connection while a request waits (it
stopped) is noticed within _LIVENESS_S instead of at the request's timeout. For ipc endpoints
the socket file tells more: none means no daemon (or one that is stopping), one this user may
not open means a missing group membership.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import zmq

from trtd.protocol import MAX_REPLY_BYTES
from trtd.protocol.endpoint import EndpointError, ipc_path, validate_endpoint

from .errors import AccessDenied, DaemonNotRunning, DaemonStopping, DaemonTimeout, InvalidEndpoint, TrtdError

_HOW_TO_START = "start one with `trtd serve` (or `trtd demo`), or point TRTD_ENDPOINT at a running one"
# While waiting, look this often whether the daemon is still connected: a daemon that stopped
# closed the connection, and no answer will come (libzmq drops an unread reply with it).
_LIVENESS_S = 0.25


class ZmqTransport:
    def __init__(self, endpoint: str, spin_us: int = 0):
        """spin_us: busy-poll this long for each reply before sleeping: a sleeping thread (and,
        in a VM, its halted virtual CPU) takes tens to hundreds of µs to wake."""
        try:
            self.endpoint = validate_endpoint(endpoint)
        except EndpointError as exc:
            raise InvalidEndpoint(str(exc)) from None
        self._spin_ns = spin_us * 1000
        self._ctx = zmq.Context()
        self.socket = self._ctx.socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.setsockopt(zmq.IMMEDIATE, 1)
        self.socket.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES)
        self.socket.connect(self.endpoint)

    # -- Transport -----------------------------------------------------------------------------------

    def send(self, frame: bytes, op: str, connect_timeout_s: float) -> None:
        # With IMMEDIATE, the socket is writable only while a daemon is connected;
        # the common case (connected) costs one non-blocking check.
        if not self.socket.poll(0, zmq.POLLOUT):
            self._wait_connected(op, connect_timeout_s)
        try:
            self.socket.send(frame, zmq.NOBLOCK)
        except zmq.Again:
            # The connection closed between the check and the send (a daemon stopping now):
            # wait for one as above, which says "not running" when its socket file is gone.
            self._wait_connected(op, connect_timeout_s)
            try:
                self.socket.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                raise DaemonNotRunning(f"the daemon at {self.endpoint} closed the connection while "
                                       f"'{op}' was being sent, twice; {_HOW_TO_START}") from None

    def receive(self, deadline: float, op: str, timeout_s: float) -> bytes:
        if self._spin_ns:
            self._spin_for_reply()
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise self._silence(op, timeout_s)
            # In slices: a reply within one costs a single poll; between slices, a connection
            # the daemon closed (it stopped) ends the wait: no reply can come.
            if not self.socket.poll(int(min(remaining, _LIVENESS_S) * 1000) + 1, zmq.POLLIN):
                if not self.connected():
                    raise self._connection_lost(op)
                continue
            try:
                # Not blocking: a connection that closes right now takes the unread reply
                # with it (ZMQ_IMMEDIATE), and a blocking recv would then wait for ever.
                return self.socket.recv(zmq.NOBLOCK)
            except zmq.Again:
                continue

    def connected(self) -> bool:
        # With IMMEDIATE a DEALER is writable only while it has a connected peer: a daemon
        # that closed its socket (stopped, crashed) leaves it unwritable.
        return bool(self.socket.poll(0, zmq.POLLOUT))

    def close(self, linger_ms: int = 0) -> None:
        if self.socket.closed:
            return
        self.socket.close(linger=linger_ms)
        self._ctx.term()

    # -- waiting -------------------------------------------------------------------------------------

    def _spin_for_reply(self) -> None:
        poll, clock = self.socket.poll, time.perf_counter_ns
        end = clock() + self._spin_ns
        while clock() < end:
            if poll(0, zmq.POLLIN):
                return

    def _wait_connected(self, op: str, timeout_s: float) -> None:
        """Wait for a daemon to accept the connection, looking again between slices whether
        its socket file exists: a daemon that is stopping removes it, and then none will."""
        path = ipc_path(self.endpoint)
        deadline = time.monotonic() + timeout_s
        while True:
            if path is not None:
                _check_socket(path, self.endpoint)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DaemonNotRunning(
                    f"no trtd daemon answers at {self.endpoint} (waited {timeout_s:g}s "
                    f"to connect for '{op}'); {_HOW_TO_START}"
                )
            if self.socket.poll(int(min(remaining, _LIVENESS_S) * 1000) + 1, zmq.POLLOUT):
                return

    # -- what went wrong, in words -------------------------------------------------------------------

    def _connection_lost(self, op: str) -> DaemonStopping:
        return DaemonStopping(
            f"the daemon at {self.endpoint} stopped (it closed the connection) before answering "
            f"'{op}'; the request may or may not have run; retry when a daemon is back "
            f"(`trtd status` tells)", details={"stopping": True, "started": None})

    def _silence(self, op: str, timeout_s: float) -> TrtdError:
        """The error for no reply within timeout_s: say "stopped" when the daemon is gone."""
        path = ipc_path(self.endpoint)
        if not self.connected() or (path is not None and not path.exists()):
            return self._connection_lost(op)
        return DaemonTimeout(
            f"no reply to '{op}' from the daemon at {self.endpoint} within "
            f"{timeout_s:g}s; it may be busy with a long request or hung "
            f"(`trtd status` shows its state); raise the client's timeout if requests "
            f"are expected to take longer"
        )


def _check_socket(path: Path, endpoint: str) -> None:
    """Say why an ipc socket cannot be used, instead of waiting for a connection that never comes."""
    try:
        os.stat(path)
    except FileNotFoundError:
        raise _no_socket_file(endpoint) from None
    except PermissionError:
        raise AccessDenied(f"this user (uid {os.getuid()}) may not enter {path.parent}, the folder of "
                           f"the daemon's socket; ask its administrator to add you to the daemon's "
                           f"group (config key 'group')") from None
    if not os.access(path, os.R_OK | os.W_OK):
        if not os.path.lexists(path):  # removed since the stat above: the daemon stopped
            raise _no_socket_file(endpoint)
        raise AccessDenied(f"this user (uid {os.getuid()}) may not connect to the daemon's socket "
                           f"{path}; ask its administrator to add you to the daemon's group "
                           f"(config key 'group')")


def _no_socket_file(endpoint: str) -> DaemonNotRunning:
    return DaemonNotRunning(f"no trtd daemon at {endpoint} (no socket file); {_HOW_TO_START}")
