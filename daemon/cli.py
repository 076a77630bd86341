"""The `trtd` command: serve, status, demo, bench."""

from __future__ import annotations

import argparse
import json
import sys

from trtd.protocol import ENDPOINT_ENV


def _serve_config(args):
    """The configuration `trtd serve ARGS` runs with: the file, then the flags over it.
    Called again on `reload` / SIGHUP, so a reload sees the file's new contents."""
    from .config import DaemonConfig, ModelConfig, load_config, parse_model_flag, validate

    config = load_config(args.config) if args.config else DaemonConfig()
    config.models.extend(parse_model_flag(flag) for flag in args.model)
    if args.endpoint:
        config.endpoint = args.endpoint
    if args.reclaim_interval is not None:
        config.reclaim_interval_s = args.reclaim_interval
    if args.log_level:
        config.log_level = args.log_level
    if not config.models and not args.config:
        config.models.append(ModelConfig(name="demo", path="builtin:demo"))
    validate(config)
    return config


def _serve(args) -> int:
    from .config import ConfigError
    from .instance import AlreadyRunning, UnsafeDirectory
    from .platform import add_dll_directories
    from .server import configure_logging, run

    try:
        config = _serve_config(args)
    except ConfigError as exc:
        print(f"trtd serve: {exc}", file=sys.stderr)
        return 2
    configure_logging(config.log_level)
    add_dll_directories()  # Windows: CUDA/TensorRT DLLs are not found through PATH
    try:
        return run(config, reload_source=lambda: _serve_config(args))
    except (AlreadyRunning, UnsafeDirectory) as exc:
        print(f"trtd serve: {exc}", file=sys.stderr)
        return 3


def _status(args) -> int:
    return print_status(args.endpoint, args.timeout, args.json)


def print_status(endpoint: str | None, timeout: float, as_json: bool = False) -> int:
    from dataclasses import asdict

    from trtd.sdk import Client, TrtdError

    try:
        with Client(endpoint=endpoint, timeout=timeout, connect_timeout=timeout) as c:
            status = c.status()
    except TrtdError as exc:
        print(f"trtd status: {exc}", file=sys.stderr)
        return 1
    if as_json:
        print(json.dumps(asdict(status), indent=2))
        return 0
    print(f"daemon   {status.daemon_id}  pid {status.pid}  version {status.server_version}  "
          f"protocol {status.protocol_version}")
    print(f"endpoint {status.endpoint}  up {status.uptime_s:.0f}s  rss {status.rss_bytes / 2**20:.1f} MiB  "
          f"cpu {status.cpu_user_s + status.cpu_system_s:.2f}s")
    print(f"clients  {status.clients}  regions {status.regions} ({status.region_bytes / 2**20:.1f} MiB)")
    loading = sum(1 for s in status.models if s.state == "loading")
    if loading:
        print(f"loading  {loading} model(s) in the background")
    print(f"{'model':<16} {'backend':<12} {'state':<8} {'requests':>9} {'errors':>7} "
          f"{'p50 µs':>9} {'p90 µs':>9} {'p99 µs':>9}")
    for s in status.models:
        print(f"{s.name:<16} {s.backend:<12} {s.state:<8} {s.requests:>9} {s.errors:>7} "
              f"{s.p50_us:>9.0f} {s.p90_us:>9.0f} {s.p99_us:>9.0f}")
        if s.error:
            print(f"  error: {s.error}")
        if s.build:
            print(f"  engine build: {s.build}")
    return 0


def _reload(args) -> int:
    import time

    from trtd.sdk import Client, TrtdError

    from .admin_commands import AdminTokenError, admin_token

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
    from . import platform

    if args.action == "paths":
        for scope in platform.SCOPES:
            print(f"{scope:<7} config {platform.config_path(scope)}")
            print(f"{'':<7} cache  {platform.cache_dir(scope)}")
        return 0
    from .config_check import check_file

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
    from . import platform

    for scope in ("user", "system"):
        candidate = platform.config_path(scope)
        if candidate.exists():
            return str(candidate)
    return None


def _demo(args) -> int:
    from .demo import run_demo

    return run_demo(endpoint=args.endpoint, requests=args.requests)


def version_text() -> str:
    """`trtd --version`: the package's version (trtd.__version__) and the protocol it speaks."""
    from trtd import __version__
    from trtd.protocol import PROTOCOL_VERSION

    return f"trtd {__version__} (protocol {PROTOCOL_VERSION})"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trtd", description="trtd: a local inference daemon")
    parser.add_argument("--version", action="version", version=version_text())
    sub = parser.add_subparsers(dest="command", required=True)
    endpoint_help = f"daemon endpoint (default: ${ENDPOINT_ENV} or the per-user default)"

    serve = sub.add_parser("serve", help="run the daemon in the foreground")
    serve.add_argument("--config", help="TOML config file")
    serve.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                       help="serve PATH.onnx (or builtin:NAME) as NAME; repeatable")
    serve.add_argument("--endpoint", help=endpoint_help)
    serve.add_argument("--reclaim-interval", type=float, metavar="SECONDS",
                       help="how often dead clients' regions are reclaimed")
    serve.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    serve.set_defaults(func=_serve)

    status = sub.add_parser("status", help="show a running daemon's models, regions, clients, latency")
    status.add_argument("--endpoint", help=endpoint_help)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.add_argument("--timeout", type=float, default=5.0)
    status.set_defaults(func=_status)

    reload = sub.add_parser("reload", help="make a running daemon re-read its config file "
                                           "(new/changed models load, removed ones unload)")
    reload.add_argument("--endpoint", help=endpoint_help)
    reload.add_argument("--timeout", type=float, default=120.0,
                        help="how long to wait for the models to load (seconds)")
    reload.add_argument("--no-wait", dest="wait", action="store_false",
                        help="return at once; models keep loading in the background")
    from .admin_commands import add_token_options

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

    from . import admin_commands
    from .engines.commands import add_build_parser, add_cache_parser

    admin_commands.add_parsers(sub, endpoint_help)

    add_build_parser(sub)
    add_cache_parser(sub)
    from .precision import commands as precision_commands, validate as precision_validate

    from .precision import export as precision_export

    precision_export.add_parser(sub)
    precision_commands.add_parser(sub)
    precision_validate.add_parser(sub)
    doctor = sub.add_parser("doctor", help="check this machine: driver, CUDA, TensorRT, ONNX Runtime, /dev/shm")
    doctor.set_defaults(func=lambda args: __import__("trtd.daemon.doctor", fromlist=["main"]).main())

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
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
