"""Shape checks of a tensor against the model's description: one text for the daemon and the SDK.

The daemon checks every infer request with these (daemon/core/binding.py); the SDK checks the
shapes of zero-copy views with them when the views are made (sdk/checks.py). A wrong shape is
therefore refused in the same words wherever it is refused, e.g.
"input 'x' expects float32[?,64], got float32[1,65] (dimension 1 must be 64)".

Pure functions: each returns the problem as text, or None when there is none, and the caller
raises its own error type (ProtocolError INVALID_TENSOR in the daemon, InvalidInput in the SDK).
Nothing is formatted or allocated unless there is a problem: the daemon calls them per request.
"""

from __future__ import annotations

from typing import Collection, Mapping, Sequence

# The most dimensions a tensor may have (the daemon refuses more, whatever the model says).
MAX_RANK = 16


def format_tensor(dtype: str, shape: Sequence[int]) -> str:
    """A tensor as the messages write it: float32[?,64], a dynamic (negative) dimension as '?';
    with dtype "" only the dimensions: [?,64]."""
    return f"{dtype}[{','.join('?' if d < 0 else str(d) for d in shape)}]"


def shape_problem(name: str, dtype: str, expected: Sequence[int], shape: Sequence[int],
                  max_batch: int = 0, model: str = "", got_dtype: str = "") -> str | None:
    """What is wrong with `shape` for input `name` of the model (`dtype`, `expected` with -1 for a
    dynamic dimension, `max_batch` 0 for none), or None: the rank (and MAX_RANK), each fixed
    dimension, dynamic dimensions at least 1, the batch at most max_batch.

    got_dtype: the dtype written before the given shape in the message ("got float32[1,65]");
    "" writes the shape alone ("got [1,65]"), for a caller that was given only a shape.
    """
    rank = len(shape)
    if rank != len(expected) or rank > MAX_RANK:
        return (f"input {name!r} expects {format_tensor(dtype, expected)} (rank {len(expected)}), "
                f"got {format_tensor(got_dtype, shape)} (rank {rank})")
    for axis, want in enumerate(expected):
        dim = shape[axis]
        if want >= 0:
            if dim != want:
                return (f"input {name!r} expects {format_tensor(dtype, expected)}, got "
                        f"{format_tensor(got_dtype, shape)} (dimension {axis} must be {want})")
        elif dim < 1:
            return (f"input {name!r}: dimension {axis} is {dim}; dynamic dimensions must be at "
                    f"least 1")
    if max_batch and rank and shape[0] > max_batch:
        return f"input {name!r} has batch {shape[0]}; model {model!r} accepts at most {max_batch}"
    return None


def batch_problem(shapes: Mapping[str, Sequence[int]]) -> str | None:
    """For a model with a batch dimension: None when every input's first dimension (the batch)
    is the same, else which input has which batch. Inputs without dimensions are left out."""
    batches = {name: shape[0] for name, shape in shapes.items() if shape}
    if len(set(batches.values())) <= 1:
        return None
    found = ", ".join(f"{name!r} has {batch}" for name, batch in batches.items())
    return f"inputs disagree on the batch dimension (the first): {found}; give them all the same batch"
