"""Platform differences, computed for both OSes on this machine: paths per scope, Windows
mapping names and security descriptors, DLL folders, the pywin32 service host, TDR advice."""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath

import pytest

from trtd.daemon.system import platform
from trtd.service.tdr import classify
from trtd.service.windows import service_host_files

WIN_ENV = {"ProgramData": r"C:\ProgramData", "APPDATA": r"C:\Users\ann\AppData\Roaming",
           "LOCALAPPDATA": r"C:\Users\ann\AppData\Local"}


@pytest.mark.parametrize("scope, windows, env, config, cache", [
    ("system", False, {}, "/etc/trtd/trtd.toml", "/var/cache/trtd"),
    ("user", False, {"XDG_CONFIG_HOME": "/h/.cfg", "XDG_CACHE_HOME": "/h/.c"}, "/h/.cfg/trtd/trtd.toml", "/h/.c/trtd"),
    ("system", True, WIN_ENV, r"C:\ProgramData\trtd\trtd.toml", r"C:\ProgramData\trtd\cache"),
    ("user", True, WIN_ENV, r"C:\Users\ann\AppData\Roaming\trtd\trtd.toml", r"C:\Users\ann\AppData\Local\trtd\cache"),
])
def test_default_paths(scope, windows, env, config, cache):
    kind = PureWindowsPath if windows else PurePosixPath
    assert platform.config_path(scope, windows, env) == kind(config)
    assert platform.cache_dir(scope, windows, env) == kind(cache)
    # TRTD_CACHE_DIR wins in every scope: the service units set it.
    assert platform.cache_dir(scope, windows, {**env, "TRTD_CACHE_DIR": "/x"}) == kind("/x")


def test_windows_logs_and_state_live_under_programdata_for_the_service():
    assert platform.log_dir("system", True, WIN_ENV) == PureWindowsPath(r"C:\ProgramData\trtd\logs")
    assert platform.state_dir("system", True, WIN_ENV) == PureWindowsPath(r"C:\ProgramData\trtd\state")


def test_unknown_scope_is_refused():
    with pytest.raises(ValueError, match="scope"):
        platform.config_path("everyone")


def test_service_endpoints():
    assert platform.service_endpoint("system", windows=False) == "ipc:///run/trtd/trtd.sock"
    assert platform.service_endpoint("system", windows=True) == "tcp://127.0.0.1:47810"


def test_windows_mapping_names_and_security():
    assert platform.windows_mapping_name("trtd_ab_1", global_namespace=True) == "Global\\trtd_ab_1"
    assert platform.windows_mapping_name("trtd_ab_1", global_namespace=False) == "trtd_ab_1"
    with pytest.raises(ValueError):
        platform.windows_mapping_name("a\\b", True)
    sddl = platform.mapping_sddl(["S-1-5-21-1-2-3-1001", "IU"])
    assert sddl == ("D:P(A;;GA;;;SY)(A;;GA;;;BA)(A;;GA;;;OW)"
                    "(A;;0x0007;;;S-1-5-21-1-2-3-1001)(A;;0x0007;;;IU)")
    with pytest.raises(ValueError, match="SID"):
        platform.mapping_sddl(["IU)(A;;GA;;;WD"])  # no injecting an Everyone ACE
    assert platform.mapping_allowed_sids({}) == ["IU"]
    assert platform.mapping_allowed_sids({"TRTD_SHM_ALLOW": "S-1-5-32-545, IU"}) == ["S-1-5-32-545", "IU"]
    assert platform.windows_service_mappings({"TRTD_SHM_GLOBAL": "1"}, windows=True)
    assert not platform.windows_service_mappings({"TRTD_SHM_GLOBAL": "1"}, windows=False)
    assert not platform.windows_service_mappings({}, windows=True)


def test_dll_directories():
    listing = {r"C:\tools": ["git.exe"], r"C:\TensorRT\lib": ["nvinfer_10.dll", "x.txt"],
               r"C:\cudnn\bin": ["cudnn64_9.dll"]}

    def listdir(path):
        if path not in listing:
            raise FileNotFoundError(path)
        return listing[path]

    env = {"TRTD_DLL_DIRS": r"D:\mine", "CUDA_PATH": "C:\\CUDA\\v12.6\\",
           "CUDA_PATH_V12_6": r"C:\CUDA\v12.6", "CUDA_PATH_V11_8": r"C:\CUDA\v11.8",
           "PATH": r"C:\tools;C:\TensorRT\lib;;C:\missing;C:\cudnn\bin"}
    assert platform.dll_directories(env, listdir) == [
        r"D:\mine", r"C:\CUDA\v12.6\bin", r"C:\CUDA\v12.6\bin\x64", r"C:\CUDA\v11.8\bin",
        r"C:\CUDA\v11.8\bin\x64", r"C:\TensorRT\lib", r"C:\cudnn\bin"]
    assert platform.add_dll_directories() == []  # not Windows: nothing to add


def test_pywin32_service_host_from_a_venv():
    pairs = service_host_files(r"C:\venvs\trtd", r"C:\Python311",
                               r"C:\venvs\trtd\Lib\site-packages", (3, 11))
    targets = {str(t) for _, t in pairs}
    assert r"C:\venvs\trtd\pythonservice.exe" in targets
    assert {r"C:\venvs\trtd\python311.dll", r"C:\venvs\trtd\pywintypes311.dll",
            r"C:\venvs\trtd\pythoncom311.dll"} <= targets
    sources = {str(s) for s, _ in pairs}
    assert r"C:\Python311\python311.dll" in sources
    assert r"C:\venvs\trtd\Lib\site-packages\pywin32_system32\pywintypes311.dll" in sources


def test_tdr_advice():
    ok, text = classify({})
    assert ok is False and "TdrDelay = 2 s (default)" in text and "TdrDelay (DWORD)" in text
    assert classify({"TdrDelay": 60}) == (True, "TdrDelay = 60 s")
    assert classify({"TdrLevel": 0})[0] is True


def test_this_process_s_own_folders_come_from_platformdirs(monkeypatch, tmp_path):
    """For this OS and os.environ, platformdirs answers: it follows the XDG spec, which ignores a
    relative $XDG_CONFIG_HOME (the table would have resolved it against a service's cwd)."""
    import platformdirs

    if platform.IS_WINDOWS:  # pragma: no cover - the table for this OS is checked on Linux
        pytest.skip("checks the XDG rules")
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/cfg")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c"))
    monkeypatch.delenv("TRTD_CACHE_DIR", raising=False)
    assert platform.config_path("user") == PurePosixPath(platformdirs.user_config_dir("trtd")) / "trtd.toml"
    assert platform.config_path("user").is_absolute()
    assert platform.cache_dir("user") == tmp_path / "c" / "trtd"
    assert platform.state_dir("user") == PurePosixPath(platformdirs.user_state_dir("trtd"))
    # The system scope keeps the units' FHS paths; a given environment keeps the table.
    assert platform.config_path("system") == PurePosixPath("/etc/trtd/trtd.toml")
    assert platform.config_path("user", False, {"XDG_CONFIG_HOME": "/h/.cfg"}) == PurePosixPath("/h/.cfg/trtd/trtd.toml")
