from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from trtd.daemon.builtin.onnx_models import (  # noqa: E402
    BUILTIN_MODEL_NAMES,
    DEFAULT_MAX_BATCH,
    GENERATOR_VERSION,
    build_builtin_model,
    builtin_model_path,
)

EXPECTED_SHAPES = {
    "demo": ([64], [10]),
    "mlp": ([64], [10]),
    "nearzero224": ([3, 224, 224], [3]),
    "resnet18": ([3, 224, 224], [5]),
    "volume3d": ([1, 128, 256, 256], [1, 128, 256, 256]),
}


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    # One cache for the module so resnet18 (~43 MiB) is generated only once.
    return tmp_path_factory.mktemp("trtd-cache")


def test_names_and_max_batch():
    assert BUILTIN_MODEL_NAMES == ("demo", "mlp", "nearzero224", "resnet18", "volume3d")
    assert set(DEFAULT_MAX_BATCH) == set(BUILTIN_MODEL_NAMES)
    assert set(EXPECTED_SHAPES) == set(BUILTIN_MODEL_NAMES)


@pytest.mark.parametrize("name", BUILTIN_MODEL_NAMES)
def test_model_checks_loads_and_runs(name, cache_dir):
    path = builtin_model_path(name, cache_dir)
    assert path.parent == cache_dir / "models"
    assert path.name == f"{name}-v{GENERATOR_VERSION}.onnx"
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    in_tail, out_tail = EXPECTED_SHAPES[name]
    (inp,) = session.get_inputs()
    (out,) = session.get_outputs()
    assert (inp.name, inp.shape) == ("x", ["batch", *in_tail])
    assert (out.name, out.shape) == ("y", ["batch", *out_tail])

    x = np.random.default_rng(0).standard_normal([1, *in_tail], dtype=np.float32)
    (y,) = session.run(None, {"x": x})
    assert y.dtype == np.float32
    assert list(y.shape) == [1, *out_tail]
    assert np.isfinite(y).all()
    assert np.any(y != 0)


def test_build_is_deterministic():
    assert build_builtin_model("demo").SerializeToString() == build_builtin_model("demo").SerializeToString()


def test_unknown_name_lists_known_models():
    with pytest.raises(KeyError) as excinfo:
        build_builtin_model("nope")
    assert isinstance(excinfo.value, ValueError)
    for name in BUILTIN_MODEL_NAMES:
        assert name in str(excinfo.value)
    with pytest.raises(ValueError):
        builtin_model_path("nope")


def test_path_is_cached_not_rewritten(tmp_path):
    first = builtin_model_path("demo", cache_dir=tmp_path)
    assert first.is_file()
    mtime = first.stat().st_mtime_ns
    second = builtin_model_path("demo", cache_dir=tmp_path)
    assert second == first
    assert second.stat().st_mtime_ns == mtime
    # No temp files left behind by the atomic write.
    assert [p.name for p in (tmp_path / "models").iterdir()] == [first.name]


def test_default_cache_dir_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv("TRTD_CACHE_DIR", str(tmp_path))
    path = builtin_model_path("mlp")
    assert path == tmp_path / "models" / f"mlp-v{GENERATOR_VERSION}.onnx"
    assert path.is_file()
