"""Test doubles for the link tests: a device on a real pty, a collecting listener.

No pyserial is mocked: the device owns the master side of ``os.openpty()`` and
the link opens the slave's path (or a symlink to it) like any serial port.
"""

from __future__ import annotations

import os
import select
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from firmware_bridge.codec import (
    Command,
    Decoder,
    encode_ack,
    encode_info,
    encode_nack,
    encode_samples,
)
from firmware_bridge.listener import Listener
from firmware_bridge.messages import DeviceInfo, LinkEvent, LinkState, SampleBlock
from firmware_bridge.protocol import MsgType

INFO = DeviceInfo(serial="TEST-0001", firmware=(1, 2, 3), cups=4, rate_hz=100)

#: A policy decides the device's answer to the n-th (1-based) arrival of a
#: command's seq: "ack", "nack:<reason>" or None (stay silent).
Policy = Callable[[Command, int], str | None]


def always_ack(cmd: Command, attempt: int) -> str | None:
    return "ack"


def wait_until(pred: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``pred`` until true or ``timeout`` s pass (a condition, not luck)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.005)
    return pred()


class DeviceFrames:
    """Builds device frames with a running seq and device clock."""

    def __init__(self) -> None:
        self.seq = 0
        self.t_us = 0

    def samples(self, n: int, cups: int = 4, rate_hz: int = 100) -> tuple[bytes, np.ndarray]:
        """``n`` SAMPLE frames continuing the device clock and seq; returns the
        bytes and the suction sent (n x cups, kPa)."""
        period = 1_000_000 // rate_hz
        t = self.t_us + period * np.arange(1, n + 1, dtype=np.int64)
        self.t_us = int(t[-1])
        suction = (20.0 + 0.01 * np.arange(n * cups).reshape(n, cups) % 5).astype(np.float32)
        status = np.full((n, cups), 8, np.uint8)
        data, self.seq = encode_samples(t, suction, status, self.seq)
        return data, suction

    def _next(self) -> tuple[int, int]:
        seq, self.seq = self.seq, (self.seq + 1) % 65536
        self.t_us += 1000
        return seq, self.t_us


class PtyDevice(DeviceFrames):
    """A fake cupmon device on the master side of a real pseudo-terminal."""

    def __init__(self, policy: Policy | None = always_ack, info: DeviceInfo = INFO) -> None:
        super().__init__()
        self.master, self._slave = os.openpty()
        # Keeping one slave fd open means the master never sees EIO while the
        # link is not (yet) attached; the link opens the slave by path.
        self.path = os.ttyname(self._slave)
        self.policy = policy
        self.info = info
        self.commands: list[Command] = []  # what arrived, in order
        self._seen: dict[int, int] = {}
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._decoder = Decoder("binary")
        self._thread = threading.Thread(target=self._serve, name="pty-device", daemon=True)
        self._thread.start()

    # -- device -> host ----------------------------------------------------
    def write(self, data: bytes) -> None:
        with self._lock:
            view = memoryview(data)
            while view:
                n = os.write(self.master, view)
                view = view[n:]

    # -- host -> device ----------------------------------------------------
    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                ready, _, _ = select.select([self.master], [], [], 0.02)
                if not ready:
                    continue
                data = os.read(self.master, 4096)
            except OSError:
                if self._closed.is_set():
                    return
                time.sleep(0.01)  # no slave open right now; the link reopens soon
                continue
            for msg in self._decoder.feed(data).messages:
                if isinstance(msg, Command):
                    self._answer(msg)

    def _answer(self, cmd: Command) -> None:
        with self._lock:
            self.commands.append(cmd)
            self._seen[cmd.seq] = self._seen.get(cmd.seq, 0) + 1
            attempt = self._seen[cmd.seq]
        if self.policy is None:
            return
        verdict = self.policy(cmd, attempt)
        if verdict is None:
            return
        if verdict == "ack":
            seq, t = self._next()
            out = encode_ack(cmd.seq, int(cmd.type), seq, t)
            if cmd.type == MsgType.GET_INFO:
                seq, t = self._next()
                out += encode_info(self.info, seq, t)
        else:
            reason = int(verdict.split(":", 1)[1])
            seq, t = self._next()
            out = encode_nack(cmd.seq, int(cmd.type), reason, seq, t)
        try:
            self.write(out)
        except OSError:
            pass  # closed under us: a real device that was unplugged mid-answer

    def received(self, cmd_type: MsgType) -> list[Command]:
        with self._lock:
            return [c for c in self.commands if c.type == cmd_type]

    def close(self) -> None:
        """Unplug: close both our fds; the link's reads fail from now on."""
        self._closed.set()
        self._thread.join(2.0)
        for fd in (self.master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


def repoint(link_path: str, target: str) -> None:
    """Make the symlink ``link_path`` point at ``target`` atomically."""
    tmp = link_path + ".new"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link_path)


class Collect(Listener):
    """Keeps everything it is given; waits on a condition, never sleeps for luck."""

    idle_interval = None

    def __init__(self) -> None:
        self.blocks: list[SampleBlock] = []
        self.messages: list[Any] = []
        self.stopped = False
        self._cond = threading.Condition()

    def on_block(self, block: SampleBlock) -> None:
        with self._cond:
            self.blocks.append(block)
            self._cond.notify_all()

    def on_message(self, msg: Any) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def wait(self, pred: Callable[[Collect], bool], timeout: float = 5.0) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: pred(self), timeout)

    # -- views -------------------------------------------------------------
    @property
    def n_samples(self) -> int:
        with self._cond:
            return sum(b.n for b in self.blocks)

    def states(self) -> list[LinkState]:
        with self._cond:
            return [m.state for m in self.messages if isinstance(m, LinkEvent)]

    def events(self, state: LinkState) -> list[LinkEvent]:
        with self._cond:
            return [m for m in self.messages if isinstance(m, LinkEvent) and m.state is state]

    def suction(self) -> np.ndarray:
        with self._cond:
            return np.concatenate([b.suction for b in self.blocks])

    def times(self) -> np.ndarray:
        with self._cond:
            return np.concatenate([b.t for b in self.blocks])
