"""The folders show the architecture, and this keeps them honest: who may import whom.

Read from the source with `ast` (no imports run), so a new file that breaks a rule fails here
whatever it does at run time:
- the server side never depends on the client: only the `trtd` commands (daemon/commands/)
  import `trtd.sdk` (or the bench harness, which drives the SDK);
- the same for service/, which runs the daemon as a system service: none of it imports the
  SDK but `trtd selftest` (service/selftest.py), a client of the installed service by design;
- nothing in the daemon outside the commands imports the commands;
- the core and what runs models have no sockets: no zmq, nothing from serve/;
- the SDK knows nothing of the daemon: it speaks the protocol only.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DAEMON = ROOT / "daemon"


def _imports(path: Path) -> list[tuple[int, str]]:
    names = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.append((node.lineno, node.module))
            names += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return names


def _violations(files, forbidden: tuple[str, ...], root: Path = ROOT) -> list[str]:
    found = []
    for path in files:
        for line, name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in forbidden):
                found.append(f"{path.relative_to(root)}:{line} imports {name}")
    return sorted(set(found))


def _py(folder: Path, exclude: tuple[str, ...] = ()) -> list[Path]:
    return [p for p in folder.rglob("*.py") if not any(part in exclude for part in p.relative_to(folder).parts)]


def test_only_the_commands_import_the_sdk_or_the_bench():
    assert _violations(_py(DAEMON, exclude=("commands",)), ("trtd.sdk", "trtd.bench")) == []


# service/selftest.py checks a running (installed) daemon from the outside, as a user's
# application would: it is the one client in service/, and nothing else there may import it.
SERVICE_CLIENTS = ("selftest.py",)


def test_the_service_imports_the_sdk_only_in_its_selftest():
    files = [p for p in _py(ROOT / "service") if p.name not in SERVICE_CLIENTS]
    assert files, "the scan saw no service module"
    assert _violations(files, ("trtd.sdk", "trtd.bench")) == []
    importers = [p for p in _py(ROOT / "service") + _py(DAEMON)
                 if _violations([p], ("trtd.service.selftest",))]
    assert [p.relative_to(ROOT).as_posix() for p in importers] == ["daemon/commands/cli.py"]


def test_nothing_in_the_daemon_imports_the_commands():
    # `python -m trtd.daemon` (daemon/__main__.py) is the command line's entry point.
    files = [p for p in _py(DAEMON, exclude=("commands",)) if p != DAEMON / "__main__.py"]
    assert _violations(files, ("trtd.daemon.commands",)) == []


def test_the_core_and_the_model_runners_have_no_sockets():
    files = _py(DAEMON / "core") + _py(DAEMON / "running")
    assert _violations(files, ("zmq", "trtd.daemon.serve")) == []


def test_the_sdk_knows_nothing_of_the_daemon():
    assert _violations(_py(ROOT / "sdk"), ("trtd.daemon", "trtd.service", "trtd.bench")) == []


def test_the_rules_see_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom trtd.sdk.client import Client\nimport zmq\n")
    assert _violations([bad], ("trtd.sdk", "zmq"), root=tmp_path) == [
        "bad.py:2 imports trtd.sdk.client", "bad.py:2 imports trtd.sdk.client.Client", "bad.py:3 imports zmq"]
