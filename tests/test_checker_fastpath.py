"""The quiet-block shortcuts of monitor.runs (no edge in a mask, every row
deciding a latch, no segment start in a block) against plain per-row Python
references, on random blocks biased towards the quiet cases, carried across
random splits."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st_

from monitor.runs import SENTINEL, Segments, last_index, latch


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
