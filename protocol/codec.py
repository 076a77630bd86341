"""The one msgpack codec both sides use: envelopes, size limits, typed decoding.

Limits are enforced before anything is allocated: the socket layer caps the
frame (ZMQ_MAXMSGSIZE) and the unpacker caps every string, array and map, so a
hostile length prefix is refused instead of honoured. No ext types are
accepted, so nothing but plain msgpack data is ever deserialized.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgpack

from .errors import ErrorCode, ProtocolError
from .messages import REQUEST_TYPES, ErrorInfo, Request
from .schema import struct_decoder, to_wire
from .version import PROTOCOL_VERSION, SUPPORTED_VERSIONS

# A request is a few hundred bytes; 64 KiB leaves room for many tensors.
MAX_REQUEST_BYTES = 64 * 1024
# Replies can describe many models; the SDK accepts up to this.
MAX_REPLY_BYTES = 4 * 1024 * 1024

_REQUEST_LIMITS = dict(
    max_str_len=4096,
    max_bin_len=0,
    max_ext_len=0,
    max_array_len=1024,
    max_map_len=64,
)
_REPLY_LIMITS = dict(
    max_str_len=1024 * 1024,
    max_bin_len=0,
    max_ext_len=0,
    max_array_len=65536,
    max_map_len=65536,
)


def _packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _unpackb(data: bytes, limits: dict, what: str) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, use_list=True, **limits)
    except Exception as exc:  # msgpack raises several types (ValueError, ExtraData, ...)
        reason = str(exc) or type(exc).__name__
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE, f"{what} is not a valid msgpack message within limits: {reason}"
        ) from None


# -- requests --------------------------------------------------------------------------------------


def encode_request(request: Request, request_id: int, auth: str = "") -> bytes:
    """auth: the admin token (privileged ops) or the connection token (TCP endpoints), if any."""
    body = {"v": PROTOCOL_VERSION, "op": request.OP, "id": request_id}
    if auth:
        body["auth"] = auth
    body.update(to_wire(request))
    return _packb(body)


@dataclass(slots=True)
class Envelope:
    """A decoded request with the envelope fields the daemon acts on besides the op."""

    request_id: int
    request: Request
    auth: str = ""  # the token the sender presents; "" when absent


def decode_request(data: bytes) -> tuple[int, Request]:
    """Decode and type-check a request. Raises ProtocolError carrying the request id when known."""
    envelope = decode_envelope(data)
    return envelope.request_id, envelope.request


def decode_envelope(data: bytes) -> Envelope:
    """decode_request() plus the envelope's "auth" token."""
    if len(data) > MAX_REQUEST_BYTES:
        raise ProtocolError(
            ErrorCode.BAD_MESSAGE,
            f"request of {len(data)} bytes exceeds the limit of {MAX_REQUEST_BYTES}",
        )
    obj = _unpackb(data, _REQUEST_LIMITS, "request")
    if type(obj) is not dict:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a request must be a msgpack map")
    request_id = obj.get("id", 0)
    if type(request_id) is not int or not 0 <= request_id < 2**64:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "field 'id' must be an unsigned 64-bit integer")
    version = obj.get("v")
    if version not in SUPPORTED_VERSIONS or type(version) is not int:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version!r} is not supported; this daemon speaks "
            f"{', '.join(map(str, SUPPORTED_VERSIONS))}: upgrade the client or the daemon so they match",
            {"supported": list(SUPPORTED_VERSIONS)},
            request_id,
        )
    op = obj.get("op")
    cls = REQUEST_TYPES.get(op) if type(op) is str else None
    if cls is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_OP,
            f"unknown op {op!r}; known ops: {', '.join(REQUEST_TYPES)}",
            request_id=request_id,
        )
    auth = obj.get("auth", "")
    if type(auth) is not str:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "field 'auth' must be a string",
                            request_id=request_id)
    try:
        return Envelope(request_id, struct_decoder(cls)(obj, ""), auth)
    except ProtocolError as exc:
        exc.request_id = request_id
        raise


# -- replies ---------------------------------------------------------------------------------------


def encode_reply(request_id: int, result: Any) -> bytes:
    return _packb({"v": PROTOCOL_VERSION, "id": request_id, "ok": True, "result": to_wire(result)})


def encode_error(request_id: int, code: ErrorCode | str, message: str,
                 details: dict | None = None) -> bytes:
    error = {"code": str(code), "message": message, "details": details or {}}
    return _packb({"v": PROTOCOL_VERSION, "id": request_id, "ok": False, "error": error})


@dataclass(slots=True)
class Reply:
    """A decoded reply: result (typed) when ok, error otherwise."""

    request_id: int
    result: Any = None
    error: ErrorInfo | None = None


def decode_reply(data: bytes, request_type: type[Request], expected_id: int) -> Reply | None:
    """Decode a reply to request `expected_id`; None for a reply to another (stale) request."""
    if len(data) > MAX_REPLY_BYTES:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"reply of {len(data)} bytes exceeds the limit")
    obj = _unpackb(data, _REPLY_LIMITS, "reply")
    if type(obj) is not dict:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a reply must be a msgpack map")
    request_id = obj.get("id", 0)
    if request_id != expected_id:
        # An error reply with id 0 answers a message the daemon could not read at
        # all; the only such message can be the one in flight.
        if not (request_id == 0 and obj.get("ok") is False):
            return None
    if obj.get("ok") is True:
        return Reply(expected_id, result=struct_decoder(request_type.REPLY)(obj.get("result"), "result"))
    return Reply(expected_id, error=struct_decoder(ErrorInfo)(obj.get("error"), "error"))
