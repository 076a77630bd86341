"""What differs between Linux and Windows, in one place: paths, endpoints, shared-memory names,
signals, DLL search. Everything here is plain logic that can be tested on either OS; the few
calls that only exist on one OS are guarded where they are made.

Scopes: "system" is the service a machine runs for everyone (systemd system unit, Windows
service as LocalSystem); "user" is one user's daemon (systemd --user unit, `trtd serve`).

| what              | Linux system              | Linux user                      | Windows system                 | Windows user                 |
|-------------------|---------------------------|---------------------------------|--------------------------------|------------------------------|
| config            | /etc/trtd/trtd.toml       | $XDG_CONFIG_HOME/trtd/trtd.toml | %ProgramData%\\trtd\\trtd.toml | %APPDATA%\\trtd\\trtd.toml   |
| cache (engines)   | /var/cache/trtd           | $XDG_CACHE_HOME/trtd            | %ProgramData%\\trtd\\cache     | %LOCALAPPDATA%\\trtd\\cache  |
| state             | /var/lib/trtd             | $XDG_STATE_HOME/trtd            | %ProgramData%\\trtd\\state     | %LOCALAPPDATA%\\trtd\\state  |
| logs              | journald                  | journald                        | %ProgramData%\\trtd\\logs      | %LOCALAPPDATA%\\trtd\\logs   |
| endpoint          | ipc:///run/trtd/trtd.sock | ipc://$XDG_RUNTIME_DIR/trtd/... | tcp://127.0.0.1:47810          | tcp://127.0.0.1:47810        |

TRTD_CACHE_DIR overrides the cache folder in every scope (the service units set it).

For this OS and this process's own environment, the user folders and ProgramData come from
platformdirs: it follows the XDG spec where a hand-written lookup is easily wrong (a relative
$XDG_CONFIG_HOME is ignored, not resolved against a service's working directory) and on
Windows asks the shell's Known Folder API rather than trusting %APPDATA% to be set. The same
table for the other OS, or for a given environment (printed instructions, tests), is computed
from the variables above; the system scope's Linux paths are the FHS ones the units use
(/etc/trtd, not platformdirs' /etc/xdg/trtd).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Callable, Iterable, Mapping

# Endpoints stay in trtd.protocol.endpoint: the SDK needs them without importing the daemon.
from trtd.protocol.endpoint import (DEFAULT_TCP_PORT, SYSTEM_SOCKET, default_endpoint,  # noqa: F401
                                    runtime_dir)

SCOPES = ("system", "user")
SERVICE_NAME = "trtd"
# The group whose members may use a system-wide daemon (enforced by the access layer).
SERVICE_GROUP = "trtd"
# The system daemon's socket: systemd's RuntimeDirectory=trtd makes /run/trtd for it.
SYSTEM_RUNTIME_DIR = SYSTEM_SOCKET.parent
SYSTEM_ENDPOINT_POSIX = f"ipc://{SYSTEM_SOCKET}"

IS_WINDOWS = sys.platform == "win32"


def _home(windows: bool) -> PurePath:
    return _path_type(windows)(Path.home())


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")


def _path_type(windows: bool) -> type:
    # Windows paths computed on Linux (in tests, and for printed instructions) stay Windows paths.
    if windows == IS_WINDOWS:
        return Path
    return PureWindowsPath if windows else PurePosixPath


def _native(windows: bool, environ: Mapping[str, str], roaming: bool = False):
    """platformdirs for trtd when the table is asked for this OS and this process's own
    environment; None otherwise (then the variables in `environ` decide)."""
    if windows != IS_WINDOWS or environ is not os.environ:
        return None
    import platformdirs

    return platformdirs.PlatformDirs("trtd", appauthor=False, roaming=roaming)


def _env_dir(environ: Mapping[str, str], key: str, fallback: PurePath, windows: bool) -> PurePath:
    value = environ.get(key)
    return _path_type(windows)(value) if value else fallback


def program_data(environ: Mapping[str, str] | None = None, windows: bool = IS_WINDOWS) -> PurePath:
    # LocalSystem's profile (C:\Windows\System32\config\systemprofile) is not the users':
    # machine-wide files go under ProgramData, which every account can find.
    environ = os.environ if environ is None else environ
    native = _native(windows, environ)
    if native is not None:  # CSIDL_COMMON_APPDATA: ProgramData
        return Path(native.site_data_dir).parent
    return _path_type(windows)(environ.get("ProgramData") or environ.get("PROGRAMDATA") or r"C:\ProgramData")


def config_path(scope: str = "user", windows: bool = IS_WINDOWS,
                environ: Mapping[str, str] | None = None) -> PurePath:
    """Where `trtd service install` writes the config, and where `trtd config check` looks."""
    _check_scope(scope)
    environ = os.environ if environ is None else environ
    if scope == "user" and (native := _native(windows, environ, roaming=True)) is not None:
        return Path(native.user_config_dir) / "trtd.toml"
    if windows:
        if scope == "system":
            return program_data(environ, windows) / "trtd" / "trtd.toml"
        return _env_dir(environ, "APPDATA", _home(windows) / "AppData" / "Roaming", windows) / "trtd" / "trtd.toml"
    if scope == "system":
        return Path("/etc/trtd/trtd.toml")
    return _env_dir(environ, "XDG_CONFIG_HOME", _home(windows) / ".config", windows) / "trtd" / "trtd.toml"


def cache_dir(scope: str = "user", windows: bool = IS_WINDOWS,
              environ: Mapping[str, str] | None = None) -> PurePath:
    """Engines, built-in models, converted variants. TRTD_CACHE_DIR wins in every scope."""
    _check_scope(scope)
    environ = os.environ if environ is None else environ
    if environ.get("TRTD_CACHE_DIR"):
        return _path_type(windows)(environ["TRTD_CACHE_DIR"])
    if scope == "user" and (native := _native(windows, environ)) is not None:
        # Windows: %LOCALAPPDATA%\trtd\cache as documented (platformdirs' own is ...\Cache)
        return Path(native.user_data_dir) / "cache" if windows else Path(native.user_cache_dir)
    if windows:
        if scope == "system":
            return program_data(environ, windows) / "trtd" / "cache"
        return _env_dir(environ, "LOCALAPPDATA", _home(windows) / "AppData" / "Local", windows) / "trtd" / "cache"
    if scope == "system":
        return Path("/var/cache/trtd")
    return _env_dir(environ, "XDG_CACHE_HOME", _home(windows) / ".cache", windows) / "trtd"


def state_dir(scope: str = "user", windows: bool = IS_WINDOWS,
              environ: Mapping[str, str] | None = None) -> PurePath:
    _check_scope(scope)
    environ = os.environ if environ is None else environ
    if scope == "user" and (native := _native(windows, environ)) is not None:
        return Path(native.user_data_dir) / "state" if windows else Path(native.user_state_dir)
    if windows:
        if scope == "system":
            return program_data(environ, windows) / "trtd" / "state"
        return _env_dir(environ, "LOCALAPPDATA", _home(windows) / "AppData" / "Local", windows) / "trtd" / "state"
    if scope == "system":
        return Path("/var/lib/trtd")
    return _env_dir(environ, "XDG_STATE_HOME", _home(windows) / ".local" / "state", windows) / "trtd"


def log_dir(scope: str = "user", windows: bool = IS_WINDOWS,
            environ: Mapping[str, str] | None = None) -> PurePath:
    """File logs (Windows service); on Linux the service logs to journald instead."""
    base = state_dir(scope, windows, environ)
    return base.with_name("logs") if windows else base / "logs"


def service_endpoint(scope: str, windows: bool = IS_WINDOWS) -> str:
    """The endpoint an installed service listens on (written into its config)."""
    _check_scope(scope)
    if windows:
        return f"tcp://127.0.0.1:{DEFAULT_TCP_PORT}"
    if scope == "system":
        return SYSTEM_ENDPOINT_POSIX
    return default_endpoint()


# -- shared memory naming and security (Windows) ---------------------------------------------------


def windows_mapping_name(name: str, global_namespace: bool) -> str:
    """The kernel object name of a region's file mapping.

    A service runs in session 0; user processes run in their own sessions, and a plain name
    lives in the creating session's Local\\ namespace, invisible to them. Global\\ names are
    machine-wide (creating one needs SeCreateGlobalPrivilege, which services have).
    """
    if "\\" in name:
        raise ValueError(f"a region name must not contain a backslash: {name!r}")
    return f"Global\\{name}" if global_namespace else name


def windows_service_mappings(environ: Mapping[str, str] | None = None,
                             windows: bool = IS_WINDOWS) -> bool:
    """Regions as a Windows service makes them (Global\\ names, explicit DACL)? The service
    runner sets TRTD_SHM_GLOBAL=1; a daemon run by a user keeps Python's default mappings,
    which its own user's clients can open."""
    environ = os.environ if environ is None else environ
    return windows and environ.get("TRTD_SHM_GLOBAL") == "1"


def mapping_allowed_sids(environ: Mapping[str, str] | None = None) -> list[str]:
    """Who may map a service's regions besides SYSTEM, Administrators and the daemon's account:
    TRTD_SHM_ALLOW (comma-separated SID strings or SDDL aliases), by default IU (interactive
    users: the people logged on at the machine)."""
    environ = os.environ if environ is None else environ
    value = environ.get("TRTD_SHM_ALLOW", "IU")
    return [sid.strip() for sid in value.split(",") if sid.strip()]


def mapping_sddl(allowed_sids: Iterable[str] = ()) -> str:
    """SDDL of a region mapping's security descriptor: full access for SYSTEM, Administrators
    and the daemon's own account (OW: owner), read/write for each allowed SID (e.g. the trtd
    group's), nothing for anyone else. Protected (P): no inherited ACEs widen it.

    FILE_MAP_READ|FILE_MAP_WRITE = 0x0006 (SECTION_MAP_READ|SECTION_MAP_WRITE) plus
    SECTION_QUERY 0x0001 so that clients can ask the size.
    """
    aces = ["(A;;GA;;;SY)", "(A;;GA;;;BA)", "(A;;GA;;;OW)"]
    for sid in allowed_sids:
        if not sid or any(c in sid for c in "();"):
            raise ValueError(f"not a SID string: {sid!r}")
        aces.append(f"(A;;0x0007;;;{sid})")
    return "D:P" + "".join(aces)


def token_file_sddl(readers: Iterable[str] = ()) -> str:
    """SDDL of a token file on Windows: full access for SYSTEM, Administrators and the owner (the
    daemon's account), read for each reader SID, nothing for anyone else; protected (P), because
    the folder's inherited ACL (ProgramData: every user may read) must not apply."""
    aces = ["(A;;FA;;;SY)", "(A;;FA;;;BA)", "(A;;FA;;;OW)"]
    for sid in readers:
        if not sid or any(c in sid for c in "();"):
            raise ValueError(f"not a SID string: {sid!r}")
        aces.append(f"(A;;FR;;;{sid})")
    return "D:P" + "".join(aces)


def restrict_token_file(path: str, readers: Iterable[str] = ()) -> bool:
    """Windows: give the (still empty) token file at `path` the DACL of token_file_sddl.
    False where that cannot be done: not Windows, or pywin32 missing (a user's own daemon, whose
    runtime folder under %LOCALAPPDATA% is private to the user anyway). Unverified on Windows."""
    if not IS_WINDOWS:
        return False
    try:
        import win32security
    except ImportError:
        return False
    descriptor = win32security.ConvertStringSecurityDescriptorToSecurityDescriptor(
        token_file_sddl(readers), win32security.SDDL_REVISION_1)
    win32security.SetFileSecurity(
        path, win32security.DACL_SECURITY_INFORMATION | win32security.PROTECTED_DACL_SECURITY_INFORMATION,
        descriptor)
    return True


# -- signals -----------------------------------------------------------------------------------------


def install_signal_handlers(stop: Callable[[], None], reload: Callable[[], None]) -> list[str]:
    """stop on SIGTERM/SIGINT (and SIGBREAK on Windows), reload on SIGHUP where it exists.

    Returns the names of the signals handled, for the log. The Windows service manager does
    not send signals: the service glue calls the same stop() on its stop request.
    """
    handled = []
    # Where a watcher thread acts on signals (POSIX), the Python-level handlers only have to
    # exist (the interpreter writes the wakeup fd for signals that have one) and do nothing:
    # a handler that took a lock could deadlock when a second signal interrupts the first.
    watched = _watch_signal_arrivals(stop, reload)
    on_stop = (lambda *_: None) if watched else (lambda *_: stop())
    on_reload = (lambda *_: None) if watched else (lambda *_: reload())
    for name in ("SIGTERM", "SIGINT", "SIGBREAK"):
        sig = getattr(signal, name, None)
        if sig is not None:
            signal.signal(sig, on_stop)
            handled.append(name)
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, on_reload)
        handled.append("SIGHUP")
    return handled


def _watch_signal_arrivals(stop: Callable[[], None], reload: Callable[[], None]) -> bool:
    """Act on a signal the moment it arrives, not when the main thread next runs Python.

    Python runs a signal handler on the main thread between bytecodes; while that thread is
    inside a long backend call (a request of a one-instance model runs there) a SIGTERM would
    wait for it, and so would the stop's deadline. The interpreter also writes each signal's
    number to the wakeup fd from its C-level handler at once: a thread reading it calls the
    same (idempotent) stop/reload. POSIX only: on Windows the service's stop handler already
    runs on its own thread (and a console's Ctrl+C waits for the main thread, as before).
    Returns whether the watcher runs (once per process)."""
    global _signal_watcher_started
    if sys.platform == "win32" or threading.current_thread() is not threading.main_thread():
        return False
    if _signal_watcher_started:
        return True
    actions = {int(signal.SIGTERM): stop, int(signal.SIGINT): stop, int(signal.SIGHUP): reload}
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)

    def watch() -> None:
        while True:
            for signum in os.read(read_fd, 64):
                action = actions.get(signum)
                if action is None:
                    continue
                try:
                    action()
                except Exception:  # the watcher must outlive one failed action
                    import logging

                    logging.getLogger("trtd.server").exception("handling signal %d failed", signum)

    threading.Thread(target=watch, name="trtd-signals", daemon=True).start()
    _signal_watcher_started = True
    return True


_signal_watcher_started = False


def raise_fd_limit() -> None:
    """Each region holds two descriptors: allow as many as the hard limit does (POSIX)."""
    if sys.platform == "win32":
        return
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def fd_limit() -> int | None:
    """How many descriptors this process may open (the soft limit), None where unlimited or
    unknown (Windows: no such limit on handles that matters here)."""
    if sys.platform == "win32":
        return None
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return None if soft == resource.RLIM_INFINITY else soft


# -- DLL search (Windows) -------------------------------------------------------------------------

# Files whose folder must be on the DLL search path for CUDA / TensorRT / cuDNN to load.
_DLL_MARKERS = ("cudart64_", "nvinfer", "cudnn64_", "cublas64_")


def dll_directories(environ: Mapping[str, str], listdir: Callable[[str], list[str]]) -> list[str]:
    """Folders to pass to os.add_dll_directory, in search order, without duplicates.

    Python >= 3.8 no longer searches PATH for the dependencies of extension modules, so
    CUDA's and TensorRT's folders must be added explicitly: TRTD_DLL_DIRS (os.pathsep-
    separated, first), CUDA_PATH and every CUDA_PATH_V*_* (their bin\\ and bin\\x64\\), then any
    PATH entry that holds one of the CUDA/TensorRT DLLs.
    """
    sep = ";"
    candidates: list[str] = []
    candidates += [p for p in environ.get("TRTD_DLL_DIRS", "").split(sep) if p]
    cuda_roots = [environ["CUDA_PATH"]] if environ.get("CUDA_PATH") else []
    cuda_roots += [v for k, v in sorted(environ.items()) if k.upper().startswith("CUDA_PATH_V") and v]
    for root in cuda_roots:
        candidates += [root.rstrip("\\/") + "\\bin", root.rstrip("\\/") + "\\bin\\x64"]
    for entry in environ.get("PATH", "").split(sep):
        if not entry:
            continue
        try:
            names = [n.lower() for n in listdir(entry)]
        except OSError:
            continue
        if any(n.startswith(_DLL_MARKERS) and n.endswith(".dll") for n in names):
            candidates.append(entry)
    seen, result = set(), []
    for c in candidates:
        key = c.lower().rstrip("\\/")
        if key not in seen:
            seen.add(key)
            result.append(c)
    return result


def add_dll_directories() -> list[str]:
    """On Windows, add the CUDA/TensorRT folders that exist; returns those added."""
    if sys.platform != "win32":  # spelled out so that type checkers know the branch
        return []
    added = []
    for folder in dll_directories(os.environ, os.listdir):
        if os.path.isdir(folder):
            os.add_dll_directory(folder)
            added.append(folder)
    return added
