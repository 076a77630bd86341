"""`trtd export triton` / `trtd export kserve`: the configured models as a Triton repository.

Every config.pbtxt written is parsed with protobuf's text format into Triton's own `ModelConfig`
message (`tritonclient`'s generated model_config_pb2), and every field is compared with the ONNX
graph (types through Triton's own numpy mapping, `tritonclient.utils.np_to_triton_dtype`) and
the trtd config. The exported ONNX files are run through ONNX Runtime, fed as the Triton config
describes them, and through a real `trtd serve` daemon, and their outputs compared.

What cannot be checked here: a real Triton server loading the repository (no Triton binary
installs from PyPI but PyTriton, whose bundled server has no TensorRT backend), a full-TensorRT
engine (the library does not install on these machines: those cache entries are written with
the cache's own API and the metadata `trtd build` writes, their bytes are placeholders), and a
KServe cluster.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason='the Triton check needs tritonclient[grpc] (the test extra)')
onnx = pytest.importorskip("onnx")

from google.protobuf import text_format  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from tritonclient.grpc import model_config_pb2 as mc  # noqa: E402
from tritonclient.utils import np_to_triton_dtype  # noqa: E402

from daemon_process import serving  # noqa: E402
from trtd.daemon.builtin.onnx_models import BUILTIN_MODEL_NAMES, DEFAULT_MAX_BATCH, builtin_model_path  # noqa: E402
from trtd.daemon.commands.export_engines import find_engines  # noqa: E402
from trtd.daemon.commands.export_pbtxt import quote  # noqa: E402
from trtd.daemon.commands.export_triton import SETTINGS, plan_model  # noqa: E402
from trtd.daemon.config.settings import DEFAULT_QUEUE_DELAY_US, ModelConfig  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def _trtd(*args, cache: Path | None = None, cwd: Path | None = None):
    env = dict(os.environ)
    if cache is not None:
        env["TRTD_CACHE_DIR"] = str(cache)
    return subprocess.run([sys.executable, "-m", "trtd.daemon", *map(str, args)], capture_output=True,
                          text=True, timeout=300, env=env, cwd=cwd)


def parse(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def set_fields(message) -> set[str]:
    return {f.name for f, _ in message.ListFields()}


# -- user models (several inputs, mixed dtypes, a dynamic and a fixed batch) ----------------------


def _model(nodes, inputs, outputs, path: Path, initializers=()) -> Path:
    graph = helper.make_graph(nodes, path.stem, inputs, outputs, initializer=list(initializers))
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    return path


def dynamic_model(path: Path) -> Path:
    """Four inputs of three dtypes sharing a dynamic batch N, one more dynamic dimension, five
    outputs of four dtypes, two of them of the batch dimension alone."""
    v = helper.make_tensor_value_info
    nodes = [
        helper.make_node("Cast", ["b"], ["bf"], to=TensorProto.FLOAT),
        helper.make_node("ReduceMean", ["bf"], ["bm"], axes=[1], keepdims=1),
        helper.make_node("Add", ["a", "bm"], ["y"]),
        helper.make_node("Mul", ["c", "c"], ["z"]),
        helper.make_node("Greater", ["a", "zero"], ["flag"]),
        helper.make_node("ArgMax", ["a"], ["idx"], axis=1, keepdims=0),
        helper.make_node("ReduceMean", ["d"], ["m"], axes=[1], keepdims=0),
    ]
    zero = helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])
    return _model(nodes, [v("a", TensorProto.FLOAT, ["N", 4]), v("b", TensorProto.INT64, ["N", 3]),
                          v("c", TensorProto.FLOAT16, ["N", 2]), v("d", TensorProto.FLOAT, ["N", "len"])],
                  [v("y", TensorProto.FLOAT, ["N", 4]), v("z", TensorProto.FLOAT16, ["N", 2]),
                   v("flag", TensorProto.BOOL, ["N", 4]), v("idx", TensorProto.INT64, ["N"]),
                   v("m", TensorProto.FLOAT, ["N"])], path, [zero])


def fixed_model(path: Path) -> Path:
    """Two inputs of fixed shape (the first dimension is not a batch)."""
    v = helper.make_tensor_value_info
    nodes = [helper.make_node("Cast", ["q"], ["qf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["p", "qf"], ["r"]),
             helper.make_node("ReduceMax", ["q"], ["s"], axes=[1], keepdims=0)]
    return _model(nodes, [v("p", TensorProto.FLOAT, [2, 3]), v("q", TensorProto.INT32, [2, 3])],
                  [v("r", TensorProto.FLOAT, [2, 3]), v("s", TensorProto.INT32, [2])], path)


def complex_model(path: Path) -> Path:
    v = helper.make_tensor_value_info
    return _model([helper.make_node("Identity", ["w"], ["w_out"])], [v("w", TensorProto.COMPLEX64, ["N", 2])],
                  [v("w_out", TensorProto.COMPLEX64, ["N", 2])], path)


# The config the tests export: every built-in model, the two user models, settings of each kind.
# name -> (extra TOML lines, the max_batch_size expected)
BUILTIN_SETTINGS = {
    "demo": ('intra_op_threads = 2\ninter_op_threads = 1\n', DEFAULT_MAX_BATCH["demo"]),
    "mlp": ("max_batch = 16\ninstances = 3\n", 16),
    "nearzero224": ("", DEFAULT_MAX_BATCH["nearzero224"]),
    "resnet18": ("idle_spin_us = 50\nmax_queue = 8\n", DEFAULT_MAX_BATCH["resnet18"]),
    "volume3d": ("", DEFAULT_MAX_BATCH["volume3d"]),
}
assert set(BUILTIN_SETTINGS) == set(BUILTIN_MODEL_NAMES), "a new built-in model: add it here"
USER_SETTINGS = {"dyn": ("max_batch = 32\n", 32), "fixed": ("max_batch = 8\n", 0)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The repository written by the CLI from one config, with the config and the CLI's output."""
    root = tmp_path_factory.mktemp("export")
    dynamic_model(root / "dyn.onnx")
    fixed_model(root / "fixed.onnx")
    toml = "".join(f'[models.{name}]\npath = "builtin:{name}"\n{extra}' for name, (extra, _) in BUILTIN_SETTINGS.items())
    toml += "".join(f'[models.{name}]\npath = "{name}.onnx"\n{extra}' for name, (extra, _) in USER_SETTINGS.items())
    (root / "trtd.toml").write_text(toml)
    out = _trtd("export", "triton", "--config", root / "trtd.toml", "-o", root / "repo", cwd=root)
    assert out.returncode == 0, out.stdout + out.stderr
    return root, out


def _expected_tensors(values, initializers, batched: bool):
    expected = []
    for value in values:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dtype = "TYPE_" + np_to_triton_dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type))
        dims = [d.dim_value if d.dim_value > 0 else -1 for d in tensor.shape.dim]
        dims = dims[1:] if batched else dims
        expected.append((value.name, dtype, dims or [1], [] if dims else [[]]))
    return expected


def _actual_tensors(tensors):
    return [(t.name, mc.DataType.Name(t.data_type), list(t.dims),
             [list(t.reshape.shape)] if t.HasField("reshape") else []) for t in tensors]


def _onnx_path(root: Path, name: str) -> Path:
    return builtin_model_path(name) if name in BUILTIN_SETTINGS else root / f"{name}.onnx"


@pytest.mark.parametrize("name", [*BUILTIN_SETTINGS, *USER_SETTINGS])
def test_every_exported_config_parses_into_triton_s_model_config_and_matches(exported, name):
    root, _ = exported
    extra, max_batch_size = {**BUILTIN_SETTINGS, **USER_SETTINGS}[name]
    config = parse(root / "repo" / name / "config.pbtxt")
    source = _onnx_path(root, name)
    graph = onnx.load(str(source)).graph
    initializers = {i.name for i in graph.initializer}
    assert config.name == name and config.backend == "onnxruntime" and config.platform == ""
    assert config.max_batch_size == max_batch_size
    batched = max_batch_size > 0
    assert _actual_tensors(config.input) == _expected_tensors(graph.input, initializers, batched)
    assert _actual_tensors(config.output) == _expected_tensors(graph.output, initializers, batched)
    (group,) = config.instance_group
    instances = 3 if "instances = 3" in extra else 1
    assert (group.kind, group.count, list(group.gpus)) == (mc.ModelInstanceGroup.KIND_CPU, instances, [])
    threads = {"intra_op_thread_count": "2", "inter_op_thread_count": "1"} if name == "demo" else {}
    assert {k: v.string_value for k, v in config.parameters.items()} == threads
    # Nothing else is set: no batcher (no dynamic_batching in the config), no engines, no graphs.
    # (proto3 counts max_batch_size 0 as unset.)
    assert set_fields(config) == {"name", "backend", "input", "output", "instance_group",
                                  *(["max_batch_size"] if batched else []), *(["parameters"] if threads else [])}
    version = root / "repo" / name / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.onnx"]
    assert (version / "model.onnx").read_bytes() == source.read_bytes()  # the very file trtd serves


def test_settings_without_an_equivalent_are_warned_about_and_commented(exported):
    root, out = exported
    text = (root / "repo" / "resnet18" / "config.pbtxt").read_text()
    for warning in ("idle_spin_us = 50: no equivalent", "max_queue = 8: Triton bounds a queue only with dynamic"):
        assert f"warning: model 'resnet18': {warning}" in out.stderr
        assert any(line.startswith("#") and warning in line for line in text.splitlines())
    assert "max_batch = 8: the model's first dimension is not a batch dimension" in \
        (root / "repo" / "fixed" / "config.pbtxt").read_text()
    assert "warning: model 'demo'" not in out.stderr  # its every setting has its field
    assert out.stdout.splitlines()[-1] == f"wrote 7 model(s) to {root / 'repo'}"


def _random(dtype: np.dtype, shape, rng):
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if dtype.kind in "iu":
        return rng.integers(-5, 6, shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def test_the_exported_onnx_runs_alike_in_onnx_runtime_and_in_a_trtd_daemon(exported, tmp_path):
    """Each model fed as its config.pbtxt describes it (a Triton client's view), through ONNX
    Runtime on the exported file and through a daemon serving the original config."""
    import onnxruntime as ort
    from tritonclient.utils import triton_to_np_dtype

    from trtd.sdk import Client

    root, _ = exported
    rng = np.random.default_rng(20)
    requests = {}
    for name in [*BUILTIN_SETTINGS, *USER_SETTINGS]:
        config = parse(root / "repo" / name / "config.pbtxt")
        batch = [min(2, config.max_batch_size)] if config.max_batch_size else []
        requests[name] = {t.name: _random(np.dtype(triton_to_np_dtype(mc.DataType.Name(t.data_type)[5:])),
                                          batch + [5 if d < 0 else d for d in t.dims], rng)
                          for t in config.input}
    with serving(tmp_path, (root / "trtd.toml").read_text().replace('path = "dyn', f'path = "{root}/dyn')
                 .replace('path = "fixed', f'path = "{root}/fixed')) as daemon, \
            Client(endpoint=daemon.endpoint, timeout=60) as client:
        for name, inputs in requests.items():
            session = ort.InferenceSession(str(root / "repo" / name / "1" / "model.onnx"),
                                           providers=["CPUExecutionProvider"])
            names = [o.name for o in session.get_outputs()]
            expected = dict(zip(names, session.run(None, inputs)))
            got = client.infer(name, inputs)
            got = got if isinstance(got, dict) else {names[0]: got}
            assert set(got) == set(expected), name
            for output, value in expected.items():
                assert got[output].dtype == value.dtype and got[output].shape == value.shape, (name, output)
                np.testing.assert_allclose(got[output], value, rtol=1e-5, atol=1e-6, err_msg=f"{name}.{output}")


def test_a_torchscript_model_exports_for_pytorch_libtorch(tmp_path):
    pytest.importorskip("torch", reason="TorchScript export needs torch")
    from trtd.daemon.builtin.torch_models import builtin_torchscript_path

    (tmp_path / "trtd.toml").write_text('[models.tdemo]\npath = "builtin:demo"\nbackend = "torch"\n'
                                        'instances = 2\ncuda_graphs = true\ndevice = 1\n')
    out = _trtd("export", "triton", "--config", tmp_path / "trtd.toml", "-o", tmp_path / "repo")
    assert out.returncode == 0, out.stderr
    config = parse(tmp_path / "repo" / "tdemo" / "config.pbtxt")
    assert config.platform == "pytorch_libtorch" and config.backend == "" and config.max_batch_size == 64
    assert _actual_tensors(config.input) == [("x__0", "TYPE_FP32", [64], [])]
    assert _actual_tensors(config.output) == [("output__0", "TYPE_FP32", [10], [])]
    (group,) = config.instance_group
    assert (group.kind, group.count, list(group.gpus)) == (mc.ModelInstanceGroup.KIND_GPU, 2, [1])
    assert not config.HasField("optimization")  # the PyTorch backend captures no graphs...
    assert "warning: model 'tdemo': cuda_graphs = true: Triton's PyTorch backend does not capture" in out.stderr
    pt = tmp_path / "repo" / "tdemo" / "1" / "model.pt"
    assert pt.read_bytes() == builtin_torchscript_path("demo").read_bytes()


def test_a_reduced_precision_model_exports_the_variant_trtd_serves(tmp_path):
    from trtd.daemon.precision.convert import convert

    (tmp_path / "trtd.toml").write_text('[models.half]\npath = "builtin:mlp"\nprecision = "fp16"\n')
    out = _trtd("export", "triton", "--config", tmp_path / "trtd.toml", "--cache-dir", tmp_path / "cache",
                "-o", tmp_path / "repo")
    assert out.returncode == 0, out.stderr
    variant = convert(builtin_model_path("mlp"), "fp16", cache_root=tmp_path / "cache")
    assert variant.cached  # the export made it, in the cache the daemon would take it from
    assert (tmp_path / "repo" / "half" / "1" / "model.onnx").read_bytes() == variant.path.read_bytes()
    config = parse(tmp_path / "repo" / "half" / "config.pbtxt")
    # FP16 inside, the declared FP32 inputs and outputs kept (as trtd serves it).
    assert _actual_tensors(config.input) == [("x", "TYPE_FP32", [64], [])]
    assert _actual_tensors(config.output) == [("y", "TYPE_FP32", [10], [])]
    assert 'precision = "fp16": 1/model.onnx is trtd\'s fp16 variant' in (
        tmp_path / "repo" / "half" / "config.pbtxt").read_text()


# -- dynamic batching (issue 18's settings) --------------------------------------------------------

def _batched_config(**kwargs) -> ModelConfig:
    return ModelConfig(**kwargs)


def _render(model, tmp_path: Path) -> mc.ModelConfig:
    path = tmp_path / f"{model.name}.pbtxt"
    path.write_text(model.config_text("test"))
    return parse(path)


def test_dynamic_batching_settings_become_triton_s_dynamic_batcher(tmp_path):
    config = _batched_config(name="mlp", path="builtin:mlp", max_batch=16, max_queue=32,
                             dynamic_batching=True, max_queue_delay_us=300, preferred_batch_sizes=[4, 8])
    model = plan_model(config, str(tmp_path))
    parsed = _render(model, tmp_path)
    assert parsed.max_batch_size == 16 and parsed.WhichOneof("scheduling_choice") == "dynamic_batching"
    batcher = parsed.dynamic_batching
    assert list(batcher.preferred_batch_size) == [4, 8]
    assert batcher.max_queue_delay_microseconds == 300
    assert batcher.default_queue_policy.max_queue_size == 32
    assert not model.warnings, model.warnings
    # Off: no batcher, and a queue bound that only a batcher could carry is named.
    off = plan_model(_batched_config(name="mlp", path="builtin:mlp", max_queue=32), str(tmp_path))
    assert _render(off, tmp_path).WhichOneof("scheduling_choice") is None
    assert any("max_queue = 32" in w for w in off.warnings)
    # A model without a batch dimension cannot be batched by Triton either: a warning, no batcher.
    fixed = plan_model(_batched_config(name="fixed", path=str(fixed_model(tmp_path / "f.onnx")),
                                       dynamic_batching=True), str(tmp_path))
    assert _render(fixed, tmp_path).WhichOneof("scheduling_choice") is None
    assert any(w.startswith("dynamic_batching = true: the model has no batch dimension") for w in fixed.warnings)


def test_dynamic_batching_from_a_config_file(tmp_path):
    (tmp_path / "trtd.toml").write_text('[models.demo]\npath = "builtin:demo"\ndynamic_batching = true\n'
                                        'max_queue_delay_us = 150\npreferred_batch_sizes = [2, 4]\n')
    out = _trtd("export", "triton", "--config", tmp_path / "trtd.toml", "-o", tmp_path / "repo")
    assert out.returncode == 0, out.stderr
    batcher = parse(tmp_path / "repo" / "demo" / "config.pbtxt").dynamic_batching
    assert (list(batcher.preferred_batch_size), batcher.max_queue_delay_microseconds,
            batcher.default_queue_policy.max_queue_size) == ([2, 4], 150, 64)


def test_the_default_queue_delay_is_the_devices_as_the_daemon_uses_it(tmp_path):
    """max_queue_delay_us = -1 (unset) is the device's default delay (0 on the CPU), never -1."""
    model = plan_model(_batched_config(name="mlp", path="builtin:mlp", max_batch=16,
                                       dynamic_batching=True), str(tmp_path))
    assert _render(model, tmp_path).dynamic_batching.max_queue_delay_microseconds == \
        DEFAULT_QUEUE_DELAY_US["cpu"]


# -- engines ------------------------------------------------------------------------------------


def test_tensorrt_rtx_engines_map_each_compute_capability_to_the_engine(tmp_path):
    """A real TensorRT-RTX engine for sm86 and sm89, built here (no GPU needed), as the daemon's
    default profile (batch 1..max_batch) builds it."""
    pytest.importorskip("tensorrt_rtx", reason='TensorRT-RTX is not installed (pip install "trtd[rtx]")')
    from trtd.daemon.engines.build import BuildJob, build
    from trtd.daemon.engines.fingerprint import BuildOptions
    from trtd.daemon.engines.profiles import InputRange, Profile

    cache = tmp_path / "cache"
    onnx_path = builtin_model_path("mlp")
    profile = Profile((InputRange("x", (1, 64), (16, 64), (32, 64)),))
    entry, built = build(BuildJob("mlp", str(onnx_path), BuildOptions(profiles=(profile,), targets=("sm86", "sm89")),
                                  builder="tensorrt-rtx", cache_root=str(cache)))
    assert built
    (tmp_path / "trtd.toml").write_text(
        '[models.mlp]\npath = "builtin:mlp"\nbackend = "tensorrt"\nengine_library = "tensorrt-rtx"\n'
        'device = 0\ncuda_graphs = true\nmax_batch = 64\nopt_level = 3\nworkspace_mib = 256\n')
    args = ("export", "triton", "--config", tmp_path / "trtd.toml", "--cache-dir", cache)
    # By default only what stock Triton runs: the model goes to ONNX Runtime, saying why.
    plain = _trtd(*args, "-o", tmp_path / "plain")
    assert plain.returncode == 0, plain.stderr
    assert parse(tmp_path / "plain" / "mlp" / "config.pbtxt").backend == "onnxruntime"
    assert "pass --rtx-engines" in plain.stderr and "no TensorRT engine of this model" in plain.stderr
    out = _trtd(*args, "--rtx-engines", "-o", tmp_path / "repo")
    assert out.returncode == 0, out.stderr
    config = parse(tmp_path / "repo" / "mlp" / "config.pbtxt")
    file_name = "model.rtx-sm86-sm89.plan"
    assert config.platform == "tensorrt_plan" and config.backend == ""
    assert dict(config.cc_model_filenames) == {"8.6": file_name, "8.9": file_name}
    assert config.default_model_filename == ""
    version = tmp_path / "repo" / "mlp" / "1"
    assert sorted(p.name for p in version.iterdir()) == sorted([file_name, "model.onnx"])
    assert (version / file_name).read_bytes() == entry.engine_path.read_bytes()
    assert (version / "model.onnx").read_bytes() == onnx_path.read_bytes()
    # max_batch = 64, but the engine's profile stops at 32: Triton would refuse 64.
    assert config.max_batch_size == 32
    assert "max_batch = 64, but the exported engines take batches up to 32" in out.stderr
    assert _actual_tensors(config.input) == [("x", "TYPE_FP32", [64], [])]
    assert _actual_tensors(config.output) == [("y", "TYPE_FP32", [10], [])]
    (group,) = config.instance_group
    assert (group.kind, group.count, list(group.gpus)) == (mc.ModelInstanceGroup.KIND_GPU, 1, [0])
    assert config.optimization.cuda.graphs and config.optimization.cuda.busy_wait_events
    assert not config.parameters  # ONNX Runtime's threads are not the engine's
    text = (version.parent / "config.pbtxt").read_text()
    assert "workspace_mib = 256: carried in the engines" in text
    # An engine file as `trtd build -o` ships it (its metadata beside it) is the model itself.
    from trtd.daemon.commands.engines import _copy_out

    (tmp_path / "ship").mkdir()
    _copy_out(entry, tmp_path / "ship" / "mlp.engine")
    (tmp_path / "eng.toml").write_text('[models.eng]\npath = "ship/mlp.engine"\nbackend = "tensorrt"\n')
    shipped = _trtd("export", "triton", "--config", tmp_path / "eng.toml", "--rtx-engines", "-o", tmp_path / "eng")
    assert shipped.returncode == 0, shipped.stderr
    config = parse(tmp_path / "eng" / "eng" / "config.pbtxt")
    assert (config.platform, dict(config.cc_model_filenames), config.max_batch_size) == (
        "tensorrt_plan", {"8.6": file_name, "8.9": file_name}, 32)
    assert (tmp_path / "eng" / "eng" / "1" / file_name).read_bytes() == entry.engine_path.read_bytes()
    unshipped = _trtd("export", "triton", "--config", tmp_path / "eng.toml", "-o", tmp_path / "eng2")
    assert unshipped.returncode == 0 and "mlp.engine is a TensorRT-RTX engine" in unshipped.stderr
    config = parse(tmp_path / "eng2" / "eng" / "config.pbtxt")
    assert config.backend == "onnxruntime" and config.max_batch_size == 64  # ONNX Runtime's default batch
    assert (tmp_path / "eng2" / "eng" / "1" / "model.onnx").read_bytes() == onnx_path.read_bytes()


def _store_tensorrt_entry(cache_root: Path, onnx_path: Path, gpu: str, cc: str, stored_at: str,
                          payload: bytes, hardware_compatible: bool = False):
    """A cache entry as `trtd build` writes one for a full-TensorRT engine: the fingerprint and
    metadata of engines/build.py, through EngineCache.store. The bytes are not an engine (full
    TensorRT does not install here): the export copies them as they are."""
    from trtd.daemon.engines.build import onnx_sha256
    from trtd.daemon.engines.cache import EngineCache
    from trtd.daemon.engines.fingerprint import BuildEnvironment, BuildOptions, fingerprint, fingerprint_inputs
    from trtd.daemon.engines.profiles import InputRange, Profile

    options = BuildOptions(profiles=(Profile((InputRange("x", (1, 64), (32, 64), (64, 64)),)),),
                           hardware_compatible=hardware_compatible)
    env = BuildEnvironment("10.13.0.35", gpu, cc, "Linux", 580)
    sha = onnx_sha256(str(onnx_path))
    inputs = fingerprint_inputs(sha, env, options)
    entry = EngineCache(cache_root).store("mlp", fingerprint(sha, env, options), payload,
                                          {"builder": "tensorrt", "library": "tensorrt",
                                           "onnx_path": str(onnx_path), "depends_on": inputs})
    meta = json.loads(entry.meta_path.read_text())
    meta["stored_at"] = stored_at  # the order of builds, which decides between two for one GPU
    entry.meta_path.write_text(json.dumps(meta))
    return entry


def test_full_tensorrt_engines_one_per_compute_capability(tmp_path):
    onnx_path = builtin_model_path("mlp")
    cache = tmp_path / "cache"
    old_h200 = _store_tensorrt_entry(cache, onnx_path, "NVIDIA H200", "9.0", "2026-11-01T00:00:00Z", b"old h200")
    h200 = _store_tensorrt_entry(cache, onnx_path, "NVIDIA H200 NVL", "9.0", "2026-12-01T00:00:00Z", b"h200")
    l4 = _store_tensorrt_entry(cache, onnx_path, "NVIDIA L4", "8.9", "2026-12-01T00:00:00Z", b"l4")
    anywhere = _store_tensorrt_entry(cache, onnx_path, "NVIDIA A100", "8.0", "2026-12-01T00:00:00Z", b"any",
                                     hardware_compatible=True)
    broken = _store_tensorrt_entry(cache, onnx_path, "NVIDIA T4", "7.5", "2026-12-01T00:00:00Z", b"t4")
    broken.engine_path.write_bytes(b"t4, truncated")
    other = _store_tensorrt_entry(cache, builtin_model_path("demo"), "NVIDIA B200", "10.0",
                                  "2026-12-01T00:00:00Z", b"another model")
    from trtd.daemon.engines.build import onnx_sha256

    found = find_engines(cache, onnx_sha256(str(onnx_path)))
    assert found.cc_model_filenames == {"8.9": "model.sm89.plan", "9.0": "model.sm90.plan"}
    assert found.default_model_filename == "model.plan"
    assert {e.file_name: e.path for e in found.engines} == {
        "model.sm89.plan": l4.engine_path, "model.sm90.plan": h200.engine_path, "model.plan": anywhere.engine_path}
    assert any("damaged" in n and broken.engine_path.name in n for n in found.notes)
    assert any(old_h200.fingerprint in n and "superseded" in n for n in found.notes)
    assert other.engine_path not in [e.path for e in found.engines]
    (tmp_path / "trtd.toml").write_text('[models.mlp]\npath = "builtin:mlp"\nbackend = "tensorrt"\n'
                                        'device = 1\ngpu_wait = "block"\ninstances = 2\n')
    out = _trtd("export", "triton", "--config", tmp_path / "trtd.toml", "--cache-dir", cache, "-o", tmp_path / "repo")
    assert out.returncode == 0, out.stderr
    config = parse(tmp_path / "repo" / "mlp" / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 64  # the built-in's, the profile's
    assert dict(config.cc_model_filenames) == found.cc_model_filenames
    assert config.default_model_filename == "model.plan"
    assert not config.HasField("optimization")  # no graphs, gpu_wait = "block": no busy waiting
    (group,) = config.instance_group
    assert (group.kind, group.count, list(group.gpus)) == (mc.ModelInstanceGroup.KIND_GPU, 2, [1])
    version = tmp_path / "repo" / "mlp" / "1"
    assert (version / "model.sm90.plan").read_bytes() == b"h200" and (version / "model.plan").read_bytes() == b"any"


# -- bad input ----------------------------------------------------------------------------------


def test_bad_input_gets_clear_errors_and_writes_nothing(tmp_path):
    complex_model(tmp_path / "cplx.onnx")
    fixed_model(tmp_path / "fixed.onnx")
    (tmp_path / "trtd.toml").write_text('[models.demo]\npath = "builtin:demo"\n'
                                        '[models.cplx]\npath = "cplx.onnx"\n[models.fixed]\npath = "fixed.onnx"\n')
    config = tmp_path / "trtd.toml"

    def export(*args):
        return _trtd("export", "triton", "--config", config, *args)

    unknown = export("-o", tmp_path / "r1", "--model", "dmeo")
    assert unknown.returncode == 1
    assert "unknown model 'dmeo' in" in unknown.stderr and "did you mean 'demo'?" in unknown.stderr
    bad_type = export("-o", tmp_path / "r2")
    assert bad_type.returncode == 1 and not (tmp_path / "r2").exists()
    assert ("model 'cplx': input 'w' is complex64, which Triton has no data type for" in bad_type.stderr
            and "model 'cplx': output 'w_out' is complex64" in bad_type.stderr)
    (tmp_path / "afile").write_text("x")
    onto_file = export("-o", tmp_path / "afile", "--model", "demo")
    assert onto_file.returncode == 1 and "a file is there; name a folder" in onto_file.stderr
    under_file = export("-o", tmp_path / "afile" / "repo", "--model", "demo")
    assert under_file.returncode == 1 and "is a file, not a folder" in under_file.stderr
    existing = tmp_path / "existing"
    (existing / "keep").mkdir(parents=True)
    refused = export("-o", existing, "--model", "demo")
    assert refused.returncode == 1 and "exists and is not empty (keep)" in refused.stderr and "--force" in refused.stderr
    forced = export("-o", existing, "--model", "demo", "--model", "fixed", "--force")
    assert forced.returncode == 0, forced.stderr
    assert sorted(p.name for p in existing.iterdir()) == ["demo", "fixed", "keep"]
    again = export("-o", existing, "--model", "demo", "--force")  # a model there is replaced whole
    assert again.returncode == 0 and parse(existing / "demo" / "config.pbtxt").name == "demo"
    assert not [p for p in tmp_path.iterdir() if ".trtd-export-" in p.name]  # no staging left behind
    missing = _trtd("export", "triton", "--config", tmp_path / "nope.toml", "-o", tmp_path / "r3")
    assert missing.returncode == 1 and "nope.toml does not exist" in missing.stderr


def test_models_trtd_would_not_serve_as_configured_are_refused(tmp_path):
    from trtd.daemon.commands.export_triton import ExportError

    with pytest.raises(ExportError, match="Triton names a model by its folder"):
        plan_model(ModelConfig(name="a/b", path="builtin:demo"), str(tmp_path))
    with pytest.raises(ExportError, match="the onnxruntime backend runs on the CPU"):
        plan_model(ModelConfig(name="gpu", path="builtin:demo", device=0), str(tmp_path))
    with pytest.raises(ExportError, match="model 'gone': model file .*gone.onnx does not exist"):
        plan_model(ModelConfig(name="gone", path=str(tmp_path / "gone.onnx")), str(tmp_path))


def test_quoted_names_survive_protobuf_s_parser():
    for name in ('in"put', "back\\slash", "line\nbreak", "ünï", "tab\there"):
        assert text_format.Parse(f"name: {quote(name)}", mc.ModelConfig()).name == name


# -- KServe -------------------------------------------------------------------------------------


def test_kserve_manifest_points_triton_at_the_repository(tmp_path):
    yaml = pytest.importorskip("yaml")
    (tmp_path / "trtd.toml").write_text('[models.demo]\npath = "builtin:demo"\n'
                                        '[models.trt]\npath = "builtin:mlp"\nbackend = "tensorrt"\ndevice = 1\n')
    out = _trtd("export", "kserve", "--config", tmp_path / "trtd.toml", "-o", tmp_path / "My_Models",
                "--storage-uri", "s3://bucket/trtd/models")
    assert out.returncode == 0, out.stderr
    manifest = tmp_path / "My_Models.inferenceservice.yaml"
    doc = yaml.safe_load(manifest.read_text())
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1" and doc["kind"] == "InferenceService"
    assert doc["metadata"] == {"name": "my-models"}
    model = doc["spec"]["predictor"]["model"]
    assert model == {"modelFormat": {"name": "triton"}, "runtime": "kserve-tritonserver", "protocolVersion": "v2",
                     "storageUri": "s3://bucket/trtd/models", "resources": {"limits": {"nvidia.com/gpu": 2}}}
    assert set(doc) == {"apiVersion", "kind", "metadata", "spec"} and set(doc["spec"]) == {"predictor"}
    assert parse(tmp_path / "My_Models" / "demo" / "config.pbtxt").name == "demo"  # the repository too
    # Bad names and URIs are refused before anything is written.
    bad_name = _trtd("export", "kserve", "--config", tmp_path / "trtd.toml", "-o", tmp_path / "r2",
                     "--storage-uri", "s3://b/m", "--name", "Bad_Name")
    assert bad_name.returncode == 1 and "DNS-1035 label" in bad_name.stderr and "'bad-name'" in bad_name.stderr
    bad_uri = _trtd("export", "kserve", "--config", tmp_path / "trtd.toml", "-o", tmp_path / "r2",
                    "--storage-uri", "bucket/models")
    assert bad_uri.returncode == 1 and "--storage-uri 'bucket/models'" in bad_uri.stderr
    assert not (tmp_path / "r2").exists()
    again = _trtd("export", "kserve", "--config", tmp_path / "trtd.toml", "-o", tmp_path / "r3",
                  "--storage-uri", "s3://b/m", "--manifest", manifest)
    assert again.returncode == 1 and "exists; pass --force" in again.stderr
    cpu_only = _trtd("export", "kserve", "--config", tmp_path / "trtd.toml", "-o", tmp_path / "r4",
                     "--storage-uri", "gs://b/m", "--model", "demo", "--name", "cpu")
    assert cpu_only.returncode == 0, cpu_only.stderr
    assert "resources" not in yaml.safe_load((tmp_path / "r4.inferenceservice.yaml").read_text())["spec"]["predictor"]["model"]


# -- the mapping itself -------------------------------------------------------------------------


def test_every_trtd_model_setting_has_its_triton_mapping_in_the_code_and_the_readme():
    fields = {f.name for f in dataclasses.fields(ModelConfig)}
    assert fields - set(SETTINGS) == set(), "a new per-model setting: say what it becomes in Triton (SETTINGS)"
    assert set(SETTINGS) - fields == set(), "SETTINGS names a key ModelConfig does not have"
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Outgrowing one machine"):]
    section = section[:section.index("\n## ", 4)]
    assert [key for key in SETTINGS if f"| `{key}` |" not in section] == []


def test_trtd_export_model_pt_still_means_the_onnx_export():
    from trtd.daemon.commands.cli import build_parser
    from trtd.daemon.commands.export import compat_argv

    argv = compat_argv(["export", "m.pt", "--input", "x:1,4", "-o", "m.onnx"])
    assert argv == ["export", "onnx", "m.pt", "--input", "x:1,4", "-o", "m.onnx"]
    args = build_parser().parse_args(argv)
    assert args.torchscript == "m.pt" and args.func.__module__ == "trtd.daemon.precision.export"
    assert compat_argv(["export", "triton", "-o", "r"]) == ["export", "triton", "-o", "r"]
