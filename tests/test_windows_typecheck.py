"""The Windows-only modules cannot run here: type-check them as Windows sees them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# The Windows service's own modules and the daemon modules it runs with Windows-specific
# paths (the socket loop, request handling, region mappings, the SDK's attach), checked as
# Windows sees them. Errors are reported only in the modules listed (--follow-imports=silent
# reads the others for their types): a module the service depends on is listed, not followed.
WINDOWS_MODULES = ["service/windows.py", "service/runner.py", "service/tdr.py", "service/commands.py",
                   "service/config_template.py", "service/selftest.py", "daemon/system/winshm.py",
                   "daemon/system/platform.py", "daemon/serve/server.py", "daemon/core/daemon_core.py", "daemon/core/regions.py",
                   "sdk/shm.py", "daemon/serve/endpoint_lock.py", "daemon/system/filelock.py",
                   "daemon/serve/metrics.py", "daemon/serve/metrics_http.py", "daemon/serve/logs.py"]


def test_windows_modules_type_check_for_win32():
    pytest.importorskip("mypy", reason="mypy is in the test extra: pip install -e '.[test]'")
    run = subprocess.run([sys.executable, "-m", "mypy", "--platform", "win32", "--python-version", "3.11",
                          "--ignore-missing-imports", "--follow-imports=silent", "--no-incremental",
                          *WINDOWS_MODULES], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_check_finds_windows_errors(tmp_path):
    """A call pywin32 does not have must fail the same check."""
    pytest.importorskip("mypy")
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nif sys.platform == 'win32':\n    import win32serviceutil\n"
                   "    win32serviceutil.NoSuchFunction()\n")
    run = subprocess.run([sys.executable, "-m", "mypy", "--platform", "win32", "--no-incremental",
                          str(bad)], capture_output=True, text=True, timeout=300)
    assert run.returncode != 0 and "NoSuchFunction" in run.stdout
