"""Calibration arithmetic without a device: polynomial, plan, settling, fit
and its second-order criterion, hysteresis/repeatability/non-linearity,
uncertainty and the guarded-acceptance decision rule."""

import math

import numpy as np
import pytest

from firmware_bridge.protocol import Status
from monitor.calibration import (
    FALLING,
    REPEAT,
    RISING,
    CalibrationError,
    CalPoint,
    CupState,
    Poly,
    SettleCriteria,
    Tolerance,
    analyse_cup,
    assess_window,
    decide,
    fit_points,
    hysteresis_kpa,
    make_plan,
    nonlinearity_kpa,
    parse_cups,
    parse_points,
    repeatability_kpa,
    t975,
)


def test_poly_applies_and_inverts_first_and_second_order():
    for p in (Poly(-1.14, 0.952, 0.0), Poly(0.3, 1.02, -4e-4), Poly()):
        raw = np.linspace(-2, 40, 50)
        assert np.allclose(p.inverse(p(raw)), raw, atol=1e-9)
    assert Poly(1.0, 2.0, 0.5)(2.0) == pytest.approx(1 + 4 + 2)
    assert Poly().is_identity and not Poly(0.0, 1.0, 1e-9).is_identity


def test_tolerance_in_kpa_or_percent_of_span():
    assert Tolerance.parse("0.5").kpa(30) == 0.5
    assert Tolerance.parse("0.5 kPa").kpa(30) == 0.5
    t = Tolerance.parse("1%")
    assert t.percent_of_span and t.kpa(30) == pytest.approx(0.3)
    for bad in ("", "abc", "-1", "0", "nan%"):
        with pytest.raises(ValueError):
            Tolerance.parse(bad)


def test_plan_rises_then_falls_and_repeats_at_zero_and_mid_span():
    plan = make_plan()
    assert [s.nominal_kpa for s in plan] == [0, 5, 10, 15, 20, 25, 30, 25, 20, 15, 10, 5, 0]
    assert [s.series for s in plan] == [RISING] * 7 + [FALLING] * 6
    assert [s.index for s in plan] == list(range(1, 14))
    rep = make_plan((0, 10, 20, 30), repeats=2)
    tail = [(s.nominal_kpa, s.series) for s in rep[7:]]
    # mid-span of 0..30 is 15: the nearest point is 10 or 20 (first found: 10)
    assert tail == [(10.0, REPEAT), (0.0, REPEAT)] * 2
    assert [s.series for s in make_plan((0, 5), falling=False, series="verify")] == ["verify"] * 2


def test_points_and_cups_parsing():
    assert parse_points("0, 10;20") == (0.0, 10.0, 20.0)
    for bad in ("5", "5,5", "a,b", "-1,5", "0,150"):
        with pytest.raises(ValueError):
            parse_points(bad)
    assert parse_cups("all", 4) == [1, 2, 3, 4] and parse_cups("3,1", 4) == [1, 3]
    for bad in ("0", "5", "x", ","):
        with pytest.raises(ValueError):
            parse_cups(bad, 4)


def _window(values, rate=100.0, seconds=2.0, noise=0.1, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    x = np.column_stack([v(t) if callable(v) else np.full(t.size, v) for v in values])
    return t, x + rng.normal(0, noise, x.shape)


def test_settled_on_part_means_despite_noise_but_not_while_moving():
    crit = SettleCriteria(band_kpa=0.1, time_s=2.0)
    t, x = _window([20.0, 5.0])           # 0.1 kPa rms noise: raw samples spread ~0.6 kPa
    a = assess_window(t, x, None, crit)
    assert a.ok and a.spread_kpa < 0.1
    assert [r.mean_kpa for r in a.readings] == pytest.approx([20.0, 5.0], abs=0.03)
    assert all(r.n == t.size and 0.08 < r.sd_kpa < 0.12 for r in a.readings)
    t, x = _window([lambda t: 20.0 + 0.2 * t, 5.0])   # 0.2 kPa/s drift: 0.32 kPa over the parts
    a = assess_window(t, x, None, crit)
    assert not a.ok and "moving" in a.reason and a.spread_kpa > 0.2


def test_not_settled_with_a_gap_a_missing_reading_or_a_sensor_fault():
    crit = SettleCriteria(band_kpa=0.1, time_s=2.0)
    t, x = _window([20.0])
    keep = (t < 0.5) | (t > 1.5)
    assert not assess_window(t[keep], x[keep], None, crit).ok
    x2 = x.copy()
    x2[10, 0] = np.nan
    assert not assess_window(t, x2, None, crit).ok
    st = np.zeros(x.shape, dtype=np.uint8)
    st[5, 0] = Status.SENSOR_FAULT
    assert not assess_window(t, x, st, crit).ok
    assert not assess_window(t[:int(t.size / 4)], x[:int(t.size / 4)], None, crit).ok


def test_t_quantiles_from_the_table_and_between():
    assert t975(1) == 12.706 and t975(10) == 2.228
    assert 2.021 < t975(35) < 2.042
    assert 1.960 < t975(1000) < 1.980
    assert math.isinf(t975(0))


def test_fit_is_first_order_for_a_linear_sensor():
    rng = np.random.default_rng(1)
    ref = np.array([0, 5, 10, 15, 20, 25, 30, 25, 20, 15, 10, 5, 0], dtype=float)
    raw = 1.05 * ref + 1.2 + rng.normal(0, 0.01, ref.size)
    fit = fit_points(raw, ref)
    assert fit.order == 1 and fit.poly.c2 == 0.0
    assert fit.poly.c1 == pytest.approx(1 / 1.05, rel=1e-3)
    assert fit.poly.c0 == pytest.approx(-1.2 / 1.05, abs=0.02)
    assert fit.reason.startswith("first order")


def test_fit_takes_second_order_only_when_it_clearly_helps():
    ref = np.array([0, 5, 10, 15, 20, 25, 30, 25, 20, 15, 10, 5, 0], dtype=float)
    rng = np.random.default_rng(2)
    noise = rng.normal(0, 0.005, ref.size)
    bent = ref + 0.002 * (ref - 15) ** 2 + noise     # 0.45 kPa of bow: clearly second order
    fit = fit_points(bent, ref)
    assert fit.order == 2 and fit.f_stat > fit.f_crit and fit.max1 - fit.max2 >= 0.05
    assert np.abs(fit.poly(bent) - ref).max() < 0.03
    slight = ref + 0.0002 * (ref - 15) ** 2 + noise  # F-test passes, but only ~0.03 kPa gained
    fit = fit_points(slight, ref)
    assert fit.order == 1 and "falls by only" in fit.reason
    assert fit_points(bent[:4], ref[:4]).order == 1     # too few points to test the term


def test_fit_refuses_a_falling_or_flat_sensor():
    with pytest.raises(CalibrationError):
        fit_points([5, 4, 3], [0, 10, 20])
    with pytest.raises(CalibrationError):
        fit_points([5, 5, 5], [0, 10, 20])


def _points(errors_rise, errors_fall=(), nominals=(0, 10, 20, 30), cup=1, sd=0.1, n=100,
            extra=()):
    pts, i = [], 1
    for nom, e in zip(nominals, errors_rise, strict=False):
        pts.append(CalPoint(cup, i, RISING, nom, nom, nom + e, nom + e, sd, n, 0, 1))
        i += 1
    for nom, e in zip(list(nominals)[-2::-1], errors_fall, strict=False):
        pts.append(CalPoint(cup, i, FALLING, nom, nom, nom + e, nom + e, sd, n, 0, 1))
        i += 1
    for nom, series, e in extra:
        pts.append(CalPoint(cup, i, series, nom, nom, nom + e, nom + e, sd, n, 0, 1))
        i += 1
    return pts


def test_hysteresis_nonlinearity_and_repeatability():
    pts = _points([0.0, 0.1, 0.2, 0.3], [0.25, 0.1, 0.05],
                  extra=[(10, REPEAT, 0.14), (0, REPEAT, 0.02), (10, REPEAT, 0.08)])
    # rising vs falling at 20: |0.2 - 0.25|, at 10: 0, at 0: |0 - 0.05| -> 0.05
    assert hysteresis_kpa(pts) == pytest.approx(0.05)
    # mid: rising 0.1 with repeats 0.14, 0.08 -> 0.06; zero: falling 0.05 with 0.02 -> 0.03
    assert repeatability_kpa(pts) == pytest.approx(0.06)
    assert repeatability_kpa(_points([0, 0.1, 0.2, 0.3])) is None
    assert nonlinearity_kpa(_points([0.0, 0.1, 0.2, 0.3])) == pytest.approx(0.0, abs=1e-9)
    bowed = _points([0.0, 0.2, 0.2, 0.0])
    assert nonlinearity_kpa(bowed) == pytest.approx(0.1, abs=1e-9)


def test_decision_rule_has_a_guard_band_of_U():
    assert decide(0.30, 0.1, 0.5) == "pass"
    assert decide(-0.40, 0.1, 0.5) == "pass"
    assert decide(0.45, 0.1, 0.5) == "not demonstrated"
    assert decide(-0.51, 0.1, 0.5) == "fail"


def test_analyse_offset_and_gain_error_fails_as_found_and_passes_as_left():
    ref = [0, 5, 10, 15, 20, 25, 30, 25, 20, 15, 10, 5, 0]
    pts = []
    for i, r in enumerate(ref):
        raw = 1.05 * r + 1.2
        pts.append(CalPoint(1, i + 1, RISING if i < 7 else FALLING, r, r, raw, raw, 0.1, 100,
                            0, 1))
    res = analyse_cup(1, pts, Tolerance(0.5))
    assert not res.as_found.passed and res.as_found.max_abs_error_kpa == pytest.approx(2.7)
    assert res.as_left.passed and res.as_left.max_abs_error_kpa < 1e-9
    assert not res.verified and "computed" in res.as_left.method
    assert res.passed and res.result == "PASS"
    # U: 0.01 kPa resolution and 0.01 kPa standard error of a mean -> ~0.021 kPa
    assert res.as_left.uncertainty.expanded == pytest.approx(2 * math.hypot(0.01 / math.sqrt(12),
                                                                            0.1 / 10 * (1 / 1.05)),
                                                             rel=1e-6)
    # 1 % of a 30 kPa span is 0.3 kPa
    assert analyse_cup(1, pts, Tolerance(1.0, True)).as_left.tolerance_kpa == pytest.approx(0.3)


def test_as_found_through_an_existing_host_calibration():
    before = CupState(Poly(-1.0, 1.0, 0.0), False, "old calibration")
    pts = []
    for i, r in enumerate([0.0, 10.0, 20.0]):
        ind, raw = before.indicate(r + 1.0)     # raw = truth + 1 -> old poly shows the truth
        pts.append(CalPoint(1, i + 1, RISING, r, r, ind, raw, 0.05, 100, 0, 1))
    res = analyse_cup(1, pts, Tolerance(0.5), before=before)
    assert res.as_found.max_abs_error_kpa == pytest.approx(0.0, abs=1e-12) and res.as_found.passed
    device = CupState(Poly(0.5, 1.0, 0.0), True)
    assert device.indicate(10.0) == (10.0, 9.5)
