"""Scenario library: every scenario runs and is deterministic, and its ground
truth agrees with the simulated true signals by the shared definitions."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge import conditions as cond
from firmware_bridge.protocol import EventCode, Status
from sim.engine import SimOutput, Simulation
from sim.scenarios import SCENARIOS, list_scenarios
from sim.truth import SignalTruth

NAMES = sorted(SCENARIOS)
SIGNAL_DEFINED = {cond.OVER_SUCTION, cond.UNDER_SUCTION, cond.INTERLOCK, cond.DWELL_EXCEEDED}
EXPECTED = {
    "normal": set(),
    "slow_leak": {cond.LEAK},
    "cup_detached": {cond.DETACHED, cond.UNDER_SUCTION},
    "over_suction": {cond.OVER_SUCTION, cond.INTERLOCK},
    "under_suction": {cond.UNDER_SUCTION},
    "pump_failure": {cond.BLOCKAGE, cond.UNDER_SUCTION},
    "blocked_line": {cond.BLOCKAGE, cond.UNDER_SUCTION},
    "sensor_fault": {cond.SENSOR_FAULT},
    "signal_loss": {cond.SIGNAL_LOSS},
    "noisy_link": set(),
    "dropped_frames": {cond.SIGNAL_LOSS},
    "ambient_change": {cond.OVER_SUCTION, cond.INTERLOCK},
    "dwell_exceeded": {cond.DWELL_EXCEEDED},
    "calibration_rig": {cond.OVER_SUCTION},  # the 30 kPa step is over the band, by definition
    "pump_test": set(),
}
_CACHE: dict[str, tuple[Simulation, SimOutput]] = {}


def full(name: str) -> tuple[Simulation, SimOutput]:
    """The scenario at its own duration, 4 cups, 20 Hz (10 Hz for the long ones)."""
    if name not in _CACHE:
        rate = 10 if SCENARIOS[name].duration_s > 300 else 20
        sim = Simulation(name, cups=4, rate_hz=rate, seed=11)
        _CACHE[name] = sim, sim.advance_to(sim.duration_s)
    return _CACHE[name]


def recs(sim: Simulation, name: str, cup: int | None = None) -> list:
    return [r for r in sim.truth if r.condition == name and (cup is None or r.cup == cup)]


def on(o: SimOutput, cup: int, flag: Status) -> np.ndarray:
    return (o.status[:, cup - 1] & flag) != 0


# --- registry ---------------------------------------------------------------------------

def test_registry_lists_every_scenario_with_a_one_line_description():
    assert set(EXPECTED) == set(SCENARIOS)
    listed = list_scenarios()
    assert [n for n, _ in listed] == list(SCENARIOS)
    for name, desc in listed:
        assert desc and "\n" not in desc and len(desc) < 100, name
        for key, (default, doc) in SCENARIOS[name].params.items():
            assert doc and default is not None, (name, key)


def test_parameters_are_coerced_and_unknown_ones_refused():
    sim = Simulation("slow_leak", cups=2, rate_hz=20, cup="1", leak_l_min="0.8", interlock="no")
    assert sim.params["cup"] == 1 and sim.params["leak_l_min"] == 0.8
    assert sim.params["interlock"] is False
    assert recs(sim, cond.LEAK)[0].cup == 1
    with pytest.raises(ValueError, match="unknown parameter 'leek_l_min'"):
        Simulation("slow_leak", leek_l_min=0.8)
    with pytest.raises(ValueError, match="not a number"):
        Simulation("slow_leak", leak_l_min="lots")
    with pytest.raises(ValueError, match="not a number"):
        Simulation("slow_leak", leak_l_min="0.1,0.2")
    sim = Simulation("normal", cups=2, rate_hz=20, seal_leak_l_min="0.01,0.5", leak_spread=0.0,
                     duration_s=60)
    o = sim.advance_to(60.0)
    duty = (o.status[o.t_s > 20.0] & Status.PUMP_ON).astype(bool).mean(axis=0)
    assert duty[1] > 10 * duty[0]  # cup 2 leaks
    with pytest.raises(ValueError, match="2 values for 3 cups"):
        Simulation("normal", cups=3, sensor_gain="1.0,1.1")
    with pytest.raises(ValueError, match="unknown scenario"):
        Simulation("nope")


# --- every scenario -----------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_every_scenario_runs_short_and_is_deterministic(name):
    a = Simulation(name, cups=3, rate_hz=50, seed=4, duration_s=5.0)
    b = Simulation(name, cups=3, rate_hz=50, seed=4, duration_s=5.0)
    oa, ob = a.advance_to(5.0), b.advance_to(5.0)
    assert oa.time_us.shape == (250,) and oa.suction_kpa.shape == (250, 3)
    for f in ("time_us", "suction_kpa", "status", "true_suction_kpa", "send"):
        assert np.array_equal(getattr(oa, f), getattr(ob, f), equal_nan=True)
    assert oa.events == ob.events and a.truth == b.truth
    assert a.duration_s == 5.0 and a.t_s == pytest.approx(5.0)


@pytest.mark.parametrize("name", NAMES)
def test_truth_is_well_formed_and_names_what_the_scenario_injects(name):
    sim, _ = full(name)
    assert {r.condition for r in sim.truth} == EXPECTED[name]
    for r in sim.truth:
        assert r.condition in cond.CONDITIONS
        assert (r.cup is None) == (r.condition in cond.DEVICE_WIDE)
        assert r.cup is None or 1 <= r.cup <= 4
        assert 0.0 <= r.t_start < sim.duration_s
        assert r.t_end is None or r.t_start < r.t_end <= sim.duration_s
        assert set(r.to_json()) == {"cup", "condition", "t_start", "t_end"}


@pytest.mark.parametrize("name", NAMES)
def test_signal_defined_truth_equals_the_conditions_in_the_true_signals(name):
    # The truth is computed up front (a dry run); the actual run must agree.
    sim, o = full(name)
    tracker = SignalTruth([1, 2, 3, 4], [cond.BAND_LOW_KPA] * 4, [cond.BAND_HIGH_KPA] * 4)
    tracker.feed(o.t_s, o.true_suction_kpa, o.status)
    seen = {(r.cup, r.condition, round(r.t_start, 6), r.t_end and round(r.t_end, 6))
            for r in tracker.records()}
    told = {(r.cup, r.condition, round(r.t_start, 6), r.t_end and round(r.t_end, 6))
            for r in sim.truth if r.condition in SIGNAL_DEFINED}
    assert seen == told


# --- each scenario's story --------------------------------------------------------------------

def test_normal_has_empty_truth_cups_in_band_then_vented():
    sim, o = full("normal")
    assert sim.truth == [] and sim.duration_s >= 600
    t = o.t_s
    starts = []
    for c in range(1, 5):
        reg = on(o, c, Status.REGULATING)
        t0 = t[np.argmax(reg)]
        starts.append(t0)
        held = reg & (t > t0 + 5.0)
        s = o.true_suction_kpa[held, c - 1]
        assert s.min() > cond.BAND_LOW_KPA and s.max() < cond.BAND_HIGH_KPA
        dwell = t[reg][-1] - t0
        assert 500 < dwell < cond.DWELL_ADVISORY_S
        assert on(o, c, Status.VALVE_OPEN)[-1] and not reg[-1]
        assert o.true_suction_kpa[-1, c - 1] < 0.5
    assert len(set(starts)) == 4  # applied in turn
    assert not o.events and o.send.all()


def test_normal_behaves_with_any_duration_and_sixteen_cups():
    sim = Simulation("normal", cups=16, rate_hz=100, seed=1, duration_s=3.0)
    o = sim.advance_to(3.0)
    assert sim.truth == [] and np.isfinite(o.suction_kpa).all()
    assert on(o, 1, Status.REGULATING)[-1] and not on(o, 16, Status.REGULATING).any()


def test_over_suction_interval_is_where_true_suction_exceeds_the_threshold():
    sim, o = full("over_suction")
    (over,) = recs(sim, cond.OVER_SUCTION)
    (lock,) = recs(sim, cond.INTERLOCK)
    t, s = o.t_s, o.true_suction_kpa[:, over.cup - 1]
    limit = cond.BAND_HIGH_KPA + cond.OVER_MARGIN_KPA
    inside = (t >= over.t_start) & (t < over.t_end)
    assert np.all(s[inside] > limit) and np.all(s[~inside] <= limit)
    assert over.t_start >= 30.0 and lock.t_start < over.t_end  # the interlock ends it
    trip = [e for e in o.events if e[1] == EventCode.INTERLOCK_TRIPPED]
    assert trip[0][0] * 1e-6 == pytest.approx(lock.t_start) and trip[0][2] == lock.cup
    assert lock.t_end is None


def test_cup_detached_collapses_within_a_second_with_the_pump_running():
    sim, o = full("cup_detached")
    (det,) = recs(sim, cond.DETACHED)
    t = o.t_s
    s = o.true_suction_kpa[:, det.cup - 1]
    assert det.t_start == pytest.approx(30.0)
    before = (t > 20.0) & (t < det.t_start)
    assert s[before].min() > cond.BAND_LOW_KPA
    soon = (t >= det.t_start + 1.0)
    assert np.all(s[soon] < cond.DETACHED_KPA)
    assert np.all(on(o, det.cup, Status.PUMP_ON)[soon] & on(o, det.cup, Status.REGULATING)[soon])
    (under,) = recs(sim, cond.UNDER_SUCTION, det.cup)
    assert det.t_start <= under.t_start < det.t_start + 0.2


def _duty(o: SimOutput, cup: int, mask: np.ndarray) -> float:
    return float(on(o, cup, Status.PUMP_ON)[mask].mean())


def _decay_rate(o: SimOutput, cup: int, mask: np.ndarray) -> float:
    """Median fall of true suction per second while the pump is off, kPa/s."""
    s = o.true_suction_kpa[:, cup - 1].astype(float)
    off = ~on(o, cup, Status.PUMP_ON) & mask
    d = -np.diff(s)[off[1:] & off[:-1]]
    return float(np.median(d) / np.median(np.diff(o.t_s)))


def test_slow_leak_keeps_the_pump_busy_while_the_cup_stays_in_band():
    sim, o = full("slow_leak")
    (leak,) = recs(sim, cond.LEAK)
    t, c = o.t_s, leak.cup
    before, after = (t > 15.0) & (t < leak.t_start), t > leak.t_start + 5.0
    assert _duty(o, c, after) > 0.05 and _duty(o, c, after) > 10 * _duty(o, c, before)
    assert _decay_rate(o, c, after) > 20 * _decay_rate(o, c, before)
    s = o.true_suction_kpa[after, c - 1]
    assert s.min() > cond.BAND_LOW_KPA - cond.UNDER_MARGIN_KPA
    assert s.max() < cond.BAND_HIGH_KPA + cond.OVER_MARGIN_KPA


@pytest.mark.parametrize("name", ["blocked_line", "pump_failure"])
def test_pump_runs_but_the_cup_does_not_follow(name):
    sim, o = full(name)
    (blk,) = recs(sim, cond.BLOCKAGE)
    t, c = o.t_s, blk.cup
    s = o.true_suction_kpa[:, c - 1].astype(float)
    after = t >= blk.t_start
    assert np.all(np.diff(s[after]) <= 1e-4)  # never rises again
    pump = on(o, c, Status.PUMP_ON)
    first_on = np.argmax(pump & after)
    assert pump[first_on:].all() and on(o, c, Status.REGULATING)[first_on:].all()
    (under,) = recs(sim, cond.UNDER_SUCTION, c)
    assert under.t_start > blk.t_start


def test_under_suction_plateaus_below_the_band_after_the_grace():
    sim, o = full("under_suction")
    (under,) = recs(sim, cond.UNDER_SUCTION)
    c, t = under.cup, o.t_s
    reg = on(o, c, Status.REGULATING)
    start = t[np.argmax(reg)]
    assert under.t_start == pytest.approx(start + cond.PUMPDOWN_GRACE_S)
    late = t > under.t_start
    s = o.true_suction_kpa[late, c - 1]
    assert s.max() < cond.BAND_LOW_KPA - cond.UNDER_MARGIN_KPA and np.ptp(s) < 0.05
    assert on(o, c, Status.PUMP_ON)[late].all()


def test_sensor_fault_truth_starts_at_the_injection():
    sim, o = full("sensor_fault")
    (rec,) = recs(sim, cond.SENSOR_FAULT)
    k = np.searchsorted(o.t_s, rec.t_start)
    r = o.suction_kpa[k:, rec.cup - 1]
    assert rec.t_start == pytest.approx(30.0) and np.all(r == r[0])
    assert r[0] != o.suction_kpa[k - 1, rec.cup - 1] or np.any(
        o.suction_kpa[k - 40:k, rec.cup - 1] != r[0])  # it was moving before
    assert any(e[1] == EventCode.SENSOR_FAULT for e in o.events)


def test_signal_loss_silences_the_device_and_truth_times_the_timeout():
    sim, o = full("signal_loss")
    (rec,) = recs(sim, cond.SIGNAL_LOSS)
    (a, b), = sim.silent_windows
    t = o.t_s
    gap = (t >= a) & (t < b)
    assert not o.send[gap].any() and o.send[~gap].all() and not o.link_lost.any()
    last_sent = t[~gap & (t < a)][-1]
    assert rec.t_start == pytest.approx(last_sent + cond.SIGNAL_LOSS_S)
    assert rec.t_end == pytest.approx(t[~gap & (t >= b)][0])


def test_dropped_frames_are_isolated_plus_one_burst():
    sim = Simulation("dropped_frames", cups=2, rate_hz=200, seed=3)
    o = sim.advance_to(sim.duration_s)
    (a, b), = sim.lost_windows
    t, lost = o.t_s, ~o.send
    assert np.array_equal(lost, o.link_lost)
    burst = (t >= a) & (t < b)
    assert lost[burst].all()
    iso = lost & ~burst
    assert not np.any(iso[1:] & iso[:-1])  # never two in a row
    assert 0.5 * 0.01 < iso.mean() < 1.5 * 0.01
    (rec,) = recs(sim, cond.SIGNAL_LOSS)
    assert rec.t_start == pytest.approx(t[~lost & (t < a)][-1] + cond.SIGNAL_LOSS_S)
    assert rec.t_end == pytest.approx(b)


def test_noisy_link_only_corrupts_the_wire():
    sim, o = full("noisy_link")
    assert sim.link_corruption_rate > 0 and sim.truth == [] and o.send.all()
    assert full("normal")[0].link_corruption_rate == 0.0


def test_ambient_change_drives_every_sealed_cup_over_the_band():
    sim, o = full("ambient_change")
    assert recs(sim, cond.INTERLOCK)
    for c in range(1, 5):
        (over,) = recs(sim, cond.OVER_SUCTION, c)
        assert over.t_start > 20.0
        assert all(lock.t_start > over.t_start for lock in recs(sim, cond.INTERLOCK, c))
        k = np.searchsorted(o.t_s, over.t_start)
        assert not on(o, c, Status.PUMP_ON)[k - 50:k].any()  # pushed by ambient, not pumped


def test_dwell_exceeded_starts_ten_minutes_after_start():
    sim, o = full("dwell_exceeded")
    (rec,) = recs(sim, cond.DWELL_EXCEEDED)
    reg = on(o, rec.cup, Status.REGULATING)
    start = o.t_s[np.argmax(reg)]
    assert rec.t_start == pytest.approx(start + cond.DWELL_ADVISORY_S) and rec.t_end is None
    assert reg[o.t_s >= rec.t_start].all()
    for c in set(range(1, 5)) - {rec.cup}:
        assert not on(o, c, Status.REGULATING)[-1]


def test_calibration_rig_steps_rise_then_fall_and_settle():
    sim, o = full("calibration_rig")
    refs = [v for _, _, v in sim.rig_steps]
    assert refs == [0, 5, 10, 15, 20, 25, 30, 25, 20, 15, 10, 5, 0]
    t = o.t_s
    for _a, b, ref in sim.rig_steps:
        m = (t >= b - 2.0) & (t < b)
        assert np.all(np.abs(o.true_suction_kpa[m] - ref) < 0.01)
    assert not np.any(o.status & (Status.REGULATING | Status.PUMP_ON))
    sim.set_reference(12.5)
    assert sim.reference_kpa == 12.5
    o2 = sim.advance(200)
    assert np.all(np.abs(o2.true_suction_kpa[-1] - 12.5) < 0.01)
    with pytest.raises(ValueError):
        Simulation("normal").set_reference(10.0)


def test_pump_test_holds_within_ten_percent_over_ten_minutes():
    # J Korean Acupunct Moxib Soc 2010: target in < 5 s, <= 10 % loss over 600 s held.
    sim = Simulation("pump_test", cups=1, rate_hz=10, seed=0, duration_s=700)
    assert sim.start(1) is None
    o = sim.advance_to(10.0)
    reach = o.t_s[np.argmax(o.true_suction_kpa[:, 0] >= cond.BAND_LOW_KPA)]
    assert reach < 5.0
    sim.stop(1)
    held = sim.advance_to(610.0).true_suction_kpa[:, 0]
    assert held[-1] < held[0] and held[-1] > 0.9 * held[0]


def test_truth_follows_the_device_clock_origin():
    base = Simulation("over_suction", cups=2, rate_hz=20, seed=1)
    late = Simulation("over_suction", cups=2, rate_hz=20, seed=1, t0_s=100.0)
    assert [r.condition for r in base.truth] == [r.condition for r in late.truth]
    for r0, r1 in zip(base.truth, late.truth, strict=True):
        assert r1.t_start == pytest.approx(r0.t_start + 100.0)
