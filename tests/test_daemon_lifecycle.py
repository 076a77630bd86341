"""Daemon process lifecycle: start-up clean-up, one daemon per endpoint, signals, restarts."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from daemon_process import shm_names, start_daemon, wait_until
from trtd.daemon.serve.endpoint_lock import endpoint_prefix
from trtd.sdk import Client, DaemonNotRunning, DaemonStopping, InvalidInput, ModelNotReady


def _fake_segment(name: str) -> None:
    with open(f"/dev/shm/{name}", "wb") as f:
        f.write(b"\0" * 4096)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_graceful_stop_releases_everything(tmp_path, sig):
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo")
    c = Client(d.endpoint)
    h = c.model("demo")
    h(np.ones((1, 64), np.float32))
    region = h._region.name
    assert region in shm_names()
    assert d.stop(sig) == 0
    assert region not in shm_names()
    assert not (tmp_path / "d.sock").exists()
    c.close()


def test_second_daemon_on_same_endpoint_refuses(tmp_path):
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo")
    try:
        second = subprocess.run(
            [sys.executable, "-m", "trtd.daemon", "serve", "--endpoint", d.endpoint],
            env=d.env, capture_output=True, text=True, timeout=60)
        assert second.returncode == 3
        assert f"pid {d.pid}" in second.stderr and "already" not in second.stdout
        assert d.alive()
    finally:
        assert d.stop() == 0


def test_startup_removes_only_a_dead_predecessors_regions(tmp_path):
    live = start_daemon(tmp_path / "live", "--model", "demo=builtin:demo")
    try:
        with Client(live.endpoint) as c:
            live_region = c.lease(4096)
            endpoint = f"ipc://{tmp_path / 'next' / 'd.sock'}"
            leftover = endpoint_prefix(endpoint) + "dead_1"
            _fake_segment(leftover)
            nxt = start_daemon(tmp_path / "next", "--model", "demo=builtin:demo")
            try:
                assert leftover not in shm_names()
                assert live_region.name in shm_names()
                assert "dead predecessor" in nxt.log()
            finally:
                assert nxt.stop() == 0
            c.release(live_region)
    finally:
        assert live.stop() == 0


def test_sigkilled_daemon_is_replaced_and_clients_recover(tmp_path):
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo")
    x = np.random.default_rng(0).standard_normal((1, 64), dtype=np.float32)
    c = Client(d.endpoint, timeout=5)
    try:
        expected = c.infer("demo", x)
        zero_copy = c.model("demo")
        zero_copy.zero_copy_inputs()
        d.kill()
        # The kill closes the connection, but the client's ZMQ I/O thread notices that in its own
        # time: a request sent before it has is one the connection closed under (DaemonStopping),
        # one sent after is refused (DaemonNotRunning). Both say the daemon is gone; the timeout
        # only bounds how long noticing may take (a DaemonTimeout would fail the test).
        with pytest.raises((DaemonNotRunning, DaemonStopping)):
            c.infer("demo", x, timeout=5)
        # Noticed now, by either path: a call says "not running", and how to start one.
        with pytest.raises(DaemonNotRunning) as e:
            c.infer("demo", x, timeout=0.5)
        assert "trtd serve" in str(e.value)
        d2 = start_daemon(tmp_path, "--model", "demo=builtin:demo")
        try:
            # The copying path re-registers and re-leases by itself.
            np.testing.assert_array_equal(c.infer("demo", x), expected)
            with pytest.raises(InvalidInput):
                zero_copy.run_zero_copy()
            assert {n for n in shm_names() if n.startswith(endpoint_prefix(d.endpoint))} == {
                zero_copy._region.name}
        finally:
            c.close()
            assert d2.stop() == 0
    finally:
        c.close()


def test_client_without_daemon_says_how_to_start_one(tmp_path):
    with pytest.raises(DaemonNotRunning) as e:
        Client(f"ipc://{tmp_path}/none.sock", connect_timeout=0.2)
    assert "trtd serve" in str(e.value)


def test_model_that_fails_to_load_does_not_stop_the_daemon(tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not an onnx file")
    d = start_daemon(tmp_path, "--model", f"broken={broken}", "--model", "demo=builtin:demo")
    try:
        with Client(d.endpoint) as c:
            states = {m.name: (m.state, m.error) for m in c.models()}
            assert states["demo"][0] == "ready"
            assert states["broken"][0] == "failed" and "could not load" in states["broken"][1]
            with pytest.raises(ModelNotReady) as e:
                c.infer("broken", np.zeros((1, 64), np.float32))
            assert "'broken' is failed" in str(e.value) and "could not load" in str(e.value)
            assert c.infer("demo", np.zeros((1, 64), np.float32)).shape == (1, 10)
    finally:
        assert d.stop() == 0


def test_client_exit_does_not_unlink_daemon_regions(tmp_path):
    # Python < 3.13 registers attached segments with the process's resource
    # tracker, which unlinks them when the process exits (however it exits);
    # the SDK must prevent that: the tracker says so on stderr when it does. os._exit skips
    # the SDK's goodbye: the daemon releases the region itself when the connection ends.
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo", "--reclaim-interval", "3600")
    try:
        child = textwrap.dedent(f"""
            import numpy as np
            from trtd.sdk import Client
            c = Client({d.endpoint!r})
            h = c.model("demo")
            h(np.zeros((1, 64), np.float32))
            print(h._region.name, flush=True)
            import os; os._exit(0)
        """)
        out = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        region = out.stdout.strip()
        assert region.startswith("trtd_")
        assert "leaked shared_memory" not in out.stderr
        assert wait_until(lambda: "closed its connection; released 1 region(s)" in d.log(), 10)
        assert region not in shm_names()
        with Client(d.endpoint) as c:
            assert c.status().regions == 0
    finally:
        assert d.stop() == 0
    assert region not in shm_names()


def test_a_client_dropped_without_close_frees_its_regions(tmp_path):
    import gc

    d = start_daemon(tmp_path, "--model", "demo=builtin:demo", "--reclaim-interval", "3600")
    try:
        with Client(d.endpoint) as observer:
            c = Client(d.endpoint)
            c.infer("demo", np.zeros((1, 64), np.float32))
            assert observer.status().regions == 1
            del c
            gc.collect()
            assert wait_until(lambda: observer.status().regions == 0, timeout=5)
            assert observer.status().clients == 1
    finally:
        assert d.stop() == 0


def test_cli_demo_passes_against_a_daemon_it_starts(tmp_path):
    endpoint = f"ipc://{tmp_path}/demo.sock"
    out = subprocess.run([sys.executable, "-m", "trtd.daemon", "demo", "--endpoint", endpoint,
                          "--requests", "50"], capture_output=True, text=True, timeout=120,
                         env={**__import__("os").environ, "TRTD_RUNTIME_DIR": str(tmp_path / "run")})
    assert out.returncode == 0, out.stdout + out.stderr
    assert "(OK)" in out.stdout and "stopped the daemon" in out.stdout
    assert not (tmp_path / "demo.sock").exists()


def test_cli_status(tmp_path):
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo")
    try:
        with Client(d.endpoint) as c:
            for _ in range(5):
                c.infer("demo", np.zeros((1, 64), np.float32))
        out = subprocess.run([sys.executable, "-m", "trtd.daemon", "status", "--endpoint", d.endpoint],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        line = next(l for l in out.stdout.splitlines() if l.startswith("demo"))
        assert line.split()[3] == "5"  # requests
        js = subprocess.run([sys.executable, "-m", "trtd.daemon", "status", "--json", "--endpoint",
                             d.endpoint], capture_output=True, text=True, timeout=60)
        assert '"requests": 5' in js.stdout
    finally:
        assert d.stop() == 0


def test_cli_status_without_daemon(tmp_path):
    out = subprocess.run([sys.executable, "-m", "trtd.daemon", "status", "--endpoint",
                          f"ipc://{tmp_path}/x.sock"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "trtd serve" in out.stderr


def test_serve_rejects_bad_config(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("[models.a]\npath = 'a.onnx'\nmax_batch = 'lots'\n")
    out = subprocess.run([sys.executable, "-m", "trtd.daemon", "serve", "--config", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "'max_batch' must be int" in out.stderr


def test_gpu_model_without_a_gpu_fails_clearly_and_the_rest_serve(tmp_path):
    from trtd.daemon.system import cuda

    try:
        if cuda.device_count() > 0:
            pytest.skip("this machine has a CUDA GPU")
    except cuda.CudaError:
        pass  # no cuda-python, no driver or no device: what this test is about
    config = tmp_path / "gpu.toml"
    config.write_text("[models.gpu]\npath = \"builtin:demo\"\nbackend = \"torch\"\ndevice = 0\n"
                      "[models.demo]\npath = \"builtin:demo\"\n")
    d = start_daemon(tmp_path, "--config", str(config))
    try:
        with Client(d.endpoint) as c:
            gpu = c.describe("gpu")
            assert gpu.state == "failed" and ("cuda" in gpu.error.lower() or "driver" in gpu.error)
            assert c.infer("demo", np.zeros((1, 64), np.float32)).shape == (1, 10)
    finally:
        assert d.stop() == 0
