"""Transport cost versus how long the server takes to answer (its "think time").

    python -m trtd.bench.wakeup [--delays 0,100,300,1000,2000] [-n 300]

The floor (trtd.bench.latency) echoes at once. A real model makes the client
wait, and a thread that waits long enough is put to sleep by the OS (and, in a
VM, its virtual CPU is halted): waking it costs more than the bare round trip.
This measures that cost on the machine: an echo server that busy-waits D µs
before answering, and the client's round trip minus D, with the client either
blocking in zmq poll (the SDK's default) or spinning on a non-blocking poll.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time

import numpy as np


def _echo(endpoint: str) -> None:
    import zmq

    sock = zmq.Context().socket(zmq.ROUTER)
    sock.bind(endpoint)
    while True:
        ident, msg = sock.recv_multipart()
        delay_ns = int.from_bytes(msg[:8], "little")
        end = time.perf_counter_ns() + delay_ns
        while time.perf_counter_ns() < end:  # the "model": busy, like a daemon thread in a GPU sync
            pass
        sock.send_multipart([ident, msg])


def main(argv=None) -> int:
    import zmq

    parser = argparse.ArgumentParser(prog="python -m trtd.bench.wakeup")
    parser.add_argument("--delays", default="0,100,300,1000,2000")
    parser.add_argument("-n", type=int, default=300)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        endpoint = f"ipc://{tmp}/w.sock"
        server = multiprocessing.get_context("spawn").Process(target=_echo, args=(endpoint,), daemon=True)
        server.start()
        sock = zmq.Context().socket(zmq.DEALER)
        sock.connect(endpoint)
        time.sleep(0.5)
        print(f"{'think µs':>9} {'blocking: rtt - think p50':>26} {'spinning: rtt - think p50':>26}")
        for delay_us in [int(d) for d in args.delays.split(",")]:
            msg = (delay_us * 1000).to_bytes(8, "little") + b"x" * 150
            row = []
            for spin in (False, True):
                samples = []
                for i in range(args.n + 30):
                    t = time.perf_counter_ns()
                    sock.send(msg)
                    if spin:
                        while not sock.poll(0):
                            pass
                    sock.recv()
                    if i >= 30:
                        samples.append((time.perf_counter_ns() - t) / 1000 - delay_us)
                row.append(float(np.percentile(samples, 50)))
            print(f"{delay_us:>9} {row[0]:>26.0f} {row[1]:>26.0f}")
        server.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
