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
