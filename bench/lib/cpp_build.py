"""Building the C++ client (sdk/cpp) with CMake, for its tests and its latency benchmark.

The commands are the README's ("C++ client"): `cmake -S sdk/cpp -B BUILD` then `cmake --build
BUILD`. What is missing for that (cmake, a C++ compiler, the cppzmq / msgpack-cxx / nlohmann-json
headers) is a CppUnavailable with the reason and the Debian packages to install; anything else that
goes wrong (a compile error) is a CppBuildError: never a reason to skip.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterable, Sequence

DEBIAN_PACKAGES = "cmake g++ libzmq3-dev cppzmq-dev libmsgpack-cxx-dev nlohmann-json3-dev"


class CppUnavailable(RuntimeError):
    """The C++ client cannot be built here: a tool or a library is missing (the message says which)."""


class CppBuildError(RuntimeError):
    """Configuring or building the C++ client failed although its tools are there."""


def source_dir() -> Path:
    """sdk/cpp of this checkout (not part of an installed wheel)."""
    import trtd.sdk

    folder = Path(trtd.sdk.__file__).resolve().parent / "cpp"
    if not (folder / "CMakeLists.txt").is_file():
        raise CppUnavailable(f"{folder} is not here: the C++ client is built from a clone of the repository")
    return folder


def missing_tools() -> list[str]:
    """What this machine lacks to build (cmake, a C++ compiler)."""
    missing = [] if shutil.which("cmake") else ["cmake"]
    if not (os.environ.get("CXX") or any(shutil.which(c) for c in ("c++", "g++", "clang++"))):
        missing.append("a C++ compiler (g++ or clang++)")
    return missing


def _run(argv: Sequence[str], log: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(list(argv), capture_output=True, text=True)
    with open(log, "a") as f:
        f.write(f"$ {' '.join(argv)}\n{result.stdout}{result.stderr}\n")
    return result


def configure(source: Path, build: Path, *, build_type: str = "Release", options: Iterable[str] = ()) -> None:
    """`cmake -S source -B build` (Ninja when it is installed); CppUnavailable when a package is missing."""
    missing = missing_tools()
    if missing:
        raise CppUnavailable(f"cannot build the C++ client: no {', '.join(missing)} (Debian: apt-get install "
                             f"{DEBIAN_PACKAGES})")
    build.mkdir(parents=True, exist_ok=True)
    generator = ["-G", "Ninja"] if shutil.which("ninja") else []
    result = _run(["cmake", "-S", str(source), "-B", str(build), *generator, f"-DCMAKE_BUILD_TYPE={build_type}",
                   *options], build / "trtd-build.log")
    if result.returncode != 0:
        output = result.stdout + result.stderr
        # find_package(... REQUIRED): 'provided by "cppzmq"'; find_path(... REQUIRED): 'Could not find
        # TRTD_MSGPACK_INCLUDE_DIR using the following files: msgpack.hpp'.
        missing = re.findall(r'provided by\s+"([^"]+)"', output) + re.findall(
            r"Could not find \S+ using the following (?:files|names): (\S+)", output)
        if missing:
            raise CppUnavailable(f"cannot build the C++ client: cmake found no {', '.join(missing)} (Debian: "
                                 f"apt-get install {DEBIAN_PACKAGES}; log: {build / 'trtd-build.log'})")
        raise CppBuildError(f"cmake could not configure {source}:\n{output[-4000:]}")


def build(build: Path, targets: Iterable[str] = (), jobs: int = 2) -> None:
    """`cmake --build build`; CppBuildError with the compiler's messages when it fails."""
    argv = ["cmake", "--build", str(build), "-j", str(jobs)]
    for target in targets:
        argv += ["--target", target]
    result = _run(argv, build / "trtd-build.log")
    if result.returncode != 0:
        raise CppBuildError(f"building the C++ client failed:\n{(result.stdout + result.stderr)[-6000:]}")


def executable(build: Path, name: str) -> Path:
    """A program the build made, wherever the generator put it (tests/, bench/, Release/ ...)."""
    suffix = ".exe" if os.name == "nt" else ""
    found = sorted(p for p in build.rglob(name + suffix) if p.is_file() and os.access(p, os.X_OK))
    if not found:
        raise CppBuildError(f"{name} was not built in {build}")
    return found[0]
