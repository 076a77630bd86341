"""Access control against a real daemon, with real OS users (CI runs as root and creates them).

A client running as another user is allowed in when it is in the daemon's
`group`, refused otherwise; privileged ops need the admin token, which group
members cannot read unless they are in `admin_group`; a TCP endpoint refuses
requests without its connection token.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import numpy as np
import pytest

from daemon_process import raw_call, run_threads, start_daemon, wait_until
from trtd.protocol.endpoint import ADMIN_TOKEN, CONNECTION_TOKEN, ipc_path, token_path
from trtd.sdk import AccessDenied, Client, DaemonNotRunning, DaemonRestarted, DaemonStopping

X = np.ones((1, 64), np.float32)

needs_root = pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() != 0 or shutil.which("useradd") is None,
    reason="creating OS users needs root and useradd (CI runs as root)")


def _run(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


@pytest.fixture(scope="module")
def accounts():
    """A group, a user in it and a user outside it; removed afterwards."""
    if sys.platform == "win32" or os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("creating OS users needs root and useradd (CI runs as root)")
    tag = secrets.token_hex(3)
    group, member, outsider = f"trtdg{tag}", f"trtdm{tag}", f"trtdo{tag}"
    _run("groupadd", group)
    try:
        _run("useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-G", group, member)
        _run("useradd", "-M", "-N", "-s", "/usr/sbin/nologin", outsider)
        yield {"group": group, "member": member, "outsider": outsider}
    finally:
        for user in (member, outsider):
            subprocess.run(["userdel", user], capture_output=True)
        subprocess.run(["groupdel", group], capture_output=True)


@pytest.fixture
def open_dir():
    """A folder others may traverse (pytest's own tmp folders are root-only)."""
    path = Path(tempfile.mkdtemp(prefix="trtd-access-", dir="/tmp"))
    path.chmod(0o711)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# Runs as another user: tries each step, reports what happened as JSON.
_AS_USER = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    from trtd.sdk import Client, TrtdError
    endpoint, steps = sys.argv[1], sys.argv[2].split(",")
    out = {}
    def attempt(step, fn):
        try:
            out[step] = ["ok", fn()]
        except TrtdError as exc:
            out[step] = [type(exc).__name__, exc.code, str(exc)]
        except OSError as exc:
            out[step] = [type(exc).__name__, exc.errno, str(exc)]
    c = None
    def connect():
        global c
        c = Client(endpoint, timeout=10, connect_timeout=2)
        return c.client_id
    attempt("connect", connect)
    if c is not None:
        if "infer" in steps:
            attempt("infer", lambda: c.infer("demo", np.ones((1, 64), np.float32)).tolist())
        if "unload" in steps:
            attempt("unload", lambda: c.unload("demo") or "done")
    for path in sys.argv[3:]:
        attempt("read " + path, lambda: len(open(path).read()))
    if c is not None:
        c.close()
    print(json.dumps(out))
""")


def _reachable_by_others(path: str) -> bool:
    p = Path(path).resolve()
    return all(os.stat(folder).st_mode & stat.S_IXOTH for folder in p.parents) and \
        bool(os.stat(p).st_mode & stat.S_IROTH)


def _interpreter_for_others() -> tuple[str, str]:
    """(python, prelude): an interpreter another user may run, and code that puts this
    environment's packages (trtd included, editable or not) on its path.

    CI's Python often lives under /root (mode 0700): then the system's Python of the
    same version runs, with this virtual environment's site-packages added."""
    import sysconfig

    purelib = sysconfig.get_paths()["purelib"]
    prelude = f"import site; site.addsitedir({purelib!r})\n"
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for candidate in (sys.executable, f"/usr/bin/{version}", f"/usr/local/bin/{version}"):
        if os.path.exists(candidate) and _reachable_by_others(candidate) and \
                _reachable_by_others(purelib):
            return candidate, prelude
    pytest.skip(f"no {version} interpreter that other users may run (this one is {sys.executable})")


def script_as(user: str, script: str, *args: str, env: dict | None = None) -> subprocess.Popen:
    """A Python script started as `user` (its groups, uid and gid; HOME=/tmp, no XDG_ paths),
    with this environment's packages on its path; stdout and stderr piped, as text."""
    import grp
    import pwd

    pw = pwd.getpwnam(user)
    groups = [g.gr_gid for g in grp.getgrall() if user in g.gr_mem]

    def drop():
        os.setgroups(groups)
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)

    clean = {k: v for k, v in os.environ.items() if not k.startswith("XDG_")}
    clean.update(HOME="/tmp", **(env or {}))
    python, prelude = _interpreter_for_others()
    return subprocess.Popen([python, "-c", prelude + script, *args], preexec_fn=drop, env=clean, cwd="/",
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def json_as(user: str, script: str, *args: str, timeout: float = 60, env: dict | None = None):
    """script_as, waited for: its stdout read as JSON (a failure shows its stderr)."""
    proc = script_as(user, script, *args, env=env)
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return json.loads(out)


def as_user(user: str, endpoint: str, steps: str = "infer", read: tuple[str, ...] = (),
            env: dict | None = None) -> dict:
    return json_as(user, _AS_USER, endpoint, steps, *read, env=env)


def _expected() -> list:
    from trtd.daemon.backends.onnxruntime import create_session
    from trtd.daemon.builtin.onnx_models import builtin_model_path

    return create_session(builtin_model_path("demo")).run(None, {"x": X})[0].tolist()


def _serve(folder: Path, config: str, *extra: str):
    path = folder / "d.toml"
    path.write_text(config + "[models.demo]\npath = \"builtin:demo\"\n")
    return start_daemon(folder / "sock", "--config", str(path), *extra)


def _mode(path) -> tuple[int, int]:
    st = os.stat(path)
    return stat.S_IMODE(st.st_mode), st.st_gid


# -- POSIX users -----------------------------------------------------------------------------------


@needs_root
def test_owner_only_by_default(accounts, open_dir):
    d = _serve(open_dir, "")
    try:
        sock = ipc_path(d.endpoint)
        with Client(d.endpoint) as c:
            region = c.lease(4096)
            assert _mode(f"/dev/shm/{region.name}")[0] == 0o600
            c.release(region)
        assert _mode(sock)[0] == 0o600
        assert _mode(token_path(d.endpoint, ADMIN_TOKEN))[0] == 0o600
        for user in ("member", "outsider"):
            result = as_user(accounts[user], d.endpoint)
            assert result["connect"][0] == "AccessDenied", result
            assert "may not" in result["connect"][2]
    finally:
        assert d.stop() == 0


@needs_root
def test_group_members_may_use_models_but_not_administer_them(accounts, open_dir):
    import grp

    gid = grp.getgrnam(accounts["group"]).gr_gid
    d = _serve(open_dir, f"group = \"{accounts['group']}\"\n")
    try:
        sock = ipc_path(d.endpoint)
        admin_file = token_path(d.endpoint, ADMIN_TOKEN)
        assert _mode(sock) == (0o660, gid) and _mode(sock.parent) == (0o750, gid)
        assert _mode(admin_file)[0] == 0o600
        with Client(d.endpoint) as c:
            region = c.lease(4096)
            # The owner's own region is not the group's: the daemon uses it in place, and a
            # member that could truncate it mid-run would crash the daemon (a member's own
            # regions are the group's, and guarded: tests/test_guarded_regions.py).
            assert _mode(f"/dev/shm/{region.name}")[0] == 0o600
            # The outsider cannot map a region, even knowing its name.
            probe = as_user(accounts["outsider"], d.endpoint, read=(f"/dev/shm/{region.name}",))
            assert probe[f"read /dev/shm/{region.name}"][0] == "PermissionError"
            c.release(region)

        member = as_user(accounts["member"], d.endpoint, "infer,unload", read=(str(admin_file),))
        assert member["connect"][0] == "ok", member
        np.testing.assert_allclose(member["infer"][1], _expected(), atol=1e-6)
        assert member["unload"][:2] == ["AccessDenied", "UNAUTHORIZED"], member
        assert str(admin_file) in member["unload"][2] and "may not read" in member["unload"][2]
        assert member[f"read {admin_file}"][0] == "PermissionError"

        outsider = as_user(accounts["outsider"], d.endpoint)
        assert outsider["connect"][0] == "AccessDenied", outsider
        assert "group" in outsider["connect"][2]

        with Client(d.endpoint) as c:  # the model is still there; the owner may unload it
            assert c.infer("demo", X).shape == (1, 10)
            c.unload("demo")
            assert c.models() == []
    finally:
        assert d.stop() == 0


@needs_root
def test_admin_group_members_may_administer(accounts, open_dir):
    g = accounts["group"]
    d = _serve(open_dir, f"group = \"{g}\"\nadmin_group = \"{g}\"\n")
    try:
        assert _mode(token_path(d.endpoint, ADMIN_TOKEN))[0] == 0o640
        member = as_user(accounts["member"], d.endpoint, "infer,unload")
        assert member["unload"] == ["ok", "done"], member
        with Client(d.endpoint) as c:
            assert c.models() == []
    finally:
        assert d.stop() == 0


def test_unknown_group_is_a_config_error(tmp_path):
    config = tmp_path / "g.toml"
    config.write_text("group = \"no-such-group-trtd\"\n")
    out = subprocess.run([sys.executable, "-m", "trtd.daemon", "serve", "--config", str(config),
                          "--endpoint", f"ipc://{tmp_path}/d.sock"], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 2 and "no such group" in out.stderr and "groupadd" in out.stderr


# -- the admin token -------------------------------------------------------------------------------


@pytest.mark.parametrize("op", [{"op": "shutdown"}, {"op": "unload", "name": "demo"},
                                {"op": "load", "name": "x", "path": "builtin:demo"}])
def test_privileged_ops_refused_without_the_admin_token(tmp_path, op):
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo")
    try:
        for auth in ({}, {"auth": "0" * 32}, {"auth": "é"}):
            reply = raw_call(d.endpoint, {"v": 1, "id": 3, **op, **auth})
            assert reply["ok"] is False and reply["error"]["code"] == "UNAUTHORIZED", reply
            assert reply["error"]["details"]["needs"] == "admin"
        with Client(d.endpoint, admin_token="f" * 32) as c:
            with pytest.raises(AccessDenied, match="privileged"):
                c.unload("demo")
            assert c.infer("demo", X).shape == (1, 10)
        token = token_path(d.endpoint, ADMIN_TOKEN).read_text().strip()
        reply = raw_call(d.endpoint, {"v": 1, "id": 4, **op, "auth": token})
        assert reply["ok"] is True, reply
        if op["op"] == "shutdown":
            assert d.proc.wait(20) == 0
            assert not token_path(d.endpoint, ADMIN_TOKEN).exists()
    finally:
        assert d.stop() == 0


def test_each_start_has_a_new_admin_token(tmp_path):
    tokens = []
    for _ in range(2):
        d = start_daemon(tmp_path, "--model", "demo=builtin:demo")
        tokens.append(token_path(d.endpoint, ADMIN_TOKEN).read_text().strip())
        assert subprocess.run([sys.executable, "-m", "trtd.daemon", "shutdown", "--endpoint",
                               d.endpoint], capture_output=True, text=True, timeout=60).returncode == 0
        assert d.proc.wait(20) == 0
    assert tokens[0] != tokens[1] and all(len(t) == 32 for t in tokens)


def test_cli_admin_commands_pass_the_token(tmp_path):
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo")
    try:
        def trtd(*args, env=None):
            clean = {k: v for k, v in os.environ.items() if k != "TRTD_ADMIN_TOKEN"}
            return subprocess.run([sys.executable, "-m", "trtd.daemon", *args, "--endpoint", d.endpoint],
                                  capture_output=True, text=True, timeout=60, env={**clean, **(env or {})})

        assert trtd("load", "second", "builtin:demo").returncode == 0  # the daemon's own file
        assert trtd("unload", "demo").returncode == 0
        with Client(d.endpoint) as c:
            assert [i.name for i in c.models()] == ["second"]
    finally:
        assert d.stop() == 0


def test_cli_takes_the_admin_token_from_a_file_or_the_environment_never_an_argument(tmp_path):
    """A token on the command line is in /proc/PID/cmdline for every local user to read: the CLI
    refuses --admin-token and takes --admin-token-file or $TRTD_ADMIN_TOKEN, which win over the
    daemon's token file (a wrong one is refused, so it was the one sent)."""
    d = start_daemon(tmp_path, "--model", "demo=builtin:demo", "--model", "second=builtin:demo")
    token = token_path(d.endpoint, ADMIN_TOKEN).read_text().strip()
    right, wrong, empty = tmp_path / "right", tmp_path / "wrong", tmp_path / "empty"
    right.write_text(token + "\n")
    wrong.write_text("0" * 32 + "\n")
    empty.write_text("\n")
    try:
        def trtd(*args, env=None):
            clean = {k: v for k, v in os.environ.items() if k != "TRTD_ADMIN_TOKEN"}
            return subprocess.run([sys.executable, "-m", "trtd.daemon", *args, "--endpoint", d.endpoint],
                                  capture_output=True, text=True, timeout=60, env={**clean, **(env or {})})

        as_argument = trtd("unload", "demo", "--admin-token", token)
        assert as_argument.returncode == 2
        assert "--admin-token-file" in as_argument.stderr and "TRTD_ADMIN_TOKEN" in as_argument.stderr
        for command in ("load", "unload", "shutdown", "reload"):
            usage = trtd(command, "--help")
            assert "--admin-token-file" in usage.stdout and "TRTD_ADMIN_TOKEN" in usage.stdout, usage

        for refused in (trtd("unload", "demo", "--admin-token-file", str(wrong)),
                        trtd("unload", "demo", env={"TRTD_ADMIN_TOKEN": "0" * 32}),
                        trtd("reload", "--admin-token-file", str(wrong))):
            assert refused.returncode == 1 and "privileged" in refused.stderr, refused.stderr
        for unreadable, why in ((tmp_path / "missing", "no token file"), (empty, "is empty")):
            out = trtd("unload", "demo", "--admin-token-file", str(unreadable))
            assert out.returncode == 1 and why in out.stderr and str(unreadable) in out.stderr, out.stderr

        with Client(d.endpoint) as c:
            assert {i.name for i in c.models()} == {"demo", "second"}  # nothing was unloaded
        assert trtd("unload", "demo", "--admin-token-file", str(right)).returncode == 0
        # The file wins over the environment.
        assert trtd("load", "demo", "builtin:demo", "--admin-token-file", str(right),
                    env={"TRTD_ADMIN_TOKEN": "0" * 32}).returncode == 0
        assert trtd("unload", "second", env={"TRTD_ADMIN_TOKEN": token}).returncode == 0
        with Client(d.endpoint) as c:
            assert [i.name for i in c.models()] == ["demo"]
        assert trtd("shutdown", env={"TRTD_ADMIN_TOKEN": token}).returncode == 0
        assert d.proc.wait(20) == 0
    finally:
        assert d.stop() == 0


# -- TCP endpoints ---------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tcp_daemon(folder: Path, config: str = "", endpoint: str = ""):
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tcp.toml"
    endpoint = endpoint or f"tcp://127.0.0.1:{_free_port()}"
    path.write_text(config + "[models.demo]\npath = \"builtin:demo\"\n")
    runtime = folder / "run"
    d = start_daemon(folder, "--config", str(path), "--endpoint", endpoint, wait=False,
                     env={"TRTD_RUNTIME_DIR": str(runtime)})
    d.endpoint = endpoint
    token_file = token_path_in(runtime, endpoint)
    assert wait_until(lambda: _ready(endpoint, token_file) or not d.alive(), timeout=60), d.log()
    assert d.alive(), d.log()
    return d, runtime


def token_path_in(runtime: Path, endpoint: str, kind: str = CONNECTION_TOKEN) -> Path:
    old = os.environ.get("TRTD_RUNTIME_DIR")
    os.environ["TRTD_RUNTIME_DIR"] = str(runtime)
    try:
        return token_path(endpoint, kind)
    finally:
        if old is None:
            del os.environ["TRTD_RUNTIME_DIR"]
        else:
            os.environ["TRTD_RUNTIME_DIR"] = old


def _ready(endpoint: str, token_file: Path) -> bool:
    """True once the daemon at `endpoint` accepts the token in `token_file` and has loaded its
    models. (A SIGKILLed daemon leaves its file behind: until its successor writes a new one,
    the old token is refused.)"""
    try:
        token = token_file.read_text().strip()
        reply = raw_call(endpoint, {"v": 1, "op": "status", "id": 1, "auth": token}, timeout=0.5)
    except (FileNotFoundError, TimeoutError):
        return False
    return reply["ok"] and not any(m["state"] == "loading" for m in reply["result"]["models"])


def test_tcp_endpoint_refuses_requests_without_the_connection_token(tmp_path, monkeypatch):
    d, runtime = _tcp_daemon(tmp_path)
    try:
        token_file = token_path_in(runtime, d.endpoint)
        assert _mode(token_file)[0] == 0o600
        token = token_file.read_text().strip()
        for message in ({"op": "status"}, {"op": "hello", "client_pid": os.getpid()},
                        {"op": "models", "auth": "0" * 32}):
            reply = raw_call(d.endpoint, {"v": 1, "id": 2, **message})
            assert reply["error"]["code"] == "UNAUTHORIZED", reply
            assert str(token_file) in reply["error"]["message"]
        assert raw_call(d.endpoint, {"v": 1, "id": 2, "op": "status", "auth": token})["ok"]
        # The SDK finds the file through the same runtime directory.
        monkeypatch.setenv("TRTD_RUNTIME_DIR", str(runtime))
        with Client(d.endpoint) as c:
            np.testing.assert_allclose(c.infer("demo", X), np.array(_expected()), atol=1e-6)
            c.unload("demo")  # the admin token file is in the same folder
        monkeypatch.setenv("TRTD_RUNTIME_DIR", str(tmp_path / "elsewhere"))
        with pytest.raises(AccessDenied, match="connection token"):
            Client(d.endpoint, connect_timeout=2)
    finally:
        assert d.stop() == 0
    assert not token_file.exists()


def test_tcp_clients_recover_after_the_daemon_is_replaced(tmp_path, monkeypatch):
    """A restarted TCP daemon has a new connection token: the clients re-read it, register
    again and carry on, as on ipc (test_daemon_lifecycle, test_hardening)."""
    d, runtime = _tcp_daemon(tmp_path)
    monkeypatch.setenv("TRTD_RUNTIME_DIR", str(runtime))
    token_file = token_path_in(runtime, d.endpoint)
    old_token = token_file.read_text().strip()
    copying = Client(d.endpoint, timeout=10)
    other = Client(d.endpoint, timeout=10)
    d2 = None
    try:
        expected = copying.infer("demo", X)
        first_daemon = copying.daemon_id
        threads = [copying.model("demo")]
        d.kill()
        # Whether the client's ZMQ I/O thread has seen the connection close yet decides which
        # error says "gone": closed under the request (DaemonStopping) or refused (DaemonNotRunning).
        # The timeout only bounds the noticing (a DaemonTimeout would fail the test).
        with pytest.raises((DaemonNotRunning, DaemonStopping)):
            copying.infer("demo", X, timeout=5)
        with pytest.raises(DaemonNotRunning, match="trtd serve"):  # noticed now, by either path
            copying.infer("demo", X, timeout=0.5)
        d2, _ = _tcp_daemon(tmp_path, endpoint=d.endpoint)
        assert token_file.read_text().strip() != old_token

        # The copying path re-registers and leases anew by itself, from several threads at once.
        results = []
        run_threads(lambda h: results.append(h(X)), [(threads[0],)] * 3)
        for y in results:
            np.testing.assert_array_equal(y, expected)
        assert copying.daemon_id != first_daemon
        # Elsewhere the restart is reported once (leases were lost), then calls work.
        with pytest.raises(DaemonRestarted):
            other.lease(4096)
        region = other.lease(4096)
        other.release(region)
        assert other.status().clients == 2  # one registration per client, not per thread
        other.unload("demo")  # privileged: the new admin token is read as before
        assert other.models() == []
    finally:
        copying.close()
        other.close()
        if d2 is not None:
            assert d2.stop() == 0


@needs_root
def test_tcp_connection_token_readable_by_the_group_only(accounts, open_dir):
    d, runtime = _tcp_daemon(open_dir / "tcp", f"group = \"{accounts['group']}\"\n")
    try:
        (open_dir / "tcp").chmod(0o711)
        env = {"TRTD_RUNTIME_DIR": str(runtime)}
        member = as_user(accounts["member"], d.endpoint, env=env)
        np.testing.assert_allclose(member["infer"][1], _expected(), atol=1e-6)
        outsider = as_user(accounts["outsider"], d.endpoint, env=env)
        assert outsider["connect"][:2] == ["AccessDenied", "UNAUTHORIZED"], outsider
    finally:
        assert d.stop() == 0


def test_clients_find_the_system_services_tokens(tmp_path, monkeypatch):
    """A client of the system service (the Windows service's TCP endpoint has no path to put the
    tokens beside) finds its token files in the service's runtime folder when its own has none."""
    import trtd.protocol.endpoint as endpoint_module

    service_run = tmp_path / "service"
    d, runtime = _tcp_daemon(service_run)  # the "service": its runtime folder is service/run
    try:
        # This user's own runtime folder holds no token; the service's folder is where it is.
        monkeypatch.setenv("TRTD_RUNTIME_DIR", str(tmp_path / "mine"))
        monkeypatch.setattr(endpoint_module, "SYSTEM_SOCKET", runtime / "trtd.sock")
        assert endpoint_module.find_token(d.endpoint, CONNECTION_TOKEN) == token_path_in(runtime, d.endpoint)
        with Client(d.endpoint, timeout=30) as c:
            assert c.infer("demo", np.ones((1, 64), np.float32)).shape == (1, 10)
            c.unload("demo")  # privileged: the admin token was found there too
        monkeypatch.setattr(endpoint_module, "SYSTEM_SOCKET", tmp_path / "nowhere" / "trtd.sock")
        with pytest.raises(AccessDenied):
            Client(d.endpoint, timeout=10).models()
    finally:
        d.stop()


def test_windows_token_files_get_an_explicit_protected_dacl():
    from trtd.daemon.system.platform import token_file_sddl

    assert token_file_sddl() == "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;OW)"
    assert token_file_sddl(["IU", "S-1-5-21-1-2-3-1001"]).endswith("(A;;FR;;;IU)(A;;FR;;;S-1-5-21-1-2-3-1001)")
    with pytest.raises(ValueError):
        token_file_sddl(["IU)(A;;FA;;;WD"])
