"""Checker: each condition from synthetic blocks, with its timing bound.

The bound asserted everywhere is the one docs/alarms.md promises: a raise
comes no earlier than the condition becoming true and no later than its
condition delay plus 100 ms of device time.

``regulated`` below is a tiny bang-bang cup model (the same switch points as
the firmware, firmware_bridge.conditions.regulator_thresholds) used only to
make realistic pump/valve status for the tests; it is not the simulator.
"""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge import conditions as C
from firmware_bridge.messages import DeviceEvent, LinkEvent, LinkState, SampleBlock
from firmware_bridge.protocol import EventCode, Status
from monitor.checker import Checker
from monitor.config import MonitorConfig, apply_overrides

REG, PUMP, VALVE = int(Status.REGULATING), int(Status.PUMP_ON), int(Status.VALVE_OPEN)
SLACK = 0.1  # s, the processing allowance of the detection bound


def regulated(seconds: float, rate: float = 100.0, cups: int = 1, start: float = 1.0,
              leak=None, blocked=None, vent_at=None, stop_at=None, pump_kps: float = 15.0,
              noise: float = 0.05, seed: int = 0, natural_leak: float = 0.004):
    """(t, suction, status) of cups regulated into 20-25 kPa from ``start`` s.

    leak(t) -> (cups,) extra leak, kPa/s at 22 kPa; blocked(t) -> (cups,) bool
    (hose blocked, pump has no effect); vent_at/stop_at: commanded VENT/STOP (s).
    """
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    dt = 1.0 / rate
    on_th, off_th = C.regulator_thresholds(C.BAND_LOW_KPA, C.BAND_HIGH_KPA)
    s = np.zeros((n, cups))
    st = np.zeros((n, cups), np.uint8)
    x = np.zeros(cups)
    pump = np.zeros(cups, bool)
    for i, ti in enumerate(t):
        venting = vent_at is not None and ti >= vent_at
        stopped = stop_at is not None and ti >= stop_at
        reg = ti >= start and not venting and not stopped
        pump = ((x < on_th) | (pump & (x < off_th))) if reg else np.zeros(cups, bool)
        flow = pump * pump_kps * (1 - x / 40.0)
        if blocked is not None:
            flow = np.where(blocked(ti), 0.0, flow)
        lk = natural_leak + (leak(ti) if leak is not None else 0.0)
        x = x + (flow - lk * x / 22.0) * dt
        if venting:
            x = x * np.exp(-dt / 0.1)
        x = np.maximum(x, 0.0)
        s[i] = x
        st[i] = (REG if reg else 0) | np.where(pump, PUMP, 0) | (VALVE if venting else 0)
    s += np.random.default_rng(seed).normal(0.0, noise, s.shape)
    return t, s.astype(np.float32), st


def block(t, s, st=None, **kw) -> SampleBlock:
    s = np.asarray(s, np.float32)
    if s.ndim == 1:
        s = s[:, None]
    if st is None:
        st = np.zeros(s.shape, np.uint8)
    st = np.asarray(st, np.uint8)
    if st.ndim == 1:
        st = st[:, None]
    return SampleBlock(np.asarray(t, np.float64), s, st, **kw)


def run(blocks, cfg: MonitorConfig | None = None, cups: int | None = None):
    blocks = list(blocks)
    ch = Checker(cfg or MonitorConfig(), cups or blocks[0].cups)
    out = []
    for b in blocks:
        out.extend(ch.process(b))
    return out, ch


def split(t, s, st, pieces: int):
    edges = np.linspace(0, len(t), pieces + 1).astype(int)
    return [block(t[a:b], s[a:b], st[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)]


def raised(dets, condition, cup=None):
    return [d for d in dets if d.condition == condition and d.active and (cup is None or d.cup == cup)]


def cleared(dets, condition, cup=None):
    return [d for d in dets if d.condition == condition and not d.active
            and (cup is None or d.cup == cup)]


def steady(seconds=30.0, rate=100.0, level=22.0, cups=1, bits=REG, noise=0.05, seed=1):
    n = int(round(seconds * rate))
    t = np.arange(n) / rate
    s = np.full((n, cups), level) + np.random.default_rng(seed).normal(0, noise, (n, cups))
    return t, s.astype(np.float32), np.full((n, cups), bits, np.uint8)


# ---- healthy cups raise nothing -------------------------------------------------------

def test_healthy_regulated_cup_raises_nothing():
    t, s, st = regulated(60.0, cups=2, noise=0.1, seed=3)
    assert (st[:, 0] & PUMP).any() and ((st[:, 0] & PUMP) == 0).any()  # the model cycles
    dets, ch = run(split(t, s, st, 37))
    assert dets == []
    assert ch.pumped_down.all() and ch.applied.all()


# ---- over / under suction --------------------------------------------------------------

def test_over_suction_raised_within_delay_and_cleared_below_high():
    t, s, st = steady(20.0)
    s[(t >= 5.0) & (t < 9.0), 0] = 26.8
    dets, _ = run([block(t, s, st)])
    (r,) = raised(dets, C.OVER_SUCTION, 1)
    assert 5.0 + 1.0 <= r.t <= 5.0 + 1.0 + SLACK
    assert r.suction_kpa == pytest.approx(26.8, abs=0.3)
    (c,) = cleared(dets, C.OVER_SUCTION, 1)
    assert c.t == pytest.approx(9.0, abs=0.011)


def test_over_suction_at_hard_limit_is_immediate():
    t, s, st = steady(10.0)
    s[t >= 4.0, 0] = 30.5
    dets, _ = run([block(t, s, st)])
    (r,) = raised(dets, C.OVER_SUCTION)
    assert r.t == pytest.approx(4.0, abs=0.011)


def test_over_suction_checked_even_when_not_regulating():
    # A held cup (STOPped) whose suction rises (ambient pressure rise) still harms.
    t, s, st = steady(10.0, bits=0)
    s[t >= 2.0, 0] = 27.0
    dets, _ = run([block(t, s, st)], apply_overrides(MonitorConfig(), ["status_bits=on"]))
    assert raised(dets, C.OVER_SUCTION)


def test_noise_around_threshold_does_not_chatter():
    t, s, st = steady(30.0, noise=0.0)
    rng = np.random.default_rng(7)
    hover = (t >= 5.0) & (t < 20.0)
    # Crosses the raise level (26) and even dips under it many times, never below 25.
    s[hover, 0] = 26.0 + rng.uniform(-0.8, 0.8, hover.sum())
    low_hover = t >= 22.0
    s[low_hover, 0] = 20.0 + rng.uniform(-0.6, 0.6, low_hover.sum())  # around the under clear level
    dets, _ = run([block(t, s, st)])
    assert len(raised(dets, C.OVER_SUCTION)) == 1
    assert len(cleared(dets, C.OVER_SUCTION)) == 1
    assert not raised(dets, C.UNDER_SUCTION)  # never below 19 kPa


def test_under_suction_hysteresis_one_episode():
    t, s, st = steady(30.0, noise=0.0)
    rng = np.random.default_rng(8)
    dip = (t >= 10.0) & (t < 20.0)
    s[dip, 0] = 19.2 + rng.uniform(-0.5, 0.5, dip.sum())  # in and out of "< 19" all the time
    dets, _ = run([block(t, s, st)])
    (r,) = raised(dets, C.UNDER_SUCTION)
    first_below = t[dip][s[dip, 0] < 19.0][0]
    assert first_below + 2.0 <= r.t <= first_below + 2.0 + SLACK
    (c,) = cleared(dets, C.UNDER_SUCTION)
    assert c.t == pytest.approx(20.0, abs=0.011)


def test_pumpdown_grace_then_under_suction():
    # The cup never seals well: suction creeps to 15 kPa.
    t = np.arange(0, 20, 0.01)
    s = np.clip((t - 1.0) * 3.0, 0, 15.0)
    st = np.where(t >= 1.0, REG | PUMP, 0)
    dets, _ = run([block(t, s, st)])
    (r,) = raised(dets, C.UNDER_SUCTION)
    start = 1.0
    assert start + C.PUMPDOWN_GRACE_S + 2.0 <= r.t <= start + C.PUMPDOWN_GRACE_S + 2.0 + SLACK


def test_grace_ends_once_band_reached():
    t, s, st = regulated(30.0, noise=0.02)
    drop = t >= 5.0  # well inside the 10 s grace, but the band was reached at ~3 s
    s[drop, 0] = 17.0
    dets, _ = run([block(t, s, st)])
    (r,) = raised(dets, C.UNDER_SUCTION)
    assert 5.0 + 2.0 <= r.t <= 5.0 + 2.0 + SLACK


def test_per_cup_band():
    cfg = apply_overrides(MonitorConfig(), ["cups.2.band=15:18"])
    t, s, st = steady(10.0, cups=2, level=19.5, noise=0.02)
    dets, _ = run([block(t, s, st)], cfg)
    assert [d.cup for d in dets if d.active] == [2]  # 19.5 > 18 + 1 for cup 2 only
    assert dets[0].condition == C.OVER_SUCTION


# ---- detached, commanded release --------------------------------------------------------

def test_detached_when_seal_lost():
    t, s, st = regulated(30.0, noise=0.05)
    off = t >= 15.0
    s[off, 0] = np.random.default_rng(1).normal(0.3, 0.05, off.sum())
    st[off, 0] = REG | PUMP
    dets, _ = run(split(t, s, st, 5))
    (d,) = raised(dets, C.DETACHED, 1)
    assert 15.0 + 0.5 <= d.t <= 15.0 + 0.5 + SLACK
    assert raised(dets, C.UNDER_SUCTION)  # also true: both are reported


@pytest.mark.parametrize("command", ["vent", "stop"])
def test_no_alarm_on_commanded_release(command):
    # After STOP the cup holds; give it a leak then so its suction really falls.
    kw = ({"vent_at": 20.0} if command == "vent" else
          {"stop_at": 20.0, "leak": lambda ti: np.array([2.0 if ti >= 20.0 else 0.0])})
    t, s, st = regulated(40.0, noise=0.05, **kw)
    assert s[-1, 0] < 18.0  # suction really fell far below the band
    dets, ch = run(split(t, s, st, 9))
    assert dets == []
    assert not ch.active[0]
    assert ch.applied[0] == (command == "stop")  # a stopped cup still holds some suction


# ---- leak and blockage -------------------------------------------------------------------

def test_leak_from_fast_decay_while_pump_off():
    onset = 20.0
    t, s, st = regulated(40.0, leak=lambda ti: np.array([2.0 if ti >= onset else 0.0, 0.0]),
                         cups=2, noise=0.1, seed=4)
    dets, _ = run(split(t, s, st, 11))
    assert [d.cup for d in dets] == [1]
    (r,) = raised(dets, C.LEAK, 1)
    # Evidence needs one pump-off phase with a 1 kPa drop (0.5 s at 2 kPa/s) after the pump
    # tops up (< 0.5 s), plus the 1 s condition delay.
    assert onset + 1.0 < r.t <= onset + 2.5


def test_leak_from_pump_effort_in_band():
    # PTS ii "cuff leak": the pump runs > 7 s while the cup stays in band.
    t = np.arange(0, 25, 0.01)
    s = np.full(t.shape, 23.0)
    st = np.full(t.shape, REG)
    run_on = t >= 5.0
    s[run_on] = np.minimum(21.3 + (t[run_on] - 5.0) * 1.0, 23.0)  # rises 1.7 kPa, then stalls
    st[run_on] = REG | PUMP
    s = s + np.random.default_rng(2).normal(0, 0.05, s.shape)
    dets, _ = run([block(t, s, st)])
    assert not raised(dets, C.BLOCKAGE)
    (r,) = raised(dets, C.LEAK)
    assert 5.0 + 7.0 + 1.0 <= r.t <= 5.0 + 7.0 + 1.0 + SLACK


def test_blockage_when_pump_runs_and_cup_does_not_follow():
    t, s, st = regulated(40.0, leak=lambda ti: np.array([0.3]),
                         blocked=lambda ti: np.array([ti >= 10.0]), noise=0.05)
    pump_on = (st[:, 0] & PUMP) != 0
    first_on = t[(t > 10.0) & pump_on][0]  # the first time the pump runs into the blockage
    dets, _ = run(split(t, s, st, 7))
    (b,) = raised(dets, C.BLOCKAGE)
    smooth_lag = 8 / 100.0
    assert first_on + 2.0 + 1.0 <= b.t <= first_on + 2.0 + 1.0 + smooth_lag + SLACK
    assert not raised(dets, C.LEAK)  # 0.3 kPa/s is below the leak decay rate


# ---- sensor fault and interlock ---------------------------------------------------------------

def test_sensor_fault_nan_and_glitch():
    t, s, st = steady(10.0)
    s[200, 0] = np.nan            # one lost reading: no alarm
    s[500:700, 0] = np.nan        # 2 s without a reading
    dets, _ = run([block(t, s, st)])
    (r,) = raised(dets, C.SENSOR_FAULT)
    assert 5.0 + 0.5 <= r.t <= 5.0 + 0.5 + SLACK and r.suction_kpa is None
    (c,) = cleared(dets, C.SENSOR_FAULT)
    assert c.t == pytest.approx(7.0)
    assert not raised(dets, C.UNDER_SUCTION) and not raised(dets, C.OVER_SUCTION)


@pytest.mark.parametrize("kind", ["range", "bit"])
def test_sensor_fault_out_of_range_or_flagged(kind):
    t, s, st = steady(10.0)
    bad = t >= 3.0
    if kind == "range":
        s[bad, 0] = 150.0    # beyond the sensor's range: not an over-suction
    else:
        st[bad, 0] |= int(Status.SENSOR_FAULT)
    dets, _ = run([block(t, s, st)])
    (r,) = raised(dets, C.SENSOR_FAULT)
    # Out of range: the 0.5 s delay. The device's own flag: at once, like its EVENT
    # (tests/test_checker_scenarios.py says why).
    due = 3.5 if kind == "range" else 3.0
    assert due <= r.t <= due + SLACK
    assert not raised(dets, C.OVER_SUCTION)


def test_stuck_sensor_while_regulating():
    t, s, st = regulated(30.0, noise=0.05)
    s[t >= 10.0, 0] = s[t >= 10.0, 0][0]   # the reading freezes, the pump keeps cycling
    dets, _ = run(split(t, s, st, 4))
    (r,) = raised(dets, C.SENSOR_FAULT)
    assert 10.0 + 5.0 + 0.5 <= r.t <= 10.0 + 5.0 + 0.5 + SLACK


def test_sensor_fault_device_event_is_immediate_and_not_repeated():
    t, s, st = steady(10.0)
    ch = Checker(MonitorConfig(), 1)
    ch.process(block(t[:300], s[:300], st[:300]))
    ev = ch.on_message(DeviceEvent(int(EventCode.SENSOR_FAULT), 1, 0, t=3.0))
    assert [(d.condition, d.active, d.t) for d in ev] == [(C.SENSOR_FAULT, True, 3.0)]
    st[300:600, 0] |= int(Status.SENSOR_FAULT)
    assert ch.process(block(t[300:600], s[300:600], st[300:600])) == []
    assert ch.on_message(DeviceEvent(int(EventCode.SENSOR_OK), 1, 0, t=6.0)) == []
    (c,) = ch.process(block(t[600:], s[600:], st[600:]))
    assert (c.condition, c.active, c.t) == (C.SENSOR_FAULT, False, 6.0)


def test_interlock_bit_and_event():
    t, s, st = steady(10.0, cups=2)
    trip = t >= 4.0
    st[trip, 0] = VALVE | int(Status.INTERLOCK)   # the device vented cup 1
    dets, _ = run([block(t, s, st)])
    (r,) = raised(dets, C.INTERLOCK)
    assert r.cup == 1 and r.t == pytest.approx(4.0)
    # The EVENT frame may come first: raised at its time, the bit does not repeat it.
    ch = Checker(MonitorConfig(), 2)
    ch.process(block(t[:400], s[:400], st[:400]))
    ev = ch.on_message(DeviceEvent(int(EventCode.INTERLOCK_TRIPPED), 2, 3050, t=3.995))
    assert [(d.cup, d.suction_kpa) for d in ev] == [(2, 30.5)]
    st2 = st.copy()
    st2[trip, 1] = VALVE | int(Status.INTERLOCK)
    rest = ch.process(block(t[400:], s[400:], st2[400:]))
    assert [(d.cup, d.condition) for d in rest] == [(1, C.INTERLOCK)]


# ---- dwell ---------------------------------------------------------------------------------

def test_dwell_steps_and_release():
    rate = 10.0
    t, s, st = steady(1000.0, rate=rate)
    off = t >= 950.0
    s[off, 0] = 0.0
    st[off, 0] = VALVE
    dets, _ = run(split(t, s, st, 13))
    steps = [(d.t, d.active, d.level) for d in dets if d.condition == C.DWELL_EXCEEDED]
    assert steps == [(600.0, True, 1), (900.0, True, 2), (950.0, False, 2)]


# ---- signal loss --------------------------------------------------------------------------

def _two_blocks():
    t, s, st = steady(20.0)
    keep = (t < 10.0) | (t >= 12.0)
    first, second = t < 10.0, t >= 12.0
    return (block(t[first], s[first], st[first], host_time=100.0),
            block(t[second], s[second], st[second], host_time=102.0),
            block(t[keep], s[keep], st[keep]))


def _loss(dets):
    return [(round(d.t, 6), d.active) for d in dets if d.condition == C.SIGNAL_LOSS]


def test_signal_loss_replay_gap_live_idle_and_inside_block_agree():
    b1, b2, joined = _two_blocks()
    expected = [(round(9.99 + 0.25, 6), True), (12.0, False)]
    replay, _ = run([b1, b2])
    assert _loss(replay) == expected and replay[0].cup is None
    inside, _ = run([joined])
    assert _loss(inside) == expected
    live = Checker(MonitorConfig(), 1)
    dets = live.process(b1)
    dets += live.on_idle(100.2)      # 200 ms of silence: not yet
    assert _loss(dets) == []
    dets += live.on_idle(100.3)      # > 250 ms: raised, stamped last t + timeout
    dets += live.on_idle(100.35)     # not twice
    dets += live.process(b2)
    assert _loss(dets) == expected
    assert [d for d in dets if d.condition != C.SIGNAL_LOSS] == []


def test_short_gap_is_not_signal_loss():
    t, s, st = steady(4.0)
    a, b = t < 2.0, t >= 2.2   # 210 ms without frames, frames were lost
    dets, _ = run([block(t[a], s[a], st[a]), block(t[b], s[b], st[b], lost_before=20, gap_before=True)])
    assert dets == []


def test_link_lost_raises_at_once():
    t, s, st = steady(2.0)
    ch = Checker(MonitorConfig(), 1)
    assert ch.on_message(LinkEvent(LinkState.ERROR, host_time=49.0, message="no valid data")) == []
    ch.process(block(t, s, st, host_time=50.0))
    (d,) = ch.on_message(LinkEvent(LinkState.LOST, host_time=50.05, message="unplugged"))
    assert d.active and d.cup is None and d.t == pytest.approx(t[-1] + 0.05)
    assert ch.on_idle(51.0) == []    # already raised
    t2 = t + 5.0
    (c,) = ch.process(block(t2, s, st, host_time=56.0, gap_before=True))
    assert not c.active and c.t == pytest.approx(t2[0])


# ---- text-format devices (no status bits) -------------------------------------------------------

def test_text_mode_applied_from_suction_and_pump_conditions_skipped():
    t = np.arange(0, 40, 0.05)              # 20 Hz text lines
    s = np.interp(t, [0, 2, 4, 20, 20.5, 30, 31], [0, 0, 22, 22, 2.5, 2.5, 0])
    s = s + np.random.default_rng(5).normal(0, 0.05, s.shape)
    dets, ch = run([block(t, s)])
    assert not ch.status_bits
    # Suction collapses to 2.5 kPa at 20 s: under_suction (medium), never detached/leak/blockage.
    assert {d.condition for d in dets} == {C.UNDER_SUCTION}
    (r,) = raised(dets, C.UNDER_SUCTION)
    first_below = t[(t > 10) & (s < 19.0)][0]
    assert first_below + 2.0 <= r.t <= first_below + 2.0 + 0.05 + SLACK
    (c,) = cleared(dets, C.UNDER_SUCTION)   # ends when the cup is taken off (< 2 kPa)
    assert c.t > 30.0
    assert not ch.applied[0]


def test_text_mode_grace_counts_from_application():
    t = np.arange(0, 30, 0.05)
    s = np.interp(t, [0, 5, 6, 30], [0, 0, 12, 12])   # applied at ~5.4 s, never reaches 19
    dets, _ = run([block(t, s)])
    (r,) = raised(dets, C.UNDER_SUCTION)
    applied_at = t[s >= 5.0][0]
    assert applied_at + 10.0 + 2.0 <= r.t <= applied_at + 10.0 + 2.0 + SLACK


def test_status_bits_seen_midway_switch_to_binary_rules():
    t, s, st = steady(10.0, bits=0)
    st[t >= 5.0, 0] = REG
    _, ch = run([block(t, s, st)])
    assert ch.status_bits


def test_stuck_check_can_be_turned_off():
    t, s, st = regulated(30.0, noise=0.05)
    s[t >= 10.0, 0] = s[t >= 10.0, 0][0]
    dets, _ = run([block(t, s, st)], apply_overrides(MonitorConfig(), ["stuck_s=0"]))
    assert not raised(dets, C.SENSOR_FAULT)


def test_leak_clears_after_a_good_hold():
    leak = lambda ti: np.array([2.0 if 10.0 <= ti < 20.0 else 0.0])  # noqa: E731
    t, s, st = regulated(40.0, leak=leak, noise=0.05)
    dets, _ = run(split(t, s, st, 6))
    (r,) = raised(dets, C.LEAK)
    (c,) = cleared(dets, C.LEAK)
    last_restart = t[(t < 20.5) & ((st[:, 0] & PUMP) != 0)][-1]
    # The last top-up ends just after 20 s; a 5 s hold without decay clears it.
    assert 10.0 < r.t < 12.5 and last_restart + 5.0 <= c.t <= last_restart + 6.0
