"""Dynamic batching against a real daemon: client processes, real shared memory, real ONNX Runtime.

Correctness is judged per request (each answer against ONNX Runtime in this process on that
request's own input), never by timing; that batches formed at all is read from `status`.
"""

from __future__ import annotations

import multiprocessing
import re
import signal

import numpy as np
import pytest

from daemon_process import serving, start_daemon, wait_until
from test_stop_while_clients_loop import CLIENT_TIMEOUT_S, Loop, _check_outcomes
from trtd.daemon.backends.onnxruntime import create_session
from trtd.daemon.builtin.onnx_models import builtin_model_path
from trtd.sdk import Client

pytest.importorskip("onnxruntime")

CLIENTS = 8
REQUESTS = 40
BATCHING = ("[models.demo]\npath = \"builtin:demo\"\ndynamic_batching = true\n"
            "max_queue_delay_us = 5000\nintra_op_threads = 1\n")


def _client(endpoint: str, seed: int, start, results) -> None:
    """One client process: REQUESTS requests of 1 or 2 rows of its own random data."""
    rng = np.random.default_rng(seed)
    sent = []
    with Client(endpoint, timeout=CLIENT_TIMEOUT_S) as c:
        c.infer("demo", np.zeros((1, 64), np.float32))  # connected and leased before the start
        start.wait(60)
        for _ in range(REQUESTS):
            x = rng.standard_normal((int(rng.integers(1, 3)), 64)).astype(np.float32)
            sent.append((x, np.array(c.infer("demo", x))))
    results.put((seed, sent))


def test_eight_client_processes_each_get_exactly_their_own_rows(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with serving(tmp_path, BATCHING) as d:
        start, results = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_client, args=(d.endpoint, seed, start, results)) for seed in range(CLIENTS)]
        for p in procs:
            p.start()
        start.set()
        collected = [results.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(60)
            assert p.exitcode == 0
        session = create_session(builtin_model_path("demo"))
        for seed, sent in collected:
            assert len(sent) == REQUESTS
            for x, y in sent:  # compared per request with its own in-process result
                np.testing.assert_allclose(y, session.run(None, {"x": x})[0], rtol=1e-5, atol=1e-6,
                                           err_msg=f"client {seed}")
        with Client(d.endpoint) as c:
            (st,) = [s for s in c.status().models if s.name == "demo"]
        assert st.batching == "on" and st.errors == 0
        assert st.requests == CLIENTS * (REQUESTS + 1)
        # Batches formed (their size depends on the machine; that some have company does not).
        assert st.batch_max > 1 and st.batches < st.requests, st
        assert st.queue_delay_p99_us >= st.queue_delay_p50_us >= 0


def test_status_shows_the_batching_figures(tmp_path):
    with serving(tmp_path, BATCHING) as d:
        with Client(d.endpoint) as c:
            c.infer("demo", np.ones((1, 64), np.float32))
        import subprocess
        import sys

        out = subprocess.run([sys.executable, "-m", "trtd.daemon", "status", "--endpoint", d.endpoint],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert re.search(r"batching: on; 1 batches, mean 1.00 max 1 requests; queue delay p50 \d+ µs",
                         out.stdout), out.stdout


def test_a_stop_while_clients_loop_on_a_batching_model_answers_every_request(tmp_path):
    config = tmp_path / "d.toml"
    config.write_text(BATCHING)
    d = start_daemon(tmp_path, "--config", str(config))
    loops = [Loop(d.endpoint) for _ in range(4)]
    try:
        assert wait_until(lambda: all(loop.outcomes["ok"] >= 20 for loop in loops), timeout=60), \
            [loop.outcomes for loop in loops]
        d.proc.send_signal(signal.SIGTERM)
        assert d.proc.wait(timeout=60) == 0, d.log()
        assert wait_until(lambda: all(loop.done.is_set() for loop in loops), timeout=CLIENT_TIMEOUT_S * 2)
        log = d.log()
        _check_outcomes(loops, log)
        answered = re.search(r"(\d+) answered ok since start", log)
        assert answered and int(answered[1]) == sum(loop.outcomes["ok"] for loop in loops), log
    finally:
        for loop in loops:
            loop.stop()
        if d.alive():
            d.kill()


def test_an_unload_while_clients_loop_answers_every_request_and_leaks_no_region(tmp_path):
    with serving(tmp_path, BATCHING) as d:
        loops = [Loop(d.endpoint) for _ in range(4)]
        try:
            assert wait_until(lambda: all(loop.outcomes["ok"] >= 20 for loop in loops), timeout=60)
            with Client(d.endpoint) as admin:
                admin.unload("demo")
            # Every loop ends on the model being gone, none on a timeout or a wrong answer.
            assert wait_until(lambda: all(loop.done.is_set() for loop in loops), timeout=CLIENT_TIMEOUT_S * 2)
            for loop in loops:
                assert set(loop.outcomes) == {"ok", "UnknownModel"}, (loop.outcomes, loop.errors)
        finally:
            for loop in loops:
                loop.stop()
        with Client(d.endpoint) as c:
            status = c.status()
        assert status.regions == 0 and all(s.in_flight == 0 for s in status.models), status
