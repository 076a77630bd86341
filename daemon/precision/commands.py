"""`trtd convert`: FP16 / calibrated INT8 variants of an ONNX model."""

from __future__ import annotations

import argparse
import shutil
import sys

from .convert import CALIBRATION_METHODS, PRECISIONS, ConvertError, convert
from .samples import SampleError


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="make an FP16 or calibrated INT8 (Q/DQ) variant of an ONNX model")
    p.add_argument("onnx")
    p.add_argument("--precision", required=True, choices=PRECISIONS)
    p.add_argument("--calibration", help="INT8: samples (.npz, or a folder of .npy files)")
    p.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="minmax")
    p.add_argument("--fp16-io", action="store_true", help="FP16: also make inputs/outputs FP16")
    p.add_argument("-o", "--output", help="also copy the variant here")
    p.add_argument("--cache-dir", help="cache root (default: TRTD_CACHE_DIR or the user's cache)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        variant = convert(args.onnx, args.precision, args.calibration, args.calibration_method,
                          args.cache_dir, keep_io_types=not args.fp16_io)
    except (ConvertError, SampleError) as exc:
        print(f"trtd convert: {exc}", file=sys.stderr)
        return 1
    print(f"{'cached' if variant.cached else 'converted'}: {variant.path}")
    if args.output:
        shutil.copyfile(variant.path, args.output)
    return 0
