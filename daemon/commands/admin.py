"""`trtd load`, `trtd unload`, `trtd shutdown` (and `trtd reload`): privileged ops from the
command line.

The SDK presents the daemon's admin token, read from its token file; run these
as the daemon's user (or root, or a member of `admin_group`). Someone who holds
the token another way passes it in a file (--admin-token-file) or in the
environment (TRTD_ADMIN_TOKEN), never as an argument: a process's arguments are
readable by every local user (/proc/PID/cmdline, ps).
"""

from __future__ import annotations

import argparse
import os
import sys

ADMIN_TOKEN_ENV = "TRTD_ADMIN_TOKEN"


class AdminTokenError(Exception):
    """--admin-token-file names a file this user cannot read, or an empty one."""


def admin_token(args) -> str | None:
    """--admin-token-file > $TRTD_ADMIN_TOKEN > None (the SDK then reads the daemon's file)."""
    from trtd.sdk.client import read_token

    if args.admin_token_file:
        token, problem = read_token(args.admin_token_file)
        if problem:
            raise AdminTokenError(f"--admin-token-file: {problem}")
        if not token:
            raise AdminTokenError(f"--admin-token-file: {args.admin_token_file} is empty; it "
                                  f"should hold the daemon's admin token")
        return token
    return os.environ.get(ADMIN_TOKEN_ENV, "").strip() or None


class _RefuseTokenArgument(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f"{option_string} is no longer accepted: a command line is readable by every "
                     f"local user; pass the token with --admin-token-file PATH or in the "
                     f"environment variable {ADMIN_TOKEN_ENV}")


def add_token_options(parser) -> None:
    parser.add_argument(
        "--admin-token-file", metavar="PATH",
        help=f"read the admin token from this file (default: the environment variable "
             f"{ADMIN_TOKEN_ENV} when set, else the daemon's own token file, beside its socket "
             f"or in the runtime directory, when this user may read it)")
    # Refused with a pointer to the safe ways, rather than "unrecognized arguments".
    parser.add_argument("--admin-token", action=_RefuseTokenArgument, help=argparse.SUPPRESS)


def _client(args):
    from trtd.sdk import Client

    return Client(endpoint=args.endpoint, timeout=args.timeout, connect_timeout=min(args.timeout, 5.0),
                  admin_token=admin_token(args), name="trtd-cli")


def _run(args, what: str, action) -> int:
    from trtd.sdk import TrtdError

    try:
        with _client(args) as c:
            message = action(c)
    except (TrtdError, AdminTokenError) as exc:
        print(f"trtd {what}: {exc}", file=sys.stderr)
        return 1
    print(message)
    return 0


def _load(args) -> int:
    def action(c):
        info = c.load(args.name, args.path, backend=args.backend, max_batch=args.max_batch,
                      device=args.device, instances=args.instances, inputs=args.input)
        return f"loaded {info.name} ({info.backend}, {info.state})"
    return _run(args, "load", action)


def _unload(args) -> int:
    def action(c):
        c.unload(args.name)
        return f"unloaded {args.name}"
    return _run(args, "unload", action)


def _shutdown(args) -> int:
    def action(c):
        c.shutdown()
        return "the daemon is stopping"
    return _run(args, "shutdown", action)


def add_parsers(sub, endpoint_help: str) -> None:
    def common(p):
        p.add_argument("--endpoint", help=endpoint_help)
        p.add_argument("--timeout", type=float, default=60.0)
        add_token_options(p)

    load = sub.add_parser("load", help="load a model into a running daemon (privileged)")
    load.add_argument("name")
    load.add_argument("path", help="a model file as the daemon sees it, or builtin:NAME")
    load.add_argument("--backend", default="onnxruntime")
    load.add_argument("--max-batch", type=int, default=0)
    load.add_argument("--device", type=int, default=-1)
    load.add_argument("--instances", type=int, default=1)
    load.add_argument("--input", action="append", default=[], metavar="NAME:SHAPE[:DTYPE]")
    common(load)
    load.set_defaults(func=_load)

    unload = sub.add_parser("unload", help="unload a model from a running daemon (privileged)")
    unload.add_argument("name")
    common(unload)
    unload.set_defaults(func=_unload)

    shutdown = sub.add_parser("shutdown", help="stop a running daemon (privileged)")
    common(shutdown)
    shutdown.set_defaults(func=_shutdown)
