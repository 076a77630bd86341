"""A daemon stopped (SIGINT, SIGTERM, SIGKILL) while clients loop on infer: every request is
answered, or told that the daemon stops/stopped, at once; none waits for its timeout.

No timed assertions: the client timeout is far above any request here, so a request that got
no answer shows up as DaemonTimeout (the bug these tests are about), whatever the machine's
speed. Conditions are waited for with generous bounds, never slept for.
"""

from __future__ import annotations

import collections
import re
import signal
import threading

import numpy as np
import pytest

from daemon_process import raw_call, start_daemon, wait_until
from held_requests import HeldRequest
from slow_models import held
from trtd.sdk import Client, DaemonNotRunning, DaemonStopping

# Far above any request in these tests: reaching it means a request went unanswered.
CLIENT_TIMEOUT_S = 60
X = np.zeros((1, 64), np.float32)


class Loop:
    """One thread with its own client, calling infer until the daemon is gone (DaemonNotRunning)
    or the test ends; every outcome is counted by exception type, the last message of each kept."""

    def __init__(self, endpoint: str):
        self.client = Client(endpoint, timeout=CLIENT_TIMEOUT_S)
        self.outcomes: collections.Counter[str] = collections.Counter()
        self.errors: dict[str, Exception] = {}
        self.done = threading.Event()
        self._quit = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            while not self._quit.is_set():
                try:
                    self.client.infer("demo", X)
                    self.outcomes["ok"] += 1
                except Exception as exc:  # noqa: BLE001 - every kind is counted and judged
                    name = type(exc).__name__
                    self.outcomes[name] += 1
                    self.errors[name] = exc
                    if not isinstance(exc, DaemonStopping):
                        return  # DaemonNotRunning ends the loop; anything else is a failure
        finally:
            self.done.set()

    def stop(self) -> None:
        self._quit.set()
        self._thread.join(timeout=CLIENT_TIMEOUT_S * 2)
        self.client.close()


def _in_flight(d) -> int:
    status = raw_call(d.endpoint, {"v": 1, "op": "status", "id": 1})["result"]
    return sum(m.get("in_flight", 0) for m in status["models"])


def _check_outcomes(loops: list[Loop], log: str) -> None:
    for loop in loops:
        assert loop.done.is_set(), f"a client still loops after the daemon exited: {loop.outcomes}"
        assert set(loop.outcomes) <= {"ok", "DaemonStopping", "DaemonNotRunning"}, (
            loop.outcomes, {k: str(v) for k, v in loop.errors.items()}, log)
        assert loop.outcomes["DaemonNotRunning"] == 1, loop.outcomes
        stopping = loop.errors.get("DaemonStopping")
        if stopping is not None:
            assert "stop" in str(stopping) and "may be busy" not in str(stopping), stopping


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_while_clients_loop_answers_every_request(tmp_path, sig):
    """Clients loop on a one-instance model (its requests run on the socket thread): each
    request succeeds, or ends in DaemonStopping / DaemonNotRunning; before the fix a request
    sent while the daemon closed got no answer and its client waited its whole timeout."""
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo")
    loops = [Loop(d.endpoint) for _ in range(2)]
    try:
        assert wait_until(lambda: all(loop.outcomes["ok"] >= 20 for loop in loops), timeout=60), \
            [loop.outcomes for loop in loops]
        d.proc.send_signal(sig)
        assert d.proc.wait(timeout=60) == 0, d.log()
        assert wait_until(lambda: all(loop.done.is_set() for loop in loops), timeout=CLIENT_TIMEOUT_S * 2)
        log = d.log()
        _check_outcomes(loops, log)
        assert f"got {signal.Signals(sig).name}: stopping: no request in flight" in log, log
        assert "stopping: drain done in" in log and "trtd stopped" in log, log
        # No success is lost in the stop: every request the daemon answered with outputs reached
        # its client (a reply sent just before the stop, still unread when the socket closed,
        # was dropped by the client's socket and turned into "stopped before answering").
        answered = re.search(r"(\d+) answered ok since start", log)
        assert answered and int(answered[1]) == sum(loop.outcomes["ok"] for loop in loops), (
            log, [loop.outcomes for loop in loops])
    finally:
        for loop in loops:
            loop.stop()
        if d.alive():
            d.kill()


def test_sigint_during_a_drain_refuses_new_work_with_daemon_stopping(tmp_path):
    """A request held in flight keeps the daemon draining for as long as the test needs: the
    looping clients meanwhile get DaemonStopping (did not run), the held request is answered,
    the daemon exits 0, and the log says what stopped it and how the drain went."""
    held(tmp_path / "held.onnx")
    config = tmp_path / "d.toml"
    config.write_text('drain_timeout_s = 120\n'
                      '[models.held]\npath = "held.onnx"\ninstances = 2\nintra_op_threads = 1\n'
                      '[models.demo]\npath = "builtin:demo"\n')
    d = start_daemon(tmp_path, "--config", str(config))
    holder = Client(d.endpoint, timeout=CLIENT_TIMEOUT_S)
    loops: list[Loop] = []
    try:
        x = np.random.default_rng(0).standard_normal((4, 16), dtype=np.float32)
        request = HeldRequest(holder, x)
        assert wait_until(lambda: _in_flight(d) == 1, timeout=60, interval=0.01)
        loops = [Loop(d.endpoint) for _ in range(2)]
        assert wait_until(lambda: all(loop.outcomes["ok"] >= 5 for loop in loops), timeout=60)
        d.proc.send_signal(signal.SIGINT)
        # Draining (the held request is still running): every loop is refused, and goes on.
        assert wait_until(lambda: all(loop.outcomes["DaemonStopping"] >= 3 for loop in loops),
                          timeout=60), ([loop.outcomes for loop in loops], d.log())
        assert d.alive()
        for loop in loops:
            refusal = loop.errors["DaemonStopping"]
            assert "the daemon is stopping" in str(refusal) and "not run" in str(refusal), refusal
            assert refusal.details["started"] is False and refusal.code == "OVERLOADED"
        assert "got SIGINT: stopping: finishing 1 request(s) in flight (up to 120 s)" in d.log(), d.log()
        request.open()
        assert request.reply(timeout_s=60)["ok"]
        np.testing.assert_allclose(request.y(), np.tanh(x), rtol=1e-6, atol=1e-6)
        assert d.proc.wait(timeout=60) == 0, d.log()
        assert wait_until(lambda: all(loop.done.is_set() for loop in loops), timeout=CLIENT_TIMEOUT_S * 2)
        log = d.log()
        _check_outcomes(loops, log)
        assert "stopping: drain done in" in log and "1 of 1 request(s) in flight finished" in log, log
        refused = re.search(r"in flight finished, (\d+) new request\(s\) refused", log)
        assert refused and int(refused[1]) >= 6, log  # at least those the loops counted
        assert "trtd stopped" in log, log
    finally:
        for loop in loops:
            loop.stop()
        holder.close()
        if d.alive():
            d.kill()


def test_a_request_waiting_when_the_daemon_dies_says_it_stopped(tmp_path):
    """SIGKILL while an SDK call waits for a long request: the client does not wait out its
    timeout and call the daemon busy; it says the daemon stopped, and the next call that the
    daemon is not running."""
    held(tmp_path / "held.onnx")
    config = tmp_path / "d.toml"
    config.write_text('[models.held]\npath = "held.onnx"\ninstances = 2\nintra_op_threads = 1\n')
    d = start_daemon(tmp_path, "--config", str(config))
    c = Client(d.endpoint, timeout=CLIENT_TIMEOUT_S)
    outcome: list[BaseException] = []

    def wait_for_held() -> None:
        try:  # go = 0: the model runs until the daemon dies
            c.infer("held", {"x": np.ones((2, 16), np.float32), "go": np.zeros(1, np.int32)})
        except BaseException as exc:  # noqa: BLE001 - judged in the test's thread
            outcome.append(exc)

    waiter = threading.Thread(target=wait_for_held)
    try:
        waiter.start()
        assert wait_until(lambda: _in_flight(d) == 1, timeout=60, interval=0.01)
        d.kill()
        waiter.join()
        assert len(outcome) == 1 and isinstance(outcome[0], DaemonStopping), outcome
        assert "stopped (it closed the connection) before answering 'infer'" in str(outcome[0])
        assert outcome[0].details["started"] is None
        with pytest.raises(DaemonNotRunning):
            c.infer("held", {"x": np.ones((2, 16), np.float32), "go": np.ones(1, np.int32)},
                    timeout=1)
    finally:
        if d.alive():
            d.kill()
        waiter.join()
        c.close()
