"""msgspec vs trtd.protocol's own codec: golden vectors byte for byte, hostile inputs, speed.

    python -m trtd.bench.codec_msgspec [--json PATH] [--seconds 0.2] [--repeats 7]

An evaluation, not a code path: nothing in trtd imports this module, and it needs
`pip install msgspec`. It defines msgspec Structs mirroring the wire messages
(hand-written for the hot path: the request envelope, hello, models, infer with its
tensor refs, the infer and hello replies, the error info; the other ops are derived
from protocol/messages.py with the same rules) and then:

1. golden: for each vector of protocol/golden/vectors.json, encodes its message
   with msgspec and compares with the golden bytes; decodes the golden bytes with
   msgspec and compares the values. Requests are encoded twice: with a
   tag_field="op" Struct (what a tagged union, msgspec's one-pass way to pick the
   op, encodes) and with "op" as a plain field in the envelope's position.
2. hostile: the bad requests of tests/test_protocol_codec.py (and deep nesting,
   which tests/test_fuzz.py reaches) through the current decode_request and
   through a msgspec decode_envelope written to behave like it, side by side:
   refused or not, error code, request id, message; and the bytes traced while
   refusing hostile length prefixes.
3. bench: median µs per op (time.perf_counter_ns; gc off while timing; cases
   interleaved in each repeat) of decode_envelope on the golden infer request and
   encode_reply on the golden infer reply, current codec vs msgspec Structs vs
   msgspec on the existing dataclasses, with bare msgpack unpackb/packb as the
   floor of the current codec; and the client's side (encode_request,
   decode_reply).

Prints a report; --json writes every number and finding.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
import typing
from pathlib import Path
from typing import Annotated, Any, Generic, TypeVar, Union

import msgpack

try:
    import msgspec
    from msgspec import UNSET, Meta, Struct, UnsetType
except ImportError:  # pragma: no cover - the evaluation needs it; trtd does not depend on it
    raise ImportError("trtd.bench.codec_msgspec needs msgspec: pip install msgspec") from None

import trtd.protocol as protocol
from trtd.protocol import (MAX_REQUEST_BYTES, REQUEST_TYPES, SUPPORTED_VERSIONS, ErrorCode, ProtocolError,
                           decode_envelope, decode_reply, decode_request, encode_reply, encode_request)
from trtd.protocol import codec
from trtd.protocol import messages as m
from trtd.protocol.schema import struct_decoder, to_wire

VECTORS_PATH = Path(protocol.__file__).resolve().parent / "golden" / "vectors.json"

# -- msgspec Structs mirroring protocol/messages.py -----------------------------------------------
#
# Rules of the current codec (schema.py, codec.py) and how they are mirrored:
# - every dataclass field is encoded, defaults included (hello.defaults has client_start_time
#   0.0 and client_name ""): Structs keep omit_defaults=False;
# - only None-valued fields are left out (models' `name`): msgspec leaves out UNSET fields,
#   so the optional field is `T | None | UnsetType = UNSET` and __post_init__ turns a decoded
#   nil into UNSET (absent and nil mean the same, SPEC 2.3);
# - the envelope's "auth" is sent only when non-empty: `str | UnsetType` on encode;
# - the request unpacker's limits (codec._REQUEST_LIMITS: str 4096, array 1024, map 64
#   entries, no bin, no ext) apply to every value, known or not; msgspec has no such
#   decoder options, so the str and array limits are Meta constraints on the typed fields.

RStr = Annotated[str, Meta(max_length=4096)]
RInts = Annotated[list[int], Meta(max_length=1024)]
U64 = Annotated[int, Meta(ge=0)]  # msgspec's int already stops at 2**64 - 1
T = TypeVar("T")


def _rlist(item: Any) -> Any:
    return Annotated[list[item], Meta(max_length=1024)]


class InputRef(Struct, kw_only=True):
    name: RStr
    dtype: RStr
    shape: RInts
    offset: int
    nbytes: int


class OutputRef(Struct, kw_only=True):
    name: RStr
    offset: int
    nbytes: int


class Request(Struct, kw_only=True, tag_field="op"):
    """The request envelope. The tag "op" selects the class: a union decodes in one pass."""

    v: int = 0     # absent: no supported version (UNSUPPORTED_VERSION), as in codec.py
    id: U64 = 0
    auth: RStr = ""


class Hello(Request, kw_only=True, tag="hello"):
    client_pid: int
    client_start_time: float = 0.0
    client_name: RStr = ""


class ListModels(Request, kw_only=True, tag="models"):
    name: RStr | None | UnsetType = UNSET

    def __post_init__(self) -> None:
        if self.name is None:
            self.name = UNSET


class Infer(Request, kw_only=True, tag="infer"):
    client_id: int
    model: RStr
    region: RStr
    token: RStr
    inputs: _rlist(InputRef)
    outputs: _rlist(OutputRef)
    deadline_ms: int = 0


class OutputInfo(Struct, kw_only=True):
    name: str
    dtype: str
    shape: list[int]
    offset: int
    nbytes: int


class Timing(Struct, kw_only=True):
    compute_us: int
    total_us: int
    queue_us: int = 0
    h2d_us: int = 0
    d2h_us: int = 0


class InferReply(Struct, kw_only=True):
    outputs: list[OutputInfo]
    timing: Timing
    backend: str = ""
    engine: str = ""


class HelloReply(Struct, kw_only=True):
    client_id: int
    daemon_id: str
    server_version: str
    protocol_version: int
    alignment: int
    max_message_bytes: int
    heartbeat_interval_s: float = 0.0


class ErrorInfo(Struct, kw_only=True):
    code: str
    message: str
    details: dict[str, Any] = {}


class ReplyIn(Struct, Generic[T], kw_only=True):
    """A reply as the client decodes it: result when ok, error otherwise."""

    v: int = 0
    id: int = 0
    ok: bool = False
    result: T | UnsetType = UNSET
    error: ErrorInfo | UnsetType = UNSET


class OkReply(Struct, kw_only=True):
    v: int
    id: int
    ok: bool
    result: Any


class ErrorReply(Struct, kw_only=True):
    v: int
    id: int
    ok: bool
    error: ErrorInfo


HAND_WRITTEN = {m.InputRef: InputRef, m.OutputRef: OutputRef, m.Hello: Hello, m.ListModels: ListModels,
                m.Infer: Infer, m.OutputInfo: OutputInfo, m.Timing: Timing, m.InferReply: InferReply,
                m.HelloReply: HelloReply, m.ErrorInfo: ErrorInfo}

# The rest derived with the same rules (none of them has an optional field).
_structs: dict[type, type] = dict(HAND_WRITTEN)


def _struct_type(tp: Any, request_side: bool) -> Any:
    if tp is str:
        return RStr if request_side else str
    if tp in (int, float, bool) or tp is Any:
        return tp
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        item = _struct_type(args[0], request_side)
        return _rlist(item) if request_side else list[item]
    if origin is dict or tp is dict:
        return dict[str, Any]
    if dataclasses.is_dataclass(tp):
        return struct_for(tp, request_side)
    raise TypeError(f"no msgspec mirror for {tp!r}")


def struct_for(cls: type, request_side: bool = False) -> type:
    """The msgspec Struct mirroring a wire dataclass (hand-written or derived)."""
    if cls in _structs:
        return _structs[cls]
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        tp = _struct_type(hints[f.name], request_side)
        if f.default is not dataclasses.MISSING:
            fields.append((f.name, tp, f.default))
        elif f.default_factory is not dataclasses.MISSING:
            fields.append((f.name, tp, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, tp))
    if request_side:
        out = msgspec.defstruct(cls.__name__, fields, bases=(Request,), kw_only=True, tag=cls.OP)
    else:
        out = msgspec.defstruct(cls.__name__, fields, kw_only=True)
    _structs[cls] = out
    return out


REQUEST_STRUCTS = {op: struct_for(cls, request_side=True) for op, cls in REQUEST_TYPES.items()}
REPLY_STRUCTS = {op: struct_for(cls.REPLY) for op, cls in REQUEST_TYPES.items()}

# Requests as the client encodes them: "op" in its golden position (v, op, id, auth, fields).
# A tag_field Struct cannot do that: msgspec writes the tag first.
_ENVELOPE_OUT = [("v", int, 1), ("op", str), ("id", int), ("auth", Union[str, UnsetType], UNSET)]


def _plain_twin(cls: type) -> type:
    fields = list(_ENVELOPE_OUT)
    for f in msgspec.structs.fields(cls):
        if f.name in ("v", "id", "auth"):
            continue
        if f.default is not msgspec.NODEFAULT:
            fields.append((f.name, f.type, f.default))
        elif f.default_factory is not msgspec.NODEFAULT:
            fields.append((f.name, f.type, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, f.type))
    return msgspec.defstruct(cls.__name__ + "Out", fields, kw_only=True)


REQUEST_OUT = {op: _plain_twin(cls) for op, cls in REQUEST_STRUCTS.items()}


def mirror_mismatches() -> list[str]:
    """Field names, order and defaults of each Struct vs its dataclass (should be none)."""
    problems = []
    for dc, st in _structs.items():
        want = [(f.name, f.default if f.default is not dataclasses.MISSING else
                 (f.default_factory() if f.default_factory is not dataclasses.MISSING else "<required>"))
                for f in dataclasses.fields(dc)]
        got = [(f.name, f.default if f.default is not msgspec.NODEFAULT else
                (f.default_factory() if f.default_factory is not msgspec.NODEFAULT else "<required>"))
               for f in msgspec.structs.fields(st) if not (issubclass(st, Request) and f.name in ("v", "id", "auth"))]
        got = [(n, None if d is UNSET else d) for n, d in got]
        if want != got:
            problems.append(f"{dc.__name__}: dataclass {want} vs Struct {got}")
    return problems


# -- msgspec codec functions, behaving like codec.py's ---------------------------------------------

ENCODER = msgspec.msgpack.Encoder()
REQUEST_DECODER = msgspec.msgpack.Decoder(Union[tuple(REQUEST_STRUCTS.values())])
REPLY_DECODERS = {op: msgspec.msgpack.Decoder(ReplyIn[st]) for op, st in REPLY_STRUCTS.items()}


class _Head(Struct):
    """The envelope read leniently, to classify a refusal the way codec.py does."""

    v: Any = UNSET
    op: Any = UNSET
    id: Any = 0
    auth: Any = ""


_HEAD_DECODER = msgspec.msgpack.Decoder(_Head)
_MSGSPEC_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)


def _unsupported(version: Any, request_id: int) -> ProtocolError:
    return ProtocolError(
        ErrorCode.UNSUPPORTED_VERSION,
        f"protocol version {version!r} is not supported; this daemon speaks "
        f"{', '.join(map(str, SUPPORTED_VERSIONS))}: upgrade the client or the daemon so they match",
        {"supported": list(SUPPORTED_VERSIONS)}, request_id)


def _unknown_op(op: Any) -> str:
    return f"unknown op {op!r}; known ops: {', '.join(REQUEST_TYPES)}"


def _refusal(data: bytes, exc: Exception) -> ProtocolError:
    """The error codec.py would choose, in its order (id, v, op, auth, fields), from msgspec's."""
    reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, RecursionError) else str(exc)
    try:
        head = _HEAD_DECODER.decode(data)
    except _MSGSPEC_ERRORS:
        return ProtocolError(ErrorCode.BAD_MESSAGE, f"request is not a valid msgpack map: {reason}")
    request_id = head.id
    if type(request_id) is not int or not 0 <= request_id < 2**64:
        return ProtocolError(ErrorCode.BAD_MESSAGE, "field 'id' must be an unsigned 64-bit integer")
    if type(head.v) is not int or head.v not in SUPPORTED_VERSIONS:
        return _unsupported(None if head.v is UNSET else head.v, request_id)
    if type(head.op) is not str or head.op not in REQUEST_TYPES:
        return ProtocolError(ErrorCode.UNKNOWN_OP, _unknown_op(head.op), request_id=request_id)
    return ProtocolError(ErrorCode.BAD_MESSAGE, reason, request_id=request_id)


def ms_decode_envelope(data: bytes) -> Request:
    """codec.decode_envelope with msgspec: the Struct carries id and auth itself."""
    if len(data) > MAX_REQUEST_BYTES:
        raise ProtocolError(ErrorCode.BAD_MESSAGE,
                            f"request of {len(data)} bytes exceeds the limit of {MAX_REQUEST_BYTES}")
    try:
        request = REQUEST_DECODER.decode(data)
    except _MSGSPEC_ERRORS as exc:
        raise _refusal(data, exc) from None
    if request.v not in SUPPORTED_VERSIONS:
        raise _unsupported(request.v, request.id)
    return request


def ms_encode_reply(request_id: int, result: Any) -> bytes:
    return ENCODER.encode(OkReply(v=protocol.PROTOCOL_VERSION, id=request_id, ok=True, result=result))


def ms_encode_error(request_id: int, code: str, message: str, details: dict | None = None) -> bytes:
    return ENCODER.encode(ErrorReply(v=protocol.PROTOCOL_VERSION, id=request_id, ok=False,
                                     error=ErrorInfo(code=str(code), message=message, details=details or {})))


def ms_encode_request(request: Struct, request_id: int, auth: str = "") -> bytes:
    """request: a plain-twin Struct (REQUEST_OUT); its v/op are the class defaults."""
    request.id = request_id
    request.auth = auth or UNSET
    return ENCODER.encode(request)


def ms_decode_reply(data: bytes, op: str, expected_id: int) -> ReplyIn | None:
    reply = REPLY_DECODERS[op].decode(data)
    if reply.id != expected_id and not (reply.id == 0 and reply.ok is False):
        return None
    return reply


# The existing dataclasses decoded and encoded by msgspec (no new message types): msgspec
# decodes into dataclasses but has no tagged union of them, so the envelope is read first.
_DC_DECODERS = {op: msgspec.msgpack.Decoder(cls) for op, cls in REQUEST_TYPES.items()}


def dc_decode_envelope(data: bytes) -> tuple[int, Any, str]:
    if len(data) > MAX_REQUEST_BYTES:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "request too large")
    try:
        head = _HEAD_DECODER.decode(data)
        if type(head.id) is not int or not 0 <= head.id < 2**64:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "field 'id' must be an unsigned 64-bit integer")
        if type(head.v) is not int or head.v not in SUPPORTED_VERSIONS:
            raise _unsupported(head.v, head.id)
        decoder = _DC_DECODERS.get(head.op) if type(head.op) is str else None
        if decoder is None:
            raise ProtocolError(ErrorCode.UNKNOWN_OP, _unknown_op(head.op), request_id=head.id)
        return head.id, decoder.decode(data), head.auth
    except _MSGSPEC_ERRORS as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, str(exc)) from None


def hybrid_decode_envelope(data: bytes) -> codec.Envelope:
    """codec.decode_envelope with one change: the typed step is msgspec.convert into the existing
    dataclasses instead of schema.struct_decoder. msgpack-python's unpacker stays, with its limits."""
    if len(data) > MAX_REQUEST_BYTES:
        raise ProtocolError(ErrorCode.BAD_MESSAGE,
                            f"request of {len(data)} bytes exceeds the limit of {MAX_REQUEST_BYTES}")
    obj = codec._unpackb(data, codec._REQUEST_LIMITS, "request")
    if type(obj) is not dict:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a request must be a msgpack map")
    request_id = obj.get("id", 0)
    if type(request_id) is not int or not 0 <= request_id < 2**64:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "field 'id' must be an unsigned 64-bit integer")
    version = obj.get("v")
    if version not in SUPPORTED_VERSIONS or type(version) is not int:
        raise _unsupported(version, request_id)
    op = obj.get("op")
    cls = REQUEST_TYPES.get(op) if type(op) is str else None
    if cls is None:
        raise ProtocolError(ErrorCode.UNKNOWN_OP, _unknown_op(op), request_id=request_id)
    auth = obj.get("auth", "")
    if type(auth) is not str:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "field 'auth' must be a string", request_id=request_id)
    try:
        return codec.Envelope(request_id, msgspec.convert(obj, cls), auth)
    except msgspec.ValidationError as exc:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, str(exc), request_id=request_id) from None


def hybrid_decode_reply(data: bytes, request_type: type, expected_id: int) -> codec.Reply | None:
    """codec.decode_reply with msgspec.convert as the typed step."""
    obj = codec._unpackb(data, codec._REPLY_LIMITS, "reply")
    if type(obj) is not dict:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "a reply must be a msgpack map")
    request_id = obj.get("id", 0)
    if request_id != expected_id and not (request_id == 0 and obj.get("ok") is False):
        return None
    if obj.get("ok") is True:
        return codec.Reply(expected_id, result=msgspec.convert(obj.get("result"), request_type.REPLY))
    return codec.Reply(expected_id, error=msgspec.convert(obj.get("error"), m.ErrorInfo))


def dc_encode_reply(request_id: int, result: Any) -> bytes:
    return ENCODER.encode({"v": protocol.PROTOCOL_VERSION, "id": request_id, "ok": True, "result": result})


# -- 1. golden vectors --------------------------------------------------------------------------------


def _first_diff(a: bytes, b: bytes) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first differing byte at {i}: msgspec {a[i:i + 12].hex()}... golden {b[i:i + 12].hex()}..."
    return f"lengths {len(a)} (msgspec) vs {len(b)} (golden)"


def _key_order(data: bytes) -> list[str]:
    return list(msgpack.unpackb(data))


def golden() -> dict:
    vectors = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
    rows = []
    for v in vectors:
        golden_bytes = bytes.fromhex(v["msgpack_hex"])
        row = {"name": v["name"], "kind": v["kind"]}
        if v["kind"] == "request":
            env = {"v": 1, "id": v["request_id"], **({"auth": v["auth"]} if "auth" in v else {}),
                   **v["message"]}
            out = msgspec.convert({"op": v["op"], **env}, REQUEST_OUT[v["op"]])
            row["encode_plain"] = ENCODER.encode(out) == golden_bytes
            if not row["encode_plain"]:
                row["encode_plain_diff"] = _first_diff(ENCODER.encode(out), golden_bytes)
            tagged = msgspec.convert({"op": v["op"], **env}, REQUEST_STRUCTS[v["op"]])
            tagged_bytes = ENCODER.encode(tagged)
            row["encode_tagged"] = tagged_bytes == golden_bytes
            if not row["encode_tagged"]:
                row["encode_tagged_diff"] = (f"keys {_key_order(tagged_bytes)[:4]} vs golden "
                                             f"{_key_order(golden_bytes)[:4]}; "
                                             + _first_diff(tagged_bytes, golden_bytes))
                # Same content, other key order?
                row["tagged_same_map"] = msgpack.unpackb(tagged_bytes) == msgpack.unpackb(golden_bytes)
            decoded = ms_decode_envelope(golden_bytes)
            body = msgspec.to_builtins(decoded)
            got_env = (body.pop("op"), body.pop("v"), body.pop("id"), body.pop("auth"))
            row["decode"] = (type(decoded) is REQUEST_STRUCTS[v["op"]] and body == v["message"]
                             and got_env == (v["op"], 1, v["request_id"], v.get("auth", "")))
            # decoded -> re-encoded through the plain twin
            again = ms_encode_request(msgspec.convert(
                {"op": v["op"], **msgspec.to_builtins(decoded)}, REQUEST_OUT[v["op"]]),
                decoded.id, decoded.auth)
            row["round_trip"] = again == golden_bytes
            # the existing dataclasses, decoded by msgspec
            rid, dc, auth = dc_decode_envelope(golden_bytes)
            row["decode_dataclass"] = (rid, dc, auth) == (
                v["request_id"], struct_decoder(REQUEST_TYPES[v["op"]])(v["message"], ""), v.get("auth", ""))
        elif v["kind"] == "reply":
            result = msgspec.convert(v["message"], REPLY_STRUCTS[v["op"]])
            row["encode_plain"] = ms_encode_reply(v["request_id"], result) == golden_bytes
            if not row["encode_plain"]:
                row["encode_plain_diff"] = _first_diff(ms_encode_reply(v["request_id"], result), golden_bytes)
            reply = ms_decode_reply(golden_bytes, v["op"], v["request_id"])
            row["decode"] = (reply is not None and reply.ok is True and reply.error is UNSET
                             and msgspec.to_builtins(reply.result) == v["message"])
            row["round_trip"] = ms_encode_reply(v["request_id"], reply.result) == golden_bytes
            dc = struct_decoder(REQUEST_TYPES[v["op"]].REPLY)(v["message"], "result")
            row["encode_dataclass"] = dc_encode_reply(v["request_id"], dc) == golden_bytes
        else:
            msg = v["message"]
            data = ms_encode_error(v["request_id"], msg["code"], msg["message"], msg["details"])
            row["encode_plain"] = data == golden_bytes
            if not row["encode_plain"]:
                row["encode_plain_diff"] = _first_diff(data, golden_bytes)
            reply = ms_decode_reply(golden_bytes, v["op"], v["request_id"])
            row["decode"] = (reply is not None and reply.ok is False and reply.result is UNSET
                             and msgspec.to_builtins(reply.error) == msg)
            row["round_trip"] = row["encode_plain"]
        rows.append(row)
    checks = ("encode_plain", "encode_tagged", "decode", "round_trip", "decode_dataclass", "encode_dataclass")
    summary = {c: {"pass": sum(1 for r in rows if r.get(c) is True),
                   "fail": [r["name"] for r in rows if r.get(c) is False]} for c in checks}
    return {"vectors": len(rows), "summary": summary, "rows": rows}


# -- 2. hostile and malformed requests -----------------------------------------------------------------

TOKEN = "7c45d22660fd73f31a250f9bd492b3eb"
REGION = "trtd_1a2b3c4d_9f0e_1"


def _pack(obj: Any, **kw: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True, **kw)


def _infer_body(**overrides: Any) -> dict:
    body = {"v": 1, "op": "infer", "id": 17, "client_id": 3, "model": "fusion", "region": REGION,
            "token": TOKEN,
            "inputs": [{"name": "image", "dtype": "float32", "shape": [2, 3, 4], "offset": 0, "nbytes": 96},
                       {"name": "meta", "dtype": "float32", "shape": [2, 16], "offset": 256, "nbytes": 128}],
            "outputs": [{"name": "logits", "offset": 512, "nbytes": 80}]}
    body.update(overrides)
    return body


def _mutated(path: tuple, value: Any, delete: bool = False) -> bytes:
    body = _infer_body()
    target = body
    for key in path[:-1]:
        target = target[key]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return _pack(body)


def _nested(depth: int, under_unknown_key: bool = True) -> bytes:
    inner = b"\x91" * depth + b"\x00"
    if under_unknown_key:
        return b"\x84\xa1v\x01\xa2op\xa6status\xa2id\x01\xa1z" + inner
    return inner


_HEAD = _pack({"v": 1, "op": "infer", "id": 3})
_HOSTILE_HEADERS = {"array32 2**31": b"\xdd\x80\x00\x00\x00", "map32 2**31": b"\xdf\x80\x00\x00\x00",
                    "str32 2**31": b"\xdb\x80\x00\x00\x00", "bin32 2**31": b"\xc6\x80\x00\x00\x00",
                    "ext32 2**31": b"\xc9\x80\x00\x00\x00\x05"}


def hostile_cases() -> list[tuple[str, bytes]]:
    lease = encode_request(m.Lease(client_id=3, nbytes=1 << 20), 8)
    cases: list[tuple[str, bytes]] = [
        # accepted by the current codec
        ("ok: unknown extra keys (envelope and nested)", _pack({**_infer_body(priority=3, trace={"span": "a"}),
                                                               "inputs": [{**_infer_body()["inputs"][0], "layout": "NCHW"}]})),
        ("ok: int for a float field", _pack({"v": 1, "op": "hello", "id": 1, "client_pid": 42,
                                             "client_start_time": 1732170000})),
        ("ok: float32 for a float field", _pack({"v": 1, "op": "hello", "id": 1, "client_pid": 42,
                                                 "client_start_time": 1.5}, use_single_float=True)),
        ("ok: nil optional (models name)", _pack({"v": 1, "op": "models", "id": 1, "name": None})),
        ("ok: id 2**64-1", _pack({"v": 1, "op": "status", "id": 2**64 - 1})),
        ("ok: nesting 500 deep under an unknown key", _nested(500)),
        # malformed bytes
        ("empty frame", b""), ("0xc1 (never used)", b"\xc1"), ("text", b"not msgpack at all"),
        ("0xfffefd", b"\xff\xfe\xfd"),
        ("truncated to 1 byte", lease[:1]), ("truncated to half", lease[:len(lease) // 2]),
        ("truncated by 1 byte", lease[:-1]),
        ("trailing byte", encode_request(m.Status(), 1) + b"\x00"),
        ("array, not map", _pack([1, "status", 2])), ("str, not map", _pack("status")),
        ("int, not map", _pack(7)), ("nil, not map", _pack(None)),
        ("int map key", _pack({"v": 1, "op": "status", "id": 1, 5: "x"})),
        ("invalid UTF-8 op", b"\x83\xa1v\x01\xa2id\x01\xa2op\xa2\xff\xfe"),
        # field types
        ("str for int inputs[0].offset", _mutated(("inputs", 0, "offset"), "0")),
        ("str in inputs[1].shape[1]", _mutated(("inputs", 1, "shape", 1), "16")),
        ("bool for int nbytes", _pack({"v": 1, "op": "lease", "id": 4, "client_id": 3, "nbytes": True})),
        ("float for int nbytes", _pack({"v": 1, "op": "lease", "id": 4, "client_id": 3, "nbytes": 1024.0})),
        ("nil for non-optional client_name", _pack({"v": 1, "op": "hello", "id": 1, "client_pid": 42,
                                                    "client_name": None})),
        ("map for array outputs", _pack(_infer_body(outputs={"logits": 1}))),
        ("missing nbytes", _pack({"v": 1, "op": "lease", "id": 4, "client_id": 3})),
        ("missing outputs[0].nbytes", _mutated(("outputs", 0, "nbytes"), None, delete=True)),
        # envelope
        ("unknown op", _pack({"v": 1, "op": "teleport", "id": 12})),
        ("missing op", _pack({"v": 1, "id": 12})), ("op 5", _pack({"v": 1, "op": 5, "id": 12})),
        ("op bin", _pack({"v": 1, "op": b"status", "id": 12})),
        ("v 2 and unknown op (version first)", _pack({"v": 2, "op": "teleport", "id": 1})),
        *[(f"v {ver!r}", _pack({"op": "status", "id": 21, **({} if ver is None else {"v": ver})}))
          for ver in (0, 2, "1", 1.0, True, None)],
        *[(f"id {rid!r}", _pack({"v": 1, "op": "status", "id": rid})) for rid in (-1, "7", 1.5, True, None)],
        ("auth int", _pack({"v": 1, "op": "status", "id": 3, "auth": 5})),
        # limits
        ("request of 65537+ bytes", _pack({"v": 1, "op": "status", "id": 1, "padding": ["x" * 4000] * 17})),
        ("array of 1025 under unknown key", _pack({"v": 1, "op": "status", "id": 1, "extra": list(range(1025))})),
        ("map of 65 under unknown key", _pack({"v": 1, "op": "status", "id": 1,
                                               "extra": {f"k{i}": i for i in range(65)}})),
        ("str of 4097 under unknown key", _pack({"v": 1, "op": "status", "id": 1, "extra": "s" * 4097})),
        ("str of 4097 in token", _pack(_infer_body(token="t" * 4097))),
        ("1025 inputs[0].shape dims", _mutated(("inputs", 0, "shape"), [1] * 1025)),
        ("nesting 2000 deep under an unknown key", _nested(2000)),
        ("nesting 2000 deep, top level", _nested(2000, under_unknown_key=False)),
        # bin and ext
        ("ext in token", _pack(_infer_body(token=msgpack.ExtType(5, b"\x01\x02\x03\x04")))),
        ("timestamp ext under unknown key", _pack({"v": 1, "op": "status", "id": 1,
                                                   "when": msgpack.Timestamp(1732170000, 0)})),
        ("ext under unknown key", _pack({"v": 1, "op": "status", "id": 1, "blob": msgpack.ExtType(5, b"\0" * 8)})),
        ("bin in token", _pack({"v": 1, "op": "release", "id": 1, "client_id": 3, "region": REGION,
                                "token": bytes.fromhex(TOKEN)})),
        ("empty bin in name", _pack({"v": 1, "op": "unload", "id": 1, "name": b""})),
        ("bin under unknown key", _pack({"v": 1, "op": "status", "id": 1, "blob": b"\x00" * 8})),
    ]
    for label, header in _HOSTILE_HEADERS.items():
        cases.append((f"{label} header, top level", header + b"\x00" * 8))
        cases.append((f"{label} header as inputs", b"\x84" + _HEAD[1:] + b"\xa6inputs" + header))
    return cases


def _outcome(fn: Any, data: bytes) -> dict:
    tracemalloc.start()
    try:
        fn(data)
        out: dict = {"refused": False}
    except ProtocolError as exc:
        out = {"refused": True, "code": str(exc.code), "request_id": exc.request_id, "message": exc.message}
    except Exception as exc:  # an escape: neither accepted nor a ProtocolError
        out = {"refused": True, "code": f"ESCAPED {type(exc).__name__}", "request_id": None, "message": str(exc)}
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    out["peak_bytes"] = peak
    return out


def hostile() -> dict:
    rows = []
    for label, data in hostile_cases():
        cur, new = _outcome(decode_request, data), _outcome(ms_decode_envelope, data)
        hyb = _outcome(hybrid_decode_envelope, data)
        raw = _outcome(REQUEST_DECODER.decode, data)  # msgspec alone, no wrapper
        rows.append({"case": label, "current": cur, "msgspec": new, "hybrid": hyb, "msgspec_raw": raw,
                     "verdict": _verdict(cur, new), "hybrid_verdict": _verdict(cur, hyb),
                     "hybrid_same_message": cur.get("message") == hyb.get("message")})
    out: dict = {"cases": len(rows), "rows": rows}
    for key in ("verdict", "hybrid_verdict"):
        verdicts: dict[str, list[str]] = {}
        for r in rows:
            verdicts.setdefault(r[key], []).append(r["case"])
        out[key + "s"] = verdicts
    out["hybrid_other_message"] = [r["case"] for r in rows if not r["hybrid_same_message"]]
    hostile_rows = [r for r in rows if "header" in r["case"]]
    out["hostile_length_peak_bytes"] = {k: max(r[k]["peak_bytes"] for r in hostile_rows)
                                        for k in ("current", "msgspec", "hybrid")}
    return out


def _verdict(cur: dict, new: dict) -> str:
    if cur["refused"] != new["refused"]:
        return "msgspec accepts" if cur["refused"] else "msgspec refuses"
    if cur.get("code") != new.get("code"):
        return "other code"
    if cur.get("request_id") != new.get("request_id"):
        return "other request id"
    return "same"


def scalar_widths() -> dict:
    """msgspec's encoding of each msgpack width boundary vs msgpack-python's (codec._packb)."""
    values: list[Any] = [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**64 - 1, -1, -32, -33, -128,
                         -129, -32768, -32769, -2**31, -2**31 - 1, -2**63, 0.0, -0.0, 1.5, 1e300, float("inf"),
                         True, False, None, "", "a" * 31, "a" * 32, "a" * 255, "a" * 256, "a" * 65535, "a" * 65536,
                         "é", b"", b"x" * 256, [], [0] * 15, [0] * 16, [0] * 65536, {},
                         {str(i): i for i in range(15)}, {str(i): i for i in range(16)}]
    differ = [repr(v)[:40] for v in values if msgspec.msgpack.encode(v) != msgpack.packb(v, use_bin_type=True)]
    return {"values": len(values), "differ": differ}


# -- 3. micro-benchmark ----------------------------------------------------------------------------------


def _bench(cases: dict[str, Any], seconds: float, repeats: int) -> dict[str, dict]:
    loops = {}
    for name, fn in cases.items():  # calibrate: about `seconds` per repeat
        n, t = 1, 0
        while t < seconds / 10:
            n *= 2
            t0 = time.perf_counter_ns()
            for _ in range(n):
                fn()
            t = (time.perf_counter_ns() - t0) / 1e9
        loops[name] = max(1000, int(n * seconds / t))
    samples: dict[str, list[float]] = {name: [] for name in cases}
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, fn in cases.items():  # interleaved, so drift hits every case alike
                n = loops[name]
                t0 = time.perf_counter_ns()
                for _ in range(n):
                    fn()
                samples[name].append((time.perf_counter_ns() - t0) / n / 1000)
    finally:
        if gc_was:
            gc.enable()
    return {name: {"median_us": statistics.median(s), "min_us": min(s), "max_us": max(s),
                   "loops": loops[name], "repeats": repeats, "samples_us": s} for name, s in samples.items()}


def benchmark(seconds: float, repeats: int) -> dict:
    vectors = {v["name"]: v for v in json.loads(VECTORS_PATH.read_text(encoding="utf-8"))}
    req_bytes = bytes.fromhex(vectors["request.infer"]["msgpack_hex"])
    rep_bytes = bytes.fromhex(vectors["reply.infer"]["msgpack_hex"])
    rep_msg = vectors["reply.infer"]["message"]
    reply_dc = struct_decoder(m.InferReply)(rep_msg, "result")
    reply_st = msgspec.convert(rep_msg, InferReply)
    request_dc = struct_decoder(m.Infer)(vectors["request.infer"]["message"], "")
    request_out = msgspec.convert({"op": "infer", "v": 1, "id": 5, **vectors["request.infer"]["message"]},
                                  REQUEST_OUT["infer"])
    wire_reply = {"v": 1, "id": 5, "ok": True, "result": to_wire(reply_dc)}
    # every variant must produce what the current codec does before it is timed
    assert encode_reply(5, reply_dc) == ms_encode_reply(5, reply_st) == dc_encode_reply(5, reply_dc) == rep_bytes
    assert decode_envelope(req_bytes).request == dc_decode_envelope(req_bytes)[1] == request_dc
    assert msgspec.to_builtins(ms_decode_envelope(req_bytes))["inputs"] == to_wire(request_dc)["inputs"]
    assert encode_request(request_dc, 5) == ms_encode_request(request_out, 5) == req_bytes
    assert decode_reply(rep_bytes, m.Infer, 5).result == reply_dc
    assert ms_decode_reply(rep_bytes, "infer", 5).result == reply_st
    assert hybrid_decode_envelope(req_bytes).request == request_dc
    assert hybrid_decode_reply(rep_bytes, m.Infer, 5).result == reply_dc
    limits = dict(raw=False, strict_map_key=True, use_list=True, max_str_len=4096, max_bin_len=0,
                  max_ext_len=0, max_array_len=1024, max_map_len=64)
    cases = {
        "decode_envelope: trtd codec": lambda: decode_envelope(req_bytes),
        "decode_envelope: msgspec Structs": lambda: ms_decode_envelope(req_bytes),
        "decode_envelope: msgspec -> trtd dataclasses": lambda: dc_decode_envelope(req_bytes),
        "decode_envelope: hybrid (unpacker + msgspec.convert)": lambda: hybrid_decode_envelope(req_bytes),
        "decode_envelope floor: msgpack.unpackb only": lambda: msgpack.unpackb(req_bytes, **limits),
        "encode_reply: trtd codec": lambda: encode_reply(5, reply_dc),
        "encode_reply: msgspec Structs": lambda: ms_encode_reply(5, reply_st),
        "encode_reply: msgspec <- trtd dataclasses": lambda: dc_encode_reply(5, reply_dc),
        "encode_reply floor: msgpack.packb only": lambda: msgpack.packb(wire_reply, use_bin_type=True),
        "client encode_request: trtd codec": lambda: encode_request(request_dc, 5),
        "client encode_request: msgspec Structs": lambda: ms_encode_request(request_out, 5),
        "client decode_reply: trtd codec": lambda: decode_reply(rep_bytes, m.Infer, 5),
        "client decode_reply: msgspec Structs": lambda: ms_decode_reply(rep_bytes, "infer", 5),
        "client decode_reply: hybrid (unpacker + msgspec.convert)": lambda: hybrid_decode_reply(rep_bytes, m.Infer, 5),
    }
    results = _bench(cases, seconds, repeats)
    base = {"decode_envelope": "decode_envelope: trtd codec", "encode_reply": "encode_reply: trtd codec",
            "client encode_request": "client encode_request: trtd codec",
            "client decode_reply": "client decode_reply: trtd codec"}
    for name, r in results.items():
        ref = next(b for k, b in base.items() if name.startswith(k))
        r["speedup_vs_trtd"] = results[ref]["median_us"] / r["median_us"]
    return {"request_bytes": len(req_bytes), "reply_bytes": len(rep_bytes), "seconds_per_repeat": seconds,
            "results": results}


# -- report ---------------------------------------------------------------------------------------------


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write every number and finding here")
    parser.add_argument("--seconds", type=float, default=0.2, help="time per case per repeat (default 0.2)")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    env = {"date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpu": _cpu(), "cores": os.cpu_count(),
           "platform": platform.platform(), "python": platform.python_version(),
           "msgpack": ".".join(map(str, msgpack.version)), "msgspec": msgspec.__version__,
           "msgpack_c_extension": msgpack.Unpacker.__module__ != "msgpack.fallback",
           "command": "python -m trtd.bench.codec_msgspec " + " ".join(argv if argv is not None else sys.argv[1:])}
    report = {"environment": env, "mirror_mismatches": mirror_mismatches(), "golden": golden(), "scalar_widths": scalar_widths(),
              "hostile": hostile(), "benchmark": benchmark(args.seconds, args.repeats)}
    env["wall_s"] = round(time.perf_counter() - started, 1)

    print(f"{env['date']}  {env['cpu']} ({env['cores']} cores)  python {env['python']}  "
          f"msgpack {env['msgpack']}  msgspec {env['msgspec']}")
    print(f"Struct vs dataclass field mismatches: {report['mirror_mismatches'] or 'none'}")
    g = report["golden"]
    print(f"\n1. golden vectors ({g['vectors']}):")
    for check, s in g["summary"].items():
        total = s["pass"] + len(s["fail"])
        print(f"  {check:17} {s['pass']}/{total} byte-identical/equal"
              + (f"; differ: {', '.join(s['fail'])}" if s["fail"] else ""))
    for row in g["rows"]:
        for key in ("encode_plain_diff", "encode_tagged_diff"):
            if key in row and (key != "encode_tagged_diff" or row["name"] == "request.infer"):
                print(f"    {row['name']} {key}: {row[key]}")
    w = report["scalar_widths"]
    print(f"  scalar widths: {w['values'] - len(w['differ'])}/{w['values']} boundary values encode alike"
          + (f"; differ: {w['differ']}" if w["differ"] else ""))
    h = report["hostile"]
    print(f"\n2. hostile/malformed requests ({h['cases']}), verdict (refused or not, code, request id) vs current:")
    print("  msgspec Structs: " + "; ".join(f"{k}: {len(v)}" for k, v in h["verdicts"].items()))
    print("  hybrid (msgpack unpacker + msgspec.convert): "
          + "; ".join(f"{k}: {len(v)}" for k, v in h["hybrid_verdicts"].items())
          + f"; other message text: {len(h['hybrid_other_message'])}")
    print(f"  peak traced bytes refusing 2**31 length prefixes: {h['hostile_length_peak_bytes']}")
    for row in h["rows"]:
        if not row["hybrid_same_message"]:
            print(f"     message, {row['case']}: current {row['current']['message']!r} / hybrid "
                  f"{row['hybrid']['message']!r}")
    fmt = lambda o: ("accepted" if not o["refused"] else f"{o['code']} id={o['request_id']}")  # noqa: E731
    for row in h["rows"]:
        cur, new, hyb, raw = row["current"], row["msgspec"], row["hybrid"], row["msgspec_raw"]
        mark = "  " if row["verdict"] == "same" and row["hybrid_verdict"] == "same" else "!="
        print(f"  {mark} {row['case']:42} current {fmt(cur):27} Structs {fmt(new):27} hybrid {fmt(hyb):27}"
              f" raw msgspec: {'accepted' if not raw['refused'] else raw['message'][:60]!r}")
    b = report["benchmark"]
    print(f"\n3. micro-benchmark (request {b['request_bytes']} B, reply {b['reply_bytes']} B; median of "
          f"{args.repeats} repeats, µs per op):")
    for name, r in b["results"].items():
        print(f"  {name:48} {r['median_us']:7.2f} µs  (min {r['min_us']:.2f}, max {r['max_us']:.2f})  "
              f"x{r['speedup_vs_trtd']:.2f} vs trtd")
    print(f"\nwall time {env['wall_s']} s")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
