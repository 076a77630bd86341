"""The fuzzer's side of the connection: sends each case, then checks the daemon's contract.

After each case: the daemon answered exactly one error or result per single-frame request
(none for what breaks the wire protocol: that connection is closed) and is alive; nothing was written outside a region
(guard regions, the fuzzer's own and another client's, keep their pattern, and the work
region changed only inside output areas of successful requests); the well-behaved client
running alongside (bystander.py) keeps getting correct answers.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from collections import Counter
from typing import Any

import msgpack
import numpy as np
import zmq

from trtd.protocol.endpoint import ADMIN_TOKEN, ipc_path, token_path
from trtd.sdk import Client
from trtd.sdk.client import read_token
from trtd.sdk.shm import AttachedRegion

from .bystander import WellBehavedClient
from .strategies import ADMIN_OPS, PROTECTED_MODEL, WORK_BYTES

GUARD_BYTES = 8 * 1024
PATTERN = 0xA5
# The daemon the fuzzer needs: demo inline (so replies come back in order), small limits.
DAEMON_CONFIG = ("reclaim_interval_s = 0.2\nmax_region_bytes = 1048576\nmax_regions_per_client = 8\n"
                 "max_clients = 64\n[models.demo]\npath = \"builtin:demo\"\n")


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
        replies: list[dict[str, Any]] = []
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
        """Cases below the protocol (frames, routing ids, wire bytes), each on a throwaway
        connection: the daemon disconnects a peer that breaks ZMTP or its caps, without an
        answer, and must go on serving this connection and the bystander."""
        if "routing_id" in case:
            self._chosen_routing_id(case["routing_id"], case["twice"])
            self.counts["routing_id"] += 1
        elif "wire" in case:
            self._wire(case["wire"])
            self.counts["wire"] += 1
        else:
            sock = self._ctx.socket(zmq.DEALER)
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(self.endpoint)
            if "oversized" in case:
                sock.send(b"\x80" * case["oversized"])
                self.counts["oversized"] += 1
            else:
                sock.send_multipart(case["frames"])
                self.counts["multi_frame"] += 1
            answered = sock.poll(50)
            sock.close()
            assert not answered, f"a message the protocol has no room for was answered: {case}"
        self._check(self._until_ping(), None)

    def _chosen_routing_id(self, routing_id: bytes, twice: bool) -> None:
        socks = []
        try:
            for _ in range(2 if twice else 1):
                sock = self._ctx.socket(zmq.DEALER)
                sock.setsockopt(zmq.LINGER, 0)
                sock.setsockopt(zmq.ROUTING_ID, routing_id)
                sock.connect(self.endpoint)
                socks.append(sock)
            for k, sock in enumerate(socks):
                sock.send(msgpack.packb({"v": 1, "op": "status", "id": k + 1}))
            for k, sock in enumerate(socks):
                assert sock.poll(10_000), f"no answer to a peer with routing id {routing_id!r}"
                reply = msgpack.unpackb(sock.recv(), strict_map_key=False)
                assert reply.get("ok") and reply.get("id") == k + 1, reply
        finally:
            for sock in socks:
                sock.close()

    def _wire(self, data: bytes) -> None:
        path = ipc_path(self.endpoint)
        if path is None:
            return  # a TCP endpoint: the same bytes through a TCP socket would test the same
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as raw:
            raw.settimeout(5)
            raw.connect(str(path))
            try:
                raw.sendall(data)
                raw.recv(4096)  # the daemon's handshake (or nothing: it may hang up first)
            except OSError:
                pass  # the daemon hung up on us: one of the expected outcomes

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
