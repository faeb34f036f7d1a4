"""Checker and pipeline defects found by scoring the simulator's scenarios
(tests/test_alarm_scoring.py), each pinned by a small synthetic stream.

Every test here failed before its fix; the scenario that revealed it is named.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_checker import VALVE, block, regulated

from firmware_bridge import conditions as C
from firmware_bridge.messages import DeviceEvent
from firmware_bridge.protocol import EventCode, Status
from monitor.checker import Checker
from monitor.config import MonitorConfig
from monitor.pipeline import MonitorPipeline


def _fixed_clock() -> float:
    """A host clock that never moves: only device time decides anything."""
    return 0.0


def _feed(cuts: list[int], t, s, st) -> MonitorPipeline:
    """A pipeline fed ``t, s, st`` cut at ``cuts``; a block after a hole in
    device time is marked the way the decoder marks it (gap_before)."""
    pipe = MonitorPipeline(MonitorConfig(), cups=s.shape[1], clock=_fixed_clock)
    edges = [0, *cuts, len(t)]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        gap = a > 0 and t[a] - t[a - 1] > 0.015
        pipe.on_block(block(t[a:b], s[a:b], st[a:b], gap_before=gap, lost_before=int(gap)))
    pipe.stop()
    return pipe


def test_block_after_a_gap_is_checked_while_another_waits_to_be_coalesced():
    # dropped_frames / noisy_link: an isolated lost frame makes the decoder start a
    # new block (gap_before). When it arrived while a small block was waiting to be
    # coalesced, the pipeline appended it to the list it had just handed to the
    # checker, so it was never checked: its samples vanished, and a hole they left
    # longer than 0.25 s raised a signal_loss that never happened.
    t, s, st = regulated(8.0)
    keep = np.ones(t.shape, bool)
    keep[[400, 402, 404]] = False  # isolated lost frames (20 ms holes), cup pumped down
    t, s, st = t[keep], s[keep], st[keep]
    # Holes at rows 400, 401, 402 of the kept stream; short blocks so that one waits.
    small = _feed([399, 400, 401, 402, 440], t, s, st)
    whole = _feed([400, 401, 402], t, s, st)  # one block per stretch without a hole
    assert [e for e in small.events() if e.condition == C.SIGNAL_LOSS] == []
    assert [e.to_dict() for e in small.events()] == [e.to_dict() for e in whole.events()]
    # Every sample was checked: the per-cup statistics count the same samples.
    assert small.stats_summary() == whole.stats_summary()
    assert small.stats_summary()["cups"][0]["samples"] > 0


def _device_flags_sensor(t, s, st, t_flag: float) -> None:
    """The device flags cup 1's sensor from ``t_flag`` on (SENSOR_FAULT bit)."""
    st[t >= t_flag, 0] |= int(Status.SENSOR_FAULT)


def _checker_events(cuts: list[int], t, s, st, event_t: float) -> list:
    """Detections of a checker fed blocks cut at ``cuts`` with the device's EVENT
    SENSOR_FAULT delivered after the block holding its sample, as the decoder
    orders a chunk (samples first, then the events stamped within them)."""
    ch = Checker(MonitorConfig(), s.shape[1])
    out, sent = [], False
    edges = [0, *cuts, len(t)]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        out += ch.process(block(t[a:b], s[a:b], st[a:b]))
        if not sent and t[b - 1] >= event_t:
            out += ch.on_message(DeviceEvent(int(EventCode.SENSOR_FAULT), 1, 0, t=event_t))
            sent = True
    return out


def test_device_sensor_fault_gives_one_raise_at_the_flag_whatever_the_chunking():
    # sensor_fault (stuck): the device flags its sensor with the SENSOR_FAULT bit
    # and an EVENT on the same sample. The EVENT raised the alarm at once, but if
    # the flagged sample had been checked already (its block came first), the
    # next block's 0.5 s on-delay turned the alarm off again: raised, cleared,
    # raised 0.5 s later - a high-priority alarm reported "resolved" while the
    # sensor was still dead. And the stamp depended on where the chunks were cut
    # (the flag at once, or 0.5 s later), so a replay differed from live.
    t, s, st = regulated(8.0)
    _device_flags_sensor(t, s, st, 4.0)
    flag = int(np.flatnonzero(t >= 4.0)[0])
    splits = {"one block": [], "flag in a short block": [flag + 2],
              "flag at a block start": [flag], "sample by sample": list(range(flag - 3, flag + 60))}
    results = {k: _checker_events(c, t, s, st, 4.0) for k, c in splits.items()}
    for name, dets in results.items():
        faults = [(d.t, d.active) for d in dets if d.condition == C.SENSOR_FAULT]
        assert faults == [(pytest.approx(4.0), True)], name
    first = results["one block"]
    assert all(d == first for d in results.values())


def _with_events(cuts: list[int], t, s, st, events: list[DeviceEvent]) -> list:
    """Detections of a checker fed blocks cut at ``cuts``, each device EVENT
    delivered right after the block that holds its sample (decoder order)."""
    ch = Checker(MonitorConfig(), s.shape[1])
    out, todo = [], sorted(events, key=lambda e: e.t)
    edges = [0, *cuts, len(t)]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        out += ch.process(block(t[a:b], s[a:b], st[a:b]))
        while todo and todo[0].t <= t[b - 1]:
            out += ch.on_message(todo.pop(0))
    return out


def test_device_events_read_after_their_samples_change_nothing():
    # sensor_fault with fault_duration_s=10, replayed in 64 KiB chunks: the fault
    # came and went inside one chunk, its block was checked (raised at the flag,
    # cleared when the flag cleared), and only then came the EVENTs. SENSOR_FAULT
    # then raised the alarm again, stamped 10 s in the past, and the device-fault
    # state it set held the alarm until the next chunk. The samples already carry
    # the device's flags (SENSOR_FAULT and INTERLOCK bits), so an EVENT no later
    # than the last checked sample is history and must change nothing.
    t, s, st = regulated(12.0, cups=2)
    st[(t >= 4.0) & (t < 6.0), 0] |= int(Status.SENSOR_FAULT)
    tripped = (t >= 5.0) & (t < 9.0)
    st[tripped, 1] = VALVE | int(Status.INTERLOCK)
    events = [DeviceEvent(int(EventCode.SENSOR_FAULT), 1, 2200, t=4.0),
              DeviceEvent(int(EventCode.SENSOR_OK), 1, 0, t=6.0),
              DeviceEvent(int(EventCode.INTERLOCK_TRIPPED), 2, 3010, t=5.0),
              DeviceEvent(int(EventCode.INTERLOCK_CLEARED), 2, 0, t=9.0)]
    edge = [int(np.flatnonzero(t >= x)[0]) for x in (4.0, 5.0, 6.0, 9.0)]
    splits = {"one block": [], "every 150": list(range(150, len(t), 150)),
              "sample by sample at the edges": sorted({i + d for i in edge for d in range(-2, 3)})}
    want = [(4.0, 1, C.SENSOR_FAULT, True), (5.0, 2, C.INTERLOCK, True),
            (6.0, 1, C.SENSOR_FAULT, False), (9.0, 2, C.INTERLOCK, False)]
    for name, cuts in splits.items():
        got = [(round(d.t, 6), d.cup, d.condition, d.active)
               for d in _with_events(cuts, t, s, st, events)
               if d.condition in (C.SENSOR_FAULT, C.INTERLOCK)]
        assert got == want, name
