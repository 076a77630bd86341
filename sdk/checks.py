"""Shape checks the SDK makes before it lays out zero-copy views, against the model's description.

They are the daemon's own checks: both call trtd.protocol's shape_problem and batch_problem
(protocol/shapes.py), so a wrong shape is refused in the daemon's words, e.g.
"input 'x' expects float32[?,64], got [1,65] (dimension 1 must be 64)" (the views take the
model's dtype, so only the given shape is written after "got"), when the views are made, not at
the first run_zero_copy(). They run once per zero_copy_inputs() call, never per request: the
daemon still checks every request.
"""

from __future__ import annotations

from typing import Mapping

from trtd.protocol import ModelInfo, TensorSpec, batch_problem, format_tensor, shape_problem

from .errors import InvalidTensor

Shape = tuple[int, ...]


def expected(spec: TensorSpec) -> str:
    """How the daemon writes a tensor's description: float32[?,64]."""
    return format_tensor(spec.dtype, spec.shape)


def default_shape(spec: TensorSpec) -> Shape:
    """The spec's shape with a dynamic first (batch) dimension as 1; InvalidTensor when another
    dimension is dynamic, since only the caller knows it."""
    shape = tuple(1 if (d < 0 and i == 0) else d for i, d in enumerate(spec.shape))
    if any(d < 0 for d in shape):
        raise InvalidTensor(f"input {spec.name!r} has dynamic dimensions {expected(spec)}; "
                           f"pass its shape: zero_copy_inputs({{{spec.name!r}: (...)}})")
    return shape


def _as_shape(spec: TensorSpec, shape) -> Shape:
    try:
        return tuple(int(d) for d in shape)
    except (TypeError, ValueError):
        raise InvalidTensor(f"input {spec.name!r}: the shape must be a tuple of ints like "
                           f"{format_tensor('', _example(spec))}, got {shape!r}") from None


def _example(spec: TensorSpec) -> Shape:
    return tuple(1 if d < 0 else d for d in spec.shape)


def check_shape(spec: TensorSpec, shape, info: ModelInfo) -> Shape:
    """`shape` as a tuple when the model takes it for input `spec`; else InvalidTensor saying
    which dimension is wrong (the daemon's check and wording: trtd.protocol.shape_problem)."""
    shape = _as_shape(spec, shape)
    problem = shape_problem(spec.name, spec.dtype, spec.shape, shape, info.max_batch, info.name)
    if problem:
        raise InvalidTensor(problem)
    return shape


def zero_copy_shapes(info: ModelInfo, shapes: Mapping[str, object] | None) -> dict[str, Shape]:
    """Every input's shape for zero-copy views: those given (checked), the others by default."""
    given = dict(shapes or {})
    unknown = sorted(set(given) - {spec.name for spec in info.inputs})
    if unknown:
        raise InvalidTensor(f"model {info.name!r} has no input(s) {unknown}; its inputs are: "
                           f"{', '.join(spec.name for spec in info.inputs)}")
    result = {spec.name: check_shape(spec, given[spec.name], info) if spec.name in given
              else default_shape(spec) for spec in info.inputs}
    if info.max_batch:
        problem = batch_problem(result)
        if problem:
            raise InvalidTensor(problem)
    return result
