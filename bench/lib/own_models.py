"""The user's own ONNX models (`--model NAME=PATH [--shape NAME:INPUT=DIMS]`) as BenchModels.

    trtd bench --model mine=tiny.onnx [--shape mine:x=1x3x224x224] ...

A model given with `--model NAME=PATH` is described from the file itself (ONNX Runtime's view of
its inputs: names, dtypes, shapes). Its fixed dimensions are used as they are; a dynamic first
dimension (the batch) is 1 unless `--shape` says otherwise, the way the SDK's zero-copy views
default; any other dynamic dimension must be given with `--shape NAME:INPUT=DIMS` (the whole
shape, dims separated by `x`), or the benchmark stops before starting anything and says which
input and which dimension. Output shapes are found by running the model once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from .workloads import BenchModel, Tensor

SHAPE_SYNTAX = "NAME:INPUT=DIMS, e.g. mine:x=1x3x224x224"


def parse_model_flag(text: str) -> tuple[str, str]:
    """`--model NAME=PATH`."""
    name, sep, path = text.partition("=")
    if not sep or not name.strip() or not path.strip():
        raise ValueError(f"--model {text!r}: expected NAME=PATH, e.g. --model mine=models/mine.onnx")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name.strip()):
        raise ValueError(f"--model {text!r}: the name may use letters, digits, '_', '.' and '-'")
    return name.strip(), path.strip()


def parse_shape_flag(text: str) -> tuple[str, str, tuple[int, ...]]:
    """`--shape NAME:INPUT=DIMS`, DIMS like 1x3x224x224."""
    target, sep, dims = text.rpartition("=")
    model, colon, input_name = target.partition(":")
    if not sep or not colon or not model or not input_name:
        raise ValueError(f"--shape {text!r}: expected {SHAPE_SYNTAX}")
    try:
        shape = tuple(int(d) for d in dims.lower().split("x")) if dims else ()
    except ValueError:
        raise ValueError(f"--shape {text!r}: dimensions are whole numbers separated by 'x' "
                         f"({SHAPE_SYNTAX})") from None
    if any(d < 1 for d in shape):
        raise ValueError(f"--shape {text!r}: every dimension must be at least 1")
    return model, input_name, shape


@dataclass(frozen=True)
class _OnnxInput:
    name: str
    dtype: str
    dims: tuple[int | str | None, ...]  # an int is fixed; a str names a dynamic dimension

    def describe(self) -> str:
        return "[" + ", ".join(str(d) if d is not None else "?" for d in self.dims) + "]"


def _wire_dtype(model: str, tensor: str, ort_type: str) -> str:
    from trtd.daemon.backends.onnxruntime import wire_dtype

    dtype = wire_dtype(ort_type)  # the backend's table: what the daemon will serve
    if dtype is None:
        raise ValueError(f"model {model!r}: tensor {tensor!r} has type {ort_type}, which trtd's "
                         f"protocol does not carry")
    return dtype


def _session(path: str) -> Any:
    import onnxruntime as ort

    from trtd.daemon.backends.onnxruntime import session_options

    # One thread: the model is only described here, the timed sessions are the daemon's. Quiet:
    # a failure here becomes our own message.
    return ort.InferenceSession(path, session_options(intra_op_threads=1, quiet=True),
                                providers=["CPUExecutionProvider"])


def _dim_text(dim: int | str | None) -> str:
    return str(dim) if isinstance(dim, int) else f"<{dim or '?'}>"


def _check_given(model: str, spec: _OnnxInput, given: tuple[int, ...], bound: dict[str, tuple[int, str]]) -> None:
    """A --shape against the model's fixed dims; binds its named dims (shared by other inputs)."""
    if len(given) != len(spec.dims):
        raise ValueError(f"--shape {model}:{spec.name}: the input has {len(spec.dims)} dimensions "
                         f"{spec.describe()}, the shape gives {len(given)}")
    for i, (dim, value) in enumerate(zip(spec.dims, given)):
        if isinstance(dim, int) and dim != value:
            raise ValueError(f"--shape {model}:{spec.name}: dimension {i} is fixed at {dim} in the "
                             f"model {spec.describe()}, the shape gives {value}")
        if isinstance(dim, str):
            earlier, where = bound.setdefault(dim, (value, spec.name))
            if earlier != value:
                raise ValueError(f"--shape {model}:{spec.name}: dimension '{dim}' is {earlier} in "
                                 f"input '{where}' and {value} here; the model names them as one")


def _default_shape(model: str, spec: _OnnxInput, bound: dict[str, tuple[int, str]]) -> tuple[int, ...]:
    """An input without --shape: fixed dims, named dims another input fixed, the batch 1."""
    shape: list[int] = []
    for i, dim in enumerate(spec.dims):
        if isinstance(dim, int):
            shape.append(dim)
        elif dim in bound:
            shape.append(bound[dim][0])
        elif i == 0:
            shape.append(1)  # the batch, as the SDK's zero-copy views default
            if dim:
                bound[dim] = (1, spec.name)
        else:
            example = "x".join(str(shape[0]) if j == 0 else _dim_text(d) for j, d in enumerate(spec.dims))
            label = f" ('{dim}')" if dim else ""
            raise ValueError(f"model {model!r}: input '{spec.name}' {spec.describe()}: dimension {i}{label} "
                             f"is dynamic and no size was given; give the whole shape with "
                             f"--shape {model}:{spec.name}={example}")
    return tuple(shape)


def resolve_shapes(model: str, specs: list[_OnnxInput],
                   given: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Every input's concrete shape: the user's (--shape) first, then the defaults."""
    bound: dict[str, tuple[int, str]] = {}  # a named dim -> its size, and the input that set it
    for spec in specs:
        if spec.name in given:
            _check_given(model, spec, given[spec.name], bound)
    return {s.name: given[s.name] if s.name in given else _default_shape(model, s, bound) for s in specs}


def describe_onnx(name: str, path: str, shapes: dict[str, tuple[int, ...]]) -> BenchModel:
    """`name` served from the ONNX file `path`, with every input's shape made concrete."""
    if not Path(path).is_file():
        raise ValueError(f"--model {name}={path}: {path} does not exist")
    try:
        session = _session(path)
    except Exception as exc:
        raise ValueError(f"--model {name}={path}: ONNX Runtime cannot load it: {exc}") from None
    specs = [_OnnxInput(a.name, _wire_dtype(name, a.name, a.type),
                        tuple(d if isinstance(d, int) and d >= 0 else (d if isinstance(d, str) else None)
                              for d in a.shape))
             for a in session.get_inputs()]
    unknown = sorted(set(shapes) - {s.name for s in specs})
    if unknown:
        raise ValueError(f"--shape {name}:{unknown[0]}: model {name!r} has no input {unknown[0]!r} "
                         f"(its inputs: {', '.join(s.name for s in specs)})")
    resolved = resolve_shapes(name, specs, shapes)
    inputs = tuple(Tensor(s.name, s.dtype, resolved[s.name]) for s in specs)
    model = BenchModel(name, inputs, (), heavy=True, path=str(Path(path).resolve()))
    # The output shapes, from one run on the benchmark's own inputs.
    try:
        results = session.run(None, model.make_inputs())
    except Exception as exc:
        raise ValueError(f"model {name!r} does not run with {', '.join(t.text() for t in inputs)} "
                         f"(give other shapes with --shape {SHAPE_SYNTAX.split(', ')[0]}): "
                         f"{str(exc).splitlines()[0]}") from None
    outputs = tuple(Tensor(o.name, _wire_dtype(name, o.name, o.type), tuple(r.shape))
                    for o, r in zip(session.get_outputs(), results))
    return BenchModel(name, inputs, outputs, heavy=True, path=model.path)


def own_models(model_flags: Iterable[str], shape_flags: Iterable[str],
               builtin_names: Iterable[str]) -> list[BenchModel]:
    """The models of `--model NAME=PATH` flags, shaped by the `--shape` flags."""
    builtin = set(builtin_names)
    named: dict[str, str] = {}
    for flag in model_flags:
        name, path = parse_model_flag(flag)
        if name in builtin:
            raise ValueError(f"--model {flag}: {name!r} is a built-in model's name; choose another")
        if name in named:
            raise ValueError(f"--model {flag}: {name!r} is given twice")
        named[name] = path
    shapes: dict[str, dict[str, tuple[int, ...]]] = {}
    for flag in shape_flags:
        model, input_name, shape = parse_shape_flag(flag)
        if model not in named:
            where = ("built-in models have fixed shapes" if model in builtin else
                     f"models given with --model: {', '.join(named) or 'none'}")
            raise ValueError(f"--shape {flag}: no model {model!r} to shape ({where})")
        shapes.setdefault(model, {})[input_name] = shape
    return [describe_onnx(name, path, shapes.get(name, {})) for name, path in named.items()]
