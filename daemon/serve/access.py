"""Who may reach the daemon and who may administer it: file modes, groups, tokens.

Three things decide it (SPEC 10.5):

- POSIX permissions on the socket, its directory and every region: the daemon's
  user only by default; with `group = "NAME"` that group too (files 0660,
  the directory 0750, so members can connect but never replace the socket).
- An admin token, random per daemon start, in a file only the daemon's user can
  read (plus `admin_group` when set): privileged ops (Request.PRIVILEGED) must
  present it in the envelope's "auth".
- On TCP endpoints (Windows), where any local process can connect, a connection
  token in a file beside it: every request must present it (or the admin token).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from trtd.protocol import ErrorCode, ProtocolError, Request
from trtd.protocol.endpoint import ADMIN_TOKEN, CONNECTION_TOKEN, ipc_path, token_path

from trtd.daemon.system import platform

log = logging.getLogger("trtd.access")

OWNER_FILE, GROUP_FILE = 0o600, 0o660
OWNER_DIR, GROUP_DIR = 0o700, 0o750
OWNER_SECRET, GROUP_SECRET = 0o600, 0o640


class AccessError(ValueError):
    """A configured group that does not exist, or a group on a platform without them."""


def _gid(name: str, key: str) -> int | None:
    if not name:
        return None
    if sys.platform == "win32":
        raise AccessError(f"'{key}' is a POSIX setting; on Windows access is governed by the "
                          f"service's ACLs (leave {key} = \"\")")
    import grp

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise AccessError(f"{key} = \"{name}\": no such group on this machine; create it "
                          f"(groupadd {name}) or set {key} = \"\" for owner-only access") from None


def group_problems(group: str, admin_group: str) -> list[tuple[str, str]]:
    """(key, message) for each of `group` and `admin_group` that cannot be used: all of them,
    not only the first, so that one `trtd config check` shows everything to fix."""
    problems = []
    for key, name in (("group", group), ("admin_group", admin_group)):
        try:
            _gid(name, key)
        except AccessError as exc:
            problems.append((key, str(exc)))
    return problems


def group_members(name: str) -> set[str]:
    """Users in a group: its listed members and the users whose primary group it is."""
    import grp
    import pwd

    entry = grp.getgrnam(name)
    return set(entry.gr_mem) | {u.pw_name for u in pwd.getpwall() if u.pw_gid == entry.gr_gid}


def admin_reach_warning(group: str, admin_group: str) -> str | None:
    """Why members of `admin_group` cannot reach the socket, or None. The socket's folder is
    0750 with `group` (0700 without one): an admin who is not in `group` holds the token but
    has no way to the socket."""
    if not admin_group or admin_group == group or sys.platform == "win32":
        return None
    if group_problems(group, admin_group):
        return None  # reported as errors already
    stopped = group_members(admin_group) - (group_members(group) if group else set())
    outside = sorted(u for u in stopped if not _is_root(u))  # root passes any folder mode
    if not outside:
        return None
    if not group:
        return (f"admin_group = \"{admin_group}\": {', '.join(outside)} cannot reach the socket: "
                f"without `group` its folder is the daemon user's only (0700); set group to a "
                f"group they are in as well")
    return (f"admin_group = \"{admin_group}\": {', '.join(outside)} cannot reach the socket: its "
            f"folder is 0750 with group \"{group}\", which they are not in; add them to it "
            f"(usermod -aG {group} USER)")


def _is_root(user: str) -> bool:
    import pwd

    try:
        return pwd.getpwnam(user).pw_uid == 0
    except KeyError:  # a group may list a user that no longer exists
        return False


@dataclass(frozen=True, slots=True)
class AccessPolicy:
    """File modes and group ownership for everything the daemon shares with clients."""

    group: str = ""
    gid: int | None = None
    admin_group: str = ""
    admin_gid: int | None = None

    @classmethod
    def from_names(cls, group: str, admin_group: str) -> "AccessPolicy":
        return cls(group, _gid(group, "group"), admin_group, _gid(admin_group, "admin_group"))

    @property
    def file_mode(self) -> int:
        return GROUP_FILE if self.gid is not None else OWNER_FILE

    def share_fd(self, fd: int) -> None:
        """Regions: readable and writable by the group too, when there is one."""
        if self.gid is not None:
            os.fchown(fd, -1, self.gid)
            os.fchmod(fd, GROUP_FILE)

    def share_directory(self, folder: Path) -> None:
        """The daemon's private folder (socket, lock, tokens): group members may enter and
        read it, never write it, so they can connect but cannot replace the socket."""
        if self.gid is None:
            return
        os.chown(folder, -1, self.gid)
        os.chmod(folder, GROUP_DIR)
        blocked = _untraversable_ancestor(folder.parent, self.gid)
        if blocked is not None:
            log.warning("group %r cannot reach %s: %s (mode %s) is closed to it; put the socket "
                        "in a directory its members can traverse", self.group, folder, blocked,
                        stat.filemode(blocked.stat().st_mode))

    def share_socket(self, path: Path) -> None:
        """The ipc socket, bound owner-only, opened to the group."""
        if self.gid is not None:
            os.chown(path, -1, self.gid)
            os.chmod(path, GROUP_FILE)


def _untraversable_ancestor(path: Path, gid: int) -> Path | None:
    for folder in [path, *path.parents]:
        st = folder.stat()
        if st.st_mode & stat.S_IXOTH or (st.st_gid == gid and st.st_mode & stat.S_IXGRP):
            continue
        return folder
    return None


def write_secret(path: Path, gid: int | None, windows_readers: Iterable[str] = ()) -> str:
    """A fresh random token in `path`: owner-only, or 0640 with group `gid`. Returns the token.
    On Windows, file modes mean nothing: the file gets an explicit DACL instead (the daemon's
    account, SYSTEM and Administrators, plus read for `windows_readers`) before the token is in it.

    Written under a temporary name and renamed, so a reader never sees a partial
    token and a planted file or symlink at `path` is replaced, never followed.
    """
    token = secrets.token_hex(16)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, OWNER_SECRET)
    try:
        if gid is not None:
            os.fchown(fd, -1, gid)
            os.fchmod(fd, GROUP_SECRET)
        platform.restrict_token_file(str(tmp), windows_readers)
        os.write(fd, token.encode() + b"\n")
    finally:
        os.close(fd)
    os.replace(tmp, path)
    return token


class Gate:
    """Checks each request's envelope "auth" against the daemon's tokens."""

    def __init__(self, endpoint: str, policy: AccessPolicy):
        self.admin_path = token_path(endpoint, ADMIN_TOKEN)
        # ipc sockets are guarded by file permissions; TCP needs a secret to connect.
        self.connection_path = (token_path(endpoint, CONNECTION_TOKEN)
                                if ipc_path(endpoint) is None else None)
        self._policy = policy
        self._admin = b""
        self._connection: bytes | None = None
        self._written: list[tuple[Path, int]] = []

    def write_tokens(self) -> None:
        self._admin = self._write(self.admin_path, self._policy.admin_gid)
        if self.connection_path is not None:
            # Windows: whoever may map the service's regions may connect (platform.mapping_allowed_sids).
            self._connection = self._write(self.connection_path, self._policy.gid,
                                           platform.mapping_allowed_sids())

    def _write(self, path: Path, gid: int | None, windows_readers: Iterable[str] = ()) -> bytes:
        token = write_secret(path, gid, windows_readers)
        self._written.append((path, path.stat().st_ino))
        return token.encode()

    def remove_tokens(self) -> None:
        for path, inode in self._written:
            try:
                if path.stat().st_ino == inode:  # never a later daemon's file
                    path.unlink()
            except OSError:
                pass
        self._written.clear()

    def check(self, request: Request, auth: str) -> None:
        """Raise UNAUTHORIZED unless `auth` may send `request`."""
        presented = auth.encode()
        if request.PRIVILEGED:
            if not hmac.compare_digest(presented, self._admin):
                readers = "the daemon's user" + (f" and group {self._policy.admin_group!r}"
                                                  if self._policy.admin_gid is not None else "")
                raise ProtocolError(
                    ErrorCode.UNAUTHORIZED,
                    f"'{request.OP}' is a privileged op: it needs this daemon's admin token, from "
                    f"{self.admin_path} (readable by {readers}); run the command as that user "
                    f"(or root)", {"needs": "admin", "token_file": str(self.admin_path)})
            return
        if self._connection is not None and not (
                hmac.compare_digest(presented, self._connection)
                or hmac.compare_digest(presented, self._admin)):
            raise ProtocolError(
                ErrorCode.UNAUTHORIZED,
                f"this daemon listens on TCP and accepts only clients that present its connection "
                f"token, from {self.connection_path}; run as a user who may read that file",
                {"needs": "connection", "token_file": str(self.connection_path)})
