"""AlarmManager: IEC 60601-1-8 priorities, latching, acknowledgement, audio pause,
and the AlarmEvent record format."""

from __future__ import annotations

import json
import re

import pytest

from firmware_bridge import conditions as C
from monitor.alarms import AlarmEvent, AlarmManager, priority_of, wall_now
from monitor.checker import Detection
from monitor.config import MonitorConfig, apply_overrides

WALL = "2026-11-28T10:15:02.118+00:00"


def manager(cfg: MonitorConfig | None = None) -> AlarmManager:
    return AlarmManager(cfg or MonitorConfig(), wall=lambda t: WALL)


def up(t, cond, cup=1, s=None, level=1):
    return Detection(t, cup, cond, True, level, s)


def down(t, cond, cup=1, s=None, level=1):
    return Detection(t, cup, cond, False, level, s)


@pytest.mark.parametrize("cond,prio", [
    (C.OVER_SUCTION, "high"), (C.SIGNAL_LOSS, "high"), (C.SENSOR_FAULT, "high"),
    (C.INTERLOCK, "high"), (C.UNDER_SUCTION, "medium"), (C.DETACHED, "medium"),
    (C.LEAK, "medium"), (C.BLOCKAGE, "medium")])
def test_priorities(cond, prio):
    m = manager()
    cup = None if cond == C.SIGNAL_LOSS else 2
    (ev,) = m.feed([up(1.0, cond, cup, 22.0)])
    assert (ev.event, ev.condition, ev.cup, ev.priority) == ("raised", cond, cup, prio)
    assert m.highest_priority == prio


def test_dwell_steps_low_then_medium_and_cleared():
    m = manager()
    evs = m.feed([up(600.0, C.DWELL_EXCEEDED, 3, 22.0, 1), up(900.0, C.DWELL_EXCEEDED, 3, 22.0, 2),
                  down(950.0, C.DWELL_EXCEEDED, 3, 0.5, 2)])
    assert [(e.event, e.priority) for e in evs] == [("raised", "low"), ("raised", "medium"),
                                                    ("cleared", "medium")]
    assert "10 min" in evs[0].message and "15 min" in evs[1].message
    assert m.alarms() == []
    assert priority_of(C.DWELL_EXCEEDED, 1) == "low"


def test_highest_priority_wins_and_order():
    m = manager()
    m.feed([up(1.0, C.DWELL_EXCEEDED, 1, 22.0, 1), up(2.0, C.LEAK, 2, 22.0),
            up(3.0, C.OVER_SUCTION, 3, 27.0), up(4.0, C.UNDER_SUCTION, 1, 18.0)])
    assert m.highest_priority == "high"
    assert [(a.priority, a.condition) for a in m.alarms()] == [
        ("high", C.OVER_SUCTION), ("medium", C.LEAK), ("medium", C.UNDER_SUCTION),
        ("low", C.DWELL_EXCEEDED)]
    assert m.audio(5.0).pattern == "high"


def test_high_priority_latches_until_acknowledged():
    m = manager()
    m.feed([up(5.0, C.OVER_SUCTION, 2, 26.8)])
    (c,) = m.feed([down(8.0, C.OVER_SUCTION, 2, 24.6)])
    assert c.event == "cleared" and "acknowledge" in c.message
    (a,) = m.alarms()
    assert not a.active and a.state == "resolved – acknowledge"
    assert m.audio(9.0).pattern == "high"          # a latched alarm keeps sounding
    (ack,) = m.acknowledge(10.0, cup=2)
    assert (ack.event, ack.t, ack.condition, ack.priority) == ("acknowledged", 10.0,
                                                               C.OVER_SUCTION, "high")
    assert m.alarms() == [] and m.audio(10.0).pattern is None and m.highest_priority is None


def test_medium_clears_by_itself():
    m = manager()
    m.feed([up(1.0, C.LEAK, 1, 22.0)])
    (c,) = m.feed([down(4.0, C.LEAK, 1, 22.3)])
    assert (c.event, c.priority) == ("cleared", "medium") and "acknowledge" not in c.message
    assert m.alarms() == []


def test_acknowledge_active_alarm_silences_then_clears_on_its_own():
    m = manager()
    m.feed([up(1.0, C.SENSOR_FAULT, 1), up(1.5, C.UNDER_SUCTION, 2, 17.0)])
    (ack,) = m.acknowledge(2.0, condition=C.SENSOR_FAULT)
    assert ack.cup == 1 and "still present" in ack.message
    a = [x for x in m.alarms() if x.condition == C.SENSOR_FAULT][0]
    assert a.state == "acknowledged"
    assert m.audio(2.0).pattern == "medium"          # only the unacknowledged one sounds
    assert m.acknowledge(2.5, condition=C.SENSOR_FAULT) == []   # nothing new to acknowledge
    (c,) = m.feed([down(3.0, C.SENSOR_FAULT, 1)])
    assert "acknowledge" not in c.message            # acknowledged: no latch left
    assert [x.condition for x in m.alarms()] == [C.UNDER_SUCTION]


def test_acknowledge_filters_by_cup_and_condition():
    m = manager()
    m.feed([up(1.0, C.OVER_SUCTION, 1, 27), up(1.0, C.OVER_SUCTION, 2, 27), up(1.0, C.LEAK, 2, 22)])
    assert [(e.cup, e.condition) for e in m.acknowledge(2.0, cup=2)] == [
        (2, C.OVER_SUCTION), (2, C.LEAK)]
    assert [(e.cup, e.condition) for e in m.acknowledge(2.0)] == [(1, C.OVER_SUCTION)]


def test_reraise_of_latched_alarm_before_acknowledge():
    m = manager()
    m.feed([up(1.0, C.OVER_SUCTION, 1, 27), down(2.0, C.OVER_SUCTION, 1, 24)])
    (r,) = m.feed([up(3.0, C.OVER_SUCTION, 1, 27.5)])
    assert r.event == "raised"
    (a,) = m.alarms()
    assert a.active and a.raised_t == 3.0


def test_audio_pause_and_resound_after_pause():
    m = manager(apply_overrides(MonitorConfig(), ["audio_pause_s=60"]))
    m.feed([up(10.0, C.UNDER_SUCTION, 1, 17.0)])
    (p,) = m.pause_audio(12.0)
    assert (p.event, p.cup, p.condition, p.priority) == ("audio_paused", None, None, "medium")
    audio = m.audio(20.0)
    assert audio.pattern is None and audio.paused_until == 72.0
    assert audio.paused_remaining_s == pytest.approx(52.0)
    assert m.tick(71.9) == []
    (again,) = m.tick(80.0)
    assert (again.event, again.t, again.condition, again.cup) == ("raised", 72.0,
                                                                  C.UNDER_SUCTION, 1)
    assert "sounds again" in again.message
    assert m.audio(80.0).pattern == "medium" and m.audio(80.0).paused_until is None


def test_no_resound_when_the_condition_ended_during_the_pause():
    m = manager()
    m.feed([up(10.0, C.LEAK, 1, 22.0)])
    m.pause_audio(11.0, seconds=30)
    m.feed([down(20.0, C.LEAK, 1, 22.0)])
    assert m.tick(50.0) == []


def test_new_alarm_during_pause_sounds_at_once():
    m = manager()
    m.feed([up(10.0, C.DWELL_EXCEEDED, 1, 22.0, 1)])
    m.pause_audio(11.0, seconds=120)
    assert m.audio(12.0).pattern is None
    m.feed([up(13.0, C.OVER_SUCTION, 2, 27.0)])
    assert m.audio(14.0).pattern == "high"
    evs = m.feed([up(140.0, C.LEAK, 2, 22.0)])          # the pause ran out at 131 s
    assert [(e.t, e.event, e.condition) for e in evs] == [
        (131.0, "raised", C.DWELL_EXCEEDED), (140.0, "raised", C.LEAK)]


def test_duplicate_raise_is_ignored():
    m = manager()
    assert len(m.feed([up(1.0, C.INTERLOCK, 1, 30.4)])) == 1
    assert m.feed([up(1.01, C.INTERLOCK, 1, 30.4)]) == []


def test_event_to_dict_exact_keys_and_format():
    m = AlarmManager(MonitorConfig())   # real wall clock
    (ev,) = m.feed([up(12.34567, C.OVER_SUCTION, 2, 26.8)])
    d = ev.to_dict()
    assert set(d) == {"t", "wall", "cup", "event", "condition", "priority", "suction_kpa", "message"}
    assert d["t"] == 12.346 and d["cup"] == 2 and d["suction_kpa"] == 26.8
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", d["wall"])
    assert d["message"] == ("Cup 2: suction 26.8 kPa is above the 25.0 kPa limit – "
                            "reduce suction or release the cup.")
    assert json.loads(json.dumps(d)) == d
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d", wall_now())


def test_messages_in_display_unit():
    m = manager(apply_overrides(MonitorConfig(), ["unit=mmHg"]))
    (ev,) = m.feed([up(1.0, C.UNDER_SUCTION, 1, 17.0)])
    assert "128 mmHg" in ev.message and "150 mmHg" in ev.message
    assert ev.suction_kpa == 17.0  # records stay in kPa


def test_every_condition_has_a_sentence():
    m = manager()
    for i, cond in enumerate(C.CONDITIONS):
        cup = None if cond in C.DEVICE_WIDE else 1
        (ev,) = m.feed([up(float(i), cond, cup, 22.0)])
        assert ev.message.endswith(".") and "_" not in ev.message  # no raw identifiers
        assert isinstance(ev, AlarmEvent)
