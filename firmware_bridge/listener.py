"""Listeners and the Notifier that feeds them (the python-can shape).

A source (serial link, in-process simulator, replay) calls
:meth:`Notifier.publish_block` / :meth:`Notifier.publish_message` from its own
thread. Each listener runs on its own dispatch thread behind a bounded queue,
so a slow listener (disk, drawing) never stalls acquisition or the other
listeners. When a listener's queue is full the oldest item is dropped and
counted in ``overruns`` (and reported as a gap to that listener), never silently.

With ``backpressure=True`` (replay, files) nothing is dropped: the publisher
waits for room instead. Its queues are then bounded by values (samples x cups,
``queue_values``) as well as by blocks, so what a listener has waiting is a
small fixed amount (~1.5 MB of blocks) however far ahead an as-fast-as-possible
source could run.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

from .messages import SampleBlock

log = logging.getLogger(__name__)


class Listener:
    """Base class for consumers of a sample stream. Override what you need.

    All methods are called on the listener's own dispatch thread, one at a time.
    """

    #: Seconds between :meth:`on_idle` calls while no data arrives (None: never).
    idle_interval: float | None = 0.05

    def on_block(self, block: SampleBlock) -> None:
        """A block of samples arrived."""

    def on_message(self, msg: Any) -> None:
        """A non-sample message: DeviceInfo, DeviceEvent, LinkEvent, Ack, Nack."""

    def on_idle(self, host_time: float) -> None:
        """Called every ``idle_interval`` s with ``time.monotonic()``, data or not,
        so that time-based conditions (signal loss) are noticed without data."""

    def stop(self) -> None:
        """The source has stopped; flush and release resources."""


#: Default bound of a backpressure queue in values (samples x cups): 16384
#: samples of 16 cups, ~1.4 MB of blocks.
BACKPRESSURE_QUEUE_VALUES = 1 << 18


def _values(kind: str, item: Any) -> int:
    return item.n * max(1, item.cups) if kind == "block" else 0


class _Dispatch(threading.Thread):
    def __init__(self, listener: Listener, maxlen: int, backpressure: bool,
                 max_values: int | None = None) -> None:
        super().__init__(name=f"listener-{type(listener).__name__}", daemon=True)
        self.listener = listener
        self.queue: collections.deque = collections.deque()
        self.maxlen = maxlen
        self.backpressure = backpressure
        self.max_values = max_values   # None: bounded by blocks only
        self.values = 0                # samples x cups queued
        self.peak_values = 0
        self.waits = 0                 # puts that had to wait for room (backpressure)
        self.cond = threading.Condition()
        self.closing = False
        self.overruns = 0
        self.errors = 0
        self._dropped_pending = 0
        self.busy = False

    def _full(self, values: int) -> bool:
        if len(self.queue) >= self.maxlen:
            return True
        # A block bigger than the whole bound still goes in, alone.
        return (self.max_values is not None and bool(self.queue)
                and self.values + values > self.max_values)

    def put(self, kind: str, item: Any) -> None:
        values = _values(kind, item)
        with self.cond:
            if self.backpressure:
                # Replay as fast as possible: the producer waits, nothing is lost.
                if self._full(values) and not self.closing:
                    self.waits += 1
                    while self._full(values) and not self.closing:
                        self.cond.wait(0.1)
            else:
                # Drop the oldest blocks (never a message) and remember the gap.
                while self._full(values) and self._drop_oldest_block():
                    pass
            self.queue.append((kind, item))
            self.values += values
            self.peak_values = max(self.peak_values, self.values)
            self.cond.notify()

    def _drop_oldest_block(self) -> bool:
        for i, (k, old) in enumerate(self.queue):
            if k == "block":
                del self.queue[i]
                self.values -= _values(k, old)
                self.overruns += 1
                self._dropped_pending += 1
                return True
        return False

    def close(self) -> None:
        with self.cond:
            self.closing = True
            self.cond.notify()

    def run(self) -> None:
        lst = self.listener
        interval = lst.idle_interval
        next_idle = time.monotonic() + (interval or 0.0)
        while True:
            with self.cond:
                while not self.queue and not self.closing:
                    timeout = None if interval is None else max(0.0, next_idle - time.monotonic())
                    if timeout == 0.0:
                        break
                    self.cond.wait(timeout)
                if self.queue:
                    kind, item = self.queue.popleft()
                    self.values -= _values(kind, item)
                    self.busy = True
                    self.cond.notify_all()
                    dropped, self._dropped_pending = self._dropped_pending, 0
                elif self.closing:
                    break
                else:
                    kind, item, dropped = "idle", None, 0
            try:
                if kind == "block":
                    if dropped:
                        item = _mark_gap(item, dropped)
                    lst.on_block(item)
                elif kind == "msg":
                    lst.on_message(item)
                if interval is not None and (kind == "idle" or time.monotonic() >= next_idle):
                    now = time.monotonic()
                    next_idle = now + interval
                    lst.on_idle(now)
            except Exception:  # a listener bug must not kill its thread silently
                self.errors += 1
                log.exception("listener %s failed", type(lst).__name__)
            finally:
                with self.cond:
                    self.busy = False
                    self.cond.notify_all()
        try:
            lst.stop()
        except Exception:
            self.errors += 1
            log.exception("listener %s failed to stop", type(lst).__name__)


def _mark_gap(block: SampleBlock, dropped: int) -> SampleBlock:
    return SampleBlock(block.t, block.suction, block.status, block.host_time,
                       block.lost_before, True)


class Notifier:
    """Fans blocks and messages out to listeners, each on its own thread."""

    def join_idle(self, timeout: float = 10.0) -> bool:
        """Wait until every listener has taken everything queued (for tests and
        replay). Returns False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            targets = list(self._dispatch)
        for d in targets:
            with d.cond:
                while d.queue or d.busy:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return False
                    d.cond.wait(min(left, 0.05))
        return True

    def __init__(self, listeners: list[Listener] | None = None, queue_blocks: int = 4096,
                 backpressure: bool = False, queue_values: int | None = None) -> None:
        """``backpressure=True`` makes publishers wait for slow listeners instead of
        dropping blocks: for replay and file sources, never for a live device.

        Each listener's queue holds at most ``queue_blocks`` blocks and, if
        ``queue_values`` is given, at most that many values (samples x cups;
        a single larger block is still taken, alone). With backpressure
        ``queue_values`` defaults to :data:`BACKPRESSURE_QUEUE_VALUES`, so a fast
        source waits while a few MB at most are queued instead of running up
        to ``queue_blocks`` blocks ahead; without it the default is no value
        bound (a live link drops the oldest blocks only past ``queue_blocks``)."""
        self._lock = threading.Lock()
        self._backpressure = backpressure
        self._dispatch: list[_Dispatch] = []
        self._queue_blocks = queue_blocks
        if queue_values is None and backpressure:
            queue_values = BACKPRESSURE_QUEUE_VALUES
        self._queue_values = queue_values
        self._stopped = False
        for lst in listeners or []:
            self.add_listener(lst)

    def add_listener(self, listener: Listener) -> None:
        d = _Dispatch(listener, self._queue_blocks, self._backpressure, self._queue_values)
        with self._lock:
            self._dispatch.append(d)
        d.start()

    def remove_listener(self, listener: Listener, timeout: float = 5.0) -> None:
        with self._lock:
            found = [d for d in self._dispatch if d.listener is listener]
            self._dispatch = [d for d in self._dispatch if d.listener is not listener]
        for d in found:
            d.close()
            d.join(timeout)

    @property
    def backpressure(self) -> bool:
        """True when publishers wait for slow listeners (replays) instead of
        dropping their oldest blocks (live sources)."""
        return self._backpressure

    @property
    def listeners(self) -> list[Listener]:
        with self._lock:
            return [d.listener for d in self._dispatch]

    def overruns(self) -> dict[str, int]:
        """Blocks dropped per listener because it fell behind."""
        with self._lock:
            return {type(d.listener).__name__: d.overruns for d in self._dispatch}

    def queue_stats(self) -> dict[str, dict[str, int]]:
        """Per listener: ``blocks`` and ``values`` (samples x cups) queued now,
        ``peak_values`` queued at once so far, ``waits`` (publishes that
        waited for room: backpressure only) and ``overruns`` (blocks dropped)."""
        with self._lock:
            targets = list(self._dispatch)
        out = {}
        for d in targets:
            with d.cond:
                out[type(d.listener).__name__] = dict(
                    blocks=len(d.queue), values=d.values, peak_values=d.peak_values,
                    waits=d.waits, overruns=d.overruns)
        return out

    def publish_block(self, block: SampleBlock) -> None:
        with self._lock:
            targets = list(self._dispatch)
        for d in targets:
            d.put("block", block)

    def publish_message(self, msg: Any) -> None:
        with self._lock:
            targets = list(self._dispatch)
        for d in targets:
            d.put("msg", msg)

    def stop(self, timeout: float = 10.0) -> None:
        """Deliver what is queued, call every listener's ``stop`` and join."""
        with self._lock:
            targets, self._dispatch = self._dispatch, []
            self._stopped = True
        for d in targets:
            d.close()
        deadline = time.monotonic() + timeout
        me = threading.current_thread()
        for d in targets:
            if d is me:  # stop() called from a listener: it finishes after returning
                continue
            d.join(max(0.0, deadline - time.monotonic()))
