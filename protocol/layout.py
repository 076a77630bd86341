"""Region layout math: aligned offsets and byte ranges inside a shared-memory region.

Offsets are multiples of ALIGNMENT so that host<->device copies and vectorised
kernels never start mid cache line (256 also satisfies cudaMalloc's alignment).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

ALIGNMENT = 256


def align_up(n: int, alignment: int = ALIGNMENT) -> int:
    return (n + alignment - 1) // alignment * alignment


def tensor_nbytes(shape: Sequence[int], itemsize: int) -> int:
    """Bytes of a dense tensor; shapes are checked non-negative by the caller."""
    return math.prod(shape) * itemsize


@dataclass(frozen=True, slots=True)
class Slot:
    """One tensor's area in a region: where it starts and how many bytes it may use."""

    name: str
    offset: int
    nbytes: int

    @property
    def end(self) -> int:
        return self.offset + self.nbytes


def plan_slots(sizes: Iterable[tuple[str, int]], start: int = 0) -> tuple[list[Slot], int]:
    """Lay tensors out back to back, each at an aligned offset.

    Returns the slots and the region size they need (itself aligned).
    """
    slots = []
    offset = align_up(start)
    for name, nbytes in sizes:
        slots.append(Slot(name, offset, nbytes))
        offset = align_up(offset + max(nbytes, 0))
    return slots, max(offset, ALIGNMENT)


def first_overlap(ranges: Iterable[tuple[str, int, int]]) -> tuple[str, str] | None:
    """Names of two byte ranges (name, offset, nbytes) that overlap, or None.

    Empty ranges overlap nothing.
    """
    spans = sorted((off, off + n, name) for name, off, n in ranges if n > 0)
    for (_, end_a, name_a), (start_b, _, name_b) in zip(spans, spans[1:]):
        if start_b < end_a:
            return name_a, name_b
    return None
