"""Every bad input gets a clear error from a real daemon process, which keeps serving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import msgpack
import numpy as np
import pytest
import zmq

from daemon_process import raw_call, shm_names, wait_until
from trtd.daemon.backends.onnxruntime import create_session
from trtd.daemon.builtin.onnx_models import builtin_model_path
from trtd.protocol import MAX_REQUEST_BYTES, messages as m
from trtd.sdk import (Client, InvalidInput, ProtocolMismatch, QuotaExceeded, RegionError, TrtdError,
                      UnknownModel)


@pytest.fixture(scope="module")
def reference():
    return create_session(builtin_model_path("demo"))


@pytest.fixture
def client(daemon):
    with Client(daemon.endpoint, timeout=10) as c:
        yield c


@pytest.fixture(autouse=True)
def still_serving(daemon, reference):
    """After every bad input: the daemon is alive and gives a well-behaved client right answers."""
    yield
    assert daemon.alive(), daemon.log()
    x = np.random.default_rng(1).standard_normal((2, 64), dtype=np.float32)
    with Client(daemon.endpoint, timeout=10) as c:
        np.testing.assert_allclose(c.infer("demo", x), reference.run(None, {"x": x})[0], rtol=0, atol=1e-6)


def _error(reply: dict) -> tuple[str, str]:
    assert reply["ok"] is False, reply
    return reply["error"]["code"], reply["error"]["message"]


def _leased(client, nbytes=4096):
    region = client.lease(nbytes)
    return region


def _infer(client, region, inputs, outputs, model="demo"):
    return client._call(m.Infer(client_id=client.client_id, model=model, region=region.name,
                                token=region.token, inputs=inputs, outputs=outputs))


def _x(offset=0, dtype="float32", shape=(1, 64), nbytes=None):
    n = nbytes if nbytes is not None else int(np.prod(shape)) * np.dtype(dtype).itemsize
    return m.InputRef(name="x", dtype=dtype, shape=list(shape), offset=offset, nbytes=n)


def _y(offset=512, nbytes=40):
    return m.OutputRef(name="y", offset=offset, nbytes=nbytes)


# -- the message itself ----------------------------------------------------------------------------


def test_malformed_msgpack(daemon):
    code, message = _error(raw_call(daemon.endpoint, b"\xc1\xff not msgpack", raw=True))
    assert code == "BAD_MESSAGE" and "msgpack" in message


def test_truncated_msgpack(daemon):
    data = msgpack.packb({"v": 1, "op": "status", "id": 5})[:-3]
    assert _error(raw_call(daemon.endpoint, data, raw=True))[0] == "BAD_MESSAGE"


def test_not_a_map(daemon):
    assert _error(raw_call(daemon.endpoint, [1, "status", 3]))[0] == "BAD_MESSAGE"


def test_unknown_op(daemon):
    reply = raw_call(daemon.endpoint, {"v": 1, "op": "explode", "id": 9})
    code, message = _error(reply)
    assert code == "UNKNOWN_OP" and "'explode'" in message and "infer" in message
    assert reply["id"] == 9


def test_wrong_protocol_version(daemon):
    reply = raw_call(daemon.endpoint, {"v": 99, "op": "status", "id": 3})
    code, message = _error(reply)
    assert code == "UNSUPPORTED_VERSION" and "99" in message
    assert reply["error"]["details"]["supported"] == [1]


def test_wrong_field_type_names_the_field(daemon):
    reply = raw_call(daemon.endpoint, {"v": 1, "op": "lease", "id": 4, "client_id": 1, "nbytes": "big"})
    code, message = _error(reply)
    assert code == "BAD_MESSAGE" and "'nbytes'" in message


def test_frame_over_size_limit_is_refused(daemon):
    # libzmq drops the connection of a peer sending a frame over MAXMSGSIZE before allocating it.
    with pytest.raises(TimeoutError):
        raw_call(daemon.endpoint, b"\x00" * (MAX_REQUEST_BYTES + 1), raw=True, timeout=1.0)


def test_sdk_refuses_an_oversized_request_before_sending(client):
    with pytest.raises(InvalidInput, match="over the protocol's limit"):
        client._conn.call(m.Infer(client_id=client.client_id, model="demo", region="r", token="t",
                                  inputs=[_x() for _ in range(3000)], outputs=[]), 5)
    assert client.infer("demo", np.zeros((1, 64), np.float32)).shape == (1, 10)


def test_unknown_client_id(daemon):
    reply = raw_call(daemon.endpoint, {"v": 1, "op": "lease", "id": 4, "client_id": 123456, "nbytes": 64})
    assert _error(reply)[0] == "UNKNOWN_CLIENT"


# -- models and tensors ----------------------------------------------------------------------------


def test_unknown_model(client):
    with pytest.raises(UnknownModel) as e:
        client.infer("nope", np.zeros((1, 64), np.float32))
    assert "'nope'" in str(e.value) and "demo" in str(e.value)


def test_unknown_input_name(client):
    with pytest.raises(InvalidInput) as e:
        client.infer("demo", {"z": np.zeros((1, 64), np.float32)})
    assert "no input 'z'" in str(e.value) and "x" in str(e.value)


def test_missing_input(client):
    region = _leased(client)
    with pytest.raises(InvalidInput) as e:
        _infer(client, region, [], [_y()])
    assert "missing input" in str(e.value) and "'x'" in str(e.value)


def test_dtype_mismatch(client):
    with pytest.raises(InvalidInput) as e:
        client.infer("demo", np.zeros((1, 64), np.float64))
    assert str(e.value) == "input 'x' expects float32[?,64], got float64[1,64]"


def test_wrong_rank(client):
    with pytest.raises(InvalidInput) as e:
        client.infer("demo", np.zeros((64,), np.float32))
    assert "rank 2" in str(e.value) and "rank 1" in str(e.value)


def test_wrong_dimension(client):
    with pytest.raises(InvalidInput) as e:
        client.infer("demo", np.zeros((1, 63), np.float32))
    assert "dimension 1 must be 64" in str(e.value)


def test_batch_above_max_batch(client):
    with pytest.raises(InvalidInput) as e:
        client.infer("demo", np.zeros((65, 64), np.float32))
    assert "at most 64" in str(e.value)


def test_zero_batch(client):
    region = _leased(client)
    with pytest.raises(InvalidInput) as e:
        _infer(client, region, [_x(shape=(0, 64))], [_y()])
    assert "at least 1" in str(e.value)


def test_nbytes_not_matching_dtype_and_shape(client):
    region = _leased(client)
    with pytest.raises(InvalidInput) as e:
        _infer(client, region, [_x(nbytes=100)], [_y()])
    assert "is 256 bytes, the request says 100" in str(e.value)


@pytest.mark.parametrize("offset", [4096, 4096 - 128, 1 << 62])
def test_input_outside_region(client, offset):
    region = _leased(client, 4096)
    with pytest.raises(InvalidInput) as e:
        _infer(client, region, [_x(offset=offset)], [_y()])
    assert e.value.code == "OUT_OF_BOUNDS" and "holds 4096 bytes" in str(e.value)


def test_output_outside_region(client):
    region = _leased(client, 4096)
    with pytest.raises(InvalidInput) as e:
        _infer(client, region, [_x()], [_y(offset=4096 - 256, nbytes=1024)])
    assert e.value.code == "OUT_OF_BOUNDS" and "output 'y'" in str(e.value)


def test_unaligned_offset(client):
    region = _leased(client)
    with pytest.raises(InvalidInput) as e:
        _infer(client, region, [_x(offset=8)], [_y()])
    assert "multiple of 256" in str(e.value)


def test_overlapping_ranges(client):
    region = _leased(client)
    with pytest.raises(InvalidInput) as e:
        _infer(client, region, [_x(offset=0)], [_y(offset=0)])
    assert e.value.code == "OVERLAP" and "input 'x'" in str(e.value) and "output 'y'" in str(e.value)


def test_output_area_too_small(client):
    region = _leased(client)
    with pytest.raises(InvalidInput) as e:
        _infer(client, region, [_x(shape=(2, 64))], [_y(nbytes=40)])
    assert e.value.code == "OUTPUT_TOO_LARGE" and e.value.details == {"output": "y", "needed": 80, "capacity": 40}


def test_output_area_exact_fit_is_fine(client):
    region = _leased(client)
    reply = _infer(client, region, [_x(shape=(2, 64))], [_y(nbytes=80)])
    assert reply.outputs[0].shape == [2, 10] and reply.outputs[0].nbytes == 80


# -- regions ---------------------------------------------------------------------------------------


def test_region_of_another_client(daemon, client):
    region = _leased(client)
    with Client(daemon.endpoint) as other:
        def attempt(client_id):
            with pytest.raises(TrtdError) as e:
                other._conn.call(m.Infer(client_id=client_id, model="demo", region=region.name,
                                         token=region.token, inputs=[_x()], outputs=[_y()]), 5)
            return e.value

        # Its own id with the stolen token: the region is not its lease.
        assert attempt(other.client_id).code == "FORBIDDEN"
        # The victim's id from another connection: not registered there.
        assert attempt(client.client_id).code == "UNKNOWN_CLIENT"
    assert _infer(client, region, [_x()], [_y()]).outputs[0].shape == [1, 10]


def test_forged_token(client):
    region = _leased(client)
    with pytest.raises(RegionError) as e:
        _infer(client, _Fake(region.name, "0" * 32), [_x()], [_y()])
    assert e.value.code == "FORBIDDEN" and "lease token" in str(e.value)


class _Fake:
    def __init__(self, name, token):
        self.name, self.token = name, token


def test_released_region(client):
    region = _leased(client)
    client.release(region)
    with pytest.raises(RegionError) as e:
        _infer(client, region, [_x()], [_y()])
    assert e.value.code == "REGION_NOT_FOUND" and "released" in str(e.value)
    assert region.name not in shm_names()


def test_request_larger_than_any_region(tmp_path):
    from daemon_process import start_daemon

    config = tmp_path / "small.toml"
    config.write_text(f"max_region_bytes = {1 << 20}\n[models.volume3d]\npath = \"builtin:volume3d\"\n")
    d = start_daemon(tmp_path, "--config", str(config))
    try:
        with Client(d.endpoint) as c:
            with pytest.raises(RegionError) as e:
                c.infer("volume3d", np.zeros((1, 1, 128, 256, 256), np.float32))
            assert e.value.code == "REGION_TOO_LARGE" and "max_region_bytes (1048576)" in str(e.value)
            with pytest.raises(ProtocolMismatch):
                c.lease(0)
            assert c.status().regions == 0
    finally:
        assert d.stop() == 0


def test_lease_larger_than_free_shm(client):
    free = os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize
    before = shm_names()
    with pytest.raises(RegionError) as e:
        client.lease(free + (1 << 30))
    assert e.value.code == "NO_SPACE" and "/dev/shm" in str(e.value)
    assert shm_names() == before


def test_per_client_region_quota(daemon):
    with Client(daemon.endpoint) as c:
        for _ in range(16):
            c.lease(256)
        with pytest.raises(QuotaExceeded) as e:
            c.lease(256)
        assert e.value.code == "QUOTA_EXCEEDED" and "release" in str(e.value)


# -- clients that go away --------------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import sys, numpy as np
    from trtd.sdk import Client
    c = Client(sys.argv[1])
    h = c.model(sys.argv[2])
    x = np.zeros(tuple(int(v) for v in sys.argv[3].split(',')), np.float32)
    h(x)
    print(h._region.name, flush=True)
    if sys.argv[4] == 'loop':
        while True:
            h(x)
    # else: exit normally without releasing or closing
""")


def _child(daemon, model, shape, mode):
    return subprocess.Popen([sys.executable, "-c", _CHILD, daemon.endpoint, model, shape, mode],
                            stdout=subprocess.PIPE, text=True)


def test_client_killed_mid_request_is_reclaimed(daemon):
    child = _child(daemon, "volume3d", "1,1,128,256,256", "loop")
    region = child.stdout.readline().strip()
    assert region in shm_names()
    child.send_signal(signal.SIGKILL)  # while it loops on 32 MiB requests
    child.wait()
    assert wait_until(lambda: region not in shm_names(), timeout=5), "region not reclaimed"
    with Client(daemon.endpoint) as c:
        assert wait_until(lambda: c.status().clients == 1, timeout=5)


def test_client_exiting_without_release_is_reclaimed(daemon):
    child = _child(daemon, "demo", "1,64", "exit")
    region = child.stdout.readline().strip()
    assert child.wait() == 0
    assert wait_until(lambda: region not in shm_names(), timeout=5), "region not reclaimed"


def _raw_client(endpoint: str, auth: str | None = None):
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)

    def call(msg):
        sock.send(msgpack.packb({**msg, **({"auth": auth} if auth else {})}))
        assert sock.poll(5000)
        return msgpack.unpackb(sock.recv())

    return ctx, sock, call


def test_heartbeat_client_is_reclaimed_when_heartbeats_stop(tmp_path):
    # Over TCP the daemon has no peer credentials: a pid it cannot verify (as from another
    # PID namespace) must send heartbeats, and its regions go when they stop.
    from test_access import _tcp_daemon, token_path_in

    d, runtime = _tcp_daemon(tmp_path, "reclaim_interval_s = 0.2\nclient_timeout_s = 1.5\n")
    token = token_path_in(runtime, d.endpoint).read_text().strip()
    ctx, sock, call = _raw_client(d.endpoint, token)
    try:
        hello = call({"v": 1, "op": "hello", "id": 1, "client_pid": 2**31 - 7, "client_start_time": 1.0})
        assert hello["result"]["heartbeat_interval_s"] > 0
        cid = hello["result"]["client_id"]
        lease = call({"v": 1, "op": "lease", "id": 2, "client_id": cid, "nbytes": 4096})
        name = lease["result"]["region"]["name"]
        assert call({"v": 1, "op": "heartbeat", "id": 3, "client_id": cid})["ok"]
        assert name in shm_names()
        assert wait_until(lambda: name not in shm_names(), timeout=6), "silent client not reclaimed"
        assert call({"v": 1, "op": "heartbeat", "id": 4, "client_id": cid})["error"]["code"] == "UNKNOWN_CLIENT"
    finally:
        sock.close()
        ctx.term()
        assert d.stop() == 0, d.log()


def test_on_a_unix_socket_the_os_names_the_client_whatever_pid_it_claims(daemon):
    # The peer's credentials (SO_PEERCRED) say which process is connected: a claimed pid that
    # does not exist changes nothing, this live process is verified and needs no heartbeats.
    ctx, sock, call = _raw_client(daemon.endpoint)
    try:
        hello = call({"v": 1, "op": "hello", "id": 1, "client_pid": 2**31 - 7, "client_start_time": 1.0})
        assert hello["result"]["heartbeat_interval_s"] == 0
        cid = hello["result"]["client_id"]
        name = call({"v": 1, "op": "lease", "id": 2, "client_id": cid, "nbytes": 4096})["result"]["region"]["name"]
        time.sleep(2.5)  # past client_timeout_s = 1.5 without a heartbeat: still ours
        assert name in shm_names()
        assert call({"v": 1, "op": "goodbye", "id": 3, "client_id": cid})["result"]["released"] == 1
    finally:
        sock.close()
        ctx.term()
