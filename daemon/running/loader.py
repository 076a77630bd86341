"""Loading configured models off the socket thread.

The daemon serves its control socket (and tells systemd it is ready) before any model has
loaded: a large model or a TensorRT engine can take longer than a service manager's start
timeout. Models wait as "loading" placeholders; one loader thread creates them in order and
hands each finished one to the socket loop through the completion queue (ModelLoaded), which
alone changes the registry. A reload queues its new and changed models here the same way.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import TYPE_CHECKING

from trtd.daemon.config.settings import ModelConfig
from trtd.daemon.running.finished import Caller, CompletionQueue, ModelLoaded

if TYPE_CHECKING:  # the registry imports the backends; the loader thread needs it at run time only
    from trtd.daemon.running.registry import ModelRegistry, ServedModel

log = logging.getLogger("trtd.loader")


class ModelLoader:
    def __init__(self, registry: ModelRegistry, completions: CompletionQueue):
        self._registry = registry
        self._completions = completions
        self._queue: queue.Queue[ModelLoaded | None] = queue.Queue()
        self._cancelled = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trtd-loader", daemon=True)
        self._thread.start()
        # Models queued or being created (not requests: a `load` op waiting for one of them is
        # in the core's in-flight count). Changed on the socket loop only.
        self.models_loading = 0

    def add(self, config: ModelConfig, answer: Caller | None = None) -> ModelLoaded:
        """Serve `config` as a "loading" placeholder now, the model when it has loaded."""
        self.models_loading += 1
        item = ModelLoaded(self._registry.add_loading(config), config, answer=answer)
        self._queue.put(item)
        return item

    def replace(self, old: ServedModel, config: ModelConfig) -> None:
        """Load `config` and serve it instead of `old`, which serves until then."""
        self.models_loading += 1
        self._queue.put(ModelLoaded(old, config, replace=True))

    def finished(self, item: ModelLoaded) -> None:
        self.models_loading -= 1

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
                from trtd.daemon.running.registry import ServedModel

                item.model = ServedModel(config=config, backend=None, state="failed",
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
