"""Ring buffer of recent suction for drawing, with min/max decimation (no Qt here).

:class:`DisplayBuffer` is a :class:`~firmware_bridge.listener.Listener`: the
Notifier calls :meth:`DisplayBuffer.on_block` on the buffer's own dispatch
thread; the GUI timer calls :meth:`DisplayBuffer.view` to get, per pixel
column, the smallest and the largest suction of every cup (a min/max
envelope, so a one-sample spike is never lost by decimation).

Design (why it looks like this):

* One ring per level of a min/max pyramid. Level 0 holds the raw samples;
  level L holds, for each run of ``CHUNK**L`` consecutive samples, their min,
  max, first time stamp and a gap flag. A 10-minute window at 1 kHz on
  1000 pixels reads level 2 (~2,300 chunks), not 600,000 samples, so the
  cost of a frame is bounded whatever the window.
* Arrays are ``(cups, capacity)``: per-cup rows are contiguous, which makes
  the per-column reductions about twice as fast as the ``(capacity, cups)``
  layout (measured).
* Samples carry an absolute index that never resets; the lock guards only
  the index bookkeeping. :meth:`view` takes the indices under the lock,
  reduces without it, and re-checks afterwards that the writer has not
  overwritten what was read (then it recomputes under the lock) - so the
  writer is never held up by a frame being drawn.
* Gaps are explicit: a sample flagged "gap before me" (``gap_before`` of its
  block, a link loss/reconnect, or a time jump of more than
  ``GAP_PERIODS`` sample periods) makes :meth:`view` emit a NaN row before
  the column that holds it, so a ``connect='finite'`` curve breaks there and
  never draws a line across missing data. No-reading samples stay NaN; a
  column whose samples are all NaN is NaN. A gap also closes the open
  16-sample chunk (padded with NaN), and a window whose 256-sample chunk
  holds a gap is read one level lower, so no value is ever drawn on the
  wrong side of a gap.
* Device time going backwards (device reset, new replay) starts a new
  *epoch*: the old timeline is dropped, never mixed with the new one.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from firmware_bridge.listener import Listener
from firmware_bridge.messages import DeviceInfo, LinkEvent, LinkState, SampleBlock

#: Samples (or lower-level chunks) summarised by one chunk of the next level.
CHUNK = 16
#: Pyramid levels above the raw samples (chunks of 16 and 256 samples).
LEVELS = 2
#: A time step longer than this many nominal sample periods counts as a gap.
GAP_PERIODS = 4.0
#: Use a pyramid level only when each pixel column gets at least this many of
#: its chunks: a chunk is then at most half a column wide, so assigning a whole
#: chunk to the column of its first sample moves an extreme by < 1/2 pixel.
MIN_CHUNKS_PER_COLUMN = 2
_ALIGN = CHUNK**LEVELS  # capacity and epoch starts are multiples of this


@dataclass(frozen=True, slots=True)
class Latest:
    """The newest sample: device time ``t`` (s) and ``suction`` (cups,) kPa."""

    t: float
    suction: np.ndarray


class _Level:
    """One ring of the pyramid: ``t`` (cap,) first time stamp, ``lo``/``hi``
    (cups, cap), ``gap`` (cap,) a gap before the first sample, ``inner`` (cap,)
    a gap between samples of the chunk (never set at level 0)."""

    __slots__ = ("size", "t", "lo", "hi", "gap", "inner")

    def __init__(self, cups: int, size: int, raw: bool) -> None:
        self.size = size
        self.t = np.full(size, np.nan)
        self.lo = np.full((cups, size), np.nan, np.float32)
        self.hi = self.lo if raw else np.full((cups, size), np.nan, np.float32)
        self.gap = np.zeros(size, bool)
        self.inner = np.zeros(size, bool)


def _ring_slice(arr: np.ndarray, a: int, b: int, size: int) -> np.ndarray:
    """Absolute indices [a, b) of a ring along its last axis (a view unless it wraps)."""
    pa, n = a % size, b - a
    if pa + n <= size:
        return arr[..., pa:pa + n]
    return np.concatenate((arr[..., pa:], arr[..., :pa + n - size]), axis=-1)


def _ring_search(t: np.ndarray, a: int, b: int, size: int, value: float) -> int:
    """Absolute index of the first element >= value among absolute [a, b) (sorted)."""
    pa, n = a % size, b - a
    if pa + n <= size:
        return a + int(np.searchsorted(t[pa:pa + n], value, "left"))
    first = t[pa:]
    if value > first[-1]:
        return a + first.shape[0] + int(np.searchsorted(t[:pa + n - size], value, "left"))
    return a + int(np.searchsorted(first, value, "left"))


class DisplayBuffer(Listener):
    """Recent suction of every cup, ready to draw at any window and pixel width.

    ``window_s``: longest window the GUI may show (s); the ring holds at least
    this much at the device's rate. Allocation is lazy (first DeviceInfo or
    block) and grows when cups or rate change. Thread-safe: one writer (the
    listener thread), any number of readers.
    """

    idle_interval = None  # nothing time-based to do without data

    def __init__(self, window_s: float = 600.0, cache: bool = True) -> None:
        self.window_s = float(window_s)
        self.use_cache = cache  # off only to check the cache against fresh results
        self._lock = threading.Lock()
        self._cups = 0
        self._rate = 0.0
        self._cap = 0
        self._levels: list[_Level] = []
        self._w = 0          # absolute index of the next raw sample
        self._first = 0      # oldest valid absolute raw index (epoch start or w - cap)
        self._epoch = 0
        self._version = 0
        self._pending_gap = False
        self._rate_from_info = False
        self._cache: _ColumnCache | None = None  # finished columns of the last view
        self._generation = 0  # increments when the rings are reallocated

    # ------------------------------------------------------------------ state
    @property
    def version(self) -> int:
        """Increments on every write: the GUI skips a redraw when it has not moved."""
        return self._version

    @property
    def epoch(self) -> int:
        """Increments when the timeline restarts (device time went backwards)."""
        return self._epoch

    @property
    def cups(self) -> int:
        return self._cups

    @property
    def rate_hz(self) -> float:
        """Nominal sample rate (from DeviceInfo, else estimated), 0 before any data."""
        return self._rate

    @property
    def capacity(self) -> int:
        """Raw samples per cup the ring holds."""
        return self._cap

    def span(self) -> tuple[float, float] | None:
        """(oldest, newest) device time held, s; None when empty."""
        with self._lock:
            if self._w <= self._first:
                return None
            lv = self._levels[0]
            return float(lv.t[self._first % self._cap]), float(lv.t[(self._w - 1) % self._cap])

    def latest(self) -> Latest | None:
        """The newest sample (a copy), or None when empty."""
        with self._lock:
            if self._w <= self._first:
                return None
            p = (self._w - 1) % self._cap
            lv = self._levels[0]
            return Latest(float(lv.t[p]), lv.lo[:, p].copy())

    # --------------------------------------------------------------- writing
    def on_message(self, msg: Any) -> None:
        if isinstance(msg, DeviceInfo):
            with self._lock:
                self._rate_from_info = True
                self._ensure(msg.cups, float(msg.rate_hz))
        elif isinstance(msg, LinkEvent):
            if msg.state in (LinkState.LOST, LinkState.RECONNECTING, LinkState.RECONNECTED,
                             LinkState.CLOSED, LinkState.ERROR):
                self._pending_gap = True
            if msg.info is not None:
                self.on_message(msg.info)

    def on_block(self, block: SampleBlock) -> None:
        n = block.n
        if n == 0:
            return
        t = np.asarray(block.t, np.float64)
        y = np.asarray(block.suction, np.float32)
        with self._lock:
            if not self._rate_from_info and self._rate == 0.0 and n >= 2:
                step = float(np.median(np.diff(t)))
                if step > 0:
                    self._rate = 1.0 / step
            self._ensure(block.cups, self._rate or 1000.0)
            gap = block.gap_before or block.lost_before > 0 or self._pending_gap
            self._pending_gap = False
            if self._w > self._first:
                t_last = self._levels[0].t[(self._w - 1) % self._cap]
                if t[0] <= t_last:
                    self._new_epoch()
                    gap = False
                elif t[0] - t_last > GAP_PERIODS / self._rate:
                    gap = True
            else:
                gap = False  # nothing to break from
            room = self._cap - _ALIGN  # leaves the pyramid's open chunks unwritten
            if n > room:  # a huge replay block: only its tail fits
                t, y = t[-room:], y[-room:]
                n = room
            # A block has no gap inside by contract; a time jump still is one.
            cuts = np.flatnonzero(np.diff(t) > GAP_PERIODS / self._rate) + 1
            bounds = [0, *cuts.tolist(), n]
            for k in range(len(bounds) - 1):
                a, b = bounds[k], bounds[k + 1]
                seg_gap = gap if k == 0 else True
                if seg_gap:
                    self._pad_to_chunk()
                gaps = np.zeros(b - a, bool)
                gaps[0] = seg_gap
                self._write(t[a:b], y[a:b].T, gaps)
            self._grow_if_short()
            self._version += 1

    def _ensure(self, cups: int, rate: float) -> None:
        """Allocate, or reallocate when cups or rate need more room. Lock held."""
        if rate <= 0:
            return
        need = self._capacity_for(rate)
        if cups == self._cups and need <= self._cap:
            self._rate = rate
            return
        self._rate = rate
        self._reallocate(cups, max(need, self._cap if cups == self._cups else 0))

    def _capacity_for(self, rate: float) -> int:
        n = math.ceil(self.window_s * rate * 1.05 / _ALIGN)
        return max(1, n) * _ALIGN

    def _grow_if_short(self) -> None:
        """The ring is full yet spans less than the window: the rate was
        underestimated (no DeviceInfo); double it. Lock held."""
        if self._w - self._first < self._cap:
            return
        lv = self._levels[0]
        span = lv.t[(self._w - 1) % self._cap] - lv.t[self._first % self._cap]
        if span < 0.95 * self.window_s and self._cap < 1 << 26:
            self._reallocate(self._cups, self._cap * 2)

    def _reallocate(self, cups: int, cap: int) -> None:
        """New rings; keeps the newest samples when the cup count is unchanged. Lock held."""
        old, old_cap = self._levels, self._cap
        self._generation += 1
        keep_from = max(self._first, self._w - cap) if (old and cups == self._cups) else self._w
        self._cups, self._cap = cups, cap
        self._levels = [_Level(cups, cap // CHUNK**lv, raw=lv == 0) for lv in range(LEVELS + 1)]
        if keep_from < self._w:
            src = old[0]
            a = keep_from
            # Re-aligning keeps pyramid chunks from straddling the copied start.
            self._first = a
            t = _ring_slice(src.t, a, self._w, old_cap)
            y = _ring_slice(src.lo, a, self._w, old_cap)
            g = _ring_slice(src.gap, a, self._w, old_cap)
            w_end = self._w
            self._w = a
            self._write(np.array(t), np.array(y), np.array(g))
            assert self._w == w_end
        else:
            self._w = self._first = self._aligned(self._w)

    @staticmethod
    def _aligned(i: int) -> int:
        return -(-i // _ALIGN) * _ALIGN

    def _new_epoch(self) -> None:
        """Time went backwards: forget the old timeline. Lock held."""
        self._w = self._first = self._aligned(self._w)
        self._epoch += 1

    def _pad_to_chunk(self) -> None:
        """Fill up the open level-1 chunk before a gap, so that no chunk holds
        both sides of a gap (its extremes would be drawn at the wrong time).
        Fillers repeat the last time stamp with NaN suction. Lock held."""
        k = (-self._w) % CHUNK
        if k and self._w > self._first:
            t_last = self._levels[0].t[(self._w - 1) % self._cap]
            self._write(np.full(k, t_last), np.full((self._cups, k), np.nan, np.float32),
                        np.zeros(k, bool))

    def _write(self, t: np.ndarray, y: np.ndarray, gaps: np.ndarray) -> None:
        """Append raw samples (t (n,), y (cups, n), gaps (n,)) and update the pyramid."""
        n = t.shape[0]
        w0, cap = self._w, self._cap
        raw = self._levels[0]
        p = w0 % cap
        first = min(n, cap - p)
        raw.t[p:p + first] = t[:first]
        raw.lo[:, p:p + first] = y[:, :first]
        raw.gap[p:p + first] = gaps[:first]
        if first < n:
            rest = n - first
            raw.t[:rest] = t[first:]
            raw.lo[:, :rest] = y[:, first:]
            raw.gap[:rest] = gaps[first:]
        w1 = w0 + n
        src_a, src_b = w0, w1
        for lv in range(1, LEVELS + 1):
            src_a, src_b = self._update_level(lv, src_a, src_b)
        self._w = w1
        self._first = max(self._first, w1 - cap)

    def _update_level(self, lv: int, a: int, b: int) -> tuple[int, int]:
        """Recompute level ``lv`` chunks touched by new level ``lv-1`` entries [a, b)."""
        src, dst = self._levels[lv - 1], self._levels[lv]
        src_first = self._first // CHUNK ** (lv - 1)  # epoch start, aligned
        c0, c1 = a // CHUNK, (b - 1) // CHUNK + 1
        s0 = max(c0 * CHUNK, src_first)
        t = _ring_slice(src.t, s0, b, src.size)
        lo = _ring_slice(src.lo, s0, b, src.size)
        hi = lo if lv == 1 else _ring_slice(src.hi, s0, b, src.size)
        gap = _ring_slice(src.gap, s0, b, src.size)
        inner = _ring_slice(src.inner, s0, b, src.size)
        # Chunk starts inside [s0, b): the first may be partial (epoch start).
        starts = np.arange(c0, c1) * CHUNK - s0
        starts[0] = 0
        ct = t[starts]
        clo = np.fmin.reduceat(lo, starts, axis=1)
        chi = np.fmax.reduceat(hi, starts, axis=1)
        cgap, cinner = _segment_gaps(gap, inner, starts)
        pos = np.arange(c0, c1) % dst.size
        dst.t[pos] = ct
        dst.lo[:, pos] = clo
        dst.hi[:, pos] = chi
        dst.gap[pos] = cgap
        dst.inner[pos] = cinner
        return c0, c1

    # --------------------------------------------------------------- reading
    def view(self, t_start: float, t_end: float, columns: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Min/max envelope of every cup over [t_start, t_end] (device s) at
        ``columns`` pixel columns.

        Returns ``t`` (m,) s, ``lo`` (m, cups) and ``hi`` (m, cups) kPa, with
        m <= 2 * (columns + 2). Columns are whole bins of width
        ``dt = (t_end - t_start) / columns`` on the grid ``k * dt`` (aligned
        to absolute time, so the envelope does not shimmer while it scrolls);
        the first and last bin may reach up to one column beyond the window.
        ``t`` is the bin centre; empty bins are left out. When the nominal
        rate gives fewer than two samples per column the raw samples of those
        bins come back (``lo == hi``). A NaN row separates the two sides of every gap; a
        column holding both sides of a gap is fenced off on both sides.

        Completed columns are cached, so a live window that moves by a few
        columns per frame costs only its newest columns.
        """
        columns = max(1, int(columns))
        for _attempt in range(2):
            with self._lock:
                if self._w <= self._first or not t_end > t_start:
                    return _empty(self._cups)
                state = (self._levels, self._cap, self._first, self._w, self._rate,
                         (self._epoch, self._generation))
            out, used, cache = self._compute(state, t_start, t_end, columns,
                                             self._cache if self.use_cache else None)
            with self._lock:
                levels, cap, first, w, _, epoch = state
                if levels is not self._levels or epoch != (self._epoch, self._generation):
                    return out  # old arrays are intact (not reused): still a true picture
                scale = CHUNK**used[0]
                if -(-self._w // scale) - cap // scale <= used[1]:
                    self._cache = cache  # nothing read was overwritten: keep its columns
                    return out
        # The writer lapped us twice (a window at the very edge of a full ring):
        # do it under the lock, which is rare and still short.
        with self._lock:
            state = (self._levels, self._cap, self._first, self._w, self._rate,
                     (self._epoch, self._generation))
            self._cache = None
            return self._compute(state, t_start, t_end, columns, None)[0]

    def level(self, t_start: float, t_end: float, columns: int) -> int:
        """Pyramid level :meth:`view` reads for this window (0 = raw samples,
        L = chunks of ``CHUNK**L`` samples)."""
        return _choose_level((t_end - t_start) / max(1, int(columns)) * self._rate)

    def _compute(self, state: tuple, t_start: float, t_end: float, columns: int,
                 cache: _ColumnCache | None):
        """(view result, (level, first element read), cache to keep)."""
        levels, cap, first, w, rate, epoch = state
        cups = levels[0].lo.shape[0]
        dt = (t_end - t_start) / columns
        k_a, k_b = math.floor(t_start / dt), math.floor(t_end / dt)
        lv = _choose_level(dt * rate)
        while True:
            L = levels[lv]
            scale = CHUNK**lv
            a = -(-first // scale)
            b = -(-w // scale)
            if b <= a:
                return _empty(cups), (lv, a), cache
            ia = _ring_search(L.t, a, b, L.size, k_a * dt)
            ib = _ring_search(L.t, a, b, L.size, (k_b + 1) * dt)
            if ib <= ia:
                return _empty(cups), (lv, ia), cache
            # Level-1 chunks never straddle a gap (see _pad_to_chunk); a higher
            # chunk may. Rather than draw its extremes at the wrong time, read
            # the level below for this window.
            if lv <= 1 or not _ring_slice(L.inner, ia, ib, L.size).any():
                break
            lv -= 1
        # Raw samples when a column gets fewer than two: decimating would leave
        # empty columns, and the density, not the count, decides (a session
        # that began 6 s ago fills a 30 s window densely, and sub-pixel line
        # segments lose pixels when drawn).
        if lv == 0 and dt * rate < 2.0:
            ts = np.array(_ring_slice(L.t, ia, ib, L.size))
            lo = _ring_slice(L.lo, ia, ib, L.size).T.copy()
            gap = np.array(_ring_slice(L.gap, ia, ib, L.size))
            gap[0] = False  # a gap before the window's first point breaks nothing visible
            return _with_breaks(ts, lo, lo.copy(), gap, gap[:0]), (lv, ia), cache

        key = (lv, dt, epoch)  # epoch: (timeline, ring generation)
        if cache is not None and cache.key == key and cache.k0 <= k_a <= cache.k1:
            keep = slice(int(np.searchsorted(cache.ks, k_a)),
                         int(np.searchsorted(cache.ks, k_b, "right")))
            old = cache.select(keep)
            e0 = max(ia, cache.e1)
        else:
            old, e0 = None, ia
        if e0 < ib:
            ts = np.asarray(_ring_slice(L.t, e0, ib, L.size))
            lo = _ring_slice(L.lo, e0, ib, L.size)
            hi = lo if lv == 0 else _ring_slice(L.hi, e0, ib, L.size)
            gap = np.asarray(_ring_slice(L.gap, e0, ib, L.size))
            inner = _ring_slice(L.inner, e0, ib, L.size)
            bins = np.floor(ts / dt).astype(np.int64)
            starts = np.concatenate(([0], np.flatnonzero(np.diff(bins)) + 1))
            g_first, g_inner = _segment_gaps(gap, inner, starts)
            new = _Columns(bins[starts], np.fmin.reduceat(lo, starts, axis=1).T,
                           np.fmax.reduceat(hi, starts, axis=1).T, g_first, g_inner,
                           e0 + starts)
            cols = new if old is None else old.concat(new)
        else:
            cols = old if old is not None else _Columns.empty(cups)
        # Columns before the newest element's column are final: keep them.
        # (Data arrives in time order, so nothing more can fall into them.)
        done = cols.ks < cols.ks[-1] if ib == b and len(cols.ks) else np.ones(len(cols.ks), bool)
        n_done = int(done.sum())
        e1 = int(cols.e[n_done]) if n_done < len(cols.ks) else ib
        k1 = int(cols.ks[n_done]) if n_done < len(cols.ks) else k_b + 1
        new_cache = _ColumnCache(key, k_a, k1, e1, cols.select(slice(0, n_done)))
        g_first = cols.g_first.copy()
        if len(g_first):
            g_first[0] = False  # nothing drawn before the window's first column
        t_out = (cols.ks + 0.5) * dt
        return (_with_breaks(t_out, cols.lo, cols.hi, g_first | cols.g_inner, cols.g_inner),
                (lv, ia), new_cache)


@dataclass(frozen=True, slots=True)
class _Columns:
    """Per-column results: bin index ``ks`` (n,), ``lo``/``hi`` (n, cups), gap
    flags (before the column, inside it) and ``e`` (n,) the absolute index of
    each column's first element at its level."""

    ks: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    g_first: np.ndarray
    g_inner: np.ndarray
    e: np.ndarray

    @staticmethod
    def empty(cups: int) -> _Columns:
        z = np.zeros(0, np.int64)
        f = np.zeros((0, cups), np.float32)
        b = np.zeros(0, bool)
        return _Columns(z, f, f, b, b, z)

    def select(self, sl: slice) -> _Columns:
        return _Columns(self.ks[sl], self.lo[sl], self.hi[sl], self.g_first[sl],
                        self.g_inner[sl], self.e[sl])

    def concat(self, other: _Columns) -> _Columns:
        return _Columns(*(np.concatenate((x, y)) for x, y in zip(
            (self.ks, self.lo, self.hi, self.g_first, self.g_inner, self.e),
            (other.ks, other.lo, other.hi, other.g_first, other.g_inner, other.e), strict=True)))


@dataclass(frozen=True, slots=True)
class _ColumnCache:
    """Finished columns [k0, k1) of one grid (key = level, dt, epoch, rings);
    elements from ``e1`` on belong to columns >= k1 and are read again."""

    key: tuple
    k0: int
    k1: int
    e1: int
    cols: _Columns

    @property
    def ks(self) -> np.ndarray:
        return self.cols.ks

    def select(self, sl: slice) -> _Columns:
        return self.cols.select(sl)


def _choose_level(samples_per_column: float) -> int:
    lv = 0
    while lv < LEVELS and samples_per_column / CHUNK ** (lv + 1) >= MIN_CHUNKS_PER_COLUMN:
        lv += 1
    return lv


def _empty(cups: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    z = np.zeros((0, cups), np.float32)
    return np.zeros(0), z, z.copy()


def _segment_gaps(gap: np.ndarray, inner: np.ndarray, starts: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Gap flags of segments beginning at ``starts``: (gap before the segment,
    gap inside it)."""
    first = gap[starts]
    later = gap.copy()
    later[starts] = False
    return first, np.logical_or.reduceat(later | inner, starts)


def _with_breaks(t: np.ndarray, lo: np.ndarray, hi: np.ndarray, before: np.ndarray,
                 after: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Insert a NaN row before every row flagged in ``before`` and after every
    row flagged in ``after`` (a row holding both sides of a gap stands alone)."""
    idx = np.concatenate((np.flatnonzero(before), np.flatnonzero(after) + 1))
    if idx.size == 0:
        return t, np.ascontiguousarray(lo), np.ascontiguousarray(hi)
    idx.sort(kind="stable")
    tt = np.concatenate((t, t[-1:]))  # a break after the last row takes its time
    t2 = np.insert(t, idx, tt[np.minimum(idx, t.shape[0])])
    lo2 = np.insert(lo, idx, np.nan, axis=0)
    hi2 = np.insert(hi, idx, np.nan, axis=0)
    return t2, lo2, hi2
