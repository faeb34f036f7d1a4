"""Carry a virtual device's bytes over a pseudo-terminal, a TCP socket or into a file.

* :class:`PtyTransport`: a real pseudo-terminal (``os.openpty``); ``.path`` is
  the slave's name, which any serial program can open.
* :class:`TcpTransport`: a server on 127.0.0.1 for ``socket://127.0.0.1:PORT``;
  one client at a time, a later client gets the live stream from "now".
* :func:`write_capture`: the whole byte stream into a file as fast as possible.

The live transports share :class:`Pacer` (device time follows the wall clock
x ``speed``, in chunks of at most 10 ms of device time so latency stays low)
and :class:`_PacedTransport` (one loop: wait for input or the next tick, feed
host bytes to the device, write what it produced). When the far end does not
read, bytes that do not fit are dropped and counted, as a UART would.
"""

from __future__ import annotations

import errno
import fcntl
import math
import os
import selectors
import socket
import struct
import termios
import threading
import time
import tty
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from sim.device import ByteDevice, VirtualDevice

if TYPE_CHECKING:
    from sim.engine import Simulation

#: Largest step of device time produced per write (s): bounds latency and chunk size.
MAX_CHUNK_S = 0.01
#: Wall-clock tick of the live loops (s): output is written at most this late.
TICK_S = 0.005
#: Longest nap of a live loop (s): how soon stop() is noticed at low rates.
MAX_NAP_S = 0.1
#: At the end of a pty run, wait this long (wall s) for the reader to take what is buffered.
PTY_LINGER_S = 1.0
#: ... and consider it taken when the slave's queue stayed empty this long (wall s).
PTY_SETTLE_S = 0.1
#: Device time written per chunk by write_capture (s).
CAPTURE_CHUNK_S = 1.0


class TransportError(Exception):
    """A transport could not be set up; ``str()`` is one line for the user."""


@dataclass(slots=True)
class TransportStats:
    """Byte counters of a live transport."""

    bytes_written: int = 0   #: handed to the OS (pty, socket)
    bytes_dropped: int = 0   #: produced but not delivered (buffer full, no client)
    bytes_received: int = 0  #: host -> device
    clients: int = 0         #: TCP clients accepted so far


class Pacer:
    """Runs a device against the wall clock: device time = start + elapsed x speed.

    ``speed`` > 0; ``duration_s``: device seconds from the device's present
    time after which the run ends (None: it runs until stopped).
    """

    def __init__(self, device: ByteDevice, speed: float = 1.0, duration_s: float | None = None,
                 max_chunk_s: float = MAX_CHUNK_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not speed > 0 or not math.isfinite(speed):
            raise ValueError(f"speed must be a positive number, not {speed}")
        self.device = device
        self.speed = float(speed)
        self.max_chunk_s = max_chunk_s
        self.clock = clock
        self.end_s = math.inf if duration_s is None else device.t_s + float(duration_s)
        self._t0_dev = device.t_s
        self._t0_wall = clock()
        # Device time asked for so far: samples are discrete, so the device's
        # own clock may stay a little behind what was asked.
        self.cursor_s = device.t_s

    def restart(self) -> None:
        """Tie the device's present time to the wall clock's present time."""
        self._t0_dev = self.cursor_s = max(self.cursor_s, self.device.t_s)
        self._t0_wall = self.clock()

    @property
    def finished(self) -> bool:
        return self.cursor_s >= self.end_s

    def target_s(self) -> float:
        """Device time that is due now (s)."""
        due = self._t0_dev + (self.clock() - self._t0_wall) * self.speed
        return min(due, self.end_s)

    def wait_s(self) -> float:
        """Wall seconds until the next sample is due (0 if one is due already)."""
        if self.finished:
            return math.inf
        # The sample at the device's t_s comes out once the target passes it.
        next_t = max(self.cursor_s, self.device.t_s)
        due_wall = self._t0_wall + (next_t - self._t0_dev) / self.speed
        return max(0.0, due_wall - self.clock())

    def chunks(self) -> Iterator[bytes]:
        """Produce what is due, at most ``max_chunk_s`` of device time per chunk.
        Always asks the device once, so replies to commands go out at once."""
        target = self.target_s()
        while True:
            step = max(self.cursor_s, min(target, self.cursor_s + self.max_chunk_s))
            data = self.device.produce_until(step)
            self.cursor_s = step
            if data:
                yield data
            if step >= target:
                return


class _PacedTransport:
    """The loop shared by the live transports. Subclasses register their
    readable objects (with a handler as ``data``) and implement ``_send``."""

    def __init__(self, device: ByteDevice, speed: float = 1.0,
                 duration_s: float | None = None) -> None:
        self.device = device
        self.pacer = Pacer(device, speed, duration_s)
        self.stats = TransportStats()
        self._sel = selectors.DefaultSelector()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self.error: BaseException | None = None

    # -- control ----------------------------------------------------------------
    def run(self) -> None:
        """Stream until the duration is reached or :meth:`stop`; then close."""
        try:
            self.pacer.restart()
            while not self._stop.is_set():
                nap = min(MAX_NAP_S, max(TICK_S, self.pacer.wait_s()))
                for key, _ in self._sel.select(nap):
                    key.data()
                    if self._closed:
                        return
                for chunk in self.pacer.chunks():
                    self._send(chunk)
                if self.pacer.finished:
                    self._linger()
                    break
        finally:
            self.close()

    def start(self) -> None:
        """Run in a background thread (``error`` holds what stopped it, if anything)."""
        def target() -> None:
            try:
                self.run()
            except BaseException as exc:  # reported to the owner, who decides
                self.error = exc

        self._thread = threading.Thread(target=target, name=type(self).__name__, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Ask the loop to end (it notices within MAX_NAP_S)."""
        self._stop.set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the background thread; True when it has ended."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self.join(5.0)
        self.close()

    # -- for subclasses -----------------------------------------------------------
    def _feed(self, data: bytes) -> None:
        self.stats.bytes_received += len(data)
        self.device.receive(data)

    def _send(self, data: bytes) -> None:
        raise NotImplementedError

    def _linger(self) -> None:
        """Give the reader a moment to take the tail before the line goes away."""

    def close(self) -> None:
        self._closed = True
        self._sel.close()


class PtyTransport(_PacedTransport):
    """The device on a pseudo-terminal. ``path`` is the slave (``/dev/pts/N``).

    The slave stays open here too, so a program may open and close it any
    number of times; while nobody reads, the pty's buffer fills and the
    overflow is dropped and counted (``stats.bytes_dropped``).
    """

    def __init__(self, device: ByteDevice, speed: float = 1.0,
                 duration_s: float | None = None) -> None:
        super().__init__(device, speed, duration_s)
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo, no line discipline: bytes pass as they are
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._sel.register(self._master, selectors.EVENT_READ, self._on_readable)

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except BlockingIOError:
            return
        except OSError as exc:
            if exc.errno == errno.EIO:  # no reader on the slave side (cannot happen while we hold it)
                return
            raise
        if data:
            self._feed(data)

    def _send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                n = os.write(self._master, view)
            except BlockingIOError:
                break  # buffer full: nobody is reading
            self.stats.bytes_written += n
            view = view[n:]
        self.stats.bytes_dropped += len(view)

    def _queued(self) -> int:
        """Bytes written that the reader has not taken yet."""
        buf = fcntl.ioctl(self._slave, termios.FIONREAD, b"\0\0\0\0")
        return struct.unpack("i", buf)[0]

    def _linger(self) -> None:
        # Bytes written to the master reach the slave's queue a little later
        # (the tty layer moves them on a work queue, late on a busy machine),
        # so the queue must stay empty for PTY_SETTLE_S before we hang up. A
        # queue that does not shrink for as long has no reader: no use waiting.
        now = time.monotonic()
        deadline = now + PTY_LINGER_S
        empty_since = progress_at = now
        last = None
        while not self._stop.is_set() and now < deadline:
            self._stop.wait(TICK_S)
            try:
                queued = self._queued()
            except OSError:
                return
            now = time.monotonic()
            if queued:
                empty_since = now
            elif now - empty_since >= PTY_SETTLE_S:
                return
            if last is None or queued < last:
                progress_at = now
            elif now - progress_at >= 2 * PTY_SETTLE_S:
                return
            last = queued

    def close(self) -> None:
        if self._closed:
            return
        super().close()
        for fd in (self._master, self._slave):
            try:
                os.close(fd)
            except OSError:
                pass


class TcpTransport(_PacedTransport):
    """The device as a TCP server on ``host``:``port`` (0: a free port; see ``.port``).

    One client at a time: another client is closed at once. Without a client
    the device runs on and its output is dropped, so a client connecting later
    hears the stream from "now". Raises :class:`TransportError` if the port is taken.
    """

    def __init__(self, device: ByteDevice, port: int = 0, speed: float = 1.0,
                 duration_s: float | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(device, speed, duration_s)
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        # REUSEADDR skips TIME_WAIT leftovers but still refuses a live listener.
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            srv.bind((host, port))
        except OSError as exc:
            srv.close()
            if exc.errno == errno.EADDRINUSE:
                raise TransportError(f"TCP port {port} on {host} is already in use: "
                                     "choose another (--tcp 0 picks a free one)") from None
            raise TransportError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
        srv.listen(1)
        srv.setblocking(False)
        self._server = srv
        self.host = host
        self.port: int = srv.getsockname()[1]
        self._client: socket.socket | None = None
        self._sel.register(srv, selectors.EVENT_READ, self._on_accept)

    @property
    def url(self) -> str:
        """The pyserial URL of this server."""
        return f"socket://{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._client is not None

    def _on_accept(self) -> None:
        try:
            conn, _ = self._server.accept()
        except BlockingIOError:
            return
        if self._client is not None:
            conn.close()  # one serial line, one program
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._client = conn
        self.stats.clients += 1
        self._sel.register(conn, selectors.EVENT_READ, self._on_client)

    def _drop_client(self) -> None:
        conn, self._client = self._client, None
        if conn is not None:
            try:
                self._sel.unregister(conn)
            except (KeyError, ValueError):
                pass
            conn.close()

    def _on_client(self) -> None:
        conn = self._client
        if conn is None:
            return
        try:
            data = conn.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        self._feed(data)

    def _send(self, data: bytes) -> None:
        conn = self._client
        sent = 0
        if conn is not None:
            try:
                sent = conn.send(data)
            except BlockingIOError:
                pass  # the client does not read fast enough: drop, as a UART would
            except OSError:
                self._drop_client()
        self.stats.bytes_written += sent
        self.stats.bytes_dropped += len(data) - sent

    def close(self) -> None:
        if self._closed:
            return
        self._drop_client()
        super().close()
        self._server.close()


@dataclass(frozen=True, slots=True)
class CaptureSummary:
    """What :func:`write_capture` wrote."""

    frames: int       #: frames (binary) or lines (text)
    bytes: int
    sim_s: float      #: device seconds covered
    wall_s: float     #: wall-clock seconds it took

    @property
    def realtime_factor(self) -> float:
        return self.sim_s / self.wall_s if self.wall_s > 0 else math.inf

    def line(self) -> str:
        """One-line summary for the terminal."""
        return (f"{self.frames} frames, {self.bytes} bytes, {self.sim_s:.3f} s simulated "
                f"in {self.wall_s:.2f} s wall ({self.realtime_factor:.1f}x real time)")


def write_capture(source: Simulation | ByteDevice, path: str | os.PathLike | BinaryIO,
                  fmt: str = "binary",
                  *, duration_s: float | None = None, chunk_s: float = CAPTURE_CHUNK_S,
                  seed: int = 0, stop: threading.Event | None = None) -> CaptureSummary:
    """Write the device's whole byte stream to ``path`` (a file name or an open
    binary file, which is closed at the end) as fast as possible.

    source: a Simulation (wrapped in a :class:`VirtualDevice` with ``fmt`` and
        ``seed``) or a ready device. duration_s: device seconds (default the
        simulation's own duration; one of them must be finite). stop: set it
        to end early (the file then holds what was written so far).
    """
    device = source if hasattr(source, "produce_until") else VirtualDevice(source, fmt, seed)
    length = duration_s if duration_s is not None else device.duration_s
    if length is None or not math.isfinite(length):
        raise ValueError("write_capture needs a duration: the scenario has no end of its own")
    t0 = time.perf_counter()
    start_s = cursor = device.t_s
    end = start_s + length
    total = 0
    f = path if hasattr(path, "write") else open(Path(path), "wb")
    with f:
        while True:
            cursor = min(end, cursor + chunk_s)
            data = device.produce_until(cursor)
            f.write(data)
            total += len(data)
            if cursor >= end or (stop is not None and stop.is_set()):
                break
    wall = time.perf_counter() - t0
    counters = getattr(device, "counters", None)
    if counters is None:
        frames = 0
    elif getattr(device, "fmt", "binary") == "text":
        frames = counters.samples_sent
    else:
        frames = counters.frames_sent
    return CaptureSummary(frames=frames, bytes=total, sim_s=cursor - start_s, wall_s=wall)


__all__ = ["CaptureSummary", "MAX_CHUNK_S", "Pacer", "PtyTransport", "TcpTransport",
           "TransportError", "TransportStats", "write_capture"]
