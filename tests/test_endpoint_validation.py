"""Endpoints are checked before anything binds: libzmq takes tcp://HOST:99999 and listens on a
random port instead, so a daemon that starts must listen where it was told."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from trtd.daemon.commands.cli import main
from trtd.daemon.config.settings import ConfigError, config_problems, DaemonConfig, load_config
from trtd.daemon.config.check import check_file
from trtd.protocol.endpoint import IPC_PATH_MAX_BYTES, EndpointError, validate_endpoint

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="ipc paths are POSIX ones")


@pytest.mark.parametrize("url", [
    "ipc:///run/trtd/trtd.sock",
    "ipc:///" + "s" * (IPC_PATH_MAX_BYTES - 1),  # exactly at the limit
    "tcp://127.0.0.1:1",
    "tcp://127.0.0.1:65535",
    "tcp://localhost:47810",
    "tcp://0.0.0.0:47810",
])
def test_endpoints_a_daemon_can_listen_on_are_returned_unchanged(url):
    assert validate_endpoint(url) == url


@pytest.mark.parametrize("url, says", [
    ("tcp://127.0.0.1:99999", "the port must be a number 1..65535, got '99999'"),
    ("tcp://127.0.0.1:65536", "1..65535"),
    ("tcp://127.0.0.1:0", "random port, which clients cannot find"),
    ("tcp://127.0.0.1:*", "random port"),
    ("tcp://127.0.0.1:http", "the port must be a number"),
    ("tcp://*:47810", "host '*' is not an address a client can connect to"),
    ("tcp://127.0.0.1", "needs a host and a port"),
    ("tcp://:47810", "needs a host and a port"),
    ("tcp://[::1]:47810", "IPv6 addresses are not supported"),
    ("tcp://a b:47810", "is not a host name or IPv4 address"),
    ("tcp://ünï:80", "is not a host name or IPv4 address"),  # letters, but not ASCII ones
    ("tcp://١٢٧.0.0.1:80", "is not a host name or IPv4 address"),  # Arabic-Indic digits
    ("http://127.0.0.1:47810", "the scheme must be ipc:// (e.g."),
    ("inproc://trtd", "the scheme must be ipc://"),
    ("/run/trtd/trtd.sock", "the scheme must be ipc://"),
    ("ipc://", "names no socket file"),
    ("ipc://@trtd", "abstract socket names are not supported"),
    ("ipc://trtd.sock", "must be absolute"),
    ("ipc:///" + "s" * IPC_PATH_MAX_BYTES, f"is {IPC_PATH_MAX_BYTES + 1} bytes; this OS allows at most "
                                           f"{IPC_PATH_MAX_BYTES}"),
])
def test_bad_endpoints_are_refused_with_what_to_write_instead(url, says):
    with pytest.raises(EndpointError) as e:
        validate_endpoint(url)
    assert says in str(e.value) and repr(url) in str(e.value)
    assert isinstance(e.value, ValueError)  # callers that catch ValueError keep working


def test_the_sun_path_limit_counts_bytes_not_characters():
    # "é" is two bytes in UTF-8: the kernel's limit is on bytes.
    with pytest.raises(EndpointError, match="bytes"):
        validate_endpoint("ipc:///" + "é" * (IPC_PATH_MAX_BYTES // 2 + 1))  # ~55 characters


def test_config_check_reports_a_bad_endpoint_on_its_line(tmp_path):
    path = tmp_path / "trtd.toml"
    path.write_text('# where\nendpoint = "tcp://127.0.0.1:99999"\n')
    (problem,) = check_file(path)
    assert problem.line == 2 and "1..65535" in problem.message
    with pytest.raises(ConfigError, match="1..65535"):
        load_config(path)


def test_trtd_endpoint_is_checked_when_the_config_names_none(monkeypatch):
    monkeypatch.setenv("TRTD_ENDPOINT", "tcp://127.0.0.1:0")
    (problem,) = config_problems(DaemonConfig())
    assert problem.startswith("$TRTD_ENDPOINT") and "random port" in problem
    # An endpoint in the config wins over the variable, so only that one is checked.
    assert config_problems(DaemonConfig(endpoint="tcp://127.0.0.1:47810")) == []


def test_a_default_endpoint_too_long_for_a_socket_names_the_folder_to_change(monkeypatch, tmp_path):
    monkeypatch.delenv("TRTD_ENDPOINT", raising=False)
    monkeypatch.setenv("TRTD_RUNTIME_DIR", str(tmp_path / ("r" * IPC_PATH_MAX_BYTES)))
    (problem,) = config_problems(DaemonConfig())
    assert problem.startswith("the default endpoint") and "TRTD_RUNTIME_DIR" in problem


def test_a_relative_trtd_runtime_dir_is_named_as_the_cause_and_the_fix(monkeypatch, tmp_path, capsys):
    import trtd.protocol.endpoint as endpoint
    from trtd.sdk import Client, InvalidEndpoint

    monkeypatch.delenv("TRTD_ENDPOINT", raising=False)
    monkeypatch.setattr(endpoint, "SYSTEM_SOCKET", tmp_path / "no-system-service.sock")
    monkeypatch.setenv("TRTD_RUNTIME_DIR", "rel")
    monkeypatch.chdir(tmp_path)
    says = f"TRTD_RUNTIME_DIR='rel' is a relative path, so the endpoint in it, 'ipc://rel/trtd.sock', is relative too"
    fix = f"set TRTD_RUNTIME_DIR to an absolute folder, e.g. TRTD_RUNTIME_DIR={tmp_path / 'rel'}, or unset it"
    with pytest.raises(InvalidEndpoint) as e:  # the client
        Client()
    assert says in str(e.value) and fix in str(e.value), e.value
    (problem,) = config_problems(DaemonConfig())  # the daemon: `serve` and `config check`
    assert problem.startswith("the default endpoint") and says in problem and fix in problem
    assert main(["status"]) == 2 and says in capsys.readouterr().err
    # An ipc path the user wrote is still refused for itself.
    with pytest.raises(EndpointError, match="the socket path must be absolute"):
        validate_endpoint("ipc://elsewhere/trtd.sock")


def test_serve_refuses_a_bad_endpoint_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["serve", "--endpoint", "tcp://127.0.0.1:99999"])
    assert e.value.code == 2
    assert "argument --endpoint: endpoint 'tcp://127.0.0.1:99999': the port must be" in capsys.readouterr().err


def test_status_refuses_a_bad_endpoint_flag(capsys):
    with pytest.raises(SystemExit) as e:
        main(["status", "--endpoint", "udp://127.0.0.1:5000"])
    assert e.value.code == 2 and "the scheme must be ipc://" in capsys.readouterr().err


def test_a_daemon_given_a_bad_trtd_endpoint_exits_instead_of_listening_elsewhere(tmp_path):
    # Before the check, this daemon served on a random port and never exited: the timeout
    # below would have failed the test.
    env = dict(os.environ, TRTD_ENDPOINT="tcp://127.0.0.1:99999", TRTD_RUNTIME_DIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-m", "trtd.daemon", "serve", "--model", "demo=builtin:demo"],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 2, run
    assert "$TRTD_ENDPOINT (the config sets no endpoint): endpoint 'tcp://127.0.0.1:99999'" in run.stderr
