"""What carries frames between a Client and a daemon: the Transport protocol.

A transport moves bytes and knows nothing of their content; the request/reply layer above it
(sdk/connection.py: ids, encoding, the size limit, decoding, error replies) is the same over
every transport. Two are provided:

- ZmqTransport (sdk/zmq_transport.py): a DEALER socket to a daemon at an endpoint, the default;
- InProcessTransport (sdk/inprocess.py): a daemon core in this very process, no socket (tests,
  embedding); shared memory stays real.

A transport raises the SDK's exceptions for what goes wrong on its way (DaemonNotRunning,
DaemonTimeout, DaemonStopping when the peer went away), in its own words: only it knows where
the daemon is and what "gone" looks like there.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Transport(Protocol):
    # Where the daemon is, for messages and for finding its token files ("ipc:///...").
    endpoint: str

    def send(self, frame: bytes, op: str, connect_timeout_s: float) -> None:
        """Send one request frame, waiting up to connect_timeout_s for a daemon to take it;
        DaemonNotRunning (or AccessDenied) when none will. `op` is for messages only."""
        ...

    def receive(self, deadline: float, op: str, timeout_s: float) -> bytes:
        """The next reply frame, waiting until `deadline` (time.monotonic()); DaemonTimeout then,
        or DaemonStopping as soon as the peer is gone (no reply can come). `op` and `timeout_s`
        (the whole wait) are for messages only."""
        ...

    def connected(self) -> bool:
        """Whether the peer is still there."""
        ...

    def close(self, linger_ms: int = 0) -> None:
        """Let go of the peer; frames already sent get up to linger_ms to leave. Idempotent."""
        ...
