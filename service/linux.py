"""`trtd service ...` on Linux: systemd (service/systemd.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .commands import config_of, daemon_status, scope_of

# POSIX only; type checkers skip this module for Windows.
assert sys.platform != "win32", "see service/windows.py"


def main(args) -> int:
    from . import systemd

    scope = scope_of(args)
    if args.action == "install":
        return _install(args, scope)
    if args.action == "uninstall":
        return _run_steps(systemd.uninstall_steps(scope), "uninstall", scope)
    if args.action in ("start", "stop"):
        if not systemd.systemd_running():
            print(f"systemd is not running here; run: {' '.join(systemd._systemctl(scope, args.action, systemd.UNIT_NAME))} "
                  f"where it is, or `trtd serve --config {config_of(args)}` in the foreground")
            return 1
        return subprocess.call(systemd._systemctl(scope, args.action, systemd.UNIT_NAME))
    return _status(args, scope)


def _install(args, scope: str) -> int:
    from . import systemd

    config = config_of(args)
    drain = 10.0
    if config.exists():
        from trtd.daemon.config.settings import ConfigError, load_config

        try:
            drain = load_config(config).drain_timeout_s
        except ConfigError as exc:
            print(f"trtd service install: {exc}\n(check it with: trtd config check {config})",
                  file=sys.stderr)
            return 2
    gpu_groups = [g for g in systemd.GPU_GROUPS if systemd._group_exists(g)] if scope == "system" else []
    opts = systemd.UnitOptions(scope=scope, config=config, watchdog_s=args.watchdog,
                               drain_timeout_s=drain, supplementary_groups=gpu_groups)
    if scope == "system":
        blocked = (systemd.unreachable_by(opts.python, opts.user) if systemd._user_exists(opts.user)
                   else systemd.not_world_traversable(opts.python))
        if blocked:
            print(f"warning: the service account '{opts.user}' cannot reach {opts.python} "
                  f"({blocked} is closed to it); install trtd into a virtual environment under "
                  f"/opt (e.g. python3 -m venv /opt/trtd) and install the service from there",
                  file=sys.stderr)
        import trtd.daemon

        hidden = systemd.hidden_by_private_tmp(opts.python, str(Path(trtd.daemon.__file__).parent))
        if hidden:
            print(f"warning: {hidden} is under /tmp, which the unit's PrivateTmp=yes hides from the "
                  f"service, so it could not start; install trtd outside /tmp and /var/tmp "
                  f"(e.g. python3 -m venv /opt/trtd)", file=sys.stderr)
    steps = systemd.install_steps(opts, config_exists=config.exists())
    blocked, remedy = _install_blocked(scope, config)
    if args.print_only or blocked:
        _print_plan(opts, steps, config, "as asked" if args.print_only else blocked)
        if args.print_only:
            return 0
        # Nothing was installed: a script (or a person reading only the exit status) must know.
        print(f"trtd service install: nothing was installed: {blocked}. The plan is above (`--print` "
              f"prints it without this error); {remedy}", file=sys.stderr)
        return 1
    rc = _run_steps(steps, "install", scope)
    if rc == 0:
        print(f"\ntrtd is installed and started ({scope} service). `trtd service status` shows it; "
              f"logs: journalctl {'--user ' if scope == 'user' else ''}-u trtd")
        if scope == "system":
            print("Users in the 'trtd' group can use it: usermod -aG trtd USER (then log in again).")
    return rc


def _install_blocked(scope: str, config: Path) -> tuple[str, str]:
    """Why install cannot run its steps here, and what to do instead (("", "") when it can)."""
    from . import systemd

    if not systemd.systemd_running():
        return ("systemd is not running on this machine",
                f"without systemd, run the daemon in the foreground: trtd serve --config {config}")
    if scope == "system" and not systemd.is_root():
        return "a system-wide install needs root", "run it with sudo, or install a user service (--user)"
    return "", ""


def _print_plan(opts, steps, config: Path, why: str) -> None:
    from . import systemd

    print(f"# Not installing ({why}). The unit, {systemd.unit_path(opts.scope)}:\n")
    print(systemd.render_unit(opts))
    print("# Steps:")
    for i, step in enumerate(steps, 1):
        print(f"#  {i}. {step.describe()}")
    if not config.exists():
        print(f"\n# The configuration, {config}:\n")
        print(systemd.default_config_text(opts.scope))


def _run_steps(steps, what: str, scope: str) -> int:
    from . import systemd

    if not systemd.systemd_running():
        print(f"systemd is not running here; the {what} steps would be:")
        for step in steps:
            print(f"  {step.describe()}")
        return 1
    for step in steps:
        print(f"-> {step.describe()}")
        if step.write is not None:
            step.write.parent.mkdir(parents=True, exist_ok=True)
            step.write.write_text(step.text, encoding="utf-8")
            os.chmod(step.write, step.mode)
            continue
        rc = subprocess.call(step.argv)
        if rc != 0 and not step.optional:
            print(f"trtd service {what}: `{step.describe()}` failed with exit status {rc}",
                  file=sys.stderr)
            return rc
    return 0


def _status(args, scope: str) -> int:
    from . import systemd

    if systemd.systemd_running():
        subprocess.call(systemd._systemctl(scope, "status", "--no-pager", "--lines=5", systemd.UNIT_NAME))
    elif not systemd.unit_path(scope).exists():
        print(f"no {scope} service is installed ({systemd.unit_path(scope)} does not exist)")
    return daemon_status(config_of(args), scope)
