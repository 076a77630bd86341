"""Every request the core accepted and has not answered yet: the one in-flight count.

An infer queued on a worker instance and a `load` op waiting for the loader are both in here
from the moment the core answers PENDING until their answer is built. Each executor's share
is the bound its queue is checked against (OVERLOADED), what status reports per model, and
what a stop waits for; an entry that is no longer here has been answered (e.g. a stop gave up
on it while its backend call still runs), so its late completion only returns its region.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    from trtd.daemon.running.executor import Executor, Job
    from trtd.daemon.running.finished import ModelLoaded

Pending = Union["Job", "ModelLoaded"]


class InFlight:
    def __init__(self) -> None:
        self._entries: dict[int, tuple[Pending, Executor | None]] = {}
        self._per_executor: Counter[int] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, item: object) -> bool:
        return id(item) in self._entries

    def add(self, item: Pending, executor: Executor | None = None) -> None:
        self._entries[id(item)] = (item, executor)
        if executor is not None:
            self._per_executor[id(executor)] += 1

    def end(self, item: Pending) -> bool:
        """Take an answered item out; False if it was not in flight (answered before)."""
        entry = self._entries.pop(id(item), None)
        if entry is None:
            return False
        executor = entry[1]
        if executor is not None:
            self._per_executor[id(executor)] -= 1
            if not self._per_executor[id(executor)]:
                del self._per_executor[id(executor)]
        return True

    def on(self, executor: Executor | None) -> int:
        """Requests queued on or running in `executor` (0 for None)."""
        return self._per_executor.get(id(executor), 0) if executor is not None else 0

    def loads(self) -> list[ModelLoaded]:
        """The `load` ops waiting for the loader."""
        from trtd.daemon.running.finished import ModelLoaded

        return [item for item, _ in self._entries.values() if isinstance(item, ModelLoaded)]
