"""One short process must not lock everyone out with hellos (issue 17.5).

Before: `hello` trusted any claimed pid and start time (pid 1's are readable from /proc),
nothing capped hellos per connection, and records outlived their connection: 1,024 hellos
claiming pid 1 from one socket, then exit, and every new client got QUOTA_EXCEEDED until the
daemon restarted; 70 hellos x 64 leases on one socket held 4,096 regions. Now the OS says who
is at the other end of a unix socket (SO_PEERCRED, through libzmq's Peer-Address), a connection
is one client, and its regions go when that process does.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from daemon_process import serving, shm_names, wait_until
from trtd.sdk import Client

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="unix sockets and SO_PEERCRED")

# One DEALER: many hellos claiming pid 1 (with its real start time), a lease after each, exit.
ATTACK = r"""
import sys, msgpack, psutil, zmq
endpoint, hellos = sys.argv[1], int(sys.argv[2])
ctx = zmq.Context(); s = ctx.socket(zmq.DEALER); s.setsockopt(zmq.LINGER, 0); s.connect(endpoint)
start = psutil.Process(1).create_time()
rid = 0
def call(message):
    global rid
    rid += 1
    s.send(msgpack.packb({"v": 1, "id": rid, **message}))
    return msgpack.unpackb(s.recv())
ids, leased = [], 0
for _ in range(hellos):
    reply = call({"op": "hello", "client_pid": 1, "client_start_time": start})
    if "error" in reply:
        print("hello refused:", reply["error"]["code"]); break
    ids.append(reply["result"]["client_id"])
    for _ in range(3):
        if "result" in call({"op": "lease", "client_id": ids[-1], "nbytes": 4096}):
            leased += 1
print(len(ids), leased, flush=True)
"""


def test_hellos_claiming_pid_1_from_one_connection_hold_one_client_and_go_with_the_process(tmp_path):
    config = "reclaim_interval_s = 0.2\nmax_clients = 8\n[models.demo]\npath = \"builtin:demo\"\n"
    with serving(tmp_path, config) as d:
        before = shm_names()
        with Client(d.endpoint) as watcher:
            run = subprocess.run([sys.executable, "-c", ATTACK, d.endpoint, "40"], capture_output=True,
                                 text=True, timeout=120)
            assert run.returncode == 0, run.stderr
            hellos, leases = map(int, run.stdout.split())
            # More hellos than max_clients went through: each replaced the connection's last one.
            assert hellos == 40 and leases == 120, run.stdout
            # The attacker's process has exited: its one client and its regions are reclaimed,
            # although it claimed pid 1 (alive for ever).
            assert wait_until(lambda: watcher.status().clients == 1, timeout=10), watcher.status().clients
            assert wait_until(lambda: not (shm_names() - before), timeout=10), shm_names() - before
            # And nobody is locked out: more clients than max_clients over time.
            for _ in range(10):
                with Client(d.endpoint) as c:
                    assert c.infer("demo", np.zeros((1, 64), np.float32)).shape == (1, 10)
