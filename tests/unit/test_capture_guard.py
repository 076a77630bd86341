"""system/cuda.py's CaptureGuard: GPU work runs shared, a CUDA graph capture runs alone.

Pure threading (no GPU needed): a capture waits for work that is running, work that starts
while a capture waits or runs waits for it, and two instances that both want to capture from
inside their own work take turns instead of deadlocking.
"""

from __future__ import annotations

import threading
import time

from trtd.daemon.system.cuda import CaptureGuard


def _started(target) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def test_a_capture_waits_for_running_work_and_new_work_waits_for_the_capture():
    guard, events = CaptureGuard(), []
    release_other, capturing = threading.Event(), threading.Event()

    def other_work():
        with guard.shared():
            events.append("other running")
            release_other.wait(5)
            events.append("other done")

    def capture():
        with guard.shared():
            with guard.exclusive():
                capturing.set()
                events.append("capture")
                time.sleep(0.05)
            events.append("capture done")

    def late_work():
        with guard.shared():
            events.append("late running")

    other = _started(other_work)
    while "other running" not in events:
        time.sleep(0.001)
    capturer = _started(capture)
    time.sleep(0.05)
    assert "capture" not in events  # the other instance's run is still going
    late = _started(late_work)
    time.sleep(0.05)
    assert "late running" not in events  # it waits behind the capture that is waiting
    release_other.set()
    for thread in (other, capturer, late):
        thread.join(5)
    assert events.index("other done") < events.index("capture") < events.index("late running")


def test_two_instances_capturing_at_once_take_turns():
    guard, inside, order = CaptureGuard(), [], []
    both_in = threading.Barrier(2)

    def instance(name: str):
        with guard.shared():
            both_in.wait(5)  # both are inside their run before either captures
            with guard.exclusive():
                inside.append(name)
                assert len(inside) == 1, inside  # alone
                time.sleep(0.02)
                inside.remove(name)
                order.append(name)

    threads = [_started(lambda n=n: instance(n)) for n in ("a", "b")]
    for thread in threads:
        thread.join(5)
    assert sorted(order) == ["a", "b"] and not any(t.is_alive() for t in threads)
