"""What `pip install` puts on a machine: the version (one source), the licence, typing markers,
dependency bounds and project URLs, read back from the installed metadata, and a real wheel
built from this tree and imported from where pip put it."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

import trtd
from trtd.protocol import PROTOCOL_VERSION, SERVER_VERSION

ROOT = Path(__file__).resolve().parent.parent
# sha256 of https://www.apache.org/licenses/LICENSE-2.0.txt, the official text, unmodified.
APACHE_2_0_SHA256 = "cfc7749b96f63bd31c3c42b5c471bf756814053e847c10f3eb003417bc523d30"
VERSION_LINE = f"trtd {trtd.__version__} (protocol {PROTOCOL_VERSION})"


def _metadata():
    return importlib.metadata.metadata("trtd")


def _requirements() -> dict[str, Requirement]:
    reqs = [Requirement(r) for r in importlib.metadata.requires("trtd") or []]
    return {r.name: r for r in reqs}


def test_the_version_has_one_source():
    assert trtd.__version__ == importlib.metadata.version("trtd")
    # The version the daemon reports in hello/status replies must not drift from it.
    assert SERVER_VERSION == trtd.__version__


def _console_script() -> str | None:
    """The `trtd` script pip installed beside this interpreter, else the one on PATH (an install
    with --target, as on the GPU host, puts it in TARGET/bin)."""
    beside = Path(sys.executable).with_name("trtd")
    return str(beside) if beside.is_file() else shutil.which("trtd")


@pytest.mark.parametrize("how", ["module", "console script"])
def test_trtd_version_prints_the_package_and_protocol_versions(how):
    if how == "module":
        command = [sys.executable, "-m", "trtd.daemon", "--version"]
    else:
        script = _console_script()
        if script is None:
            pytest.skip("no trtd console script is installed for this interpreter")
        command = [script, "--version"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout == VERSION_LINE + "\n"


def test_the_licence_is_the_declared_one_in_full():
    meta = _metadata()
    assert meta["License-Expression"] == "Apache-2.0"
    assert meta.get_all("License-File") == ["LICENSE"]
    assert hashlib.sha256((ROOT / "LICENSE").read_bytes()).hexdigest() == APACHE_2_0_SHA256
    installed = [f for f in importlib.metadata.files("trtd") or [] if f.name == "LICENSE"]
    assert installed and hashlib.sha256(installed[0].read_binary()).hexdigest() == APACHE_2_0_SHA256


@pytest.mark.parametrize("name, breaking, supported", [
    ("numpy", "3.0", "2.4"),
    ("onnxruntime", "2.0", "1.32"),
    ("msgpack", "2.0", "1.1"),
])
def test_dependencies_exclude_the_majors_known_to_break_us(name, breaking, supported):
    req = _requirements()[name]
    assert breaking not in req.specifier and supported in req.specifier, str(req)


def test_project_urls_and_classifiers():
    meta = _metadata()
    urls = dict(entry.split(", ", 1) for entry in meta.get_all("Project-URL") or [])
    assert {"Homepage", "Repository", "Issues", "Changelog"} <= set(urls)
    assert all(url.startswith("https://") for url in urls.values())
    assert urls["Changelog"].endswith("CHANGELOG.md")
    classifiers = meta.get_all("Classifier") or []
    assert "Typing :: Typed" in classifiers
    assert "Programming Language :: Python :: 3.10" in classifiers


def test_the_changelog_has_the_release_and_an_unreleased_section():
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    assert "## [Unreleased]" in text and f"## [{trtd.__version__}] - " in text
    assert "keepachangelog.com" in text


def _source_copy(dest: Path) -> Path:
    """This tree without build products: setuptools reuses a stale build/ folder's files."""
    ignore = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__",
                                    ".pytest_cache", "results")
    return Path(shutil.copytree(ROOT, dest, ignore=ignore))


def _build_requirements_met() -> bool:
    """Whether this environment's own build tools satisfy pyproject's [build-system] requires."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    requires = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for text in requires:
        req = Requirement(text)
        try:
            if importlib.metadata.version(req.name) not in req.specifier:
                return False
        except importlib.metadata.PackageNotFoundError:
            return False
    return True


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("wheel")
    source = _source_copy(tmp / "src")
    # Without build isolation where this venv's setuptools will do, so that no package index is
    # needed; else pip fetches the build tools as `pip install` of this project itself did.
    no_isolation = ["--no-build-isolation"] if _build_requirements_met() else []
    done = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps",
                           *no_isolation, "-w", str(tmp / "dist")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    (built,) = (tmp / "dist").glob("trtd-*.whl")
    return built


def test_the_wheel_ships_the_root_package_py_typed_and_the_licence(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    dist_info = f"trtd-{trtd.__version__}.dist-info"
    assert {"trtd/__init__.py", "trtd/py.typed", f"{dist_info}/licenses/LICENSE",
            "trtd/daemon/commands/cli.py", "trtd/protocol/SPEC.md"} <= names
    # The folder that holds the root package is not installed a second time under trtd.daemon.
    assert not any("_trtd" in n for n in names)


def test_the_installed_wheel_imports_and_answers_version(wheel, tmp_path):
    target = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index",
                           "--target", str(target), str(wheel)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    # PYTHONPATH comes before this venv's site-packages (and its editable install's finder),
    # so `trtd` is the copy pip just installed; numpy, pyzmq, ... come from the venv, or from
    # the PYTHONPATH entries already set (the GPU host's packages live there).
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(target), *filter(None, [os.environ.get("PYTHONPATH")])])}
    probe = ("import importlib.resources, trtd, trtd.daemon.commands.cli, trtd.sdk, trtd.service.commands; "
             "print(trtd.__file__); print(trtd.sdk.__file__); "
             "print(importlib.resources.files('trtd').joinpath('py.typed').is_file())")
    where = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                           timeout=60, cwd=tmp_path)
    assert where.returncode == 0, where.stderr
    root_file, sdk_file, typed = where.stdout.split()
    assert Path(root_file).is_relative_to(target) and Path(sdk_file).is_relative_to(target)
    assert typed == "True"
    version = subprocess.run([sys.executable, "-m", "trtd.daemon", "--version"], capture_output=True,
                             text=True, env=env, timeout=60, cwd=tmp_path)
    assert version.stdout == VERSION_LINE + "\n", version.stderr
