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
    p.add_argument("--progress", action="store_true",
                   help="INT8: show the calibration's progress on stderr even when it is not a terminal")
    p.set_defaults(func=main)


def _calibration_bar(asked: bool):
    """A tqdm bar over the calibration samples, on stderr, shown on a terminal or when asked;
    (callback, close)."""
    if not (asked or sys.stderr.isatty()):
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(desc="calibration", unit="sample", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)

    def update(done: int, total: int) -> None:
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)  # redrawn at most every mininterval

    return update, bar.close


def main(args: argparse.Namespace) -> int:
    progress, close_bar = _calibration_bar(args.progress) if args.precision == "int8" else (None, lambda: None)
    try:
        # ONNX Runtime's histogram calibrators print their progress (entropy, percentile): not
        # this command's output, which scripts read.
        with contextlib.redirect_stdout(io.StringIO()):
            variant = convert(args.onnx, args.precision, args.calibration, args.calibration_method,
                              args.cache_dir, keep_io_types=not args.fp16_io, int8_target=args.target,
                              progress=progress)
    except (ConvertError, SampleError) as exc:
        close_bar()
        print(f"trtd convert: {exc}", file=sys.stderr)
        return 1
    close_bar()
    print(f"{'cached' if variant.cached else 'converted'}: {variant.path}")
    if args.precision == "int8":
        meta = variant.metadata
        print(f"int8 target {meta['trtd.int8_target']}: weights {meta['trtd.int8_weight_range']}, "
              f"pre-processed: {meta.get('trtd.int8_preprocessed', 'unknown')}")
    if args.output:
        shutil.copyfile(variant.path, args.output)
    return 0
