"""The daemon's side of ZMTP 3.1 (NULL mechanism), one connection at a time, with hard caps.

Why the daemon speaks the wire protocol itself: a ROUTER socket lets libzmq buffer a whole
multi-part message before the application sees its first frame, however many frames it has
(its high-water mark counts whole messages), so one peer could make the daemon hold gigabytes
(issue 17: 2 GiB of 64 KiB frames went past a 1.5 GiB memory limit). It also lets a peer choose
its own routing id, which once aborted libzmq. A ZMQ_STREAM socket hands the daemon raw bytes
per connection, with routing ids libzmq assigns; this module turns them into messages and
refuses, before buffering it, anything a trtd client never sends: a frame over the request
limit, a second frame in one message, a mechanism other than NULL, a socket type other than
DEALER. Clients keep their ordinary DEALER sockets (pyzmq, cppzmq): nothing changes for them.

Pure: no sockets, no clock. `server.py` feeds it what the STREAM socket read and sends what it
returns. Spec: https://rfc.zeromq.org/spec/37/ (ZMTP 3.1), https://rfc.zeromq.org/spec/23/.
"""

from __future__ import annotations

import struct
from typing import Literal

_SIGNATURE_HEAD, _SIGNATURE_TAIL = 0xFF, 0x7F
_GREETING_BYTES = 64
_MORE, _LONG, _COMMAND = 0x01, 0x02, 0x04
# A READY command carries a few properties (Socket-Type, Identity, user metadata): generous.
_MAX_COMMAND_BYTES = 8192
_PEER_SOCKET_TYPES = (b"DEALER",)  # what the SDKs use; a REQ's empty delimiter is a 2nd frame


def _property(name: bytes, value: bytes) -> bytes:
    return bytes([len(name)]) + name + struct.pack(">I", len(value)) + value


def _command(name: bytes, body: bytes) -> bytes:
    data = bytes([len(name)]) + name + body
    if len(data) < 256:
        return bytes([_COMMAND, len(data)]) + data
    return bytes([_COMMAND | _LONG]) + struct.pack(">Q", len(data)) + data


# What the daemon sends the moment a peer connects: its greeting (version 3.1, NULL, as
# server) and its READY. A libzmq peer sends its signature first and waits for ours.
HANDSHAKE = (bytes([_SIGNATURE_HEAD]) + bytes(8) + bytes([_SIGNATURE_TAIL, 3, 1])
             + b"NULL".ljust(20, b"\0") + b"\x01" + bytes(31)
             + _command(b"READY", _property(b"Socket-Type", b"ROUTER")))


def frame(payload: bytes) -> bytes:
    """One final (single-frame) message carrying payload, as the peer's DEALER expects it."""
    n = len(payload)
    if n < 256:
        return bytes((0, n)) + payload
    return b"\x02" + struct.pack(">Q", n) + payload


class ZmtpViolation(Exception):
    """The peer broke the protocol or a cap: the connection is closed (its message says why)."""


class ZmtpSession:
    """One connection's decoder: greeting, the peer's READY, then single-frame messages.

    feed() returns the complete messages; what it must send back (a PONG) collects in
    `outgoing`. At most one partial frame is held, and it is never larger than the cap: a peer
    that claims a larger one is refused on its header, before any of it is kept."""

    __slots__ = ("max_message_bytes", "stage", "outgoing", "_buffer")

    def __init__(self, max_message_bytes: int):
        self.max_message_bytes = max_message_bytes
        self.stage: Literal["greeting", "ready", "open"] = "greeting"
        self.outgoing = bytearray()
        self._buffer = b""

    @property
    def open(self) -> bool:
        return self.stage == "open"

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._buffer + chunk if self._buffer else chunk
        messages: list[bytes] = []
        at = 0
        if self.stage == "greeting":
            if len(data) < _GREETING_BYTES:
                self._check_greeting(data)  # a wrong signature is refused as soon as it shows
                self._buffer = data
                return messages
            self._check_greeting(data[:_GREETING_BYTES])
            self.stage = "ready"
            at = _GREETING_BYTES
        end = len(data)
        while at < end:
            flags = data[at]
            if flags & ~(_MORE | _LONG | _COMMAND):
                raise ZmtpViolation(f"reserved frame flags 0x{flags:02x}")
            header = 9 if flags & _LONG else 2
            if end - at < header:
                break
            size = (struct.unpack_from(">Q", data, at + 1)[0] if flags & _LONG else data[at + 1])
            command = bool(flags & _COMMAND)
            limit = _MAX_COMMAND_BYTES if command else self.max_message_bytes
            if size > limit:
                raise ZmtpViolation(f"a {'command' if command else 'frame'} of {size} bytes "
                                    f"(at most {limit})")
            if not command and flags & _MORE:
                raise ZmtpViolation("a message of more than one frame (trtd requests are one frame)")
            if end - at - header < size:
                break
            body = data[at + header:at + header + size]
            at += header + size
            if command:
                self._command(body)
            elif self.stage != "open":
                raise ZmtpViolation("a message before the READY command")
            else:
                messages.append(body)
        self._buffer = data[at:] if at < end else b""
        return messages

    @staticmethod
    def _check_greeting(data: bytes) -> None:
        if data[:1] not in (b"", bytes([_SIGNATURE_HEAD])) or (
                len(data) >= 10 and data[9] != _SIGNATURE_TAIL):
            raise ZmtpViolation("not a ZMTP 3 peer (bad signature)")
        if len(data) >= 11 and data[10] < 3:
            raise ZmtpViolation(f"ZMTP version {data[10]} (the daemon needs 3.x: libzmq >= 4.0)")
        if len(data) >= 32 and data[12:32].rstrip(b"\0") != b"NULL":
            raise ZmtpViolation(f"security mechanism {data[12:32].rstrip(bytes(1))!r} "
                                "(the daemon speaks NULL; access is by socket permissions and tokens)")

    def _command(self, body: bytes) -> None:
        if not body or len(body) < 1 + body[0]:
            raise ZmtpViolation("a malformed command")
        name, data = body[1:1 + body[0]], body[1 + body[0]:]
        if self.stage == "ready":
            if name != b"READY":
                raise ZmtpViolation(f"command {name!r} before READY")
            socket_type = _properties(data).get(b"socket-type")
            if socket_type not in _PEER_SOCKET_TYPES:
                raise ZmtpViolation(f"socket type {socket_type!r} (trtd clients use DEALER sockets)")
            self.stage = "open"
        elif name == b"PING":  # ZMTP 3.1 heartbeat: answer with the peer's context
            if len(data) < 2 or len(data) > 18:
                raise ZmtpViolation("a malformed PING")
            self.outgoing += _command(b"PONG", data[2:])
        elif name == b"PONG":
            pass
        else:  # ERROR (the peer gives up), READY twice, SUBSCRIBE...: nothing a client sends
            raise ZmtpViolation(f"unexpected command {name!r}")


def _properties(data: bytes) -> dict[bytes, bytes]:
    found: dict[bytes, bytes] = {}
    at, end = 0, len(data)
    while at < end:
        n = data[at]
        if at + 1 + n + 4 > end:
            raise ZmtpViolation("a malformed READY property")
        name = data[at + 1:at + 1 + n].lower()  # property names are case-insensitive
        size = struct.unpack_from(">I", data, at + 1 + n)[0]
        at += 1 + n + 4
        if at + size > end:
            raise ZmtpViolation("a malformed READY property")
        found[name] = data[at:at + size]
        at += size
    return found
