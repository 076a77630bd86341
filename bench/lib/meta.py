"""What every result file says about where it came from: date, machine, versions, command.

A figure without its machine and versions cannot be compared with another, nor reproduced
without its command; every benchmark writes them with these helpers.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import shlex
import socket
import sys
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence


def version(dist: str) -> str:
    """The installed version of a distribution, or "not installed"."""
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions(dists: Iterable[str]) -> dict[str, str]:
    return {dist: version(dist) for dist in dists}


def cpu_model() -> str:
    """The CPU's model name (from /proc/cpuinfo where there is one)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "processor\t: arm")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """Now (UTC) and this machine: host, platform, CPU, cores, load, Python."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_model": cpu_model(),
        "logical_cores": os.cpu_count(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
    }


def command(module: str, argv: Sequence[str]) -> str:
    """The command line that reruns `python -m module argv` with this interpreter."""
    return shlex.join([sys.executable, "-m", module, *argv])


def onnxruntime_settings() -> dict[str, Any]:
    """The daemon's ONNX Runtime session settings (a peer server is given the same ones)."""
    from trtd.daemon.backends.onnxruntime import session_options

    options = session_options()
    return {"intra_op_num_threads": options.intra_op_num_threads,
            "inter_op_num_threads": options.inter_op_num_threads,
            "graph_optimization_level": str(options.graph_optimization_level)}
