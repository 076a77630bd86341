"""`trtd config check`: every problem, each with the line it is on."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys

import pytest

from trtd.daemon.config.settings import ConfigError, load_config
from trtd.daemon.config.check import check_file, locate_keys

BAD = """\
# a comment
endpoint = "ipc:///tmp/x.sock"
reclaim_intervall_s = 2
log_level = "LOUD"
drain_timeout_s = -1

[models.seg]
path = "missing.onnx"
max_batch = -3
inputs = ["x:-1,3,0",
  "y:1,2:float32"]
backend = "tensorflow"

[models.demo]
path = "builtin:demo"
profiles = ["x:1x64,8x64"]
max_queue = "a"

[models."odd.name"]
path = 'builtin:nope'
"""


def test_every_problem_with_its_line(tmp_path):
    path = tmp_path / "trtd.toml"
    path.write_text(BAD)
    problems = [(p.line, p.message) for p in check_file(path)]
    expect = [
        (3, "unknown key 'reclaim_intervall_s'; did you mean 'reclaim_interval_s'?"),
        (4, "log_level must be one of"),
        (5, "drain_timeout_s must be >= 0"),
        (8, f"[models.seg] model file {tmp_path / 'missing.onnx'} does not exist"),
        (9, "max_batch must be 0..1048576, got -3"),
        (10, "input spec 'x:-1,3,0': dims must be positive"),
        (12, "unknown backend 'tensorflow'"),
        (16, "profile 'x:1x64,8x64' must be NAME:MIN,OPT,MAX"),
        (17, "'max_queue' must be int, got 'a'"),
        (20, "[models.odd.name] unknown built-in model 'nope'"),
    ]
    for line, text in expect:
        assert any(l == line and text in m for l, m in problems), (line, text, problems)
    assert len(problems) == len(expect), problems


def test_syntax_errors_carry_the_parsers_line(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text('a = 1\n[models.x]\npath = "builtin:demo"\nthis is = not toml\n')
    (problem,) = check_file(path)
    assert problem.line == 4 and "not valid TOML" in problem.message


def test_locate_keys_handles_multiline_values_and_quoted_keys():
    text = ('a = """\nb = 1\n"""\n[t]\nx = [\n  "[not.a.table]",\n]\n"q.k" = 1\n'
            "[[arr]]\nz = 1 # c\n")
    where = locate_keys(text)
    assert where[("a",)] == 1 and ("b",) not in where
    assert where[("t",)] == 4 and where[("t", "x")] == 5 and where[("t", "q.k")] == 8
    assert ("not", "a", "table") not in where and where[("arr", "z")] == 10


def test_a_good_config_passes_and_the_command_says_so(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"")
    path = tmp_path / "ok.toml"
    path.write_text('drain_timeout_s = 5\n[models.m]\npath = "m.onnx"\ninputs = ["x:-1,3:float32"]\n'
                    '[models.demo]\npath = "builtin:demo"\n')
    assert check_file(path) == []
    load_config(path)  # and the daemon accepts it
    run = subprocess.run([sys.executable, "-m", "trtd.daemon", "config", "check", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and "OK" in run.stdout


def test_the_command_lists_problems_as_path_line_message(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(BAD)
    run = subprocess.run([sys.executable, "-m", "trtd.daemon", "config", "check", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 1
    assert f"{path}:3: unknown key 'reclaim_intervall_s'" in run.stdout


def test_missing_file(tmp_path):
    (problem,) = check_file(tmp_path / "none.toml")
    assert problem.line == 0 and "does not exist" in problem.message


def test_group_key_is_checked_with_its_line(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text('# access\n\ngroup = "no-such-group-trtd-test"\n')
    with pytest.raises(ConfigError, match="no such group"):
        load_config(path)
    (problem,) = check_file(path)
    assert problem.line == 3 and "no such group" in problem.message
    path.write_text('group = "root"\n')
    assert check_file(path) == []


def _config_check(path):
    return subprocess.run([sys.executable, "-m", "trtd.daemon", "config", "check", str(path)],
                          capture_output=True, text=True, timeout=60)


def test_every_group_problem_is_reported_at_once(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text('group = "no-such-group-trtd-a"\nadmin_group = "no-such-group-trtd-b"\n'
                    'drain_timeout_s = -1\n')
    problems = check_file(path)
    assert [(p.line, p.severity) for p in problems] == [(1, "error"), (2, "error"), (3, "error")]
    assert 'group = "no-such-group-trtd-a": no such group' in problems[0].message
    assert 'admin_group = "no-such-group-trtd-b": no such group' in problems[1].message
    assert "drain_timeout_s must be >= 0" in problems[2].message
    # The daemon refuses it naming all three, too.
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert all(key in str(e.value) for key in ('"no-such-group-trtd-a"', '"no-such-group-trtd-b"',
                                               "drain_timeout_s"))
    run = _config_check(path)
    assert run.returncode == 1 and run.stdout.count("no such group") == 2, run


@pytest.fixture
def admin_accounts():
    """Groups `users` (one member) and `admins` (one member, not in `users`); removed afterwards."""
    if sys.platform == "win32" or os.geteuid() != 0 or shutil.which("useradd") is None:
        pytest.skip("creating OS users needs root and useradd (CI runs as root)")
    tag = secrets.token_hex(3)
    users, admins, user, admin = f"trtdu{tag}", f"trtda{tag}", f"trtdm{tag}", f"trtdx{tag}"
    made_groups, made_users = [], []
    try:
        for group in (users, admins):
            subprocess.run(["groupadd", group], check=True, capture_output=True)
            made_groups.append(group)
        for name, group in ((user, users), (admin, admins)):
            subprocess.run(["useradd", "-M", "-N", "-s", "/usr/sbin/nologin", "-G", group, name],
                           check=True, capture_output=True)
            made_users.append(name)
        yield {"users": users, "admins": admins, "user": user, "admin": admin}
    finally:
        for name in made_users:
            subprocess.run(["userdel", name], capture_output=True)
        for group in made_groups:
            subprocess.run(["groupdel", group], capture_output=True)


def test_admins_who_cannot_reach_the_socket_are_a_warning(tmp_path, admin_accounts):
    a = admin_accounts
    path = tmp_path / "a.toml"
    path.write_text(f'group = "{a["users"]}"\nadmin_group = "{a["admins"]}"\n')
    (problem,) = check_file(path)
    assert problem.line == 2 and problem.severity == "warning"
    assert f'{a["admin"]} cannot reach the socket' in problem.message
    assert f'usermod -aG {a["users"]} USER' in problem.message
    assert load_config(path).admin_group == a["admins"]  # the daemon starts with it
    run = _config_check(path)
    assert run.returncode == 0, run
    assert f"{path}:2: warning: admin_group" in run.stdout and "OK (1 warning(s))" in run.stdout
    # Without `group`, the folder is the daemon user's only: no admin reaches it.
    path.write_text(f'admin_group = "{a["admins"]}"\n')
    (problem,) = check_file(path)
    assert problem.severity == "warning" and "0700" in problem.message
    # Once the admin is in `group` too, nothing to say.
    subprocess.run(["usermod", "-aG", a["users"], a["admin"]], check=True, capture_output=True)
    path.write_text(f'group = "{a["users"]}"\nadmin_group = "{a["admins"]}"\n')
    assert check_file(path) == []


@pytest.mark.parametrize("scope", ["user", "system"])
def test_config_paths_command(scope):
    run = subprocess.run([sys.executable, "-m", "trtd.daemon", "config", "paths"],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and scope in run.stdout


def test_a_device_is_not_a_model_file(tmp_path):
    from pathlib import Path

    from trtd.daemon.config.settings import model_file_problem

    assert "not a regular file or a named pipe" in model_file_problem(Path("/dev/zero"))
    assert "is a directory" in model_file_problem(tmp_path)
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert model_file_problem(tmp_path / "m.onnx") is None


# -- serve reports what config check reports ---------------------------------------------------------

SERVE_BAD = """\
endpoint = "tcp://127.0.0.1:99999"
reclaim_intervall_s = 2

[models.a]
path = "builtin:demo"
backend = "tensort"
max_batch = -1
"""


def test_an_unknown_backend_gets_a_suggestion(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text('[models.a]\npath = "builtin:demo"\nbackend = "tensort"\n')
    (problem,) = check_file(path)
    assert problem.line == 3
    assert "unknown backend 'tensort'; did you mean 'tensorrt'?" in problem.message


def test_the_load_op_backend_error_suggests_too():
    from trtd.daemon.backends import BackendError
    from trtd.daemon.config.settings import ModelConfig
    from trtd.daemon.running.serving import plan_serving

    with pytest.raises(BackendError, match="did you mean 'torch'"):
        plan_serving(ModelConfig(name="a", path="a.pt", backend="torhc"))


def test_the_daemon_refuses_a_file_with_every_line_config_check_prints(tmp_path):
    from trtd.daemon.config.check import ConfigFileError

    path = tmp_path / "bad.toml"
    path.write_text(SERVE_BAD)
    with pytest.raises(ConfigFileError) as e:
        load_config(path)  # what serve, reload and the services load files with
    assert str(e.value) == "\n".join(p.format(path) for p in check_file(path))
    assert len(e.value.problems) == 4


def test_serve_reports_exactly_what_config_check_reports(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(SERVE_BAD)
    check = _config_check(path)
    reported = [line for line in check.stdout.splitlines() if line.startswith(f"{path}:")]
    assert len(reported) == 4, check.stdout
    env = dict(os.environ, TRTD_RUNTIME_DIR=str(tmp_path / "run"))
    serve = subprocess.run([sys.executable, "-m", "trtd.daemon", "serve", "--config", str(path)],
                           capture_output=True, text=True, timeout=120, env=env)
    assert serve.returncode == 2, serve
    assert [line for line in serve.stderr.splitlines() if line.startswith(f"{path}:")] == reported
    assert f"{path}:6: [models.a] unknown backend 'tensort'; did you mean 'tensorrt'?" in serve.stderr
    assert f"trtd config check {path}" in serve.stderr.splitlines()[-1]


def test_a_missing_model_file_does_not_stop_serve_and_is_logged_with_its_line(tmp_path):
    from daemon_process import start_daemon
    from trtd.sdk import Client

    path = tmp_path / "m.toml"
    path.write_text('[models.demo]\npath = "builtin:demo"\n\n[models.later]\npath = "later.onnx"\n')
    (problem,) = check_file(path)
    assert problem.line == 5 and problem.model_unavailable and not problem.stops_daemon
    assert _config_check(path).returncode == 1  # the check still fails: the model will not load
    d = start_daemon(tmp_path, "--config", str(path))
    try:
        with Client(d.endpoint) as c:
            assert {m.name: m.state for m in c.models()} == {"demo": "ready", "later": "failed"}
        logged = next(line for line in d.log().splitlines() if f"{path}:5:" in line)
        assert " ERROR " in logged and str(tmp_path / "later.onnx") in logged
        assert "trtd reload" in logged
    finally:
        assert d.stop() == 0, d.log()


@pytest.mark.parametrize("model, message", [
    ('backend = "torch"\ndevice = -1\ncuda_graphs = true\ninputs = ["x:-1,64"]\n',
     'cuda_graphs needs backend = "torch" or "tensorrt" on'),
    ('backend = "onnxruntime"\ncuda_graphs = true\ndevice = 0\n', 'cuda_graphs needs backend = "torch" or "tensorrt" on'),
    ('backend = "torch"\ndevice = 0\ngraph_batches = [1, 8]\ninputs = ["x:-1,64"]\n',
     "graph_batches is set but cuda_graphs is not"),
    ('backend = "torch"\ndevice = 0\ncuda_graphs = true\ngraph_batches = [0, 8]\ninputs = ["x:-1,64"]\n',
     "graph_batches must be batch sizes 1.."),
    ('backend = "torch"\ndevice = 0\ncuda_graphs = true\ngraph_batches = ["1"]\ninputs = ["x:-1,64"]\n',
     "'graph_batches' must be a list of integers"),
])
def test_cuda_graph_settings_are_checked_with_their_line(tmp_path, model, message):
    path = tmp_path / "g.toml"
    path.write_text(f'[models.m]\npath = "builtin:demo"\n{model}')
    problems = check_file(path)
    assert any(message in p.message for p in problems), [p.message for p in problems]


def test_good_cuda_graph_settings_pass(tmp_path):
    path = tmp_path / "g.toml"
    path.write_text('[models.m]\npath = "builtin:resnet18"\nbackend = "torch"\ndevice = 0\n'
                    'cuda_graphs = true\ngraph_batches = [1, 8]\nmax_batch = 8\n')
    assert [p.message for p in check_file(path) if "warning" not in p.message.lower()] == []


@pytest.mark.parametrize("model, message", [
    ('dynamic_batching = "yes"\n', "'dynamic_batching' must be bool"),
    ('dynamic_batching = true\nmax_queue_delay_us = -2\n', "max_queue_delay_us must be 0..1000000"),
    ('dynamic_batching = true\nmax_queue_delay_us = 2000000\n', "max_queue_delay_us must be 0..1000000"),
    ('dynamic_batching = true\npreferred_batch_sizes = [0, 4]\n', "preferred_batch_sizes must be batch sizes"),
    ('dynamic_batching = true\nmax_batch = 8\npreferred_batch_sizes = [4, 16]\n',
     "preferred_batch_sizes [4, 16] has sizes above max_batch = 8"),
    ('preferred_batch_sizes = [4]\n', "preferred_batch_sizes is set but dynamic_batching is not"),
    ('dynamic_batchng = true\n', "did you mean 'dynamic_batching'"),
])
def test_dynamic_batching_settings_are_checked(tmp_path, model, message):
    path = tmp_path / "b.toml"
    path.write_text(f'[models.m]\npath = "builtin:demo"\n{model}')
    problems = check_file(path)
    assert any(message in p.message for p in problems), [p.message for p in problems]


def test_good_dynamic_batching_settings_pass(tmp_path):
    path = tmp_path / "b.toml"
    path.write_text('[models.m]\npath = "builtin:demo"\ndynamic_batching = true\nmax_batch = 16\n'
                    'max_queue_delay_us = 500\npreferred_batch_sizes = [4, 8, 16]\n')
    assert [p.message for p in check_file(path) if "warning" not in p.message.lower()] == []


def test_max_queue_delay_us_left_out_is_the_devices_default():
    from trtd.daemon.config.settings import DEFAULT_QUEUE_DELAY_US, ModelConfig, queue_delay_us

    assert queue_delay_us(ModelConfig(name="m", path="x", dynamic_batching=True)) == DEFAULT_QUEUE_DELAY_US["cpu"]
    assert queue_delay_us(ModelConfig(name="m", path="x", device=0)) == DEFAULT_QUEUE_DELAY_US["gpu"]
    assert queue_delay_us(ModelConfig(name="m", path="x", max_queue_delay_us=70, device=0)) == 70
