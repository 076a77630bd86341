"""The client's spin_us (sdk/zmq_transport.py, ZmqTransport._spin_for_reply) against a real daemon.

With spin_us set, the client busy-polls its socket for each reply (burning its CPU instead of
sleeping) before it falls back to the sleeping poll. Both ways a reply can be received are
driven here, and the answers are compared with ONNX Runtime run in this process:
- the spin catches the reply (a bound far longer than any demo request takes);
- the spin runs out first (a `held` request cannot finish until the test opens it, which it
  does only once the spin has returned), then the sleeping poll receives it.
The spin is seen by wrapping the transport's own _spin_for_reply: it still runs, and on return
the wrapper notes whether a reply is waiting on the socket.
"""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest
import zmq

from daemon_process import start_daemon, wait_until
from slow_models import held
from trtd.daemon.backends.onnxruntime import create_session
from trtd.daemon.builtin.onnx_models import builtin_model_path
from trtd.sdk import Client

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="ipc endpoints")

# A spin bound no demo request comes near: each spin ends because the reply arrived.
_SPIN_UNTIL_THE_REPLY_US = 30_000_000
# A spin shorter than a held request (which waits for the test): it runs out.
_SHORT_SPIN_US = 2_000


def _observe_spins(client: Client) -> list[bool]:
    """For each spin of the client, once it returned: whether the reply had arrived."""
    transport = client._conn.transport
    spin = transport._spin_for_reply
    seen: list[bool] = []

    def observed() -> None:
        spin()
        seen.append(bool(transport.socket.poll(0, zmq.POLLIN)))

    transport._spin_for_reply = observed
    return seen


def test_the_spin_catches_the_replies_and_they_equal_onnx_runtime_in_process(tmp_path):
    session = create_session(builtin_model_path("demo"))
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo")
    try:
        with Client(d.endpoint, spin_us=_SPIN_UNTIL_THE_REPLY_US) as c:
            seen = _observe_spins(c)
            handle = c.model("demo")
            rng = np.random.default_rng(7)
            for batch in (1, 3, 64, 1, 2, 1):
                x = rng.standard_normal((batch, 64), dtype=np.float32)
                np.testing.assert_array_equal(handle(x), session.run(None, {"x": x})[0])
            slots = handle.zero_copy_inputs({"x": (4, 64)})
            for _ in range(3):
                x = rng.standard_normal((4, 64), dtype=np.float32)
                slots["x"][...] = x
                np.testing.assert_array_equal(handle.run_zero_copy()["y"], session.run(None, {"x": x})[0])
        assert len(seen) >= 9, seen  # every request waited through the spin...
        assert all(seen), seen       # ...and each spin ended with its reply there
    finally:
        assert d.stop() == 0, d.log()


def test_a_spin_that_runs_out_falls_back_to_the_sleeping_poll(tmp_path):
    session = create_session(str(held(tmp_path / "held.onnx")))
    config = tmp_path / "d.toml"
    config.write_text('[models.held]\npath = "held.onnx"\nintra_op_threads = 1\n')
    d = start_daemon(tmp_path, "--config", str(config))
    try:
        with Client(d.endpoint, spin_us=_SHORT_SPIN_US, timeout=120) as c:
            seen = _observe_spins(c)
            handle = c.model("held")
            x = np.random.default_rng(8).standard_normal((2, 16), dtype=np.float32)
            slots = handle.zero_copy_inputs({"x": (2, 16), "go": (1,)})
            slots["x"][...] = x
            slots["go"][...] = 0  # the model loops until go is nonzero
            spins_before = len(seen)
            result: dict = {}
            runner = threading.Thread(target=lambda: result.update(handle.run_zero_copy()))
            runner.start()
            try:
                # The request cannot finish while go == 0: this spin must run out.
                assert wait_until(lambda: len(seen) > spins_before, timeout=60), seen
                assert seen[spins_before] is False, seen
            finally:
                slots["go"][...] = 1  # let it finish (also when the assertion failed)
                runner.join(timeout=120)
            assert not runner.is_alive()
            expected = session.run(None, {"x": x, "go": np.ones(1, np.int32)})[0]
            np.testing.assert_allclose(result["y"], expected, rtol=1e-6, atol=1e-6)
    finally:
        assert d.stop() == 0, d.log()
