"""Where the daemon's GPU request time goes, without sockets: DaemonCore in this process.

    python -m trtd.bench.gpu_profile [--model resnet18|volume3d] [--device 0] [-n 300]

Prints per-request p50 of the daemon's infer handling next to in-process torch,
then the functions that cost the most (cProfile), then micro-timings of the
individual CUDA and torch calls the GPU path makes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import time

import numpy as np


def _p50(fn, n: int) -> float:
    for _ in range(20):
        fn()
    samples = []
    for _ in range(n):
        t = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - t)
    return float(np.percentile(samples, 50) / 1000)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trtd.bench.gpu_profile")
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--device", type=int, default=0)
    parser.add_argument("-n", type=int, default=300)
    parser.add_argument("--socket", action="store_true",
                        help="through a daemon process and the SDK instead: client round trip "
                             "next to the daemon's own timing of each request")
    args = parser.parse_args(argv)
    if args.socket:
        return _through_socket(args)
    import torch

    from trtd.daemon.system import cuda
    from trtd.daemon.backends.torch import CudaArrayView
    from trtd.daemon.config.settings import DaemonConfig, ModelConfig
    from trtd.daemon.core.daemon_core import DaemonCore
    from trtd.protocol import decode_reply, encode_request, messages as m
    from trtd.protocol.layout import align_up, tensor_nbytes

    shapes = {"resnet18": ((1, 3, 224, 224), (1, 5)), "volume3d": ((1, 1, 128, 256, 256),) * 2}
    in_shape, out_shape = shapes[args.model]
    core = DaemonCore(DaemonConfig(models=[ModelConfig(name=args.model, path=f"builtin:{args.model}",
                                                       backend="torch", device=args.device)]),
                      "profile", "profile", "trtd_profile_")
    core.start_loading()
    core.run_until_loaded()
    ident = b"profile"

    def call(request: m.Request, request_id: int):
        reply = decode_reply(core.receive(ident, encode_request(request, request_id)), type(request), request_id)
        if reply.error is not None:
            raise RuntimeError(f"{reply.error.code}: {reply.error.message}")
        return reply.result

    try:
        hello = call(m.Hello(client_pid=0), 1)
        nin, nout = tensor_nbytes(in_shape, 4), tensor_nbytes(out_shape, 4)
        region = call(m.Lease(client_id=hello.client_id, nbytes=align_up(nin) + nout), 2).region
        req = m.Infer(client_id=hello.client_id, model=args.model, region=region.name, token=region.token,
                      inputs=[m.InputRef(name="x", dtype="float32", shape=list(in_shape), offset=0, nbytes=nin)],
                      outputs=[m.OutputRef(name="output", offset=align_up(nin), nbytes=nout)])
        frame = encode_request(req, 3)  # encoded once: the client's cost is not the daemon's

        def daemon_request():
            core.receive(ident, frame)  # one instance: answered inline, on this thread

        print(f"daemon infer handling p50: {_p50(daemon_request, args.n):.0f} µs")
        device = torch.device("cuda", args.device)
        from trtd.daemon.builtin.torch_models import builtin_torchscript_path

        module = torch.jit.load(str(builtin_torchscript_path(args.model)), map_location=device).eval()
        x = torch.randn(in_shape).pin_memory()
        y = torch.empty(out_shape).pin_memory()

        def in_process():
            with torch.inference_mode():
                y.copy_(module(x.to(device, non_blocking=True)), non_blocking=True)
            torch.cuda.synchronize()

        print(f"in-process torch p50:      {_p50(in_process, args.n):.0f} µs")
        profile = cProfile.Profile()
        profile.enable()
        for _ in range(100):
            daemon_request()
        profile.disable()
        out = io.StringIO()
        pstats.Stats(profile, stream=out).sort_stats("tottime").print_stats(18)
        print(out.getvalue())
        # The calls a CUDA instance makes per request, on buffers of the same kind and size.
        streams = cuda.StreamPool()
        stream = streams.acquire(args.device)
        buf = cuda.DeviceBuffer(args.device, nin)
        ev = cuda.Event(args.device, timing=True)
        micro = {
            "cudaSetDevice": lambda: cuda.use_device(args.device),
            "cudaEventRecord": lambda: ev.record(stream),
            "cudaEventSynchronize": ev.synchronize,
            "torch.as_tensor(__cuda_array_interface__)": lambda: torch.as_tensor(
                CudaArrayView(buf.ptr, in_shape, np.dtype("float32")), device=device),
            "torch.cuda.ExternalStream": lambda: torch.cuda.ExternalStream(stream.ptr, device=device),
        }
        for name, fn in micro.items():
            print(f"{name:<45} p50 {_p50(fn, 2000):8.1f} µs")
        ev.close()
        buf.close()
        streams.release(stream)
        streams.close()
    finally:
        core.close()
    return 0


def _through_socket(args) -> int:
    import os
    import subprocess
    import sys
    import tempfile

    from trtd.sdk import Client

    shapes = {"resnet18": (1, 3, 224, 224), "volume3d": (1, 1, 128, 256, 256)}
    with tempfile.TemporaryDirectory() as tmp:
        config = os.path.join(tmp, "p.toml")
        with open(config, "w") as f:
            f.write(f"[models.m]\npath = \"builtin:{args.model}\"\nbackend = \"torch\"\n"
                    f"device = {args.device}\n")
        endpoint = f"ipc://{tmp}/p.sock"
        daemon = subprocess.Popen([sys.executable, "-m", "trtd.daemon", "serve", "--endpoint", endpoint,
                                   "--config", config, "--log-level", "WARNING"],
                                  env=dict(os.environ, TRTD_RUNTIME_DIR=tmp))
        try:
            for _ in range(600):
                try:
                    client = Client(endpoint, connect_timeout=0.2, timeout=120)
                    break
                except Exception:
                    time.sleep(0.1)
            with client:
                h = client.model("m")
                slots = h.zero_copy_inputs({"x": shapes[args.model]})
                slots["x"][...] = 0.5
                del slots
                rows = []
                for i in range(args.n + 20):
                    t = time.perf_counter_ns()
                    h.run_zero_copy()
                    rtt = (time.perf_counter_ns() - t) / 1000
                    lt = h.last_timing
                    if i >= 20:
                        rows.append((rtt, lt.total_us, lt.queue_us, lt.h2d_us, lt.compute_us, lt.d2h_us))
                med = np.median(np.array(rows), axis=0)
                print("through the socket, p50 µs: client round trip {:.0f} | daemon total {:.0f} | queue "
                      "{:.0f} | h2d {:.0f} | compute {:.0f} | d2h {:.0f}".format(*med))
        finally:
            daemon.terminate()
            daemon.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
