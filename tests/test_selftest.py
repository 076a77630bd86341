"""`trtd selftest` on this machine: real checks, a JSON and a text report."""

from __future__ import annotations

import json
import subprocess
import sys

from daemon_process import start_daemon


def test_selftest_writes_a_report_with_a_temporary_daemon(tmp_path):
    run = subprocess.run([sys.executable, "-m", "trtd.daemon", "selftest", "--report",
                          str(tmp_path / "report"), "--endpoint", f"ipc://{tmp_path / 'none.sock'}"],
                         capture_output=True, text=True, timeout=180)
    report = json.loads((tmp_path / "report.json").read_text())
    results = {r["name"]: r for r in report["results"]}
    assert results["shared memory"]["ok"] is True, results
    assert results["engine cache"]["ok"] is True, results
    assert results["daemon round trip"]["ok"] is True, results
    assert "temporary daemon" in results["daemon round trip"]["detail"]
    assert results["cuda"]["ok"] in (None, True, False) and "cuda" in results
    text = (tmp_path / "report.txt").read_text()
    assert "ok   shared memory" in text
    # CUDA absent here is information, not a failure: everything else passed.
    assert run.returncode == (1 if results["cuda"]["ok"] is False else 0), run.stdout


def test_selftest_uses_a_running_daemon(tmp_path):
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo")
    try:
        subprocess.run([sys.executable, "-m", "trtd.daemon", "selftest", "--report",
                        str(tmp_path / "r"), "--endpoint", d.endpoint],
                       capture_output=True, text=True, timeout=180)
        results = {r["name"]: r for r in json.loads((tmp_path / "r.json").read_text())["results"]}
        assert results["daemon round trip"]["ok"] is True
        assert f"the running daemon at {d.endpoint}" in results["daemon round trip"]["detail"]
    finally:
        assert d.stop() == 0
