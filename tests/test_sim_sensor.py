"""Sensor model: MPXV6115V transfer, ADC, errors, lag, ripple, faults and the
device's own fault checks (status bit and EVENTs)."""

from __future__ import annotations

import numpy as np
import pytest

from firmware_bridge.protocol import EventCode, NackReason, Status
from sim import sensor
from sim.engine import Simulation
from sim.sensor import SensorParams


def fault_bits(o, cup: int) -> np.ndarray:
    return (o.status[:, cup] & Status.SENSOR_FAULT) != 0


# --- the chain, as functions -------------------------------------------------------------

def test_mpxv6115v_transfer_function():
    p = SensorParams(ripple=0.0, noise_kpa=0.0)
    z = np.zeros(3)
    v = sensor.output_voltage(np.array([0.0, -22.5, -100.0]), z, z, p, 0.0)
    assert v == pytest.approx(5.0 * (0.007652 * np.array([0.0, -22.5, -100.0]) + 0.92))
    assert (v[0] - v[1]) / 22.5 == pytest.approx(0.03826, rel=1e-3)  # ~38 mV/kPa at 5 V
    # saturation at the output's range ends
    v = sensor.output_voltage(np.array([20.0, -200.0]), z[:2], z[:2], p, 0.0)
    assert v.tolist() == [p.v_sat_high, p.v_sat_low]


@pytest.mark.parametrize("bits,lsb", [(10, 0.1276), (12, 0.0319)])
def test_adc_round_trip_is_within_half_a_code(bits, lsb):
    p = SensorParams(adc_bits=bits, ripple=0.0, noise_kpa=0.0)
    assert p.lsb_kpa() == pytest.approx(lsb, rel=1e-3)
    s = np.linspace(0.0, 60.0, 2001)
    z = np.zeros_like(s)
    code = sensor.adc_code(sensor.output_voltage(sensor.sensor_input(s, z, 1.0, 0.0, p), z, z,
                                                 p, 0.0), p)
    raw = sensor.raw_suction(code, p, np.zeros(1))
    assert np.max(np.abs(raw - s)) <= 0.5 * p.lsb_kpa() + 1e-9
    assert np.unique(raw).size < s.size  # quantised


def test_offset_and_gain_errors_enter_as_documented():
    p = SensorParams()
    s = np.array([0.0, 10.0, 25.0])
    raw = sensor.ideal_raw(s, np.zeros(3), 1.05, 1.2, p, np.zeros(1))
    assert raw == pytest.approx(1.05 * s + 1.2)


def test_run_lengths_and_since_flag_carry_across_chunks():
    codes = np.array([5, 5, 5, 6, 6, 7, 7, 7, 7])[:, None]
    whole = sensor.run_lengths(codes, np.array([-2]), np.array([0]))
    a = sensor.run_lengths(codes[:4], np.array([-2]), np.array([0]))
    b = sensor.run_lengths(codes[4:], codes[3], a[-1])
    assert whole[:, 0].tolist() == [0, 1, 2, 0, 1, 0, 1, 2, 3]
    assert np.concatenate([a, b])[:, 0].tolist() == whole[:, 0].tolist()
    flag = np.array([0, 1, 0, 0, 0, 1, 0], dtype=bool)[:, None]
    assert sensor.since_flag(flag, np.array([10]))[:, 0].tolist() == [11, 0, 1, 2, 3, 0, 1]


# --- the simulated device -------------------------------------------------------------

def test_noise_free_readings_are_quantised_to_the_adc():
    sim = Simulation("calibration_rig", cups=1, rate_hz=50, noise_kpa=0.0, ripple=0.0, lag_s=0.0)
    o = sim.advance_to(60.0)
    r = o.suction_kpa[:, 0].astype(float)
    lsb = SensorParams().lsb_kpa()
    steps = np.diff(np.unique(r))
    assert np.allclose(steps / lsb, np.round(steps / lsb), atol=1e-3)
    assert np.max(np.abs(r - o.true_suction_kpa[:, 0])) <= 0.5 * lsb + 1e-3


def test_noise_has_the_configured_rms():
    sim = Simulation("calibration_rig", cups=1, rate_hz=200, ripple=0.0, adc_bits=16,
                     noise_kpa=0.3)
    o = sim.advance_to(14.0)
    settled = o.t_s > 10.0  # the 0 kPa step, chamber steady
    err = o.suction_kpa[settled, 0] - o.true_suction_kpa[settled, 0]
    assert np.std(err) == pytest.approx(0.3, rel=0.1)


def test_supply_ripple_shows_in_a_ratiometric_reading():
    sim = Simulation("calibration_rig", cups=1, rate_hz=1000, noise_kpa=0.0, adc_bits=16,
                     ripple=0.01, ripple_hz=50.0)
    o = sim.advance_to(14.0)
    m = o.t_s > 10.0
    r = o.suction_kpa[m, 0].astype(float)
    # amplitude = ripple * Vout/Vs / sensitivity: 0.01 * 0.92 / 0.007652 kPa at 0 kPa
    amp = 0.01 * 0.92 / 0.007652
    assert np.std(r) == pytest.approx(amp / np.sqrt(2), rel=0.05)
    spectrum = np.abs(np.fft.rfft(r - r.mean()))
    freqs = np.fft.rfftfreq(r.size, 1e-3)
    assert freqs[np.argmax(spectrum)] == pytest.approx(50.0, abs=0.5)


def test_offset_and_gain_on_the_calibration_rig():
    sim = Simulation("calibration_rig", cups=2, rate_hz=50, sensor_offset_kpa=1.2,
                     sensor_gain="1.05,0.98")
    o = sim.advance_to(sim.duration_s)
    for _a, b, ref in sim.rig_steps:
        m = (o.t_s >= b - 3.0) & (o.t_s < b)
        assert o.suction_kpa[m, 0].mean() == pytest.approx(1.05 * ref + 1.2, abs=0.12)
        assert o.suction_kpa[m, 1].mean() == pytest.approx(0.98 * ref + 1.2, abs=0.12)


def test_lag_delays_the_reading():
    slow = Simulation("normal", cups=1, rate_hz=1000, seed=0, lag_s=0.2, noise_kpa=0.0,
                      duration_s=60)
    slow.advance_to(20.0)
    slow.vent(1)
    o = slow.advance(2000)
    t = (o.time_us - o.time_us[0]) * 1e-6
    r, s = o.suction_kpa[:, 0], o.true_suction_kpa[:, 0]
    half_true = t[np.argmax(s < 11.0)]
    half_read = t[np.argmax(r < 11.0)]
    assert 0.1 < half_read - half_true < 0.3  # lags by about tau


def test_zero_tares_the_present_reading():
    sim = Simulation("calibration_rig", cups=2, rate_hz=50, sensor_offset_kpa=1.2)
    sim.advance_to(12.0)  # at the 0 kPa step
    assert sim.zero(0b01) is None
    o = sim.advance(100)  # to 14 s
    assert abs(o.suction_kpa[:, 0].mean()) < 0.1
    assert o.suction_kpa[:, 1].mean() == pytest.approx(1.2, abs=0.12)
    assert sim.zero(0) == NackReason.BAD_CUP


def test_device_side_calibration_is_applied_and_flagged():
    sim = Simulation("calibration_rig", cups=2, rate_hz=50, sensor_offset_kpa=1.2,
                     cal_on_device=True)
    assert sim.read_cal(1) == ((0.0, 1.0, 0.0), False)
    assert sim.write_cal(1, (-1.2, 1.0, 0.0)) is None
    assert sim.read_cal(1) == ((-1.2, 1.0, 0.0), True)
    o = sim.advance_to(14.0)
    assert np.all(o.status[:, 0] & Status.CALIBRATED)
    assert not np.any(o.status[:, 1] & Status.CALIBRATED)
    m = o.t_s > 10.0
    assert abs(o.suction_kpa[m, 0].mean()) < 0.12
    assert sim.write_cal(3, (0, 1, 0)) == NackReason.BAD_CUP
    assert sim.write_cal(1, (0, float("nan"), 0)) == NackReason.OUT_OF_RANGE


def test_host_side_calibration_is_stored_not_applied():
    sim = Simulation("calibration_rig", cups=1, rate_hz=50, sensor_offset_kpa=1.2)
    assert sim.write_cal(1, (-1.2, 1.0, 0.0)) is None
    o = sim.advance_to(14.0)
    assert not np.any(o.status[:, 0] & Status.CALIBRATED)
    assert o.suction_kpa[o.t_s > 10.0, 0].mean() == pytest.approx(1.2, abs=0.12)


# --- faults and the device's checks ----------------------------------------------------

def _fault_run(fault: str, rate: int = 100, **kw):
    sim = Simulation("sensor_fault", cups=2, rate_hz=rate, seed=1, fault=fault, **kw)
    o = sim.advance_to(sim.duration_s)
    return sim, o


def test_stuck_sensor_is_flagged_after_the_stuck_window_and_stops_the_pump():
    sim, o = _fault_run("stuck")
    t = o.t_s
    onset = np.searchsorted(t, 30.0)
    r = o.suction_kpa[onset:, 1]
    assert np.all(r == r[0])
    flagged = fault_bits(o, 1)
    first = t[np.argmax(flagged)]
    assert 30.0 + 0.9 <= first <= 30.0 + 1.0 + 0.02
    assert np.all(flagged[t >= first])
    assert not np.any(o.status[t >= first, 1] & Status.PUMP_ON)
    ev = [e for e in o.events if e[1] == EventCode.SENSOR_FAULT]
    assert len(ev) == 1 and ev[0][2] == 2 and ev[0][0] == o.time_us[np.argmax(flagged)]
    assert not np.any(fault_bits(o, 0))
    assert sim.start(0b10) == NackReason.SENSOR_FAULT
    assert sim.zero(0b10) == NackReason.SENSOR_FAULT


@pytest.mark.parametrize("fault,reads", [("rail_high", -5.2), ("rail_low", 115.0)])
def test_rail_faults_are_flagged_at_once(fault, reads):
    _, o = _fault_run(fault)
    onset = int(np.searchsorted(o.t_s, 30.0))
    assert not np.any(fault_bits(o, 1)[:onset])
    assert np.all(fault_bits(o, 1)[onset:])
    assert o.suction_kpa[onset:, 1].mean() == pytest.approx(reads, abs=0.5)
    ev = [e for e in o.events if e[1] == EventCode.SENSOR_FAULT]
    assert ev[0][0] == o.time_us[onset]
    assert ev[0][3] == pytest.approx(o.suction_kpa[onset, 1] / 0.01, abs=1)


def test_dropouts_are_nan_flagged_and_clear_with_an_ok_event():
    _, o = _fault_run("dropout", dropout_rate=0.3, fault_duration_s=5.0)
    t, r = o.t_s, o.suction_kpa[:, 1]
    during = (t >= 30.0) & (t < 35.0)
    frac = np.isnan(r[during]).mean()
    assert 0.2 < frac < 0.4
    assert not np.isnan(r[~during]).any()
    first = np.argmax(during & np.isnan(r))
    assert not np.any(fault_bits(o, 1)[:first]) and np.all(fault_bits(o, 1)[first:][during[first:]])
    codes = [(e[1], e[2]) for e in o.events]
    assert codes == [(EventCode.SENSOR_FAULT, 2), (EventCode.SENSOR_OK, 2)]
    ok_t = o.events[1][0] * 1e-6
    last_nan = t[during][np.isnan(r[during])][-1]
    assert ok_t == pytest.approx(last_nan + 0.5, abs=0.011)  # fault_clear_s after the last sign
    assert o.events[0][3] == -32768  # "no reading"


@pytest.mark.parametrize("rate", [10, 100])
def test_a_healthy_noisy_sensor_is_never_flagged_stuck(rate):
    sim = Simulation("normal", cups=4, rate_hz=rate, seed=2)
    o = sim.advance_to(sim.duration_s)
    assert not np.any(o.status & Status.SENSOR_FAULT)
    assert not o.events


def test_noise_free_sensor_is_flagged_stuck_as_firmware_would():
    # documented limit: the stuck check needs sensor noise of about 1 LSB
    sim = Simulation("pump_test", cups=1, rate_hz=50, noise_kpa=0.0, ripple=0.0, duration_s=5)
    o = sim.advance_to(5.0)
    assert np.any(o.status[:, 0] & Status.SENSOR_FAULT)
