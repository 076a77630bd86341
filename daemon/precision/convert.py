"""FP16 and calibrated INT8 variants of an ONNX model, with provenance, cached like engines.

Library choices (why): ONNX Runtime's own tools, already a dependency of the
ONNX path and consumed by both ONNX Runtime and TensorRT:
  - FP16: `onnxruntime.transformers.float16.convert_float_to_float16`, FP32 I/O kept
    by default, numerically fragile ops kept in FP32 through its block list;
  - INT8: `onnxruntime.quantization.quantize_static` in QDQ format with signed INT8,
    symmetric activations and weights (zero point 0) and per-channel weights: the
    only INT8 form TensorRT's explicit quantization accepts (TensorRT 11 has no
    calibrator, so the calibration happens here), after ONNX Runtime's own
    pre-processing (shape inference, basic standard-op graph rewrites such as folding
    BatchNormalization into Conv, which also gives TensorRT the Conv-after-Q/DQ pattern).

INT8 targets (why two): on x86 CPUs without VNNI (AVX2-only, AVX-512 before Cascade Lake)
ONNX Runtime's 8-bit kernels multiply with VPMADDUBSW, which adds pairs of u8*s8 products
into a saturating int16: two full-range products (255*127*2) overflow it, and a classifier's
cosine to FP32 fell from 0.9998 to 0.90 on an (emulated) AVX2 CPU. ONNX Runtime's documented remedy is
`reduce_range`: weights in 7 bits ([-64, 64]) keep every pair below 2^15, and the results are
then the same on every x86 CPU (measured under an emulated AVX2 CPU, tests/test_int8_portability.py).
  - "portable" (the default, and what the daemon serves): 7-bit symmetric weights. Still
    signed symmetric Q/DQ with zero point 0, so TensorRT builds it as it is. Not covered: a
    MatMul of two activations (attention's Q*K^T), whose operands `reduce_range` cannot narrow
    (ONNX Runtime 1.32 allows it for initializers only); CNNs and MLPs have none.
  - "tensorrt": full 8-bit weights ([-127, 127]), one more bit of weight precision for a
    TensorRT engine (and ONNX Runtime on VNNI/ARM CPUs); on an x86 CPU without VNNI, ONNX
    Runtime computes it with saturated sums, so validate it on its engine, not there.
The variant's metadata names its target and weight range (`trtd.int8_target`,
`trtd.int8_weight_range`).
NVIDIA ModelOpt (named by TensorRT 11's migration guide) would also do; it pulls
in far more and is not installable in our CI, ONNX Runtime's tools are.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from trtd.daemon.precision.samples import load_samples, samples_sha256

PRECISIONS = ("fp16", "int8")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
INT8_TARGETS = ("portable", "tensorrt")
_WEIGHT_RANGE = {"portable": "-64..64", "tensorrt": "-127..127"}
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


def variant_fingerprint(source_sha: str, precision: str, calibration_sha: str, method: str,
                        int8_target: str = "") -> str:
    import onnxruntime

    text = f"{source_sha}|{precision}|{calibration_sha}|{method}|onnxruntime-{onnxruntime.__version__}"
    if int8_target:  # appended, so FP16 fingerprints (and their cached files) stay as they were
        text += f"|int8-{int8_target}-preprocessed"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def convert(source: str | Path, precision: str, calibration: str | Path | None = None,
            method: str = "minmax", cache_root: str | Path | None = None,
            keep_io_types: bool = True, int8_target: str = "portable",
            progress: Callable[[int, int], None] | None = None) -> Variant:
    """The variant from the cache, or made now (atomically written there).
    `int8_target`: "portable" or "tensorrt" (see the module docstring); ignored for FP16.
    `progress(done, total)`: called as INT8 calibration takes each sample."""
    from trtd.daemon.engines.fingerprint import file_sha256

    if precision not in PRECISIONS:
        raise ConvertError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if method not in CALIBRATION_METHODS:
        raise ConvertError(f"calibration method must be one of {', '.join(CALIBRATION_METHODS)}")
    if int8_target not in INT8_TARGETS:
        raise ConvertError(f"INT8 target must be one of {', '.join(INT8_TARGETS)}, got {int8_target!r}")
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
    target = int8_target if samples else ""
    fp = variant_fingerprint(source_sha, precision, calibration_sha, method if samples else "", target)
    if cache_root is None:
        from trtd.daemon.builtin.onnx_models import default_cache_dir

        cache_root = default_cache_dir()
    folder = Path(cache_root) / "variants"
    path = folder / f"{fp}.onnx"
    metadata = {"trtd.source": str(Path(source).resolve()), "trtd.source_sha256": source_sha,
                "trtd.precision": precision, "trtd.calibration_sha256": calibration_sha,
                "trtd.calibration_method": method if samples else "",
                "trtd.calibration_samples": str(len(samples) if samples else 0)}
    if target:
        metadata.update({"trtd.int8_target": target, "trtd.int8_weight_range": _WEIGHT_RANGE[target]})
    if path.exists():
        return Variant(path, precision, True, provenance(path))
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        out = Path(tmp) / "variant.onnx"
        if precision == "fp16":
            _to_fp16(model, out, keep_io_types)
        else:
            metadata["trtd.int8_preprocessed"] = _to_int8(source, out, samples, method, target, progress)
        _stamp(out, metadata)
        os.replace(out, path)  # atomic: a reader never sees half a model
    return Variant(path, precision, False, metadata)


def _to_fp16(model, out: Path, keep_io_types: bool) -> None:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    converted = convert_float_to_float16(model, keep_io_types=keep_io_types,
                                         op_block_list=list(DEFAULT_OP_BLOCK_LIST) + list(FRAGILE_OPS))
    onnx.save(converted, str(out))


class _Reader:
    """ONNX Runtime's calibration data reader over our samples (the quantizer runs the model on
    each as it takes it: taking them is how far calibration has got)."""

    def __init__(self, samples, progress: Callable[[int, int], None] | None = None):
        self._it = iter(samples)
        self._total = len(samples)
        self._taken = 0
        self._progress = progress

    def get_next(self):
        sample = next(self._it, None)
        if sample is not None:
            self._taken += 1
            if self._progress is not None:
                self._progress(self._taken, self._total)
        return sample


def _to_int8(source, out: Path, samples, method: str, target: str,
             progress: Callable[[int, int], None] | None = None) -> str:
    """Quantizes `source` into `out`; returns how it was pre-processed (for the metadata)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    methods = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
               "percentile": CalibrationMethod.Percentile}
    prepared = out.with_name("prepared.onnx")
    preprocessed = _preprocess(source, prepared)
    model_path = prepared if preprocessed == "yes" else Path(source)
    try:
        with _quiet_quantizer():
            quantize_static(
                str(model_path), str(out), _Reader(samples, progress), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                calibrate_method=methods[method], reduce_range=target == "portable",
                # TensorRT's explicit quantization: symmetric, zero point 0, for both; biases stay
                # FP32 (TensorRT takes no INT32 bias Q/DQ: it adds the bias in the layer's precision).
                extra_options={"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False},
            )
    except Exception as exc:
        raise ConvertError(f"INT8 quantization of {source} failed: {exc}") from None
    finally:
        prepared.unlink(missing_ok=True)
    return preprocessed


def _preprocess(source, out: Path) -> str:
    """ONNX Runtime's quantization pre-processing, which its quantizer asks for: "yes", or
    "no: REASON" when it cannot handle the model (quantization then goes on without it).
    Symbolic shape inference is the part that fails on some graphs, so it is retried without."""
    from onnxruntime.quantization.shape_inference import quant_pre_process

    reason = ""
    for skip_symbolic in (False, True):
        try:
            with _quiet_quantizer():
                quant_pre_process(str(source), str(out), skip_symbolic_shape=skip_symbolic)
            return "yes"
        except Exception as exc:  # any failure here only costs the pre-processing
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return f"no: {reason}"


class _quiet_quantizer:
    """Hides ONNX Runtime's quantization tools' warnings: the advice they give (pre-processing)
    is taken here, and their own errors still raise. Only their records: the daemon converts in
    background threads while other threads log. The quantizer logs some through the root
    logger (`logging.warning`), which a root filter matches by source file; the others through
    the `onnxruntime` loggers, whose level is raised while any conversion runs (counted, so
    that two conversions at once restore it once, in the end)."""

    _lock = threading.Lock()
    _active = 0
    _saved_level = 0

    @staticmethod
    def _drop(record) -> bool:
        import logging

        import onnxruntime.quantization as quantization

        return not (record.pathname.startswith(str(Path(quantization.__file__).parent))
                    and record.levelno < logging.ERROR)

    def __enter__(self):
        import logging

        cls = type(self)
        with cls._lock:
            if cls._active == 0:
                named = logging.getLogger("onnxruntime")
                cls._saved_level = named.level
                named.setLevel(logging.ERROR)
                logging.getLogger().addFilter(cls._drop)
            cls._active += 1

    def __exit__(self, *exc):
        import logging

        cls = type(self)
        with cls._lock:
            cls._active -= 1
            if cls._active == 0:
                logging.getLogger("onnxruntime").setLevel(cls._saved_level)
                logging.getLogger().removeFilter(cls._drop)
        return False


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
