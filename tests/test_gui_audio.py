"""Alarm sound patterns as data (IEC 60601-1-8), and the no-device fallback."""

from __future__ import annotations

import numpy as np
import pytest

from monitor.gui.audio import (
    NO_AUDIO_NOTE,
    PATTERNS,
    SAMPLE_RATE,
    AlarmSound,
    pulse_starts,
    render_pcm,
)


def _groups(starts: list[float], gap: float) -> list[int]:
    """Sizes of runs of pulses whose starts are closer than ``gap``."""
    sizes, run = [], 1
    for a, b in zip(starts, starts[1:], strict=False):
        if b - a < gap:
            run += 1
        else:
            sizes.append(run)
            run = 1
    return sizes + [run]


def test_high_is_two_groups_of_five_medium_three_low_one():
    high = pulse_starts("high", 0.0, PATTERNS["high"].period_s)
    assert len(high) == 10 and _groups(high, 0.6) == [5, 5]
    assert len(pulse_starts("medium", 0.0, PATTERNS["medium"].period_s)) == 3
    assert len(pulse_starts("low", 0.0, PATTERNS["low"].period_s)) == 1


@pytest.mark.parametrize("prio,td_range,gap_range", [
    ("high", (0.075, 0.200), (2.5, 15.0)),
    ("medium", (0.125, 0.250), (2.5, 30.0)),
    ("low", (0.125, 0.250), (15.0, 60.0)),
])
def test_timing_inside_the_iec_ranges(prio, td_range, gap_range):
    p = PATTERNS[prio]
    assert all(td_range[0] <= d <= td_range[1] for _, d in p.pulses)
    assert gap_range[0] <= p.period_s - p.burst_s <= gap_range[1]
    assert 150 <= p.f0_hz <= 1000 and len(p.harmonics) >= 5   # f0 + 4 harmonics
    # the schedule repeats with the period
    a = pulse_starts(prio, 0, 3 * p.period_s)
    assert len(a) == 3 * len(p.pulses)
    assert a[len(p.pulses)] == pytest.approx(p.period_s)


def test_rendered_pcm_sounds_exactly_during_the_pulses():
    p = PATTERNS["medium"]
    pcm = np.frombuffer(render_pcm(p), "<i2")
    assert pcm.shape[0] == round(p.period_s * SAMPLE_RATE)
    loud = np.abs(pcm) > 200
    for start, dur in p.pulses:
        mid = int((start + dur / 2) * SAMPLE_RATE)
        assert loud[mid - 50:mid + 50].any()
    assert not loud[int(p.burst_s * SAMPLE_RATE) + 10:].any()     # silence between bursts
    spectrum = np.abs(np.fft.rfft(pcm[: int(p.burst_s * SAMPLE_RATE)]))
    freqs = np.fft.rfftfreq(int(p.burst_s * SAMPLE_RATE), 1 / SAMPLE_RATE)
    for k in range(1, 5):                                      # harmonics really present
        band = (freqs > k * p.f0_hz - 20) & (freqs < k * p.f0_hz + 20)
        assert spectrum[band].max() > 0.1 * spectrum.max()


def test_without_an_audio_device_it_says_alarms_are_visual_only(qtbot):
    sound = AlarmSound(enabled=False)     # what a machine without an output gets
    assert not sound.available and sound.note == NO_AUDIO_NOTE
    sound.set_pattern("high")
    assert sound.pattern == "high"        # the wish is kept; nothing is played
    sound.set_pattern(None)
    assert sound.pattern is None
    with pytest.raises(ValueError):
        sound.set_pattern("loud")


def test_offscreen_ci_has_no_device_and_falls_back(qtbot):
    sound = AlarmSound()                  # this machine has no sound card
    if sound.available:
        pytest.skip("an audio output exists here")
    assert sound.note.startswith(NO_AUDIO_NOTE)
    sound.set_pattern("medium")
    sound.close()


class FakeSink:
    """Stands in for QAudioSink: a 1 s buffer that 'plays' when drained."""

    size = 2 * SAMPLE_RATE

    def __init__(self) -> None:
        self.data, self.played, self.stopped, self.volume = bytearray(), 0, False, None

    def setVolume(self, v: float) -> None:  # noqa: N802 (Qt name)
        self.volume = v

    def start(self):
        return self

    def error(self) -> int:
        return 0

    def bufferSize(self) -> int:  # noqa: N802
        return self.size

    def bytesFree(self) -> int:  # noqa: N802
        return self.size - (len(self.data) - self.played)

    def write(self, chunk: bytes) -> int:
        self.data += chunk
        return len(chunk)

    def drain(self, n: int) -> None:
        self.played = min(len(self.data), self.played + n)

    def stop(self) -> None:
        self.stopped = True


def test_player_streams_the_pattern_in_a_loop_and_restarts_on_change(qtbot):
    sinks: list[FakeSink] = []

    def factory() -> FakeSink:
        sinks.append(FakeSink())
        return sinks[-1]

    sound = AlarmSound(sink_factory=factory)
    assert sound.available
    high = render_pcm(PATTERNS["high"])
    sound.set_pattern("high")
    sink = sinks[0]
    queued = len(sink.data)
    assert 0 < queued <= int(0.25 * SAMPLE_RATE) * 2 + 2      # only ~0.25 s ahead
    assert bytes(sink.data) == high[:queued]                    # from the first pulse
    for _ in range(400):                                        # play > 1 period
        sink.drain(4410)
        sound._push()
    n = len(sink.data)
    assert n > len(high)
    assert bytes(sink.data) == (high * (n // len(high) + 1))[:n]   # seamless loop
    sound.set_pattern("medium")
    assert sink.stopped and len(sinks) == 2                     # old sound cut at once
    medium = render_pcm(PATTERNS["medium"])
    assert bytes(sinks[1].data) == medium[:len(sinks[1].data)]
    sound.set_pattern(None)
    assert sinks[1].stopped and len(sinks) == 2
