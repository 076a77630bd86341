"""How far one system's outputs are from another's: a benchmark that times a wrong answer proves nothing.

Every benchmark checks, once before timing, that the systems it compares compute the same thing.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


def max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference (float64); inf for different shapes; NaN stays NaN."""
    if a.shape != b.shape:
        return float("inf")
    return float(np.max(np.abs(a.astype(np.float64) - b), initial=0.0))


def outputs_by_name(result: np.ndarray | Mapping[str, np.ndarray], names: list[str]) -> dict[str, np.ndarray]:
    """The SDK's result (an array for one output, else a dict) as {output name: array}."""
    return dict(result) if isinstance(result, Mapping) else {names[0]: result}


def max_output_diff(got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray]) -> float:
    """max_abs_diff over every output; inf when the outputs are not the same set."""
    if set(got) != set(expected):
        return float("inf")
    return max((max_abs_diff(got[name], expected[name]) for name in expected), default=0.0)


def rel_l2(got: np.ndarray, ref: np.ndarray) -> float:
    """||got - ref|| / ||ref|| in float64 (a zero reference counts as 1e-30)."""
    return float(np.linalg.norm(got.astype(np.float64) - ref) / max(float(np.linalg.norm(ref)), 1e-30))
