"""MonitorPipeline: the listener the sources feed, as the GUI and terminal use it."""

from __future__ import annotations

import datetime as dt
import math
import threading

import numpy as np
import pytest
from test_checker import REG, block, regulated, steady

from firmware_bridge import conditions as C
from firmware_bridge.listener import Notifier
from firmware_bridge.messages import DeviceInfo, LinkEvent, LinkState
from monitor.config import MonitorConfig, apply_overrides
from monitor.pipeline import MonitorPipeline


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make(cfg=None, **kw):
    clock = Clock()
    anchor = (0.0, dt.datetime(2026, 11, 28, 10, 15, 0, tzinfo=dt.UTC))
    pipe = MonitorPipeline(cfg, clock=clock, wall_anchor=anchor, **kw)
    seen = []
    pipe.add_event_sink(seen.append)
    return pipe, clock, seen


def test_cups_from_first_block_and_events_to_sinks_in_order():
    pipe, clock, seen = make()
    assert pipe.snapshot().cups == () and pipe.snapshot().t is None
    t, s, st = steady(12.0, cups=3)
    s[t >= 3.0, 1] += 5.0    # 27 kPa, still noisy (a frozen value would be a stuck sensor)
    pipe.on_block(block(t, s, st, host_time=clock.now))
    snap = pipe.snapshot()
    assert len(snap.cups) == 3 and snap.t == pytest.approx(11.99)
    assert [(e.cup, e.event, e.condition, e.priority) for e in seen] == [
        (2, "raised", C.OVER_SUCTION, "high")]
    assert seen[0].wall == "2026-11-28T10:15:04.000+00:00"   # anchor + device time
    assert pipe.events() == seen and pipe.events(since=1) == [] and pipe.event_count == 1
    assert snap.highest_priority == "high" and snap.cups[1].state == "Over suction"
    assert snap.cups[1].severity == "high" and snap.cups[0].state == "OK"
    assert snap.alarms[0].condition == C.OVER_SUCTION


def test_stale_value_is_never_shown_as_live():
    pipe, clock, _ = make()
    t, s, st = steady(2.0)
    pipe.on_block(block(t, s, st, host_time=clock.now))
    clock.now += 0.1
    live = pipe.snapshot()
    assert live.signal_ok and live.cups[0].suction_kpa == pytest.approx(float(s[-1, 0]))
    clock.now += 0.2                      # 300 ms of silence, before any idle tick
    stale = pipe.snapshot()
    assert not stale.signal_ok and math.isnan(stale.cups[0].suction_kpa)
    assert stale.cups[0].state == "No signal" and stale.cups[0].suction_text() == "-- kPa"
    pipe.on_idle(clock.now)
    snap = pipe.snapshot()
    assert [a.condition for a in snap.alarms] == [C.SIGNAL_LOSS] and snap.highest_priority == "high"
    assert snap.audio.pattern == "high"


def _loss_events(events):
    return [(round(e.t, 6), e.event) for e in events if e.condition == C.SIGNAL_LOSS]


def test_signal_loss_live_and_replay_give_the_same_stamps():
    t, s, st = steady(20.0)
    a, b = t < 10.0, t >= 12.0
    # Live: the idle ticks notice the silence on the host clock.
    live, clock, live_events = make()
    live.on_block(block(t[a], s[a], st[a], host_time=clock.now))
    for _ in range(10):
        clock.now += 0.05
        live.on_idle(clock.now)
    clock.now += 1.5
    live.on_block(block(t[b], s[b], st[b], host_time=clock.now))
    # Replay: no host clock at all, only the device-time gap.
    replay, _, replay_events = make()
    replay.on_block(block(t[a], s[a], st[a]))
    replay.on_block(block(t[b], s[b], st[b]))
    expected = [(round(9.99 + C.SIGNAL_LOSS_S, 6), "raised"), (12.0, "cleared")]
    assert _loss_events(live_events) == _loss_events(replay_events) == expected
    # High priority latches: still listed, resolved, until acknowledged.
    (alarm,) = live.snapshot().alarms
    assert alarm.state == "resolved – acknowledge"
    (ack,) = live.acknowledge(condition=C.SIGNAL_LOSS)
    assert ack.event == "acknowledged" and live.snapshot().alarms == ()


def test_link_lost_marks_no_signal_at_once():
    pipe, clock, seen = make()
    t, s, st = steady(2.0)
    pipe.on_block(block(t, s, st, host_time=clock.now))
    pipe.on_message(LinkEvent(LinkState.LOST, host_time=clock.now + 0.01, message="unplugged"))
    snap = pipe.snapshot()
    assert snap.link is LinkState.LOST and not snap.signal_ok
    assert math.isnan(snap.cups[0].suction_kpa)
    assert [(e.event, e.condition) for e in seen] == [("raised", C.SIGNAL_LOSS)]


def test_state_words_through_a_session():
    pipe, clock, _ = make()
    t, s, st = regulated(40.0, vent_at=30.0, noise=0.02)
    words = {}
    for a in range(0, len(t), 50):   # half-second blocks
        b = slice(a, a + 50)
        pipe.on_block(block(t[b], s[b], st[b], host_time=clock.now))
        words[round(float(t[b][-1]), 2)] = pipe.snapshot().cups[0].state
    assert words[0.49] == "Idle"
    assert words[1.49] == "Pumping down"
    assert words[10.49] == "OK"
    assert words[39.99] == "Released"
    cup = pipe.snapshot().cups[0]
    assert cup.valve_open and not cup.regulating and cup.applied_s is None


def test_holding_and_dwell_remaining():
    pipe, clock, _ = make()
    t, s, st = steady(10.0, bits=REG)
    st[t >= 5.0, 0] = 0   # STOP: the cup holds
    pipe.on_block(block(t, s, st, host_time=clock.now))
    cup = pipe.snapshot().cups[0]
    assert cup.state == "Holding" and cup.applied_s == pytest.approx(9.99)
    assert cup.dwell_remaining_s == pytest.approx(C.DWELL_LIMIT_S - 9.99)
    assert cup.time_in_target_pct == 100.0


def test_text_device_without_status_bits():
    pipe, clock, seen = make()
    t = np.arange(0, 30, 0.05)
    s = np.interp(t, [0, 2, 4, 30], [0, 0, 22, 22]) + np.random.default_rng(1).normal(0, .05, t.shape)
    pipe.on_block(block(t, s, host_time=clock.now))
    snap = pipe.snapshot()
    assert not snap.status_bits and snap.cups[0].state == "OK" and seen == []
    assert snap.cups[0].applied_s == pytest.approx(30 - 0.05 - t[s >= 5.0][0], abs=0.06)


def test_device_info_means_status_bits_even_before_any_bit():
    pipe, clock, _ = make()
    pipe.on_message(DeviceInfo("SIM-1", (1, 0, 0), cups=2, rate_hz=100))
    snap = pipe.snapshot()
    assert len(snap.cups) == 2 and snap.cups[0].state == "Waiting for data"
    t, s, st = steady(2.0, cups=2, bits=0, level=0.0)
    pipe.on_block(block(t, s, st, host_time=clock.now))
    snap = pipe.snapshot()
    assert snap.status_bits and snap.device.serial == "SIM-1" and snap.cups[0].state == "Idle"


def test_pause_audio_resounds_on_idle_after_the_pause():
    pipe, clock, seen = make(apply_overrides(MonitorConfig(), ["audio_pause_s=2"]))
    t, s, st = steady(5.0)
    s[t >= 1.0, 0] -= 7.0
    pipe.on_block(block(t, s, st, host_time=clock.now))
    (paused,) = pipe.pause_audio()
    assert paused.event == "audio_paused" and paused.t == pytest.approx(4.99)
    assert pipe.snapshot().audio.pattern is None
    for _ in range(30):   # 1.5 s of idle ticks with no new data
        clock.now += 0.05
        pipe.on_idle(clock.now)
    assert seen[-1].event != "raised" or seen[-1].condition == C.SIGNAL_LOSS
    for _ in range(20):
        clock.now += 0.05
        pipe.on_idle(clock.now)
    resound = [e for e in seen if e.event == "raised" and e.condition == C.UNDER_SUCTION]
    assert len(resound) == 2 and resound[1].t == pytest.approx(4.99 + 2.0)
    assert pipe.snapshot().audio.pattern == "high"   # signal loss (high) is now also listed


def test_set_band_applies_from_next_block():
    pipe, clock, seen = make()
    t, s, st = steady(4.0, level=23.0)
    pipe.on_block(block(t[:200], s[:200], st[:200]))
    pipe.set_band(1, 18.0, 21.0)
    pipe.on_block(block(t[200:], s[200:], st[200:]))
    assert [(e.condition, e.t) for e in seen] == [(C.OVER_SUCTION, pytest.approx(3.0))]
    assert pipe.snapshot().cups[0].band == (18.0, 21.0)


def test_stats_summary_and_bad_sink_isolated():
    pipe, clock, seen = make()
    pipe.add_event_sink(lambda ev: 1 / 0)    # a broken sink must not stop the others
    t, s, st = steady(10.0)
    s[t >= 2.0, 0] += 5.0
    pipe.on_block(block(t, s, st))
    assert len(seen) == 1
    summary = pipe.stats_summary()
    assert summary["cups"][0]["max_kpa"] == pytest.approx(27.0, abs=0.3)


def test_thread_safe_under_a_notifier():
    pipe = MonitorPipeline()
    seen = []
    pipe.add_event_sink(seen.append)
    notifier = Notifier([pipe], backpressure=True)
    t, s, st = steady(30.0, cups=4)
    s[(t >= 5.0) & (t < 8.0), 2] += 5.0
    stop = threading.Event()
    errors = []

    def gui():
        while not stop.is_set():
            try:
                snap = pipe.snapshot()
                assert all(len(c.band) == 2 for c in snap.cups)
                pipe.acknowledge()
            except Exception as e:  # pragma: no cover - reported below
                errors.append(e)
                return

    th = threading.Thread(target=gui)
    th.start()
    try:
        for a in range(0, len(t), 20):
            b = slice(a, a + 20)
            notifier.publish_block(block(t[b], s[b], st[b]))
        assert notifier.join_idle(30.0)
    finally:
        stop.set()
        th.join()
        notifier.stop()
    assert errors == []
    kinds = [(e.event, e.condition) for e in seen if e.condition == C.OVER_SUCTION]
    assert kinds[0] == ("raised", C.OVER_SUCTION)
    assert ("cleared", C.OVER_SUCTION) in kinds
    assert seen == pipe.events()   # sinks saw exactly the history, in order


def _one_sample_blocks(pipe, clock, t, s, st):
    for i in range(len(t)):
        clock.now = 1000.0 + float(t[i])   # frames arrive at device pace
        pipe.on_block(block(t[i:i + 1], s[i:i + 1], st[i:i + 1], host_time=clock.now))


def test_batching_small_blocks_changes_nothing_but_cost():
    t, s, st = steady(8.0, cups=2)
    s[(t >= 2.0) & (t < 5.0), 1] += 5.0
    s[(t >= 3.0) & (t < 4.0), 0] = np.nan
    results = []
    for batch in (0.0, 0.02, 0.5):
        pipe, clock, seen = make(batch_s=batch)
        _one_sample_blocks(pipe, clock, t, s, st)
        pipe.stop()
        results.append([(e.t, e.cup, e.event, e.condition, e.suction_kpa) for e in seen])
    assert results[0] == results[1] == results[2]
    assert {(e[1], e[2], e[3]) for e in results[0]} >= {
        (2, "raised", C.OVER_SUCTION), (2, "cleared", C.OVER_SUCTION),
        (1, "raised", C.SENSOR_FAULT), (1, "cleared", C.SENSOR_FAULT)}


def test_pending_samples_are_checked_on_idle_and_before_messages():
    pipe, clock, seen = make(batch_s=10.0)
    t, s, st = steady(3.0)
    s[t >= 1.0, 0] += 5.0
    pipe.on_block(block(t[:1], s[:1], st[:1], host_time=clock.now))   # first: checked at once
    pipe.on_block(block(t[1:], s[1:], st[1:], host_time=clock.now))   # waits for the batch
    assert seen == [] and pipe.snapshot().t == 0.0
    pipe.on_idle(clock.now + 0.05)
    assert [e.condition for e in seen] == [C.OVER_SUCTION] and pipe.snapshot().t == pytest.approx(2.99)
    pipe.on_block(block(t[-1:] + 0.01, s[-1:], st[-1:], host_time=clock.now))
    pipe.on_message(LinkEvent(LinkState.LOST, host_time=clock.now))
    assert [e.t for e in seen if e.condition == C.SIGNAL_LOSS] == [pytest.approx(3.0)]


def test_reading_events_checks_waiting_blocks():
    pipe, clock, seen = make(batch_s=10.0)
    t, s, st = steady(3.0)
    s[t >= 1.0, 0] += 5.0
    pipe.on_block(block(t[:1], s[:1], st[:1]))
    pipe.on_block(block(t[1:], s[1:], st[1:]))
    assert seen == []
    assert [e.condition for e in pipe.events()] == [C.OVER_SUCTION] == [e.condition for e in seen]


def test_invalid_reading_is_not_shown_as_a_value():
    pipe, clock, _ = make()
    t, s, st = steady(3.0, cups=2)
    s[-5:, 0] = 150.0        # beyond the sensor's range
    s[-1, 1] = np.nan        # no reading
    pipe.on_block(block(t, s, st, host_time=clock.now))
    a, b = pipe.snapshot().cups
    assert math.isnan(a.suction_kpa) and math.isnan(b.suction_kpa)


def _slow_checks(pipe, clock, seconds: float) -> list[int]:
    """Make every check of ``pipe`` take ``seconds`` of (fake) host time; returns
    the list the sizes (samples) of the checks are appended to."""
    sizes = []
    real = pipe._checker.process

    def process(block, **kw):
        sizes.append(block.n)
        clock.now += seconds
        return real(block, **kw)

    pipe._checker.process = process
    return sizes


@pytest.mark.parametrize("batch_s", [0.02, 3600.0])
def test_busy_pipeline_holds_a_bounded_number_of_samples(batch_s):
    """Checks slower than the data (a replay as fast as possible) make the pipeline
    coalesce; what it holds is bounded by values (samples x cups), not by how far
    the source is ahead, and the detections are those of one check per block."""
    cups, per_block = 16, 66                 # a 4 KiB read of 16-cup frames at 1 kHz
    bound = 16384                            # values: 15 such blocks
    t, s, st = steady(20.0, rate=1000.0, cups=cups)
    s[(t >= 5.0) & (t < 12.0), 3] += 5.0     # over-suction on cup 4
    s[(t >= 8.0) & (t < 9.0), 7] = np.nan    # sensor fault on cup 8
    results = []
    for batch in (0.0, batch_s):
        pipe, clock, seen = make(cups=cups, batch_s=batch, batch_values=bound)
        sizes = _slow_checks(pipe, clock, 1.0)
        held = 0
        for i in range(0, len(t), per_block):
            clock.now += 1e-6                # blocks are waiting: they come at once
            pipe.on_block(block(t[i:i + per_block], s[i:i + per_block], st[i:i + per_block],
                                host_time=clock.now))
            held = max(held, sum(b.n * b.cups for b in pipe._pending_blocks))
        pipe.stop()
        assert held <= bound
        assert sum(sizes) == len(t)
        results.append([(e.t, e.cup, e.event, e.condition, e.suction_kpa) for e in seen])
    assert max(sizes) * cups <= bound
    blocks = -(-len(t) // per_block)
    assert len(sizes) <= blocks // 15 + 2     # still coalesced: 15 blocks a check
    assert results[0] == results[1]
    assert {(e[1], e[2], e[3]) for e in results[0]} >= {
        (4, "raised", C.OVER_SUCTION), (4, "cleared", C.OVER_SUCTION),
        (8, "raised", C.SENSOR_FAULT), (8, "cleared", C.SENSOR_FAULT)}
