"""The Windows service: a thin pywin32 adapter around ServiceRunner (service/runner.py).

Installed by `trtd service install` (an elevated prompt), it runs as LocalSystem in session 0:
regions get Global\\ names and an explicit DACL (daemon/system/winshm.py), caches and logs live under
%ProgramData%\\trtd, CUDA/TensorRT DLL folders are added with os.add_dll_directory, warnings and
errors also go to the Application event log. The service host (pythonservice.exe) is set up to
run from this interpreter's virtual environment (service_host_files).

NOT RUN ON WINDOWS YET: type-checked with `mypy --platform win32`; its logic (runner, file
lists, paths, SDDL) is tested on Linux. The README says so.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path, PureWindowsPath

from trtd.daemon.system import platform

from .runner import ForwardHandler, ServiceRunner

SERVICE_NAME = platform.SERVICE_NAME
DISPLAY_NAME = "trtd inference daemon"
DESCRIPTION = "Serves TensorRT / ONNX Runtime / TorchScript models to local applications over shared memory."
CLASS_STRING = "trtd.service.windows.TrtdService"
CONFIG_OPTION = "config"  # stored under the service's Parameters key (SetServiceCustomOption)


def service_host_files(exec_prefix: str, base_exec_prefix: str, purelib: str,
                       version: tuple[int, int]) -> list[tuple[PureWindowsPath, PureWindowsPath]]:
    """(source, destination) pairs that let pythonservice.exe run from a virtual environment.

    The SCM starts pythonservice.exe with no user environment: it finds the venv through the
    pyvenv.cfg beside or above it (so it must sit in the venv's root, exec_prefix), and the
    DLLs it links against must be in its own folder: python3X.dll (in the base installation)
    and pywintypes3X.dll / pythoncom3X.dll (in pywin32_system32).
    """
    tag = f"{version[0]}{version[1]}"
    root, base, lib = PureWindowsPath(exec_prefix), PureWindowsPath(base_exec_prefix), PureWindowsPath(purelib)
    pairs = [(lib / "win32" / "pythonservice.exe", root / "pythonservice.exe"),
             (base / f"python{tag}.dll", root / f"python{tag}.dll"),
             (base / f"python{version[0]}.dll", root / f"python{version[0]}.dll")]
    for dll in (f"pywintypes{tag}.dll", f"pythoncom{tag}.dll"):
        pairs.append((lib / "pywin32_system32" / dll, root / dll))
    return pairs


def _prepare_service_host() -> str:
    purelib = sysconfig.get_paths()["purelib"]
    for source, target in service_host_files(sys.exec_prefix, sys.base_exec_prefix, purelib,
                                             sys.version_info[:2]):
        if Path(str(source)).exists() and not Path(str(target)).exists():
            shutil.copy2(str(source), str(target))
    return str(PureWindowsPath(sys.exec_prefix) / "pythonservice.exe")


def install_plan(config: Path, config_exists: bool, exec_prefix: str) -> list[str]:
    """What `trtd service install` does on Windows, step by step (`--print` shows it)."""
    exe = PureWindowsPath(exec_prefix) / "pythonservice.exe"
    steps = [] if config_exists else [f"write {config} (the demo model)"]
    steps += [f"copy pythonservice.exe and the Python/pywin32 DLLs into {PureWindowsPath(exec_prefix)}",
              f"install the service {SERVICE_NAME} ({DISPLAY_NAME}), automatic start, host {exe}",
              f"set its {CONFIG_OPTION} option to {config}",
              f"sc.exe failure {SERVICE_NAME}: restart after 5 s, 5 s, 30 s",
              f"start {SERVICE_NAME}"]
    return ["# Not installing (as asked). Steps (an elevated prompt runs them):",
            *(f"#  {i}. {step}" for i, step in enumerate(steps, 1))]


if sys.platform == "win32":
    import servicemanager
    import win32service
    import win32serviceutil

    class TrtdService(win32serviceutil.ServiceFramework):
        _svc_name_ = SERVICE_NAME
        _svc_display_name_ = DISPLAY_NAME
        _svc_description_ = DESCRIPTION

        def __init__(self, args):
            super().__init__(args)
            config = win32serviceutil.GetServiceCustomOption(SERVICE_NAME, CONFIG_OPTION,
                                                             str(platform.config_path("system")))
            event_log = ForwardHandler(servicemanager.LogWarningMsg, servicemanager.LogErrorMsg)
            self.runner = ServiceRunner(Path(config), "system", event_log=event_log,
                                        before_exit=self._report_stopped_before_exit, own_process=True)
            self._stop_progress: threading.Thread | None = None

        def SvcRun(self) -> None:
            # Running is reported once the socket serves (not before, as the base class does).
            self.ReportServiceStatus(win32service.SERVICE_START_PENDING, waitHint=60000)
            servicemanager.LogMsg(servicemanager.EVENTLOG_INFORMATION_TYPE,
                                  servicemanager.PYS_SERVICE_STARTED, (self._svc_name_, ""))
            try:
                self.runner.run(on_running=lambda: self.ReportServiceStatus(win32service.SERVICE_RUNNING))
            except BaseException as exc:
                servicemanager.LogErrorMsg(f"trtd service failed: {type(exc).__name__}: {exc}")
                # A service-specific exit code makes the SCM's recovery actions restart it.
                self._join_stop_progress()
                self.ReportServiceStatus(win32service.SERVICE_STOPPED, win32ExitCode=1066, svcExitCode=1)
                return
            self._join_stop_progress()  # no STOP_PENDING may follow SERVICE_STOPPED
            servicemanager.LogMsg(servicemanager.EVENTLOG_INFORMATION_TYPE,
                                  servicemanager.PYS_SERVICE_STOPPED, (self._svc_name_, ""))
            self.ReportServiceStatus(win32service.SERVICE_STOPPED)

        def SvcStop(self) -> None:
            # The drain takes up to drain_timeout_s: STOP_PENDING with a waitHint of what is left
            # of it plus close time, again every few seconds (a new checkpoint each time).
            self.runner.stop()
            if self._stop_progress is None:
                self._stop_progress = threading.Thread(
                    target=self.runner.report_stop_progress, name="trtd-stop-progress", daemon=True,
                    args=(lambda hint: self.ReportServiceStatus(win32service.SERVICE_STOP_PENDING,
                                                                waitHint=hint),))
                self._stop_progress.start()

        def _report_stopped_before_exit(self) -> None:
            # The daemon exits without returning (a stop past its bound): STOPPED first, so the
            # service manager sees a stop, not a crash to recover from.
            self.runner.stopped.set()  # ends the STOP_PENDING reports
            self._join_stop_progress()
            self.ReportServiceStatus(win32service.SERVICE_STOPPED)

        def _join_stop_progress(self) -> None:
            if self._stop_progress is not None:
                self._stop_progress.join()

        def SvcShutdown(self) -> None:
            self.SvcStop()

    _STATES = {win32service.SERVICE_STOPPED: "stopped", win32service.SERVICE_START_PENDING: "starting",
               win32service.SERVICE_STOP_PENDING: "stopping", win32service.SERVICE_RUNNING: "running"}

    def install(config: Path) -> int:
        exe = _prepare_service_host()
        win32serviceutil.InstallService(CLASS_STRING, SERVICE_NAME, DISPLAY_NAME,
                                        startType=win32service.SERVICE_AUTO_START, exeName=exe,
                                        description=DESCRIPTION)
        win32serviceutil.SetServiceCustomOption(SERVICE_NAME, CONFIG_OPTION, str(config))
        # Restart on failure (the SCM's equivalent of systemd's Restart=on-failure).
        subprocess.call(["sc.exe", "failure", SERVICE_NAME, "reset=", "86400",
                         "actions=", "restart/5000/restart/5000/restart/30000"])
        subprocess.call(["sc.exe", "failureflag", SERVICE_NAME, "1"])
        win32serviceutil.StartService(SERVICE_NAME)
        return 0

    def main(args) -> int:
        from .commands import config_of, daemon_status
        from .config_template import default_config_text

        if args.user:
            print("a per-user Windows service is not supported; run `trtd serve` at logon, e.g.: "
                  f'schtasks /Create /SC ONLOGON /TN trtd /TR "{sys.executable} -m trtd.daemon serve"')
            return 2
        config = config_of(args)
        if args.action == "install" and args.print_only:
            print("\n".join(install_plan(config, config.exists(), sys.exec_prefix)))
            return 0
        if args.action == "install":
            if not config.exists():
                config.parent.mkdir(parents=True, exist_ok=True)
                config.write_text(default_config_text("system", windows=True), encoding="utf-8")
            return install(config)
        if args.action == "uninstall":
            try:
                win32serviceutil.StopService(SERVICE_NAME)
            except Exception:
                pass
            win32serviceutil.RemoveService(SERVICE_NAME)
            return 0
        if args.action == "start":
            win32serviceutil.StartService(SERVICE_NAME)
            return 0
        if args.action == "stop":
            win32serviceutil.StopService(SERVICE_NAME)
            return 0
        state = win32serviceutil.QueryServiceStatus(SERVICE_NAME)[1]
        print(f"service {SERVICE_NAME}: {_STATES.get(state, str(state))}")
        return daemon_status(config, "system")

    if __name__ == "__main__":
        win32serviceutil.HandleCommandLine(TrtdService)
else:
    def main(args) -> int:
        print("the Windows service exists on Windows only", file=sys.stderr)
        return 2
