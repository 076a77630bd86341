"""Where a daemon listens by default; shared so that the SDK and daemon agree.

POSIX: an ipc:// socket in the user's runtime directory (XDG_RUNTIME_DIR, which
systemd makes private to the user, else a private folder under /tmp).
Windows: loopback TCP, because libzmq's ipc transport is not available there.
TRTD_ENDPOINT overrides both, on either side.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

ENDPOINT_ENV = "TRTD_ENDPOINT"
DEFAULT_TCP_PORT = 47810


def runtime_dir() -> Path:
    """The per-user folder for the socket and lock file (created 0700 by the daemon)."""
    explicit = os.environ.get("TRTD_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or tempfile.gettempdir()
        return Path(base) / "trtd" / "run"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg):
        return Path(xdg) / "trtd"
    return Path(tempfile.gettempdir()) / f"trtd-{os.getuid()}"


# Where a system-wide service (systemd unit of `trtd service install`) listens.
SYSTEM_SOCKET = Path("/run/trtd/trtd.sock")


def default_endpoint(discover: bool = False) -> str:
    """The per-user endpoint; with discover (clients), the system service's socket when the
    user runs no daemon of their own and a system service is there."""
    if sys.platform == "win32":
        return f"tcp://127.0.0.1:{DEFAULT_TCP_PORT}"
    own = runtime_dir() / "trtd.sock"
    # A system socket this user may not even look at (not in the `trtd` group: /run/trtd is
    # 0750) is still the one meant: connecting then says why it is refused, and what to do.
    if discover and not _present(own) and _present(SYSTEM_SOCKET):
        return f"ipc://{SYSTEM_SOCKET}"
    return f"ipc://{own}"


def resolve_endpoint(explicit: str | None = None, discover: bool = False) -> str:
    """explicit argument > TRTD_ENDPOINT > the platform default (see default_endpoint)."""
    return explicit or os.environ.get(ENDPOINT_ENV) or default_endpoint(discover)


def ipc_path(endpoint: str) -> Path | None:
    """The socket file of an ipc:// endpoint, None for other transports."""
    return Path(endpoint[len("ipc://"):]) if endpoint.startswith("ipc://") else None


# The daemon writes two secrets next to its endpoint; clients that may read them send them in the
# request envelope's "auth" (SPEC 10.5): the admin token (privileged ops) and, on TCP endpoints,
# where file permissions cannot guard the socket, the connection token.
ADMIN_TOKEN = "admin"
CONNECTION_TOKEN = "connection"


def service_runtime_dir() -> Path:
    """The runtime folder of the system-wide service: the service's socket and token files.

    Windows: under ProgramData, which every account can find (the service runs as LocalSystem,
    whose own runtime folder no user can see or read). POSIX: systemd's RuntimeDirectory.
    """
    if sys.platform == "win32":
        base = os.environ.get("ProgramData") or os.environ.get("PROGRAMDATA") or r"C:\ProgramData"
        return Path(base) / "trtd" / "run"
    return SYSTEM_SOCKET.parent


def token_path(endpoint: str, kind: str) -> Path:
    """Where a daemon serving `endpoint` from this process's runtime directory keeps its `kind`
    token (ADMIN_TOKEN or CONNECTION_TOKEN): the daemon writes it here.

    ipc://: beside the socket, in the socket's private directory. Other transports:
    in the runtime directory, named after a hash of the endpoint.
    """
    path = ipc_path(endpoint)
    if path is not None:
        return Path(os.path.normpath(os.path.abspath(path)) + f".{kind}-token")
    return runtime_dir() / _token_name(endpoint, kind)


def find_token(endpoint: str, kind: str) -> Path:
    """Where a client looks for the token of the daemon at `endpoint`: the user's own daemon's
    file (token_path), else the system service's (service_runtime_dir), e.g. a client of the
    Windows service, whose TCP endpoint carries no path. The first that exists; else token_path."""
    own = token_path(endpoint, kind)
    if ipc_path(endpoint) is not None or _present(own):
        return own
    service = service_runtime_dir() / _token_name(endpoint, kind)
    return service if _present(service) else own


def _present(path: Path) -> bool:
    """Whether `path` exists, counting a file this user may not even look at as present: the
    reader then reports the permission problem for that file, not a search elsewhere."""
    try:
        path.stat()
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError:
        return True
    return True


def _token_name(endpoint: str, kind: str) -> str:
    digest = hashlib.sha256(endpoint.encode()).hexdigest()[:8]
    return f"trtd_{digest}.{kind}-token"
