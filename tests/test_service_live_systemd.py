"""`trtd service` against a live systemd: a real user manager (systemd --user, Debian's systemd
252 in CI) runs the unit that `trtd service install --user` writes. Type=notify readiness,
Restart=on-failure after a crash, the watchdog catching a hung daemon, ExecReload (SIGHUP),
the SIGTERM drain on stop, and uninstall, all as systemd itself carries them out.

A system-wide install (system manager, User=trtd, the hardening directives) is not run here:
that needs systemd as PID 1 (see README, "What was verified where")."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from daemon_process import wait_until
from live_systemd import UserManager, unavailable
from slow_models import held
from trtd.sdk import Client

_WHY_NOT = unavailable()
pytestmark = pytest.mark.skipif(_WHY_NOT is not None, reason=str(_WHY_NOT))

TRTD = [sys.executable, "-m", "trtd.daemon"]
UNIT = "trtd.service"


@pytest.fixture
def manager(tmp_path, monkeypatch):
    um = UserManager(tmp_path)
    um.start()
    # This test process is a client of the user's daemon: same runtime folder.
    monkeypatch.setenv("XDG_RUNTIME_DIR", um.env["XDG_RUNTIME_DIR"])
    for var in ("TRTD_RUNTIME_DIR", "TRTD_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    try:
        yield um
    finally:
        um.run(["systemctl", "--user", "stop", UNIT])
        um.stop()


def _main_pid(um: UserManager) -> int:
    return int(um.show(UNIT, "MainPID")["MainPID"])


def _serving(um: UserManager) -> bool:
    state = um.show(UNIT, "ActiveState", "SubState", "StatusText")
    return state["ActiveState"] == "active" and state["StatusText"].startswith("serving on")


def _record_stops(um: UserManager) -> Path:
    """A test-only drop-in: on every stop of the unit, ExecStopPost appends systemd's verdict
    ($SERVICE_RESULT $EXIT_CODE $EXIT_STATUS) to the file returned. Result= shows it only until
    the restart RestartSec=2s later resets it, however slowly the test looks; the file keeps
    each. It lives in the runtime unit folder, apart from the unit install writes."""
    record = um.root / "stops"
    script = um.root / "record-stop.sh"
    script.write_text(f'#!/bin/sh\necho "$SERVICE_RESULT $EXIT_CODE $EXIT_STATUS" >> "{record}"\n')
    dropin = Path(um.env["XDG_RUNTIME_DIR"]) / "systemd" / "user" / f"{UNIT}.d"
    dropin.mkdir(parents=True, exist_ok=True)
    (dropin / "test-records-stops.conf").write_text(f"[Service]\nExecStopPost=/bin/sh {script}\n")
    return record


def _stops(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


def _demo(x: np.ndarray) -> np.ndarray:
    with Client(timeout=30) as c:
        return c.model("demo")(x)


def test_one_command_install_serves_restarts_reloads_stops_and_uninstalls(manager):
    um = manager
    config = Path(um.env["XDG_CONFIG_HOME"]) / "trtd" / "trtd.toml"
    stops = _record_stops(um)
    install = um.run([*TRTD, "service", "install", "--user", "--config", str(config), "--watchdog", "10"])
    assert install.returncode == 0, install.stdout + install.stderr
    assert "trtd is installed and started (user service)" in install.stdout
    assert config.exists()  # the default configuration was written: the demo model

    # Type=notify: `enable --now` returned after READY=1, and the status line is the daemon's.
    shown = um.show(UNIT, "ActiveState", "SubState", "Type", "NotifyAccess", "WatchdogUSec",
                    "UnitFileState", "Restart", "StatusText")
    assert (shown["ActiveState"], shown["SubState"], shown["Type"]) == ("active", "running", "notify"), shown
    assert (shown["UnitFileState"], shown["Restart"], shown["WatchdogUSec"]) == ("enabled", "on-failure", "10s")
    assert shown["StatusText"].startswith("serving on ipc://" + um.env["XDG_RUNTIME_DIR"]), shown

    status = um.run([*TRTD, "service", "status", "--user", "--config", str(config)])
    assert status.returncode == 0, status.stdout + status.stderr
    assert "active (running)" in status.stdout
    assert wait_until(lambda: "ready" in um.run([*TRTD, "service", "status", "--user", "--config",
                                                 str(config)]).stdout, timeout=60)

    x = np.random.default_rng(0).standard_normal((2, 64), dtype=np.float32)
    before = _demo(x)

    # A crash (SIGKILL): Restart=on-failure brings it back, and it serves the same answers.
    first = _main_pid(um)
    os.kill(first, signal.SIGKILL)
    # systemd's own verdict on that stop (see _record_stops), then its one restart.
    assert wait_until(lambda: _stops(stops), timeout=30), um.show(UNIT, "ActiveState", "Result")
    assert _stops(stops) == ["signal killed KILL"]
    assert wait_until(lambda: _main_pid(um) not in (0, first) and _serving(um), timeout=60), \
        um.show(UNIT, "ActiveState", "SubState", "Result", "NRestarts")
    assert um.show(UNIT, "NRestarts")["NRestarts"] == "1"
    assert wait_until(lambda: np.array_equal(_demo(x), before), timeout=60)

    # systemctl reload: SIGHUP, the config is read again; demo keeps serving, mlp is added.
    config.write_text(config.read_text() + '\n[models.mlp]\npath = "builtin:mlp"\n')
    pid = _main_pid(um)
    reload = um.run(["systemctl", "--user", "reload", UNIT])
    assert reload.returncode == 0, reload.stderr
    with Client(timeout=30) as c:
        assert wait_until(lambda: {m.name: m.state for m in c.models()} == {"demo": "ready", "mlp": "ready"},
                          timeout=60), c.models()
    assert _main_pid(um) == pid and np.array_equal(_demo(x), before)

    # Stop: SIGTERM, the drain, exit 0; systemd records a clean stop, the socket is gone.
    stop = um.run([*TRTD, "service", "stop", "--user"])
    assert stop.returncode == 0, stop.stderr
    shown = um.show(UNIT, "ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
    assert (shown["ActiveState"], shown["Result"], shown["ExecMainStatus"]) == ("inactive", "success", "0"), shown
    assert _stops(stops) == ["signal killed KILL", "success exited 0"]
    assert not (Path(um.env["XDG_RUNTIME_DIR"]) / "trtd" / "trtd.sock").exists()

    uninstall = um.run([*TRTD, "service", "uninstall", "--user"])
    assert uninstall.returncode == 0, uninstall.stdout + uninstall.stderr
    assert not (Path(um.env["XDG_CONFIG_HOME"]) / "systemd" / "user" / UNIT).exists()
    assert um.show(UNIT, "LoadState")["LoadState"] == "not-found"


def test_the_watchdog_restarts_a_daemon_that_hangs(manager, tmp_path):
    """A model that never returns, run on the socket thread (one instance), stops the
    watchdog pings: systemd aborts the daemon after WatchdogSec and Restart= starts it again.

    WatchdogSec=10 (pings every 5 s), as in the test above: a daemon that is (re)starting on a
    loaded machine must not miss it; only the hang may."""
    um = manager
    model = held(tmp_path / "held.onnx")
    config = tmp_path / "trtd.toml"
    config.write_text(f'[models.held]\npath = "{model}"\nintra_op_threads = 1\n'
                      '[models.demo]\npath = "builtin:demo"\n')
    stops = _record_stops(um)
    install = um.run([*TRTD, "service", "install", "--user", "--config", str(config), "--watchdog", "10"])
    assert install.returncode == 0, install.stdout + install.stderr
    first = _main_pid(um)
    with Client(timeout=30) as c:
        assert wait_until(lambda: all(m.state == "ready" for m in c.models()), timeout=60)
        x = np.ones((1, 16), np.float32)
        # go = 0: the request holds the socket thread for good (sent without waiting for it).
        from held_requests import HeldRequest
        HeldRequest(c, x)
        # systemd's own verdict on that stop (see _record_stops): the watchdog, nothing else.
        assert wait_until(lambda: _stops(stops), timeout=90), \
            um.show(UNIT, "ActiveState", "SubState", "Result")
        assert [line.split()[0] for line in _stops(stops)] == ["watchdog"], _stops(stops)
        assert wait_until(lambda: _main_pid(um) not in (0, first) and _serving(um), timeout=90), \
            um.show(UNIT, "ActiveState", "SubState", "Result", "NRestarts")
    assert um.show(UNIT, "NRestarts")["NRestarts"] == "1"
    assert [line.split()[0] for line in _stops(stops)] == ["watchdog"], _stops(stops)
    assert _demo(np.ones((1, 64), np.float32)).shape[0] == 1  # the new daemon serves
