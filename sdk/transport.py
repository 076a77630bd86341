"""One DEALER connection to the daemon: request ids, timeouts, thread safety.

Every request carries an id and the reply echoes it, so a reply that arrives
after its request timed out is recognised and dropped instead of being taken
for the answer to the next request. ZMQ_IMMEDIATE keeps messages from queueing
while no daemon is connected, so "not running" is detected rather than hidden,
and a daemon that closes the connection while a request waits (it stopped) is
noticed within _LIVENESS_S instead of at the request's timeout.
"""

from __future__ import annotations

import itertools
import os
import threading
import time

import zmq

from trtd.protocol import (MAX_REPLY_BYTES, MAX_REQUEST_BYTES, ErrorCode, ProtocolError, Request,
                           decode_reply, encode_request)
from trtd.protocol.endpoint import ipc_path

from .errors import (AccessDenied, DaemonNotRunning, DaemonStopping, DaemonTimeout, InvalidInput,
                     ProtocolMismatch, TrtdError, error_from_reply)

_HOW_TO_START = "start one with `trtd serve` (or `trtd demo`), or point TRTD_ENDPOINT at a running one"
# While waiting, look this often whether the daemon is still connected: a daemon that stopped
# closed the connection, and no answer will come (libzmq drops an unread reply with it).
_LIVENESS_S = 0.25


class Connection:
    def __init__(self, endpoint: str, connect_timeout_s: float, spin_us: int = 0, auth: str = ""):
        self.endpoint = endpoint
        # Sent in every request's envelope unless a call passes another (TCP connection token).
        self.auth = auth
        # Busy-poll this long for a reply before sleeping: a sleeping thread (and,
        # in a VM, its halted virtual CPU) takes tens to hundreds of µs to wake.
        self._spin_ns = spin_us * 1000
        self._connect_timeout_s = connect_timeout_s
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._ctx = zmq.Context()
        self._socket = self._open()

    def _open(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES)
        sock.connect(self.endpoint)
        return sock

    def call(self, request: Request, timeout_s: float, auth: str | None = None):
        """Send one request and wait for its reply's result; raises TrtdError subclasses."""
        with self._lock:
            request_id = next(self._ids)
            data = encode_request(request, request_id, self.auth if auth is None else auth)
            if len(data) > MAX_REQUEST_BYTES:
                # libzmq would drop the connection rather than deliver it: refuse here, clearly.
                raise InvalidInput(f"'{request.OP}' request is {len(data)} bytes, over the protocol's "
                                   f"limit of {MAX_REQUEST_BYTES} (too many tensors or too long names?)")
            self._send(data, request.OP,
                       min(self._connect_timeout_s, timeout_s))
            deadline = time.monotonic() + timeout_s
            if self._spin_ns:
                self._spin_for_reply()
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._silence(request.OP, timeout_s)
                # In slices: a reply within one costs a single poll, as before; between slices,
                # a connection the daemon closed (it stopped) ends the wait: no reply can come.
                if not self._socket.poll(int(min(remaining, _LIVENESS_S) * 1000) + 1, zmq.POLLIN):
                    if not self._connected():
                        raise self._connection_lost(request.OP)
                    continue
                try:
                    # Not blocking: a connection that closes right now takes the unread reply
                    # with it (ZMQ_IMMEDIATE), and a blocking recv would then wait for ever.
                    data = self._socket.recv(zmq.NOBLOCK)
                except zmq.Again:
                    continue
                try:
                    reply = decode_reply(data, type(request), request_id)
                except ProtocolError as exc:
                    raise ProtocolMismatch(f"unreadable reply from the daemon: {exc}") from None
                if reply is None:
                    continue  # the late reply of a request that timed out earlier
                if reply.error is not None:
                    e = reply.error
                    raise error_from_reply(e.code, e.message, e.details)
                return reply.result

    def _spin_for_reply(self) -> None:
        poll, clock = self._socket.poll, time.perf_counter_ns
        end = clock() + self._spin_ns
        while clock() < end:
            if poll(0, zmq.POLLIN):
                return

    def _send(self, data: bytes, op: str, connect_timeout_s: float) -> None:
        # With IMMEDIATE, the socket is writable only while a daemon is connected;
        # the common case (connected) costs one non-blocking check.
        if not self._socket.poll(0, zmq.POLLOUT):
            self._wait_connected(op, connect_timeout_s)
        try:
            self._socket.send(data, zmq.NOBLOCK)
        except zmq.Again:
            # The connection closed between the check and the send (a daemon stopping now):
            # wait for one as above, which says "not running" when its socket file is gone.
            self._wait_connected(op, connect_timeout_s)
            try:
                self._socket.send(data, zmq.NOBLOCK)
            except zmq.Again:
                raise DaemonNotRunning(f"the daemon at {self.endpoint} closed the connection while "
                                       f"'{op}' was being sent, twice; {_HOW_TO_START}") from None

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
            if self._socket.poll(int(min(remaining, _LIVENESS_S) * 1000) + 1, zmq.POLLOUT):
                return

    def _connected(self) -> bool:
        # With IMMEDIATE a DEALER is writable only while it has a connected peer: a daemon
        # that closed its socket (stopped, crashed) leaves it unwritable.
        return bool(self._socket.poll(0, zmq.POLLOUT))

    def _connection_lost(self, op: str) -> DaemonStopping:
        return DaemonStopping(
            f"the daemon at {self.endpoint} stopped (it closed the connection) before answering "
            f"'{op}'; the request may or may not have run; retry when a daemon is back "
            f"(`trtd status` tells)", code=ErrorCode.OVERLOADED,
            details={"stopping": True, "started": None})

    def _silence(self, op: str, timeout_s: float) -> TrtdError:
        """The error for no reply within timeout_s: say "stopped" when the daemon is gone."""
        path = ipc_path(self.endpoint)
        if not self._connected() or (path is not None and not path.exists()):
            return self._connection_lost(op)
        return DaemonTimeout(
            f"no reply to '{op}' from the daemon at {self.endpoint} within "
            f"{timeout_s:g}s; it may be busy with a long request or hung "
            f"(`trtd status` shows its state); raise the client's timeout if requests "
            f"are expected to take longer"
        )

    def send_nowait(self, request: Request) -> None:
        """Send without waiting for the reply (its late reply is dropped by request id)."""
        with self._lock:
            if self._socket.closed:
                return
            try:
                self._socket.send(encode_request(request, next(self._ids), self.auth), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass  # no daemon connected: nothing to tell

    def close(self, linger_ms: int = 0) -> None:
        with self._lock:
            if self._socket.closed:
                return
            self._socket.close(linger=linger_ms)
            self._ctx.term()


def _check_socket(path, endpoint: str) -> None:
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
