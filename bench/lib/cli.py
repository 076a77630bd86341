"""Command-line conventions every benchmark follows: argument types, and usage errors as exit status 2.

A benchmark's main(argv) returns its exit status instead of raising SystemExit, so that
`trtd bench` and tests can call it; `--` before the options (`trtd bench -- --models ...`)
is dropped.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def int_list(text: str) -> list[int]:
    """Comma-separated integers, each at least 1: sorted, without repeats."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"every value must be at least 1, got {text!r}")
    return sorted(set(values))


def argv_list(argv: Sequence[str] | None) -> list[str]:
    """argv (default sys.argv[1:]) without a leading `--` separator."""
    args = list(sys.argv[1:] if argv is None else argv)
    return args[1:] if args[:1] == ["--"] else args


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | int:
    """The parsed options, or the exit status (0 for --help, 2 for a usage error argparse printed)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2
