"""A real systemd user manager (systemd --user) for tests, in a private mount namespace.

The CI and development machines are not booted with systemd, but Debian's systemd package is
installed there (.ci/run). A user manager runs fine without PID 1 being systemd once sd_booted()
holds, i.e. /run/systemd/system exists; that directory is created on a tmpfs mounted in a
private mount namespace, so the machine's own /run is never touched. Every command that must
see the manager as systemd does (`trtd service ...`, systemctl) runs in that namespace through
nsenter. Its units, state, cache and runtime folders are all under the test's tmp_path.

Needs root (mount namespaces), unshare/nsenter (util-linux) and /lib/systemd/systemd.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

SYSTEMD = Path("/lib/systemd/systemd")


def unavailable() -> str | None:
    """Why a live user manager cannot run here, or None."""
    if not os.path.exists("/proc/self/ns/mnt") or os.name != "posix":
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (a private mount namespace for /run/systemd/system)"
    for tool in ("unshare", "nsenter", "systemctl"):
        if shutil.which(tool) is None:
            return f"needs {tool} (util-linux / Debian's systemd package)"
    if not SYSTEMD.exists():
        return f"needs {SYSTEMD} (Debian's systemd package: .ci/run installs it)"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs trtd-probe /mnt"], capture_output=True, text=True)
    if probe.returncode != 0:
        return f"this machine refuses a private mount namespace: {probe.stderr.strip()}"
    return None


class UserManager:
    def __init__(self, root: Path):
        self.root = root
        home = root / "home"
        self.env = dict(os.environ)
        self.env.update({
            "HOME": str(home),
            "XDG_RUNTIME_DIR": str(root / "xdg-run"),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "XDG_CACHE_HOME": str(home / ".cache"),
            "XDG_STATE_HOME": str(home / ".local" / "state"),
            "XDG_DATA_HOME": str(home / ".local" / "share"),
        })
        for var in ("TRTD_RUNTIME_DIR", "TRTD_ENDPOINT", "TRTD_CACHE_DIR", "NOTIFY_SOCKET",
                    "DBUS_SESSION_BUS_ADDRESS"):
            self.env.pop(var, None)
        for key in ("HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME", "XDG_DATA_HOME"):
            Path(self.env[key]).mkdir(parents=True, exist_ok=True)
        runtime = Path(self.env["XDG_RUNTIME_DIR"])
        runtime.mkdir(mode=0o700, exist_ok=True)
        self._namespace: subprocess.Popen | None = None
        self._manager: subprocess.Popen | None = None
        self.log_path = root / "systemd-user.log"

    def start(self) -> None:
        # The namespace holder: a tmpfs over /run (the machine's own stays untouched) with
        # systemd/system/ in it, then waits; nsenter joins it.
        script = ("mount -t tmpfs trtd-live-test /run && mkdir -p /run/systemd/system && "
                  "echo ready && exec sleep infinity")
        self._namespace = subprocess.Popen(["unshare", "--mount", "--propagation", "private",
                                            "sh", "-c", script], stdout=subprocess.PIPE, text=True)
        assert self._namespace.stdout is not None
        line = self._namespace.stdout.readline().strip()
        if line != "ready":
            raise RuntimeError(f"could not prepare the mount namespace (got {line!r})")
        with open(self.log_path, "ab") as log:  # what the generators it runs print
            self._manager = subprocess.Popen(self._in_namespace([str(SYSTEMD), "--user"]), env=self.env,
                                             stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            state = self.run(["systemctl", "--user", "is-system-running"]).stdout.strip()
            if state in ("running", "degraded"):
                return
            if self._manager.poll() is not None:
                break
            time.sleep(0.1)
        raise RuntimeError(f"systemd --user did not come up: {self.log_path.read_text()}")

    def _in_namespace(self, argv: list[str]) -> list[str]:
        assert self._namespace is not None
        return ["nsenter", "--target", str(self._namespace.pid), "--mount", "--", *argv]

    def run(self, argv: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a command where the user manager is systemd (as `trtd service` would)."""
        return subprocess.run(self._in_namespace(argv), env=self.env, capture_output=True,
                              text=True, timeout=timeout)

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run(["systemctl", "--user", "show", unit, "-p", ",".join(props)]).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def stop(self) -> None:
        for proc in (self._manager, self._namespace):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
