"""Work that other threads finish and the socket loop applies: one tagged union, one queue.

Three kinds of work end off the socket thread, and only the socket loop may act on them (it
alone touches the registries and the socket):
- a request a worker instance ran: `RequestDone` (its reply is sent, its region checked in);
- a model the loader created: `ModelLoaded` (served under its name; a `load` op answered);
- an engine (or reduced-precision variant) that passed its comparison: `EngineReady` (swapped
  in between two requests).
Each carries a `kind` tag, so a reader of the queue (DaemonCore.finish) dispatches by one
`match` over a closed set of types, and a type checker sees every case.
"""

from __future__ import annotations

import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, Union

from trtd.protocol import ProtocolError

if TYPE_CHECKING:  # the producers import this module: their types only for annotations
    from trtd.daemon.backends import Backend
    from trtd.daemon.config.settings import ModelConfig
    from trtd.daemon.running.executor import Executor, Job
    from trtd.daemon.running.instances import RunTiming
    from trtd.daemon.running.registry import ServedModel

# The states a model is in, as status and `models` report them.
ModelState = Literal["loading", "ready", "failed"]


@dataclass(slots=True)
class Caller:
    """Who waits for an answer: the connection's routing id and the request's id."""

    identity: bytes
    request_id: int


@dataclass(slots=True)
class RequestDone:
    """A request a worker instance finished: outputs' shapes and timing, or its error."""

    job: Job
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    timing: RunTiming | None = None
    error: ProtocolError | None = None
    kind: Literal["request"] = "request"


@dataclass(slots=True)
class ModelLoaded:
    """A model created in the background, to be served instead of `target`."""

    target: ServedModel   # the "loading" placeholder, or the model a reload replaces
    config: ModelConfig
    replace: bool = False
    model: ServedModel | None = None  # the new model (ready or failed), once created
    answer: Caller | None = None      # a `load` op waiting for this model
    kind: Literal["model"] = "model"


@dataclass(slots=True)
class EngineReady:
    """A compared, ready engine (or variant) for `model`, to be put in place between requests."""

    model: ServedModel
    backend: Backend
    executor: Executor
    served_by: str   # what status and replies name from then on, e.g. "tensorrt-fp16"
    engine: str      # the engine's fingerprint
    batching: str = ""  # dynamic_batching for the new backend: "on" or "refused: why"
    kind: Literal["engine"] = "engine"


Finished = Union[RequestDone, ModelLoaded, EngineReady]


class CompletionQueue:
    """Finished work from other threads, plus a socket the loop polls to wake up.

    At most one wake-up byte is outstanding, and `_signalled` says whether it is: the loop's
    drain() on a turn where nothing was put (every turn, for a model run inline on the socket
    thread) is then one attribute read, not a recv that raises BlockingIOError (~2 µs a turn).
    put() and the recv in drain() hold a lock, so a byte sent between drain's recv and its
    clearing of the flag cannot be forgotten (the fd would stay readable and the loop spin).
    """

    def __init__(self) -> None:
        self._items: deque[Finished] = deque()
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._lock = threading.Lock()
        self._signalled = False  # a wake-up byte was sent and not read yet (set under _lock)

    def fileno(self) -> int:
        return self._reader.fileno()

    def put(self, item: Finished) -> None:
        with self._lock:
            self._items.append(item)
            if self._signalled:
                return  # the loop has a wake-up coming already; it drains everything
            try:
                self._writer.send(b"\0")
            except BlockingIOError:
                pass  # the pipe is full, hence readable: the loop wakes up all the same
            except OSError:
                return  # closed: the daemon is exiting and a request it gave up on has just ended
            self._signalled = True

    def drain(self) -> list[Finished]:
        # Read without the lock: a put() running now sends its byte, which wakes the next
        # poll, and that turn's drain() takes the item.
        if not self._signalled:
            return []
        with self._lock:
            try:
                if self._reader.recv(4096):
                    self._signalled = False
            except BlockingIOError:
                # Sent but not arrived (socketpair emulated over TCP, as on Windows): it stays
                # outstanding, wakes a later poll, and that drain() reads it.
                pass
            items = list(self._items)
            self._items.clear()
        return items

    def close(self) -> None:
        self._reader.close()
        self._writer.close()
