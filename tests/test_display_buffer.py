"""DisplayBuffer: min/max decimation against brute force, gaps, wraparound, threads."""

from __future__ import annotations

import math
import threading

import numpy as np
import pytest

from firmware_bridge.messages import DeviceInfo, LinkEvent, LinkState, SampleBlock
from monitor.display_buffer import CHUNK, DisplayBuffer


def block(t: np.ndarray, y: np.ndarray, gap: bool = False) -> SampleBlock:
    return SampleBlock(np.asarray(t, float), np.asarray(y, np.float32),
                       np.zeros(y.shape, np.uint8), gap_before=gap)


def feed(buf: DisplayBuffer, t: np.ndarray, y: np.ndarray, sizes=(7, 50, 1, 333)) -> None:
    """Write t (n,), y (n, cups) in blocks of varying sizes."""
    i, k = 0, 0
    while i < len(t):
        n = sizes[k % len(sizes)]
        buf.on_block(block(t[i:i + n], y[i:i + n]))
        i, k = i + n, k + 1


def brute(t, y, t0, t1, columns, level=0, first=0):
    """Reference by brute force. Level 0: per bin of width dt on the absolute
    grid touching [t0, t1], nanmin/nanmax of its samples. Level L: the same over chunks of
    CHUNK**L samples (absolute index from 0, none before ``first``), each
    chunk in the bin of its first sample. Empty bins dropped."""
    dt = (t1 - t0) / columns
    k_a, k_b = math.floor(t0 / dt), math.floor(t1 / dt)
    size = CHUNK**level
    ref: dict[int, tuple[list, list]] = {}
    for c in range(-(-first // size), -(-len(t) // size)):
        tc = t[c * size]
        b = math.floor(tc / dt)
        if not k_a <= b <= k_b:                 # whole columns touching the window
            continue
        v = y[c * size:(c + 1) * size]
        lo0, hi0 = ref.get(b, ([], []))
        ref[b] = (lo0 + [v], hi0)
    keys = sorted(ref)
    lo = [[np.nanmin(c) if np.isfinite(c).any() else np.nan
           for c in np.concatenate(ref[k][0]).T] for k in keys]
    hi = [[np.nanmax(c) if np.isfinite(c).any() else np.nan
           for c in np.concatenate(ref[k][0]).T] for k in keys]
    return (np.array([(k + 0.5) * dt for k in keys]),
            np.array(lo, np.float32), np.array(hi, np.float32))


def check(buf, t, y, t0, t1, cols, first=0):
    got = buf.view(t0, t1, cols)
    ref = brute(t, y, t0, t1, cols, buf.level(t0, t1, cols), first)
    np.testing.assert_allclose(got[0], ref[0])
    np.testing.assert_array_equal(got[1], ref[1])
    np.testing.assert_array_equal(got[2], ref[2])


def signal(n: int, cups: int, rate: float = 1000.0, seed: int = 1):
    rng = np.random.default_rng(seed)
    t = 5.0 + np.arange(n) / rate
    y = (22 + 2 * np.sin(t[:, None] * (1 + np.arange(cups))) + rng.normal(0, 0.3, (n, cups)))
    y = y.astype(np.float32)
    y[rng.random((n, cups)) < 0.01] = np.nan           # no-reading samples
    y[1000:1400, 0] = np.nan                            # a sensor fault run on cup 1
    return t, y


def test_decimation_matches_brute_force_reference():
    t, y = signal(6000, 3)
    buf = DisplayBuffer(window_s=600)
    buf.on_message(DeviceInfo("X", (1, 0, 0), cups=3, rate_hz=1000))
    feed(buf, t, y)
    levels = set()
    for t0, t1, cols in [(5.0, 11.0, 1000), (5.3, 9.71, 333), (6.0, 6.5, 40), (4.0, 20.0, 17),
                         (5.0, 11.0, 100), (5.0, 11.0, 10)]:
        check(buf, t, y, t0, t1, cols)
        levels.add(buf.level(t0, t1, cols))
    assert levels == {0, 1, 2}
    # the all-NaN run of cup 1 shows as NaN columns, the other cups are unaffected
    tt, lo, hi = buf.view(5.0, 11.0, 600)
    inside = (tt > 6.02) & (tt < 6.38)
    assert np.isnan(lo[inside, 0]).all() and np.isfinite(lo[inside, 1]).all()


def test_few_samples_per_column_come_back_raw():
    t, y = signal(200, 2)
    buf = DisplayBuffer()
    feed(buf, t, y)
    tt, lo, hi = buf.view(t[0], t[-1], 1000)
    np.testing.assert_array_equal(tt, t)
    np.testing.assert_array_equal(lo, y)
    np.testing.assert_array_equal(hi, y)


def _assert_break_between(tt, lo, t_before, t_after):
    """Every finite row pair (i, i+1) must not straddle the gap (t_before, t_after)."""
    finite = np.isfinite(lo).all(axis=1)
    for i in range(len(tt) - 1):
        if finite[i] and finite[i + 1]:
            assert not (tt[i] <= t_before + 1e-12 and tt[i + 1] >= t_after - 1e-12), (
                f"line drawn across the gap between rows {i} and {i + 1}")
    assert (~finite).any()


@pytest.mark.parametrize("window,columns", [(2.0, 5000), (20.0, 1000), (600.0, 200)])
def test_flagged_gap_stays_a_gap_at_every_zoom(window, columns):
    rate = 1000.0
    buf = DisplayBuffer(window_s=600)
    buf.on_message(DeviceInfo("X", (1, 0, 0), cups=2, rate_hz=1000))
    n = int(300 * rate)
    t = np.arange(n) / rate
    y = np.full((n, 2), 22.0, np.float32)
    cut = n // 2
    # the gap is only 3 sample periods: the time jump alone would not reveal it
    t[cut:] += 2 / rate
    feed(buf, t[:cut], y[:cut], sizes=(1000,))
    buf.on_block(block(t[cut:cut + 10], y[cut:cut + 10], gap=True))
    feed(buf, t[cut + 10:], y[cut + 10:], sizes=(1000,))
    mid = t[cut]
    tt, lo, hi = buf.view(mid - window / 2, mid + window / 2, columns)
    _assert_break_between(tt, lo, t[cut - 1], t[cut])
    _assert_break_between(tt, hi, t[cut - 1], t[cut])


@pytest.mark.parametrize("window,columns", [(4.0, 1000), (60.0, 1000), (600.0, 500),
                                            (600.0, 100)])
def test_values_after_a_gap_are_never_drawn_before_it(window, columns):
    """Pre-gap 10 kPa, post-gap 30 kPa, the gap in mid-chunk: a column that
    lies wholly before (after) the gap shows only 10 (30), at every level."""
    rate = 1000.0
    buf = DisplayBuffer(window_s=600)
    buf.on_message(DeviceInfo("X", (1, 0, 0), cups=1, rate_hz=1000))
    n1, n2 = 100_003, 200_000
    t1 = np.arange(n1) / rate
    t2 = t1[-1] + 2.0 + np.arange(n2) / rate
    feed(buf, t1, np.full((n1, 1), 10.0), sizes=(1000, 3))
    buf.on_block(block(t2[:50], np.full((50, 1), 30.0), gap=True))
    feed(buf, t2[50:], np.full((n2 - 50, 1), 30.0), sizes=(1000,))
    t0 = t1[-1] - window / 2
    tt, lo, hi = buf.view(t0, t0 + window, columns)
    dt = window / columns
    fin = np.isfinite(lo[:, 0])
    before = fin & (tt + dt / 2 <= t2[0])
    after = fin & (tt - dt / 2 >= t1[-1])
    assert before.any() and after.any()
    assert np.all(hi[before, 0] == 10.0) and np.all(lo[after, 0] == 30.0)
    _assert_break_between(tt, lo, t1[-1], t2[0])


def test_time_jump_and_link_loss_are_gaps_without_a_flag():
    buf = DisplayBuffer()
    y = np.full((100, 1), 21.0, np.float32)
    buf.on_block(block(np.arange(100) / 100, y))
    buf.on_block(block(2 + np.arange(100) / 100, y))       # 1 s jump at 100 Hz
    buf.on_message(LinkEvent(LinkState.RECONNECTED, 0.0))
    buf.on_block(block(3 + np.arange(100) / 100, y))       # contiguous in time, after a reconnect
    tt, lo, _ = buf.view(0, 4, 1000)
    _assert_break_between(tt, lo, 0.99, 2.0)
    _assert_break_between(tt, lo, 2.99, 3.0)
    assert np.isfinite(lo[:, 0]).sum() == 300              # every sample, nothing invented


def test_wraparound_keeps_the_newest_window_exactly():
    rate = 1000.0
    buf = DisplayBuffer(window_s=1.0)
    buf.on_message(DeviceInfo("X", (1, 0, 0), cups=2, rate_hz=1000))
    cap = buf.capacity
    t, y = signal(5 * cap + 123, 2, rate)
    feed(buf, t, y, sizes=(97, 13, 400))
    span = buf.span()
    assert span is not None
    assert span[1] == t[-1] and span[0] == pytest.approx(t[-cap])
    lat = buf.latest()
    assert lat is not None and lat.t == t[-1]
    np.testing.assert_array_equal(lat.suction, y[-1])
    t0, t1 = t[-cap + 5], t[-1]
    for cols in (30, 300, 600):
        check(buf, t, y, t0, t1, cols, first=len(t) - cap)
    tt, lo, hi = buf.view(t0, t1, 5000)                   # raw samples, across the seam
    sel = t >= t0
    np.testing.assert_array_equal(tt, t[sel])
    np.testing.assert_array_equal(lo, y[sel])


def test_long_window_uses_the_pyramid_and_keeps_every_extreme():
    """10 min at 100 Hz on 100 columns reads 256-sample chunks: compare with a
    chunk-wise brute force (a chunk belongs to the column of its first sample)."""
    rate, cups = 100.0, 2
    buf = DisplayBuffer(window_s=600)
    buf.on_message(DeviceInfo("X", (1, 0, 0), cups=cups, rate_hz=100))
    t, y = signal(60000, cups, rate)
    y[31234, 1] = 80.0                                     # a one-sample spike
    feed(buf, t, y, sizes=(1000, 3))
    t0, t1, cols = t[0], t[-1], 100
    tt, lo, hi = buf.view(t0, t1, cols)
    assert np.nanmax(hi[:, 1]) == 80.0                     # decimation never loses a spike
    assert buf.level(t0, t1, cols) == 2
    check(buf, t, y, t0, t1, cols)


def test_time_going_backwards_starts_a_new_epoch():
    buf = DisplayBuffer()
    y = np.full((50, 1), 21.0, np.float32)
    buf.on_block(block(100 + np.arange(50) / 100, y))
    e, v = buf.epoch, buf.version
    buf.on_block(block(np.arange(50) / 100, y + 1))        # device reset: clock restarts
    assert buf.epoch == e + 1 and buf.version == v + 1
    assert buf.span() == (0.0, 0.49)
    tt, lo, _ = buf.view(0, 200, 100)
    assert np.all(lo == 22.0) and tt.max() <= 1.0


def test_more_cups_or_a_faster_rate_reallocate():
    buf = DisplayBuffer(window_s=10)
    assert buf.view(0, 1, 10)[0].size == 0 and buf.latest() is None
    buf.on_message(DeviceInfo("X", (1, 0, 0), cups=2, rate_hz=100))
    cap = buf.capacity
    assert cap >= 1000 and buf.cups == 2
    buf.on_block(block(np.arange(100) / 100, np.ones((100, 2))))
    buf.on_message(DeviceInfo("X", (1, 0, 0), cups=2, rate_hz=1000))   # rate raised
    assert buf.capacity >= 10000
    tt, lo, _ = buf.view(0, 1, 1000)
    assert tt.size == 100                                  # kept across the reallocation
    buf.on_block(block(1 + np.arange(100) / 1000, np.ones((100, 4))))  # more cups
    assert buf.cups == 4 and buf.view(0, 2, 10)[1].shape[1] == 4


def test_rate_is_learnt_without_device_info_and_the_ring_grows():
    buf = DisplayBuffer(window_s=5)
    t = np.arange(2) / 100.0                               # looks like 100 Hz...
    buf.on_block(block(t, np.zeros((2, 1))))
    assert buf.rate_hz == pytest.approx(100)
    t2 = 0.02 + np.arange(20000) / 2000.0                  # ...but runs at 2 kHz
    feed(buf, t2, np.zeros((20000, 1)), sizes=(200,))
    s = buf.span()
    assert s is not None and s[1] - s[0] >= 4.75           # the whole window is kept


def test_concurrent_writer_and_reader_never_see_torn_or_wrong_columns():
    """A writer laps a small ring while the reader views the whole span: every
    column's envelope must lie inside its own time bin (y = t + cup)."""
    buf = DisplayBuffer(window_s=0.5)
    rate = 1000.0
    buf.on_message(DeviceInfo("X", (1, 0, 0), cups=3, rate_hz=1000))
    stop = threading.Event()
    written = [0]

    def writer():
        i = 0
        while not stop.is_set() and i < 50_000_000:  # until the reader is done
            n = 37
            t = (i + np.arange(n)) / rate
            buf.on_block(block(t, t[:, None] + np.arange(3)))
            i += n
            written[0] = i

    th = threading.Thread(target=writer)
    th.start()
    checks = 0
    try:
        while th.is_alive() and (checks < 200 or written[0] < 10 * buf.capacity):
            span = buf.span()
            if span is None:
                continue
            if checks % 2:   # the whole ring, a new grid each time
                t0, t1, cols = span[0], span[1], 40 + checks % 200
            else:            # a live window on one grid: cached columns reused
                t0, t1, cols = span[1] - 0.4, span[1], 100
            tt, lo, hi = buf.view(t0, t1, cols)
            if tt.size == 0:
                continue
            dt = (t1 - t0) / cols
            ok = np.isfinite(lo).all(axis=1)
            assert ok.all()                                # no gaps were written
            for c in range(3):
                assert np.all(lo[:, c] >= tt - dt / 2 + c - 1e-3)
                assert np.all(hi[:, c] <= tt + dt / 2 + c + 1e-3)
                assert np.all(lo[:, c] <= hi[:, c])
            checks += 1
    finally:
        stop.set()
        th.join()
    assert checks >= 200 and written[0] >= 10 * buf.capacity  # the ring was lapped often


def test_cached_columns_give_exactly_the_fresh_result():
    """A live window sliding over growing data (with gaps, NaN, a clock reset,
    zoom changes and a scroll back) must look the same with the column cache
    as computed from scratch every frame."""
    rng = np.random.default_rng(7)
    cached, fresh = DisplayBuffer(window_s=120), DisplayBuffer(window_s=120, cache=False)
    for b in (cached, fresh):
        b.on_message(DeviceInfo("X", (1, 0, 0), cups=3, rate_hz=500))
    t_next, frames = 0.0, 0
    plan = [(20.0, 400)] * 30 + [(60.0, 300)] * 20 + [(120.0, 200)] * 20 + [(10.0, 900)] * 20
    for step, (window, cols) in enumerate(plan):
        n = int(rng.integers(1, 60))
        t = t_next + np.arange(n) / 500
        y = rng.normal(22, 2, (n, 3)).astype(np.float32)
        y[rng.random((n, 3)) < 0.05] = np.nan
        gap = step % 17 == 5
        if gap:
            t += 0.5
        if step == 75:                                     # device reset: clock restarts
            t -= t[0]
        for b in (cached, fresh):
            b.on_block(block(t, y, gap=gap))
        t_next = t[-1] + 1 / 500
        if step % 3 == 0:                                  # bursts: several blocks per frame
            continue
        for t0, t1 in ((t_next - window, t_next), (t_next - 1.5 * window, t_next - 0.5 * window)):
            got, want = cached.view(t0, t1, cols), fresh.view(t0, t1, cols)
            for g, w_ in zip(got, want, strict=True):
                np.testing.assert_array_equal(g, w_)
            frames += 1
    assert frames > 100 and cached._cache is not None
