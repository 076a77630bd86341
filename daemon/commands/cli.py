"""The `trtd` command: serve, status, demo, bench."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from trtd.protocol import ENDPOINT_ENV

if TYPE_CHECKING:
    from trtd.daemon.config.settings import DaemonConfig


def _serve_config(args):
    """The configuration `trtd serve ARGS` runs with: the file, then the flags over it.
    Called again on `reload` / SIGHUP, so a reload sees the file's new contents."""
    return _serve_setup(args)[0]


@dataclass(frozen=True, slots=True)
class StartNote:
    """Something the daemon starts with anyway, logged once logging is set up."""

    level: int  # a logging level
    text: str


def _serve_setup(args) -> tuple[DaemonConfig, list[StartNote]]:
    """_serve_config's configuration, and what to say about it at start: the config file's
    warnings and every model whose file is not there (it will be "failed", the rest serve).

    The file goes through `load_checked`, the checker of `trtd config check`: a problem that
    stops the daemon raises ConfigFileError with every problem of the file, each with its line."""
    from trtd.daemon.config.settings import DaemonConfig, ModelConfig, parse_model_flag, validate
    from trtd.daemon.config.check import load_checked

    notes: list[StartNote] = []
    if args.config:
        config, problems = load_checked(args.config, args.endpoint)
        notes += [_file_note(problem, args.config) for problem in problems]
    else:
        config = DaemonConfig(endpoint=args.endpoint)
    flagged = [parse_model_flag(flag) for flag in args.model]
    config.models.extend(flagged)
    notes += [note for note in map(_missing_flag_model, flagged) if note is not None]
    if args.reclaim_interval is not None:
        config.reclaim_interval_s = args.reclaim_interval
    if args.log_level:
        config.log_level = args.log_level
    if args.log_format:
        config.log_format = args.log_format
    if args.metrics is not None:
        config.metrics = args.metrics
    if not config.models and not args.config:
        config.models.append(ModelConfig(name="demo", path="builtin:demo"))
    validate(config)
    return config, notes


def _file_note(problem, path: str) -> StartNote:
    if problem.severity == "warning":
        return StartNote(logging.WARNING, problem.format(path))
    return StartNote(logging.ERROR, f"{problem.format(path)}; the daemon serves the other models "
                                    f"without this one: put the file there (or correct the path in "
                                    f"{path}), then run `trtd reload`")


def _missing_flag_model(model) -> StartNote | None:
    from pathlib import Path

    from trtd.daemon.config.settings import BUILTIN_PREFIX, model_file_problem

    problem = None if model.path.startswith(BUILTIN_PREFIX) else model_file_problem(Path(model.path))
    if problem is None:
        return None
    return StartNote(logging.ERROR, f"model {model.name!r}: {problem}; the daemon serves the other "
                                    f"models without this one: put the file there and run `trtd "
                                    f"reload`, or restart with --model {model.name}=CORRECT_PATH")


def _serve(args) -> int:
    from trtd.daemon.config.settings import ConfigError
    from trtd.daemon.config.check import ConfigFileError
    from trtd.daemon.serve.endpoint_lock import AlreadyRunning, UnsafeDirectory
    from trtd.daemon.system.platform import add_dll_directories
    from trtd.daemon.serve.logs import configure_logging
    from trtd.daemon.serve.metrics_http import MetricsEndpointError
    from trtd.daemon.serve.server import run

    try:
        config, notes = _serve_setup(args)
    except ConfigFileError as exc:
        print(exc, file=sys.stderr)
        print(f"trtd serve: not started because of the problems above in {exc.path} "
              f"(`trtd config check {exc.path}` lists the same)", file=sys.stderr)
        return 2
    except ConfigError as exc:
        print(f"trtd serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level, config.log_format)
    for note in notes:
        logging.getLogger("trtd.serve").log(note.level, "%s", note.text)
    add_dll_directories()  # Windows: CUDA/TensorRT DLLs are not found through PATH
    try:
        return run(config, reload_source=lambda: _serve_config(args))
    except (AlreadyRunning, UnsafeDirectory, MetricsEndpointError) as exc:
        print(f"trtd serve: {exc}", file=sys.stderr)
        return 3


# `trtd status` exit codes, for scripts and readiness probes (README, `trtd status --help`).
STATUS_READY = 0        # the daemon answered and every model is ready
STATUS_UNREACHABLE = 1  # no daemon answered (not running, not allowed, timed out)
STATUS_USAGE = 2        # a bad option or endpoint (argparse's code for a usage error)
STATUS_FAILED = 3       # a model failed to load (wins over loading)
STATUS_LOADING = 4      # a model is still loading (with --wait-ready: still, at the timeout)
# The daemon is stopping (draining): it answers `status` but refuses new work, so it is not
# ready whatever its models say (wins over failed and loading: the next daemon loads afresh).
STATUS_STOPPING = 5
STATUS_EXIT_CODES = (f"exit status: {STATUS_READY} every model ready; {STATUS_UNREACHABLE} no daemon "
                     f"answered; {STATUS_USAGE} usage error (an option, or the endpoint); "
                     f"{STATUS_FAILED} a model failed to load; {STATUS_LOADING} a model is still loading; "
                     f"{STATUS_STOPPING} the daemon is stopping (it refuses new work; wins over 3 and 4)")
_STATUS_TIMEOUT_S = 5.0      # one status call
_WAIT_READY_TIMEOUT_S = 60.0  # --wait-ready without --timeout
_WAIT_READY_POLL_S = 0.2


@dataclass(frozen=True, slots=True)
class Readiness:
    """What a status reply says about the models, as an exit status and the models to name."""

    code: int
    failed: list[str]   # "NAME: error"
    loading: list[str]  # names


def readiness(status) -> Readiness:
    """The status reply's readiness, decided as the metrics endpoint's /readyz decides it
    (daemon/serve/readiness.py), as an exit status."""
    from trtd.daemon.serve.readiness import readiness_of

    verdict = readiness_of(status.models, status.stopping)
    code = (STATUS_STOPPING if verdict.stopping else STATUS_FAILED if verdict.failed
            else STATUS_LOADING if verdict.loading else STATUS_READY)
    return Readiness(code, verdict.failed, verdict.loading)


# What --wait-ready waits through: models still loading, a daemon stopping (a restart's new
# daemon may be ready soon).
_NOT_SETTLED = (STATUS_LOADING, STATUS_STOPPING)


def _status(args) -> int:
    if args.wait_ready:
        return wait_ready(args.endpoint, args.timeout or _WAIT_READY_TIMEOUT_S, args.json)
    return print_status(args.endpoint, args.timeout or _STATUS_TIMEOUT_S, args.json, readiness_exit=True)


def _fetch_status(endpoint: str | None, timeout: float):
    from trtd.sdk import Client

    with Client(endpoint=endpoint, timeout=timeout, connect_timeout=timeout) as c:
        return c.status()


def print_status(endpoint: str | None, timeout: float, as_json: bool = False,
                 readiness_exit: bool = False) -> int:
    """Print the daemon's status. The exit status: with readiness_exit (`trtd status`) whether
    every model is ready (STATUS_*); without (`trtd service status`, which says whether the
    service serves, right after a start too, while models may still load) 0 once it answered."""
    from trtd.protocol.endpoint import EndpointError
    from trtd.sdk import TrtdError

    try:
        status = _fetch_status(endpoint, timeout)
    except EndpointError as exc:  # e.g. $TRTD_ENDPOINT: no daemon can be there
        print(f"trtd status: {exc}", file=sys.stderr)
        return STATUS_USAGE
    except TrtdError as exc:
        print(f"trtd status: {exc}", file=sys.stderr)
        return STATUS_UNREACHABLE
    code = _show_status(status, as_json)
    return code if readiness_exit else STATUS_READY


def wait_ready(endpoint: str | None, timeout: float, as_json: bool = False) -> int:
    """Poll until every model is ready (exit 0), one has failed (at once, 3), or `timeout`
    passes (4 with models still loading, 5 with the daemon still stopping, 1 when no daemon
    answered); then print the status. Waited for: a daemon not answering yet (a probe may start
    before the daemon does), one stopping or restarting, one slow to answer (at the timeout its
    last answer counts)."""
    from trtd.protocol.endpoint import EndpointError
    from trtd.sdk import DaemonTimeout, TrtdError

    try:
        status, error = _poll_until_settled(endpoint, _now() + timeout)
    except EndpointError as exc:
        print(f"trtd status: {exc}", file=sys.stderr)
        return STATUS_USAGE
    except TrtdError as exc:  # refused, or another protocol: waiting would not change it
        print(f"trtd status: {exc}", file=sys.stderr)
        return STATUS_UNREACHABLE
    if error is not None:
        if status is None:
            print(f"trtd status: no daemon answered within {timeout:g}s: {error}", file=sys.stderr)
            return STATUS_UNREACHABLE
        if not isinstance(error, DaemonTimeout):  # the daemon that answered is gone
            print(f"trtd status: no daemon answered at the end of {timeout:g}s (one had answered "
                  f"before): {error}", file=sys.stderr)
            return STATUS_UNREACHABLE
        # A daemon too slow to answer at the end is still there: its last answer stands.
        print(f"trtd status: the last status call got no answer ({error}); its answer before:",
              file=sys.stderr)
    code = _show_status(status, as_json)
    if code == STATUS_LOADING:
        names = ", ".join(readiness(status).loading)
        print(f"trtd status: not ready after {timeout:g}s: still loading: {names}", file=sys.stderr)
    elif code == STATUS_STOPPING:
        print(f"trtd status: not ready after {timeout:g}s: the daemon is stopping", file=sys.stderr)
    return code


def _poll_until_settled(endpoint: str | None, deadline: float):
    """(status, error). The first status that waiting cannot change (every model ready, or one
    failed, of a daemon that is not stopping): (it, None). Else, at `deadline`, the last status
    answered (None if none) and, when the last call got no answer, its error.

    Asked again until then: a daemon that is not there (yet), one stopping or restarting (its
    connection may close mid-call: DaemonStopping), one slow to answer (DaemonTimeout). Other
    errors (refused, another protocol) are raised at once: waiting would not change them."""
    from trtd.sdk import DaemonNotRunning, DaemonStopping, DaemonTimeout

    last = None
    while True:
        try:
            status = _fetch_status(endpoint, max(min(_STATUS_TIMEOUT_S, deadline - _now()), 0.5))
        except (DaemonNotRunning, DaemonStopping, DaemonTimeout) as exc:
            if _now() >= deadline:
                return last, exc
        else:
            last = status
            if readiness(status).code not in _NOT_SETTLED or _now() >= deadline:
                return status, None
        _pause(min(_WAIT_READY_POLL_S, max(deadline - _now(), 0)))


# The clock and sleep of --wait-ready's polling (tests drive them).
def _now() -> float:
    import time

    return time.monotonic()


def _pause(seconds: float) -> None:
    import time

    time.sleep(seconds)


def _show_status(status, as_json: bool) -> int:
    """Print `status` (a table, or JSON as SPEC 6.8 has it) and, on stderr, the models that
    failed to load; return the readiness exit status."""
    from dataclasses import asdict

    if as_json:
        print(json.dumps(asdict(status), indent=2))
    else:
        _print_table(status)
    ready = readiness(status)
    if status.stopping:
        print("trtd status: the daemon is stopping: it finishes the requests it has and refuses "
              "new work (not ready)", file=sys.stderr)
    if ready.failed:
        print(f"trtd status: {len(ready.failed)} model(s) failed to load: " + "; ".join(ready.failed),
              file=sys.stderr)
    return ready.code


def graph_summary(graphs: int, graph_bytes: int) -> str:
    """ModelStatus.graphs and .graph_bytes as `trtd status` prints them: the count over all
    instances and the device memory their pools hold (the same fields --json shows)."""
    return f"{graphs} captured, {graph_bytes / 2**20:.1f} MiB device memory ({graph_bytes} bytes)"


def _print_table(status) -> None:
    print(f"daemon   {status.daemon_id}  pid {status.pid}  version {status.server_version}  "
          f"protocol {status.protocol_version}")
    print(f"endpoint {status.endpoint}  up {status.uptime_s:.0f}s  rss {status.rss_bytes / 2**20:.1f} MiB  "
          f"cpu {status.cpu_user_s + status.cpu_system_s:.2f}s")
    print(f"clients  {status.clients}  regions {status.regions} ({status.region_bytes / 2**20:.1f} MiB)")
    if status.stopping:
        print("stopping the daemon is draining: it refuses new work")
    loading = sum(1 for s in status.models if s.state == "loading")
    if loading:
        print(f"loading  {loading} model(s) in the background")
    from tabulate import tabulate

    # requests = ok + errors: a bare "requests" beside "errors" read as the successes only.
    print(tabulate([(s.name, s.backend, s.state, s.total, s.ok, s.errors, s.p50_us, s.p90_us, s.p99_us)
                    for s in status.models],
                   headers=("model", "backend", "state", "requests", "ok", "errors", "p50 µs", "p90 µs",
                            "p99 µs"), tablefmt="simple", floatfmt=".0f",
                   disable_numparse=[0, 1, 2]))  # a model named "1e3" stays a name
    for s in status.models:
        if s.error:
            print(f"{s.name}: error: {s.error}")
        if s.build:
            print(f"{s.name}: engine build: {s.build}")
        if s.graphs or s.graph_bytes:  # cuda_graphs = true, once a bucket was captured
            print(f"{s.name}: cuda graphs: {graph_summary(s.graphs, s.graph_bytes)}")
        if s.batching:
            line = f"{s.name}: batching: {s.batching}"
            if s.batches:
                line += (f"; {s.batches} batches, mean {s.batch_mean:.2f} max {s.batch_max} requests; "
                         f"queue delay p50 {s.queue_delay_p50_us:.0f} µs p99 {s.queue_delay_p99_us:.0f} µs")
            print(line)


def _reload(args) -> int:
    import time

    from trtd.sdk import Client, TrtdError

    from trtd.daemon.commands.admin import AdminTokenError, admin_token

    try:
        with Client(endpoint=args.endpoint, timeout=args.timeout, connect_timeout=5.0,
                    admin_token=admin_token(args)) as c:
            reply = c.reload()
            for label in ("loading", "replacing", "unloaded", "unchanged", "restart_needed"):
                names = getattr(reply, label)
                if names:
                    print(f"{label.replace('_', ' '):<15} {', '.join(names)}")
            if not args.wait:
                return 0
            deadline = time.monotonic() + args.timeout
            started = set(reply.loading) | set(reply.replacing)
            models = {s.name: s for s in c.status().models}
            while time.monotonic() < deadline:
                models = {s.name: s for s in c.status().models}
                if not any(models[n].state == "loading" for n in started if n in models):
                    break
                time.sleep(0.1)
    except (TrtdError, AdminTokenError) as exc:
        print(f"trtd reload: {exc}", file=sys.stderr)
        return 1
    failed = [f"{n}: {models[n].error}" for n in started if n in models and models[n].error]
    for line in failed:
        print(f"failed         {line}", file=sys.stderr)
    return 1 if failed else 0


def _config(args) -> int:
    from trtd.daemon.system import platform

    if args.action == "paths":
        for scope in platform.SCOPES:
            print(f"{scope:<7} config {platform.config_path(scope)}")
            print(f"{'':<7} cache  {platform.cache_dir(scope)}")
        return 0
    from trtd.daemon.config.check import check_file

    path = args.path or _default_config_path()
    if path is None:
        print("trtd config check: no PATH given and no config file at the default locations "
              "(trtd config paths lists them)", file=sys.stderr)
        return 2
    problems = check_file(path)
    for problem in problems:
        print(problem.format(path))
    errors = [p for p in problems if p.severity == "error"]
    if not errors:
        print(f"{path}: OK" + (f" ({len(problems)} warning(s))" if problems else ""))
    return 1 if errors else 0


def _default_config_path():
    from trtd.daemon.system import platform

    for scope in ("user", "system"):
        candidate = platform.config_path(scope)
        if candidate.exists():
            return str(candidate)
    return None


def _demo(args) -> int:
    from trtd.daemon.commands.demo import run_demo

    return run_demo(endpoint=args.endpoint, requests=args.requests)


def version_text() -> str:
    """`trtd --version`: the package's version (trtd.__version__) and the protocol it speaks."""
    from trtd import __version__
    from trtd.protocol import PROTOCOL_VERSION

    return f"trtd {__version__} (protocol {PROTOCOL_VERSION})"


def _endpoint_arg(value: str) -> str:
    """--endpoint, checked as the daemon and SDK check it (a usage error names the remedy)."""
    from trtd.protocol.endpoint import EndpointError, validate_endpoint

    try:
        return validate_endpoint(value)
    except EndpointError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _metrics_arg(value: str) -> str:
    """--metrics, checked as the config key is ("" = off)."""
    from trtd.daemon.serve.metrics_address import metrics_problems

    problems = metrics_problems(value)
    if problems:
        raise argparse.ArgumentTypeError(problems[0])
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trtd", description="trtd: a local inference daemon")
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True)
    endpoint_help = f"daemon endpoint (default: ${ENDPOINT_ENV} or the per-user default)"

    serve = sub.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--config", help="TOML config file")
    serve.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                       help="serve PATH.onnx (or builtin:NAME) as NAME; repeatable")
    serve.add_argument("--endpoint", type=_endpoint_arg, help=endpoint_help)
    serve.add_argument("--reclaim-interval", type=float, metavar="SECONDS",
                       help="how often dead clients' regions are reclaimed")
    serve.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.add_argument("--log-format", choices=["text", "json"],
                       help="text: one line per event; json: one JSON object per line (time, level, "
                            "logger, message; model, client_id, request_id, error_code for a request)")
    serve.add_argument("--metrics", type=_metrics_arg, metavar="HOST:PORT",
                       help="serve Prometheus metrics (/metrics) and health (/healthz, /readyz) on "
                            "HOST:PORT, e.g. 127.0.0.1:9464 (a non-loopback host is reachable from "
                            "other machines: see the README); \"\" turns the config's off")
    serve.set_defaults(func=_serve)

    status = sub.add_parser("status", help="show a running daemon's models, regions, clients, latency",
                            description="Show a running daemon's models (requests = ok + errors), "
                                        "regions, clients and latency. Models that failed to load "
                                        "are also named on stderr.",
                            epilog=STATUS_EXIT_CODES)
    status.add_argument("--endpoint", type=_endpoint_arg, help=endpoint_help)
    status.add_argument("--json", action="store_true",
                        help="print the status reply as JSON (SPEC 6.8: a model's requests there "
                             "counts the successes)")
    status.add_argument("--wait-ready", action="store_true",
                        help="wait until every model is ready (exit 0); exit 3 as soon as one "
                             "failed, 4 at the timeout naming the models still loading, 5 when "
                             "the daemon is still stopping then (a daemon that is stopping or "
                             "restarting is waited for)")
    status.add_argument("--timeout", type=float, metavar="SECONDS",
                        help=f"how long to wait for the daemon's answer (default "
                             f"{_STATUS_TIMEOUT_S:g}); with --wait-ready, for every model to be "
                             f"ready (default {_WAIT_READY_TIMEOUT_S:g})")
    status.set_defaults(func=_status)

    reload = sub.add_parser("reload", help="make a running daemon re-read its config file "
                                           "(new/changed models load, removed ones unload)")
    reload.add_argument("--endpoint", help=endpoint_help)
    reload.add_argument("--timeout", type=float, default=120.0,
                        help="how long to wait for the models to load (seconds)")
    reload.add_argument("--no-wait", dest="wait", action="store_false",
                        help="return at once; models keep loading in the background")
    from trtd.daemon.commands.admin import add_token_options

    add_token_options(reload)
    reload.set_defaults(func=_reload)

    config = sub.add_parser("config", help="check a config file, or show the default locations")
    config_actions = config.add_subparsers(dest="action", required=True)
    check = config_actions.add_parser("check", help="validate a config file: every problem, with its line")
    check.add_argument("path", nargs="?", help="the TOML file (default: the user's, else the system's)")
    config_actions.add_parser("paths", help="default config and cache locations per scope")
    config.set_defaults(func=_config)

    from trtd.service import commands as service_commands, selftest

    service_commands.add_parser(sub)
    selftest.add_parser(sub)

    demo = sub.add_parser("demo", help="run the demo model through the daemon and check the answers")
    demo.add_argument("--endpoint", help=endpoint_help)
    demo.add_argument("--requests", type=int, default=200)
    demo.set_defaults(func=_demo)

    from trtd.daemon.commands import admin as admin_commands
    from trtd.daemon.commands.engines import add_build_parser, add_cache_parser

    admin_commands.add_parsers(sub, endpoint_help)

    add_build_parser(sub)
    add_cache_parser(sub)
    from trtd.daemon.commands import precision as precision_commands
    from trtd.daemon.precision import accuracy_gate as precision_validate

    from trtd.daemon.commands import export as export_commands

    export_commands.add_parser(sub)
    precision_commands.add_parser(sub)
    precision_validate.add_parser(sub)
    from trtd.daemon.commands import doctor

    doctor.add_parser(sub)

    # Parsed by trtd.bench.harness (see main()); listed here for --help.
    sub.add_parser("bench", help="benchmark: floor, in-process, daemon and peers such as Triton, "
                                 "with concurrency sweeps and plots (trtd bench --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["bench"]:
        # Everything after `bench` belongs to the benchmark's own parser
        # (argparse's REMAINDER would reject leading options).
        from trtd.bench.harness import main as bench_main

        rest = argv[1:]
        return bench_main(rest[1:] if rest[:1] == ["--"] else rest)
    from trtd.daemon.commands.export import compat_argv

    args = build_parser().parse_args(compat_argv(argv))
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
