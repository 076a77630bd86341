"""Check an infer request against the model and the region before anything runs.

Every check names the tensor and says what was expected and what came, e.g.
"input 'x' expects float32[batch,64], got float64[1,64]". Nothing touches the
region's memory unless every range lies inside it and no two ranges overlap.
"""

from __future__ import annotations

from trtd.protocol import (ALIGNMENT, ErrorCode, Infer, ProtocolError, first_overlap, is_wire_dtype,
                           itemsize)

from .backends import TensorBinding
from .models import LoadedModel
from .regions import Region

MAX_RANK = 16


def _fmt(dtype: str, shape) -> str:
    return f"{dtype}[{','.join('?' if d < 0 else str(d) for d in shape)}]"


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


def bind_request(req: Infer, model: LoadedModel, region: Region
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
        expected = _fmt(spec.dtype, spec.shape)
        got = _fmt(ref.dtype if is_wire_dtype(ref.dtype) else repr(ref.dtype), ref.shape)
        if ref.dtype != spec.dtype:
            raise _invalid(f"input {ref.name!r} expects {expected}, got {got}",
                           expected=spec.dtype, got=ref.dtype)
        if len(ref.shape) != len(spec.shape) or len(ref.shape) > MAX_RANK:
            raise _invalid(f"input {ref.name!r} expects {expected} (rank {len(spec.shape)}), "
                           f"got {got} (rank {len(ref.shape)})")
        for axis, (want, dim) in enumerate(zip(spec.shape, ref.shape)):
            if want >= 0 and dim != want:
                raise _invalid(f"input {ref.name!r} expects {expected}, got {got} "
                               f"(dimension {axis} must be {want})")
            if want < 0 and dim < 1:
                raise _invalid(f"input {ref.name!r}: dimension {axis} is {dim}; dynamic "
                               f"dimensions must be at least 1")
        if backend.max_batch and ref.shape[0] > backend.max_batch:
            raise _invalid(f"input {ref.name!r} has batch {ref.shape[0]}; model {model.name!r} "
                           f"accepts at most {backend.max_batch}")
        needed = itemsize(spec.dtype)
        for dim in ref.shape:
            needed *= dim
        if ref.nbytes != needed:
            raise _invalid(f"input {ref.name!r}: {got} is {needed} bytes, the request says "
                           f"{ref.nbytes}")
        _check_range("input", ref.name, ref.offset, ref.nbytes, region)
        shape = tuple(ref.shape)
        shapes[ref.name] = shape
        inputs.append(TensorBinding(ref.name, np_dtype, shape, base + ref.offset, ref.nbytes))
        ranges.append((f"input '{ref.name}'", ref.offset, ref.nbytes))

    missing = [name for name in model.inputs if name not in shapes]
    if missing:
        raise _invalid(f"missing input(s) {', '.join(map(repr, missing))} for model {model.name!r}")

    if backend.max_batch:
        batches = {s[0] for s in shapes.values()}
        if len(batches) > 1:
            raise _invalid(f"inputs disagree on the batch dimension: {sorted(batches)}")

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
            needed = np_dtype.itemsize
            for dim in shape:
                needed *= dim
            if needed > ref.nbytes:
                raise _invalid(
                    f"output {ref.name!r} will be {_fmt(spec.dtype, shape)} = {needed} bytes, but "
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
