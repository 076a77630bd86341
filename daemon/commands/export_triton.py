"""`trtd export triton`: the configured models as a Triton model repository.

    REPO/<model>/config.pbtxt      Triton's ModelConfig, in protobuf text format
    REPO/<model>/1/model.onnx      the ONNX file the model serves (a reduced-precision model:
                                   its variant), external weight files beside it
    REPO/<model>/1/model.*.plan    TensorRT engines from the engine cache, one per GPU type,
                                   named by `cc_model_filenames` (export_engines.py)
    REPO/<model>/1/model.pt        a TorchScript model

What is served how is decided once, as the daemon decides it (running/serving.py): an ONNX model
on `onnxruntime`, a TensorRT model on `tensorrt_plan` when the cache has engines of its ONNX
(else on `onnxruntime` on the GPU, which is how trtd serves it until its engine is built), a
TorchScript model on `pytorch_libtorch`. Every setting of the model either becomes its Triton
field (SETTINGS says which) or, where it is set and Triton has no equivalent, a comment in
config.pbtxt and a warning: nothing is dropped silently.

The export reads the ONNX graph itself (not ONNX Runtime's view of it): a tensor type that
Triton has no name for is an error naming the tensor, before anything is written. Every model
is planned first, then the repository is written in a staging folder beside it and moved into
place, so a failure leaves no half-written model behind.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from trtd.daemon.config.settings import ModelConfig, did_you_mean, queue_delay_us
from trtd.daemon.commands.export_engines import EngineSet, find_engines
from trtd.daemon.commands.export_pbtxt import Enum, render

# Every per-model setting of trtd and what it becomes in Triton (the README's table says the
# same). A key missing here is still exported: when it is set, it is named as one that the
# export does not know (see _unknown_settings).
SETTINGS: dict[str, str] = {
    "name": "name (the model's folder)",
    "path": "the model file in 1/ (model.onnx, model.pt, model.*.plan)",
    "backend": "backend: onnxruntime / platform: tensorrt_plan, pytorch_libtorch",
    "max_batch": "max_batch_size (dynamic first dimension); 0 with full dims when it is fixed",
    "intra_op_threads": "onnxruntime: parameters intra_op_thread_count",
    "inter_op_threads": "onnxruntime: parameters inter_op_thread_count",
    "device": "instance_group kind KIND_GPU with gpus [device], or KIND_CPU",
    "instances": "instance_group count",
    "max_queue": "dynamic_batching default_queue_policy max_queue_size (none without batching)",
    "inputs": "pytorch_libtorch: input names NAME__INDEX, data types and dims",
    "cuda_graphs": "tensorrt_plan: optimization cuda graphs (none for TorchScript)",
    "graph_batches": "none (Triton's TensorRT backend captures its own graphs)",
    "gpu_wait": "tensorrt_plan: optimization cuda busy_wait_events (spin)",
    "idle_spin_us": "none (a socket-loop spin of the local daemon)",
    "dynamic_batching": "dynamic_batching",
    "max_queue_delay_us": "dynamic_batching max_queue_delay_microseconds",
    "preferred_batch_sizes": "dynamic_batching preferred_batch_size",
    "allow_engine_host_code": "none per model: tritonserver --backend-config=tensorrt,version-compatible=true",
    "plugins": "none per model: tritonserver --backend-config=tensorrt,plugins=\"a.so;b.so\"",
    "swap": "off: exported for onnxruntime, as trtd serves it",
    "engine_builder": "onnxruntime: exported for onnxruntime (Triton optimizes the graph itself)",
    "engine_library": "which cached engines are exported (TensorRT-RTX ones with --rtx-engines)",
    "profiles": "carried in the engines; max_batch_size fits their largest batch",
    "workspace_mib": "carried in the engines",
    "opt_level": "carried in the engines",
    "hardware_compatible": "carried in the engines: default_model_filename for any Ampere+ GPU",
    "version_compatible": "carried in the engines; tritonserver --backend-config=tensorrt,version-compatible=true",
    "compare_samples": "none (Triton serves what it loads without comparing it)",
    "compare_atol": "none (Triton serves what it loads without comparing it)",
    "compare_rtol": "none (Triton serves what it loads without comparing it)",
    "precision": "ONNX: model.onnx is the reduced-precision variant; TorchScript: none",
    "calibration": "carried in the INT8 variant",
    "calibration_method": "carried in the INT8 variant",
}

# ONNX element types (TensorProto.DataType names) -> Triton's DataType names.
ONNX_TO_TRITON = {
    "FLOAT": "TYPE_FP32", "FLOAT16": "TYPE_FP16", "DOUBLE": "TYPE_FP64", "BFLOAT16": "TYPE_BF16",
    "INT8": "TYPE_INT8", "INT16": "TYPE_INT16", "INT32": "TYPE_INT32", "INT64": "TYPE_INT64",
    "UINT8": "TYPE_UINT8", "UINT16": "TYPE_UINT16", "UINT32": "TYPE_UINT32", "UINT64": "TYPE_UINT64",
    "BOOL": "TYPE_BOOL", "STRING": "TYPE_STRING",
}
# The protocol's dtypes (TorchScript inputs and outputs) -> Triton's.
WIRE_TO_TRITON = {
    "float32": "TYPE_FP32", "float16": "TYPE_FP16", "float64": "TYPE_FP64", "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8", "int16": "TYPE_INT16", "uint16": "TYPE_UINT16", "int32": "TYPE_INT32",
    "uint32": "TYPE_UINT32", "int64": "TYPE_INT64", "uint64": "TYPE_UINT64", "bool": "TYPE_BOOL",
}
ONNXRUNTIME, TENSORRT_PLAN, PYTORCH_LIBTORCH = "onnxruntime", "tensorrt_plan", "pytorch_libtorch"
VERSION = "1"  # the one model version an export writes
_MODEL_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


class ExportError(ValueError):
    """A model or repository that cannot be exported, with what to change."""


@dataclass(frozen=True)
class Tensor:
    name: str                  # as Triton names it
    data_type: str             # TYPE_FP32, ...
    shape: tuple[int, ...]     # the whole shape, -1 where dynamic
    batch_symbol: str = ""     # the name of a dynamic first dimension ("" if none or fixed)

    @property
    def first_is_dynamic(self) -> bool:
        return bool(self.shape) and self.shape[0] < 0


@dataclass
class TritonModel:
    """What one model becomes in the repository."""

    name: str
    format: str                                   # onnxruntime, tensorrt_plan, pytorch_libtorch
    inputs: list[Tensor]
    outputs: list[Tensor]
    max_batch_size: int
    kind: str                                     # KIND_CPU or KIND_GPU
    count: int
    gpus: list[int]
    files: list[tuple[Path, str]]                 # (source, name in the version folder)
    parameters: dict[str, str] = field(default_factory=dict)
    dynamic_batching: dict | None = None
    cuda: dict[str, bool] = field(default_factory=dict)
    cc_model_filenames: dict[str, str] = field(default_factory=dict)
    default_model_filename: str = ""
    warnings: list[str] = field(default_factory=list)   # settings Triton has no equivalent for
    remarks: list[str] = field(default_factory=list)    # how a setting carried over (comments)

    def message(self) -> dict:
        """The ModelConfig message (export_pbtxt's form)."""
        msg: dict = {"name": self.name}
        msg["backend" if self.format == ONNXRUNTIME else "platform"] = self.format
        msg["max_batch_size"] = self.max_batch_size
        msg["input"] = [self._tensor(t) for t in self.inputs]
        msg["output"] = [self._tensor(t) for t in self.outputs]
        group: dict = {"count": self.count, "kind": Enum(self.kind)}
        if self.gpus:
            group["gpus"] = list(self.gpus)
        msg["instance_group"] = [group]
        if self.dynamic_batching is not None:
            msg["dynamic_batching"] = self.dynamic_batching
        if self.cuda:
            msg["optimization"] = {"cuda": dict(self.cuda)}
        if self.default_model_filename:
            msg["default_model_filename"] = self.default_model_filename
        if self.cc_model_filenames:
            msg["cc_model_filenames"] = [{"key": k, "value": v} for k, v in self.cc_model_filenames.items()]
        if self.parameters:
            msg["parameters"] = [{"key": k, "value": {"string_value": v}} for k, v in self.parameters.items()]
        return msg

    def _tensor(self, t: Tensor) -> dict:
        dims = list(t.shape[1:] if self.max_batch_size else t.shape)
        entry: dict = {"name": t.name, "data_type": Enum(t.data_type)}
        if dims:
            entry["dims"] = dims
        else:
            # A tensor of the batch dimension alone (or a scalar): Triton takes it as [1]
            # reshaped to [] (its documented form for shape [batch]).
            entry["dims"] = [1]
            entry["reshape"] = {"shape": []}
        return entry

    def config_text(self, source: str) -> str:
        from trtd import __version__

        head = [f"Written by trtd {__version__} (`trtd export triton`) from [models.{self.name}] of {source}.",
                "Settings without a Triton equivalent:" if self.warnings else
                "Every set trtd setting of this model has its Triton field below."]
        head += [f"  - {w}" for w in self.warnings]
        if self.remarks:
            head += ["How settings carried over:", *(f"  - {r}" for r in self.remarks)]
        return render(self.message(), head)


# -- reading a model's tensors ------------------------------------------------------------------


def onnx_tensors(path: str | Path, model_name: str) -> tuple[list[Tensor], list[Tensor]]:
    """(inputs, outputs) of an ONNX file, from its graph; ExportError for a tensor Triton cannot
    describe (a type it has no name for, a sequence or map, no shape)."""
    try:
        import onnx
    except ImportError:
        raise ExportError('exporting an ONNX model needs the onnx package: pip install "trtd[onnx]"') from None
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # onnx's own errors for a file that is not a model
        raise ExportError(f"model '{model_name}': {path} is not an ONNX model onnx can read: {exc}") from None
    initializers = {i.name for i in model.graph.initializer}
    problems: list[str] = []

    def tensors(values, kind: str) -> list[Tensor]:
        out = []
        for value in values:
            if value.name in initializers:
                continue  # an old-style input with a default: not fed by requests
            which = value.type.WhichOneof("value")
            if which != "tensor_type":
                problems.append(f"{kind} '{value.name}' is a {which or 'value of no type'}, not a tensor: "
                                f"Triton's model configuration describes tensors only")
                continue
            tensor = value.type.tensor_type
            elem = onnx.TensorProto.DataType.Name(tensor.elem_type)
            if elem not in ONNX_TO_TRITON:
                problems.append(f"{kind} '{value.name}' is {elem.lower()}, which Triton has no data type "
                                f"for (it has {', '.join(sorted(set(ONNX_TO_TRITON)))}); change the "
                                f"model's {kind} to one of those")
                continue
            if not tensor.HasField("shape"):
                problems.append(f"{kind} '{value.name}' has no shape in the ONNX graph: Triton needs "
                                f"its rank (run onnx.shape_inference, or give the graph its shapes)")
                continue
            dims = tensor.shape.dim
            shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1 for d in dims)
            symbol = dims[0].dim_param if dims and dims[0].HasField("dim_param") else ""
            out.append(Tensor(value.name, ONNX_TO_TRITON[elem], shape, symbol))
        return out

    inputs, outputs = tensors(model.graph.input, "input"), tensors(model.graph.output, "output")
    if problems:
        raise ExportError("\n".join(f"model '{model_name}': {p}" for p in problems))
    return inputs, outputs


def external_data_files(path: Path, model_name: str) -> list[str]:
    """The weight files an ONNX file keeps beside it (relative names): they travel with it."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    locations = sorted({entry.value for tensor in model.graph.initializer
                        for entry in tensor.external_data if entry.key == "location"})
    for location in locations:
        relative = Path(location)
        if relative.is_absolute() or ".." in relative.parts:
            raise ExportError(f"model '{model_name}': {path} keeps weights at {location!r}, outside its "
                              f"folder; save the model with its external data beside it")
        if not (path.parent / relative).is_file():
            raise ExportError(f"model '{model_name}': the weight file {path.parent / relative} that "
                              f"{path.name} names is missing")
    return locations


def _batched(inputs: list[Tensor], outputs: list[Tensor]) -> tuple[bool, str]:
    """Whether the model batches on dimension 0 as trtd batches it (every input's first
    dimension is the same named dynamic dimension) and as Triton must (every output's first
    dimension is dynamic too), and if not, why (for a remark)."""
    symbols = {t.batch_symbol for t in inputs}
    if not inputs or len(symbols) != 1 or "" in symbols:
        return False, ""
    fixed = [t.name for t in outputs if not t.first_is_dynamic]
    if fixed:
        return False, (f"the inputs share a dynamic first dimension but output(s) {', '.join(fixed)} "
                       f"do not: Triton batches only when every output has the batch dimension, so the "
                       f"model is exported without batching (max_batch_size 0, full dims)")
    return True, ""


# -- planning one model -------------------------------------------------------------------------


def _is_set(config: ModelConfig, key: str) -> bool:
    """Whether `key` differs from its default: only set settings are carried or warned about."""
    f = {f.name: f for f in dataclasses.fields(ModelConfig)}.get(key)
    if f is None:
        return False
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    return getattr(config, key, default) != default


def _batching_settings(config: ModelConfig) -> tuple[bool, int, list[int]]:
    """(dynamic_batching, max_queue_delay_us, preferred_batch_sizes), the delay as the daemon
    uses it: max_queue_delay_us = -1 (the default) means the device's default delay."""
    return config.dynamic_batching, queue_delay_us(config), list(config.preferred_batch_sizes)


def _check_name(name: str) -> None:
    if not _MODEL_NAME.match(name) or name in (".", ".."):
        raise ExportError(f"model '{name}': Triton names a model by its folder; rename it in the config to "
                          f"letters, digits, '_', '.' and '-' (not starting with '.' or '-')")


def plan_model(config: ModelConfig, cache_root: str, include_rtx: bool = False) -> TritonModel:
    """What `config` becomes in Triton; ExportError naming what keeps it from being exported."""
    from trtd.daemon.backends.base import BackendError
    from trtd.daemon.running.serving import plan_serving

    _check_name(config.name)
    try:
        serving = plan_serving(config)  # the daemon's own decision; generates a built-in's file
    except (BackendError, ImportError, ValueError, OSError) as exc:
        raise ExportError(f"model '{config.name}': {exc}") from None
    if config.backend == "torch":
        return _torchscript(config, serving.path, list(serving.torch_inputs), serving.max_batch)
    if config.backend == "tensorrt" and serving.later == "none":
        return _engine_file(config, Path(serving.path), serving.max_batch, include_rtx)
    return _onnx(config, Path(serving.path), serving.max_batch, cache_root, include_rtx)


def _onnx(config: ModelConfig, path: Path, max_batch: int, cache_root: str, include_rtx: bool) -> TritonModel:
    from trtd.daemon.engines.build import onnx_sha256

    if config.backend == "onnxruntime" and config.device >= 0:
        # As the daemon refuses it (running/serving.py): trtd never serves this model.
        raise ExportError(f"model '{config.name}': the onnxruntime backend runs on the CPU (device = -1); "
                          f"a GPU model is backend = \"tensorrt\" (exported with its engines, or for ONNX "
                          f"Runtime on that GPU)")
    warnings: list[str] = []
    remarks: list[str] = []
    source = path
    if config.precision:
        source = _variant(config, path, cache_root)
        remarks.append(f"precision = \"{config.precision}\": 1/model.onnx is trtd's {config.precision} variant "
                       f"of {path.name} (trtd swaps it in after its accuracy gate; Triton serves it from "
                       f"the start)")
    inputs, outputs = onnx_tensors(source, config.name)
    batched, why = _batched(inputs, outputs)
    if why:
        warnings.append(why)
    if config.backend == "tensorrt":
        if config.swap == "off":
            remarks.append("swap = \"off\": trtd stays on ONNX Runtime, so does Triton (backend onnxruntime)")
        elif config.engine_builder == "onnxruntime":
            remarks.append("engine_builder = \"onnxruntime\": trtd serves ONNX Runtime's optimized model; "
                           "Triton's onnxruntime backend applies the same graph optimizations at load")
        else:
            engines = find_engines(cache_root, onnx_sha256(str(source)), include_rtx)
            warnings += engines.notes
            if engines.engines:
                return _with_engines(config, source, inputs, outputs, batched, max_batch, engines, warnings,
                                     remarks)
            warnings.append(f"no TensorRT engine of this model in the engine cache ({cache_root}): "
                            f"exported for ONNX Runtime on the GPU, which is how trtd serves it until "
                            f"its engine is built; build engines (`trtd build`, or let the daemon "
                            f"build them) and export again for tensorrt_plan")
    return _on_onnxruntime(config, source, inputs, outputs, batched, max_batch, warnings, remarks)


def _on_onnxruntime(config: ModelConfig, source: Path, inputs, outputs, batched: bool, max_batch: int,
                    warnings: list[str], remarks: list[str]) -> TritonModel:
    from trtd.daemon.backends.onnxruntime import DEFAULT_MAX_BATCH

    files = [(source, "model.onnx"), *((source.parent / e, e) for e in external_data_files(source, config.name))]
    on_gpu = config.backend == "tensorrt"  # the ONNX Runtime stand-in runs on the model's GPU
    top = (max_batch or DEFAULT_MAX_BATCH) if batched else 0
    model = TritonModel(config.name, ONNXRUNTIME, inputs, outputs, top,
                        "KIND_GPU" if on_gpu else "KIND_CPU", config.instances,
                        [max(config.device, 0)] if on_gpu else [], files, warnings=warnings, remarks=remarks)
    for key, parameter in (("intra_op_threads", "intra_op_thread_count"),
                           ("inter_op_threads", "inter_op_thread_count")):
        if getattr(config, key):
            model.parameters[parameter] = str(getattr(config, key))
    _build_option_warnings(config, model, in_engines=False)
    _common(config, model, max_batch)
    return model


def _with_engines(config: ModelConfig, source: Path, inputs, outputs, batched: bool, max_batch: int,
                  engines: EngineSet, warnings: list[str], remarks: list[str]) -> TritonModel:
    top = 0
    if batched:
        engine_top = engines.max_batch
        top = min(max_batch, engine_top) if (max_batch and engine_top) else (engine_top or max_batch)
        if max_batch and engine_top and engine_top < max_batch:
            warnings.append(f"max_batch = {max_batch}, but the exported engines take batches up to "
                            f"{engine_top} (their profiles): max_batch_size is {engine_top}")
        if not top:
            warnings.append("the engines have no batch profile although the ONNX batches: exported "
                            "without batching (max_batch_size 0)")
            batched = False
    files = [(source, "model.onnx"), *((e.path, e.file_name) for e in engines.engines)]
    model = TritonModel(config.name, TENSORRT_PLAN, inputs, outputs, top, "KIND_GPU", config.instances,
                        [max(config.device, 0)], files, warnings=warnings, remarks=remarks,
                        cc_model_filenames=engines.cc_model_filenames,
                        default_model_filename=engines.default_model_filename)
    libraries = sorted({e.library for e in engines.engines})
    model.remarks.append(f"{len(engines.engines)} engine(s) from the cache ({', '.join(libraries)}): "
                         + "; ".join(f"{e.file_name} for {', '.join(e.capabilities) or 'any compute capability >= 8.0'}"
                                     for e in engines.engines)
                         + ". 1/model.onnx is the portable source they were built from (Triton's TensorRT "
                           "backend ignores it): build an engine from it for any other GPU type")
    if config.cuda_graphs:
        model.cuda["graphs"] = True
        model.remarks.append("cuda_graphs = true: optimization cuda graphs")
    if config.gpu_wait == "spin":
        model.cuda["busy_wait_events"] = True
        model.remarks.append("gpu_wait = \"spin\" (trtd's default): optimization cuda busy_wait_events")
    for key in ("intra_op_threads", "inter_op_threads"):
        if _is_set(config, key):
            model.warnings.append(f"{key} = {getattr(config, key)}: ONNX Runtime's threads; the engine does "
                                  f"not use them (trtd used them for its ONNX Runtime stand-in only)")
    _build_option_warnings(config, model, in_engines=True)
    _common(config, model, max_batch)
    return model


def _engine_file(config: ModelConfig, path: Path, max_batch: int, include_rtx: bool) -> TritonModel:
    """`backend = "tensorrt"` with an engine file: the engine is the model; its inputs and outputs
    are those of the ONNX it was built from, which its metadata names (`trtd build -o` writes it)."""
    from trtd.daemon.commands.export_engines import ExportedEngine, describe_engine, profile_max_batch
    from trtd.daemon.engines.cache import CacheEntry
    from trtd.daemon.engines.library import RTX, TENSORRT, engine_metadata

    meta = engine_metadata(path)
    onnx_path = meta.get("onnx_path", "")
    if not onnx_path or not Path(onnx_path).is_file():
        raise ExportError(f"model '{config.name}': {path} is an engine file; describing its inputs and "
                          f"outputs needs the ONNX it was built from, which "
                          + (f"its metadata names but is gone ({onnx_path})" if onnx_path else
                             f"no metadata beside it ({path.with_suffix('.json').name}) names")
                          + ": configure the ONNX file with backend = \"tensorrt\" instead")
    inputs, outputs = onnx_tensors(onnx_path, config.name)
    entry = CacheEntry(meta.get("fingerprint", path.stem), path, path.with_suffix(".json"), meta)
    warnings: list[str] = []
    engine = describe_engine(entry)
    batched, why = _batched(inputs, outputs)
    if why:
        warnings.append(why)
    if engine is not None and engine.library == RTX and not include_rtx:
        warnings.append(f"{path.name} is a TensorRT-RTX engine, which Triton's TensorRT backend (full "
                        f"TensorRT) cannot load: exported the ONNX it was built from ({onnx_path}) for "
                        f"ONNX Runtime on the GPU; pass --rtx-engines to export the engine instead")
        return _on_onnxruntime(config, Path(onnx_path), inputs, outputs, batched, max_batch, warnings, [])
    if engine is None:
        warnings.append(f"{path.name}'s metadata names no compute capability: exported as "
                        f"default_model_filename, which Triton loads on whatever GPU it has")
        engine = ExportedEngine(entry, TENSORRT, (), "model.plan", profile_max_batch(meta), "?")
    engines = EngineSet(engines=[engine],
                        cc_model_filenames={cc: engine.file_name for cc in engine.capabilities},
                        default_model_filename="" if engine.capabilities else engine.file_name)
    return _with_engines(config, Path(onnx_path), inputs, outputs, batched, max_batch, engines, warnings, [])


def _torchscript(config: ModelConfig, path: str, specs: list[str], max_batch: int) -> TritonModel:
    from trtd.daemon.backends.base import BackendError
    from trtd.daemon.backends.torch import TorchBackend

    try:
        backend = TorchBackend(path, inputs=specs, max_batch=max_batch)  # on the CPU, to read its outputs
    except BackendError as exc:
        raise ExportError(f"model '{config.name}': {exc}") from None
    try:
        # Triton's PyTorch backend binds TorchScript's unnamed tensors by position: NAME__INDEX.
        inputs = [Tensor(f"{s.name}__{i}", WIRE_TO_TRITON[s.dtype], tuple(s.shape), "batch" if s.shape[0] < 0 else "")
                  for i, s in enumerate(backend.inputs)]
        outputs = [Tensor(f"output__{i}", WIRE_TO_TRITON[s.dtype], tuple(s.shape))
                   for i, s in enumerate(backend.outputs)]
        top = backend.max_batch
    finally:
        backend.close()
    warnings: list[str] = []
    batched, why = _batched(inputs, outputs)
    if why:
        warnings.append(why)
    model = TritonModel(config.name, PYTORCH_LIBTORCH, inputs, outputs, top if batched else 0,
                        "KIND_GPU" if config.device >= 0 else "KIND_CPU", config.instances,
                        [config.device] if config.device >= 0 else [], [(Path(path), "model.pt")],
                        warnings=warnings)
    model.remarks.append("TorchScript names no tensors: trtd's "
                         + ", ".join(f"'{s.name}' is {t.name}" for s, t in zip(backend.inputs, inputs))
                         + " and outputs " + ", ".join(f"'{s.name}' {t.name}" for s, t in zip(backend.outputs, outputs))
                         + " (Triton's PyTorch backend binds them by position)")
    if config.precision == "fp16":
        model.warnings.append("precision = \"fp16\": trtd runs this TorchScript module in half precision; "
                              "Triton runs the file as saved: save a half-precision module to keep it")
    for key in ("intra_op_threads", "inter_op_threads"):
        if _is_set(config, key):
            model.warnings.append(f"{key} = {getattr(config, key)}: ONNX Runtime's threads, which a TorchScript "
                                  f"model does not use")
    _build_option_warnings(config, model, in_engines=False)
    _common(config, model, max_batch)
    return model


def _variant(config: ModelConfig, path: Path, cache_root: str) -> Path:
    """The reduced-precision variant the daemon serves (the same call as running/swap.py: from the
    cache where the daemon made it, else made now and cached)."""
    from trtd.daemon.precision.convert import ConvertError, convert
    from trtd.daemon.precision.samples import SampleError

    engine = config.backend == "tensorrt" and config.engine_builder == "tensorrt"
    try:
        return Path(convert(path, config.precision, config.calibration or None, config.calibration_method,
                            cache_root=cache_root, int8_target="tensorrt" if engine else "portable").path)
    except (ConvertError, SampleError, OSError) as exc:
        raise ExportError(f"model '{config.name}': its {config.precision} variant: {exc}") from None


def _build_option_warnings(config: ModelConfig, model: TritonModel, in_engines: bool) -> None:
    """The engine build options: carried in exported engines; otherwise they had an effect in
    trtd only once the engine was built, and none on what is exported."""
    for key in ("profiles", "workspace_mib", "opt_level", "hardware_compatible", "version_compatible"):
        if not _is_set(config, key):
            continue
        value = getattr(config, key)
        if in_engines:
            model.remarks.append(f"{key} = {value!r}: carried in the engines")
        else:
            model.warnings.append(f"{key} = {value!r}: a TensorRT build option; the exported model has no "
                                  f"engine ({model.format})")
    if in_engines and config.version_compatible:
        model.warnings.append("version_compatible = true: start tritonserver with --backend-config="
                              "tensorrt,version-compatible=true to load these engines on a later TensorRT "
                              "of the same major")
    if config.allow_engine_host_code:
        model.warnings.append("allow_engine_host_code = true: no per-model field; tritonserver "
                              "--backend-config=tensorrt,version-compatible=true lets Triton run host code "
                              "from engines (for every model)")
    if config.plugins:
        libs = ";".join(Path(p).name for p in config.plugins)
        model.warnings.append(f"plugins = {config.plugins!r}: no per-model field; copy the libraries into the "
                              f"Triton image and start tritonserver with --backend-config=tensorrt,"
                              f"plugins=\"{libs}\" (full paths there)" if model.format == TENSORRT_PLAN else
                              f"plugins = {config.plugins!r}: TensorRT plugin libraries; the exported model "
                              f"runs on {model.format}, which does not load them")


def _common(config: ModelConfig, model: TritonModel, max_batch: int) -> None:
    """The settings every format treats alike: batching, queue, the daemon's own knobs."""
    dynamic, delay_us, preferred = _batching_settings(config)
    if max_batch and not model.max_batch_size and _is_set(config, "max_batch"):
        model.remarks.append(f"max_batch = {max_batch}: the model's first dimension is not a batch "
                             f"dimension, so neither trtd nor Triton batches it (max_batch_size 0)")
    if dynamic and model.max_batch_size:
        batching: dict = {}
        sizes = [b for b in preferred if b <= model.max_batch_size]
        if len(sizes) < len(preferred):
            model.warnings.append(f"preferred_batch_sizes {preferred}: sizes above max_batch_size "
                                  f"{model.max_batch_size} left out")
        if sizes:
            batching["preferred_batch_size"] = sizes
        batching["max_queue_delay_microseconds"] = delay_us
        if config.max_queue > 0:
            batching["default_queue_policy"] = {"max_queue_size": config.max_queue}
        else:
            model.warnings.append("max_queue = 0 (no request waits for an instance): Triton's queue size 0 "
                                  "means unbounded; its queue is left unbounded")
        model.dynamic_batching = batching
        model.remarks.append(f"dynamic_batching: max_queue_delay_us = {delay_us} -> max_queue_delay_microseconds"
                             + (f", preferred_batch_sizes -> preferred_batch_size {sizes}" if sizes else "")
                             + f", max_queue = {config.max_queue} -> default_queue_policy max_queue_size. "
                               "Unlike trtd, where a lone client never waits and preferred sizes are padded "
                               "to, Triton's batcher holds a request up to the delay for company and runs a "
                               "preferred size as soon as it has one")
    elif dynamic:
        model.warnings.append("dynamic_batching = true: the model has no batch dimension Triton can batch "
                              "on; exported without dynamic batching")
    if not model.dynamic_batching and _is_set(config, "max_queue"):
        model.warnings.append(f"max_queue = {config.max_queue}: Triton bounds a queue only with dynamic "
                              f"batching; without it, its queue is unbounded")
    if config.cuda_graphs and model.format == PYTORCH_LIBTORCH:
        model.warnings.append("cuda_graphs = true: Triton's PyTorch backend does not capture CUDA graphs "
                              "(its TensorRT backend does: export an ONNX model with `trtd export onnx` "
                              "and serve it with backend = \"tensorrt\")")
    elif config.cuda_graphs and model.format == ONNXRUNTIME:
        model.warnings.append("cuda_graphs = true: Triton captures CUDA graphs for TensorRT engines only, "
                              "and no engine is exported")
    if _is_set(config, "graph_batches"):
        model.warnings.append(f"graph_batches = {config.graph_batches}: no equivalent; Triton's TensorRT "
                              f"backend captures its own graphs (optimization cuda graph_spec names them, "
                              f"with every input's shape)")
    if _is_set(config, "gpu_wait") and model.format != TENSORRT_PLAN:
        model.warnings.append(f"gpu_wait = \"{config.gpu_wait}\": no equivalent for {model.format}")
    if _is_set(config, "idle_spin_us"):
        model.warnings.append(f"idle_spin_us = {config.idle_spin_us}: no equivalent (the local daemon's socket "
                              f"loop; Triton is reached over the network)")
    for key in ("compare_samples", "compare_atol", "compare_rtol"):
        if _is_set(config, key):
            model.warnings.append(f"{key} = {getattr(config, key)}: no equivalent (trtd's gate before an engine "
                                  f"or variant is swapped in; Triton serves what it loads)")
    if _is_set(config, "inputs") and model.format != PYTORCH_LIBTORCH:
        model.warnings.append("inputs: describes TorchScript inputs; this model's ONNX graph describes its own")
    if config.calibration and config.precision == "int8" and model.format != PYTORCH_LIBTORCH:
        model.remarks.append(f"calibration = {Path(config.calibration).name} ({config.calibration_method}): "
                             f"carried in the INT8 variant")
    model.warnings += _unknown_settings(config)


def _unknown_settings(config: ModelConfig) -> list[str]:
    """Settings this export has no mapping for (added to trtd after it), when they are set."""
    return [f"{key} = {getattr(config, key)!r}: this trtd's export knows no Triton equivalent"
            for key in (f.name for f in dataclasses.fields(ModelConfig))
            if key not in SETTINGS and _is_set(config, key)]


# -- choosing models and writing the repository --------------------------------------------------


def select_models(models: list[ModelConfig], names: list[str], source: str) -> list[ModelConfig]:
    """The models named (all when none is); ExportError for a name the config does not have."""
    if not models:
        raise ExportError(f"{source} configures no models ([models.NAME] tables)")
    if not names:
        return list(models)
    by_name = {m.name: m for m in models}
    unknown = [n for n in names if n not in by_name]
    if unknown:
        raise ExportError("\n".join(f"unknown model '{n}' in {source}{did_you_mean(n, by_name)}; its models: "
                                    f"{', '.join(by_name)}" for n in unknown))
    return [by_name[n] for n in dict.fromkeys(names)]


def check_destination(out: Path, force: bool) -> None:
    """ExportError when the repository cannot go to `out`: a file there, a non-empty folder
    without --force, a parent that is not a folder."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"-o {out}: a file is there; name a folder for the repository")
    if out.is_dir() and not force:
        try:
            entries = sorted(p.name for p in out.iterdir())
        except OSError as exc:
            raise ExportError(f"-o {out}: cannot read it ({exc.strerror})") from None
        if entries:
            raise ExportError(f"-o {out} exists and is not empty ({', '.join(entries[:5])}"
                              f"{', ...' if len(entries) > 5 else ''}); choose a new folder, or pass --force to "
                              f"replace the models the export writes there (other entries are kept)")
    for parent in out.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise ExportError(f"-o {out}: {parent} is a file, not a folder")
            break


def write_repository(models: list[TritonModel], out: Path, source: str) -> None:
    """Write every model into a staging folder beside `out`, then move each into place (a model
    already there, which check_destination allowed with --force, is replaced)."""
    # Staged on the same filesystem, so each move is a rename: inside an existing REPO (whose
    # parent may not be writable), else beside it.
    where = out if out.is_dir() else out.absolute().parent
    try:
        where.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.trtd-export-", dir=where))
    except OSError as exc:
        raise ExportError(f"-o {out}: cannot write there ({exc.strerror or exc}); choose a writable folder") from None
    try:
        for model in models:
            version = stage / model.name / VERSION
            version.mkdir(parents=True)
            for src, name in model.files:
                (version / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, version / name)
            (stage / model.name / "config.pbtxt").write_text(model.config_text(source), encoding="utf-8")
        if not out.exists():
            os.rename(stage, out)
            return
        for model in models:
            target = out / model.name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists() or target.is_symlink():
                target.unlink()
            os.rename(stage / model.name, target)
    except OSError as exc:
        raise ExportError(f"-o {out}: writing the repository failed ({exc.strerror or exc}); the models "
                          f"not yet moved there were not written") from None
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def plan_models(models: list[ModelConfig], cache_root: str | None = None,
                include_rtx: bool = False) -> list[TritonModel]:
    """Every model planned; ExportError with every problem of every model at once."""
    from trtd.daemon.engines.build import default_cache_root

    root = cache_root or default_cache_root()
    planned, problems = [], []
    for config in models:
        try:
            planned.append(plan_model(config, root, include_rtx))
        except ExportError as exc:
            problems.append(str(exc))
    if problems:
        raise ExportError("\n".join(problems))
    return planned


def export_triton(models: list[ModelConfig], out: Path, source: str, force: bool = False,
                  include_rtx: bool = False, cache_root: str | None = None) -> list[TritonModel]:
    """Check the destination, plan every model, then write the repository."""
    check_destination(out, force)
    planned = plan_models(models, cache_root, include_rtx)
    write_repository(planned, out, source)
    return planned
