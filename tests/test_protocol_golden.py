"""Golden msgpack vectors: the Python codec must reproduce them byte for byte.

protocol/golden/vectors.json is shared with implementations in other languages
(a C++ client checks its encoder/decoder against the same file), so a change
here is a wire change: it needs a SPEC.md update and, if a peer would notice,
a protocol version bump. The last tests keep SPEC.md and the code in step.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

import trtd.protocol as protocol
from trtd.protocol import (REQUEST_TYPES, WIRE_DTYPES, ErrorCode, decode_envelope, decode_reply, decode_request,
                           encode_error, encode_reply, encode_request)
from trtd.protocol import messages as m
from trtd.protocol.schema import struct_decoder, to_wire

PROTOCOL_DIR = Path(protocol.__file__).resolve().parent
VECTORS_PATH = PROTOCOL_DIR / "golden" / "vectors.json"
SPEC_PATH = PROTOCOL_DIR / "SPEC.md"

VECTORS: list[dict] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))
SPEC: str = SPEC_PATH.read_text(encoding="utf-8")


def _by_kind(kind: str) -> list[dict]:
    return [v for v in VECTORS if v["kind"] == kind]


def _ids(vectors: list[dict]) -> list[str]:
    return [v["name"] for v in vectors]


# -- the file itself ---------------------------------------------------------------------------------


def test_vectors_are_well_formed():
    assert VECTORS, "no golden vectors"
    names = [v["name"] for v in VECTORS]
    assert len(names) == len(set(names)), "vector names must be unique"
    for v in VECTORS:
        assert set(v) - {"auth"} == {"name", "kind", "op", "request_id", "message", "msgpack_hex"}, v["name"]
        assert "auth" not in v or v["kind"] == "request", v["name"]
        assert v["kind"] in ("request", "reply", "error"), v["name"]
        assert v["op"] in REQUEST_TYPES, v["name"]
        assert type(v["request_id"]) is int and 0 <= v["request_id"] < 2**64, v["name"]
        assert isinstance(v["message"], dict), v["name"]
        assert re.fullmatch(r"(?:[0-9a-f]{2})+", v["msgpack_hex"]), v["name"]


def test_every_op_has_a_request_vector():
    covered = {v["op"] for v in _by_kind("request")}
    assert set(REQUEST_TYPES) <= covered, f"ops without a request vector: {set(REQUEST_TYPES) - covered}"


def test_required_reply_and_error_coverage():
    replies = {v["op"] for v in _by_kind("reply")}
    assert {"hello", "lease", "infer", "models", "status"} <= replies
    assert len(_by_kind("error")) >= 2
    infer = [v for v in _by_kind("request") if v["op"] == "infer"]
    assert any(len(v["message"]["inputs"]) >= 2 and len(v["message"]["outputs"]) >= 2 for v in infer)
    models = [v for v in _by_kind("request") if v["op"] == "models"]
    assert any("name" in v["message"] for v in models)
    assert any("name" not in v["message"] for v in models)


# -- requests ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _by_kind("request"), ids=_ids(_by_kind("request")))
def test_request_vector(vector):
    cls = REQUEST_TYPES[vector["op"]]
    request = struct_decoder(cls)(vector["message"], "")
    data = bytes.fromhex(vector["msgpack_hex"])

    assert encode_request(request, vector["request_id"], vector.get("auth", "")) == data

    request_id, decoded = decode_request(data)
    assert decode_envelope(data).auth == vector.get("auth", "")
    assert request_id == vector["request_id"]
    assert type(decoded) is cls
    assert decoded == request
    assert to_wire(decoded) == vector["message"]


# -- replies -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", _by_kind("reply"), ids=_ids(_by_kind("reply")))
def test_reply_vector(vector):
    request_type = REQUEST_TYPES[vector["op"]]
    result = struct_decoder(request_type.REPLY)(vector["message"], "result")
    data = bytes.fromhex(vector["msgpack_hex"])

    assert encode_reply(vector["request_id"], result) == data

    reply = decode_reply(data, request_type, vector["request_id"])
    assert reply is not None
    assert reply.error is None
    assert reply.request_id == vector["request_id"]
    assert type(reply.result) is request_type.REPLY
    assert reply.result == result
    assert to_wire(reply.result) == vector["message"]


@pytest.mark.parametrize("vector", _by_kind("error"), ids=_ids(_by_kind("error")))
def test_error_vector(vector):
    msg = vector["message"]
    assert set(msg) == {"code", "message", "details"}
    code = ErrorCode(msg["code"])
    data = bytes.fromhex(vector["msgpack_hex"])

    assert encode_error(vector["request_id"], code, msg["message"], msg["details"]) == data

    reply = decode_reply(data, REQUEST_TYPES[vector["op"]], vector["request_id"])
    assert reply is not None
    assert reply.result is None
    assert reply.error == m.ErrorInfo(**msg)


def test_error_with_id_zero_answers_the_request_in_flight():
    # An error the daemon sends with id 0 (it could not read the request) is taken
    # as the answer to whatever request is in flight.
    vector = next(v for v in _by_kind("error") if v["request_id"] == 0)
    reply = decode_reply(bytes.fromhex(vector["msgpack_hex"]), REQUEST_TYPES[vector["op"]], 41)
    assert reply is not None and reply.error is not None
    assert reply.error.code == vector["message"]["code"]


def test_reply_to_another_request_is_stale():
    vector = next(v for v in _by_kind("reply") if v["request_id"] != 0)
    data = bytes.fromhex(vector["msgpack_hex"])
    assert decode_reply(data, REQUEST_TYPES[vector["op"]], vector["request_id"] + 1) is None


# -- SPEC.md and the code stay in step ---------------------------------------------------------------


def _in_spec(word: str) -> bool:
    return f"`{word}`" in SPEC


@pytest.mark.parametrize("code", [c.value for c in ErrorCode])
def test_every_error_code_is_in_spec(code):
    assert _in_spec(code), f"error code {code} is not documented in SPEC.md"


@pytest.mark.parametrize("op", list(REQUEST_TYPES))
def test_every_op_and_request_field_is_in_spec(op):
    cls = REQUEST_TYPES[op]
    assert _in_spec(op), f"op {op!r} is not documented in SPEC.md"
    assert re.search(rf"^### .*`{re.escape(op)}`", SPEC, re.M), f"SPEC.md has no section for op {op!r}"
    for f in dataclasses.fields(cls):
        assert _in_spec(f.name), f"{cls.__name__}.{f.name} is not documented in SPEC.md"


def _wire_structs() -> list[type]:
    structs = {cls.REPLY for cls in REQUEST_TYPES.values()}
    structs |= {m.TensorSpec, m.ModelInfo, m.RegionInfo, m.InputRef, m.OutputRef, m.OutputInfo,
                m.Timing, m.ModelStatus, m.ErrorInfo}
    return sorted(structs, key=lambda c: c.__name__)


@pytest.mark.parametrize("cls", _wire_structs(), ids=lambda c: c.__name__)
def test_every_result_and_struct_field_is_in_spec(cls):
    for f in dataclasses.fields(cls):
        assert _in_spec(f.name), f"{cls.__name__}.{f.name} is not documented in SPEC.md"


def test_spec_dtype_table_matches_code():
    rows = re.findall(r"^\|\s*`([a-z0-9]+)`\s*\|\s*(\d+)\s*\|", SPEC, re.M)
    table = [(name, int(size)) for name, size in rows if name in WIRE_DTYPES]
    assert table == list(WIRE_DTYPES.items()), "SPEC.md dtype table differs from dtypes.WIRE_DTYPES"


def test_spec_states_the_constants():
    assert f"Protocol version: {protocol.PROTOCOL_VERSION}" in SPEC
    for value in (protocol.ALIGNMENT, protocol.MAX_REQUEST_BYTES, protocol.MAX_REPLY_BYTES):
        assert str(value) in SPEC
