"""Loading configured models off the socket thread.

The daemon serves its control socket (and tells systemd it is ready) before any model has
loaded: a large model or a TensorRT engine can take longer than a service manager's start
timeout. Models wait as "loading" placeholders; one loader thread creates them in order and
hands each finished one to the socket loop through the completion queue, which alone changes
the registry. A reload queues its new and changed models here the same way.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trtd.daemon.config.settings import ModelConfig

if TYPE_CHECKING:  # models imports the backends; the loader thread needs them only at run time
    from trtd.daemon.running.registry import LoadedModel

log = logging.getLogger("trtd.loader")


@dataclass(slots=True)
class Loaded:
    """A model created in the background, to be served instead of `target` (socket loop)."""

    target: LoadedModel   # the "loading" placeholder, or the model a reload replaces
    config: ModelConfig
    replace: bool = False
    model: LoadedModel | None = None  # the new model (ready or failed), once created
    # A `load` op waiting for this model: (client identity, request id) to answer when it is in.
    answer: tuple[bytes, int] | None = None


class ModelLoader:
    def __init__(self, registry, completions):
        self._registry = registry
        self._completions = completions
        self._queue: queue.Queue = queue.Queue()
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trtd-loader", daemon=True)
        self._thread.start()
        self.pending = 0  # queued or loading; changed on the socket loop only
        self._answering: list[Loaded] = []  # items a `load` op waits for (socket loop only)

    def add(self, config: ModelConfig, answer: tuple[bytes, int] | None = None) -> None:
        """Serve `config` as a "loading" placeholder now, the model when it has loaded."""
        self.pending += 1
        item = Loaded(self._registry.add_loading(config), config, answer=answer)
        if answer is not None:
            self._answering.append(item)
        self._queue.put(item)

    def give_up(self) -> list[tuple[bytes, int, str]]:
        """A stop past its drain timeout: the `load` ops still waiting, as (identity, request
        id, model name), to be answered now; their items will not be answered again."""
        waiting = [(*item.answer, item.config.name) for item in self._answering if item.answer]
        for item in self._answering:
            item.answer = None
        self._answering.clear()
        return waiting

    def replace(self, old, config: ModelConfig) -> None:
        """Load `config` and serve it instead of `old`, which serves until then."""
        self.pending += 1
        self._queue.put(Loaded(old, config, replace=True))

    def finished(self, item: Loaded) -> None:
        self.pending -= 1
        self._answering = [waiting for waiting in self._answering if waiting is not item]

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None or self._cancelled.is_set():
                return
            config = item.config
            try:
                item.model = self._registry.create(config)
            except BaseException as exc:  # create() keeps failures; this is a bug: keep going
                log.exception("loading model %s failed unexpectedly", config.name)
                from trtd.daemon.running.registry import LoadedModel

                item.model = LoadedModel(config=config, backend=None, state="failed",
                                         error=f"{type(exc).__name__}: {exc}")
            if self._cancelled.is_set():
                from trtd.daemon.running.registry import discard

                discard(item.model)
                return
            self._completions.put(item)

    def close(self, wait: bool = True) -> None:
        """Stop after the model being created now (it is closed, never served); wait=False
        does not wait for it (a stop past its drain timeout: the process exits next)."""
        self._cancelled.set()
        self._queue.put(None)
        if wait:
            self._thread.join()
