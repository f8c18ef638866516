"""SQLite writers of one process take turns on a lock; recording a send goes first."""

from __future__ import annotations

import threading
import time

from storage.db import WriterQueue


def wait_for(condition, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_an_urgent_writer_goes_before_ordinary_ones_already_waiting() -> None:
    queue, order = WriterQueue(), []
    waiting = threading.Semaphore(0)

    def write(name: str, urgent: bool) -> None:
        waiting.release()
        with queue.hold(urgent):
            order.append(name)

    with queue.hold():
        ordinary = [threading.Thread(target=write, args=(f"o{i}", False)) for i in range(10)]
        for thread in ordinary:
            thread.start()
        for _ in ordinary:
            waiting.acquire()
        time.sleep(0.05)  # the ordinary writers are blocked in hold()
        urgent = threading.Thread(target=write, args=("urgent", True))
        urgent.start()
        wait_for(lambda: queue._urgent_waiting == 1)
    for thread in [*ordinary, urgent]:
        thread.join(5)
    assert order[0] == "urgent" and sorted(order[1:]) == sorted(f"o{i}" for i in range(10))


def test_one_writer_at_a_time_and_reentrant() -> None:
    queue, inside, most = WriterQueue(), [0], [0]
    lock = threading.Lock()

    def write() -> None:
        for _ in range(50):
            with queue.hold(), queue.hold():  # a nested scope on the same thread
                with lock:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.0001)
                with lock:
                    inside[0] -= 1

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert most[0] == 1
