"""The daemon's ZMTP decoder on its own (daemon/serve/zmtp.py): bytes in, messages out, caps.

End-to-end attacks against a real daemon are in tests/test_hostile_frames.py; here the
decoder is fed the same bytes in every split a socket could deliver them in."""

from __future__ import annotations

import struct

import pytest

from trtd.bench.fuzz.strategies import ZMTP_DEALER_READY, ZMTP_GREETING
from trtd.daemon.serve.zmtp import HANDSHAKE, ZmtpSession, ZmtpViolation, frame

OPEN = ZMTP_GREETING + ZMTP_DEALER_READY


def _feed_in_pieces(data: bytes, size: int, cap: int = 1024) -> list[bytes]:
    session = ZmtpSession(cap)
    out: list[bytes] = []
    for at in range(0, len(data), size):
        out += session.feed(data[at:at + size])
    return out


@pytest.mark.parametrize("piece", [1, 2, 7, 64, 65, 1000, 1 << 20])
def test_any_split_of_the_bytes_gives_the_same_messages(piece):
    payloads = [b"", b"a", b"x" * 255, b"y" * 256, b"z" * 1024]
    data = OPEN + b"".join(frame(p) for p in payloads)
    assert _feed_in_pieces(data, piece) == payloads


def test_the_daemons_handshake_is_a_valid_greeting_and_ready():
    assert len(HANDSHAKE) > 64 and HANDSHAKE[0] == 0xFF and HANDSHAKE[9] == 0x7F
    assert HANDSHAKE[10:12] == b"\x03\x01" and HANDSHAKE[12:16] == b"NULL"
    assert b"READY" in HANDSHAKE[64:] and b"ROUTER" in HANDSHAKE[64:]


def test_frame_encodes_short_and_long_sizes():
    assert frame(b"ab") == b"\x00\x02ab"
    assert frame(b"q" * 300)[:9] == b"\x02" + struct.pack(">Q", 300)


@pytest.mark.parametrize("tail, why", [
    (b"\x02" + struct.pack(">Q", 1025), "1025 bytes"),
    (b"\x02" + struct.pack(">Q", 2**64 - 1), "at most 1024"),
    (b"\x01\x01a", "more than one frame"),
    (b"\x08\x00", "reserved frame flags"),
    (b"\x04\x05\x04PING", "malformed PING"),
    (b"\x04\x06\x05READY", "unexpected command"),
])
def test_caps_are_applied_on_the_header_before_the_body_arrives(tail, why):
    session = ZmtpSession(1024)
    session.feed(OPEN)
    with pytest.raises(ZmtpViolation, match=why):
        session.feed(tail)  # no body follows: refused on what the header claims


def test_at_most_one_partial_frame_is_held():
    session = ZmtpSession(1024)
    session.feed(OPEN + b"\x02" + struct.pack(">Q", 1000) + b"x" * 999)
    assert len(session._buffer) == 9 + 999
    assert session.feed(b"x") == [b"x" * 1000] and session._buffer == b""


def test_a_ping_is_answered_with_its_context():
    session = ZmtpSession(1024)
    session.feed(OPEN + b"\x04\x0a\x04PING\x00\x01abc")
    assert bytes(session.outgoing) == b"\x04\x08\x04PONGabc"


@pytest.mark.parametrize("greeting, why", [
    (b"\x00" * 10, "bad signature"),
    (b"\xff" + bytes(8) + b"\x7f\x02", "ZMTP version 2"),
    (ZMTP_GREETING[:12] + b"PLAIN".ljust(20, b"\0"), "mechanism b'PLAIN'"),
])
def test_a_wrong_greeting_is_refused_as_soon_as_it_shows(greeting, why):
    with pytest.raises(ZmtpViolation, match=why):
        ZmtpSession(1024).feed(greeting)
