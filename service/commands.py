"""`trtd service install|uninstall|status|start|stop [--user] [--config PATH]`.

Linux: a systemd unit (service/systemd.py). Windows: a service on pywin32's framework
(service/windows.py). Where systemd is not running (a container, a chroot, CI), install prints
the unit and the steps instead of running them, and exits 1: nothing was installed. `--print`
prints them anywhere and exits 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from trtd.daemon.system import platform


def add_parser(sub) -> None:
    p = sub.add_parser("service", help="install/uninstall/start/stop/status of trtd as a system "
                                       "service (systemd on Linux, a Windows service)")
    actions = p.add_subparsers(dest="action", required=True)
    for name, text in (("install", "install (and start) the service"),
                       ("uninstall", "stop and remove the service (config and caches stay)"),
                       ("status", "the service manager's view and the daemon's own status"),
                       ("start", "start the service"), ("stop", "stop the service (drains requests)")):
        a = actions.add_parser(name, help=text)
        a.add_argument("--user", action="store_true",
                       help="a per-user service (systemd --user) instead of the system-wide one")
        a.add_argument("--config", type=Path,
                       help="config file (default: the platform's default for the scope, see "
                            "`trtd config paths`)")
        if name == "install":
            a.add_argument("--print", action="store_true", dest="print_only",
                           help="print the unit and the steps instead of running them")
            a.add_argument("--watchdog", type=int, default=60, metavar="SECONDS",
                           help="systemd watchdog interval (0: off; default 60)")
    p.set_defaults(func=main)


def scope_of(args) -> str:
    return "user" if args.user else "system"


def config_of(args) -> Path:
    return Path(args.config).resolve() if args.config else Path(platform.config_path(scope_of(args)))


def main(args: argparse.Namespace) -> int:
    if sys.platform == "win32":
        from . import windows

        return windows.main(args)
    from . import linux

    return linux.main(args)


def daemon_status(config_path: Path, scope: str) -> int:
    """The daemon's own answer on the endpoint the service's config names."""
    from trtd.daemon.commands.cli import print_status

    endpoint = None
    if config_path.exists():
        from trtd.daemon.config.settings import ConfigError, load_config

        try:
            endpoint = load_config(config_path).endpoint
        except ConfigError as exc:
            print(f"{exc}", file=sys.stderr)
    endpoint = endpoint or platform.service_endpoint(scope)
    return print_status(endpoint, timeout=3.0)
