"""Running per-cup therapy statistics, updated a whole block at a time.

Definitions (suction kPa, time s of device clock; each sample stands for the
interval since the previous one, capped at the signal-loss timeout so a gap
is not counted as therapy):

* time applied: the cup was on (regulating, or holding suction);
* time checked: the band was being held and pump-down was over; the
  percentages, mean, min, max and ripple refer to this time only, so the
  pump-down ramp does not count against the therapy;
* time in target: checked and low <= suction <= high;
* ripple: standard deviation of suction over checked samples inside the band;
* excursion: a checked run outside the band, ending once suction is back
  inside by ``EXCURSION_HYSTERESIS_KPA`` (so noise at a band edge counts once).
"""

from __future__ import annotations

import math

import numpy as np

from .runs import column_fold, latch, prev_rows, uniform

#: An excursion ends when suction is back inside the band by this much, kPa.
EXCURSION_HYSTERESIS_KPA = 0.1


def _num(x: float, nd: int = 3) -> float | None:
    return round(float(x), nd) if math.isfinite(x) else None


def _count(ones: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-column count of True in (n, cups) ``mask``, int64 (cups,) (exact below 2**53)."""
    return (ones @ mask).astype(np.int64)


class Stats:
    """Running statistics for ``cups`` cups (see module doc)."""

    def __init__(self, cups: int, max_dt: float = 0.25) -> None:
        self.cups = cups
        self.max_dt = max_dt
        self.first_t: float | None = None
        self.last_t: float | None = None
        self.applied_s = np.zeros(cups)
        self.checked_s = np.zeros(cups)
        self.in_target_s = np.zeros(cups)
        self.excursion_s = np.zeros(cups)
        self.excursions = np.zeros(cups, np.int64)
        self.samples = np.zeros(cups, np.int64)        # checked valid samples
        self.in_band_samples = np.zeros(cups, np.int64)
        self._sum = np.zeros(cups)       # of (suction - ref) over checked valid samples
        self._sum_band = np.zeros(cups)  # of (suction - ref), in band
        self._sq_band = np.zeros(cups)
        self._ref: np.ndarray | None = None  # shift for numerically stable sums
        self.min = np.full(cups, np.inf)
        self.max = np.full(cups, -np.inf)
        self._out = np.zeros(cups, bool)

    def update(self, t: np.ndarray, suction: np.ndarray, valid: np.ndarray, applied: np.ndarray,
               checked: np.ndarray, low: np.ndarray, high: np.ndarray) -> None:
        """Add a block: t (n,) s; suction (n, cups) kPa; masks (n, cups) bool;
        low/high (cups,) kPa band edges."""
        t = np.asarray(t, np.float64)
        if t.size == 0:
            return
        if self._ref is None:
            self._ref = (low + high) / 2.0
        prev = self.last_t if self.last_t is not None else t[0]
        dt = np.clip(np.diff(t, prepend=prev), 0.0, self.max_dt)
        if self.first_t is None:
            self.first_t = float(t[0])
        self.last_t = float(t[-1])
        lo, hi = uniform(low), uniform(high)
        ok = checked & valid
        with np.errstate(invalid="ignore"):
            in_band = ok & (suction >= lo) & (suction <= hi)
        # Column sums as products with a row vector: one BLAS pass each, where
        # numpy's axis-0 reductions of an (n, cups) array step cups at a time.
        ones = np.ones(t.size)
        self.applied_s += dt @ applied
        self.checked_s += dt @ checked
        self.in_target_s += dt @ in_band
        if in_band.all() and not self._out.any():
            # A steady block: every sample checked, valid and in the band, and no
            # excursion carried in (so none starts or goes on): no masks needed.
            d = db = suction - self._ref
            n_ok = n_band = t.size
            low_of, high_of = suction, suction
        else:
            with np.errstate(invalid="ignore"):
                outside = ok & ~in_band  # ok samples are finite: outside == not in band
                back = ~checked | (valid & (suction >= lo + EXCURSION_HYSTERESIS_KPA)
                                   & (suction <= hi - EXCURSION_HYSTERESIS_KPA))
            out = latch(outside, back & ~outside, self._out)
            starts = out & ~prev_rows(out, self._out)
            self._out = out[-1].copy()
            self.excursions += _count(ones, starts)
            self.excursion_s += dt @ out
            d = np.where(ok, suction - self._ref, 0.0)
            db = np.where(in_band, d, 0.0)
            n_ok, n_band = _count(ones, ok), _count(ones, in_band)
            low_of, high_of = np.where(ok, suction, np.inf), np.where(ok, suction, -np.inf)
        self.samples += n_ok
        self.in_band_samples += n_band
        self._sum += ones @ d
        self._sum_band += ones @ db
        self._sq_band += ones @ (db * db)
        self.min = np.fmin(self.min, column_fold(low_of, np.minimum))
        self.max = np.fmax(self.max, column_fold(high_of, np.maximum))

    # ---- results ----------------------------------------------------------------
    def time_in_target_pct(self) -> np.ndarray:
        """(cups,) % of checked time in the band; NaN before any checked time."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.checked_s > 0, 100.0 * self.in_target_s / self.checked_s, np.nan)

    def mean(self) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            ref = self._ref if self._ref is not None else 0.0
            return np.where(self.samples > 0, ref + self._sum / self.samples, np.nan)

    def ripple(self) -> np.ndarray:
        """(cups,) standard deviation in band, kPa (NaN with fewer than 2 samples)."""
        n = self.in_band_samples
        with np.errstate(invalid="ignore", divide="ignore"):
            m = self._sum_band / n
            var = np.maximum(self._sq_band / n - m * m, 0.0) * n / (n - 1)
            return np.where(n > 1, np.sqrt(var), np.nan)

    def summary(self) -> dict:
        """JSON-serialisable summary: {"duration_s", "cups": [per-cup dicts]}."""
        pct, mean, rip = self.time_in_target_pct(), self.mean(), self.ripple()
        cups = []
        for i in range(self.cups):
            have = self.samples[i] > 0
            cups.append({
                "cup": i + 1,
                "time_applied_s": _num(self.applied_s[i]),
                "time_checked_s": _num(self.checked_s[i]),
                "time_in_target_s": _num(self.in_target_s[i]),
                "time_in_target_pct": _num(pct[i], 1),
                "mean_kpa": _num(mean[i], 2),
                "min_kpa": _num(self.min[i], 2) if have else None,
                "max_kpa": _num(self.max[i], 2) if have else None,
                "ripple_kpa": _num(rip[i], 3),
                "excursions": int(self.excursions[i]),
                "excursion_time_s": _num(self.excursion_s[i]),
                "samples": int(self.samples[i]),
            })
        duration = (self.last_t - self.first_t) if self.first_t is not None else 0.0
        return {"duration_s": _num(duration), "cups": cups}
