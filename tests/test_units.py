"""Pressure unit conversion and display formatting."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from monitor.units import (
    DECIMALS,
    PER_KPA,
    format_pressure,
    from_kpa,
    normalize_unit,
    parse_pressure,
    to_kpa,
)


@pytest.mark.parametrize("unit,value", [("mmHg", 7.50062), ("inHg", 0.295300),
                                        ("cmH2O", 10.1972), ("kPa", 1.0)])
def test_factors_from_domain_notes(unit, value):
    assert from_kpa(1.0, unit) == pytest.approx(value, rel=1e-12)


def test_band_in_mmhg():
    # domain.md: 20-25 kPa suction = 150-188 mmHg
    assert round(from_kpa(20.0, "mmHg")) == 150 and round(from_kpa(25.0, "mmHg")) == 188


@given(st.floats(-400, 400, allow_nan=False), st.sampled_from(sorted(PER_KPA)))
def test_round_trip(kpa, unit):
    assert to_kpa(from_kpa(kpa, unit), unit) == pytest.approx(kpa, abs=1e-9)


def test_arrays_and_nan():
    out = from_kpa(np.array([20.0, np.nan]), "mmHg")
    assert out[0] == pytest.approx(150.0124) and math.isnan(out[1])


@pytest.mark.parametrize("unit,text", [("kPa", "22.5 kPa"), ("mmHg", "169 mmHg"),
                                       ("inHg", "6.66 inHg"), ("cmH2O", "230 cmH2O")])
def test_format_decimals(unit, text):
    assert format_pressure(22.54, unit) == text


def test_decimals_resolve_about_a_tenth_of_a_kpa():
    for unit, d in DECIMALS.items():
        step_kpa = 10.0 ** -d / PER_KPA[unit]
        assert 0.03 <= step_kpa <= 0.14, unit


def test_format_no_value_and_negative_zero():
    assert format_pressure(None) == "-- kPa"
    assert format_pressure(float("nan"), "mmHg", with_unit=False) == "--"
    assert format_pressure(-0.01) == "0.0 kPa"


def test_names_and_parsing():
    assert normalize_unit(" MMHG ") == "mmHg" and normalize_unit("cm H2O") == "cmH2O"
    assert parse_pressure("150 mmHg") == pytest.approx(19.998, abs=1e-3)
    assert parse_pressure("22.5") == 22.5 and parse_pressure(3) == 3.0
    assert parse_pressure("6.6inHg") == pytest.approx(22.35, abs=0.01)
    with pytest.raises(ValueError, match="unknown pressure unit"):
        normalize_unit("psi")
    with pytest.raises(ValueError, match="not a pressure"):
        parse_pressure("high")
