"""The ROUTER's automatic routing ids: a libzmq bug a local peer can abort the daemon with.

libzmq (4.3.5, bundled in pyzmq up to at least 27.3.0) names a peer that sends no routing id
b"\\0" + a 32-bit counter and never checks whether another peer chose that id itself with
ZMQ_ROUTING_ID, which libzmq does not refuse either: the collision fails `zmq_assert(ok)`
(socket_base.cpp:2113) and aborts the process. The counter starts at rand(), which libzmq never
seeds (random.cpp's seed_random() has no caller), so with glibc the first ROUTER of every
process starts at 0x6b8b4567 and one hostile connection was enough (seen 2026-12-01).

seed() seeds the C library's rand() from the OS's random source before the daemon's ROUTER
exists: the start becomes unknown, and a peer has to find it by probing (a peer that claims an
id in use is parked unanswered, so probing is possible: ~230,000 connections and 2.5 minutes
against a seeded daemon on a 2-core VM, with ~16,000 connections held). Only a libzmq that skips
ids in use removes the abort: service/libzmq/router-skip-used-ids.patch, and
libzmq_skips_used_ids() tells whether the loaded one does (`trtd doctor` reports it).
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

# A child process collides an automatic id with a claimed one: stock libzmq aborts it.
_COLLISION = r"""
import struct, zmq
ctx = zmq.Context(); r = ctx.socket(zmq.ROUTER); r.bind("inproc://t")
def dealer(rid=None):
    d = ctx.socket(zmq.DEALER)
    if rid is not None: d.setsockopt(zmq.ROUTING_ID, rid)
    d.connect("inproc://t"); d.send(b"x"); return r.recv_multipart()[0]
first = dealer()
dealer(b"\0" + struct.pack(">I", (struct.unpack(">I", first[1:])[0] + 1) & 0xFFFFFFFF))
dealer()
print("ok")
"""


def seed() -> bool:
    """Seed rand() with 32 random bits; call before the process's first ROUTER (REQ and REP
    draw from rand() too). False where it cannot reach libzmq: pyzmq's Windows wheels carry
    their own C runtime inside _zmq.pyd, whose rand() state Python has no way to touch."""
    if sys.platform == "win32":
        return False
    try:
        libc = ctypes.CDLL(None)  # the process's C library: the wheels' libzmq imports rand from it
        libc.srand(ctypes.c_uint(int.from_bytes(os.urandom(4), "little")))
    except (OSError, AttributeError):
        return False
    return True


def libzmq_skips_used_ids(timeout_s: float = 30.0) -> bool:
    """Whether the libzmq pyzmq loads skips automatic ids a peer already holds (patched)."""
    try:
        run = subprocess.run([sys.executable, "-c", _COLLISION], capture_output=True, text=True,
                             timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return run.returncode == 0 and run.stdout.strip() == "ok"
