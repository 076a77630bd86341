"""Serve the benchmark's ONNX models with NVIDIA Triton through PyTriton (run by trtd.bench.peers.triton).

Runs with the interpreter of PyTriton's own virtual environment (numpy<2, no trtd):
    python pytriton_server.py SPEC.json

SPEC.json: {"http_port", "grpc_port", "metrics_port", "ort": {"intra_op_num_threads",
"inter_op_num_threads", "graph_optimization_level"}, "models": [{"name", "path", "input",
"output", "shape", "output_shape", optional "batching": {"max_batch_size",
"max_queue_delay_us", "preferred_batch_sizes"}}]}. The access token for Triton's restricted endpoints (shared memory
registration among them) comes in the environment as TRTD_BENCH_TRITON_TOKEN.

Each model is ONNX Runtime on the CPU, with the daemon's session settings, called as a Python
function behind Triton's python backend (how PyTriton serves every model). Request batching is
off unless the model's spec asks for Triton's dynamic batcher ("batching": trtd bench
--batching, against the daemon's dynamic_batching). Prints one line, "SERVING {json}", once
every model is bound.
"""

import json
import os
import sys

import numpy as np
import onnxruntime as ort
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig


def session(path: str, settings: dict) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = settings["intra_op_num_threads"]
    options.inter_op_num_threads = settings["inter_op_num_threads"]
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                               settings["graph_optimization_level"].split(".")[-1])
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def infer_function(sess: ort.InferenceSession, input_name: str, output_name: str):
    # With batching off PyTriton hands over a list of requests; each is answered on its own.
    def infer(requests):
        return [{output_name: sess.run(None, {input_name: request[input_name]})[0]} for request in requests]
    return infer


def batched_infer_function(sess: ort.InferenceSession, input_name: str, output_name: str):
    # Triton's dynamic batcher hands the python backend the requests it merged; @batch stacks
    # them into one array along dimension 0 and splits the result back per request.
    @batch
    def infer(**inputs):
        return {output_name: sess.run(None, {input_name: inputs[input_name]})[0]}
    return infer


def bind(triton, model: dict, sess: ort.InferenceSession) -> None:
    batching = model.get("batching")
    if batching is None:
        triton.bind(model_name=model["name"],
                    infer_func=infer_function(sess, model["input"], model["output"]),
                    inputs=[Tensor(name=model["input"], dtype=np.float32, shape=tuple(model["shape"]))],
                    outputs=[Tensor(name=model["output"], dtype=np.float32, shape=tuple(model["output_shape"]))],
                    config=ModelConfig(batching=False))
        return
    # With batching the tensors' shapes leave out the batch dimension (Triton's max_batch_size > 0).
    batcher = DynamicBatcher(max_queue_delay_microseconds=batching["max_queue_delay_us"],
                             preferred_batch_size=batching.get("preferred_batch_sizes") or None)
    triton.bind(model_name=model["name"],
                infer_func=batched_infer_function(sess, model["input"], model["output"]),
                inputs=[Tensor(name=model["input"], dtype=np.float32, shape=tuple(model["shape"][1:]))],
                outputs=[Tensor(name=model["output"], dtype=np.float32, shape=tuple(model["output_shape"][1:]))],
                config=ModelConfig(batching=True, max_batch_size=batching["max_batch_size"], batcher=batcher))


def main(spec_path: str) -> None:
    with open(spec_path) as f:
        spec = json.load(f)
    config = TritonConfig(http_port=spec["http_port"], grpc_port=spec["grpc_port"],
                          metrics_port=spec["metrics_port"], allow_metrics=False)
    # Triton's default restrictions stay on: shared-memory registration needs the token.
    security = TritonSecurityConfig(access_token=os.environ["TRTD_BENCH_TRITON_TOKEN"])
    with Triton(config=config, security_config=security) as triton:
        for model in spec["models"]:
            bind(triton, model, session(model["path"], spec["ort"]))
        import tritonclient.http as http

        meta = http.InferenceServerClient(f"127.0.0.1:{spec['http_port']}").get_server_metadata()
        import pytriton
        print("SERVING " + json.dumps({"triton": meta.get("version", "?"),
                                       "pytriton": getattr(pytriton, "__version__", "?"),
                                       "onnxruntime": ort.__version__, "numpy": np.__version__}),
              flush=True)
        triton.serve()


if __name__ == "__main__":
    main(sys.argv[1])
