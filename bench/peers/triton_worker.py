"""One load-generating Triton client process (run with PyTriton's environment's interpreter).

    python triton_worker.py --protocol http|grpc|grpc_shm --model NAME --shape 1,64
                            --output-shape 1,10 --url 127.0.0.1:PORT [--warmup N]
                            [--duration S | --count N]

grpc_shm: inputs and outputs in system shared memory registered with Triton (the
restricted endpoint, with the access token from TRTD_BENCH_TRITON_TOKEN); the input is
written into the region and the output copied out on every call, like trtd's copying path.
The timing loop and the handshake are trtd.bench.lib.load_loop's, loaded by path because trtd
is not installed in this environment.
"""

import argparse
import os
import sys
import uuid

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "lib"))
from load_loop import run_worker  # noqa: E402  (bench/lib/load_loop.py, stdlib only)

INPUT, OUTPUT = "x", "y"


def make_setup(args):
    shape = [int(d) for d in args.shape.split(",")]
    out_shape = [int(d) for d in args.output_shape.split(",")]

    def setup():
        rng = np.random.default_rng(0)
        x = rng.standard_normal(shape, dtype=np.float32)
        if args.protocol == "http":
            import tritonclient.http as http

            client = http.InferenceServerClient(args.url)
            inp = http.InferInput(INPUT, shape, "FP32")
            inp.set_data_from_numpy(x, binary_data=True)
            out = http.InferRequestedOutput(OUTPUT, binary_data=True)
            return lambda: client.infer(args.model, [inp], outputs=[out]).as_numpy(OUTPUT)
        import tritonclient.grpc as grpc

        client = grpc.InferenceServerClient(args.url)
        if args.protocol == "grpc":
            inp = grpc.InferInput(INPUT, shape, "FP32")
            inp.set_data_from_numpy(x)
            return lambda: client.infer(args.model, [inp]).as_numpy(OUTPUT)
        return shared_memory_call(client, grpc, args.model, x, out_shape)

    return setup


def shared_memory_call(client, grpc, model, x, out_shape):
    import atexit

    import tritonclient.utils.shared_memory as shm

    headers = {"triton-grpc-protocol-triton-access-token": os.environ["TRTD_BENCH_TRITON_TOKEN"]}
    tag = uuid.uuid4().hex[:12]
    out_bytes = int(np.prod(out_shape)) * 4
    regions = []
    for role, nbytes in (("in", x.nbytes), ("out", out_bytes)):
        name, key = f"trtd_bench_{role}_{tag}", f"/trtd_bench_{role}_{tag}"
        handle = shm.create_shared_memory_region(name, key, nbytes)
        client.register_system_shared_memory(name, key, nbytes, headers=headers)
        regions.append((name, handle))

    def cleanup():
        for name, handle in regions:
            try:
                client.unregister_system_shared_memory(name, headers=headers)
            finally:
                shm.destroy_shared_memory_region(handle)

    atexit.register(cleanup)
    (in_name, in_handle), (out_name, out_handle) = regions
    inp = grpc.InferInput(INPUT, list(x.shape), "FP32")
    inp.set_shared_memory(in_name, x.nbytes)
    out = grpc.InferRequestedOutput(OUTPUT)
    out.set_shared_memory(out_name, out_bytes)

    def call():
        shm.set_shared_memory_region(in_handle, [x])
        client.infer(model, [inp], outputs=[out])
        return shm.get_contents_as_numpy(out_handle, np.float32, out_shape).copy()

    return call


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--protocol", choices=("http", "grpc", "grpc_shm"), required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--shape", required=True)
    parser.add_argument("--output-shape", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--duration", type=float, default=0.0)
    parser.add_argument("--count", type=int, default=0)
    args = parser.parse_args()
    return run_worker(make_setup(args), warmup=args.warmup, duration_s=args.duration, count=args.count)


if __name__ == "__main__":
    sys.exit(main())
