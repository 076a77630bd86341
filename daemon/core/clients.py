"""Clients known to the daemon: daemon-assigned ids and how their liveness is proven.

On a unix socket the OS says which process is at the other end (SO_PEERCRED, which libzmq
reports as the message's Peer-Address, `localhost:UID:GID:PID`, with the pid as this daemon's
PID namespace sees it): that pid, and its start time read here, identify the client, whatever
its hello claims (a hello once claiming pid 1 got leases that were never reclaimed). Elsewhere
(TCP) a client says its pid and start time in hello; if that pid exists here with that start
time, its death is seen directly (a recycled pid has another start time). Otherwise (a
container on TCP, a client that cannot tell its start time) its leases live only as long as it
keeps sending messages within client_timeout_s: the hello reply asks it for heartbeats.

A connection is one client: a second hello on it replaces the first (whose regions the caller
releases), so one connection cannot pile up records and quotas.
"""

from __future__ import annotations

import errno
import os
import secrets
import time
from dataclasses import dataclass
from typing import NamedTuple

import psutil

from trtd.protocol import ErrorCode, ProtocolError

_START_TIME_TOLERANCE_S = 0.05
_OWN_UID = os.geteuid() if hasattr(os, "geteuid") else -1  # Windows: no uids, no SO_PEERCRED


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
    # The OS says it runs as the daemon's own user, who could signal the daemon anyway: its
    # regions are used in place. Anyone else's are guarded (running/guarded_io.py).
    same_user: bool = False


def _pid_matches(pid: int, start_time: float) -> bool:
    if pid <= 0 or start_time <= 0:
        return False
    try:
        return abs(psutil.Process(pid).create_time() - start_time) <= _START_TIME_TOLERANCE_S
    except psutil.NoSuchProcess:
        return False
    except OSError as exc:
        # Out of descriptors (EMFILE/ENFILE) says nothing about the client: alive, look later
        # (taking it for dead would reclaim every live client at once).
        if exc.errno in (errno.EMFILE, errno.ENFILE):
            return True
        return False
    except (psutil.Error, OverflowError, ValueError):
        return False


def _start_time(pid: int) -> float:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OverflowError, ValueError, OSError):
        return 0.0  # gone already: the record is reclaimed at the next look


class PeerCredentials(NamedTuple):
    """What the kernel says about a unix-socket peer (SO_PEERCRED)."""

    pid: int
    uid: int


def peer_credentials(peer_address: str | None) -> PeerCredentials | None:
    """libzmq's Peer-Address of a unix-socket peer ("localhost:UID:GID:PID"); None for TCP and
    for a peer in another PID namespace (its pid reads as 0)."""
    if not peer_address or not peer_address.startswith("localhost:"):
        return None
    parts = peer_address.split(":")
    if len(parts) != 4 or not parts[1].isdigit() or not parts[3].isdigit():
        return None
    pid = int(parts[3])
    return PeerCredentials(pid, int(parts[1])) if pid > 0 else None


class ClientRegistry:
    def __init__(self, client_timeout_s: float, max_clients: int = 1024):
        self._timeout = client_timeout_s
        self._max_clients = max_clients
        self._clients: dict[int, ClientRecord] = {}

    def __len__(self) -> int:
        return len(self._clients)

    def hello(self, pid: int, start_time: float, name: str, identity: bytes,
              peer: PeerCredentials | None = None, in_process: bool = False
              ) -> tuple[ClientRecord, ClientRecord | None]:
        """The new record, and the record this connection had before (now removed), if any.
        peer: the process and user the OS says are at the other end of the connection;
        in_process: the client is this process (no socket: InProcessTransport, tests)."""
        peer_pid = peer.pid if peer is not None else None
        previous = next((r for r in self._clients.values() if r.identity == identity), None)
        if previous is not None:
            del self._clients[previous.client_id]
        if peer_pid is not None:
            pid, start_time = peer_pid, _start_time(peer_pid)
        # Only the OS vouches for a pid: a claimed one (TCP, a peer in another PID namespace,
        # whose pid the socket reports as 0) could be any live process, pid 1 included, whose
        # leases would then never be reclaimed. Such clients prove they live by heartbeats.
        verified = peer_pid is not None and _pid_matches(pid, start_time)
        if len(self._clients) >= self._max_clients:
            raise ProtocolError(
                ErrorCode.QUOTA_EXCEEDED,
                f"the daemon has {len(self._clients)} clients, its limit (max_clients); close "
                f"clients that are not needed (Client.close()) or raise max_clients",
            )
        record = ClientRecord(
            client_id=self._new_id(), pid=pid, start_time=start_time, name=name,
            pid_verified=verified, last_seen=time.monotonic(),
            identity=identity, same_user=in_process or (peer is not None and peer.uid == _OWN_UID),
        )
        self._clients[record.client_id] = record
        return record, previous

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

    def on_connection(self, identity: bytes) -> list[ClientRecord]:
        """The records of one connection (at most one: a second hello replaces the first)."""
        return [record for record in self._clients.values() if record.identity == identity]

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
