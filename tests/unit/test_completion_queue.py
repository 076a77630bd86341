"""CompletionQueue: the wake-up socket is readable exactly while finished work waits.

drain() skips its recv when nothing was signalled (the socket loop calls it every turn); these
check that no item is lost and that the descriptor does not stay readable after a drain (the
loop would spin), also with producers racing the drain on other threads.
"""

from __future__ import annotations

import select
import threading

from trtd.daemon.running.finished import Caller, CompletionQueue, RequestDone


def _readable(queue: CompletionQueue, timeout_s: float = 0.0) -> bool:
    return bool(select.select([queue.fileno()], [], [], timeout_s)[0])


def _item(n: int) -> RequestDone:
    # A RequestDone's job is only carried by the queue, never looked into: any object will do.
    return RequestDone(job=Caller(b"id", n))  # type: ignore[arg-type]


def test_nothing_put_drains_nothing_and_nothing_is_readable():
    queue = CompletionQueue()
    try:
        assert queue.drain() == []
        assert not _readable(queue)
        assert queue.drain() == []
    finally:
        queue.close()


def test_items_come_out_in_order_and_the_wake_up_is_consumed():
    queue = CompletionQueue()
    try:
        items = [_item(n) for n in range(5)]
        for item in items:
            queue.put(item)
        assert _readable(queue)
        assert queue.drain() == items
        assert not _readable(queue)
        assert queue.drain() == []
        queue.put(items[0])  # a later put wakes the loop again
        assert _readable(queue)
        assert queue.drain() == [items[0]]
        assert not _readable(queue)
    finally:
        queue.close()


def test_producers_racing_the_drain_lose_nothing_and_leave_no_stale_wake_up():
    queue = CompletionQueue()
    producers, per_producer = 4, 2000
    try:
        def produce(p: int) -> None:
            for n in range(per_producer):
                queue.put(_item(p * per_producer + n))

        threads = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
        for thread in threads:
            thread.start()
        got: list[int] = []
        # The loop's pattern: wait for readability, drain, repeat.
        while len(got) < producers * per_producer:
            assert _readable(queue, 10.0), f"no wake-up with {len(got)} items received"
            got.extend(item.job.request_id for item in queue.drain())
        for thread in threads:
            thread.join()
        got.extend(item.job.request_id for item in queue.drain())
        assert sorted(got) == list(range(producers * per_producer))
        assert not _readable(queue)  # every wake-up byte was read
    finally:
        queue.close()
