"""Real TensorRT-RTX engines, built on this machine without a GPU (the test extra installs
tensorrt-rtx-cu13 on Linux): every built-in model, profiles, parser and builder errors, the
cache with real engine bytes, concurrent builds, FP16 and INT8 variants, `trtd build` itself.

The engines cannot run here (no GPU; TensorRT-RTX refuses datacenter GPUs): what runs is the
builder, through the same code that builds full-TensorRT engines (engines/builders.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install \"trtd[rtx]\")")

from trtd.daemon.builtin.onnx_models import BUILTIN_MODEL_NAMES, DEFAULT_MAX_BATCH, builtin_model_path  # noqa: E402
from trtd.daemon.engines.build import BuildJob, build  # noqa: E402
from trtd.daemon.engines.builders import BuildError  # noqa: E402
from trtd.daemon.engines.cache import EngineCache  # noqa: E402
from trtd.daemon.engines.fingerprint import BuildOptions  # noqa: E402
from trtd.daemon.engines.library import DEFAULT_RTX_TARGETS  # noqa: E402
from trtd.daemon.engines.profiles import InputRange, Profile, parse_profiles  # noqa: E402

RESNET_PROFILE = "x:1x3x224x224,4x3x224x224,8x3x224x224"


def _trtd(*args, cache, check=False):
    out = subprocess.run([sys.executable, "-m", "trtd.daemon", *args], capture_output=True, text=True,
                         timeout=300, env={**os.environ, "TRTD_CACHE_DIR": str(cache)})
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def _batch_profile(name: str, top: int) -> Profile:
    """Batch 1..top of a built-in model, as the daemon's default profile is made (running/swap.py)."""
    import onnx

    (value,) = onnx.load(str(builtin_model_path(name)), load_external_data=False).graph.input
    rest = tuple(d.dim_value for d in value.type.tensor_type.shape.dim[1:])
    return Profile((InputRange(value.name, (1, *rest), (max(top // 2, 1), *rest), (top, *rest)),))


def _rtx_job(name: str, cache: Path, profiles: tuple[Profile, ...], targets=DEFAULT_RTX_TARGETS,
             onnx: str | None = None, **kwargs) -> BuildJob:
    return BuildJob(name, onnx or str(builtin_model_path(name)), BuildOptions(profiles=profiles, targets=targets),
                    builder="tensorrt-rtx", cache_root=str(cache), **kwargs)


@pytest.fixture(scope="module")
def builtins(tmp_path_factory):
    """Every built-in model's engine for the default targets, batch 1..its default max batch."""
    cache = tmp_path_factory.mktemp("rtx-builtins")
    return {name: build(_rtx_job(name, cache, (_batch_profile(name, DEFAULT_MAX_BATCH[name]),)))[0]
            for name in BUILTIN_MODEL_NAMES}


@pytest.mark.parametrize("name", BUILTIN_MODEL_NAMES)
def test_every_builtin_model_builds_for_the_default_targets(builtins, name):
    entry = builtins[name]
    data = entry.engine_path.read_bytes()
    assert len(data) == entry.metadata["bytes"] > 10_000
    assert entry.metadata["library"] == "tensorrt-rtx"
    assert entry.metadata["targets"] == list(DEFAULT_RTX_TARGETS) == ["sm86", "sm89", "sm120"]
    assert entry.metadata["depends_on"]["tensorrt"].startswith("1.")
    assert entry.metadata["layers"], "the builder's layer report was not kept"
    # How long the build took is kept, not judged: speed is the machine's (bench/ measures it).
    assert EngineCache(entry.engine_path.parent.parent).verify() and entry.metadata["build_seconds"] > 0


def test_the_convolution_models_compute_in_fp32_as_their_onnx_says(builtins):
    # Strongly typed: precision comes from the graph; FP32 ONNX, FP32 engine.
    assert builtins["resnet18"].metadata["compute_precisions"] == {"Float": 21}  # 20 convolutions, 1 classifier


def test_a_multi_profile_build_with_dynamic_batch_ranges(tmp_path):
    profiles = tuple(parse_profiles([["x:1x3x224x224,2x3x224x224,4x3x224x224"],
                                     ["x:8x3x224x224,16x3x224x224,32x3x224x224"]]))
    entry, built = build(_rtx_job("resnet18", tmp_path, profiles))
    assert built
    recorded = entry.metadata["depends_on"]["options"]["profiles"]
    assert [p["inputs"][0]["max"][0] for p in recorded] == [4, 32]
    one, _ = build(_rtx_job("resnet18", tmp_path, profiles[:1]))
    assert one.fingerprint != entry.fingerprint


def test_a_malformed_onnx_names_the_failing_node(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.zeros((4, 5, 3, 3), np.float32), "w")  # 5 channels for 3
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["r"], name="fine_relu"),
                               helper.make_node("Conv", ["r", "w"], ["y"], name="conv_wrong_channels")],
                              "bad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])],
                              initializer=[weights])
    path = tmp_path / "bad.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9), path)
    with pytest.raises(BuildError, match="TensorRT-RTX's ONNX parser rejected .*node conv_wrong_channels, op Conv"):
        build(_rtx_job("bad", tmp_path / "c", (), onnx=str(path)))
    assert not list((tmp_path / "c" / "engines").glob("*.engine"))


def test_a_profile_that_contradicts_the_model(tmp_path):
    wrong = "x:1x3x256x256,2x3x256x256,4x3x256x256"
    out = _trtd("build", str(builtin_model_path("resnet18")), "--library", "tensorrt-rtx", "--profile", wrong,
                cache=tmp_path)
    assert out.returncode == 1 and "fixed at 224" in out.stderr  # refused before building
    # Past that check, TensorRT-RTX's own words reach the user.
    with pytest.raises(BuildError, match="TensorRT-RTX could not build the engine: .*"):
        build(_rtx_job("resnet18", tmp_path, tuple(parse_profiles([[wrong]]))))


def test_store_lookup_verify_damage_rebuild_with_real_engine_bytes(tmp_path):
    model = str(builtin_model_path("mlp"))
    args = ("build", model, "--library", "tensorrt-rtx", "--profile", "x:1x64,8x64,64x64", "--name", "mlp")
    first = _trtd(*args, cache=tmp_path, check=True)
    assert first.stdout.startswith("built: ") and "for sm86,sm89,sm120)" in first.stdout
    assert "library: tensorrt-rtx (--library tensorrt-rtx)" in first.stderr
    assert _trtd(*args, cache=tmp_path, check=True).stdout.startswith("cached: ")
    listing = _trtd("cache", "list", cache=tmp_path, check=True).stdout.split()
    assert listing[0] == "mlp" and "tensorrt-rtx" in listing and "sm86,sm89,sm120" in listing
    assert _trtd("cache", "verify", cache=tmp_path, check=True).stdout.startswith("ok ")
    (engine,) = (tmp_path / "engines").glob("*.engine")
    good = engine.read_bytes()
    engine.write_bytes(good[:len(good) // 2])
    bad = _trtd("cache", "verify", cache=tmp_path)
    assert bad.returncode == 1 and "checksum mismatch" in bad.stdout
    assert _trtd(*args, cache=tmp_path, check=True).stdout.startswith("built: ")  # rebuilt, never used
    assert len(engine.read_bytes()) == len(good)


def test_two_processes_build_one_engine_once(tmp_path):
    args = [sys.executable, "-m", "trtd.daemon", "build", str(builtin_model_path("resnet18")),
            "--library", "tensorrt-rtx", "--profile", RESNET_PROFILE]
    procs = [subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "TRTD_CACHE_DIR": str(tmp_path)}) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert sorted(o.split(":")[0] for o in outs) == ["built", "cached"], outs
    assert len(EngineCache(tmp_path).entries()) == 1


def test_an_engine_built_for_more_gpus_serves_a_gpu_among_them_without_a_build(tmp_path):
    profiles = (_batch_profile("mlp", 8),)
    wide, built = build(_rtx_job("mlp", tmp_path, profiles, targets=("sm86", "sm89")))
    assert built
    # The daemon on an RTX 3090 asks for its own target set; the wide engine contains sm86.
    narrow, built = build(_rtx_job("mlp", tmp_path, profiles, targets=("sm86",), gpu_target="sm86"))
    assert not built and narrow.fingerprint == wide.fingerprint
    # A GPU outside the set gets its own engine.
    blackwell, built = build(_rtx_job("mlp", tmp_path, profiles, targets=("sm120",), gpu_target="sm120"))
    assert built and blackwell.metadata["targets"] == ["sm120"]


@pytest.mark.parametrize("compute_capability, chosen", [("8.6", "wide"), ("8.9", "wide"), ("12.0", "blackwell"),
                                                         ("12.1", None), ("7.5", None), ("9.0", None)])
def test_lookup_on_a_gpu_picks_an_engine_whose_targets_contain_its_compute_capability(
        rtx_families, compute_capability, chosen):
    """The daemon's lookup (engines/build.py: family + the GPU's target, from its compute capability)."""
    from trtd.daemon.engines.library import target_of

    cache, family_fp, entries = rtx_families
    found = cache.find_compatible(family_fp, target_of(compute_capability))
    assert (found.fingerprint if found else None) == (entries[chosen].fingerprint if chosen else None)


def test_a_damaged_engine_is_never_picked_for_a_gpu(tmp_path):
    profiles = (_batch_profile("mlp", 8),)
    wide, _ = build(_rtx_job("mlp", tmp_path, profiles, targets=("sm86", "sm89")))
    wide.engine_path.write_bytes(wide.engine_path.read_bytes()[:1000])
    assert EngineCache(tmp_path).find_compatible(wide.metadata["family"], "sm89") is None
    rebuilt, built = build(_rtx_job("mlp", tmp_path, profiles, targets=("sm86", "sm89", "sm120"), gpu_target="sm89"))
    assert built and rebuilt.metadata["targets"] == ["sm86", "sm89", "sm120"]


@pytest.fixture(scope="module")
def rtx_families(tmp_path_factory):
    """One model's engines for two target sets, and an unrelated model's for every target."""
    root = tmp_path_factory.mktemp("rtx-families")
    profiles = (_batch_profile("mlp", 8),)
    entries = {"wide": build(_rtx_job("mlp", root, profiles, targets=("sm86", "sm89")))[0],
               "blackwell": build(_rtx_job("mlp", root, profiles, targets=("sm120",)))[0]}
    # Another model, built for 12.1 too: never an engine for this one's lookups.
    other = build(_rtx_job("demo", root, (_batch_profile("demo", 8),), targets=("sm86", "sm89", "sm120", "sm121")))[0]
    assert other.metadata["family"] != entries["wide"].metadata["family"] == entries["blackwell"].metadata["family"]
    return EngineCache(root), entries["wide"].metadata["family"], entries


def test_turing_is_refused_for_fp32_matrix_products_in_tensorrt_rtx_s_words(tmp_path):
    # Its support matrix: FP32 on Turing only with restrictions; the builder says which.
    with pytest.raises(BuildError, match=r"Turing \(SM75\): FP32 GEMM is not supported"):
        build(_rtx_job("mlp", tmp_path, (_batch_profile("mlp", 8),), targets=("sm75",)))


def test_trtd_build_ships_the_engine_with_its_metadata_and_inspects_it(tmp_path):
    out_file = tmp_path / "ship" / "resnet.engine"
    out_file.parent.mkdir()
    out = _trtd("build", str(builtin_model_path("resnet18")), "--library", "tensorrt-rtx", "--target", "sm86",
                "--profile", RESNET_PROFILE, "-o", str(out_file), "--inspect", cache=tmp_path / "c", check=True)
    meta = json.loads(out_file.with_suffix(".json").read_text())
    assert meta["library"] == "tensorrt-rtx" and meta["targets"] == ["sm86"] and meta["file"] == "resnet.engine"
    assert out_file.stat().st_size == meta["bytes"]
    assert out.stdout.splitlines()[-1] == "convolutions and matrix products by input precision: 21 Float"
    assert any(" correlation in=Float " in line for line in out.stdout.splitlines())


def test_target_is_for_tensorrt_rtx_only(tmp_path):
    out = _trtd("build", str(builtin_model_path("mlp")), "--library", "tensorrt", "--target", "sm86",
                "--profile", "x:1x64,8x64,64x64", cache=tmp_path)
    assert out.returncode == 1 and "--target applies to TensorRT-RTX engines" in out.stderr
    unknown = _trtd("build", str(builtin_model_path("mlp")), "--library", "tensorrt-rtx", "--target", "sm90",
                    "--profile", "x:1x64,8x64,64x64", cache=tmp_path)
    assert unknown.returncode == 1 and "unknown TensorRT-RTX target(s) sm90" in unknown.stderr


@pytest.fixture(scope="module")
def variants(tmp_path_factory):
    """resnet18's FP16 and INT8 (Q/DQ, 8-bit weights: --target tensorrt) variants, via `trtd convert`."""
    from trtd.daemon.precision.convert import convert

    root = tmp_path_factory.mktemp("variants")
    samples = root / "calibration.npz"
    np.savez(samples, x=np.random.default_rng(0).standard_normal((8, 3, 224, 224), dtype=np.float32))
    source = str(builtin_model_path("resnet18"))
    fp16 = convert(source, "fp16", cache_root=str(root))
    int8 = convert(source, "int8", str(samples), "minmax", int8_target="tensorrt", cache_root=str(root))
    return {"fp16": str(fp16.path), "int8": str(int8.path), "cache": root / "engines"}


def test_the_fp16_variant_builds_into_half_precision_layers(variants):
    entry, _ = build(_rtx_job("resnet18", variants["cache"], tuple(parse_profiles([[RESNET_PROFILE]])),
                              onnx=variants["fp16"]))
    assert entry.metadata["compute_precisions"] == {"Half": 21}  # 20 convolutions and the classifier


def test_what_tensorrt_rtx_makes_of_the_int8_qdq_variant(variants):
    """Its support matrix lists INT8 only for weight-only GEMM; the builder nonetheless plans every
    convolution and the classifier on INT8 activations and INT8 weights (explicit Q/DQ). Whether
    its JIT compiles INT8 kernels for them on an RTX GPU is not seen here (no GPU)."""
    entry, _ = build(_rtx_job("resnet18", variants["cache"], tuple(parse_profiles([[RESNET_PROFILE]])),
                              onnx=variants["int8"]))
    assert entry.metadata["compute_precisions"] == {"Int8": 21}
    convolutions = [line for line in entry.metadata["layers"] if " correlation " in line]
    assert len(convolutions) == 20 and all("in=Int8 weights=Int8" in line for line in convolutions)


def test_the_build_benchmark_times_a_real_build():
    """bench/rtx_builds.py (its figures are in bench/results/): one real build through the CLI."""
    from trtd.bench.rtx_builds import _profile, build_once

    path = str(builtin_model_path("mlp"))
    run = build_once(path, "mlp", _profile(path, 8), "sm86")
    assert run["bytes"] > 10_000 and run["wall_s"] > 0 and run["build_seconds"] > 0
    assert run["command"] == ["trtd", "build", path, "--library", "tensorrt-rtx", "--target", "sm86", "--profile",
                              "x:1x64,4x64,8x64", "--name", "mlp", "--cache-dir", "FRESH"]
