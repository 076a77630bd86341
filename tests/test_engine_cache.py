"""Engine fingerprints, optimization profiles and the on-disk cache (no TensorRT needed)."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from pathlib import Path

import pytest

from daemon_process import wait_until
from trtd.daemon.engines.cache import CacheError, EngineCache
from trtd.daemon.engines.fingerprint import BuildEnvironment, BuildOptions, fingerprint
from trtd.daemon.engines.profiles import ProfileError, check_against_model, parse_profiles

ENV = BuildEnvironment(tensorrt_version="10.13.0.35", gpu_name="NVIDIA H100 80GB HBM3",
                       compute_capability="9.0", os="Linux", driver_major=580)


# -- profiles --------------------------------------------------------------------------------------


def test_profiles_parse_and_fit_the_model():
    profiles = parse_profiles([["x:1x3x224x224,8x3x224x224,16x3x224x224"],
                               ["x:32x3x224x224,32x3x224x224,64x3x224x224"]])
    assert profiles[1].for_input("x").max == (64, 3, 224, 224)
    check_against_model(profiles, {"x": [-1, 3, 224, 224]})


@pytest.mark.parametrize("spec, message", [
    ("x:1x3,2x3", "NAME:MIN,OPT,MAX"),
    ("x:1x3,2x3,1x3", "min <= opt <= max"),
    ("x:1x3,2x3,4x3x1", "same rank"),
    ("x:0x3,2x3,4x3", "positive"),
    ("x:ax3,2x3,4x3", "is not a shape"),
])
def test_profile_syntax_errors(spec, message):
    with pytest.raises(ProfileError, match=message):
        parse_profiles([[spec]])


@pytest.mark.parametrize("spec, inputs, message", [
    ("x:1x3x224x224,8x3x224x224,16x3x224x224", {"x": [-1, 3, 256, 256]}, "fixed at 256"),
    ("y:1x3,2x3,4x3", {"x": [-1, 3]}, "no input 'y'"),
    ("x:1x3x2,2x3x2,4x3x2", {"x": [-1, 3]}, "rank 2"),
])
def test_profiles_that_contradict_the_model(spec, inputs, message):
    with pytest.raises(ProfileError, match=message):
        check_against_model(parse_profiles([[spec]]), inputs)


def test_dynamic_inputs_need_a_profile():
    with pytest.raises(ProfileError, match="give a profile"):
        check_against_model([], {"x": [-1, 64]})
    with pytest.raises(ProfileError, match="no range for dynamic input"):
        check_against_model(parse_profiles([["x:1x64,2x64,4x64"]]), {"x": [-1, 64], "m": [-1, 8]})


# -- fingerprints ----------------------------------------------------------------------------------


def test_fingerprint_changes_with_everything_an_engine_depends_on(tmp_path):
    plugin = tmp_path / "libplugin.so"
    plugin.write_bytes(b"v1")
    base = BuildOptions(plugins=(str(plugin),))
    fp = fingerprint("aa" * 32, ENV, base)
    assert fp == fingerprint("aa" * 32, ENV, base)  # stable
    variants = [
        fingerprint("bb" * 32, ENV, base),
        fingerprint("aa" * 32, BuildEnvironment("10.13.1.1", ENV.gpu_name, "9.0", "Linux", 580), base),
        fingerprint("aa" * 32, BuildEnvironment(ENV.tensorrt_version, "NVIDIA H200", "9.0", "Linux", 580), base),
        fingerprint("aa" * 32, BuildEnvironment(ENV.tensorrt_version, ENV.gpu_name, "9.0", "Windows", 580), base),
        fingerprint("aa" * 32, BuildEnvironment(ENV.tensorrt_version, ENV.gpu_name, "9.0", "Linux", 570), base),
        fingerprint("aa" * 32, ENV, BuildOptions(plugins=(str(plugin),), optimization_level=5)),
        fingerprint("aa" * 32, ENV, BuildOptions(plugins=(str(plugin),), workspace_bytes=1 << 30)),
        fingerprint("aa" * 32, ENV, BuildOptions(plugins=(str(plugin),),
                                                 profiles=tuple(parse_profiles([["x:1x2,2x2,4x2"]])))),
    ]
    assert len({fp, *variants}) == len(variants) + 1
    plugin.write_bytes(b"v2")  # same path, new content: a new engine
    assert fingerprint("aa" * 32, ENV, base) != fp


def test_compatible_engines_relax_version_and_gpu():
    h100, h200 = ENV, BuildEnvironment(ENV.tensorrt_version, "NVIDIA H200", "9.0", "Linux", 580)
    hw = BuildOptions(hardware_compatible=True)
    assert fingerprint("aa" * 32, h100, hw) == fingerprint("aa" * 32, h200, hw)
    newer = BuildEnvironment("10.14.0.1", ENV.gpu_name, "9.0", "Linux", 580)
    vc = BuildOptions(version_compatible=True)
    assert fingerprint("aa" * 32, ENV, vc) == fingerprint("aa" * 32, newer, vc)
    other_major = BuildEnvironment("11.4.0.106", ENV.gpu_name, "9.0", "Linux", 580)
    assert fingerprint("aa" * 32, ENV, vc) != fingerprint("aa" * 32, other_major, vc)


def test_build_options_are_validated():
    with pytest.raises(ValueError, match="0..5"):
        BuildOptions(optimization_level=7)
    with pytest.raises(ValueError, match="version-compatible"):
        BuildOptions(exclude_lean_runtime=True)


# -- the cache -------------------------------------------------------------------------------------


def test_store_lookup_read(tmp_path):
    cache = EngineCache(tmp_path)
    entry = cache.store("resnet", "f" * 32, b"engine-bytes", {"build_seconds": 1.5})
    found = cache.lookup("f" * 32)
    assert found is not None and cache.read(found) == b"engine-bytes"
    assert found.metadata["build_seconds"] == 1.5 and found.metadata["bytes"] == 12
    assert [e.fingerprint for e in cache.entries()] == ["f" * 32]
    assert cache.verify() == [(cache.entries()[0], "")]
    assert cache.lookup("0" * 32) is None
    assert entry.engine_path.name == f"{'f' * 32}.engine" and found.model == "resnet"


@pytest.mark.parametrize("damage", ["truncate", "flip", "no-metadata", "bad-metadata"])
def test_damaged_entries_are_detected_and_removed(tmp_path, damage):
    cache = EngineCache(tmp_path)
    entry = cache.store("m", "a" * 32, b"x" * 1000, {})
    if damage == "truncate":
        entry.engine_path.write_bytes(b"x" * 500)
    elif damage == "flip":
        entry.engine_path.write_bytes(b"y" + b"x" * 999)
    elif damage == "no-metadata":
        entry.meta_path.unlink()
    else:
        entry.meta_path.write_text("{not json")
    if damage != "no-metadata":
        assert cache.verify()[0][1] != ""
    assert cache.lookup("a" * 32) is None
    if damage != "no-metadata":
        assert entry.engine_path.exists()  # a plain lookup never deletes: a writer may be mid-way
    assert cache.lookup("a" * 32, repair=True) is None  # under the build lock: removed
    assert not entry.engine_path.exists() and not entry.meta_path.exists()


def test_read_only_cache_directory_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only directories")
    cache_root = tmp_path / "ro"
    cache_root.mkdir()
    cache_root.chmod(0o500)
    with pytest.raises(CacheError, match="TRTD_CACHE_DIR"):
        EngineCache(cache_root).store("m", "a" * 32, b"x", {})


def test_unwritable_cache_path_is_a_clear_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CacheError, match="TRTD_CACHE_DIR"):
        EngineCache(blocker).store("m", "a" * 32, b"x", {})


def _hold_build_lock(root, fp, started, release, handing_over):
    with EngineCache(root).building(fp):
        started.set()
        release.wait(120)  # the test says when (a failed test lets go at the end)
        handing_over.set()  # before the lock is let go: whoever gets it next must see this


def _blocked_on_a_flock(pid: int) -> bool | None:
    """Whether process `pid` waits for an flock (a "->" line of /proc/locks); None without it."""
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return None
    for line in table.splitlines():
        fields = line.split()
        if "->" in fields:
            kind, _, _, who = fields[fields.index("->") + 1:][:4]
            if kind == "FLOCK" and who == str(pid):
                return True
    return False


def test_one_builder_at_a_time(tmp_path):
    """Another process holds the build lock: a builder that may not wait is refused; one that may
    waits, and has the lock only once the holder let go. The holder lets go when the test says,
    after it has seen the waiter blocked: the order is checked, no duration is."""
    ctx = multiprocessing.get_context("spawn")
    started, release, handing_over = ctx.Event(), ctx.Event(), ctx.Event()
    fp = "b" * 32
    holder = ctx.Process(target=_hold_build_lock, args=(str(tmp_path), fp, started, release, handing_over))
    holder.start()
    seen_waiting = []

    def let_go_once_waited_for():
        try:
            # Where /proc/locks is missing, only the order below is checked.
            seen_waiting.append(wait_until(lambda: _blocked_on_a_flock(os.getpid()) is not False,
                                           timeout=60, interval=0.01))
        finally:
            release.set()

    try:
        assert started.wait(60)
        cache = EngineCache(tmp_path)
        with pytest.raises(CacheError, match="being built by another process"):
            with cache.building(fp, wait=False):
                pass
        assert not release.is_set()  # nothing has let the holder go yet
        opener = threading.Thread(target=let_go_once_waited_for)
        opener.start()
        try:
            with cache.building(fp):  # waits for the other builder
                had_it_after_the_holder = handing_over.is_set()
        finally:
            opener.join()
        assert seen_waiting == [True], "this process was never seen waiting for the lock"
        assert had_it_after_the_holder, "the lock was had while the other builder held it"
    finally:
        release.set()
        holder.join(60)


def test_clear(tmp_path):
    cache = EngineCache(tmp_path)
    cache.store("a", "1" * 32, b"1", {})
    cache.store("b", "2" * 32, b"2", {})
    assert cache.clear() == 2 and cache.entries() == []
