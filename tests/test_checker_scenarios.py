"""Checker and pipeline defects found by scoring the simulator's scenarios
(tests/test_alarm_scoring.py), each pinned by a small synthetic stream.

Every test here failed before its fix; the scenario that revealed it is named.
"""

from __future__ import annotations

import numpy as np
from test_checker import block, regulated

from firmware_bridge import conditions as C
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
