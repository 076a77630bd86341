"""Bind an infer request: check it against the model and the region before anything runs.

Every check names the tensor and says what was expected and what came, e.g.
"input 'x' expects float32[batch,64], got float64[1,64]". Nothing touches the
region's memory unless every range lies inside it and no two ranges overlap.
"""

from __future__ import annotations

from trtd.protocol import (ALIGNMENT, ErrorCode, Infer, ProtocolError, batch_problem, first_overlap,
                           format_tensor, is_wire_dtype, itemsize, shape_problem)
from trtd.protocol.layout import tensor_nbytes

from trtd.daemon.backends import TensorBinding
from trtd.daemon.running.registry import ServedModel
from trtd.daemon.core.regions import Region


def _invalid(message: str, code: ErrorCode = ErrorCode.INVALID_TENSOR, **details) -> ProtocolError:
    return ProtocolError(code, message, details)


def _check_range(kind: str, name: str, offset: int, nbytes: int, region: Region) -> None:
    if offset < 0 or nbytes < 0 or offset + nbytes > region.nbytes:
        raise _invalid(
            f"{kind} '{name}' spans bytes [{offset}, {offset + nbytes}) but region "
            f"{region.name!r} holds {region.nbytes} bytes",
            ErrorCode.OUT_OF_BOUNDS, offset=offset, nbytes=nbytes, region_nbytes=region.nbytes,
        )
    if offset % ALIGNMENT:
        raise _invalid(f"{kind} '{name}' offset {offset} is not a multiple of {ALIGNMENT}",
                       ErrorCode.OUT_OF_BOUNDS)


def bind_request(req: Infer, model: ServedModel, region: Region
                 ) -> tuple[list[TensorBinding], list[TensorBinding]]:
    backend = model.backend
    base = region.address
    inputs: list[TensorBinding] = []
    shapes: dict[str, tuple[int, ...]] = {}
    ranges = []

    for ref in req.inputs:
        entry = model.inputs.get(ref.name)
        if entry is None:
            raise _invalid(f"model {model.name!r} has no input {ref.name!r}; its inputs are: "
                           f"{', '.join(model.inputs)}")
        if ref.name in shapes:
            raise _invalid(f"input {ref.name!r} is given twice")
        spec, np_dtype = entry
        if ref.dtype != spec.dtype:
            got = format_tensor(ref.dtype if is_wire_dtype(ref.dtype) else repr(ref.dtype), ref.shape)
            raise _invalid(f"input {ref.name!r} expects {format_tensor(spec.dtype, spec.shape)}, "
                           f"got {got}", expected=spec.dtype, got=ref.dtype)
        # The same checks (and words) as the SDK's for zero-copy views: trtd.protocol.shapes.
        problem = shape_problem(ref.name, spec.dtype, spec.shape, ref.shape, backend.max_batch,
                                model.name, spec.dtype)
        if problem:
            raise _invalid(problem)
        needed = tensor_nbytes(ref.shape, itemsize(spec.dtype))
        if ref.nbytes != needed:
            raise _invalid(f"input {ref.name!r}: {format_tensor(spec.dtype, ref.shape)} is {needed} "
                           f"bytes, the request says {ref.nbytes}")
        _check_range("input", ref.name, ref.offset, ref.nbytes, region)
        shape = tuple(ref.shape)
        shapes[ref.name] = shape
        inputs.append(TensorBinding(ref.name, np_dtype, shape, base + ref.offset, ref.nbytes))
        ranges.append((f"input '{ref.name}'", ref.offset, ref.nbytes))

    missing = [name for name in model.inputs if name not in shapes]
    if missing:
        raise _invalid(f"missing input(s) {', '.join(map(repr, missing))} for model {model.name!r}")

    if backend.max_batch:
        problem = batch_problem(shapes)
        if problem:
            raise _invalid(problem)

    if not req.outputs:
        raise _invalid(f"the request names no outputs; model {model.name!r} has: "
                       f"{', '.join(model.outputs)}")
    predicted = backend.output_shapes(shapes)
    outputs: list[TensorBinding] = []
    seen = set()
    for ref in req.outputs:
        entry = model.outputs.get(ref.name)
        if entry is None:
            raise _invalid(f"model {model.name!r} has no output {ref.name!r}; its outputs are: "
                           f"{', '.join(model.outputs)}")
        if ref.name in seen:
            raise _invalid(f"output {ref.name!r} is given twice")
        seen.add(ref.name)
        spec, np_dtype = entry
        _check_range("output", ref.name, ref.offset, ref.nbytes, region)
        shape = predicted.get(ref.name)
        if shape is not None:
            needed = tensor_nbytes(shape, np_dtype.itemsize)
            if needed > ref.nbytes:
                raise _invalid(
                    f"output {ref.name!r} will be {format_tensor(spec.dtype, shape)} = {needed} bytes, but "
                    f"its area holds {ref.nbytes}; give it at least {needed} bytes",
                    ErrorCode.OUTPUT_TOO_LARGE, output=ref.name, needed=needed, capacity=ref.nbytes,
                )
        outputs.append(TensorBinding(ref.name, np_dtype, shape, base + ref.offset, ref.nbytes))
        ranges.append((f"output '{ref.name}'", ref.offset, ref.nbytes))

    clash = first_overlap(ranges)
    if clash:
        raise _invalid(f"{clash[0]} and {clash[1]} overlap in the region; give each tensor its "
                       f"own range", ErrorCode.OVERLAP)
    return inputs, outputs


# Plans kept per region: a steady client sends the same few layouts over and over.
_PLANS_PER_REGION = 16


def bind_cached(req: Infer, model: ServedModel, region: Region
                ) -> tuple[list[TensorBinding], list[TensorBinding]]:
    """bind_request, looked up instead of re-checked when this region has seen the same layout
    for the same backend. What the checks read is all in the key (names, dtypes, shapes,
    offsets, sizes), the backend (its specs and max_batch; a swap or reload brings a new one)
    and the region (its size never changes): so a hit is exactly what binding again would
    return. Bindings are read-only to everything downstream, so they are shared."""
    key = (tuple((r.name, r.dtype, tuple(r.shape), r.offset, r.nbytes) for r in req.inputs),
           tuple((r.name, r.offset, r.nbytes) for r in req.outputs))
    plans = region.plans
    hit = plans.get(key)
    if hit is not None and hit[0] is model.backend:
        return hit[1], hit[2]
    inputs, outputs = bind_request(req, model, region)
    if len(plans) >= _PLANS_PER_REGION:
        plans.clear()  # a client cycling through layouts: start over rather than grow
    plans[key] = (model.backend, inputs, outputs)
    return inputs, outputs
