"""Alarm correctness, measured (docs/alarms.md, "Measured alarm correctness").

Every simulator scenario is encoded by the virtual device, decoded by the real
decoder and checked by a MonitorPipeline, all in device time (no pty, no
pacing, no idle ticks: monitor/scoring.py says why), and its alarm events are
scored against the simulator's ground truth: every truth record raised on the
right cup with the right name, within its documented bound; no alarm in the
healthy runs; the same events whatever the chunking and whichever way the
samples reach the monitor.
"""

from __future__ import annotations

import functools

import pytest

from firmware_bridge import conditions as C
from monitor.scoring import (
    EARLY_S,
    QUIET,
    REPLAY_CHUNK_BYTES,
    VARIANTS,
    Capture,
    capture,
    default_bounds,
    monitor_bytes,
    monitor_direct,
    score,
    score_capture,
    table,
)
from sim.scenarios import list_scenarios

SCENARIOS = [name for name, _ in list_scenarios()]
RUNS = {**{name: (name, {}) for name in SCENARIOS}, **VARIANTS}


@functools.cache
def _capture(label: str) -> Capture:
    """Each run's bytes are made once per session (seed 0, 4 cups, 100 Hz)."""
    scenario, params = RUNS[label]
    return capture(scenario, **params)


@functools.cache
def _events(label: str) -> tuple:
    events, _ = monitor_bytes(_capture(label).data, REPLAY_CHUNK_BYTES)
    return tuple(events)


# ---- every scenario against its truth ---------------------------------------------------

@pytest.mark.parametrize("label", list(RUNS))
def test_every_truth_record_is_raised_on_time_on_the_right_cup(label):
    cap = _capture(label)
    rep = score_capture(cap, list(_events(label)), label)
    if cap.scenario in QUIET:
        assert cap.truth == [] and rep.quiet
    else:
        assert cap.truth, "a fault scenario without truth would score nothing"
    assert rep.misses == [], rep.table()
    for m in rep.matches:
        assert m.right_cup and m.right_name, rep.table()
        assert m.latency_s is not None and m.latency_s <= m.allowed_s, rep.table()
        assert m.latency_s >= -EARLY_S
    assert rep.ok, rep.failures


@pytest.mark.parametrize("label", [k for k in RUNS if RUNS[k][0] in QUIET])
def test_healthy_runs_raise_nothing(label):
    # normal (a 9.5-minute session), noisy_link (the same over a corrupting
    # link), pump_test (an idle rig): any alarm at all is a false alarm.
    assert _events(label) == ()


@pytest.mark.parametrize("seed", [0, 1])
def test_normal_hour_with_sensor_noise_raises_no_alarm(seed):
    # The normal scenario is one session (cups held 570 s, vented, taken off);
    # asked for an hour it runs the session, then idles: it does not repeat.
    cap = capture("normal", duration_s=3600.0, seed=seed)
    assert cap.truth == []
    # No cup stays on up to the dwell advisory: an alarm-free hour is correct.
    assert 500.0 < cap.longest_on_s < C.DWELL_ADVISORY_S
    events, link = monitor_bytes(cap.data, REPLAY_CHUNK_BYTES)
    assert link.samples == 3600 * 100 and link.crc_errors == 0 and link.frames_lost == 0
    assert events == [], [e.to_dict() for e in events]


def test_more_normal_sessions_with_other_seeds_raise_no_alarm():
    # Six more full sessions: 4 cups x 570 s each, 3.8 cup-hours of holding.
    for seed in range(2, 8):
        cap = capture("normal", seed=seed)
        events, _ = monitor_bytes(cap.data, REPLAY_CHUNK_BYTES)
        assert events == [], (seed, [e.to_dict() for e in events])


# ---- live = replay ------------------------------------------------------------------------

@pytest.mark.parametrize("label", list(RUNS))
def test_same_capture_in_other_chunks_gives_the_same_events(label):
    # Live reads a few frames at a time; a replay reads big chunks or the whole
    # file. 1009 bytes is ~39 frames and cuts frames in the middle.
    cap = _capture(label)
    small = 1009 if cap.duration_s <= 200 else 4099  # the long runs: cost
    whole, _ = monitor_bytes(cap.data)
    assert list(_events(label)) == whole
    fine, _ = monitor_bytes(cap.data, small)
    assert fine == whole


@pytest.mark.parametrize("label", [k for k in RUNS if RUNS[k][0] != "noisy_link"])
def test_blocks_made_without_bytes_give_the_same_events(label):
    # The direct path (SimOutput -> SampleBlocks as the wire would carry them)
    # and the byte path agree exactly: neither loses or invents anything.
    scenario, params = RUNS[label]
    events, cap = monitor_direct(scenario, **params)
    assert events == list(_events(label))
    assert cap.truth == _capture(label).truth


def test_noisy_link_is_really_noisy():
    _, link = monitor_bytes(_capture("noisy_link").data)
    assert link.crc_errors > 50 and link.frames_lost > 50


# ---- the scorer itself ----------------------------------------------------------------------

BOUNDS = default_bounds()


def _ev(t, cup, condition, event="raised"):
    return {"t": t, "cup": cup, "event": event, "condition": condition, "suction_kpa": None}


def _tr(cup, condition, t_start, t_end=None, **kw):
    return {"cup": cup, "condition": condition, "t_start": t_start, "t_end": t_end, **kw}


def test_score_passes_a_timely_raise_and_reports_its_latency():
    rep = score([_ev(31.0, 2, C.OVER_SUCTION), _ev(32.0, 2, C.OVER_SUCTION, "cleared")],
                [_tr(2, C.OVER_SUCTION, 30.0, 31.9)], BOUNDS)
    (m,) = rep.matches
    assert m.detected and m.latency_s == pytest.approx(1.0) and m.ok and rep.ok
    assert m.allowed_s == pytest.approx(1.1) and rep.extras == []


def test_score_fails_late_missing_wrong_cup_and_wrong_name():
    late = score([_ev(31.2, 2, C.OVER_SUCTION)], [_tr(2, C.OVER_SUCTION, 30.0)], BOUNDS)
    assert late.matches[0].detected and not late.ok and late.matches[0].result == "LATE"
    miss = score([], [_tr(2, C.LEAK, 30.0)], BOUNDS)
    assert miss.misses and not miss.ok
    cup = score([_ev(30.5, 3, C.DETACHED)], [_tr(2, C.DETACHED, 30.0)], BOUNDS)
    assert not cup.ok and not cup.matches[0].right_cup and cup.matches[0].right_name
    assert [e.event.cup for e in cup.extras] == [3]
    name = score([_ev(30.5, 2, C.UNDER_SUCTION)], [_tr(2, C.DETACHED, 30.0)], BOUNDS)
    assert not name.ok and name.matches[0].right_cup and not name.matches[0].right_name


def test_score_counts_each_raise_once_and_marks_repeats():
    truth = [_tr(1, C.OVER_SUCTION, 10.0, 20.0), _tr(1, C.OVER_SUCTION, 40.0, 50.0)]
    one = score([_ev(11.0, 1, C.OVER_SUCTION)], truth, BOUNDS)
    assert [m.detected for m in one.matches] == [True, False]
    chatter = score([_ev(11.0, 1, C.OVER_SUCTION), _ev(15.0, 1, C.OVER_SUCTION),
                     _ev(41.0, 1, C.OVER_SUCTION)], truth, BOUNDS)
    assert chatter.ok  # a repeat is reported, not a failure outside quiet runs
    assert [(e.event.t, e.reason) for e in chatter.extras] == [
        (15.0, "repeat while the condition held")]


def test_score_early_window_and_evidence_time():
    early = score([_ev(8.0, 1, C.OVER_SUCTION)], [_tr(1, C.OVER_SUCTION, 10.0)], BOUNDS)
    assert early.ok and early.matches[0].early and "early" in early.matches[0].result
    too_early = score([_ev(10.0 - EARLY_S - 0.5, 1, C.OVER_SUCTION)],
                      [_tr(1, C.OVER_SUCTION, 10.0)], BOUNDS)
    assert too_early.misses and len(too_early.extras) == 1
    # Blockage counts from the first pump run after the line blocked.
    truth = [_tr(2, C.BLOCKAGE, 30.0, t_ref=35.0)]
    assert score([_ev(38.1, 2, C.BLOCKAGE)], truth, BOUNDS).ok
    assert not score([_ev(38.5, 2, C.BLOCKAGE)], truth, BOUNDS).ok
    assert not score([_ev(38.1, 2, C.BLOCKAGE)], truth, BOUNDS, t_ref=[None]).ok


def test_quiet_run_fails_on_any_alarm_and_the_table_shows_it():
    rep = score([_ev(100.0, 3, C.UNDER_SUCTION)], [], BOUNDS, scenario="normal", quiet=True)
    assert not rep.ok and rep.failures == ["alarm in a quiet run: under_suction cup 3 at 100.00"]
    text = table([rep, score([], [], BOUNDS, scenario="pump_test", quiet=True)])
    lines = text.splitlines()
    assert lines[0].startswith("| scenario | condition | cup | truth t_start")
    assert "FAIL (alarms)" in lines[2] and "under_suction cup 3 at 100.00" in lines[2]
    assert "pass (no alarm)" in lines[3]
