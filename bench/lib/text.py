"""How numbers and tables look in every report, terminal or Markdown, so that reports read alike."""

from __future__ import annotations

from typing import Iterable, Sequence


def us(value: float | None) -> str:
    """Microseconds: one decimal below 1000, none above; an em dash for a missing figure."""
    if value is None:
        return "—"
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"


def nbytes(n: int) -> str:
    """A size in B, KiB or MiB (three significant digits)."""
    for unit, size in (("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n} B"


def shape(dims: Sequence[int]) -> str:
    return "[" + ",".join(map(str, dims)) + "]"


def text_table(header: Sequence[object], rows: Iterable[Sequence[object]]) -> list[str]:
    """Left-aligned columns for a terminal, a dashed line under the header."""
    rows = list(rows)
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def fmt(cells: Sequence[object]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths))

    return [fmt(header), fmt(["-" * w for w in widths]), *map(fmt, rows)]


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *("| " + " | ".join(r) + " |" for r in rows)]
