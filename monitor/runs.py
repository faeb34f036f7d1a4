"""Whole-block numpy building blocks for the checker: hysteresis latches, run
starts, on-delays, moving sums and per-segment running maxima, each carrying
its state from one block to the next.

Arrays are ``(n, cups)`` (samples x cups) with ``t`` of shape ``(n,)`` in
device seconds. Every helper gives the *same* result whether a stream arrives
in one block or split anywhere: the carried state is exactly what the
previous rows would have contributed, and the arithmetic never depends on
where a block starts (integer sums, no re-referenced floats).
"""

from __future__ import annotations

import numpy as np

#: Marks an invalid smoothed value in integer arrays (far below any reading).
SENTINEL = -(1 << 30)
_BIG = 1 << 32      # > range of valid values and sentinels, for segment offsets


def prev_rows(x: np.ndarray, first: np.ndarray) -> np.ndarray:
    """``x`` shifted down one row; row 0 is ``first`` (the previous block's last row)."""
    out = np.empty_like(x)
    out[0] = first
    out[1:] = x[:-1]
    return out


def last_index(mask: np.ndarray) -> np.ndarray:
    """Per column, index of the last True row at or before each row; -1 if none."""
    if not mask.any():  # common in a quiet block: no edges, nothing to carry forward
        return np.full(mask.shape, -1, np.int64)
    idx = np.where(mask, np.arange(mask.shape[0]).reshape(-1, *([1] * (mask.ndim - 1))), -1)
    return np.maximum.accumulate(idx, axis=0)


def latch(set_: np.ndarray, clear: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """Hysteresis: True from a set row until a clear row (clear wins a tie);
    rows with neither keep the state, seeded by ``prev`` (cups,).

    One running maximum of ``2 * row + value`` over the set/clear rows: the
    latest such row wins (rows differ, so the value bit never decides), and its
    low bit is the value there; -1 where there is none yet."""
    if prev.all() and not clear.any():  # held throughout (e.g. a cup on the skin)
        return np.ones(set_.shape, bool)
    if not prev.any() and not set_.any():  # off throughout
        return np.zeros(set_.shape, bool)
    events = set_ | clear
    if events.all():  # every row decides (e.g. a cup regulating throughout)
        return set_ & ~clear
    if set_.shape[1] > 1:
        # Cups held on (no clear row) or left off (no set row) throughout need no
        # running maximum; only the others (e.g. the cup being applied) do.
        held = prev & ~column_fold(clear, np.logical_or)
        quiet = held | (~prev & ~column_fold(set_, np.logical_or))
        if quiet.any():
            out = np.empty(set_.shape, bool)
            out[:, quiet] = held[quiet]
            busy = ~quiet
            if busy.any():
                out[:, busy] = _latch(set_[:, busy], clear[:, busy], prev[busy])
            return out
    return _latch(set_, clear, prev)


def _latch(set_: np.ndarray, clear: np.ndarray, prev: np.ndarray) -> np.ndarray:
    """``latch`` by one running maximum over all rows (see there)."""
    events = set_ | clear
    rows2 = np.arange(0, 2 * set_.shape[0], 2).reshape(-1, *([1] * (set_.ndim - 1)))
    code = np.where(events, rows2 + (set_ & ~clear), -1)
    last = np.maximum.accumulate(code, axis=0)
    return np.where(last >= 0, (last & 1).astype(bool), prev[None, :])


def run_start(state: np.ndarray, t: np.ndarray, prev_state: np.ndarray,
              prev_start: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Device time at which the current True run began (NaN where False), and the
    row of that start in this block (-1 when the run began in an earlier block)."""
    rising = state & ~prev_rows(state, prev_state)
    li = last_index(rising)
    start = np.where(li >= 0, t[np.maximum(li, 0)], prev_start[None, :])
    return np.where(state, start, np.nan), li


class RunClock:
    """Tracks where True runs of a (n, cups) mask began, across blocks.

    After each step, ``held`` (cups,) marks the cups True throughout the block
    and since an earlier one, ``idle`` those False throughout the block."""

    def __init__(self, cups: int) -> None:
        self.state = np.zeros(cups, bool)
        self.start = np.full(cups, np.nan)
        self.held = np.zeros(cups, bool)
        self.idle = np.ones(cups, bool)

    def step(self, state: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Start time (n, cups) s of the run each row is in, NaN where False
        (read-only when every run is carried through the block)."""
        if self.state.all() and state.all():  # every run began in an earlier block
            self.held = np.ones(state.shape[1], bool)
            self.idle = ~self.held
            return np.broadcast_to(self.start, state.shape)
        # Cups on throughout since an earlier block, or off throughout, need no
        # search for run starts; only the others do.
        self.held = self.state & column_fold(state, np.logical_and)
        self.idle = ~column_fold(state, np.logical_or)
        quiet = self.held | self.idle
        if quiet.all() or (quiet.any() and state.shape[1] > 1):
            start = np.empty(state.shape)
            start[:, quiet] = np.where(self.held, self.start, np.nan)[quiet]
            busy = ~quiet
            if busy.any():
                start[:, busy] = run_start(state[:, busy], t, self.state[busy],
                                           self.start[busy])[0]
        else:
            start, _ = run_start(state, t, self.state, self.start)
        self.state = state[-1].copy()
        self.start = start[-1].copy()
        return start


class OnDelay:
    """A hysteresis latch followed by an on-delay: the alarm is on once the latched
    condition has lasted ``delay`` s (or an ``immediate`` row was seen in the run),
    and off as soon as the latch clears."""

    def __init__(self, cups: int) -> None:
        self.state = np.zeros(cups, bool)   # latched condition, last row
        self.start = np.full(cups, np.nan)  # its run start, s
        self.alarm = np.zeros(cups, bool)   # alarm, last row
        self.seen = np.zeros(cups, bool)    # an immediate row seen in the current run

    def quiet(self, set_: np.ndarray) -> bool:
        """True when a step with ``set_`` would change nothing: no alarm, nothing
        latched and no row sets it (the step's own fast path, with no alarm to end)."""
        return not self.alarm.any() and not self.state.any() and not set_.any()

    def step(self, t: np.ndarray, set_: np.ndarray, clear: np.ndarray, delay: np.ndarray,
             immediate: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Return (alarm (n, cups) bool, alarm of the previous row for row 0 (cups,))."""
        before = self.alarm
        if not self.state.any() and not set_.any():
            # Quiet fast path (the usual case): nothing latched, nothing sets it.
            return np.zeros(set_.shape, bool), before
        state = latch(set_, clear, self.state)
        start, rs = run_start(state, t, self.state, self.start)
        with np.errstate(invalid="ignore"):
            on = (t[:, None] - start) >= delay[None, :]
        seen = np.zeros_like(state)
        if immediate is not None:
            li = last_index(immediate & state)
            carried = rs < 0
            seen = state & np.where(carried, (li >= 0) | self.seen[None, :], li >= rs)
            on |= seen
        alarm = state & on
        self.state = state[-1].copy()
        self.start = np.where(self.state, start[-1], np.nan)
        self.alarm = alarm[-1].copy()
        self.seen = seen[-1] & self.state
        return alarm, before

    def force(self, cup: int, t: float, delay: float) -> bool:
        """Turn the alarm of column ``cup`` on now (a device event); False if already on."""
        if self.alarm[cup]:
            return False
        if not self.state[cup]:
            self.state[cup] = True
            self.start[cup] = t - delay
        self.alarm[cup] = True
        self.seen[cup] = True
        return True


class MovingSum:
    """Sum of the last ``k`` integer samples per cup (exact), and whether all ``k``
    were valid. Smooths noise for the leak and blockage evidence."""

    def __init__(self, cups: int, k: int) -> None:
        self.k = k
        self.q = np.zeros((k - 1, cups), np.int64)
        self.v = np.zeros((k - 1, cups), np.int64)

    def step(self, q: np.ndarray, valid: np.ndarray) -> np.ndarray:
        """``q`` (n, cups) int64; returns sums (n, cups) int64, SENTINEL where any was invalid."""
        k = self.k
        if k > 1 and self.v.all() and valid.all():
            # Every window is full of valid samples: the sums alone.
            eq = np.concatenate([self.q, q])
            cq = np.cumsum(eq, axis=0)
            sums = cq[k - 1:].copy()
            sums[1:] -= cq[:-k]
            self.q = eq[-(k - 1):]
            return sums
        eq = np.concatenate([self.q, np.where(valid, q, 0)])
        ev = np.concatenate([self.v, valid.astype(np.int64)])
        cq = np.cumsum(eq, axis=0)
        cv = np.cumsum(ev, axis=0)
        zero = np.zeros((1, q.shape[1]), np.int64)
        cq = np.concatenate([zero, cq])
        cv = np.concatenate([zero, cv])
        sums = cq[k:] - cq[:-k]
        counts = cv[k:] - cv[:-k]
        if k > 1:
            self.q = eq[-(k - 1):]
            self.v = ev[-(k - 1):]
        return np.where(counts == k, sums, SENTINEL)


class Segments:
    """Runs of equal integer ``code`` per cup (e.g. 0 off-duty, 1 pump on, 2 pump
    off), with each sample's segment start time and an extreme of an integer
    value since that start, carried across blocks; SENTINEL values are skipped.

    Rows of the ``rising`` code (pump on: suction should rise) get the largest
    rise from an earlier low (the "draw-up") and, as ``peak``, minus the running
    minimum; rows of other codes (pump off: suction may only fall) get the
    running maximum as ``peak``. Either ``peak`` is SENTINEL until the segment
    has a valid value. One running maximum serves both kinds of segment (a
    minimum is a maximum of negated values), since a segment has one code."""

    def __init__(self, cups: int, rising: int = 1) -> None:
        self.rising = rising
        self.code = np.full(cups, -1, np.int64)
        self.t0 = np.full(cups, np.nan)
        self.peak = np.full(cups, SENTINEL, np.int64)
        self.rise = np.full(cups, SENTINEL, np.int64)

    def step(self, code: np.ndarray, t: np.ndarray, value: np.ndarray
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (t0, peak, rise), each (n, cups): segment start time (s), the
        peak described above, and for ``rising`` rows the largest
        ``value[j] - min(value[:j])`` within the segment so far (else SENTINEL)."""
        up_rows = code == self.rising
        ups = np.flatnonzero(column_fold(up_rows, np.logical_or))  # cups with rising rows
        ok = value > SENTINEL
        all_ok = bool(ok.all())
        w = value
        if ups.size:
            w = np.where(up_rows, -value, value)
            if not all_ok:
                w[up_rows & ~ok] = SENTINEL  # (-SENTINEL would win the maximum)
        starts = code != prev_rows(code, self.code)
        if starts.any():
            li = last_index(starts)
            t0 = np.where(li < 0, self.t0[None, :], t[np.maximum(li, 0)])
            # Segment offsets: the rows after the k-th start sit k x 2**32 above
            # the ones before, so one running maximum restarts at every start.
            off = (li + 1) * _BIG
        else:
            t0, off = np.broadcast_to(self.t0, value.shape), None
        peak = _seg_max(w, off, self.peak)
        # A rise is only defined on rising rows (others: SENTINEL, as is the
        # rise carried out of any other segment), so only those cups need it.
        rise = np.full(value.shape, SENTINEL, np.int64)
        if ups.size:
            sub = up_rows[:, ups] & (peak[:, ups] > SENTINEL)
            if not all_ok:
                sub &= ok[:, ups]
            up = np.where(sub, value[:, ups] + peak[:, ups], SENTINEL)
            rise[:, ups] = _seg_max(up, None if off is None else off[:, ups], self.rise[ups])
        self.code = code[-1].copy()
        self.t0 = t0[-1].copy()
        self.peak, self.rise = peak[-1].copy(), rise[-1].copy()
        return t0, peak, rise


def _seg_max(value: np.ndarray, off: np.ndarray | None, carry: np.ndarray) -> np.ndarray:
    """Running maximum of int64 ``value`` (n, cups) restarting at each segment;
    ``off`` (n, cups) is 0 in the segment carried in from the last block (which
    continues from ``carry`` (cups,)) and >= 2**32 per later segment (None: all
    rows carried). Exact: the offsets exceed any value's range, and the carry
    is a row before the block, below every later segment."""
    n = value.shape[0]
    buf = np.empty((n + 1, value.shape[1]), np.int64)
    buf[0] = carry
    if off is None:
        buf[1:] = value
    else:
        np.add(value, off, out=buf[1:])
    np.maximum.accumulate(buf, axis=0, out=buf)
    run = buf[1:]
    if off is not None:
        run -= off
    return run


class Lagged:
    """The value ``lag`` s ago per cup: at the last sample with time <= t - lag,
    keeping just enough of the past across blocks (SENTINEL before there is one)."""

    def __init__(self, cups: int) -> None:
        self.t = np.empty(0)
        self.v = np.empty((0, cups), np.int64)

    def step(self, t: np.ndarray, value: np.ndarray, lag: np.ndarray) -> np.ndarray:
        """``value`` (n, cups) int64, ``lag`` (cups,) s -> (n, cups) lagged values."""
        et = np.concatenate([self.t, t])
        ev = np.concatenate([self.v, value])
        if (lag == lag[0]).all():  # the usual case: one lag for every cup
            j = np.searchsorted(et, t - lag[0], side="right") - 1
            if j[0] >= 0 and j[-1] - j[0] == j.size - 1 and (j.size < 2 or (np.diff(j) == 1).all()):
                out = ev[j[0]:j[-1] + 1]  # evenly sampled: the rows lag by a fixed count
            elif j[0] >= 0:  # t increases, so j does: all have a past
                out = ev[j]
            else:
                out = np.where((j >= 0)[:, None], ev[np.maximum(j, 0)], SENTINEL)
        else:
            out = np.full(value.shape, SENTINEL, np.int64)
            for lg in np.unique(lag):
                cols = np.flatnonzero(lag == lg)
                j = np.searchsorted(et, t - lg, side="right") - 1
                out[:, cols] = np.where((j >= 0)[:, None], ev[np.maximum(j, 0)][:, cols], SENTINEL)
        keep = max(0, int(np.searchsorted(et, t[-1] - lag.max(), side="right")) - 1)
        self.t, self.v = et[keep:], ev[keep:]
        return out


def changes(x: np.ndarray, prev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) where ``x`` differs from the row before (row 0 vs ``prev``)."""
    return np.nonzero(x != prev_rows(x, prev))


def column_fold(x: np.ndarray, op: np.ufunc) -> np.ndarray:
    """``op.reduce(x, axis=0)`` for an associative, commutative, exact ``op``
    (minimum, maximum, logical_or ...) of (n, cups) ``x``, by halving the rows:
    each step is one contiguous elementwise pass, where numpy's axis-0 reduction
    steps a few columns at a time (several times slower for small ``cups``)."""
    while x.shape[0] > 1:
        h = x.shape[0] // 2
        y = op(x[:h], x[h:2 * h])
        if x.shape[0] % 2:
            op(y[0], x[-1], out=y[0])
        x = y
    return x[0].copy()


def uniform(x: np.ndarray) -> np.ndarray | np.generic:
    """A per-cup setting (cups,) as a numpy scalar when every cup has the same
    value, else as a (1, cups) row: what broadcasts against (n, cups) blocks
    fastest (a row makes numpy loop a few columns at a time)."""
    x = np.asarray(x)
    if x.size and (x == x.flat[0]).all():
        return x.flat[0]
    return x[None, :]
