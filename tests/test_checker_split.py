"""Block-split invariance: any split of a stream gives identical detections.

Blocks are 20 ms live and up to 1 s in replay; the checker carries its state
across blocks, so the detections (times, cups, conditions, values) must not
depend on where the blocks start.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st_
from test_checker import PUMP, REG, block, regulated

from firmware_bridge import conditions as C
from monitor.checker import Checker
from monitor.config import MonitorConfig


def _binary_stream():
    leak = lambda ti: np.array([2.0 if ti >= 12.0 else 0.0, 0.0, 0.0])  # noqa: E731
    t, s, st = regulated(36.0, cups=3, leak=leak, noise=0.08, seed=11)
    s[(t >= 8.0) & (t < 12.0), 1] = 26.7           # cup 2: over-suction episode
    s[(t >= 8.0) & (t < 8.2), 1] = 30.5            # ... that starts above the hard limit
    s[(t >= 18.0) & (t < 19.0), 1] = np.nan        # cup 2: no reading for 1 s
    gone = t >= 24.0
    s[gone, 2] = 0.2                               # cup 3: seal lost
    st[gone, 2] = REG | PUMP
    keep = (t < 28.0) | (t >= 29.0)                # 1 s without frames: signal loss
    return t[keep], s[keep], st[keep]


def _text_stream():
    t = np.arange(0, 30, 0.05)
    s = np.interp(t, [0, 2, 4, 12, 12.5, 20, 21], [0, 0, 22, 22, 26.5, 26.5, 0])
    s = np.stack([s, np.interp(t, [0, 5, 6, 30], [0, 0, 12, 12])], axis=1)
    s = s + np.random.default_rng(2).normal(0, 0.05, s.shape)
    return t, s.astype(np.float32), np.zeros(s.shape, np.uint8)


STREAMS = {"binary": _binary_stream(), "text": _text_stream()}


def _detect(stream, cuts):
    t, s, st = stream
    edges = [0, *sorted(cuts), len(t)]
    ch = Checker(MonitorConfig(), s.shape[1])
    out = []
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        out.extend(ch.process(block(t[a:b], s[a:b], st[a:b])))
    return out


WHOLE = {name: _detect(stream, []) for name, stream in STREAMS.items()}


def test_reference_streams_exercise_many_conditions():
    seen = {d.condition for d in WHOLE["binary"]}
    assert {C.OVER_SUCTION, C.LEAK, C.DETACHED, C.UNDER_SUCTION, C.SENSOR_FAULT,
            C.SIGNAL_LOSS} <= seen
    assert {d.condition for d in WHOLE["text"]} >= {C.OVER_SUCTION, C.UNDER_SUCTION}


@pytest.mark.parametrize("name", sorted(STREAMS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st_.data())
def test_any_split_gives_identical_detections(name, data):
    n = len(STREAMS[name][0])
    cuts = data.draw(st_.lists(st_.integers(1, n - 1), max_size=30, unique=True), label="cuts")
    assert _detect(STREAMS[name], cuts) == WHOLE[name]


def test_sample_by_sample_equals_whole_around_events():
    # The finest split, on a window that holds a leak raise and the signal loss.
    t, s, st = STREAMS["binary"]
    cuts = list(range(1, len(t)))
    cuts = [c for c in cuts if 1100 <= c <= 1500 or 2750 <= c <= 2850]
    assert _detect(STREAMS["binary"], cuts) == WHOLE["binary"]
