"""Unit tests of the wire codec, the typed schema decoder and the region layout math."""

from __future__ import annotations

import tracemalloc

import msgpack
import numpy as np
import pytest

from trtd.protocol import (ALIGNMENT, MAX_REPLY_BYTES, MAX_REQUEST_BYTES, PROTOCOL_VERSION,
                           SUPPORTED_VERSIONS, WIRE_DTYPES, ErrorCode, ProtocolError, Slot, align_up,
                           decode_reply, decode_request, encode_error, encode_reply, encode_request,
                           first_overlap, from_numpy, is_wire_dtype, itemsize, plan_slots,
                           tensor_nbytes, to_numpy)
from trtd.protocol import messages as m

TOKEN = "7c45d22660fd73f31a250f9bd492b3eb"
REGION = "trtd_1a2b3c4d_9f0e_1"


def _infer_body(**overrides) -> dict:
    body = {
        "v": 1, "op": "infer", "id": 17, "client_id": 3, "model": "fusion", "region": REGION,
        "token": TOKEN,
        "inputs": [
            {"name": "image", "dtype": "float32", "shape": [2, 3, 4], "offset": 0, "nbytes": 96},
            {"name": "meta", "dtype": "float32", "shape": [2, 16], "offset": 256, "nbytes": 128},
        ],
        "outputs": [{"name": "logits", "offset": 512, "nbytes": 80}],
    }
    body.update(overrides)
    return body


def _pack(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def _refused(data: bytes, code: ErrorCode = ErrorCode.BAD_MESSAGE) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_request(data)
    assert info.value.code == code, info.value.message
    return info.value


# -- well-formed requests ----------------------------------------------------------------------------


def test_infer_round_trip():
    request = m.Infer(
        client_id=3, model="fusion", region=REGION, token=TOKEN,
        inputs=[m.InputRef(name="image", dtype="float32", shape=[2, 3, 4], offset=0, nbytes=96)],
        outputs=[m.OutputRef(name="logits", offset=256, nbytes=80)],
    )
    request_id, decoded = decode_request(encode_request(request, 99))
    assert request_id == 99
    assert decoded == request


def test_envelope_keys_come_first_and_nil_optionals_are_omitted():
    obj = msgpack.unpackb(encode_request(m.ListModels(), 5))
    assert list(obj) == ["v", "op", "id"]
    assert obj == {"v": PROTOCOL_VERSION, "op": "models", "id": 5}


def test_absent_and_nil_optional_field_are_the_same():
    _, absent = decode_request(_pack({"v": 1, "op": "models", "id": 1}))
    _, nil = decode_request(_pack({"v": 1, "op": "models", "id": 1, "name": None}))
    assert absent == nil == m.ListModels(name=None)


def test_defaults_fill_absent_fields():
    _, hello = decode_request(_pack({"v": 1, "op": "hello", "id": 1, "client_pid": 42}))
    assert hello == m.Hello(client_pid=42, client_start_time=0.0, client_name="")


def test_unknown_extra_keys_are_ignored():
    body = _infer_body(priority=3, trace={"span": "abc"})
    body["inputs"][0]["layout"] = "NCHW"
    body["outputs"][0]["future_flag"] = True
    request_id, request = decode_request(_pack(body))
    _, plain = decode_request(_pack(_infer_body()))
    assert request_id == 17
    assert request == plain


def test_integer_is_accepted_for_a_float_field():
    _, hello = decode_request(_pack({"v": 1, "op": "hello", "id": 1, "client_pid": 42,
                                     "client_start_time": 1732170000}))
    assert hello.client_start_time == 1732170000.0
    assert type(hello.client_start_time) is float


def test_float32_is_accepted_for_a_float_field():
    data = msgpack.packb({"v": 1, "op": "hello", "id": 1, "client_pid": 42, "client_start_time": 1.5},
                         use_single_float=True)
    assert b"\xca" in data
    _, hello = decode_request(data)
    assert hello.client_start_time == 1.5


def test_largest_request_id_is_echoed():
    request_id, _ = decode_request(_pack({"v": 1, "op": "status", "id": 2**64 - 1}))
    assert request_id == 2**64 - 1


# -- malformed bytes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("data", [b"", b"\xc1", b"not msgpack at all", b"\xff\xfe\xfd"])
def test_non_msgpack_bytes(data):
    err = _refused(data)
    assert err.request_id == 0


def test_truncated_msgpack():
    data = encode_request(m.Lease(client_id=3, nbytes=1 << 20), 8)
    for cut in (1, len(data) // 2, len(data) - 1):
        err = _refused(data[:cut])
        assert err.request_id == 0


def test_trailing_bytes_after_the_map():
    _refused(encode_request(m.Status(), 1) + b"\x00")


@pytest.mark.parametrize("obj", [[1, "status", 2], "status", 7, None, True])
def test_non_map_request(obj):
    err = _refused(_pack(obj))
    assert "map" in err.message
    assert err.request_id == 0


def test_non_string_map_key():
    _refused(_pack({"v": 1, "op": "status", "id": 1, 5: "x"}))


def test_invalid_utf8_string():
    # fixstr of 2 bytes that are not UTF-8, as the value of "op"
    data = b"\x83\xa1v\x01\xa2id\x01\xa2op\xa2\xff\xfe"
    _refused(data)


# -- field types -------------------------------------------------------------------------------------


def test_str_where_int_expected_names_the_field_path():
    body = _infer_body()
    body["inputs"][0]["offset"] = "0"
    err = _refused(_pack(body))
    assert "inputs[0].offset" in err.message
    assert "integer" in err.message
    assert err.request_id == 17


def test_nested_index_in_path():
    body = _infer_body()
    body["inputs"][1]["shape"] = [2, "16"]
    err = _refused(_pack(body))
    assert "inputs[1].shape[1]" in err.message


def test_bool_where_int_expected():
    err = _refused(_pack({"v": 1, "op": "lease", "id": 4, "client_id": 3, "nbytes": True}))
    assert "nbytes" in err.message
    assert err.request_id == 4


def test_float_where_int_expected():
    err = _refused(_pack({"v": 1, "op": "lease", "id": 4, "client_id": 3, "nbytes": 1024.0}))
    assert "nbytes" in err.message


def test_int_where_bool_expected_in_a_reply():
    data = _pack({"v": 1, "id": 3, "ok": True, "result": {"released_now": 1}})
    with pytest.raises(ProtocolError) as info:
        decode_reply(data, m.Release, 3)
    assert info.value.code == ErrorCode.BAD_MESSAGE
    assert "result.released_now" in info.value.message


def test_nil_for_a_non_optional_field():
    err = _refused(_pack({"v": 1, "op": "hello", "id": 1, "client_pid": 42, "client_name": None}))
    assert "client_name" in err.message


def test_map_where_array_expected():
    err = _refused(_pack(_infer_body(outputs={"logits": 1})))
    assert "outputs" in err.message


def test_missing_required_field():
    err = _refused(_pack({"v": 1, "op": "lease", "id": 4, "client_id": 3}))
    assert "missing field 'nbytes'" in err.message
    assert err.request_id == 4


def test_missing_required_nested_field():
    body = _infer_body()
    del body["outputs"][0]["nbytes"]
    err = _refused(_pack(body))
    assert "outputs[0].nbytes" in err.message


# -- the envelope ------------------------------------------------------------------------------------


def test_unknown_op():
    err = _refused(_pack({"v": 1, "op": "teleport", "id": 12}), ErrorCode.UNKNOWN_OP)
    assert err.request_id == 12
    assert "teleport" in err.message


@pytest.mark.parametrize("op", [None, 5, ["status"]])
def test_missing_or_non_string_op(op):
    body = {"v": 1, "id": 12}
    if op is not None:
        body["op"] = op
    err = _refused(_pack(body), ErrorCode.UNKNOWN_OP)
    assert err.request_id == 12


def test_op_sent_as_bin_is_refused():
    _refused(_pack({"v": 1, "op": b"status", "id": 12}))


@pytest.mark.parametrize("version", [0, 2, 99, "1", 1.0, True, None])
def test_wrong_version(version):
    body = {"op": "status", "id": 21}
    if version is not None:
        body["v"] = version
    err = _refused(_pack(body), ErrorCode.UNSUPPORTED_VERSION)
    assert err.details == {"supported": list(SUPPORTED_VERSIONS)}
    assert err.request_id == 21


def test_version_is_checked_before_op():
    _refused(_pack({"v": 2, "op": "teleport", "id": 1}), ErrorCode.UNSUPPORTED_VERSION)


@pytest.mark.parametrize("request_id", [-1, -2**63, "7", 1.5, True, None])
def test_bad_request_id(request_id):
    err = _refused(_pack({"v": 1, "op": "status", "id": request_id}))
    assert err.request_id == 0


def test_unsupported_version_error_reply():
    err = _refused(_pack({"v": 7, "op": "status", "id": 21}), ErrorCode.UNSUPPORTED_VERSION)
    data = encode_error(err.request_id, err.code, err.message, err.details)
    obj = msgpack.unpackb(data)
    assert obj["v"] == PROTOCOL_VERSION and obj["id"] == 21 and obj["ok"] is False
    assert obj["error"]["details"]["supported"] == [1]


# -- size limits and hostile lengths -----------------------------------------------------------------


def test_request_over_max_request_bytes():
    body = {"v": 1, "op": "status", "id": 1, "padding": ["x" * 4000] * 17}
    data = _pack(body)
    assert len(data) > MAX_REQUEST_BYTES
    err = _refused(data)
    assert str(MAX_REQUEST_BYTES) in err.message


def _status_padded_to(size: int) -> bytes:
    """A status request grown to exactly `size` bytes by an unknown key holding strings."""
    chunks = ["y" * 4000]
    while len(_pack({"v": 1, "op": "status", "id": 1, "p": chunks + ["y" * 4000]})) <= size:
        chunks.append("y" * 4000)
    for n in range(4001):
        data = _pack({"v": 1, "op": "status", "id": 1, "p": chunks + ["y" * n]})
        if len(data) == size:
            return data
    raise AssertionError("no padding reaches the size exactly")


def test_request_of_exactly_max_request_bytes_is_read():
    data = _status_padded_to(MAX_REQUEST_BYTES)
    assert decode_request(data) == (1, m.Status())
    _refused(_status_padded_to(MAX_REQUEST_BYTES + 1))


@pytest.mark.parametrize("header", [
    b"\xdd\x80\x00\x00\x00",              # array32 claiming 2**31 elements
    b"\xdf\x80\x00\x00\x00",              # map32 claiming 2**31 entries
    b"\xdb\x80\x00\x00\x00",              # str32 claiming 2**31 bytes
    b"\xc6\x80\x00\x00\x00",              # bin32 claiming 2**31 bytes
    b"\xc9\x80\x00\x00\x00\x05",          # ext32 claiming 2**31 bytes
])
def test_hostile_length_header_is_refused_without_allocating(header):
    head = _pack({"v": 1, "op": "infer", "id": 3})
    assert head[0] == 0x83
    # ... and inside a valid-looking request, as the value of a field.
    nested = b"\x84" + head[1:] + b"\xa6inputs" + header
    # What is allocated is measured, not how long it takes: a large allocation can be quick
    # (calloc'ed pages are only mapped) and a slow machine says nothing. Claimed: 2 GiB or more;
    # allowed: 1 MiB.
    tracemalloc.start()
    try:
        refusals = [_refused(header + b"\x00" * 8), _refused(nested)]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 2**20, f"{peak} bytes allocated"
    # An allocation that failed (not traced) would be a MemoryError turned into the refusal.
    assert not any("MemoryError" in r.message for r in refusals), [r.message for r in refusals]


@pytest.mark.parametrize("what,obj", [
    ("array", list(range(1025))),
    ("map", {f"k{i}": i for i in range(65)}),
    ("str", "s" * 4097),
])
def test_request_unpacker_limits(what, obj):
    _refused(_pack({"v": 1, "op": "status", "id": 1, "extra": obj}))


def test_reply_over_max_reply_bytes():
    with pytest.raises(ProtocolError) as info:
        decode_reply(b"\x80" * (MAX_REPLY_BYTES + 1), m.Status, 1)
    assert info.value.code == ErrorCode.BAD_MESSAGE


# -- bin and ext types -------------------------------------------------------------------------------


def test_ext_type_refused():
    body = _infer_body(token=msgpack.ExtType(5, b"\x01\x02\x03\x04"))
    _refused(_pack(body))


def test_ext_type_refused_even_under_an_unknown_key():
    # msgpack's predefined timestamp extension (type -1) is refused like any other ext.
    _refused(_pack({"v": 1, "op": "status", "id": 1, "when": msgpack.Timestamp(1732170000, 0)}))
    _refused(_pack({"v": 1, "op": "status", "id": 1, "blob": msgpack.ExtType(5, b"\x00" * 8)}))


def test_bin_type_refused():
    _refused(_pack({"v": 1, "op": "release", "id": 1, "client_id": 3, "region": REGION,
                    "token": bytes.fromhex(TOKEN)}))


def test_empty_bin_in_a_str_field_refused():
    # A zero-length bin passes the unpacker's limits (0 <= max_bin_len) but is still not a string.
    err = _refused(_pack({"v": 1, "op": "unload", "id": 1, "name": b""}))
    assert "name" in err.message


# -- replies -----------------------------------------------------------------------------------------


def test_reply_round_trip_and_stale_id():
    result = m.LeaseReply(region=m.RegionInfo(name=REGION, nbytes=4096, token=TOKEN))
    data = encode_reply(4, result)
    reply = decode_reply(data, m.Lease, 4)
    assert reply.result == result and reply.error is None
    assert decode_reply(data, m.Lease, 5) is None


def test_error_reply_defaults_details():
    data = _pack({"v": 1, "id": 2, "ok": False, "error": {"code": "INTERNAL", "message": "boom"}})
    reply = decode_reply(data, m.Status, 2)
    assert reply.error == m.ErrorInfo(code="INTERNAL", message="boom", details={})


def test_error_reply_with_an_unknown_code_still_decodes():
    data = encode_error(9, "SOME_FUTURE_CODE", "new in a later daemon")
    reply = decode_reply(data, m.Status, 9)
    assert reply.error.code == "SOME_FUTURE_CODE"


def test_reply_result_with_unknown_keys():
    data = _pack({"v": 1, "id": 6, "ok": True, "result": {"released": 2, "later": [1, 2]},
                  "server_note": "x"})
    assert decode_reply(data, m.Goodbye, 6).result == m.GoodbyeReply(released=2)


def test_non_map_reply():
    with pytest.raises(ProtocolError):
        decode_reply(_pack([1, 2]), m.Status, 1)


# -- dtypes ------------------------------------------------------------------------------------------


def test_dtype_table_matches_numpy():
    for name, size in WIRE_DTYPES.items():
        assert is_wire_dtype(name)
        assert itemsize(name) == size == to_numpy(name).itemsize
        assert from_numpy(to_numpy(name)) == name
    assert not is_wire_dtype("bfloat16")
    assert not is_wire_dtype(b"float32")
    with pytest.raises(ValueError):
        to_numpy("complex64")
    with pytest.raises(ValueError):
        from_numpy(np.complex64)


# -- layout ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,expected", [(0, 0), (1, 256), (255, 256), (256, 256), (257, 512),
                                        (1204352, 1204480)])
def test_align_up(n, expected):
    assert ALIGNMENT == 256
    assert align_up(n) == expected


def test_align_up_other_alignment():
    assert align_up(5, 4) == 8
    assert align_up(8, 4) == 8
    assert align_up(7, 1) == 7


def test_tensor_nbytes():
    assert tensor_nbytes([2, 3, 224, 224], 4) == 1204224
    assert tensor_nbytes([], 8) == 8
    assert tensor_nbytes([0, 5], 4) == 0


def _assert_sound(slots: list[Slot], total: int, sizes: list[tuple[str, int]]):
    assert [s.name for s in slots] == [n for n, _ in sizes]
    assert [s.nbytes for s in slots] == [b for _, b in sizes]
    for s in slots:
        assert s.offset % ALIGNMENT == 0
        assert s.end <= total
    assert total % ALIGNMENT == 0 and total >= ALIGNMENT
    assert first_overlap((s.name, s.offset, s.nbytes) for s in slots) is None
    for a, b in zip(slots, slots[1:]):
        assert a.end <= b.offset


def test_plan_slots_aligned_and_non_overlapping():
    sizes = [("image", 1204224), ("meta", 128), ("logits", 8000), ("embedding", 2048)]
    slots, total = plan_slots(sizes)
    _assert_sound(slots, total, sizes)
    assert [s.offset for s in slots] == [0, 1204224, 1204480, 1212672]
    assert total == 1214720


def test_plan_slots_with_start_and_empty_tensors():
    sizes = [("a", 1), ("empty", 0), ("b", 300), ("c", 256)]
    slots, total = plan_slots(sizes, start=10)
    _assert_sound(slots, total, sizes)
    assert slots[0].offset == 256


def test_plan_slots_nothing():
    slots, total = plan_slots([])
    assert slots == [] and total == ALIGNMENT


def test_plan_slots_random():
    rng = np.random.default_rng(0)
    for _ in range(200):
        sizes = [(f"t{i}", int(rng.integers(0, 100_000))) for i in range(int(rng.integers(1, 12)))]
        slots, total = plan_slots(sizes, start=int(rng.integers(0, 5000)))
        _assert_sound(slots, total, sizes)


def test_first_overlap():
    assert first_overlap([]) is None
    assert first_overlap([("a", 0, 256), ("b", 256, 256)]) is None          # adjacent
    assert first_overlap([("a", 0, 257), ("b", 256, 256)]) == ("a", "b")
    assert first_overlap([("b", 256, 256), ("a", 0, 300)]) == ("a", "b")   # order-independent
    assert first_overlap([("a", 0, 1024), ("inner", 256, 16)]) == ("a", "inner")
    assert first_overlap([("a", 0, 256), ("same", 0, 256)]) is not None
    # Empty ranges overlap nothing, even when they sit inside another range.
    assert first_overlap([("a", 0, 1024), ("empty", 256, 0)]) is None
    assert first_overlap([("x", 512, 0), ("y", 512, 0)]) is None
