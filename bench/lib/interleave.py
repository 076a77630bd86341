"""Timing several systems in one run, interleaved, so that machine noise falls on all alike.

Warm-up iterations run first for every system and are discarded. Timed iterations run in
blocks, round robin across the systems with the starting system rotated each round, so that
other processes, frequency changes and heat fall on all systems instead of on whichever ran
last. Each block starts with `settle` untimed iterations: the first calls after a switch pay
for the switch itself (caches refilled, a peer process woken from sleep, and on few cores the
previous system's thread pool still spinning: the first resnet18 calls after a switch took
twice as long on a 2-core machine), an artefact of interleaving, not a steady-state cost of
any system. The garbage collector is off while timing.
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

from .progress import Progress


@dataclass(frozen=True)
class Schedule:
    """How many iterations each system gets, and how they are interleaved."""

    iterations: int  # timed, per system
    warmup: int      # discarded, per system, before any timing
    block: int       # timed iterations of one system in a row
    settle: int      # untimed iterations at the start of every block


@contextmanager
def gc_paused() -> Iterator[None]:
    """No collection while timing: one landing in one system's sample would be charged to it alone."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def measure(steps: dict[str, Callable[[], object]], schedule: Schedule,
            progress: Progress) -> dict[str, list[int]]:
    """Warm every system up, then time them in interleaved round-robin blocks (ns per call)."""
    return measure_blocks({name: local_block(step) for name, step in steps.items()}, schedule, progress)


# A system timed in blocks: (n, settle) -> n samples in ns, after `settle` untimed calls. It
# may time itself elsewhere (another process: the C++ client's latency loop).
Block = Callable[[int, int], list[int]]


def local_block(step: Callable[[], object]) -> Block:
    """A call of this process as a Block, timed as measure() times it."""
    clock = time.perf_counter_ns

    def run(n: int, settle: int) -> list[int]:
        for _ in range(settle):
            step()
        out = []
        for _ in range(n):
            t0 = clock()
            step()
            out.append(clock() - t0)
        return out

    return run


def measure_blocks(blocks: dict[str, Block], schedule: Schedule, progress: Progress) -> dict[str, list[int]]:
    """Warm every Block up, then time them in interleaved round-robin blocks of
    schedule.block samples, each after schedule.settle untimed calls."""
    for block in blocks.values():
        block(schedule.warmup, 0)
    samples: dict[str, list[int]] = {name: [] for name in blocks}
    order = list(blocks)
    done = 0
    with gc_paused():
        for rnd in range((schedule.iterations + schedule.block - 1) // schedule.block):
            n = min(schedule.block, schedule.iterations - done)
            # Rotate who goes first so no system always runs right after the same other one
            # (e.g. while the previous system's thread pool is still spinning down).
            shift = rnd % len(order)
            for name in order[shift:] + order[:shift]:
                samples[name].extend(blocks[name](n, schedule.settle))
            done += n
            progress.update(done, schedule.iterations)
    return samples
