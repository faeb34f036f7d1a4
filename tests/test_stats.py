"""Running statistics on data whose answers are known by hand."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitor.stats import Stats

LOW, HIGH = np.array([20.0]), np.array([25.0])


def feed(stats, t, s, applied=None, checked=None, valid=None, pieces=1):
    s = np.asarray(s, float).reshape(len(t), -1)
    ones = np.ones(s.shape, bool)
    applied = ones if applied is None else np.asarray(applied).reshape(s.shape)
    checked = ones if checked is None else np.asarray(checked).reshape(s.shape)
    valid = np.isfinite(s) if valid is None else valid
    edges = np.linspace(0, len(t), pieces + 1).astype(int)
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        stats.update(t[a:b], s[a:b], valid[a:b], applied[a:b], checked[a:b], LOW, HIGH)


def known():
    t = np.arange(100) * 0.1
    s = np.r_[np.full(50, 22.0), np.full(20, 26.0), np.full(30, 21.0)]
    return t, s


@pytest.mark.parametrize("pieces", [1, 7])
def test_known_block(pieces):
    st = Stats(1)
    t, s = known()
    feed(st, t, s, pieces=pieces)
    (c,) = st.summary()["cups"]
    # Each sample stands for the 0.1 s before it; the first has no past.
    assert c["time_applied_s"] == pytest.approx(9.9)
    assert c["time_in_target_s"] == pytest.approx(7.9)
    assert c["time_in_target_pct"] == pytest.approx(79.8, abs=0.05)
    assert c["excursions"] == 1 and c["excursion_time_s"] == pytest.approx(2.0)
    assert c["mean_kpa"] == pytest.approx(22.5)
    assert (c["min_kpa"], c["max_kpa"]) == (21.0, 26.0)
    inband = s[(s >= 20) & (s <= 25)]
    assert c["ripple_kpa"] == pytest.approx(np.std(inband, ddof=1), abs=1e-3)
    assert c["samples"] == 100
    assert st.summary()["duration_s"] == pytest.approx(9.9)


def test_pumpdown_and_invalid_samples_excluded_and_gaps_capped():
    st = Stats(1, max_dt=0.25)
    t = np.r_[np.arange(50) * 0.1, 10.0 + np.arange(50) * 0.1]   # 5 s gap in the middle
    s = np.r_[np.linspace(0, 22, 20), np.full(30, 22.0), np.full(50, 23.0)]
    s[60] = np.nan
    checked = np.r_[np.zeros(20, bool), np.ones(80, bool)]        # ramp = pump-down
    feed(st, t, s, checked=checked)
    (c,) = st.summary()["cups"]
    assert c["min_kpa"] == 22.0 and c["samples"] == 79
    assert c["time_checked_s"] == pytest.approx(79 * 0.1 + 0.25)  # the gap counts 0.25 s
    assert c["excursions"] == 0


def test_noise_at_band_edge_is_one_excursion():
    st = Stats(1)
    t = np.arange(400) * 0.01
    s = np.full(400, 22.0)
    s[100:300] = 25.0 + np.random.default_rng(0).uniform(-0.05, 0.05, 200)
    feed(st, t, s, pieces=5)
    (c,) = st.summary()["cups"]
    assert c["excursions"] == 1
    assert 1.0 < c["excursion_time_s"] <= 2.0


def test_two_cups_and_json():
    st = Stats(2)
    t = np.arange(10) * 0.5
    s = np.stack([np.full(10, 22.0), np.full(10, 18.0)], axis=1)
    feed(st, t, s)
    out = json.loads(json.dumps(st.summary()))
    a, b = out["cups"]
    assert (a["time_in_target_pct"], b["time_in_target_pct"]) == (100.0, 0.0)
    assert b["excursions"] == 1 and a["ripple_kpa"] == 0.0


def test_empty_summary_has_nulls():
    (c,) = Stats(1).summary()["cups"]
    assert c["mean_kpa"] is None and c["time_in_target_pct"] is None and c["min_kpa"] is None


@pytest.mark.parametrize("seed", range(6))
def test_any_split_gives_the_same_summary(seed):
    # Steady in-band stretches (the shortcut) alternate with excursions, invalid
    # and unchecked samples (the full path); splitting must not change a figure.
    rng = np.random.default_rng(seed)
    n, cups = 3000, 3
    t = np.cumsum(rng.uniform(0.005, 0.015, n))
    s = 22.5 + rng.normal(0, 0.4, (n, cups))
    s[rng.random((n, cups)) < 0.002] += 6.0             # short excursions above the band
    s[1200:1300, 1] = 19.0                              # a longer one below
    valid = rng.random((n, cups)) > 0.001
    checked = np.ones((n, cups), bool)
    checked[:200] = False                               # pump-down
    whole, parts = Stats(cups), Stats(cups)
    lo, hi = np.full(cups, 20.0), np.full(cups, 25.0)
    whole.update(t, s, valid, checked, checked, lo, hi)
    cuts = np.sort(rng.choice(np.arange(1, n), 25, replace=False))
    for a, b in zip(np.r_[0, cuts], np.r_[cuts, n], strict=True):
        parts.update(t[a:b], s[a:b], valid[a:b], checked[a:b], checked[a:b], lo, hi)
    for w, p in zip(whole.summary()["cups"], parts.summary()["cups"], strict=True):
        for key, value in w.items():
            assert p[key] == pytest.approx(value, abs=1e-3), key
    assert whole.excursions.sum() > 3
