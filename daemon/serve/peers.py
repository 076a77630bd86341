"""The connections of the daemon's STREAM socket: one ZMTP session each, opened, fed, closed.

libzmq's STREAM socket reads each connection's bytes for us and names the connection with a
routing id it assigns (a peer cannot choose it); a zero-length chunk announces a connection
and, later, its end. Each connection gets the daemon's handshake at once, its own decoder
(daemon/serve/zmtp.py) and the pid the kernel vouches for (SO_PEERCRED, through libzmq's
Peer-Address) from its first moment. A peer that breaks the protocol or a cap, or that has not
finished its handshake in time, is disconnected: nothing it sent is kept.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable

import zmq

from trtd.daemon.core.clients import PeerCredentials, peer_credentials
from trtd.daemon.serve.zmtp import HANDSHAKE, ZmtpSession, ZmtpViolation, frame

log = logging.getLogger("trtd.server")

# A connection that has not finished its greeting and READY by then holds a descriptor for
# nothing: closed. A libzmq peer finishes in well under a millisecond once the daemon answers.
HANDSHAKE_TIMEOUT_S = 10.0
# Identities closed by the daemon, remembered so that their late end-of-connection notice is
# not taken for a new connection (libzmq never reuses an id: old entries are harmless).
_CLOSED_MEMORY = 4096
# Send flags as plain ints (pyzmq's are enum members, and an OR of them builds a new one).
_NOBLOCK = int(zmq.NOBLOCK)
_NOBLOCK_MORE = int(zmq.NOBLOCK | zmq.SNDMORE)


@dataclass(slots=True)
class Peer:
    session: ZmtpSession
    credentials: PeerCredentials | None  # what the OS says is at the other end (unix sockets)
    connected_at: float = field(default_factory=time.monotonic)
    dropped: int = 0  # replies that could not be queued (a closing or unread connection)
    # The daemon is closing it, but libzmq refused the close (the peer reads nothing and its
    # queue is full): retried every tick, and it still counts against max_connections.
    closing: bool = False


class Peers:
    def __init__(self, sock: zmq.Socket, max_message_bytes: int,
                 on_closed: Callable[[bytes], None], max_connections: int = 1024):
        """on_closed(identity): a connection that was open has gone (either side closed it).
        max_connections: more are closed as they come (each holds a descriptor, and libzmq
        aborts the process when it cannot accept for want of one); the server sizes it to the
        descriptor limit."""
        self._sock = sock
        self._max = max_message_bytes
        self._on_closed = on_closed
        self.max_connections = max_connections
        self._peers: dict[bytes, Peer] = {}
        self._closed: OrderedDict[bytes, None] = OrderedDict()
        self._turned_away = 0
        self.refused = 0  # connections closed for breaking the protocol, for status and tests

    def __len__(self) -> int:
        return len(self._peers)

    def receive(self, identity: bytes, chunk: zmq.Frame) -> list[bytes]:
        """The complete messages in what the STREAM socket read from one connection."""
        data = chunk.bytes
        peer = self._peers.get(identity)
        if not data:  # libzmq's notification: a new connection, or the end of a known one
            if identity in self._closed:
                del self._closed[identity]  # the end of one the daemon closed: nothing to do
            elif peer is None:
                self._open(identity, chunk)
            else:
                del self._peers[identity]
                if not peer.closing:
                    self._on_closed(identity)
            return []
        if peer is None or peer.closing:
            return []  # bytes of a connection being closed: nothing to do with them
        try:
            messages = peer.session.feed(data)
        except ZmtpViolation as exc:
            self.refused += 1
            log.warning("closed a connection%s: %s", _whose(peer), exc)
            self.close(identity)
            return []
        if peer.session.outgoing:
            self._write(identity, bytes(peer.session.outgoing))
            peer.session.outgoing.clear()
        return messages

    def credentials(self, identity: bytes) -> PeerCredentials | None:
        peer = self._peers.get(identity)
        return peer.credentials if peer is not None else None

    def send(self, identity: bytes, payload: bytes) -> bool:
        """False when the reply could not be queued and was dropped: the peer's queue is full,
        or (by far the most common) its connection is closing, as when a client exits with a
        request in flight. Said once per connection (a warning per reply would flood the log
        each time a group of clients ends); a peer that has gone already is no error."""
        if self._write(identity, frame(payload)):
            return True
        peer = self._peers.get(identity)
        if peer is not None:
            peer.dropped += 1
            if peer.dropped == 1:
                log.warning("a reply to a connection%s was dropped: it is closing or reads "
                            "nothing (its queue is full); later drops on it are logged at debug "
                            "level", _whose(peer))
            else:
                log.debug("reply %d to a connection%s dropped", peer.dropped, _whose(peer))
        return False

    def close(self, identity: bytes) -> None:
        """Disconnect a peer (libzmq closes the connection on a zero-length message to it)."""
        peer = self._peers.get(identity)
        if peer is None:
            return
        if not peer.closing:
            peer.closing = True
            self._on_closed(identity)
        if self._write(identity, b""):
            del self._peers[identity]
            self._remember_closed(identity)

    def _remember_closed(self, identity: bytes) -> None:
        self._closed[identity] = None
        if len(self._closed) > _CLOSED_MEMORY:
            self._closed.popitem(last=False)

    def expire_handshakes(self, now: float | None = None) -> int:
        """Close the connections that have not finished their handshake in time, and retry
        the closes libzmq refused (the reclaim tick calls it)."""
        now = time.monotonic() if now is None else now
        for identity in [i for i, peer in self._peers.items() if peer.closing]:
            self.close(identity)
        stale = [identity for identity, peer in self._peers.items()
                 if not peer.closing and not peer.session.open
                 and now - peer.connected_at > HANDSHAKE_TIMEOUT_S]
        for identity in stale:
            log.warning("closed a connection%s that did not finish its handshake in %.0f s",
                        _whose(self._peers[identity]), HANDSHAKE_TIMEOUT_S)
            self.close(identity)
        return len(stale)

    def _open(self, identity: bytes, notification: zmq.Frame) -> None:
        try:
            credentials = peer_credentials(notification.get("Peer-Address"))
        except zmq.ZMQError:
            credentials = None
        if len(self._peers) >= self.max_connections:
            self._turned_away += 1
            if self._turned_away == 1 or self._turned_away % 1000 == 0:
                log.warning("turned away a connection%s: the daemon holds %d, its limit (what "
                            "its descriptor limit allows; %d turned away so far)",
                            f" from pid {credentials.pid}" if credentials else "",
                            len(self._peers), self._turned_away)
            if self._write(identity, b""):
                self._remember_closed(identity)
            return
        self._peers[identity] = Peer(ZmtpSession(self._max), credentials)
        self._write(identity, HANDSHAKE)

    def _write(self, identity: bytes, data: bytes) -> bool:
        try:
            # Two sends with int flags, not send_multipart (which type-checks every part and
            # ORs enum flags): 1.5 µs against 3.9 µs a reply on the 2-core VM. A STREAM
            # socket refuses (EAGAIN, EHOSTUNREACH) on the routing-id frame, before any byte
            # is queued, so a refusal leaves no half-sent message behind.
            self._sock.send(identity, _NOBLOCK_MORE)
            self._sock.send(data, _NOBLOCK)
            return True
        except zmq.Again:
            return False
        except zmq.ZMQError:  # EHOSTUNREACH: the connection went meanwhile
            return True


def _whose(peer: Peer) -> str:
    return f" from pid {peer.credentials.pid}" if peer.credentials else ""
