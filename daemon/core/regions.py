"""Shared-memory regions the daemon leases to clients.

The daemon creates and owns every region, so region lifetime follows the
long-lived process, not the clients. Space is reserved at lease time
(posix_fallocate), so a full /dev/shm is a NO_SPACE error then and never a
SIGBUS when a tensor is written later. A region used by a running request
cannot vanish under it: release while in use is deferred (refcount).
"""

from __future__ import annotations

import hmac
import logging
import os
import secrets
import sys
from collections import OrderedDict
from dataclasses import dataclass, field
from multiprocessing import shared_memory
from pathlib import Path

import numpy as np

from trtd.protocol import ALIGNMENT, ErrorCode, ProtocolError, align_up

from trtd.daemon.system import platform

log = logging.getLogger("trtd.regions")

_RELEASED_MEMORY = 4096
SHM_DIR = Path("/dev/shm")
_HAVE_SHM_DIR = SHM_DIR.is_dir()  # once: this is checked on every request  # how many released names we remember, for a precise error


# What a closed region's view becomes: its mapping's buffer export is dropped, and a use after
# close finds an empty array rather than None.
_CLOSED = np.empty(0, np.uint8)


@dataclass(slots=True)
class RegionLimits:
    max_region_bytes: int
    max_regions_per_client: int
    max_bytes_per_client: int
    max_regions: int = 4096  # all clients together: each region holds two file descriptors


@dataclass(eq=False, slots=True)
class Region:
    name: str
    nbytes: int
    token: str
    owner: int
    shm: shared_memory.SharedMemory
    # A uint8 view of the whole region: backends read/write through it; its
    # data pointer is the region's base address.
    view: np.ndarray
    address: int
    in_use: int = 0
    released: bool = False
    path: str = ""  # its file under /dev/shm, where there is one
    uses: int = field(default=0)
    # Request bindings checked already for this region (core/binding.py's plan cache).
    plans: dict = field(default_factory=dict)
    # Its client is not the daemon's user: the CPU path moves its tensors by preadv/pwritev on
    # fd, never through the mapping (running/guarded_io.py).
    guarded: bool = False

    @property
    def fd(self) -> int:
        return self.shm._fd  # type: ignore[attr-defined]  # kept open until the region closes

    def close(self) -> None:
        self.view = _CLOSED  # drop the buffer export before closing the mapping
        try:
            self.shm.close()
        finally:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass


def _shm_free_bytes() -> int | None:
    if sys.platform == "win32":  # no /dev/shm: a mapping is backed by the paging file
        return None
    try:
        st = os.statvfs("/dev/shm")
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def _create_segment(name: str, nbytes: int, on_create=None) -> shared_memory.SharedMemory:
    try:
        if platform.windows_service_mappings():
            # A service's regions: Global\ names and a DACL for the users' sessions.
            from trtd.daemon.system.winshm import WindowsMapping

            return WindowsMapping(name, nbytes, platform.mapping_sddl(platform.mapping_allowed_sids()))  # type: ignore[return-value]
        shm = shared_memory.SharedMemory(name=name, create=True, size=nbytes)
    except FileExistsError:
        raise  # the caller picks another name
    except OSError as exc:  # EMFILE, ENOMEM, ENOSPC ...
        raise ProtocolError(
            ErrorCode.NO_SPACE,
            f"the daemon could not create a {nbytes}-byte region ({exc.strerror or exc}); "
            f"release regions or raise the daemon's limits (open files, /dev/shm size)",
            {"requested": nbytes},
        ) from None
    if sys.platform != "win32":
        _reserve_posix(shm, nbytes, on_create)
    return shm


def _reserve_posix(shm: shared_memory.SharedMemory, nbytes: int, on_create) -> None:
    """Reserve the pages and set permissions through the segment's descriptor (a POSIX
    SharedMemory's _fd, which typeshed does not declare), then close that descriptor."""
    fd: int = shm._fd  # type: ignore[attr-defined]  # CPython's POSIX SharedMemory keeps it here
    if hasattr(os, "posix_fallocate"):
        try:
            # ftruncate only sets the size; fallocate reserves the pages now,
            # so running out of room is an error here instead of a SIGBUS later.
            os.posix_fallocate(fd, 0, nbytes)
        except OSError as exc:
            shm.close()
            shm.unlink()
            raise ProtocolError(
                ErrorCode.NO_SPACE,
                f"/dev/shm has no room for a {nbytes}-byte region ({exc.strerror}); "
                f"free shared memory or enlarge /dev/shm (mount -o remount,size=...)",
                {"requested": nbytes},
            ) from None
    if on_create is not None and fd >= 0:
        try:
            on_create(fd)
        except OSError as exc:
            shm.close()
            shm.unlink()
            raise ProtocolError(ErrorCode.INTERNAL, f"could not set the region's permissions: {exc}")
    # The descriptor stays open (closed with the region): the mapping holds a duplicate that
    # Python does not expose, and the size check before each request must ask the segment the
    # daemon maps, not whatever a client has put under its name since (_segment_problem).


def _segment_problem(region: Region) -> str | None:
    """What a client did to the segment the daemon maps that makes touching it unsafe, or None.

    Asked by the daemon's own descriptor: the path is only a name, which a client can unlink
    and point at a full-size decoy while it truncates the inode the daemon maps (seen: a SIGBUS
    with a stat of the path). Two things are looked at, both in one fstat:
    - the size: a shrunk segment's missing pages are a SIGBUS when touched;
    - the pages allocated: the lease reserved every page (posix_fallocate), and only a hole
      punched into it (fallocate PUNCH_HOLE, which keeps the size) gives pages back; touching
      one refaults it, which is a SIGBUS when /dev/shm is full at that moment.
    """
    if not _HAVE_SHM_DIR:
        return None  # Windows: a mapping cannot be resized or punched under us
    fd = getattr(region.shm, "_fd", -1)  # kept open by _reserve_posix until the region closes
    try:
        st = os.fstat(fd) if fd >= 0 else os.stat(region.path)
    except OSError:
        return "its segment cannot be examined"
    if st.st_size < region.nbytes:
        return "was truncated by a client (it must keep its size)"
    if getattr(st, "st_blocks", region.nbytes) * 512 < region.nbytes:  # st_blocks: POSIX only
        return "had pages released by a client (a hole punched into it)"
    return None


class RegionRegistry:
    def __init__(self, name_prefix: str, limits: RegionLimits, before_destroy=None, on_create=None):
        # Called with each region before its memory goes (e.g. to unregister it from CUDA).
        self._before_destroy = before_destroy
        # Called with each new segment's descriptor (e.g. to open it to the daemon's group).
        self._on_create = on_create
        self._prefix = name_prefix
        self._limits = limits
        self._seq = 0
        self._regions: dict[str, Region] = {}
        self._released: OrderedDict[str, None] = OrderedDict()

    # -- queries -------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._regions)

    @property
    def total_bytes(self) -> int:
        # Copied first: the metrics endpoint reads this from its own thread while the socket
        # loop leases and releases (a dict must not change size while a generator walks it).
        return sum(r.nbytes for r in list(self._regions.values()))

    def owned_by(self, client_id: int) -> list[Region]:
        return [r for r in self._regions.values() if r.owner == client_id and not r.released]

    # -- lease / release -----------------------------------------------------------------------------

    def lease(self, client_id: int, nbytes: int, guarded: bool = False) -> Region:
        limits = self._limits
        if nbytes <= 0:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, f"a region needs nbytes > 0, got {nbytes}")
        if nbytes > limits.max_region_bytes:
            raise ProtocolError(
                ErrorCode.REGION_TOO_LARGE,
                f"a region of {nbytes} bytes exceeds this daemon's max_region_bytes "
                f"({limits.max_region_bytes}); send a smaller batch or raise max_region_bytes",
                {"requested": nbytes, "max_region_bytes": limits.max_region_bytes},
            )
        nbytes = align_up(nbytes, ALIGNMENT)
        mine = self.owned_by(client_id)
        if len(mine) >= limits.max_regions_per_client:
            raise ProtocolError(
                ErrorCode.QUOTA_EXCEEDED,
                f"client holds {len(mine)} regions, the limit is {limits.max_regions_per_client}; "
                f"release regions it no longer uses",
            )
        held = sum(r.nbytes for r in mine)
        if held + nbytes > limits.max_bytes_per_client:
            raise ProtocolError(
                ErrorCode.QUOTA_EXCEEDED,
                f"client holds {held} bytes of regions; {nbytes} more exceeds the per-client limit "
                f"of {limits.max_bytes_per_client}",
            )
        free = _shm_free_bytes()
        if free is not None and nbytes > free:
            raise ProtocolError(
                ErrorCode.NO_SPACE,
                f"/dev/shm has {free} bytes free, a region of {nbytes} bytes does not fit; "
                f"free shared memory or enlarge /dev/shm (mount -o remount,size=...)",
                {"requested": nbytes, "free": free},
            )
        if len(self._regions) >= limits.max_regions:
            raise ProtocolError(
                ErrorCode.QUOTA_EXCEEDED,
                f"the daemon holds {len(self._regions)} regions, its limit (max_regions); "
                f"clients must release regions they no longer use",
            )
        shm = None
        while shm is None:
            self._seq += 1
            name = platform.windows_mapping_name(f"{self._prefix}{self._seq:x}",
                                                 platform.windows_service_mappings())
            try:
                # Only another user's region is shared with the group (its client must open
                # it); the daemon's own user's stays 0600, so no group member can shrink a
                # region the daemon uses in place (an unguarded one).
                shm = _create_segment(name, nbytes, self._on_create if guarded else None)
            except FileExistsError:
                log.warning("region name %s is taken by a file we did not create; skipping it", name)
        if shm.buf is None:  # only a closed SharedMemory has none
            raise ProtocolError(ErrorCode.INTERNAL, f"region {name} was closed as it was created")
        view = np.frombuffer(shm.buf, dtype=np.uint8, count=nbytes)
        region = Region(name=name, nbytes=nbytes, token=secrets.token_hex(16), owner=client_id,
                        shm=shm, view=view, address=view.ctypes.data, path=f"{SHM_DIR}/{name}",
                        guarded=guarded)
        self._regions[name] = region
        return region

    def _lookup(self, client_id: int, name: str, token: str) -> Region:
        region = self._regions.get(name)
        if region is None or region.released:
            if name in self._released or (region is not None and region.released):
                raise ProtocolError(
                    ErrorCode.REGION_NOT_FOUND,
                    f"region {name!r} was released or reclaimed; lease a new one",
                )
            raise ProtocolError(
                ErrorCode.REGION_NOT_FOUND,
                f"no region {name!r} is leased by this daemon; lease one first "
                f"(after a daemon restart, earlier regions are gone)",
            )
        # Constant-time compare: the token is the secret that proves the lease.
        if region.owner != client_id or not hmac.compare_digest(region.token.encode(), token.encode()):
            raise ProtocolError(
                ErrorCode.FORBIDDEN,
                f"region {name!r} is not leased to this client (wrong client id or lease token)",
            )
        return region

    def checkout(self, client_id: int, name: str, token: str) -> Region:
        """The region for one request; it stays alive until checkin()."""
        region = self._lookup(client_id, name, token)
        problem = _segment_problem(region)
        if problem:
            # Touching it could kill the daemon with SIGBUS: refuse and drop the region.
            self._release(region)
            raise ProtocolError(
                ErrorCode.REGION_NOT_FOUND,
                f"region {name!r} {problem}; it has been released: lease a new one, and do not "
                f"resize regions or punch holes into them",
            )
        region.in_use += 1
        region.uses += 1
        return region

    def checkin(self, region: Region) -> None:
        region.in_use -= 1
        if region.released and region.in_use == 0:
            self._destroy(region)

    def release(self, client_id: int, name: str, token: str) -> bool:
        """True when freed now, False when deferred until running requests end."""
        return self._release(self._lookup(client_id, name, token))

    def release_client(self, client_id: int) -> int:
        mine = self.owned_by(client_id)
        for region in mine:
            self._release(region)
        return len(mine)

    def close_all(self) -> None:
        for region in list(self._regions.values()):
            if region.in_use:
                # An abandoned request still runs on it (a stop past its drain timeout):
                # unmapping would crash that call. The name goes now, the mapping at exit.
                self.unlink_name(region)
            else:
                self._destroy(region)

    def unlink_names(self) -> None:
        """Remove every region's name, leaving the mappings alone (safe from any thread: a stop
        that must exit at once leaves no names behind)."""
        for region in list(self._regions.values()):
            self.unlink_name(region)

    @staticmethod
    def unlink_name(region: Region) -> None:
        try:
            region.shm.unlink()
        except (FileNotFoundError, OSError):
            pass

    def _release(self, region: Region) -> bool:
        region.released = True
        if region.in_use:
            return False
        self._destroy(region)
        return True

    def _destroy(self, region: Region) -> None:
        self._regions.pop(region.name, None)
        self._released[region.name] = None
        if len(self._released) > _RELEASED_MEMORY:
            self._released.popitem(last=False)
        try:
            if self._before_destroy is not None:
                self._before_destroy(region)
        except Exception:  # e.g. unregistering from CUDA failed: the memory still goes
            log.exception("preparing region %s for release failed", region.name)
        try:
            region.close()
        except Exception:  # never let one bad segment stop the others from going
            log.exception("closing region %s failed", region.name)
