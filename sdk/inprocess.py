"""A transport to a daemon core in this process: the same frames as over the socket, no socket.

For tests and for programs that embed the daemon: `Client(transport=InProcessTransport(core))`.
The core is anything with the two calls of the daemon's DaemonCore (CoreLike below), so the SDK
imports nothing of the daemon. Shared memory stays real: the core leases regions in /dev/shm and
the SDK attaches to them by name, as over the socket.

Several transports (clients) may share one core. Each has its own identity, as a DEALER has;
the core answers some requests at once (receive) and others later (step, for work that ran on
a worker instance or a load), and whichever transport happens to call step() gets the answers
for all of them: the ones for other identities go to their mailboxes. Calls into the core are
serialized, as the daemon's socket thread makes them one at a time.
"""

from __future__ import annotations

import itertools
import threading
import time
import weakref
from collections import deque
from typing import Protocol, Sequence

from .errors import DaemonNotRunning, DaemonTimeout

# Longest one step() waits while a reply is awaited: a request sent meanwhile from another
# thread waits this long at most for the core (calls into it are serialized).
_STEP_S = 0.01
_identities = itertools.count(1)


class AnswerLike(Protocol):
    """One answer of step(): the daemon's Answer(identity, request_id, frame) named tuple."""

    @property
    def identity(self) -> bytes: ...

    @property
    def frame(self) -> bytes: ...


class CoreLike(Protocol):
    def receive(self, identity: bytes, payload: bytes, received_ns: int | None = None) -> bytes | None:
        """Decode, authorize and handle one request frame: the reply frame, or None when the
        answer comes later (from step())."""
        ...

    def step(self, timeout_s: float = 0.0) -> Sequence[AnswerLike]:
        """Wait up to timeout_s for finished work; the answers to send."""
        ...


class _Exchange:
    """Per core: the lock that serializes calls into it, and each transport's mailbox."""

    def __init__(self) -> None:
        self.core_lock = threading.Lock()
        self.changed = threading.Condition()  # guards boxes and stepping
        self.boxes: dict[bytes, deque[bytes]] = {}
        self.stepping = False  # a transport is inside step(): the others wait for its answers

    def deliver(self, identity: bytes, frame: bytes) -> None:
        """Under `changed`. Answers to a transport already closed are dropped, as a ROUTER does."""
        box = self.boxes.get(identity)
        if box is not None:
            box.append(frame)


_exchanges: "weakref.WeakKeyDictionary[object, _Exchange]" = weakref.WeakKeyDictionary()
_exchanges_lock = threading.Lock()


def _exchange_of(core: object) -> _Exchange:
    with _exchanges_lock:
        exchange = _exchanges.get(core)
        if exchange is None:
            exchange = _exchanges[core] = _Exchange()
        return exchange


class InProcessTransport:
    def __init__(self, core: CoreLike, endpoint: str = ""):
        """endpoint: named in messages and used to find token files (default: the core's own
        `endpoint` attribute when it has one)."""
        self.core = core
        self.endpoint = endpoint or getattr(core, "endpoint", "") or "in-process daemon core"
        self.identity = b"inproc-%d" % next(_identities)
        self._exchange = _exchange_of(core)
        with self._exchange.changed:
            self._exchange.boxes[self.identity] = deque()
        self._closed = False

    def send(self, frame: bytes, op: str, connect_timeout_s: float) -> None:
        if self._closed:
            raise DaemonNotRunning(f"the in-process transport to {self.endpoint} is closed ('{op}')")
        ex = self._exchange
        with ex.core_lock:
            reply = self.core.receive(self.identity, frame)
        if reply is not None:
            with ex.changed:
                ex.deliver(self.identity, reply)
                ex.changed.notify_all()

    def receive(self, deadline: float, op: str, timeout_s: float) -> bytes:
        ex = self._exchange
        while True:
            with ex.changed:
                box = ex.boxes.get(self.identity)
                if box:
                    return box.popleft()
                remaining = deadline - time.monotonic()
                if box is None or remaining <= 0:
                    raise self._silence(op, timeout_s, closed=box is None)
                if ex.stepping:  # another transport is collecting answers: ours among them?
                    ex.changed.wait(min(remaining, _STEP_S))
                    continue
                ex.stepping = True
            answers: Sequence[AnswerLike] = ()
            try:
                with ex.core_lock:
                    answers = self.core.step(min(remaining, _STEP_S))
            finally:
                with ex.changed:
                    ex.stepping = False
                    for answer in answers:
                        ex.deliver(answer.identity, answer.frame)
                    ex.changed.notify_all()

    def connected(self) -> bool:
        return not self._closed  # the core lives in this process: it is there while we are

    def close(self, linger_ms: int = 0) -> None:
        # Frames were handed to the core synchronously: nothing is left to linger for.
        self._closed = True
        with self._exchange.changed:
            self._exchange.boxes.pop(self.identity, None)
            self._exchange.changed.notify_all()

    def _silence(self, op: str, timeout_s: float, closed: bool) -> Exception:
        if closed:
            return DaemonNotRunning(f"the in-process transport to {self.endpoint} was closed while "
                                    f"waiting for '{op}'")
        return DaemonTimeout(f"no reply to '{op}' from the in-process daemon core ({self.endpoint}) "
                             f"within {timeout_s:g}s; it may be busy with a long request or hung; "
                             f"raise the client's timeout if requests are expected to take longer")
