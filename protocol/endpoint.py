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
RUNTIME_DIR_ENV = "TRTD_RUNTIME_DIR"
DEFAULT_TCP_PORT = 47810


def runtime_dir() -> Path:
    """The per-user folder for the socket and lock file (created 0700 by the daemon)."""
    explicit = os.environ.get(RUNTIME_DIR_ENV)
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


# sockaddr_un.sun_path holds 108 bytes on Linux (104 on macOS and the BSDs), one of them the
# terminating NUL; libzmq refuses longer ipc paths, so say so before it does, with a remedy.
IPC_PATH_MAX_BYTES = 107 if sys.platform.startswith("linux") else 103
_SCHEMES = ("ipc://", "tcp://")


class EndpointError(ValueError):
    """An endpoint the daemon cannot listen on, or a client cannot reach; the message says why
    and what to write instead."""


def validate_endpoint(url: str) -> str:
    """`url` unchanged when the daemon can bind it and clients can find it; else EndpointError.

    Accepted: ipc://ABSOLUTE-PATH (at most IPC_PATH_MAX_BYTES bytes) and tcp://HOST:PORT with
    PORT 1..65535. Refused although libzmq would take them, because a client could not find the
    daemon afterwards: port 0 and `*` (libzmq picks a random free port, and an out-of-range
    port silently becomes one too), host `*` (nothing can connect to it; the daemon's token
    files are named after the endpoint clients use), abstract ipc names `ipc://@NAME` (no
    file, so no permissions to guard it), relative ipc paths (relative to the daemon's working
    directory, not the client's), and IPv6 literals (the daemon's socket is IPv4 only).
    """
    if not isinstance(url, str) or not url.startswith(_SCHEMES):
        raise EndpointError(f"endpoint {url!r}: the scheme must be ipc:// (e.g. ipc:///run/trtd/trtd.sock) "
                            f"or tcp:// (e.g. tcp://127.0.0.1:{DEFAULT_TCP_PORT})")
    if url.startswith("ipc://"):
        _check_ipc(url, url[len("ipc://"):])
    else:
        _check_tcp(url, url[len("tcp://"):])
    return url


def _check_ipc(url: str, path: str) -> None:
    if not path:
        raise EndpointError(f"endpoint {url!r} names no socket file: write ipc:///PATH/trtd.sock")
    if path.startswith("@"):
        raise EndpointError(f"endpoint {url!r}: abstract socket names are not supported (no file "
                            f"whose permissions could guard the daemon); give a path, e.g. "
                            f"ipc:///run/trtd/trtd.sock")
    if not os.path.isabs(path):
        _check_runtime_dir(url, path)
        raise EndpointError(f"endpoint {url!r}: the socket path must be absolute (a relative one "
                            f"depends on each process's working directory): ipc://{os.path.abspath(path)}")
    size = len(os.fsencode(path))
    if size > IPC_PATH_MAX_BYTES:
        raise EndpointError(f"endpoint {url!r}: the socket path is {size} bytes; this OS allows at most "
                            f"{IPC_PATH_MAX_BYTES} (sockaddr_un.sun_path): choose a shorter path, "
                            f"e.g. under /run or /tmp, or set TRTD_RUNTIME_DIR to a shorter folder")


def _check_runtime_dir(url: str, path: str) -> None:
    """EndpointError naming TRTD_RUNTIME_DIR when the relative socket `path` lies in it: the
    default endpoint is made from that folder, so the variable is the cause and the fix.

    Not resolved to an absolute path: the daemon and every client would each resolve it against
    their own working directory, and so listen and look for different sockets (and token files)."""
    folder = os.environ.get(RUNTIME_DIR_ENV, "")
    if folder and not os.path.isabs(folder) and Path(path).parent == Path(folder):
        raise EndpointError(f"{RUNTIME_DIR_ENV}={folder!r} is a relative path, so the endpoint in it, "
                            f"{url!r}, is relative too (the daemon and each client would take it from "
                            f"their own working directory, and look for different sockets): set "
                            f"{RUNTIME_DIR_ENV} to an absolute folder, e.g. "
                            f"{RUNTIME_DIR_ENV}={os.path.abspath(folder)}, or unset it")


def _check_tcp(url: str, rest: str) -> None:
    example = f"tcp://127.0.0.1:{DEFAULT_TCP_PORT}"
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise EndpointError(f"endpoint {url!r}: a TCP endpoint needs a host and a port, e.g. {example}")
    if host.startswith("["):
        raise EndpointError(f"endpoint {url!r}: IPv6 addresses are not supported (the daemon listens "
                            f"on IPv4); use an IPv4 address or host name, e.g. {example}")
    if host == "*":
        raise EndpointError(f"endpoint {url!r}: host '*' is not an address a client can connect to; "
                            f"name the interface's address, e.g. {example} (loopback only)")
    # ASCII only: str.isalnum() also takes letters and digits of other scripts ("ünï", "١٢٧").
    if not all((c.isascii() and c.isalnum()) or c in ".-_" for c in host):
        raise EndpointError(f"endpoint {url!r}: {host!r} is not a host name or IPv4 address, "
                            f"e.g. {example}")
    if port in ("0", "*"):
        raise EndpointError(f"endpoint {url!r}: port {port} would make libzmq pick a random port, "
                            f"which clients cannot find; give a fixed port 1..65535, e.g. {example}")
    if not (port.isascii() and port.isdigit()) or not 1 <= int(port) <= 65535:
        raise EndpointError(f"endpoint {url!r}: the port must be a number 1..65535, got {port!r} "
                            f"(e.g. {example})")


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
