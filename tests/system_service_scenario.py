"""Runs inside a booted container (tests/booted_container.py), as root, as a unit of its systemd
(PID 1): `sudo trtd service install` and what a system-wide service must then do. It records
what it observes (commands, exit status, output, systemd properties) in a JSON file; the test on
the host judges it. Standard library only: it runs under the host's interpreter.

    python system_service_scenario.py SETTINGS.json RESULT.json
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

UNIT = "trtd.service"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
CLIENT = """
import sys, time
import numpy as np
from trtd.sdk import AccessDenied, Client, TrtdError
deadline = time.monotonic() + 60
while True:
    try:
        with Client(timeout=10, connect_timeout=10) as c:
            states = {m.name: m.state for m in c.models(wait=False)}
            if states.get("demo") == "ready":
                y = c.model("demo")(np.ones((2, 64), np.float32))
                print("OK", c.endpoint, y.shape)
                sys.exit(0)
    except AccessDenied as exc:
        print(f"REFUSED {type(exc).__name__}: {exc}")
        sys.exit(3)
    except TrtdError as exc:  # not serving yet (a restart): try again
        if time.monotonic() > deadline:
            print(f"REFUSED {type(exc).__name__}: {exc}")
            sys.exit(3)
        time.sleep(0.5)
        continue
    if time.monotonic() > deadline:
        print("NOT READY", states)
        sys.exit(4)
    time.sleep(0.5)
"""


class Scenario:
    def __init__(self, python: str, checkout_under_tmp: bool = False):
        self.python = python
        self.checkout_under_tmp = checkout_under_tmp
        self.result: dict = {"steps": {}}
        self.env = {"PATH": PATH, "LANG": "C.UTF-8"}

    def run(self, name: str, argv: list[str], user: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
        if user is not None:
            argv = ["runuser", "-u", user, "--", *argv]
        started = time.monotonic()
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=self.env)
        except subprocess.TimeoutExpired as exc:
            self.result["steps"][name] = {"argv": argv, "rc": "timeout", "out": str(exc.stdout)[-4000:]}
            raise
        self.result["steps"][name] = {"argv": argv, "rc": proc.returncode, "out": proc.stdout[-6000:],
                                      "err": proc.stderr[-6000:],
                                      "seconds": round(time.monotonic() - started, 2)}
        return proc

    def show(self, *props: str) -> dict[str, str]:
        out = subprocess.run(["systemctl", "show", UNIT, "-p", ",".join(props)], capture_output=True,
                             text=True, env=self.env).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def wait(self, what: str, predicate, timeout: float = 60, interval: float = 0.05) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                self.result.setdefault("waited", {})[what] = True
                return True
            time.sleep(interval)
        self.result.setdefault("waited", {})[what] = False
        return False

    def trtd(self, name: str, *args: str, user: str | None = None) -> subprocess.CompletedProcess:
        return self.run(name, [self.python, "-m", "trtd.daemon", *args], user=user)

    def client(self, name: str, user: str) -> subprocess.CompletedProcess:
        return self.run(name, [self.python, "-c", CLIENT], user=user, timeout=120)

    def unit_log(self) -> str:
        """The journal of the unit: the daemon's lines and systemd's about it."""
        return subprocess.run(["journalctl", "-u", UNIT, "-o", "cat", "--no-pager"], capture_output=True,
                              text=True, env=self.env).stdout

    def main_pid(self) -> int:
        return int(self.show("MainPID")["MainPID"])

    def go(self) -> None:
        r = self.result
        # The account the service runs as must reach the interpreter (README: install into a
        # venv under /opt); the host's lives under /root here: open /root for traversal only,
        # in this container's copy of the file system.
        if os.path.realpath(self.python).startswith("/root/"):
            os.chmod("/root", 0o711)
        if self.checkout_under_tmp:
            # The unit's PrivateTmp=yes would hide an interpreter installed under /tmp (install
            # warns about it): a drop-in for this checkout only, recorded for the test.
            dropin = Path("/etc/systemd/system/trtd.service.d")
            dropin.mkdir(parents=True, exist_ok=True)
            (dropin / "checkout-in-tmp.conf").write_text("[Service]\nPrivateTmp=no\n")
            r["private_tmp_dropin"] = True
        self.trtd("install", "service", "install")
        r["after_install"] = self.show("ActiveState", "SubState", "Type", "User", "Group", "UMask",
                                       "StatusText", "WatchdogUSec", "UnitFileState", "ProtectSystem",
                                       "PrivateTmp", "NoNewPrivileges", "DevicePolicy", "RuntimeDirectory")
        self.run("add_member", ["useradd", "--create-home", "--groups", "trtd", "alice"])
        self.run("add_outsider", ["useradd", "--create-home", "bob"])
        self.client("member_infers", user="alice")
        self.client("outsider_infers", user="bob")
        self.trtd("member_status", "service", "status", user="alice")
        import grp
        import pwd

        pid = self.main_pid()
        status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
        uid, gid = int(status["Uid"].split()[1]), int(status["Gid"].split()[1])  # effective ids
        r["main_pid_user"] = [pwd.getpwuid(uid).pw_name, grp.getgrgid(gid).gr_name]
        st = os.stat("/run/trtd")
        sock = os.stat("/run/trtd/trtd.sock")
        r["runtime_dir"] = [oct(st.st_mode & 0o7777), st.st_uid, st.st_gid]
        r["socket"] = [oct(sock.st_mode & 0o7777), sock.st_uid, sock.st_gid]
        r["trtd_ids"] = [pwd.getpwnam("trtd").pw_uid, grp.getgrnam("trtd").gr_gid]
        journal = self.run("journal", ["journalctl", "-u", UNIT, "-o", "json", "--no-pager"]).stdout
        r["journal"] = [{"MESSAGE": e.get("MESSAGE"), "PRIORITY": e.get("PRIORITY")}
                        for e in map(json.loads, journal.splitlines())
                        if isinstance(e.get("MESSAGE"), str) and "trtd" in e.get("MESSAGE", "")][:40]
        # A crash: Restart=on-failure.
        self.run("kill", ["kill", "-KILL", str(pid)])
        # systemd's verdict: Result= shows it only until the restart (RestartSec=2s) resets it,
        # however slowly this looks; the journal keeps it.
        r["crash_result_seen"] = self.wait("crash result",
                                           lambda: "Failed with result 'signal'" in self.unit_log(), 30)
        r["restarted"] = self.wait("restart", lambda: self.main_pid() not in (0, pid)
                                   and self.show("ActiveState")["ActiveState"] == "active", 60)
        r["after_restart"] = self.show("NRestarts", "ActiveState", "StatusText")
        r["failures_logged"] = [line for line in self.unit_log().splitlines() if "Failed with result" in line]
        self.client("member_infers_after_restart", user="alice")
        pid = self.main_pid()
        self.run("reload", ["systemctl", "reload", UNIT])
        r["reload_same_pid"] = self.main_pid() == pid
        r["after_reload"] = self.show("ActiveState", "SubState")
        self.trtd("stop", "service", "stop")
        r["after_stop"] = self.show("ActiveState", "Result", "ExecMainStatus", "ExecMainCode")
        r["journal_at_stop"] = self.unit_log().splitlines()[-30:]  # what a failed stop shows
        r["socket_after_stop"] = os.path.exists("/run/trtd/trtd.sock")
        self.trtd("uninstall", "service", "uninstall")
        r["after_uninstall"] = self.show("LoadState")
        r["unit_file_after_uninstall"] = os.path.exists("/etc/systemd/system/trtd.service")


def main() -> int:
    settings = json.loads(Path(sys.argv[1]).read_text())
    scenario = Scenario(settings["python"], settings.get("checkout_under_tmp", False))
    try:
        scenario.go()
    except BaseException:
        scenario.result["error"] = traceback.format_exc()
    Path(sys.argv[2]).write_text(json.dumps(scenario.result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
