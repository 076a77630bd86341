"""Progress on stderr, never on stdout: stdout carries the results a user may pipe elsewhere."""

from __future__ import annotations

import sys
from typing import Any


class Progress:
    """One updating line on a terminal; start and end lines otherwise (logs stay readable)."""

    def __init__(self) -> None:
        self._tty = sys.stderr.isatty()
        self._what = ""

    def start(self, what: str) -> None:
        self._what = what
        if not self._tty:
            print(f"{what} ...", file=sys.stderr, flush=True)

    def update(self, done: int, total: int) -> None:
        if self._tty:
            print(f"\r{self._what}: {done}/{total}", end="", file=sys.stderr, flush=True)

    def done(self, note: str = "done") -> None:
        print(f"\r{self._what}: {note}" if self._tty else f"{self._what}: {note}",
              file=sys.stderr, flush=True)


def progress_bar(total: int, unit: str = "point") -> Any:
    """A tqdm bar for `total` steps, shown only on a terminal (None: tqdm decides by isatty)."""
    from tqdm import tqdm

    return tqdm(total=total, unit=unit, file=sys.stderr, dynamic_ncols=True, disable=None)
