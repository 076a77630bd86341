"""Choosing the TensorRT library (engine_library), the TensorRT-RTX fingerprint, targets and the
runtime cache file: the decisions, on every machine (no TensorRT-RTX needed here)."""

from __future__ import annotations

import pytest

from trtd.daemon.config.check import check_text
from trtd.daemon.config.settings import ConfigError, ModelConfig, validate_model
from trtd.daemon.engines import library as libraries
from trtd.daemon.engines.fingerprint import BuildEnvironment, BuildOptions, family, fingerprint, fingerprint_inputs
from trtd.daemon.engines.library import Gpu, Installed, TargetError, choose, parse_targets
from trtd.daemon.engines.runtime_cache import RuntimeCacheFile, runtime_cache_key, runtime_cache_path

RTX_3090 = Gpu(0, "NVIDIA GeForce RTX 3090", "8.6")
H200 = Gpu(0, "NVIDIA H200", "9.0")
ONLY_RTX = Installed(full=False, lean=False, rtx=True)
BOTH = Installed(full=True, lean=False, rtx=True)
ONLY_FULL = Installed(full=True, lean=False, rtx=False)
NOTHING = Installed(full=False, lean=False, rtx=False)


# -- the choice ------------------------------------------------------------------------------------


@pytest.mark.parametrize("gpu, have, build, run, library, reason", [
    (None, ONLY_RTX, True, False, "tensorrt-rtx", "no GPU here, and TensorRT-RTX builds without one"),
    (RTX_3090, BOTH, True, True, "tensorrt-rtx", "TensorRT-RTX supports GPU 0 (NVIDIA GeForce RTX 3090, "
                                                 "compute capability 8.6), preferred to TensorRT for it"),
    (RTX_3090, ONLY_FULL, True, True, "tensorrt", "TensorRT-RTX is not installed"),
    (H200, BOTH, True, True, "tensorrt", "TensorRT-RTX does not support it"),
    (H200, ONLY_RTX, True, False, "tensorrt-rtx", "only TensorRT-RTX can build here (for RTX GPUs"),
])
def test_auto_picks_from_what_is_installed_and_the_gpu(gpu, have, build, run, library, reason):
    choice = choose("auto", gpu, have, build=build, run=run)
    assert choice.library == library and reason in choice.reason and choice.problem == ""
    assert choice.reason.startswith("auto: ")


def test_hopper_with_only_tensorrt_rtx_says_exactly_that_and_what_to_install():
    choice = choose("auto", H200, ONLY_RTX, build=True, run=True)
    assert choice.problem.startswith("GPU 0 (NVIDIA H200, compute capability 9.0) is supported by neither "
                                     "installed library: TensorRT-RTX does not support GPU 0")
    assert "pip install tensorrt, from NVIDIA's package index" in choice.problem
    assert "--library tensorrt-rtx --target sm86,sm89,sm120" in choice.problem
    explicit = choose("tensorrt-rtx", H200, ONLY_RTX, build=False, run=True)
    assert "TensorRT-RTX does not support GPU 0 (NVIDIA H200" in explicit.problem
    assert choose("tensorrt-rtx", H200, ONLY_RTX, build=True, run=False).problem == ""  # builds for RTX GPUs


def test_what_is_missing_is_named():
    assert "TensorRT-RTX is not installed" in choose("tensorrt-rtx", RTX_3090, ONLY_FULL, True).problem
    assert "no GPU here" in choose("auto", None, ONLY_RTX, build=True, run=True).problem
    nothing = choose("auto", None, NOTHING, build=True, run=True).problem
    assert "the full TensorRT library" in nothing and "a GPU" in nothing and "trtd[rtx]" in nothing
    lean = choose("tensorrt", RTX_3090, Installed(full=False, lean=True, rtx=False), build=True).problem
    assert "only the lean runtime is here" in lean
    assert choose("tensorrt", RTX_3090, Installed(full=False, lean=True, rtx=False), build=False).problem == ""
    assert choose("tensorrt-rtx", RTX_3090, ONLY_RTX, build=True, via="--library").reason == "--library tensorrt-rtx"


def test_targets():
    assert parse_targets("SM120, sm86,sm89,sm86") == ("sm86", "sm89", "sm120")
    with pytest.raises(TargetError, match="unknown TensorRT-RTX target.*sm90"):
        parse_targets("sm86,sm90")
    with pytest.raises(TargetError, match="at least one"):
        parse_targets(",")
    assert libraries.target_of("12.0") == "sm120" and libraries.target_of("8.6") == "sm86"
    assert libraries.targets_for(RTX_3090) == ("sm86", "sm89", "sm120")
    assert libraries.targets_for(Gpu(0, "RTX 2080", "7.5")) == ("sm75", "sm86", "sm89", "sm120")


def test_an_engine_file_names_its_library_in_the_metadata_beside_it(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"x")
    assert libraries.library_of_engine(engine) == "tensorrt"  # no metadata: a TensorRT engine
    (tmp_path / "model.json").write_text('{"library": "tensorrt-rtx", "targets": ["sm86"]}')
    assert libraries.library_of_engine(engine) == "tensorrt-rtx"
    (tmp_path / "model.json").write_text("{broken")
    assert libraries.library_of_engine(engine) == "tensorrt"


# -- the fingerprint -------------------------------------------------------------------------------

RTX_ENV = BuildEnvironment("1.7.1.116 cu13", "any", "targets", "any")


def test_an_rtx_fingerprint_covers_version_targets_options_and_model_not_the_machine():
    opts = BuildOptions(targets=("sm86", "sm89"))
    fp = fingerprint("aa" * 32, RTX_ENV, opts)
    # Not the machine: what build_environment would say of a GPU or an OS does not enter it.
    elsewhere = BuildEnvironment("1.7.1.116 cu13", "NVIDIA GeForce RTX 3090", "8.6", "Windows", 580)
    assert fingerprint("aa" * 32, elsewhere, opts) == fp
    others = [fingerprint("bb" * 32, RTX_ENV, opts),
              fingerprint("aa" * 32, BuildEnvironment("1.8.0.1 cu13", "any", "targets", "any"), opts),
              fingerprint("aa" * 32, BuildEnvironment("1.7.1.116 cu12", "any", "targets", "any"), opts),
              fingerprint("aa" * 32, RTX_ENV, BuildOptions(targets=("sm86",))),
              fingerprint("aa" * 32, RTX_ENV, BuildOptions(targets=("sm86", "sm89"), optimization_level=5))]
    assert len({fp, *others}) == len(others) + 1
    inputs = fingerprint_inputs("aa" * 32, RTX_ENV, opts)
    assert inputs["library"] == "tensorrt-rtx" and inputs["targets"] == ["sm86", "sm89"]
    assert not {"gpu", "os", "driver_major", "compute_capability"} & set(inputs)
    # The family is the same engine for other targets.
    assert family(inputs) == family(fingerprint_inputs("aa" * 32, RTX_ENV, BuildOptions(targets=("sm120",))))


def test_tensorrt_fingerprints_do_not_change_with_the_targets_field():
    env = BuildEnvironment("10.13.0.35", "NVIDIA H100 80GB HBM3", "9.0", "Linux", 580)
    assert "targets" not in fingerprint_inputs("aa" * 32, env, BuildOptions())["options"]
    with pytest.raises(ValueError, match="TensorRT options"):
        BuildOptions(targets=("sm86",), hardware_compatible=True)


# -- the config ------------------------------------------------------------------------------------


def test_engine_library_is_validated():
    with pytest.raises(ConfigError, match="engine_library must be.*did you mean 'tensorrt-rtx'"):
        validate_model(ModelConfig("m", "m.onnx", backend="tensorrt", engine_library="tensorrt_rtx"))
    with pytest.raises(ConfigError, match="those are TensorRT options"):
        validate_model(ModelConfig("m", "m.onnx", backend="tensorrt", engine_library="tensorrt-rtx",
                                   version_compatible=True))
    validate_model(ModelConfig("m", "m.onnx", backend="tensorrt", engine_library="tensorrt-rtx"))


def test_config_check_points_at_the_key_and_warns_where_it_is_ignored(tmp_path):
    text = ('[models.a]\npath = "builtin:demo"\nbackend = "tensorrt"\nengine_library = "rtx"\n'
            '[models.b]\npath = "builtin:demo"\nengine_library = "tensorrt-rtx"\n')
    problems = check_text(text, tmp_path)
    (bad,) = [p for p in problems if p.severity == "error"]
    assert bad.line == 4 and "engine_library must be" in bad.message
    (ignored,) = [p for p in problems if p.severity == "warning"]
    assert ignored.line == 7 and "engine_library is ignored: backend = \"onnxruntime\"" in ignored.message


# -- the runtime cache file ------------------------------------------------------------------------


class FakeRuntimeCache:
    """IRuntimeCache's two calls: deserialize says whether the blob fits this GPU and version."""

    def __init__(self, accepts: bool = True):
        self.accepts, self.blob = accepts, b""

    def serialize(self):
        return memoryview(self.blob)

    def deserialize(self, blob: bytes) -> bool:
        if self.accepts:
            self.blob = bytes(blob)
        return self.accepts


def test_the_runtime_cache_is_keyed_written_atomically_and_reused(tmp_path):
    key = runtime_cache_key("8.6", "NVIDIA GeForce RTX 3090", "1.7.1.116", 13)
    assert key == "sm86-NVIDIA-GeForce-RTX-3090-rtx1.7.1.116-cuda13"
    path = runtime_cache_path(tmp_path / "abc.engine", key)
    assert path == tmp_path / f"abc.{key}.rtcache"
    said: list[str] = []
    first = RuntimeCacheFile(path, said.append)
    cache = FakeRuntimeCache()
    assert not first.load_into(cache)  # nothing yet: compiled on this start
    cache.blob = b"kernels"
    assert first.save_from(cache) and path.read_bytes() == b"kernels"
    assert not first.save_from(cache)  # unchanged: not written again
    assert not list(tmp_path.glob(".*.tmp"))
    restarted = FakeRuntimeCache()
    assert RuntimeCacheFile(path, said.append).load_into(restarted) and restarted.blob == b"kernels"
    assert not RuntimeCacheFile(path, said.append).load_into(FakeRuntimeCache(accepts=False))
    assert "does not match this GPU" in said[-1]


def test_a_runtime_cache_that_cannot_be_written_costs_nothing_but_a_message(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    said: list[str] = []
    cache = FakeRuntimeCache()
    cache.blob = b"kernels"
    assert not RuntimeCacheFile(blocker / "x.rtcache", said.append).save_from(cache)
    assert "not saved" in said[0]


def test_removing_an_engine_removes_its_runtime_caches(tmp_path):
    from trtd.daemon.engines.cache import EngineCache

    cache = EngineCache(tmp_path)
    entry = cache.store("m", "c" * 32, b"engine", {})
    runtime = entry.engine_path.with_name(f"{'c' * 32}.sm86-x.rtcache")
    runtime.write_bytes(b"k")
    cache.remove(entry)
    assert not runtime.exists()


# -- on a GPU neither library supports -------------------------------------------------------------


@pytest.fixture
def hopper_with_only_rtx(monkeypatch):
    """This process sees an H200 and only TensorRT-RTX (what a lent H200 with it installed sees)."""
    monkeypatch.setattr(libraries, "gpu_of", lambda device: H200)
    monkeypatch.setattr(libraries, "installed", lambda: ONLY_RTX)


def test_trtd_build_on_hopper_with_only_tensorrt_rtx_says_so(hopper_with_only_rtx):
    from trtd.daemon.commands.engines import tensorrt_build_problem

    problem = tensorrt_build_problem("m.onnx", 0, "auto")
    assert problem is not None and problem.startswith(
        "a TensorRT-RTX engine cannot be built: GPU 0 (NVIDIA H200, compute capability 9.0) is supported by "
        "neither installed library")
    assert "pip install tensorrt, from NVIDIA's package index" in problem
    # Asked for, TensorRT-RTX builds for RTX GPUs on this machine all the same.
    assert tensorrt_build_problem("m.onnx", 0, "tensorrt-rtx") is None


def test_trtd_doctor_on_hopper_with_only_tensorrt_rtx_says_so(hopper_with_only_rtx, tmp_path):
    from trtd.daemon.commands.doctor import library_checks

    config = tmp_path / "t.toml"
    config.write_text('[models.seg]\npath = "builtin:resnet18"\nbackend = "tensorrt"\ndevice = 0\n'
                      '[models.cpu]\npath = "builtin:demo"\n')
    (check,) = library_checks(str(config))
    assert check.ok is False and check.name == "library"
    assert check.detail == "model 'seg': tensorrt-rtx (auto: only TensorRT-RTX is installed)"
    assert "supported by neither installed library" in check.fix and "pip install tensorrt" in check.fix
