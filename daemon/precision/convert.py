"""FP16 and calibrated INT8 variants of an ONNX model, with provenance, cached like engines.

Library choices (why): ONNX Runtime's own tools, already a dependency of the
ONNX path and consumed by both ONNX Runtime and TensorRT:
  - FP16: `onnxruntime.transformers.float16.convert_float_to_float16`, FP32 I/O kept
    by default, numerically fragile ops kept in FP32 through its block list;
  - INT8: `onnxruntime.quantization.quantize_static` in QDQ format with signed INT8,
    symmetric activations and weights (zero point 0) and per-channel weights: the
    only INT8 form TensorRT's explicit quantization accepts (TensorRT 11 has no
    calibrator, so the calibration happens here).
NVIDIA ModelOpt (named by TensorRT 11's migration guide) would also do; it pulls
in far more and is not installable in our CI, ONNX Runtime's tools are.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .samples import load_samples, samples_sha256

PRECISIONS = ("fp16", "int8")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Kept in FP32 beyond the converter's own list: reductions and normalisations whose
# intermediate sums overflow or lose precision in FP16.
FRAGILE_OPS = ("Softmax", "LayerNormalization", "ReduceMean", "ReduceSum", "ReduceL2", "Exp", "Log",
               "Pow", "Sqrt", "Div", "InstanceNormalization", "LpNormalization")
_QUANT_OPS = {"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger",
              "MatMulInteger", "DynamicQuantizeLinear"}


class ConvertError(ValueError):
    pass


@dataclass
class Variant:
    path: Path
    precision: str
    cached: bool
    metadata: dict


def model_inputs(model) -> dict[str, tuple[str, list[int]]]:
    """name -> (numpy dtype name, shape with -1 for dynamic dimensions)."""
    from onnx import helper

    initializers = {i.name for i in model.graph.initializer}
    out = {}
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)).name
        out[value.name] = (dtype, [d.dim_value if d.HasField("dim_value") else -1 for d in tensor.shape.dim])
    return out


def _load(path: str | Path):
    import onnx

    try:
        return onnx.load(str(path))
    except FileNotFoundError:
        raise ConvertError(f"{path} does not exist") from None
    except Exception as exc:
        raise ConvertError(f"{path} is not a readable ONNX model: {exc}") from None


def _already_reduced(model) -> str:
    ops = {n.op_type for n in model.graph.node}
    if ops & _QUANT_OPS:
        return f"it is already quantized (it has {', '.join(sorted(ops & _QUANT_OPS))})"
    from onnx import TensorProto

    if any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer):
        return "it already has FP16 weights"
    return ""


def variant_fingerprint(source_sha: str, precision: str, calibration_sha: str, method: str) -> str:
    import onnxruntime

    text = f"{source_sha}|{precision}|{calibration_sha}|{method}|onnxruntime-{onnxruntime.__version__}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def convert(source: str | Path, precision: str, calibration: str | Path | None = None,
            method: str = "minmax", cache_root: str | Path | None = None,
            keep_io_types: bool = True) -> Variant:
    """The variant from the cache, or made now (atomically written there)."""
    from ..engines.fingerprint import file_sha256

    if precision not in PRECISIONS:
        raise ConvertError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if method not in CALIBRATION_METHODS:
        raise ConvertError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}")
    model = _load(source)
    problem = _already_reduced(model)
    if problem:
        raise ConvertError(f"{source}: {problem}; convert the FP32 model instead")
    samples, calibration_sha = None, ""
    if precision == "int8":
        if calibration is None:
            raise ConvertError("INT8 needs calibration samples (--calibration DATA.npz or a folder of "
                               ".npy files) drawn from the data the model will see")
        samples = load_samples(calibration, model_inputs(model))
        calibration_sha = samples_sha256(samples)
    source_sha = file_sha256(source)
    fp = variant_fingerprint(source_sha, precision, calibration_sha, method if samples else "")
    if cache_root is None:
        from ..builtin_models import default_cache_dir

        cache_root = default_cache_dir()
    folder = Path(cache_root) / "variants"
    target = folder / f"{fp}.onnx"
    metadata = {"trtd.source": str(Path(source).resolve()), "trtd.source_sha256": source_sha,
                "trtd.precision": precision, "trtd.calibration_sha256": calibration_sha,
                "trtd.calibration_method": method if samples else "",
                "trtd.calibration_samples": str(len(samples) if samples else 0)}
    if target.exists():
        return Variant(target, precision, True, metadata)
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        out = Path(tmp) / "variant.onnx"
        if precision == "fp16":
            _to_fp16(model, out, keep_io_types)
        else:
            _to_int8(source, out, samples, method)
        _stamp(out, metadata)
        os.replace(out, target)  # atomic: a reader never sees half a model
    return Variant(target, precision, False, metadata)


def _to_fp16(model, out: Path, keep_io_types: bool) -> None:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    converted = convert_float_to_float16(model, keep_io_types=keep_io_types,
                                         op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FRAGILE_OPS))
    onnx.save(converted, str(out))


class _Reader:
    """ONNX Runtime's calibration data reader over our samples."""

    def __init__(self, samples):
        self._it = iter(samples)

    def get_next(self):
        return next(self._it, None)


def _to_int8(source, out: Path, samples, method: str) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    try:
        quantize_static(
            str(source), str(out), _Reader(samples), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
            calibrate_method=methods[method],
            # TensorRT's explicit quantization: symmetric, zero point 0, for both; biases stay
            # FP32 (TensorRT takes no INT32 bias Q/DQ: it adds the bias in the layer's precision).
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
        )
    except Exception as exc:
        raise ConvertError(f"INT8 quantization of {source} failed: {exc}") from None


def _stamp(path: Path, metadata: dict) -> None:
    import onnx

    model = onnx.load(str(path))
    existing = {p.key: p for p in model.metadata_props}
    for key, value in metadata.items():
        if key in existing:
            existing[key].value = value
        else:
            model.metadata_props.add(key=key, value=value)
    onnx.save(model, str(path))


def provenance(path: str | Path) -> dict:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props if p.key.startswith("trtd.")}
