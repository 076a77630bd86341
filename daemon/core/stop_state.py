"""Where a stop stands: one object, asked from any thread, read by the core and the loop.

A stop goes through four phases:
  serving ─request()─▶ requested ─begin_drain()─▶ draining ─close()─▶ closing
- requested: a signal, the service manager or a `shutdown` op asked; the loop stops reading
  and begins the drain.
- draining: requests already running or queued finish and are answered; new work is refused
  (OVERLOADED, `stopping`); releases and goodbyes are still served; replies sent now are
  noted until their connection shows it read them (it sends again).
- closing: the loop reads no more; the socket closes, models unload, regions go.

Also here: what a stop tells clients (new work refused, queued work not started, running work
abandoned): OVERLOADED with `stopping` in the details, which the SDK raises as DaemonStopping.
"""

from __future__ import annotations

import threading
from typing import Literal

from trtd.protocol import ErrorCode, ProtocolError

StopPhase = Literal["serving", "requested", "draining", "closing"]


class StopState:
    def __init__(self) -> None:
        self._asked = threading.Event()  # request() may come from a signal watcher or a service thread
        self.phase: StopPhase = "serving"
        # The signal that asked, for the log: written by a Python-level signal handler, which
        # must take no lock (a second signal may interrupt it), so a plain assignment.
        self.signal: int | None = None
        self.shutdown_requester: bytes | None = None  # the connection that sent `shutdown`
        self.shutdown_acknowledged = False            # ... and has said goodbye since
        self.refused = 0  # new work answered OVERLOADED while draining, for the stop's log
        # Connections sent a reply during the stop that they may not have read yet.
        self.unread_replies: set[bytes] = set()

    # -- asking (any thread) ----------------------------------------------------------------------

    def request(self) -> None:
        self._asked.set()

    def shutdown_op(self, identity: bytes) -> None:
        """A client sent `shutdown`: the socket stays open until it says goodbye (or a grace
        period ends), since a DEALER drops a reply it has not read when its peer disconnects."""
        self.shutdown_requester = identity
        self._asked.set()

    # -- the loop's view --------------------------------------------------------------------------

    @property
    def asked(self) -> bool:
        return self._asked.is_set()

    @property
    def draining(self) -> bool:
        return self.phase == "draining"

    @property
    def reading(self) -> bool:
        """Whether the loop reads requests now: not between the ask and the drain (the loop
        is leaving serve_forever), nor once closing."""
        if self.phase == "serving":
            return not self._asked.is_set()
        return self.phase == "draining"

    def cause(self) -> str:
        import signal as signals

        if self.signal is not None:
            return f"got {signals.Signals(self.signal).name}"
        if self.shutdown_requester is not None:
            return "a client sent `shutdown`"
        return "stop requested"

    def begin_drain(self, connections: set[bytes]) -> None:
        """Every connection that said hello may have replies to read, as may the `shutdown`
        requester: the stop waits (briefly) for each to send again."""
        self._asked.set()
        self.phase = "draining"
        self.unread_replies.update(connections)
        if self.shutdown_requester is not None and not self.shutdown_acknowledged:
            self.unread_replies.add(self.shutdown_requester)

    def close(self) -> None:
        self.phase = "closing"

    # -- what connections do while draining ---------------------------------------------------------

    def heard_from(self, identity: bytes) -> None:
        """A connection that sends again has read its earlier replies (an SDK connection waits
        for each): the stop need not keep the socket open for it."""
        if self.phase == "draining":
            self.unread_replies.discard(identity)

    def sent_to(self, identity: bytes) -> None:
        if self.phase == "draining":
            self.unread_replies.add(identity)

    def goodbye(self, identity: bytes) -> None:
        if identity == self.shutdown_requester:
            self.shutdown_acknowledged = True


# -- what a stop answers ------------------------------------------------------------------------

def refused(op: str) -> ProtocolError:
    """The answer to new work while the daemon drains. `stopping` in the details lets a client
    tell it from a full queue (the SDK raises DaemonStopping, an Overloaded)."""
    return ProtocolError(ErrorCode.OVERLOADED, (
        f"the daemon is stopping (finishing the requests it has, then exiting); this '{op}' was "
        f"not run: retry when the daemon is back"), {"stopping": True, "started": False})


def not_started(model: str, drain_timeout_s: float) -> ProtocolError:
    return ProtocolError(ErrorCode.OVERLOADED, (
        f"the daemon stopped before this request to model {model!r} started (drain_timeout_s = "
        f"{drain_timeout_s:g} s had passed); it did not run: retry when the daemon is back"),
        {"stopping": True, "started": False})


def abandoned(model: str, drain_timeout_s: float) -> ProtocolError:
    return ProtocolError(ErrorCode.OVERLOADED, (
        f"the daemon stopped while this request to model {model!r} was running (drain_timeout_s "
        f"= {drain_timeout_s:g} s had passed); its outputs are incomplete: retry when the daemon "
        f"is back"), {"stopping": True, "started": True})


def load_abandoned(model: str, drain_timeout_s: float) -> ProtocolError:
    return ProtocolError(ErrorCode.OVERLOADED, (
        f"the daemon stopped before model {model!r} had loaded (drain_timeout_s = "
        f"{drain_timeout_s:g} s had passed); load it again when the daemon is back"),
        {"stopping": True, "started": True})
