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
    from trtd.daemon.backends.torch import _CudaView
    from trtd.daemon.config.settings import DaemonConfig, ModelConfig
    from trtd.daemon.core.daemon_core import Call, DaemonCore
    from trtd.protocol import messages as m

    shapes = {"resnet18": ((1, 3, 224, 224), (1, 5)), "volume3d": ((1, 1, 128, 256, 256),) * 2}
    in_shape, out_shape = shapes[args.model]
    core = DaemonCore(DaemonConfig(models=[ModelConfig(name=args.model, path=f"builtin:{args.model}",
                                                       backend="torch", device=args.device)]),
                      "profile", "profile", "trtd_profile_")
    core.load_configured_models()
    try:
        ident = b"profile"
        hello = core.handle(m.Hello(client_pid=0), Call(ident, 1, 0))
        nin = int(np.prod(in_shape)) * 4
        nout = int(np.prod(out_shape)) * 4
        region = core.handle(m.Lease(client_id=hello.client_id, nbytes=nin + nout + 512), Call(ident, 2, 0)).region
        req = m.Infer(client_id=hello.client_id, model=args.model, region=region.name, token=region.token,
                      inputs=[m.InputRef(name="x", dtype="float32", shape=list(in_shape), offset=0, nbytes=nin)],
                      outputs=[m.OutputRef(name="output", offset=(nin + 255) // 256 * 256, nbytes=nout)])

        def daemon_request():
            core.handle(req, Call(ident, 3, time.perf_counter_ns()))

        model = core.models.get(args.model)
        instance = model.executor.instances[0]
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
        buf = instance._buffers["x"]
        stream = instance.stream
        ev = instance._marks[0]
        micro = {
            "cudaSetDevice": lambda: cuda.use_device(args.device),
            "cudaEventRecord": lambda: ev.record(stream),
            "cudaEventSynchronize": ev.synchronize,
            "torch.as_tensor(__cuda_array_interface__)": lambda: torch.as_tensor(
                _CudaView(buf.ptr, in_shape, np.dtype("float32")), device=device),
            "torch.cuda.ExternalStream": lambda: torch.cuda.ExternalStream(stream.ptr, device=device),
        }
        for name, fn in micro.items():
            print(f"{name:<45} p50 {_p50(fn, 2000):8.1f} µs")
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
