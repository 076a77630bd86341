"""Boot this machine's own OS under systemd as PID 1, in a throwaway container, to run one script.

The machines here are not booted with systemd. systemd-nspawn (Debian's systemd-container, which
.ci/run installs) boots a container whose root is an overlay: the host's / read-only below, a
tmpfs above that takes every write (users added, units installed, /tmp cleaned at boot), all in
a private mount namespace with a tmpfs over /run, so nothing of it reaches the host. The script
runs as a oneshot unit once multi-user.target is up, then the container powers off. Only `out`
(bound at /trtd-out) is shared, for its settings and its result.

Needs root, systemd-nspawn, overlayfs and /lib/systemd/systemd.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

OUT_INSIDE = "/trtd-out"


def unavailable() -> str | None:
    if os.name != "posix" or not Path("/proc/self/ns/mnt").exists():
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn, mounts)"
    if shutil.which("systemd-nspawn") is None:
        return "needs systemd-nspawn (Debian's systemd-container package: .ci/run installs it)"
    if not Path("/lib/systemd/systemd").exists():
        return "needs /lib/systemd/systemd (Debian's systemd package)"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "sh", "-c",
                            "mount -t tmpfs p /mnt && mkdir /mnt/u /mnt/w /mnt/r && "
                            "mount -t overlay o -o lowerdir=/,upperdir=/mnt/u,workdir=/mnt/w /mnt/r"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"this machine refuses a private overlay of / ({probe.stderr.strip()})"
    return None


def boot_and_run(out: Path, argv: list[str], timeout_s: int = 420) -> subprocess.CompletedProcess:
    """Boot the container, run argv as root in a unit after multi-user.target, power off.
    Returns nspawn's completed process (its output is the container's console)."""
    out.mkdir(parents=True, exist_ok=True)
    command = " ".join(shlex.quote(a) for a in argv)
    unit = "\n".join([
        "[Unit]", "Description=trtd system-service scenario", "After=multi-user.target", "",
        "[Service]", "Type=oneshot", f"ExecStart={command}", "TimeoutStartSec=360",
        "StandardOutput=journal+console", "StandardError=journal+console",
        # Power off however the scenario ends, so the container (and the test) never hang.
        "ExecStopPost=/bin/systemctl poweroff --no-block", "",
        "[Install]", "WantedBy=multi-user.target", ""])
    script = "\n".join([
        "set -e",
        "mount -t tmpfs trtd-ctr /run",  # nspawn keeps its own state here: not the host's /run
        "mkdir -p /run/ctr/upper /run/ctr/work /run/ctr/root",
        "mount -t overlay overlay -o lowerdir=/,upperdir=/run/ctr/upper,workdir=/run/ctr/work /run/ctr/root",
        "U=/run/ctr/upper/etc/systemd/system",
        "mkdir -p $U/multi-user.target.wants",
        # nspawn refuses a container whose machine id is the host's.
        "echo 5f0e1d2c3b4a59687766554433221100 > /run/ctr/upper/etc/machine-id",
        f"cat > $U/trtd-scenario.service <<'UNIT'\n{unit}UNIT",
        "ln -s ../trtd-scenario.service $U/multi-user.target.wants/trtd-scenario.service",
        # The boot empties /tmp (tmp.conf's `D`): keep it, the checkout may live there.
        "mkdir -p /run/ctr/upper/etc/tmpfiles.d",
        "echo 'd /tmp 1777 root root -' > /run/ctr/upper/etc/tmpfiles.d/tmp.conf",
        # nspawn would mount an empty tmpfs on /tmp: keep the host's view (the checkout may be
        # there). The journal goes to the console (nspawn's output): what a failure shows.
        f"SYSTEMD_NSPAWN_TMPFS_TMP=0 exec timeout {timeout_s} systemd-nspawn --quiet -D /run/ctr/root "
        f"--boot --register=no --keep-unit --link-journal=no --private-network --console=pipe "
        f"--bind={shlex.quote(str(out))}:{OUT_INSIDE} systemd.journald.forward_to_console=1",
    ])
    return subprocess.run(["unshare", "--mount", "--propagation", "private", "bash", "-c", script],
                          capture_output=True, text=True, timeout=timeout_s + 30)
