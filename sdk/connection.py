"""Requests and replies over any Transport: request ids, the size limit, decoding, error replies.

Every request carries an id and the reply echoes it, so a reply that arrives after its request
timed out is recognised and dropped instead of being taken for the answer to the next request.
One request at a time: the lock makes a Connection safe to share between threads.
"""

from __future__ import annotations

import itertools
import threading
import time

from trtd.protocol import MAX_REQUEST_BYTES, ProtocolError, Request, decode_reply, encode_request

from .errors import DaemonNotRunning, InvalidInput, ProtocolMismatch, TrtdError, error_from_reply
from .transport import Transport


class Connection:
    def __init__(self, transport: Transport, connect_timeout_s: float, auth: str = ""):
        self.transport = transport
        self.endpoint = transport.endpoint
        # Sent in every request's envelope unless a call passes another (TCP connection token).
        self.auth = auth
        self._connect_timeout_s = connect_timeout_s
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False

    def call(self, request: Request, timeout_s: float, auth: str | None = None):
        """Send one request and wait for its reply's result; raises TrtdError subclasses."""
        with self._lock:
            if self._closed:
                raise DaemonNotRunning(f"this client's connection to {self.endpoint} is closed")
            request_id = next(self._ids)
            frame = encode_request(request, request_id, self.auth if auth is None else auth)
            if len(frame) > MAX_REQUEST_BYTES:
                # The daemon's socket would drop the connection rather than deliver it: refuse here.
                raise InvalidInput(f"'{request.OP}' request is {len(frame)} bytes, over the protocol's "
                                   f"limit of {MAX_REQUEST_BYTES} (too many tensors or too long names?)")
            self.transport.send(frame, request.OP, min(self._connect_timeout_s, timeout_s))
            deadline = time.monotonic() + timeout_s
            while True:
                data = self.transport.receive(deadline, request.OP, timeout_s)
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

    def send_nowait(self, request: Request) -> None:
        """Send without waiting for the reply (its late reply is dropped by request id)."""
        with self._lock:
            if self._closed:
                return
            try:
                self.transport.send(encode_request(request, next(self._ids), self.auth), request.OP, 0.0)
            except TrtdError:
                pass  # no daemon connected: nothing to tell

    def close(self, linger_ms: int = 0) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                self.transport.close(linger_ms)

    @property
    def _socket(self):
        """The ZeroMQ socket under a ZmqTransport, for tests that send raw frames on the
        client's own connection (tests/held_requests.py)."""
        return self.transport.socket  # type: ignore[attr-defined]
