"""The systemd unit `trtd service install` writes, checked by systemd itself
(`systemd-analyze verify`), and what install does where systemd does not run (here, CI)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from daemon_process import shm_names, wait_until
from held_requests import HeldRequest
from slow_models import held
from trtd.daemon.config.settings import load_config
from trtd.daemon.config.check import check_file
from trtd.service import systemd
from trtd.service.runner import STOP_CLOSE_MARGIN_S, ForwardHandler, ServiceRunner, stop_wait_hint_ms

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze is not installed "
                                   "(Debian: apt-get install systemd; .ci/run installs it)")


def _verify(unit_text: str, folder: Path) -> subprocess.CompletedProcess:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trtd.service"
    path.write_text(unit_text)
    return subprocess.run([ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=60)


def _options(scope: str, tmp_path: Path, **kw) -> systemd.UnitOptions:
    return systemd.UnitOptions(scope=scope, config=tmp_path / "trtd.toml", **kw)


@needs_analyze
@pytest.mark.parametrize("scope", ["system", "user"])
def test_generated_unit_passes_systemd_analyze_verify(tmp_path, scope):
    unit = systemd.render_unit(_options(scope, tmp_path, supplementary_groups=["root"]))
    result = _verify(unit, tmp_path / scope)
    # verify exits 0 on unknown keys and bad values (it only warns): any output is a finding.
    assert result.returncode == 0 and result.stdout + result.stderr == "", result


@needs_analyze
def test_verify_catches_a_broken_unit(tmp_path):
    """The check above can fail: a misspelt key and a bad value are reported."""
    unit = systemd.render_unit(_options("system", tmp_path)).replace("Restart=on-failure", "Restart=sometimes")
    result = _verify(unit.replace("NotifyAccess", "NotifyAcess"), tmp_path)
    assert "NotifyAcess" in result.stderr and "sometimes" in result.stderr


def test_unit_contents(tmp_path):
    unit = systemd.render_unit(_options("system", tmp_path, watchdog_s=30, drain_timeout_s=20))
    lines = set(unit.splitlines())
    assert {"Type=notify", "Restart=on-failure", "WatchdogSec=30s", "TimeoutStopSec=50s",
            "RuntimeDirectory=trtd", "StateDirectory=trtd", "CacheDirectory=trtd",
            "Environment=TRTD_CACHE_DIR=%C/trtd", "ExecReload=/bin/kill -HUP $MAINPID",
            "User=trtd", "Group=trtd", "PrivateDevices=no", "DeviceAllow=char-nvidia* rw",
            "NoNewPrivileges=yes"} <= lines
    assert f"ExecStart={sys.executable} -m trtd.daemon serve --config {tmp_path / 'trtd.toml'}" in lines
    assert "PrivateDevices=yes" not in unit and "MemoryDenyWriteExecute" not in unit.replace("No MemoryDenyWriteExecute=", "")
    user = systemd.render_unit(_options("user", tmp_path, watchdog_s=0))
    assert "User=" not in user and "WatchdogSec" not in user and "WantedBy=default.target" in user
    with pytest.raises(ValueError, match="%"):
        systemd.exec_start(systemd.UnitOptions("system", Path("/etc/100%/t.toml")))


def test_install_steps_create_group_and_account_and_enable_lingering(tmp_path):
    opts = _options("system", tmp_path, user="trtd-test-nobody", group="trtd-test-nogroup")
    steps = [s.describe() for s in systemd.install_steps(opts, config_exists=False)]
    assert steps[0].startswith("groupadd --system trtd-test-nogroup")
    assert steps[1].startswith("useradd --system --gid trtd-test-nogroup")
    assert any(s.startswith(f"write {tmp_path / 'trtd.toml'}") for s in steps)
    assert any(s.startswith("write /etc/systemd/system/trtd.service") for s in steps)
    assert steps[-1].startswith("systemctl enable --now trtd.service")
    user_steps = [s.describe() for s in systemd.install_steps(_options("user", tmp_path), True)]
    assert any(s.startswith("loginctl enable-linger") for s in user_steps)
    assert user_steps[-1].startswith("systemctl --user enable --now")


@pytest.mark.parametrize("scope", [[], ["--user"]], ids=["system", "user"])
def test_install_without_systemd_prints_the_plan_and_fails(tmp_path, scope):
    if systemd.systemd_running():
        pytest.skip("systemd runs here: install would really install")
    config = tmp_path / "etc" / "trtd.toml"
    run = subprocess.run([sys.executable, "-m", "trtd.daemon", "service", "install", *scope, "--config",
                          str(config)], capture_output=True, text=True, timeout=60)
    # Nothing was installed, so a script must not read success.
    assert run.returncode == 1, run
    assert "systemd is not running on this machine" in run.stdout
    assert "Type=notify" in run.stdout and "enable --now trtd.service" in run.stdout
    # (after any warning about the install itself, e.g. a package under /tmp that PrivateTmp hides)
    assert any(line.startswith("trtd service install: nothing was installed: systemd is not running")
               for line in run.stderr.splitlines()), run.stderr
    assert f"trtd serve --config {config}" in run.stderr
    assert not config.exists()  # printed, not written
    status = subprocess.run([sys.executable, "-m", "trtd.daemon", "service", "status", "--user",
                             "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert status.returncode == 1 and "no user service is installed" in status.stdout


def test_install_print_prints_the_plan_and_succeeds_wherever_it_runs(tmp_path):
    config = tmp_path / "etc" / "trtd.toml"
    run = subprocess.run([sys.executable, "-m", "trtd.daemon", "service", "install", "--user", "--print",
                          "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and run.stderr == "", run
    assert run.stdout.startswith("# Not installing (as asked).")
    assert "Type=notify" in run.stdout and "systemctl --user enable --now" in run.stdout
    assert not config.exists()


@pytest.mark.parametrize("scope", ["system", "user"])
def test_the_default_config_validates(tmp_path, scope):
    import grp

    path = tmp_path / "trtd.toml"
    text = systemd.default_config_text(scope, windows=False)
    path.write_text(text)
    if scope == "system":
        assert 'group = "trtd"' in text and 'endpoint = "ipc:///run/trtd/trtd.sock"' in text
        try:
            grp.getgrnam("trtd")
        except KeyError:
            # Install creates the group before the daemon reads this file; without it, the
            # check names exactly that problem, on its line.
            problems = check_file(path)
            assert [p.line for p in problems] == [text.splitlines().index('group = "trtd"') + 1], problems
            path.write_text(text.replace('group = "trtd"', 'group = "root"'))
    assert check_file(path) == []
    assert [m.name for m in load_config(path).models] == ["demo"]


def test_service_runner_serves_and_stops_on_request(tmp_path):
    """The platform-neutral half of the Windows service, with a real daemon in this process."""
    endpoint = f"ipc://{tmp_path / 'run' / 'svc.sock'}"
    config = tmp_path / "svc.toml"
    config.write_text(f'endpoint = "{endpoint}"\ndrain_timeout_s = 5\n[models.demo]\npath = "builtin:demo"\n')
    forwarded: list[str] = []
    runner = ServiceRunner(config, "user", log_dir=tmp_path / "logs",
                           event_log=ForwardHandler(forwarded.append, forwarded.append))
    reported = threading.Event()
    result: dict = {}
    thread = threading.Thread(target=lambda: result.update(rc=runner.run(on_running=reported.set)))
    thread.start()
    try:
        assert reported.wait(60)
        from trtd.sdk import Client

        with Client(endpoint) as c:
            y = c.infer("demo", np.ones((1, 64), np.float32))
            region = c.model("demo")._region.name
            assert y.shape == (1, 10) and region in shm_names()
            runner.stop()
            thread.join(60)
        assert result == {"rc": 0}
        assert region not in shm_names()
        log = (tmp_path / "logs" / "trtd.log").read_text()
        assert "trtd service starting" in log and "trtd stopped" in log
        import logging

        logging.getLogger("trtd.test").warning("to the event log")
        assert any("to the event log" in m for m in forwarded)
    finally:
        runner.stop()
        thread.join(60)
        _remove_service_log_handlers()


def test_stop_wait_hint_is_what_is_left_of_the_drain_plus_close_time():
    margin_ms = int(STOP_CLOSE_MARGIN_S * 1000)
    assert stop_wait_hint_ms(60) == 60_000 + margin_ms
    assert stop_wait_hint_ms(60, elapsed_s=45.5) == 14_500 + margin_ms
    assert stop_wait_hint_ms(60, elapsed_s=90) == margin_ms  # past the drain: closing
    assert stop_wait_hint_ms(0) == margin_ms
    assert stop_wait_hint_ms(600, margin_s=5) == 605_000  # not capped at the old fixed 40 s


def test_service_runner_reports_stop_progress_while_it_drains(tmp_path):
    """What the Windows service reports as SERVICE_STOP_PENDING: from the configured
    drain_timeout_s, again and again while a request holds the drain, and no more once stopped."""
    held(tmp_path / "held.onnx")
    endpoint = f"ipc://{tmp_path / 'run' / 'svc.sock'}"
    config = tmp_path / "svc.toml"
    config.write_text(f'endpoint = "{endpoint}"\ndrain_timeout_s = 300\n'
                      '[models.held]\npath = "held.onnx"\ninstances = 2\nintra_op_threads = 1\n')
    runner = ServiceRunner(config, "user", log_dir=tmp_path / "logs")
    started = threading.Event()
    thread = threading.Thread(target=runner.run, kwargs={"on_running": started.set})
    thread.start()
    hints: list[int] = []
    progress = threading.Thread(target=runner.report_stop_progress, args=(hints.append, 0.01))
    from trtd.sdk import Client

    try:
        assert started.wait(60)
        assert runner.drain_timeout_s == 300
        with Client(endpoint) as c:
            assert wait_until(lambda: c.describe("held").state == "ready", timeout=60)
            request = HeldRequest(c, np.ones((4, 16), np.float32))
            assert wait_until(lambda: next(s.in_flight for s in c.status().models) == 1, timeout=30)
            runner.stop()
            progress.start()
            # The request holds the drain: reports keep coming, each a new checkpoint.
            assert wait_until(lambda: len(hints) >= 3, timeout=30)
            assert thread.is_alive()
            assert 300_000 < hints[0] <= 300_000 + int(STOP_CLOSE_MARGIN_S * 1000)
            assert hints == sorted(hints, reverse=True)  # what is left of the drain shrinks
            request.open()
            assert request.reply()["ok"]
            thread.join(60)
        progress.join(10)
        assert not progress.is_alive() and runner.stopped.is_set()
        reported = len(hints)
        runner.report_stop_progress(hints.append, 0.01)  # after the stop: nothing to report
        assert len(hints) == reported
    finally:
        runner.stop()
        thread.join(60)
        _remove_service_log_handlers()


def _remove_service_log_handlers() -> None:
    """The runner adds its file and event-log handlers to the root logger; later tests must not
    log into a closed test folder."""
    import logging

    root = logging.getLogger()
    for h in list(root.handlers):
        if getattr(h, "_trtd_service", False):
            root.removeHandler(h)
            h.close()


def test_an_interpreter_under_tmp_is_reported_as_hidden_by_private_tmp(tmp_path):
    """The system unit has PrivateTmp=yes: a venv under /tmp would vanish for the service."""
    from trtd.service.systemd import hidden_by_private_tmp

    assert hidden_by_private_tmp("/tmp/venv/bin/python", "/opt/x") == "/tmp/venv/bin/python"
    assert hidden_by_private_tmp("/opt/trtd/bin/python", "/var/tmp/src/trtd") == "/var/tmp/src/trtd"
    assert hidden_by_private_tmp("/opt/trtd/bin/python", "/usr/lib/python3/trtd") is None
    # Resolved first: a link elsewhere that points into /tmp counts.
    link = tmp_path / "python"
    link.symlink_to("/tmp/elsewhere/python")
    assert hidden_by_private_tmp(str(link)) == "/tmp/elsewhere/python"


def test_windows_install_print_lists_the_steps_without_running_them(tmp_path):
    """On Windows `--print` printed nothing and installed; its plan is plain data, checked here."""
    from trtd.service import windows

    plan = windows.install_plan(tmp_path / "trtd.toml", config_exists=False, exec_prefix=r"C:\venv")
    assert plan[0] == "# Not installing (as asked). Steps (an elevated prompt runs them):"
    assert plan[1] == f"#  1. write {tmp_path / 'trtd.toml'} (the demo model)"
    assert any(r"host C:\venv\pythonservice.exe" in line for line in plan)
    assert plan[-1].endswith(f"start {windows.SERVICE_NAME}")
    assert not any("write" in line for line in windows.install_plan(tmp_path / "t.toml", True, r"C:\v"))
