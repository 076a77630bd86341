"""The floor: the least any out-of-process design with the daemon's transport could cost.

A bare pyzmq DEALER -> ROUTER round trip of the encoded bytes of a real infer request for the
model (msgpack, packed once beforehand: encoding and decoding are not part of the floor) over
the daemon's transport kind, echoed by a ROUTER in a separate process, plus a memcpy
(np.copyto) of the request's input bytes into a multiprocessing.shared_memory block done
inside the timed section, before the send. This is the project-wide definition of "floor":
every benchmark that reports overhead in floors measures it with this module.
"""

from __future__ import annotations

import gc
import os
import secrets
import signal
import subprocess
import sys
from contextlib import contextmanager
from multiprocessing import shared_memory
from typing import Callable, Iterator

import numpy as np

from .daemon import BenchError
from .processes import start_process, stop_process
from .workloads import BenchModel

FLOOR_DEFINITION = (
    "a bare pyzmq DEALER->ROUTER round trip of the encoded infer request (msgpack, packed "
    "once) over the daemon's transport kind, echoed by a ROUTER in a separate process, with a "
    "memcpy (np.copyto) of the input bytes into a multiprocessing.shared_memory block done inside "
    "the timed section before the send"
)


def echo_main(endpoint: str) -> None:
    """The floor's other end (run in its own process): a ROUTER that sends every message back."""
    import zmq

    # Ctrl-C reaches the whole process group; the parent stops us, without a traceback here.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    # A receive timeout instead of a poll per message: the message path stays bare, and we
    # still notice a parent that died without stopping us.
    sock.setsockopt(zmq.RCVTIMEO, 500)
    sock.bind(endpoint)
    parent = os.getppid()
    print(sock.getsockopt_string(zmq.LAST_ENDPOINT), flush=True)
    while True:
        try:
            frames = sock.recv_multipart()
        except zmq.Again:
            if os.getppid() != parent:
                return
            continue
        sock.send_multipart(frames)


@contextmanager
def echo_server(endpoint: str) -> Iterator[str]:
    """The echo process, started and bound; yields the endpoint it listens on."""
    code = f"from trtd.bench.lib.floor import echo_main; echo_main({endpoint!r})"
    proc = start_process([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    try:
        bound = proc.stdout.readline().strip()  # printed once bound
        if not bound:
            raise BenchError(f"the floor's echo process exited ({proc.wait()}) before binding {endpoint}")
        yield bound
    finally:
        stop_process(proc, "floor echo process")
        proc.stdout.close()


class Floor:
    """DEALER side of the floor plus the shared-memory block the input is copied into."""

    def __init__(self, endpoint: str, nbytes: int):
        import zmq

        self._ctx = zmq.Context()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.connect(endpoint)
        self._sock.send(b"hello")
        if not self._sock.poll(10_000):
            self._sock.close(linger=0)
            self._ctx.term()
            raise BenchError(f"the floor's echo process at {endpoint} did not answer within 10 s")
        self._sock.recv()
        # Named trtd_* so a leak would show up with the daemon's; not a daemon prefix (no hex hash).
        name = f"trtd_bench_{os.getpid()}_{secrets.token_hex(2)}"
        self._shm = shared_memory.SharedMemory(name=name, create=True, size=nbytes)

    def step(self, inputs: np.ndarray | list[np.ndarray], message: bytes) -> Callable[[], None]:
        """One floor sample: memcpy the inputs into the block (at aligned offsets, as in a
        region), send, wait for the echo."""
        from trtd.protocol import align_up

        arrays = [inputs] if isinstance(inputs, np.ndarray) else list(inputs)
        pairs, offset = [], 0
        for a in arrays:
            pairs.append((np.ndarray(a.shape, a.dtype, buffer=self._shm.buf, offset=offset), a))
            offset = align_up(offset + a.nbytes)
        send, recv, copyto = self._sock.send, self._sock.recv, np.copyto
        if len(pairs) > 1:
            def run_many() -> None:
                for dst, src in pairs:
                    copyto(dst, src)
                send(message)
                recv()

            return run_many
        ((dst, x),) = pairs

        def run() -> None:  # one input: no loop in the timed section
            copyto(dst, x)
            send(message)
            recv()

        return run

    def close(self) -> None:
        self._sock.close(linger=0)
        self._ctx.term()
        gc.collect()  # drops the ndarray views made by step(), which pin the mapping
        try:
            self._shm.close()
        except BufferError:
            pass  # a view survived; the unlink below still removes the name
        self._shm.unlink()


def infer_message(model: BenchModel) -> bytes:
    """The bytes of an infer request like the SDK sends for this model (client-side encoded)."""
    from trtd.protocol import InputRef, OutputRef, encode_request, plan_slots
    from trtd.protocol import messages as m

    in_slots, end = plan_slots((t.name, t.nbytes) for t in model.inputs)
    out_slots, _ = plan_slots(((t.name, t.nbytes) for t in model.outputs), start=end)
    request = m.Infer(
        client_id=1, model=model.name, region="trtd_0123abcd_ab12_1", token=secrets.token_hex(16),
        inputs=[InputRef(name=t.name, dtype=t.dtype, shape=list(t.shape), offset=s.offset, nbytes=s.nbytes)
                for t, s in zip(model.inputs, in_slots)],
        outputs=[OutputRef(name=s.name, offset=s.offset, nbytes=s.nbytes) for s in out_slots],
    )
    return encode_request(request, 1)
