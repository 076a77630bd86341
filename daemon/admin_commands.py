"""`trtd load`, `trtd unload`, `trtd shutdown`: privileged ops from the command line.

The SDK presents the daemon's admin token, read from its token file; run these
as the daemon's user (or root, or a member of `admin_group`).
"""

from __future__ import annotations

import sys


def _client(args):
    from trtd.sdk import Client

    return Client(endpoint=args.endpoint, timeout=args.timeout, connect_timeout=min(args.timeout, 5.0),
                  admin_token=args.admin_token, name="trtd-cli")


def _run(args, what: str, action) -> int:
    from trtd.sdk import TrtdError

    try:
        with _client(args) as c:
            message = action(c)
    except TrtdError as exc:
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
        p.add_argument("--admin-token", help="the admin token (default: read from the daemon's "
                                             "token file beside its socket)")

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
