"""Ground truth: which condition held on which cup, from when to when.

Semantics (docs/simulator.md, "Ground truth"): times are device-clock
seconds; ``t_start`` is the first sample at which the condition holds by the
shared definitions in ``firmware_bridge.conditions``, measured on the *true*
signal (or the moment a fault is injected); ``t_end`` is the first sample at
which it no longer holds, ``None`` if it lasts to the end of the run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_bridge import conditions as cond
from firmware_bridge.protocol import Status


@dataclass(frozen=True)
class TruthRecord:
    """One condition on one cup (``cup`` 1-based; None = whole device)."""

    cup: int | None
    condition: str
    t_start: float
    t_end: float | None

    def to_json(self) -> dict:
        """``{"cup": 2, "condition": "over_suction", "t_start": 41.2, "t_end": 55.0}``"""
        return {"cup": self.cup, "condition": self.condition,
                "t_start": round(float(self.t_start), 6),
                "t_end": None if self.t_end is None else round(float(self.t_end), 6)}

    def holds_at(self, t: float) -> bool:
        """True if the condition holds at device time ``t`` (s)."""
        return self.t_start <= t and (self.t_end is None or t < self.t_end)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) index pairs of the runs of True in a 1-D bool array."""
    m = np.concatenate([[False], np.asarray(mask, dtype=bool), [False]])
    edges = np.flatnonzero(m[1:] != m[:-1])
    return list(zip(edges[0::2].tolist(), edges[1::2].tolist(), strict=True))


class _Runs:
    """Runs of a boolean signal fed in chunks: closed (start, end) times and
    the start of a run still open."""

    def __init__(self) -> None:
        self.closed: list[tuple[float, float]] = []
        self.open: float | None = None

    def feed(self, t: np.ndarray, mask: np.ndarray) -> None:
        n = t.shape[0]
        if n == 0:
            return
        if self.open is not None and not mask[0]:
            self.closed.append((self.open, float(t[0])))  # ended at this chunk's first sample
            self.open = None
        for a, b in runs(mask):
            start = self.open if (a == 0 and self.open is not None) else float(t[a])
            if b < n:
                self.closed.append((start, float(t[b])))
                self.open = None
            else:
                self.open = start

    def all(self) -> list[tuple[float, float | None]]:
        out: list[tuple[float, float | None]] = list(self.closed)
        if self.open is not None:
            out.append((self.open, None))
        return out


class SignalTruth:
    """Signal-defined conditions of a run, fed chunk by chunk.

    cups: the 1-based numbers of the columns; band_low/high (k,) kPa.

    over_suction: true suction > band high + OVER_MARGIN_KPA.
    under_suction: REGULATING for at least PUMPDOWN_GRACE_S since it was set,
        and true suction < band low - UNDER_MARGIN_KPA.
    interlock: INTERLOCK bit set (trip until START).
    dwell_exceeded: REGULATING continuously for more than DWELL_ADVISORY_S;
        starts at REGULATING start + DWELL_ADVISORY_S.
    """

    def __init__(self, cups: list[int], band_low: np.ndarray, band_high: np.ndarray) -> None:
        self.cups = list(cups)
        self.band_low = np.asarray(band_low, dtype=float)
        self.band_high = np.asarray(band_high, dtype=float)
        k = len(self.cups)
        self._over = [_Runs() for _ in range(k)]
        self._under = [_Runs() for _ in range(k)]
        self._lock = [_Runs() for _ in range(k)]
        self._reg = [_Runs() for _ in range(k)]
        self._t_reg = np.full(k, -np.inf)   # when REGULATING last rose
        self._reg_prev = np.zeros(k, dtype=bool)
        self._t_last = -np.inf

    def feed(self, t: np.ndarray, suction: np.ndarray, status: np.ndarray) -> None:
        """t (n,) s; suction (n, k) true kPa; status (n, k) device bits."""
        n = t.shape[0]
        if n == 0:
            return
        self._t_last = float(t[-1])
        reg = (status & Status.REGULATING) != 0
        lock = (status & Status.INTERLOCK) != 0
        idx = np.arange(n)
        for j in range(len(self.cups)):
            s, r = suction[:, j], reg[:, j]
            self._over[j].feed(t, s > self.band_high[j] + cond.OVER_MARGIN_KPA)
            prev = np.concatenate([[self._reg_prev[j]], r[:-1]])
            rise = r & ~prev
            last = np.maximum.accumulate(np.where(rise, idx, -1))
            t_reg = np.where(last >= 0, t[np.maximum(last, 0)], self._t_reg[j])
            under = r & (t - t_reg >= cond.PUMPDOWN_GRACE_S) & (
                s < self.band_low[j] - cond.UNDER_MARGIN_KPA)
            self._under[j].feed(t, under)
            self._lock[j].feed(t, lock[:, j])
            self._reg[j].feed(t, r)
            self._t_reg[j] = t_reg[-1]
            self._reg_prev[j] = r[-1]

    def records(self) -> list[TruthRecord]:
        out: list[TruthRecord] = []
        for j, cup in enumerate(self.cups):
            for name, rr in ((cond.OVER_SUCTION, self._over[j]),
                             (cond.UNDER_SUCTION, self._under[j]),
                             (cond.INTERLOCK, self._lock[j])):
                out += [TruthRecord(cup, name, a, b) for a, b in rr.all()]
            for a, b in self._reg[j].all():
                due = a + cond.DWELL_ADVISORY_S
                if due <= self._t_last and (b is None or b > due):
                    out.append(TruthRecord(cup, cond.DWELL_EXCEEDED, due, b))
        return out


def sort_records(records: list[TruthRecord]) -> list[TruthRecord]:
    """Records by start time, then cup (device-wide first), then condition."""
    return sorted(records, key=lambda r: (r.t_start, -1 if r.cup is None else r.cup,
                                          r.condition))
