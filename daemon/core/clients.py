"""Clients known to the daemon: daemon-assigned ids and how their liveness is proven.

A client says its pid and process start time in hello. If that pid exists here
with that start time, the client is in our PID namespace and its death is seen
directly (a recycled pid has another start time). Otherwise (a container, a
client that cannot tell its start time) its leases live only as long as it
keeps sending messages within client_timeout_s: the hello reply asks it for
heartbeats.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import psutil

from trtd.protocol import ErrorCode, ProtocolError

_START_TIME_TOLERANCE_S = 0.05


@dataclass(slots=True)
class ClientRecord:
    client_id: int
    pid: int
    start_time: float
    name: str
    pid_verified: bool
    last_seen: float
    # The ZeroMQ routing id of the connection that said hello: a request naming
    # this client from another connection is refused, whatever token it shows.
    identity: bytes
    requests: int = 0


def _pid_matches(pid: int, start_time: float) -> bool:
    if pid <= 0 or start_time <= 0:
        return False
    try:
        return abs(psutil.Process(pid).create_time() - start_time) <= _START_TIME_TOLERANCE_S
    except (psutil.Error, OverflowError, ValueError, OSError):
        return False


class ClientRegistry:
    def __init__(self, client_timeout_s: float, max_clients: int = 1024):
        self._timeout = client_timeout_s
        self._max_clients = max_clients
        self._clients: dict[int, ClientRecord] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def hello(self, pid: int, start_time: float, name: str, identity: bytes) -> ClientRecord:
        if len(self._clients) >= self._max_clients:
            raise ProtocolError(
                ErrorCode.QUOTA_EXCEEDED,
                f"the daemon has {len(self._clients)} clients, its limit (max_clients); close "
                f"clients that are not needed (Client.close()) or raise max_clients",
            )
        record = ClientRecord(
            client_id=self._new_id(), pid=pid, start_time=start_time, name=name,
            pid_verified=_pid_matches(pid, start_time), last_seen=time.monotonic(),
            identity=identity,
        )
        self._clients[record.client_id] = record
        return record

    def _new_id(self) -> int:
        # Random, not sequential: an id from a previous daemon generation never
        # names a client of this one, and ids cannot be guessed.
        while True:
            client_id = secrets.randbits(53) or 1  # 53 bits: exact in JSON/JavaScript doubles too
            if client_id not in self._clients:
                return client_id

    def get(self, client_id: int, identity: bytes) -> ClientRecord:
        record = self._clients.get(client_id)
        if record is None:
            raise ProtocolError(
                ErrorCode.UNKNOWN_CLIENT,
                f"client id {client_id} is not known to this daemon (it restarted, or the client "
                f"was reclaimed after missing heartbeats); say hello again",
            )
        if record.identity != identity:
            # Also what a client sees after its connection was re-established:
            # UNKNOWN_CLIENT tells it to say hello again.
            raise ProtocolError(
                ErrorCode.UNKNOWN_CLIENT,
                f"client id {client_id} is not registered on this connection (each connection "
                f"says hello and uses the id it was given; after a reconnect, say hello again)",
            )
        record.last_seen = time.monotonic()
        record.requests += 1
        return record

    def identities(self) -> list[bytes]:
        """The connections of the registered clients."""
        return [record.identity for record in self._clients.values()]

    def remove(self, client_id: int) -> None:
        self._clients.pop(client_id, None)

    def heartbeat_interval_s(self, record: ClientRecord) -> float:
        return 0.0 if record.pid_verified else self._timeout / 3

    def dead(self) -> list[ClientRecord]:
        """Clients whose process is gone, or whose heartbeats stopped."""
        now = time.monotonic()
        gone = []
        for record in self._clients.values():
            if record.pid_verified:
                alive = _pid_matches(record.pid, record.start_time)
            else:
                alive = now - record.last_seen <= self._timeout
            if not alive:
                gone.append(record)
        return gone
