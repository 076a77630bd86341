"""Regenerate protocol/golden/vectors.json from the Python codec: python protocol/golden/generate.py

Run it after a deliberate wire change, review the diff, and update SPEC.md with it.
"""
import json
from pathlib import Path
from trtd.protocol import (ErrorCode, encode_error, encode_reply, encode_request, plan_slots,
                           messages as m)
from trtd.protocol.schema import to_wire

CLIENT = 3
REGION = "trtd_1a2b3c4d_9f0e_1"
TOKEN = "7c45d22660fd73f31a250f9bd492b3eb"
DAEMON = "5f3c9a0e7b1d2468"

# The infer layout: 2 inputs, 2 outputs (batch 2 of a model with max_batch 8).
sizes = [("image", 2 * 3 * 224 * 224 * 4), ("meta", 2 * 16 * 4),
         ("logits", 32000 // 8 * 2), ("embedding", 8192 // 8 * 2)]
slots, total = plan_slots(sizes)
off = {s.name: s.offset for s in slots}

infer = m.Infer(
    client_id=CLIENT, model="fusion", region=REGION, token=TOKEN,
    inputs=[m.InputRef(name="image", dtype="float32", shape=[2, 3, 224, 224], offset=off["image"],
                       nbytes=sizes[0][1]),
            m.InputRef(name="meta", dtype="float32", shape=[2, 16], offset=off["meta"], nbytes=sizes[1][1])],
    outputs=[m.OutputRef(name="logits", offset=off["logits"], nbytes=sizes[2][1]),
             m.OutputRef(name="embedding", offset=off["embedding"], nbytes=sizes[3][1])],
)

requests = [
    ("request.hello", 1, m.Hello(client_pid=48213, client_start_time=1732170000.25, client_name="segmenter-cpp")),
    ("request.hello.defaults", 1, m.Hello(client_pid=48213)),
    ("request.models.all", 2, m.ListModels()),
    ("request.models.one", 3, m.ListModels(name="fusion")),
    ("request.lease", 4, m.Lease(client_id=CLIENT, nbytes=total)),
    ("request.infer", 5, infer),
    ("request.heartbeat", 6, m.Heartbeat(client_id=CLIENT)),
    ("request.release", 7, m.Release(client_id=CLIENT, region=REGION, token=TOKEN)),
    ("request.goodbye", 8, m.Goodbye(client_id=CLIENT)),
    ("request.status", 9, m.Status()),
    ("request.load", 10, m.Load(name="segmenter", path="/srv/models/seg.onnx", backend="onnxruntime", max_batch=4)),
    ("request.unload", 11, m.Unload(name="segmenter")),
    ("request.shutdown", 12, m.Shutdown()),
    ("request.reload", 13, m.Reload()),
    ("request.heartbeat.large_id", 2**40 + 7, m.Heartbeat(client_id=CLIENT)),
    ("request.infer.deadline", 13, m.Infer(client_id=CLIENT, model="demo", region=REGION, token=TOKEN,
                                          inputs=[m.InputRef(name="x", dtype="float32", shape=[1, 64], offset=0, nbytes=256)],
                                          outputs=[m.OutputRef(name="y", offset=256, nbytes=40)],
                                          deadline_ms=250)),
]
# Requests with the envelope's "auth" (SPEC 10.5): the admin token for privileged ops,
# the connection token on TCP endpoints.
ADMIN = "3b9f0c5e8d7a41f2a6c0e9d8b7f6a5c4"
CONNECTION = "c0ffee00d15ea5e0123456789abcdef0"
authed = [
    ("request.shutdown.admin", 14, m.Shutdown(), ADMIN),
    ("request.unload.admin", 15, m.Unload(name="segmenter"), ADMIN),
    ("request.status.tcp", 16, m.Status(), CONNECTION),
]

def spec(name, dtype, shape, max_nbytes):
    return m.TensorSpec(name=name, dtype=dtype, shape=shape, max_nbytes=max_nbytes)

fusion = m.ModelInfo(
    name="fusion", backend="onnxruntime", state="ready",
    inputs=[spec("image", "float32", [-1, 3, 224, 224], 8 * 3 * 224 * 224 * 4), spec("meta", "float32", [-1, 16], 512)],
    outputs=[spec("logits", "float32", [-1, 1000], 32000), spec("embedding", "float16", [-1, 512], 8192)],
    max_batch=8,
)
detector = m.ModelInfo(name="detector", backend="onnxruntime", state="failed",
                       error="model file /srv/models/det.onnx does not exist")
demo = m.ModelInfo(name="demo", backend="onnxruntime", state="ready",
                   inputs=[spec("x", "float32", [-1, 64], 16384)],
                   outputs=[spec("y", "float32", [-1, 10], 2560)], max_batch=64)

replies = [
    ("reply.hello", "hello", 1, m.HelloReply(client_id=CLIENT, daemon_id=DAEMON, server_version="0.1.0",
                                              protocol_version=1, alignment=256, max_message_bytes=65536,
                                              heartbeat_interval_s=0.0)),
    ("reply.hello.heartbeat", "hello", 1, m.HelloReply(client_id=CLIENT, daemon_id=DAEMON, server_version="0.1.0",
                                                       protocol_version=1, alignment=256, max_message_bytes=65536,
                                                       heartbeat_interval_s=10.0)),
    ("reply.models.all", "models", 2, m.ModelsReply(models=[demo, fusion, detector])),
    ("reply.models.one", "models", 3, m.ModelsReply(models=[fusion])),
    ("reply.lease", "lease", 4, m.LeaseReply(region=m.RegionInfo(name=REGION, nbytes=total, token=TOKEN))),
    ("reply.infer", "infer", 5, m.InferReply(backend="onnxruntime", 
        outputs=[m.OutputInfo(name="logits", dtype="float32", shape=[2, 1000], offset=off["logits"], nbytes=8000),
                 m.OutputInfo(name="embedding", dtype="float16", shape=[2, 512], offset=off["embedding"], nbytes=2048)],
        timing=m.Timing(compute_us=5321, total_us=5410))),
    ("reply.heartbeat", "heartbeat", 6, m.HeartbeatReply()),
    ("reply.release", "release", 7, m.ReleaseReply(released_now=True)),
    ("reply.goodbye", "goodbye", 8, m.GoodbyeReply(released=2)),
    ("reply.status", "status", 9, m.StatusReply(
        daemon_id=DAEMON, pid=1187, server_version="0.1.0", protocol_version=1,
        endpoint="ipc:///run/user/1000/trtd/trtd.sock", uptime_s=3600.5, rss_bytes=81002496,
        cpu_user_s=12.75, cpu_system_s=1.5, clients=2, regions=3, region_bytes=3644160,
        models=[m.ModelStatus(name="demo", backend="onnxruntime", state="ready", requests=1500, errors=2,
                              p50_us=212.5, p90_us=260.0, p99_us=410.25),
                m.ModelStatus(name="detector", backend="onnxruntime", state="failed",
                              error="model file /srv/models/det.onnx does not exist"),
                # A TorchScript model on a GPU with cuda_graphs = true, b1 and b8 captured.
                m.ModelStatus(name="resnet18", backend="torch", state="ready", requests=90210,
                              p50_us=505.0, p90_us=540.5, p99_us=610.0, device=0, graphs=2,
                              graph_bytes=25165824),
                # dynamic_batching = true: 8 clients' batch-1 requests in batches of about 6.
                m.ModelStatus(name="mlp", backend="onnxruntime", state="ready", requests=6000,
                              p50_us=480.0, p90_us=610.0, p99_us=790.5, batching="on", batches=1000,
                              batch_mean=6.0, batch_max=8, queue_delay_p50_us=120.5,
                              queue_delay_p99_us=300.0)])),
    # A daemon draining (SPEC 6.11): it answers status, with stopping true, and refuses new work.
    ("reply.status.stopping", "status", 9, m.StatusReply(
        daemon_id=DAEMON, pid=1187, server_version="0.1.0", protocol_version=1,
        endpoint="ipc:///run/user/1000/trtd/trtd.sock", uptime_s=3601.0, rss_bytes=81002496,
        cpu_user_s=12.8, cpu_system_s=1.5, clients=1, regions=1, region_bytes=4096,
        models=[m.ModelStatus(name="demo", backend="onnxruntime", state="ready", requests=1500,
                              in_flight=1)],
        stopping=True)),
    ("reply.load", "load", 10, m.LoadReply(model=m.ModelInfo(
        name="segmenter", backend="onnxruntime", state="ready",
        inputs=[spec("image", "uint8", [-1, 512, 512, 3], 4 * 512 * 512 * 3)],
        outputs=[spec("mask", "uint8", [-1, 512, 512], 4 * 512 * 512)], max_batch=4))),
    ("reply.unload", "unload", 11, m.UnloadReply()),
    ("reply.shutdown", "shutdown", 12, m.ShutdownReply()),
    ("reply.reload", "reload", 13, m.ReloadReply(loading=["detector"], replacing=["segmenter"],
                                                 unloaded=["fusion"], unchanged=["demo"],
                                                 restart_needed=["max_clients"])),
]

errors = [
    ("error.infer.output_too_large", "infer", 5, ErrorCode.OUTPUT_TOO_LARGE,
     "output 'logits' will be float32[2,1000] = 8000 bytes, but its area holds 4000; give it at least 8000 bytes",
     {"output": "logits", "needed": 8000, "capacity": 4000}),
    ("error.status.unsupported_version", "status", 9, ErrorCode.UNSUPPORTED_VERSION,
     "protocol version 2 is not supported; this daemon speaks 1: upgrade the client or the daemon so they match",
     {"supported": [1]}),
    ("error.hello.bad_message_id0", "hello", 0, ErrorCode.BAD_MESSAGE,
     "a request must be a msgpack map", {}),
    ("error.reload.config_error", "reload", 13, ErrorCode.CONFIG_ERROR,
     "the configuration was not reloaded, nothing changed: /etc/trtd/trtd.toml [models.seg]: unknown key 'max_bach'",
     {}),
    ("error.models.unknown_model", "models", 3, ErrorCode.UNKNOWN_MODEL,
     "no model named 'fusoin'; loaded models: demo, fusion", {"models": ["demo", "fusion"]}),
    ("error.shutdown.unauthorized", "shutdown", 14, ErrorCode.UNAUTHORIZED,
     "'shutdown' is a privileged op: it needs this daemon's admin token, from "
     "/run/trtd/trtd.sock.admin-token (readable by the daemon's user); run the command as that user (or root)",
     {"needs": "admin", "token_file": "/run/trtd/trtd.sock.admin-token"}),
    ("error.infer.deadline_exceeded", "infer", 13, ErrorCode.DEADLINE_EXCEEDED,
     "request to model 'demo' waited 312.5 ms, past its deadline of 250 ms; it did not run (the model is busy: "
     "retry later, raise deadline_ms, or ask for more instances)",
     {"waited_ms": 312.5, "deadline_ms": 250}),
]

vectors = []
for name, rid, req in requests:
    vectors.append({"name": name, "kind": "request", "op": req.OP, "request_id": rid,
                    "message": to_wire(req), "msgpack_hex": encode_request(req, rid).hex()})
for name, rid, req, auth in authed:
    vectors.append({"name": name, "kind": "request", "op": req.OP, "request_id": rid, "auth": auth,
                    "message": to_wire(req), "msgpack_hex": encode_request(req, rid, auth).hex()})
for name, op, rid, res in replies:
    assert type(res) is m.REQUEST_TYPES[op].REPLY
    vectors.append({"name": name, "kind": "reply", "op": op, "request_id": rid,
                    "message": to_wire(res), "msgpack_hex": encode_reply(rid, res).hex()})
for name, op, rid, code, msg, details in errors:
    vectors.append({"name": name, "kind": "error", "op": op, "request_id": rid,
                    "message": {"code": code.value, "message": msg, "details": details},
                    "msgpack_hex": encode_error(rid, code, msg, details).hex()})

with open(Path(__file__).with_name("vectors.json"), "w") as f:
    json.dump(vectors, f, indent=2)
    f.write("\n")
print(len(vectors), total, off)
