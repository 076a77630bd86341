"""Infer requests on the `held` model (slow_models.held) that stay in flight until the test
opens them: sent on the client's own socket, answered when open() has been called."""

from __future__ import annotations

import msgpack
import numpy as np

from trtd.protocol import messages as m
from trtd.protocol.codec import encode_request
from trtd.protocol.layout import align_up
from trtd.sdk import Client


class HeldRequest:
    def __init__(self, client: Client, x: np.ndarray, model: str = "held", request_id: int = 1,
                 deadline_ms: int = 0, open_now: bool = False):
        self.client, self.x, self.request_id = client, x, request_id
        self.go_offset = align_up(x.nbytes)
        self.y_offset = align_up(self.go_offset + 4)
        self.region = client.lease(self.y_offset + x.nbytes)
        self.region.array(0, x.dtype, x.shape)[...] = x
        self.go = self.region.array(self.go_offset, np.dtype(np.int32), (1,))
        self.go[...] = 1 if open_now else 0
        self.request = m.Infer(
            client_id=client.client_id, model=model, region=self.region.name, token=self.region.token,
            inputs=[m.InputRef(name="x", dtype="float32", shape=list(x.shape), offset=0, nbytes=x.nbytes),
                    m.InputRef(name="go", dtype="int32", shape=[1], offset=self.go_offset, nbytes=4)],
            outputs=[m.OutputRef(name="y", offset=self.y_offset, nbytes=x.nbytes)],
            deadline_ms=deadline_ms)
        client._conn._socket.send(encode_request(self.request, request_id))

    def open(self) -> None:
        """Let it finish: the model reads `go` from the region on every loop iteration."""
        self.go[...] = 1

    def reply(self, timeout_s: float = 60) -> dict:
        sock = self.client._conn._socket
        assert sock.poll(int(timeout_s * 1000)), f"no reply to request {self.request_id} in {timeout_s}s"
        reply = msgpack.unpackb(sock.recv())
        assert reply["id"] == self.request_id, reply
        return reply

    def y(self) -> np.ndarray:
        return self.region.array(self.y_offset, self.x.dtype, self.x.shape).copy()


class PendingLoad:
    """A `load` op sent with the daemon's admin token on its own DEALER socket, answered
    whenever the daemon answers it (e.g. a model file that is a named pipe not yet written)."""

    def __init__(self, endpoint: str, name: str, path: str, request_id: int):
        import zmq

        from trtd.protocol.endpoint import ADMIN_TOKEN, token_path

        self.request_id = request_id
        self._ctx = zmq.Context()
        self.sock = self._ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        admin = token_path(endpoint, ADMIN_TOKEN).read_text().strip()
        self.sock.connect(endpoint)
        self.sock.send(msgpack.packb({"v": 1, "op": "load", "id": request_id, "auth": admin,
                                      "name": name, "path": path}))

    def answered(self, timeout_ms: int) -> bool:
        return bool(self.sock.poll(timeout_ms))

    def reply(self, timeout_ms: int = 60_000) -> dict:
        assert self.answered(timeout_ms), f"no answer to load {self.request_id}"
        reply = msgpack.unpackb(self.sock.recv())
        assert reply["id"] == self.request_id, reply
        return reply

    def close(self) -> None:
        self.sock.close(0)
        self._ctx.term()
