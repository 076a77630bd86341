"""What "ready" means, in one place: `trtd status` (its exit status, `--wait-ready`) and the
metrics endpoint's /readyz both ask this, so a probe gets the same answer from either.

Ready: the daemon is not stopping and every model it has (configured, or added with `load`)
is "ready". Any other state is not ready, including states newer than the caller (SPEC 2.3);
"failed" is told apart because waiting will not change it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Protocol


class _Model(Protocol):
    name: str
    state: str
    error: str


@dataclass(frozen=True, slots=True)
class Readiness:
    stopping: bool
    failed: list[str]   # "NAME: error"
    loading: list[str]  # names of the models in any other state that is not "ready"

    @property
    def ready(self) -> bool:
        return not (self.stopping or self.failed or self.loading)

    def reasons(self) -> list[str]:
        """Why it is not ready, one line per reason (empty when ready)."""
        lines = []
        if self.stopping:
            lines.append("stopping: the daemon finishes the requests it has and refuses new work")
        lines += [f"failed: {entry}" for entry in self.failed]
        lines += [f"loading: {name}" for name in self.loading]
        return lines


def readiness_of(models: Iterable[_Model], stopping: bool) -> Readiness:
    models = list(models)
    failed = [f"{m.name}: {m.error or 'failed'}" for m in models if m.state == "failed"]
    loading = [m.name for m in models if m.state not in ("ready", "failed")]
    return Readiness(stopping, failed, loading)
