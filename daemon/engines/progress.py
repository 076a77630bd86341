"""How far an engine build has got, as lines starting with PROGRESS ("progress: ...").

The build runs in its own process (worker.py) and says everything on stderr, one line at a
time; build.py relays each line as it comes. Where the library has a progress monitor
(TensorRT's and TensorRT-RTX's `IProgressMonitor`: phases with a number of steps, nested),
the builder attaches `progress_monitor`: a line when a top-level phase starts and ends, and
within a phase at most one a second. Builders without one (ONNX Runtime's optimizer) get the
elapsed time from build.py every HEARTBEAT_S while nothing else is said.

Who shows them: `trtd build` prints them when stderr is a terminal or with --progress; the
daemon puts the latest in the model's `build` state (`trtd status`) and logs one now and then.
"""

from __future__ import annotations

import threading
import time
from typing import Callable

PROGRESS = "progress: "
HEARTBEAT_S = 10.0
_STEP_EVERY_S = 1.0


def is_progress(line: str) -> bool:
    return line.startswith(PROGRESS)


def progress_monitor(trt, log: Callable[[str], None]):
    """An IProgressMonitor of `trt` (the TensorRT or TensorRT-RTX module) that reports through
    `log`; None when the library has no progress monitor. The caller keeps it alive for the
    whole build (TensorRT holds only a pointer) and sets it as `config.progress_monitor`."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class Monitor(base):  # type: ignore[misc, valid-type]
        """TensorRT calls it from several of its threads: one lock around the state."""

        def __init__(self) -> None:
            base.__init__(self)
            self._lock = threading.Lock()
            self._phases: dict[str, tuple[str | None, int]] = {}  # name -> (parent, steps)
            self._last = 0.0

        def _path(self, name: str) -> str:
            parts, seen = [name], {name}
            parent = self._phases.get(name, (None, 0))[0]
            while parent is not None and parent not in seen:
                parts.append(parent)
                seen.add(parent)
                parent = self._phases.get(parent, (None, 0))[0]
            return " > ".join(reversed(parts))

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            with self._lock:
                self._phases[phase_name] = (parent_phase, num_steps)
                if parent_phase is None:
                    log(f"{PROGRESS}{phase_name}: started ({num_steps} step(s))")

        def step_complete(self, phase_name: str, step: int) -> bool:
            with self._lock:
                now = time.monotonic()
                if now - self._last >= _STEP_EVERY_S:
                    self._last = now
                    steps = self._phases.get(phase_name, (None, 0))[1]
                    log(f"{PROGRESS}{self._path(phase_name)}: {step + 1}/{steps}")
            return True  # False would cancel the build: the daemon ends the process instead

        def phase_finish(self, phase_name: str) -> None:
            with self._lock:
                parent = self._phases.pop(phase_name, (None, 0))[0]
                if parent is None:
                    log(f"{PROGRESS}{phase_name}: done")

    return Monitor()
