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
    """Finished work from other threads, plus a socket the loop polls to wake up."""

    def __init__(self) -> None:
        self._items: deque[Finished] = deque()
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    def fileno(self) -> int:
        return self._reader.fileno()

    def put(self, item: Finished) -> None:
        self._items.append(item)
        try:
            self._writer.send(b"\0")
        except BlockingIOError:
            pass  # the loop is already far behind on wake-ups; it drains everything anyway
        except OSError:
            pass  # closed: the daemon is exiting and a request it gave up on has just ended

    def drain(self) -> list[Finished]:
        try:
            while self._reader.recv(4096):
                pass
        except BlockingIOError:
            pass
        items = []
        while self._items:
            items.append(self._items.popleft())
        return items

    def close(self) -> None:
        self._reader.close()
        self._writer.close()
