"""The metrics and health endpoint of a real daemon: scraped over HTTP after real requests and
parsed with prometheus_client's own parser; /healthz and /readyz against `trtd status`."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from daemon_process import serving, start_daemon, wait_until
from trtd.daemon.commands.cli import STATUS_FAILED, STATUS_LOADING, readiness
from trtd.daemon.serve.metrics_address import (MetricsAddressError, exposure_warning,
                                               parse_metrics_address)
from trtd.protocol import messages as m
from trtd.sdk import Client, InvalidInput, UnknownModel


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str) -> tuple[int, str, dict]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(), dict(exc.headers)


class Scrape:
    """One /metrics answer, parsed: value(name, **labels) of a sample."""

    def __init__(self, port: int):
        status, body, self.headers = get(f"http://127.0.0.1:{port}/metrics")
        assert status == 200, body
        self.families = {f.name: f for f in text_string_to_metric_families(body)}
        self.samples = [s for f in self.families.values() for s in f.samples]

    def value(self, name: str, **labels) -> float:
        found = [s.value for s in self.samples if s.name == name
                 and all(s.labels.get(k) == v for k, v in labels.items())]
        assert len(found) == 1, f"{name}{labels}: {found} among {[s.name for s in self.samples][:200]}"
        return found[0]

    def has(self, name: str, **labels) -> bool:
        return any(s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
                   for s in self.samples)

    def buckets(self, name: str, **labels) -> list[tuple[float, float]]:
        return sorted((float(s.labels["le"]), s.value) for s in self.samples if s.name == name + "_bucket"
                      and all(s.labels.get(k) == v for k, v in labels.items()))


def _bad_dtype(client: Client):
    """An infer the daemon itself refuses with INVALID_TENSOR (the SDK's own checks bypassed)."""
    region = client.lease(4096)
    x = m.InputRef(name="x", dtype="float64", shape=[1, 64], offset=0, nbytes=64 * 8)
    y = m.OutputRef(name="y", offset=1024, nbytes=40)
    with pytest.raises(InvalidInput):
        client._call(m.Infer(client_id=client.client_id, model="demo", region=region.name,
                             token=region.token, inputs=[x], outputs=[y]))


def test_a_scrape_counts_what_was_done(tmp_path):
    port = free_port()
    with serving(tmp_path, f'metrics = "127.0.0.1:{port}"\n[models.demo]\npath = "builtin:demo"\n') as d:
        # A scraper hammering the endpoint the whole time: requests must not notice.
        stop, scrapes, failures = threading.Event(), [], []

        def scrape_loop():
            while not stop.is_set():
                try:
                    scrapes.append(Scrape(port))
                except Exception as exc:  # noqa: BLE001 - reported below
                    failures.append(exc)

        scraper = threading.Thread(target=scrape_loop)
        scraper.start()
        try:
            with Client(d.endpoint, timeout=10) as c:
                x = np.random.default_rng(0).standard_normal((2, 64), dtype=np.float32)
                for _ in range(7):
                    assert c.infer("demo", x).shape == (2, 10)
                _bad_dtype(c)
                with pytest.raises(UnknownModel):
                    c.infer("nope", x)
                status = c.status()
                after = Scrape(port)
        finally:
            stop.set()
            scraper.join()
        assert not failures and scrapes, failures

    assert after.value("trtd_model_requests_total", model="demo") == 8
    assert after.value("trtd_model_ok_total", model="demo") == 7
    assert after.value("trtd_model_errors_total", model="demo", code="INVALID_TENSOR") == 1
    assert [s.labels["code"] for s in after.samples if s.name == "trtd_model_errors_total"] == ["INVALID_TENSOR"]
    assert after.value("trtd_rejected_requests_total", code="UNKNOWN_MODEL") == 1
    # The same numbers as `trtd status`.
    (demo,) = status.models
    assert (demo.total, demo.ok, demo.errors) == (8, 7, 1)
    assert after.value("trtd_regions") == status.regions and status.regions >= 2
    assert after.value("trtd_region_bytes") == status.region_bytes
    assert after.value("trtd_clients") == status.clients == 1
    assert after.value("trtd_models", state="ready") == 1
    assert after.value("trtd_models", state="failed") == after.value("trtd_models", state="loading") == 0
    assert after.value("trtd_model_state", model="demo", state="ready") == 1
    # Latency histograms: every succeeded request counted once per stage, buckets cumulative.
    for name in ("trtd_model_request_duration_seconds", "trtd_model_queue_duration_seconds",
                 "trtd_model_compute_duration_seconds"):
        buckets = after.buckets(name, model="demo")
        assert buckets[-1] == (float("inf"), 7)
        assert [n for _, n in buckets] == sorted(n for _, n in buckets)
        assert after.value(name + "_count", model="demo") == 7
    total_sum = after.value("trtd_model_request_duration_seconds_sum", model="demo")
    compute_sum = after.value("trtd_model_compute_duration_seconds_sum", model="demo")
    assert 0 < compute_sum <= total_sum < 7 * 10  # seconds: the requests took far less than 10 s each
    # A CPU model reports no device copies, no device memory; no batching yet: no batch sizes.
    for absent in ("trtd_model_h2d_duration_seconds_count", "trtd_model_d2h_duration_seconds_count",
                   "trtd_device_memory_free_bytes", "trtd_model_batch_size_count"):
        assert not after.has(absent), absent
    assert after.value("trtd_pinned_bytes") == 0
    assert after.value("process_resident_memory_bytes") > 10 * 2**20
    assert after.value("process_open_fds") > 0 and after.value("process_threads") >= 2
    assert after.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    # Counters only go up between scrapes taken while requests ran.
    seen = [s.value("trtd_model_requests_total", model="demo") for s in scrapes]
    assert seen == sorted(seen) and seen[-1] <= 8


def test_health_and_readiness_agree_with_trtd_status(tmp_path):
    """/readyz and `trtd status` judge readiness by one rule (daemon/serve/readiness.py): a model
    still loading (here: a named pipe nobody has written yet) and one that failed."""
    port = free_port()
    pipe = tmp_path / "piped.onnx"
    os.mkfifo(pipe)
    # Models load one after the other: the pipe last, since its load waits for the writer.
    config = (f'metrics = "127.0.0.1:{port}"\n[models.demo]\npath = "builtin:demo"\n'
              f'[models.gone]\npath = "{tmp_path / "gone.onnx"}"\n[models.piped]\npath = "{pipe}"\n')
    (tmp_path / "d.toml").write_text(config)
    d = start_daemon(tmp_path, "--config", str(tmp_path / "d.toml"), wait=False)
    try:
        # Not waited for by start_daemon: one model stays loading until the pipe is written.
        assert wait_until(lambda: (tmp_path / "d.sock").exists() or not d.alive(), timeout=60), d.log()
        with Client(d.endpoint, timeout=10) as c:
            assert wait_until(lambda: {s.name: s.state for s in c.status().models}
                              == {"demo": "ready", "piped": "loading", "gone": "failed"}, timeout=60)
            verdict = readiness(c.status())
            assert verdict.code == STATUS_FAILED and verdict.loading == ["piped"]
            code, body, _ = get(f"http://127.0.0.1:{port}/readyz")
            assert code == 503
            lines = body.splitlines()
            assert lines[0] == "not ready"
            assert [line for line in lines if line.startswith("failed: ")] == [f"failed: {e}" for e in verdict.failed]
            assert "failed: gone: model file" in body and "loading: piped" in lines
            assert get(f"http://127.0.0.1:{port}/healthz")[:2] == (200, "alive\n")
            scrape = Scrape(port)
            assert scrape.value("trtd_models", state="loading") == 1
            assert scrape.value("trtd_models", state="failed") == 1
            # The writer delivers the model: only the failed one is left.
            from trtd.daemon.builtin.onnx_models import builtin_model_path

            with open(pipe, "wb") as writer:
                writer.write(builtin_model_path("demo").read_bytes())
            assert wait_until(lambda: {s.name: s.state for s in c.status().models}["piped"] == "ready",
                              timeout=60)
            code, body, _ = get(f"http://127.0.0.1:{port}/readyz")
            assert code == 503 and "loading" not in body and "failed: gone" in body
            assert readiness(c.status()).code == STATUS_FAILED and readiness(c.status()).loading == []
            assert get(f"http://127.0.0.1:{port}/nothing")[0] == 404
    finally:
        _end_of_pipe(pipe)
        assert d.stop() == 0, d.log()


def _end_of_pipe(pipe) -> None:
    """Unblock a load still waiting for the pipe's writer (a failed test): it reads EOF."""
    try:
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
    except OSError:  # no reader (any more): nothing waits
        pass


def test_readyz_is_200_when_every_model_is_ready_and_the_cli_says_0(tmp_path):
    port = free_port()
    with serving(tmp_path, f'metrics = "127.0.0.1:{port}"\n[models.demo]\npath = "builtin:demo"\n') as d:
        assert get(f"http://127.0.0.1:{port}/readyz")[:2] == (200, "ready\n")
        out = subprocess.run([sys.executable, "-m", "trtd.daemon", "status", "--endpoint", d.endpoint],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr


def test_engine_builds_are_counted(tmp_path):
    """A real background build (engine_builder = "onnxruntime": an optimized ONNX model, no GPU)."""
    port = free_port()
    config = (f'metrics = "127.0.0.1:{port}"\n[models.demo]\npath = "builtin:demo"\n'
              f'backend = "tensorrt"\nengine_builder = "onnxruntime"\n')
    with serving(tmp_path, config) as d:
        with Client(d.endpoint, timeout=10) as c:
            assert wait_until(lambda: c.describe("demo").backend != "onnxruntime", timeout=120), \
                c.status().models[0].build
        scrape = Scrape(port)
    assert scrape.value("trtd_engine_builds_started_total") == 1
    built = scrape.value("trtd_engine_builds_succeeded_total")
    assert built + scrape.value("trtd_engine_builds_cached_total") == 1  # the cache is per test session
    assert scrape.value("trtd_engine_builds_failed_total") == 0
    assert scrape.value("trtd_engine_builds_running") == 0
    assert (scrape.value("trtd_engine_build_seconds_total") > 0) == bool(built)
    assert scrape.value("trtd_model_state", model="demo", state="ready", backend="onnxruntime-optimized") == 1


def test_a_port_in_use_stops_the_start_with_a_clear_error(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = dict(os.environ, TRTD_RUNTIME_DIR=str(tmp_path / "run"))
        out = subprocess.run([sys.executable, "-m", "trtd.daemon", "serve", "--endpoint",
                              f"ipc://{tmp_path / 'd.sock'}", "--metrics", f"127.0.0.1:{port}"],
                             capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 3, out.stderr
    assert f'metrics = "127.0.0.1:{port}": cannot listen: port {port} is in use' in out.stderr
    assert not (tmp_path / "d.sock").exists()  # it never served


def test_an_address_it_cannot_have_is_a_clear_error(tmp_path):
    env = dict(os.environ, TRTD_RUNTIME_DIR=str(tmp_path / "run"))
    out = subprocess.run([sys.executable, "-m", "trtd.daemon", "serve", "--endpoint",
                          f"ipc://{tmp_path / 'd.sock'}", "--metrics", "192.0.2.1:9464"],
                         capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 3 and "192.0.2.1 is not an address of this machine" in out.stderr, out.stderr


@pytest.mark.parametrize("text, fragment", [
    (":9464", "must name the host"),
    ("9464", "no port"),
    ("127.0.0.1", "no port"),
    ("127.0.0.1:0", "port must be 1..65535"),
    ("127.0.0.1:99999", "port must be 1..65535"),
    ("http://127.0.0.1:9464", "without a scheme"),
    ("127.0.0.1:9464/metrics", "without a scheme or path"),
    ("::1:9464", "goes in brackets"),
    ("[::g]:9464", "not an IPv6 address"),
    ("*:9464", "not a host name"),
])
def test_bad_addresses_are_refused_with_the_form_expected(text, fragment):
    with pytest.raises(MetricsAddressError, match=fragment.replace(".", r"\.")):
        parse_metrics_address(text)


def test_good_addresses_and_which_are_loopback():
    assert parse_metrics_address("127.0.0.1:9464").loopback
    assert parse_metrics_address("localhost:9464").loopback
    six = parse_metrics_address("[::1]:9464")
    assert six.loopback and str(six) == "[::1]:9464" and six.url("/readyz") == "http://[::1]:9464/readyz"
    assert not parse_metrics_address("0.0.0.0:9464").loopback
    assert not parse_metrics_address("metrics.example:9464").loopback  # a name: not known to be
    assert exposure_warning("127.0.0.1:9464") is None and exposure_warning("") is None
    assert "not a loopback address" in exposure_warning("0.0.0.0:9464")


def test_the_flag_and_the_key_are_checked(tmp_path):
    out = subprocess.run([sys.executable, "-m", "trtd.daemon", "serve", "--metrics", ":9464"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "must name the host" in out.stderr
    config = tmp_path / "c.toml"
    config.write_text('log_format = "yaml"\nmetrics = "9464"\n')
    out = subprocess.run([sys.executable, "-m", "trtd.daemon", "config", "check", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert f"{config}:2: metrics must be HOST:PORT, got '9464' (no port)" in out.stdout
    assert f'{config}:1: log_format must be "text" or "json", got \'yaml\'' in out.stdout
    config.write_text('metrics = "0.0.0.0:9464"\n')
    out = subprocess.run([sys.executable, "-m", "trtd.daemon", "config", "check", str(config)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and f"{config}:1: warning: metrics = \"0.0.0.0:9464\" is not a loopback" in out.stdout
