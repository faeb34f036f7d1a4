"""The quiet-block shortcuts of monitor.runs (no edge in a mask, every row
deciding a latch, no segment start in a block) against plain per-row Python
references, on random blocks biased towards the quiet cases, carried across
random splits."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st_
from test_checker import raised, regulated, run, split

from firmware_bridge import conditions as C
from monitor.runs import (
    SENTINEL,
    Lagged,
    MovingSum,
    RunClock,
    Segments,
    column_fold,
    last_index,
    latch,
)


def _ref_latch(set_, clear, prev):
    out = np.empty_like(set_)
    state = prev.copy()
    for i in range(set_.shape[0]):
        state = np.where(clear[i], False, np.where(set_[i], True, state))
        out[i] = state
    return out


def _ref_last_index(mask):
    out = np.full(mask.shape, -1, np.int64)
    last = np.full(mask.shape[1], -1, np.int64)
    for i in range(mask.shape[0]):
        last = np.where(mask[i], i, last)
        out[i] = last
    return out


def _ref_segments(code, t, value):
    """Whole-stream reference: segment start time, peak (code 1: minus the running
    minimum; other codes: the running maximum) and, for code 1, the largest rise."""
    n, cups = code.shape
    t0 = np.full((n, cups), np.nan)
    peak = np.full((n, cups), SENTINEL, np.int64)
    rise = np.full((n, cups), SENTINEL, np.int64)
    for c in range(cups):
        cur_t0, mx, mn, best, prev = np.nan, SENTINEL, None, SENTINEL, None
        for i in range(n):
            if code[i, c] != prev:
                cur_t0, mx, mn, best, prev = t[i], SENTINEL, None, SENTINEL, code[i, c]
            v = int(value[i, c])
            if v > SENTINEL:
                mx = max(mx, v)
                mn = v if mn is None else min(mn, v)
                best = max(best, v - mn)
            t0[i, c] = cur_t0
            if code[i, c] == 1:
                peak[i, c] = SENTINEL if mn is None else -mn
                rise[i, c] = best
            else:
                peak[i, c] = mx
    return t0, peak, rise


def _mask(draw, n, cups):
    kind = draw(st_.sampled_from(["none", "all", "rare", "half"]))
    rng = np.random.default_rng(draw(st_.integers(0, 2**32 - 1)))
    p = {"none": 0.0, "all": 1.0, "rare": 0.02, "half": 0.5}[kind]
    return rng.random((n, cups)) < p


def _splits(draw, n):
    cuts = sorted(set(draw(st_.lists(st_.integers(1, max(1, n - 1)), max_size=6))))
    return [0, *[c for c in cuts if 0 < c < n], n]


@settings(max_examples=150, deadline=None)
@given(data=st_.data())
def test_latch_and_last_index_match_per_row_reference(data):
    n = data.draw(st_.integers(1, 60))
    cups = data.draw(st_.integers(1, 4))
    set_ = _mask(data.draw, n, cups)
    clear = _mask(data.draw, n, cups)
    prev = np.array(data.draw(st_.lists(st_.booleans(), min_size=cups, max_size=cups)))
    bounds = _splits(data.draw, n)
    state, parts = prev, []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        part = latch(set_[a:b], clear[a:b], state)
        assert part.dtype == bool
        parts.append(part)
        state = part[-1]
        assert np.array_equal(last_index(set_[a:b]), _ref_last_index(set_[a:b]))
    assert np.array_equal(np.concatenate(parts), _ref_latch(set_, clear, prev))


@settings(max_examples=150, deadline=None)
@given(data=st_.data())
def test_segments_split_anywhere_match_reference(data):
    n = data.draw(st_.integers(1, 80))
    cups = data.draw(st_.integers(1, 3))
    rng = np.random.default_rng(data.draw(st_.integers(0, 2**32 - 1)))
    # Long runs of one code (quiet blocks with no segment start) and some changes.
    run = data.draw(st_.integers(1, 40))
    code = np.repeat(rng.integers(0, 3, (n // run + 1, cups)), run, axis=0)[:n]
    value = rng.integers(0, 9000, (n, cups))
    value[rng.random((n, cups)) < 0.1] = SENTINEL
    t = np.cumsum(rng.random(n)) * 1e-3
    seg = Segments(cups)
    outs = []
    bounds = _splits(data.draw, n)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        outs.append([np.array(x) for x in seg.step(code[a:b], t[a:b], value[a:b])])
    got = [np.concatenate([o[k] for o in outs]) for k in range(3)]
    for g, r in zip(got, _ref_segments(code, t, value), strict=True):
        assert np.array_equal(g, r, equal_nan=True)


# ---- the shortcuts added for throughput (docs/performance.md) -------------------------

def _ref_run_start(state, t, prev_state, prev_start):
    out = np.full(state.shape, np.nan)
    cur, start = prev_state.copy(), prev_start.copy()
    for i in range(state.shape[0]):
        start = np.where(state[i] & ~cur, t[i], start)
        cur = state[i]
        out[i] = np.where(cur, start, np.nan)
    return out


@settings(max_examples=150, deadline=None)
@given(data=st_.data())
def test_run_clock_split_anywhere_matches_reference(data):
    n = data.draw(st_.integers(1, 60))
    cups = data.draw(st_.integers(1, 5))
    # Per cup its own kind, so blocks mix quiet cups (on or off throughout) and busy ones.
    state = np.concatenate([_mask(data.draw, n, 1) for _ in range(cups)], axis=1)
    t = np.cumsum(np.random.default_rng(data.draw(st_.integers(0, 99))).random(n))
    clock = RunClock(cups)
    bounds = _splits(data.draw, n)
    parts = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        before = clock.state.copy()
        parts.append(clock.step(state[a:b], t[a:b]))
        assert np.array_equal(clock.held, before & state[a:b].all(axis=0))
        assert np.array_equal(clock.idle, ~state[a:b].any(axis=0))
    got = np.concatenate(parts)
    ref = _ref_run_start(state, t, np.zeros(cups, bool), np.full(cups, np.nan))
    assert np.array_equal(got, ref, equal_nan=True)


@settings(max_examples=100, deadline=None)
@given(data=st_.data())
def test_moving_sum_split_anywhere_matches_reference(data):
    n = data.draw(st_.integers(1, 80))
    cups = data.draw(st_.integers(1, 3))
    k = data.draw(st_.integers(1, 9))
    rng = np.random.default_rng(data.draw(st_.integers(0, 2**32 - 1)))
    q = rng.integers(-500, 9000, (n, cups))
    valid = rng.random((n, cups)) >= data.draw(st_.sampled_from([0.0, 0.0, 0.05, 0.5]))
    ms = MovingSum(cups, k)
    bounds = _splits(data.draw, n)
    got = np.concatenate([ms.step(q[a:b], valid[a:b])
                          for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    for i in range(n):
        lo = i - k + 1
        window_ok = lo >= 0 and valid[lo:i + 1].all(axis=0)
        want = np.where(window_ok, q[max(lo, 0):i + 1].sum(axis=0), SENTINEL)
        assert np.array_equal(got[i], want)


@settings(max_examples=100, deadline=None)
@given(data=st_.data())
def test_lagged_split_anywhere_matches_reference(data):
    n = data.draw(st_.integers(1, 120))
    cups = data.draw(st_.integers(1, 3))
    rng = np.random.default_rng(data.draw(st_.integers(0, 2**32 - 1)))
    even = data.draw(st_.booleans())  # evenly sampled streams take the slice shortcut
    t = np.arange(n) * 0.01 if even else np.cumsum(rng.random(n) * 0.02 + 1e-4)
    value = rng.integers(0, 9000, (n, cups))
    lag = np.full(cups, data.draw(st_.sampled_from([0.05, 0.1, 0.37])))
    lg = Lagged(cups)
    bounds = _splits(data.draw, n)
    got = np.concatenate([lg.step(t[a:b], value[a:b], lag)
                          for a, b in zip(bounds[:-1], bounds[1:], strict=True)])
    for i in range(n):
        j = np.flatnonzero(t <= t[i] - lag[0])
        want = value[j[-1]] if j.size else np.full(cups, SENTINEL)
        assert np.array_equal(got[i], want)


@settings(max_examples=60, deadline=None)
@given(n=st_.integers(1, 300), cups=st_.integers(1, 17), seed=st_.integers(0, 99))
def test_column_fold_is_the_column_reduction(n, cups, seed):
    x = np.random.default_rng(seed).normal(size=(n, cups))
    assert np.array_equal(column_fold(x, np.minimum), x.min(axis=0))
    assert np.array_equal(column_fold(x, np.maximum), x.max(axis=0))
    b = x > 1.0
    assert np.array_equal(column_fold(b, np.logical_or), b.any(axis=0))
    assert np.array_equal(column_fold(b, np.logical_and), b.all(axis=0))


def _quantised_stuck_stream(freeze_s: float):
    """A regulated cup whose ADC-quantised reading (0.1 kPa steps, so equal
    neighbours are common) freezes at 10 s for ``freeze_s`` seconds."""
    t, s, st = regulated(40.0, noise=0.08, seed=5)
    s = np.round(s / 0.1) * 0.1
    frozen = (t >= 10.0) & (t < 10.0 + freeze_s)
    s[frozen, 0] = s[frozen, 0][0]
    return t, s.astype(np.float32), st


@pytest.mark.parametrize("pieces", [3, 40, 400])
def test_stuck_sensor_found_the_same_whatever_the_block_size(pieces):
    # The "no row can be stuck" bound must never hide a stuck run, nor invent one:
    # a 6 s freeze is one fault (stuck_s 5 s + 0.5 s delay after it began), a
    # 4.8 s one none, in whole-stream and split checks alike.
    for freeze_s, expect in ((6.0, 1), (4.8, 0)):
        t, s, st = _quantised_stuck_stream(freeze_s)
        whole, _ = run(split(t, s, st, 1))
        faults = raised(whole, C.SENSOR_FAULT)
        assert len(faults) == expect
        assert all(15.0 <= d.t <= 15.5 for d in faults)
        assert run(split(t, s, st, pieces))[0] == whole
