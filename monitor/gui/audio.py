"""Alarm sound: IEC 60601-1-8 burst patterns as data, played with QAudioSink.

The patterns are pure data (:data:`PATTERNS`, :func:`pulse_starts`,
:func:`render_pcm`), so they are tested without a sound card. The player
(:class:`AlarmSound`) generates the tones itself (raw 16-bit PCM pushed into a
``QAudioSink``): no sound files, no media framework. Where no audio output
exists (headless CI, a PC without speakers) it says so in :attr:`note`
("no audio device: alarms are visual only") and the GUI shows that line.

Pulse timing after IEC 60601-1-8 (domain.md): high = a burst of 10 pulses
played as two groups of 5 (each group x-x-x--x-x), medium = 3 pulses,
low = 1 pulse; pulse 150 ms (high) / 200 ms (medium, low); gaps between
bursts 3 s (high), 3.5 s (medium), 16 s (low). Each pulse has a fundamental
inside 150-1000 Hz and four harmonics (the standard asks for at least four
within 15 dB of the fundamental), with 15 % rise and fall ramps.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from PySide6 import QtCore

log = logging.getLogger(__name__)

SAMPLE_RATE = 22050  # Hz; 5 harmonics of 880 Hz stay below 4.4 kHz
NO_AUDIO_NOTE = "No audio device: alarms are visual only"
QUEUE_S = 0.25  # audio kept queued in the sink, s


@dataclass(frozen=True, slots=True)
class BurstPattern:
    """One repeating alarm sound.

    pulses: (start, duration) of each pulse from the start of the burst, s.
    period_s: from one burst's start to the next (burst + interburst gap).
    f0_hz: fundamental; harmonics: relative amplitudes of f0, 2f0, 3f0, ...
    """

    priority: str
    pulses: tuple[tuple[float, float], ...]
    period_s: float
    f0_hz: float
    harmonics: tuple[float, ...] = (1.0, 0.6, 0.45, 0.35, 0.3)

    @property
    def burst_s(self) -> float:
        """From the first pulse's start to the last pulse's end, s."""
        s, d = self.pulses[-1]
        return s + d


def _group_of_five(t0: float, td: float, ts: float) -> list[tuple[float, float]]:
    """x-x-x--x-x: the 4th pulse comes one missing pulse later (2*ts + td)."""
    step = td + ts
    starts = [t0, t0 + step, t0 + 2 * step, t0 + 4 * step, t0 + 5 * step]
    return [(s, td) for s in starts]


def _high() -> BurstPattern:
    td, ts, between_groups = 0.150, 0.100, 0.700
    first = _group_of_five(0.0, td, ts)
    second = _group_of_five(first[-1][0] + td + between_groups, td, ts)
    pulses = tuple(first + second)
    burst = pulses[-1][0] + td
    return BurstPattern("high", pulses, burst + 3.0, 880.0)


def _medium() -> BurstPattern:
    td, ts = 0.200, 0.200
    pulses = tuple((i * (td + ts), td) for i in range(3))
    return BurstPattern("medium", pulses, pulses[-1][0] + td + 3.5, 660.0)


def _low() -> BurstPattern:
    return BurstPattern("low", ((0.0, 0.200),), 16.0, 523.0)


PATTERNS: dict[str, BurstPattern] = {"high": _high(), "medium": _medium(), "low": _low()}


def pulse_starts(priority: str, t0: float, t1: float) -> list[float]:
    """Start times (s) of the pulses sounding in [t0, t1) when ``priority``'s
    pattern started at time 0: the schedule the player follows."""
    p = PATTERNS[priority]
    out: list[float] = []
    k = max(0, int(t0 // p.period_s))
    while k * p.period_s < t1:
        for s, _ in p.pulses:
            t = k * p.period_s + s
            if t0 <= t < t1:
                out.append(t)
        k += 1
    return out


def render_pcm(pattern: BurstPattern, rate: int = SAMPLE_RATE, amplitude: float = 0.5) -> bytes:
    """One period of ``pattern`` (burst then silence) as signed 16-bit mono PCM."""
    n = int(round(pattern.period_s * rate))
    out = np.zeros(n, np.float64)
    weights = np.asarray(pattern.harmonics)
    weights = weights / weights.sum()
    for start, dur in pattern.pulses:
        i0, m = int(round(start * rate)), int(round(dur * rate))
        t = np.arange(m) / rate
        tone = sum(w * np.sin(2 * np.pi * pattern.f0_hz * (k + 1) * t)
                   for k, w in enumerate(weights))
        ramp = max(1, int(0.15 * m))  # 15 % rise and fall: no clicks, IEC 10-20 %
        env = np.ones(m)
        env[:ramp] = np.linspace(0.0, 1.0, ramp)
        env[-ramp:] = np.linspace(1.0, 0.0, ramp)
        out[i0:i0 + m] += tone * env
    pcm = np.clip(out * amplitude, -1.0, 1.0) * 32767
    return pcm.astype("<i2").tobytes()


class AlarmSound(QtCore.QObject):
    """Plays the burst pattern of one priority until told otherwise.

    :meth:`set_pattern` ("high"/"medium"/"low"/None) restarts the pattern
    from its first pulse when the priority changes. Without an audio output
    :attr:`available` is False, :attr:`note` says so, and calls do nothing
    else (the visual alarm is unaffected).
    """

    availabilityChanged = QtCore.Signal(bool)

    def __init__(self, parent: QtCore.QObject | None = None, enabled: bool = True,
                 sink_factory=None) -> None:
        """``sink_factory()``: returns a sink with the QAudioSink calls used
        here (start, bufferSize, bytesFree, stop, error, setVolume); for tests.
        By default the system's default output is used, if there is one."""
        super().__init__(parent)
        self._sink_factory = sink_factory
        self._pattern: str | None = None
        self._pcm: dict[str, bytes] = {}
        self._pos = 0
        self._sink = None
        self._io = None
        self._format = None
        self._device = None
        self.available = False
        self.note = NO_AUDIO_NOTE
        self._feed = QtCore.QTimer(self)
        self._feed.setInterval(40)  # refill well before QUEUE_S runs out
        self._feed.timeout.connect(self._push)
        if sink_factory is not None:
            self.available, self.note = True, "Alarm sound: test sink"
        elif enabled:
            self._open()

    @property
    def pattern(self) -> str | None:
        """Priority whose pattern is (or would be, without a device) playing."""
        return self._pattern

    def _open(self) -> None:
        try:
            from PySide6 import QtMultimedia as M
        except ImportError as exc:  # PySide6-Essentials has no QtMultimedia
            self.note = f"{NO_AUDIO_NOTE} (Qt Multimedia missing: {exc})"
            return
        device = M.QMediaDevices.defaultAudioOutput()
        if device.isNull():
            return
        fmt = M.QAudioFormat()
        fmt.setSampleRate(SAMPLE_RATE)
        fmt.setChannelCount(1)
        fmt.setSampleFormat(M.QAudioFormat.SampleFormat.Int16)
        if not device.isFormatSupported(fmt):
            self.note = f"{NO_AUDIO_NOTE} ({device.description()} refuses 16-bit mono)"
            return
        self._device, self._format = device, fmt
        self.available = True
        self.note = f"Alarm sound: {device.description()}"

    def set_pattern(self, priority: str | None) -> None:
        """Sound ``priority``'s pattern (None: silence)."""
        if priority is not None and priority not in PATTERNS:
            raise ValueError(f"unknown alarm priority {priority!r}")
        if priority == self._pattern:
            return
        self._pattern = priority
        self._stop_sink()
        if priority is None or not self.available:
            return
        if priority not in self._pcm:
            self._pcm[priority] = render_pcm(PATTERNS[priority])
        self._pos = 0
        self._start_sink()

    def _start_sink(self) -> None:
        if self._sink_factory is not None:
            self._sink, ok_error = self._sink_factory(), 0
        else:
            from PySide6 import QtMultimedia as M

            self._sink, ok_error = M.QAudioSink(self._device, self._format, self), \
                M.QtAudio.Error.NoError
        self._sink.setVolume(0.8)
        self._io = self._sink.start()  # push mode: we write the tone as it plays
        if self._io is None or self._sink.error() != ok_error:
            log.warning("audio output failed: %s", self._sink.error())
            self._stop_sink()
            self.available = False
            self.note = NO_AUDIO_NOTE + " (the audio device failed)"
            self.availabilityChanged.emit(False)
            return
        self._push()
        self._feed.start()

    def _push(self) -> None:
        if self._sink is None or self._io is None or self._pattern is None:
            return
        pcm = self._pcm[self._pattern]
        # Keep about QUEUE_S queued: enough to ride over a busy GUI thread,
        # little enough that nothing stale plays long (a stop drops it anyway).
        queued = self._sink.bufferSize() - self._sink.bytesFree()
        free = min(self._sink.bytesFree(), int(QUEUE_S * SAMPLE_RATE) * 2 - queued)
        free -= free % 2
        while free > 0:
            chunk = pcm[self._pos:self._pos + free]
            written = self._io.write(chunk)
            if written <= 0:
                break
            self._pos = (self._pos + written) % len(pcm)
            free -= written

    def _stop_sink(self) -> None:
        self._feed.stop()
        if self._sink is not None:
            self._sink.stop()
            if hasattr(self._sink, "deleteLater"):
                self._sink.deleteLater()
        self._sink = self._io = None

    def close(self) -> None:
        """Silence and release the device."""
        self._pattern = None
        self._stop_sink()
