"""Notifier: per-listener threads, slow listeners do not stall others."""

import threading
import time

import numpy as np

from firmware_bridge.listener import Listener, Notifier
from firmware_bridge.messages import SampleBlock


def _block(i: int) -> SampleBlock:
    return SampleBlock(np.array([i * 0.001]), np.zeros((1, 2), np.float32),
                       np.zeros((1, 2), np.uint8), host_time=time.monotonic())


class Collect(Listener):
    def __init__(self, delay_event: threading.Event | None = None):
        self.blocks, self.msgs, self.stopped, self.gate = [], [], False, delay_event

    def on_block(self, block):
        if self.gate is not None:
            self.gate.wait(10)
        self.blocks.append(block)

    def on_message(self, msg):
        self.msgs.append(msg)

    def stop(self):
        self.stopped = True


def test_fast_listener_not_stalled_by_slow_one_and_overrun_is_counted():
    gate = threading.Event()
    fast, slow = Collect(), Collect(gate)
    n = Notifier([fast, slow], queue_blocks=10)
    n.publish_message("hello")
    deadline = time.monotonic() + 10
    for i in range(100):
        n.publish_block(_block(i))
        while len(fast.blocks) < i + 1 and time.monotonic() < deadline:
            time.sleep(0.001)
    assert len(fast.blocks) == 100          # never waited for the slow one
    assert sum(n.overruns().values()) == 100 - 10 - 1  # slow: 10 queued, 1 in hand
    gate.set()
    n.stop()
    assert slow.stopped and fast.stopped
    assert "hello" in slow.msgs             # messages are never dropped
    assert len(slow.blocks) < 100
    assert any(b.gap_before for b in slow.blocks)  # the loss is visible as a gap


def test_backpressure_loses_nothing():
    gate = threading.Event()
    slow = Collect(gate)
    n = Notifier([slow], queue_blocks=5, backpressure=True)
    t = threading.Thread(target=lambda: [n.publish_block(_block(i)) for i in range(50)])
    t.start()
    time.sleep(0.05)
    assert t.is_alive()                     # producer is held back, not dropping
    gate.set()
    t.join(10)
    assert n.join_idle(10)
    assert [round(b.t[0] * 1000) for b in slow.blocks] == list(range(50))
    n.stop()


def test_listener_exception_does_not_kill_dispatch():
    class Bad(Listener):
        def __init__(self):
            self.count = 0

        def on_block(self, block):
            self.count += 1
            raise RuntimeError("boom")

    bad = Bad()
    n = Notifier([bad])
    for i in range(3):
        n.publish_block(_block(i))
    assert n.join_idle(5)
    assert bad.count == 3
    n.stop()


def test_idle_ticks_arrive_without_data():
    class Idle(Listener):
        idle_interval = 0.01

        def __init__(self):
            self.ticks = []

        def on_idle(self, now):
            self.ticks.append(now)

    lst = Idle()
    n = Notifier([lst])
    deadline = time.monotonic() + 5
    while len(lst.ticks) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    n.stop()
    assert len(lst.ticks) >= 3


def _wait_for(cond, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def _cups_block(i: int, n: int = 5, cups: int = 2) -> SampleBlock:
    t = (i * n + np.arange(n)) * 0.001
    return SampleBlock(t, np.zeros((n, cups), np.float32), np.zeros((n, cups), np.uint8),
                       host_time=time.monotonic())


def test_backpressure_queue_is_bounded_by_values_while_a_listener_lags():
    """A replay that could run far ahead waits once its listener has ``queue_values``
    samples x cups waiting: memory does not depend on how far ahead it could run."""
    gate = threading.Event()
    slow = Collect(gate)
    n = Notifier([slow], backpressure=True, queue_values=100)   # 10 blocks of 5 x 2
    published = []

    def produce():
        for i in range(50):
            n.publish_block(_cups_block(i))
            published.append(i)

    producer = threading.Thread(target=produce)
    producer.start()
    try:
        # Either the producer ran to the end (no bound) or it is waiting for room.
        assert _wait_for(lambda: not producer.is_alive() or n.queue_stats()["Collect"]["waits"])
        q = n.queue_stats()["Collect"]
        assert q["values"] <= 100 and q["blocks"] <= 10
        assert producer.is_alive() and len(published) <= 1 + 10   # 1 in hand, 10 queued
    finally:
        gate.set()
    producer.join(10)
    assert n.join_idle(10)
    assert [round(b.t[0] * 1000) for b in slow.blocks] == [5 * i for i in range(50)]
    assert n.queue_stats()["Collect"]["peak_values"] <= 100
    assert n.overruns() == {"Collect": 0}
    n.stop()


def test_backpressure_default_bound_is_a_few_mb_not_queue_blocks():
    from firmware_bridge.listener import BACKPRESSURE_QUEUE_VALUES

    gate = threading.Event()
    slow = Collect(gate)
    n = Notifier([slow], backpressure=True)
    big = 66 * 16   # a 4 KiB read of 16-cup frames
    n.publish_block(_cups_block(0, 66, 16))
    # The listener holds the first block (waiting on the gate): the queue only grows now.
    assert _wait_for(lambda: n.queue_stats()["Collect"]["blocks"] == 0)
    producer = threading.Thread(
        target=lambda: [n.publish_block(_cups_block(i, 66, 16)) for i in range(1, 1000)])
    producer.start()
    try:
        assert _wait_for(lambda: not producer.is_alive() or n.queue_stats()["Collect"]["waits"])
        q = n.queue_stats()["Collect"]
        assert producer.is_alive()
        assert BACKPRESSURE_QUEUE_VALUES - big < q["values"] <= BACKPRESSURE_QUEUE_VALUES
        assert q["blocks"] < 4096
    finally:
        gate.set()
    producer.join(30)
    assert n.join_idle(30)
    assert len(slow.blocks) == 1000
    n.stop()


def test_backpressure_block_larger_than_the_bound_goes_alone():
    slow = Collect()
    n = Notifier([slow], backpressure=True, queue_values=10)
    for i in range(5):
        n.publish_block(_cups_block(i, 20, 2))   # 40 values each
    assert n.join_idle(10)
    assert len(slow.blocks) == 5
    assert n.queue_stats()["Collect"]["peak_values"] == 40
    n.stop()


def test_live_value_bound_drops_oldest_blocks_and_never_waits():
    gate = threading.Event()
    slow = Collect(gate)
    n = Notifier([slow], queue_values=100)
    try:
        for i in range(50):                       # the caller never waits
            n.publish_block(_cups_block(i))
            assert n.queue_stats()["Collect"]["values"] <= 100
        q = n.queue_stats()["Collect"]
        assert q["waits"] == 0 and q["peak_values"] <= 100
        # One block in the listener's hands, at most 10 queued: the rest dropped and counted.
        assert 50 - 1 - 10 <= n.overruns()["Collect"] <= 50 - 10
    finally:
        gate.set()
    assert n.join_idle(10)
    assert any(b.gap_before for b in slow.blocks)
    assert len(slow.blocks) + n.overruns()["Collect"] == 50
    n.stop()
