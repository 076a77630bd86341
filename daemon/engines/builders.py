"""The builders a build process can run: TensorRT, TensorRT-RTX, and ONNX Runtime's optimizer.

Each takes an ONNX file and BuildOptions and returns the bytes to cache (and may put what it
learnt, e.g. the engine's layers, into `info`). The TensorRT builder follows the documented
Python API of 10.x and 11.x (the calls and where each was checked are listed in the README's
TensorRT section); TensorRT-RTX shares that API, so the same function builds its engines, with
two differences its documentation asks for: the target compute capabilities are set, and no
timing cache is used (TensorRT-RTX ignores it, and using one makes the build query a GPU, so
it could not build without one). That shared code runs against the real TensorRT-RTX in CI. The
ONNX Runtime builder produces an optimized ONNX model through the very same
machinery (spawned process, fingerprint, lock, atomic cache write), which is
what lets that machinery be tested on machines without TensorRT.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Callable

from trtd.daemon.engines.fingerprint import BuildOptions


class BuildError(RuntimeError):
    pass


# -- TensorRT --------------------------------------------------------------------------------------


def _parser_errors(parser) -> str:
    """Every parser error with the node and op it names (parser errors otherwise say little)."""
    lines = []
    for i in range(parser.num_errors):
        e = parser.get_error(i)
        where = []
        for label, getter in (("node", "node_name"), ("op", "node_operator")):
            value = getattr(e, getter, None)
            value = value() if callable(value) else value
            if value:
                where.append(f"{label} {value}")
        index = e.node() if hasattr(e, "node") else -1
        if index >= 0 and not where:
            where.append(f"node #{index}")
        lines.append(f"{', '.join(where) or 'model'}: {e.desc()}")
    return "; ".join(lines)


def build_tensorrt(onnx_path: str, options: BuildOptions, timing_cache: str | None,
                   log: Callable[[str], None], info: dict | None = None, library: str = "tensorrt") -> bytes:
    from trtd.daemon.engines.trt import capturing_logger, import_tensorrt

    rtx = library == "tensorrt-rtx"
    trt = import_tensorrt(prefer="rtx" if rtx else "full").module
    if rtx and not options.targets:
        raise BuildError("a TensorRT-RTX build needs its target compute capabilities (e.g. sm86,sm89)")
    logger = capturing_logger(trt, log)
    trt.init_libnvinfer_plugins(logger, "")
    builder = trt.Builder(logger)
    for plugin in options.plugins:
        if not Path(plugin).is_file():
            raise BuildError(f"plugin library {plugin} does not exist")
        builder.get_plugin_registry().load_library(plugin)
    # Strongly typed: precision comes from the ONNX graph (TensorRT 11 has no other mode;
    # on 10.x this is the explicit choice, so an engine means the same on both).
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        raise BuildError(f"{'TensorRT-RTX' if rtx else 'TensorRT'}'s ONNX parser rejected {onnx_path}: "
                         f"{_parser_errors(parser)}")
    config = builder.create_builder_config()
    if options.workspace_bytes:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, options.workspace_bytes)
    config.builder_optimization_level = options.optimization_level
    config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED  # so --inspect can show tactics
    if options.hardware_compatible:
        config.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if options.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        if options.exclude_lean_runtime:
            config.set_flag(trt.BuilderFlag.EXCLUDE_LEAN_RUNTIME)
    if rtx:
        _set_targets(trt, config, options.targets)
    for profile_spec in options.profiles:
        profile = builder.create_optimization_profile()
        for r in profile_spec.inputs:
            profile.set_shape(r.name, r.min, r.opt, r.max)
        config.add_optimization_profile(profile)
    if rtx:
        timing_cache = None  # see the module's docstring: it would need a GPU, and does nothing
    else:
        cache_bytes = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).exists() else b""
        cache = config.create_timing_cache(cache_bytes)
        config.set_timing_cache(cache, ignore_mismatch=False)
    name = "TensorRT-RTX" if rtx else "TensorRT"
    from trtd.daemon.engines.progress import progress_monitor

    monitor = progress_monitor(trt, log)  # kept referenced until the build returns
    if monitor is not None:
        config.progress_monitor = monitor
    log(f"building with {name} {trt.__version__}" + (f" for {','.join(options.targets)}" if rtx else "") + " ...")
    serialized = builder.build_serialized_network(network, config)
    del monitor
    if serialized is None:
        said = "; ".join(logger.errors[-3:]) or "no message"
        raise BuildError(f"{name} could not build the engine: {said}")
    if info is not None and logger.layers:
        from trtd.daemon.engines.layers import compute_precisions, parse_layers

        layers = parse_layers(logger.layers)
        info["layers"] = [layer.line() for layer in layers]
        info["compute_precisions"] = compute_precisions(layers)
    if timing_cache:
        try:  # a speed-up for later builds: never worth losing the engine over
            _write_atomic(Path(timing_cache), bytes(config.get_timing_cache().serialize()))
        except OSError as exc:
            log(f"timing cache not saved ({exc})")
    return bytes(serialized)


def _set_targets(trt, config, targets: tuple[str, ...]) -> None:
    """The compute capabilities a TensorRT-RTX engine is built for (one kernel set each)."""
    capabilities = []
    for target in targets:
        capability = getattr(trt.ComputeCapability, target.upper(), None)
        if capability is None:
            known = [n.lower() for n in dir(trt.ComputeCapability) if n.startswith("SM")]
            raise BuildError(f"TensorRT-RTX {trt.__version__} cannot build for {target} (it builds "
                             f"for {', '.join(known)})")
        capabilities.append(capability)
    config.num_compute_capabilities = len(capabilities)
    for index, capability in enumerate(capabilities):
        if not config.set_compute_capability(capability, index):
            raise BuildError(f"TensorRT-RTX refused target {targets[index]}")


def build_tensorrt_rtx(onnx_path: str, options: BuildOptions, timing_cache: str | None,
                       log: Callable[[str], None], info: dict | None = None) -> bytes:
    return build_tensorrt(onnx_path, options, timing_cache, log, info, library="tensorrt-rtx")


def inspect_engine(engine_bytes: bytes) -> str:
    """Per-layer precision and chosen tactics (needs an engine built with DETAILED verbosity)."""
    from trtd.daemon.engines.trt import import_tensorrt

    trt = import_tensorrt().module
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None:
        raise BuildError("the engine could not be deserialized for inspection")
    inspector = engine.create_engine_inspector()
    info = json.loads(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    lines = []
    for layer in info.get("Layers", []):
        if isinstance(layer, str):
            lines.append(layer)
            continue
        outputs = layer.get("Outputs", [])
        fmt = outputs[0].get("Format/Datatype", "") if outputs and isinstance(outputs[0], dict) else ""
        lines.append(f"{layer.get('Name', '?')}: {layer.get('LayerType', '?')} {fmt} "
                     f"tactic={layer.get('TacticName', layer.get('TacticValue', '?'))}")
    return "\n".join(lines)


# -- ONNX Runtime ----------------------------------------------------------------------------------


# ONNX Runtime's severity levels: 0 verbose, 1 info, 2 warning, 3 error, 4 fatal.
_ORT_ERROR = 3


def build_onnxruntime_optimized(onnx_path: str, options: BuildOptions, timing_cache: str | None,
                                log: Callable[[str], None], info: dict | None = None) -> bytes:
    import onnxruntime as ort

    # This runs in the build process only, so the process-wide logger may be quietened: what
    # ONNX Runtime warns about here reached the user's terminal as coloured noise. Errors
    # still raise (and are reported with the build's failure).
    ort.set_default_logger_severity(_ORT_ERROR)
    # EXTENDED, not ALL: the layout transforms of ALL (NCHWc) are specific to this CPU's vector
    # width, and a serialized model keeps them, so a cache shared with another CPU would serve a
    # model made for this one. The session that loads the optimized model applies ALL itself.
    level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if options.optimization_level <= 1
             else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "optimized.onnx")
        so = ort.SessionOptions()
        so.log_severity_level = _ORT_ERROR
        so.graph_optimization_level = level
        so.optimized_model_filepath = out
        try:
            ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise BuildError(f"ONNX Runtime rejected {onnx_path}: {exc}") from None
        log(f"optimized with ONNX Runtime {ort.__version__}")
        return Path(out).read_bytes()


BUILDERS = {"tensorrt": build_tensorrt, "tensorrt-rtx": build_tensorrt_rtx,
            "onnxruntime": build_onnxruntime_optimized}
# What each builder's bytes are, as the cache names them: an ONNX model is not an engine.
ARTIFACT_SUFFIX = {"tensorrt": ".engine", "tensorrt-rtx": ".engine", "onnxruntime": ".onnx"}


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
