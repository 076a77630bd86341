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
    """Left-aligned columns for a terminal, a dashed line under the header (tabulate "simple";
    the cells are formatted already: tabulate must not re-read them as numbers)."""
    from tabulate import tabulate

    rows = [[str(c) for c in row] for row in rows]
    return tabulate(rows, headers=[str(h) for h in header], tablefmt="simple", stralign="left",
                    disable_numparse=True).splitlines()


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A GitHub Markdown table (tabulate "github"): columns padded to line up in the source too."""
    from tabulate import tabulate

    return tabulate([list(r) for r in rows], headers=list(header), tablefmt="github",
                    disable_numparse=True).splitlines()
