"""A region another user can change is never touched through its mapping (issue 17.2c).

A group member may truncate its own region, or punch holes in it, while its request runs: with
the backend reading and writing the mapping, the daemon's next touch of a vanished page was a
SIGBUS (seen in review: a slow model on two instances, `ftruncate(0)` 0.3 s into the run). The
daemon now moves the tensors of any region whose client is not its own user by preadv/pwritev
(daemon/running/guarded_io.py): the request may fail, the daemon does not. Needs real OS users
(root and useradd, as in CI).
"""

from __future__ import annotations

import json

import numpy as np

from daemon_process import start_daemon
from slow_models import slow_to_run
from test_access import _expected, accounts, json_as, needs_root, open_dir, script_as  # noqa: F401
from trtd.sdk import Client

_TRUNCATE_MID_RUN = """
import json, os, sys, time
import msgpack
import numpy as np
from trtd.protocol import messages as m
from trtd.protocol.codec import encode_request
from trtd.sdk import Client
endpoint, how = sys.argv[1], sys.argv[2]
c = Client(endpoint, timeout=60)
x = np.random.default_rng(0).standard_normal((1024, 768)).astype(np.float32)
region = c.lease(2 * x.nbytes)
region.array(0, x.dtype, x.shape)[...] = x
request = m.Infer(client_id=c.client_id, model="slow", region=region.name, token=region.token,
                  inputs=[m.InputRef(name="x", dtype="float32", shape=list(x.shape), offset=0,
                                     nbytes=x.nbytes)],
                  outputs=[m.OutputRef(name="y", offset=x.nbytes, nbytes=x.nbytes)])
sock = c._conn._socket
sock.send(encode_request(request, 7))
time.sleep(0.3)  # the model runs for seconds: change the region under it
path = "/dev/shm/" + region.name
mode = os.stat(path).st_mode & 0o777
if how == "truncate":
    os.truncate(path, 0)
else:  # punch every page out, keeping the size
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDWR)
    assert libc.fallocate(fd, 0x01 | 0x02, ctypes.c_long(0), ctypes.c_long(2 * x.nbytes)) == 0
    os.close(fd)
assert sock.poll(120_000), "no reply"
reply = msgpack.unpackb(sock.recv())
print(json.dumps({"ok": reply.get("ok"), "error": reply.get("error"), "mode": mode}))
"""


def _as_member(user: str, endpoint: str, how: str) -> dict:
    return json_as(user, _TRUNCATE_MID_RUN, endpoint, how, timeout=180)


@needs_root
def test_a_members_region_changed_mid_run_fails_at_most_that_request(accounts, open_dir):  # noqa: F811
    model = slow_to_run(open_dir / "slow.onnx")
    config = open_dir / "d.toml"
    config.write_text(f'group = "{accounts["group"]}"\n'
                      f'[models.slow]\npath = "{model}"\ninstances = 2\nmax_batch = 1024\n'
                      '[models.demo]\npath = "builtin:demo"\n')
    d = start_daemon(open_dir / "sock", "--config", str(config))
    try:
        for how in ("truncate", "punch"):
            reply = _as_member(accounts["member"], d.endpoint, how)
            assert d.alive(), f"{how}: the daemon died\n{d.log()}"
            assert reply["mode"] == 0o660, reply  # a member's region is the group's (it must open it)
            # Written back by pwritev: a truncated file grows again, a punched one refills
            # (ENOSPC only when /dev/shm is full): either an answer or a clear error.
            assert reply["ok"] or reply["error"]["code"] == "BACKEND_ERROR", reply
        with Client(d.endpoint) as c:
            np.testing.assert_allclose(c.infer("demo", np.ones((1, 64), np.float32)).tolist(),
                                       _expected(), atol=1e-6)
    finally:
        assert d.stop() == 0, d.log()


_BATCHED_MEMBER = """
import json, sys
import numpy as np
from trtd.sdk import Client
endpoint, seed = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(seed)
pairs = []
with Client(endpoint, timeout=60) as c:
    for _ in range(30):
        x = rng.standard_normal((int(rng.integers(1, 3)), 64)).astype(np.float32)
        pairs.append([x.tolist(), np.asarray(c.infer("demo", x)).tolist()])
print(json.dumps(pairs))
"""


@needs_root
def test_members_batched_together_each_get_their_own_rows_through_guarded_io(accounts, open_dir):  # noqa: F811
    """Dynamic batching gathers and scatters a member's rows by preadv/pwritev (its regions are
    guarded): four member processes at once, every answer checked against ONNX Runtime here."""
    from trtd.daemon.backends.onnxruntime import create_session
    from trtd.daemon.builtin.onnx_models import builtin_model_path

    config = open_dir / "d.toml"
    config.write_text(f'group = "{accounts["group"]}"\n[models.demo]\npath = "builtin:demo"\n'
                      'dynamic_batching = true\nmax_queue_delay_us = 20000\nintra_op_threads = 1\n')
    d = start_daemon(open_dir / "sock", "--config", str(config))
    try:
        members = [script_as(accounts["member"], _BATCHED_MEMBER, d.endpoint, str(seed)) for seed in range(4)]
        outputs = [p.communicate(timeout=180) for p in members]
        for p, (out, err) in zip(members, outputs):
            assert p.returncode == 0, err
        session = create_session(builtin_model_path("demo"))
        for seed, (out, _) in enumerate(outputs):
            for x, y in json.loads(out):
                np.testing.assert_allclose(y, session.run(None, {"x": np.array(x, np.float32)})[0],
                                           rtol=1e-5, atol=1e-6, err_msg=f"member {seed}")
        with Client(d.endpoint) as c:
            (st,) = [s for s in c.status().models if s.name == "demo"]
        assert st.batching == "on" and st.errors == 0 and st.requests == 4 * 30, st
        assert d.alive()
    finally:
        assert d.stop() == 0, d.log()
