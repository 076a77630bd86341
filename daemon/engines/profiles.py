"""Optimization profiles: parsing `--profile` specs and checking them against a model's inputs.

A profile gives, per dynamic input, the smallest, the most common and the
largest shape TensorRT must handle: "x:1x3x224x224,8x3x224x224,16x3x224x224"
(min,opt,max). Several profiles let one engine serve, e.g., small latency-bound
and large throughput-bound batches with kernels tuned for each.
"""

from __future__ import annotations

from dataclasses import dataclass


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class InputRange:
    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]


@dataclass(frozen=True)
class Profile:
    inputs: tuple[InputRange, ...]

    def for_input(self, name: str) -> InputRange | None:
        return next((r for r in self.inputs if r.name == name), None)


def _shape(text: str, spec: str) -> tuple[int, ...]:
    try:
        dims = tuple(int(d) for d in text.lower().split("x"))
    except ValueError:
        raise ProfileError(f"profile {spec!r}: {text!r} is not a shape like 1x3x224x224") from None
    if not dims or any(d < 1 for d in dims):
        raise ProfileError(f"profile {spec!r}: dimensions must be positive integers, got {text!r}")
    return dims


def parse_input_range(spec: str) -> InputRange:
    """'NAME:MIN,OPT,MAX' with shapes written 1x3x224x224."""
    name, sep, shapes = spec.rpartition(":")
    parts = shapes.split(",")
    if not sep or not name or len(parts) != 3:
        raise ProfileError(f"profile {spec!r} must be NAME:MIN,OPT,MAX, e.g. x:1x3x224x224,8x3x224x224,16x3x224x224")
    lo, opt, hi = (_shape(p, spec) for p in parts)
    if not (len(lo) == len(opt) == len(hi)):
        raise ProfileError(f"profile {spec!r}: min, opt and max must have the same rank")
    if any(not (a <= b <= c) for a, b, c in zip(lo, opt, hi)):
        raise ProfileError(f"profile {spec!r}: need min <= opt <= max in every dimension")
    return InputRange(name, lo, opt, hi)


def parse_profiles(groups: list[list[str]]) -> list[Profile]:
    """One list of input specs per profile (the CLI's repeated --profile, split per profile)."""
    profiles = []
    for group in groups:
        ranges = [parse_input_range(s) for s in group]
        names = [r.name for r in ranges]
        if len(set(names)) != len(names):
            raise ProfileError(f"a profile names an input twice: {', '.join(names)}")
        profiles.append(Profile(tuple(ranges)))
    return profiles


def check_against_model(profiles: list[Profile], model_inputs: dict[str, list[int]]) -> None:
    """Every dynamic input needs a range in every profile; each range must fit the model's shape.

    model_inputs: name -> shape with -1 for a dynamic dimension.
    """
    dynamic = [n for n, shape in model_inputs.items() if any(d < 0 for d in shape)]
    if dynamic and not profiles:
        raise ProfileError(f"inputs {', '.join(dynamic)} have dynamic dimensions: give a profile for "
                           f"each, e.g. --profile {dynamic[0]}:1x...,8x...,16x...")
    for i, profile in enumerate(profiles):
        for r in profile.inputs:
            if r.name not in model_inputs:
                raise ProfileError(f"profile {i}: the model has no input {r.name!r} (its inputs: "
                                   f"{', '.join(model_inputs)})")
            shape = model_inputs[r.name]
            if len(shape) != len(r.min):
                raise ProfileError(f"profile {i}: input {r.name!r} has rank {len(shape)}, the profile "
                                   f"gives rank {len(r.min)}")
            for axis, want in enumerate(shape):
                if want >= 0 and not (r.min[axis] == r.opt[axis] == r.max[axis] == want):
                    raise ProfileError(f"profile {i}: input {r.name!r} dimension {axis} is fixed at "
                                       f"{want} in the model, the profile asks for "
                                       f"{r.min[axis]}..{r.max[axis]}")
        missing = [n for n in dynamic if profile.for_input(n) is None]
        if missing:
            raise ProfileError(f"profile {i} gives no range for dynamic input(s) {', '.join(missing)}")
