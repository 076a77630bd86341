"""One daemon per endpoint: the lock names its holder, and a dead holder's lock is free again.
(Kept hand-written rather than filelock/portalocker: daemon/system/filelock.py says why.)"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from trtd.daemon.serve.endpoint_lock import AlreadyRunning, InstanceLock


def test_a_second_lock_names_the_holder_and_a_released_one_is_free(tmp_path):
    endpoint = f"ipc://{tmp_path / 'run' / 'd.sock'}"
    first = InstanceLock(tmp_path / "run", endpoint)
    first.acquire()
    try:
        with pytest.raises(AlreadyRunning, match=rf"another trtd daemon \(pid {os.getpid()}\) is serving"):
            InstanceLock(tmp_path / "run", endpoint).acquire()
        assert first.path.read_text() == str(os.getpid())
    finally:
        first.release()
    again = InstanceLock(tmp_path / "run", endpoint)
    again.acquire()
    again.release()
    assert first.path.exists()  # never unlinked: see InstanceLock.release


def test_a_killed_holder_leaves_the_lock_free(tmp_path):
    endpoint = f"ipc://{tmp_path / 'run' / 'd.sock'}"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from trtd.daemon.serve.endpoint_lock import InstanceLock
        InstanceLock(Path({str(tmp_path / 'run')!r}), {endpoint!r}).acquire()
        print("held", flush=True)
        time.sleep(120)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(AlreadyRunning, match=rf"pid {holder.pid}\)"):
            InstanceLock(tmp_path / "run", endpoint).acquire()
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        successor = InstanceLock(tmp_path / "run", endpoint)
        successor.acquire()  # the kernel dropped the dead process's lock
        assert successor.path.read_text() == str(os.getpid())
        successor.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
