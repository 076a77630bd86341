"""Which models a run benchmarks, and how many iterations each gets (the latency options).

`python -m trtd.bench.latency` and `trtd bench` take the same model options (--models, and the
user's own --model/--shape) and the same defaults, so that their single-client figures are
comparable; both build their plans here.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from .interleave import Schedule
from .workloads import MODELS, BenchModel

DEFAULT_ITERATIONS = {False: 2000, True: 200}  # by BenchModel.heavy
DEFAULT_BLOCK = {False: 50, True: 20}
DEFAULT_SETTLE = 2


@dataclass(frozen=True)
class Plan(Schedule):
    """One model and its schedule."""

    model: BenchModel


def add_own_model_options(parser: argparse.ArgumentParser) -> None:
    """--model NAME=PATH and --shape NAME:INPUT=DIMS: the user's own ONNX models, beside the built-ins."""
    parser.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                        help="also benchmark your own ONNX model PATH, served as NAME; repeatable. Its "
                             "inputs come from the model (seeded random data); a dynamic first "
                             "dimension is 1 unless --shape says otherwise")
    parser.add_argument("--shape", action="append", default=[], metavar="NAME:INPUT=DIMS",
                        help="the shape INPUT of model NAME runs with, e.g. mine:x=1x3x224x224; "
                             "needed for every dynamic dimension but the first; repeatable")


def selected_models(args: argparse.Namespace, default: str) -> str:
    """--models as given; else `default`, or no built-in at all when the user brought models."""
    if args.models is not None:
        return str(args.models)
    return "" if args.model else default


def make_plans(args: argparse.Namespace, own: tuple[BenchModel, ...] = ()) -> list[Plan]:
    """Plans for the built-in models named in args.models, then for `own` (the user's models).

    ValueError (a usage error) for an unknown name, with a hint when it looks like a file."""
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODELS]
    if unknown or not (names or own):
        files = [n for n in unknown if n.lower().endswith(".onnx") or "/" in n]
        hint = (f"; to benchmark your own ONNX model use --model NAME=PATH, e.g. --model "
                f"{Path(files[0]).stem}={files[0]}" if files else
                "; your own ONNX model: --model NAME=PATH")
        raise ValueError(f"unknown model(s) {', '.join(unknown) or '(none given)'}; "
                         f"choose from {', '.join(MODELS)}{hint}")
    plans = []
    for model in [MODELS[name] for name in dict.fromkeys(names)] + list(own):  # dict: drops repeats
        iterations = args.iterations or DEFAULT_ITERATIONS[model.heavy]
        warmup = args.warmup if args.warmup is not None else max(10, iterations // 10)
        block = min(args.block or DEFAULT_BLOCK[model.heavy], iterations)
        plans.append(Plan(iterations=iterations, warmup=warmup, block=block, settle=args.settle,
                          model=model))
    return plans
