"""Replay sources: a stored session, or a raw capture file, as a live-looking
:class:`~firmware_bridge.source.Source`.

Both publish through a ``Notifier(backpressure=True)``: when replaying as fast
as possible the producer waits for slow listeners instead of dropping blocks,
so every listener sees every sample. Pacing follows the *device* clock: a block
is published when ``(its last sample time - the first) / speed`` seconds of
wall time have passed (device resets and gaps count as they were recorded).

* :class:`SessionReplaySource` reads the blocks of a stored session exactly as
  they were recorded (same boundaries, times, values, gaps).
* :class:`CaptureReplaySource` feeds a raw byte capture (``cupsim --out``, a
  serial dump) through the real :class:`~firmware_bridge.codec.Decoder` in
  serial-sized chunks, publishing messages then blocks per chunk as the serial
  link does, so the blocks equal those of a live reading of the same bytes.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import numpy as np

from firmware_bridge.errors import LinkError
from firmware_bridge.listener import Notifier
from firmware_bridge.messages import DeviceInfo, LinkState, LinkStats, SampleBlock
from firmware_bridge.source import Source

from .store import Store, StoreError

log = logging.getLogger(__name__)


class ReplayError(LinkError):
    """A replay cannot start (missing file, bad spec); ``str()`` is one line."""


class _Pacer:
    """Waits until a device time is due: wall elapsed = device elapsed / speed.

    Device time is accumulated from forward steps only, so a device reset
    (time going back) continues the schedule instead of stalling or racing.
    :meth:`set_speed` may be called from another thread while it waits: what
    is already due stays due, the rest follows the new speed.
    """

    #: Longest single wait (s), so a speed change takes effect promptly.
    NAP_S = 0.05

    def __init__(self, speed: float | None) -> None:
        self.speed = speed
        self.wall0: float | None = None
        self.elapsed = 0.0      # device seconds since the first block
        self.last: float | None = None
        self._lock = threading.Lock()

    def set_speed(self, speed: float | None) -> None:
        """Change the speed (None: as fast as possible) from now on."""
        with self._lock:
            now = time.monotonic()
            if self.wall0 is None or self.speed is None:
                pos = self.elapsed          # as fast as possible: it is where it published
            else:
                pos = min(self.elapsed, (now - self.wall0) * self.speed)
            self.speed = speed
            if self.wall0 is not None and speed is not None:
                self.wall0 = now - pos / speed

    def wait(self, t_last: float, stop: threading.Event) -> bool:
        """Block until device time ``t_last`` (s) is due. False if stopped."""
        with self._lock:
            if self.last is not None and t_last > self.last:
                self.elapsed += t_last - self.last
            self.last = t_last
            if self.wall0 is None:
                self.wall0 = time.monotonic()
        while True:
            with self._lock:
                if self.speed is None:
                    break
                due = self.wall0 + self.elapsed / self.speed
            now = time.monotonic()
            if now >= due:
                break
            if stop.wait(min(due - now, self.NAP_S)):
                return False
        return not stop.is_set()


def _check_speed(speed: float | None) -> float | None:
    if speed is None:
        return None
    speed = float(speed)
    if not speed > 0:
        raise ValueError(f"replay speed must be positive, not {speed:g}")
    return speed


class _ReplaySource(Source):
    """The thread, stop/done handling and CLOSED publication of both replays."""

    name = "replay"

    def __init__(self, speed: float | None, notifier: Notifier | None) -> None:
        super().__init__(notifier if notifier is not None else Notifier(backpressure=True))
        self.speed = _check_speed(speed)
        self._stop_evt = threading.Event()
        self.done = threading.Event()
        """Set when the whole replay has been published (or it stopped)."""
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._blocks = 0
        self._samples = 0
        self._lost = 0
        self._pacer = _Pacer(self.speed)

    def set_speed(self, speed: float | None) -> None:
        """Change the replay speed while it runs (None: as fast as possible);
        device time already published stays where it is."""
        speed = _check_speed(speed)
        self.speed = speed
        self._pacer.set_speed(speed)

    def start(self) -> None:
        """Start publishing on a thread (non-blocking). Idempotent."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._guarded, name=f"{self.name}-reader",
                                        daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop publishing, then stop the notifier (listeners flush). Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._stop_evt.set()
        if self._thread is not None:
            self._thread.join(timeout)
        else:
            self.done.set()  # never started: nothing will be published
        self.notifier.stop()

    def wait_done(self, timeout: float | None = None) -> bool:
        """Wait until everything was published and every listener has taken
        it. False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.done.wait(timeout):
            return False
        left = 3600.0 if deadline is None else max(0.0, deadline - time.monotonic())
        return self.notifier.join_idle(left)

    def _guarded(self) -> None:
        end = "replay ended after an error"
        try:
            self._run()
            end = "replay stopped" if self._stop_evt.is_set() else "end of replay"
        except Exception as exc:  # a bad row or file: say so in one line
            log.exception("%s failed", self.name)
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            self._publish_state(LinkState.ERROR, f"{self.describe()}: {msg}")
        finally:
            try:
                self._publish_state(LinkState.CLOSED, f"{end}: {self.describe()}")
            finally:
                self.done.set()

    def _publish(self, block: SampleBlock, pacer: _Pacer | None) -> bool:
        if pacer is None:
            if self._stop_evt.is_set():
                return False
        elif not pacer.wait(float(block.t[-1]), self._stop_evt):
            return False
        if block.host_time == 0.0:
            block = SampleBlock(block.t, block.suction, block.status, time.monotonic(),
                                block.lost_before, block.gap_before)
        self._blocks += 1
        self._samples += block.n
        self._lost += block.lost_before
        self.notifier.publish_block(block)
        return True

    def _run(self) -> None:
        raise NotImplementedError

    def describe(self) -> str:
        return self.name


class SessionReplaySource(_ReplaySource):
    """Replay session ``session_id`` of a store (a :class:`Store` or a path).

    Publishes the session's DeviceInfo and a LinkEvent CONNECTED carrying it,
    then the blocks as recorded, then LinkEvent CLOSED. A band set during the
    recording is published as a :class:`~monitor.pipeline.BandChange` message
    between the samples before and after it (a block holding both is split
    there), so a :class:`~monitor.pipeline.MonitorPipeline` listening checks
    each sample against the band that applied to it live. ``speed`` scales device
    time (2.0 = twice as fast); None = as fast as the listeners take it.
    ``start_t`` (device s) starts the paced replay there instead of at the
    beginning; the ``preroll_s`` seconds before it are published at once
    first (so a display shows the window leading up to ``start_t``, and the
    checker has seen them). Raises :class:`StoreError` (one line) for a bad
    database or unknown id.
    """

    name = "session-replay"

    def __init__(self, store_or_path: Store | str | Path | None, session_id: int,
                 speed: float | None = None, notifier: Notifier | None = None, *,
                 start_t: float | None = None, preroll_s: float = 0.0) -> None:
        super().__init__(speed, notifier)
        #: Device time (s) the paced replay starts at (None: the beginning).
        self.start_t = None if start_t is None else float(start_t)
        #: Seconds before ``start_t`` published at once, unpaced (fills a trace window).
        self.preroll_s = max(0.0, float(preroll_s))
        if isinstance(store_or_path, Store):
            self.path = store_or_path.path
            self.session = store_or_path.get_session(session_id)
            info = store_or_path.device_info(session_id)
            bands = store_or_path.band_changes(session_id)
        else:
            with Store(store_or_path, create=False) as store:
                self.path = store.path
                self.session = store.get_session(session_id)
                info = store.device_info(session_id)
                bands = store.band_changes(session_id)
        self.session_id = int(session_id)
        self._info = info
        #: The bands set during the recording (``Store.band_changes``), re-applied
        #: in stream order as :class:`~monitor.pipeline.BandChange` messages.
        self.band_changes = bands

    def describe(self) -> str:
        return f"session {self.session_id} of {self.path}"

    def _run(self) -> None:
        info: DeviceInfo | None = self._info
        if info is not None and (info.serial or info.cups):
            self.notifier.publish_message(info)
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(self.session["started_wall"]))
        what = (f"{info.serial or 'device'} firmware {info.firmware_str}, {info.cups} cups at "
                f"{info.rate_hz} Hz, recorded {when}" if info is not None
                else f"recorded {when}")
        self._publish_state(LinkState.CONNECTED, f"replaying {self.describe()} ({what})", info)
        pacer = self._pacer
        first = None if self.start_t is None else self.start_t - self.preroll_s
        # Bands set while recording, in the order set: each is published just
        # after the last sample checked with the previous band (a block is
        # split there), so the checker sees them where the live one did. Those
        # before a seek's pre-roll are published before its first block.
        from .pipeline import BandChange

        bands = [BandChange(None if b["t"] is None else float(b["t"]), int(b["cup"]),
                            float(b["low_kpa"]), float(b["high_kpa"]), b.get("wall"))
                 for b in self.band_changes]
        i_band = 0
        # The Store was opened on the caller's thread; SQLite connections stay
        # on their thread, so the reader opens its own.
        with Store(self.path, create=False) as store:
            for block in store.iter_blocks(self.session_id, t_from=first):
                if first is not None and block.t[0] < first:
                    k = int(np.searchsorted(block.t, first))
                    if k >= block.n:
                        continue
                    # Skipped on purpose, not lost: no gap is marked.
                    block = SampleBlock(block.t[k:], block.suction[k:], block.status[k:],
                                        block.host_time)
                while True:
                    while i_band < len(bands) and (bands[i_band].t is None
                                                   or bands[i_band].t < block.t[0]):
                        self.notifier.publish_message(bands[i_band])
                        i_band += 1
                    part = block
                    if i_band < len(bands) and bands[i_band].t < block.t[-1]:
                        # Split after the last sample at or before the change.
                        k = int(np.searchsorted(block.t, bands[i_band].t, side="right"))
                        part = SampleBlock(block.t[:k], block.suction[:k], block.status[:k],
                                           block.host_time, block.lost_before,
                                           block.gap_before)
                        block = SampleBlock(block.t[k:], block.suction[k:], block.status[k:],
                                            block.host_time)
                    if self.start_t is not None and part.t[-1] < self.start_t:
                        ok = self._publish(part, None)   # pre-roll: at once
                    else:
                        ok = self._publish(part, pacer)
                    if not ok:
                        return
                    if part is block:
                        break
            for band in bands[i_band:]:   # set after the last stored sample
                self.notifier.publish_message(band)

    def stats(self) -> LinkStats:
        s = super().stats()
        s.samples = self._samples
        s.frames_ok = self._samples
        s.frames_lost = self._lost
        return s


class CaptureReplaySource(_ReplaySource):
    """Replay a raw capture file through the real decoder.

    ``chunk_size`` bytes are fed per step (like serial reads). Corrupt content
    shows up in :meth:`stats` (CRC errors, discarded bytes), never as an
    exception. A missing or unreadable file raises :class:`ReplayError`.
    """

    name = "capture-replay"

    def __init__(self, path: str | Path, speed: float | None = None, chunk_size: int = 4096,
                 notifier: Notifier | None = None, mode: str = "auto") -> None:
        super().__init__(speed, notifier)
        self.path = Path(path)
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1 byte")
        self.chunk_size = int(chunk_size)
        if not self.path.exists():
            raise ReplayError(f"no capture file {self.path} (give a session id or the path of "
                              "a file written by cupsim --out)")
        if self.path.is_dir():
            raise ReplayError(f"{self.path} is a directory, not a capture file")
        try:
            with open(self.path, "rb"):
                pass
        except OSError as exc:
            raise ReplayError(f"cannot read capture file {self.path}: "
                              f"{exc.strerror or exc}") from None
        from firmware_bridge.codec import Decoder

        self._decoder = Decoder(mode)
        self._stats_lock = threading.Lock()
        self._announced = False
        self._tail_discarded = 0  # undecodable bytes left at the end of the file

    def describe(self) -> str:
        return str(self.path)

    def stats(self) -> LinkStats:
        with self._stats_lock:
            s = self._decoder.stats.copy()
            s.bytes_discarded += self._tail_discarded
        s.listener_overruns = self.notifier.overruns()
        return s

    def _announce(self) -> None:
        self._announced = True
        info = self._info
        dec = self._decoder
        if info is not None:
            what = (f"{info.serial or 'device'} firmware {info.firmware_str}, "
                    f"{info.cups} cups at {info.rate_hz} Hz")
        elif dec.mode == "text":
            what = "text format"
        else:
            what = "no INFO in the capture"
        self._publish_state(LinkState.CONNECTED, f"replaying {self.path} ({what})", info)

    def _run(self) -> None:
        from firmware_bridge.codec import Command

        dec = self._decoder
        pacer = self._pacer
        host0 = time.monotonic()
        t_first: float | None = None
        t_last = 0.0
        with open(self.path, "rb") as fh:
            while not self._stop_evt.is_set():
                chunk = fh.read(self.chunk_size)
                if not chunk:
                    with self._stats_lock:  # a partial frame or line at the end
                        self._tail_discarded = dec.buffered
                    break
                # A capture has no arrival times. The decoder uses the host
                # clock only to judge silences and to stamp host-timed text;
                # a clock that follows the device time of the data so far is
                # what a live host would have seen, whatever the replay speed.
                if dec.text_host_timed:
                    host = time.monotonic()
                else:
                    host = host0 + (0.0 if t_first is None else t_last - t_first)
                with self._stats_lock:
                    res = dec.feed(chunk, host)
                for item in res.ordered():
                    if isinstance(item, SampleBlock):
                        if not self._announced:
                            self._announce()
                        if t_first is None:
                            t_first = float(item.t[0])
                        t_last = max(t_last, float(item.t[-1]))
                        if not self._publish(item, pacer):
                            return
                        continue
                    if isinstance(item, Command):
                        continue  # host->device frames in a two-way dump
                    self.notifier.publish_message(item)
                    if isinstance(item, DeviceInfo):
                        self._info = item
                        if not self._announced:
                            self._announce()
        if not self._announced:
            self._announce()  # an empty or unreadable capture still connects, then closes


def open_replay(spec: str, db: Path | str | None = None, speed: float | None = None,
                notifier: Notifier | None = None, chunk_size: int = 4096) -> Source:
    """The replay source for ``spec``: a session id (all digits) in ``db``
    (default database), otherwise the path of a capture file. Raises
    StoreError/ReplayError with one line."""
    spec = spec.strip()
    if not spec:
        raise ReplayError("empty replay spec: give a session id or a capture file path")
    if spec.isdigit():
        db_path = Path(db) if db is not None else None
        try:
            return SessionReplaySource(db_path, int(spec), speed=speed, notifier=notifier)
        except StoreError as exc:
            if Path(spec).is_file():
                raise ReplayError(f"{exc}; to replay the file named {spec}, "
                                  f"give it as ./{spec}") from None
            raise
    return CaptureReplaySource(spec, speed=speed, chunk_size=chunk_size, notifier=notifier)


__all__ = ["CaptureReplaySource", "ReplayError", "SessionReplaySource", "open_replay"]
