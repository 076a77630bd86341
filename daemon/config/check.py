"""`trtd config check PATH`: every problem of a config file at once, each with its line.

tomllib (the parser the daemon uses) reports line numbers for syntax errors only; a parsed
table does not remember where its keys were. Rather than a second TOML library (tomlkit keeps
positions only as text offsets of its own document model, and would be a runtime dependency for
this one command), `locate_keys` scans the text for table headers and `key =` lines, which is
all a line number needs: it runs only on text tomllib has already accepted, so it never has to
decide what is valid TOML.

The daemon loads its file through `load_checked` too (`load_config`, so serve, reload and the
services): whatever stops it is what this command reports, in the same words and lines.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from trtd.daemon.config.settings import (_DAEMON_FIELDS, _MODEL_FIELDS, BUILTIN_PREFIX, ConfigError, DaemonConfig,
                     ModelConfig, _check_type, build_config, config_problems, did_you_mean,
                     model_file_problem, read_toml, validate_model)
from trtd.daemon.serve.access import admin_reach_warning
from trtd.daemon.serve.metrics_address import exposure_warning

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_KEY_PART = re.compile(r'\s*("(?:[^"\\]|\\.)*"|\'[^\']*\'|[A-Za-z0-9_-]+)\s*')
_TOML_LINE = re.compile(r"at line (\d+)")


@dataclass(frozen=True, slots=True)
class Problem:
    line: int  # 1-based; 0 when it concerns the file as a whole
    message: str
    # "warning": the daemon starts with it, but something will not work as configured.
    severity: str = "error"
    # A file a model needs is not there (yet): that model fails to load ("failed" in status)
    # and the daemon serves the others, so the file may arrive later (then `trtd reload`).
    model_unavailable: bool = False

    @property
    def stops_daemon(self) -> bool:
        return self.severity == "error" and not self.model_unavailable

    def format(self, path: str | Path) -> str:
        text = f"warning: {self.message}" if self.severity == "warning" else self.message
        return f"{path}:{self.line}: {text}" if self.line else f"{path}: {text}"


def _split_key(text: str) -> tuple[str, ...] | None:
    """'a."b.c".d' -> ('a', 'b.c', 'd'); None when it is not a key."""
    parts, pos = [], 0
    while True:
        m = _KEY_PART.match(text, pos)
        if not m:
            return None
        token = m.group(1)
        if token[0] == '"':
            token = token[1:-1].encode().decode("unicode_escape")
        elif token[0] == "'":
            token = token[1:-1]
        parts.append(token)
        pos = m.end()
        if pos == len(text):
            return tuple(parts)
        if text[pos] != ".":
            return None
        pos += 1


def _scan_value(value: str, state: dict) -> None:
    """Track open brackets and multi-line strings across lines (strings and comments skipped)."""
    i = 0
    while i < len(value):
        if state["ml"]:
            end = value.find(state["ml"], i)
            if end < 0:
                return
            i, state["ml"] = end + 3, None
            continue
        c = value[i]
        if value.startswith(('"""', "'''"), i):
            state["ml"] = value[i:i + 3]
            i += 3
        elif c in "\"'":
            j = i + 1
            while j < len(value) and value[j] != c:
                j += 2 if (c == '"' and value[j] == "\\") else 1
            i = j + 1
        elif c == "#":
            return
        else:
            if c in "[{":
                state["depth"] += 1
            elif c in "]}":
                state["depth"] -= 1
            i += 1


def locate_keys(text: str) -> dict[tuple[str, ...], int]:
    """Map each table header and key (as a full dotted path) to its 1-based line number."""
    where: dict[tuple[str, ...], int] = {}
    table: tuple[str, ...] = ()
    state: dict = {"depth": 0, "ml": None}
    for number, line in enumerate(text.splitlines(), start=1):
        if state["ml"] or state["depth"] > 0:
            _scan_value(line, state)
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("["):
            inner = stripped.lstrip("[").split("]", 1)[0]
            key = _split_key(inner)
            if key is not None:
                table = key
                where.setdefault(table, number)
            continue
        key_text, eq, value = line.partition("=")
        key = _split_key(key_text.strip()) if eq else None
        if key is not None:
            full = table + key
            for n in range(len(table) + 1, len(full) + 1):
                where.setdefault(full[:n], number)
            _scan_value(value, state)
    return where


def _unknown(key: str, allowed: set[str], where: str) -> str:
    hint = did_you_mean(key, allowed) or f"; known keys: {', '.join(sorted(allowed))}"
    return f"{where}unknown key '{key}'{hint}"


def _expected_type(cls: type, key: str) -> type:
    hint = {f.name: f.type for f in dataclasses.fields(cls)}[key]
    return {"int": int, "float": float, "str": str, "str | None": str, "list[str]": list,
            "list[int]": list, "bool": bool}[hint]


def _typed(cls: type, table: dict, allowed: set[str], line_of, where: str,
           problems: list[Problem]) -> dict:
    """The keys of `table` that are known and well-typed; a Problem for each other one."""
    good = {}
    for key, value in table.items():
        if key not in allowed:
            problems.append(Problem(line_of(key), _unknown(key, allowed, where)))
            continue
        try:
            _check_type(where.rstrip(": ") or "config", key, value, _expected_type(cls, key))
        except ConfigError as exc:
            problems.append(Problem(line_of(key), str(exc)))
            continue
        hint = {f.name: f.type for f in dataclasses.fields(cls)}[key]
        element = {"list[str]": str, "list[int]": int}.get(hint)
        if element is not None and not all(isinstance(v, element) and not isinstance(v, bool) for v in value):
            kind = "strings" if element is str else "integers"
            problems.append(Problem(line_of(key), f"{where}'{key}' must be a list of {kind}"))
            continue
        good[key] = float(value) if _expected_type(cls, key) is float else value
    return good


def _line_for_message(message: str, keys, line_of, default: int) -> int:
    # validate() names the offending key in its message: point at that key's line.
    for key in sorted(keys, key=len, reverse=True):
        if re.search(rf"\b{re.escape(key)}\b", message):
            return line_of(key)
    return default


def check_text(text: str, base_dir: Path, endpoint: str | None = None) -> list[Problem]:
    """Every problem of a config file's text; `endpoint` (serve's --endpoint) replaces the file's."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _TOML_LINE.search(str(exc))
        return [Problem(int(m.group(1)) if m else 0, f"not valid TOML: {exc}")]
    where = locate_keys(text)
    problems: list[Problem] = []

    def top_line(key: str) -> int:
        return where.get((key,), 0)

    models_table = data.pop("models", {})
    daemon = _typed(DaemonConfig, data, _DAEMON_FIELDS, top_line, "", problems)
    config = DaemonConfig(**daemon)
    if endpoint is not None:
        config.endpoint = endpoint
    for message in config_problems(config):
        problems.append(Problem(_line_for_message(message, daemon, top_line, 0), message))
    warning = admin_reach_warning(config.group, config.admin_group)
    if warning:
        problems.append(Problem(top_line("admin_group"), warning, severity="warning"))
    exposed = exposure_warning(config.metrics)
    if exposed:
        problems.append(Problem(top_line("metrics"), exposed, severity="warning"))
    if config.log_level.upper() not in LOG_LEVELS:
        problems.append(Problem(top_line("log_level"),
                                f"log_level must be one of {', '.join(LOG_LEVELS)}, got {config.log_level!r}"))
    if not isinstance(models_table, dict):
        return problems + [Problem(top_line("models"), "'models' must be a table of [models.NAME] sections")]
    for name, table in models_table.items():
        header = where.get(("models", name), 0)

        def model_line(key: str, name=name, header=header) -> int:
            return where.get(("models", name, key), header)

        label = f"[models.{name}] "
        if not isinstance(table, dict):
            problems.append(Problem(header, f"{label}must be a table with at least 'path'"))
            continue
        if "path" not in table:
            problems.append(Problem(header, f"{label}needs a 'path' (an .onnx file or builtin:NAME)"))
        fields = _typed(ModelConfig, table, _MODEL_FIELDS, model_line, label, problems)
        if "path" not in fields:
            continue
        model = ModelConfig(name=name, **fields)
        try:
            validate_model(model)
        except ConfigError as exc:
            problems.append(Problem(_line_for_message(str(exc), fields, model_line, header),
                                    f"{label}{exc}"))
        problems += _model_files(model, base_dir, label, model_line)
        problems += _model_shapes(model, label, model_line)
        problems += _engine_library(model, fields, label, model_line)
    return problems


def _engine_library(model: ModelConfig, fields: dict, label: str, model_line) -> list[Problem]:
    """engine_library set where no TensorRT engine is built or run: it would be ignored."""
    if "engine_library" not in fields or model.engine_library == "auto":
        return []
    if model.backend != "tensorrt":
        why = f"backend = \"{model.backend}\" runs no TensorRT engine"
    elif model.engine_builder != "tensorrt":
        why = f"engine_builder = \"{model.engine_builder}\" builds no TensorRT engine"
    else:
        return []
    return [Problem(model_line("engine_library"), f"{label}engine_library is ignored: {why}",
                    severity="warning")]


def _model_files(model: ModelConfig, base_dir: Path, label: str, model_line) -> list[Problem]:
    problems = []
    if model.path.startswith(BUILTIN_PREFIX):
        from trtd.daemon.builtin.onnx_models import BUILTIN_MODEL_NAMES

        builtin = model.path[len(BUILTIN_PREFIX):]
        if builtin not in BUILTIN_MODEL_NAMES:
            problems.append(Problem(model_line("path"), f"{label}unknown built-in model {builtin!r}; "
                                                        f"known: {', '.join(BUILTIN_MODEL_NAMES)}"))
    else:
        path = (base_dir / model.path).resolve()
        problem = model_file_problem(path)
        if problem:
            problems.append(Problem(model_line("path"), f"{label}{problem}"
                                    + (" (relative paths are relative to the config file)"
                                       if not Path(model.path).is_absolute() else ""),
                                    model_unavailable=True))
    for key, values in (("calibration", [model.calibration] if model.calibration else []),
                        ("plugins", model.plugins)):
        for value in values:
            path = (base_dir / value).resolve()
            if not path.exists():
                problems.append(Problem(model_line(key), f"{label}{key} {path} does not exist",
                                        model_unavailable=True))
    return problems


def _model_shapes(model: ModelConfig, label: str, model_line) -> list[Problem]:
    from trtd.daemon.backends.base import BackendError
    from trtd.daemon.backends.torch import parse_input_spec
    from trtd.daemon.engines.profiles import ProfileError, parse_profiles

    problems = []
    for spec in model.inputs:
        try:
            parse_input_spec(spec)
        except BackendError as exc:
            problems.append(Problem(model_line("inputs"), f"{label}{exc}"))
    for spec in model.profiles:
        try:
            parse_profiles([spec.split(";")])
        except ProfileError as exc:
            problems.append(Problem(model_line("profiles"), f"{label}{exc}"))
    from trtd.daemon.backends import BACKENDS

    if model.backend not in BACKENDS:
        problems.append(Problem(model_line("backend"), f"{label}unknown backend {model.backend!r}"
                                                       f"{did_you_mean(model.backend, BACKENDS)} "
                                                       f"(available: {', '.join(BACKENDS)})"))
    return problems


def check_file(path: str | Path, endpoint: str | None = None) -> list[Problem]:
    """Every problem of the file at `path`, in line order (`endpoint`: see check_text)."""
    return _read_and_check(Path(path), endpoint)[1]


def _read_and_check(path: Path, endpoint: str | None) -> tuple[str | None, list[Problem]]:
    """The file's text (None when it cannot be read or parsed) and its problems."""
    try:
        text, _ = read_toml(path)
    except ConfigError as exc:
        m = _TOML_LINE.search(str(exc))
        return None, [Problem(int(m.group(1)) if m else 0, str(exc).replace(f"{path} is ", "", 1))]
    return text, sorted(check_text(text, path.parent, endpoint), key=lambda p: p.line)


class ConfigFileError(ConfigError):
    """A config file the daemon does not start with; its text is every problem of the file,
    one `PATH:LINE: message` a line, as `trtd config check PATH` prints them."""

    def __init__(self, path: Path, problems: list[Problem]):
        self.path = path
        self.problems = problems
        super().__init__("\n".join(problem.format(path) for problem in problems))


def load_checked(path: str | Path, endpoint: str | None = None) -> tuple[DaemonConfig, list[Problem]]:
    """The configuration the daemon runs with, and the problems it starts with anyway
    (warnings, model files not there yet); ConfigFileError when one stops it. `endpoint`:
    the --endpoint flag, which replaces the file's (so only the one in use is checked).

    The text is read once and both checked and built from, so a file being rewritten during a
    reload cannot pass the check in one version and be loaded in another."""
    path = Path(path)
    text, problems = _read_and_check(path, endpoint)
    if text is None or any(problem.stops_daemon for problem in problems):
        raise ConfigFileError(path, problems)
    config = build_config(path, tomllib.loads(text))
    if endpoint is not None:
        config.endpoint = endpoint
    return config, problems
