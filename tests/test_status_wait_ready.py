"""`trtd status --wait-ready` through what a daemon's life can put in its way: a restart (the
connection closing mid-call, then no daemon, then a new one), a slow answer at the deadline, and a
daemon that is stopping (it answers `status` while it drains, but refuses all work).

The polling is driven by a scripted `_fetch_status` and a clock that moves only when the poll
sleeps or a call times out, so nothing here depends on timing or on the machine's speed. The
last test holds a real daemon in its drain (a request that runs until the test lets it finish)."""

from __future__ import annotations

import signal
import sys

import numpy as np
import pytest

from daemon_process import raw_call, start_daemon, wait_until
from held_requests import HeldRequest
from slow_models import held
from trtd.daemon.commands import cli
from trtd.daemon.commands.cli import (STATUS_LOADING, STATUS_READY, STATUS_STOPPING, STATUS_UNREACHABLE, main)
from trtd.protocol import messages as m
from trtd.sdk import Client, DaemonNotRunning, DaemonStopping, DaemonTimeout

ENDPOINT = "ipc:///nonexistent-trtd-test/trtd.sock"  # never connected to: _fetch_status is scripted


def _reply(*states: str, stopping: bool = False, daemon_id: str = "d1") -> m.StatusReply:
    return m.StatusReply(daemon_id=daemon_id, pid=1, server_version="0.1.0", protocol_version=1,
                         endpoint=ENDPOINT, uptime_s=1.0, rss_bytes=0, cpu_user_s=0.0, cpu_system_s=0.0,
                         clients=0, regions=0, region_bytes=0, stopping=stopping,
                         models=[m.ModelStatus(name=f"m{i}", backend="onnxruntime", state=state)
                                 for i, state in enumerate(states)])


class _Script:
    """Answers `_fetch_status` calls in turn (the last answer repeats); an exception is raised.
    The clock moves when the poll sleeps and, by the call's timeout, when a call times out."""

    def __init__(self, monkeypatch, *answers):
        self.answers, self.now, self.calls = list(answers), 1000.0, 0
        monkeypatch.setattr(cli, "_fetch_status", self.fetch)
        monkeypatch.setattr(cli, "_now", lambda: self.now)
        monkeypatch.setattr(cli, "_pause", self.pause)

    def fetch(self, endpoint, timeout):
        assert endpoint == ENDPOINT and timeout > 0
        self.calls += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, DaemonTimeout):
            self.now += timeout
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def pause(self, seconds):
        assert seconds >= 0
        self.now += seconds


def _status(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["status", *args, "--endpoint", ENDPOINT])
    out = capsys.readouterr()
    return code, out.out, out.err


def _closed() -> DaemonStopping:
    """What the SDK raises when the connection closes before the reply (a daemon stopping)."""
    return DaemonStopping("the daemon closed the connection before answering", code="OVERLOADED",
                          details={"stopping": True, "started": None})


# -- a restart during the wait ---------------------------------------------------------------------


def test_wait_ready_waits_through_a_restart_whose_connection_closes_mid_call(monkeypatch, capsys):
    script = _Script(monkeypatch, _reply("loading"), _closed(), DaemonNotRunning("not running"),
                     _reply("loading", daemon_id="d2"), _reply("ready", daemon_id="d2"))
    code, out, err = _status(capsys, "--wait-ready", "--timeout", "60")
    assert code == STATUS_READY, err
    assert script.calls == 5 and "d2" in out


def test_wait_ready_waits_through_a_daemon_that_is_stopping(monkeypatch, capsys):
    # The old daemon answers while it drains (every model still "ready"): not ready, wait.
    script = _Script(monkeypatch, _reply("ready", stopping=True), _reply("ready", stopping=True),
                     _closed(), DaemonNotRunning("not running"), _reply("ready", daemon_id="d2"))
    code, out, err = _status(capsys, "--wait-ready", "--timeout", "60")
    assert code == STATUS_READY, err
    assert script.calls == 5 and "d2" in out and "stopping" not in out


# -- at the deadline -------------------------------------------------------------------------------


def test_a_timeout_at_the_deadline_keeps_the_last_answer(monkeypatch, capsys):
    script = _Script(monkeypatch, _reply("ready", "loading"), DaemonTimeout("no reply within 5s"))
    code, out, err = _status(capsys, "--wait-ready", "--timeout", "30")
    assert code == STATUS_LOADING, err
    assert "not ready after 30s: still loading: m1" in err and "no daemon answered" not in err
    assert "loading  1 model(s)" in out  # the last answer's table
    assert script.calls >= 2 and script.now >= 1030


def test_a_stopping_daemon_at_the_deadline_is_stopping(monkeypatch, capsys):
    _Script(monkeypatch, _reply("ready", stopping=True))
    code, out, err = _status(capsys, "--wait-ready", "--timeout", "30")
    assert code == STATUS_STOPPING, err
    assert "not ready after 30s: the daemon is stopping" in err
    assert "stopping" in out


def test_a_daemon_gone_at_the_deadline_is_unreachable_but_not_said_never_to_have_answered(monkeypatch, capsys):
    _Script(monkeypatch, _reply("loading"), DaemonNotRunning("no daemon is listening"))
    code, _, err = _status(capsys, "--wait-ready", "--timeout", "30")
    assert code == STATUS_UNREACHABLE
    assert "no daemon answered at the end of 30s" in err and "no daemon is listening" in err


def test_no_answer_at_all_is_still_no_daemon_answered(monkeypatch, capsys):
    _Script(monkeypatch, DaemonTimeout("no reply within 5s"))
    code, _, err = _status(capsys, "--wait-ready", "--timeout", "30")
    assert code == STATUS_UNREACHABLE and "no daemon answered within 30s" in err


# -- without waiting -------------------------------------------------------------------------------


def test_status_of_a_stopping_daemon_is_its_own_exit_code(monkeypatch, capsys):
    _Script(monkeypatch, _reply("ready", "failed", stopping=True))
    code, out, err = _status(capsys)
    assert code == STATUS_STOPPING == 5  # over "failed": the next daemon loads the models afresh
    assert "stopping" in out and "the daemon is stopping" in err
    code, out, _ = _status(capsys, "--json")
    assert code == STATUS_STOPPING and '"stopping": true' in out


def test_the_stopping_exit_code_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        main(["status", "--help"])
    assert "5 the daemon is stopping" in " ".join(capsys.readouterr().out.split())


# -- the wire field --------------------------------------------------------------------------------


def test_stopping_is_optional_on_the_wire_and_false_by_default():
    from trtd.protocol.schema import struct_decoder, to_wire

    wire = to_wire(_reply("ready"))
    assert wire["stopping"] is False
    del wire["stopping"]  # an older daemon's reply
    assert struct_decoder(m.StatusReply)(wire, "result").stopping is False
    assert struct_decoder(m.StatusReply)({**wire, "stopping": True}, "result").stopping is True


# -- a real daemon in its drain --------------------------------------------------------------------


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM, ipc endpoints")
def test_a_draining_daemon_says_stopping_and_status_exits_stopping(tmp_path, capsys):
    held(tmp_path / "held.onnx")
    config = tmp_path / "d.toml"
    # Two instances: the request runs on a worker, so the socket loop answers while it drains.
    config.write_text('drain_timeout_s = 600\n[models.held]\npath = "held.onnx"\n'
                      'instances = 2\nintra_op_threads = 1\n')
    d = start_daemon(tmp_path, "--config", str(config))
    x = np.ones((4, 16), np.float32)
    c = Client(d.endpoint, timeout=120)
    request = None
    try:
        assert raw_call(d.endpoint, {"v": 1, "op": "status", "id": 1}, timeout=60)["result"]["stopping"] is False
        assert main(["status", "--timeout", "60", "--endpoint", d.endpoint]) == STATUS_READY
        # In flight until the test opens it, however fast the machine: the drain waits for it.
        request = HeldRequest(c, x)
        assert wait_until(lambda: _in_flight(d) == 1, timeout=60, interval=0.01)
        d.proc.send_signal(signal.SIGTERM)
        assert wait_until(lambda: "stopping: finishing 1 request" in d.log(), timeout=60), d.log()
        result = raw_call(d.endpoint, {"v": 1, "op": "status", "id": 2}, timeout=60)["result"]
        assert result["stopping"] is True
        assert [model["state"] for model in result["models"]] == ["ready"]  # ready, yet refusing work
        capsys.readouterr()
        # (--wait-ready's polling of a stopping daemon is the scripted tests' part: against a real
        # one, its deadline would also bound the round trips, which a loaded machine makes slow.)
        assert main(["status", "--timeout", "60", "--endpoint", d.endpoint]) == STATUS_STOPPING
        out, err = capsys.readouterr()
        assert "the daemon is stopping" in err and "stopping the daemon is draining" in out
        request.open()
        assert request.reply(timeout_s=60)["ok"]
        assert d.proc.wait(timeout=60) == 0, d.log()
    finally:
        if request is not None:
            request.open()
        c.close()
        if d.alive():
            d.kill()


def _in_flight(d) -> int:
    status = raw_call(d.endpoint, {"v": 1, "op": "status", "id": 1}, timeout=60)["result"]
    return sum(model.get("in_flight", 0) for model in status["models"])
