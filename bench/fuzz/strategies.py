"""What the fuzzer sends: hypothesis strategies for every kind of hostile or buggy frame.

Values sit at the edges (0, -1, 2**31, 2**63 - 1, the work region's size and just past it),
fields get values of their declared type and, now and then, any type at all, so that both
the decoder and every handler's own checks are reached. FuzzTarget (target.py) sends them.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from trtd.protocol import MAX_REQUEST_BYTES, REQUEST_TYPES, WIRE_DTYPES

WORK_BYTES = 64 * 1024  # the fuzzer's work region: offsets around its end are interesting
# Privileged ops sent with the real admin token (admin_request; the package docstring says why
# never shutdown).
ADMIN_OPS = sorted(op for op, cls in REQUEST_TYPES.items() if cls.PRIVILEGED and op != "shutdown")
# The model the well-behaved client and the infer cases use: never unloaded with the token.
PROTECTED_MODEL = "demo"
# Names a load with the token may create: a fixed few, so a long campaign cannot pile up models.
ADMIN_NAMES = ["fz0", "fz1", "fz2", PROTECTED_MODEL, "", "z" * 300, "a/b", "\x00", " "]

_I64 = st.integers(-(2**63), 2**63 - 1)
INTERESTING_INTS = st.sampled_from([0, 1, -1, 2, 64, 255, 256, 257, 4096, WORK_BYTES - 256, WORK_BYTES,
                                    WORK_BYTES + 256, 2**31 - 1, 2**31, 2**32, 2**53, 2**62, 2**63 - 1,
                                    -(2**63), 2**64 - 1, -256])
INTS = st.one_of(INTERESTING_INTS, _I64, st.integers(0, WORK_BYTES // 256).map(lambda k: k * 256))
ANY = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
              st.text(max_size=20), st.binary(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8)
DTYPES = st.one_of(st.sampled_from(list(WIRE_DTYPES)), st.text(max_size=10))
SHAPES = st.lists(st.one_of(st.sampled_from([0, 1, 64, -1, -64, 2**31, 2**62, 2**63 - 1]), INTS),
                  max_size=6)
ROLES = st.sampled_from(["work", "work", "work", "guard", "victim", "released", "forged"])


@st.composite
def tensor_ref(draw: Any, output: bool) -> dict[str, Any]:
    ref = {"name": draw(st.sampled_from(["x", "y", "x", "y", "", "z" * 300])) if draw(st.booleans())
           else draw(st.text(max_size=10)),
           "offset": draw(INTS), "nbytes": draw(INTS)}
    if not output:
        ref["dtype"] = draw(DTYPES)
        ref["shape"] = draw(SHAPES)
    return ref


@st.composite
def plausible_infer(draw: Any) -> dict[str, Any]:
    """An infer close to a valid one: most fields right, one or two at the edges."""
    batch = draw(st.sampled_from([1, 2, 64, 65, 0, -1]))
    x = {"name": "x", "dtype": "float32", "shape": [batch, 64], "offset": 0, "nbytes": batch * 256}
    y = {"name": "y", "offset": draw(st.sampled_from([16384, 32768, WORK_BYTES - 256])),
         "nbytes": max(batch, 0) * 40}
    for ref in (x, y):
        for key in draw(st.lists(st.sampled_from(sorted(ref)), max_size=2, unique=True)):
            ref[key] = draw(INTS) if key in ("offset", "nbytes") else draw(
                SHAPES if key == "shape" else DTYPES if key == "dtype" else st.text(max_size=4))
    return {"op": "infer", "role": draw(ROLES), "model": draw(st.sampled_from(["demo"] * 5 + ["nope"])),
            "inputs": [x] + draw(st.lists(tensor_ref(False), max_size=1)),
            "outputs": [y] + draw(st.lists(tensor_ref(True), max_size=1)),
            "deadline_ms": draw(st.sampled_from([0, 0, 1, 10_000, -1]))}


# Values at the edges of each load field (valid ones among them: the rest stays valid).
_LOAD_EDGES = {
    "path": ["builtin:nope", "builtin:", "", "/etc/passwd", "/dev/zero", "/", "missing.onnx",
             "../../x.onnx", "x" * 5000, "builtin:demo\x00", "builtin:nearzero224"],
    "backend": ["tensorrt", "torch", "nope", "", "ONNXRUNTIME"],
    "max_batch": [1, 64, 1 << 20, (1 << 20) + 1, -1, 2**63 - 1],
    "device": [0, 1, -2, 2**31, -(2**63)],
    "instances": [2, 64, 0, 65, -1, 2**31],
    "inputs": [["x:-1,64:float32"], ["x:1,64"], ["x"], ["x:a"], ["x:-1,64:complex"], [""], ["x:" + "9," * 40]],
}


@st.composite
def plausible_privileged(draw: Any, op: str) -> dict[str, Any]:
    """A load/unload/reload close to a valid one (to be sent with the admin token): most
    fields right, one or two at the edges, so the handlers' own checks are reached."""
    if op == "reload":
        return {"op": op}
    if op == "unload":
        return {"op": op, "name": draw(st.sampled_from([n for n in ADMIN_NAMES if n != PROTECTED_MODEL]
                                                       + ["nope"]))}
    body = {"op": "load", "name": draw(st.sampled_from(ADMIN_NAMES)), "path": "builtin:demo",
            "backend": "onnxruntime", "max_batch": 0, "device": -1, "instances": 1, "inputs": []}
    for key in draw(st.lists(st.sampled_from(sorted(_LOAD_EDGES)), max_size=2, unique=True)):
        random = INTS if key in ("max_batch", "device", "instances") else \
            st.lists(st.text(max_size=12), max_size=3) if key == "inputs" else st.text(max_size=12)
        body[key] = draw(st.one_of(st.sampled_from(_LOAD_EDGES[key]), random))
    return body


@st.composite
def typed_request(draw: Any) -> dict[str, Any]:
    """Any op, fields drawn by their meaning; then maybe one field replaced by a wrong type."""
    # Half of them infer: it has the most fields and is the one that writes into regions.
    op = draw(st.sampled_from(sorted(REQUEST_TYPES) + ["infer"] * len(REQUEST_TYPES)))
    if op == "infer":
        body = draw(st.one_of(plausible_infer(), st.builds(
            lambda role, model, ins, outs: {"op": "infer", "role": role, "model": model,
                                            "inputs": ins, "outputs": outs},
            ROLES, st.one_of(st.just("demo"), st.text(max_size=8)), st.lists(tensor_ref(False), max_size=3),
            st.lists(tensor_ref(True), max_size=3))))
    else:
        body = {"op": op, "role": draw(ROLES)}
        for f in REQUEST_TYPES[op].__dataclass_fields__.values():
            if f.name in ("client_id", "region", "token"):
                continue  # filled from the role at send time
            body[f.name] = draw(_field_value(f))
    if draw(st.integers(0, 3)) == 0:
        key = draw(st.sampled_from(sorted(k for k in body if k != "role") + ["client_id", "token",
                                                                           "region", "v", "id"]))
        body[key] = draw(ANY)
    if draw(st.integers(0, 5)) == 0:
        body[draw(st.text(min_size=1, max_size=8))] = draw(ANY)
    if draw(st.integers(0, 5)) == 0:
        body["auth"] = draw(st.one_of(st.text(max_size=40), ANY))
    return body


def _field_value(f: Any) -> st.SearchStrategy[Any]:
    """Values of a request field's declared type (int, str), anything for the others."""
    return INTS if "int" in str(f.type) else st.text(max_size=12) if "str" in str(f.type) else ANY


@st.composite
def admin_request(draw: Any) -> dict[str, Any]:
    """A privileged op to send with the real admin token (FuzzTarget.admin): mostly close to
    valid (plausible_privileged), else fields of the right types drawn at random; then maybe
    one field of any type, or an unknown one."""
    op = draw(st.sampled_from(ADMIN_OPS + ["load"] * 2))  # load has the most fields to check
    if draw(st.integers(0, 2)) > 0:
        body = draw(plausible_privileged(op))
    else:
        body = {"op": op, **{f.name: draw(_field_value(f))
                             for f in REQUEST_TYPES[op].__dataclass_fields__.values()}}
    if draw(st.integers(0, 3)) == 0:
        body[draw(st.sampled_from(sorted(body) + ["v", "id"]))] = draw(ANY)
    if draw(st.integers(0, 5)) == 0:
        body[draw(st.text(min_size=1, max_size=8))] = draw(ANY)
    return body


@st.composite
def mutated_frame(draw: Any) -> dict[str, Any]:
    """A valid message's bytes, then truncated, flipped, with hostile lengths or trailing bytes."""
    base = draw(st.sampled_from(["status", "infer", "lease", "models"]))
    how = draw(st.sampled_from(["truncate", "flip", "insert", "huge_length", "trailing", "random"]))
    return {"base": base, "how": how, "at": draw(st.integers(0, 400)),
            "bytes": draw(st.binary(min_size=1, max_size=16)),
            "huge": draw(st.sampled_from([b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff",
                                          b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",
                                          b"\xc9\x7f\xff\xff\xff\x01", b"\xdc\xff\xff"]))}


# A valid ZMTP 3.1 greeting (NULL mechanism) and a DEALER's READY: what a wire case sends first
# when it fuzzes the bytes after the handshake rather than the handshake itself.
ZMTP_GREETING = b"\xff" + bytes(8) + b"\x7f\x03\x01" + b"NULL".ljust(20, b"\0") + bytes(32)
ZMTP_DEALER_READY = b"\x04\x1c\x05READY\x0bSocket-Type\x00\x00\x00\x06DEALER"
_WIRE_PREFIXES = st.sampled_from([b"", ZMTP_GREETING, ZMTP_GREETING + ZMTP_DEALER_READY])
_FRAME_HEADERS = st.builds(lambda flags, size: bytes([flags, size]),
                           st.integers(0, 255), st.integers(0, 255)) | st.builds(
    lambda flags, size: bytes([flags]) + size.to_bytes(8, "big"),
    st.integers(0, 255), st.sampled_from([0, 1, 255, 256, MAX_REQUEST_BYTES, MAX_REQUEST_BYTES + 1,
                                          2**31, 2**62, 2**64 - 1]))

FRAMES = st.one_of(
    st.builds(lambda n: {"frames": n}, st.lists(st.binary(max_size=64), min_size=2, max_size=4)),
    st.builds(lambda size: {"oversized": size}, st.sampled_from([MAX_REQUEST_BYTES + 1, 1 << 20])),
    # Routing ids a peer chooses itself (a ROUTER once aborted on a zero-prefixed one that
    # collided with its own automatic ids): the daemon must ignore them, twice the same too.
    st.builds(lambda rid, twice: {"routing_id": rid, "twice": twice},
              st.one_of(st.binary(min_size=1, max_size=255),
                        st.binary(min_size=4, max_size=4).map(lambda b: b"\0" + b)),
              st.booleans()),
    # Raw bytes on the socket: a broken greeting, or valid handshake then hostile frames.
    st.builds(lambda prefix, header, tail: {"wire": prefix + header + tail},
              _WIRE_PREFIXES, _FRAME_HEADERS, st.binary(max_size=64)))
