"""FP32 vs FP16 vs INT8 (calibrated) vs INT8 (naive ranges) on the two trained models, ONNX Runtime CPU.

    python -m trtd.bench.precision [--markdown PATH] [--json PATH]

"INT8 naive" is calibrated on standard-normal noise instead of real data: it
stands in for "no calibration", which TensorRT 11 no longer offers. Every
metric compares a variant with the FP32 model on held-out data from the
training distribution; the classifier also reports accuracy against the true
labels, the segmenter Dice against the true masks.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .lib.meta import command
from .lib.results import write_json, write_text
from .lib.stats import percentiles_us, time_calls

MODELS = Path(__file__).parent / "models"


def _latency_us(session: Any, feed: dict[str, np.ndarray], n: int = 50) -> float:
    """p50 µs of one session call on `feed`, after 5 discarded calls."""
    return percentiles_us(time_calls(lambda: session.run(None, feed), n, 5), 50)[0]


def _variants(onnx_path: Path, calib: np.ndarray, tmp: Path) -> dict[str, Path]:
    from trtd.daemon.precision.convert import convert

    real, noise = tmp / f"{onnx_path.stem}-calib.npz", tmp / f"{onnx_path.stem}-noise.npz"
    np.savez(real, x=calib)
    np.savez(noise, x=np.random.default_rng(99).standard_normal(calib.shape).astype(np.float32))
    cache = tmp / "cache"
    return {
        "fp32": onnx_path,
        "fp16": convert(onnx_path, "fp16", cache_root=cache).path,
        "int8 calibrated (minmax)": convert(onnx_path, "int8", real, "minmax", cache_root=cache).path,
        "int8 calibrated (entropy)": convert(onnx_path, "int8", real, "entropy", cache_root=cache).path,
        "int8 calibrated (percentile)": convert(onnx_path, "int8", real, "percentile", cache_root=cache).path,
        "int8 naive (noise ranges)": convert(onnx_path, "int8", noise, "minmax", cache_root=cache).path,
    }


def _compare_variants(model: str, calib: np.ndarray, data: np.ndarray, tmp: Path,
                      extra_row: Callable[[np.ndarray, np.ndarray], dict[str, float]],
                      batched: bool, n: int) -> dict[str, dict[str, float]]:
    """Every variant of `model` on `data`, against the FP32 output: shared metrics plus extra_row's."""
    import onnxruntime as ort

    from trtd.daemon.precision.metrics import value_metrics

    rows, ref = {}, None
    for name, path in _variants(MODELS / f"{model}.onnx", calib, tmp).items():
        s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        out = (s.run(None, {"x": data})[0] if batched else
               np.concatenate([s.run(None, {"x": data[i:i + 1]})[0] for i in range(len(data))]))
        ref = out if ref is None else ref
        row = value_metrics(out, ref)
        row.update(extra_row(out, ref))
        row["latency_b1_p50_us"] = _latency_us(s, {"x": data[:1]}, n=n)
        rows[name] = row
    return rows


def run() -> dict[str, Any]:
    from trtd.daemon.precision.datasets import shapes, spheres
    from trtd.daemon.precision.metrics import dice, mask_metrics, top1_agreement

    results = {}
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        # Classifier: 512 held-out images; calibration on 64 others.
        x, labels = shapes(512, seed=5)

        def classifier_row(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
            return {"top1_vs_fp32": top1_agreement(out, ref), "accuracy": float((out.argmax(1) == labels).mean())}

        results["shapes_classifier"] = _compare_variants(
            "shapes_classifier", shapes(64, seed=6)[0], x, tmp, classifier_row, batched=True, n=50)
        # Segmenter: 6 held-out volumes; calibration on 8 others.
        v, masks = spheres(6, seed=7)

        def segmenter_row(out: np.ndarray, ref: np.ndarray) -> dict[str, float]:
            row = {f"{k}_vs_fp32": val for k, val in mask_metrics(out, ref, 0.5, None).items()}
            row["dice_vs_truth"] = float(np.mean([dice(o[0] > 0.5, m[0] > 0.5) for o, m in zip(out, masks)]))
            return row

        results["spheres_segmenter"] = _compare_variants(
            "spheres_segmenter", spheres(8, seed=8)[0], v, tmp, segmenter_row, batched=False, n=20)
    return results


def run_gpu(device: str) -> dict[str, Any]:
    """FP16 where ONNX Runtime's CPU provider has no FP16 kernels: torch on the GPU, FP32 vs .half()."""
    import torch

    from trtd.daemon.precision.datasets import shapes, spheres
    from trtd.daemon.precision.metrics import mask_metrics, top1_agreement, value_metrics

    def timed(fn: Callable[[], object], n: int = 50) -> float:
        """p50 µs of fn() until the GPU is done (synchronized), after 10 discarded calls."""
        def finished() -> None:
            fn()
            torch.cuda.synchronize()

        return percentiles_us(time_calls(finished, n, 10), 50)[0]

    out = {}
    for name, data in (("shapes_classifier", shapes(512, seed=5)[0]), ("spheres_segmenter", spheres(6, seed=7)[0])):
        module = torch.jit.load(str(MODELS / f"{name}.pt"), map_location=device).eval()
        x = torch.from_numpy(data).to(device)
        with torch.inference_mode():
            ref = torch.cat([module(x[i:i + 1]) for i in range(len(x))]).float().cpu().numpy()
            half = module.half()
            got = torch.cat([half(x[i:i + 1].half()) for i in range(len(x))]).float().cpu().numpy()
            row = value_metrics(got, ref)
            if name == "shapes_classifier":
                row["top1_vs_fp32"] = top1_agreement(got, ref)
            else:
                row.update({f"{k}_vs_fp32": v for k, v in mask_metrics(got, ref, 0.5, None).items()})
            row["latency_fp16_b1_p50_us"] = timed(lambda: half(x[:1].half()))
            fp32 = torch.jit.load(str(MODELS / f"{name}.pt"), map_location=device).eval()
            row["latency_fp32_b1_p50_us"] = timed(lambda: fp32(x[:1]))
        out[name] = row
    return out


def render(results: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = ["# FP32 / FP16 / INT8 on ONNX Runtime CPU (trained demonstration models)", "",
             f"{meta['date']} on {meta['machine']}; onnxruntime {meta['onnxruntime']}, numpy {meta['numpy']}, "
             f"Python {meta['python']}.", "", f"Command: `{meta['command']}`", "",
             "All metrics compare each variant with the FP32 model on held-out data from the training "
             "distribution (trtd.daemon.precision.datasets); latency is batch 1, p50. INT8 runs as Q/DQ on "
             "ONNX Runtime's CPU provider: where it has no INT8 kernel (3-D convolutions) it dequantizes and "
             "computes in FP32, so INT8 latency here says nothing about TensorRT.", "",
             "## Shape classifier (float32 [N,1,32,32] -> 4 logits), 512 test images", "",
             "| variant | max abs | mean abs | rel L2 | cosine | top-1 vs FP32 | accuracy | latency µs |",
             "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for name, r in results["shapes_classifier"].items():
        lines.append(f"| {name} | {r['max_abs']:.4g} | {r['mean_abs']:.4g} | {r['rel_l2']:.4g} | {r['cosine']:.6f} | "
                     f"{r['top1_vs_fp32']:.4f} | {r['accuracy']:.4f} | {r['latency_b1_p50_us']:.0f} |")
    lines += ["", "## 3-D sphere segmenter (float32 [N,1,32,64,64] -> mask probability), 6 test volumes", "",
              "| variant | max abs | rel L2 | cosine | Dice vs FP32 | HD vs FP32 | HD95 vs FP32 | Dice vs truth | latency µs |",
              "|---|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for name, r in results["spheres_segmenter"].items():
        lines.append(f"| {name} | {r['max_abs']:.4g} | {r['rel_l2']:.4g} | {r['cosine']:.6f} | {r['dice_vs_fp32']:.4f} | "
                     f"{r['hd_vs_fp32']:.3g} | {r['hd95_vs_fp32']:.3g} | {r['dice_vs_truth']:.4f} | "
                     f"{r['latency_b1_p50_us']:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    import onnxruntime

    parser = argparse.ArgumentParser(prog="python -m trtd.bench.precision")
    parser.add_argument("--markdown")
    parser.add_argument("--json")
    parser.add_argument("--gpu", metavar="DEVICE", help="instead: FP16 vs FP32 with torch on this device, e.g. cuda:0")
    args = parser.parse_args(argv)
    meta = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "machine": f"{platform.node()} ({platform.platform()}, {os.cpu_count()} logical cores)",
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "command": command("trtd.bench.precision", sys.argv[1:] if argv is None else argv)}
    if args.gpu:
        import torch

        meta["torch"] = torch.__version__
        meta["gpu"] = torch.cuda.get_device_name(torch.device(args.gpu))
        results = run_gpu(args.gpu)
        text = (f"# FP16 vs FP32 on the GPU with torch (trained demonstration models)\n\n{meta['date']} on "
                f"{meta['gpu']}, torch {meta['torch']}.\n\nCommand: `{meta['command']}`\n\n```json\n"
                f"{json.dumps(results, indent=2)}\n```\n")
    else:
        results = run()
        text = render(results, meta)
    print(text)
    if args.markdown:
        write_text(args.markdown, text)
    if args.json:
        write_json(args.json, {"meta": meta, "results": results})
    return 0


if __name__ == "__main__":
    sys.exit(main())
