"""`trtd convert`: FP16 / calibrated INT8 variants of an ONNX model."""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys

from trtd.daemon.precision.convert import CALIBRATION_METHODS, INT8_TARGETS, PRECISIONS, ConvertError, convert
from trtd.daemon.precision.samples import SampleError


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="make an FP16 or calibrated INT8 (Q/DQ) variant of an ONNX model")
    p.add_argument("onnx")
    p.add_argument("--precision", required=True, choices=PRECISIONS)
    p.add_argument("--calibration", help="INT8: samples (.npz, or a folder of .npy files)")
    p.add_argument("--calibration-method", choices=CALIBRATION_METHODS, default="minmax")
    p.add_argument("--target", choices=INT8_TARGETS, default="portable",
                   help="INT8: 'portable' (default) runs accurately on ONNX Runtime on every x86 CPU and "
                        "builds in TensorRT (7-bit weights); 'tensorrt' keeps 8-bit weights for a TensorRT "
                        "engine, but ONNX Runtime on x86 CPUs without VNNI computes it with saturated sums")
    p.add_argument("--fp16-io", action="store_true", help="FP16: also make inputs/outputs FP16")
    p.add_argument("-o", "--output", help="also copy the variant here")
    p.add_argument("--cache-dir", help="cache root (default: TRTD_CACHE_DIR or the user's cache)")
    p.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    try:
        # ONNX Runtime's histogram calibrators print their progress (entropy, percentile): not
        # this command's output, which scripts read.
        with contextlib.redirect_stdout(io.StringIO()):
            variant = convert(args.onnx, args.precision, args.calibration, args.calibration_method,
                              args.cache_dir, keep_io_types=not args.fp16_io, int8_target=args.target)
    except (ConvertError, SampleError) as exc:
        print(f"trtd convert: {exc}", file=sys.stderr)
        return 1
    print(f"{'cached' if variant.cached else 'converted'}: {variant.path}")
    if args.precision == "int8":
        meta = variant.metadata
        print(f"int8 target {meta['trtd.int8_target']}: weights {meta['trtd.int8_weight_range']}, "
              f"pre-processed: {meta.get('trtd.int8_preprocessed', 'unknown')}")
    if args.output:
        shutil.copyfile(variant.path, args.output)
    return 0
