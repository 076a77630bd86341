"""Protocol fuzzing against a real daemon process, with hypothesis.

    python -m trtd.bench.fuzz --examples 5000          # each kind; starts its own daemon

Every case is a frame (or frames) a hostile or buggy client could send: random
bytes, valid messages mutated (truncated, bytes flipped, hostile length
prefixes, trailing bytes), typed requests of every op with wrong types in any
field, extreme shapes (0, negative, dtype x shape overflow), offsets at and past
the region's end, replayed, forged and stolen lease tokens, extra frames,
frames over the size limit. Privileged ops (load, unload, reload) are sent
both without the admin token (UNAUTHORIZED) and, for a share of cases, with
the daemon's real token, so that their own argument checks are fuzzed too.
Never a `shutdown` with the token: any well-formed one (extra fields are
ignored) stops the daemon by design, which would end the campaign, not find a
bug; nor an `unload` of the model the checks run on. After each case the checks are:

- the daemon answers exactly one error or result per single-frame request (none
  for multi-frame messages: dropped), and is alive;
- nothing was written outside a region: guard regions (the fuzzer's own and
  another client's) keep their pattern, and the fuzzer's work region changed
  only inside output areas of successful requests;
- a well-behaved client running alongside keeps getting correct answers.

tests/test_fuzz.py runs a few hundred cases per kind in CI; this script runs
longer campaigns and writes a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np
import zmq
from hypothesis import HealthCheck, given, settings, strategies as st

from trtd.protocol import MAX_REQUEST_BYTES, REQUEST_TYPES, WIRE_DTYPES, messages as m
from trtd.protocol.endpoint import ADMIN_TOKEN, token_path
from trtd.sdk import Client
from trtd.sdk.client import read_token
from trtd.sdk.shm import AttachedRegion

WORK_BYTES = 64 * 1024
GUARD_BYTES = 8 * 1024
PATTERN = 0xA5
# The daemon the fuzzer needs: demo inline (so replies come back in order), small limits.
DAEMON_CONFIG = ("reclaim_interval_s = 0.2\nmax_region_bytes = 1048576\nmax_regions_per_client = 8\n"
                 "max_clients = 64\n[models.demo]\npath = \"builtin:demo\"\n")

# -- values ----------------------------------------------------------------------------------------

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
# Privileged ops sent with the real admin token (admin_request; the docstring says why not shutdown).
ADMIN_OPS = sorted(op for op, cls in REQUEST_TYPES.items() if cls.PRIVILEGED and op != "shutdown")
# The model the well-behaved client and the infer cases use: never unloaded with the token.
PROTECTED_MODEL = "demo"
# Names a load with the token may create: a fixed few, so a long campaign cannot pile up models.
ADMIN_NAMES = ["fz0", "fz1", "fz2", PROTECTED_MODEL, "", "z" * 300, "a/b", "\x00", " "]


@st.composite
def tensor_ref(draw, output: bool) -> dict:
    ref = {"name": draw(st.sampled_from(["x", "y", "x", "y", "", "z" * 300])) if draw(st.booleans())
           else draw(st.text(max_size=10)),
           "offset": draw(INTS), "nbytes": draw(INTS)}
    if not output:
        ref["dtype"] = draw(DTYPES)
        ref["shape"] = draw(SHAPES)
    return ref


@st.composite
def plausible_infer(draw) -> dict:
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
def plausible_privileged(draw, op: str) -> dict:
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
def typed_request(draw) -> dict:
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


def _field_value(f) -> st.SearchStrategy:
    """Values of a request field's declared type (int, str), anything for the others."""
    return INTS if "int" in str(f.type) else st.text(max_size=12) if "str" in str(f.type) else ANY


@st.composite
def admin_request(draw) -> dict:
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
def mutated_frame(draw) -> dict:
    """A valid message's bytes, then truncated, flipped, with hostile lengths or trailing bytes."""
    base = draw(st.sampled_from(["status", "infer", "lease", "models"]))
    how = draw(st.sampled_from(["truncate", "flip", "insert", "huge_length", "trailing", "random"]))
    return {"base": base, "how": how, "at": draw(st.integers(0, 400)),
            "bytes": draw(st.binary(min_size=1, max_size=16)),
            "huge": draw(st.sampled_from([b"\xdd\xff\xff\xff\xff", b"\xdf\xff\xff\xff\xff",
                                          b"\xdb\xff\xff\xff\xff", b"\xc6\xff\xff\xff\xff",
                                          b"\xc9\x7f\xff\xff\xff\x01", b"\xdc\xff\xff"]))}


FRAMES = st.one_of(
    st.builds(lambda n: {"frames": n}, st.lists(st.binary(max_size=64), min_size=2, max_size=4)),
    st.builds(lambda size: {"oversized": size}, st.sampled_from([MAX_REQUEST_BYTES + 1, 1 << 20])))


# -- the target ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    replies: list = field(default_factory=list)


class WellBehavedClient(threading.Thread):
    """Infers on demo with random inputs and checks every answer against ONNX Runtime in-process."""

    def __init__(self, endpoint: str):
        super().__init__(name="well-behaved", daemon=True)
        from trtd.daemon.backends.onnxruntime import create_session
        from trtd.daemon.builtin.onnx_models import builtin_model_path

        self.session = create_session(builtin_model_path("demo"))
        self.endpoint = endpoint
        self.stop = threading.Event()
        self.ok = 0
        self.failures: list[str] = []

    def run(self) -> None:
        rng = np.random.default_rng(0)
        with Client(self.endpoint, timeout=30) as c:
            while not self.stop.is_set():
                x = rng.standard_normal((int(rng.integers(1, 5)), 64), dtype=np.float32)
                try:
                    y = c.infer("demo", x)
                    if not np.allclose(y, self.session.run(None, {"x": x})[0], rtol=0, atol=1e-5):
                        self.failures.append("wrong answer")
                    else:
                        self.ok += 1
                except Exception as exc:  # noqa: BLE001 - counted, reported by the caller
                    self.failures.append(f"{type(exc).__name__}: {exc}")
                time.sleep(0.002)  # leave the daemon to the fuzzer most of the time


class FuzzTarget:
    """The fuzzer's connection, its regions, a victim client, and the invariant checks."""

    def __init__(self, endpoint: str, daemon_pid: int, admin_token: str | None = None):
        """admin_token: by default read from the daemon's token file (run as its user)."""
        self.endpoint = endpoint
        self.pid = daemon_pid
        if admin_token is None:
            admin_token, problem = read_token(token_path(endpoint, ADMIN_TOKEN))
            if problem:
                raise RuntimeError(f"the fuzzer needs the daemon's admin token: {problem}")
        self.admin_token = admin_token
        self.counts: Counter = Counter()
        self.codes: Counter = Counter()
        self.codes_by_kind: dict[str, Counter] = {}
        self._ctx = zmq.Context()
        self._sock = self._connect()
        self._ids = iter(range(1, 1 << 62))
        hello = self._call({"op": "hello", "client_pid": os.getpid(),
                            "client_start_time": _start_time(), "client_name": "fuzzer"})
        self.client_id = hello["result"]["client_id"]
        self.work = self._lease(WORK_BYTES)
        self.guard = self._lease(GUARD_BYTES)
        released = self._lease(4096)
        released.close()
        assert self._call({"op": "release", "client_id": self.client_id, "region": released.name,
                           "token": released.token})["ok"]
        self.released = released
        self.victim_client = Client(endpoint)
        self.victim = self.victim_client.lease(GUARD_BYTES)
        for region in (self.work, self.guard, self.victim):
            region.bytes[:] = PATTERN
        self.well_behaved = WellBehavedClient(endpoint)
        self.well_behaved.start()

    def _connect(self) -> zmq.Socket:
        sock = self._ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(self.endpoint)
        return sock

    def _call(self, body: dict) -> dict:
        rid = next(self._ids)
        self._sock.send(msgpack.packb({"v": 1, "id": rid, **body}))
        replies = self._until_ping()
        assert len(replies) == 1 and replies[0].get("id") == rid, replies
        return replies[0]

    def _lease(self, nbytes: int) -> AttachedRegion:
        reply = self._call({"op": "lease", "client_id": self.client_id, "nbytes": nbytes})
        info = reply["result"]["region"]
        return AttachedRegion(info["name"], info["nbytes"], info["token"])

    def _until_ping(self, timeout_s: float = 30) -> list[dict]:
        """Every reply up to the answer of a status ping sent now: what the fuzz frame got."""
        ping = (1 << 62) + next(self._ids)
        self._sock.send(msgpack.packb({"v": 1, "op": "status", "id": ping}))
        replies = []
        deadline = time.monotonic() + timeout_s
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or not self._sock.poll(int(left * 1000)):
                raise AssertionError(f"the daemon stopped answering (pid {self.pid} alive: "
                                     f"{_alive(self.pid)})")
            reply = msgpack.unpackb(self._sock.recv(), strict_map_key=False)
            if reply.get("id") == ping:
                assert reply["ok"], reply
                return replies
            replies.append(reply)

    def _late_reply(self, timeout_s: float) -> list[dict]:
        if not self._sock.poll(int(timeout_s * 1000)):
            return []
        return [msgpack.unpackb(self._sock.recv(), strict_map_key=False)]

    # -- roles ---------------------------------------------------------------------------------------

    def _region_and_token(self, role: str) -> tuple[str, str]:
        return {"work": (self.work.name, self.work.token),
                "guard": (self.work.name, self.guard.token),   # a valid token for another region
                "victim": (self.victim.name, self.victim.token),  # another client's lease
                "released": (self.released.name, self.released.token),
                "forged": (self.work.name, secrets.token_hex(16))}[role]

    def _client_id(self, role: str, op: str) -> int:
        # Never our own id for goodbye: it would end the session the checks rely on.
        if op == "goodbye" or role == "victim":
            return self.victim_client.client_id if role == "victim" else self.client_id + 1
        return self.client_id

    # -- running a case ------------------------------------------------------------------------------

    def request(self, body: dict) -> None:
        body = dict(body)
        role = body.pop("role", "work")
        op = body.get("op")
        region, token = self._region_and_token(role)
        if op in ("infer", "release"):
            body.setdefault("region", region)
            body.setdefault("token", token)
            if op == "release" and role in ("work",):
                body["token"] = secrets.token_hex(16)  # a valid release would end the campaign
        if op in ("lease", "release", "infer", "heartbeat", "goodbye"):
            body.setdefault("client_id", self._client_id(role, op))
        body.setdefault("v", 1)
        body.setdefault("id", next(self._ids))
        try:
            frame = msgpack.packb(body)
        except (OverflowError, ValueError, TypeError):
            return  # not representable in msgpack: nothing to send
        self._single(frame, "typed", body)

    def admin(self, body: dict) -> None:
        """A privileged op with the daemon's real admin token: its handler's checks answer."""
        body = {"v": 1, "id": next(self._ids), **body}
        op = body.get("op")
        # A field of any type may have replaced op or name: decided on what is sent.
        if op == "shutdown" or (op == "unload" and body.get("name") == PROTECTED_MODEL):
            return  # would stop the daemon or the checks' model, by design (see the docstring)
        body["auth"] = self.admin_token
        try:
            frame = msgpack.packb(body)
        except (OverflowError, ValueError, TypeError):
            return
        self._single(frame, f"admin.{op if isinstance(op, str) and op in ADMIN_OPS else 'other'}",
                     body)

    def mutated(self, case: dict) -> None:
        base = {"status": {"op": "status"}, "models": {"op": "models"},
                "lease": {"op": "lease", "client_id": self.client_id, "nbytes": 4096},
                "infer": {"op": "infer", "client_id": self.client_id, "model": "demo",
                          "region": self.work.name, "token": self.work.token,
                          "inputs": [{"name": "x", "dtype": "float32", "shape": [1, 64], "offset": 0,
                                      "nbytes": 256}],
                          "outputs": [{"name": "y", "offset": 512, "nbytes": 40}]}}[case["base"]]
        data = msgpack.packb({"v": 1, "id": next(self._ids), **base})
        at = case["at"] % (len(data) + 1)
        how = case["how"]
        if how == "truncate":
            data = data[:at]
        elif how == "flip":
            data = bytearray(data)
            for i, b in enumerate(case["bytes"]):
                data[(at + i * 7) % len(data)] ^= b or 0xFF
            data = bytes(data)
        elif how == "insert":
            data = data[:at] + case["bytes"] + data[at:]
        elif how == "huge_length":
            data = data[:at] + case["huge"] + data[at:]
        elif how == "trailing":
            data = data + case["bytes"]
        else:
            data = case["bytes"] * (1 + at % 8)
        self._single(data, f"mutated.{how}", None)

    def frames(self, case: dict) -> None:
        if "oversized" in case:
            # libzmq drops the sender's connection: use a throwaway one, then check we are served.
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.endpoint)
            sock.send(b"\x80" * case["oversized"])
            time.sleep(0.01)
            sock.close()
            self.counts["oversized"] += 1
            self._check(self._until_ping(), None)
            return
        self._sock.send_multipart(case["frames"])
        replies = self._until_ping()
        assert replies == [], f"a multi-frame message was answered: {replies}"
        self.counts["multi_frame"] += 1
        self._check([], None)

    def _single(self, frame: bytes, kind: str, body: dict | None) -> None:
        if body is None:  # a mutated frame: what the daemon may have read, for the checks
            try:
                body = msgpack.unpackb(frame, strict_map_key=False)
            except Exception:  # noqa: BLE001 - most mutations are not msgpack any more
                body = None
        self._sock.send(frame)
        replies = self._until_ping()
        if not replies:
            # `load` is answered once its model is in (the loader thread), after the ping's
            # reply: wait for it rather than charge it to the next case.
            replies = self._late_reply(timeout_s=60)
        assert len(replies) == 1, f"{kind}: expected one reply, got {replies} for {body!r}"
        reply = replies[0]
        self.counts[kind] += 1
        code = "ok" if reply.get("ok") else reply["error"]["code"]
        self.codes[code] += 1
        self.codes_by_kind.setdefault(kind.split(".")[0], Counter())[code] += 1
        if kind.startswith("admin."):  # which handler answered what
            self.codes_by_kind.setdefault(kind, Counter())[code] += 1
        assert reply.get("ok") or reply["error"]["code"] != "INTERNAL", (reply, body)
        self._check(replies, body)

    def _check(self, replies: list[dict], body: dict | None) -> None:
        assert _alive(self.pid), "the daemon died"
        for region in (self.guard, self.victim):
            assert np.all(region.bytes == PATTERN), f"guard region {region.name} was written: {body!r}"
        changed = np.flatnonzero(self.work.bytes != PATTERN)
        if changed.size:
            allowed = np.zeros(self.work.nbytes, bool)
            for reply in replies:
                if reply.get("ok") and isinstance(reply.get("result"), dict):
                    for out in reply["result"].get("outputs", []):
                        allowed[out["offset"]:out["offset"] + out["nbytes"]] = True
                        declared = [o for o in body["outputs"] if isinstance(o, dict)
                                    and o.get("name") == out["name"]]
                        assert declared and declared[0]["offset"] == out["offset"] and \
                            out["nbytes"] <= declared[0]["nbytes"], (out, body)
            assert allowed[changed].all(), f"written outside the output areas: {body!r}"
            self.work.bytes[:] = PATTERN
        assert not self.well_behaved.failures, self.well_behaved.failures[:3]

    def close(self) -> dict:
        self.well_behaved.stop.set()
        self.well_behaved.join(60)
        for region in (self.work, self.guard, self.victim):
            region.close()
        self.victim_client.close()
        self._sock.close()
        self._ctx.term()
        return self.summary()

    def summary(self) -> dict:
        return {"cases": dict(self.counts), "total": sum(self.counts.values()),
                "replies": dict(self.codes),
                "replies_by_kind": {k: dict(v) for k, v in self.codes_by_kind.items()},
                "well_behaved_ok": self.well_behaved.ok,
                "well_behaved_failures": len(self.well_behaved.failures)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (our own child, exited) is not alive
        import psutil

        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except Exception:  # noqa: BLE001
        return True


def _start_time() -> float:
    import psutil

    return psutil.Process().create_time()


# -- campaigns -------------------------------------------------------------------------------------


def run_campaign(target: FuzzTarget, examples: int) -> dict:
    """Each kind of case `examples` times, as hypothesis draws them."""
    config = settings(max_examples=examples, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
    def campaign(strategy, method, n):
        @settings(config, max_examples=n)
        @given(strategy)
        def run(case):
            method(case)
        run()

    campaign(typed_request(), target.request, examples)
    campaign(mutated_frame(), target.mutated, examples)
    campaign(admin_request(), target.admin, max(examples // 5, 10))
    campaign(FRAMES, target.frames, max(examples // 10, 10))  # each one is a reconnect: fewer
    return target.summary()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtd.bench.fuzz", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=2000,
                        help="cases per kind (typed, mutated; a fifth as many privileged ops with "
                             "the admin token, a tenth as many extra/oversized frames)")
    parser.add_argument("--out", help="write the JSON summary here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="trtd-fuzz-") as tmp:
        tmp = Path(tmp)
        (tmp / "d.toml").write_text(DAEMON_CONFIG)
        endpoint = f"ipc://{tmp / 'd.sock'}"
        log = open(tmp / "d.log", "wb")
        proc = subprocess.Popen([sys.executable, "-m", "trtd.daemon", "serve", "--config", str(tmp / "d.toml"),
                                 "--endpoint", endpoint, "--log-level", "ERROR"], stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "TRTD_RUNTIME_DIR": str(tmp / "run")})
        try:
            _wait_ready(endpoint, proc)
            started = time.monotonic()
            target = FuzzTarget(endpoint, proc.pid)
            try:
                run_campaign(target, args.examples)
            finally:
                summary = target.close()
            summary.update(seconds=round(time.monotonic() - started, 1), examples_per_kind=args.examples,
                           machine=f"{platform.node()} {platform.machine()} {os.cpu_count()} cpus",
                           python=platform.python_version(), date=time.strftime("%Y-%m-%d"),
                           command="python -m trtd.bench.fuzz " + " ".join(argv or sys.argv[1:]),
                           daemon_alive_at_end=proc.poll() is None)
        finally:
            proc.terminate()
            rc = proc.wait(30)
            log.close()
        summary["daemon_exit_code"] = rc
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["daemon_exit_code"] == 0 and summary["well_behaved_failures"] == 0 else 1


def _wait_ready(endpoint: str, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the daemon exited with {proc.returncode}")
        try:
            with Client(endpoint, timeout=1, connect_timeout=0.5):
                return
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.1)
    raise SystemExit("the daemon did not start")


if __name__ == "__main__":
    sys.exit(main())
