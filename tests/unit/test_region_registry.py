"""RegionRegistry in-process: real POSIX shared memory under /dev/shm, no daemon and no socket.

Every test gets its own name prefix (pid and a counter), so regions of concurrent test runs never
meet, and every test ends with no file of its prefix left under /dev/shm.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import sys
from pathlib import Path

import pytest

from trtd.protocol import ALIGNMENT, ErrorCode, ProtocolError

from trtd.daemon.core import regions as regions_module
from trtd.daemon.core.regions import RegionLimits, RegionRegistry

pytestmark = pytest.mark.skipif(sys.platform == "win32" or not Path("/dev/shm").is_dir(),
                                reason="POSIX shared memory under /dev/shm")

SHM = Path("/dev/shm")
_counter = itertools.count()

ROOMY = dict(max_region_bytes=1 << 20, max_regions_per_client=8, max_bytes_per_client=1 << 22,
             max_regions=64)


def _files(prefix: str) -> list[str]:
    return sorted(p.name for p in SHM.iterdir() if p.name.startswith(prefix))


def _descriptors_of(path: str) -> int:
    """How many of this process's file descriptors are open on `path`."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == path:
                count += 1
        except OSError:
            pass  # the descriptor listdir itself used, already closed
    return count


@pytest.fixture
def prefix():
    name = f"trtdut{os.getpid()}r{next(_counter)}_"
    yield name
    left = _files(name)
    for leftover in left:  # leave the machine clean even when the test failed
        (SHM / leftover).unlink(missing_ok=True)
    assert not left, f"regions left under /dev/shm: {left}"


@pytest.fixture
def make(prefix):
    """make(**limits, before_destroy=, on_create=) -> a registry; every one is closed after the test."""
    made: list[RegionRegistry] = []

    def build(before_destroy=None, on_create=None, **limits) -> RegionRegistry:
        registry = RegionRegistry(prefix, RegionLimits(**{**ROOMY, **limits}),
                                  before_destroy=before_destroy, on_create=on_create)
        made.append(registry)
        return registry

    yield build
    for registry in made:
        registry.close_all()


def _refused(code: ErrorCode, call, *args) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        call(*args)
    assert info.value.code == code, (info.value.code, info.value.message)
    return info.value


# -- lease: size, alignment, the reservation, the name ------------------------------------------------


@pytest.mark.parametrize("asked, leased", [(1, ALIGNMENT), (ALIGNMENT, ALIGNMENT),
                                           (ALIGNMENT + 1, 2 * ALIGNMENT), (10_000, 10_240)])
def test_lease_rounds_the_size_up_to_the_alignment(make, asked, leased):
    region = make().lease(1, asked)
    assert region.nbytes == leased
    assert region.view.nbytes == leased
    assert os.stat(region.path).st_size == leased


def test_a_regions_address_is_its_views_data_pointer_and_aligned(make):
    region = make().lease(1, 4096)
    assert region.address == region.view.ctypes.data
    assert region.address % ALIGNMENT == 0


def test_the_view_is_the_shared_memory_itself(make):
    region = make().lease(1, 4096)
    region.view[:4] = [1, 2, 3, 4]
    with open(region.path, "rb") as f:
        assert f.read(4) == bytes([1, 2, 3, 4])


def test_lease_reserves_the_pages_at_once(make):
    # posix_fallocate: the pages are the file's now, so a full /dev/shm is a NO_SPACE at lease
    # time and never a SIGBUS when a tensor is written later (ftruncate alone reserves nothing).
    region = make().lease(1, 1 << 20)
    assert os.stat(region.path).st_blocks * 512 >= region.nbytes


def test_a_failed_reservation_is_no_space_and_leaves_no_file(make, prefix, monkeypatch):
    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    registry = make()
    error = _refused(ErrorCode.NO_SPACE, registry.lease, 1, 4096)
    assert error.details == {"requested": 4096}
    assert "/dev/shm" in error.message
    assert _files(prefix) == [] and len(registry) == 0


def test_a_region_larger_than_free_shm_is_no_space(make, prefix):
    free = os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize
    asked = 2 * free + ALIGNMENT
    registry = make(max_region_bytes=4 * asked, max_bytes_per_client=4 * asked)
    error = _refused(ErrorCode.NO_SPACE, registry.lease, 1, asked)
    assert error.details["requested"] == asked and error.details["free"] < asked
    assert _files(prefix) == [] and len(registry) == 0


def test_region_names_start_with_the_prefix_and_are_distinct(make, prefix):
    registry = make()
    leased = [registry.lease(1, 256) for _ in range(3)] + [registry.lease(2, 256)]
    names = [r.name for r in leased]
    assert all(name.startswith(prefix) for name in names)
    assert len(set(names)) == 4
    assert _files(prefix) == sorted(names)
    assert all(r.path == f"/dev/shm/{r.name}" for r in leased)


def test_lease_tokens_are_distinct_secrets(make):
    registry = make()
    tokens = {registry.lease(1, 256).token for _ in range(4)}
    assert len(tokens) == 4
    assert all(len(token) == 32 and int(token, 16) >= 0 for token in tokens)


def test_lease_skips_a_name_taken_by_a_file_it_did_not_create(make, prefix):
    foreign = SHM / f"{prefix}1"  # the first name the registry would pick
    foreign.write_bytes(b"not ours")
    try:
        region = make().lease(1, 256)
        assert region.name == f"{prefix}2"
        assert foreign.read_bytes() == b"not ours"
    finally:
        foreign.unlink()


def test_a_region_holds_two_descriptors_and_its_destruction_closes_them(make):
    registry = make()
    region = registry.lease(1, 4096)
    # The mapping's (Python's mmap keeps a duplicate) and the segment's own, which the size check
    # before every request asks (a path can be pointed at a decoy).
    assert _descriptors_of(region.path) == 2
    assert registry.release(1, region.name, region.token) is True
    assert _descriptors_of(region.path) == 0


def test_lease_of_no_bytes_is_a_bad_message(make):
    registry = make()
    for nbytes in (0, -1):
        _refused(ErrorCode.BAD_MESSAGE, registry.lease, 1, nbytes)
    assert len(registry) == 0


# -- limits -----------------------------------------------------------------------------------------


def test_a_region_over_max_region_bytes_is_region_too_large(make, prefix):
    registry = make(max_region_bytes=4096)
    error = _refused(ErrorCode.REGION_TOO_LARGE, registry.lease, 1, 4097)
    assert error.details == {"requested": 4097, "max_region_bytes": 4096}
    assert "max_region_bytes" in error.message
    assert _files(prefix) == []


def test_a_region_of_exactly_max_region_bytes_is_leased(make):
    assert make(max_region_bytes=4096).lease(1, 4096).nbytes == 4096


def test_max_region_bytes_limits_the_size_asked_before_rounding(make):
    # SPEC 6.3: REGION_TOO_LARGE when `nbytes` (as asked) is above max_region_bytes; the
    # region is then rounded up to the alignment, and may be larger than asked.
    assert make(max_region_bytes=1000).lease(1, 1000).nbytes == 1024


def test_max_regions_per_client_is_quota_exceeded_for_that_client_only(make):
    registry = make(max_regions_per_client=2)
    registry.lease(1, 256)
    registry.lease(1, 256)
    error = _refused(ErrorCode.QUOTA_EXCEEDED, registry.lease, 1, 256)
    assert "2 regions" in error.message
    registry.lease(2, 256)  # another client has its own quota
    assert len(registry.owned_by(1)) == 2 and len(registry.owned_by(2)) == 1


def test_max_bytes_per_client_counts_the_aligned_sizes(make):
    registry = make(max_bytes_per_client=4 * ALIGNMENT)
    for _ in range(4):
        registry.lease(1, 1)  # one byte asked, ALIGNMENT bytes held
    error = _refused(ErrorCode.QUOTA_EXCEEDED, registry.lease, 1, 1)
    assert str(4 * ALIGNMENT) in error.message
    registry.lease(2, 4 * ALIGNMENT)


def test_max_regions_counts_every_clients_regions(make):
    registry = make(max_regions=2)
    registry.lease(1, 256)
    registry.lease(2, 256)
    error = _refused(ErrorCode.QUOTA_EXCEEDED, registry.lease, 3, 256)
    assert "max_regions" in error.message
    assert len(registry) == 2


def test_released_regions_stop_counting_against_the_quotas(make):
    registry = make(max_regions_per_client=1, max_bytes_per_client=ALIGNMENT, max_regions=1)
    first = registry.lease(1, ALIGNMENT)
    registry.release(1, first.name, first.token)
    assert registry.lease(1, ALIGNMENT).nbytes == ALIGNMENT


def test_len_and_total_bytes_count_the_regions_held(make):
    registry = make()
    registry.lease(1, 256)
    registry.lease(2, 1000)
    assert len(registry) == 2 and registry.total_bytes == 256 + 1024


# -- tokens and owners ------------------------------------------------------------------------------


def test_checkout_with_the_lease_token_gives_the_region_and_counts_the_use(make):
    registry = make()
    region = registry.lease(1, 256)
    assert registry.checkout(1, region.name, region.token) is region
    assert (region.in_use, region.uses) == (1, 1)
    registry.checkin(region)
    assert (region.in_use, region.uses) == (0, 1)


def test_checkout_with_a_wrong_token_is_forbidden_and_reveals_nothing(make):
    registry = make()
    region = registry.lease(1, 256)
    error = _refused(ErrorCode.FORBIDDEN, registry.checkout, 1, region.name, "0" * 32)
    assert region.token not in error.message
    assert region.in_use == 0


def test_checkout_of_another_clients_region_is_forbidden_even_with_its_token(make):
    registry = make()
    region = registry.lease(1, 256)
    error = _refused(ErrorCode.FORBIDDEN, registry.checkout, 2, region.name, region.token)
    assert region.name in error.message and region.token not in error.message
    assert region.in_use == 0


def test_a_token_of_another_length_is_forbidden(make):
    registry = make()
    region = registry.lease(1, 256)
    for token in ("", region.token[:-1], region.token + "0"):
        _refused(ErrorCode.FORBIDDEN, registry.checkout, 1, region.name, token)


def test_release_of_another_clients_region_is_forbidden_and_keeps_it(make):
    registry = make()
    region = registry.lease(1, 256)
    _refused(ErrorCode.FORBIDDEN, registry.release, 2, region.name, region.token)
    _refused(ErrorCode.FORBIDDEN, registry.release, 1, region.name, "f" * 32)
    assert os.path.exists(region.path) and not region.released
    assert registry.checkout(1, region.name, region.token) is region
    registry.checkin(region)


def test_an_unknown_region_is_not_found(make, prefix):
    registry = make()
    error = _refused(ErrorCode.REGION_NOT_FOUND, registry.checkout, 1, f"{prefix}99", "0" * 32)
    assert "lease one first" in error.message


def test_a_released_region_is_not_found_and_says_so(make):
    registry = make()
    region = registry.lease(1, 256)
    registry.release(1, region.name, region.token)
    for call in (registry.checkout, registry.release):
        error = _refused(ErrorCode.REGION_NOT_FOUND, call, 1, region.name, region.token)
        assert "released" in error.message


# -- release and the refcount ---------------------------------------------------------------------


def test_release_of_an_idle_region_frees_it_now(make, prefix):
    registry = make()
    region = registry.lease(1, 256)
    assert registry.release(1, region.name, region.token) is True
    assert _files(prefix) == [] and len(registry) == 0
    assert region.view.nbytes == 0  # a use after release finds an empty view, not freed memory


def test_release_while_checked_out_is_deferred_until_checkin(make, prefix):
    destroyed = []
    registry = make(before_destroy=lambda r: destroyed.append(r.name))
    region = registry.lease(1, 4096)
    registry.checkout(1, region.name, region.token)
    assert registry.release(1, region.name, region.token) is False
    # The running request still has its memory, under its name ...
    region.view[:] = 7
    assert region.view.sum() == 7 * 4096
    assert _files(prefix) == [region.name] and destroyed == []
    assert len(registry) == 1  # a live region still (status counts deferred releases)
    # ... but the client no longer has the region: no new request, no quota held.
    assert registry.owned_by(1) == []
    _refused(ErrorCode.REGION_NOT_FOUND, registry.checkout, 1, region.name, region.token)
    registry.checkin(region)
    assert destroyed == [region.name]
    assert _files(prefix) == [] and len(registry) == 0


def test_a_deferred_release_waits_for_the_last_checkin(make, prefix):
    registry = make()
    region = registry.lease(1, 256)
    registry.checkout(1, region.name, region.token)
    registry.checkout(1, region.name, region.token)
    registry.release(1, region.name, region.token)
    registry.checkin(region)
    assert _files(prefix) == [region.name]
    registry.checkin(region)
    assert _files(prefix) == []


def test_checkin_of_an_unreleased_region_keeps_it(make, prefix):
    registry = make()
    region = registry.lease(1, 256)
    registry.checkout(1, region.name, region.token)
    registry.checkin(region)
    assert _files(prefix) == [region.name] and len(registry) == 1


def test_a_truncated_region_is_refused_and_released(make, prefix):
    registry = make()
    region = registry.lease(1, 8192)
    os.truncate(region.path, 4096)  # what a misbehaving client can do to a region it opened
    error = _refused(ErrorCode.REGION_NOT_FOUND, registry.checkout, 1, region.name, region.token)
    assert "truncated" in error.message
    assert _files(prefix) == [] and len(registry) == 0


def test_release_client_releases_only_that_clients_regions(make, prefix):
    registry = make()
    mine = [registry.lease(1, 256) for _ in range(3)]
    other = registry.lease(2, 256)
    assert registry.release_client(1) == 3
    assert _files(prefix) == [other.name]
    assert all(r.released for r in mine) and registry.owned_by(2) == [other]
    assert registry.release_client(1) == 0


def test_release_client_defers_a_region_in_use(make, prefix):
    registry = make()
    busy = registry.lease(1, 256)
    registry.lease(1, 256)
    registry.checkout(1, busy.name, busy.token)
    assert registry.release_client(1) == 2
    assert _files(prefix) == [busy.name]
    registry.checkin(busy)
    assert _files(prefix) == []


# -- close_all, unlink_names and the callbacks ------------------------------------------------------


def test_close_all_frees_every_idle_region(make, prefix):
    destroyed = []
    registry = make(before_destroy=lambda r: destroyed.append(r.name))
    leased = [registry.lease(c, 256) for c in (1, 1, 2)]
    registry.close_all()
    assert sorted(destroyed) == sorted(r.name for r in leased)
    assert _files(prefix) == [] and len(registry) == 0


def test_close_all_removes_the_name_but_keeps_the_mapping_of_a_region_in_use(make, prefix):
    destroyed = []
    registry = make(before_destroy=lambda r: destroyed.append(r.name))
    region = registry.lease(1, 4096)
    registry.checkout(1, region.name, region.token)
    registry.close_all()
    assert _files(prefix) == [] and destroyed == []
    region.view[:] = 3  # an abandoned request still running on it must not crash
    assert region.view.sum() == 3 * 4096
    registry.checkin(region)
    region.close()  # what the process exit does otherwise


def test_unlink_names_removes_every_name_and_keeps_every_mapping(make, prefix):
    registry = make()
    leased = [registry.lease(1, 256), registry.lease(2, 256)]
    registry.unlink_names()
    assert _files(prefix) == []
    assert len(registry) == 2
    for region in leased:
        region.view[:] = 1
        assert region.view.sum() == 256
    registry.close_all()  # the mappings still go, without complaint about the missing names
    assert len(registry) == 0


def test_before_destroy_sees_the_region_while_its_memory_is_still_there(make):
    seen = []

    def before_destroy(region):
        seen.append((region.name, region.address, int(region.view[0])))

    registry = make(before_destroy=before_destroy)
    region = registry.lease(1, 256)
    region.view[0] = 42
    registry.release(1, region.name, region.token)
    assert seen == [(region.name, region.address, 42)]


def test_a_failing_before_destroy_still_frees_the_region(make, prefix, caplog):
    def before_destroy(region):
        raise RuntimeError("cudaHostUnregister failed")

    registry = make(before_destroy=before_destroy)
    region = registry.lease(1, 256)
    with caplog.at_level(logging.ERROR, logger="trtd.regions"):
        assert registry.release(1, region.name, region.token) is True
    assert _files(prefix) == [] and len(registry) == 0
    assert region.name in caplog.text


def test_on_create_gets_each_new_segments_descriptor(make):
    created = []

    def on_create(fd):
        created.append(os.fstat(fd).st_size)
        os.fchmod(fd, 0o640)

    registry = make(on_create=on_create)
    region = registry.lease(1, 1000, guarded=True)  # another user's: shared (on_create)
    assert created == [1024]  # called after the size is set
    assert os.stat(region.path).st_mode & 0o777 == 0o640
    own = registry.lease(1, 1000)  # the daemon's own user's: never shared
    assert created == [1024] and os.stat(own.path).st_mode & 0o777 == 0o600


def test_a_failing_on_create_is_internal_and_leaves_no_file(make, prefix):
    def on_create(fd):
        raise PermissionError(errno.EPERM, "fchown refused")

    registry = make(on_create=on_create)
    error = _refused(ErrorCode.INTERNAL, lambda: registry.lease(1, 256, guarded=True))
    assert "permissions" in error.message
    assert _files(prefix) == [] and len(registry) == 0


def test_the_released_name_memory_is_bounded(make, monkeypatch):
    monkeypatch.setattr(regions_module, "_RELEASED_MEMORY", 2)
    registry = make()
    leased = [registry.lease(1, 256) for _ in range(3)]
    for region in leased:
        registry.release(1, region.name, region.token)
    # The oldest name is forgotten: it is still not found, only in the plainer words.
    oldest = _refused(ErrorCode.REGION_NOT_FOUND, registry.checkout, 1, leased[0].name, leased[0].token)
    newest = _refused(ErrorCode.REGION_NOT_FOUND, registry.checkout, 1, leased[2].name, leased[2].token)
    assert "released" not in oldest.message and "released" in newest.message


def test_a_decoy_under_the_regions_name_does_not_hide_a_truncated_segment(make):
    """The attack: keep a descriptor of the segment, unlink its name, put a full-size decoy
    under the name, truncate the real segment to 0. A stat of the path would see the decoy and
    let the daemon touch pages that are gone (SIGBUS); the check asks the daemon's own fd."""
    registry = make()
    region = registry.lease(1, 8192)
    own = os.open(region.path, os.O_RDWR)
    try:
        os.unlink(region.path)
        decoy = os.open(region.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(decoy, 8192)
        os.close(decoy)
        os.ftruncate(own, 0)
        error = _refused(ErrorCode.REGION_NOT_FOUND, registry.checkout, 1, region.name, region.token)
        assert "truncated" in error.message
    finally:
        os.close(own)
        if os.path.exists(region.path):
            os.unlink(region.path)


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="POSIX shared memory")
def test_a_hole_punched_into_a_region_is_refused_before_anything_touches_it(make):
    """fallocate(PUNCH_HOLE | KEEP_SIZE) keeps the size but gives pages back; with /dev/shm full
    the daemon's next touch of them would be a SIGBUS. The check counts the pages (st_blocks)."""
    import ctypes

    registry = make()
    region = registry.lease(1, 64 * 1024)
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(region.path, os.O_RDWR)
    try:
        punch_hole_keep_size = 0x02 | 0x01
        assert libc.fallocate(fd, punch_hole_keep_size, ctypes.c_long(4096), ctypes.c_long(8192)) == 0
        assert os.fstat(fd).st_size == region.nbytes  # the size alone would not tell
    finally:
        os.close(fd)
    error = _refused(ErrorCode.REGION_NOT_FOUND, registry.checkout, 1, region.name, region.token)
    assert "hole punched" in error.message
